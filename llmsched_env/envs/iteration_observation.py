"""Observation of ``ContinuousBatching-v0``: waiting prompts, the deciding GPU's batch, rates.

:data:`GLOBAL_FEATURES`, :data:`DECIDING_GPU_FEATURES` and :data:`GPU_FEATURES` are the single
source of the names, bounds and order of the entries; the environment's docstring explains each.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable
from functools import cache

import numpy as np

from llmsched_env.envs.common import clip_in_place
from llmsched_env.jit import implementation
from llmsched_env.sim.iteration_server import IterationServer

GLOBAL_FEATURES: tuple[tuple[str, float, float], ...] = (
    ("waiting", 0.0, 16.0),
    ("waiting_tokens", 0.0, 64.0),
    ("oldest_wait", 0.0, 8.0),
    ("head_prompt", 0.0, 8.0),
    ("arrival_rate", 0.0, 4.0),
    ("ttft_miss_rate", 0.0, 1.0),
    ("tbt_miss_rate", 0.0, 1.0),
    ("arrived_fraction", 0.0, 1.0),
)
DECIDING_GPU_FEATURES: tuple[tuple[str, float, float], ...] = (
    ("running", 0.0, 1.0),
    ("prefill_remaining", 0.0, 16.0),
    ("mean_generated", 0.0, 4.0),
    ("mean_predicted_remaining", 0.0, 4.0),
    ("oldest_token_gap", 0.0, 4.0),
    ("kv_used", 0.0, 1.0),
    ("kv_reserved", 0.0, 1.0),
    ("last_iteration", 0.0, 4.0),
)
GPU_FEATURES: tuple[tuple[str, float, float], ...] = (("busy_remaining", 0.0, 4.0),)


def _rows(n_gpus: int) -> list[tuple[str, float, float]]:
    rows = list(GLOBAL_FEATURES)
    rows += [(f"gpu/{name}", lo, hi) for name, lo, hi in DECIDING_GPU_FEATURES]
    rows += [(f"gpu{g}/{name}", lo, hi) for g in range(n_gpus) for name, lo, hi in GPU_FEATURES]
    return rows


def feature_names(n_gpus: int) -> list[str]:
    """Names of the observation entries (``gpu/...`` is the deciding GPU)."""
    return [name for name, _, _ in _rows(n_gpus)]


def feature_bounds(n_gpus: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the entries, in :func:`feature_names` order."""
    rows = _rows(n_gpus)
    low = np.array([r[1] for r in rows], dtype=np.float32)
    high = np.array([r[2] for r in rows], dtype=np.float32)
    return low, high


