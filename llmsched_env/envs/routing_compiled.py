"""The replicas of ``llmsched/Routing-v0`` stepped compiled, as one "server" for the env.

:class:`CompiledCluster` is :class:`~llmsched_env.envs.routing_cluster.Cluster` for replicas
whose in-replica scheduler has a compiled rule (``vllm-v1``, ``sarathi``) and whose latency
models have a compiled timing: its replicas are
:class:`~llmsched_env.sim.compiled_replica_server.CompiledReplicaServer` states, and a routing
step (the route, every replica's decisions up to the next arrival, the loads, the observation
and the reward's counters) is one call of
:func:`~llmsched_env.envs.routing_step.route_and_advance`. It gives the same episode as
``Cluster`` with the Python replicas, bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba.typed import List

from llmsched_env.envs.iteration_step import codec_array
from llmsched_env.envs.routing_cluster import Cluster, Replica
from llmsched_env.envs.routing_observation import ReplicaLoads, RoutingObservation
from llmsched_env.envs.routing_step import (
    FLOAT_LOADS,
    INT_LOADS,
    SCALAR_FLOATS,
    SCALAR_INTS,
    SCHEMA,
    advance_cluster,
    route_and_advance,
)
from llmsched_env.jit import implementation
from llmsched_env.latency.iteration_timing import CompiledTiming
from llmsched_env.sim import iteration_kernels as k
from llmsched_env.sim.compiled_replica_server import CompiledReplicaServer
from llmsched_env.workload import Workload

#: In-replica policies (``ContinuousBatching-v0`` baselines) whose rule the compiled step
#: applies: decode every running sequence, prefill the whole budget left, no prompt cap.
COMPILED_RULES = ("vllm-v1", "sarathi")


def _pack(arrays: list[np.ndarray], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """The arrays concatenated, and the offsets of each (``len(arrays) + 1`` entries)."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([a.size for a in arrays])
    packed = np.zeros(int(offsets[-1]), dtype=dtype)
    for a, lo, hi in zip(arrays, offsets[:-1], offsets[1:]):
        packed[lo:hi] = a
    return packed, offsets


def pack_tables(timings: list[CompiledTiming]) -> tuple[np.ndarray, ...]:
    """The replicas' compiled latency tables as :func:`route_and_advance` takes them.

    ``(floats, ints, offsets, layouts)``: the tables' floats and ints concatenated, their
    offsets (``offsets[0]`` and ``offsets[1]``, one more than the replicas), and the layouts
    stacked, zero-padded to the longest (a timing without tables has an empty layout).
    """
    floats, float_offsets = _pack([t.tables[0] for t in timings], np.float64)
    ints, int_offsets = _pack([t.tables[1] for t in timings], np.int64)
    layouts = np.zeros((len(timings), max(t.tables[2].size for t in timings)), dtype=np.int64)
    for r, t in enumerate(timings):
        layouts[r, : t.tables[2].size] = t.tables[2]
    return floats, ints, np.stack([float_offsets, int_offsets]), layouts


