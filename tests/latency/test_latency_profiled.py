"""Tests for the profiled iteration latency model and its profile files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmsched_env.latency.architectures import ARCHITECTURES, ModelArchitecture
from llmsched_env.latency.iteration import AffineIterationLatency, LinearIterationLatency
from llmsched_env.latency.presets import (
    ITERATION_LATENCY_PRESETS,
    KV_PRESETS,
    make_iteration_latency,
    vllm_bench_profile_dir,
)
from llmsched_env.latency.profile_data import ProfileDataError, load_layer_profile
from llmsched_env.latency.profiled import (
    InterconnectLink,
    ProfiledIterationLatency,
    _attention,
    _interp1,
    _iteration_us,
)

RNG = np.random.default_rng(0)
PROFILED = sorted(name for name in ITERATION_LATENCY_PRESETS if name.startswith("vllm0.19"))
LLAMA_4090 = "RTX4090-Llama-3.1-8B"
MOE = "RTXPRO6000-Qwen3-30B-A3B-Instruct-2507"


def _csv(folder: str, name: str) -> pd.DataFrame:
    return pd.read_csv(vllm_bench_profile_dir(folder) / name)


def test_attention_equals_profile_at_grid_points() -> None:
    profile = load_layer_profile(vllm_bench_profile_dir(LLAMA_4090))
    rows = _csv(LLAMA_4090, "attention.csv").sample(300, random_state=0)
    for row in rows.itertuples(index=False):
        value = _attention(*profile.attention_axes, profile.attention_us, *map(float, row[:4]))
        assert value == pytest.approx(row.time_us, rel=1e-12)


def test_dense_and_per_sequence_equal_profile_at_grid_points() -> None:
    profile = load_layer_profile(vllm_bench_profile_dir(LLAMA_4090))
    for name, axis, curves in (
        ("dense.csv", profile.dense_tokens, profile.dense_us),
        ("per_sequence.csv", profile.sequence_counts, profile.per_sequence_us),
    ):
        table = _csv(LLAMA_4090, name)
        key = "tokens" if name == "dense.csv" else "sequences"
        for row in table.sample(min(100, len(table)), random_state=1).itertuples(index=False):
            value = _interp1(axis, curves[row.layer], float(getattr(row, key)))
            assert value == pytest.approx(row.time_us, rel=1e-12)


def test_moe_equals_profile_at_grid_points() -> None:
    profile = load_layer_profile(vllm_bench_profile_dir(MOE))
    for row in _csv(MOE, "moe.csv").itertuples(index=False):
        i = int(np.searchsorted(profile.moe_tokens, row.tokens))
        j = int(np.searchsorted(profile.moe_experts, row.activated_experts))
        assert j < profile.moe_valid[i]
        assert profile.moe_us[i, j] == row.time_us


def test_whole_iteration_matches_hand_sum_at_a_grid_point() -> None:
    model = make_iteration_latency("vllm0.19-rtx4090-llama3.1-8b")
    attention = _csv(LLAMA_4090, "attention.csv").set_index(
        ["prefill_chunk", "kv_prefill", "n_decode", "kv_decode"]
    )["time_us"]
    dense = _csv(LLAMA_4090, "dense.csv").set_index(["layer", "tokens"])["time_us"]
    per_seq = _csv(LLAMA_4090, "per_sequence.csv").set_index(["layer", "sequences"])["time_us"]
    # 256 prompt tokens in 4 chunks with 512 earlier tokens in all, 16 decodes at KV 1024
    tokens, seqs = 256 + 16, 4 + 16
    arch = ARCHITECTURES["llama3.1-8b"]
    layer = attention[(256, 512, 16, 1024)] + sum(dense[(op, tokens)] for op in arch.layer_ops)
    expected = 32 * layer + dense[("embedding", tokens)] + dense[("final_layernorm", tokens)]
    expected += per_seq[("lm_head", seqs)] + per_seq[("sampler", seqs)]
    got = model.iteration_s(256, 16, 16 * 1024, RNG, prefill_kv_tokens=512, prefill_sequences=4)
    assert got == pytest.approx(expected * 1e-6, rel=1e-12)
    assert model.estimate_s(256, 16, 16 * 1024, 512, 4) == got


@pytest.mark.parametrize("name", PROFILED)
def test_more_work_is_never_faster(name: str) -> None:
    model = make_iteration_latency(name)
    layer_dense = model._args[7]
    running_max = np.maximum.accumulate(layer_dense)
    assert np.all(layer_dense >= 0.85 * running_max)  # measurement noise stays within 15%
    assert layer_dense[-1] > 5 * layer_dense[0]
    steps = [model.estimate_s(t, 0, 0, 0, 1) for t in (16, 128, 512, 1024, 2048, 4096)]
    assert steps == sorted(steps)
    decode = [model.estimate_s(0, 64, 64 * kv) for kv in (100, 1000, 4000, 16_000, 40_000)]
    assert decode == sorted(decode)


def _composed_s(model: ProfiledIterationLatency, c, n, context, p, seqs, kv_max, kv_min) -> float:
    """The model's formula composed in Python from its unpacked tables (the reference)."""
    seqs = 1 if seqs <= 0 and c > 0 else seqs
    mean_kv = context / n if n > 0 else 0.0
    us = _iteration_us(float(c), float(p), float(n), mean_kv, c + n, seqs + n, *model._args)
    if model.skew is not None and n > 1 and kv_max > mean_kv:
        alpha = model.skew.alpha(c, n, mean_kv, kv_max, kv_min, p)
        grid = model._args[1:6]
        t_mean = _attention(*grid, c, p, n, mean_kv)
        t_max = _attention(*grid, c, p, n, kv_max)
        us += model._args[0] * alpha * (t_max - t_mean) if t_max > t_mean else 0.0
    return us * 1e-6 + model.iteration_overhead_s


