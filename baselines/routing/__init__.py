"""Routers for Routing-v0: which replica serves each arriving request.

Every entry of :data:`POLICIES` is a factory ``(env, **kwargs) -> Policy``;
``baselines.make_policy(name, env)`` resolves a name and builds the router, and keyword
arguments override its defaults, e.g. ``make_policy("llm-d-scorer", env, kv_weight=1.0)``.

| name | rule |
|------|------|
| ``random`` | a uniformly random allowed replica (seeded) |
| ``round-robin`` | replicas in turn, skipping forbidden ones |
| ``least-requests`` | fewest waiting + running requests (join the shortest queue) |
| ``least-tokens`` | least prompt + predicted output tokens outstanding |
| ``power-of-two`` | the less loaded of two random allowed replicas (seeded) |
| ``least-kv`` | smallest share of KV memory in use |
| ``prefix-affinity`` | longest cached prefix of the prompt, ties to the least loaded |
| ``balanced-affinity`` | prefix affinity while loads are balanced (SGLang's cache-aware router) |
| ``llm-d-scorer`` | weighted prefix, queue and KV scores (llm-d inference scheduler) |
| ``min-ttft`` | least estimated queueing + uncached prefill time (Mooncake) |
| ``length-split`` | long prefills to a reserved replica, the rest elsewhere, each by ``min-ttft`` |
"""

from __future__ import annotations

from collections.abc import Callable

from baselines.base import Policy
from baselines.routing.cache_aware import (
    BalancedPrefixAffinity,
    EstimatedTTFT,
    PrefixAffinity,
    WeightedScorer,
)
from baselines.routing.length_split import LengthSplit
from baselines.routing.load import (
    LeastKVUtilization,
    LeastOutstandingRequests,
    LeastOutstandingTokens,
    PowerOfTwoChoices,
    RandomRouter,
    RoundRobin,
)

POLICIES: dict[str, Callable[..., Policy]] = {
    "random": RandomRouter.from_env,
    "round-robin": RoundRobin.from_env,
    "least-requests": LeastOutstandingRequests.from_env,
    "least-tokens": LeastOutstandingTokens.from_env,
    "power-of-two": PowerOfTwoChoices.from_env,
    "least-kv": LeastKVUtilization.from_env,
    "prefix-affinity": PrefixAffinity.from_env,
    "balanced-affinity": BalancedPrefixAffinity.from_env,
    "llm-d-scorer": WeightedScorer.from_env,
    "min-ttft": EstimatedTTFT.from_env,
    "length-split": LengthSplit.from_env,
}
"""Routers by the name users type (``llmsched evaluate --env routing --policies``)."""

__all__ = [
    "POLICIES",
    "BalancedPrefixAffinity",
    "EstimatedTTFT",
    "LeastKVUtilization",
    "LeastOutstandingRequests",
    "LeastOutstandingTokens",
    "LengthSplit",
    "PowerOfTwoChoices",
    "PrefixAffinity",
    "RandomRouter",
    "RoundRobin",
    "WeightedScorer",
]
