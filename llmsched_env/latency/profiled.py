"""Iteration latency built from measured per-layer GPU profiles (vLLM 0.19, LLMServingSim 2.0).

:class:`ProfiledIterationLatency` composes one continuous-batching iteration from the per-layer
times of :mod:`llmsched_env.latency.profile_data`, the way LLMServingSim 2.0
(casys-kaist/LLMServingSim) composes its execution trace::

    t = layers * (attention(c, p, n, k) + sum of layer ops(T) [+ moe(T, experts)] + comm(T))
        + embedding(T) + final_norm(T) + lm_head(S) + sampler(S) + overhead

with ``c`` the prefill tokens of all chunks together, ``p`` the KV tokens their sequences held
before the chunks (summed over chunks), ``n`` the decode sequences, ``k`` their *mean* KV context
(the profile holds one KV length per decode; a uniform batch at the mean reads the same total KV
as the real one), ``T = c + n`` the tokens and ``S`` the sequences (one row of logits each).
Several prefill chunks in one iteration are looked up as one chunk of their summed tokens and
history, as LLMServingSim does.

Interpolation: piecewise linear on every axis (multilinear over the four attention axes, bilinear
over the MoE table). LLMServingSim reports that linear blending beats blending in log space on
these doubling grids, because the kernels are close to linear in each axis; leave-one-out on the
grids shipped here agrees (see ``data/README.md`` for the numbers). Below the first grid value a
lookup takes the first value. Beyond the last grid value it extrapolates along the last segment,
with its slope floored at zero, so a larger batch is never cheaper than the largest profiled one;
the result is never NaN.

Uneven decode contexts: a batch whose decode sequences hold different KV lengths is slower than
the uniform batch at their mean. With ``skew`` set (the profiler's fit, :mod:`.skew`), the decode
attention of every layer becomes ``t_mean + alpha * (t_max - t_mean)``, ``t_max`` being the
attention at the longest context, as in LLMServingSim 2.0; the simulator passes the longest and
shortest decode context of every iteration. The profiles time GPU kernels in eager mode; a
per-iteration CPU cost (scheduling, input preparation, sampling bookkeeping) is not in them and
can be added with ``iteration_overhead_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from llmsched_env.jit import njit
from llmsched_env.latency import _checks
from llmsched_env.latency.architectures import PROLOGUE_OPS, SEQUENCE_OPS, ModelArchitecture
from llmsched_env.latency.profile_data import LayerProfile
from llmsched_env.latency.skew import DecodeSkewCorrection, skew_alpha
from llmsched_env.sim.state_schema import Field, StateSchema

if TYPE_CHECKING:
    from llmsched_env.latency.iteration_timing import CompiledTiming

_US = 1e-6


@njit(cache=True)
def _bracket(axis: np.ndarray, x: float) -> tuple[int, float]:  # pragma: no cover - numba
    """Segment index and position of ``x`` on a sorted axis (clamped below, extrapolated above)."""
    if x <= axis[0]:
        return 0, 0.0
    i = np.searchsorted(axis, x, side="right") - 1
    if i > axis.shape[0] - 2:
        i = axis.shape[0] - 2
    return i, (x - axis[i]) / (axis[i + 1] - axis[i])


@njit(cache=True)
def _mix(lo: float, hi: float, t: float) -> float:  # pragma: no cover - numba
    """Linear blend; beyond the segment (``t > 1``) a falling slope is floored at zero."""
    step = hi - lo
    if t > 1.0 and step < 0.0:
        step = 0.0
    return lo + t * step


@njit(cache=True)
def _interp1(axis: np.ndarray, values: np.ndarray, x: float) -> float:  # pragma: no cover
    i, t = _bracket(axis, x)
    return _mix(values[i], values[i + 1], t)


@njit(cache=True)
def _attention(a0, a1, a2, a3, grid, x0, x1, x2, x3):  # pragma: no cover - numba
    """Multilinear interpolation of the 4-D attention grid."""
    i0, t0 = _bracket(a0, x0)
    i1, t1 = _bracket(a1, x1)
    i2, t2 = _bracket(a2, x2)
    i3, t3 = _bracket(a3, x3)
    out0 = 0.0
    for b0 in range(2):
        out1 = 0.0
        for b1 in range(2):
            lo = _mix(grid[i0 + b0, i1 + b1, i2, i3], grid[i0 + b0, i1 + b1, i2, i3 + 1], t3)
            hi = _mix(
                grid[i0 + b0, i1 + b1, i2 + 1, i3], grid[i0 + b0, i1 + b1, i2 + 1, i3 + 1], t3
            )
            value = _mix(lo, hi, t2)
            out1 = value if b1 == 0 else _mix(out1, value, t1)
        out0 = out1 if b0 == 0 else _mix(out0, out1, t0)
    return out0


@njit(cache=True)
def _moe_row(experts, row, valid, active):  # pragma: no cover - numba
    """One token row of the MoE table at ``active`` experts, clamped to the measured range."""
    if valid == 1 or active <= experts[0]:
        return row[0]
    if active >= experts[valid - 1]:
        return row[valid - 1]
    j, t = _bracket(experts[:valid], active)
    return row[j] + t * (row[j + 1] - row[j])


@njit(cache=True)
def _iteration_us(
    c,
    p,
    n,
    k,
    tokens,
    sequences,
    layers,
    a0,
    a1,
    a2,
    a3,
    attention,
    dense_tokens,
    layer_dense,
    once_dense,
    seq_axis,
    seq_us,
    moe_tokens,
    moe_experts,
    moe_us,
    moe_valid,
    experts_local,
    route_miss,
    gathered,
    comm0,
    comm1,
):  # pragma: no cover - numba
    """One iteration in microseconds; see the module docstring for the formula."""
    per_layer = _attention(a0, a1, a2, a3, attention, c, p, n, k)
    per_layer += _interp1(dense_tokens, layer_dense, tokens)
    if moe_tokens.shape[0] > 0:
        active = experts_local * (1.0 - route_miss ** (gathered * max(tokens, 1.0)))
        i, t = _bracket(moe_tokens, tokens)
        lo = _moe_row(moe_experts, moe_us[i], moe_valid[i], active)
        hi = _moe_row(moe_experts, moe_us[i + 1], moe_valid[i + 1], active)
        per_layer += _mix(lo, hi, t)
    per_layer += comm0 + comm1 * tokens
    total = layers * per_layer + _interp1(dense_tokens, once_dense, tokens)
    return total + _interp1(seq_axis, seq_us, sequences)


#: The tables of one :class:`ProfiledIterationLatency`, in one float and one int buffer: a
#: compiled call then unboxes three arrays (the buffers and their layout) instead of fourteen
#: arrays and six numbers.
#: Grids of several dimensions are stored flat (C order) and reshaped by :func:`_iteration_s`.
LATENCY_TABLES = StateSchema(
    "ProfiledLatencyTables",
    __name__,
    (
        "n_chunk",
        "n_history",
        "n_decode",
        "n_context",
        "n_attention",
        "n_dense",
        "n_sequences",
        "n_moe_tokens",
        "n_moe_experts",
        "n_moe_cells",
        "n_skew",
    ),
    (
        Field("layers", "f", 1, "decoder layers"),
        Field("a0", "f", "n_chunk", "attention axis: prefill chunk tokens"),
        Field("a1", "f", "n_history", "attention axis: KV the chunks' sequences held before"),
        Field("a2", "f", "n_decode", "attention axis: decode sequences"),
        Field("a3", "f", "n_context", "attention axis: mean decode KV context"),
        Field("attention", "f", "n_attention", "attention time per layer on that grid, flat"),
        Field("dense_tokens", "f", "n_dense", "token axis of the dense ops"),
        Field("layer_dense", "f", "n_dense", "one layer's dense ops"),
        Field("once_dense", "f", "n_dense", "the ops run once (embedding, final norm)"),
        Field("seq_axis", "f", "n_sequences", "sequence axis of the per-sequence ops"),
        Field("seq_us", "f", "n_sequences", "per-sequence ops (lm_head, sampler)"),
        Field("moe_tokens", "f", "n_moe_tokens", "token axis of the MoE table (empty: dense)"),
        Field("moe_experts", "f", "n_moe_experts", "expert-count axis of the MoE table"),
        Field("moe_us", "f", "n_moe_cells", "MoE block time per token row and expert count, flat"),
        Field("moe_valid", "i", "n_moe_tokens", "measured expert counts of each token row"),
        Field("experts_local", "f", 1, "experts on one GPU"),
        Field("route_miss", "f", 1, "1 - top_k / experts: a token's chance to miss an expert"),
        Field("gathered", "f", 1, "engines whose tokens an MoE layer gathers"),
        Field("comm0", "f", 1, "collectives' fixed time per layer"),
        Field("comm1", "f", 1, "collectives' time per token per layer"),
        Field("has_skew", "i", 1, "1: correct decode attention for uneven contexts"),
        Field("alpha_default", "f", 1, "skew weight of a batch shape without a fitted bucket"),
        Field("skew_keys", "i", "n_skew", "fitted bucket keys, sorted"),
        Field("skew_alphas", "f", "n_skew", "their skew weights"),
    ),
)
#: Compiled ``view(floats, ints, layout)`` of :data:`LATENCY_TABLES`.
_tables_view = LATENCY_TABLES.view


@njit(cache=True)
def _iteration_s(
    prefill, decode, context, prefill_kv, sequences, kv_max, kv_min, floats, ints, layout
):  # pragma: no cover - numba
    """One iteration in microseconds, the skew correction included; all inputs are floats.

    :meth:`ProfiledIterationLatency.iteration_s` before its unit and overhead, in one compiled
    call over the model's :data:`LATENCY_TABLES` buffers.
    """
    t = _tables_view(floats, ints, layout)
    grid = t.attention.reshape((t.a0.size, t.a1.size, t.a2.size, t.a3.size))
    moe_us = t.moe_us.reshape((t.moe_tokens.size, t.moe_experts.size))
    if sequences <= 0.0 and prefill > 0.0:
        sequences = 1.0  # a caller that does not count prefill sequences: at least one
    mean_kv = context / decode if decode > 0.0 else 0.0
    layers = t.layers[0]
    duration = _iteration_us(
        prefill,
        prefill_kv,
        decode,
        mean_kv,
        prefill + decode,
        sequences + decode,
        layers,
        t.a0,
        t.a1,
        t.a2,
        t.a3,
        grid,
        t.dense_tokens,
        t.layer_dense,
        t.once_dense,
        t.seq_axis,
        t.seq_us,
        t.moe_tokens,
        t.moe_experts,
        moe_us,
        t.moe_valid,
        t.experts_local[0],
        t.route_miss[0],
        t.gathered[0],
        t.comm0[0],
        t.comm1[0],
    )
    if t.has_skew[0] and decode > 1.0 and kv_max > mean_kv:
        alpha = skew_alpha(
            t.skew_keys,
            t.skew_alphas,
            t.alpha_default[0],
            prefill,
            decode,
            mean_kv,
            kv_max,
            kv_min,
            prefill_kv,
        )
        if alpha != 0.0:
            t_mean = _attention(t.a0, t.a1, t.a2, t.a3, grid, prefill, prefill_kv, decode, mean_kv)
            t_max = _attention(t.a0, t.a1, t.a2, t.a3, grid, prefill, prefill_kv, decode, kv_max)
            if t_max > t_mean:
                duration += layers * alpha * (t_max - t_mean)
    return duration


@dataclass(frozen=True)
class InterconnectLink:
    """The GPU-to-GPU link that tensor- and expert-parallel collectives cross (alpha-beta model).

    A collective over ``g`` GPUs moving ``B`` bytes in total takes ``latency_s + f * B /
    bandwidth``, with ``f = 2 (g - 1) / g`` for an all-reduce (reduce-scatter plus all-gather) and
    ``f = (g - 1) / g`` for an all-gather or a reduce-scatter, as in a ring.

    Attributes:
        bandwidth_gb_s: Link bandwidth in GB/s (1e9 bytes per second), > 0.
        latency_s: Fixed cost of one collective, in seconds.
    """

    bandwidth_gb_s: float
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        object.__setattr__(
            self,
            "bandwidth_gb_s",
            _checks.real(owner, "bandwidth_gb_s", self.bandwidth_gb_s, positive=True),
        )
        object.__setattr__(self, "latency_s", _checks.real(owner, "latency_s", self.latency_s))


@dataclass(frozen=True)
class ProfiledIterationLatency:
    """Deterministic iteration time from per-layer GPU profiles; see the module docstring.

    Parallelism. With ``tp_degree > 1`` on a profile measured at TP 1, each GPU is charged the TP 1
    time divided by ``tp_degree`` for every op that tensor parallelism splits (projections,
    attention heads, embedding, ``lm_head``) and the full time for the ``tp_stable_ops`` (norms,
    sampler), plus two all-reduces of ``T * hidden_size`` activations per layer (after ``o_proj``
    and ``down_proj``) over ``link``. With ``ep_degree > 1`` (a MoE model served by ``ep_degree``
    data-parallel engines, one GPU each, sharing their experts) the model describes one engine and
    assumes its peers carry as many tokens: each MoE layer all-gathers the ``ep_degree * T`` tokens
    (hidden state and router logits), runs its ``experts / ep_degree`` local experts on them, then
    reduce-scatters the outputs. The expert kernel is looked up at ``T`` tokens (the gathered
    tokens send ``T * top_k`` token-expert pairs to each GPU, as many as ``T`` tokens on one GPU
    holding every expert) and at the expected number of distinct local experts hit under uniform
    routing, ``(E / ep) * (1 - (1 - top_k / E) ** (ep * T))``.

    Attributes:
        profile: The per-layer times.
        architecture: Layers, ops and sizes of the profiled model.
        tp_degree: Tensor-parallel degree of the served engine.
        ep_degree: Expert-parallel degree (data-parallel engines sharing the experts).
        link: Interconnect for the collectives; required when ``tp_degree`` or ``ep_degree`` > 1.
        profiled_tp_degree: TP degree the profile was measured at (the shipped ones: 1).
        chunk_tokens: Prefill chunk size assumed by :meth:`marginal_request_s` (the engine's
            ``max_num_batched_tokens``).
        iteration_overhead_s: Time added to every iteration (CPU work not in the profiles).
        skew: The profiler's correction for uneven decode contexts; ``None`` leaves it out.
        stochastic: Always ``False``.
        uses_decode_spread: Always ``True``: the model reads the longest and shortest decode
            context, so the simulator computes them.

    Raises:
        ValueError: If the profile lacks an op the architecture needs, lacks ``moe.csv`` for a MoE
            model, was measured at a TP degree that cannot emulate ``tp_degree``, or ``link`` is
            missing for a parallel engine.
    """

    profile: LayerProfile = field(repr=False)
    architecture: ModelArchitecture
    tp_degree: int = 1
    ep_degree: int = 1
    link: InterconnectLink | None = None
    profiled_tp_degree: int = 1
    chunk_tokens: int = 2048
    iteration_overhead_s: float = 0.0
    skew: DecodeSkewCorrection | None = None
    stochastic: ClassVar[bool] = False
    uses_decode_spread: ClassVar[bool] = True
    _args: tuple = field(init=False, repr=False, compare=False)
    _tables: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner = type(self).__name__
        arch, prof = self.architecture, self.profile
        tp = _checks.integer(owner, "tp_degree", self.tp_degree, minimum=1)
        ep = _checks.integer(owner, "ep_degree", self.ep_degree, minimum=1)
        _checks.integer(owner, "chunk_tokens", self.chunk_tokens, minimum=1)
        overhead = _checks.real(owner, "iteration_overhead_s", self.iteration_overhead_s)
        object.__setattr__(self, "iteration_overhead_s", overhead)
        if tp != self.profiled_tp_degree and self.profiled_tp_degree != 1:
            raise ValueError(
                f"{owner}: the profile in {str(prof.directory)!r} was measured at TP "
                f"{self.profiled_tp_degree}, which does not cover tp_degree={tp}; profile that "
                "degree (or TP 1, from which other degrees are emulated)"
            )
        if (tp > 1 or ep > 1) and self.link is None:
            raise ValueError(
                f"{owner}: tp_degree={tp}, ep_degree={ep} needs `link` (an InterconnectLink) "
                "for the collectives"
            )
        moe = arch.experts > 0
        if moe and not prof.has_moe:
            raise ValueError(
                f"{owner}: {arch.name} is a MoE model but {str(prof.directory / 'moe.csv')!r} "
                "does not exist"
            )
        self._check_ops()
        if ep > 1 and (not moe or arch.experts % ep):
            raise ValueError(
                f"{owner}: ep_degree={ep} needs a MoE model whose {arch.experts} experts it divides"
            )
        if moe and tp > 1:
            raise ValueError(f"{owner}: tensor parallelism of a MoE model is not modelled")
        shard = tp // self.profiled_tp_degree

        def scaled(op: str, curves: dict[str, np.ndarray]) -> np.ndarray:
            return curves[op] if op in arch.tp_stable_ops else curves[op] / shard

        layer = sum(scaled(op, prof.dense_us) for op in arch.layer_ops)
        once = sum(scaled(op, prof.dense_us) for op in PROLOGUE_OPS)
        per_seq = sum(scaled(op, prof.per_sequence_us) for op in SEQUENCE_OPS)
        comm0 = comm1 = 0.0
        if self.link is not None:
            per_byte_us = 1e-3 / self.link.bandwidth_gb_s
            activation = arch.hidden_size * arch.dtype_bytes
            if tp > 1:  # two all-reduces per layer
                comm0 += 2 * self.link.latency_s / _US
                comm1 += 2 * 2 * (tp - 1) / tp * activation * per_byte_us
            if ep > 1:  # all-gather of hidden + router logits, reduce-scatter of hidden
                routed = activation + arch.experts * arch.dtype_bytes
                comm0 += 2 * self.link.latency_s / _US
                comm1 += (ep - 1) * (routed + activation) * per_byte_us
        empty = np.zeros(0)
        moe_args = (
            (prof.moe_tokens, prof.moe_experts, prof.moe_us, prof.moe_valid)
            if moe
            else (empty, empty, np.zeros((0, 0)), np.zeros(0, dtype=np.int64))
        )
        args = (
            float(arch.layers),
            *prof.attention_axes,
            np.ascontiguousarray(prof.attention_us / shard),
            prof.dense_tokens,
            np.asarray(layer, dtype=float),
            np.asarray(once, dtype=float),
            prof.sequence_counts,
            np.asarray(per_seq, dtype=float),
            *moe_args,
            float(arch.experts // ep) if moe else 0.0,
            1.0 - arch.active_experts / arch.experts if moe else 1.0,
            float(ep),
            comm0,
            comm1,
        )
        object.__setattr__(self, "_args", args)
        object.__setattr__(self, "_tables", self._pack_tables(args))

    def _pack_tables(self, args: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:data:`LATENCY_TABLES` buffers ``(floats, ints, layout)`` holding ``args``' tables.

        ``args`` are :func:`_iteration_us`'s table arguments, which the first fields of
        :data:`LATENCY_TABLES` name in the same order; the skew correction's fields follow.
        """
        values = dict(zip((f.name for f in LATENCY_TABLES.fields), args))
        values["attention"] = values["attention"].ravel()
        values["moe_us"] = values["moe_us"].ravel()
        keys, alphas = self.skew.bucket_table() if self.skew is not None else (np.zeros(0),) * 2
        values.update(
            has_skew=int(self.skew is not None),
            alpha_default=self.skew.alpha_default if self.skew is not None else 0.0,
            skew_keys=keys,
            skew_alphas=alphas,
        )
        floats, ints, layout = LATENCY_TABLES.allocate(
            n_chunk=values["a0"].size,
            n_history=values["a1"].size,
            n_decode=values["a2"].size,
            n_context=values["a3"].size,
            n_attention=values["attention"].size,
            n_dense=values["dense_tokens"].size,
            n_sequences=values["seq_axis"].size,
            n_moe_tokens=values["moe_tokens"].size,
            n_moe_experts=values["moe_experts"].size,
            n_moe_cells=values["moe_us"].size,
            n_skew=keys.size,
        )
        t = LATENCY_TABLES.views(floats, ints, layout)
        for name, value in values.items():
            getattr(t, name)[:] = value
        return floats, ints, layout

    def _check_ops(self) -> None:
        """Raise ``ValueError`` naming the file if an op the architecture runs was not profiled."""
        arch, prof = self.architecture, self.profile
        for filename, needed, have in (
            ("dense.csv", (*arch.layer_ops, *PROLOGUE_OPS), prof.dense_us),
            ("per_sequence.csv", SEQUENCE_OPS, prof.per_sequence_us),
        ):
            missing = sorted(set(needed) - set(have))
            if missing:
                raise ValueError(
                    f"{type(self).__name__}: {str(prof.directory / filename)!r} has no rows for "
                    f"layer(s) {missing} that {arch.name} runs; it has {sorted(have)}"
                )

    def _us(
        self,
        prefill: float,
        decode: float,
        context: float,
        prefill_kv: float,
        sequences: float,
        kv_max: float = 0.0,
        kv_min: float = 0.0,
    ) -> float:
        duration = _iteration_s(
            float(prefill),
            float(decode),
            float(context),
            float(prefill_kv),
            float(sequences),
            float(kv_max),
            float(kv_min),
            *self._tables,
        )
        if not duration >= 0.0:  # also catches NaN from NaN inputs
            raise ValueError(
                f"{type(self).__name__}: no valid time for prefill_tokens={prefill!r}, "
                f"decode_tokens={decode!r}, context_tokens={context!r}, "
                f"prefill_kv_tokens={prefill_kv!r}, prefill_sequences={sequences!r}"
            )
        return duration

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
            prefill_tokens: Prompt tokens of all prefill chunks together.
            decode_tokens: Decode sequences.
            context_tokens: Total KV context of the decode sequences.
            rng: Unused (kept for the protocol).
            prefill_kv_tokens: KV tokens the chunks' sequences held before their chunks.
            prefill_sequences: Sequences with a prefill chunk; when 0 while ``prefill_tokens >
                0`` (a caller that does not pass it), one is assumed.
            decode_kv_max: Longest KV context among the decode sequences (0: not given, no
                skew correction).
            decode_kv_min: Shortest KV context among the decode sequences.

        Returns:
            The iteration's duration in seconds.

        Raises:
            ValueError: If an input is NaN. The counts are not range-checked here (this is the
                simulator's call per iteration); :meth:`estimate_s` checks them.
        """
        us = self._us(
            prefill_tokens,
            decode_tokens,
            context_tokens,
            prefill_kv_tokens,
            prefill_sequences,
            decode_kv_max,
            decode_kv_min,
        )
        return us * _US + self.iteration_overhead_s

    def compiled_timing(self) -> CompiledTiming | None:
        """Its timing inside compiled code (:mod:`~llmsched_env.latency.iteration_timing`).

        ``None`` for a subclass, whose overrides the compiled timing would not see.
        """
        from llmsched_env.latency.iteration_timing import PROFILED_TIMING, compiled_timing

        if type(self) is not ProfiledIterationLatency:
            return None
        return compiled_timing(PROFILED_TIMING, self.iteration_overhead_s, tables=self._tables)

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
        """Expected duration; the same value as :meth:`iteration_s`.

        Args:
            prefill_tokens: Prompt tokens processed in the iteration.
            decode_tokens: Decode sequences in the iteration.
            context_tokens: Total KV context of the decode sequences.
            prefill_kv_tokens: KV tokens the chunks' sequences held before their chunks.
            prefill_sequences: Sequences with a prefill chunk (at least one is assumed when
                ``prefill_tokens > 0``).
            decode_kv_max: Longest KV context among the decode sequences (0: not given).
            decode_kv_min: Shortest KV context among the decode sequences.

        Returns:
            The duration in seconds.
        """
        _checks.iteration_estimate(type(self).__name__, locals())
        return self.iteration_s(
            prefill_tokens,
            decode_tokens,
            context_tokens,
            None,
            prefill_kv_tokens,
            prefill_sequences,
            decode_kv_max,
            decode_kv_min,
        )

    def marginal_request_s(self, prompt_tokens: float, output_tokens: float) -> float:
        """GPU time one request adds to a large batch (no per-iteration costs).

        The sum of four marginal costs, each taken from the model at a large batch:

        - token work: ``(p + o - 1)`` tokens at the slope of the per-token ops (all layers' dense
          ops, MoE block and collectives, plus embedding and final norm) between 1024 and 2048
          tokens;
        - logits rows: ``ceil(p / chunk_tokens) + o - 1`` rows (one per iteration the request is
          in) at the slope of ``lm_head`` + sampler between 128 and 256 sequences;
        - decode attention: the ``(o - 1) * p + o * (o - 1) / 2`` KV tokens its decodes read, at
          the slope per KV token of a 128-sequence decode batch between KV 4096 and 8192;
        - prefill attention: its chunks of ``chunk_tokens`` looked up one by one (with the
          history of the earlier chunks), without decodes.

        Args:
            prompt_tokens: Prompt length ``p`` (or its mean).
            output_tokens: Output length ``o`` including the first token (or its mean).

        Returns:
            Seconds of GPU time.
        """
        _checks.request_lengths(type(self).__name__, prompt_tokens, output_tokens)
        t = LATENCY_TABLES.views(*self._tables)
        layers, a0, a1, a2, a3 = t.layers[0], t.a0, t.a1, t.a2, t.a3
        grid = t.attention.reshape((a0.size, a1.size, a2.size, a3.size))
        per_token = 0.0
        for tokens, sign in ((2048.0, 1.0), (1024.0, -1.0)):  # one prefill, attention removed
            work = self._us(tokens, 0.0, 0.0, 0.0, 1.0)
            work -= layers * _attention(a0, a1, a2, a3, grid, tokens, 0.0, 0.0, 0.0)
            per_token += sign * work / 1024.0
        per_row = (
            _interp1(t.seq_axis, t.seq_us, 256.0) - _interp1(t.seq_axis, t.seq_us, 128.0)
        ) / 128.0
        per_kv = layers * (
            _attention(a0, a1, a2, a3, grid, 0.0, 0.0, 128.0, 8192.0)
            - _attention(a0, a1, a2, a3, grid, 0.0, 0.0, 128.0, 4096.0)
        )
        per_kv /= 128.0 * 4096.0
        decode_steps = max(output_tokens - 1.0, 0.0)
        prefill_attention = 0.0
        done = 0.0
        while done < prompt_tokens:
            chunk = min(float(self.chunk_tokens), prompt_tokens - done)
            prefill_attention += _attention(a0, a1, a2, a3, grid, chunk, done, 0.0, 0.0)
            done += chunk
        rows = math.ceil(prompt_tokens / self.chunk_tokens) + decode_steps
        context = decode_steps * prompt_tokens + 0.5 * output_tokens * decode_steps
        us = per_token * (prompt_tokens + decode_steps) + per_row * rows + per_kv * context
        return (us + layers * prefill_attention) * _US
