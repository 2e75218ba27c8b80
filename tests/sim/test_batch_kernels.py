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
    ExponentialBatchService,
    LinearIterationLatency,
    StaticBatchLatency,
)
from llmsched_env.metrics import SLATargets, summary_fields
from llmsched_env.sim import BatchServer
from llmsched_env.sim import batch_kernels as k
from llmsched_env.sim import batch_rules as r
from llmsched_env.sim.batch_state import SCHEMA, allocate, state_views
from llmsched_env.statistics import sequential_sum
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
    assert r.bisect_left(a, x, lo, hi) == bisect.bisect_left(values, x, lo, hi)
    assert r.bisect_right(a, x, lo, hi) == bisect.bisect_right(values, x, lo, hi)


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
    assert r.first_not_late(a, deadline, now, lo, hi) == expected
    assert r.is_late.py_func(a[lo:hi], deadline, now).sum() == expected - lo
    assert all(x + deadline <= now for x in arrivals[lo:expected])


def test_first_not_late_where_subtracting_the_deadline_would_differ():
    # At now = 0.3 + 0.6 the request's deadline has come, but now - 0.6 rounds below 0.3.
    arrival, deadline, now = 0.3, 0.6, 0.3 + 0.6
    a = np.array([arrival])
    assert r.first_not_late(a, deadline, now, 0, 1) == 1  # late: its miss is counted
    assert bisect.bisect_left([arrival], now - deadline) == 0  # the subtraction says in time


def test_min_max_and_count_too_large():
    a = np.array([3, -1, 7, 2], dtype=np.int64)
    assert k.min_max(a) == (-1, 7)
    assert k.count_too_large(np.array([10, 20, 30]), np.array([1, 1, 1]), 21) == 1


def test_every_field_of_the_state_has_its_declared_length_and_shares_the_buffers():
    sizes = {"n": 10, "n_queued": 8, "n_rejected": 2, "n_gpus": 3, "n_queues": 4}
    floats, ints, layout = allocate(**sizes)
    python, compiled = state_views(floats, ints, layout), SCHEMA.view(floats, ints, layout)
    assert python._fields == compiled._fields == tuple(f.name for f in SCHEMA.fields)
    for field in SCHEMA.fields:
        assert getattr(python, field.name).shape == (field.size(sizes),), field.name
        assert getattr(compiled, field.name).shape == (field.size(sizes),), field.name
    assert python.kv_cumsum.shape == (9,) and python.queue_head.shape == (4,)
    compiled.gpu_until[2] = 5.0
    python.queue_tail[3] = 7
    assert python.gpu_until[2] == 5.0 and compiled.queue_tail[3] == 7
    assert 5.0 in floats and 7 in ints


