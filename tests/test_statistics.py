from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from llmsched_env.statistics import describe_rows, pairwise_sum, percentiles

FRACTIONS = np.true_divide((50, 95, 99), 100)
finite = st.floats(-1e12, 1e12, allow_nan=False, allow_subnormal=False)


@settings(max_examples=300, deadline=None)
@given(arrays(np.float64, st.integers(0, 600), elements=finite))
def test_pairwise_sum_is_numpys_sum_bit_for_bit(values: np.ndarray) -> None:
    assert pairwise_sum(values, 0, values.shape[0]) == np.sum(values)


@pytest.mark.parametrize("n", [7, 8, 127, 128, 129, 1000, 8193, 100_003])
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
