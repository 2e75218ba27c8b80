"""Output-length predictors: what a scheduler believes about each request's output length.

A length-aware scheduler (multi-bin batching, shortest-predicted-first) never sees the true output
length of a request before it finishes; it sees a prediction. A predictor turns the true lengths
(and the prompts) into predictions with ``predict(prompt_tokens, output_tokens, rng)``, returning
int64 predictions in ``[1, 2**31 - 1]``. The predictions are stored in
:attr:`~llmsched_env.workload.requests.Workload.predicted_output_tokens`.

Every predictor draws a fixed number of values from ``rng`` per call (independent of the values
drawn), in the order given in its docstring, so a seed fixes the predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from llmsched_env.registry import resolve
from llmsched_env.workload._checks import check_float, check_int, check_rng, check_sequence
from llmsched_env.workload._csv import MAX_TOKENS


@runtime_checkable
class OutputLengthPredictor(Protocol):
    """What a workload source needs from an output-length predictor."""

    def predict(
        self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Return one predicted output length per request (int64, each ``>= 1``)."""
        ...


def _lengths(prompt_tokens: Any, output_tokens: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert the two length arrays of a ``predict`` call."""
    prompt = np.asarray(prompt_tokens)
    output = np.asarray(output_tokens)
    if prompt.ndim != 1 or output.shape != prompt.shape:
        raise ValueError(
            "prompt_tokens and output_tokens must be 1-D arrays of equal length, got shapes "
            f"{prompt.shape} and {output.shape}"
        )
    return prompt.astype(np.int64, copy=False), output.astype(np.int64, copy=False)


def _round_at_least_one(values: np.ndarray) -> np.ndarray:
    """Round to the nearest integer (ties to even), clipped to ``[1, MAX_TOKENS]`` (overwrites).

    The upper clip keeps a huge draw (a wide noise, ``sigma = 10``) from wrapping around in the
    cast to int64 into a negative prediction.
    """
    np.rint(values, out=values)
    np.clip(values, 1.0, float(MAX_TOKENS), out=values)
    return values.astype(np.int64)


@dataclass(frozen=True)
class OraclePredictor:
    """Perfect predictions: the true output length. Draws nothing from ``rng``.

    Example:
        >>> import numpy as np
        >>> OraclePredictor().predict(np.array([5]), np.array([7]), np.random.default_rng(0))
        array([7])
    """

    def predict(
        self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Return a copy of ``output_tokens`` as int64."""
        check_rng(rng)
        _, output = _lengths(prompt_tokens, output_tokens)
        return output.copy()


@dataclass(frozen=True)
class LogNormalNoisePredictor:
    """Multiplicative noise around the truth: ``round(true * exp(N(0, sigma**2)))``, at least 1.

    The noise is median-unbiased (half of the predictions are above the truth) but, on the raw
    scale, biased upwards in the mean by ``exp(sigma**2 / 2)``. A fraction ``2 * Phi(log(f) /
    sigma) - 1`` of predictions lie within a factor ``f`` of the truth: for ``sigma = 0.5``, 68%
    within a factor 1.65 and 83% within a factor 2. Draws ``n`` normals (one ``rng.lognormal``
    call), also when ``sigma = 0``.

    Attributes:
        sigma: Standard deviation of the log-ratio prediction / truth, ``>= 0``.
    """

    sigma: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", check_float("sigma", self.sigma, minimum=0.0))

    def predict(
        self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Return noisy predictions of ``output_tokens``."""
        _, output = _lengths(prompt_tokens, output_tokens)
        noise = check_rng(rng).lognormal(0.0, self.sigma, size=output.shape[0])
        return _round_at_least_one(np.multiply(output, noise, out=noise))


@dataclass(frozen=True)
class PromptPowerLawPredictor:
    """Predict from the prompt alone: ``clip(round(scale * prompt**exponent * eps), low, high)``.

    ``eps ~ LogNormal(0, sigma)`` (one ``rng.lognormal`` call of ``n`` values). With the defaults
    this is the output-length predictor of the reference request-level simulator
    (``1.5 * prompt**0.7 * LogNormal(0, 0.1)`` clipped to ``[1, 4096]``), which ignores the true
    output length entirely; its predictions correlate with the truth only as much as output
    lengths correlate with prompt lengths.

    Attributes:
        scale: Multiplier, ``> 0``.
        exponent: Power of the prompt length, finite.
        sigma: Standard deviation of the log-noise, ``>= 0``.
        low: Smallest prediction, ``>= 1``.
        high: Largest prediction, ``>= low``.

    Example:
        >>> import numpy as np
        >>> p = PromptPowerLawPredictor(sigma=0.0)
        >>> p.predict(np.array([1, 100, 10**6]), np.array([1, 1, 1]), np.random.default_rng(0))
        array([   2,   38, 4096])
    """

    scale: float = 1.5
    exponent: float = 0.7
    sigma: float = 0.1
    low: int = 1
    high: int = 4096

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_float("scale", self.scale, positive=True))
        object.__setattr__(self, "exponent", check_float("exponent", self.exponent))
        object.__setattr__(self, "sigma", check_float("sigma", self.sigma, minimum=0.0))
        low = check_int("low", self.low, minimum=1)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", check_int("high", self.high, minimum=low))

    def predict(
        self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Return predictions computed from ``prompt_tokens`` (``output_tokens`` is unused)."""
        prompt, _ = _lengths(prompt_tokens, output_tokens)
        noise = check_rng(rng).lognormal(0.0, self.sigma, size=prompt.shape[0])
        raw = self.scale * np.power(prompt.astype(np.float64), self.exponent) * noise
        return np.clip(np.rint(raw), self.low, self.high).astype(np.int64)


@dataclass(frozen=True)
class NeighbourBinPredictor:
    """The Multi-Bin Batching paper's imperfect predictor: right bin, or a neighbouring one.

    The lengths ``low..high`` are cut into ``k = len(edges) + 1`` bins of whole tokens at the
    sorted interior ``edges``: bin 0 is ``[low, edges[0] - 1]``, bin ``i`` is
    ``[edges[i-1], edges[i] - 1]`` and the top bin is ``[edges[-1], high]``. A true length below
    ``low`` counts as bin 0 and one above ``high`` as the top bin.

    With probability ``p_error`` a request is mispredicted: its prediction is drawn uniformly from
    the whole tokens of a neighbouring bin, the left or the right one with equal probability (the
    only neighbour for the first and the top bin). Otherwise the prediction is the true length.
    With a single bin (no edges) there is no neighbour and every prediction is exact.

    Draw order per call of ``n`` requests: ``n`` uniforms deciding the error, ``n`` uniforms
    choosing the side, ``n`` integers inside the chosen neighbour bin (all drawn whether used or
    not).

    Attributes:
        edges: Interior bin boundaries, strictly increasing, each in ``(low, high]``.
        p_error: Probability of a misprediction, in ``[0, 1]``.
        high: Largest length of the top bin.
        low: Smallest length of bin 0, ``>= 1``.

    Example:
        >>> import numpy as np
        >>> p = NeighbourBinPredictor(edges=(10, 20), p_error=1.0, high=29)
        >>> p.bin_of(np.array([1, 9, 10, 29, 99])).tolist()
        [0, 0, 1, 2, 2]
        >>> pred = p.predict(np.ones(3), np.array([1, 5, 25]), np.random.default_rng(0))
        >>> p.bin_of(pred).tolist()  # the end bins have only the middle bin as a neighbour
        [1, 1, 1]
    """

    edges: tuple[int, ...]
    p_error: float
    high: int
    low: int = 1

    def __post_init__(self) -> None:
        low = check_int("low", self.low, minimum=1)
        high = check_int("high", self.high, minimum=low)
        edges = tuple(
            check_int(f"edges[{i}]", e)
            for i, e in enumerate(check_sequence("edges", self.edges, "lengths in tokens"))
        )
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(f"edges must be strictly increasing, got {list(edges)}")
        if edges and (edges[0] <= low or edges[-1] > high):
            raise ValueError(
                f"edges must lie in (low, high] = ({low}, {high}] so that no bin is empty, "
                f"got {list(edges)}"
            )
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "edges", edges)
        p_error = check_float("p_error", self.p_error, minimum=0.0, maximum=1.0)
        object.__setattr__(self, "p_error", p_error)

    @property
    def n_bins(self) -> int:
        """Number of bins, ``len(edges) + 1``."""
        return len(self.edges) + 1

    def bin_of(self, lengths: np.ndarray) -> np.ndarray:
        """Return the bin index (0-based) of each length."""
        return np.searchsorted(np.asarray(self.edges), np.asarray(lengths), side="right")

    def predict(
        self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Return the true lengths, a fraction ``p_error`` moved to a neighbouring bin."""
        _, output = _lengths(prompt_tokens, output_tokens)
        rng = check_rng(rng)
        n = output.shape[0]
        is_error = rng.random(n) < self.p_error
        go_left = rng.random(n) < 0.5
        true_bin = self.bin_of(output)
        top = self.n_bins - 1
        go_left = (go_left & (true_bin > 0)) | (true_bin == top)
        target = np.where(go_left, true_bin - 1, true_bin + 1)
        # Bin bounds with low/high at the ends; a single bin gets target -1, clipped away below.
        starts = np.asarray((self.low, *self.edges), dtype=np.int64)
        ends = np.asarray((*(e - 1 for e in self.edges), self.high), dtype=np.int64)
        target = np.clip(target, 0, top)
        guess = rng.integers(starts[target], ends[target], endpoint=True, dtype=np.int64)
        if top == 0:
            return output.copy()
        return np.where(is_error, guess, output)


#: The ``predict`` methods of this module, which return a new int64 array of one prediction
#: ``>= 1`` per request whenever the true lengths are ``>= 1`` (a workload's are). A source
#: takes their result as it is; the result of any other predictor is checked (and copied).
VALID_BY_CONSTRUCTION = frozenset(
    (
        OraclePredictor.predict,
        LogNormalNoisePredictor.predict,
        PromptPowerLawPredictor.predict,
        NeighbourBinPredictor.predict,
    )
)

PREDICTORS: dict[str, Callable[..., OutputLengthPredictor]] = {
    "oracle": OraclePredictor,
    "lognormal-noise": LogNormalNoisePredictor,
    "prompt-power-law": PromptPowerLawPredictor,
}
"""Named predictors: name -> factory (keyword arguments go to the class)."""


def make_predictor(
    name_or_predictor: str | OutputLengthPredictor, **kwargs: Any
) -> OutputLengthPredictor:
    """Return a predictor object, looking names up in :data:`PREDICTORS`.

    Args:
        name_or_predictor: A predictor (returned as is) or a name in :data:`PREDICTORS`.
        **kwargs: Constructor arguments for a named predictor (e.g. ``sigma=0.3``).

    Returns:
        The predictor.

    Raises:
        ValueError: For an unknown name (the message lists the names and suggests the closest).
        TypeError: For an object without ``predict`` or keyword arguments given with an object.

    Example:
        >>> make_predictor("lognormal-noise", sigma=0.3)
        LogNormalNoisePredictor(sigma=0.3)
    """
    if isinstance(name_or_predictor, str):
        return resolve("predictor", name_or_predictor, PREDICTORS)(**kwargs)
    if not isinstance(name_or_predictor, OutputLengthPredictor):
        raise TypeError(
            "name_or_predictor must be a predictor name or an object with "
            f"predict(prompt_tokens, output_tokens, rng), got {name_or_predictor!r}"
        )
    if kwargs:
        raise TypeError(f"keyword arguments {sorted(kwargs)} apply only to a predictor name")
    return name_or_predictor