@pytest.mark.parametrize("dispatch_order", ["oldest", "oldest-in-time"])
def test_a_restart_in_used_buffers_is_a_new_server(dispatch_order):
    """``restart`` lays a run out as a new server does, in buffers another run has used.

    The runs differ in how many requests KV memory rejects, so the layout moves under the
    parameters; the used buffers are as long as ``run_buffer_lengths`` says.
    """
    n, n_gpus, n_queues, capacity = 60, 3, 4, 1500
    latency = StaticBatchLatency(0.05, 0.001, 0.3)
    settings = dict(
        n_gpus=n_gpus,
        latency=latency,
        kv_capacity_tokens=capacity,
        n_queues=n_queues,
        deadline_s=2.0,
        dispatch_order=dispatch_order,
    )
    n_floats, n_ints = k.run_buffer_lengths(n, n_gpus, n_queues)
    floats, ints = np.zeros(n_floats), np.zeros(n_ints, dtype=np.int64)
    layout = np.zeros(len(SCHEMA.linear_layout[0]), dtype=np.int64)
    template = None
    rejected_counts = set()
    for seed in range(6):
        rng = np.random.default_rng(seed)
        w = random_workload(rng, n)
        queue_of = rng.integers(0, n_queues, n)
        new = BatchServer(w, rng=rng, queue_of=queue_of, **settings)
        template = template or new.buffers
        k.restart(
            floats,
            ints,
            layout,
            template,
            queue_of,
            w.prompt_tokens.copy(),
            w.output_tokens.copy(),
            w.arrival_s.copy(),
        )
        np.testing.assert_array_equal(layout, new._layout)
        n_new_floats, n_new_ints = SCHEMA.buffer_lengths(layout)
        np.testing.assert_array_equal(floats[:n_new_floats], new._floats)
        np.testing.assert_array_equal(ints[:n_new_ints], new._ints)
        rejected_counts.add(new.state.rejected.shape[0])
        restarted = BatchServer.on_buffers(w, (floats, ints, layout), rng=rng, **settings)
        due = new.advance()
        assert restarted.advance() == due
        while due:  # and the run goes on as the new server's
            due = new.decide(new.oldest_queue(), 4)
            assert restarted.decide(restarted.oldest_queue(), 4) == due
        np.testing.assert_array_equal(restarted.state.pos_completion_s, new.state.pos_completion_s)
        sla = SLATargets(e2e_s=2.0)
        assert repr(restarted.summary(sla)) == repr(new.summary(sla))  # (repr: nan equals nan)
    assert len(rejected_counts) > 1


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
@pytest.mark.parametrize(
    "latency", [ENGINE, StaticBatchLatency(0.05, 0.001, 0.3), ExponentialBatchService(0.4)]
)
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
    before = (s.buffers[0].copy(), s.buffers[1].copy())
    if empty:
        with pytest.raises(ValueError, match="is empty"):
            s.decide(empty[0], 1, mask)
    with pytest.raises(ValueError, match="queue must be in"):
        s.decide(7, 1, mask)
    with pytest.raises(ValueError, match="max_count must be >= 1"):
        s.decide(0, 0, mask)
    assert np.array_equal(before[0], s.buffers[0], equal_nan=True)
    assert np.array_equal(before[1], s.buffers[1])


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


