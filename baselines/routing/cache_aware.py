"""Routers that weigh prefix-cache hits: prefix affinity, llm-d's scorer, Mooncake's TTFT estimate.

* :class:`PrefixAffinity`: the replica holding the longest cached prefix of the prompt, ties to
  the least loaded (session affinity by cache content).
* :class:`BalancedPrefixAffinity`: prefix affinity with a load guard, in the manner of SGLang's
  cache-aware router (sgl-router, now the SGLang Model Gateway): the longest cached prefix when
  enough of the prompt is cached and the replicas' loads are balanced, the least loaded
  otherwise.
* :class:`WeightedScorer`: a weighted sum of per-replica scores in ``[0, 1]``, the highest
  wins, in the manner of the llm-d inference scheduler's scorer plugins
  (llm-d/llm-d-inference-scheduler: ``prefix-cache-scorer``, ``queue-scorer``,
  ``kv-cache-utilization-scorer``; its default profile weighs prefix 3 and queue 2).
* :class:`EstimatedTTFT`: the replica with the smallest estimated time to first token, queueing
  plus the prefill of the uncached part of the prompt, in the manner of Mooncake's global
  scheduler (Qin et al., Mooncake, FAST 2025).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from baselines.routing._common import RoutingPolicy
from llmsched_env.arguments import real


class PrefixAffinity(RoutingPolicy):
    """The longest cached prefix of the request's prompt; ties to fewer outstanding requests.

    With no cached prefix anywhere this is join-the-shortest-queue by requests, remaining ties
    to the lowest replica index (``least-requests`` breaks those by outstanding tokens instead,
    so the two can differ even then).
    """

    name = "prefix-affinity"

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.int64:
        """The allowed replica with the most cached prompt tokens, then the least loaded."""
        cached = info["cached_prefix_tokens"]
        return self.pick_min(info, -cached, self.outstanding_requests(info))


class BalancedPrefixAffinity(RoutingPolicy):
    """Prefix affinity while the load is balanced; the least loaded replica otherwise.

    SGLang's cache-aware router keeps a radix tree of what every worker has cached and decides
    in two states. Per allowed replica ``r`` with load ``n_r`` (waiting plus running requests):

    * **imbalanced**, when ``max n - min n > balance_abs_threshold`` and ``max n >
      balance_rel_threshold * min n``: the least loaded replica;
    * **balanced** otherwise: the replica with the longest cached prefix of the prompt if that
      prefix is more than ``cache_threshold`` of the prompt (ties to the least loaded), else the
      least loaded replica.

    The guard is what pure ``prefix-affinity`` lacks: a replica that holds a popular prefix
    keeps drawing requests however long its queue grows. The env's ``cached_prefix_tokens`` is
    the exact cache content that SGLang's tree approximates. Ties in load go to fewer
    outstanding tokens, then the lower index. The defaults are the gateway's (cache threshold
    0.3, absolute 64, relative 1.5); with a few replicas at moderate load its absolute
    threshold is rarely crossed, so the cache threshold does most of the work.

    Args:
        env: A ``Routing-v0`` environment.
        cache_threshold: Cached share of the prompt above which the cache decides, in
            ``[0, 1]``.
        balance_abs_threshold: Load difference (requests, >= 0) that, together with the
            relative one, makes the replicas imbalanced.
        balance_rel_threshold: Ratio of the largest to the smallest load (>= 1) that, together
            with the absolute one, makes the replicas imbalanced.
    """

    name = "balanced-affinity"

    def __init__(
        self,
        env: gym.Env,
        cache_threshold: float = 0.3,
        balance_abs_threshold: float = 64.0,
        balance_rel_threshold: float = 1.5,
    ) -> None:
        super().__init__(env)
        owner = type(self).__name__
        self.cache_threshold = real(
            owner, "cache_threshold", cache_threshold, minimum=0.0, maximum=1.0
        )
        self.balance_abs_threshold = real(
            owner, "balance_abs_threshold", balance_abs_threshold, minimum=0.0
        )
        self.balance_rel_threshold = real(
            owner, "balance_rel_threshold", balance_rel_threshold, minimum=1.0
        )

    def imbalanced(self, info: dict[str, Any]) -> bool:
        """Whether the allowed replicas' loads exceed both balance thresholds."""
        return self._imbalanced(self.outstanding_requests(info)[self.allowed(info)])

    def _imbalanced(self, allowed_load: np.ndarray) -> bool:
        high, low = int(allowed_load.max()), int(allowed_load.min())
        return high - low > self.balance_abs_threshold and high > self.balance_rel_threshold * low

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.int64:
        """The replica holding the prompt's longest prefix when balanced and cached enough."""
        load = self.outstanding_requests(info)
        tokens = info["outstanding_tokens"]
        allowed = self.allowed(info)
        if not self._imbalanced(load[allowed]):
            cached = info["cached_prefix_tokens"]
            if cached[allowed].max() > self.cache_threshold * max(info["prompt_tokens"], 1):
                return self.pick_min(info, -cached, load, tokens)
        return self.pick_min(info, load, tokens)


