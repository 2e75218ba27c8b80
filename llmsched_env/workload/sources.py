"""Workload sources: what an environment samples each episode's requests from.

A source answers three questions:

* ``sample(n_requests, rng, arrival_rate_rps=..., start=...)``: the requests of one episode,
  drawn only from ``rng`` (the environment's generator), so a seed fixes the episode.
* ``natural_rate_rps``: the source's own mean arrival rate; ``arrival_rate_rps`` rescales time
  relative to it (the "load" of an experiment).
* ``calibration()``: data a scheduler could have seen before the episode (to set bin edges or
  estimate capacity). It is deterministic and never drawn from the episode's generator, so it
  cannot leak the episode's future.

:class:`SyntheticSource` draws from distributions; :class:`TraceSource` replays windows of a
recorded trace.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from llmsched_env.workload._checks import check_float, check_int, check_rng
from llmsched_env.workload.arrivals import ArrivalProcess
from llmsched_env.workload.lengths import LengthDistribution
from llmsched_env.workload.predictors import (
    VALID_BY_CONSTRUCTION,
    OraclePredictor,
    OutputLengthPredictor,
)
from llmsched_env.workload.requests import (
    Workload,
    checked_predictions,
    checked_speedup,
)


@runtime_checkable
class WorkloadSource(Protocol):
    """What an environment needs from a workload source."""

    @property
    def name(self) -> str:
        """Name given to the sampled workloads (a preset name for presets)."""
        ...

    def sample(
        self,
        n_requests: int,
        rng: np.random.Generator,
        *,
        arrival_rate_rps: float | None = None,
        start: int | None = None,
    ) -> Workload:
        """Draw the requests of one episode."""
        ...

    @property
    def natural_rate_rps(self) -> float:
        """The source's own mean arrival rate in requests per second."""
        ...

    def calibration(self) -> Workload:
        """Deterministic data from before the episode, independent of the episode's generator."""
        ...


def _check_rate(arrival_rate_rps: float | None) -> float | None:
    if arrival_rate_rps is None:
        return None
    return check_float("arrival_rate_rps", arrival_rate_rps, positive=True)


@dataclass(frozen=True)
class SyntheticSource:
    """Requests drawn from an arrival process and token-length distributions.

    ``sample`` makes these vectorised draws from ``rng``, always in this order: ``n`` arrival
    times, ``n`` prompt lengths, ``n`` output lengths, then the predictor's draws. The same seed
    therefore gives the same workload bit for bit. Arrival times start at the first gap (the
    first request does not arrive at exactly 0 s).

    Attributes:
        name: Name given to the sampled workloads.
        arrivals: Arrival process; its ``rate_rps`` is :attr:`natural_rate_rps`.
        prompt: Prompt-length distribution.
        output: Output-length distribution.
        predictor: Output-length predictor.
        calibration_size: Number of requests in :meth:`calibration`, ``>= 1``.
        calibration_seed: Seed of the calibration generator.

    Example:
        >>> import numpy as np
        >>> from llmsched_env.workload.arrivals import PoissonArrivals
        >>> from llmsched_env.workload.lengths import Fixed
        >>> source = SyntheticSource("toy", PoissonArrivals(2.0), Fixed(16), Fixed(8))
        >>> w = source.sample(5, np.random.default_rng(0), arrival_rate_rps=4.0)
        >>> len(w), w.prompt_tokens.tolist()
        (5, [16, 16, 16, 16, 16])
    """

    name: str
    arrivals: ArrivalProcess
    prompt: LengthDistribution
    output: LengthDistribution
    predictor: OutputLengthPredictor = OraclePredictor()
    calibration_size: int = 4096
    calibration_seed: int = 12345

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {self.name!r}")
        for field, kind, protocol in (
            ("arrivals", "an arrival process with sample_times()", ArrivalProcess),
            ("prompt", "a length distribution with sample() and mean", LengthDistribution),
            ("output", "a length distribution with sample() and mean", LengthDistribution),
            ("predictor", "a predictor with predict()", OutputLengthPredictor),
        ):
            value = getattr(self, field)
            if not isinstance(value, protocol):
                raise TypeError(f"{field} must be {kind}, got {value!r}")
        size = check_int("calibration_size", self.calibration_size, minimum=1)
        object.__setattr__(self, "calibration_size", size)
        seed = check_int("calibration_seed", self.calibration_seed, minimum=0)
        object.__setattr__(self, "calibration_seed", seed)

    @property
    def natural_rate_rps(self) -> float:
        """The arrival process's mean rate in requests per second."""
        return float(self.arrivals.rate_rps)

    def sample(
        self,
        n_requests: int,
        rng: np.random.Generator,
        *,
        arrival_rate_rps: float | None = None,
        start: int | None = None,
    ) -> Workload:
        """Draw ``n_requests`` requests.

        Args:
            n_requests: Number of requests, ``>= 1``.
            rng: The episode's generator.
            arrival_rate_rps: Arrival rate to use instead of :attr:`natural_rate_rps` (the
                process keeps its shape).
            start: Must be ``None``: a synthetic source has no fixed sequence to index into.

        Returns:
            The sampled workload.

        Raises:
            ValueError: If ``start`` is given or an argument is out of range.
        """
        if start is not None:
            raise ValueError(
                f"start selects a window of a trace; synthetic source {self.name!r} has no fixed "
                f"request sequence to index, so start must be None, got {start!r}"
            )
        n = check_int("n_requests", n_requests, minimum=1)
        rng = check_rng(rng)
        rate = _check_rate(arrival_rate_rps)
        arrival_s = self.arrivals.sample_times(n, rng, rate_rps=rate)
        prompt = self.prompt.sample(n, rng)
        output = self.output.sample(n, rng)
        predicted = self.predictor.predict(prompt, output, rng)
        return Workload(arrival_s, prompt, output, predicted, name=self.name)

    def calibration(self) -> Workload:
        """Return ``calibration_size`` requests drawn from ``Generator(calibration_seed)``.

        The generator is created afresh on each call, so the result never depends on episodes.
        """
        return self.sample(self.calibration_size, np.random.default_rng(self.calibration_seed))


