import copy

import numpy as np
import pytest

from llmsched_env.latency import StaticBatchLatency
from llmsched_env.sim import BatchServer, RejectReason, simulate
from tests.conftest import make_workload, random_workload

LATENCY = StaticBatchLatency(alpha_s=1.0, beta_s_per_token=0.0, gamma=0.0)  # every batch takes 1 s


def one_gpu_server(workload, **kwargs) -> BatchServer:
    """A one-GPU server with 1 s batches and room for 100 KV tokens."""
    return BatchServer(
        workload,
        n_gpus=1,
        latency=LATENCY,
        kv_capacity_tokens=100,
        rng=np.random.default_rng(0),
        **kwargs,
    )


def fifo(batch_size):
    def decide(server: BatchServer) -> None:
        server.dispatch(0, batch_size)

    return decide


def test_decision_is_due_only_when_a_gpu_is_idle_and_requests_wait():
    w = make_workload([0.0, 0.5, 0.6], [1, 1, 1], [1, 1, 1])
    s = one_gpu_server(w)
    assert s.advance() and s.now == 0.0 and s.decision_gpu == 0
    assert s.dispatch(0, 8) == 1  # only one request has arrived
    assert s.advance() and s.now == 1.0  # GPU frees at 1.0; two requests wait
    assert s.dispatch(0, 8) == 2
    assert not s.advance()
    assert s.now == 2.0 and s.done
    np.testing.assert_array_equal(s.records.completion_s, [1.0, 2.0, 2.0])
    np.testing.assert_array_equal(s.records.start_s, [0.0, 1.0, 1.0])


def test_wait_lets_requests_accumulate_and_other_gpus_decide_first():
    w = make_workload([0.0, 0.0, 0.3], [1, 1, 1], [1, 1, 1])
    s = BatchServer(
        w, n_gpus=2, latency=LATENCY, kv_capacity_tokens=100, rng=np.random.default_rng(0)
    )
    assert s.advance() and s.decision_gpu == 0
    s.wait()
    assert s.advance() and s.decision_gpu == 1 and s.now == 0.0  # same time, next GPU
    s.wait()
    assert s.advance() and s.now == 0.3 and s.decision_gpu == 0  # clock moved to next arrival
    assert s.dispatch(0, 8) == 3


def test_wait_that_would_deadlock_raises():
    w = make_workload([0.0], [1], [1])
    s = one_gpu_server(w)
    assert s.advance()
    assert not s.can_wait()
    with pytest.raises(RuntimeError, match="deadlock"):
        s.wait()


def test_batch_is_cut_at_kv_capacity_and_oversize_requests_are_rejected():
    # KV need = prompt + output: 6, 6, 6, 50 (the last exceeds capacity 20).
    w = make_workload([0.0, 0.0, 0.0, 0.0], [3, 3, 3, 40], [3, 3, 3, 10])
    s = BatchServer(
        w, n_gpus=1, latency=LATENCY, kv_capacity_tokens=12, rng=np.random.default_rng(0)
    )
    assert s.advance()
    assert s.n_rejected == 1
    assert s.records.reject_reason[3] == RejectReason.EXCEEDS_KV_CAPACITY
    assert s.batch_counts([8])[0, 0] == 2
    assert s.dispatch(0, 8) == 2
    simulate(s, fifo(8))
    assert s.n_completed == 3 and s.n_rejected == 1 and s.done


def test_queues_are_fifo_and_independent():
    w = make_workload([0.0, 0.1, 0.2, 0.3], [1] * 4, [1] * 4)
    s = BatchServer(
        w,
        n_gpus=1,
        latency=LATENCY,
        kv_capacity_tokens=100,
        rng=np.random.default_rng(0),
        queue_of=np.array([1, 0, 1, 0]),
        n_queues=2,
    )
    s.advance()
    s.wait()
    s.advance()  # t = 0.1
    s.wait()
    s.advance()
    s.wait()
    s.advance()  # t = 0.3, all four have arrived
    assert s.queue_lengths() == [2, 2]
    np.testing.assert_array_equal(s.queue_ids(1), [0, 2])
    assert s.dispatch(1, 1) == 1
    assert s.records.start_s[0] == pytest.approx(0.3) and np.isnan(s.records.start_s[2])


