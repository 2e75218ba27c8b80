"""Validated, immutable configurations of the environments.

The environments' keyword arguments map one to one onto these frozen dataclasses, which check
every value in ``__post_init__`` with :mod:`llmsched_env.arguments` and raise ``ValueError`` (or
``TypeError`` for a wrong type) naming the environment, the argument, the bad value and what is
allowed. Numpy scalars are accepted and stored as Python scalars; a non-finite ``sla_penalty`` or
bin edge is refused, since it would make rewards nan or put every request in one bin. Building a
config has no side effects; derived objects (the workload source, the latency model) are built by
the environment from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import numpy as np

from llmsched_env import arguments
from llmsched_env.arguments import ArgumentTypeError

InvalidActionMode = Literal["remap", "raise"]
INVALID_ACTION_MODES = ("remap", "raise")
DispatchOrder = Literal["oldest", "oldest-in-time"]
#: Which waiting requests of a bin a batch takes: ``"oldest"`` (first come, first served, as the
#: Multi-Bin paper) or ``"oldest-in-time"`` (the oldest whose deadline has not passed; requests
#: already late, whose miss is counted, go only when no request in time is left in the bin).
DISPATCH_ORDERS = ("oldest", "oldest-in-time")
RENDER_MODES = ("ansi", "rgb_array")
#: Shortest SLA target, in seconds (a nanosecond). Observations measure times in units of the
#: targets, and a shorter one would put waits beyond float32's range.
MIN_SLA_S = 1e-9
KVAllocation = Literal["reserve", "paged"]
#: How the iteration-level server allocates KV memory: ``"reserve"`` (a request's whole footprint
#: at admission, never preempts) or ``"paged"`` (vLLM V1's blocks as tokens are computed, with
#: preemption by recomputation).
KV_ALLOCATIONS = ("reserve", "paged")


def check_int(name: str, value: Any, low: int = 1, high: int | None = None, owner: str = "") -> int:
    """Return ``value`` as an ``int`` if it is an integer (Python or numpy) in ``[low, high]``.

    Raises:
        TypeError: If ``value`` is not an integer (an
            :class:`~llmsched_env.arguments.ArgumentTypeError`, which is also a ``ValueError``).
        ValueError: If it is out of range.
    """
    return arguments.integer(owner, name, value, minimum=low, maximum=high)


def check_positive(name: str, value: Any, *, allow_none: bool = False, owner: str = "") -> None:
    """Raise unless ``value`` is a finite number > 0 (or ``None`` when allowed)."""
    if value is None and allow_none:
        return
    if value is None:
        raise arguments.ArgumentTypeError(
            arguments.message(owner, name, "a finite number > 0", value)
        )
    arguments.real(owner, name, value, positive=True)


def check_choice(name: str, value: Any, choices: tuple[Any, ...], owner: str = "") -> None:
    """Raise unless ``value`` is one of ``choices``."""
    arguments.one_of(owner, name, value, choices)


def check_rate(load: float | None, arrival_rate: float | None, owner: str = "") -> None:
    """Exactly one of ``load`` and ``arrival_rate`` must be given, and it must be positive."""
    if (load is None) == (arrival_rate is None):
        prefix = f"{owner}: " if owner else ""
        raise ValueError(
            f"{prefix}give exactly one of load (fraction of estimated capacity) and arrival_rate "
            f"(requests/s), got load={load!r}, arrival_rate={arrival_rate!r}"
        )
    check_positive("load", load, allow_none=True, owner=owner)
    check_positive("arrival_rate", arrival_rate, allow_none=True, owner=owner)


def _set(cfg: Any, name: str, value: Any) -> None:
    """Store a normalised value (numpy scalars become Python scalars) in a frozen config."""
    object.__setattr__(cfg, name, value)


def _int_field(cfg: Any, name: str, low: int, high: int | None = None) -> None:
    _set(
        cfg, name, arguments.integer(cfg.owner, name, getattr(cfg, name), minimum=low, maximum=high)
    )


def _positive_field(cfg: Any, name: str) -> None:
    _set(cfg, name, arguments.real(cfg.owner, name, getattr(cfg, name), positive=True))


def _sla_field(cfg: Any, name: str) -> None:
    _set(cfg, name, arguments.real(cfg.owner, name, getattr(cfg, name), minimum=MIN_SLA_S))


def _nonnegative_field(cfg: Any, name: str) -> None:
    _set(cfg, name, arguments.real(cfg.owner, name, getattr(cfg, name), minimum=0.0))


def _check_common(cfg: BatchEnvConfig | ContinuousEnvConfig | RoutingEnvConfig) -> None:
    owner = cfg.owner
    _int_field(cfg, cfg.units_field, 1, 1024)
    _int_field(cfg, "n_requests", 1)
    if cfg.load is None and cfg.arrival_rate is None:
        _set(cfg, "load", cfg.default_load)
    check_rate(cfg.load, cfg.arrival_rate, owner)
    for name in ("load", "arrival_rate"):
        if getattr(cfg, name) is not None:
            _positive_field(cfg, name)
    # A penalty must be finite: an infinite one makes every reward nan (inf - inf, 0 * inf).
    _set(cfg, "sla_penalty", arguments.real(owner, "sla_penalty", cfg.sla_penalty, minimum=0))
    check_choice("invalid_action", cfg.invalid_action, INVALID_ACTION_MODES, owner)
    if cfg.max_steps is not None:
        _int_field(cfg, "max_steps", 1)
    if cfg.render_mode is not None:
        check_choice("render_mode", cfg.render_mode, RENDER_MODES, owner)
    if not isinstance(cfg.workload, str) and not hasattr(cfg.workload, "sample"):
        raise arguments.ArgumentTypeError(
            arguments.message(
                owner,
                "workload",
                "a preset name, 'trace:[FORMAT:]PATH' for a trace file, or a WorkloadSource",
                cfg.workload,
            )
        )
    if not isinstance(cfg.reward, str):
        raise arguments.ArgumentTypeError(
            arguments.message(owner, "reward", "the name of a reward shape", cfg.reward)
        )


class EnvConfig:
    """What every env configuration has: its fields are the env's keyword arguments.

    The config dataclass is the one place that names the env's arguments, their defaults and
    their meanings (``Attributes:``); the env's ``__init__`` signature and its docstring's
    Arguments table are tested against it (``tests/envs/test_config_signature.py``).
    """

    owner: ClassVar[str]
    default_load: ClassVar[float]
    #: The field that counts the env's servers (GPUs, or replicas).
    units_field: ClassVar[str] = "n_gpus"

    @classmethod
    def from_arguments(cls, arguments: dict[str, Any]) -> Any:
        """Build the config from an env constructor's ``locals()`` (one entry per field)."""
        return cls(**{f.name: arguments[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class BatchEnvConfig(EnvConfig):
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
        sla: End-to-end deadline in seconds (at least :data:`MIN_SLA_S`).
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
    owner: ClassVar[str] = "BatchScheduling-v0"

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
        owner = self.owner
        _sla_field(self, "sla")
        check_choice("dispatch_order", self.dispatch_order, DISPATCH_ORDERS, owner)
        _int_field(self, "n_bins", 1, 64)
        _int_field(self, "max_batch_size", 1, 4096)
        if self.bin_edges is not None:
            _set(self, "bin_edges", _checked_edges(owner, self.bin_edges, self.n_bins))

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
class ContinuousEnvConfig(EnvConfig):
    """Configuration of ``llmsched/ContinuousBatching-v0`` (see the env's docstring).

    Attributes:
        workload: Workload preset name or a ``WorkloadSource``.
        load: Arrival rate as a fraction of the estimated capacity.
        arrival_rate: Arrival rate in requests per second.
        n_gpus: Number of GPUs.
        latency: Iteration latency preset name or model.
        kv_memory: KV memory preset name, capacity in tokens, or a ``KVMemory``.
        n_requests: Requests per episode.
        ttft_sla: Time-to-first-token target in seconds (at least :data:`MIN_SLA_S`).
        ttft_sla_per_token: Seconds added to a request's TTFT target per prompt token (0: one
            target for every request).
        tbt_sla: Largest allowed gap between consecutive output tokens, in seconds (at least
            :data:`MIN_SLA_S`).
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
        prompt_caps: Levels of the "most new prompts per iteration" component: each a
            non-negative integer (0: admit none, only started prompts continue) or ``None`` (no
            cap); at least one level must admit prompts (be positive or ``None``).
        invalid_action: ``"remap"`` or ``"raise"``.
        max_steps: Truncate after this many steps (``None``: never).
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.
    """

    default_load: ClassVar[float] = 0.4
    owner: ClassVar[str] = "ContinuousBatching-v0"

    workload: Any = "azure-conv"
    load: float | None = None
    arrival_rate: float | None = None
    n_gpus: int = 1
    latency: Any = "vllm0.19-rtxpro6000-llama3.1-8b"
    kv_memory: Any = "vllm0.19-rtxpro6000-llama3.1-8b"
    n_requests: int = 300
    ttft_sla: float = 1.0
    ttft_sla_per_token: float = 0.0
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
    prompt_caps: tuple[int | None, ...] = field(default=(0, 1, 2, 4, 8, 16, None))
    invalid_action: InvalidActionMode = "remap"
    max_steps: int | None = None
    render_mode: str | None = None

    def __post_init__(self) -> None:
        _check_common(self)
        owner = self.owner
        _sla_field(self, "ttft_sla")
        _nonnegative_field(self, "ttft_sla_per_token")
        _sla_field(self, "tbt_sla")
        _int_field(self, "max_tokens", 1)
        _int_field(self, "max_sequences", 1)
        if self.chunk_size is not None:
            _int_field(self, "chunk_size", 1)
        check_choice("kv_allocation", self.kv_allocation, KV_ALLOCATIONS, owner)
        _int_field(self, "kv_block_tokens", 1)
        _set(
            self, "prefix_caching", arguments.boolean(owner, "prefix_caching", self.prefix_caching)
        )
        if self.prefix_caching and self.kv_allocation != "paged":
            raise ValueError(
                f"{owner}: prefix_caching=True needs kv_allocation='paged' (prefix caching keeps "
                f"freed KV blocks for reuse), got kv_allocation={self.kv_allocation!r}"
            )
        _int_field(self, "decode_levels", 2, 101)
        _int_field(self, "prefill_levels", 2, 101)
        expectation = (
            "a non-empty sequence of integers >= 0 (0 = admit no new prompt) or None (no cap)"
        )
        caps = arguments.sequence(owner, "prompt_caps", self.prompt_caps, expectation)
        if not caps:
            raise ValueError(arguments.message(owner, "prompt_caps", expectation, self.prompt_caps))
        checked: list[int | None] = []
        for i, cap in enumerate(caps):
            if cap is None:
                checked.append(None)
                continue
            try:
                checked.append(arguments.integer(owner, "prompt_caps", cap, minimum=0))
            except (TypeError, ValueError) as error:
                kind = ArgumentTypeError if isinstance(error, TypeError) else ValueError
                raise kind(
                    arguments.message(owner, "prompt_caps", expectation, self.prompt_caps)
                    + f" (entry {i} is {cap!r})"
                ) from None
        if all(cap == 0 for cap in checked):
            raise ValueError(
                arguments.message(
                    owner,
                    "prompt_caps",
                    "a sequence with a level that admits prompts (an integer >= 1 or None: "
                    "0 now means 'admit no new prompt', no longer 'no cap')",
                    self.prompt_caps,
                )
            )
        _set(self, "prompt_caps", tuple(checked))


def _checked_edges(owner: str, edges: Any, n_bins: int) -> tuple[float, ...]:
    """``bin_edges`` as a tuple of floats: ``n_bins - 1`` finite, strictly increasing numbers."""
    expectation = f"{n_bins - 1} finite, strictly increasing token counts (n_bins - 1)"
    values = arguments.sequence(owner, "bin_edges", edges, expectation)
    if len(values) != n_bins - 1:
        raise ValueError(arguments.message(owner, "bin_edges", expectation, edges))
    checked = []
    for value in values:
        try:
            checked.append(arguments.real(owner, "bin_edges", value))
        except (TypeError, ValueError) as error:
            kind = ArgumentTypeError if isinstance(error, TypeError) else ValueError
            raise kind(arguments.message(owner, "bin_edges", expectation, edges)) from None
    if any(b <= a for a, b in zip(checked, checked[1:])):
        raise ValueError(arguments.message(owner, "bin_edges", expectation, edges))
    return tuple(checked)


@dataclass(frozen=True)
class RoutingEnvConfig(EnvConfig):
    """Configuration of ``llmsched/Routing-v0`` (see the env's docstring).

    Attributes:
        workload: Workload preset name or a ``WorkloadSource``.
        load: Arrival rate as a fraction of the replicas' summed work-bound capacity.
        arrival_rate: Arrival rate in requests per second.
        n_replicas: Number of engine replicas (one GPU each).
        latency: Iteration latency preset name or model, or a sequence of them (one per
            replica: heterogeneous replicas).
        kv_memory: KV memory preset name, capacity in tokens or ``KVMemory``, or one per replica.
        replica_policy: Name of the ``ContinuousBatching-v0`` baseline every replica runs.
        n_requests: Requests per episode.
        ttft_sla: Time-to-first-token target in seconds (at least :data:`MIN_SLA_S`).
        ttft_sla_per_token: Seconds added to a request's TTFT target per prompt token (0: one
            target for every request).
        tbt_sla: Largest allowed gap between consecutive output tokens, in seconds (at least
            :data:`MIN_SLA_S`).
        sla_penalty: Reward lost per missed target.
        reward: Name of the reward shape.
        max_tokens: Token budget of one iteration.
        max_sequences: Most requests on one replica at once.
        chunk_size: Chunk size of chunked prefill, ``None`` to prefill prompts whole.
        kv_block_tokens: Tokens per KV block (paged KV memory).
        prefix_caching: Automatic prefix caching of KV blocks in every replica.
        invalid_action: ``"remap"`` or ``"raise"``.
        max_steps: Truncate after this many steps (``None``: never).
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.
    """

    default_load: ClassVar[float] = 0.4
    owner: ClassVar[str] = "Routing-v0"
    units_field: ClassVar[str] = "n_replicas"

    workload: Any = "azure-conv"
    load: float | None = None
    arrival_rate: float | None = None
    n_replicas: int = 4
    latency: Any = "vllm0.19-rtxpro6000-llama3.1-8b"
    kv_memory: Any = "vllm0.19-rtxpro6000-llama3.1-8b"
    replica_policy: str = "vllm-v1"
    n_requests: int = 1000
    ttft_sla: float = 1.0
    ttft_sla_per_token: float = 0.0
    tbt_sla: float = 0.1
    sla_penalty: float = 1.0
    reward: str = "sla"
    max_tokens: int = 2048
    max_sequences: int = 256
    chunk_size: int | None = 2048
    kv_block_tokens: int = 16
    prefix_caching: bool = True
    invalid_action: InvalidActionMode = "remap"
    max_steps: int | None = None
    render_mode: str | None = None

    def __post_init__(self) -> None:
        _check_common(self)
        owner = self.owner
        _sla_field(self, "ttft_sla")
        _nonnegative_field(self, "ttft_sla_per_token")
        _sla_field(self, "tbt_sla")
        _int_field(self, "max_tokens", 1)
        _int_field(self, "max_sequences", 1)
        if self.chunk_size is not None:
            _int_field(self, "chunk_size", 1)
        _int_field(self, "kv_block_tokens", 1)
        _set(
            self, "prefix_caching", arguments.boolean(owner, "prefix_caching", self.prefix_caching)
        )
        if not isinstance(self.replica_policy, str):
            raise arguments.ArgumentTypeError(
                arguments.message(
                    owner,
                    "replica_policy",
                    "the name of a ContinuousBatching-v0 baseline",
                    self.replica_policy,
                )
            )
        for name in ("latency", "kv_memory"):
            _set(self, name, _per_replica(owner, name, getattr(self, name), self.n_replicas))

    def replica_value(self, name: str, replica: int) -> Any:
        """The ``latency`` or ``kv_memory`` of one replica (the shared value, or its own)."""
        value = getattr(self, name)
        return value[replica] if isinstance(value, tuple) else value


def _per_replica(owner: str, name: str, value: Any, n_replicas: int) -> Any:
    """One value for every replica, or a tuple of ``n_replicas`` values.

    Lists and one-dimensional numpy arrays become tuples (an array's values as Python scalars).
    """
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        return value
    if len(value) != n_replicas:
        raise ValueError(
            arguments.message(
                owner,
                name,
                f"one value for all replicas or a sequence of n_replicas={n_replicas} values",
                value,
            )
        )
    return tuple(value)
