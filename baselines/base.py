"""The policy interface shared by every heuristic and, through an adapter, by trained agents.

A policy is built from an environment (``from_env``), is told when an episode starts
(``reset``), and maps each observation and ``info`` to an action in the env's own action space
(``act``). Heuristics read what they need from the documented ``info`` fields and the env's public
configuration (``env.unwrapped.config`` and the attributes its docstring lists), never from private
attributes, so a heuristic and a learned agent go through exactly the same code path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import gymnasium as gym
import numpy as np


class Policy(ABC):
    """A scheduling policy over ``BatchScheduling-v0`` or ``ContinuousBatching-v0``.

    Subclasses set :attr:`name` and implement :meth:`act`; stateful ones also override
    :meth:`reset`.
    """

    #: Short name used in tables and on the command line.
    name: str = "policy"

    def __init__(self, env: gym.Env) -> None:
        self.env = env.unwrapped

    @classmethod
    def from_env(cls, env: gym.Env, **kwargs: Any) -> Policy:
        """Build the policy for ``env`` (a ``gym.make`` result or the bare env)."""
        return cls(env, **kwargs)

    def reset(self) -> None:  # noqa: B027 (an optional hook, empty by default)
        """Forget per-episode state; called after every ``env.reset``."""

    @abstractmethod
    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Return the action for the current decision.

        Args:
            obs: The observation returned by the env.
            info: The ``info`` returned with it.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
