"""Validated, immutable configurations of the two environments.

The environments' keyword arguments map one to one onto these frozen dataclasses, which check
every value in ``__post_init__`` and raise ``ValueError`` naming the argument, the bad value and
what is allowed. Building a config has no side effects; derived objects (the workload source, the
latency model) are built by the environment from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

InvalidActionMode = Literal["remap", "raise"]
INVALID_ACTION_MODES = ("remap", "raise")
DispatchOrder = Literal["oldest", "oldest-in-time"]
#: Which waiting requests of a bin a batch takes: ``"oldest"`` (first come, first served, as the
#: Multi-Bin paper) or ``"oldest-in-time"`` (the oldest whose deadline has not passed; requests
#: already late, whose miss is counted, go only when no request in time is left in the bin).
DISPATCH_ORDERS = ("oldest", "oldest-in-time")
RENDER_MODES = ("ansi", "rgb_array")
KVAllocation = Literal["reserve", "paged"]
#: How the iteration-level server allocates KV memory: ``"reserve"`` (a request's whole footprint
#: at admission, never preempts) or ``"paged"`` (vLLM V1's blocks as tokens are computed, with
#: preemption by recomputation).
KV_ALLOCATIONS = ("reserve", "paged")


def check_int(name: str, value: Any, low: int = 1, high: int | None = None) -> None:
    """Raise unless ``value`` is an integer in ``[low, high]``."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")


