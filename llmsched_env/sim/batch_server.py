"""Request-level server: G GPUs serving static batches that run to completion.

A decision is due whenever a GPU is idle and requests wait. The decision dispatches the oldest
requests of one queue as a batch to that GPU, or waits. Every member of a batch completes when the
batch ends (static batching: the longest member sets the pace). A batch must fit in one GPU's KV
memory: a dispatch takes the oldest requests of the queue up to the requested count and stops
before the first one that would not fit; a request that alone exceeds the memory is rejected at
arrival with :attr:`RejectReason.EXCEEDS_KV_CAPACITY`.

Waiting requests sit in FIFO queues (the environment's bins; one queue by default). With
``dispatch_order="oldest-in-time"`` a dispatch skips the requests at the head of the queue whose
deadline has passed and serves the oldest ones still in time; the late ones wait until no request
in time is left in their queue (see :data:`~llmsched_env.config.DISPATCH_ORDERS`). A request's
queue is fixed when the server is built, so each queue is a contiguous slice of one precomputed
index array and its state is two integers, its head and tail: arrivals move the tail, dispatches
move the head. A batch is therefore a range of positions in that array, and the server keeps
per-request values and event times by position, so that a dispatch or a completion costs a few
slices and binary searches whatever the batch size; :attr:`BatchServer.records` presents them in
request order.

The state lives in numpy arrays and the event loop and the dispatch run compiled
(:mod:`llmsched_env.sim.batch_kernels`), because ``BatchScheduling-v0`` steps once per dispatch;
the attributes below read those arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from llmsched_env.config import DISPATCH_ORDERS, DispatchOrder, check_choice
from llmsched_env.latency import BatchLatencyModel, EngineStaticBatchLatency
from llmsched_env.sim import batch_kernels as k
from llmsched_env.sim.engine import Engine
from llmsched_env.sim.records import RequestRecords
from llmsched_env.workload import Workload


class SettledCounts(NamedTuple):
    """The final SLA counters of a run that no decision can change any more.

    Attributes:
        n_on_time: Requests that complete within their deadline, in the whole run.
        sla_misses: Requests whose deadline passes unfinished, plus rejections, in the whole run.
        on_time_output_tokens: Output tokens of the on-time requests.
    """

    n_on_time: int
    sla_misses: int
    on_time_output_tokens: int


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


class _Scalar:
    """A number kept in element ``index`` of the server's array ``array`` (read as ``kind``)."""

    def __init__(self, array: str, index: int, kind: type) -> None:
        self.array, self.index, self.kind = array, index, kind

    def __get__(self, server: Any, owner: type | None = None) -> Any:
        if server is None:
            return self
        return self.kind(getattr(server, self.array)[self.index])

    def __set__(self, server: Any, value: float) -> None:
        getattr(server, self.array)[self.index] = value


