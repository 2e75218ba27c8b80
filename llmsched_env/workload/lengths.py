"""Token-length distributions for prompts and outputs.

Each distribution is a small frozen dataclass with ``sample(n, rng)`` returning an int64 array of
``n`` values, all ``>= 1`` (a request always has at least one prompt token and one output token),
and ``mean`` / ``variance`` properties of the distribution actually sampled, i.e. after rounding
and capping. Both are exact closed forms except for :class:`LogNormal`, whose moments are
computed numerically (see there).

Every length is at most :data:`~llmsched_env.workload.requests.MAX_TOKENS`, the largest a
request may have: a distribution without a cap is refused unless its tail beyond that is rarer
than 1e-17, and its draws are capped there, which leaves its moments as they are.

This module holds the parametric families; tables of values, mixtures and resampled observations
are in :mod:`llmsched_env.workload.length_mixtures`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, runtime_checkable

import numpy as np

from llmsched_env.workload._checks import check_count, check_float, check_int, check_rng
from llmsched_env.workload._lognormal_moments import lognormal_floor_moments
from llmsched_env.workload.requests import MAX_TOKENS

#: An uncapped distribution's lengths beyond :data:`MAX_TOKENS` must be rarer than 1e-17, so
#: that capping them there (as :meth:`sample` does) leaves the moments below exact:
#: ``exp(-40)`` for the exponential tails, ``P(Z > 8.5)`` for the lognormal's.
_TAIL_SIGMAS_EXP = 40.0
_TAIL_SIGMAS_NORMAL = 8.5
_TAIL_REASON = (
    "lengths beyond MAX_TOKENS, which no request may have, must be rarer than 1e-17, "
    "so that capping them leaves the moments exact"
)


@runtime_checkable
class LengthDistribution(Protocol):
    """What a workload source needs from a token-length distribution."""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` lengths (int64, each ``>= 1``)."""
        ...

    @property
    def mean(self) -> float:
        """Mean of the sampled lengths, in tokens."""
        ...


@dataclass(frozen=True)
class Fixed:
    """Every request has the same length.

    Attributes:
        value: The length in tokens, ``>= 1``.

    Example:
        >>> import numpy as np
        >>> Fixed(128).sample(3, np.random.default_rng(0)).tolist()
        [128, 128, 128]
    """

    value: int

    def __post_init__(self) -> None:
        value = check_int("value", self.value, minimum=1, maximum=MAX_TOKENS)
        object.__setattr__(self, "value", value)

    @property
    def mean(self) -> float:
        """The value itself."""
        return float(self.value)

    @property
    def variance(self) -> float:
        """Zero."""
        return 0.0

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Return ``n`` copies of the value (draws nothing from ``rng``)."""
        check_rng(rng)
        return np.full(check_count(n), self.value, dtype=np.int64)


@dataclass(frozen=True)
class UniformInt:
    """Lengths uniform on the integers ``low, low + 1, ..., high`` (both ends included).

    Attributes:
        low: Smallest length, ``>= 1``.
        high: Largest length, ``>= low``.
    """

    low: int
    high: int

    def __post_init__(self) -> None:
        low = check_int("low", self.low, minimum=1)
        high = check_int("high", self.high, minimum=low, maximum=MAX_TOKENS)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def mean(self) -> float:
        """``(low + high) / 2``."""
        return (self.low + self.high) / 2

    @property
    def variance(self) -> float:
        """``((high - low + 1)**2 - 1) / 12`` (discrete uniform)."""
        return ((self.high - self.low + 1) ** 2 - 1) / 12

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` lengths with one ``rng.integers`` call."""
        size = check_count(n)
        return check_rng(rng).integers(
            self.low, self.high, size=size, endpoint=True, dtype=np.int64
        )


