"""What ``llmsched/Routing-v0`` shows at a routing decision: per-replica loads and the request.

:class:`ReplicaLoads` measures every replica once per decision; both the ``info`` (raw counts and
tokens, which the routers read) and the observation (the same, normalised and clipped) are made
from it. :data:`REPLICA_FEATURES` and :data:`REQUEST_FEATURES` are the single source of the
observation's names, bounds and order; the env's docstring explains each entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from llmsched_env.envs.common import clip_in_place

if TYPE_CHECKING:  # the cluster measures itself with this module's ReplicaLoads
    from llmsched_env.envs.routing_cluster import Cluster

REPLICA_FEATURES: tuple[tuple[str, float, float], ...] = (
    ("waiting", 0.0, 16.0),
    ("waiting_tokens", 0.0, 64.0),
    ("running", 0.0, 1.0),
    ("outstanding_tokens", 0.0, 16.0),
    ("kv_used", 0.0, 1.0),
    ("cached_prefix", 0.0, 1.0),
    ("recent_ttft", 0.0, 8.0),
    ("busy_remaining", 0.0, 4.0),
)
REQUEST_FEATURES: tuple[tuple[str, float, float], ...] = (
    ("request/prompt_tokens", 0.0, 64.0),
    ("request/predicted_output", 0.0, 4.0),
    ("arrived_fraction", 0.0, 1.0),
)


def _rows(n_replicas: int) -> list[tuple[str, float, float]]:
    rows = [
        (f"replica{r}/{name}", lo, hi)
        for r in range(n_replicas)
        for name, lo, hi in REPLICA_FEATURES
    ]
    return rows + list(REQUEST_FEATURES)


def feature_names(n_replicas: int) -> list[str]:
    """Names of the observation entries, replica by replica, then the request's."""
    return [name for name, _, _ in _rows(n_replicas)]


def feature_bounds(n_replicas: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the entries, in :func:`feature_names` order."""
    rows = _rows(n_replicas)
    low = np.array([r[1] for r in rows], dtype=np.float32)
    high = np.array([r[2] for r in rows], dtype=np.float32)
    return low, high


@dataclass
class ReplicaLoads:
    """Per replica, its load when the request arrives (each an array of one entry per replica).

    Requests routed to a replica whose clock has not reached their arrival yet (it is busy with
    an iteration that started before) count as waiting there.

    Attributes:
        waiting: Waiting requests (never admitted, preempted, or routed and not yet arrived).
        waiting_tokens: Tokens they must prefill (a preempted one: its tokens to recompute).
        running: Requests on the GPU (decoding, or with a started prompt).
        prefill_remaining_tokens: Prompt tokens its started prompts still have to prefill.
        outstanding_tokens: Prompt plus predicted output tokens of its waiting and running
            requests (the work routed to it and not finished, as the router knows it).
        kv_used_tokens: KV memory in use (allocated blocks, in tokens).
        cached_prefix_tokens: Tokens of the request's prompt whose KV blocks it has cached.
        recent_ttft_s: Moving average of the TTFTs of its requests, in routing order.
        busy_remaining_s: Time until its current iteration ends (0 when idle).
    """

    waiting: np.ndarray
    waiting_tokens: np.ndarray
    running: np.ndarray
    prefill_remaining_tokens: np.ndarray
    outstanding_tokens: np.ndarray
    kv_used_tokens: np.ndarray
    cached_prefix_tokens: np.ndarray
    recent_ttft_s: np.ndarray
    busy_remaining_s: np.ndarray

    @classmethod
    def measure(cls, cluster: Cluster) -> ReplicaLoads:
        """Measure every replica of ``cluster`` for its current request (none: no prefix)."""
        i = cluster.request
        now = cluster.now
        columns: list[list[float]] = [[] for _ in range(9)]
        for r, s in enumerate(cluster.servers):
            running = s.running[0].size + len(s.prefilling[0])
            values = (
                s.n_waiting + len(cluster.pending[r]),
                s.waiting_prompt_tokens() + cluster.pending_tokens[r],
                running,
                s.prefill_remaining_tokens(0),
                s.waiting_work_tokens() + s.running_work_tokens() + cluster.pending_work[r],
                s.kv_used[0],
                s.cached_prefix_tokens(i) if i >= 0 else 0,
                cluster.recent_ttft_s[r],
                max(s.gpu_free_at[0] - now, 0.0) if s.gpu_busy[0] else 0.0,
            )
            for column, value in zip(columns, values):
                column.append(value)
        ints = [np.array(c, dtype=np.int64) for c in columns[:7]]
        floats = [np.array(c, dtype=float) for c in columns[7:]]
        return cls(*ints, *floats)


class RoutingObservation:
    """Builds the observation vector from :class:`ReplicaLoads` and the request.

    Args:
        max_tokens: Token budget of an iteration (prompt and queue token scale).
        max_sequences: Most requests per replica (request count scale).
        kv_capacity_tokens: Per replica, its KV memory in tokens.
        ttft_sla_s: TTFT target (time scale of TTFTs).
        tbt_sla_s: TBT target (time scale of iteration times).
        length_scale_tokens: Output length scale (99th percentile of the calibration data).
    """

    def __init__(
        self,
        *,
        max_tokens: int,
        max_sequences: int,
        kv_capacity_tokens: list[int],
        ttft_sla_s: float,
        tbt_sla_s: float,
        length_scale_tokens: float,
    ) -> None:
        self.max_tokens = max_tokens
        self.max_sequences = max_sequences
        self.kv_capacity = np.asarray(kv_capacity_tokens, dtype=float)
        self.ttft_sla_s = ttft_sla_s
        self.tbt_sla_s = tbt_sla_s
        self.length_scale = length_scale_tokens
        n = len(kv_capacity_tokens)
        self.low, self.high = feature_bounds(n)
        self.n_replicas = n

    def build(
        self, loads: ReplicaLoads, prompt_tokens: int, predicted_output: int, arrived: float
    ) -> np.ndarray:
        """The observation (float32, clipped to the bounds)."""
        per_replica = np.stack(
            [
                loads.waiting / self.max_sequences,
                loads.waiting_tokens / self.max_tokens,
                loads.running / self.max_sequences,
                loads.outstanding_tokens / self.kv_capacity,
                loads.kv_used_tokens / self.kv_capacity,
                loads.cached_prefix_tokens / max(prompt_tokens, 1),
                loads.recent_ttft_s / self.ttft_sla_s,
                loads.busy_remaining_s / self.tbt_sla_s,
            ],
            axis=1,
        )
        request = (prompt_tokens / self.max_tokens, predicted_output / self.length_scale, arrived)
        obs = np.concatenate([per_replica.ravel(), request]).astype(np.float32)
        clip_in_place(obs, self.low, self.high)
        return obs
