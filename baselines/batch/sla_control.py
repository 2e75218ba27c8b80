"""The two batch-size rules of memory-aware, SLA-constrained dynamic batching.

Pang, Li and Wang, "Optimizing LLM Inference Throughput via Memory-aware and SLA-constrained
Dynamic Batching" (arXiv 2503.05248):

* Algorithm 1 bounds the batch size by KV memory: :func:`memory_bound` (mean lengths) and
  :func:`memory_bound_clt` (a normal approximation that bounds the overflow probability).
* Algorithm 2 searches an interval ``[low, high]`` of batch sizes with measured latency
  feedback: :class:`SLAController`.

:class:`RequestLengthStats` keeps the per-request length statistics Algorithm 1 needs, from the
requests seen waiting in the env's ``queue_snapshot()``.

**Static batching on an idle GPU.** The paper's ``eta`` is the number of tokens that fit in KV
memory, ``L0`` the tokens already held by running (decoding) requests and ``N_decode`` the
number of requests decoding, which a new batch must keep. In the request-level environment a
decision is taken for an *idle* GPU and a static batch runs to completion alone, so nothing is
resident: ``L0 = 0`` and ``N_decode = 0``, and ``eta`` is the env's ``kv_capacity_tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from baselines.batch._common import newest_entries
from llmsched_env.jit import njit


def memory_bound(
    eta_tokens: float,
    mean_tokens: float,
    b_max: int,
    *,
    l0_tokens: float = 0.0,
    n_decode: int = 0,
) -> int:
    """Algorithm 1 (mean lengths): the memory bound ``b_mem`` of a batch.

    ``b = floor((eta - L0) / (E[l_in] + E[l_out]))``, then ``b_mem = min(max(b, N_decode), B_max)``.

    Args:
        eta_tokens: Tokens that fit in KV memory.
        mean_tokens: ``E[l_in] + E[l_out]``, the mean prompt plus output tokens of a request.
        b_max: Largest batch size.
        l0_tokens: Tokens held by requests already running (0 for a static batch).
        n_decode: Requests already decoding (0 for a static batch).

    Returns:
        The memory bound ``b_mem`` (0 when not even one mean request fits and none decodes).

    Example:
        >>> memory_bound(37_333, 734.0, 128)
        50
    """
    b = math.floor((eta_tokens - l0_tokens) / max(mean_tokens, 1e-9))
    return int(min(max(b, n_decode), b_max))


def memory_bound_clt(
    eta_tokens: float,
    mean_tokens: float,
    std_tokens: float,
    b_max: int,
    *,
    eps_m: float = 0.05,
    l0_tokens: float = 0.0,
    n_decode: int = 0,
) -> int:
    """Algorithm 1, CLT-exact variant: the largest ``b`` with ``P(memory overflow) <= eps_m``.

    The KV need of ``b`` requests is approximately normal with mean ``b * mu`` and standard
    deviation ``sqrt(b) * sigma``, so ``b * mu + theta * sigma * sqrt(b) <= eta - L0`` with
    ``theta = Phi^-1(1 - eps_m)``, i.e.
    ``b <= ((sqrt((sigma * theta)^2 + 4 * mu * eta) - sigma * theta) / (2 * mu))^2``.

    Args:
        eta_tokens: Tokens that fit in KV memory.
        mean_tokens: ``mu``, mean prompt plus output tokens per request.
        std_tokens: ``sigma``, their standard deviation.
        b_max: Largest batch size.
        eps_m: Allowed overflow probability, in ``(0, 0.5]``.
        l0_tokens: Tokens held by running requests (0 for a static batch).
        n_decode: Requests already decoding (0 for a static batch).

    Returns:
        The memory bound, ``min(max(floor(bound), N_decode), B_max)``.

    Example:
        >>> memory_bound_clt(37_333, 734.0, 0.0, 128)  # no spread: the mean bound
        50
        >>> memory_bound_clt(37_333, 734.0, 800.0, 128, eps_m=0.05)
        39
    """
    eta = eta_tokens - l0_tokens
    mu = max(mean_tokens, 1e-9)
    st = max(std_tokens, 0.0) * NormalDist().inv_cdf(1.0 - eps_m)
    if eta <= 0:
        return int(min(max(0, n_decode), b_max))
    root = (math.sqrt(st * st + 4.0 * mu * eta) - st) / (2.0 * mu)
    # The tiny slack absorbs rounding when the bound is an exact integer.
    b = math.floor(root * root + 1e-9)
    return int(min(max(b, n_decode), b_max))


@dataclass
class SLAController:
    """Algorithm 2: the ``[low, high]`` interval search for the SLA batch size ``b_SLA``.

    Starting from ``[B_min, B_max]``, each update compares the measured latency ``m`` with the
    target ``D`` and tolerance ``eps`` (``b_avg`` is the recent mean batch size, rounded to an
    integer):

    * ``m > D + eps`` (too slow): ``high = max(b_avg, low + alpha)``, then
      ``low = max(low - delta, B_min)``;
    * ``m < D - eps`` (headroom): ``low = min(b_avg, high - alpha)``, then
      ``high = min(high + delta, B_max)``;
    * otherwise: ``high = min(b_avg + alpha // 2, B_max)``,
      ``low = max(b_avg - alpha // 2, B_min)``;

    and ``b_SLA = (low + high) // 2``, clamped to ``[max(N_decode, B_min), B_max]``.

    Attributes:
        target_s: ``D``, the latency target in seconds.
        eps_s: ``eps``, the tolerance in seconds.
        b_min: ``B_min``.
        b_max: ``B_max``.
        alpha: Interval width (an integer).
        delta: Step (an integer).
        n_decode: Requests already decoding (0 for static batching on an idle GPU).
        low: Lower end of the interval.
        high: Upper end of the interval.

    Example:
        >>> c = SLAController(target_s=0.01, eps_s=0.001, b_min=1, b_max=64, alpha=8, delta=4)
        >>> c.b_sla
        32
        >>> c.update(0.020, b_avg=32)  # too slow: high = max(32, 1 + 8), low = max(1 - 4, 1)
        16
        >>> (c.low, c.high)
        (1, 32)
    """

    target_s: float
    eps_s: float
    b_min: int
    b_max: int
    alpha: int
    delta: int
    n_decode: int = 0
    low: int = field(default=-1)
    high: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.low < 0:
            self.low = self.b_min
        if self.high < 0:
            self.high = self.b_max

    @property
    def b_sla(self) -> int:
        """``(low + high) // 2`` clamped to ``[max(N_decode, B_min), B_max]``."""
        return int(min(max((self.low + self.high) // 2, self.n_decode, self.b_min), self.b_max))

    def update(self, measured_s: float, b_avg: int) -> int:
        """Move the interval after one measurement and return the new ``b_SLA``.

        Args:
            measured_s: The measured latency (for example the mean time between tokens).
            b_avg: The recent mean batch size, an integer.

        Returns:
            ``b_SLA`` after the update.
        """
        if measured_s > self.target_s + self.eps_s:
            self.high = max(b_avg, self.low + self.alpha)
            self.low = max(self.low - self.delta, self.b_min)
        elif measured_s < self.target_s - self.eps_s:
            self.low = min(b_avg, self.high - self.alpha)
            self.high = min(self.high + self.delta, self.b_max)
        else:
            self.high = min(b_avg + self.alpha // 2, self.b_max)
            self.low = max(b_avg - self.alpha // 2, self.b_min)
        return self.b_sla


class RequestLengthStats:
    """Running mean and standard deviation of ``prompt + predicted output`` tokens per request.

    Every request that has arrived (and was not rejected) appears in a ``queue_snapshot()`` at
    least once before it is served. Each call of :meth:`observe` adds the requests that are new
    since the previous call: a bin is a FIFO of increasing request indices, so its new requests
    are those after the last index already counted. Output lengths are not known before a
    request completes, so its *predicted* output length stands in for ``l_out`` (that is the
    information a scheduler has when it sizes a batch).

    :meth:`observe` runs at every decision, so it reads one number per bin (its newest
    request) and a bin's lengths only when that request is new; it sums the new ones in one
    compiled call (:func:`_new_request_tokens`, exact: token counts are integers).

    Args:
        n_bins: Number of bins of the env.
        group_of_bin: The statistics group of each bin (``None``: one group for all bins).

    Attributes:
        count: Requests counted, per group.
        total: Sum of their tokens, per group.
        total_sq: Sum of their squared tokens, per group.
    """

    def __init__(self, n_bins: int, group_of_bin: Sequence[int] | None = None) -> None:
        self.group_of_bin = list(group_of_bin) if group_of_bin is not None else [0] * n_bins
        n_groups = max(self.group_of_bin) + 1
        self.count = [0] * n_groups
        self.total = [0] * n_groups
        self.total_sq = [0] * n_groups
        self._last_seen = [-1] * n_bins

    def observe(self, snapshot: Any) -> None:
        """Count the requests of ``snapshot`` not seen before.

        Args:
            snapshot: The env's ``queue_snapshot()`` (a
                :class:`~llmsched_env.envs.queue_snapshot.BinQueueSnapshot`; any object with
                per-bin ``ids``, ``prompt_tokens`` and ``predicted_output_tokens`` will do).
        """
        queues = snapshot.ids
        last_seen = self._last_seen
        for j, newest in enumerate(newest_entries(queues)):
            seen = last_seen[j]
            if newest is None or newest <= seen:
                continue
            count, total, total_sq = _new_request_tokens(
                queues[j], snapshot.prompt_tokens[j], snapshot.predicted_output_tokens[j], seen
            )
            g = self.group_of_bin[j]
            self.count[g] += count
            self.total[g] += total
            self.total_sq[g] += total_sq
            last_seen[j] = newest

    def mean(self, group: int) -> float:
        """Mean tokens per request of ``group`` (``nan`` before any request)."""
        n = self.count[group]
        return self.total[group] / n if n else math.nan

    def std(self, group: int) -> float:
        """Standard deviation of tokens per request of ``group`` (0 for fewer than 2)."""
        n = np.float64(self.count[group])
        if n < 2:
            return 0.0
        total = np.float64(self.total[group])
        var = (self.total_sq[group] - total**2 / n) / (n - 1)
        return float(math.sqrt(max(var, 0.0)))


@njit(cache=True)
def _new_request_tokens(queue, prompt_tokens, predicted_output_tokens, seen):
    """Count, sum and sum of squares of ``prompt + predicted`` tokens of a bin's new requests.

    A bin is a FIFO of increasing request indices, so the requests not counted yet (index
    above ``seen``) are its last ones: this steps back over them from the newest. A decision
    finds a few new requests per bin; a Python loop over them was the largest part of a
    dynamic-batching decision. Integer sums, exact while the squares of one call's new
    requests add up to less than ``2**63`` (a request's tokens fit in KV memory).
    """
    n = queue.shape[0]
    start = n
    while start > 0 and queue[start - 1] > seen:
        start -= 1
    total = 0
    total_sq = 0
    for i in range(start, n):
        tokens = np.int64(prompt_tokens[i]) + np.int64(predicted_output_tokens[i])
        total += tokens
        total_sq += tokens * tokens
    return n - start, total, total_sq