def _reference_run(w, n_gpus, latency, kv, queue_of, n_queues, deadline, in_time_first, choices):
    """The request-level server's event rules in plain Python, one event at a time.

    Returns per-request start and completion times, the on-time and late counts, and the
    in-system integral.
    """
    arrival = w.arrival_s.tolist()
    prompt, output = w.prompt_tokens.tolist(), w.output_tokens.tolist()
    n = len(arrival)
    too_large = [p + o > kv for p, o in zip(prompt, output)]
    queues = [[] for _ in range(n_queues)]
    busy_until = [None] * n_gpus
    members = [[] for _ in range(n_gpus)]
    deferred = set()
    start, completion = [math.nan] * n, [math.nan] * n
    now = integral = 0.0
    arrived = checked = in_system = on_time = late = step = 0
    while True:
        idle = [g for g in range(n_gpus) if busy_until[g] is None and g not in deferred]
        if any(queues) and idle:
            g = idle[0]
            pick, size = choices[step % len(choices)]
            step += 1
            if pick == 0 and (arrived < n or any(b is not None for b in busy_until)):
                deferred.add(g)
                continue
            nonempty = [q for q in range(n_queues) if queues[q]]
            queue = queues[nonempty[pick % len(nonempty)]]
            first = 0
            if in_time_first:
                in_time = [i for i, j in enumerate(queue) if not arrival[j] + deadline <= now]
                first = in_time[0] if in_time else 0
            batch, need = [], 0
            for j in queue[first:]:
                if len(batch) == size or (batch and need + prompt[j] + output[j] > kv):
                    break
                batch.append(j)
                need += prompt[j] + output[j]
            for j in batch:
                queue.remove(j)
            service_s, _ = latency.batch_timing(
                np.array([prompt[j] for j in batch]), np.array([output[j] for j in batch]), None
            )
            busy_until[g], members[g] = now + service_s, batch
            for j in batch:
                start[j], completion[j] = now, now + service_s
            continue
        ends = [b for b in busy_until if b is not None]
        t = min([*ends, arrival[arrived] if arrived < n else math.inf])
        if t == math.inf:
            return start, completion, on_time, late, integral
        integral += in_system * (t - now)
        now = t
        deferred.clear()
        for _, g in sorted((b, g) for g, b in enumerate(busy_until) if b is not None and b <= t):
            for j in members[g]:
                in_system -= 1
                on_time += completion[j] <= arrival[j] + deadline
            busy_until[g], members[g] = None, []
        while arrived < n and arrival[arrived] <= t:
            if too_large[arrived]:
                late += 1
            else:
                queues[queue_of[arrived]].append(arrived)
                in_system += 1
            arrived += 1
        while checked < n and arrival[checked] + deadline <= t:
            if not too_large[checked] and not completion[checked] <= arrival[checked] + deadline:
                late += 1
            checked += 1


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_gpus=st.integers(1, 3),
    n_queues=st.integers(1, 3),
    kv=st.integers(300, 3000),
    in_time_first=st.booleans(),
    choices=st.lists(st.tuples(st.integers(0, 4), st.integers(1, 16)), min_size=1, max_size=20),
)
def test_compiled_server_follows_the_python_statement_of_its_rules(
    seed, n_gpus, n_queues, kv, in_time_first, choices
):
    rng = np.random.default_rng(seed)
    n, deadline = 60, 0.8
    w = random_workload(rng, n)
    queue_of = rng.integers(0, n_queues, n)
    latency = StaticBatchLatency(0.05, 0.001, 0.3)
    s = BatchServer(
        w,
        n_gpus=n_gpus,
        latency=latency,
        kv_capacity_tokens=kv,
        rng=rng,
        queue_of=queue_of,
        n_queues=n_queues,
        deadline_s=deadline,
        dispatch_order="oldest-in-time" if in_time_first else "oldest",
    )
    _play(s, choices, use_decide=True)
    start, completion, on_time, late, integral = _reference_run(
        w, n_gpus, latency, kv, queue_of.tolist(), n_queues, deadline, in_time_first, choices
    )
    np.testing.assert_array_equal(s.records.start_s, start)
    np.testing.assert_array_equal(s.records.completion_s, completion)
    assert (s.n_on_time, s.n_late) == (on_time, late)
    # The server admits arrivals in bulk while every GPU works, so the sum's rounding differs.
    assert s.in_system_integral == pytest.approx(integral, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_compiled_summary_is_the_python_statement_of_it(seed):
    """Busy time, mean batch size and the summary row, mid-run (GPUs busy) and at the end."""
    server = _server(ENGINE, n=60, n_gpus=2, seed=seed, deadline_s=0.5)
    targets = np.array([0.5, np.nan, np.nan])
    sla = SLATargets(e2e_s=0.5)
    fields = summary_fields(sla, has_gaps=False)
    due = server.advance()
    checked_busy = 0
    while True:
        s = server.state
        now = float(s.now[0])
        ahead = sequential_sum(
            float(t) - now for t, b in zip(s.gpu_free_at, s.gpu_busy, strict=True) if b
        )
        assert server.busy_time_s() == sequential_sum(s.gpu_busy_s.tolist()) - ahead
        checked_busy += bool(s.gpu_busy.any())
        n = int(s.n_batches[0])
        expected_mean = sum(s.batch_size[:n].tolist()) / n if n else math.nan
        assert repr(server.mean_batch_size()) == repr(expected_mean)
        floats, ints, layout = server.buffers
        row = k.summary_row(
            floats,
            ints,
            layout,
            server.workload.arrival_s,
            server.workload.output_tokens,
            0.0,
            targets,
            np.zeros(0),
        )
        summary = server.summary(sla)
        assert list(summary) == [name for _, name in fields]
        assert repr([row.tolist()[i] for i, _ in fields]) == repr(list(summary.values()))
        if not due:
            break
        queue = (
            int(np.flatnonzero(server.queue_lengths())[0]) if any(server.queue_lengths()) else -1
        )
        due = server.decide(queue, 4, np.ones(1 + server.n_queues, dtype=bool))
    assert checked_busy > 0
    assert summary["completed"] == 60
