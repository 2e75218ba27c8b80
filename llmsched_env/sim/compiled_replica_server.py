"""One replica of a routed cluster, its state in arrays and its loop compiled.

:class:`CompiledReplicaServer` is :class:`~llmsched_env.sim.replica_server.ReplicaServer` (an
iteration-level server of one GPU that serves only the requests routed to it and stops its
event loop at the routing horizon; its docstring states the rules) on the state of
:class:`~llmsched_env.sim.compiled_iteration_server.CompiledIterationServer`, so that a whole
routing step can run compiled (:mod:`llmsched_env.envs.routing_step`). Both give the same
episode bit for bit; the tests play them side by side.

In the state, a replica differs from a server of its own by a few fields
(:mod:`llmsched_env.sim.iteration_state`): ``horizon`` (requests routed so far), ``blocked``,
``n_elsewhere``, ``n_assigned``; ``queue_order`` and its prefix sums start empty and are filled
as requests are routed here (``queue_filled``); a request routed elsewhere has a negative
``rejection`` (:data:`~llmsched_env.sim.iteration_kernels.ELSEWHERE`), and ``later_due_s`` holds,
per request, the earliest TTFT deadline of it and the requests after it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmsched_env.sim import iteration_kernels as k
from llmsched_env.sim.compiled_iteration_server import CompiledIterationServer
from llmsched_env.sim.prefix_kernels import longest_hit
from llmsched_env.sim.replica_server import RoutedCounts


class CompiledReplicaServer(RoutedCounts, CompiledIterationServer):
    """A compiled iteration-level server that serves the requests routed to it (one GPU).

    Args:
        replica: This replica's index in the cluster.
        routed_to: Unused: :class:`ReplicaServer`'s signature, so that ``Replica.start`` builds
            either; the state records what the replica needs of the routing (assign,
            mark_elsewhere).
        **kwargs: The :class:`CompiledIterationServer` arguments (``n_gpus`` is 1).

    The attributes and methods are those of :class:`ReplicaServer`.
    """

    ROUTED = True

    def __init__(
        self, workload: Any, *, replica: int, routed_to: list[int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(workload, n_gpus=1, **kwargs)
        self.replica = replica

    # ------------------------------------------------------------------ routing
    @property
    def known(self) -> int:
        """Requests routed so far (a prefix of the arrival order); later arrivals wait."""
        return int(self.state.horizon[0])

    @known.setter
    def known(self, value: int) -> None:
        self.state.horizon[0] = value

    blocked = property(
        lambda self: bool(self.state.blocked[0]),
        doc="Whether the latest advance() stopped at the horizon.",
    )
    n_elsewhere = property(
        lambda self: int(self.state.n_elsewhere[0]), doc="Arrivals routed to other replicas."
    )
    n_assigned = property(
        lambda self: int(self.state.n_assigned[0]), doc="Requests routed to this replica."
    )

    def _own_rejection(self, index: int) -> int:
        code = int(self.state.rejection[index])
        return code if code >= 0 else k.ELSEWHERE - code

    def admissible(self, index: int) -> bool:
        """Whether request ``index`` fits this replica (else it would be rejected here)."""
        return self._own_rejection(index) == 0

    def reject_reason_of(self, index: int) -> int:
        """The :class:`RejectReason` code this replica would give request ``index``."""
        return self._own_rejection(index)

    def assign(self, index: int) -> None:
        """Take request ``index`` (the next one in arrival order, routed here) into the queue."""
        k.assign(*self.buffers, index)

    def mark_elsewhere(self, index: int) -> None:
        """Note that request ``index`` (the next one in arrival order) went to another replica."""
        k.mark_elsewhere(*self.buffers, index)

    def pass_deadlines_before(self, horizon: float) -> None:
        """Count the TTFT deadlines before ``horizon`` that pass unmet, the clock left alone."""
        k.pass_deadlines_before(*self.buffers, float(horizon))

    # ------------------------------------------------------------------ the queue's columns
    @property
    def queue_order(self) -> np.ndarray:
        """The requests routed here that it can admit, in arrival order (read-only view)."""
        values = self.state.queue_order[: self.state.queue_filled[0]]
        values.flags.writeable = False
        return values

    @property
    def queue_arrival_s(self) -> np.ndarray:
        """Arrival time of each entry of :attr:`queue_order` (a new read-only array)."""
        values = self.state.arrival_s[self.queue_order]
        values.flags.writeable = False
        return values

    @property
    def queue_prompt_tokens(self) -> np.ndarray:
        """Prompt tokens of each entry of :attr:`queue_order` (a new read-only array)."""
        values = self.state.prompt[self.queue_order]
        values.flags.writeable = False
        return values

    # ------------------------------------------------------------------ load, for routers
    @property
    def first_token_s(self) -> np.ndarray:
        """Per request, when its first token came (``nan``: not yet, or not served here)."""
        return self.state.first_token_s

    def waiting_work_tokens(self) -> int:
        """Prompt plus predicted output tokens of the waiting requests that arrived here."""
        s = self.state
        c = s.queue_work_cumsum
        requeued = s.requeue[: s.n_requeued[0]]
        return int(
            c[s.queue_tail[0]]
            - c[s.queue_head[0]]
            + (s.prompt[requeued] + s.predicted[requeued]).sum()
        )

    def running_work_tokens(self) -> int:
        """Prompt plus predicted output tokens of the requests on the GPU (started or decoding)."""
        s = self.state
        started = s.prefilling_id[: s.n_prefilling[0]]
        return int(
            s.running_prompt[0]
            + s.running_predicted[0]
            + (s.prompt[started] + s.predicted[started]).sum()
        )

    def cached_prefix_tokens(self, index: int) -> int:
        """Tokens of request ``index``'s prompt whose KV blocks this replica has cached now."""
        if not self.prefix_caching:
            return 0
        s = self.state
        hits, _ = longest_hit(s.now, s.pool, s.pool_layout, 0, index, s.target[index])
        return int(hits) * self.kv_block_tokens
