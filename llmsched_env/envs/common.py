"""Action checking, observation clipping, episode set-up and request records shared by the envs."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from llmsched_env import arguments
from llmsched_env.arguments import ArgumentTypeError
from llmsched_env.jit import njit
from llmsched_env.workload import MAX_ARRIVAL_S, Workload, WorkloadSource
from llmsched_env.workload.arrivals import CV_RANGE, GammaArrivals

#: Columns of :meth:`RequestRecordsMixin.request_records`, in order.
REQUEST_RECORD_COLUMNS = (
    "request",
    "arrival_s",
    "prompt_tokens",
    "output_tokens",
    "predicted_output_tokens",
    "start_s",
    "first_token_s",
    "completion_s",
    "tokens_generated",
    "max_token_gap_s",
    "preemptions",
    "recomputed_tokens",
    "prefix_hit_tokens",
    "gpu",
    "batch",
    "status",
    "reject_reason",
)


class RequestRecordsMixin:
    """Gives an env with a ``server`` (set by ``reset``) the public :meth:`request_records`."""

    server: Any

    def request_records(self) -> pd.DataFrame:
        """One row per request of the current episode: its lengths, event times and outcome.

        Columns (:data:`REQUEST_RECORD_COLUMNS`): ``request`` (index in arrival order),
        ``arrival_s``, ``prompt_tokens``, ``output_tokens``, ``predicted_output_tokens``;
        ``start_s`` (first scheduled on a GPU), ``first_token_s``, ``completion_s`` (last token),
        all simulated seconds and ``nan`` until the event has happened by the current time (a
        static batch's end is known when it starts, but is not reported before it); then
        ``tokens_generated`` (output tokens produced so far), ``max_token_gap_s`` (longest gap
        between consecutive tokens of a completed request; ``nan`` where the server does not
        resolve token times, as in ``BatchScheduling-v0``), ``preemptions``,
        ``recomputed_tokens`` and ``prefix_hit_tokens`` (iteration level; 0 in
        ``BatchScheduling-v0``; see ``docs/metrics.md``), ``gpu`` and ``batch`` (-1 when
        none), ``status`` (``completed``, ``rejected``, ``in_system`` or ``not_arrived``; every
        request has exactly one) and ``reject_reason`` (``none``, ``exceeds_kv_capacity`` or
        ``prompt_exceeds_token_budget``).

        Raises:
            RuntimeError: Before the first ``reset``.
        """
        server = getattr(self, "server", None)
        if server is None:
            raise RuntimeError("call reset() before request_records()")
        records = server.records
        frame = records.to_frame(server.n_arrived)
        now = float(server.now)
        for column in ("start_s", "first_token_s", "completion_s"):
            values = frame[column].to_numpy(dtype=float)
            frame[column] = np.where(values <= now, values, np.nan)
        frame["tokens_generated"] = records.tokens_generated
        if not records.tracks_token_gaps:
            frame["max_token_gap_s"] = np.nan
        frame.insert(0, "request", np.arange(len(frame)))
        return frame[list(REQUEST_RECORD_COLUMNS)]


class InvalidActionError(ValueError):
    """An action inside the action space that the mask forbids (with ``invalid_action="raise"``)."""


@njit(cache=True)
def clip_in_place(obs: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
    """Clip ``obs`` to ``[low, high]`` in place (compiled: one loop instead of two ufuncs)."""
    for i in range(obs.shape[0]):
        obs[i] = max(min(obs[i], high[i]), low[i])


def holds_whole_numbers(a: np.ndarray) -> bool:
    """Whether ``a`` holds integers: an integer dtype, or floats that are all finite and whole.

    What every env accepts as an action's components (``[1.0, 2.0]`` is ``[1, 2]``); booleans,
    strings and objects are not.
    """
    if a.dtype.kind in "iu":
        return True
    return a.dtype.kind == "f" and bool(np.all(np.isfinite(a)) and np.all(np.mod(a, 1) == 0))


def holds_bools(values: Any) -> bool:
    """Whether a list or tuple (nested ones too) holds a ``bool`` among its items.

    numpy reads ``[True, 0]`` as the integers ``[1, 0]``; an action that holds a bool is refused
    as one of booleans is.
    """
    if not isinstance(values, list | tuple):
        return False
    return any(isinstance(v, bool | np.bool_) or holds_bools(v) for v in values)


def one_integer(action: Any) -> int | None:
    """``action`` as an ``int`` when it is one integer (a scalar or an array of one), else None.

    What a ``Discrete`` action may be (``2``, ``2.0``, ``[2]``, ``np.int64(2)``); booleans,
    strings, fractions and nested arrays are not. The caller names the fault.
    """
    # A Python int (alone or as the one item of a list) is taken as it is, also beyond int64,
    # which numpy would hold as an object.
    one = action[0] if isinstance(action, list | tuple) and len(action) == 1 else action
    if isinstance(one, int) and not isinstance(one, bool):
        return int(one)
    a = np.asarray(action)
    if a.ndim > 1 or a.size != 1 or not holds_whole_numbers(a):
        return None
    return int(a.reshape(-1)[0])


def parse_action(action: Any, nvec: tuple[int, ...]) -> tuple[int, ...]:
    """Check a ``MultiDiscrete(nvec)`` action and return its components as Python ints.

    Args:
        action: A sequence or array of integers, one per component.
        nvec: Number of values of each component.

    Returns:
        The components.

    Raises:
        ValueError: If the action has the wrong shape, is not integer-valued, or a component is
            out of range. This is raised whatever the ``invalid_action`` setting.

    Example:
        >>> parse_action([1, 2], (3, 4))
        (1, 2)
    """
    if type(action) is np.ndarray and action.dtype.kind in "iu" and action.shape == (len(nvec),):
        values = action.tolist()  # the common case (agents, baselines): no conversion needed
    else:
        a = np.asarray(action)
        if a.shape != (len(nvec),):
            raise ValueError(
                f"action {action!r} must have shape ({len(nvec)},), one integer per component of "
                f"MultiDiscrete({list(nvec)}); got shape {a.shape}"
            )
        python_ints = a.dtype.kind == "O" and all(  # integers too large for int64
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in a
        )
        if not python_ints and not holds_whole_numbers(a):
            raise ValueError(f"action {action!r} must hold integers, got dtype {a.dtype}")
        if holds_bools(action):
            raise ValueError(f"action {action!r} must hold integers, not booleans")
        values = [int(v) for v in a]
    if min(values) < 0 or not all(map(operator.lt, values, nvec)):
        i, v, n = next((i, v, n) for i, (v, n) in enumerate(zip(values, nvec)) if not 0 <= v < n)
        raise ValueError(
            f"action {action!r} is outside the action space: component {i} must be in "
            f"[0, {n - 1}], got {v}"
        )
    return tuple(values)


#: The options ``reset(options=...)`` of every scheduling env understands.
RESET_OPTIONS = ("start", "workload", "load", "arrival_cv")


def reset_options(options: Any) -> dict[str, Any]:
    """``reset``'s ``options`` as a dict (``None``: no options).

    Raises:
        ArgumentTypeError: If ``options`` is not a mapping (``set("abc")`` would read a string
            as the options ``a``, ``b`` and ``c``, and an empty list as none).
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ArgumentTypeError(
            f"options must be a dict of reset options (some of {list(RESET_OPTIONS)}) or None, "
            f"got {options!r}"
        )
    return dict(options)


def _positive_option(options: dict[str, Any], name: str) -> float:
    """The reset option ``name`` as a finite float > 0, or a ``ValueError`` naming it."""
    return arguments.real("", f"options[{name!r}]", options[name], positive=True)


def configured_arrival_rate(
    owner: str, arrival_rate: float | None, load: float, capacity_rps: float, n_requests: int
) -> float:
    """The env's arrival rate: ``arrival_rate``, else ``load`` times the capacity estimate.

    Raises:
        ValueError: If ``load * capacity_rps`` overflows, or if the rate spreads ``n_requests``
            requests over more than :data:`~llmsched_env.workload.MAX_ARRIVAL_S` seconds on
            average (event times would lose their resolution); the message names the argument.
    """
    rate = arrival_rate or load * capacity_rps
    name = f"arrival_rate={arrival_rate!r}" if arrival_rate else f"load={load!r}"
    _check_rate_for(owner, name, rate, n_requests)
    return rate


def _check_rate_for(owner: str, name: str, rate: float, n_requests: int) -> None:
    """Refuse an episode rate that overflows or is too low for ``n_requests`` (see above)."""
    if not np.isfinite(rate):
        raise ValueError(f"{owner}: {name} is too large: the arrival rate becomes {rate}")
    span = n_requests / rate
    if span > MAX_ARRIVAL_S:
        raise ValueError(
            f"{owner}: {name} is too low for n_requests={n_requests}: at {rate:.3g} requests/s "
            f"they arrive over about {span:.3g} s, beyond {MAX_ARRIVAL_S:.0e} s, where event "
            "times lose their microsecond resolution"
        )


def episode_arrival_rate(
    options: dict[str, Any],
    arrival_rate_rps: float,
    capacity_rps: float,
    owner: str = "env",
    n_requests: int = 1,
) -> float:
    """The arrival rate of a new episode: ``options["load"]`` times the capacity, if given.

    ``load * capacity_rps`` is computed exactly as the env's constructor computes it for its
    ``load`` argument, so ``reset(options={"load": x})`` and an env built with ``load=x`` draw
    the same episode, bit for bit.

    Args:
        options: ``reset`` options.
        arrival_rate_rps: The env's configured arrival rate (used without a ``load`` option).
        capacity_rps: The env's capacity estimate.
        owner: The env, for messages.
        n_requests: Requests per episode (a rate too low for them is refused).

    Raises:
        ValueError: If ``options["load"]`` is not a finite number > 0, or gives a rate that
            :func:`configured_arrival_rate` would refuse.
    """
    if "load" not in options:
        return arrival_rate_rps
    load = _positive_option(options, "load")
    rate = load * capacity_rps
    _check_rate_for(owner, f"options['load']={load!r}", rate, n_requests)
    return rate


class EpisodeSizeError(ValueError):
    """An episode asks for more requests than its trace source holds."""


def check_episode_size(owner: str, source: WorkloadSource, n_requests: int) -> None:
    """Refuse, when the env is built, episodes longer than a trace source can give.

    Raises:
        EpisodeSizeError: If ``source`` has an episode region (a trace's) shorter than
            ``n_requests`` requests; the message names the env, the trace and its size.
    """
    check = getattr(source, "check_n_requests", None)
    if check is not None:
        try:
            check(n_requests)
        except ValueError as error:
            raise EpisodeSizeError(f"{owner}: {error}") from None


def episode_workload(
    source: WorkloadSource,
    n_requests: int,
    rng: np.random.Generator,
    arrival_rate_rps: float,
    options: dict[str, Any],
) -> Workload:
    """The requests of a new episode, as ``reset(options=...)`` asks for them.

    Args:
        source: The env's workload source.
        n_requests: Requests per episode.
        rng: The env's random generator (seeded by ``reset``).
        arrival_rate_rps: Arrival rate to scale the source to (the episode's rate, see
            :func:`episode_arrival_rate`).
        options: ``reset`` options (:data:`RESET_OPTIONS`): ``{"start": i}`` replays the
            source's window at index ``i``; ``{"workload": w}`` serves the given
            :class:`Workload` (alone: not with ``start``, ``load`` or ``arrival_cv``);
            ``{"load": x}`` is read by :func:`episode_arrival_rate`;
            ``{"arrival_cv": c}`` replaces the arrival times by a Gamma renewal process at the
            same rate with gap coefficient of variation ``c``
            (:class:`~llmsched_env.workload.arrivals.GammaArrivals`, the process of the bursty
            scenario workloads), drawn from ``rng`` after the source's draws; lengths,
            predictions and prefix hashes are kept.

    Raises:
        ValueError: For an unknown option, a ``workload`` option that is not a ``Workload`` or
            given together with ``start``, ``load`` or ``arrival_cv``, or an ``arrival_cv``
            outside :data:`~llmsched_env.workload.arrivals.CV_RANGE`.
    """
    unknown = set(options) - set(RESET_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown reset options {sorted(unknown)}; expected some of {list(RESET_OPTIONS)}"
        )
    if "workload" in options:
        workload = options["workload"]
        if not isinstance(workload, Workload):
            raise ValueError(
                f"options['workload'] must be a Workload, got {type(workload).__name__}"
            )
        clash = sorted({"start", "load", "arrival_cv"} & set(options))
        if clash:
            raise ValueError(
                f"options['workload'] serves a given workload as it is; it cannot be combined "
                f"with {clash}"
            )
        return workload
    cv = _positive_option(options, "arrival_cv") if "arrival_cv" in options else None
    if cv is not None and not CV_RANGE[0] <= cv <= CV_RANGE[1]:
        raise ValueError(
            f"options['arrival_cv'] must be in [{CV_RANGE[0]:g}, {CV_RANGE[1]:g}] (the gap "
            f"coefficients of variation a Gamma draw resolves), got {cv!r}"
        )
    workload = source.sample(
        n_requests, rng, arrival_rate_rps=arrival_rate_rps, start=options.get("start")
    )
    if cv is None:
        return workload
    return workload.retimed(GammaArrivals(rate_rps=arrival_rate_rps, cv=cv), rng)
