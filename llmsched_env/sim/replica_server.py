"""One replica of a routed cluster: an iteration-level server that serves only its requests.

A router sends each arriving request to one of R replicas (``llmsched/Routing-v0``). Every
replica is an :class:`~llmsched_env.sim.iteration_server.IterationServer` over the *whole*
episode's workload, with two changes, so that its dynamics are exactly those of the server:

* **Routed requests only.** The replica's waiting queue (``queue_order`` and its columns) starts
  empty and grows as :meth:`ReplicaServer.assign` appends the requests routed to it, in arrival
  order. A request routed elsewhere still "arrives" at its time (the clock stops there, as at
  any event, and the replica's GPUs that waited decide again), but it never enters the
  replica: it is counted in :attr:`ReplicaServer.n_elsewhere`, is not in the system, and its
  TTFT deadline is not the replica's.
* **A horizon.** The router decides at each arrival, so a replica may not process an arrival
  before it is routed. :meth:`ReplicaServer.advance` is the engine's decision loop that stops
  (returning ``False`` with :attr:`ReplicaServer.blocked` set) as soon as its next step would
  process an arrival beyond :attr:`ReplicaServer.known`; after more requests are routed, the
  next call resumes exactly where it stopped (stopping has no side effect). With every request
  routed to one replica the replica runs the same operations, in the same order, as an
  ``IterationServer`` with that workload, so its records are the same bit for bit.

Indices stay global (a request's index in the episode's arrival order), so per-request arrays are
shared with the episode's workload and the cluster's records are read row by row from the
replica each request went to.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

import numpy as np

from llmsched_env.sim.engine import INF
from llmsched_env.sim.iteration_server import IterationServer
from llmsched_env.sim.records import RejectReason


class RoutedCounts:
    """The counts of a replica that serves only the requests routed to it.

    Shared by :class:`ReplicaServer` and
    :class:`~llmsched_env.sim.compiled_replica_server.CompiledReplicaServer`, which keep
    ``n_arrived``, ``n_completed``, ``n_rejected``, ``n_elsewhere`` and ``n_assigned``.
    """

    @property
    def n_in_system(self) -> int:
        """Requests routed here that arrived and are neither completed nor rejected."""
        return self.n_arrived - self.n_completed - self.n_rejected - self.n_elsewhere

    @property
    def done(self) -> bool:
        """Whether every request routed here so far has completed or been rejected."""
        return self.n_completed + self.n_rejected == self.n_assigned


class ReplicaServer(RoutedCounts, IterationServer):
    """An iteration-level server that serves the requests routed to it (one GPU per replica).

    Args:
        replica: This replica's index in the cluster.
        routed_to: The cluster's routing so far, shared by every replica: for request ``i``
            already routed, the replica it went to (entries from :attr:`known` on are unread).
        **kwargs: The :class:`IterationServer` arguments (``n_gpus`` is 1).

    Attributes:
        known: Requests routed so far (a prefix of the arrival order); arrivals from this index
            on are not processed.
        blocked: Whether the latest :meth:`advance` stopped at the horizon (the next arrival
            is not routed yet) rather than at a decision or the end.
        n_elsewhere: Arrivals routed to other replicas so far.
        n_assigned: Requests routed to this replica so far.
    """

    def __init__(self, workload: Any, *, replica: int, routed_to: list[int], **kwargs: Any) -> None:
        super().__init__(workload, n_gpus=1, **kwargs)
        self.replica = replica
        self._routed_to = routed_to
        n = len(workload)
        self.known = 0
        self.blocked = False
        self.n_elsewhere = 0
        self.n_assigned = 0
        # The waiting queue's columns are filled as requests are routed here (buffers of the
        # episode's size, read-only between appends, so that views of them stay read-only).
        self.queue_order = np.zeros(n, dtype=np.int64)
        self.queue_arrival_s = np.zeros(n)
        self.queue_prompt_tokens = np.zeros(n, dtype=self.queue_prompt_tokens.dtype)
        for values in (self.queue_order, self.queue_arrival_s, self.queue_prompt_tokens):
            values.flags.writeable = False
        self._queue_list = []
        self._queue_prompt_cumsum = [0]
        #: Cumulative prompt plus predicted output tokens of ``queue_order`` (waiting work).
        self._queue_work_cumsum = [0]
        #: Per request, the earliest TTFT deadline of it and the requests after it (made when
        #: first needed; see pass_deadlines_before).
        self._unrouted_due: list[float] | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled or deep-copied replica whose queue columns can still grow.

        :meth:`assign` makes the columns writable to append; an unpickled array may be a view
        of the pickle's bytes, which can never be made writable, so each column is copied.
        """
        for name in ("queue_order", "queue_arrival_s", "queue_prompt_tokens"):
            state[name] = np.array(state[name])
        super().__setstate__(state)

    # ------------------------------------------------------------------ routing
    def admissible(self, index: int) -> bool:
        """Whether request ``index`` fits this replica (else it would be rejected here)."""
        return self._admissible[index]

    def reject_reason_of(self, index: int) -> int:
        """The :class:`RejectReason` code this replica would give request ``index``."""
        return int(self._reject_reason[index])

    def assign(self, index: int) -> None:
        """Take request ``index`` (the next one in arrival order, routed here) into the queue.

        The caller must have set ``routed_to[index]`` to this replica and must route requests
        in arrival order; the request joins the queue when the replica reaches its arrival.
        """
        self.n_assigned += 1
        if not self._admissible[index]:
            return
        k = len(self._queue_list)
        prompt = self._prompt[index]
        for values, value in (
            (self.queue_order, index),
            (self.queue_arrival_s, self._arrival[index]),
            (self.queue_prompt_tokens, prompt),
        ):
            values.flags.writeable = True
            values[k] = value
            values.flags.writeable = False
        self._queue_list.append(index)
        self._queue_prompt_cumsum.append(self._queue_prompt_cumsum[-1] + prompt)
        self._queue_work_cumsum.append(
            self._queue_work_cumsum[-1] + prompt + self._predicted[index]
        )

    def mark_elsewhere(self, index: int) -> None:
        """Note that request ``index`` went to another replica: its deadline is not ours.

        The keys of its blocks, memoised when the router asked for its cached prefix here,
        are dropped: it never comes here.
        """
        self._deadline_slot[index] = -1
        self._shared_keys.pop(index, None)

    # ------------------------------------------------------------------ engine hooks
    def advance(self) -> bool:
        """The engine's decision loop, stopping before an arrival that is not routed yet.

        Returns:
            ``True`` when a decision is due; ``False`` when the replica is :attr:`blocked` at
            the horizon or nothing is left to happen.
        """
        arrival = self._arrival
        n = self.n_requests
        while True:
            gpu = self._find_decision_gpu()
            if gpu >= 0:
                self.decision_gpu = gpu
                self.blocked = False
                return True
            known = self.known
            if self._gpu_events and len(self._gpu_events) == self.n_gpus:
                t = self._gpu_events[0][0]
                # An arrival at t itself is processed at t (after the GPU's work), so it too
                # must be routed first.
                if known < n and arrival[known] <= t:
                    return self._block()
                self._admit_arrivals_before(t)
            else:
                t = self.next_event_time()
                if known < n and arrival[known] <= t:
                    return self._block()
                if t == INF:
                    self.decision_gpu = -1
                    self.blocked = False
                    return False
            self._advance_to(t)

    def _block(self) -> bool:
        self.decision_gpu = -1
        self.blocked = True
        return False

    def pass_deadlines_before(self, horizon: float) -> None:
        """Count the TTFT deadlines before ``horizon`` that pass unmet, without moving the clock.

        For a replica stopped at the routing horizon (or finished): nothing happens in it
        before the horizon, the next arrival, so a request with no first token now misses
        every deadline before it, and the routing step that ran up to the horizon is the one
        that pays the miss, as ``ContinuousBatching-v0`` pays it when its clock passes the
        deadline. A deadline at the horizon itself is passed too, unless an iteration ends
        exactly then (which can still meet it) or a request not yet routed is due then: it
        waits for the clock.
        """
        deadline = self._ttft_deadline
        if deadline is None:
            return
        events = self._gpu_events
        through = not (events and events[0][0] <= horizon)
        if through and self.known < self.n_requests:
            # A request not routed yet is due at or after its arrival, the horizon, but a
            # target below the arrival's resolution can make it due exactly then: not passed.
            if self._unrouted_due is None:
                self._unrouted_due = np.minimum.accumulate(deadline[::-1])[::-1].tolist()
            through = self._unrouted_due[self.known] > horizon
        self._on_time_passed(horizon if through else math.nextafter(horizon, -math.inf))

    def _on_arrival(self, index: int) -> None:
        if self._routed_to[index] != self.replica:
            self.n_elsewhere += 1
            return
        super()._on_arrival(index)

    def _admit_arrivals_before(self, t: float) -> None:
        """As the engine's, but requests routed elsewhere never enter the in-system integral."""
        lo = self.n_arrived
        hi = bisect_left(self._arrival, t, lo)
        if hi == lo:
            return
        routed = self._routed_to
        me = self.replica
        if all(routed[i] == me for i in range(lo, hi)):
            super()._admit_arrivals_before(t)
            return
        self._on_arrivals(lo, hi)
        reasons = self._records.reject_reason
        arrivals = [
            self._arrival[i]
            for i in range(lo, hi)
            if routed[i] == me and reasons[i] == RejectReason.NONE
        ]
        self.in_system_integral -= math.fsum(arrivals) - len(arrivals) * self.now

    # ------------------------------------------------------------------ load, for routers
    @property
    def first_token_s(self) -> np.ndarray:
        """Per request, when its first token came (``nan``: not yet, or not served here)."""
        return self._records.first_token_s

    def waiting_work_tokens(self) -> int:
        """Prompt plus predicted output tokens of the waiting requests that arrived here."""
        c = self._queue_work_cumsum
        prompt, predicted = self._prompt, self._predicted
        return (
            c[self.queue_tail]
            - c[self.queue_head]
            + sum(prompt[i] + predicted[i] for i in self.requeued)
        )

    def running_work_tokens(self) -> int:
        """Prompt plus predicted output tokens of the requests on the GPU (started or decoding)."""
        prompt, predicted = self._prompt, self._predicted
        started = sum(prompt[i] + predicted[i] for i in self.prefilling[0])
        return self.running_prompt_tokens[0] + self.running_predicted_tokens[0] + started

    def cached_prefix_tokens(self, index: int) -> int:
        """Tokens of request ``index``'s prompt whose KV blocks this replica has cached now.

        The longest cached block-aligned prefix (at most all but the prompt's last token, as an
        admission would use it); 0 without prefix caching. A query: nothing changes.
        """
        if not self.prefix_caching:
            return 0
        hits, _ = self._cache_hits(0, index)
        return len(hits) * self.kv_block_tokens