@pytest.mark.parametrize("name", PROFILED)
def test_one_compiled_call_equals_the_formula_composed_piece_by_piece(name: str) -> None:
    """The packed tables and the compiled skew lookup change no bit of any iteration's time."""
    model = make_iteration_latency(name)
    rng = np.random.default_rng(3)
    for _ in range(2_000):
        n = int(rng.integers(0, 300))
        c = int(rng.choice([0, 512, 1024, 2048, rng.integers(1, 9_000)]))
        kv_min = int(rng.integers(0, 20_000))
        kv_max = kv_min + int(rng.choice([0, rng.integers(1, 30_000)]))
        context = int(rng.integers(kv_min * n, kv_max * n + 1))
        p, seqs = int(rng.choice([0, rng.integers(1, 20_000)])), int(rng.integers(0, 4))
        shape = (c, n, context, p, seqs, kv_max, kv_min)
        got = model.iteration_s(c, n, context, RNG, p, seqs, kv_max, kv_min)
        assert got == _composed_s(model, *shape), shape


@pytest.mark.parametrize("name", PROFILED)
def test_off_grid_extrapolates_and_is_never_nan(name: str) -> None:
    model = make_iteration_latency(name)
    at_top = model.estimate_s(2048, 256, 256 * 16_384, 16_384, 1)
    beyond = model.estimate_s(8192, 1024, 1024 * 65_536, 65_536, 4)
    assert math.isfinite(beyond) and beyond > at_top
    assert math.isfinite(model.estimate_s(0, 0, 0))
    with pytest.raises(ValueError, match="prefill_tokens must be >= 0, got nan"):
        model.estimate_s(float("nan"), 1, 10)
    with pytest.raises(ValueError, match="no valid time"):
        model.iteration_s(float("nan"), 1, 10, None)


@pytest.mark.parametrize("name", PROFILED)
def test_presets_build_and_are_cached(name: str) -> None:
    first, second = make_iteration_latency(name), make_iteration_latency(name)
    assert first.profile is second.profile
    assert first.stochastic is False
    decode = first.iteration_s(0, 128, 128 * 1500, RNG)
    assert 0.01 < decode < 0.2
    assert 0.0 < first.marginal_request_s(300, 250) < 1.0
    assert KV_PRESETS[name].capacity_tokens > 40_000


def test_rtx4090_kv_preset_reproduces_the_run() -> None:
    assert KV_PRESETS["vllm0.19-rtx4090-llama3.1-8b"].capacity_tokens == 41_408


def test_old_models_ignore_the_new_parameters() -> None:
    affine = AffineIterationLatency(0.01, 0.001, b0_tokens=8)
    linear = LinearIterationLatency(5e-3, 2e-5, 6e-6, 1e-8)
    for model in (affine, linear):
        base = model.iteration_s(300, 20, 5000, RNG)
        assert model.iteration_s(300, 20, 5000, RNG, 700, 3) == base
        assert model.iteration_s(300, 20, 5000, RNG, prefill_kv_tokens=9, prefill_sequences=2) == (
            base
        )
        assert model.estimate_s(300, 20, 5000, 700, 3) == model.estimate_s(300, 20, 5000)
    draws = [
        AffineIterationLatency(0.01, 0.001, stochastic=True).iteration_s(
            64, 8, 0, np.random.default_rng(3), *extra
        )
        for extra in ((), (500, 2))
    ]
    assert draws[0] == draws[1]


# --- bad files -------------------------------------------------------------------------------


