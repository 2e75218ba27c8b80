"""Named latency models and KV memories, with the source of every number, and their lookup.

Environments take a preset name (a plain string keeps ``env.spec.to_json()`` working) or a model
object; :func:`make_batch_latency`, :func:`make_iteration_latency` and :func:`make_kv_memory` turn
either into an object. An unknown name raises an error that lists the valid names and suggests the
closest one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from llmsched_env.latency.batch import (
    BatchLatencyModel,
    EngineStaticBatchLatency,
    ExponentialBatchService,
    MaxServiceLatency,
    StaticBatchLatency,
)
from llmsched_env.latency.iteration import (
    AffineIterationLatency,
    IterationLatencyModel,
    LinearIterationLatency,
)
from llmsched_env.latency.memory import BYTES_PER_GB, KVMemory, kv_bytes_per_token
from llmsched_env.latency.splitwise import SPLITWISE_GROUPS, splitwise_batch_latency
from llmsched_env.registry import resolve

_US = 1e-6  # seconds per microsecond: the BLIS fits are published in microseconds


def llama31_8b_h100() -> LinearIterationLatency:
    """Llama-3.1-8B on vLLM 0.8.4, TP1, H100: BLIS fit (5752.7 us, 17.25 us, 6.00 us).

    Source: REFERENCE.md section 5 (BLIS per-iteration fits, in microseconds).

    Returns:
        ``LinearIterationLatency`` with ``b0 = 5.7527 ms``, ``b1 = 17.25 us`` per prompt token and
        ``b2 = 6.00 us`` per decode sequence.
    """
    return LinearIterationLatency(5752.7 * _US, 17.25 * _US, 6.00 * _US)


def llama31_8b_a100() -> LinearIterationLatency:
    """Llama-3.1-8B on vLLM 0.8.4, TP1, A100-80GB: BLIS fit (16441.5 us, 47.84 us, 18.21 us).

    Source: REFERENCE.md section 5 (BLIS per-iteration fits, in microseconds).

    Returns:
        ``LinearIterationLatency`` with ``b0 = 16.4415 ms``, ``b1 = 47.84 us`` per prompt token and
        ``b2 = 18.21 us`` per decode sequence.
    """
    return LinearIterationLatency(16441.5 * _US, 47.84 * _US, 18.21 * _US)


def llama3_70b_a100() -> AffineIterationLatency:
    """Llama-3-70B on A100: ``c = 45.5 ms``, ``a = 0.30 ms/token``, ``b0 = 64`` tokens.

    Source: Li, Dai and Peng, arXiv 2504.07347, as used by the Cornell ORIE 4580/5580 course
    simulators (REFERENCE.md section 4; also their "demo3" constants).

    Returns:
        A deterministic ``AffineIterationLatency``.
    """
    return AffineIterationLatency(c_s=0.0455, a_s_per_token=0.30e-3, b0_tokens=64)


ITERATION_LATENCY_PRESETS: dict[str, Callable[[], IterationLatencyModel]] = {
    "llama3-70b-a100": llama3_70b_a100,
    # Course Simulator B, workload "demo2": c = 10 ms, a = 0.5 ms/token, b0 = 0 (REFERENCE.md §4).
    "demo2": lambda: AffineIterationLatency(c_s=0.010, a_s_per_token=0.5e-3, b0_tokens=0),
    # Course Simulator B, workload "demo3": the llama3-70b-a100 constants (REFERENCE.md §4).
    "demo3": llama3_70b_a100,
    # Course Simulator A: C ~ Exp(mean 0.01 s), A ~ Exp(mean 0.001 s) per batch, b0 = 0 (§4).
    "sim-a": lambda: AffineIterationLatency(0.01, 0.001, b0_tokens=0, stochastic=True),
    # Course M/M/1 check: a one-token prefill-only job takes Exp(mean 0.4 s) (E[a] = 0) (§4).
    "mm1": lambda: AffineIterationLatency(0.4, 0.0, b0_tokens=0, stochastic=True),
    "llama3.1-8b-h100": llama31_8b_h100,
    "llama3.1-8b-a100": llama31_8b_a100,
}
"""Named iteration latency models (factories), for continuous batching."""


BATCH_LATENCY_PRESETS: dict[str, Callable[[], BatchLatencyModel]] = {
    # llm-scheduler-sim's documented synthetic values: 10 ms, 0.2 ms/token, gamma 0.3 (§1).
    "synthetic": lambda: StaticBatchLatency(alpha_s=0.010, beta_s_per_token=0.2e-3, gamma=0.3),
    # Least-squares fit of the shipped qwen3_1_7b_latency_grid.csv (R^2 0.9995), reproduced by
    # fit_static_batch_latency; the grid looks constructed rather than measured (data/README.md).
    "calibrated": lambda: StaticBatchLatency(
        alpha_s=0.0597, beta_s_per_token=0.005742, gamma=0.3157
    ),
    # Static batches on vLLM 0.8.4 / Llama-3.1-8B: one prefill then decodes of the whole batch (§5).
    "llama3.1-8b-h100": lambda: EngineStaticBatchLatency(llama31_8b_h100()),
    "llama3.1-8b-a100": lambda: EngineStaticBatchLatency(llama31_8b_a100()),
    # Multi-Bin Batching (arXiv 2412.04504): batch time = max member time, 10 ms per output token.
    "multibin-uniform": lambda: MaxServiceLatency(0.01),
    # Course M/M/1 check: Exp(mean 0.4 s) per batch of one (REFERENCE.md §4).
    "mm1": lambda: ExponentialBatchService(0.4),
}
"""Named batch latency models (factories), for static batching."""


def splitwise_preset_name(model: str, hardware: str, tensor_parallel: int) -> str:
    """Preset name of a Splitwise group, e.g. ``"splitwise-llama2-70b-a100-tp4"``.

    Args:
        model: Model name of the csv (``"llama2-70b"``, ``"bloom-176b"``).
        hardware: Hardware name of the csv (``"a100-80gb"``, ``"h100-80gb"``, ``"h100-80gb-pcap"``).
        tensor_parallel: Tensor parallelism.

    Returns:
        The name: ``"-80gb"`` is dropped, since every GPU of the data has 80 GB.
    """
    return f"splitwise-{model}-{hardware.replace('-80gb', '')}-tp{tensor_parallel}"


# Static batches of Llama2-70B (TP 2/4/8) and BLOOM-176B (TP 8) on A100-80GB, H100-80GB and
# power-capped H100, fitted (prefill with a floor, decode step linear in batch and context) to the
# measurements of splitwise-sim's perf_model.csv (Patel et al., Splitwise, ISCA 2024; MIT) when a
# preset is first built; see llmsched_env.latency.splitwise and docs/fidelity_static.md.
for _group in SPLITWISE_GROUPS:
    BATCH_LATENCY_PRESETS[splitwise_preset_name(*_group)] = functools.partial(
        splitwise_batch_latency, *_group
    )
del _group


LLAMA3_8B_KV_BYTES = kv_bytes_per_token(layers=32, kv_heads=8, head_dim=128, dtype_bytes=2)
"""KV bytes per token of Llama-3/3.1-8B in fp16 (32 layers, 8 KV heads of dim 128): 128 KiB."""

LLAMA3_8B_WEIGHTS_GB = 16.0
"""Weights of an 8B model in fp16 (8.03e9 parameters x 2 bytes), in GB (REFERENCE.md section 5)."""

VLLM_DEFAULT_MARGIN_GB = 8.0
"""Margin on an 80 GB GPU: vLLM's default ``gpu_memory_utilization=0.9`` leaves 10% of it unused."""

