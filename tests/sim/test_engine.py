"""Invariants of the event core under arbitrary valid decisions (property tests)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsched_env.latency import AffineIterationLatency, StaticBatchLatency
from llmsched_env.sim import BatchServer, IterationServer, simulate
from tests.conftest import (
    check_deciding_gpu_blocks,
    check_iteration_accounting,
    make_workload,
    random_workload,
)


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
    run_random_iterations(seed, n, n_gpus, chunk, choices, kv_capacity_tokens=2000)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    n_gpus=st.integers(1, 3),
    chunk=st.sampled_from([None, 1, 16, 200]),
    block=st.sampled_from([1, 4, 16]),
    kv=st.integers(16, 1500),
    choices=st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 600), st.integers(1, 5)),
        min_size=1,
        max_size=30,
    ),
)
def test_paged_server_never_loses_or_duplicates_a_request_across_preemptions(
    seed, n, n_gpus, chunk, block, kv, choices
):
    """Tight paged KV memory preempts often; every request is still in exactly one place.

    Every fifth decision decodes everything: without decodes a prompt that can only preempt
    itself would be readmitted and preempted forever (the env's mask forbids that).
    """
    s = run_random_iterations(
        seed,
        n,
        n_gpus,
        chunk,
        choices,
        kv_capacity_tokens=kv,
        kv_allocation="paged",
        kv_block_tokens=block,
    )
    assert not s.requeued and s.blocks_used == [0] * n_gpus
    # A preempted request resumes: its TTFT is its first token, not the recomputation's.
    done = s.records.completed & (s.records.preemptions > 0)
    assert (s.records.first_token_s[done] <= s.records.completion_s[done]).all()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    n_gpus=st.integers(1, 2),
    chunk=st.sampled_from([None, 1, 16, 200]),
    block=st.sampled_from([1, 4, 16]),
    hash_tokens=st.sampled_from([1, 4, 16, 32]),
    kv=st.integers(16, 1500),
    choices=st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 600), st.integers(1, 5)),
        min_size=1,
        max_size=30,
    ),
)
def test_prefix_cached_server_keeps_blocks_and_requests_accounted_for(
    seed, n, n_gpus, chunk, block, hash_tokens, kv, choices
):
    """Prefix caching under tight memory, with prompts sharing prefixes of a few documents.

    After every decision (``check_iteration_accounting``): referenced plus free blocks make the
    capacity, reference counts match the holders, cache keys are unique, and every request is in
    exactly one place; the run ends with every request completed or rejected.
    """
    s = run_random_iterations(
        seed,
        n,
        n_gpus,
        chunk,
        choices,
        shared_prefix_tokens=hash_tokens,
        kv_capacity_tokens=kv,
        kv_allocation="paged",
        kv_block_tokens=block,
        prefix_caching=True,
    )
    assert not s.requeued and s.blocks_used == [0] * n_gpus
    assert s.prefix_hit_tokens <= s.prefix_queried_tokens
    assert (s.records.recomputed_tokens >= 0).all()


def shared_prefix_hashes(rng, prompt_tokens, block_tokens):
    """Hash chains of prompts that start with a prefix of one of three documents."""
    chains = []
    for i, p in enumerate(prompt_tokens.tolist()):
        n = p // block_tokens
        shared = int(rng.integers(0, n + 1))
        doc = int(rng.integers(0, 3))
        chains.append(
            [doc * 10**6 + j for j in range(shared)]
            + [-(i * 10**6 + j) - 1 for j in range(shared, n)]
        )
    return chains


def run_random_iterations(
    seed, n, n_gpus, chunk, choices, shared_prefix_tokens=None, **server_kwargs
) -> IterationServer:
    """Run decisions cycling through ``choices``, checking the accounting after each one.

    ``shared_prefix_tokens``: give the prompts shared prefix hashes of that granularity.
    """
    rng = np.random.default_rng(seed)
    w = random_workload(rng, n)
    if shared_prefix_tokens is not None:
        hashes = shared_prefix_hashes(rng, w.prompt_tokens, shared_prefix_tokens)
        w = w.with_prefix_hashes(hashes, shared_prefix_tokens)
    s = IterationServer(
        w,
        n_gpus=n_gpus,
        latency=AffineIterationLatency(0.01, 0.0005),
        max_tokens=512,
        max_sequences=8,
        chunk_size=chunk,
        rng=rng,
        **server_kwargs,
    )
    step = 0

    def decide(server: IterationServer) -> None:
        nonlocal step
        check_deciding_gpu_blocks(server)
        decode, budget, cap = choices[step % len(choices)]
        if server.paged and step % 5 == 4:
            decode = 10**9
        step += 1
        if not server.run_iteration(decode, budget, cap):
            if server.can_wait():
                server.wait()
            else:
                assert server.run_iteration(10**9, 10**9, 10**9)
        check_iteration_accounting(server)

    simulate(s, decide, max_decisions=200_000)
    assert s.done
    done = s.records.completed
    np.testing.assert_array_equal(s.records.tokens_generated[done], w.output_tokens[done])
    assert (s.records.first_token_s[done] <= s.records.completion_s[done]).all()
    assert s.n_completed + s.n_rejected == n
    return s


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


def test_batch_server_rejected_request_spends_no_time_in_system():
    """A request rejected while every GPU works adds nothing to the request-seconds.

    One 10 s batch holds the 2-token request from 0 s; the 500-token request arriving at 3 s
    exceeds the 100-token KV memory and is rejected, so the integral is 10 request-seconds.
    """
    w = make_workload([0.0, 3.0], [1, 250], [1, 250])
    s = BatchServer(
        w,
        n_gpus=1,
        latency=StaticBatchLatency(10.0, 0.0, 0.0),
        kv_capacity_tokens=100,
        rng=np.random.default_rng(0),
    )
    simulate(s, lambda server: server.dispatch(0, 8))
    assert s.n_rejected == 1 and s.n_completed == 1
    assert s.in_system_integral == 10.0


def test_iteration_server_rejected_request_spends_no_time_in_system():
    """The same rejection while the only GPU runs a 10 s iteration (prefill and one decode)."""
    w = make_workload([0.0, 3.0], [1, 250], [2, 250])
    s = IterationServer(
        w,
        n_gpus=1,
        latency=AffineIterationLatency(c_s=10.0, a_s_per_token=0.0),
        kv_capacity_tokens=100,
        max_tokens=100,
        max_sequences=4,
        rng=np.random.default_rng(0),
    )
    simulate(s, lambda server: server.run_iteration(10**9, 10**9, 10**9))
    assert s.n_rejected == 1 and s.n_completed == 1
    assert s.records.completion_s[0] == 20.0
    assert s.in_system_integral == 20.0


def total_time_in_system(s) -> float:
    """Sum of completion minus arrival over the completed requests (rejected ones count 0)."""
    done = s.records.completed
    return math.fsum((s.records.completion_s[done] - s.workload.arrival_s[done]).tolist())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_gpus=st.integers(1, 3), kv=st.integers(40, 400))
def test_in_system_integral_with_rejections_is_the_total_time_in_system(seed, n_gpus, kv):
    """Little's law bookkeeping when a tight KV memory rejects some requests, both servers."""
    rng = np.random.default_rng(seed)
    w = random_workload(rng, 60, rate=20.0)
    batch = BatchServer(
        w,
        n_gpus=n_gpus,
        latency=StaticBatchLatency(0.05, 0.001, 0.3),
        kv_capacity_tokens=kv,
        rng=np.random.default_rng(seed),
    )
    simulate(batch, lambda server: server.dispatch(0, 4))
    iteration = IterationServer(
        w,
        n_gpus=n_gpus,
        latency=AffineIterationLatency(c_s=0.05, a_s_per_token=0.001),
        kv_capacity_tokens=kv,
        max_tokens=200,
        max_sequences=8,
        rng=np.random.default_rng(seed),
    )
    simulate(iteration, lambda server: server.run_iteration(10**9, 10**9, 10**9))
    for s in (batch, iteration):
        assert s.done
        assert s.in_system_integral == pytest.approx(total_time_in_system(s), rel=1e-9, abs=1e-9)
