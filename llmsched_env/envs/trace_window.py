"""A trace source's episode window, drawn, cut and predicted by compiled code (the vector env).

:meth:`~llmsched_env.workload.sources.TraceSource.sample` draws where an episode's window of the
trace starts and its predictor's noise, then cuts the window, rebases and scales its arrivals
and rounds the predictions, in numpy. The compiled vector env does the same in its compiled
step (:func:`draw_window`), with the sub-env's own generator: numba's ``Generator`` methods
take the same values from the same bit generator as numpy's (``integers`` with ``endpoint``,
``lognormal``), and the arithmetic is the same, so each sub-env's requests are those of the
single env's ``reset``, bit for bit (the tests compare them).

Sources whose episodes this covers (:func:`cuts_windows`): a trace source whose predictor is the
oracle or multiplicative lognormal noise (``azure-conv``, the default, ``azure-conv-oracle`` and
the Mooncake traces). Other sources draw whole workloads in Python, and so do all where numba
and numpy would not draw alike (:func:`numba_draws_as_numpy`, checked once per process).
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from llmsched_env.jit import njit
from llmsched_env.workload import MAX_ARRIVAL_S, Workload
from llmsched_env.workload.predictors import LogNormalNoisePredictor, OraclePredictor
from llmsched_env.workload.requests import MAX_TOKENS, checked_speedup
from llmsched_env.workload.sources import TraceSource

#: The largest prediction, as the float the predictions are clipped to.
_MAX_TOKENS = float(MAX_TOKENS)


def cuts_windows(source: object) -> bool:
    """Whether :func:`draw_window` can draw ``source``'s episodes (see the module docstring)."""
    return (
        type(source) is TraceSource
        and type(source.predictor) in (OraclePredictor, LogNormalNoisePredictor)
        and numba_draws_as_numpy()
    )


@functools.cache
def numba_draws_as_numpy() -> bool:
    """Whether numba's ``Generator`` draws what numpy's does, bit for bit, in this process.

    numba implements the ``Generator`` methods with numpy's algorithms; this checks the two
    :func:`draw_window` uses (``integers`` with ``endpoint``, ``lognormal``) on a few thousand
    values, since another numpy or numba version, or Intel's SVML (whose ``exp`` may differ
    from the C library's in the last bit), could draw otherwise.
    """
    if numba.config.USING_SVML:
        return False
    numpy_rng, numba_rng = np.random.default_rng(2024), np.random.default_rng(2024)
    starts = [int(numpy_rng.integers(0, 19_000, endpoint=True)) for _ in range(64)]
    noise = numpy_rng.lognormal(0.0, 0.5, size=4096)
    numba_starts, numba_noise = _numba_draws(numba_rng, 64, 19_000, 0.5, 4096)
    return (
        starts == numba_starts.tolist()
        and np.array_equal(noise.view(np.int64), numba_noise.view(np.int64))
        and numpy_rng.bit_generator.state == numba_rng.bit_generator.state
    )


@njit(cache=True)
def _numba_draws(rng, n_starts, last_start, sigma, n_noise):
    """:func:`numba_draws_as_numpy`'s draws, as :func:`draw_window` makes them."""
    starts = np.empty(n_starts, dtype=np.int64)
    for k in range(n_starts):
        starts[k] = rng.integers(0, last_start, endpoint=True)
    noise = np.empty(n_noise)
    for j in range(n_noise):
        noise[j] = rng.lognormal(0.0, sigma)
    return starts, noise


def window_sigma(source: TraceSource) -> float:
    """The lognormal noise's ``sigma`` of ``source``'s predictor, ``nan`` for the oracle."""
    predictor = source.predictor
    return predictor.sigma if isinstance(predictor, LogNormalNoisePredictor) else np.nan


@njit(cache=True)
def draw_window(
    rng,
    trace_arrival,
    trace_prompt,
    trace_output,
    first_start,
    last_start,
    speedup,
    sigma,
    arrival,
    prompt,
    output,
    predicted,
):
    """Draw and write the window of ``arrival.shape[0]`` requests as ``source.sample`` does.

    Args:
        rng: The episode's generator.
        trace_arrival: The trace's arrival times.
        trace_prompt: Its prompt tokens.
        trace_output: Its output tokens.
        first_start: The first request a window may start at (the calibration's size).
        last_start: The last start, from ``first_start`` (the episode region's length less
            the window's).
        speedup: The arrivals' speedup, the episode's rate over the trace's.
        sigma: The lognormal noise's ``sigma``; ``nan``: the oracle, which draws nothing.
        arrival: Where the window's arrival times go, rebased to the first, divided by
            ``speedup``.
        prompt: Where its prompt tokens go.
        output: Where its output tokens go.
        predicted: Where its predictions go: ``round(output * noise)`` (ties to even), clipped
            to ``[1, MAX_TOKENS]``.

    Returns:
        The window's first request in the trace, or ``-1 - that`` if its arrivals, scaled,
        span more than ``MAX_ARRIVAL_S`` (nothing more is drawn or written then, as ``sample``
        raises before it predicts).
    """
    n = arrival.shape[0]
    lo = first_start + rng.integers(0, last_start, endpoint=True)
    first = trace_arrival[lo]
    if not (trace_arrival[lo + n - 1] - first) / speedup <= MAX_ARRIVAL_S:
        return -1 - lo
    oracle = np.isnan(sigma)
    for j in range(n):
        arrival[j] = (trace_arrival[lo + j] - first) / speedup
        prompt[j] = trace_prompt[lo + j]
        tokens = trace_output[lo + j]
        output[j] = tokens
        if oracle:
            predicted[j] = tokens
        else:
            guess = np.rint(float(tokens) * rng.lognormal(0.0, sigma))
            predicted[j] = np.int64(min(max(guess, 1.0), _MAX_TOKENS))
    return lo


def window_workload(source: TraceSource, lo: int, arrays: tuple[np.ndarray, ...]) -> Workload:
    """The :class:`Workload` of the window from ``lo`` that :func:`draw_window` wrote.

    ``arrays``: ``(predicted, prompt, arrival, output)``, as in the vector env's episode
    (copied); the window's prefix-block hashes, if the trace has them, come from the trace.
    """
    predicted, prompt, arrival, output = (values.copy() for values in arrays)
    keep = slice(lo, lo + arrival.shape[0])
    return Workload._derived(
        arrival, prompt, output, predicted, source.name, **source.trace._prefix_kwargs(keep)
    )


def raise_span_error(source: TraceSource, lo: int, n_requests: int, speedup: float) -> None:
    """Raise the error ``source.sample`` raises for a window from ``lo`` that spans too long.

    For a window :func:`draw_window` refused (it returned ``-1 - lo``).
    """
    arrival_s = source.trace.arrival_s
    checked_speedup(float(arrival_s[lo + n_requests - 1] - arrival_s[lo]), speedup)
    raise RuntimeError(f"draw_window refused the window from {lo}, which checked_speedup allows")
