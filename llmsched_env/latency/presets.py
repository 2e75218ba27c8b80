"""Named latency models and KV memories, with the source of every number, and their lookup.

Environments take a preset name (a plain string keeps ``env.spec.to_json()`` working) or a model
object; :func:`make_batch_latency`, :func:`make_iteration_latency` and :func:`make_kv_memory` turn
either into an object. An unknown name raises an error that lists the valid names and suggests the
closest one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from llmsched_env.latency.architectures import ARCHITECTURES, ModelArchitecture
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
from llmsched_env.latency.profile_data import load_layer_profile
from llmsched_env.latency.profiled import InterconnectLink, ProfiledIterationLatency
from llmsched_env.latency.skew import load_skew_fit
from llmsched_env.latency.splitwise import SPLITWISE_GROUPS, splitwise_batch_latency
from llmsched_env.registry import resolve

_US = 1e-6  # seconds per microsecond: the BLIS fits are published in microseconds


def llama31_8b_h100() -> LinearIterationLatency:
    """Llama-3.1-8B on vLLM 0.8.4, TP1, H100: BLIS fit (5752.7 us, 17.25 us, 6.00 us).

    Source: the BLIS per-iteration fits (llm-d inference-sim), in microseconds.

    Returns:
        ``LinearIterationLatency`` with ``b0 = 5.7527 ms``, ``b1 = 17.25 us`` per prompt token and
        ``b2 = 6.00 us`` per decode sequence.
    """
    return LinearIterationLatency(5752.7 * _US, 17.25 * _US, 6.00 * _US)


def llama31_8b_a100() -> LinearIterationLatency:
    """Llama-3.1-8B on vLLM 0.8.4, TP1, A100-80GB: BLIS fit (16441.5 us, 47.84 us, 18.21 us).

    Source: the BLIS per-iteration fits (llm-d inference-sim), in microseconds.

    Returns:
        ``LinearIterationLatency`` with ``b0 = 16.4415 ms``, ``b1 = 47.84 us`` per prompt token and
        ``b2 = 18.21 us`` per decode sequence.
    """
    return LinearIterationLatency(16441.5 * _US, 47.84 * _US, 18.21 * _US)


def llama3_70b_a100() -> AffineIterationLatency:
    """Llama-3-70B on A100: ``c = 45.5 ms``, ``a = 0.30 ms/token``, ``b0 = 64`` tokens.

    Source: Li, Dai and Peng, arXiv 2504.07347, as used by the Cornell ORIE 4580/5580 course
    simulators (also their "demo3" constants).

    Returns:
        A deterministic ``AffineIterationLatency``.
    """
    return AffineIterationLatency(c_s=0.0455, a_s_per_token=0.30e-3, b0_tokens=64)


def vllm_bench_profile_dir(name: str) -> Path:
    """Folder of a shipped vLLM 0.19 per-layer profile (``data/vllm_bench/profiles/<name>``).

    Args:
        name: The folder, e.g. ``"RTX4090-Llama-3.1-8B"``.

    Returns:
        Its path on disk.
    """
    return Path(str(files("llmsched_env.data") / "vllm_bench" / "profiles" / name))


RTXPRO6000_PAIR_LINK = InterconnectLink(bandwidth_gb_s=16.0, latency_s=20e-6)
"""Link between the two RTX PRO 6000 GPUs of the vLLM 0.19 runs: 16 GB/s and 20 us per collective,
the ``link_bw`` and ``link_latency`` of LLMServingSim 2.0's cluster configuration for those runs
(the Server Edition has no NVLink; its GPUs talk over PCIe)."""


def _profiled(
    folder: str,
    model: str,
    tp_degree: int = 1,
    ep_degree: int = 1,
    skew_alpha_default: float | None = None,
) -> ProfiledIterationLatency:
    """Build a profiled model from a shipped folder (parsed once per process, then cached).

    ``skew_alpha_default`` is the pooled ``alpha`` of the profiler's skew fit (its ``meta.yaml``)
    when the profile has one, with its per-bucket ``skew_fit.csv`` beside the other files;
    ``None`` when the profiler did not fit skew for this GPU (no correction, as LLMServingSim).
    """
    parallel = tp_degree > 1 or ep_degree > 1
    directory = vllm_bench_profile_dir(folder)
    skew = None
    if skew_alpha_default is not None:
        skew = load_skew_fit(directory / "skew_fit.csv", skew_alpha_default)
    return ProfiledIterationLatency(
        load_layer_profile(directory),
        ARCHITECTURES[model],
        tp_degree=tp_degree,
        ep_degree=ep_degree,
        link=RTXPRO6000_PAIR_LINK if parallel else None,
        skew=skew,
    )


def vllm019_rtx4090_llama31_8b() -> ProfiledIterationLatency:
    """Llama-3.1-8B, bf16, TP 1 on one RTX 4090 (vLLM 0.19.0), from measured per-layer times.

    Source: the per-layer profile of LLMServingSim 2.0 (casys-kaist/LLMServingSim commit 5daddb2,
    MIT) for this GPU and model, shipped in ``data/vllm_bench/profiles/RTX4090-Llama-3.1-8B``.
    The matching real run used ``max_num_seqs`` 256 and ``max_num_batched_tokens`` 2048.

    Returns:
        A deterministic ``ProfiledIterationLatency``.
    """
    return _profiled("RTX4090-Llama-3.1-8B", "llama3.1-8b")


def vllm019_rtxpro6000_llama31_8b() -> ProfiledIterationLatency:
    """Llama-3.1-8B, bf16, TP 1 on one RTX PRO 6000 Blackwell Server Edition (vLLM 0.19.0).

    Source: LLMServingSim 2.0's per-layer profile (commit 5daddb2, MIT), shipped in
    ``data/vllm_bench/profiles/RTXPRO6000-Llama-3.1-8B``. The matching run used ``max_num_seqs``
    128 and ``max_num_batched_tokens`` 2048.

    Returns:
        A deterministic ``ProfiledIterationLatency``.
    """
    return _profiled("RTXPRO6000-Llama-3.1-8B", "llama3.1-8b", skew_alpha_default=0.0543)


def vllm019_rtxpro6000_qwen3_32b_tp2() -> ProfiledIterationLatency:
    """Qwen3-32B, bf16, TP 2 on two RTX PRO 6000 GPUs (vLLM 0.19.0), emulated from TP 1 times.

    Source: LLMServingSim 2.0's per-layer profile (commit 5daddb2, MIT) in
    ``data/vllm_bench/profiles/RTXPRO6000-Qwen3-32B``; its csv files hold the TP 1 measurements
    (e.g. ``qkv_proj`` at one token takes 70.8 us, the time to read the full 105 MB weight at
    about 1.5 TB/s), so TP 2 is emulated: split ops at half their TP 1 time, plus two all-reduces
    per layer over :data:`RTXPRO6000_PAIR_LINK`. The matching run used ``tensor_parallel_size``
    2, ``max_num_seqs`` 128 and ``max_num_batched_tokens`` 2048.

    Returns:
        A deterministic ``ProfiledIterationLatency`` for the two-GPU engine.
    """
    return _profiled("RTXPRO6000-Qwen3-32B", "qwen3-32b", tp_degree=2, skew_alpha_default=0.057)


def vllm019_rtxpro6000_qwen3_30b_a3b_ep2() -> ProfiledIterationLatency:
    """Qwen3-30B-A3B (MoE), bf16: one of two RTX PRO 6000 engines sharing experts (vLLM 0.19.0).

    The two data-parallel engines split the 128 experts between them (expert parallelism).

    Source: LLMServingSim 2.0's per-layer profile (commit 5daddb2, MIT) in
    ``data/vllm_bench/profiles/RTXPRO6000-Qwen3-30B-A3B-Instruct-2507``, with the MoE block's
    ``moe.csv``. The matching run used ``data_parallel_size`` 2 with ``enable_expert_parallel``
    (two engines of one GPU each), ``max_num_seqs`` 128 and ``max_num_batched_tokens`` 2048; use
    two GPUs in the environment, one per engine.

    Returns:
        A deterministic ``ProfiledIterationLatency`` for one engine.
    """
    return _profiled(
        "RTXPRO6000-Qwen3-30B-A3B-Instruct-2507",
        "qwen3-30b-a3b",
        ep_degree=2,
        skew_alpha_default=0.0645,
    )


ITERATION_LATENCY_PRESETS: dict[str, Callable[[], IterationLatencyModel]] = {
    "llama3-70b-a100": llama3_70b_a100,
    # Course Simulator B, workload "demo2": c = 10 ms, a = 0.5 ms/token, b0 = 0.
    "demo2": lambda: AffineIterationLatency(c_s=0.010, a_s_per_token=0.5e-3, b0_tokens=0),
    # Course Simulator B, workload "demo3": the llama3-70b-a100 constants.
    "demo3": llama3_70b_a100,
    # Course Simulator A: C ~ Exp(mean 0.01 s), A ~ Exp(mean 0.001 s) per batch, b0 = 0 (§4).
    "sim-a": lambda: AffineIterationLatency(0.01, 0.001, b0_tokens=0, stochastic=True),
    # Course M/M/1 check: a one-token prefill-only job takes Exp(mean 0.4 s) (E[a] = 0) (§4).
    "mm1": lambda: AffineIterationLatency(0.4, 0.0, b0_tokens=0, stochastic=True),
    "llama3.1-8b-h100": llama31_8b_h100,
    "llama3.1-8b-a100": llama31_8b_a100,
    "vllm0.19-rtx4090-llama3.1-8b": vllm019_rtx4090_llama31_8b,
    "vllm0.19-rtxpro6000-llama3.1-8b": vllm019_rtxpro6000_llama31_8b,
    "vllm0.19-rtxpro6000-qwen3-32b-tp2": vllm019_rtxpro6000_qwen3_32b_tp2,
    "vllm0.19-rtxpro6000-qwen3-30b-a3b-ep2": vllm019_rtxpro6000_qwen3_30b_a3b_ep2,
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
    # Course M/M/1 check: Exp(mean 0.4 s) per batch of one (the course's check).
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
# preset is first built; see llmsched_env.latency.splitwise and docs/fidelity.md.
for _group in SPLITWISE_GROUPS:
    BATCH_LATENCY_PRESETS[splitwise_preset_name(*_group)] = functools.partial(
        splitwise_batch_latency, *_group
    )
del _group


LLAMA3_8B_KV_BYTES = kv_bytes_per_token(layers=32, kv_heads=8, head_dim=128, dtype_bytes=2)
"""KV bytes per token of Llama-3/3.1-8B in fp16 (32 layers, 8 KV heads of dim 128): 128 KiB."""

LLAMA3_8B_WEIGHTS_GB = 16.0
"""Weights of an 8B model in fp16 (8.03e9 parameters x 2 bytes), in GB."""

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

VLLM_NON_KV_BYTES = 1.2376e9
"""Memory a vLLM 0.19 engine holds besides weights and KV cache (peak activations of a 2048-token
profiling step, CUDA graphs, the CUDA context and library workspaces), in bytes, calibrated on the
one run that states its KV size.

