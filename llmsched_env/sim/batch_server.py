"""Request-level server: G GPUs serving static batches that run to completion.

A decision is due whenever a GPU is idle and requests wait. The decision dispatches the oldest
requests of one queue as a batch to that GPU, or waits. Every member of a batch completes when the
batch ends (static batching: the longest member sets the pace). A batch must fit in one GPU's KV
memory: a dispatch takes the oldest requests of the queue up to the requested count and stops
before the first one that would not fit; a request that alone exceeds the memory is rejected at
arrival with :attr:`RejectReason.EXCEEDS_KV_CAPACITY`.

Waiting requests sit in FIFO queues (the environment's bins; one queue by default). A request's
queue is fixed when the server is built, so each queue is a contiguous slice of one precomputed
index array and its state is two integers, its head and tail: arrivals move the tail, dispatches
move the head. A batch is therefore a range of positions in that array, and the server keeps
per-request values and event times by position, so that a dispatch or a completion costs a few
slices and binary searches whatever the batch size; :attr:`BatchServer.records` presents them in
request order.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from typing import NamedTuple

import numpy as np

from llmsched_env.latency import BatchLatencyModel
from llmsched_env.sim.engine import Engine
from llmsched_env.sim.records import RejectReason, RequestRecords
from llmsched_env.workload import Workload


class FinishedBatch(NamedTuple):
    """A batch that has finished, as reported to schedulers that learn from measured latency.

    Attributes:
        gpu: GPU that served it.
        queue: Queue (bin) its requests came from.
        size: Number of requests.
        start_s: Dispatch time.
        service_s: Time the GPU was busy with it.
        max_total_tokens: Longest member's prompt plus output tokens.
        max_output_tokens: Longest member's output tokens.
        output_tokens: Output tokens of all members together.
    """

    gpu: int
    queue: int
    size: int
    start_s: float
    service_s: float
    max_total_tokens: int
    max_output_tokens: int
    output_tokens: int


class BatchServer(Engine):
    """Static-batching server with FIFO queues that stops at every dispatch decision.

    Args:
        workload: Requests sorted by arrival.
        n_gpus: Number of identical GPUs.
        latency: Service-time model of a batch.
        kv_capacity_tokens: KV-cache tokens one GPU holds; a batch needs the sum of its members'
            prompt plus output tokens.
        rng: Source of randomness for stochastic service times.
        queue_of: Queue index of every request (for example its bin); ``None`` puts every request
            in queue 0.
        n_queues: Number of queues (default: ``max(queue_of) + 1``).
        deadline_s: End-to-end SLA in seconds; when given, the server counts requests completed
            within ``arrival + deadline_s`` (:attr:`n_on_time`) and requests whose deadline passes
            unfinished (:attr:`n_late`, counted at the moment the deadline passes; a rejected
            request counts as late at its rejection).

    Attributes:
        n_waiting: Requests waiting in all queues.
        n_on_time: Requests completed within their deadline so far.
        n_late: Requests whose deadline passed unfinished, plus rejected requests, so far.
        on_time_output_tokens: Output tokens of requests completed within their deadline.
        batches: Every dispatched batch as ``(gpu, start_s, service_s, size)``.
        finished_batches: Batches finished since the caller last cleared this list.
    """

    def __init__(
        self,
        workload: Workload,
        *,
        n_gpus: int,
        latency: BatchLatencyModel,
        kv_capacity_tokens: int,
        rng: np.random.Generator,
        queue_of: np.ndarray | None = None,
        n_queues: int | None = None,
        deadline_s: float | None = None,
    ) -> None:
        super().__init__(workload, n_gpus, rng)
        if kv_capacity_tokens < 1:
            raise ValueError(f"kv_capacity_tokens must be >= 1, got {kv_capacity_tokens!r}")
        if deadline_s is not None and not deadline_s > 0:
            raise ValueError(f"deadline_s must be positive or None, got {deadline_s!r}")
        n = len(workload)
        self._records.tracks_token_gaps = False  # static batches do not resolve token times
        self.latency = latency
        self.kv_capacity_tokens = int(kv_capacity_tokens)
        self.kv_need = workload.prompt_tokens + workload.output_tokens
        too_large = self.kv_need > self.kv_capacity_tokens
        if queue_of is None:
            queue_of = np.zeros(n, dtype=np.int64)
        queue_of = np.asarray(queue_of, dtype=np.int64)
        if queue_of.shape != (n,) or (queue_of.size and queue_of.min() < 0):
            raise ValueError(f"queue_of must hold {n} non-negative queue indices")
        self.n_queues = int(n_queues if n_queues is not None else queue_of.max() + 1)
        if queue_of.max() >= self.n_queues:
            raise ValueError(f"queue_of has index {queue_of.max()} >= n_queues={self.n_queues}")
        queued = np.flatnonzero(~too_large)
        counts = np.bincount(queue_of[queued], minlength=self.n_queues)
        #: Request indices grouped by queue, in arrival order within each queue. A request's
        #: place in this array is its *position*; each queue is a contiguous range of positions.
        # (Small integer keys let numpy's stable sort use radix sort.)
        keys = queue_of[queued].astype(np.int16 if self.n_queues < 2**15 else np.int64)
        self.order = queued[np.argsort(keys, kind="stable")]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        self.queue_start = offsets[:-1].copy()
        self.head = offsets[:-1].tolist()
        self.tail = offsets[:-1].tolist()
        # Per queue, the request indices it holds in arrival order: how many of them have
        # arrived before index i is one binary search, so arrivals are admitted in bulk.
        starts, ends = offsets[:-1].tolist(), offsets[1:].tolist()
        self._queue_members = [
            (start, self.order[start:end].tolist()) for start, end in zip(starts, ends)
        ]
        self._rejected_indices = np.flatnonzero(too_large).tolist()
        self.n_waiting = 0
        self.deadline_s = deadline_s
        self._deadline = (workload.arrival_s + deadline_s).tolist() if deadline_s else None
        # Per-position values (Python lists and prefix sums), so that a dispatch or a completion
        # reads slices and binary searches instead of gathering by request index.
        order = self.order
        self._pos_prompt = workload.prompt_tokens[order]
        self._pos_output = workload.output_tokens[order]
        self._pos_output_list = self._pos_output.tolist()
        self._pos_total_list = (self._pos_prompt + self._pos_output).tolist()
        self._pos_kv_cumsum = [0, *np.cumsum(self.kv_need[order]).tolist()]
        self._pos_output_cumsum = [0, *np.cumsum(self._pos_output).tolist()]
        self._pos_deadline = (
            (workload.arrival_s + deadline_s)[order].tolist() if deadline_s else None
        )
        # Event times and states by position, written with slices (a batch is a range of
        # positions); :attr:`records` scatters them into request order when read.
        n_queued = len(order)
        self._pos_start = np.full(n_queued, np.nan)
        self._pos_first_token = np.full(n_queued, np.nan)
        # A list: the deadline scan reads it one request at a time.
        self._pos_completion = [math.nan] * n_queued
        self._pos_gpu = np.full(n_queued, -1, dtype=np.int32)
        self._pos_batch = np.full(n_queued, -1, dtype=np.int64)
        self._pos_completed = np.zeros(n_queued, dtype=bool)
        self._records_stale = False
        position = np.full(n, -1, dtype=np.int64)
        position[order] = np.arange(n_queued)
        #: Each request's position (-1: rejected), for the deadline scan.
        self._position = position.tolist()
        self.n_on_time = 0
        self.n_late = 0
        self.on_time_output_tokens = 0
        self.batches: list[tuple[int, float, float, int]] = []
        self.finished_batches: list[FinishedBatch] = []
        #: Per GPU, the running batch as ``(queue, first position, end position)`` or ``None``.
        self._running: list[tuple[int, int, int] | None] = [None] * self.n_gpus

    # ------------------------------------------------------------------ decisions
    def queue_lengths(self) -> list[int]:
        """Number of waiting requests in each queue."""
        return [t - h for h, t in zip(self.head, self.tail)]

    def queue_ids(self, queue: int) -> np.ndarray:
        """Indices of the requests waiting in ``queue``, oldest first (a read-only view)."""
        view = self.order[self.head[queue] : self.tail[queue]]
        view.flags.writeable = False
        return view

    def fitting_count(self, queue: int, max_count: int) -> int:
        """How many of the oldest ``max_count`` requests of ``queue`` fit together in KV memory."""
        head = self.head[queue]
        return self._fitting_end(head, min(head + max_count, self.tail[queue])) - head

    def _fitting_end(self, head: int, end: int) -> int:
        """The largest ``k <= end`` such that positions ``head .. k - 1`` fit in KV memory."""
        kv = self._pos_kv_cumsum
        limit = kv[head] + self.kv_capacity_tokens
        if kv[end] <= limit:
            return end
        return bisect_right(kv, limit, head, end + 1) - 1

    def dispatch(self, queue: int, max_count: int) -> int:
        """Serve the oldest requests of ``queue`` as one batch on the deciding GPU.

        Args:
            queue: Queue to take from; it must not be empty.
            max_count: Largest batch size wanted; the batch is smaller when the queue holds fewer
                requests or when more would not fit in KV memory.

        Returns:
            The size of the dispatched batch (at least 1).

        Raises:
            RuntimeError: If no decision is due.
            ValueError: If the queue index is out of range, the queue is empty or ``max_count < 1``.
        """
        gpu = self._require_decision()
        if not 0 <= queue < self.n_queues:
            raise ValueError(f"queue must be in [0, {self.n_queues}), got {queue!r}")
        if max_count < 1:
            raise ValueError(f"max_count must be >= 1, got {max_count!r}")
        head, tail = self.head[queue], self.tail[queue]
        if head == tail:
            raise ValueError(f"queue {queue} is empty")
        # A single request always fits: larger ones were rejected at arrival.
        stop = max(self._fitting_end(head, min(head + max_count, tail)), head + 1)
        size = stop - head
        service_s, first_token_s = self.latency.batch_timing(
            self._pos_prompt[head:stop], self._pos_output[head:stop], self.rng
        )
        now = self.now
        end = self._start_work(gpu, service_s)
        self._pos_start[head:stop] = now
        self._pos_first_token[head:stop] = now + first_token_s
        self._pos_completion[head:stop] = [end] * size
        self._pos_gpu[head:stop] = gpu
        self._pos_batch[head:stop] = len(self.batches)
        self._records_stale = True
        self.batches.append((gpu, now, service_s, size))
        self._running[gpu] = (queue, head, stop)
        self.head[queue] = stop
        self.n_waiting -= size
        return size

    # ------------------------------------------------------------------ engine hooks
    def _find_decision_gpu(self) -> int:
        if self.n_waiting == 0:
            return -1
        busy = self.gpu_busy
        deferred = self._deferred
        for gpu in range(self.n_gpus):
            if not busy[gpu] and gpu not in deferred:
                return gpu
        return -1

    def _on_arrivals(self, lo: int, hi: int) -> None:
        """Admit requests ``lo .. hi - 1``: move each queue's tail past its arrived members."""
        self.n_arrived = hi
        waiting = 0
        for queue, (start, members) in enumerate(self._queue_members):
            tail = self.tail[queue]
            # Fast exit for queues whose next member has not arrived yet.
            if tail - start < len(members) and members[tail - start] < hi:
                new_tail = start + bisect_left(members, hi, tail - start)
                waiting += new_tail - tail
                self.tail[queue] = new_tail
        self.n_waiting += waiting
        rejected = self._rejected_indices
        first = bisect_left(rejected, lo)
        last = bisect_left(rejected, hi, first)
        for index in rejected[first:last]:
            self._records.reject_reason[index] = RejectReason.EXCEEDS_KV_CAPACITY
            self.n_rejected += 1
            if self._deadline is not None:
                self.n_late += 1

    def _on_work_done(self, gpu: int) -> None:
        queue, head, stop = self._running[gpu]
        self._running[gpu] = None
        self._pos_completed[head:stop] = True
        self._records_stale = True
        self.n_completed += stop - head
        output_cumsum = self._pos_output_cumsum
        if self._pos_deadline is not None:
            # Members complete together and their deadlines ascend along the queue, so the
            # on-time members are a suffix of the batch.
            end = self.gpu_free_at[gpu]
            first_on_time = bisect_left(self._pos_deadline, end, head, stop)
            self.n_on_time += stop - first_on_time
            self.on_time_output_tokens += output_cumsum[stop] - output_cumsum[first_on_time]
        _, start_s, service_s, size = self.batches[int(self._pos_batch[head])]
        self.finished_batches.append(
            FinishedBatch(
                gpu=gpu,
                queue=queue,
                size=size,
                start_s=start_s,
                service_s=service_s,
                max_total_tokens=max(self._pos_total_list[head:stop]),
                max_output_tokens=max(self._pos_output_list[head:stop]),
                output_tokens=output_cumsum[stop] - output_cumsum[head],
            )
        )

    def _on_time_passed(self, t: float) -> None:
        if self._deadline is not None:
            self.n_late += self._deadlines_missed_until(
                t, self._deadline, self._pos_completion, self._position
            )

    @property
    def records(self) -> RequestRecords:
        """Per-request event times and states of the run so far (in request order)."""
        records = self._records
        if self._records_stale:
            order = self.order
            records.start_s[order] = self._pos_start
            records.first_token_s[order] = self._pos_first_token
            records.completion_s[order] = self._pos_completion
            records.gpu[order] = self._pos_gpu
            records.batch[order] = self._pos_batch
            records.completed[order] = self._pos_completed
            records.tokens_generated[order] = np.where(self._pos_completed, self._pos_output, 0)
            self._records_stale = False
        return records

    @property
    def sla_misses(self) -> int:
        """Deadlines that passed unfinished, plus rejections, so far."""
        return self.n_late

    @property
    def n_running(self) -> int:
        """Requests in the batches that GPUs are running now."""
        return sum(run[2] - run[1] for run in self._running if run is not None)

    def mean_batch_size(self) -> float:
        """Mean size of the batches dispatched so far (nan before the first)."""
        if not self.batches:
            return float("nan")
        return sum(b[3] for b in self.batches) / len(self.batches)

    def next_completion_s(self) -> float:
        """Time at which the next running batch ends, ``inf`` if no GPU works."""
        return self._gpu_events[0][0] if self._gpu_events else math.inf

    def busy_until(self) -> list[float]:
        """For every GPU, the time its current batch ends (``now`` for an idle GPU)."""
        now = self.now
        return [t if b else now for t, b in zip(self.gpu_free_at, self.gpu_busy)]
