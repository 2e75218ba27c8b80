"""The random baseline: uniform over the allowed actions, the floor every policy must beat."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from baselines._checks import check_int
from baselines.continuous._common import ContinuousPolicy


class RandomJointAction(ContinuousPolicy):
    """Uniformly random over the distinct valid actions of the current decision.

    The per-component mask in ``info["action_mask"]`` cannot say when WAIT (decode 0, prefill 0)
    is forbidden while each zero alone is allowed, so this draws from the env's exact joint mask
    (``joint_action_mask()``, the public method behind ``FlattenAction``), which also lists
    WAIT and decode-only actions once (cap level 0) instead of once per cap.

    Args:
        env: A ``ContinuousBatching-v0`` environment.
        seed: Seed of the policy's generator, used by :meth:`reset` when it gets no seed.

    Raises:
        ValueError: If ``seed`` is not a non-negative integer.
    """

    name = "random"

    def __init__(self, env: gym.Env, seed: int = 0) -> None:
        super().__init__(env)
        self.seed = check_int(type(self).__name__, "seed", seed, 0)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Restart the generator from ``seed`` (default: the constructor's seed)."""
        self.rng = np.random.default_rng(self.seed if seed is None else seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Draw one allowed action uniformly."""
        mask = self.env.joint_action_mask()
        flat = self.rng.choice(np.flatnonzero(mask))
        return np.array(np.unravel_index(flat, mask.shape), dtype=np.int64)