@dataclass(frozen=True)
class Exponential:
    """Exponential lengths rounded up: ``ceil(X)`` with ``X ~ Exp(mean_tokens)``.

    Rounding up makes the lengths geometric on ``1, 2, ...`` with success probability
    ``p = 1 - exp(-1 / mean_tokens)``, so the exact mean is ``1 / p`` (about
    ``mean_tokens + 1/2`` for long lengths) and the variance ``(1 - p) / p**2``.

    Attributes:
        mean_tokens: Mean of the continuous exponential before rounding, ``> 0``.

    Example:
        >>> round(Exponential(100.0).mean, 2)
        100.5
    """

    mean_tokens: float

    def __post_init__(self) -> None:
        value = check_float("mean_tokens", self.mean_tokens, positive=True)
        if value > MAX_TOKENS / _TAIL_SIGMAS_EXP:
            raise ValueError(
                f"mean_tokens must be at most {MAX_TOKENS / _TAIL_SIGMAS_EXP:.4g} tokens "
                f"(MAX_TOKENS / {_TAIL_SIGMAS_EXP:g}: {_TAIL_REASON}), got {value!r}"
            )
        object.__setattr__(self, "mean_tokens", value)

    @property
    def _p(self) -> float:
        return -math.expm1(-1.0 / self.mean_tokens)

    @property
    def mean(self) -> float:
        """Exact mean of the rounded lengths, ``1 / (1 - exp(-1 / mean_tokens))``."""
        return 1.0 / self._p

    @property
    def variance(self) -> float:
        """Exact variance of the rounded lengths, ``(1 - p) / p**2``."""
        p = self._p
        return (1.0 - p) / p**2

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` lengths with one ``rng.exponential`` call."""
        x = check_rng(rng).exponential(self.mean_tokens, size=check_count(n))
        return np.clip(np.ceil(x), 1.0, float(MAX_TOKENS)).astype(np.int64)


@dataclass(frozen=True)
class LogNormal:
    """Lognormal lengths truncated to whole tokens: ``clip(floor(exp(N(mu, sigma**2))), min, max)``.

    ``floor`` matches Python's ``int()`` on a positive float, so demo3's prompt rule
    ``max(1, int(LogNormal(3.2764, 1.5201)))`` is ``LogNormal(3.2764, 1.5201)``.

    The moments have no closed form after rounding; :attr:`mean` and :attr:`variance` sum the
    exact tail probabilities ``P(X >= j)`` for ``j`` up to 4096 tokens and integrate them (midpoint
    rule in closed form, with an Euler-Maclaurin correction) above that. This is accurate to
    better than 1e-6 relative whenever the part of the distribution beyond 4096 tokens spreads
    over many tokens (``sigma * 4096 >> 1``), which holds for any realistic length distribution.

    Attributes:
        mu: Mean of ``log X``.
        sigma: Standard deviation of ``log X``, ``> 0``.
        min_tokens: Smallest length, ``>= 1``.
        max_tokens: Largest length (``None``: no cap), ``>= min_tokens``.

    Example:
        >>> round(LogNormal(3.2764, 1.5201).mean, 1)
        83.6
    """

    mu: float
    sigma: float
    min_tokens: int = 1
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mu", check_float("mu", self.mu))
        object.__setattr__(self, "sigma", check_float("sigma", self.sigma, positive=True))
        low = check_int("min_tokens", self.min_tokens, minimum=1, maximum=MAX_TOKENS)
        object.__setattr__(self, "min_tokens", low)
        if self.max_tokens is not None:
            high = check_int("max_tokens", self.max_tokens, minimum=low, maximum=MAX_TOKENS)
            object.__setattr__(self, "max_tokens", high)
        elif self.mu + _TAIL_SIGMAS_NORMAL * self.sigma > math.log(MAX_TOKENS):
            raise ValueError(
                f"mu={self.mu!r} and sigma={self.sigma!r} need max_tokens: without it, "
                f"mu + {_TAIL_SIGMAS_NORMAL:g} * sigma must be at most log(MAX_TOKENS) = "
                f"{math.log(MAX_TOKENS):.4g} ({_TAIL_REASON})"
            )

    @cached_property
    def _moments(self) -> tuple[float, float]:
        high = math.inf if self.max_tokens is None else self.max_tokens
        return lognormal_floor_moments(self.mu, self.sigma, self.min_tokens, high)

    @property
    def mean(self) -> float:
        """Mean of the rounded, clipped lengths (computed numerically, see the class doc)."""
        return self._moments[0]

    @property
    def variance(self) -> float:
        """Variance of the rounded, clipped lengths (computed numerically)."""
        first, second = self._moments
        return second - first**2

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` lengths with one ``rng.lognormal`` call."""
        x = np.floor(check_rng(rng).lognormal(self.mu, self.sigma, size=check_count(n)))
        high = float(MAX_TOKENS if self.max_tokens is None else self.max_tokens)
        return np.clip(x, float(self.min_tokens), high).astype(np.int64)


@dataclass(frozen=True)
class Geometric:
    """Geometric lengths on ``1, 2, ...`` with success probability ``p``, optionally capped.

    ``P(L = k) = (1 - p)**(k - 1) * p``; with a cap ``c`` the length is ``min(L, c)``.

    Attributes:
        p: Success probability in ``(0, 1]``; the uncapped mean is ``1 / p``.
        cap: Largest length (``None``: no cap), ``>= 1``.

    Example:
        >>> round(Geometric(0.0056, cap=1024).mean, 2)
        178.0
    """

    p: float
    cap: int | None = None

    def __post_init__(self) -> None:
        p = check_float("p", self.p, positive=True, maximum=1.0)
        object.__setattr__(self, "p", p)
        if self.cap is not None:
            cap = check_int("cap", self.cap, minimum=1, maximum=MAX_TOKENS)
            object.__setattr__(self, "cap", cap)
        elif p < _TAIL_SIGMAS_EXP / MAX_TOKENS:
            raise ValueError(
                f"p must be at least {_TAIL_SIGMAS_EXP:g} / MAX_TOKENS = "
                f"{_TAIL_SIGMAS_EXP / MAX_TOKENS:.4g} without a cap ({_TAIL_REASON}), got {p!r}; "
                "set cap or raise p"
            )

    @property
    def mean(self) -> float:
        """Exact mean: ``1 / p`` uncapped, ``(1 - (1 - p)**cap) / p`` capped."""
        if self.cap is None:
            return 1.0 / self.p
        return -math.expm1(self.cap * math.log1p(-self.p)) / self.p if self.p < 1 else 1.0

    @property
    def variance(self) -> float:
        """Exact variance: ``(1 - p) / p**2`` uncapped; a finite sum over ``1..cap`` capped."""
        if self.cap is None:
            return (1.0 - self.p) / self.p**2
        j = np.arange(1, self.cap + 1, dtype=np.float64)
        survival = (1.0 - self.p) ** (j - 1)  # P(min(L, cap) >= j)
        second = float(np.sum((2 * j - 1) * survival))
        return second - self.mean**2

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` lengths with one ``rng.geometric`` call."""
        x = check_rng(rng).geometric(self.p, size=check_count(n)).astype(np.int64)
        return np.minimum(x, MAX_TOKENS if self.cap is None else self.cap)