def _write_profile(folder: Path, attention: str | None = None, dense: str | None = None) -> Path:
    """A tiny complete profile: chunks {0, 16, 32}, KV {0, 16, 32}, decodes {0, 1, 2}."""
    folder.mkdir(parents=True, exist_ok=True)
    if attention is None:
        lines = ["prefill_chunk,kv_prefill,n_decode,kv_decode,time_us"]
        for c in (0, 16, 32):
            for p in (0, 16, 32) if c else (0,):
                for n in (0, 1, 2):
                    for k in (16, 32) if n else (0,):
                        if c or n:
                            lines.append(f"{c},{p},{n},{k},{1 + c + p / 2 + n * k / 8}")
        attention = "\n".join(lines) + "\n"
    ops = (*ARCHITECTURES["llama3.1-8b"].layer_ops, "embedding", "final_layernorm")
    if dense is None:
        dense = "layer,tokens,time_us\n" + "".join(
            f"{op},{t},{t + 1}\n" for op in sorted(set(ops)) for t in (1, 2, 64)
        )
    (folder / "attention.csv").write_text(attention)
    (folder / "dense.csv").write_text(dense)
    (folder / "per_sequence.csv").write_text(
        "layer,sequences,time_us\nlm_head,1,10\nlm_head,4,12\nsampler,1,2\nsampler,4,3\n"
    )
    return folder


def _tiny_arch() -> ModelArchitecture:
    return ARCHITECTURES["llama3.1-8b"]


def test_tiny_profile_loads_and_interpolates(tmp_path: Path) -> None:
    profile = load_layer_profile(_write_profile(tmp_path / "ok"))
    model = ProfiledIterationLatency(profile, _tiny_arch())
    # chunk 24 between 16 and 32 with no history, no decodes: attention 1 + 24, dense (24 + 1)
    layer = (1 + 24) + 8 * (24 + 1)
    expected = 32 * layer + 2 * (24 + 1) + 10 + 2
    assert model.estimate_s(24, 0, 0, 0, 1) == pytest.approx(expected * 1e-6)


def test_missing_file_is_named(tmp_path: Path) -> None:
    folder = _write_profile(tmp_path / "p")
    (folder / "per_sequence.csv").unlink()
    with pytest.raises(FileNotFoundError, match="per_sequence.csv"):
        load_layer_profile(folder)


def test_bad_value_names_file_column_and_value(tmp_path: Path) -> None:
    dense = "layer,tokens,time_us\nlayernorm,1,2\nlayernorm,2,abc\n"
    folder = _write_profile(tmp_path / "p", dense=dense)
    with pytest.raises(ProfileDataError, match=r"dense\.csv.*'time_us'.*'abc'"):
        load_layer_profile(folder)


def test_missing_column_is_named(tmp_path: Path) -> None:
    folder = _write_profile(tmp_path / "p", attention="prefill_chunk,kv_prefill,time_us\n0,0,1\n")
    with pytest.raises(ProfileDataError, match=r"attention\.csv.*'n_decode'"):
        load_layer_profile(folder)


def test_hole_in_attention_grid_is_named(tmp_path: Path) -> None:
    folder = _write_profile(tmp_path / "full")
    text = (folder / "attention.csv").read_text().splitlines()
    kept = [line for line in text if not line.startswith("16,16,1,32,")]
    holed = _write_profile(tmp_path / "holed", attention="\n".join(kept) + "\n")
    with pytest.raises(ProfileDataError, match="'prefill_chunk': 16, 'kv_prefill': 16"):
        load_layer_profile(holed)


def test_missing_op_and_uncovered_settings_are_errors(tmp_path: Path) -> None:
    dense = "layer,tokens,time_us\nlayernorm,1,2\nlayernorm,4,3\n"
    profile = load_layer_profile(_write_profile(tmp_path / "p", dense=dense))
    with pytest.raises(ValueError, match=r"dense\.csv.*qkv_proj"):
        ProfiledIterationLatency(profile, _tiny_arch())
    full = load_layer_profile(_write_profile(tmp_path / "full"))
    with pytest.raises(ValueError, match="measured at TP 2, which does not cover tp_degree=4"):
        ProfiledIterationLatency(full, _tiny_arch(), tp_degree=4, profiled_tp_degree=2)
    with pytest.raises(ValueError, match="needs `link`"):
        ProfiledIterationLatency(full, _tiny_arch(), tp_degree=2)
    with pytest.raises(ValueError, match="moe.csv"):
        ProfiledIterationLatency(full, ARCHITECTURES["qwen3-30b-a3b"])
    link = InterconnectLink(16.0)
    with pytest.raises(ValueError, match="ep_degree=2 needs a MoE model"):
        ProfiledIterationLatency(full, _tiny_arch(), ep_degree=2, link=link)
