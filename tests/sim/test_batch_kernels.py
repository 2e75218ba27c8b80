"""The compiled pieces of the request-level server against their Python definitions."""

import bisect
import copy
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsched_env.latency import (
    EngineStaticBatchLatency,
    LinearIterationLatency,
    StaticBatchLatency,
)
from llmsched_env.sim import BatchServer
from llmsched_env.sim import batch_kernels as k
from tests.conftest import random_workload

ENGINE = EngineStaticBatchLatency(LinearIterationLatency(0.0057, 1.7e-5, 6e-6, 2e-8))
finite = st.floats(-1e12, 1e12, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(finite | st.floats(-1e-12, 1e-12), max_size=40), data=st.data())
def test_fsum_is_math_fsum(values, data):
    lo = data.draw(st.integers(0, len(values)))
    hi = data.draw(st.integers(lo, len(values)))
    a = np.array(values, dtype=np.float64)
    assert k.fsum(a, lo, hi) == math.fsum(values[lo:hi])


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(-5, 5), max_size=30), x=st.integers(-6, 6), data=st.data())
def test_bisections_are_the_bisect_module(values, x, data):
    values.sort()
    lo = data.draw(st.integers(0, len(values)))
    hi = data.draw(st.integers(lo, len(values)))
    a = np.array(values, dtype=np.int64)
    assert k.bisect_left(a, x, lo, hi) == bisect.bisect_left(values, x, lo, hi)
    assert k.bisect_right(a, x, lo, hi) == bisect.bisect_right(values, x, lo, hi)


@settings(max_examples=200, deadline=None)
@given(
    arrivals=st.lists(st.floats(0.0, 100.0), max_size=30),
    deadline=st.sampled_from([0.1, 0.3, 1.0, 10.0]),
    data=st.data(),
)
def test_first_not_late_is_the_miss_test(arrivals, deadline, data):
    """Late means ``arrival + deadline <= now``, even where ``arrival < now - deadline`` differs."""
    arrivals.sort()
    lo = data.draw(st.integers(0, len(arrivals)))
    hi = data.draw(st.integers(lo, len(arrivals)))
    # Often exactly a request's deadline, where rounding decides.
    now = data.draw(st.sampled_from([a + deadline for a in arrivals]) if arrivals else st.just(5.0))
    a = np.array(arrivals, dtype=np.float64)
    expected = bisect.bisect_right(arrivals, now, lo, hi, key=lambda x: x + deadline)
    assert k.first_not_late(a, deadline, now, lo, hi) == expected
    assert all(x + deadline <= now for x in arrivals[lo:expected])


def test_first_not_late_where_subtracting_the_deadline_would_differ():
    # At now = 0.3 + 0.6 the request's deadline has come, but now - 0.6 rounds below 0.3.
    arrival, deadline, now = 0.3, 0.6, 0.3 + 0.6
    a = np.array([arrival])
    assert k.first_not_late(a, deadline, now, 0, 1) == 1  # late: its miss is counted
    assert bisect.bisect_left([arrival], now - deadline) == 0  # the subtraction says in time


@settings(max_examples=100, deadline=None)
@given(
    prompt=st.lists(st.integers(1, 5000), min_size=1, max_size=64),
    data=st.data(),
)
def test_engine_batch_timing_is_the_latency_model_bit_for_bit(prompt, data):
    output = data.draw(st.lists(st.integers(1, 4000), min_size=len(prompt), max_size=len(prompt)))
    p, o = np.array(prompt, dtype=np.int64), np.array(output, dtype=np.int64)
    it = ENGINE.iteration
    coefficients = np.array(
        [it.b0_s, it.b1_s_per_prefill_token, it.b2_s_per_decode_token, it.b3_s_per_context_token]
    )
    compiled = k.engine_batch_timing(p, o, 0, len(p), coefficients)
    assert compiled == ENGINE.batch_timing(p, o, None)


def test_min_max_and_count_too_large():
    a = np.array([3, -1, 7, 2], dtype=np.int64)
    assert k.min_max(a) == (-1, 7)
    assert k.count_too_large(np.array([10, 20, 30]), np.array([1, 1, 1]), 21) == 1


