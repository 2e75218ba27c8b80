"""Wrappers for the scheduling environments, named for what they change.

* :class:`FlattenAction` turns the ``MultiDiscrete`` action into one ``Discrete`` action whose
  mask is exact (joint): for DQN, and for the joint constraints that per-component masks cannot
  express (WAIT forbidden while each of its components alone is allowed; duplicate batch sizes).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class FlattenAction(gym.ActionWrapper[np.ndarray, np.int64, np.ndarray]):
    """Expose a ``MultiDiscrete(nvec)`` action as ``Discrete(prod(nvec))`` with exact masks.

    Flat action ``i`` is the multi-action ``np.unravel_index(i, nvec)`` (row-major, so for
    ``BatchScheduling-v0`` action 0 is WAIT and ``1 + ...`` follow bin by bin). ``action_masks()``
    returns the unwrapped env's ``joint_action_mask()`` flattened: every allowed flat action is
    valid and distinct.

    Example:
        >>> import gymnasium as gym
        >>> import llmsched_env
        >>> env = FlattenAction(gym.make("llmsched/BatchScheduling-v0", workload="demo2",
        ...                              arrival_rate=2.0, n_requests=20))
        >>> env.action_space
        Discrete(35)
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, spaces.MultiDiscrete):
            raise TypeError(f"FlattenAction needs a MultiDiscrete action space, got {space}")
        self.nvec = tuple(int(n) for n in space.nvec)
        self.action_space = spaces.Discrete(int(np.prod(self.nvec)))

    def action(self, action: Any) -> np.ndarray:
        """Map a flat action to the wrapped env's multi-action."""
        a = int(np.asarray(action).item()) if np.ndim(action) else int(action)
        if not 0 <= a < self.action_space.n:
            raise ValueError(
                f"action {action!r} is outside Discrete({self.action_space.n}): expected an "
                f"integer in [0, {self.action_space.n - 1}]"
            )
        return np.array(np.unravel_index(a, self.nvec), dtype=np.int64)

    def action_masks(self) -> np.ndarray:
        """Exact joint mask over the flat actions."""
        return self.env.unwrapped.joint_action_mask().ravel()
