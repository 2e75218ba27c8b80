"""Tests of llmsched_env/latency/batch.py: static-batch service times."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmsched_env.latency import (
    AffineIterationLatency,
    EngineStaticBatchLatency,
    ExponentialBatchService,
    LinearIterationLatency,
    MaxServiceLatency,
    StaticBatchLatency,
)
from llmsched_env.latency.batch import compiled_batch_timing

RNG = np.random.default_rng(0)
SYNTHETIC = StaticBatchLatency(alpha_s=0.010, beta_s_per_token=0.0002, gamma=0.3)


# --- StaticBatchLatency ---------------------------------------------------------------------


def test_static_batch_uses_longest_prompt_plus_output():
    prompts = np.array([100, 300, 20, 50])
    outputs = np.array([50, 10, 400, 30])  # sums 150, 310, 420, 80 -> L = 420, b = 4
    service_s, first_token_s = SYNTHETIC.batch_timing(prompts, outputs, RNG)
    assert service_s == pytest.approx(0.010 + 0.0002 * 420 * (1 + 0.3 * 3 / 4))  # 0.1129
    assert service_s == pytest.approx(0.1129)
    assert math.isnan(first_token_s)
    assert isinstance(service_s, float)


def test_static_batch_of_one_has_no_crowding_term():
    service_s, _ = SYNTHETIC.batch_timing(np.array([60]), np.array([40]), RNG)
    assert service_s == pytest.approx(0.010 + 0.0002 * 100)


def test_static_batch_estimate_matches_batch_timing():
    prompts = np.full(8, 200)
    outputs = np.full(8, 56)
    service_s, _ = SYNTHETIC.batch_timing(prompts, outputs, RNG)
    assert SYNTHETIC.estimate_s(8, 200, 56) == pytest.approx(service_s)
    assert SYNTHETIC.estimate_s(8, 200, 56) == pytest.approx(
        0.010 + 0.0002 * 256 * (1 + 0.3 * 7 / 8)
    )


def test_static_batch_floor():
    model = StaticBatchLatency(alpha_s=0.0, beta_s_per_token=1e-7, gamma=0.0, floor_s=1e-3)
    assert model.batch_timing(np.array([1]), np.array([1]), RNG)[0] == 1e-3
    assert model.estimate_s(1, 1, 1) == 1e-3


def test_static_batch_coefficients_become_python_floats():
    model = StaticBatchLatency(np.float64(0.01), np.float32(0.5), 1)
    assert all(type(v) is float for v in (model.alpha_s, model.beta_s_per_token, model.gamma))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"alpha_s": -0.01}, ValueError, r"alpha_s must be a finite number >= 0, got -0\.01"),
        ({"beta_s_per_token": math.nan}, ValueError, r"beta_s_per_token.*got nan"),
        ({"gamma": math.inf}, ValueError, r"gamma.*got inf"),
        ({"floor_s": 0.0}, ValueError, r"floor_s must be a finite number > 0, got 0\.0"),
        ({"gamma": "0.3"}, TypeError, r"gamma.*got '0\.3'"),
        ({"alpha_s": True}, TypeError, r"alpha_s.*got True"),
    ],
)
def test_static_batch_rejects_bad_parameters(kwargs, exc, match):
    params = {"alpha_s": 0.01, "beta_s_per_token": 0.0002, "gamma": 0.3} | kwargs
    with pytest.raises(exc, match=match):
        StaticBatchLatency(**params)


@pytest.mark.parametrize(
    "model",
    [SYNTHETIC, MaxServiceLatency(0.01), EngineStaticBatchLatency(LinearIterationLatency(1, 1, 1))],
)
def test_batch_models_reject_empty_or_mismatched_batches(model):
    with pytest.raises(ValueError, match="non-empty `prompt_tokens` and `output_tokens`.* 0 and 0"):
        model.batch_timing(np.array([], dtype=int), np.array([], dtype=int), RNG)
    with pytest.raises(ValueError, match="got lengths 2 and 3"):
        model.batch_timing(np.array([1, 2]), np.array([1, 2, 3]), RNG)


# --- EngineStaticBatchLatency ---------------------------------------------------------------

ENGINE_ITERATION = LinearIterationLatency(
    b0_s=0.01,
    b1_s_per_prefill_token=0.001,
    b2_s_per_decode_token=0.002,
    b3_s_per_context_token=1e-4,
)


def test_engine_static_batch_hand_computed_two_requests():
    # prompts 10 and 20 (P = 30), outputs 2 and 4 (M = 4), b = 2.
    # prefill: 0.01 + 0.001 * 30 = 0.04 (emits both first tokens).
    # 3 decode iterations of the whole batch: 3 * (0.01 + 0.002 * 2) = 0.042.
    # decode contexts, prompt + min(k, o_i): k=1: 11 + 21, k=2: 12 + 22, k=3: 12 + 23 -> 101 tokens.
    model = EngineStaticBatchLatency(ENGINE_ITERATION)
    service_s, first_token_s = model.batch_timing(np.array([10, 20]), np.array([2, 4]), RNG)
    assert first_token_s == pytest.approx(0.04)
    assert service_s == pytest.approx(0.04 + 0.042 + 1e-4 * 101)  # 0.0921
    assert isinstance(service_s, float) and isinstance(first_token_s, float)


def test_engine_static_batch_closed_form_matches_iteration_by_iteration():
    rng = np.random.default_rng(7)
    model = EngineStaticBatchLatency(ENGINE_ITERATION)
    for _ in range(20):
        size = int(rng.integers(1, 9))
        prompts = rng.integers(1, 200, size)
        outputs = rng.integers(1, 60, size)
        longest = int(outputs.max())
        expected = ENGINE_ITERATION.iteration_s(int(prompts.sum()), 0, 0, rng)
        first = expected
        for k in range(1, longest):
            context = int(np.sum(prompts + np.minimum(k, outputs)))
            expected += ENGINE_ITERATION.iteration_s(0, size, context, rng)
        service_s, first_token_s = model.batch_timing(prompts, outputs, rng)
        assert service_s == pytest.approx(expected, rel=1e-12)
        assert first_token_s == pytest.approx(first, rel=1e-12)


def test_engine_static_batch_single_token_outputs_are_prefill_only():
    model = EngineStaticBatchLatency(ENGINE_ITERATION)
    service_s, first_token_s = model.batch_timing(np.array([5, 7]), np.array([1, 1]), RNG)
    assert service_s == first_token_s == pytest.approx(0.01 + 0.001 * 12)


def test_engine_static_batch_estimate_matches_uniform_batch():
    model = EngineStaticBatchLatency(ENGINE_ITERATION)
    service_s, _ = model.batch_timing(np.full(3, 40), np.full(3, 9), RNG)
    assert model.estimate_s(3, 40, 9) == pytest.approx(service_s, rel=1e-12)


def test_engine_static_batch_errors():
    with pytest.raises(TypeError, match="iteration must be a LinearIterationLatency"):
        EngineStaticBatchLatency(AffineIterationLatency(0.01, 0.001))
    model = EngineStaticBatchLatency(ENGINE_ITERATION)
    with pytest.raises(ValueError, match="longest `output_tokens` of a batch to be >= 1"):
        model.batch_timing(np.array([5, 7]), np.array([0, 0]), RNG)


# --- MaxServiceLatency and ExponentialBatchService ------------------------------------------


def test_max_service_is_max_member_service_and_ignores_prompts():
    model = MaxServiceLatency(0.01)
    service_s, first_token_s = model.batch_timing(
        np.array([5000, 1, 1]), np.array([10, 40, 20]), RNG
    )
    assert service_s == pytest.approx(0.4)
    assert math.isnan(first_token_s)
    assert model.estimate_s(128, 10_000, 40) == pytest.approx(0.4)


def test_max_service_rejects_nonpositive_rate():
    with pytest.raises(ValueError, match=r"seconds_per_output_token must be a finite number > 0"):
        MaxServiceLatency(0.0)


def test_exponential_batch_service_mean_and_variance():
    model = ExponentialBatchService(0.4)
    rng = np.random.default_rng(12345)
    prompts, outputs = np.array([1]), np.array([1])
    n = 40_000
    draws = np.array([model.batch_timing(prompts, outputs, rng)[0] for _ in range(n)])
    assert abs(draws.mean() - 0.4) < 4 * 0.4 / math.sqrt(n)
    # Exp(mean m): variance m^2; the sample variance has standard error sqrt(8 / n) * m^2.
    assert abs(draws.var(ddof=1) - 0.16) < 4 * math.sqrt(8 / n) * 0.16
    assert model.estimate_s(1, 1, 1) == 0.4
    assert math.isnan(model.batch_timing(prompts, outputs, rng)[1])


def test_exponential_batch_service_is_deterministic_under_a_seed():
    model = ExponentialBatchService(0.4)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    one = np.array([1])
    first = [model.batch_timing(one, one, a)[0] for _ in range(5)]
    assert first == [model.batch_timing(one, one, b)[0] for _ in range(5)]
    assert len(set(first)) == 5


def test_exponential_batch_service_rejects_bad_mean():
    with pytest.raises(ValueError, match=r"mean_s must be a finite number > 0, got -1"):
        ExponentialBatchService(-1)


# --- compiled timings -------------------------------------------------------------------------

DETERMINISTIC_MODELS = [
    SYNTHETIC,
    StaticBatchLatency(alpha_s=0.0597, beta_s_per_token=0.005742, gamma=0.3157),  # "calibrated"
    StaticBatchLatency(alpha_s=0.0, beta_s_per_token=1e-6, gamma=0.0, floor_s=0.05),  # floored
    EngineStaticBatchLatency(LinearIterationLatency(0.0057, 1.7e-5, 6e-6, 2e-8)),
    EngineStaticBatchLatency(LinearIterationLatency(0.005, 1e-5, 1e-4)),
    EngineStaticBatchLatency(
        LinearIterationLatency(0.004, 2e-5, 3e-5, 1e-8),
        prefill_fixed_s=0.01,
        prefill_s_per_squared_token=3e-9,
        prefill_floor_s=0.03,
    ),
    MaxServiceLatency(0.01),
]


@pytest.mark.parametrize("model", DETERMINISTIC_MODELS, ids=lambda m: repr(m)[:40])
def test_compiled_timing_is_batch_timing_bit_for_bit(model):
    code, params = model.compiled_timing()
    rng = np.random.default_rng(1)
    for size in (1, 2, 7, 64, 300):
        prompt = rng.integers(1, 6000, 2 * size)
        output = rng.integers(1, 4000, 2 * size)
        head, stop = size // 2, size // 2 + size  # a range inside longer arrays
        compiled = compiled_batch_timing(code, params, prompt, output, head, stop)
        expected = model.batch_timing(prompt[head:stop], output[head:stop], None)
        assert repr(compiled) == repr(tuple(float(x) for x in expected))  # nan equals nan


def test_a_stochastic_model_has_no_compiled_timing():
    assert ExponentialBatchService(0.4).compiled_timing() is None


@pytest.mark.parametrize(
    ("preset", "args", "message"),
    [
        ("llama3.1-8b-h100", (1, 10, 0), "output_tokens must be >= 1, got 0"),
        ("calibrated", (0, 10, 10), "batch_size must be >= 1, got 0"),
        ("multibin-uniform", (1, 10, -1), "output_tokens must be >= 1, got -1"),
        ("llama3.1-8b-h100", (2, -5, 10), "prompt_tokens must be >= 0, got -5"),
    ],
)
def test_estimates_refuse_batches_no_run_has(preset, args, message):
    # A negative count gave a negative time; a batch of 0 divided by zero.
    from llmsched_env.latency import make_batch_latency

    with pytest.raises(ValueError, match=message):
        make_batch_latency(preset).estimate_s(*args)


@pytest.mark.parametrize("model", DETERMINISTIC_MODELS, ids=lambda m: repr(m)[:40])
def test_a_subclass_has_no_compiled_timing(model):
    """A subclass may override batch_timing, which its parent's compiled arithmetic ignores."""
    subclass = type("Subclassed", (type(model),), {})
    copied = object.__new__(subclass)
    copied.__dict__.update(model.__dict__)
    assert copied.compiled_timing() is None