def test_deadline_accounting_counts_each_request_once():
    # sla 1.5 s, batches take 1 s, one GPU, batch size 1: request 0 ends at 1 (on time),
    # request 1 at 2 (arrived 0: late), request 2 at 3 (arrived 0.5: late).
    w = make_workload([0.0, 0.0, 0.5], [1] * 3, [1] * 3)
    s = one_gpu_server(w, deadline_s=1.5)
    simulate(s, fifo(1))
    assert (s.n_on_time, s.n_late) == (1, 2)
    summary = s.summary()
    assert summary["completed"] == 3 and summary["throughput_rps"] == pytest.approx(1.0)


def test_dispatch_errors_name_the_problem():
    w = make_workload([0.0], [1], [1])
    s = one_gpu_server(w)
    with pytest.raises(RuntimeError, match="advance"):
        s.dispatch(0, 1)
    s.advance()
    with pytest.raises(ValueError, match="queue must be in"):
        s.dispatch(3, 1)
    with pytest.raises(ValueError, match="max_count"):
        s.dispatch(0, 0)


def test_truncated_run_accounts_for_every_request():
    w = make_workload(np.arange(10) * 0.1, [1] * 10, [1] * 10)
    s = one_gpu_server(w)
    simulate(s, fifo(2), max_decisions=2)
    frame = s.records.to_frame(s.n_arrived)
    counts = frame["status"].value_counts()
    assert counts.sum() == 10
    assert counts["completed"] == s.n_completed
    assert counts["in_system"] == s.n_in_system
    assert counts["not_arrived"] == 10 - s.n_arrived


def test_settled_counts_is_none_while_a_decision_can_still_matter():
    # sla 1.5 s, 1 s batches: at the first decision (t=0) request 1 has not arrived yet; at
    # the second (t=1) request 1 waits and can still be on time.
    w = make_workload([0.0, 0.2], [1] * 2, [1] * 2)
    s = one_gpu_server(w, deadline_s=1.5)
    assert s.advance() and s.settled_counts() is None
    s.dispatch(0, 1)
    assert s.advance() and s.now == 1.0 and s.settled_counts() is None


def test_settled_counts_counts_running_members_and_late_waiting_ones():
    # Two GPUs, 2 s batches, sla 3 s. Requests (index: arrival, queue, output tokens):
    # x 0: 0.0, q0, 5; v 1: 0.0, q1, 8; y 2: 0.4, q0, 6; u 3: 1.1, q2, 9; z 4: 1.5, q0, 7.
    # u runs on GPU 0 from 1.1 to 3.1 (on time); x, y, z on GPU 1 from 1.5 to 3.5. At 3.1 GPU 0
    # decides with only v waiting, past its deadline (3.0): the run is settled. Of the running
    # batch, x's deadline (3.0) has passed and is counted, y's (3.4) comes before the batch ends
    # and is not counted yet, z's (4.5) is met.
    w = make_workload([0.0, 0.0, 0.4, 1.1, 1.5], [1] * 5, [5, 8, 6, 9, 7])
    s = BatchServer(
        w,
        n_gpus=2,
        latency=StaticBatchLatency(alpha_s=2.0, beta_s_per_token=0.0, gamma=0.0),
        kv_capacity_tokens=100,
        rng=np.random.default_rng(0),
        queue_of=np.array([0, 1, 0, 2, 0]),
        deadline_s=3.0,
    )
    for _ in range(4):  # both GPUs wait at 0 and at 0.4
        assert s.advance() and s.settled_counts() is None
        s.wait()
    assert s.advance() and (s.now, s.decision_gpu) == (1.1, 0)
    s.dispatch(2, 1)
    assert s.advance() and (s.now, s.decision_gpu) == (1.1, 1)
    s.wait()
    assert s.advance() and (s.now, s.decision_gpu) == (1.5, 1)
    s.dispatch(0, 3)
    assert s.advance() and (s.now, s.decision_gpu) == (3.1, 0)
    assert (s.n_on_time, s.n_late, s.on_time_output_tokens) == (1, 2, 9)  # u; x and v
    final = s.settled_counts()
    assert final == (2, 3, 9 + 7)  # u and z on time; x, v and y late
    simulate(s, lambda server: server.dispatch(server.queue_lengths().index(1), 1))  # v
    assert final == (s.n_on_time, s.n_late, s.on_time_output_tokens)


