"""Named baseline policies for each environment, and the one lookup every caller uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

from baselines.base import Policy
from llmsched_env.kinds import ENV_KINDS, get_kind, kind_of_env
from llmsched_env.registry import resolve

PolicyFactory = Callable[..., Policy]

#: Policy tables by environment kind (the kinds of :data:`llmsched_env.kinds.ENV_KINDS`).
POLICY_TABLES: dict[str, dict[str, PolicyFactory]] = {
    name: kind.policy_table() for name, kind in ENV_KINDS.items()
}


def env_kind(env: gym.Env) -> str:
    """The name of ``env``'s kind (``"batch"`` for ``BatchScheduling-v0`` ...).

    Raises:
        TypeError: If ``env`` is no environment of ``llmsched_env``.
    """
    return kind_of_env(env).name


def policy_names(kind: str) -> list[str]:
    """Names of the baselines for an environment kind, in table order.

    Raises:
        ValueError: For an unknown kind (the message lists the kinds).
    """
    return list(POLICY_TABLES[get_kind(kind).name])


def make_policy(name: str, env: gym.Env, **kwargs: Any) -> Policy:
    """Build the baseline called ``name`` for ``env``.

    Raises:
        ValueError: If ``name`` is not a baseline of ``env``'s kind (the message lists them).
    """
    table = POLICY_TABLES[env_kind(env)]
    return resolve("baseline policy", name, table)(env, **kwargs)
