from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmsched_env.workload import (
    Discrete,
    Empirical,
    Exponential,
    Fixed,
    Geometric,
    LengthDistribution,
    LogNormal,
    Mixture,
    UniformInt,
)

from .stats_helpers import assert_mean, assert_variance

N = 200_000

DISTRIBUTIONS = {
    "fixed": Fixed(128),
    "uniform": UniformInt(100, 2000),
    "uniform-single": UniformInt(7, 7),
    "exponential": Exponential(50.0),
    "exponential-short": Exponential(0.3),
    "lognormal-demo3": LogNormal(3.2764, 1.5201),
    "lognormal-capped": LogNormal(5.0, 1.0, min_tokens=20, max_tokens=400),
    "lognormal-long-tail": LogNormal(7.5, 1.2, max_tokens=30000),
    "geometric": Geometric(0.05),
    "geometric-demo3": Geometric(0.0056, cap=1024),
    "discrete-demo2": Discrete((32, 128, 512), (0.6, 0.3, 0.1)),
    "mixture": Mixture((Fixed(5), Exponential(200.0), UniformInt(1, 9)), (0.2, 0.5, 0.3)),
    "empirical": Empirical(np.array([3, 3, 10, 200, 4000])),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_sample_types_and_support(name: str) -> None:
    dist = DISTRIBUTIONS[name]
    assert isinstance(dist, LengthDistribution)
    x = dist.sample(1000, np.random.default_rng(0))
    assert x.dtype == np.int64 and x.shape == (1000,)
    assert x.min() >= 1


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_mean_and_variance_match_samples(name: str) -> None:
    dist = DISTRIBUTIONS[name]
    x = dist.sample(N, np.random.default_rng(11)).astype(np.float64)
    assert_mean(x, dist.mean, dist.variance)
    assert_variance(x, dist.variance)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_same_seed_same_lengths(name: str) -> None:
    dist = DISTRIBUTIONS[name]
    a = dist.sample(300, np.random.default_rng(5))
    b = dist.sample(300, np.random.default_rng(5))
    assert np.array_equal(a, b)


def test_closed_forms() -> None:
    assert UniformInt(100, 2000).mean == 1050
    assert UniformInt(1, 6).variance == pytest.approx(35 / 12)
    p = 1 - np.exp(-1 / 50)
    assert Exponential(50.0).mean == pytest.approx(1 / p)
    assert Geometric(0.25).mean == 4.0
    assert Geometric(0.25, cap=1).mean == pytest.approx(1.0)
    assert Geometric(0.25, cap=1).variance == pytest.approx(0.0, abs=1e-12)
    assert Geometric(1.0, cap=5).mean == 1.0
    assert Geometric(0.0056, cap=1024).mean == pytest.approx(177.99, abs=0.05)
    assert Discrete((32, 128, 512), (0.6, 0.3, 0.1)).mean == pytest.approx(108.8)
    assert Mixture((Fixed(10), Fixed(30)), (0.5, 0.5)).variance == pytest.approx(100.0)


def test_lognormal_matches_demo3_rule() -> None:
    # demo3's prompt is max(1, int(lognormal)); int() truncates like floor for positives.
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    x = LogNormal(3.2764, 1.5201).sample(1000, rng_a)
    raw = rng_b.lognormal(3.2764, 1.5201, size=1000)
    assert x.tolist() == [max(1, int(v)) for v in raw]


def test_lognormal_caps() -> None:
    x = LogNormal(5.0, 3.0, min_tokens=10, max_tokens=50).sample(10_000, np.random.default_rng(0))
    assert x.min() == 10 and x.max() == 50


def test_geometric_support_and_cap() -> None:
    x = Geometric(0.01, cap=100).sample(10_000, np.random.default_rng(0))
    assert x.min() == 1 and x.max() == 100


def test_empirical_resamples_observed_values_and_copies_them() -> None:
    observed = np.array([4, 8, 15])
    dist = Empirical(observed)
    observed[0] = 99
    x = dist.sample(1000, np.random.default_rng(0))
    assert set(x.tolist()) == {4, 8, 15}
    assert not dist.values.flags.writeable


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: Fixed(0), ValueError, r"value must be an integer in \[1, 2147483647\], got 0"),
        (lambda: Fixed(2.5), TypeError, r"value must be an integer in \[1, .*, got 2.5 \(a float"),
        (lambda: UniformInt(5, 4), ValueError, r"high must be an integer in \[5, .*\], got 4"),
        (lambda: Exponential(0.0), ValueError, "mean_tokens must be a finite number > 0, got 0.0"),
        (lambda: LogNormal(1.0, 0.0), ValueError, "sigma must be a finite number > 0, got 0.0"),
        (lambda: LogNormal(1.0, 1.0, 5, 4), ValueError, r"max_tokens must be an integer in \[5,"),
        (lambda: Geometric(1.5), ValueError, r"p must be a finite number in \(0, 1.0\], got 1.5"),
        (lambda: Geometric(0.5, cap=0), ValueError, r"cap must be an integer in \[1, .*, got 0"),
        (lambda: Discrete((1, 2), (0.5, 0.6)), ValueError, r"probs must sum to 1"),
        (lambda: Discrete((1, 2), (0.5,)), ValueError, "probs must have 2 entries"),
        (lambda: Discrete((1, 0), (0.5, 0.5)), ValueError, r"values\[1\] must be an integer in"),
        (lambda: Discrete((), ()), ValueError, "at least one length"),
        (lambda: Mixture((Fixed(1),), (0.5,)), ValueError, "weights must sum to 1"),
        (lambda: Mixture((3,), (1.0,)), TypeError, r"components\[0\] must be a length"),
        (lambda: Empirical([]), ValueError, "non-empty"),
        (lambda: Empirical([1, 0]), ValueError, r"values\[1\] = 0"),
        (
            lambda: Empirical([1.0, np.inf]),
            ValueError,
            r"in \[1, 2147483647\], got values\[1\] = inf",
        ),
        (lambda: Empirical([1.5]), ValueError, "whole numbers"),
    ],
)
def test_constructor_errors(build, error, message: str) -> None:
    with pytest.raises(error, match=message):
        build()


