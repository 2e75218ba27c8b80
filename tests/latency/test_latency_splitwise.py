"""Tests of llmsched_env/latency/splitwise.py: the loader, the flagging rule and the fits."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import llmsched_env  # noqa: F401  (registers the environments)
from llmsched_env.latency import (
    BATCH_LATENCY_PRESETS,
    EngineStaticBatchLatency,
    LinearIterationLatency,
    make_batch_latency,
    make_kv_memory,
)
from llmsched_env.latency.presets import splitwise_preset_name
from llmsched_env.latency.splitwise import (
    E2E_TOLERANCE,
    SPLITWISE_GROUPS,
    e2e_gap,
    fit_phases,
    fit_splitwise,
    flag_inconsistent,
    load_splitwise_perf,
    predict_ms,
    recompute_power_capped_e2e,
    splitwise_batch_latency,
)

HEADER = (
    "model,hardware,prompt_size,batch_size,token_size,peak_power,average_power,"
    "prompt_time,token_time,e2e_time,tensor_parallel"
)
GOOD_ROW = "llama2-70b,a100-80gb,512,1,128,0,0,127.0,44.3,5753.1,4"


@pytest.fixture(scope="module")
def fits():
    return fit_splitwise()


# --- loader ---------------------------------------------------------------------------------


def write(tmp_path, text: str):
    path = tmp_path / "perf.csv"
    path.write_text(text)
    return path


def test_loader_reads_the_shipped_file():
    frame = load_splitwise_perf()
    assert len(frame) == 1260
    assert frame["prompt_size"].dtype == np.int64 and frame["e2e_time"].dtype == np.float64
    groups = set(frame[["model", "hardware", "tensor_parallel"]].itertuples(index=False))
    assert groups == set(SPLITWISE_GROUPS)


def test_loader_reads_a_good_file(tmp_path):
    frame = load_splitwise_perf(write(tmp_path, f"{HEADER}\n{GOOD_ROW}\n"))
    assert frame["batch_size"].tolist() == [1] and frame["e2e_time"].tolist() == [5753.1]


def test_loader_refuses_an_empty_file(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ValueError, match=rf"{path}: the file is empty"):
        load_splitwise_perf(path)
    with pytest.raises(ValueError, match="no rows"):
        load_splitwise_perf(write(tmp_path, f"{HEADER}\n"))


def test_loader_names_a_missing_column(tmp_path):
    text = f"{HEADER.replace(',e2e_time', '')}\n{GOOD_ROW.replace(',5753.1', '')}\n"
    with pytest.raises(ValueError, match=r"perf.csv: missing column\(s\) \['e2e_time'\]"):
        load_splitwise_perf(write(tmp_path, text))


@pytest.mark.parametrize(
    ("row", "column", "value"),
    [
        ("llama2-70b,a100-80gb,512,1,128,0,0,abc,44.3,5753.1,4", "prompt_time", "abc"),
        ("llama2-70b,a100-80gb,512,1,128,0,0,127.0,0,5753.1,4", "token_time", "0"),
        ("llama2-70b,a100-80gb,512,1,128,0,0,127.0,44.3,-5,4", "e2e_time", "-5"),
        ("llama2-70b,a100-80gb,512,1.5,128,0,0,127.0,44.3,5753.1,4", "batch_size", "1.5"),
        ("llama2-70b,a100-80gb,512,1,128,0,0,127.0,44.3,5753.1,", "tensor_parallel", "nan"),
        ("llama2-70b, ,512,1,128,0,0,127.0,44.3,5753.1,4", "hardware", "' '"),
    ],
)
def test_loader_names_file_column_row_and_value(tmp_path, row, column, value):
    path = write(tmp_path, f"{HEADER}\n{GOOD_ROW}\n{row}\n")
    with pytest.raises(ValueError, match=rf"perf.csv: every {column} must be.* got .*{value}"):
        load_splitwise_perf(path)
    with pytest.raises(ValueError, match="in data row 2"):
        load_splitwise_perf(path)


def test_loader_refuses_another_type():
    with pytest.raises(TypeError, match="DataFrame, a CSV path or None"):
        load_splitwise_perf(42)


# --- flagging -------------------------------------------------------------------------------


def rows(prompt_time, token_time, token_size, e2e_time):
    return pd.DataFrame(
        {
            "prompt_time": prompt_time,
            "token_time": token_time,
            "token_size": token_size,
            "e2e_time": e2e_time,
        }
    )


def test_flagging_rule_counts_token_size_minus_one_steps():
    # prefill 100 ms, 10 ms steps, 11 output tokens: 10 steps -> e2e 200 ms exactly.
    frame = rows([100.0] * 5, [10.0] * 5, [11] * 5, [200.0, 202.9, 197.1, 203.1, 210.0])
    np.testing.assert_allclose(e2e_gap(frame), [0.0, 0.0145, -0.0145, 0.0155, 0.05])
    assert flag_inconsistent(frame).tolist() == [False, False, False, True, True]
    # 11 steps (token_size) would put the first row 5% off: the rule counts token_size - 1.
    assert flag_inconsistent(rows([100.0], [10.0], [11], [210.0])).tolist() == [True]


def test_flagging_tolerance_is_checked():
    frame = rows([100.0], [10.0], [11], [210.0])
    assert flag_inconsistent(frame, tolerance=0.06).tolist() == [False]
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="tolerance must be"):
            flag_inconsistent(frame, tolerance=bad)


def test_shipped_file_separates_kept_from_flagged_rows():
    frame = recompute_power_capped_e2e(load_splitwise_perf())
    gap = np.abs(e2e_gap(frame))
    flagged = flag_inconsistent(frame)
    assert flagged.sum() == 280
    assert gap[~flagged].max() < 0.01 < 0.019 < gap[flagged].min()
    assert E2E_TOLERANCE == 0.015


def test_power_capped_rows_are_derived_and_recomputed():
    raw = load_splitwise_perf()
    fixed = recompute_power_capped_e2e(raw)
    capped = raw["hardware"] == "h100-80gb-pcap"
    assert (raw.loc[~capped, "e2e_time"] == fixed.loc[~capped, "e2e_time"]).all()
    # Recomputed rows obey the identity like the uncapped rows they come from.
    base = raw["hardware"] == "h100-80gb"
    assert (flag_inconsistent(fixed[capped]) == flag_inconsistent(raw[base])).all()
    assert flag_inconsistent(raw[capped]).sum() > flag_inconsistent(raw[base]).sum()
    broken = raw.copy()
    broken.loc[np.flatnonzero(capped)[0], "token_time"] += 1.0
    with pytest.raises(ValueError, match="'h100-80gb-pcap' rows of llama2-70b TP 2"):
        recompute_power_capped_e2e(broken)


# --- the fits -------------------------------------------------------------------------------

# Largest leave-one-configuration-out MAPE over the 12 groups (scripts/fit_splitwise.py prints
# 14.96%, 4.22% and 4.19%), with a little room.
HELDOUT_BOUND = {"prompt_time": 15.5, "token_time": 4.5, "e2e_time": 4.5}


def test_every_group_is_fitted_with_held_out_errors_within_the_bound(fits):
    assert set(fits) == set(SPLITWISE_GROUPS)
    for fit in fits.values():
        assert fit.rows_used + fit.rows_flagged == 105
        assert fit.configurations >= 15
        for column, bound in HELDOUT_BOUND.items():
            assert fit.heldout_mape[column] < bound, (fit.model, fit.hardware, column)


def test_held_out_errors_of_a_group_are_reproduced_from_its_rows(fits):
    # Recompute one group's held-out e2e error by hand: drop a configuration, fit, predict.
    frame = recompute_power_capped_e2e(load_splitwise_perf())
    group = frame[(frame["model"] == "llama2-70b") & (frame["hardware"] == "a100-80gb")]
    group = group[group["tensor_parallel"] == 4]
    kept = group[~flag_inconsistent(group)]
    errors = []
    for _, held in kept.groupby(["prompt_size", "batch_size", "token_size"]):
        predicted = predict_ms(fit_phases(kept.drop(held.index)), held)
        errors.extend(np.abs(predicted["e2e_time"] / held["e2e_time"] - 1.0))
    assert 100 * np.mean(errors) == pytest.approx(
        fits[("llama2-70b", "a100-80gb", 4)].heldout_mape["e2e_time"]
    )


def test_power_capped_fit_is_the_uncapped_fit_with_a_slower_prefill(fits):
    capped = fits[("llama2-70b", "h100-80gb-pcap", 8)].latency
    base = fits[("llama2-70b", "h100-80gb", 8)].latency
    for name in ("b0_s", "b2_s_per_decode_token", "b3_s_per_context_token"):
        assert getattr(capped.iteration, name) == pytest.approx(getattr(base.iteration, name))
    assert capped.prefill_floor_s == pytest.approx(1.3 * base.prefill_floor_s, rel=1e-9)
    assert capped.iteration.b1_s_per_prefill_token == pytest.approx(
        1.3 * base.iteration.b1_s_per_prefill_token, rel=1e-9
    )


def test_presets_are_the_fits_of_the_shipped_file(fits):
    for group, fit in fits.items():
        name = splitwise_preset_name(*group)
        assert make_batch_latency(name) == fit.latency
        assert splitwise_batch_latency(*group) is make_batch_latency(name)  # fitted once


def test_fitted_model_reproduces_a_measured_batch():
    # Llama2-70B TP 4 on A100, 8 x 512 prompt tokens, 128 outputs: measured prefill 1,213 ms,
    # step 45.9 ms, e2e 7,044 ms (means of 5 repetitions).
    latency = make_batch_latency("splitwise-llama2-70b-a100-tp4")
    assert isinstance(latency, EngineStaticBatchLatency)
    service_s, first_token_s = latency.batch_timing(np.full(8, 512), np.full(8, 128), None)
    assert service_s == pytest.approx(7.044, rel=0.02)
    assert first_token_s == pytest.approx(1.213, rel=0.15)
    assert latency.estimate_s(8, 512, 128) == pytest.approx(service_s, rel=1e-12)


def test_an_unknown_group_is_named():
    with pytest.raises(ValueError, match="no rows for model='llama2-70b', hardware='a100-80gb'"):
        splitwise_batch_latency("llama2-70b", "a100-80gb", 16)


# --- the prefill extension of EngineStaticBatchLatency --------------------------------------


def test_engine_prefill_terms_floor_and_square():
    it = LinearIterationLatency(0.01, 1e-4, 1e-3, 1e-6)
    model = EngineStaticBatchLatency(
        it, prefill_fixed_s=0.002, prefill_s_per_squared_token=1e-7, prefill_floor_s=0.05
    )
    assert not model.linear_prefill and EngineStaticBatchLatency(it).linear_prefill
    prompts, outputs = np.array([100, 300]), np.array([3, 5])
    # 0.002 + 1e-4 * 400 + 1e-7 * (100^2 + 300^2) = 0.052 > floor.
    service_s, first_token_s = model.batch_timing(prompts, outputs, None)
    base_service_s, base_first_s = EngineStaticBatchLatency(it).batch_timing(prompts, outputs, None)
    assert first_token_s == pytest.approx(0.052)
    assert service_s - first_token_s == pytest.approx(base_service_s - base_first_s)
    # A small batch is held at the floor.
    _, first_token_s = model.batch_timing(np.array([10]), np.array([2]), None)
    assert first_token_s == 0.05
    with pytest.raises(ValueError, match="prefill_floor_s"):
        EngineStaticBatchLatency(it, prefill_floor_s=-1.0)


# --- the environment ------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in BATCH_LATENCY_PRESETS if n.startswith("splitwise-")])
def test_every_splitwise_preset_runs_an_episode(name):
    model = "bloom-176b" if "bloom" in name else "llama2-70b"
    tp = name.rsplit("-tp", 1)[1]
    gpu = "a100" if "a100" in name else "h100"
    kv_memory = f"{gpu}-80gb-{model}-tp{tp}"
    env = gym.make("llmsched/BatchScheduling-v0", latency=name, kv_memory=kv_memory, n_requests=40)
    _, info = env.reset(seed=3)
    assert info["kv_capacity_tokens"] == make_kv_memory(kv_memory).capacity_tokens
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(np.array([1, 0]))
        done = terminated or truncated
    metrics = info["episode_metrics"]
    assert metrics["completed"] + metrics["rejected"] == 40
    env.close()


def test_llama2_70b_kv_memory_arithmetic():
    # 2 * 80 layers * 8 KV heads * 128 * 2 bytes = 327,680 bytes per token; 80 GB x TP - 140 GB.
    assert make_kv_memory("a100-80gb-llama2-70b-tp2").capacity_tokens == 20_000_000_000 // 327_680
    assert make_kv_memory("h100-80gb-llama2-70b-tp8").capacity_tokens == 500_000_000_000 // 327_680
    assert (
        make_kv_memory("a100-80gb-bloom-176b-tp8").capacity_tokens == 288_000_000_000 // 4_014_080
    )
