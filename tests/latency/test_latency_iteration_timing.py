"""Compiled iteration timings give each deterministic model's iteration_s, bit for bit."""

import numpy as np
import pytest

from llmsched_env.latency import AffineIterationLatency, make_iteration_latency
from llmsched_env.latency.iteration_timing import iteration_time_s
from llmsched_env.latency.presets import ITERATION_LATENCY_PRESETS


@pytest.mark.parametrize("name", sorted(ITERATION_LATENCY_PRESETS))
def test_a_compiled_timing_equals_the_models_own_time(name):
    model = make_iteration_latency(name)
    timing = model.compiled_timing()
    if model.stochastic:
        assert timing is None  # its draws come from the run's generator, in Python
        return
    rng = np.random.default_rng(len(name))
    spread = getattr(model, "uses_decode_spread", False)
    for _ in range(300):
        prefill = int(rng.integers(0, 5000))
        decode = int(rng.integers(0, 300))
        context = int(rng.integers(decode, 400_000)) if decode else 0
        prefill_kv = int(rng.integers(0, 8000)) if prefill else 0
        sequences = int(rng.integers(0, 8)) if prefill else 0
        mean = context // max(decode, 1)
        longest = int(rng.integers(mean, mean + 5000)) if spread and decode > 1 else 0
        shortest = int(rng.integers(0, mean + 1)) if longest else 0
        expected = model.iteration_s(
            prefill,
            decode,
            context,
            rng,
            prefill_kv_tokens=prefill_kv,
            prefill_sequences=sequences,
            decode_kv_max=longest,
            decode_kv_min=shortest,
        )
        got = iteration_time_s(
            timing.code,
            timing.params,
            timing.tables,
            prefill,
            decode,
            context,
            prefill_kv,
            sequences,
            longest,
            shortest,
        )
        assert got == expected, (prefill, decode, context, prefill_kv, sequences)


def test_the_affine_threshold_is_kept():
    model = AffineIterationLatency(c_s=0.01, a_s_per_token=0.001, b0_tokens=64)
    t = model.compiled_timing()
    args = (t.code, t.params, t.tables)
    assert iteration_time_s(*args, 40, 24, 0, 0, 1, 0, 0) == 0.01  # 64 tokens: free
    assert iteration_time_s(*args, 40, 25, 0, 0, 1, 0, 0) == 0.01 + 0.001 * 1


@pytest.mark.parametrize("name", ["demo2", "llama3.1-8b-h100", "vllm0.19-rtx4090-llama3.1-8b"])
def test_a_subclass_has_no_compiled_timing(name):
    """Its overrides would be ignored by the compiled arithmetic of its parent."""
    model = make_iteration_latency(name)
    subclass = type("Subclassed", (type(model),), {})
    copied = object.__new__(subclass)
    copied.__dict__.update(model.__dict__)
    assert model.compiled_timing() is not None
    assert copied.compiled_timing() is None
