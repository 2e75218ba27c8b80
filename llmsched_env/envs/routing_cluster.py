"""The replicas of ``llmsched/Routing-v0``, each run by its in-replica scheduler, and their sum.

How a replica is driven: the continuous-batching baselines (``baselines.continuous``) decide from
a ``ContinuousBatching-v0`` env, its ``info`` (the deciding GPU's running sequences, its started
prompts, the action mask), its configuration and action codec, and its queries
(``prefill_plan()``, ``queue_snapshot()``, ``joint_action_mask()``). So each replica keeps one
:class:`~llmsched_env.envs.iteration_env.ContinuousBatchingEnv` of one GPU as a *view*: its
``server`` is the replica's :class:`~llmsched_env.sim.replica_server.ReplicaServer`, and the
baseline, built from the view as from any env, sees exactly what it would see in
``ContinuousBatching-v0``. :meth:`Replica.run` is that env's step loop without the env's
episode logic: build the decision's ``info`` and observation (the latter only for a policy
whose ``reads_observation`` is true; no heuristic reads it), ask the policy, carry the action
out (the env's own ``_carry_out``), and advance, until the replica's server stops at the
routing horizon or has nothing left to do. The policy's decisions are therefore the ones it
would take in ``ContinuousBatching-v0``, and with one replica that receives every request the
run is that env's episode, bit for bit.

:class:`Cluster` is the episode's "server" for the env: it routes requests in arrival order,
runs the replicas between arrivals, merges their per-request records and sums their counters
(what the reward shapes and the metrics read). With an in-replica policy that has a compiled
rule and latency models with a compiled timing,
:class:`~llmsched_env.envs.routing_compiled.CompiledCluster` does the same in compiled code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from llmsched_env.envs.iteration_env import ContinuousBatchingEnv
from llmsched_env.envs.iteration_observation import IterationObservation
from llmsched_env.envs.routing_observation import ReplicaLoads, RoutingObservation
from llmsched_env.metrics import SLATargets, summarize
from llmsched_env.sim.records import RequestRecords
from llmsched_env.sim.replica_server import ReplicaServer
from llmsched_env.statistics import sequential_sum
from llmsched_env.workload import Workload

#: Weight of the newest first token in a replica's moving TTFT.
TTFT_SMOOTHING = 0.125


class Replica:
    """One replica: its server, the ``ContinuousBatching-v0`` view and the in-replica policy.

    Args:
        view: A one-GPU ``ContinuousBatchingEnv`` with the replica's latency, KV memory and
            batching settings (never reset: each episode installs a new server in it).
        make_policy: Builds the in-replica policy from the view (``baselines.make_policy``).
    """

    def __init__(self, view: ContinuousBatchingEnv, make_policy: Callable[[Any], Any]) -> None:
        self.view = view
        self.policy = make_policy(view)
        self.server: ReplicaServer | None = None
        self._decisions = 0
        self._counts: tuple[np.ndarray, int] | None = None

    @property
    def decisions(self) -> int:
        """In-replica decisions of this episode so far."""
        if self._counts is not None:
            counts, index = self._counts
            return int(counts[index])
        return self._decisions

    def count_decisions_in(self, counts: np.ndarray, index: int) -> None:
        """Read :attr:`decisions` from ``counts[index]`` (a compiled cluster counts them)."""
        self._counts = (counts, index)

    def start(
        self,
        workload: Workload,
        index: int,
        routed_to: list[int] | None,
        rng: np.random.Generator,
        server_class: type[ReplicaServer] | Any = ReplicaServer,
    ) -> ReplicaServer:
        """Install a new server for ``workload`` in the view and reset the policy.

        ``server_class`` is :class:`ReplicaServer` or
        :class:`~llmsched_env.sim.compiled_replica_server.CompiledReplicaServer` (for a
        compiled cluster, which keeps the routing itself: ``routed_to`` is then ``None``).
        """
        view = self.view
        cfg = view.config
        server = server_class(
            workload,
            replica=index,
            routed_to=routed_to,
            latency=view.latency,
            kv_capacity_tokens=view.kv_capacity_tokens,
            max_tokens=cfg.max_tokens,
            max_sequences=cfg.max_sequences,
            rng=rng,
            chunk_size=cfg.chunk_size,
            ttft_deadline_s=cfg.ttft_sla,
            ttft_per_token_s=cfg.ttft_sla_per_token,
            tbt_target_s=cfg.tbt_sla,
            kv_allocation=cfg.kv_allocation,
            kv_block_tokens=cfg.kv_block_tokens,
            prefix_caching=cfg.prefix_caching,
        )
        view.server = server
        view._observer = IterationObservation(
            server,
            ttft_sla_s=cfg.ttft_sla,
            tbt_sla_s=cfg.tbt_sla,
            length_scale_tokens=view.length_scale_tokens,
            capacity_rps=view.capacity_rps,
        )
        view._episode_over = False
        view._steps = 0
        self.server = server
        self._decisions = 0
        self._counts = None
        self.policy.reset()
        return server

    def run(self) -> None:
        """Make the replica's decisions until it reaches the routing horizon or the end."""
        view, server, policy = self.view, self.server, self.policy
        # A policy that decides from info alone (every heuristic) gets no observation: building
        # one is a tenth of a routing step and changes nothing the policy does.
        observes = getattr(policy, "reads_observation", True)
        invalid, applied = False, None
        while server.advance():
            info = view._info(invalid=invalid, applied=applied)
            view.last_info = info
            obs = view._observe() if observes else None
            invalid, applied = view._carry_out(policy.act(obs, info))
            self._decisions += 1