def test_settled_counts_once_known_are_the_final_counters():
    # Random workloads under a random policy: once settled_counts is known it never changes
    # and equals the counters at the end of the run, including the outcomes of batches still
    # running when it became known.
    latency = StaticBatchLatency(alpha_s=0.05, beta_s_per_token=0.002, gamma=0.0)
    n_settled = n_running_counted = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        w = random_workload(rng, 60, rate=6.0)
        s = BatchServer(
            w,
            n_gpus=2,
            latency=latency,
            kv_capacity_tokens=20_000,
            rng=np.random.default_rng(0),
            queue_of=rng.integers(0, 3, len(w)),
            deadline_s=1.5,
        )
        seen = set()
        while s.advance():
            final = s.settled_counts()
            if final is not None:
                if not seen and final != (s.n_on_time, s.n_late, s.on_time_output_tokens):
                    n_running_counted += 1
                seen.add(final)
            queues = [q for q, n in enumerate(s.queue_lengths()) if n]
            s.dispatch(int(rng.choice(queues)), int(rng.integers(1, 9)))
        if seen:
            n_settled += 1
            assert seen == {(s.n_on_time, s.sla_misses, s.on_time_output_tokens)}
    assert n_settled >= 6 and n_running_counted >= 1


def test_settled_counts_needs_a_deadline():
    w = make_workload([0.0], [1], [1])
    s = one_gpu_server(w)
    assert s.advance() and s.settled_counts() is None


def test_oldest_in_time_serves_requests_in_time_ahead_of_late_ones():
    # sla 1.5 s, 1 s batches of one. At t=2 request 2 (arrived 0) is late and request 3
    # (arrived 1.8) is in time: FIFO serves 2 first and 3 ends late at 4.0 (> 3.3); with
    # "oldest-in-time" 3 goes first and ends on time at 3.0, and 2 goes last.
    w = make_workload([0.0, 0.0, 0.0, 1.8], [1] * 4, [1] * 4)
    fifo_server = one_gpu_server(w, deadline_s=1.5)
    simulate(fifo_server, fifo(1))
    assert (fifo_server.n_on_time, fifo_server.n_late) == (1, 3)
    s = one_gpu_server(w, deadline_s=1.5, dispatch_order="oldest-in-time")
    for _ in range(2):
        assert s.advance()
        s.dispatch(0, 1)
        assert s.last_moved[0] == s.last_moved[1]  # nothing late waits yet: FIFO
    assert s.advance() and s.now == 2.0
    np.testing.assert_array_equal(s.queue_ids(0), [2, 3])
    assert s.dispatch(0, 8) == 1  # only the in-time request, not the late one behind it
    assert s.last_moved == (2, 4)
    np.testing.assert_array_equal(s.queue_ids(0), [2])
    simulate(s, fifo(1))
    assert (s.n_on_time, s.n_late) == (2, 2)
    np.testing.assert_array_equal(s.records.start_s, [0.0, 1.0, 3.0, 2.0])
    np.testing.assert_array_equal(s.records.completion_s, [1.0, 2.0, 4.0, 3.0])
    np.testing.assert_array_equal(s.records.batch, [0, 1, 3, 2])


