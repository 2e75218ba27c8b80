"""The stability boundary lambda*: the largest arrival rate served without a growing backlog.

A queue is stable at arrival rate lambda when the number of requests in the system, ``N(t)``,
stays bounded; past lambda* it grows linearly at the rate ``lambda - throughput``. This module
estimates lambda* for a scheduling policy on ``ContinuousBatching-v0`` by:

1. **A drift test at one rate.** ``replications`` independent runs of ``horizon_s`` simulated
   seconds of Poisson arrivals (seeds ``seed ..``, the same at every rate; a rate's runs hold
   ``ceil(rate * horizon_s)`` requests, so different rates draw different requests). In each
   run ``N(t)`` is rebuilt from the request records on a grid of the window
   ``[warmup_fraction * T, T]`` (``T`` the last arrival), and its least-squares slope is
   divided by lambda: the *drift*, the share of arrivals that accumulate. A stable system has
   drift 0 after warm-up, an unstable one
   ``1 - throughput / lambda > 0``. The rate is judged unstable when the mean drift over the
   replications exceeds ``drift_threshold`` (default 1%); its 95% confidence interval (Student t)
   is reported beside it. A request rejected at arrival leaves at once, so it adds no drift:
   the share rejected is reported beside the drift (a rate where many are is not one the
   system serves).
2. **Bisection on lambda.** A bracket ``[low, high]`` (default: 0.25 and 1.25 times the
   capacity estimate of :func:`capacity_estimate_rps`) is widened until ``low`` is stable and
   ``high`` unstable, then halved until ``high - low <= rel_tol * high``. lambda* is the
   bracket's midpoint and the bracket its interval.
3. **A cross-check in overload.** Past lambda* the queue never empties and the system runs in
   its saturated mode, so the throughput measured at the highest tested rate estimates the
   capacity directly (the fluid limit: lambda* equals the saturated throughput when the service
   rate does not fall as the backlog grows).

``docs/stability.md`` explains the choices (why a slope after warm-up and a threshold, rather
than "response time grows with run length") and their errors, and tabulates lambda* per policy.

Example:
    >>> settings = StabilitySettings(horizon_s=300.0, replications=2, rel_tol=0.2)
    >>> result = estimate_stability(
    ...     "run-to-completion",
    ...     {"workload": "mm1", "latency": "mm1", "chunk_size": None},
    ...     settings,
    ... )  # M/M/1 with mean service 0.4 s: lambda* = 2.5 requests/s
    >>> 1.9 < result.lambda_star_rps < 3.2
    True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from llmsched_env import arguments
from llmsched_env.capacity import per_arrival, saturated_iteration_rps
from llmsched_env.config import check_int, check_positive
from llmsched_env.envs.common import EpisodeSizeError
from llmsched_env.envs.footprint import CONTINUOUS_BYTES_PER_REQUEST, check_episode_fits
from llmsched_env.evaluation import mean_ci
from llmsched_env.kinds import ENV_KINDS
from llmsched_env.parallel import check_n_jobs, run_jobs

ENV_ID = ENV_KINDS["continuous"].env_id
PolicySpec = str | Callable[[gym.Env], Any]
_GRID_POINTS = 512


#: The fewest requests a drift test's run may hold after its warm-up (``floor(n * (1 -
#: warmup_fraction))`` of its ``n``): with fewer, the growth of the number in system cannot be
#: told from noise (a 1 s horizon put lambda* of an M/M/1 queue at 3.5 req/s,
#: 40% above its service rate, with a drift interval 1,900 times the threshold).
MIN_REQUESTS_PER_RUN = 100
#: The narrowest bracket the bisection aims for, relative to its upper end: no drift test
#: tells rates this close apart, and far narrower ends meet at adjacent floats, whose midpoint
#: is one of them (the bisection would never end).
MIN_REL_TOL = 1e-6


@dataclass(frozen=True)
class StabilitySettings:
    """How each arrival rate is tested and when the bisection stops.

    Attributes:
        horizon_s: Simulated seconds of arrivals per run (``ceil(lambda * horizon_s)`` requests).
        warmup_fraction: Share of the horizon discarded before the drift is measured.
        replications: Independent runs per arrival rate (seeds ``seed .. seed + replications - 1``,
            the same at every rate).
        drift_threshold: Mean drift (growth of the number in system per arrival) above which a
            rate is unstable.
        rel_tol: Stop when the bracket's width is at most ``rel_tol`` times its upper end (at
            least :data:`MIN_REL_TOL`).
        grid_points: Extra rates, evenly spaced over ``(0, 1.2 * high]``, tested for the curve.
        max_expansions: Most times the initial bracket is widened (x1.5 up, /2 down).
        seed: First seed.
        n_jobs: Worker processes for the replications (1 runs in this process).
    """

    horizon_s: float = 2000.0
    warmup_fraction: float = 0.25
    replications: int = 3
    drift_threshold: float = 0.01
    rel_tol: float = 0.02
    grid_points: int = 0
    max_expansions: int = 8
    seed: int = 0
    n_jobs: int = 1

    def __post_init__(self) -> None:
        check_positive("horizon_s", self.horizon_s)
        for name, low, high, low_allowed in (
            ("warmup_fraction", 0.0, 0.9, True),
            ("drift_threshold", 0.0, 1.0, False),
            ("rel_tol", MIN_REL_TOL, 1.0, True),
        ):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not (low < value < high or (low_allowed and value == low)):
                interval = f"{'[' if low_allowed else '('}{low}, {high})"
                raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
        for name, low in (("replications", 2), ("grid_points", 0), ("max_expansions", 0)):
            check_int(name, getattr(self, name), low)
        check_int("seed", self.seed, 0)
        check_n_jobs(self.n_jobs)


def requests_per_run(arrival_rate_rps: float, settings: StabilitySettings) -> int:
    """Requests in one drift-test run at this rate: those arriving in the horizon (at least 2)."""
    return max(math.ceil(arrival_rate_rps * settings.horizon_s), 2)


@dataclass(frozen=True)
class DriftPoint:
    """The drift test at one arrival rate (means over replications, 95% CI half-widths).

    Attributes:
        arrival_rate_rps: The tested arrival rate.
        stable: Whether the mean drift is at most the threshold.
        drift_per_arrival: Slope of ``N(t)`` after warm-up divided by the arrival rate.
        drift_ci95: Its 95% confidence half-width.
        throughput_rps: Completions per second in the measurement window.
        throughput_ci95: Its 95% confidence half-width.
        mean_in_system: Time-average number of requests in the system in the window.
        end_in_system: Requests in the system at the end of the horizon.
        response_s_mean: Mean response time of the window's arrivals that completed (biased low
            when unstable: the slowest have not completed).
        replications: Number of runs.
        n_requests: Requests per run.
        rejected_fraction: Mean share of the requests rejected at arrival (they leave at once,
            adding no drift: a rate where many are is not one the system serves).
    """

    arrival_rate_rps: float
    stable: bool
    drift_per_arrival: float
    drift_ci95: float
    throughput_rps: float
    throughput_ci95: float
    mean_in_system: float
    end_in_system: float
    response_s_mean: float
    replications: int
    n_requests: int
    rejected_fraction: float = 0.0


#: Why lambda* with rejected requests is not a rate the system serves.
REJECTED_NOTE = (
    "they leave at once and add no drift, so lambda* counts them as served; the throughput in "
    "overload is what the system serves"
)


@dataclass(frozen=True)
class StabilityResult:
    """lambda* with its bracket, and every tested rate.

    Attributes:
        policy: Name of the policy.
        lambda_star_rps: Estimate of the largest stable arrival rate (the bracket's midpoint).
        lambda_low_rps: Largest rate judged stable by the bisection.
        lambda_high_rps: Smallest rate judged unstable by the bisection.
        capacity_estimate_rps: The capacity estimate the bracket started from
            (:func:`capacity_estimate_rps`).
        points: Every tested rate, sorted by rate.
        settings: The settings used.
    """

    policy: str
    lambda_star_rps: float
    lambda_low_rps: float
    lambda_high_rps: float
    capacity_estimate_rps: float
    points: tuple[DriftPoint, ...]
    settings: StabilitySettings = field(repr=False)

    @property
    def inconsistent_rates(self) -> list[float]:
        """Tested rates contradicting monotonicity: unstable below the bracket or stable above."""
        return [
            p.arrival_rate_rps
            for p in self.points
            if (not p.stable and p.arrival_rate_rps < self.lambda_low_rps)
            or (p.stable and p.arrival_rate_rps > self.lambda_high_rps)
        ]

    @property
    def overload_point(self) -> DriftPoint:
        """The highest tested rate, always unstable: its throughput estimates the capacity."""
        return self.points[-1]

    def to_frame(self) -> pd.DataFrame:
        """The curve: one row per tested rate."""
        return pd.DataFrame([asdict(p) for p in self.points])

    def describe(self) -> str:
        """One line: lambda*, its interval and the throughput in overload.

        With the largest share of requests rejected at arrival, if any was
        (:data:`REJECTED_NOTE` says why it matters).
        """
        over = self.overload_point
        text = (
            f"{self.policy}: lambda* = {self.lambda_star_rps:.3f} req/s (stable at "
            f"{self.lambda_low_rps:.3f}, unstable at {self.lambda_high_rps:.3f}); throughput "
            f"{over.throughput_rps:.3f} +/- {over.throughput_ci95:.3f} req/s at "
            f"{over.arrival_rate_rps:.3f} req/s"
        )
        rejected = self.rejected_fraction
        if rejected > 0:
            text += f"; up to {rejected:.1%} rejected at arrival"
        return text

    @property
    def rejected_fraction(self) -> float:
        """The largest share of requests rejected at arrival at any tested rate."""
        return max(p.rejected_fraction for p in self.points)


def number_in_system(
    arrival_s: np.ndarray, departure_s: np.ndarray, times_s: np.ndarray
) -> np.ndarray:
    """Requests in the system at each of ``times_s``: arrived minus departed by then.

    Args:
        arrival_s: Arrival times (sorted).
        departure_s: Departure times (completion, or arrival for a rejected request; ``nan`` for
            requests still in the system).
        times_s: Where to evaluate.

    Returns:
        ``N(t)`` at each time, as floats.

    Example:
        >>> number_in_system(np.array([0.0, 1.0, 2.0]), np.array([1.5, np.nan, 2.5]),
        ...                  np.array([0.5, 1.5, 2.2, 3.0]))
        array([1., 1., 2., 1.])
    """
    departures = np.sort(departure_s[np.isfinite(departure_s)])
    arrived = np.searchsorted(arrival_s, times_s, side="right")
    departed = np.searchsorted(departures, times_s, side="right")
    return (arrived - departed).astype(float)


def _build_policy(spec: PolicySpec, env: gym.Env, kwargs: dict[str, Any]) -> Any:
    if isinstance(spec, str):
        from baselines import make_policy

        return make_policy(spec, env, **kwargs)
    return spec(env)


@dataclass(frozen=True)
class _Run:
    """One replication at one rate (picklable, for worker processes)."""

    policy: PolicySpec
    policy_kwargs: dict[str, Any]
    env_kwargs: dict[str, Any]
    arrival_rate_rps: float
    n_requests: int
    warmup_fraction: float
    seed: int


def _run_replication(run: _Run) -> dict[str, float]:
    """Run one episode up to its last arrival and measure the drift of ``N(t)``."""
    kwargs = {**run.env_kwargs, "arrival_rate": run.arrival_rate_rps, "n_requests": run.n_requests}
    env = gym.make(ENV_ID, **kwargs)
    try:
        policy = _build_policy(run.policy, env, run.policy_kwargs)
        obs, info = env.reset(seed=run.seed)
        policy.reset()
        # The measurement reads the episode's request records (arrival and departure times);
        # the policy sees only observations and info, like any other.
        server = env.unwrapped.server
        arrival = server.workload.arrival_s
        end_s = float(arrival[-1])
        terminated = truncated = False
        while info["time_s"] < end_s and not (terminated or truncated):
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        records = server.records
        rejected = records.reject_reason != 0
        departure = np.where(rejected, arrival, records.completion_s)
    finally:
        env.close()
    start_s = run.warmup_fraction * end_s
    times = np.linspace(start_s, end_s, _GRID_POINTS)
    n = number_in_system(arrival, departure, times)
    slope = float(np.polyfit(times, n, 1)[0]) if end_s > start_s else math.nan
    window = end_s - start_s
    completion = records.completion_s
    done_in_window = (completion > start_s) & (completion <= end_s)
    arrived_in_window = (arrival >= start_s) & np.isfinite(completion) & (completion <= end_s)
    response = completion[arrived_in_window] - arrival[arrived_in_window]
    return {
        "drift": slope / run.arrival_rate_rps,
        "throughput": float(np.count_nonzero(done_in_window)) / window if window > 0 else math.nan,
        "mean_in_system": float(n.mean()),
        "end_in_system": float(n[-1]),
        "response": float(response.mean()) if response.size else math.nan,
        "rejected": float(rejected.mean()),
    }


def drift_test(
    policy: PolicySpec,
    arrival_rate_rps: float,
    env_kwargs: dict[str, Any] | None = None,
    settings: StabilitySettings | None = None,
    *,
    policy_kwargs: dict[str, Any] | None = None,
) -> DriftPoint:
    """Test whether ``policy`` keeps the number in system from growing at ``arrival_rate_rps``.

    Args:
        policy: A baseline name (``baselines.make_policy``) or a callable ``env -> policy``.
        arrival_rate_rps: The arrival rate to test, in requests per second.
        env_kwargs: ``gym.make`` keyword arguments of ``ContinuousBatching-v0`` (without
            ``arrival_rate``, ``load`` and ``n_requests``, which the test sets).
        settings: Horizon, warm-up, replications and threshold.
        policy_kwargs: Keyword arguments of the named baseline.

    Returns:
        The drift point: means and 95% CI half-widths over the replications.

    Raises:
        ValueError: If the rate is not a finite number > 0, ``env_kwargs`` sets a key the
            test owns, or the runs need more requests than fit in memory or than the
            workload's trace holds.
    """
    settings = settings or StabilitySettings()
    env_kwargs = _check_env_kwargs(env_kwargs)
    arrival_rate_rps = arguments.real(
        "drift_test", "arrival_rate_rps", arrival_rate_rps, positive=True
    )
    n_requests = requests_per_run(arrival_rate_rps, settings)
    try:
        check_episode_fits(ENV_ID, n_requests, CONTINUOUS_BYTES_PER_REQUEST)
    except ValueError:
        raise ValueError(
            f"the drift test at {arrival_rate_rps:.4g} req/s over horizon_s="
            f"{settings.horizon_s:g} needs {float(n_requests):.4g} requests per run, more than "
            "fit in memory: give a shorter horizon_s (or a lower rate)"
        ) from None
    kwargs = dict(policy_kwargs or {})
    rate = float(arrival_rate_rps)
    runs = [
        _Run(policy, kwargs, env_kwargs, rate, n_requests, settings.warmup_fraction, seed)
        for seed in range(settings.seed, settings.seed + settings.replications)
    ]
    try:
        rows = run_jobs(_run_replication, runs, settings.n_jobs)
    except EpisodeSizeError as error:
        raise ValueError(
            f"the drift test at {rate:.4g} req/s over horizon_s={settings.horizon_s:g} needs "
            f"{n_requests} requests per run, more than its trace holds ({error}); give a "
            "shorter horizon_s, or a synthetic workload"
        ) from None
    (drift, drift_half), (throughput, throughput_half) = (
        mean_ci([r[key] for r in rows]) for key in ("drift", "throughput")
    )
    return DriftPoint(
        arrival_rate_rps=rate,
        stable=bool(drift <= settings.drift_threshold),
        drift_per_arrival=drift,
        drift_ci95=drift_half,
        throughput_rps=throughput,
        throughput_ci95=throughput_half,
        mean_in_system=float(np.mean([r["mean_in_system"] for r in rows])),
        end_in_system=float(np.mean([r["end_in_system"] for r in rows])),
        response_s_mean=_mean_of_known([r["response"] for r in rows]),
        replications=settings.replications,
        n_requests=n_requests,
        rejected_fraction=float(np.mean([r["rejected"] for r in rows])),
    )


def _mean_of_known(values: list[float]) -> float:
    """The mean of the values that are not ``nan`` (``nan`` if none is)."""
    known = [v for v in values if not math.isnan(v)]
    return float(np.mean(known)) if known else math.nan


def _check_env_kwargs(env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    env_kwargs = dict(env_kwargs or {})
    owned = sorted({"arrival_rate", "load", "n_requests", "max_steps"} & set(env_kwargs))
    if owned:
        raise ValueError(
            f"env_kwargs must not set {owned}: the stability test chooses the arrival rate and "
            "the number of requests itself, and runs each episode to its last arrival (its "
            "length is the horizon)"
        )
    return env_kwargs


def capacity_estimate_rps(env_kwargs: dict[str, Any] | None = None) -> float:
    """Where the search for lambda* starts: an estimate of the capacity of the env's GPUs.

    The smaller of the env's own estimate (``capacity_rps``, the work bound that ``load`` is a
    fraction of) and :func:`llmsched_env.capacity.saturated_iteration_rps`, which also charges
    the per-iteration cost. The work bound alone can be far too high: on the H100 latency
    model (``llama3.1-8b-h100``, 5.75 ms per iteration, 256 sequences) with the ``demo2``
    workload it is 367 req/s,
    while prefill-first serves 108 (the saturated estimate is 161), and a bracket that starts
    there simulates millions of requests per tested rate.

    Args:
        env_kwargs: ``gym.make`` keyword arguments of ``ContinuousBatching-v0``.
    """
    env = gym.make(ENV_ID, **dict(env_kwargs or {}))
    try:
        unwrapped = env.unwrapped
        cfg = unwrapped.config
        # Of the requests served, per arrival as the env's own estimate (capacity.per_arrival).
        saturated = per_arrival(
            saturated_iteration_rps(
                unwrapped.latency,
                unwrapped.capacity_calibration,
                n_gpus=cfg.n_gpus,
                max_sequences=cfg.max_sequences,
                max_tokens=cfg.max_tokens,
                kv_capacity_tokens=unwrapped.kv_capacity_tokens,
            ),
            unwrapped.capacity_served,
        )
        return float(min(unwrapped.capacity_rps, saturated))
    finally:
        env.close()


def estimate_stability(
    policy: PolicySpec,
    env_kwargs: dict[str, Any] | None = None,
    settings: StabilitySettings | None = None,
    *,
    policy_kwargs: dict[str, Any] | None = None,
    low_rps: float | None = None,
    high_rps: float | None = None,
    progress: Callable[[DriftPoint], None] | None = None,
    announce: Callable[[str], None] | None = None,
) -> StabilityResult:
    """Estimate the largest stable arrival rate lambda* of ``policy`` by bisection.

    Args:
        policy: A baseline name or a callable ``env -> policy``.
        env_kwargs: ``gym.make`` keyword arguments of ``ContinuousBatching-v0`` (workload,
            latency, limits...), without the arrival rate and request count.
        settings: Drift test and bisection settings.
        policy_kwargs: Keyword arguments of the named baseline.
        low_rps: Start of the bracket (default: 0.25 times :func:`capacity_estimate_rps`).
        high_rps: End of the bracket (default: 1.25 times the capacity estimate).
        progress: Called with every tested point.
        announce: Told, in one line, the bracket and each rate before it is tested (a rate
            can take minutes).

    Returns:
        lambda* with its bracket and the curve of every tested rate.

    Raises:
        ValueError: If the bracket is invalid, no stable (unstable) rate is found after
            ``max_expansions`` widenings, or the search reaches a rate whose runs would hold
            fewer than :data:`MIN_REQUESTS_PER_RUN` requests after warm-up (a horizon too
            short to tell; a grid point that short is only warned of).
    """
    settings = settings or StabilitySettings()
    env_kwargs = _check_env_kwargs(env_kwargs)
    capacity = capacity_estimate_rps(env_kwargs)
    owner = "estimate_stability"
    low = (
        0.25 * capacity
        if low_rps is None
        else arguments.real(owner, "low_rps", low_rps, positive=True)
    )
    high = (
        1.25 * capacity
        if high_rps is None
        else arguments.real(owner, "high_rps", high_rps, positive=True)
    )
    if not 0 < low < high:
        default = {"low_rps": low_rps is None, "high_rps": high_rps is None}
        shown = [
            f"{name}={value!r}"
            + (f" (the default, {factor} x the capacity estimate)" if default[name] else "")
            for name, value, factor in (("low_rps", low, 0.25), ("high_rps", high, 1.25))
        ]
        raise ValueError(f"need 0 < low_rps < high_rps, got {', '.join(shown)}")
    if announce:
        announce(
            f"capacity estimate {capacity:.4g} req/s; searching from [{low:.4g}, {high:.4g}] "
            f"req/s, {settings.replications} runs of {settings.horizon_s:g} simulated s per rate"
        )
    points: dict[float, DriftPoint] = {}

    def test(rate: float, *, for_the_curve: bool = False) -> bool:
        if rate not in points:
            n = requests_per_run(rate, settings)
            # Rounded first: 500 * (1 - 0.8) is 99.99999999999997 in floating point.
            measured = math.floor(round(n * (1.0 - settings.warmup_fraction), 9))
            if measured < MIN_REQUESTS_PER_RUN:
                message = (
                    f"the drift test at {rate:.4g} req/s sees only about {measured} requests per "
                    f"run after warm-up (horizon_s={settings.horizon_s:g}, warmup_fraction="
                    f"{settings.warmup_fraction:g}); it needs at least {MIN_REQUESTS_PER_RUN} to "
                    "tell growth from noise: give a longer horizon_s (or a shorter warm-up)"
                )
                if not for_the_curve:
                    raise ValueError(message)
                warnings.warn(message + " (this curve point is unreliable)", stacklevel=3)
            if announce:
                announce(f"testing {rate:.6g} req/s ({settings.replications} x {n:,} requests)")
            points[rate] = drift_test(
                policy, rate, env_kwargs, settings, policy_kwargs=policy_kwargs
            )
            if progress:
                progress(points[rate])
        return points[rate].stable

    for _ in range(settings.max_expansions + 1):
        if not test(high):
            break
        low, high = high, 1.5 * high
    else:
        raise ValueError(f"still stable at {high / 1.5:.4g} req/s; give a larger high_rps")
    for _ in range(settings.max_expansions + 1):
        if test(low):
            break
        low, high = low / 2, low
    else:
        raise ValueError(f"still unstable at {2 * low:.4g} req/s; give a smaller low_rps")
    while high - low > settings.rel_tol * high:
        mid = 0.5 * (low + high)
        if test(mid):
            low = mid
        else:
            high = mid
    for rate in np.linspace(1.2 * high, 0, settings.grid_points, endpoint=False)[::-1]:
        test(float(rate), for_the_curve=True)
    name = policy if isinstance(policy, str) else getattr(policy, "name", type(policy).__name__)
    return StabilityResult(
        policy=str(name),
        lambda_star_rps=0.5 * (low + high),
        lambda_low_rps=low,
        lambda_high_rps=high,
        capacity_estimate_rps=capacity,
        points=tuple(points[r] for r in sorted(points)),
        settings=settings,
    )
