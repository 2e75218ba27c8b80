"""Memory-aware, SLA-constrained dynamic batching, without bins and with Multi-Bin bins.

:class:`SLADynamic` is the reference simulator's ``dynamic_no_bins`` mode: one FIFO order and
the batch size ``b* = min(b_mem, b_SLA)`` of Pang et al. (arXiv 2503.05248), with ``b_mem``
from Algorithm 1 and ``b_SLA`` from Algorithm 2 (see :mod:`baselines.batch.sla_control`).
:class:`MultiBinDynamic` is its ``multi_bin_dynamic`` mode: Multi-Bin bins, each with its own
length statistics and SLA controller, served round-robin or longest queue first.

**The latency feedback.** Algorithm 2 needs a measured latency. A static batch of size ``b``
whose longest member has ``M`` output tokens occupies its GPU for ``service_s``, during which
that member receives its ``M`` tokens, so ``service_s / M`` is the batch's per-token time
(``tbt_tokens="output"``, the default). Prefill time is included: the request-level latency
models do not separate it. ``tbt_tokens="total"`` divides by prompt plus output tokens instead,
which in the reference simulator's ``T(b, L)`` model (where prompt and output tokens cost the
same) is its per-token time ``beta * (1 + gamma * (b - 1) / b) + alpha / L``.
``sla_signal="batch-latency"`` drives the search by the end-to-end deadline instead: the
measured signal is the batch's service time and the target is ``latency_budget * sla`` (the
share of the deadline a batch may take; the rest is left to queueing). The batch size controls
service time directly; a controller on whole end-to-end latency would shrink batches under
overload, lose throughput and make queueing worse. Each decision at which batches have finished
since the previous one updates the controller once, from the mean signal and mean size of the
last ``window`` finished batches (``b_avg``, rounded to an integer).

**Sizes.** ``b* = max(min(b_mem, b_SLA), 1)`` is mapped to the env's size levels: the largest
level ``<= b*`` (the levels are powers of two and ``max_batch_size``). The env also stops a
batch before the first request that would overflow KV memory, so ``b_mem`` never has to be
exact.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from baselines._checks import check_int
from baselines.batch._common import (
    BatchPolicy,
    check_choice,
    check_positive,
    first_non_empty,
    make_action,
    oldest_bin,
)
from baselines.batch.sla_control import (
    RequestLengthStats,
    SLAController,
    memory_bound,
    memory_bound_clt,
)
from llmsched_env.statistics import sequential_sum

SLASignal = Literal["tbt", "batch-latency"]
TokenBasis = Literal["output", "total"]
MemoryRule = Literal["mean", "clt"]
SizeRounding = Literal["down", "nearest"]


class _DynamicBatching(BatchPolicy):
    """Batch sizes ``min(b_mem, b_SLA)`` per statistics group (one group, or one per bin)."""

    def __init__(
        self,
        env: gym.Env,
        *,
        per_bin: bool,
        sla_signal: SLASignal = "tbt",
        tbt_sla_s: float = 0.010,
        tbt_tokens: TokenBasis = "output",
        latency_budget: float = 0.5,
        eps_s: float | None = None,
        alpha: int = 8,
        delta: int = 4,
        b_min: int = 1,
        b_max: int | None = None,
        memory: MemoryRule = "mean",
        eps_m: float = 0.05,
        window: int = 8,
        size_rounding: SizeRounding = "down",
    ) -> None:
        super().__init__(env)
        owner = type(self).__name__
        self.sla_signal = check_choice(owner, "sla_signal", sla_signal, ("tbt", "batch-latency"))
        self.tbt_tokens = check_choice(owner, "tbt_tokens", tbt_tokens, ("output", "total"))
        self.memory = check_choice(owner, "memory", memory, ("mean", "clt"))
        check_positive(owner, "tbt_sla_s", tbt_sla_s)
        check_positive(owner, "latency_budget", latency_budget)
        self.target_s = tbt_sla_s if sla_signal == "tbt" else latency_budget * self.sla_s
        self.eps_s = 0.1 * self.target_s if eps_s is None else check_positive(owner, "eps_s", eps_s)
        self.b_max = check_int(
            owner, "b_max", self.max_batch_size if b_max is None else b_max, 1, self.max_batch_size
        )
        self.b_min = check_int(owner, "b_min", b_min, 1, self.b_max)
        self.alpha = check_int(owner, "alpha", alpha, 1)
        self.delta = check_int(owner, "delta", delta, 1)
        self.eps_m = check_positive(owner, "eps_m", eps_m, at_most=0.5)
        self.window = check_int(owner, "window", window, 1)
        self.size_rounding = check_choice(
            owner, "size_rounding", size_rounding, ("down", "nearest")
        )
        self.group_of_bin = list(range(self.n_bins)) if per_bin else [0] * self.n_bins
        self.n_groups = self.n_bins if per_bin else 1
        self.reset()

    def reset(self) -> None:
        """Forget the length statistics, the controllers' intervals and the measurements."""
        self.stats = RequestLengthStats(self.n_bins, self.group_of_bin)
        self.controllers = [
            SLAController(
                target_s=self.target_s,
                eps_s=self.eps_s,
                b_min=self.b_min,
                b_max=self.b_max,
                alpha=self.alpha,
                delta=self.delta,
            )
            for _ in range(self.n_groups)
        ]
        # The last ``window`` measurements and batch sizes of each group's finished batches.
        self._signals: list[deque[float]] = [
            deque(maxlen=self.window) for _ in range(self.n_groups)
        ]
        self._sizes: list[deque[int]] = [deque(maxlen=self.window) for _ in range(self.n_groups)]
        self._group_on_gpu = [-1] * self.n_gpus
        # Each group's size level, and the (request count, b_SLA) it was computed at.
        self._levels = [0] * self.n_groups
        self._levels_at: list[tuple[int, int] | None] = [None] * self.n_groups

    def measure(self, batch: Any) -> float:
        """The latency signal of one ``FinishedBatch`` (see the module docstring)."""
        if self.sla_signal == "batch-latency":
            return float(batch.service_s)
        tokens = batch.max_output_tokens if self.tbt_tokens == "output" else batch.max_total_tokens
        return float(batch.service_s) / max(int(tokens), 1)

    def _absorb(self, queues: Any) -> None:
        """Take in new requests' lengths and finished batches; update the controllers.

        ``queues`` is the env's ``queue_snapshot()`` at this decision.
        """
        self.stats.observe(queues)
        finished = self.env.finished_batches()
        if not finished:
            return
        updated = []
        for batch in finished:
            group = self._group_on_gpu[batch.gpu]
            if group < 0:  # a batch this policy did not dispatch
                continue
            self._group_on_gpu[batch.gpu] = -1
            self._signals[group].append(self.measure(batch))
            self._sizes[group].append(int(batch.size))
            updated.append(group)
        for group in sorted(set(updated)) if len(updated) > 1 else updated:
            signals, sizes = self._signals[group], self._sizes[group]
            self.controllers[group].update(
                sequential_sum(signals) / len(signals), round(sum(sizes) / len(sizes))
            )

    def b_mem(self, group: int) -> int:
        """Algorithm 1 for a static batch on an idle GPU (``L0 = 0``, ``N_decode = 0``)."""
        mean = self.stats.mean(group)
        if math.isnan(mean):
            return self.b_max
        if self.memory == "clt":
            return memory_bound_clt(
                self.kv_capacity_tokens, mean, self.stats.std(group), self.b_max, eps_m=self.eps_m
            )
        return memory_bound(self.kv_capacity_tokens, mean, self.b_max)

    def b_sla(self, group: int) -> int:
        """Algorithm 2's current ``b_SLA`` of ``group``."""
        return self.controllers[group].b_sla

    def batch_size(self, group: int) -> int:
        """``b* = max(min(b_mem, b_SLA), 1)``, before mapping to a size level."""
        return max(min(self.b_mem(group), self.b_sla(group)), 1)

    def size_level(self, group: int) -> int:
        """The size level serving ``batch_size(group)`` requests (see the module docstring).

        It depends only on the group's request count (through ``b_mem``) and its ``b_SLA``, so
        it is kept until one of those changes.
        """
        b_sla = self.controllers[group].b_sla
        key = (self.stats.count[group], b_sla)
        if self._levels_at[group] == key:
            return self._levels[group]
        b = max(min(self.b_mem(group), b_sla), 1)  # batch_size(group), b_SLA read once
        level = self.level(b)
        if self.size_rounding == "nearest" and level + 1 < len(self.batch_sizes):
            if self.batch_sizes[level + 1] - b <= b - self.batch_sizes[level]:
                level += 1
        self._levels[group], self._levels_at[group] = level, key
        return level

    def _serve(self, info: dict[str, Any], bin_index: int) -> np.ndarray:
        group = self.group_of_bin[bin_index]
        self._group_on_gpu[info["gpu"]] = group
        return make_action(bin_index, self.size_level(group))


