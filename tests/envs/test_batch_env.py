"""Pieces of the BatchScheduling-v0 environment module."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsched_env.envs.batch_env import _bin_of


@settings(max_examples=100, deadline=None)
@given(
    predicted=st.lists(st.integers(1, 5000), min_size=1, max_size=50),
    edges=st.lists(st.floats(0.0, 6000.0), max_size=6),
)
def test_bins_are_searchsorted_right_of_the_edges(predicted, edges):
    edges = np.array(sorted(edges), dtype=np.float64)
    tokens = np.array(predicted, dtype=np.int64)
    np.testing.assert_array_equal(
        _bin_of(tokens, edges), np.searchsorted(edges, tokens, side="right")
    )