@cache
def _shared_bounds(n_gpus: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`feature_bounds`, read-only and made once per GPU count (every reset needs them)."""
    low, high = feature_bounds(n_gpus)
    low.flags.writeable = high.flags.writeable = False
    return low, high


@cache
def observation_bounds(n_gpus: int) -> np.ndarray:
    """:func:`feature_bounds` as one read-only ``(2, n_obs)`` array, made once per GPU count."""
    bounds = np.stack(feature_bounds(n_gpus))
    bounds.flags.writeable = False
    return bounds


@cache
def _clip() -> Callable[[np.ndarray, np.ndarray, np.ndarray], None]:
    """:func:`clip_in_place` compiled for an observation and its bounds, without the dispatcher.

    Every observation is a new float32 array clipped to read-only float32 bounds
    (:func:`_shared_bounds`), so one implementation serves them all and the dispatcher's typing
    of the three arguments is skipped (:func:`llmsched_env.jit.implementation`). Looked up when
    first needed, and kept out of the observer, whose copies and pickles it could not join.
    """
    low, high = _shared_bounds(1)
    return implementation(clip_in_place, np.zeros(low.shape, dtype=np.float32), low, high)


class IterationObservation:
    """Builds observations for one episode of an :class:`IterationServer`.

    Args:
        server: The episode's server.
        ttft_sla_s: TTFT target, the unit of waiting times.
        tbt_sla_s: TBT target, the unit of gaps and iteration times.
        length_scale_tokens: Unit of output lengths (a high quantile of calibration outputs).
        capacity_rps: Estimated capacity, the unit of the arrival rate.
    """

    def __init__(
        self,
        server: IterationServer,
        *,
        ttft_sla_s: float,
        tbt_sla_s: float,
        length_scale_tokens: float,
        capacity_rps: float,
    ) -> None:
        self.server = server
        self.ttft_sla_s = ttft_sla_s
        self.tbt_sla_s = tbt_sla_s
        self.length_scale = length_scale_tokens
        self.capacity_rps = capacity_rps
        self.low, self.high = _shared_bounds(server.n_gpus)
        # Python lists: the observation reads a few scalars, faster from lists than from numpy.
        self.arrival = server.workload.arrival_s.tolist()
        self._last = (0, 0, 0, 0.0)
        self._ema = [0.0, 0.0, 0.0]
        self.ttft_miss_rate = 0.0
        self.tbt_miss_rate = 0.0

    def update_rates(self) -> None:
        """Fold the misses and completions since the last call into the moving rates."""
        s = self.server
        ttft, tbt, done, last_t = self._last
        decay = math.exp(-(s.now - last_t) / self.ttft_sla_s)
        e = self._ema
        e[0] = e[0] * decay + (s.n_ttft_misses - ttft)
        e[1] = e[1] * decay + (s.n_tbt_misses - tbt)
        e[2] = e[2] * decay + (s.n_completed + s.n_rejected - done)
        self._last = (s.n_ttft_misses, s.n_tbt_misses, s.n_completed + s.n_rejected, s.now)
        self.ttft_miss_rate = min(e[0] / e[2], 1.0) if e[2] > 0 else 0.0
        self.tbt_miss_rate = min(e[1] / e[2], 1.0) if e[2] > 0 else 0.0

    def build(self) -> np.ndarray:
        """The observation at the server's current decision."""
        s = self.server
        now = s.now
        gpu = max(s.decision_gpu, 0)
        n_waiting = s.n_waiting
        if n_waiting:
            oldest_wait = now - self.arrival[s.oldest_waiting()]
            head_prompt = s.waiting_head_tokens()
        else:
            oldest_wait = 0.0
            head_prompt = 0
        recent = s.n_arrived - bisect_right(self.arrival, now - self.ttft_sla_s, 0, s.n_arrived)
        n_running = s.running[gpu].size
        prefill_remaining = s.prefill_remaining_tokens(gpu)
        if n_running:
            generated = s.running_generated_tokens(gpu)
            mean_generated = generated / n_running
            remaining = max(s.running_predicted_tokens[gpu] - generated, 0) / n_running
            oldest_gap = now - s.oldest_token_s(gpu)
        else:
            mean_generated = remaining = oldest_gap = 0.0
        kv = s.kv_capacity_tokens
        busy = [(t - now) / self.tbt_sla_s if b else 0.0 for t, b in zip(s.gpu_free_at, s.gpu_busy)]
        values = [
            n_waiting / s.max_sequences,
            s.waiting_prompt_tokens() / s.max_tokens,
            oldest_wait / self.ttft_sla_s,
            head_prompt / s.max_tokens,
            recent / self.ttft_sla_s / self.capacity_rps,
            self.ttft_miss_rate,
            self.tbt_miss_rate,
            s.n_arrived / s.n_requests,
            n_running / s.max_sequences,
            prefill_remaining / s.max_tokens,
            mean_generated / self.length_scale,
            remaining / self.length_scale,
            oldest_gap / self.tbt_sla_s,
            s.kv_used[gpu] / kv,
            s.kv_reserved[gpu] / kv,
            s.last_iteration_s[gpu] / self.tbt_sla_s,
            *busy,
        ]
        obs = np.array(values, dtype=np.float32)
        _clip()(obs, self.low, self.high)
        return obs