class Cluster:
    """The replicas of one episode, seen by the env as one server.

    Requests are routed in arrival order: :meth:`advance` runs every replica up to the next
    arrival and stops there when some replica can admit it (a decision); a request that no
    replica can admit is sent to replica 0 without a decision and rejected there, with its
    reason. :meth:`route_and_advance` sends the decided request to a replica and runs on.

    Args:
        workload: The episode's requests.
        replicas: The replicas, each already :meth:`Replica.start`-ed on ``workload`` with
            ``routed_to``.
        routed_to: The routing list the replicas share (all ``-1``).

    Attributes:
        now: Time of the current decision (the request's arrival); at the end, the latest
            replica clock.
        request: Index of the request to route, -1 when none is due.
        mask: Per replica, whether it can admit :attr:`request`.
        n_routed: Requests routed so far (including those rejected without a decision).
        pending: Per replica, requests routed to it that its clock has not reached yet.
    """

    def __init__(self, workload: Workload, replicas: list[Replica], routed_to: list[int]) -> None:
        self.workload = workload
        self.replicas = replicas
        self.servers = [r.server for r in replicas]
        self.routed_to = routed_to
        self.n_requests = len(workload)
        self.n_gpus = len(replicas)
        self._arrival = workload.arrival_s.tolist()
        self._prompt = workload.prompt_tokens.tolist()
        self._predicted = workload.predicted_output_tokens.tolist()
        self.now = 0.0
        self.request = -1
        self.mask = [False] * self.n_gpus
        self.n_routed = 0
        self.n_rejected_undecided = 0
        self.pending: list[deque[int]] = [deque() for _ in replicas]
        self.pending_tokens = [0] * self.n_gpus
        self.pending_work = [0] * self.n_gpus
        self._awaiting_first: list[deque[int]] = [deque() for _ in replicas]
        self.recent_ttft_s = [0.0] * self.n_gpus

    # ------------------------------------------------------------------ the decision loop
    def advance(self) -> bool:
        """Run the replicas to the next request some replica can admit.

        Returns:
            ``True`` when a routing decision is due, ``False`` when every request is routed and
            every replica has finished.
        """
        servers = self.servers
        while self.n_routed < self.n_requests:
            i = self.n_routed
            for replica in self.replicas:
                replica.run()
            self.now = self._arrival[i]
            for server in servers:
                server.pass_deadlines_before(self.now)
            mask = [s.admissible(i) for s in servers]
            if any(mask):
                self.request = i
                self.mask = mask
                self._update_views()
                return True
            self.n_rejected_undecided += 1
            self._route(0, i)
        for replica in self.replicas:
            replica.run()
        self.request = -1
        self.mask = [False] * self.n_gpus
        self.now = max(s.now for s in servers)
        self._update_views()
        return False

    def _route(self, replica: int, index: int | None = None) -> None:
        """Send request ``index`` (default: the decided one) to ``replica``."""
        i = self.request if index is None else index
        self.routed_to[i] = replica
        for r, server in enumerate(self.servers):
            if r == replica:
                server.assign(i)
            else:
                server.mark_elsewhere(i)
            server.known = i + 1
        self.n_routed = i + 1
        self.request = -1
        if not self.servers[replica].admissible(i):
            return  # rejected at its arrival there: never queued work (a request no replica fits)
        self.pending[replica].append(i)
        self.pending_tokens[replica] += self._prompt[i]
        self.pending_work[replica] += self._prompt[i] + self._predicted[i]
        self._awaiting_first[replica].append(i)

    def route_and_advance(self, replica: int) -> bool:
        """Send the decided request to ``replica``, then :meth:`advance`."""
        self._route(replica)
        return self.advance()

    def loads(self) -> ReplicaLoads:
        """The replicas' loads at this decision (:meth:`ReplicaLoads.measure`)."""
        return ReplicaLoads.measure(self)

    def observation(
        self, builder: RoutingObservation, loads: ReplicaLoads, request: int
    ) -> np.ndarray:
        """The observation of routing ``request`` (-1: none) with the replicas at ``loads``."""
        w = self.workload
        prompt = int(w.prompt_tokens[request]) if request >= 0 else 0
        predicted = int(w.predicted_output_tokens[request]) if request >= 0 else 0
        return builder.build(loads, prompt, predicted, self.n_arrived / self.n_requests)

    def replica_decisions(self) -> np.ndarray:
        """In-replica decisions so far, per replica (a new array)."""
        return np.array([r.decisions for r in self.replicas])

    def _update_views(self) -> None:
        """Drop requests the replicas' clocks have reached from ``pending``; update the TTFTs."""
        prompt, predicted = self._prompt, self._predicted
        now = self.now
        for r, server in enumerate(self.servers):
            pending = self.pending[r]
            while pending and pending[0] < server.n_arrived:
                i = pending.popleft()
                self.pending_tokens[r] -= prompt[i]
                self.pending_work[r] -= prompt[i] + predicted[i]
            awaiting = self._awaiting_first[r]
            first = server.first_token_s
            while awaiting and first[awaiting[0]] <= now:
                i = awaiting.popleft()
                ttft = first[i] - self._arrival[i]
                self.recent_ttft_s[r] += TTFT_SMOOTHING * (ttft - self.recent_ttft_s[r])

    # ------------------------------------------------------------------ counters (rewards)
    @property
    def n_on_time(self) -> int:
        """Requests that met both targets, all replicas."""
        return sum(s.n_on_time for s in self.servers)

    @property
    def on_time_output_tokens(self) -> int:
        """Output tokens of on-time requests, all replicas."""
        return sum(s.on_time_output_tokens for s in self.servers)

    @property
    def in_system_integral(self) -> float:
        """Request-seconds in the system, all replicas (each up to its own clock)."""
        return sequential_sum(s.in_system_integral for s in self.servers)

    @property
    def sla_misses(self) -> int:
        """TTFT misses (rejections included) plus TBT misses, all replicas."""
        return sum(s.sla_misses for s in self.servers)

    @property
    def n_preemptions(self) -> int:
        """Preemptions, all replicas."""
        return sum(s.n_preemptions for s in self.servers)

    @property
    def prefix_hit_tokens(self) -> int:
        """Tokens admissions skipped because their blocks were cached, all replicas."""
        return sum(s.prefix_hit_tokens for s in self.servers)

    @property
    def n_completed(self) -> int:
        """Completed requests, all replicas."""
        return sum(s.n_completed for s in self.servers)

    @property
    def n_rejected(self) -> int:
        """Rejected requests, all replicas."""
        return sum(s.n_rejected for s in self.servers)

    @property
    def n_ttft_misses(self) -> int:
        """TTFT misses, all replicas."""
        return sum(s.n_ttft_misses for s in self.servers)

    @property
    def n_tbt_misses(self) -> int:
        """TBT misses, all replicas."""
        return sum(s.n_tbt_misses for s in self.servers)

    @property
    def n_arrived(self) -> int:
        """Requests arrived: those routed, and the one to route (it arrives now)."""
        return self.n_routed + (self.request >= 0)

    @property
    def n_in_system(self) -> int:
        """Requests arrived and neither completed nor rejected (the one to route included)."""
        return self.n_arrived - self.n_completed - self.n_rejected

    # ------------------------------------------------------------------ records and metrics
    @property
    def records(self) -> RequestRecords:
        """Per-request records, each row from the replica the request went to.

        ``gpu`` is the replica index (-1 until the request starts).
        """
        merged = RequestRecords(self.workload)
        routed = np.asarray(self.routed_to)
        for r, server in enumerate(self.servers):
            rows = routed == r
            if not rows.any():
                continue
            records = server.records
            for name, values in vars(records).items():
                if isinstance(values, np.ndarray) and name != "gpu":
                    getattr(merged, name)[rows] = values[rows]
            merged.gpu[rows] = np.where(records.gpu[rows] >= 0, r, -1)
        return merged

    def summary(self, sla: SLATargets | None = None, warmup_s: float = 0.0) -> dict[str, float]:
        """Metrics of the episode so far over all replicas (:func:`summarize`)."""
        servers = self.servers
        iterations = sum(s.n_iterations for s in servers)
        sequences = sum(s.sequences_processed for s in servers)
        counts = {
            key: sum(s._run_counts()[key] for s in servers) for key in servers[0]._run_counts()
        }
        return summarize(
            self.records.columns(self.n_arrived),
            end_s=self.now,
            n_gpus=self.n_gpus,
            # Up to the end of the run: a truncated episode's replicas stop their clocks at
            # their last event, but their GPUs keep working up to the arrival being routed.
            busy_s=sequential_sum(s.busy_time_s(self.now) for s in servers),
            mean_batch_size=sequences / iterations if iterations else float("nan"),
            sla=sla or SLATargets(),
            warmup_s=warmup_s,
            **counts,
        )
