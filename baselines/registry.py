"""Named baseline policies for each environment, and the one lookup every caller uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

from baselines.base import Policy
from baselines.batch import POLICIES as BATCH_POLICIES
from baselines.continuous import POLICIES as CONTINUOUS_POLICIES
from llmsched_env.registry import resolve

PolicyFactory = Callable[..., Policy]

#: Policy tables by environment kind (``"batch"`` or ``"continuous"``).
POLICY_TABLES: dict[str, dict[str, PolicyFactory]] = {
    "batch": BATCH_POLICIES,
    "continuous": CONTINUOUS_POLICIES,
}


def env_kind(env: gym.Env) -> str:
    """``"batch"`` for ``BatchScheduling-v0``, ``"continuous"`` for ``ContinuousBatching-v0``."""
    from llmsched_env.envs import BatchSchedulingEnv, ContinuousBatchingEnv

    unwrapped = env.unwrapped
    if isinstance(unwrapped, BatchSchedulingEnv):
        return "batch"
    if isinstance(unwrapped, ContinuousBatchingEnv):
        return "continuous"
    raise TypeError(f"no baselines for environment {type(unwrapped).__name__}")


def policy_names(kind: str) -> list[str]:
    """Names of the baselines for an environment kind, in table order."""
    return list(resolve("environment kind", kind, POLICY_TABLES))


def make_policy(name: str, env: gym.Env, **kwargs: Any) -> Policy:
    """Build the baseline called ``name`` for ``env``.

    Raises:
        ValueError: If ``name`` is not a baseline of ``env``'s kind (the message lists them).
    """
    table = POLICY_TABLES[env_kind(env)]
    return resolve("baseline policy", name, table)(env, **kwargs)
