"""ContinuousBatching-v0's action codec: the documented formulas, computed exactly."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from llmsched_env.envs.continuous_action import ContinuousActionCodec


@settings(max_examples=300, deadline=None)
@given(
    levels=st.integers(2, 101),
    level=st.integers(0, 100),
    running=st.integers(0, 1024),
)
def test_decode_count_is_the_exact_ceiling(levels, level, running):
    # In floats 11/20 * 100 is 55.00000000000001: its ceiling decoded 56 of 100, not 55.
    level = min(level, levels - 1)
    codec = ContinuousActionCodec(levels, 5, (0,), 2048)
    assert codec.decode_count(level, running) == math.ceil(Fraction(level * running, levels - 1))


@settings(max_examples=300, deadline=None)
@given(
    levels=st.integers(2, 41),
    level=st.integers(0, 40),
    max_tokens=st.integers(1, 8192),
    decoded=st.integers(0, 9000),
)
def test_prefill_budget_rounds_exactly_halves_to_even(levels, level, max_tokens, decoded):
    level = min(level, levels - 1)
    codec = ContinuousActionCodec(5, levels, (0,), max_tokens)
    left = max_tokens - min(decoded, max_tokens)
    assert codec.prefill_budget(level, decoded) == round(Fraction(level * left, levels - 1))


def test_the_decode_count_that_floats_got_wrong():
    codec = ContinuousActionCodec(21, 5, (0,), 2048)
    assert codec.decode_count(11, 100) == 55
    assert ContinuousActionCodec(101, 5, (0,), 2048).decode_count(7, 100) == 7
