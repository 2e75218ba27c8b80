"""Arrival processes: when requests reach the system.

Every process is a renewal process described by its inter-arrival gaps. ``sample_times(n, rng)``
returns the first ``n`` arrival times as the cumulative sum of ``n`` independent gaps, so the first
request arrives after one gap (not at time 0), as in a stationary stream observed from time 0.

The optional ``rate_rps`` argument of ``sample_times`` rescales the process to another mean rate
while keeping its shape (the coefficient of variation of the gaps); a workload source uses it to
offer the same traffic pattern at a different load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from llmsched_env.workload._checks import check_count, check_float, check_rng


@runtime_checkable
class ArrivalProcess(Protocol):
    """What a workload source needs from an arrival process."""

    @property
    def rate_rps(self) -> float:
        """Mean arrival rate in requests per second (the reciprocal of the mean gap)."""
        ...

    def sample_times(
        self, n: int, rng: np.random.Generator, rate_rps: float | None = None
    ) -> np.ndarray:
        """Draw the first ``n`` arrival times in seconds (float64, non-decreasing)."""
        ...


def _rate(default_rps: float, override_rps: float | None) -> float:
    """Return the rate to sample at: the override when given (checked), else the default."""
    if override_rps is None:
        return default_rps
    return check_float("rate_rps", override_rps, positive=True)


#: The coefficients of variation :class:`GammaArrivals` accepts (see its ``cv``).
CV_RANGE = (1e-3, 1e3)


@dataclass(frozen=True)
class PoissonArrivals:
    """Poisson arrivals: independent exponential gaps with mean ``1 / rate_rps``.

    Attributes:
        rate_rps: Mean arrival rate in requests per second, ``> 0``.

    Example:
        >>> import numpy as np
        >>> times = PoissonArrivals(2.0).sample_times(4, np.random.default_rng(0))
        >>> times.shape, bool((np.diff(times) >= 0).all())
        ((4,), True)
    """

    rate_rps: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate_rps", check_float("rate_rps", self.rate_rps, positive=True))

    @property
    def cv(self) -> float:
        """Coefficient of variation of the gaps (1 for exponential gaps)."""
        return 1.0

    def sample_times(
        self, n: int, rng: np.random.Generator, rate_rps: float | None = None
    ) -> np.ndarray:
        """Draw ``n`` arrival times from one vectorised exponential draw of ``n`` gaps.

        Args:
            n: Number of arrivals, ``>= 0``.
            rng: Source of randomness.
            rate_rps: Sample at this rate instead of :attr:`rate_rps`.

        Returns:
            float64 array of shape ``(n,)``.
        """
        n = check_count(n)
        rate = _rate(self.rate_rps, rate_rps)
        return np.cumsum(check_rng(rng).exponential(1.0 / rate, size=n))


@dataclass(frozen=True)
class GammaArrivals:
    """Gamma renewal arrivals: mean gap ``1 / rate_rps``, gap coefficient of variation ``cv``.

    The gaps are Gamma(shape ``k = 1 / cv**2``, scale ``1 / (rate_rps * k)``). ``cv = 1`` is a
    Poisson process (with a different random stream than :class:`PoissonArrivals`); ``cv > 1``
    clusters arrivals into bursts separated by long quiet gaps (``cv >= 3`` is strongly bursty);
    ``cv < 1`` is more regular than Poisson. The BurstGPT paper models its trace's arrivals this
    way (see :mod:`llmsched_env.workload.presets`).

    Attributes:
        rate_rps: Mean arrival rate in requests per second, ``> 0``.
        cv: Coefficient of variation of the gaps (std / mean), in :data:`CV_RANGE`, ``[0.001,
            1000]``: beyond, the gaps are constant (or all in one burst) to within float64
            rounding, and the Gamma draw itself breaks down (``cv = 1e-160`` drew ``nan``).

    Example:
        >>> GammaArrivals(rate_rps=2.0, cv=2.0).shape
        0.25
    """

    rate_rps: float
    cv: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate_rps", check_float("rate_rps", self.rate_rps, positive=True))
        cv = check_float("cv", self.cv)
        low, high = CV_RANGE
        if not low <= cv <= high:
            raise ValueError(f"cv must be in [{low:g}, {high:g}], got {self.cv!r}")
        object.__setattr__(self, "cv", cv)

    @classmethod
    def from_shape(cls, rate_rps: float, shape: float) -> GammaArrivals:
        """Build the process from the Gamma shape ``k`` instead of the cv (``cv = 1 / sqrt(k)``).

        Args:
            rate_rps: Mean arrival rate in requests per second.
            shape: Gamma shape parameter, ``> 0``.

        Returns:
            The equivalent :class:`GammaArrivals`.
        """
        shape = check_float("shape", shape, positive=True)
        return cls(rate_rps=rate_rps, cv=1.0 / math.sqrt(shape))

    @property
    def shape(self) -> float:
        """Gamma shape parameter ``1 / cv**2``."""
        return 1.0 / self.cv**2

    def sample_times(
        self, n: int, rng: np.random.Generator, rate_rps: float | None = None
    ) -> np.ndarray:
        """Draw ``n`` arrival times from one vectorised Gamma draw of ``n`` gaps.

        Args:
            n: Number of arrivals, ``>= 0``.
            rng: Source of randomness.
            rate_rps: Sample at this rate instead of :attr:`rate_rps` (same cv).

        Returns:
            float64 array of shape ``(n,)``.
        """
        n = check_count(n)
        rate = _rate(self.rate_rps, rate_rps)
        shape = self.shape
        return np.cumsum(check_rng(rng).gamma(shape, 1.0 / (rate * shape), size=n))


@dataclass(frozen=True)
class DeterministicArrivals:
    """Evenly spaced arrivals, one every ``1 / rate_rps`` seconds (a D/G/1-style input).

    Draws nothing from the generator; useful for checks against deterministic-arrival formulas.

    Attributes:
        rate_rps: Arrival rate in requests per second, ``> 0``.

    Example:
        >>> import numpy as np
        >>> DeterministicArrivals(4.0).sample_times(3, np.random.default_rng(0)).tolist()
        [0.25, 0.5, 0.75]
    """

    rate_rps: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate_rps", check_float("rate_rps", self.rate_rps, positive=True))

    @property
    def cv(self) -> float:
        """Coefficient of variation of the gaps (0: all gaps are equal)."""
        return 0.0

    def sample_times(
        self, n: int, rng: np.random.Generator, rate_rps: float | None = None
    ) -> np.ndarray:
        """Return ``n`` arrival times ``k / rate`` for ``k = 1..n``.

        Args:
            n: Number of arrivals, ``>= 0``.
            rng: Checked but not used.
            rate_rps: Use this rate instead of :attr:`rate_rps`.

        Returns:
            float64 array of shape ``(n,)``.
        """
        n = check_count(n)
        check_rng(rng)
        rate = _rate(self.rate_rps, rate_rps)
        return np.arange(1, n + 1, dtype=np.float64) / rate