@pytest.mark.parametrize("seed", range(6))
def test_oldest_in_time_keeps_positions_consistent_and_accounts_for_every_request(seed):
    rng = np.random.default_rng(seed)
    n = 120
    w = random_workload(rng, n, rate=12.0)
    s = BatchServer(
        w,
        n_gpus=2,
        latency=StaticBatchLatency(alpha_s=0.2, beta_s_per_token=0.002, gamma=0.0),
        kv_capacity_tokens=4000,
        rng=rng,
        queue_of=rng.integers(0, 3, n),
        n_queues=3,
        deadline_s=1.0,
        dispatch_order="oldest-in-time",
    )
    moves = 0
    while s.advance():
        nonempty = [q for q, length in enumerate(s.queue_lengths()) if length]
        queue = nonempty[int(rng.integers(len(nonempty)))]
        deadlines = w.arrival_s[s.queue_ids(queue)] + 1.0
        in_time = deadlines > s.now
        size = s.dispatch(queue, int(rng.choice([1, 4, 16])))
        moves += s.last_moved[1] > s.last_moved[0]
        served = s.records.batch == s.records.batch.max()
        assert served.sum() == size
        # A batch holds late requests only if its queue held nothing else.
        assert in_time.any() <= (w.arrival_s[served] + 1.0 > s.now).all()
        # Every queue's waiting requests stay in arrival order, and positions agree.
        for q in range(s.n_queues):
            assert np.all(np.diff(s.queue_ids(q)) > 0)
        order = s.order
        assert sorted(order.tolist()) == list(range(n))  # no request is too large here
        assert np.array_equal(
            s.state.kv_cumsum[1:], np.cumsum((w.prompt_tokens + w.output_tokens)[order])
        )
    assert moves > 0
    assert s.n_completed == n and s.n_on_time + s.n_late == n
    records = s.records
    assert np.all(records.completion_s - w.arrival_s <= 1.0) == (s.n_late == 0)
    assert np.count_nonzero(records.completion_s - w.arrival_s <= 1.0) == s.n_on_time


@pytest.mark.parametrize("dispatch_order", ["oldest", "oldest-in-time"])
def test_batch_counts_are_the_sizes_dispatches_start(dispatch_order):
    rng = np.random.default_rng(7)
    n, sizes = 150, (1, 2, 4, 8, 16, 32)
    w = random_workload(rng, n, rate=14.0)
    s = BatchServer(
        w,
        n_gpus=2,
        latency=StaticBatchLatency(alpha_s=0.2, beta_s_per_token=0.002, gamma=0.0),
        kv_capacity_tokens=3000,  # a few requests of ~200 tokens: KV binds below 32
        rng=rng,
        queue_of=rng.integers(0, 3, n),
        n_queues=3,
        deadline_s=1.0,
        dispatch_order=dispatch_order,
    )
    below_length = 0  # counts a level cut below min(size, queue length): KV or late requests
    while s.advance():
        counts = s.batch_counts(sizes)
        lengths = s.queue_lengths()
        for queue in range(s.n_queues):
            for level, size in enumerate(sizes):
                if lengths[queue] == 0:
                    assert counts[queue, level] == 0
                    continue
                probe = copy.deepcopy(s)
                assert probe.dispatch(queue, size) == counts[queue, level], (queue, size)
                below_length += counts[queue, level] < min(size, lengths[queue])
        nonempty = [q for q, length in enumerate(lengths) if length]
        s.dispatch(nonempty[int(rng.integers(len(nonempty)))], int(rng.choice(sizes)))
    assert below_length > 0


def test_dispatch_order_errors_name_the_problem():
    w = make_workload([0.0], [1], [1])
    with pytest.raises(ValueError, match=r"dispatch_order must be one of .*'latest'"):
        one_gpu_server(w, deadline_s=1.0, dispatch_order="latest")
    with pytest.raises(ValueError, match="needs a deadline_s"):
        one_gpu_server(w, dispatch_order="oldest-in-time")