LLAMA2_70B_KV_BYTES = kv_bytes_per_token(layers=80, kv_heads=8, head_dim=128, dtype_bytes=2)
"""KV bytes per token of Llama2-70B in bf16 (80 layers, 8 KV heads of dim 128): 320 KiB."""

LLAMA2_70B_WEIGHTS_GB = 140.0
"""Weights of a 70B model in bf16 (70e9 parameters x 2 bytes), in GB."""

BLOOM_176B_KV_BYTES = kv_bytes_per_token(layers=70, kv_heads=112, head_dim=128, dtype_bytes=2)
"""KV bytes per token of BLOOM-176B in bf16 (70 layers, 112 heads of dim 128): 3.83 MiB."""

BLOOM_176B_WEIGHTS_GB = 352.0
"""Weights of a 176B model in bf16 (176e9 parameters x 2 bytes), in GB."""

KV_PRESETS: dict[str, KVMemory] = {
    # 80 GB - 16 GB weights - 8 GB margin at 128 KiB/token = 427,246 tokens, near the "roughly
    # 450k tokens on A100-80GB" of REFERENCE.md section 5. Both GPUs have 80 GB of HBM.
    "h100-80gb-llama3.1-8b": KVMemory.from_gpu(
        80.0, LLAMA3_8B_WEIGHTS_GB, LLAMA3_8B_KV_BYTES, VLLM_DEFAULT_MARGIN_GB
    ),
    "a100-80gb-llama3.1-8b": KVMemory.from_gpu(
        80.0, LLAMA3_8B_WEIGHTS_GB, LLAMA3_8B_KV_BYTES, VLLM_DEFAULT_MARGIN_GB
    ),
    # Llama2-70B with grouped-query attention (80 layers, 8 KV heads of dim 128, bf16):
    # 2 * 80 * 8 * 128 * 2 = 327,680 bytes (320 KiB) per token. Its 70e9 parameters take 140 GB in
    # bf16, spread over the TP GPUs of 80 GB; no margin is held back (activations and the runtime
    # are not counted, so these are upper bounds): TP 2 leaves 20 GB = 61,035 tokens, TP 4 180 GB
    # = 549,316 tokens, TP 8 500 GB = 1,525,878 tokens. A100-80GB and H100-80GB hold the same.
    **{
        f"{gpu}-80gb-llama2-70b-tp{tp}": KVMemory.from_gpu(
            80.0 * tp, LLAMA2_70B_WEIGHTS_GB, LLAMA2_70B_KV_BYTES
        )
        for gpu in ("a100", "h100")
        for tp in (2, 4, 8)
    },
    # BLOOM-176B without grouped-query attention (70 layers, 112 heads of dim 128, bf16):
    # 2 * 70 * 112 * 128 * 2 = 4,014,080 bytes per token; its 176e9 parameters take 352 GB, so TP 8
    # (640 GB) leaves 288 GB = 71,747 tokens, with no margin as above.
    **{
        f"{gpu}-80gb-bloom-176b-tp8": KVMemory.from_gpu(
            640.0, BLOOM_176B_WEIGHTS_GB, BLOOM_176B_KV_BYTES
        )
        for gpu in ("a100", "h100")
    },
    # llm-scheduler-sim's config (REFERENCE.md section 1): M_MAX = 12 GB, M_MODEL = 4 GB,
    # 1.875e-4 GB of KV per token, 1 GB margin: 37,333 tokens.
    "reference-sim": KVMemory.from_gpu(12.0, 4.0, 1.875e-4 * BYTES_PER_GB, margin_gb=1.0),
    # For theory checks (queueing formulas) where memory must never bind: the largest integer a
    # float64 holds exactly.
    "unlimited": KVMemory(2**53),
}
"""Named KV memories (instances: :class:`KVMemory` is immutable)."""