vLLM sizes its KV cache as ``gpu_memory_utilization * total memory - weights - peak non-KV
memory``, in whole blocks of 16 tokens. The RTX 4090 run reports ``device_total_memory_bytes``
25,250,627,584 and 2,588 blocks = 41,408 tokens at ``gpu_memory_utilization`` 0.9; Llama-3.1-8B
holds 8,030,261,248 bf16 parameters (16,060,522,496 bytes) and 131,072 KV bytes per token, so
``0.9 * 25,250,627,584 - 16,060,522,496 - 41,408 * 131,072 = 1,237,612,954`` bytes are neither
weights nor KV (up to one 2 MB block of rounding). The other presets assume the same amount; it
grows a little with the model's width and vocabulary, which moves them by well under 1%."""

RTXPRO6000_MEMORY_BYTES = 95 * 2**30
"""Memory of an RTX PRO 6000 Blackwell Server Edition as PyTorch reports it: 95.0 GiB (its nominal
96 GB, in LLMServingSim's configuration ``mem_size`` 96, less what the driver reserves; nvidia-smi
lists 97,887 MiB)."""

RTX4090_MEMORY_BYTES = 25_250_627_584
"""Memory of the RTX 4090 as PyTorch reported it in the vLLM 0.19 run (``meta.json``)."""


