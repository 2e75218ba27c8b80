"""What every router shares: the env check, the mask and a masked arg-min with a tie rule.

A router sees ``Routing-v0`` only through its public interface: the documented ``info`` fields
of each step (per-replica arrays such as ``waiting``, ``running``, ``outstanding_tokens``,
``kv_used_tokens``, ``cached_prefix_tokens``, and the request's ``prompt_tokens``), the
constants of ``reset``'s ``info`` and the env's configuration and ``replica_latencies``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from baselines.base import Policy


class RoutingPolicy(Policy):
    """A policy over ``llmsched/Routing-v0``: maps each arriving request to a replica.

    Attributes:
        n_replicas: Number of replicas (the action is a replica index).

    Raises:
        TypeError: If ``env`` is not a ``Routing-v0`` environment.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        from llmsched_env.envs import RoutingEnv

        if not isinstance(self.env, RoutingEnv):
            raise TypeError(
                f"{type(self).__name__} routes requests in llmsched/Routing-v0, "
                f"got {type(self.env).__name__}"
            )
        self.n_replicas = int(self.env.config.n_replicas)

    @staticmethod
    def allowed(info: dict[str, Any]) -> np.ndarray:
        """Indices of the replicas the mask allows (at least one while a request waits)."""
        return np.flatnonzero(info["action_mask"])

    @staticmethod
    def outstanding_requests(info: dict[str, Any]) -> np.ndarray:
        """Per replica, its waiting plus running requests."""
        return info["waiting"] + info["running"]

    def pick_min(self, info: dict[str, Any], *keys: np.ndarray) -> np.int64:
        """The allowed replica with the smallest ``keys`` (lexicographic; then lowest index)."""
        allowed = self.allowed(info)
        order = np.lexsort(tuple(np.asarray(k)[allowed] for k in reversed(keys)))
        return np.int64(allowed[order[0]])
