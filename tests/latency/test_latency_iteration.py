"""Tests of llmsched_env/latency/iteration.py: per-iteration latency for continuous batching."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmsched_env.latency import AffineIterationLatency, LinearIterationLatency

RNG = np.random.default_rng(0)
LLAMA70B = AffineIterationLatency(c_s=0.0455, a_s_per_token=0.30e-3, b0_tokens=64)


# --- AffineIterationLatency -----------------------------------------------------------------


def test_affine_formula():
    # S(w) = c + a * max(0, w - b0)
    assert LLAMA70B.iteration_s(100, 28, 0, RNG) == pytest.approx(0.0455 + 0.0003 * 64)  # 0.0647
    assert LLAMA70B.iteration_s(0, 10, 0, RNG) == 0.0455  # below b0: only c
    assert LLAMA70B.iteration_s(64, 0, 0, RNG) == 0.0455
    assert LLAMA70B.estimate_s(100, 28) == pytest.approx(0.0647)
    assert isinstance(LLAMA70B.iteration_s(100, 28, 0, RNG), float)


def test_affine_charges_a_mixed_batch_on_the_sum_of_its_parts():
    mixed = LLAMA70B.iteration_s(50, 50, 0, RNG)
    assert mixed == pytest.approx(0.0455 + 0.0003 * (100 - 64))  # 0.0563
    # Not max(S(prefill), S(decode)) = S(50) = 0.0455, the bug of one reference simulator.
    assert mixed > max(LLAMA70B.estimate_s(50, 0), LLAMA70B.estimate_s(0, 50))


def test_affine_ignores_context():
    assert LLAMA70B.iteration_s(10, 90, 10**6, RNG) == LLAMA70B.iteration_s(10, 90, 0, RNG)
    assert LLAMA70B.estimate_s(10, 90, 10**6) == LLAMA70B.estimate_s(10, 90)


def test_affine_deterministic_model_does_not_touch_rng():
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    LLAMA70B.iteration_s(500, 20, 0, rng)
    assert rng.bit_generator.state == state
    assert LLAMA70B.stochastic is False


def test_sim_a_mean_within_four_standard_errors():
    # Simulator A: C ~ Exp(0.01), A ~ Exp(0.001), b0 = 0; an iteration of w = 128 + 4 tokens.
    model = AffineIterationLatency(0.01, 0.001, b0_tokens=0, stochastic=True)
    rng = np.random.default_rng(2024)
    n, w = 20_000, 132
    draws = np.array([model.iteration_s(128, 4, 0, rng) for _ in range(n)])
    mean = 0.01 + 0.001 * w
    sd = math.sqrt(0.01**2 + (0.001 * w) ** 2)  # independent exponentials: variance = mean^2
    assert abs(draws.mean() - mean) < 4 * sd / math.sqrt(n)
    assert model.estimate_s(128, 4) == pytest.approx(mean)
    assert len(np.unique(draws)) == n


def test_mm1_preset_model_is_exponential_with_mean_0_4():
    # A prefill-only job of one token with a = 0: S ~ Exp(0.4), variance 0.16.
    model = AffineIterationLatency(0.4, 0.0, b0_tokens=0, stochastic=True)
    rng = np.random.default_rng(99)
    n = 40_000
    draws = np.array([model.iteration_s(1, 0, 0, rng) for _ in range(n)])
    assert abs(draws.mean() - 0.4) < 4 * 0.4 / math.sqrt(n)
    assert abs(draws.var(ddof=1) - 0.16) < 4 * math.sqrt(8 / n) * 0.16


def test_stochastic_draws_are_reproducible_under_a_seed():
    model = AffineIterationLatency(0.01, 0.001, stochastic=True)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    seq_a = [model.iteration_s(64, 8, 0, a) for _ in range(10)]
    seq_b = [model.iteration_s(64, 8, 0, b) for _ in range(10)]
    assert seq_a == seq_b


def test_affine_marginal_request_and_demo2_work_bound():
    demo2 = AffineIterationLatency(c_s=0.010, a_s_per_token=0.5e-3, b0_tokens=0)
    # A request costs its prompt in prefill and (output - 1) decode tokens: the prefill emits
    # the first output token. demo2: E[prompt] = 108.8, E[output] = 160.
    expected_prompt = 0.6 * 32 + 0.3 * 128 + 0.1 * 512
    expected_output = 0.5 * 64 + 0.5 * 256
    assert (expected_prompt, expected_output) == pytest.approx((108.8, 160.0))
    marginal = demo2.marginal_request_s(expected_prompt, expected_output)
    assert marginal == pytest.approx(0.5e-3 * (108.8 + 160.0 - 1.0))
    assert 1.0 / marginal == pytest.approx(7.4683, abs=1e-4)
    # The reference's 7.44 req/s counts every output token as a decode token: a * (p + o).
    assert 1.0 / (0.5e-3 * (108.8 + 160.0)) == pytest.approx(7.4405, abs=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"c_s": 0.0}, ValueError, r"c_s must be a finite number > 0, got 0\.0"),
        ({"a_s_per_token": -1e-3}, ValueError, r"a_s_per_token must be a finite number >= 0"),
        ({"a_s_per_token": math.nan}, ValueError, r"a_s_per_token.*got nan"),
        ({"b0_tokens": -1}, ValueError, r"b0_tokens must be an integer >= 0, got -1"),
        ({"b0_tokens": 1.5}, TypeError, r"b0_tokens must be an integer >= 0, got 1\.5"),
        ({"stochastic": "yes"}, TypeError, r"stochastic must be a bool, got 'yes'"),
    ],
)
def test_affine_rejects_bad_parameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        AffineIterationLatency(**({"c_s": 0.01, "a_s_per_token": 0.001} | kwargs))


# --- LinearIterationLatency -----------------------------------------------------------------


def test_linear_formula():
    h100 = LinearIterationLatency(5752.7e-6, 17.25e-6, 6.00e-6)
    expected = 5752.7e-6 + 17.25e-6 * 512 + 6.00e-6 * 32  # 14.7767 ms
    assert h100.iteration_s(512, 32, 10_000, RNG) == pytest.approx(expected)
    assert h100.estimate_s(512, 32) == pytest.approx(0.0147767)
    with_context = LinearIterationLatency(0.005, 1e-5, 2e-5, 1e-7)
    assert with_context.iteration_s(100, 10, 3000, RNG) == pytest.approx(
        0.005 + 1e-5 * 100 + 2e-5 * 10 + 1e-7 * 3000
    )
    assert with_context.estimate_s(100, 10, 3000) == with_context.iteration_s(100, 10, 3000, RNG)
    assert LinearIterationLatency.stochastic is False and h100.stochastic is False


def test_linear_marginal_request_sums_the_requests_token_work():
    model = LinearIterationLatency(0.005, 1e-5, 2e-5, 1e-7)
    # p = 10, o = 4: prefill of 10 tokens, then 3 decodes with contexts 11, 12, 13.
    expected = 1e-5 * 10 + 2e-5 * 3 + 1e-7 * (11 + 12 + 13)
    assert model.marginal_request_s(10, 4) == pytest.approx(expected)
    no_context = LinearIterationLatency(0.005, 1e-5, 2e-5)
    assert no_context.marginal_request_s(10, 4) == pytest.approx(1e-5 * 10 + 2e-5 * 3)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.0, 1e-5, 1e-5), r"b0_s must be a finite number > 0, got 0\.0"),
        ((0.005, -1e-5, 1e-5), r"b1_s_per_prefill_token must be a finite number >= 0"),
        ((0.005, 1e-5, math.inf), r"b2_s_per_decode_token.*got inf"),
        ((0.005, 1e-5, 1e-5, -1.0), r"b3_s_per_context_token.*got -1\.0"),
    ],
)
def test_linear_rejects_bad_parameters(args, match):
    with pytest.raises(ValueError, match=match):
        LinearIterationLatency(*args)


@pytest.mark.parametrize("preset", ["demo2", "llama3.1-8b-h100", "vllm0.19-rtx4090-llama3.1-8b"])
def test_estimates_refuse_negative_or_nan_counts(preset):
    # The linear model returned -11.5 ms for -1000 prefill tokens.
    from llmsched_env.latency import make_iteration_latency

    model = make_iteration_latency(preset)
    with pytest.raises(ValueError, match="prefill_tokens must be >= 0, got -1000"):
        model.estimate_s(-1000, 0)
    with pytest.raises(ValueError, match="context_tokens must be >= 0, got nan"):
        model.estimate_s(10, 1, float("nan"))
    assert model.estimate_s(0, 1) > 0


@pytest.mark.parametrize("preset", ["demo2", "llama3.1-8b-h100", "vllm0.19-rtx4090-llama3.1-8b"])
@pytest.mark.parametrize(
    ("prompt", "output", "message"),
    [
        (-100, 5, "prompt_tokens must be a finite number >= 0, got -100"),
        (10, 0.5, "output_tokens must be a finite number >= 1, got 0.5"),
        (10, float("inf"), "output_tokens must be a finite number >= 1, got inf"),
    ],
)
def test_marginal_request_time_refuses_lengths_no_request_has(preset, prompt, output, message):
    # The profiled model gave -0.0159 s for a prompt of -100 tokens.
    from llmsched_env.latency import make_iteration_latency

    model = make_iteration_latency(preset)
    with pytest.raises(ValueError, match=f"marginal_request_s: {message}"):
        model.marginal_request_s(prompt, output)
    assert model.marginal_request_s(0, 1) >= 0