class WeightedScorer(RoutingPolicy):
    """Score each replica by prefix hit, queue and KV use; pick the highest weighted sum.

    Per allowed replica ``r``, with ``q`` its waiting requests and ``c`` its cached prefix:

    * prefix score ``c_r / prompt_tokens`` (the share of the prompt cached there);
    * queue score ``(max q - q_r) / (max q - min q)`` over the allowed replicas (1 when equal),
      a min-max normalised queue depth as llm-d's queue scorer;
    * KV score ``1 - kv_used_r / kv_capacity_r``.

    The replica with the highest ``prefix_weight * prefix + queue_weight * queue + kv_weight *
    kv`` wins; ties go to fewer outstanding (waiting plus running) requests, then the lower
    index (llm-d's picker breaks them at random; with idle queues, which are common, a fixed
    index would send every request to one replica). The defaults are llm-d's default profile
    (prefix 3, queue 2, no KV scorer), which favours cache reuse over even load.

    Args:
        env: A ``Routing-v0`` environment.
        prefix_weight: Weight of the prefix score (>= 0).
        queue_weight: Weight of the queue score (>= 0).
        kv_weight: Weight of the KV score (>= 0).
    """

    name = "llm-d-scorer"

    def __init__(
        self,
        env: gym.Env,
        prefix_weight: float = 3.0,
        queue_weight: float = 2.0,
        kv_weight: float = 0.0,
    ) -> None:
        super().__init__(env)
        owner = type(self).__name__
        self.prefix_weight = real(owner, "prefix_weight", prefix_weight, minimum=0.0)
        self.queue_weight = real(owner, "queue_weight", queue_weight, minimum=0.0)
        self.kv_weight = real(owner, "kv_weight", kv_weight, minimum=0.0)
        self.kv_capacity = np.asarray(self.env.kv_capacity_tokens, dtype=float)

    def scores(self, info: dict[str, Any]) -> np.ndarray:
        """The weighted score of every replica (forbidden ones: ``-inf``)."""
        allowed = np.asarray(info["action_mask"], dtype=bool)
        prefix = info["cached_prefix_tokens"] / max(info["prompt_tokens"], 1)
        queue = info["waiting"].astype(float)
        low, high = queue[allowed].min(), queue[allowed].max()
        queue_score = (high - queue) / (high - low) if high > low else np.ones_like(queue)
        kv = 1.0 - info["kv_used_tokens"] / self.kv_capacity
        total = self.prefix_weight * prefix + self.queue_weight * queue_score + self.kv_weight * kv
        return np.where(allowed, total, -np.inf)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.int64:
        """The allowed replica with the highest weighted score."""
        return self.pick_min(info, -self.scores(info), self.outstanding_requests(info))


class EstimatedTTFT(RoutingPolicy):
    """The smallest estimated TTFT: queueing ahead plus the prefill of the uncached prompt.

    Mooncake's global scheduler picks, per request, the prefill instance with the least
    estimated queueing time plus prefill time of the prompt's part not in that instance's cache.
    A replica here does prefill and decode in the same iterations (chunked prefill), so for
    replica ``r`` with ``n`` requests running, latency model ``L`` and token budget ``M``:

    * prefill tokens ahead ``W = waiting_tokens + prefill_remaining_tokens + prompt - cached``
      (the queued prompts, the started ones, then this request's uncached part);
    * each iteration prefills ``b = max(M - n, 1)`` tokens beside ``n`` decodes, so this takes
      ``k = W // b`` full iterations and one of the remaining ``W - k b`` tokens;
    * estimated TTFT ``= busy_remaining_s + k * L.estimate_s(b, n) + L.estimate_s(W - k b, n)``
      (the last term only when ``W - k b > 0``).

    It ignores the sequence limit (``max_sequences``) and preemptions: a replica whose slots
    are full looks as fast as one with free slots.

    Ties go to fewer outstanding requests, then the lower index. Replicas' own latency models
    (``env.unwrapped.replica_latencies``) make the estimate heterogeneous-aware.

    Args:
        env: A ``Routing-v0`` environment.
    """

    name = "min-ttft"

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.latencies = self.env.replica_latencies
        self.max_tokens = int(self.env.config.max_tokens)

    def estimates_s(self, info: dict[str, Any]) -> np.ndarray:
        """Estimated TTFT of the request on every replica, in seconds."""
        uncached = info["prompt_tokens"] - info["cached_prefix_tokens"]
        ahead = info["waiting_tokens"] + info["prefill_remaining_tokens"] + uncached
        running = info["running"]
        busy = info["busy_remaining_s"]
        out = np.empty(self.n_replicas)
        for r, latency in enumerate(self.latencies):
            work = int(ahead[r])
            n = int(running[r])
            budget = max(self.max_tokens - n, 1)
            full, rest = divmod(work, budget)
            estimate = busy[r] + full * latency.estimate_s(budget, n)
            out[r] = estimate + latency.estimate_s(rest, n) if rest else estimate
        return out

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.int64:
        """The allowed replica with the smallest estimated TTFT."""
        return self.pick_min(info, self.estimates_s(info), self.outstanding_requests(info))