def vllm_kv_memory(
    device_bytes: float,
    model: ModelArchitecture,
    tp_degree: int = 1,
    ep_degree: int = 1,
    gpu_memory_utilization: float = 0.9,
    non_kv_bytes: float = VLLM_NON_KV_BYTES,
    block_tokens: int = 16,
) -> KVMemory:
    """KV capacity of a vLLM engine: what is left of each GPU's share, in whole blocks.

    ``tokens = floor((u * device - weights per GPU - non_kv) / (kv bytes per token / tp) /
    block) * block``: tensor parallelism splits each token's KV over ``tp_degree`` GPUs, expert
    parallelism splits only the experts' weights.

    Args:
        device_bytes: Memory of one GPU, in bytes.
        model: The model (weights, KV bytes per token).
        tp_degree: Tensor-parallel degree.
        ep_degree: Expert-parallel degree.
        gpu_memory_utilization: vLLM's fraction of the GPU it may use.
        non_kv_bytes: Non-KV memory besides the weights (see :data:`VLLM_NON_KV_BYTES`).
        block_tokens: Tokens per KV block.

    Returns:
        The engine's KV memory.

    Example:
        >>> vllm_kv_memory(RTX4090_MEMORY_BYTES, ARCHITECTURES["llama3.1-8b"]).capacity_tokens
        41408
    """
    free = gpu_memory_utilization * device_bytes - model.weight_bytes_per_gpu(tp_degree, ep_degree)
    per_token = model.kv_bytes_per_token / tp_degree
    blocks = int((free - non_kv_bytes) // (per_token * block_tokens))
    return KVMemory(blocks * block_tokens)


KV_PRESETS: dict[str, KVMemory] = {
    # 41,408 tokens, as the vLLM 0.19 run on this GPU reported (2,588 blocks of 16).
    "vllm0.19-rtx4090-llama3.1-8b": vllm_kv_memory(
        RTX4090_MEMORY_BYTES, ARCHITECTURES["llama3.1-8b"]
    ),
    # 0.9 * 95 GiB - 16.06 GB weights - 1.24 GB at 128 KiB per token: 568,432 tokens.
    "vllm0.19-rtxpro6000-llama3.1-8b": vllm_kv_memory(
        RTXPRO6000_MEMORY_BYTES, ARCHITECTURES["llama3.1-8b"]
    ),
    # Per GPU 0.9 * 95 GiB - 32.76 GB (half the 65.5 GB of weights) - 1.24 GB, at 128 KiB per
    # token (half of each token's 256 KiB): 441,008 tokens for the TP-2 engine.
    "vllm0.19-rtxpro6000-qwen3-32b-tp2": vllm_kv_memory(
        RTXPRO6000_MEMORY_BYTES, ARCHITECTURES["qwen3-32b"], tp_degree=2
    ),
    # Per engine (one GPU) 0.9 * 95 GiB - 32.07 GB (all non-expert weights and half of the
    # experts) - 1.24 GB, at 96 KiB per token: 595,024 tokens.
    "vllm0.19-rtxpro6000-qwen3-30b-a3b-ep2": vllm_kv_memory(
        RTXPRO6000_MEMORY_BYTES, ARCHITECTURES["qwen3-30b-a3b"], ep_degree=2
    ),
    # 80 GB - 16 GB weights - 8 GB margin at 128 KiB/token = 427,246 tokens, near the "roughly
    # 450k tokens on A100-80GB" commonly quoted for Llama-3-8B. Both GPUs have 80 GB of HBM.
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
    # llm-scheduler-sim's config (TravisLeeTS/llm-scheduler-sim): M_MAX = 12 GB, M_MODEL = 4 GB,
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
            f"expected {'an' if what[0] in 'aeiou' else 'a'} {what} preset name (one of "
            f"{sorted(table)}) or an object with "
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
