"""Iteration-level latency models, for continuous batching.

An engine with continuous batching runs one iteration after another; each iteration processes some
prompt (prefill) tokens and one new token for each running (decode) sequence. These models give the
duration of one iteration from that work. The simulator calls :meth:`iteration_s` once per
iteration, so the models use plain float arithmetic on Python scalars and allocate nothing.

Token convention used throughout: a request with ``prompt_tokens`` p and ``output_tokens`` o
costs p tokens of prefill work, and the prefill emits its first output token; the other ``o - 1``
tokens come from ``o - 1`` decode iterations, each charging the request one decode token. At its
j-th decode iteration (j = 1 .. o - 1) the request's KV context is ``p + j`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from llmsched_env.latency import _checks

if TYPE_CHECKING:
    from llmsched_env.latency.iteration_timing import CompiledTiming


class IterationLatencyModel(Protocol):
    """What the continuous-batching simulator needs from an iteration latency model."""

    @property
    def stochastic(self) -> bool:
        """``True`` if :meth:`iteration_s` draws randomness from the generator it is given.

        ``False`` if :meth:`iteration_s` equals :meth:`estimate_s` and ignores the generator.
        """
        ...

    def iteration_s(
        self,
        prefill_tokens: int,
        decode_tokens: int,
        context_tokens: int,
        rng: np.random.Generator,
        prefill_kv_tokens: int = 0,
        prefill_sequences: int = 0,
        decode_kv_max: int = 0,
        decode_kv_min: int = 0,
    ) -> float:
        """Duration of one iteration.

        The simulator calls this once per iteration, so implementations need not check that the
        counts are non-negative (:meth:`estimate_s`, the form for other callers, checks them).

        Args:
            prefill_tokens: Prompt tokens processed in this iteration (all prefill chunks together).
            decode_tokens: Running sequences that each get one new token in this iteration.
            context_tokens: Total KV context of the decode sequences: the sum over them of their
                prompt plus generated tokens.
            rng: Source of any randomness.
            prefill_kv_tokens: Sum over this iteration's prefill chunks of the tokens their
                sequence already had in its KV cache before the chunk (earlier chunks of the same
                prompt, or of a recomputation); 0 when every chunk starts a prompt.
            prefill_sequences: Sequences with a prefill chunk in this iteration, so the batch holds
                ``prefill_sequences + decode_tokens`` sequences, each with one row of logits.
            decode_kv_max: The longest KV context (prompt plus generated tokens) among the decode
                sequences; given (with ``decode_kv_min``) only to models whose
                ``uses_decode_spread`` attribute is true, 0 otherwise.
            decode_kv_min: The shortest KV context among the decode sequences.

        Returns:
            The iteration's duration in seconds.
        """
        ...

    def marginal_request_s(self, prompt_tokens: float, output_tokens: float) -> float:
        """Marginal GPU time one request adds when batched with many others.

        This is the request's token work, without the per-iteration overhead (which a large batch
        shares among many requests). ``1 / marginal_request_s(E[prompt], E[output])`` is the
        work bound on the capacity, in requests per second.

        Args:
            prompt_tokens: The request's prompt length (or its mean over a workload).
            output_tokens: The request's output length, including the first token, which the
                prefill emits (or its mean over a workload).

        Returns:
            Seconds of GPU time.

        Raises:
            ValueError: If ``prompt_tokens < 0`` or ``output_tokens < 1`` (or either is not
                finite).
        """
        ...

    def estimate_s(
        self,
        prefill_tokens: float,
        decode_tokens: float,
        context_tokens: float = 0.0,
        prefill_kv_tokens: float = 0.0,
        prefill_sequences: float = 0,
        decode_kv_max: float = 0.0,
        decode_kv_min: float = 0.0,
    ) -> float:
        """Deterministic expected duration of an iteration; never draws randomness.

        Args:
            prefill_tokens: Prompt tokens processed in the iteration.
            decode_tokens: Decode sequences in the iteration.
            context_tokens: Total KV context of the decode sequences.
            prefill_kv_tokens: KV tokens the prefill chunks' sequences held before their chunks
                (see :meth:`iteration_s`).
            prefill_sequences: Sequences with a prefill chunk in the iteration.
            decode_kv_max: The longest KV context among the decode sequences.
            decode_kv_min: The shortest KV context among the decode sequences.

        Returns:
            The expected duration in seconds.
        """
        ...


@dataclass(frozen=True)
class AffineIterationLatency:
    """Affine iteration time with a free-work threshold: ``S(w) = c + a * max(0, w - b0)``.

    ``w = prefill_tokens + decode_tokens`` is the iteration's token work. This is the model of the
    Cornell ORIE 4580/5580 serving simulators (after Li, Dai and Peng, arXiv 2504.07347): a fixed
    per-iteration cost ``c``, and ``a`` per token beyond the first ``b0`` tokens, which the GPU
    processes for free because a small iteration is memory-bound. A mixed iteration is charged on
    the *sum* of its prefill tokens and decode sequences; one reference simulator charges
    ``max(S(prefill), S(decode))`` instead, which undercharges mixed batches, and that is not copied
    here. The KV context does not enter this model.

    With ``stochastic=True`` (the course's Simulator A) the two coefficients are random:
    ``C ~ Exp(mean c)`` and ``A ~ Exp(mean a)``, drawn independently for every iteration, so
    ``E[S(w)] = c + a * max(0, w - b0)``. ``A`` is drawn only when ``w > b0``, since it would be
    multiplied by zero otherwise.

    Attributes:
        c_s: Fixed cost of every iteration (or its mean), in seconds; must be > 0 so that every
            iteration takes time and the simulation always advances.
        a_s_per_token: Cost per token of work beyond ``b0_tokens`` (or its mean), in seconds.
        b0_tokens: Tokens of work per iteration that cost nothing beyond ``c_s``.
        stochastic: Draw ``C`` and ``A`` from exponential distributions per iteration.

    Example:
        >>> model = AffineIterationLatency(c_s=0.0455, a_s_per_token=0.0003, b0_tokens=64)
        >>> round(model.estimate_s(prefill_tokens=100, decode_tokens=28), 6)  # 0.0455 + 0.0003*64
        0.0647
        >>> model.estimate_s(prefill_tokens=0, decode_tokens=10)  # below b0: just c
        0.0455
    """

    c_s: float
    a_s_per_token: float
    b0_tokens: int = 0
    stochastic: bool = False

    def __post_init__(self) -> None:
        owner = type(self).__name__
        object.__setattr__(self, "c_s", _checks.real(owner, "c_s", self.c_s, positive=True))
        object.__setattr__(
            self, "a_s_per_token", _checks.real(owner, "a_s_per_token", self.a_s_per_token)
        )
        object.__setattr__(
            self, "b0_tokens", _checks.integer(owner, "b0_tokens", self.b0_tokens, minimum=0)
        )
        if not isinstance(self.stochastic, (bool, np.bool_)):
            raise TypeError(f"{owner}: stochastic must be a bool, got {self.stochastic!r}")
        object.__setattr__(self, "stochastic", bool(self.stochastic))

    def iteration_s(
        self,
        prefill_tokens: int,
        decode_tokens: int,
        context_tokens: int,
        rng: np.random.Generator,
        prefill_kv_tokens: int = 0,
        prefill_sequences: int = 0,
        decode_kv_max: int = 0,
        decode_kv_min: int = 0,
    ) -> float:
        """Duration of one iteration; see the class docstring for the formula.

        Args:
            prefill_tokens: Prompt tokens processed in this iteration.
            decode_tokens: Decode sequences in this iteration.
            context_tokens: Total KV context (ignored by this model).
            rng: Source of the exponential draws when ``stochastic``; unused otherwise.
            prefill_kv_tokens: KV tokens held before the prefill chunks (ignored by this model).
            prefill_sequences: Sequences with a prefill chunk (ignored by this model).
            decode_kv_max: Longest decode context (ignored by this model).
            decode_kv_min: Shortest decode context (ignored by this model).

        Returns:
            The iteration's duration in seconds.
        """
        excess = prefill_tokens + decode_tokens - self.b0_tokens
        if not self.stochastic:
            return self.c_s + self.a_s_per_token * excess if excess > 0 else self.c_s
        duration = rng.exponential(self.c_s)
        if excess > 0:
            duration += rng.exponential(self.a_s_per_token) * excess
        return duration

    def compiled_timing(self) -> CompiledTiming | None:
        """Its timing inside compiled code (:mod:`~llmsched_env.latency.iteration_timing`).

        ``None`` when stochastic (the draws come from the run's numpy generator, in Python) and
        for a subclass, whose overrides the compiled timing would not see.
        """
        from llmsched_env.latency.iteration_timing import AFFINE_TIMING, compiled_timing

        if self.stochastic or type(self) is not AffineIterationLatency:
            return None
        return compiled_timing(AFFINE_TIMING, self.c_s, self.a_s_per_token, self.b0_tokens)

    def marginal_request_s(self, prompt_tokens: float, output_tokens: float) -> float:
        """Token work of one request: ``a * (prompt_tokens + output_tokens - 1)``.

        The prefill charges ``prompt_tokens`` and emits the first output token; each of the other
        ``output_tokens - 1`` tokens charges one decode token. In a large batch the ``b0``
        threshold and ``c`` are per-iteration costs shared by all requests, so they are left out.

        Args:
            prompt_tokens: Prompt length (or its mean).
            output_tokens: Output length including the first token (or its mean).

        Returns:
            Seconds of GPU time.

        Example:
            >>> demo2 = AffineIterationLatency(c_s=0.01, a_s_per_token=0.0005)
            >>> round(1.0 / demo2.marginal_request_s(108.8, 160.0), 3)  # work bound, requests/s
            7.468
        """
        _checks.request_lengths(type(self).__name__, prompt_tokens, output_tokens)
        return self.a_s_per_token * (prompt_tokens + output_tokens - 1.0)

    def estimate_s(
        self,
        prefill_tokens: float,
        decode_tokens: float,
        context_tokens: float = 0.0,
        prefill_kv_tokens: float = 0.0,
        prefill_sequences: float = 0,
        decode_kv_max: float = 0.0,
        decode_kv_min: float = 0.0,
    ) -> float:
        """Expected duration ``c + a * max(0, prefill_tokens + decode_tokens - b0)``.

        Args:
            prefill_tokens: Prompt tokens processed in the iteration.
            decode_tokens: Decode sequences in the iteration.
            context_tokens: Total KV context (ignored by this model).
            prefill_kv_tokens: KV tokens held before the prefill chunks (ignored by this model).
            prefill_sequences: Sequences with a prefill chunk (ignored by this model).
            decode_kv_max: Longest decode context (ignored by this model).
            decode_kv_min: Shortest decode context (ignored by this model).

        Returns:
            The expected duration in seconds.
        """
        _checks.iteration_estimate(type(self).__name__, locals())
        excess = prefill_tokens + decode_tokens - self.b0_tokens
        return self.c_s + self.a_s_per_token * excess if excess > 0 else self.c_s


@dataclass(frozen=True)
class LinearIterationLatency:
    """Linear engine fit: ``t = b0 + b1 * prefill + b2 * decode + b3 * context``.

    The iteration time of real engines is close to linear in the work of the iteration
    (BLIS, the llm-d inference simulator, fits it so): ``b1`` per prompt token, ``b2`` per decode
    sequence and, optionally, ``b3`` per token of decode KV context (attention reads the whole
    context). The presets use the BLIS fits of vLLM 0.8.4 serving Llama-3.1-8B on one GPU, which
    have ``b3 = 0``.

    Attributes:
        b0_s: Fixed cost of every iteration, in seconds; must be > 0.
        b1_s_per_prefill_token: Cost per prompt token, in seconds.
        b2_s_per_decode_token: Cost per decode sequence (one new token each), in seconds.
        b3_s_per_context_token: Cost per token of decode KV context, in seconds.
        stochastic: Always ``False``: the model is deterministic.

    Example:
        >>> h100 = LinearIterationLatency(5752.7e-6, 17.25e-6, 6.00e-6)
        >>> round(h100.estimate_s(prefill_tokens=512, decode_tokens=32), 7)  # seconds
        0.0147767
    """

    b0_s: float
    b1_s_per_prefill_token: float
    b2_s_per_decode_token: float
    b3_s_per_context_token: float = 0.0
    stochastic: ClassVar[bool] = False

    def __post_init__(self) -> None:
        owner = type(self).__name__
        object.__setattr__(self, "b0_s", _checks.real(owner, "b0_s", self.b0_s, positive=True))
        for name in ("b1_s_per_prefill_token", "b2_s_per_decode_token", "b3_s_per_context_token"):
            object.__setattr__(self, name, _checks.real(owner, name, getattr(self, name)))

    def iteration_s(
        self,
        prefill_tokens: int,
        decode_tokens: int,
        context_tokens: int,
        rng: np.random.Generator,
        prefill_kv_tokens: int = 0,
        prefill_sequences: int = 0,
        decode_kv_max: int = 0,
        decode_kv_min: int = 0,
    ) -> float:
        """Duration of one iteration; deterministic, ``rng`` is unused.

        Args:
            prefill_tokens: Prompt tokens processed in this iteration.
            decode_tokens: Decode sequences in this iteration.
            context_tokens: Total KV context of the decode sequences.
            rng: Unused (kept for the protocol).
            prefill_kv_tokens: KV tokens held before the prefill chunks (ignored by this model).
            prefill_sequences: Sequences with a prefill chunk (ignored by this model).
            decode_kv_max: Longest decode context (ignored by this model).
            decode_kv_min: Shortest decode context (ignored by this model).

        Returns:
            The iteration's duration in seconds.
        """
        return (
            self.b0_s
            + self.b1_s_per_prefill_token * prefill_tokens
            + self.b2_s_per_decode_token * decode_tokens
            + self.b3_s_per_context_token * context_tokens
        )

    def compiled_timing(self) -> CompiledTiming | None:
        """Its timing inside compiled code (:mod:`~llmsched_env.latency.iteration_timing`).

        ``None`` for a subclass, whose overrides the compiled timing would not see.
        """
        from llmsched_env.latency.iteration_timing import LINEAR_TIMING, compiled_timing

        if type(self) is not LinearIterationLatency:
            return None
        return compiled_timing(
            LINEAR_TIMING,
            self.b0_s,
            self.b1_s_per_prefill_token,
            self.b2_s_per_decode_token,
            self.b3_s_per_context_token,
        )

    def marginal_request_s(self, prompt_tokens: float, output_tokens: float) -> float:
        """Token work of one request, without the per-iteration cost ``b0``.

        ``b1 * p + b2 * (o - 1) + b3 * ((o - 1) * p + o * (o - 1) / 2)``: the prefill of ``p``
        prompt tokens emits the first token, and the j-th of the ``o - 1`` decode iterations reads
        a context of ``p + j`` tokens. Passing mean lengths ignores the variance of ``o`` in the
        context term, which is exact only when ``b3 = 0``.

        Args:
            prompt_tokens: Prompt length ``p`` (or its mean).
            output_tokens: Output length ``o`` including the first token (or its mean).

        Returns:
            Seconds of GPU time.
        """
        _checks.request_lengths(type(self).__name__, prompt_tokens, output_tokens)
        decode_steps = output_tokens - 1.0
        work = self.b1_s_per_prefill_token * prompt_tokens
        work += self.b2_s_per_decode_token * decode_steps
        if self.b3_s_per_context_token:
            context = decode_steps * prompt_tokens + 0.5 * output_tokens * decode_steps
            work += self.b3_s_per_context_token * context
        return work

    def estimate_s(
        self,
        prefill_tokens: float,
        decode_tokens: float,
        context_tokens: float = 0.0,
        prefill_kv_tokens: float = 0.0,
        prefill_sequences: float = 0,
        decode_kv_max: float = 0.0,
        decode_kv_min: float = 0.0,
    ) -> float:
        """Expected duration; the same as :meth:`iteration_s`.

        Args:
            prefill_tokens: Prompt tokens processed in the iteration.
            decode_tokens: Decode sequences in the iteration.
            context_tokens: Total KV context of the decode sequences.
            prefill_kv_tokens: KV tokens held before the prefill chunks (ignored by this model).
            prefill_sequences: Sequences with a prefill chunk (ignored by this model).
            decode_kv_max: Longest decode context (ignored by this model).
            decode_kv_min: Shortest decode context (ignored by this model).

        Returns:
            The duration in seconds.
        """
        _checks.iteration_estimate(type(self).__name__, locals())
        return (
            self.b0_s
            + self.b1_s_per_prefill_token * prefill_tokens
            + self.b2_s_per_decode_token * decode_tokens
            + self.b3_s_per_context_token * context_tokens
        )
