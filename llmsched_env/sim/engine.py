"""The discrete-event core of the iteration-level server: a clock that stops at decisions.

Nothing here runs a workload to completion on its own. The caller alternates two calls:

* :meth:`Engine.advance` processes events (arrivals, the end of GPU work, deadlines passing) in
  time order until a scheduling decision is due, and returns ``False`` once nothing is left to
  happen;
* a decision method of the concrete server (``dispatch`` for batches, ``run_iteration`` for
  continuous batching) or :meth:`Engine.wait`, which lets the deciding GPU idle until the next
  event.

Events at the same time are processed in a fixed order: GPU work that ends (lowest GPU index
first), then arrivals (in arrival order), then deadlines. Arrivals come from the pre-sorted arrival
array, so only the GPUs' end times need a heap, keyed by ``(time, gpu)``; ties are therefore
broken deterministically.

:class:`~llmsched_env.sim.iteration_server.IterationServer` builds on this class. The
request-level server, the hot path of ``BatchScheduling-v0``, does not: it runs the same event
rules compiled (:mod:`llmsched_env.sim.batch_kernels`) on its own state, and so does the
compiled iteration-level server (:mod:`llmsched_env.sim.iteration_kernels`); all implement
:class:`~llmsched_env.sim.server.Server`.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from functools import cached_property
from typing import TypeVar

import numpy as np

from llmsched_env.metrics import SLATargets, summarize
from llmsched_env.sim.records import RequestRecords
from llmsched_env.sim.server import Server
from llmsched_env.statistics import sequential_sum
from llmsched_env.workload import Workload

INF = math.inf


class Engine:
    """Clock, arrivals and GPU events of a run; subclasses define what a decision does.

    Args:
        workload: The requests to serve, sorted by arrival.
        n_gpus: Number of identical GPUs.
        rng: The run's only source of randomness (service-time draws).

    Attributes:
        now: Current simulated time in seconds.
        n_arrived: How many requests (a prefix of the arrival order) have arrived.
        n_completed: How many requests have completed.
        n_rejected: How many requests were rejected at arrival.
        records: Per-request event times and states.
        busy_s: Total time each GPU spent working.
        in_system_integral: Time integral of the number of requests in the system
            (request-seconds), for queueing metrics and the ``"queue"`` reward.
    """

    def __init__(self, workload: Workload, n_gpus: int, rng: np.random.Generator) -> None:
        if not isinstance(n_gpus, (int, np.integer)) or isinstance(n_gpus, bool) or n_gpus < 1:
            raise ValueError(f"n_gpus must be a positive integer, got {n_gpus!r}")
        self.workload = workload
        self.n_gpus = int(n_gpus)
        self.rng = rng
        self.now = 0.0
        self.n_requests = len(workload)
        self.n_arrived = 0
        self.n_completed = 0
        self.n_rejected = 0
        self.in_system_integral = 0.0
        self.busy_s = [0.0] * self.n_gpus
        self.gpu_busy = [False] * self.n_gpus
        self.gpu_free_at = [0.0] * self.n_gpus
        self._gpu_events: list[tuple[float, int]] = []
        self._deferred: set[int] = set()
        self._deadline_ptr = 0
        self.decision_gpu = -1

    @property
    def records(self) -> RequestRecords:
        """Per-request event times and states of the run so far."""
        return self._records

    @cached_property
    def _records(self) -> RequestRecords:
        """The records, made when first used.

        A server that keeps its own state until the records are read makes them only then.
        """
        return RequestRecords(self.workload)

    @cached_property
    def _arrival(self) -> list[float]:
        """Arrival times as a list (the Python event loop reads them one at a time)."""
        return self.workload.arrival_s.tolist()

    # ------------------------------------------------------------------ the decision loop
    def advance(self) -> bool:
        """Process events until a decision is due.

        Returns:
            ``True`` when a decision is due (``decision_gpu`` names the GPU that decides),
            ``False`` when nothing is left to happen: every request has arrived and no GPU works.
        """
        while True:
            gpu = self._find_decision_gpu()
            if gpu >= 0:
                self.decision_gpu = gpu
                return True
            if self._gpu_events and len(self._gpu_events) == self.n_gpus:
                # Every GPU works: nothing can be decided before the first of them finishes, so
                # the arrivals until then are admitted in one go.
                t = self._gpu_events[0][0]
                self._admit_arrivals_before(t)
            else:
                t = self.next_event_time()
                if t == INF:
                    self.decision_gpu = -1
                    return False
            self._advance_to(t)

    def wait(self) -> None:
        """Let the deciding GPU idle until the next event (the WAIT decision).

        Other idle GPUs still get their own decisions at the current time before the clock moves.

        Raises:
            RuntimeError: If no decision is due, or waiting would deadlock (nothing is left to
                happen, see :meth:`can_wait`).
        """
        self._require_decision()
        if not self.can_wait():
            raise RuntimeError(
                "WAIT would deadlock: no request is left to arrive and no GPU is working"
            )
        self._deferred.add(self.decision_gpu)
        self.decision_gpu = -1

    def can_wait(self) -> bool:
        """Whether WAIT is safe: some event (an arrival or the end of GPU work) is still ahead."""
        return self.n_arrived < self.n_requests or bool(self._gpu_events)

    def next_event_time(self) -> float:
        """Time of the next arrival or end of GPU work, ``inf`` if there is none."""
        t = self._arrival[self.n_arrived] if self.n_arrived < self.n_requests else INF
        if self._gpu_events and self._gpu_events[0][0] < t:
            t = self._gpu_events[0][0]
        return t

    def busy_time_s(self, until_s: float | None = None) -> float:
        """Total time all GPUs have worked up to ``until_s`` (default now).

        Work still running counts up to ``until_s``. A caller whose run ends later than this
        server's clock (a routed cluster, whose replicas stop at the next arrival) gives the
        run's end, up to which the running work goes on.
        """
        end = self.now if until_s is None else until_s
        ahead = sequential_sum(
            max(t - end, 0.0) for t, b in zip(self.gpu_free_at, self.gpu_busy) if b
        )
        return sequential_sum(self.busy_s) - ahead

    def mean_batch_size(self) -> float:
        """Mean number of requests per unit of GPU work (batch or iteration)."""
        raise NotImplementedError

    def summary(self, sla: SLATargets | None = None, warmup_s: float = 0.0) -> dict[str, float]:
        """The metrics of the run so far (see :func:`llmsched_env.metrics.summarize`)."""
        return summarize(
            self._metric_columns(),
            end_s=self.now,
            n_gpus=self.n_gpus,
            busy_s=self.busy_time_s(),
            mean_batch_size=self.mean_batch_size(),
            sla=sla or SLATargets(),
            warmup_s=warmup_s,
            **self._run_counts(),
        )

    def _run_counts(self) -> dict[str, int]:
        """Server-wide counts :func:`summarize` reports besides the per-request columns."""
        return {}

    def _metric_columns(self) -> dict[str, np.ndarray]:
        """The per-request columns :func:`summarize` reads (``RequestRecords.columns``)."""
        return self.records.columns(self.n_arrived)

    @property
    def n_in_system(self) -> int:
        """Requests that arrived and are neither completed nor rejected."""
        return self.n_arrived - self.n_completed - self.n_rejected

    @property
    def done(self) -> bool:
        """Whether every request has completed or been rejected."""
        return self.n_completed + self.n_rejected == self.n_requests

    # ------------------------------------------------------------------ helpers for subclasses
    def _require_decision(self) -> int:
        if self.decision_gpu < 0:
            raise RuntimeError("no scheduling decision is due; call advance() first")
        return self.decision_gpu

    def _start_work(self, gpu: int, duration_s: float) -> float:
        """Mark ``gpu`` busy for ``duration_s`` from now and schedule the end of its work."""
        end = self.now + duration_s
        self.gpu_busy[gpu] = True
        self.gpu_free_at[gpu] = end
        self.busy_s[gpu] += duration_s
        heapq.heappush(self._gpu_events, (end, gpu))
        self.decision_gpu = -1
        return end

    def _admit_arrivals_before(self, t: float) -> None:
        """Admit every arrival strictly before ``t`` without stopping the clock at each one.

        The clock stays where it is; the in-system integral is corrected so that each admitted
        request counts only from its own arrival time. A request rejected at arrival never
        enters the system: the next clock move does not count it, so it gets no correction.
        """
        lo = self.n_arrived
        hi = bisect_left(self._arrival, t, lo)
        if hi == lo:
            return
        n_rejected = self.n_rejected
        self._on_arrivals(lo, hi)
        arrivals = self._arrival[lo:hi]
        if self.n_rejected != n_rejected:
            rejected = self.records.reject_reason[lo:hi].tolist()
            arrivals = [a for a, reason in zip(arrivals, rejected) if not reason]
        self.in_system_integral -= math.fsum(arrivals) - len(arrivals) * self.now

    def _advance_to(self, t: float) -> None:
        """Move the clock to ``t`` and process every event due at or before ``t``."""
        self.in_system_integral += self.n_in_system * (t - self.now)
        self.now = t
        self._deferred.clear()
        events = self._gpu_events
        while events and events[0][0] <= t:
            _, gpu = heapq.heappop(events)
            self.gpu_busy[gpu] = False
            self._on_work_done(gpu)
        lo = self.n_arrived
        if lo < self.n_requests and self._arrival[lo] <= t:
            self._on_arrivals(lo, bisect_right(self._arrival, t, lo))
        self._on_time_passed(t)

    def _deadlines_missed_until(
        self,
        t: float,
        deadline: list[float],
        met_s: np.ndarray,
        slot: list[int],
        order: list[int] | None = None,
    ) -> int:
        """Move past the deadlines at or before ``t``; count those that passed unmet.

        ``deadline`` is sorted, so one pointer suffices: position ``k`` is request ``k`` when
        deadlines follow arrival order (one target for every request, ``order`` ``None``), else
        request ``order[k]``. Request ``i`` met its deadline if ``met_s[slot[i]]`` (its
        completion or first-token time) is at or before it; ``nan`` (not yet) counts as
        missed. Requests whose slot is negative (rejected) are skipped: they were counted at
        rejection.
        """
        ptr = self._deadline_ptr
        n = self.n_requests
        missed = 0
        while ptr < n and deadline[ptr] <= t:
            i = slot[ptr if order is None else order[ptr]]
            if i >= 0 and not met_s[i] <= deadline[ptr]:
                missed += 1
            ptr += 1
        self._deadline_ptr = ptr
        return missed

    # ------------------------------------------------------------------ subclass hooks
    def _find_decision_gpu(self) -> int:
        """Return the lowest-index GPU that must decide now, or -1."""
        raise NotImplementedError

    def _on_work_done(self, gpu: int) -> None:
        """Apply the effects of the work that ``gpu`` just finished."""
        raise NotImplementedError

    def _on_arrival(self, index: int) -> None:
        """Admit (or reject) request ``index``, which arrives now."""
        raise NotImplementedError

    def _on_arrivals(self, lo: int, hi: int) -> None:
        """Admit (or reject) requests ``lo .. hi - 1`` in arrival order; they arrive now.

        Sets :attr:`n_arrived` to ``hi``. The default calls :meth:`_on_arrival` for each, with
        ``n_arrived`` counting it; a server may override this to admit them in bulk.
        """
        for index in range(lo, hi):
            self.n_arrived = index + 1
            self._on_arrival(index)

    def _on_time_passed(self, t: float) -> None:
        """Process deadlines that passed at or before ``t``."""


ServerT = TypeVar("ServerT", bound=Server)


def simulate(
    server: ServerT, decide: Callable[[ServerT], None], *, max_decisions: int = -1
) -> ServerT:
    """Run a whole workload with a Python scheduling callback.

    Args:
        server: A freshly built server.
        decide: Called whenever a decision is due; it must make exactly one decision on the server
            (for example ``server.dispatch(...)``, ``server.run_iteration(...)`` or
            ``server.wait()``).
        max_decisions: Stop after this many decisions (negative: no limit); requests then in the
            system stay there and are reported as such.

    Returns:
        The server, with its records complete.

    Raises:
        RuntimeError: If the callback returns without deciding.
    """
    n = 0
    while n != max_decisions and server.advance():
        decide(server)
        if server.decision_gpu >= 0:
            raise RuntimeError("the scheduling callback returned without making a decision")
        n += 1
    return server