class SLADynamic(_DynamicBatching):
    """Dynamic batch sizes ``min(b_mem, b_SLA)`` over one FIFO order (no bins).

    The reference simulator's ``dynamic_no_bins`` mode. At each decision the policy serves the
    bin whose oldest request is the oldest (one FIFO order across the env's bins; with
    ``n_bins=1`` the batch itself is first come, first served) with ``b* = min(b_mem, b_SLA)``
    requests (Pang et al., arXiv 2503.05248): ``b_mem`` from Algorithm 1 over the statistics of
    all requests seen so far, ``b_SLA`` from Algorithm 2 driven by measured latency of finished
    batches. It never waits. The module docstring defines the measurement and the size mapping.

    Args:
        env: A ``BatchScheduling-v0`` environment.
        sla_signal: ``"tbt"`` (the paper: per-token time against ``tbt_sla_s``) or
            ``"batch-latency"`` (batch service time against ``latency_budget * sla``).
        tbt_sla_s: ``D_SLA``, the per-token target in seconds (the reference uses 10 ms).
        tbt_tokens: ``"output"`` (service time / longest output) or ``"total"`` (/ longest
            prompt plus output).
        latency_budget: Share of the env's deadline a batch may take, for ``"batch-latency"``.
        eps_s: Tolerance ``eps_D`` in seconds (default: 10% of the target).
        alpha: Interval width of Algorithm 2 (integer >= 1).
        delta: Step of Algorithm 2 (integer >= 1).
        b_min: ``B_min``.
        b_max: ``B_max`` (default: the env's ``max_batch_size``).
        memory: ``"mean"`` (Algorithm 1) or ``"clt"`` (its CLT-exact variant).
        eps_m: Memory overflow probability of the CLT variant, in ``(0, 0.5]``.
        window: Finished batches averaged per controller update.

    Raises:
        ValueError: If an argument is out of range or not one of its allowed values.
    """

    name = "sla-dynamic"

    def __init__(self, env: gym.Env, **kwargs: Any) -> None:
        super().__init__(env, per_bin=False, **kwargs)
        if self.sla_signal == "batch-latency":
            self.name = "sla-dynamic-e2e"

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Serve the oldest bin with ``min(b_mem, b_SLA)`` requests."""
        queues = self.env.queue_snapshot()
        self._absorb(queues)
        return self._serve(info, oldest_bin(queues.ids))


class MultiBinDynamic(_DynamicBatching):
    """Multi-Bin bins, each sized by its own ``min(b_mem, b_SLA)``: the reference's hybrid.

    The reference simulator's ``multi_bin_dynamic`` mode: requests are binned by predicted
    output length (the env's bins, equal-mass edges from calibration data: Multi-Bin Batching,
    Lemma 4.1), each bin keeps its own length statistics (so long bins get a smaller memory
    bound) and its own Algorithm 2 controller, fed only by the batches it formed. At each
    decision a non-empty bin is chosen round-robin (the reference's default) or longest queue
    first, and served with its ``min(b_mem, b_SLA)`` requests; the policy never waits. With one
    bin it takes exactly the decisions of :class:`SLADynamic`.

    Args:
        env: A ``BatchScheduling-v0`` environment.
        bin_choice: ``"round-robin"`` or ``"longest-queue"``.
        **kwargs: The sizing options of :class:`SLADynamic`.

    Raises:
        ValueError: If an argument is out of range or not one of its allowed values.
    """

    name = "multibin-dynamic"

    def __init__(self, env: gym.Env, bin_choice: str = "round-robin", **kwargs: Any) -> None:
        super().__init__(env, per_bin=True, **kwargs)
        self.bin_choice = check_choice(
            type(self).__name__, "bin_choice", bin_choice, ("round-robin", "longest-queue")
        )
        self._next_bin = 0

    def reset(self) -> None:
        """Forget statistics, controllers and measurements; restart the round robin at bin 0."""
        super().reset()
        self._next_bin = 0

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Choose a non-empty bin and serve it with its ``min(b_mem, b_SLA)`` requests."""
        snapshot = self.env.queue_snapshot()
        self._absorb(snapshot)
        queues = snapshot.ids
        if self.bin_choice == "round-robin":
            chosen = first_non_empty(queues, self._next_bin)
            self._next_bin = (chosen + 1) % self.n_bins
        else:
            non_empty = [j for j, q in enumerate(queues) if q.size]
            chosen = max(non_empty, key=lambda j: (queues[j].size, -queues[j][0]))
        return self._serve(info, chosen)
