from __future__ import annotations

import builtins
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import llmsched_env  # noqa: F401  (registers the env ids)
from llmsched_env.evaluation import EpisodeTask, run_episode
from llmsched_env.statistics import describe_rows, pairwise_sum, percentiles, sequential_sum

FRACTIONS = np.true_divide((50, 95, 99), 100)
finite = st.floats(-1e12, 1e12, allow_nan=False, allow_subnormal=False)


@settings(max_examples=300, deadline=None)
@given(arrays(np.float64, st.integers(0, 600), elements=finite))
def test_pairwise_sum_is_numpys_sum_bit_for_bit(values: np.ndarray) -> None:
    assert pairwise_sum(values, 0, values.shape[0]) == np.sum(values)


# NumPy before 2.3 summed arrays of more than 8,192 values in buffered chunks of 8,192 (the sum
# of the chunks' pairwise sums); pairwise_sum is NumPy 2.3's, the same on every NumPy.
_CHUNKED_NUMPY = tuple(int(part) for part in np.__version__.split(".")[:2]) < (2, 3)
_LONG = pytest.mark.skipif(_CHUNKED_NUMPY, reason="NumPy < 2.3 sums in chunks of 8,192 values")


@pytest.mark.parametrize(
    "n",
    [
        7,
        8,
        127,
        128,
        129,
        1000,
        pytest.param(8193, marks=_LONG),
        pytest.param(100_003, marks=_LONG),
    ],
)
def test_pairwise_sum_splits_as_numpy_does_at_every_size(n: int) -> None:
    values = np.random.default_rng(n).lognormal(0.0, 3.0, n)
    assert pairwise_sum(values, 0, n) == np.sum(values)
    assert pairwise_sum(values, 3, n - 5) == np.sum(values[3 : n - 2])


@pytest.mark.parametrize("n", [2, 10])
def test_pairwise_sum_of_negative_zeros_is_numpys_positive_zero(n: int) -> None:
    values = np.full(n, -0.0)
    assert str(pairwise_sum(values, 0, n)) == str(np.sum(values)) == "0.0"


@settings(max_examples=300, deadline=None)
@given(arrays(np.float64, st.integers(1, 400), elements=finite | st.sampled_from([0.0, 1.0, 2.5])))
def test_percentiles_are_numpys_linear_percentiles(values: np.ndarray) -> None:
    out = np.empty(3)
    before = values.copy()
    percentiles(values, FRACTIONS, out)
    assert out.tolist() == np.percentile(values, (50, 95, 99)).tolist()
    assert values.tolist() == before.tolist()


def test_describe_rows_gives_mean_and_percentiles_per_row_and_nan_for_empty_rows() -> None:
    rng = np.random.default_rng(0)
    values = rng.exponential(2.0, (3, 500))
    lengths = np.array([500, 0, 17])
    out = describe_rows(values, lengths, FRACTIONS)
    for r, n in enumerate(lengths.tolist()):
        row = values[r, :n]
        expected = [np.mean(row), *np.percentile(row, (50, 95, 99))] if n else [np.nan] * 4
        np.testing.assert_array_equal(out[r], expected)


@pytest.mark.parametrize("n", [1, 2, 3, 100, 1001])
@pytest.mark.parametrize(
    "shape", ["sorted", "reversed", "constant", "two-values", "organ-pipe", "random"]
)
def test_percentiles_select_the_right_order_statistics_of_adversarial_orders(
    n: int, shape: str
) -> None:
    rng = np.random.default_rng(n)
    values = {
        "sorted": np.arange(n, dtype=np.float64),
        "reversed": np.arange(n, 0, -1, dtype=np.float64),
        "constant": np.full(n, 3.5),
        "two-values": rng.integers(0, 2, n).astype(np.float64),
        "organ-pipe": np.minimum(np.arange(n), np.arange(n)[::-1]).astype(np.float64),
        "random": rng.lognormal(0.0, 2.0, n),
    }[shape]
    fractions = np.true_divide(np.array([0, 1, 25, 50, 75, 90, 95, 99, 99.9, 100]), 100)
    out = np.empty(fractions.shape[0])
    percentiles(values, fractions, out)
    expected = np.percentile(values, [0, 1, 25, 50, 75, 90, 95, 99, 99.9, 100])
    assert out.tolist() == expected.tolist()


def test_sequential_sum_adds_left_to_right_as_the_builtin_sum_did_before_python_3_12() -> None:
    assert sequential_sum([0.1] * 10) == 0.9999999999999999  # Python 3.12's sum: 1.0
    assert sequential_sum([1e100, 1.0, -1e100]) == 0.0  # Python 3.12's sum: 1.0
    assert sequential_sum(iter([2.5, 0.25])) == 2.75
    assert sequential_sum([]) == 0.0


def _compensated_sum(values, start=0):
    """The built-in ``sum`` as Python 3.12 and later round it, for floats (exactly, here)."""
    values = list(values)
    scalars = all(isinstance(v, int | float | np.integer | np.floating) for v in values)
    if not scalars or not any(isinstance(v, float | np.floating) for v in values):
        return _builtin_sum(values, start)
    return math.fsum([start, *values])


def _left_to_right_sum(values, start=0):
    """The built-in ``sum`` as Python 3.11 and before round it, for floats."""
    values = list(values)
    scalars = all(isinstance(v, int | float | np.integer | np.floating) for v in values)
    if not scalars or not any(isinstance(v, float | np.floating) for v in values):
        return _builtin_sum(values, start)
    total = start
    for value in values:
        total = total + value
    return total


_builtin_sum = builtins.sum


@pytest.mark.parametrize(
    ("env_id", "kwargs", "policy"),
    [
        # Seed 2 of Routing-v0's defaults: summed by the built-in sum, its GPUs' busy time
        # came out one ulp apart under Python 3.11 and 3.12 (gpu_utilization differed).
        ("llmsched/Routing-v0", {}, "least-tokens"),
        (
            "llmsched/BatchScheduling-v0",
            {"n_gpus": 4, "n_bins": 6, "n_requests": 300},
            "sla-dynamic",
        ),
        ("llmsched/ContinuousBatching-v0", {"n_gpus": 3, "load": 0.8, "n_requests": 300}, "vllm"),
    ],
)
def test_episodes_do_not_depend_on_how_the_builtin_sum_rounds(
    env_id: str, kwargs: dict, policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.12's ``sum`` rounds floats otherwise; an episode must come out the same.

    Both sums are patched in, so the test tells them apart on every Python. Only the Routing-v0
    case came out otherwise with the built-in sum (its GPU busy time); the others guard the
    batch and continuous paths."""

    def episode() -> dict[str, object]:  # return, steps and metrics
        return run_episode(EpisodeTask(policy, policy, env_id, kwargs, seed=2))

    monkeypatch.setattr(builtins, "sum", _left_to_right_sum)  # Python 3.11's, on any Python
    expected = episode()
    monkeypatch.setattr(builtins, "sum", _compensated_sum)
    assert episode() == expected
