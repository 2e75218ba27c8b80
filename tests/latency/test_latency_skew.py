"""Tests for the correction of decode attention for uneven decode contexts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmsched_env.latency.architectures import ARCHITECTURES
from llmsched_env.latency.presets import make_iteration_latency, vllm_bench_profile_dir
from llmsched_env.latency.profile_data import load_layer_profile
from llmsched_env.latency.profiled import ProfiledIterationLatency, _attention
from llmsched_env.latency.skew import (
    SKEW_BUCKET_AXES,
    DecodeSkewCorrection,
    SkewFitError,
    load_skew_fit,
    skew_alpha,
)

RNG = np.random.default_rng(0)
LLAMA = "RTXPRO6000-Llama-3.1-8B"


def _write(path, rows, columns=("pc", *SKEW_BUCKET_AXES, "alpha", "n_samples")):
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def test_buckets_close_on_the_right_like_the_profiler():
    fit = DecodeSkewCorrection(0.0, {(0, 0, 0, 0, 0): 0.5, (0, 1, 0, 0, 0): 0.25})
    # n = 2 is "n<=2" (bucket 0); n = 3 is "n<=4" (bucket 1); skew rate 0 is "sr<=5%".
    assert fit.alpha(0, 2, 100, 100 + 1e-9, 100, 0) == 0.5
    assert fit.alpha(0, 3, 100, 100 + 1e-9, 100, 0) == 0.25
    assert fit.alpha(16, 2, 100, 101, 100, 0) == 0.0  # no bucket for chunk 16: the default


def test_shipped_fit_reads_every_bucket_of_its_file():
    path = vllm_bench_profile_dir(LLAMA) / "skew_fit.csv"
    table = pd.read_csv(path)
    fit = load_skew_fit(path, 0.0543)
    assert len(fit.alpha_by_bucket) == len(table)
    row = table.iloc[0]
    key = (int(row.pc),) + tuple(SKEW_BUCKET_AXES[c][1].index(row[c]) for c in SKEW_BUCKET_AXES)
    assert fit.alpha_by_bucket[key] == pytest.approx(row.alpha)


@pytest.mark.parametrize("profile", [LLAMA, "RTXPRO6000-Qwen3-32B"])
def test_compiled_lookup_equals_the_fit_on_fitted_and_unfitted_batches(profile):
    fit = load_skew_fit(vllm_bench_profile_dir(profile) / "skew_fit.csv", 0.05)
    keys, alphas = fit.bucket_table()
    assert np.all(np.diff(keys) > 0)  # sorted, one key per bucket
    chunks = sorted({chunk for chunk, *_ in fit.alpha_by_bucket})
    rng = np.random.default_rng(1)
    fitted = 0
    for _ in range(5_000):
        chunk = float(rng.choice(chunks)) if rng.random() < 0.8 else rng.uniform(0, 4096)
        n = float(rng.integers(0, 400))
        kv_min = float(rng.integers(0, 20_000))
        kv_max = kv_min + float(rng.choice([0, rng.integers(1, 40_000)]))
        kv_mean = rng.uniform(kv_min, kv_max)
        prefill_kv = float(rng.choice([0, rng.integers(1, 12_000)]))
        shape = (chunk, n, kv_mean, kv_max, kv_min, prefill_kv)
        expected = fit.alpha(*shape)
        fitted += expected != fit.alpha_default
        assert skew_alpha(keys, alphas, fit.alpha_default, *shape) == expected, shape
    assert fitted > 200  # the draws reach fitted buckets, not only the default


def test_correction_is_alpha_times_the_gap_to_the_longest_context():
    profile = load_layer_profile(vllm_bench_profile_dir(LLAMA))
    arch = ARCHITECTURES["llama3.1-8b"]
    plain = ProfiledIterationLatency(profile, arch)
    skewed = ProfiledIterationLatency(profile, arch, skew=DecodeSkewCorrection(0.2))
    n, mean, longest, shortest = 32, 1024, 4096, 16
    base = plain.iteration_s(0, n, n * mean, RNG, decode_kv_max=longest, decode_kv_min=shortest)
    got = skewed.iteration_s(0, n, n * mean, RNG, decode_kv_max=longest, decode_kv_min=shortest)
    axes, grid = profile.attention_axes, profile.attention_us
    gap = _attention(*axes, grid, 0.0, 0.0, n, longest) - _attention(*axes, grid, 0.0, 0.0, n, mean)
    assert gap > 0
    assert got - base == pytest.approx(arch.layers * 0.2 * gap * 1e-6, rel=1e-9)


def test_uniform_or_single_decodes_and_missing_spread_are_not_corrected():
    model = make_iteration_latency("vllm0.19-rtxpro6000-llama3.1-8b")
    assert model.skew is not None
    plain = model.iteration_s(0, 16, 16 * 500, RNG)
    assert model.iteration_s(0, 16, 16 * 500, RNG, decode_kv_max=500, decode_kv_min=500) == plain
    assert model.iteration_s(0, 1, 900, RNG, decode_kv_max=900, decode_kv_min=900) == (
        model.iteration_s(0, 1, 900, RNG)
    )


def test_only_profiles_with_a_fit_are_corrected():
    assert make_iteration_latency("vllm0.19-rtx4090-llama3.1-8b").skew is None
    for name in (
        "vllm0.19-rtxpro6000-llama3.1-8b",
        "vllm0.19-rtxpro6000-qwen3-32b-tp2",
        "vllm0.19-rtxpro6000-qwen3-30b-a3b-ep2",
    ):
        assert make_iteration_latency(name).skew is not None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ((-16, "n<=2", "sr<=5%", "kvB<=1k", "kp=0", 0.1, 3), r"column 'pc' has value '-16'"),
        ((0, "n<=3", "sr<=5%", "kvB<=1k", "kp=0", 0.1, 3), r"column 'n_label' has value 'n<=3'"),
        ((0, "n<=2", "sr<=5%", "kvB<=1k", "kp=0", "nan", 3), r"column 'alpha' has value 'nan'"),
    ],
)
def test_bad_skew_files_name_column_line_and_value(tmp_path, row, message):
    path = _write(tmp_path / "skew_fit.csv", [row])
    with pytest.raises(SkewFitError, match=message + r" on line 2"):
        load_skew_fit(path, 0.05)


def test_missing_column_duplicate_bucket_and_missing_file(tmp_path):
    row = (0, "n<=2", "sr<=5%", "kvB<=1k", "kp=0", 0.1)
    no_alpha = _write(tmp_path / "a.csv", [row[:-1]], columns=("pc", *SKEW_BUCKET_AXES))
    with pytest.raises(SkewFitError, match=r"missing column\(s\) \['alpha'\]"):
        load_skew_fit(no_alpha, 0.05)
    twice = _write(tmp_path / "b.csv", [row, row], columns=("pc", *SKEW_BUCKET_AXES, "alpha"))
    with pytest.raises(SkewFitError, match="line 3 appears twice"):
        load_skew_fit(twice, 0.05)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_skew_fit(tmp_path / "none.csv", 0.05)