def test_buffer_views_give_every_field_its_shape_and_share_the_buffers():
    floats, ints, layout = k.make_layout(10, 8, 2, 3, 4)
    views = k.buffer_views(floats, ints, layout)
    assert set(views) == {*k.FLOAT_FIELDS, *k.INT_FIELDS}
    for name, shape in k.field_shapes(10, 8, 2, 3, 4).items():
        assert views[name].shape == shape, name
    views["gpu_f"][k.UNTIL, 2] = 5.0
    views["queues"][k.TAIL, 3] = 7
    assert 5.0 in floats and 7 in ints


def _server(latency, seed=0, n=80, n_gpus=2, dispatch_order="oldest", deadline_s=2.0):
    rng = np.random.default_rng(seed)
    w = random_workload(rng, n)
    return BatchServer(
        w,
        n_gpus=n_gpus,
        latency=latency,
        kv_capacity_tokens=3000,
        rng=rng,
        queue_of=rng.integers(0, 3, n),
        n_queues=3,
        deadline_s=deadline_s,
        dispatch_order=dispatch_order,
    )


def _play(server, choices, *, use_decide):
    """Run ``server`` to the end with the decision rule of ``choices``; return a trace."""
    trace = []
    due = server.advance()
    step = 0
    mask = np.ones(1 + server.n_queues, dtype=bool)
    while due:
        pick, size = choices[step % len(choices)]
        step += 1
        lengths = server.queue_lengths()
        if pick == 0 and server.can_wait():
            queue = -1
        else:
            nonempty = [q for q, length in enumerate(lengths) if length]
            queue = nonempty[pick % len(nonempty)]
        if use_decide:
            due = server.decide(queue, size, mask)
            if due:
                expected = [server.can_wait(), *(n > 0 for n in server.queue_lengths())]
                assert mask.tolist() == expected
        else:
            if queue < 0:
                server.wait()
            else:
                server.dispatch(queue, size)
            due = server.advance()
        trace.append(
            (
                server.now,
                server.n_on_time,
                server.n_late,
                server.in_system_integral,
                server.last_moved,
            )
        )
    return trace, server.summary(), server.order.tolist()


@pytest.mark.parametrize("dispatch_order", ["oldest", "oldest-in-time"])
@pytest.mark.parametrize("latency", [ENGINE, StaticBatchLatency(0.05, 0.001, 0.3)])
def test_decide_is_dispatch_or_wait_then_advance(latency, dispatch_order):
    choices = [(0, 4), (1, 16), (2, 1), (3, 64), (0, 2)]
    # A deadline short enough that queues hold late requests ahead of ones in time.
    kwargs = {"dispatch_order": dispatch_order, "deadline_s": 0.5}
    one_call = _play(_server(latency, **kwargs), choices, use_decide=True)
    two_calls = _play(_server(latency, **kwargs), choices, use_decide=False)
    assert repr(one_call) == repr(two_calls)  # bit for bit (repr: nan equals nan)
    moved = [hi > lo for *_, (lo, hi) in one_call[0]]
    assert any(moved) == (dispatch_order == "oldest-in-time")


def test_decide_refuses_impossible_decisions_without_changing_anything():
    s = _server(ENGINE, n=3, n_gpus=1)
    mask = np.ones(4, dtype=bool)
    with pytest.raises(RuntimeError, match="no scheduling decision is due"):
        s.decide(0, 1, mask)
    assert s.advance()
    empty = [q for q, n in enumerate(s.queue_lengths()) if n == 0]
    before = (s.state[0].copy(), s.state[1].copy())
    if empty:
        with pytest.raises(ValueError, match="is empty"):
            s.decide(empty[0], 1, mask)
    with pytest.raises(ValueError, match="queue must be in"):
        s.decide(7, 1, mask)
    with pytest.raises(ValueError, match="max_count must be >= 1"):
        s.decide(0, 0, mask)
    assert np.array_equal(before[0], s.state[0], equal_nan=True)
    assert np.array_equal(before[1], s.state[1])


@pytest.mark.parametrize("duplicate", [copy.deepcopy, lambda s: pickle.loads(pickle.dumps(s))])
def test_a_copied_server_continues_exactly_like_the_original(duplicate):
    choices = [(1, 8), (0, 4), (2, 32)]
    original = _server(ENGINE, seed=3)
    original.advance()
    original.dispatch(0 if original.queue_lengths()[0] else 1, 4)
    twin = duplicate(original)
    assert repr(_play(original, choices, use_decide=True)) == repr(
        _play(twin, choices, use_decide=True)
    )
    np.testing.assert_array_equal(original.records.completion_s, twin.records.completion_s)