def test_sample_argument_errors() -> None:
    with pytest.raises(ValueError, match="n must be an integer >= 0, got -2"):
        Fixed(1).sample(-2, np.random.default_rng(0))
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        UniformInt(1, 2).sample(2, rng=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Fixed(10**19), r"value must be an integer in \[1, 2147483647\]"),
        (lambda: UniformInt(1, 2**31), r"high must be an integer in \[1, 2147483647\]"),
        (lambda: Exponential(1e30), r"mean_tokens must be at most 5.369e\+07 tokens"),
        (lambda: Exponential(2**31 - 1), r"lengths beyond MAX_TOKENS.* must be rarer than 1e-17"),
        (lambda: LogNormal(50.0, 1.0), r"mu=50.0 and sigma=1.0 need max_tokens"),
        (lambda: LogNormal(10.0, 3.0), r"mu \+ 8.5 \* sigma must be at most log\(MAX_TOKENS\)"),
        (lambda: LogNormal(3.0, 1.0, max_tokens=2**40), r"max_tokens must be an integer in"),
        (lambda: Geometric(1e-300), r"p must be at least 40 / MAX_TOKENS = 1.863e-08"),
        (lambda: Geometric(0.5, cap=2**40), r"cap must be an integer in \[1, 2147483647\]"),
        (
            lambda: Discrete((2**40,), (1.0,)),
            r"values\[0\] must be an integer in \[1, 21",
        ),
    ],
)
def test_parameters_whose_lengths_overflow_a_token_count_are_refused(build, message) -> None:
    # Such draws wrapped around in int64 (Exponential(1e30) gave -2**63 for every request).
    with pytest.raises(ValueError, match=message):
        build()


def test_a_huge_mean_with_a_cap_is_accepted_and_draws_stay_in_range() -> None:
    assert LogNormal(800.0, 1.0, max_tokens=1000).mean == 1000.0
    rng = np.random.default_rng(0)
    for dist in (Exponential(5e7), Geometric(2e-8), LogNormal(12.9, 1.0)):  # at the bounds
        assert 1 <= dist.sample(100_000, rng).min() and dist.sample(100_000, rng).max() < 2**31


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Discrete(None, (1.0,)), r"values must be a sequence of lengths in tokens, got No"),
        (lambda: Discrete(5, (1.0,)), r"values must be a sequence of lengths in tokens, got 5"),
        (lambda: Discrete((10, 20), "ab"), r"probs must be a sequence of 2 probabilities, got 'a"),
        (lambda: Mixture(2.0, (1.0,)), r"components must be a sequence of length distributions"),
    ],
)
def test_non_sequences_are_a_type_error_naming_the_argument(build, message) -> None:
    with pytest.raises(TypeError, match=message):
        build()


def test_any_iterable_of_values_is_a_sequence() -> None:
    frequencies = pd.Series([100, 100, 200]).value_counts(normalize=True)
    assert Discrete(frequencies.index, frequencies).mean == pytest.approx(400 / 3)
    assert Mixture((d for d in (Fixed(3),)), {1.0: None}.keys()).mean == 3.0
    with pytest.raises(ValueError, match=r"weights must hold a number, got \('x',\)"):
        Mixture((Fixed(3),), ("x",))
