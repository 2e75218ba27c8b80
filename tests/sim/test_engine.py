"""Invariants of the event core under arbitrary valid decisions (property tests)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsched_env.latency import AffineIterationLatency, StaticBatchLatency
from llmsched_env.sim import BatchServer, IterationServer, simulate
from tests.conftest import random_workload


def check_batch_accounting(s: BatchServer) -> None:
    waiting = sum(s.queue_lengths())
    running = s.n_running
    # Plain ints (not numpy scalars), which the environments index Python lists with.
    assert all(type(i) is int for i in (*s.head, *s.tail))
    assert waiting == s.n_waiting
    assert s.n_arrived == s.n_completed + s.n_rejected + waiting + running
    status = s.records.status(s.n_arrived)
    assert np.count_nonzero(status == 2) == s.n_completed
    assert np.count_nonzero(status == 3) == s.n_rejected


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
    n_gpus=st.integers(1, 3),
    n_queues=st.integers(1, 4),
    kv=st.integers(50, 3000),
    choices=st.lists(st.tuples(st.integers(0, 4), st.integers(1, 16)), min_size=1, max_size=50),
)
def test_batch_server_never_loses_or_duplicates_a_request(seed, n, n_gpus, n_queues, kv, choices):
    rng = np.random.default_rng(seed)
    w = random_workload(rng, n)
    s = BatchServer(
        w,
        n_gpus=n_gpus,
        latency=StaticBatchLatency(0.05, 0.001, 0.3),
        kv_capacity_tokens=kv,
        rng=rng,
        queue_of=rng.integers(0, n_queues, n),
        n_queues=n_queues,
    )
    step = 0

    def decide(server: BatchServer) -> None:
        nonlocal step
        queue_pick, size = choices[step % len(choices)]
        step += 1
        lengths = server.queue_lengths()
        if queue_pick == 0 and server.can_wait():
            server.wait()
        else:
            nonempty = [q for q, length in enumerate(lengths) if length]
            server.dispatch(nonempty[queue_pick % len(nonempty)], size)
        check_batch_accounting(server)

    simulate(s, decide)
    assert s.done
    dispatched = s.records.batch[s.records.completed]
    assert s.n_completed == int(s.records.completed.sum())
    # Each request sits in exactly one batch, and batch sizes add up to the completions.
    assert sum(b[3] for b in s.batches) == s.n_completed == dispatched.size
    assert (s.records.completion_s[s.records.completed] >= w.arrival_s[s.records.completed]).all()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    n_gpus=st.integers(1, 3),
    chunk=st.sampled_from([None, 16, 200]),
    choices=st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 600), st.integers(1, 5)),
        min_size=1,
        max_size=30,
    ),
)
def test_iteration_server_never_loses_or_duplicates_a_request(seed, n, n_gpus, chunk, choices):
    rng = np.random.default_rng(seed)
    w = random_workload(rng, n)
    s = IterationServer(
        w,
        n_gpus=n_gpus,
        latency=AffineIterationLatency(0.01, 0.0005),
        kv_capacity_tokens=2000,
        max_tokens=512,
        max_sequences=8,
        chunk_size=chunk,
        rng=rng,
    )
    step = 0

    def decide(server: IterationServer) -> None:
        nonlocal step
        decode, budget, cap = choices[step % len(choices)]
        step += 1
        if not server.run_iteration(decode, budget, cap):
            if server.can_wait():
                server.wait()
            else:
                assert server.run_iteration(10**9, 10**9, 10**9)
        on_gpus = sum(r.size + len(p) for r, p in zip(server.running, server.prefilling))
        busy_only = sum(len(plan) for plan, _ in (x for x in server._pending if x is not None))
        assert busy_only >= 0
        assert (
            server.n_arrived == server.n_completed + server.n_rejected + server.n_waiting + on_gpus
        )
        assert all(r <= server.kv_capacity_tokens for r in server.kv_reserved)
        assert all(q <= server.max_sequences for q in server.n_sequences)

    simulate(s, decide)
    assert s.done
    done = s.records.completed
    np.testing.assert_array_equal(s.records.tokens_generated[done], w.output_tokens[done])
    assert (s.records.first_token_s[done] <= s.records.completion_s[done]).all()
    assert s.n_completed + s.n_rejected == n


def test_same_seed_gives_identical_records():
    def run(seed):
        rng = np.random.default_rng(seed)
        w = random_workload(rng, 300)
        s = IterationServer(
            w,
            n_gpus=2,
            latency=AffineIterationLatency(0.01, 0.0005, stochastic=True),
            kv_capacity_tokens=20_000,
            max_tokens=512,
            max_sequences=32,
            chunk_size=64,
            rng=rng,
        )
        simulate(s, lambda server: server.run_iteration(10**9, 10**9, 4))
        return s.records.to_frame(s.n_arrived)

    a, b = run(7), run(7)
    assert a.equals(b)
    assert not a.equals(run(8))


def test_in_system_integral_is_the_total_time_in_system():
    """Little's law bookkeeping: the integral equals the sum of completion minus arrival."""
    rng = np.random.default_rng(3)
    w = random_workload(rng, 500, rate=20.0)
    s = BatchServer(
        w, n_gpus=2, latency=StaticBatchLatency(0.05, 0.001, 0.3), kv_capacity_tokens=5000, rng=rng
    )
    simulate(s, lambda server: server.dispatch(0, 4))
    done = s.records.completed
    expected = float(np.sum(s.records.completion_s[done] - w.arrival_s[done]))
    assert s.in_system_integral == pytest.approx(expected, rel=1e-9)
