from __future__ import annotations

import numpy as np
import pytest

from llmsched_env.workload import DeterministicArrivals, GammaArrivals, PoissonArrivals

from .stats_helpers import assert_mean, assert_variance

N = 200_000


def gaps(times: np.ndarray) -> np.ndarray:
    return np.diff(times, prepend=0.0)


def test_poisson_gaps_are_exponential() -> None:
    rate = 2.5
    times = PoissonArrivals(rate).sample_times(N, np.random.default_rng(1))
    assert times.dtype == np.float64 and times.shape == (N,)
    assert times[0] > 0 and np.all(np.diff(times) >= 0)
    g = gaps(times)
    # Exp(rate): mean 1/rate, variance 1/rate^2 (cv = 1).
    assert_mean(g, 1 / rate, 1 / rate**2)
    assert_variance(g, 1 / rate**2)
    assert g.std() / g.mean() == pytest.approx(1.0, abs=0.02)  # se of the cv ~ 0.002


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_gaps_have_the_requested_rate_and_cv(cv: float) -> None:
    rate = 4.0
    process = GammaArrivals(rate, cv)
    g = gaps(process.sample_times(N, np.random.default_rng(2)))
    mean_gap = 1 / rate
    assert_mean(g, mean_gap, (cv * mean_gap) ** 2)
    assert_variance(g, (cv * mean_gap) ** 2)
    # Relative se of the sample cv is about sqrt((2 + 6 cv^2) / (4 N)) <= 0.009 here.
    assert g.std() / g.mean() == pytest.approx(cv, rel=0.05)


def test_gamma_shape_and_from_shape() -> None:
    process = GammaArrivals.from_shape(rate_rps=0.5, shape=0.5)
    assert process.cv == pytest.approx(np.sqrt(2))
    assert process.shape == pytest.approx(0.5)
    assert process.rate_rps == 0.5


@pytest.mark.parametrize("process", [PoissonArrivals(1.0), GammaArrivals(1.0, 3.0)])
def test_rate_override_rescales_and_keeps_the_stream(process: PoissonArrivals) -> None:
    slow = process.sample_times(1000, np.random.default_rng(3))
    fast = process.sample_times(1000, np.random.default_rng(3), rate_rps=10.0)
    np.testing.assert_allclose(fast, slow / 10.0, rtol=1e-12)


def test_same_seed_same_times() -> None:
    for process in (PoissonArrivals(3.0), GammaArrivals(3.0, 2.0)):
        a = process.sample_times(500, np.random.default_rng(7))
        b = process.sample_times(500, np.random.default_rng(7))
        assert np.array_equal(a, b)


def test_deterministic_arrivals() -> None:
    times = DeterministicArrivals(4.0).sample_times(4, np.random.default_rng(0))
    assert times.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert DeterministicArrivals(4.0).sample_times(2, np.random.default_rng(0), 1.0).tolist() == [
        1.0,
        2.0,
    ]


def test_zero_arrivals() -> None:
    assert PoissonArrivals(1.0).sample_times(0, np.random.default_rng(0)).shape == (0,)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: PoissonArrivals(0.0), ValueError, "rate_rps must be a finite number > 0, got 0.0"),
        (lambda: PoissonArrivals(float("nan")), ValueError, "rate_rps must be a finite number"),
        (lambda: GammaArrivals(1.0, -1.0), ValueError, r"cv must be in \[0.001, 1000\], got -1.0"),
        (lambda: GammaArrivals(1.0, 0), ValueError, r"cv must be in \[0.001, 1000\], got 0"),
        (lambda: GammaArrivals(1.0, "2"), TypeError, "cv must be a finite number, got '2'"),
        (lambda: GammaArrivals.from_shape(1.0, 0.0), ValueError, "shape must be a finite number"),
        # Beyond [0.001, 1000] the draw breaks down: cv 1e-160 drew nan and hung an episode.
        (lambda: GammaArrivals(1.0, 1e-160), ValueError, r"cv must be in \[0.001, 1000\]"),
        (lambda: GammaArrivals(1.0, 1e200), ValueError, r"cv must be in \[0.001, 1000\]"),
        (lambda: GammaArrivals.from_shape(1.0, 1e300), ValueError, r"cv must be in \[0.001"),
    ],
)
def test_constructor_errors(build, error, message: str) -> None:
    with pytest.raises(error, match=message):
        build()


def test_sample_errors() -> None:
    process = PoissonArrivals(1.0)
    with pytest.raises(ValueError, match="n must be an integer >= 0, got -1"):
        process.sample_times(-1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rate_rps must be a finite number > 0, got -3.0"):
        process.sample_times(3, np.random.default_rng(0), rate_rps=-3.0)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        process.sample_times(3, np.random.RandomState(0))
