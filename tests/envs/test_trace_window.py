"""A trace's episode window drawn by compiled code, against the trace source's own ``sample``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsched_env.envs.trace_window import (
    cuts_windows,
    draw_window,
    numba_draws_as_numpy,
    raise_span_error,
    window_sigma,
    window_workload,
)
from llmsched_env.workload import make_workload_source
from llmsched_env.workload.predictors import LogNormalNoisePredictor
from llmsched_env.workload.requests import ArrivalSpanError
from llmsched_env.workload.sources import TraceSource


def _draw(source: TraceSource, n: int, rng: np.random.Generator, rate: float) -> tuple:
    """``(lo, arrays)``: the window ``source.sample`` would give, drawn compiled from ``rng``."""
    predicted, prompt, output = (np.empty(n, dtype=np.int64) for _ in range(3))
    arrival = np.empty(n)
    trace = source.trace
    lo = draw_window(
        rng,
        trace.arrival_s,
        trace.prompt_tokens,
        trace.output_tokens,
        source.calibration_size,
        source.max_episode_requests - n,
        rate / source.natural_rate_rps,
        window_sigma(source),
        arrival,
        prompt,
        output,
        predicted,
    )
    return lo, (predicted, prompt, arrival, output)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    rate=st.floats(0.05, 500.0),
    sigma=st.sampled_from([0.0, 0.5, 3.0, 40.0]),  # 40: huge predictions, clipped
)
def test_the_compiled_window_is_the_sources_sample(n, seed, rate, sigma):
    base = make_workload_source("azure-conv")
    source = TraceSource(base.name, base.trace, LogNormalNoisePredictor(sigma))
    numpy_rng, numba_rng = np.random.default_rng(seed), np.random.default_rng(seed)
    expected = source.sample(n, numpy_rng, arrival_rate_rps=rate)
    got = window_workload(source, *_draw(source, n, numba_rng, rate))
    for name in ("arrival_s", "prompt_tokens", "output_tokens", "predicted_output_tokens"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
        assert getattr(got, name).dtype == getattr(expected, name).dtype
        assert not getattr(got, name).flags.writeable
    assert numba_rng.bit_generator.state == numpy_rng.bit_generator.state  # same draws taken


def test_long_windows_predict_as_numpys_lognormal_noise():
    base = make_workload_source("azure-conv")
    for sigma in (0.1, 0.5, 2.0):
        source = TraceSource(base.name, base.trace, LogNormalNoisePredictor(sigma))
        n = source.max_episode_requests
        expected = source.sample(n, np.random.default_rng(7), arrival_rate_rps=3.0)
        got = window_workload(source, *_draw(source, n, np.random.default_rng(7), 3.0))
        np.testing.assert_array_equal(got.predicted_output_tokens, expected.predicted_output_tokens)


def test_the_oracles_window_draws_only_its_start():
    source = make_workload_source("azure-conv-oracle")
    numpy_rng, numba_rng = np.random.default_rng(3), np.random.default_rng(3)
    expected = source.sample(50, numpy_rng, arrival_rate_rps=2.0)
    _, (predicted, *_) = _draw(source, 50, numba_rng, 2.0)
    np.testing.assert_array_equal(predicted, expected.predicted_output_tokens)
    assert numba_rng.bit_generator.state == numpy_rng.bit_generator.state


def test_a_window_keeps_its_prefix_block_hashes():
    source = make_workload_source("mooncake-conversation")
    expected = source.sample(40, np.random.default_rng(8), arrival_rate_rps=1.0)
    got = window_workload(source, *_draw(source, 40, np.random.default_rng(8), 1.0))
    assert got.prefix_block_tokens == expected.prefix_block_tokens
    assert len(got.prefix_block_hashes) == len(expected.prefix_block_hashes) == 40
    for a, b in zip(got.prefix_block_hashes, expected.prefix_block_hashes):
        np.testing.assert_array_equal(a, b)


def test_a_window_that_spans_too_long_is_refused_as_sample_refuses_it():
    source = make_workload_source("azure-conv")
    rate = 1e-9  # every window's arrivals, scaled, span far beyond MAX_ARRIVAL_S
    with pytest.raises(ArrivalSpanError) as expected:
        source.sample(100, np.random.default_rng(1), arrival_rate_rps=rate)
    numba_rng = np.random.default_rng(1)
    lo, _ = _draw(source, 100, numba_rng, rate)
    assert lo < 0
    with pytest.raises(ArrivalSpanError) as error:
        raise_span_error(source, -1 - lo, 100, rate / source.natural_rate_rps)
    assert str(error.value) == str(expected.value)


@pytest.mark.parametrize(
    ("name", "cut"),
    [
        ("azure-conv", True),
        ("azure-conv-oracle", True),
        ("mooncake-conversation", True),  # with prefix-block hashes
        ("demo3", False),  # not a trace
    ],
)
def test_which_sources_are_drawn_by_compiled_code(name, cut):
    assert numba_draws_as_numpy()  # (else none is, and the vector env draws them in Python)
    assert cuts_windows(make_workload_source(name)) is cut