class CompiledCluster(Cluster):
    """The replicas of one episode, stepped compiled (see the module docstring).

    Args:
        workload: The episode's requests.
        replicas: The replicas, each :meth:`Replica.start`-ed on ``workload`` with
            ``server_class=CompiledReplicaServer``.
        tables: The replicas' latency tables, packed (:func:`pack_tables`).
        obs_params: ``[ttft_sla_s, tbt_sla_s, length_scale_tokens, max_tokens, max_sequences]``.
        low: The observation's lower bounds (float32).
        high: Its upper bounds.

    It offers :class:`Cluster`'s counters, records, summary, loads and masks, read from the
    compiled state after each call; it routes and advances in one call
    (:meth:`route_and_advance`), and keeps the requests
    pending at each replica in the compiled state (no ``pending`` deques).
    """

    # The scalars of the compiled state, read once after each call (:meth:`_read_scalars`).
    now = 0.0
    in_system_integral = 0.0
    request = -1
    n_routed = 0
    n_rejected_undecided = 0
    n_on_time = 0
    on_time_output_tokens = 0
    n_ttft_misses = 0
    n_tbt_misses = 0
    n_completed = 0
    n_rejected = 0
    n_preemptions = 0
    prefix_hit_tokens = 0

    def __init__(
        self,
        workload: Workload,
        replicas: list[Replica],
        tables: tuple[np.ndarray, ...],
        obs_params: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
    ) -> None:
        self.workload = workload
        self.replicas = replicas
        self.servers: list[CompiledReplicaServer] = [r.server for r in replicas]
        self.n_requests = n = len(workload)
        self.n_gpus = n_replicas = len(replicas)
        servers = self.servers
        self.replica_buffers = _typed_buffers(servers)
        self.tables = tables
        view = replicas[0].view
        self.codec = codec_array(view.action_codec)
        self.answers = np.zeros(3 + int(self.codec[1]) - 1, dtype=np.int64)
        self.buffers = SCHEMA.allocate(
            n=n,
            n_replicas=n_replicas,
            n_obs=low.size,
            n_int_loads=len(INT_LOADS) * n_replicas,
            n_float_loads=len(FLOAT_LOADS) * n_replicas,
        )
        c = self.state = SCHEMA.views(*self.buffers)
        c.obs_params[:] = obs_params
        c.kv_capacity[:] = [s.kv_capacity_tokens for s in servers]
        c.low[:] = low
        c.high[:] = high
        c.request[0] = -1
        c.prefix_caching[0] = servers[0].prefix_caching
        c.block_tokens[0] = servers[0].kv_block_tokens
        c.routed_to[:] = -1
        c.next_routed[:] = -1
        c.last_routed[:] = -1
        c.pending_head[:] = -1
        c.awaiting_head[:] = -1
        for r, replica in enumerate(replicas):
            replica.count_decisions_in(c.decisions, r)
        self._look_up()
        self._read_scalars()

    def _read_scalars(self) -> None:
        """Copy the compiled state's scalars into attributes (one read per call, not per use)."""
        (
            self.request,
            self.n_routed,
            self.n_rejected_undecided,
            self.n_on_time,
            self.on_time_output_tokens,
            self.n_ttft_misses,
            self.n_tbt_misses,
            self.n_completed,
            self.n_rejected,
            self.n_preemptions,
            self.prefix_hit_tokens,
        ) = self._scalar_ints.tolist()
        self.now, self.in_system_integral = self._scalar_floats.tolist()

    def _arguments(self) -> tuple:
        return (
            *self.buffers,
            self.replica_buffers,
            self.tables,
            self.codec,
            self.answers,
        )

    def _look_up(self) -> None:
        """The kernels' implementations for this episode's arrays (no dispatcher per call)."""
        floats, ints, _ = self.buffers
        self._scalar_ints = ints[: len(SCALAR_INTS)]
        self._scalar_floats = floats[: len(SCALAR_FLOATS)]
        c = self.state
        self._int_loads = c.int_loads.reshape(len(INT_LOADS), self.n_gpus)
        self._float_loads = c.float_loads.reshape(len(FLOAT_LOADS), self.n_gpus)
        self._args = arguments = self._arguments()
        self._advance = implementation(advance_cluster, *arguments)
        self._route_and_advance = implementation(route_and_advance, 0, *arguments)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("state", "replica_buffers", "_args", "_advance", "_route_and_advance",
                     "_scalar_ints", "_scalar_floats", "_int_loads", "_float_loads"):  # fmt: skip
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled or deep-copied cluster on its own (copied) buffers."""
        self.__dict__.update(state)
        self.state = SCHEMA.views(*self.buffers)
        self.replica_buffers = _typed_buffers(self.servers)
        for r, replica in enumerate(self.replicas):
            replica.count_decisions_in(self.state.decisions, r)
        self._look_up()

    # ------------------------------------------------------------------ the decision loop
    def advance(self) -> bool:
        """Run the replicas to the next request some replica can admit (``Cluster.advance``)."""
        code, replica, due = self._advance(*self._args)
        self._refuse(code, replica)
        self._read_scalars()
        return due

    def route_and_advance(self, replica: int) -> bool:
        """Send the decided request to ``replica``, then :meth:`advance`.

        Raises:
            IndexError: If ``replica`` is not a replica index (the kernels check no bounds).
            RuntimeError: If no routing decision is due.
        """
        if not 0 <= replica < self.n_gpus:
            raise IndexError(f"replica {replica!r} is out of range for {self.n_gpus} replicas")
        if self.request < 0:
            raise RuntimeError("no routing decision is due")
        code, failed, due = self._route_and_advance(replica, *self._args)
        self._refuse(code, failed)
        self._read_scalars()
        return due

    def _refuse(self, code: int, replica: int) -> None:
        if code != k.DONE:
            self.servers[replica].raise_refusal(code)

    # ------------------------------------------------------------------ what the env reads
    @property
    def routed_to(self) -> np.ndarray:
        """The replica each routed request went to (-1: not yet; a read-only view)."""
        values = self.state.routed_to.view()
        values.flags.writeable = False
        return values

    @property
    def mask(self) -> np.ndarray:
        """Per replica, whether it can admit :attr:`request` (a new bool array)."""
        return self.state.mask != 0

    @property
    def recent_ttft_s(self) -> list[float]:
        """Per replica, the moving TTFT of its requests."""
        return self.state.float_loads[: self.n_gpus].tolist()

    def loads(self) -> ReplicaLoads:
        """The replicas' loads at this decision (new arrays)."""
        return ReplicaLoads(*self._int_loads.copy(), *self._float_loads.copy())

    def observation(
        self, builder: RoutingObservation, loads: ReplicaLoads, request: int
    ) -> np.ndarray:
        """The observation of routing ``request`` (float32, a new array).

        For the decided request it is the one the compiled step made; another (none, at a
        truncation) is built in Python.
        """
        if request == self.request:
            return self.state.obs.astype(np.float32)
        return super().observation(builder, loads, request)

    def replica_decisions(self) -> np.ndarray:
        """In-replica decisions so far, per replica (a new array)."""
        return self.state.decisions.copy()

    @property
    def sla_misses(self) -> int:
        """TTFT misses (rejections included) plus TBT misses, all replicas."""
        return self.n_ttft_misses + self.n_tbt_misses


def _typed_buffers(servers: list[CompiledReplicaServer]) -> tuple[Any, Any, np.ndarray]:
    """The servers' buffers as :func:`route_and_advance` takes them (typed lists, layouts)."""
    floats, ints = List(), List()
    for server in servers:
        floats.append(server.buffers[0])
        ints.append(server.buffers[1])
    return floats, ints, np.stack([server.buffers[2] for server in servers])
