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

The state is declared once in :mod:`llmsched_env.sim.batch_state`; the event loop and the
dispatch run compiled (:mod:`llmsched_env.sim.batch_kernels`), because ``BatchScheduling-v0``
steps once per dispatch, and the rules they apply live in :mod:`llmsched_env.sim.batch_rules`.
The server implements :class:`~llmsched_env.sim.server.Server`; its attributes read the state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from llmsched_env.config import DISPATCH_ORDERS, DispatchOrder, check_choice
from llmsched_env.latency import BatchLatencyModel
from llmsched_env.metrics import SLATargets, summarize
from llmsched_env.sim import batch_kernels as k
from llmsched_env.sim.batch_state import BatchState, allocate, state_views
from llmsched_env.sim.records import RequestRecords
from llmsched_env.sim.state_schema import state_counter
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


#: The message of each refusal code of :mod:`~llmsched_env.sim.batch_kernels`.
_REFUSALS: dict[int, tuple[type[Exception], str]] = {
    k.NO_DECISION_DUE: (RuntimeError, "no scheduling decision is due; call advance() first"),
    k.WAIT_DEADLOCKS: (
        RuntimeError,
        "WAIT would deadlock: no request is left to arrive and no GPU is working",
    ),
    k.QUEUE_OUT_OF_RANGE: (ValueError, "queue must be in [0, {n_queues}), got {queue!r}"),
    k.COUNT_BELOW_ONE: (ValueError, "max_count must be >= 1, got {max_count!r}"),
    k.EMPTY_QUEUE: (ValueError, "queue {queue} is empty"),
}


