"""Request-level latency models, for static batching.

A static batch starts on an idle GPU and all its requests complete together when it ends. These
models give the batch's service time from its members' prompt and output lengths:
:meth:`batch_timing` takes the members' lengths as numpy arrays and computes in Python.

A deterministic model also owns a compiled form of the same formula, which the simulator's
compiled dispatch calls (no Python per batch): a numba function ``timing(params, prompt, output,
head, stop)`` over positions ``head .. stop - 1`` of the length arrays, and a method
``compiled_timing()`` that returns the model's code and parameter array.
:func:`compiled_batch_timing` dispatches on the code. A model without a compiled form (a
stochastic one, whose draws come from the run's numpy generator) returns ``None`` there and is
timed in Python. The compiled forms do the arithmetic of :meth:`batch_timing` in the same order;
their sums are sums of integers below 2**53, exact in any order, so both give the same bits.

Token convention (as in :mod:`llmsched_env.latency.iteration`): ``output_tokens`` counts every
output token, including the first one, which the prefill emits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from llmsched_env.jit import njit
from llmsched_env.latency import _checks
from llmsched_env.latency.iteration import LinearIterationLatency


class BatchLatencyModel(Protocol):
    """What the static-batching simulator needs from a batch latency model.

    A stochastic model may also give ``mean_service_s(prompt_tokens, output_tokens)``, the
    expected service time of a batch, which capacity estimates average instead of its draws.
    """

    def batch_timing(
        self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, rng: np.random.Generator
    ) -> tuple[float, float]:
        """Service time of a static batch and the offset of its first output token.

        Args:
            prompt_tokens: Prompt length of each member (one entry per request).
            output_tokens: Output length of each member, including the first token.
            rng: Source of any randomness.

        Returns:
            ``(service_s, first_token_s)``: the batch occupies the GPU for ``service_s`` seconds
            and all its requests complete together at the end; ``first_token_s`` is the time after
            the batch start at which every member has its first token (the end of the prefill),
            or ``nan`` if the model does not resolve it.
        """
        ...

    def estimate_s(self, batch_size: int, prompt_tokens: float, output_tokens: float) -> float:
        """Deterministic (expected) service time of a batch; never draws randomness.

        Args:
            batch_size: Number of requests in the batch.
            prompt_tokens: Prompt length of the longest member; the other members' prompts are
                taken to be equally long.
            output_tokens: Output length of the longest member.

        Returns:
            The expected service time in seconds, for capacity estimates and observations.
        """
        ...

    def compiled_timing(self) -> tuple[int, np.ndarray] | None:
        """The code and parameters of the model's compiled timing, or ``None`` if it has none.

        The simulator times a batch with ``compiled_batch_timing(code, params, ...)`` when this
        gives a code, and with :meth:`batch_timing` otherwise (also when a model does not
        define this method).
        """
        ...


#: Codes of the compiled timings; 0 means the model is timed in Python.
PYTHON_TIMING, STATIC_TIMING, ENGINE_TIMING, MAX_SERVICE_TIMING = range(4)
#: Length of every compiled model's parameter array.
N_TIMING_PARAMS = 8


def _params(*values: float) -> np.ndarray:
    """A parameter array of :data:`N_TIMING_PARAMS` entries, zero-padded."""
    params = np.zeros(N_TIMING_PARAMS)
    params[: len(values)] = values
    return params


def _check_batch(prompt_tokens: np.ndarray, output_tokens: np.ndarray) -> int:
    """Return the batch size after checking that the two length arrays describe one batch."""
    batch_size = len(prompt_tokens)
    if batch_size == 0 or len(output_tokens) != batch_size:
        raise ValueError(
            "expected equally long, non-empty `prompt_tokens` and `output_tokens`, got lengths "
            f"{batch_size} and {len(output_tokens)}"
        )
    return batch_size


@dataclass(frozen=True)
class StaticBatchLatency:
    """Batch time of the request-level reference simulator, TravisLeeTS/llm-scheduler-sim.

    ``T(b, L) = alpha + beta * L * (1 + gamma * (b - 1) / b)``, floored at ``floor_s``, where ``b``
    is the batch size and ``L`` the largest ``prompt + output`` of the batch: the longest request
    dominates, and every extra member slows each token down by up to a factor ``1 + gamma``. Prompt
    and output tokens cost the same, and the model does not say when the first token appears, so
    ``first_token_s`` is ``nan``.

    Attributes:
        alpha_s: Fixed cost of a batch, in seconds.
        beta_s_per_token: Cost per token of the longest member when it runs alone, in seconds.
        gamma: Relative slowdown per token of a large batch (dimensionless, ``>= 0``).
        floor_s: Smallest service time, in seconds (``> 0``; the reference uses 1 ms).

    Example:
        >>> synthetic = StaticBatchLatency(alpha_s=0.010, beta_s_per_token=0.0002, gamma=0.3)
        >>> round(synthetic.estimate_s(batch_size=4, prompt_tokens=100, output_tokens=100), 6)
        0.059
    """

    alpha_s: float
    beta_s_per_token: float
    gamma: float
    floor_s: float = 1e-3

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name in ("alpha_s", "beta_s_per_token", "gamma"):
            object.__setattr__(self, name, _checks.real(owner, name, getattr(self, name)))
        object.__setattr__(
            self, "floor_s", _checks.real(owner, "floor_s", self.floor_s, positive=True)
        )

    def service_s(self, batch_size: int, max_seq_tokens: float) -> float:
        """``T(b, L)`` for a batch of ``batch_size`` whose longest member has ``max_seq_tokens``.

        Args:
            batch_size: Number of requests ``b`` (at least 1).
            max_seq_tokens: ``L``, the largest ``prompt + output`` in the batch.

        Returns:
            The service time in seconds.
        """
        per_token = self.beta_s_per_token * (1.0 + self.gamma * (batch_size - 1) / batch_size)
        service = self.alpha_s + per_token * max_seq_tokens
        return service if service > self.floor_s else self.floor_s

    def batch_timing(
        self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, rng: np.random.Generator
    ) -> tuple[float, float]:
        """``(T(b, L), nan)``; deterministic, ``rng`` is unused.

        Args:
            prompt_tokens: Prompt length of each member.
            output_tokens: Output length of each member.
            rng: Unused (kept for the protocol).

        Returns:
            The service time in seconds and ``nan`` for the first-token offset.
        """
        batch_size = _check_batch(prompt_tokens, output_tokens)
        # Python's max over the few members is cheaper than numpy's reduction (same value).
        longest = float(max((prompt_tokens + output_tokens).tolist()))
        return self.service_s(batch_size, longest), math.nan

    def estimate_s(self, batch_size: int, prompt_tokens: float, output_tokens: float) -> float:
        """``T(batch_size, prompt_tokens + output_tokens)``.

        Args:
            batch_size: Number of requests.
            prompt_tokens: Prompt length of the longest member.
            output_tokens: Output length of the longest member.

        Returns:
            The service time in seconds.
        """
        _checks.batch_estimate(type(self).__name__, batch_size, prompt_tokens, output_tokens)
        return self.service_s(batch_size, prompt_tokens + output_tokens)

    def compiled_timing(self) -> tuple[int, np.ndarray] | None:
        """``(STATIC_TIMING, params)`` for :func:`static_batch_timing`.

        ``None`` for a subclass, whose overrides the compiled timing would not see.
        """
        if type(self) is not StaticBatchLatency:
            return None
        return STATIC_TIMING, _params(self.alpha_s, self.beta_s_per_token, self.gamma, self.floor_s)


@njit(cache=True)
def static_batch_timing(params, prompt, output, head, stop):
    """:meth:`StaticBatchLatency.batch_timing` of positions ``head .. stop - 1``, compiled.

    ``params``: ``alpha_s, beta_s_per_token, gamma, floor_s``.
    """
    alpha, beta, gamma, floor = params[0], params[1], params[2], params[3]
    batch_size = stop - head
    longest = 0
    for p in range(head, stop):
        if prompt[p] + output[p] > longest:
            longest = prompt[p] + output[p]
    per_token = beta * (1.0 + gamma * (batch_size - 1) / batch_size)
    service = alpha + per_token * float(longest)
    return (service if service > floor else floor), math.nan


@dataclass(frozen=True)
class EngineStaticBatchLatency:
    """A static batch run on an engine whose iterations follow a linear latency fit.

    The batch runs one prefill iteration over all its prompts, which emits every member's first
    token, then ``M - 1`` decode iterations of the whole batch, where ``M`` is the longest output:
    static batching keeps a finished member's slot until the batch ends. With ``b`` members,
    prompts ``p_i`` (sum ``P``), outputs ``o_i`` and the iteration coefficients ``b0 .. b3``::

        first_token_s = t_prefill = b0 + b1 * P
        service_s     = t_prefill + (M - 1) * (b0 + b2 * b) + b3 * C

    ``C`` is the decode context summed over all decode iterations. In decode iteration
    ``k = 1 .. M - 1`` member ``i`` holds its prompt plus the tokens generated so far, capped at its
    own final length: ``p_i + min(k, o_i)``. Summing over ``k`` gives the closed form::

        C = (M - 1) * P + sum_i o_i * (2 * M - 1 - o_i) / 2

    (for ``o_i = M`` the member's term is ``M * (M - 1) / 2``, the sum ``1 + 2 + ... + (M - 1)``).

    Three optional prefill terms describe engines whose prefill is not a plain decode iteration
    with more tokens (measured static batches, as in the ``splitwise-*`` presets): a prefill with
    its own fixed cost ``a0`` (``prefill_fixed_s``; ``b0`` when ``None``), a cost per squared
    prompt token (each prompt's attention over itself), and a floor (a memory-bound prefill cannot
    take less than reading the weights once)::

        first_token_s = t_prefill = max(floor, a0 + b1 * P + a2 * sum_i p_i ** 2)

    With the defaults (``None``, 0, 0) this is the formula above, computed in the same order.

    Attributes:
        iteration: The engine's per-iteration latency.
        prefill_fixed_s: Fixed cost ``a0`` of the prefill, in seconds; ``None`` uses ``b0``.
        prefill_s_per_squared_token: Cost ``a2`` per squared prompt token, ``sum_i p_i ** 2``.
        prefill_floor_s: Smallest prefill time, in seconds.

    Example:
        >>> engine = EngineStaticBatchLatency(LinearIterationLatency(0.005, 1e-5, 1e-4))
        >>> timing = engine.batch_timing(np.array([100, 300]), np.array([3, 5]), None)
        >>> [round(t, 6) for t in timing]  # prefill 0.005 + 1e-5*400; 4 decodes of 0.005 + 2e-4
        [0.0298, 0.009]
        >>> floored = EngineStaticBatchLatency(
        ...     LinearIterationLatency(0.005, 1e-5, 1e-4), prefill_fixed_s=0.0, prefill_floor_s=0.02
        ... )
        >>> timing = floored.batch_timing(np.array([100, 300]), np.array([3, 5]), None)
        >>> [round(t, 6) for t in timing]  # 0.004 of prefill work, held at the floor
        [0.0408, 0.02]
    """

    iteration: LinearIterationLatency
    prefill_fixed_s: float | None = None
    prefill_s_per_squared_token: float = 0.0
    prefill_floor_s: float = 0.0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if not isinstance(self.iteration, LinearIterationLatency):
            raise TypeError(
                f"{owner}: iteration must be a LinearIterationLatency "
                f"(the closed form needs a linear model), got {self.iteration!r}"
            )
        if self.prefill_fixed_s is not None:
            value = _checks.real(owner, "prefill_fixed_s", self.prefill_fixed_s)
            object.__setattr__(self, "prefill_fixed_s", value)
        for name in ("prefill_s_per_squared_token", "prefill_floor_s"):
            object.__setattr__(self, name, _checks.real(owner, name, getattr(self, name)))

    @property
    def linear_prefill(self) -> bool:
        """Whether the prefill is ``b0 + b1 * P`` (the three prefill terms at their defaults)."""
        return (
            self.prefill_fixed_s is None
            and self.prefill_s_per_squared_token == 0.0
            and self.prefill_floor_s == 0.0
        )

    def _prefill_s(self, total_prompt: float, squared_prompt: float) -> float:
        """``max(floor, a0 + b1 * P + a2 * sum_i p_i ** 2)``; ``a0 = b0`` by default."""
        it = self.iteration
        fixed = it.b0_s if self.prefill_fixed_s is None else self.prefill_fixed_s
        prefill_s = fixed + it.b1_s_per_prefill_token * total_prompt
        if self.prefill_s_per_squared_token:
            prefill_s += self.prefill_s_per_squared_token * squared_prompt
        return prefill_s if prefill_s >= self.prefill_floor_s else self.prefill_floor_s

    def batch_timing(
        self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, rng: np.random.Generator
    ) -> tuple[float, float]:
        """``(service_s, first_token_s)`` by the closed form of the class docstring.

        Args:
            prompt_tokens: Prompt length of each member.
            output_tokens: Output length of each member, including the first token.
            rng: Unused (the model is deterministic).

        Returns:
            The service time and the end of the prefill, in seconds after the batch start.

        Raises:
            ValueError: If the batch is empty, the arrays differ in length, or the longest output
                is < 1.
        """
        batch_size = _check_batch(prompt_tokens, output_tokens)
        it = self.iteration
        total_prompt = float(prompt_tokens.sum())
        longest_output = float(output_tokens.max())
        if longest_output < 1.0:
            raise ValueError(
                "expected the longest `output_tokens` of a batch to be >= 1 (the prefill emits the "
                f"first token), got {output_tokens!r}"
            )
        decode_steps = longest_output - 1.0
        squared_prompt = 0.0
        if self.prefill_s_per_squared_token:
            prompts = np.asarray(prompt_tokens, dtype=np.float64)
            squared_prompt = float(np.dot(prompts, prompts))
        prefill_s = self._prefill_s(total_prompt, squared_prompt)
        service_s = prefill_s + decode_steps * (it.b0_s + it.b2_s_per_decode_token * batch_size)
        if it.b3_s_per_context_token:
            out = np.asarray(output_tokens, dtype=np.float64)
            generated = 0.5 * float(np.dot(out, 2.0 * longest_output - 1.0 - out))
            service_s += it.b3_s_per_context_token * (decode_steps * total_prompt + generated)
        return service_s, prefill_s

    def estimate_s(self, batch_size: int, prompt_tokens: float, output_tokens: float) -> float:
        """Service time of ``batch_size`` members with these prompt and output lengths.

        Every member is taken to have the given output length too (an upper bound, since the
        context term grows with the other members' outputs).

        Args:
            batch_size: Number of requests ``b``.
            prompt_tokens: Prompt length of each member.
            output_tokens: Output length of the longest member, ``M``.

        Returns:
            The service time in seconds.
        """
        _checks.batch_estimate(type(self).__name__, batch_size, prompt_tokens, output_tokens)
        it = self.iteration
        decode_steps = output_tokens - 1.0
        total_prompt = batch_size * prompt_tokens
        service_s = self._prefill_s(total_prompt, total_prompt * prompt_tokens)
        service_s += decode_steps * (it.b0_s + it.b2_s_per_decode_token * batch_size)
        if it.b3_s_per_context_token:
            context = decode_steps * (total_prompt + 0.5 * batch_size * output_tokens)
            service_s += it.b3_s_per_context_token * context
        return service_s

    def compiled_timing(self) -> tuple[int, np.ndarray] | None:
        """``(ENGINE_TIMING, params)`` for :func:`engine_batch_timing`.

        ``None`` for a subclass, whose overrides the compiled timing would not see.
        """
        if type(self) is not EngineStaticBatchLatency:
            return None
        it = self.iteration
        fixed = it.b0_s if self.prefill_fixed_s is None else self.prefill_fixed_s
        return ENGINE_TIMING, _params(
            it.b0_s,
            it.b1_s_per_prefill_token,
            it.b2_s_per_decode_token,
            it.b3_s_per_context_token,
            fixed,
            self.prefill_s_per_squared_token,
            self.prefill_floor_s,
        )


@njit(cache=True)
def engine_batch_timing(params, prompt, output, head, stop):
    """:meth:`EngineStaticBatchLatency.batch_timing` of positions ``head .. stop - 1``, compiled.

    ``params``: ``b0, b1, b2, b3, a0, a2, floor`` (the prefill's fixed cost ``a0`` is ``b0``
    unless the model sets its own).
    """
    b0, b1, b2, b3 = params[0], params[1], params[2], params[3]
    fixed, squared_cost, floor = params[4], params[5], params[6]
    size = stop - head
    total_prompt = 0
    squared_prompt = 0
    longest = 0
    for p in range(head, stop):
        total_prompt += prompt[p]
        squared_prompt += prompt[p] * prompt[p]
        if output[p] > longest:
            longest = output[p]
    total_prompt_f = float(total_prompt)
    longest_f = float(longest)
    decode_steps = longest_f - 1.0
    prefill_s = fixed + b1 * total_prompt_f
    if squared_cost != 0.0:
        prefill_s += squared_cost * float(squared_prompt)
    if not prefill_s >= floor:
        prefill_s = floor
    service_s = prefill_s + decode_steps * (b0 + b2 * size)
    if b3 != 0.0:
        generated = 0.0
        for p in range(head, stop):
            out = float(output[p])
            generated += out * (2.0 * longest_f - 1.0 - out)
        generated = 0.5 * generated
        service_s += b3 * (decode_steps * total_prompt_f + generated)
    return service_s, prefill_s


@dataclass(frozen=True)
class MaxServiceLatency:
    """The Multi-Bin Batching paper's model (Guldogan et al., arXiv 2412.04504).

    Each request has a service time proportional to its output length, and a batch takes the
    **max** of its members' service times: ``service_s = seconds_per_output_token * max(o_i)``.
    Prompts are ignored and the first-token time is not resolved (``nan``). Paired with a workload
    whose outputs are uniform on ``[l_min, l_max]`` tokens, this is the paper's setting of service
    times ``U(l_min, l_max)``, scaled by ``seconds_per_output_token``.

    Attributes:
        seconds_per_output_token: Service time per output token of a request, in seconds.

    Example:
        >>> MaxServiceLatency(0.01).estimate_s(batch_size=8, prompt_tokens=50, output_tokens=120)
        1.2
    """

    seconds_per_output_token: float

    def __post_init__(self) -> None:
        value = _checks.real(
            type(self).__name__,
            "seconds_per_output_token",
            self.seconds_per_output_token,
            positive=True,
        )
        object.__setattr__(self, "seconds_per_output_token", value)

    def batch_timing(
        self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, rng: np.random.Generator
    ) -> tuple[float, float]:
        """``(seconds_per_output_token * max(output_tokens), nan)``; ``rng`` is unused.

        Args:
            prompt_tokens: Prompt length of each member (ignored, but checked against outputs).
            output_tokens: Output length of each member.
            rng: Unused (kept for the protocol).

        Returns:
            The service time in seconds and ``nan``.
        """
        _check_batch(prompt_tokens, output_tokens)
        return self.seconds_per_output_token * float(output_tokens.max()), math.nan

    def estimate_s(self, batch_size: int, prompt_tokens: float, output_tokens: float) -> float:
        """``seconds_per_output_token * output_tokens``; batch size and prompt do not matter.

        Args:
            batch_size: Number of requests (ignored).
            prompt_tokens: Prompt length (ignored).
            output_tokens: Output length of the longest member.

        Returns:
            The service time in seconds.
        """
        _checks.batch_estimate(type(self).__name__, batch_size, prompt_tokens, output_tokens)
        return self.seconds_per_output_token * output_tokens

    def compiled_timing(self) -> tuple[int, np.ndarray] | None:
        """``(MAX_SERVICE_TIMING, params)`` for :func:`max_service_timing`.

        ``None`` for a subclass, whose overrides the compiled timing would not see.
        """
        if type(self) is not MaxServiceLatency:
            return None
        return MAX_SERVICE_TIMING, _params(self.seconds_per_output_token)


@njit(cache=True)
def max_service_timing(params, prompt, output, head, stop):
    """:meth:`MaxServiceLatency.batch_timing` of positions ``head .. stop - 1``, compiled."""
    longest = 0
    for p in range(head, stop):
        if output[p] > longest:
            longest = output[p]
    return params[0] * float(longest), math.nan


@dataclass(frozen=True)
class ExponentialBatchService:
    """Service time ``~ Exp(mean_s)`` per batch, independent of the batch's content.

    For the M/M/1 check of the Cornell ORIE 4580/5580 course simulators: with batch size 1,
    Poisson arrivals at rate ``lambda`` and ``mean_s = 0.4``, the mean response time is
    ``1 / (1 / mean_s - lambda)`` (2.0 s at ``lambda = 2``).

    Attributes:
        mean_s: Mean service time, in seconds.

    Example:
        >>> model = ExponentialBatchService(0.4)
        >>> rng = np.random.default_rng(0)
        >>> service_s, first_token_s = model.batch_timing(np.array([1]), np.array([1]), rng)
        >>> service_s > 0.0, first_token_s
        (True, nan)
    """

    mean_s: float

    def __post_init__(self) -> None:
        value = _checks.real(type(self).__name__, "mean_s", self.mean_s, positive=True)
        object.__setattr__(self, "mean_s", value)

    def batch_timing(
        self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, rng: np.random.Generator
    ) -> tuple[float, float]:
        """One exponential draw of mean ``mean_s``, and ``nan``.

        Args:
            prompt_tokens: Prompt lengths (ignored).
            output_tokens: Output lengths (ignored).
            rng: Source of the draw.

        Returns:
            The service time in seconds and ``nan``.
        """
        return rng.exponential(self.mean_s), math.nan

    def mean_service_s(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray) -> float:
        """The expected service time of a batch, ``mean_s`` (what capacity estimates average).

        Args:
            prompt_tokens: Prompt lengths (ignored).
            output_tokens: Output lengths (ignored).

        Returns:
            The mean service time in seconds.
        """
        return self.mean_s

    def estimate_s(self, batch_size: int, prompt_tokens: float, output_tokens: float) -> float:
        """``mean_s``.

        Args:
            batch_size: Number of requests (ignored).
            prompt_tokens: Prompt length (ignored).
            output_tokens: Output length (ignored).

        Returns:
            The mean service time in seconds.
        """
        return self.mean_s

    def compiled_timing(self) -> None:
        """``None``: the draws come from the run's numpy generator, in Python."""
        return None


@njit(cache=True)
def compiled_batch_timing(code, params, prompt, output, head, stop):
    """``(service_s, first_token_s)`` of positions ``head .. stop - 1`` by the model ``code``.

    ``code`` and ``params`` are what the model's ``compiled_timing()`` returns; ``code`` must
    not be :data:`PYTHON_TIMING`.
    """
    if code == ENGINE_TIMING:
        return engine_batch_timing(params, prompt, output, head, stop)
    if code == STATIC_TIMING:
        return static_batch_timing(params, prompt, output, head, stop)
    return max_service_timing(params, prompt, output, head, stop)