@dataclass(frozen=True, eq=False)
class TraceSource:
    """Episodes are windows of consecutive requests from a recorded trace.

    The first ``floor(calibration_fraction * n)`` requests of the trace are its history, returned
    by :meth:`calibration`; episodes come only from the remaining requests (the episode region),
    so calibration never sees an episode's requests.

    ``sample`` takes ``n_requests`` consecutive requests of the episode region starting at
    ``start`` (an index within the region), or at a start drawn uniformly from the valid starts
    with ``rng.integers`` when ``start`` is ``None``. Arrivals are rebased to 0 s and, when
    ``arrival_rate_rps`` is given, divided by ``arrival_rate_rps / natural_rate_rps``, which keeps
    the trace's burst structure. Predictions are then drawn with the predictor from ``rng``
    (replacing the trace's own ``predicted_output_tokens``).

    Attributes:
        name: Name given to the sampled workloads.
        trace: The whole trace.
        predictor: Output-length predictor.
        calibration_fraction: Share of the trace used as history, in ``(0, 1)``.
        calibration_seed: Seed of the generator used for the calibration data's predictions.
    """

    name: str
    trace: Workload
    predictor: OutputLengthPredictor = OraclePredictor()
    calibration_fraction: float = 0.2
    calibration_seed: int = 12345

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {self.name!r}")
        if not isinstance(self.trace, Workload):
            raise TypeError(f"trace must be a Workload, got {type(self.trace).__name__}")
        if not isinstance(self.predictor, OutputLengthPredictor):
            raise TypeError(f"predictor must have predict(), got {self.predictor!r}")
        fraction = check_float("calibration_fraction", self.calibration_fraction)
        if not 0.0 < fraction < 1.0:  # 1 would leave no trace any request for episodes
            raise ValueError(
                f"calibration_fraction must be in (0, 1) (the history's share of the trace; the "
                f"rest is the episode region), got {fraction!r}"
            )
        object.__setattr__(self, "calibration_fraction", fraction)
        seed = check_int("calibration_seed", self.calibration_seed, minimum=0)
        object.__setattr__(self, "calibration_seed", seed)
        n = len(self.trace)
        if not 1 <= self.calibration_size < n:
            # The fewest requests whose floor(fraction * n) is at least 1 (and then below n).
            fewest = max(math.ceil(1.0 / fraction - 1e-9), 2)
            raise ValueError(
                f"calibration_fraction={fraction} of a {n}-request trace gives "
                f"{self.calibration_size} calibration requests and leaves "
                f"{n - self.calibration_size} for episodes; both the history and the episode "
                f"region need at least one, so the trace needs at least {fewest} requests"
            )
        rate = self.trace.mean_rate_rps
        if not np.isfinite(rate) or rate <= 0:
            raise ValueError(
                f"trace must span a positive time to define its natural rate, got "
                f"mean_rate_rps={rate}"
            )

    @property
    def calibration_size(self) -> int:
        """Number of history requests, ``floor(calibration_fraction * len(trace))``."""
        return int(self.calibration_fraction * len(self.trace))

    @property
    def max_episode_requests(self) -> int:
        """Number of requests in the episode region (the largest possible ``n_requests``)."""
        return len(self.trace) - self.calibration_size

    def check_n_requests(self, n_requests: int) -> int:
        """``n_requests`` if the episode region holds that many requests.

        Raises:
            ValueError: If it is not an integer >= 1, or more than :attr:`max_episode_requests`.
        """
        n = check_int("n_requests", n_requests, minimum=1)
        available = self.max_episode_requests
        if n > available:
            raise ValueError(
                f"n_requests={n} is more than the {available} requests in the episode region of "
                f"trace source {self.name!r} ({len(self.trace)} requests, the first "
                f"{self.calibration_size} reserved for calibration)"
            )
        return n

    @functools.cached_property
    def natural_rate_rps(self) -> float:
        """Mean arrival rate of the whole trace in requests per second (its trace is fixed)."""
        return self.trace.mean_rate_rps

    def sample(
        self,
        n_requests: int,
        rng: np.random.Generator,
        *,
        arrival_rate_rps: float | None = None,
        start: int | None = None,
    ) -> Workload:
        """Return a window of ``n_requests`` consecutive requests from the episode region.

        Args:
            n_requests: Window length, ``1 <= n_requests <= max_episode_requests``.
            rng: The episode's generator (window start when ``start`` is None, predictions).
            arrival_rate_rps: Replay at this rate instead of the trace's own: arrivals are
                scaled by ``arrival_rate_rps / natural_rate_rps``, the whole trace's rate, so a
                window keeps its part of the trace's ups and downs (windows of the busier
                episode region arrive a little faster than ``arrival_rate_rps``: 1.06x on
                ``azure-conv``, see docs/workloads.md).
            start: Index of the first request within the episode region, or ``None`` for a
                uniformly random start.

        Returns:
            The window, arrivals rebased to 0 s.

        Raises:
            ValueError: If the window does not fit in the episode region, or if scaled it
                spans more than :data:`~llmsched_env.workload.requests.MAX_ARRIVAL_S`.
        """
        lo, speedup = self.draw_window(
            n_requests, rng, arrival_rate_rps=arrival_rate_rps, start=start
        )
        # The window, rebased and scaled, as Workload.window and time_scaled make it, without
        # their argument checks (draw_window checked the bounds and the span).
        trace = self.trace
        n = int(n_requests)
        hi = lo + n
        arrival_s = trace.arrival_s[lo:hi]
        arrival_s = arrival_s - arrival_s[0]
        if speedup is not None:
            arrival_s = arrival_s / speedup
        prompt = trace.prompt_tokens[lo:hi]
        output = trace.output_tokens[lo:hi]
        predicted = self.predictor.predict(prompt, output, rng)
        if type(self.predictor).predict not in VALID_BY_CONSTRUCTION:
            predicted = checked_predictions(predicted, n)
        return Workload._derived(
            arrival_s,
            prompt,
            output,
            predicted,
            self.name,
            **trace._prefix_kwargs(slice(lo, hi)),
        )

    def draw_window(
        self,
        n_requests: int,
        rng: np.random.Generator,
        *,
        arrival_rate_rps: float | None = None,
        start: int | None = None,
    ) -> tuple[int, float | None]:
        """Where :meth:`sample`'s window lies and how its arrivals are scaled.

        Draws what :meth:`sample` draws before its predictions (the window's start, when
        ``start`` is None), for code that cuts the window itself (the compiled vector env).
        The arguments are :meth:`sample`'s.

        Returns:
            ``(lo, speedup)``: the window is the trace's requests ``lo .. lo + n_requests - 1``;
            its arrivals, rebased to 0 s, are divided by ``speedup`` (``None``: not scaled).

        Raises:
            ValueError: As :meth:`sample`.
        """
        n = self.check_n_requests(n_requests)
        rng = check_rng(rng)
        rate = _check_rate(arrival_rate_rps)
        available = self.max_episode_requests
        last_start = available - n
        if start is None:
            offset = int(rng.integers(0, last_start, endpoint=True))
        else:
            offset = check_int("start", start, minimum=0)
            if offset > last_start:
                raise ValueError(
                    f"start must be <= {last_start} so that n_requests={n} requests fit in the "
                    f"{available}-request episode region, got {offset}"
                )
        lo = self.calibration_size + offset
        if rate is None:
            return lo, None
        arrival_s = self.trace.arrival_s
        span = float(arrival_s[lo + n - 1] - arrival_s[lo])  # the rebased window's last arrival
        return lo, checked_speedup(span, self.speedup_for(rate))

    def speedup_for(self, arrival_rate_rps: float) -> float:
        """What a window's arrivals are divided by to replay at ``arrival_rate_rps``."""
        return arrival_rate_rps / self.natural_rate_rps

    def calibration(self) -> Workload:
        """Return the history: the first :attr:`calibration_size` requests, rebased to 0 s.

        Predictions come from the predictor with a fresh ``Generator(calibration_seed)``. The
        history keeps the trace's prefix-block hashes (Mooncake's), so that an env can check its
        KV blocks against them when it is made rather than at its first reset.
        """
        history = self.trace.window(0, self.calibration_size, rebase=True)
        rng = np.random.default_rng(self.calibration_seed)
        predicted = self.predictor.predict(history.prompt_tokens, history.output_tokens, rng)
        return Workload(
            history.arrival_s,
            history.prompt_tokens,
            history.output_tokens,
            predicted,
            self.name,
            **history._prefix_kwargs(),
        )
