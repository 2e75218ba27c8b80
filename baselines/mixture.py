"""A batch heuristic over a mixture of workloads: one instance per component, the active one acts.

The heuristics of :mod:`baselines.batch` read their env's constants (bin edges, batch-size
levels, full-batch service estimates) once, when they are built. A
:class:`~llmsched_env.envs.mixture.BatchMixtureEnv` switches component, and with it those
constants, at every ``reset``, so a heuristic built on one component would misread the others.
:class:`PerComponentPolicy` builds the heuristic on every component and hands each decision to
the instance of the episode's component; each instance then acts exactly as it does on a plain
env of that workload. ``make_policy(name, mixture)`` builds it, which lets a heuristic
demonstrate the whole training distribution for a warm start (:mod:`agents.imitation`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from baselines.base import Policy
from llmsched_env.envs.mixture import BatchMixtureEnv


class PerComponentPolicy(Policy):
    """One instance of a heuristic per component of a mixture; the active component's acts.

    Args:
        env: The mixture (a ``BatchMixtureEnv``, possibly wrapped).
        build: Builds the heuristic for one component env (e.g.
            ``lambda component: make_policy("multibin-wc", component)``).

    Raises:
        TypeError: If ``env`` is not a ``BatchMixtureEnv``.
    """

    def __init__(self, env: Any, build: Callable[[Any], Policy]) -> None:
        super().__init__(env)
        if not isinstance(self.env, BatchMixtureEnv):
            raise TypeError(
                f"PerComponentPolicy needs a BatchMixtureEnv, got {type(self.env).__name__}"
            )
        #: The heuristic built on each component, in the mixture's component order.
        self.policies: tuple[Policy, ...] = tuple(build(c) for c in self.env.components)
        self.name = self.policies[0].name
        self.reads_observation = any(p.reads_observation for p in self.policies)

    def reset(self) -> None:
        """Start a new episode in every instance (the next component is not known yet)."""
        for policy in self.policies:
            policy.reset()

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The action of the active component's instance."""
        return self.policies[self.env.active_index].act(obs, info)