_BATCH_MEMBERS = ("batch_timing", "estimate_s")
_ITERATION_MEMBERS = ("iteration_s", "marginal_request_s", "estimate_s", "stochastic")


def _check_members(value: object, members: tuple[str, ...], what: str, table: dict) -> None:
    """Raise ``TypeError`` if ``value`` lacks one of ``members`` (methods must be callable)."""
    missing = [
        name
        for name in members
        if not hasattr(value, name) or (name != "stochastic" and not callable(getattr(value, name)))
    ]
    if missing:
        raise TypeError(
            f"expected a {what} preset name (one of {sorted(table)}) or an object with "
            f"{', '.join(members)}; got {value!r}, which lacks {', '.join(missing)}"
        )


def make_batch_latency(name_or_model: str | BatchLatencyModel) -> BatchLatencyModel:
    """Return the named batch latency preset, or the given model unchanged.

    Args:
        name_or_model: A key of :data:`BATCH_LATENCY_PRESETS`, or an object with
            ``batch_timing`` and ``estimate_s``.

    Returns:
        A batch latency model.

    Raises:
        ValueError: If the name is unknown (the message suggests the closest name).
        TypeError: If an object lacks the protocol's methods.

    Example:
        >>> make_batch_latency("synthetic")
        StaticBatchLatency(alpha_s=0.01, beta_s_per_token=0.0002, gamma=0.3, floor_s=0.001)
    """
    if isinstance(name_or_model, str):
        return resolve("batch latency preset", name_or_model, BATCH_LATENCY_PRESETS)()
    _check_members(name_or_model, _BATCH_MEMBERS, "batch latency", BATCH_LATENCY_PRESETS)
    return name_or_model


def make_iteration_latency(name_or_model: str | IterationLatencyModel) -> IterationLatencyModel:
    """Return the named iteration latency preset, or the given model unchanged.

    Args:
        name_or_model: A key of :data:`ITERATION_LATENCY_PRESETS`, or an object with
            ``iteration_s``, ``marginal_request_s``, ``estimate_s`` and ``stochastic``.

    Returns:
        An iteration latency model.

    Raises:
        ValueError: If the name is unknown (the message suggests the closest name).
        TypeError: If an object lacks the protocol's members.

    Example:
        >>> make_iteration_latency("demo2")
        AffineIterationLatency(c_s=0.01, a_s_per_token=0.0005, b0_tokens=0, stochastic=False)
    """
    if isinstance(name_or_model, str):
        return resolve("iteration latency preset", name_or_model, ITERATION_LATENCY_PRESETS)()
    _check_members(
        name_or_model, _ITERATION_MEMBERS, "iteration latency", ITERATION_LATENCY_PRESETS
    )
    return name_or_model


def make_kv_memory(name_or_memory: str | int | KVMemory) -> KVMemory:
    """Return the named KV memory preset, a memory of the given capacity, or the memory itself.

    Args:
        name_or_memory: A key of :data:`KV_PRESETS`, a capacity in tokens, or a ``KVMemory``.

    Returns:
        The KV memory.

    Raises:
        ValueError: If the name is unknown or the capacity is < 1.
        TypeError: If ``name_or_memory`` is of another type.

    Example:
        >>> make_kv_memory("reference-sim")
        KVMemory(capacity_tokens=37333)
        >>> make_kv_memory(4096)
        KVMemory(capacity_tokens=4096)
    """
    if isinstance(name_or_memory, KVMemory):
        return name_or_memory
    if isinstance(name_or_memory, str):
        return resolve("KV memory preset", name_or_memory, KV_PRESETS)
    if isinstance(name_or_memory, bool) or not hasattr(name_or_memory, "__index__"):
        raise TypeError(
            f"expected a KV memory preset name (one of {sorted(KV_PRESETS)}), a capacity in tokens "
            f"or a KVMemory, got {name_or_memory!r}"
        )
    return KVMemory(name_or_memory)
