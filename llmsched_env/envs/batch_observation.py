"""Observation of ``BatchScheduling-v0``: a flat float32 vector, built by compiled code.

The layout (per bin, then per GPU, then global) and each entry's normalisation are documented in
the environment's docstring; :data:`BIN_FEATURES` and :data:`GLOBAL_FEATURES` are the single source
of the names, bounds and order. Every per-step quantity is computed from the
server's queue pointers and prefix sums prepared at reset, so building an observation reads a
few scalars per bin (and a few binary searches) whatever the queue lengths; it runs compiled
(numba), like the server's event loop.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numba import njit

from llmsched_env.envs.common import clip_in_place
from llmsched_env.sim import batch_kernels as k
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
_EMPTY_BIN = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])


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


# The observation's own values, one float64 array: parameters, moving rates (updated at every
# observation), the values of an empty bin, then per bin its service estimate, then per position
# the prefix sums of predicted output and of predicted KV need.
_SLA, _MAX_BATCH, _LENGTH_SCALE, _KV, _NEXT_CHANCE, _CAPACITY = range(6)
_MISS_EMA, _DONE_EMA, _LAST_MISSES, _LAST_ON_TIME, _LAST_TIME, _VIOLATION_RATE = range(6, 12)
_EMPTY = 12
_BIN_SERVICE = _EMPTY + len(_EMPTY_BIN)


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
        self._bounds = _stacked_bounds(server.n_queues, server.n_gpus)
        service = [float(x) for x in bin_service_s]
        if len(service) != server.n_queues:
            raise ValueError(
                f"bin_service_s must have one value per bin ({server.n_queues}), got {len(service)}"
            )
        w = server.workload
        order = server.order
        n_queued = len(order)
        values = np.zeros(_BIN_SERVICE + len(service) + 2 * (n_queued + 1))
        # How long a bin passed over now typically waits for its next chance: one batch.
        next_chance_s = sum(service) / len(service)
        values[:_MISS_EMA] = (
            sla_s,
            max_batch_size,
            length_scale_tokens,
            server.kv_capacity_tokens,
            next_chance_s,
            capacity_rps,
        )
        values[_EMPTY:_BIN_SERVICE] = _EMPTY_BIN
        pred_start = _BIN_SERVICE + len(service)
        values[_BIN_SERVICE:pred_start] = service
        _prefix_sums(
            values, pred_start, order, w.predicted_output_tokens, w.prompt_tokens, 0, n_queued
        )
        self._values = values
        self._pred_start = pred_start

    def positions_moved(self, lo: int, hi: int) -> None:
        """Redo the prefix sums over positions ``lo .. hi - 1``, whose requests were reordered.

        A dispatch with ``dispatch_order="oldest-in-time"`` permutes the requests within such a
        range (:attr:`BatchServer.last_moved`); the sums at its bounds do not change.
        """
        w = self.server.workload
        _prefix_sums(
            self._values,
            self._pred_start,
            self.server.order,
            w.predicted_output_tokens,
            w.prompt_tokens,
            lo,
            hi,
        )

    @property
    def violation_rate(self) -> float:
        """Share of misses among the recent misses and on-time completions (moving rates)."""
        return float(self._values[_VIOLATION_RATE])

    def build(self) -> np.ndarray:
        """The observation at the server's current decision.

        It first folds the misses and on-time completions since the previous observation into
        the moving rates, so it is called once per decision.
        """
        obs = np.empty(self._bounds.shape[1], dtype=np.float32)
        _build(obs, self._bounds, self._values, *self.server.state)
        return obs


@njit(cache=True)
def _prefix_sums(values, start, order, predicted, prompt, lo, hi) -> None:
    """Write the prefix sums of predicted output and of predicted KV need along the positions.

    ``values[start:]`` holds ``n + 1`` sums of the predicted outputs (from 0), then ``n + 1``
    of predicted output plus prompt, ``n`` being the number of positions; this writes the sums
    that end at positions ``lo + 1 .. hi`` (all of them for ``lo = 0, hi = n``).
    """
    n = order.shape[0]
    need_start = start + n + 1
    if lo == 0:
        values[start] = 0.0
        values[need_start] = 0.0
    for p in range(lo, hi):
        j = order[p]
        predicted_tokens = float(predicted[j])
        values[start + p + 1] = values[start + p] + predicted_tokens
        values[need_start + p + 1] = values[need_start + p] + (predicted_tokens + prompt[j])


@cache
def _stacked_bounds(n_bins: int, n_gpus: int) -> np.ndarray:
    """:func:`feature_bounds` as one ``(2, n)`` array (low, high)."""
    bounds = np.stack(feature_bounds(n_bins, n_gpus))
    bounds.flags.writeable = False
    return bounds


@njit(cache=True)
def _build(obs, bounds, values, floats, ints, layout) -> None:
    """Fill ``obs`` in the order of :func:`feature_names`, clipped to ``bounds``."""
    views = k.state_views(floats, ints, layout)
    clock, gpu_f, arrival, pos_arrival = (
        views[k.V_CLOCK],
        views[k.V_GPU_F],
        views[k.V_ARRIVAL],
        views[k.V_POS_ARRIVAL],
    )
    counts, gpu_i, queues = views[k.V_COUNTS], views[k.V_GPU_I], views[k.V_QUEUES]
    n_bins = queues.shape[1]
    n_queued = pos_arrival.shape[0]
    empty_bin = values[_EMPTY:_BIN_SERVICE]
    bin_service = values[_BIN_SERVICE : _BIN_SERVICE + n_bins]
    pred = values[_BIN_SERVICE + n_bins : _BIN_SERVICE + n_bins + n_queued + 1]
    need = values[_BIN_SERVICE + n_bins + n_queued + 1 :]
    low, high = bounds[0], bounds[1]
    now = clock[k.NOW]
    sla = values[_SLA]
    max_batch = int(values[_MAX_BATCH])
    scale = values[_LENGTH_SCALE]
    kv = values[_KV]
    next_chance = values[_NEXT_CHANCE]
    # Moving rates: misses and on-time completions decay with time constant sla.
    misses = counts[k.N_LATE]
    on_time = counts[k.N_ON_TIME]
    decay = math.exp(-(now - values[_LAST_TIME]) / sla)
    values[_MISS_EMA] = values[_MISS_EMA] * decay + (misses - values[_LAST_MISSES])
    values[_DONE_EMA] = values[_DONE_EMA] * decay + (on_time - values[_LAST_ON_TIME])
    values[_LAST_MISSES] = misses
    values[_LAST_ON_TIME] = on_time
    values[_LAST_TIME] = now
    total = values[_MISS_EMA] + values[_DONE_EMA]
    values[_VIOLATION_RATE] = values[_MISS_EMA] / total if total > 0 else 0.0
    # Whether a batch skips the late requests at the head of its bin (dispatch_order).
    skip_late = counts[k.IN_TIME_FIRST] != 0
    i = 0
    for j in range(n_bins):
        h = queues[k.HEAD, j]
        t = queues[k.TAIL, j]
        q = t - h
        if q == 0:
            for v in empty_bin:
                obs[i] = v
                i += 1
            continue
        service = bin_service[j]
        wait = now - pos_arrival[h]
        late = k.first_not_late(pos_arrival, sla, now, h, t) - h  # the miss test
        # Requests that miss their deadline even if served now arrived before doom_before
        # (a prefix of the FIFO bin); at risk: those that would if served one batch later.
        doom_before = now + service - sla
        doomed = k.bisect_left(pos_arrival, doom_before, h + late, t) - h
        at_risk = k.bisect_left(pos_arrival, doom_before + next_chance, h + doomed, t) - h - doomed
        batch = min(q, max_batch)
        full_batch_need = (need[t] - need[h]) / q * batch
        # The next batch: the bin's oldest requests, or its oldest in time when late ones
        # are skipped.
        first_wait = wait
        next_batch, next_doomed = batch, doomed
        if skip_late and late < q:
            first_wait = now - pos_arrival[h + late]
            next_batch = min(q - late, max_batch)
            next_doomed = doomed - late
        obs[i] = q / max_batch
        obs[i + 1] = wait / sla
        obs[i + 2] = (sla - first_wait - service) / sla
        obs[i + 3] = late / q
        obs[i + 4] = doomed / q
        obs[i + 5] = max(next_batch - next_doomed, 0) / max_batch
        obs[i + 6] = at_risk / max_batch
        obs[i + 7] = (pred[t] - pred[h]) / q / scale
        obs[i + 8] = min(1.0, kv / max(full_batch_need, 1.0))
        i += 9
    for g in range(gpu_i.shape[1]):
        obs[i] = (gpu_f[k.FREE_AT, g] - now) / sla if gpu_i[k.BUSY, g] != 0 else 0.0
        i += 1
    n_arrived = counts[k.N_ARRIVED]
    recent = n_arrived - k.bisect_right(arrival, now - sla, 0, n_arrived)  # the last sla s
    obs[i] = recent / sla / values[_CAPACITY]
    obs[i + 1] = values[_VIOLATION_RATE]
    obs[i + 2] = n_arrived / arrival.shape[0]
    obs[i + 3] = counts[k.N_WAITING] / max_batch
    clip_in_place(obs, low, high)