class _GpuRow:
    """A per-GPU list attribute kept in row ``row`` of the server's array ``array``.

    Reading gives a list (of bools for ``as_bool``); assigning writes the row.
    """

    def __init__(self, array: str, row: int, *, as_bool: bool = False) -> None:
        self.array, self.row, self.as_bool = array, row, as_bool

    def __get__(self, server: Any, owner: type | None = None) -> Any:
        if server is None:
            return self
        values = getattr(server, self.array)[self.row].tolist()
        return [v != 0 for v in values] if self.as_bool else values

    def __set__(self, server: Any, value: list[Any]) -> None:
        getattr(server, self.array)[self.row] = value


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
        dispatch_order: Which waiting requests of a queue a dispatch serves: ``"oldest"``
            (FIFO) or ``"oldest-in-time"`` (the oldest whose deadline has not passed, late ones
            last); the latter needs ``deadline_s``.

    Attributes:
        n_waiting: Requests waiting in all queues.
        n_on_time: Requests completed within their deadline so far.
        n_late: Requests whose deadline passed unfinished, plus rejected requests, so far.
        on_time_output_tokens: Output tokens of requests completed within their deadline.
        batches: Every dispatched batch as ``(gpu, start_s, service_s, size)``.
        finished_batches: Batches finished since the caller last cleared this list.
    """

    now = _Scalar("_clock", k.NOW, float)
    in_system_integral = _Scalar("_clock", k.IN_SYSTEM, float)
    n_arrived = _Scalar("_counts", k.N_ARRIVED, int)
    n_completed = _Scalar("_counts", k.N_COMPLETED, int)
    n_rejected = _Scalar("_counts", k.N_REJECTED, int)
    n_waiting = _Scalar("_counts", k.N_WAITING, int)
    n_on_time = _Scalar("_counts", k.N_ON_TIME, int)
    n_late = _Scalar("_counts", k.N_LATE, int)
    on_time_output_tokens = _Scalar("_counts", k.ON_TIME_TOKENS, int)
    decision_gpu = _Scalar("_counts", k.DECISION_GPU, int)
    #: Whether each GPU is working.
    gpu_busy = _GpuRow("_gpu_i", k.BUSY, as_bool=True)
    #: When each GPU's latest work ends (or ended).
    gpu_free_at = _GpuRow("_gpu_f", k.FREE_AT)
    #: Total time each GPU spent working (work still running counts in full).
    busy_s = _GpuRow("_gpu_f", k.BUSY_S)

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
        dispatch_order: DispatchOrder = "oldest",
    ) -> None:
        check_choice("dispatch_order", dispatch_order, DISPATCH_ORDERS)
        if dispatch_order == "oldest-in-time" and deadline_s is None:
            raise ValueError('dispatch_order="oldest-in-time" needs a deadline_s, got None')
        if not isinstance(n_gpus, (int, np.integer)) or isinstance(n_gpus, bool) or n_gpus < 1:
            raise ValueError(f"n_gpus must be a positive integer, got {n_gpus!r}")
        if kv_capacity_tokens < 1:
            raise ValueError(f"kv_capacity_tokens must be >= 1, got {kv_capacity_tokens!r}")
        if deadline_s is not None and not deadline_s > 0:
            raise ValueError(f"deadline_s must be positive or None, got {deadline_s!r}")
        n = len(workload)
        kv_capacity_tokens = int(kv_capacity_tokens)
        if queue_of is None:
            queue_of = np.zeros(n, dtype=np.int64)
        queue_of = np.asarray(queue_of, dtype=np.int64)
        if queue_of.shape != (n,):
            raise ValueError(f"queue_of must hold {n} non-negative queue indices")
        lowest, highest = k.min_max(queue_of)
        if lowest < 0:
            raise ValueError(f"queue_of must hold {n} non-negative queue indices, got {lowest}")
        self.n_queues = int(n_queues if n_queues is not None else highest + 1)
        if highest >= self.n_queues:
            raise ValueError(f"queue_of has index {highest} >= n_queues={self.n_queues}")
        n_rejected = k.count_too_large(
            workload.prompt_tokens, workload.output_tokens, kv_capacity_tokens
        )
        # The state: two buffers, and every array of batch_kernels as a view of one of them
        # (the engine's attributes below read those views).
        self._floats, self._ints, self._layout = k.make_layout(
            n, n - n_rejected, n_rejected, int(n_gpus), self.n_queues
        )
        self._bind_views()
        params = self._params
        params[k.DEADLINE_S] = deadline_s if deadline_s else np.nan
        # The compiled path computes the linear prefill only; other engine models (and every
        # other latency model) are called from Python.
        self._engine_latency = (
            isinstance(latency, EngineStaticBatchLatency) and latency.linear_prefill
        )
        if self._engine_latency:
            it = latency.iteration
            params[k.B0 :] = (
                it.b0_s,
                it.b1_s_per_prefill_token,
                it.b2_s_per_decode_token,
                it.b3_s_per_context_token,
            )
        self._counts[k.KV_CAPACITY] = kv_capacity_tokens
        self._counts[k.IN_TIME_FIRST] = dispatch_order == "oldest-in-time"
        k.arrange(
            self._floats,
            self._ints,
            self._layout,
            queue_of,
            workload.prompt_tokens,
            workload.output_tokens,
            workload.arrival_s,
        )
        super().__init__(workload, n_gpus, rng)
        self.latency = latency
        self.kv_capacity_tokens = kv_capacity_tokens
        self.deadline_s = deadline_s
        self.dispatch_order = dispatch_order
        self._finished_read = 0
        self._finished_batches: list[FinishedBatch] = []
        self._records_version = (-1, -1, -1)

    #: The attributes that are views of the state buffers, and their fields in batch_kernels.
    #: ``order`` holds the request indices grouped by queue, in arrival order within each queue:
    #: a request's place in it is its *position*, each queue is a contiguous range of positions,
    #: and requests too large for KV memory have none (they are rejected at arrival).
    _VIEWS = {
        "_clock": "clock",
        "_params": "params",
        "_counts": "counts",
        "_gpu_f": "gpu_f",
        "_gpu_i": "gpu_i",
        "_queues": "queues",
        "order": "order",
        "_pos_prompt": "pos_prompt",
        "_pos_output": "pos_output",
        "_pos_arrival": "pos_arrival",
        "_output_cumsum": "output_cumsum",
        "_pos_kv_cumsum": "kv_cumsum",
        "_pos_times": "pos_f",
        "_pos_batch": "pos_batch",
        "_pos_completed": "pos_completed",
        "_reject_reason": "reject_reason",
        "_batch_i": "batch_i",
        "_batch_f": "batch_f",
        "_finished": "finished",
    }

    def _bind_views(self) -> None:
        views = k.buffer_views(self._floats, self._ints, self._layout)
        for attribute, field in self._VIEWS.items():
            setattr(self, attribute, views[field])

    def __getstate__(self) -> dict[str, Any]:
        # Copies and pickles keep the buffers; the views are made anew from them.
        state = self.__dict__.copy()
        for attribute in self._VIEWS:
            del state[attribute]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bind_views()

    # ------------------------------------------------------------------ state, read from arrays
    @property
    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(floats, ints, layout)``: the state buffers, for compiled code (see batch_kernels)."""
        return self._floats, self._ints, self._layout

    @property
    def head(self) -> list[int]:
        """Per queue, the position of its oldest waiting request (a copy)."""
        return self._queues[k.HEAD].tolist()

    @property
    def tail(self) -> list[int]:
        """Per queue, one past the position of its newest waiting request (a copy)."""
        return self._queues[k.TAIL].tolist()

    # ------------------------------------------------------------------ the decision loop
    def advance(self) -> bool:
        """Process events until a decision is due (see :meth:`Engine.advance`)."""
        return k.advance(self._floats, self._ints, self._layout)

    def wait(self) -> None:
        """Let the deciding GPU idle until the next event (see :meth:`Engine.wait`)."""
        gpu = self._require_decision()
        if not self.can_wait():
            raise RuntimeError(
                "WAIT would deadlock: no request is left to arrive and no GPU is working"
            )
        self._gpu_i[k.DEFERRED, gpu] = 1
        self._counts[k.DECISION_GPU] = -1

    def can_wait(self) -> bool:
        """Whether WAIT is safe: some event (an arrival or the end of GPU work) is still ahead."""
        return self.n_arrived < self.n_requests or any(self._gpu_i[k.BUSY].tolist())

    def next_event_time(self) -> float:
        """Time of the next arrival or end of GPU work, ``inf`` if there is none."""
        n_arrived = self.n_arrived
        t = float(self.workload.arrival_s[n_arrived]) if n_arrived < self.n_requests else math.inf
        return min(t, self.next_completion_s())

    # ------------------------------------------------------------------ decisions
    def queue_lengths(self) -> list[int]:
        """Number of waiting requests in each queue."""
        return (self._queues[k.TAIL] - self._queues[k.HEAD]).tolist()

    def queue_bounds(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(heads, tails)``: each queue's waiting requests are positions ``head .. tail - 1``."""
        heads, tails, _ = self._queues.tolist()
        return tuple(heads), tuple(tails)

    def fill_decision_mask(self, mask: np.ndarray) -> None:
        """Mark the decisions allowed now in ``mask``: WAIT, then dispatching from each queue.

        ``mask[0]`` becomes whether WAIT is safe (:meth:`can_wait`) and ``mask[1 + q]`` whether
        queue ``q`` holds requests; entries after those are left alone.
        """
        k.fill_decision_mask(mask, self._floats, self._ints, self._layout)

    def queue_ids(self, queue: int) -> np.ndarray:
        """Indices of the requests waiting in ``queue``, oldest first (a read-only view)."""
        view = self.order[self._queues[k.HEAD, queue] : self._queues[k.TAIL, queue]]
        view.flags.writeable = False
        return view

    @property
    def last_moved(self) -> tuple[int, int]:
        """``(lo, hi)``: the positions whose requests the latest dispatch reordered.

        Empty (``lo == hi``) unless ``dispatch_order="oldest-in-time"`` moved in-time requests
        ahead of late ones; code that keeps values by position refreshes ``lo .. hi - 1``.
        """
        return int(self._counts[k.MOVED_LO]), int(self._counts[k.MOVED_HI])

    def batch_counts(self, max_counts: Sequence[int]) -> np.ndarray:
        """How many requests a dispatch from each queue would serve, for each ``max_count``.

        Shape ``(n_queues, len(max_counts))``; 0 for an empty queue. A dispatch takes the
        oldest requests of the queue (under ``dispatch_order="oldest-in-time"`` its oldest in
        time, when it also holds late ones), at most ``max_count``, as many as fit together in
        KV memory and at least one, exactly as :meth:`dispatch` does. Two size levels with the
        same count serve the same batch.
        """
        queues, arrival, now = self._queues, self._pos_arrival, self.now
        skip_late = self.dispatch_order == "oldest-in-time"
        sizes = np.asarray(max_counts, dtype=np.int64)
        counts = np.zeros((self.n_queues, len(sizes)), dtype=np.int64)
        for queue, (head, tail) in enumerate(zip(queues[k.HEAD].tolist(), queues[k.TAIL].tolist())):
            if head == tail:
                continue
            start = head
            if skip_late:
                start = int(k.in_time_start(arrival, self.deadline_s, now, head, tail))
            # fitting_end is monotone in its end, so one search serves every size level.
            fit = int(k.fitting_end(self._pos_kv_cumsum, self.kv_capacity_tokens, start, tail))
            counts[queue] = np.maximum(np.minimum(start + sizes, fit), start + 1) - start
        return counts

    def dispatch(self, queue: int, max_count: int) -> int:
        """Serve the oldest requests of ``queue`` as one batch on the deciding GPU.

        With ``dispatch_order="oldest-in-time"``, the oldest whose deadline has not passed (if
        the queue holds any), which first moves them ahead of the late ones (:attr:`last_moved`).

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
        self._require_decision()
        if not 0 <= queue < self.n_queues:
            raise ValueError(f"queue must be in [0, {self.n_queues}), got {queue!r}")
        if max_count < 1:
            raise ValueError(f"max_count must be >= 1, got {max_count!r}")
        queues = self._queues
        if queues[k.HEAD, queue] == queues[k.TAIL, queue]:
            raise ValueError(f"queue {queue} is empty")
        if self.dispatch_order == "oldest-in-time":  # a FIFO dispatch moves nothing
            max_count = int(k.put_in_time_first(*self.state, queue, max_count))
        head = int(queues[k.HEAD, queue])
        end = min(head + max_count, int(queues[k.TAIL, queue]))
        # A single request always fits: larger ones were rejected at arrival.
        fitting = int(k.fitting_end(self._pos_kv_cumsum, self.kv_capacity_tokens, head, end))
        stop = max(fitting, head + 1)
        if self._engine_latency:
            service_s, first_token_s = k.engine_batch_timing(
                self._pos_prompt, self._pos_output, head, stop, self._params[k.B0 :]
            )
        else:  # any other model is called from Python with the members' lengths
            service_s, first_token_s = self.latency.batch_timing(
                self._pos_prompt[head:stop], self._pos_output[head:stop], self.rng
            )
        return k.start_batch(
            self._floats,
            self._ints,
            self._layout,
            queue,
            stop,
            float(service_s),
            float(first_token_s),
        )

    def decide(self, queue: int, max_count: int = 1, mask: np.ndarray | None = None) -> bool:
        """Carry out one decision, then process events until the next (:meth:`advance`).

        The decision loop of a scheduler in one call, which is what an environment step does:
        ``queue >= 0`` dispatches as :meth:`dispatch` does, ``queue < 0`` waits as :meth:`wait`
        does.

        Args:
            queue: Queue to dispatch from, or a negative number to WAIT.
            max_count: Largest batch size wanted (ignored for WAIT).
            mask: If given, filled afterwards as :meth:`fill_decision_mask` does.

        Returns:
            What :meth:`advance` returns: whether a decision is due.

        Raises:
            RuntimeError: If no decision is due, or waiting would deadlock.
            ValueError: If the queue index is out of range, the queue is empty or
                ``max_count < 1``.
        """
        if not self._engine_latency or queue >= self.n_queues or max_count < 1 or mask is None:
            # The general path, which also raises the errors of a bad queue or count.
            if queue < 0:
                self.wait()
            else:
                self.dispatch(queue, max_count)
            due = self.advance()
            if mask is not None:
                self.fill_decision_mask(mask)
            return due
        code = k.decide(self._floats, self._ints, self._layout, queue, max_count, mask)
        if code < 0:
            # Refused and nothing changed: the checks of wait() and dispatch() raise the error.
            if queue < 0:
                self.wait()
            else:
                self.dispatch(queue, max_count)
        return code == 1

    # ------------------------------------------------------------------ results
    @property
    def finished_batches(self) -> list[FinishedBatch]:
        """Batches finished since the caller last cleared this list (assign ``[]`` to clear)."""
        n_finished = int(self._counts[k.N_FINISHED])
        if n_finished > self._finished_read:
            batch_i, batch_f = self._batch_i, self._batch_f
            for b in self._finished[self._finished_read : n_finished].tolist():
                gpu, queue, size, _, max_total, max_output, output_tokens = batch_i[b].tolist()
                start_s, service_s = batch_f[b].tolist()
                self._finished_batches.append(
                    FinishedBatch(
                        gpu, queue, size, start_s, service_s, max_total, max_output, output_tokens
                    )
                )
            self._finished_read = n_finished
        return self._finished_batches

    @finished_batches.setter
    def finished_batches(self, value: list[FinishedBatch]) -> None:
        self._finished_read = int(self._counts[k.N_FINISHED])  # what finished so far is dropped
        self._finished_batches = value

    def take_finished_batches(self) -> list[FinishedBatch]:
        """The batches finished since the previous call (or :attr:`finished_batches` clearing)."""
        finished = self.finished_batches
        self._finished_batches = []
        return finished

    @property
    def batches(self) -> list[tuple[int, float, float, int]]:
        """Every dispatched batch as ``(gpu, start_s, service_s, size)``, in dispatch order."""
        n = int(self._counts[k.N_BATCHES])
        gpus = self._batch_i[:n, k.B_GPU].tolist()
        sizes = self._batch_i[:n, k.B_SIZE].tolist()
        starts = self._batch_f[:n, k.B_START].tolist()
        services = self._batch_f[:n, k.B_SERVICE].tolist()
        return list(zip(gpus, starts, services, sizes))

    @property
    def records(self) -> RequestRecords:
        """Per-request event times and states of the run so far (in request order)."""
        records = self._records
        records.tracks_token_gaps = False  # static batches do not resolve token times
        counts = self._counts
        version = (int(counts[k.N_BATCHES]), int(counts[k.N_FINISHED]), int(counts[k.N_REJECTED]))
        if version != self._records_version:
            records.reject_reason[:] = self._reject_reason
            order = self.order
            records.start_s[order] = self._pos_times[k.START]
            records.first_token_s[order] = self._pos_times[k.FIRST_TOKEN]
            records.completion_s[order] = self._pos_times[k.COMPLETION]
            batch = self._pos_batch
            records.gpu[order] = np.where(batch >= 0, self._batch_i[batch, k.B_GPU], -1)
            records.batch[order] = batch
            records.completed[order] = self._pos_completed
            records.tokens_generated[order] = np.where(self._pos_completed, self._pos_output, 0)
            self._records_version = version
        return records

    def _metric_columns(self) -> dict[str, np.ndarray]:
        # The columns straight from the position arrays, without building the full records.
        start, first_token, completion, status = k.metric_columns(
            self._floats, self._ints, self._layout
        )
        return {
            "arrival_s": self.workload.arrival_s,
            "start_s": start,
            "first_token_s": first_token,
            "completion_s": completion,
            "output_tokens": self.workload.output_tokens,
            "status": status,
        }

    @property
    def sla_misses(self) -> int:
        """Deadlines that passed unfinished, plus rejections, so far."""
        return int(self._counts[k.N_LATE])

    def settled_counts(self) -> SettledCounts | None:
        """The run's final SLA counters if no decision can change them any more, else ``None``.

        That is the case once every request has arrived and every waiting request's deadline
        has passed: a running batch's end is fixed when it starts, so its members' outcomes are
        known, and a request already late stays late however it is served. Nothing a scheduler
        does from then on changes the counters' final values, only when requests complete.
        Always ``None`` for a server without a deadline.
        """
        if self.deadline_s is None or self.n_arrived < self.n_requests:
            return None
        now, deadline_s = self.now, self.deadline_s
        arrival = self._pos_arrival
        queues = self._queues
        for head, tail in zip(queues[k.HEAD].tolist(), queues[k.TAIL].tolist()):
            if head < tail and arrival[tail - 1] + deadline_s > now:  # the youngest is in time
                return None
        n_on_time, n_late, tokens = self.n_on_time, self.n_late, self.on_time_output_tokens
        for gpu, batch in enumerate(self._gpu_i[k.RUNNING].tolist()):
            if batch < 0:
                continue
            head = int(self._batch_i[batch, k.B_HEAD])
            stop = head + int(self._batch_i[batch, k.B_SIZE])
            end = self._gpu_f[k.FREE_AT, gpu]
            # Deadlines ascend along a batch: its on-time members are a suffix (deadline at or
            # after the end, which lies after now), and before them come the late ones whose
            # deadline is still ahead, not counted yet.
            deadlines = arrival[head:stop] + deadline_s
            first_on_time = head + int(np.searchsorted(deadlines, end, side="left"))
            first_unpaid = head + int(np.searchsorted(deadlines, now, side="right"))
            n_on_time += stop - first_on_time
            n_late += first_on_time - first_unpaid
            tokens += int(self._output_cumsum[stop] - self._output_cumsum[first_on_time])
        return SettledCounts(n_on_time, n_late, tokens)

    @property
    def n_running(self) -> int:
        """Requests in the batches that GPUs are running now."""
        running = self._gpu_i[k.RUNNING]
        return int(self._batch_i[running[running >= 0], k.B_SIZE].sum())

    def mean_batch_size(self) -> float:
        """Mean size of the batches dispatched so far (nan before the first)."""
        n = int(self._counts[k.N_BATCHES])
        if n == 0:
            return float("nan")
        return sum(self._batch_i[:n, k.B_SIZE].tolist()) / n

    def next_completion_s(self) -> float:
        """Time at which the next running batch ends, ``inf`` if no GPU works."""
        return min([math.inf, *(f for f, b in zip(self.gpu_free_at, self.gpu_busy) if b)])

    def busy_until(self) -> np.ndarray:
        """For every GPU, the time its current batch ends (``now`` for an idle GPU); a copy."""
        return self._gpu_f[k.UNTIL].copy()
