"""Observation of ``BatchScheduling-v0``: a flat float32 vector built by numpy slicing.

The layout (per bin, then per GPU, then global) and each entry's normalisation are documented in
the environment's docstring; :data:`BIN_FEATURES` and :data:`GLOBAL_FEATURES` are the single source
of the names, bounds and order. Every per-step quantity is computed from the
server's queue pointers and prefix sums prepared at reset, so building an observation reads a
few scalars per bin (and one binary search) whatever the queue lengths.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from functools import cache

import numpy as np

from llmsched_env.sim.batch_server import BatchServer

#: (name, low, high) of each per-bin entry, in order.
BIN_FEATURES: tuple[tuple[str, float, float], ...] = (
    ("queue_len", 0.0, 16.0),
    ("oldest_wait", 0.0, 4.0),
    ("slack", -4.0, 1.0),
    ("late_fraction", 0.0, 1.0),
    ("doomed_fraction", 0.0, 1.0),
    ("next_on_time", 0.0, 1.0),
    ("at_risk", 0.0, 16.0),
    ("mean_predicted_len", 0.0, 4.0),
    ("kv_fit", 0.0, 1.0),
)
#: (name, low, high) of each per-GPU entry.
GPU_FEATURES: tuple[tuple[str, float, float], ...] = (("busy_remaining", 0.0, 4.0),)
#: (name, low, high) of each global entry, in order.
GLOBAL_FEATURES: tuple[tuple[str, float, float], ...] = (
    ("arrival_rate", 0.0, 4.0),
    ("violation_rate", 0.0, 1.0),
    ("arrived_fraction", 0.0, 1.0),
    ("waiting", 0.0, 16.0),
)


#: Values of an empty bin: nothing waits, full slack, everything fits.
_EMPTY_BIN = (0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def feature_names(n_bins: int, n_gpus: int) -> list[str]:
    """Names of the observation entries, e.g. ``bin0/queue_len``, ``gpu1/busy_remaining``."""
    names = [f"bin{j}/{name}" for j in range(n_bins) for name, _, _ in BIN_FEATURES]
    names += [f"gpu{g}/{name}" for g in range(n_gpus) for name, _, _ in GPU_FEATURES]
    names += [name for name, _, _ in GLOBAL_FEATURES]
    return names


@cache
def feature_bounds(n_bins: int, n_gpus: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the observation entries, in :func:`feature_names` order."""
    rows = list(BIN_FEATURES) * n_bins + list(GPU_FEATURES) * n_gpus + list(GLOBAL_FEATURES)
    low = np.array([r[1] for r in rows], dtype=np.float32)
    high = np.array([r[2] for r in rows], dtype=np.float32)
    low.flags.writeable = high.flags.writeable = False  # shared by every caller (cached)
    return low, high


class BatchObservation:
    """Builds observations for one episode of a :class:`BatchServer`.

    Args:
        server: The episode's server (its queues are the bins).
        sla_s: End-to-end deadline.
        max_batch_size: Largest batch size, the unit of queue lengths.
        length_scale_tokens: Unit of predicted lengths (a high quantile of calibration data).
        bin_service_s: Estimated service time of a full batch of each bin, for the slack.
        capacity_rps: Estimated capacity, the unit of the arrival rate.
    """

    def __init__(
        self,
        server: BatchServer,
        *,
        sla_s: float,
        max_batch_size: int,
        length_scale_tokens: float,
        bin_service_s: np.ndarray,
        capacity_rps: float,
    ) -> None:
        self.server = server
        self.sla_s = sla_s
        self.max_batch_size = max_batch_size
        self.length_scale = length_scale_tokens
        self.bin_service_s = bin_service_s
        self.capacity_rps = capacity_rps
        self.low, self.high = feature_bounds(server.n_queues, server.n_gpus)
        w = server.workload
        order = server.order
        self.arrival = w.arrival_s.tolist()
        # Per-request values in queue order, as Python lists: the observation reads a few
        # scalars per bin, which is faster from lists than through numpy calls.
        self.order_arrival = w.arrival_s[order].tolist()
        predicted = w.predicted_output_tokens[order].astype(np.float64)
        need = predicted + w.prompt_tokens[order]
        self.predicted_cumsum = [0.0, *np.cumsum(predicted).tolist()]
        self.need_cumsum = [0.0, *np.cumsum(need).tolist()]
        self.bin_service = [float(x) for x in bin_service_s]
        # How long a bin passed over now typically waits for its next chance: one batch.
        self.next_chance_s = float(np.mean(bin_service_s))
        self.violation_rate = 0.0
        self._last_misses = 0
        self._last_on_time = 0
        self._last_time = 0.0
        self._miss_ema = 0.0
        self._done_ema = 0.0

    def update_rates(self) -> None:
        """Fold the misses and on-time completions since the last call into the moving rate."""
        s = self.server
        decay = math.exp(-(s.now - self._last_time) / self.sla_s)
        self._miss_ema = self._miss_ema * decay + (s.sla_misses - self._last_misses)
        self._done_ema = self._done_ema * decay + (s.n_on_time - self._last_on_time)
        self._last_misses, self._last_on_time, self._last_time = s.sla_misses, s.n_on_time, s.now
        total = self._miss_ema + self._done_ema
        self.violation_rate = self._miss_ema / total if total > 0 else 0.0

    def build(self) -> np.ndarray:
        """The observation at the server's current decision."""
        s = self.server
        now = s.now
        sla = self.sla_s
        max_batch = self.max_batch_size
        scale = self.length_scale
        kv = s.kv_capacity_tokens
        arrival = self.order_arrival
        pred = self.predicted_cumsum
        need = self.need_cumsum
        late_before = now - sla
        next_chance = self.next_chance_s
        values: list[float] = []
        for h, t, service in zip(s.head, s.tail, self.bin_service):
            q = t - h
            if q == 0:
                values += _EMPTY_BIN
                continue
            wait = now - arrival[h]
            late = bisect_left(arrival, late_before, h, t) - h
            # Requests that miss their deadline even if served now arrived before doom_before
            # (a prefix of the FIFO bin); at risk: those that would if served one batch later.
            doom_before = now + service - sla
            doomed = bisect_left(arrival, doom_before, h + late, t) - h
            at_risk = bisect_left(arrival, doom_before + next_chance, h + doomed, t) - h - doomed
            full_batch_need = (need[t] - need[h]) / q * min(q, max_batch)
            values += (
                q / max_batch,
                wait / sla,
                (sla - wait - service) / sla,
                late / q,
                doomed / q,
                max(min(q, max_batch) - doomed, 0) / max_batch,
                at_risk / max_batch,
                (pred[t] - pred[h]) / q / scale,
                min(1.0, kv / max(full_batch_need, 1.0)),
            )
        values += [(f - now) / sla if b else 0.0 for f, b in zip(s.gpu_free_at, s.gpu_busy)]
        recent = s.n_arrived - bisect_right(self.arrival, late_before, 0, s.n_arrived)
        values += (
            recent / sla / self.capacity_rps,
            self.violation_rate,
            s.n_arrived / s.n_requests,
            s.n_waiting / max_batch,
        )
        obs = np.array(values, dtype=np.float32)
        np.minimum(obs, self.high, out=obs)
        return np.maximum(obs, self.low, out=obs)
