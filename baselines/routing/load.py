"""Load-balancing routers: random, round-robin, join-shortest-queue variants, power of two.

* :class:`RandomRouter`: a uniformly random allowed replica (seeded).
* :class:`RoundRobin`: replicas in turn, skipping those the mask forbids.
* :class:`LeastOutstandingRequests`: join the shortest queue, counting waiting and running
  requests (Winston, "Optimality of the shortest line discipline", J. Appl. Prob. 1977).
* :class:`LeastOutstandingTokens`: join the shortest queue by work: prompt plus predicted output
  tokens routed to the replica and not finished.
* :class:`PowerOfTwoChoices`: sample two allowed replicas, take the one with fewer outstanding
  requests (Mitzenmacher, "The power of two choices in randomized load balancing", IEEE TPDS
  2001): close to the shortest queue with two probes instead of R.
* :class:`LeastKVUtilization`: the replica with the least KV memory in use, as a fraction of its
  own memory.

Ties go to the lower index, except where noted.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from baselines._checks import check_int
from baselines.routing._common import RoutingPolicy


class RandomRouter(RoutingPolicy):
    """A uniformly random allowed replica.

    Args:
        env: A ``Routing-v0`` environment.
        seed: Seed of the router's generator, restarted by :meth:`reset`.
    """

    name = "random"

    def __init__(self, env: gym.Env, seed: int = 0) -> None:
        super().__init__(env)
        self.seed = check_int(type(self).__name__, "seed", seed, 0)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Restart the generator from ``seed`` (default: the constructor's seed)."""
        self.rng = np.random.default_rng(self.seed if seed is None else seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.int64:
        """A random allowed replica."""
        return np.int64(self.rng.choice(self.allowed(info)))


class RoundRobin(RoutingPolicy):
    """Replicas in turn: the next allowed one after the previous choice."""

    name = "round-robin"

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._last = -1

    def reset(self) -> None:
        """Start again from replica 0."""
        self._last = -1

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.int64:
        """The first allowed replica after the last one chosen (cyclically)."""
        mask = info["action_mask"]
        n = self.n_replicas
        for step in range(1, n + 1):
            replica = (self._last + step) % n
            if mask[replica]:
                self._last = replica
                return np.int64(replica)
        raise RuntimeError("no replica is allowed: act() was called without a decision")


class LeastOutstandingRequests(RoutingPolicy):
    """Join the shortest queue: fewest waiting plus running requests (ties: fewer tokens)."""

    name = "least-requests"

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.int64:
        """The allowed replica with the fewest outstanding requests."""
        return self.pick_min(info, self.outstanding_requests(info), info["outstanding_tokens"])


class LeastOutstandingTokens(RoutingPolicy):
    """Join the shortest queue by work: fewest prompt plus predicted output tokens outstanding.

    The work is ``info["outstanding_tokens"]``: the prompt and *predicted* output tokens of the
    requests routed to the replica and not finished (the router does not know true lengths).
    """

    name = "least-tokens"

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.int64:
        """The allowed replica with the least outstanding work."""
        return self.pick_min(info, info["outstanding_tokens"], self.outstanding_requests(info))


class PowerOfTwoChoices(RoutingPolicy):
    """Probe ``d`` random allowed replicas, take the one with fewest outstanding requests.

    Args:
        env: A ``Routing-v0`` environment.
        d: Replicas probed per request (2: the power of two choices).
        seed: Seed of the router's generator, restarted by :meth:`reset`.

    Ties among the probed replicas go to the one drawn first.
    """

    name = "power-of-two"

    def __init__(self, env: gym.Env, d: int = 2, seed: int = 0) -> None:
        super().__init__(env)
        self.d = check_int(type(self).__name__, "d", d, 1)
        self.seed = check_int(type(self).__name__, "seed", seed, 0)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Restart the generator from ``seed`` (default: the constructor's seed)."""
        self.rng = np.random.default_rng(self.seed if seed is None else seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.int64:
        """The least loaded of ``d`` random allowed replicas."""
        allowed = self.allowed(info)
        probed = self.rng.choice(allowed, size=min(self.d, allowed.size), replace=False)
        load = self.outstanding_requests(info)[probed]
        return np.int64(probed[int(np.argmin(load))])


class LeastKVUtilization(RoutingPolicy):
    """The replica with the smallest share of its KV memory in use (ties: fewer requests)."""

    name = "least-kv"

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.int64:
        """The allowed replica whose KV memory is the least used."""
        used = info["kv_used_tokens"] / self.env.kv_capacity_tokens
        return self.pick_min(info, used, self.outstanding_requests(info))
