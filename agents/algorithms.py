"""The reinforcement-learning algorithms an agent can be trained with, by name.

:data:`ALGOS` maps a name to an :class:`AlgoSpec`, like rl-zoo3's ``ALGOS`` table. Classes are
imported only when used, so listing the algorithms does not need the ``agents`` extra.

* ``maskable-ppo`` (default): sb3-contrib's ``MaskablePPO`` over the env's ``MultiDiscrete``
  action with the env's per-component masks: it never picks a forbidden action.
* ``ppo`` and ``a2c``: stable-baselines3's PPO and A2C over the same action, without masks; a
  forbidden action is remapped by the env (``invalid_action="remap"``) and counted in
  ``info["invalid_action"]``.
* ``dqn``: stable-baselines3's DQN, which needs a ``Discrete`` action: the env is wrapped in
  :class:`~llmsched_env.envs.wrappers.FlattenAction`. DQN itself ignores masks while learning;
  when acting, :class:`~agents.policy.AgentPolicy` takes the best Q-value among the actions the
  exact joint mask allows.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from agents.extras import require_agents_extra
from llmsched_env.registry import resolve


@dataclass(frozen=True)
class AlgoSpec:
    """How to build one algorithm.

    Attributes:
        name: Name on the command line and in run configurations.
        module: Module that defines the class.
        class_name: The algorithm class.
        masked: Whether it takes action masks (``action_masks=`` in ``predict``).
        flat_action: Whether the env must be wrapped in ``FlattenAction`` (``Discrete`` only).
        on_policy: Whether it collects rollouts of ``n_steps`` per env (PPO, A2C).
    """

    name: str
    module: str
    class_name: str
    masked: bool
    flat_action: bool
    on_policy: bool

    def load_class(self) -> Any:
        """Import and return the algorithm class (needs the ``agents`` extra)."""
        require_agents_extra()
        return getattr(importlib.import_module(self.module), self.class_name)


#: Algorithms by name.
ALGOS: dict[str, AlgoSpec] = {
    "maskable-ppo": AlgoSpec(
        "maskable-ppo", "sb3_contrib", "MaskablePPO", masked=True, flat_action=False, on_policy=True
    ),
    "ppo": AlgoSpec(
        "ppo", "stable_baselines3", "PPO", masked=False, flat_action=False, on_policy=True
    ),
    "a2c": AlgoSpec(
        "a2c", "stable_baselines3", "A2C", masked=False, flat_action=False, on_policy=True
    ),
    "dqn": AlgoSpec(
        "dqn", "stable_baselines3", "DQN", masked=False, flat_action=True, on_policy=False
    ),
}

#: The algorithm used when none is named.
DEFAULT_ALGO = "maskable-ppo"


def get_algo(name: str) -> AlgoSpec:
    """Return the :class:`AlgoSpec` called ``name``.

    Raises:
        ValueError: For an unknown name; the message lists the algorithms and suggests the
            closest.
    """
    return resolve("algorithm", name, ALGOS)