def check_positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raise unless ``value`` is a finite number > 0 (or ``None`` when allowed)."""
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a finite number > 0{extra}, got {value!r}")


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_rate(load: float | None, arrival_rate: float | None) -> None:
    """Exactly one of ``load`` and ``arrival_rate`` must be given, and it must be positive."""
    if (load is None) == (arrival_rate is None):
        raise ValueError(
            f"give exactly one of load (fraction of estimated capacity) and arrival_rate "
            f"(requests/s), got load={load!r}, arrival_rate={arrival_rate!r}"
        )
    check_positive("load", load, allow_none=True)
    check_positive("arrival_rate", arrival_rate, allow_none=True)


def _check_common(cfg: BatchEnvConfig | ContinuousEnvConfig) -> None:
    check_int("n_gpus", cfg.n_gpus, 1, 1024)
    check_int("n_requests", cfg.n_requests, 1)
    if cfg.load is None and cfg.arrival_rate is None:
        object.__setattr__(cfg, "load", cfg.default_load)
    check_rate(cfg.load, cfg.arrival_rate)
    penalty = cfg.sla_penalty
    if not isinstance(penalty, (int, float)) or isinstance(penalty, bool) or not penalty >= 0:
        raise ValueError(f"sla_penalty must be a number >= 0, got {cfg.sla_penalty!r}")
    check_choice("invalid_action", cfg.invalid_action, INVALID_ACTION_MODES)
    if cfg.max_steps is not None:
        check_int("max_steps", cfg.max_steps, 1)
    if cfg.render_mode is not None:
        check_choice("render_mode", cfg.render_mode, RENDER_MODES)
    if not isinstance(cfg.workload, str) and not hasattr(cfg.workload, "sample"):
        raise ValueError(
            f"workload must be a preset name or a WorkloadSource, got {type(cfg.workload).__name__}"
        )
    if not isinstance(cfg.reward, str):
        raise ValueError(f"reward must be the name of a reward shape, got {cfg.reward!r}")


@dataclass(frozen=True)
class BatchEnvConfig:
    """Configuration of ``llmsched/BatchScheduling-v0`` (see the env's docstring for meanings).

    Attributes:
        workload: Workload preset name or a ``WorkloadSource``.
        load: Arrival rate as a fraction of the estimated capacity (exclusive with
            ``arrival_rate``; when neither is given, ``default_load``).
        arrival_rate: Arrival rate in requests per second.
        n_gpus: Number of GPUs.
        latency: Batch latency preset name or model.
        kv_memory: KV memory preset name, capacity in tokens, or a ``KVMemory``.
        n_requests: Requests per episode.
        sla: End-to-end deadline in seconds.
        sla_penalty: Reward lost when a request's deadline passes unfinished.
        reward: Name of the reward shape.
        n_bins: Number of bins by predicted output length.
        bin_edges: Explicit interior bin edges (``n_bins - 1`` increasing token counts), or
            ``None`` for equal-mass quantiles of the calibration data.
        max_batch_size: Largest batch; the size levels are the powers of two below it, and it.
        dispatch_order: Which requests of the chosen bin a batch takes, one of
            :data:`DISPATCH_ORDERS`.
        invalid_action: ``"remap"`` or ``"raise"`` for actions the mask forbids.
        max_steps: Truncate the episode after this many steps (``None``: never).
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.
    """

    default_load: ClassVar[float] = 1.0

    workload: Any = "azure-conv"
    load: float | None = None
    arrival_rate: float | None = None
    n_gpus: int = 2
    latency: Any = "llama3.1-8b-h100"
    kv_memory: Any = "h100-80gb-llama3.1-8b"
    n_requests: int = 1000
    sla: float = 10.0
    sla_penalty: float = 1.0
    reward: str = "sla"
    n_bins: int = 4
    bin_edges: tuple[float, ...] | None = None
    max_batch_size: int = 64
    dispatch_order: DispatchOrder = "oldest"
    invalid_action: InvalidActionMode = "remap"
    max_steps: int | None = None
    render_mode: str | None = None

    def __post_init__(self) -> None:
        _check_common(self)
        check_positive("sla", self.sla)
        check_choice("dispatch_order", self.dispatch_order, DISPATCH_ORDERS)
        check_int("n_bins", self.n_bins, 1, 64)
        check_int("max_batch_size", self.max_batch_size, 1, 4096)
        if self.bin_edges is not None:
            edges = tuple(self.bin_edges)
            if len(edges) != self.n_bins - 1 or any(b <= a for a, b in zip(edges, edges[1:])):
                raise ValueError(
                    f"bin_edges must be {self.n_bins - 1} strictly increasing token counts "
                    f"(n_bins - 1), got {self.bin_edges!r}"
                )
            object.__setattr__(self, "bin_edges", edges)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The batch-size levels of the action: powers of two below ``max_batch_size``, and it."""
        sizes = []
        size = 1
        while size < self.max_batch_size:
            sizes.append(size)
            size *= 2
        sizes.append(self.max_batch_size)
        return tuple(sizes)


@dataclass(frozen=True)
class ContinuousEnvConfig:
    """Configuration of ``llmsched/ContinuousBatching-v0`` (see the env's docstring).

    Attributes:
        workload: Workload preset name or a ``WorkloadSource``.
        load: Arrival rate as a fraction of the estimated capacity.
        arrival_rate: Arrival rate in requests per second.
        n_gpus: Number of GPUs.
        latency: Iteration latency preset name or model.
        kv_memory: KV memory preset name, capacity in tokens, or a ``KVMemory``.
        n_requests: Requests per episode.
        ttft_sla: Time-to-first-token target in seconds.
        tbt_sla: Largest allowed gap between consecutive output tokens, in seconds.
        sla_penalty: Reward lost per missed target.
        reward: Name of the reward shape.
        max_tokens: Token budget of one iteration.
        max_sequences: Most requests on one GPU at once.
        chunk_size: Chunk size of chunked prefill, ``None`` to prefill prompts whole.
        kv_allocation: ``"reserve"`` or ``"paged"``, one of :data:`KV_ALLOCATIONS`.
        kv_block_tokens: Tokens per KV block with ``kv_allocation="paged"``.
        prefix_caching: Automatic prefix caching of KV blocks (needs ``kv_allocation="paged"``).
        decode_levels: Number of levels of the decode-share action component.
        prefill_levels: Number of levels of the prefill-budget action component.
        prompt_caps: Levels of the "most new prompts per iteration" component (0 means no cap).
        invalid_action: ``"remap"`` or ``"raise"``.
        max_steps: Truncate after this many steps (``None``: never).
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.
    """

    default_load: ClassVar[float] = 0.4

    workload: Any = "azure-conv"
    load: float | None = None
    arrival_rate: float | None = None
    n_gpus: int = 1
    latency: Any = "vllm0.19-rtxpro6000-llama3.1-8b"
    kv_memory: Any = "vllm0.19-rtxpro6000-llama3.1-8b"
    n_requests: int = 300
    ttft_sla: float = 1.0
    tbt_sla: float = 0.1
    sla_penalty: float = 1.0
    reward: str = "sla"
    max_tokens: int = 2048
    max_sequences: int = 256
    chunk_size: int | None = 512
    kv_allocation: KVAllocation = "reserve"
    kv_block_tokens: int = 16
    prefix_caching: bool = False
    decode_levels: int = 5
    prefill_levels: int = 5
    prompt_caps: tuple[int, ...] = field(default=(1, 2, 4, 8, 16, 0))
    invalid_action: InvalidActionMode = "remap"
    max_steps: int | None = None
    render_mode: str | None = None

    def __post_init__(self) -> None:
        _check_common(self)
        check_positive("ttft_sla", self.ttft_sla)
        check_positive("tbt_sla", self.tbt_sla)
        check_int("max_tokens", self.max_tokens, 1)
        check_int("max_sequences", self.max_sequences, 1)
        if self.chunk_size is not None:
            check_int("chunk_size", self.chunk_size, 1)
        check_choice("kv_allocation", self.kv_allocation, KV_ALLOCATIONS)
        check_int("kv_block_tokens", self.kv_block_tokens, 1)
        if not isinstance(self.prefix_caching, bool):
            raise ValueError(f"prefix_caching must be True or False, got {self.prefix_caching!r}")
        if self.prefix_caching and self.kv_allocation != "paged":
            raise ValueError(
                "prefix_caching=True needs kv_allocation='paged' (prefix caching keeps freed KV "
                f"blocks for reuse), got kv_allocation={self.kv_allocation!r}"
            )
        check_int("decode_levels", self.decode_levels, 2, 101)
        check_int("prefill_levels", self.prefill_levels, 2, 101)
        caps = tuple(self.prompt_caps)
        if not caps or any(not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in caps):
            raise ValueError(
                f"prompt_caps must be a non-empty sequence of integers >= 0 (0 = no cap), "
                f"got {self.prompt_caps!r}"
            )
        object.__setattr__(self, "prompt_caps", caps)
