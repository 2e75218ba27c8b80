"""Tests of llmsched_env/latency/presets.py: named models, their cited numbers, and lookup."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from llmsched_env.latency import (
    BATCH_LATENCY_PRESETS,
    ITERATION_LATENCY_PRESETS,
    KV_PRESETS,
    AffineIterationLatency,
    EngineStaticBatchLatency,
    ExponentialBatchService,
    KVMemory,
    LinearIterationLatency,
    MaxServiceLatency,
    StaticBatchLatency,
    make_batch_latency,
    make_iteration_latency,
    make_kv_memory,
)


def test_preset_tables_hold_the_documented_names():
    assert set(BATCH_LATENCY_PRESETS) == {
        "synthetic",
        "calibrated",
        "llama3.1-8b-h100",
        "llama3.1-8b-a100",
        "multibin-uniform",
        "mm1",
        *(
            f"splitwise-{model}-{gpu}-tp{tp}"
            for model, tps in (("llama2-70b", (2, 4, 8)), ("bloom-176b", (8,)))
            for gpu in ("a100", "h100", "h100-pcap")
            for tp in tps
        ),
    }
    assert set(ITERATION_LATENCY_PRESETS) == {
        "llama3-70b-a100",
        "demo2",
        "demo3",
        "sim-a",
        "mm1",
        "llama3.1-8b-h100",
        "llama3.1-8b-a100",
        *PROFILED_PRESETS,
    }
    assert set(KV_PRESETS) == {
        "h100-80gb-llama3.1-8b",
        "a100-80gb-llama3.1-8b",
        *(f"{gpu}-80gb-llama2-70b-tp{tp}" for gpu in ("a100", "h100") for tp in (2, 4, 8)),
        "a100-80gb-bloom-176b-tp8",
        "h100-80gb-bloom-176b-tp8",
        "reference-sim",
        *PROFILED_PRESETS,
        "unlimited",
    }


def test_batch_presets_match_their_sources():
    assert make_batch_latency("synthetic") == StaticBatchLatency(0.010, 0.0002, 0.3, floor_s=1e-3)
    assert make_batch_latency("calibrated") == StaticBatchLatency(0.0597, 0.005742, 0.3157)
    assert make_batch_latency("llama3.1-8b-h100") == EngineStaticBatchLatency(
        make_iteration_latency("llama3.1-8b-h100")
    )
    assert make_batch_latency("llama3.1-8b-a100") == EngineStaticBatchLatency(
        make_iteration_latency("llama3.1-8b-a100")
    )
    assert make_batch_latency("multibin-uniform") == MaxServiceLatency(0.01)
    assert make_batch_latency("mm1") == ExponentialBatchService(0.4)


PROFILED_PRESETS = (
    "vllm0.19-rtx4090-llama3.1-8b",
    "vllm0.19-rtxpro6000-llama3.1-8b",
    "vllm0.19-rtxpro6000-qwen3-32b-tp2",
    "vllm0.19-rtxpro6000-qwen3-30b-a3b-ep2",
)


def test_iteration_presets_match_their_sources():
    assert make_iteration_latency("llama3-70b-a100") == AffineIterationLatency(0.0455, 0.0003, 64)
    assert make_iteration_latency("demo3") == make_iteration_latency("llama3-70b-a100")
    assert make_iteration_latency("demo2") == AffineIterationLatency(0.010, 0.0005, 0)
    assert make_iteration_latency("sim-a") == AffineIterationLatency(
        0.01, 0.001, 0, stochastic=True
    )
    assert make_iteration_latency("mm1") == AffineIterationLatency(0.4, 0.0, 0, stochastic=True)
    h100 = make_iteration_latency("llama3.1-8b-h100")
    assert (h100.b0_s, h100.b1_s_per_prefill_token, h100.b2_s_per_decode_token) == pytest.approx(
        (5752.7e-6, 17.25e-6, 6.00e-6)
    )
    a100 = make_iteration_latency("llama3.1-8b-a100")
    assert (a100.b0_s, a100.b1_s_per_prefill_token, a100.b2_s_per_decode_token) == pytest.approx(
        (16441.5e-6, 47.84e-6, 18.21e-6)
    )
    assert h100.b3_s_per_context_token == a100.b3_s_per_context_token == 0.0
    assert isinstance(h100, LinearIterationLatency)


def test_kv_presets():
    assert KV_PRESETS["reference-sim"].capacity_tokens == 37_333
    for name in ("a100-80gb-llama3.1-8b", "h100-80gb-llama3.1-8b"):
        capacity = KV_PRESETS[name].capacity_tokens
        assert 0.9 * 450_000 <= capacity <= 1.1 * 450_000  # "roughly 450k tokens"
    assert KV_PRESETS["unlimited"].capacity_tokens >= 10**15


@pytest.mark.parametrize("name", sorted(BATCH_LATENCY_PRESETS))
def test_every_batch_preset_gives_positive_finite_times(name):
    model = make_batch_latency(name)
    service_s, first_token_s = model.batch_timing(
        np.array([120, 30, 700]), np.array([64, 256, 8]), np.random.default_rng(0)
    )
    assert math.isfinite(service_s) and service_s > 0
    assert math.isnan(first_token_s) or 0 < first_token_s <= service_s
    assert math.isfinite(model.estimate_s(8, 512, 256)) and model.estimate_s(8, 512, 256) > 0


@pytest.mark.parametrize("name", sorted(ITERATION_LATENCY_PRESETS))
def test_every_iteration_preset_gives_positive_finite_times(name):
    model = make_iteration_latency(name)
    duration = model.iteration_s(256, 32, 20_000, np.random.default_rng(0))
    assert math.isfinite(duration) and duration > 0
    assert model.estimate_s(256, 32, 20_000) > 0
    assert model.marginal_request_s(100, 50) >= 0
    assert model.stochastic == (name in {"sim-a", "mm1"})


def test_make_passes_model_objects_through():
    batch_model = StaticBatchLatency(0.01, 0.001, 0.1)
    iteration_model = LinearIterationLatency(0.005, 1e-5, 1e-5)
    memory = KVMemory(1000)
    assert make_batch_latency(batch_model) is batch_model
    assert make_iteration_latency(iteration_model) is iteration_model
    assert make_kv_memory(memory) is memory
    assert make_kv_memory(4096) == KVMemory(4096)
    assert make_kv_memory(np.int64(4096)) == KVMemory(4096)


def test_make_rejects_objects_without_the_protocol():
    with pytest.raises(TypeError, match=r"batch latency preset name .*got 3\.5, which lacks"):
        make_batch_latency(3.5)  # type: ignore[arg-type]
    # A batch model is not an iteration model: the message names what is missing.
    with pytest.raises(TypeError, match="lacks iteration_s, marginal_request_s, stochastic"):
        make_iteration_latency(StaticBatchLatency(0.01, 0.001, 0.1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="KV memory preset name .*got True"):
        make_kv_memory(True)
    with pytest.raises(ValueError, match=r"capacity_tokens must be an integer in \[1, .*, got 0"):
        make_kv_memory(0)


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ValueError, match="unknown batch latency preset 'calibrate'.*'calibrated'"):
        make_batch_latency("calibrate")
    with pytest.raises(
        ValueError, match=r"unknown iteration latency preset .*Did you mean 'demo2'"
    ):
        make_iteration_latency("demo-2")
    with pytest.raises(ValueError, match="unknown KV memory preset.*'reference-sim'"):
        make_kv_memory("reference_sim")


@pytest.mark.parametrize(
    "model",
    [make_batch_latency(n) for n in sorted(BATCH_LATENCY_PRESETS)]
    + [make_iteration_latency(n) for n in sorted(ITERATION_LATENCY_PRESETS)]
    + list(KV_PRESETS.values()),
    ids=repr,
)
def test_presets_survive_a_pickle_round_trip(model):
    assert pickle.loads(pickle.dumps(model)) == model