class BatchServer:
    """Static-batching server with FIFO queues that stops at every dispatch decision.

    Args:
        workload: Requests sorted by arrival.
        n_gpus: Number of identical GPUs.
        latency: Service-time model of a batch; a model with a compiled timing
            (``compiled_timing()``) is timed inside the compiled dispatch, any other in Python.
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
        state: The state's arrays by name (:data:`~llmsched_env.sim.batch_state.BatchState`,
            numpy views); read-only by convention, the compiled kernels write them.
        n_waiting: Requests waiting in all queues.
        n_on_time: Requests completed within their deadline so far.
        n_late: Requests whose deadline passed unfinished, plus rejected requests, so far.
        on_time_output_tokens: Output tokens of requests completed within their deadline.
        batches: Every dispatched batch as ``(gpu, start_s, service_s, size)``.
        finished_batches: Batches finished since the caller last cleared this list.
    """

    now = state_counter("now", float)
    in_system_integral = state_counter("in_system_s", float)
    n_arrived = state_counter("n_arrived", int)
    n_completed = state_counter("n_completed", int)
    n_rejected = state_counter("n_rejected", int)
    n_waiting = state_counter("n_waiting", int)
    n_on_time = state_counter("n_on_time", int)
    n_late = state_counter("n_late", int)
    sla_misses = state_counter("n_late", int)
    on_time_output_tokens = state_counter("on_time_tokens", int)
    decision_gpu = state_counter("decision_gpu", int)

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
        compiled_timing = self._keep_settings(
            workload, n_gpus, latency, kv_capacity_tokens, rng, deadline_s, dispatch_order
        )
        n_rejected = k.count_too_large(
            workload.prompt_tokens, workload.output_tokens, kv_capacity_tokens
        )
        self._floats, self._ints, self._layout = allocate(
            n, n - n_rejected, n_rejected, self.n_gpus, self.n_queues
        )
        self.state: BatchState = state_views(self._floats, self._ints, self._layout)
        state = self.state
        state.deadline_s[0] = deadline_s if deadline_s else np.nan
        state.kv_capacity[0] = kv_capacity_tokens
        state.in_time_first[0] = dispatch_order == "oldest-in-time"
        if compiled_timing is not None:
            state.latency_code[0], state.latency_params[:] = compiled_timing
        k.arrange(
            self._floats,
            self._ints,
            self._layout,
            queue_of,
            workload.prompt_tokens,
            workload.output_tokens,
            workload.arrival_s,
        )

    @classmethod
    def on_buffers(
        cls,
        workload: Workload,
        buffers: tuple[np.ndarray, np.ndarray, np.ndarray],
        *,
        n_gpus: int,
        latency: BatchLatencyModel,
        kv_capacity_tokens: int,
        rng: np.random.Generator,
        n_queues: int,
        deadline_s: float | None = None,
        dispatch_order: DispatchOrder = "oldest",
    ) -> BatchServer:
        """A server whose run is already laid out in ``buffers``, and maybe under way.

        For code that starts runs in compiled code (:func:`~llmsched_env.sim.batch_kernels.
        restart`, the compiled vector env) and builds their Python side only when it is read.
        The arguments are the constructor's, and must be those the run was laid out with; the
        server works on ``buffers`` (``(floats, ints, layout)``) from where they stand.
        """
        server = cls.__new__(cls)
        server.n_queues = int(n_queues)
        server._keep_settings(
            workload, n_gpus, latency, kv_capacity_tokens, rng, deadline_s, dispatch_order
        )
        server._floats, server._ints, server._layout = buffers
        server.state = state_views(*buffers)
        return server

    def _keep_settings(
        self,
        workload: Workload,
        n_gpus: int,
        latency: BatchLatencyModel,
        kv_capacity_tokens: int,
        rng: np.random.Generator,
        deadline_s: float | None,
        dispatch_order: DispatchOrder,
    ) -> tuple[int, np.ndarray] | None:
        """Keep the run's settings, and start the Python side's own bookkeeping.

        Returns:
            The latency model's compiled timing (``None``: timed in Python).
        """
        compiled_timing = getattr(latency, "compiled_timing", lambda: None)()
        self._compiled_timing = compiled_timing is not None
        self.workload = workload
        self.n_gpus = int(n_gpus)
        self.n_requests = len(workload)
        self.rng = rng
        self.latency = latency
        self.kv_capacity_tokens = int(kv_capacity_tokens)
        self.deadline_s = deadline_s
        self.dispatch_order = dispatch_order
        self._mask = np.zeros(1 + self.n_queues, dtype=bool)
        self._finished_read = 0
        self._finished_batches: list[FinishedBatch] = []
        self._records_version = (-1, -1, -1)
        return compiled_timing

    def __getstate__(self) -> dict[str, Any]:
        # Copies and pickles keep the buffers; the named views are made anew from them.
        state = self.__dict__.copy()
        del state["state"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.state = state_views(self._floats, self._ints, self._layout)

    # ------------------------------------------------------------------ state
    @property
    def buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(floats, ints, layout)``: the state's buffers, for compiled code.

        A compiled function views them as a :data:`~llmsched_env.sim.batch_state.BatchState`
        with :func:`~llmsched_env.sim.batch_state.state_view`.
        """
        return self._floats, self._ints, self._layout

    @property
    def order(self) -> np.ndarray:
        """Request index at each position: the requests grouped by queue, in arrival order.

        A request's place in this array is its *position*; each queue is a contiguous range of
        positions, and requests too large for KV memory have none (they are rejected at arrival).
        """
        return self.state.order

    @property
    def head(self) -> list[int]:
        """Per queue, the position of its oldest waiting request (a copy)."""
        return self.state.queue_head.tolist()

    @property
    def tail(self) -> list[int]:
        """Per queue, one past the position of its newest waiting request (a copy)."""
        return self.state.queue_tail.tolist()

    @property
    def gpu_busy(self) -> list[bool]:
        """Whether each GPU is working."""
        return [b != 0 for b in self.state.gpu_busy.tolist()]

    @property
    def gpu_free_at(self) -> list[float]:
        """When each GPU's latest work ends (or ended)."""
        return self.state.gpu_free_at.tolist()

    @property
    def busy_s(self) -> list[float]:
        """Total time each GPU spent working (work still running counts in full)."""
        return self.state.gpu_busy_s.tolist()

    @property
    def n_in_system(self) -> int:
        """Requests that arrived and are neither completed nor rejected."""
        return self.n_arrived - self.n_completed - self.n_rejected

    @property
    def done(self) -> bool:
        """Whether every request has completed or been rejected."""
        return self.n_completed + self.n_rejected == self.n_requests

    # ------------------------------------------------------------------ the decision loop
    def advance(self) -> bool:
        """Process events until a decision is due.

        Events at the same time go in a fixed order: GPU work that ends (lowest GPU first),
        then arrivals, then deadlines.

        Returns:
            ``True`` when a decision is due (:attr:`decision_gpu` names the GPU that decides),
            ``False`` when nothing is left to happen: every request has arrived and no GPU works.
        """
        return k.advance(self._floats, self._ints, self._layout)

    def wait(self) -> None:
        """Let the deciding GPU idle until the next event (the WAIT decision).

        Other idle GPUs still get their own decisions at the current time before the clock moves.

        Raises:
            RuntimeError: If no decision is due, or waiting would deadlock (:meth:`can_wait`).
        """
        self._check(k.wait(self._floats, self._ints, self._layout), -1, 1)

    def can_wait(self) -> bool:
        """Whether WAIT is safe: some event (an arrival or the end of GPU work) is still ahead."""
        return self.n_arrived < self.n_requests or any(self.state.gpu_busy.tolist())

    def oldest_queue(self) -> int:
        """The queue whose oldest waiting request arrived first (-1 if every queue is empty)."""
        return int(k.oldest_queue(self._floats, self._ints, self._layout))

    def next_event_time(self) -> float:
        """Time of the next arrival or end of GPU work, ``inf`` if there is none."""
        n_arrived = self.n_arrived
        t = float(self.workload.arrival_s[n_arrived]) if n_arrived < self.n_requests else math.inf
        return min(t, self.next_completion_s())

    def _check(self, code: int, queue: int, max_count: int) -> None:
        """Raise the error of the kernels' refusal ``code`` (none for ``code >= 0``)."""
        if code >= 0:
            return
        error, message = _REFUSALS[code]
        raise error(message.format(n_queues=self.n_queues, queue=queue, max_count=max_count))

    # ------------------------------------------------------------------ decisions
    def queue_lengths(self) -> list[int]:
        """Number of waiting requests in each queue."""
        return (self.state.queue_tail - self.state.queue_head).tolist()

    def queue_bounds(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(heads, tails)``: each queue's waiting requests are positions ``head .. tail - 1``."""
        return tuple(self.state.queue_head.tolist()), tuple(self.state.queue_tail.tolist())

    def fill_decision_mask(self, mask: np.ndarray) -> None:
        """Mark the decisions allowed now in ``mask``: WAIT, then dispatching from each queue.

        ``mask[0]`` becomes whether WAIT is safe (:meth:`can_wait`) and ``mask[1 + q]`` whether
        queue ``q`` holds requests; entries after those are left alone.
        """
        k.fill_decision_mask(self._floats, self._ints, self._layout, mask)

    def queue_ids(self, queue: int) -> np.ndarray:
        """Indices of the requests waiting in ``queue``, oldest first (a read-only view)."""
        state = self.state
        view = state.order[state.queue_head[queue] : state.queue_tail[queue]]
        view.flags.writeable = False
        return view

    @property
    def last_moved(self) -> tuple[int, int]:
        """``(lo, hi)``: the positions whose requests the latest dispatch reordered.

        Empty (``lo == hi``) unless ``dispatch_order="oldest-in-time"`` moved in-time requests
        ahead of late ones; code that keeps values by position refreshes ``lo .. hi - 1``.
        """
        return int(self.state.moved_lo[0]), int(self.state.moved_hi[0])

    def batch_counts(self, max_counts: Sequence[int]) -> np.ndarray:
        """How many requests a dispatch from each queue would serve, for each ``max_count``.

        Shape ``(n_queues, len(max_counts))``; 0 for an empty queue. The sizes are those
        :meth:`dispatch` starts (the one rule, :func:`~llmsched_env.sim.batch_rules.
        dispatch_range`): the oldest requests of the queue (under
        ``dispatch_order="oldest-in-time"`` its oldest in time, when it also holds late ones),
        at most ``max_count``, as many as fit together in KV memory and at least one. Two size
        levels with the same count serve the same batch.
        """
        sizes = np.asarray(max_counts, dtype=np.int64)
        counts = np.zeros((self.n_queues, len(sizes)), dtype=np.int64)
        k.batch_counts(self._floats, self._ints, self._layout, sizes, counts)
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
        if self._compiled_timing:
            size = k.dispatch(self._floats, self._ints, self._layout, queue, max_count)
            self._check(size, queue, max_count)
            return size
        head, stop = k.take(self._floats, self._ints, self._layout, queue, max_count)
        self._check(head, queue, max_count)
        state = self.state
        service_s, first_token_s = self.latency.batch_timing(
            state.pos_prompt[head:stop], state.pos_output[head:stop], self.rng
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
        if mask is None:
            mask = self._mask
        if self._compiled_timing or queue < 0:
            code = k.decide(self._floats, self._ints, self._layout, queue, max_count, mask)
            self._check(code, queue, max_count)
            return code == 1
        self.dispatch(queue, max_count)
        due = self.advance()
        self.fill_decision_mask(mask)
        return due

    # ------------------------------------------------------------------ results
    @property
    def finished_batches(self) -> list[FinishedBatch]:
        """Batches finished since the caller last cleared this list (assign ``[]`` to clear)."""
        n_finished = int(self.state.n_finished[0])
        if n_finished > self._finished_read:
            self._finished_batches += self.finished_between(self._finished_read, n_finished)
            self._finished_read = n_finished
        return self._finished_batches

    @finished_batches.setter
    def finished_batches(self, value: list[FinishedBatch]) -> None:
        self._finished_read = int(self.state.n_finished[0])  # what finished so far is dropped
        self._finished_batches = value

    def finished_between(self, lo: int, hi: int) -> list[FinishedBatch]:
        """The ``lo``-th to ``(hi - 1)``-th batches to finish in the run, in the order they ended.

        ``state.n_finished`` counts the batches finished so far, so the batches that finish
        during some calls are ``finished_between(n_before, n_after)`` of its values before and
        after them (what ``BatchScheduling-v0`` reports per step).
        """
        if hi <= lo:
            return []  # most steps: no batch finished
        state = self.state
        return [
            FinishedBatch(
                state.batch_gpu.item(b),
                state.batch_queue.item(b),
                state.batch_size.item(b),
                state.batch_start_s.item(b),
                state.batch_service_s.item(b),
                state.batch_max_total.item(b),
                state.batch_max_output.item(b),
                state.batch_output_tokens.item(b),
            )
            for b in state.finished[lo:hi].tolist()
        ]

    def take_finished_batches(self) -> list[FinishedBatch]:
        """The batches finished since the previous call (or :attr:`finished_batches` clearing)."""
        finished = self.finished_batches
        self._finished_batches = []
        return finished

    @property
    def batches(self) -> list[tuple[int, float, float, int]]:
        """Every dispatched batch as ``(gpu, start_s, service_s, size)``, in dispatch order."""
        state = self.state
        n = int(state.n_batches[0])
        gpus = state.batch_gpu[:n].tolist()
        sizes = state.batch_size[:n].tolist()
        starts = state.batch_start_s[:n].tolist()
        services = state.batch_service_s[:n].tolist()
        return list(zip(gpus, starts, services, sizes))

    @cached_property
    def _records(self) -> RequestRecords:
        """The records, made when first read."""
        return RequestRecords(self.workload)

    @property
    def records(self) -> RequestRecords:
        """Per-request event times and states of the run so far (in request order)."""
        records = self._records
        records.tracks_token_gaps = False  # static batches do not resolve token times
        state = self.state
        version = (int(state.n_batches[0]), int(state.n_finished[0]), int(state.n_rejected[0]))
        if version != self._records_version:
            records.reject_reason[:] = state.reject_reason
            order = state.order
            records.start_s[order] = state.pos_start_s
            records.first_token_s[order] = state.pos_first_token_s
            records.completion_s[order] = state.pos_completion_s
            batch = state.pos_batch
            records.gpu[order] = np.where(batch >= 0, state.batch_gpu[batch], -1)
            records.batch[order] = batch
            completed = state.pos_completed != 0
            records.completed[order] = completed
            records.tokens_generated[order] = np.where(completed, state.pos_output, 0)
            self._records_version = version
        return records

    def summary(self, sla: SLATargets | None = None, warmup_s: float = 0.0) -> dict[str, float]:
        """The metrics of the run so far (see :func:`llmsched_env.metrics.summarize`)."""
        start, first_token, completion, status = k.metric_columns(
            self._floats, self._ints, self._layout
        )
        columns = {
            "arrival_s": self.workload.arrival_s,
            "start_s": start,
            "first_token_s": first_token,
            "completion_s": completion,
            "output_tokens": self.workload.output_tokens,
            "status": status,
        }
        return summarize(
            columns,
            end_s=self.now,
            n_gpus=self.n_gpus,
            busy_s=self.busy_time_s(),
            mean_batch_size=self.mean_batch_size(),
            sla=sla or SLATargets(),
            warmup_s=warmup_s,
        )

    def settled_counts(self) -> SettledCounts | None:
        """The run's final SLA counters if no decision can change them any more, else ``None``.

        That is the case once every request has arrived and every waiting request's deadline
        has passed: a running batch's end is fixed when it starts, so its members' outcomes are
        known, and a request already late stays late however it is served. Nothing a scheduler
        does from then on changes the counters' final values, only when requests complete.
        Always ``None`` for a server without a deadline.
        """
        known, n_on_time, n_late, tokens = k.settled_counts(self._floats, self._ints, self._layout)
        return SettledCounts(int(n_on_time), int(n_late), int(tokens)) if known else None

    @property
    def n_running(self) -> int:
        """Requests in the batches that GPUs are running now."""
        running = self.state.gpu_batch
        return int(self.state.batch_size[running[running >= 0]].sum())

    def mean_batch_size(self) -> float:
        """Mean size of the batches dispatched so far (nan before the first)."""
        return float(k.mean_batch_size(self._floats, self._ints, self._layout))

    def busy_time_s(self) -> float:
        """Total time all GPUs have worked up to now (work still running counts up to now)."""
        return float(k.busy_time_s(self._floats, self._ints, self._layout))

    def next_completion_s(self) -> float:
        """Time at which the next running batch ends, ``inf`` if no GPU works."""
        return min([math.inf, *(f for f, b in zip(self.gpu_free_at, self.gpu_busy) if b)])

    def busy_until(self) -> np.ndarray:
        """For every GPU, the time its current batch ends (``now`` for an idle GPU); a copy."""
        return self.state.gpu_until.copy()
