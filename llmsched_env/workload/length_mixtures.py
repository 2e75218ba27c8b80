"""Length distributions that are mixtures: of point masses, of distributions, of observations.

* :class:`Discrete`: a finite table of lengths with probabilities (a mixture of point masses).
* :class:`Mixture`: a weighted mixture of other length distributions.
* :class:`Empirical`: observed lengths resampled with replacement (an equal-weight mixture of the
  observations).

They follow the interface of :mod:`llmsched_env.workload.lengths`: ``sample(n, rng)`` returns int64
lengths ``>= 1``; ``mean`` and ``variance`` are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmsched_env.workload._checks import (
    check_count,
    check_int,
    check_probabilities,
    check_rng,
    check_sequence,
)
from llmsched_env.workload._csv import MAX_TOKENS
from llmsched_env.workload.lengths import LengthDistribution


@dataclass(frozen=True)
class Discrete:
    """Lengths drawn from a finite set of values with given probabilities.

    Attributes:
        values: The possible lengths, each ``>= 1``.
        probs: Their probabilities (same length, ``>= 0``, summing to 1).

    Example:
        >>> round(Discrete((32, 128, 512), (0.6, 0.3, 0.1)).mean, 6)
        108.8
    """

    values: tuple[int, ...]
    probs: tuple[float, ...]

    def __post_init__(self) -> None:
        values = tuple(
            check_int(f"values[{i}]", v, minimum=1, maximum=MAX_TOKENS)
            for i, v in enumerate(check_sequence("values", self.values, "lengths in tokens"))
        )
        if not values:
            raise ValueError("values must hold at least one length, got an empty sequence")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "probs", check_probabilities("probs", self.probs, len(values)))

    @property
    def mean(self) -> float:
        """``sum(value * prob)``."""
        return float(np.dot(self.values, self.probs))

    @property
    def variance(self) -> float:
        """``sum(value**2 * prob) - mean**2``."""
        return float(np.dot(np.square(self.values, dtype=np.float64), self.probs)) - self.mean**2

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` lengths with one ``rng.choice`` call."""
        values = np.asarray(self.values, dtype=np.int64)
        return check_rng(rng).choice(values, size=check_count(n), p=np.asarray(self.probs))


@dataclass(frozen=True)
class Mixture:
    """A mixture: each length comes from component ``i`` with probability ``weights[i]``.

    Sampling draws all component labels first (one ``rng.choice`` call), then, for each component
    in order, that component's lengths in one call, so a seed fixes the result.

    Attributes:
        components: The component distributions (each with ``sample`` and ``mean``).
        weights: Their probabilities (``>= 0``, summing to 1).

    Example:
        >>> from llmsched_env.workload.lengths import Fixed
        >>> Mixture((Fixed(10), Fixed(30)), (0.75, 0.25)).mean
        15.0
    """

    components: tuple[LengthDistribution, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        components = check_sequence("components", self.components, "length distributions")
        if not components:
            raise ValueError("components must hold at least one distribution, got none")
        for i, component in enumerate(components):
            if not isinstance(component, LengthDistribution):
                raise TypeError(
                    f"components[{i}] must be a length distribution with sample() and mean, "
                    f"got {component!r}"
                )
        object.__setattr__(self, "components", components)
        object.__setattr__(
            self, "weights", check_probabilities("weights", self.weights, len(components))
        )

    @property
    def mean(self) -> float:
        """``sum(weight * component mean)``."""
        return float(sum(w * c.mean for w, c in zip(self.weights, self.components, strict=True)))

    @property
    def variance(self) -> float:
        """Law of total variance; needs a ``variance`` on every component."""
        second = sum(
            w * (c.variance + c.mean**2)  # type: ignore[attr-defined]
            for w, c in zip(self.weights, self.components, strict=True)
        )
        return float(second) - self.mean**2

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` lengths: labels first, then each component's lengths in order."""
        n = check_count(n)
        labels = check_rng(rng).choice(len(self.components), size=n, p=np.asarray(self.weights))
        out = np.empty(n, dtype=np.int64)
        for i, component in enumerate(self.components):
            mask = labels == i
            out[mask] = component.sample(int(mask.sum()), rng)
        return out


@dataclass(frozen=True, eq=False)
class Empirical:
    """Resample observed lengths with replacement (for example the lengths of a trace).

    Attributes:
        values: The observed lengths (stored as a read-only int64 array), each ``>= 1``.

    Example:
        >>> Empirical([10, 20, 30, 40]).mean
        25.0
    """

    values: np.ndarray

    def __post_init__(self) -> None:
        raw = np.asarray(self.values)
        if raw.ndim != 1 or raw.shape[0] == 0:
            raise ValueError(f"values must be a non-empty 1-D array, got shape {raw.shape}")
        if raw.dtype.kind not in "iuf" or np.any(raw != np.floor(raw)):
            raise ValueError(f"values must be whole numbers of tokens, got dtype {raw.dtype}")
        bad = ~((raw >= 1) & (raw <= MAX_TOKENS))  # before the cast, which wraps inf and 1e300
        if np.any(bad):
            index = int(np.argmax(bad))
            raise ValueError(
                f"values must be whole numbers of tokens in [1, {MAX_TOKENS}], got "
                f"values[{index}] = {raw[index].item()!r}"
            )
        values = raw.astype(np.int64)
        values.flags.writeable = False
        object.__setattr__(self, "values", values)

    @property
    def mean(self) -> float:
        """Mean of the observed values (the exact mean of the resampling distribution)."""
        return float(self.values.mean())

    @property
    def variance(self) -> float:
        """Population variance of the observed values (exact for the resampling distribution)."""
        return float(self.values.var())

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` lengths: ``n`` uniform indices from one ``rng.integers`` call."""
        index = check_rng(rng).integers(0, self.values.shape[0], size=check_count(n))
        return self.values[index]
