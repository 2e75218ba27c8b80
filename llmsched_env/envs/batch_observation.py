"""Observation of ``BatchScheduling-v0``: a flat float32 vector, built by compiled code.

The layout (per bin, then per GPU, then global) and each entry's normalisation are documented in
the environment's docstring; :data:`BIN_FEATURES`, :data:`GPU_FEATURES` and
:data:`GLOBAL_FEATURES` are the single source of the names, bounds and order. Every per-step
quantity comes from questions the server answers in a few binary searches
(:mod:`llmsched_env.sim.batch_rules`: queue lengths, waiting arrivals, late counts) and from
prefix sums of predicted lengths by position that the observation keeps itself, so building an
observation costs the same whatever the queue lengths; it runs compiled (numba), like the
server's event loop. The observation's own state is declared once, in :data:`OBSERVATION_STATE`.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from llmsched_env.envs.common import clip_in_place
from llmsched_env.jit import njit
from llmsched_env.sim import batch_rules as rules
from llmsched_env.sim.batch_server import BatchServer
from llmsched_env.sim.batch_state import state_view
from llmsched_env.sim.state_schema import Field, StateSchema, lay_out
from llmsched_env.statistics import sequential_sum

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


#: The observation's own values: parameters, moving rates (updated at every observation), per
#: bin its service estimate, per position the prefix sums of predicted output and KV need.
OBSERVATION_STATE = StateSchema(
    "BatchObservationState",
    __name__,
    ("n_bins", "n_queued"),
    (
        Field("sla_s", "f", 1, "end-to-end deadline, the unit of times"),
        Field("max_batch_size", "i", 1, "largest batch size, the unit of counts"),
        Field("length_scale_tokens", "f", 1, "unit of predicted lengths"),
        Field("kv_capacity_tokens", "f", 1, "KV-cache tokens of one GPU"),
        Field("next_chance_s", "f", 1, "how long a bin passed over waits for its next batch"),
        Field("capacity_rps", "f", 1, "estimated capacity, the unit of the arrival rate"),
        Field("n_gpus", "i", 1, "number of GPUs"),
        Field("miss_ema", "f", 1, "misses, decaying with time constant sla_s"),
        Field("done_ema", "f", 1, "on-time completions, decaying with time constant sla_s"),
        Field("last_misses", "f", 1, "the server's miss count at the previous observation"),
        Field("last_on_time", "f", 1, "its on-time count then"),
        Field("last_time_s", "f", 1, "the time of the previous observation"),
        Field("violation_rate", "f", 1, "miss_ema / (miss_ema + done_ema), 0 before any"),
        Field("bin_service_s", "f", "n_bins", "estimated service time of a full batch"),
        Field("predicted_cumsum", "f", "n_queued + 1", "prefix sums of predicted output"),
        Field("need_cumsum", "f", "n_queued + 1", "prefix sums of predicted output plus prompt"),
    ),
)
#: Compiled ``view(floats, ints, layout)`` of :data:`OBSERVATION_STATE`.
_observation_view = OBSERVATION_STATE.view


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
        service = [float(x) for x in bin_service_s]
        n_bins = len(service)
        if n_bins != server.n_queues:
            raise ValueError(
                f"bin_service_s must have one value per bin ({server.n_queues}), got {n_bins}"
            )
        self._bounds = _stacked_bounds(n_bins, server.n_gpus)
        w = server.workload
        order = server.order
        self._buffers = OBSERVATION_STATE.allocate(n_bins=n_bins, n_queued=len(order))
        state = self._state = OBSERVATION_STATE.views(*self._buffers)
        state.sla_s[0] = sla_s
        state.max_batch_size[0] = max_batch_size
        state.length_scale_tokens[0] = length_scale_tokens
        state.kv_capacity_tokens[0] = server.kv_capacity_tokens
        # How long a bin passed over now typically waits for its next chance: one batch.
        state.next_chance_s[0] = sequential_sum(service) / n_bins
        state.capacity_rps[0] = capacity_rps
        state.n_gpus[0] = server.n_gpus
        state.bin_service_s[:] = service
        _prefix_sums(
            state.predicted_cumsum,
            state.need_cumsum,
            order,
            w.predicted_output_tokens,
            w.prompt_tokens,
            0,
            len(order),
        )

    @classmethod
    def on_buffers(
        cls, server: BatchServer, buffers: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> BatchObservation:
        """The observation of ``server`` whose state is already in ``buffers``, maybe under way.

        For code that starts episodes in compiled code (:func:`restart`, the compiled vector
        env) and builds their Python side only when it is read.
        """
        observation = cls.__new__(cls)
        observation.server = server
        observation._bounds = _stacked_bounds(server.n_queues, server.n_gpus)
        observation._buffers = buffers
        observation._state = OBSERVATION_STATE.views(*buffers)
        return observation

    def __getstate__(self) -> dict:
        # Copies and pickles keep the buffers; the named views are made anew from them.
        state = self.__dict__.copy()
        del state["_state"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._state = OBSERVATION_STATE.views(*self._buffers)

    def positions_moved(self, lo: int, hi: int) -> None:
        """Redo the prefix sums over positions ``lo .. hi - 1``, whose requests were reordered.

        A dispatch with ``dispatch_order="oldest-in-time"`` permutes the requests within such a
        range (:attr:`BatchServer.last_moved`); the sums at its bounds do not change.
        """
        w = self.server.workload
        _prefix_sums(
            self._state.predicted_cumsum,
            self._state.need_cumsum,
            self.server.order,
            w.predicted_output_tokens,
            w.prompt_tokens,
            lo,
            hi,
        )

    @property
    def violation_rate(self) -> float:
        """Share of misses among the recent misses and on-time completions (moving rates)."""
        return float(self._state.violation_rate[0])

    def build(self) -> np.ndarray:
        """The observation at the server's current decision.

        It first folds the misses and on-time completions since the previous observation into
        the moving rates, so it is called once per decision.
        """
        obs = np.empty(self._bounds.shape[1], dtype=np.float32)
        _build(obs, self._bounds, *self._buffers, *self.server.buffers)
        return obs


#: The observation state's layout as a linear function of its sizes (for :func:`restart`).
_LAYOUT_CONSTANT, _LAYOUT_MATRIX = OBSERVATION_STATE.linear_layout
_FLOATS_END = OBSERVATION_STATE.floats_end


@njit(cache=True)
def restart(own_floats, own_ints, own_layout, template, order, predicted, prompt):
    """Start the observation of a new run in buffers used before, as a new one would start.

    A new :class:`BatchObservation` allocates zeroed buffers, sets its parameters and the prefix
    sums along the run's positions (``order``); this does the same in buffers it reuses, taking
    the parameters from ``template``, the buffers of an observation of the same configuration.
    The buffers must hold the run (:func:`buffer_lengths`).
    """
    params = _observation_view(template[0], template[1], template[2])
    sizes = np.array([params.bin_service_s.shape[0], order.shape[0]])
    lay_out(own_layout, _LAYOUT_CONSTANT, _LAYOUT_MATRIX, sizes)
    own_floats[: own_layout[_FLOATS_END]] = 0.0
    own_ints[: own_layout[-1]] = 0
    own = _observation_view(own_floats, own_ints, own_layout)
    own.sla_s[0] = params.sla_s[0]
    own.max_batch_size[0] = params.max_batch_size[0]
    own.length_scale_tokens[0] = params.length_scale_tokens[0]
    own.kv_capacity_tokens[0] = params.kv_capacity_tokens[0]
    own.next_chance_s[0] = params.next_chance_s[0]
    own.capacity_rps[0] = params.capacity_rps[0]
    own.n_gpus[0] = params.n_gpus[0]
    own.bin_service_s[:] = params.bin_service_s
    _prefix_sums(own.predicted_cumsum, own.need_cumsum, order, predicted, prompt, 0, order.shape[0])


def buffer_lengths(n: int, n_bins: int) -> tuple[int, int]:
    """``(floats, ints)``: buffer lengths that hold the observation of any run of ``n`` requests."""
    return OBSERVATION_STATE.buffer_lengths(OBSERVATION_STATE.layout(n_bins=n_bins, n_queued=n))


@njit(cache=True)
def _prefix_sums(predicted_cumsum, need_cumsum, order, predicted, prompt, lo, hi) -> None:
    """Write the prefix sums of predicted output and of predicted KV need along the positions.

    Both arrays hold ``n + 1`` sums (from 0), ``n`` being the number of positions; this writes
    the sums that end at positions ``lo + 1 .. hi`` (all of them for ``lo = 0, hi = n``).
    """
    if lo == 0:
        predicted_cumsum[0] = 0.0
        need_cumsum[0] = 0.0
    for p in range(lo, hi):
        j = order[p]
        predicted_tokens = float(predicted[j])
        predicted_cumsum[p + 1] = predicted_cumsum[p] + predicted_tokens
        need_cumsum[p + 1] = need_cumsum[p] + (predicted_tokens + prompt[j])


@cache
def _stacked_bounds(n_bins: int, n_gpus: int) -> np.ndarray:
    """:func:`feature_bounds` as one ``(2, n)`` array (low, high)."""
    bounds = np.stack(feature_bounds(n_bins, n_gpus))
    bounds.flags.writeable = False
    return bounds


@njit(cache=True, inline="always")
def _update_rates(own, server):
    """Fold the misses and on-time completions since the previous observation into the rates.

    Both decay with time constant ``sla_s``.
    """
    now = server.now[0]
    misses = server.n_late[0]
    on_time = server.n_on_time[0]
    decay = math.exp(-(now - own.last_time_s[0]) / own.sla_s[0])
    own.miss_ema[0] = own.miss_ema[0] * decay + (misses - own.last_misses[0])
    own.done_ema[0] = own.done_ema[0] * decay + (on_time - own.last_on_time[0])
    own.last_misses[0] = misses
    own.last_on_time[0] = on_time
    own.last_time_s[0] = now
    total = own.miss_ema[0] + own.done_ema[0]
    own.violation_rate[0] = own.miss_ema[0] / total if total > 0 else 0.0


@njit(cache=True, inline="always")
def _bin_features(own, server, j):
    """The entries of bin ``j``, in the order of :data:`BIN_FEATURES`."""
    q = rules.queue_length(server, j)
    if q == 0:  # nothing waits: full slack, everything fits
        return (0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    h, t = rules.waiting_positions(server, j)
    now = server.now[0]
    sla = own.sla_s[0]
    max_batch = own.max_batch_size[0]
    service = own.bin_service_s[j]
    wait = now - rules.waiting_arrival_s(server, j, 0)
    late = rules.n_late_waiting(server, j)
    # Requests that miss their deadline even if served now arrived before doom_before
    # (a prefix of the FIFO bin); at risk: those that would if served one batch later.
    doom_before = now + service - sla
    doomed = rules.n_waiting_arrived_before(server, j, doom_before, late)
    at_risk = (
        rules.n_waiting_arrived_before(server, j, doom_before + own.next_chance_s[0], doomed)
        - doomed
    )
    batch = min(q, max_batch)
    need = own.need_cumsum
    full_batch_need = (need[t] - need[h]) / q * batch
    # The next batch: the bin's oldest requests, or its oldest in time when late ones are
    # skipped.
    first_wait = wait
    next_batch, next_doomed = batch, doomed
    if server.in_time_first[0] != 0 and late < q:
        first_wait = now - rules.waiting_arrival_s(server, j, late)
        next_batch = min(q - late, max_batch)
        next_doomed = doomed - late
    pred = own.predicted_cumsum
    return (
        q / max_batch,
        wait / sla,
        (sla - first_wait - service) / sla,
        late / q,
        doomed / q,
        max(next_batch - next_doomed, 0) / max_batch,
        at_risk / max_batch,
        (pred[t] - pred[h]) / q / own.length_scale_tokens[0],
        min(1.0, own.kv_capacity_tokens[0] / max(full_batch_need, 1.0)),
    )


@njit(cache=True)
def _build(obs, bounds, own_floats, own_ints, own_layout, floats, ints, layout) -> None:
    """Fill ``obs`` in the order of :func:`feature_names`, clipped to ``bounds``."""
    own = _observation_view(own_floats, own_ints, own_layout)
    server = state_view(floats, ints, layout)
    _update_rates(own, server)
    sla = own.sla_s[0]
    i = 0
    for j in range(own.bin_service_s.shape[0]):
        for value in _bin_features(own, server, j):
            obs[i] = value
            i += 1
    for g in range(own.n_gpus[0]):
        obs[i] = rules.busy_remaining_s(server, g) / sla
        i += 1
    n_arrived = server.n_arrived[0]
    global_features = (
        rules.n_arrived_since(server, server.now[0] - sla) / sla / own.capacity_rps[0],
        own.violation_rate[0],
        n_arrived / rules.n_requests(server),
        server.n_waiting[0] / own.max_batch_size[0],
    )
    for value in global_features:
        obs[i] = value
        i += 1
    clip_in_place(obs, bounds[0], bounds[1])
