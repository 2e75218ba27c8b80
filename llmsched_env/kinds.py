"""The environment kinds: the one table that maps a kind's name to its env id, classes and parts.

Every caller that needs to know which environments exist (the ``llmsched`` CLI, the baselines'
registry, the agents, evaluation and stability) asks :data:`ENV_KINDS`, so adding an environment
means writing its env and config classes and adding one :class:`EnvKind` row here. An unknown
kind, id or env class is an error naming the valid ones, never a silent fall-back to another
kind.

The env classes, the baseline tables and the training defaults are named by ``"module:attr"``
strings and imported when first asked for (as Gymnasium's ``entry_point``), so that importing
``llmsched_env`` imports neither the simulators nor ``baselines`` or ``agents``.

Example:
    >>> kind = get_kind("batch")
    >>> kind.env_id, kind.config_class.default_load
    ('llmsched/BatchScheduling-v0', 1.0)
    >>> kind_of_id("llmsched/ContinuousBatching-v0").name
    'continuous'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from llmsched_env.config import BatchEnvConfig, ContinuousEnvConfig, RoutingEnvConfig
from llmsched_env.registry import resolve, unknown_name_error


def load_reference(reference: str) -> Any:
    """Import the object named by ``"package.module:attribute"``."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class EnvKind:
    """One environment: its short name, registered id, classes and the parts built around it.

    Attributes:
        name: Short name used by the CLI, scenarios and run configs, e.g. ``"batch"``.
        env_id: The Gymnasium id, e.g. ``"llmsched/BatchScheduling-v0"``.
        entry_point: ``"module:Class"`` of the env class (registered with Gymnasium).
        config_class: The frozen config dataclass that names, defaults and checks the env's
            keyword arguments (its ``default_load`` is the env's default load).
        policies: ``"module:attr"`` of the baselines' table (policy name to factory).
        hyperparams: ``"module:attr"`` of the training defaults (algorithm name to
            ``agents.hyperparams.TrainingDefaults``), or ``None`` when agents cannot train on it.
        eval_episodes: Default validation episodes of a training run's evaluation callback
            (short episodes afford more).
        vector_entry_point: ``"module:Class"`` of a native vector env, which
            ``gym.make_vec`` builds unless asked for ``"sync"`` or ``"async"`` (``None``: none).
        discrete_action: The action is one ``Discrete`` choice (algorithms that need one, such
            as DQN, use it as it is), not a ``MultiDiscrete`` one that ``FlattenAction`` joins.
    """

    name: str
    env_id: str
    entry_point: str
    config_class: type
    policies: str
    hyperparams: str | None = None
    eval_episodes: int = 5
    vector_entry_point: str | None = None
    discrete_action: bool = False

    @property
    def env_class(self) -> type:
        """The env class (imported on first use)."""
        return load_reference(self.entry_point)

    def policy_table(self) -> dict[str, Any]:
        """The kind's baselines: policy name to factory (imports ``baselines``)."""
        return load_reference(self.policies)

    def hyperparams_table(self) -> dict[str, Any]:
        """Training defaults by algorithm name (imports ``agents``).

        Raises:
            ValueError: If the kind has no training defaults.
        """
        if self.hyperparams is None:
            raise ValueError(f"environment kind {self.name!r} has no training defaults")
        return load_reference(self.hyperparams)


#: Every environment kind, by name.
ENV_KINDS: dict[str, EnvKind] = {
    kind.name: kind
    for kind in (
        EnvKind(
            name="batch",
            env_id="llmsched/BatchScheduling-v0",
            entry_point="llmsched_env.envs.batch_env:BatchSchedulingEnv",
            config_class=BatchEnvConfig,
            policies="baselines.batch:POLICIES",
            hyperparams="agents.hyperparams:BATCH_DEFAULTS",
            # Episodes are a few dozen steps: 20 cost about a second.
            eval_episodes=20,
            vector_entry_point="llmsched_env.envs.batch_vector_env:BatchSchedulingVectorEnv",
        ),
        EnvKind(
            name="continuous",
            env_id="llmsched/ContinuousBatching-v0",
            entry_point="llmsched_env.envs.iteration_env:ContinuousBatchingEnv",
            config_class=ContinuousEnvConfig,
            policies="baselines.continuous:POLICIES",
            hyperparams="agents.hyperparams:CONTINUOUS_DEFAULTS",
            # Episodes are thousands of steps.
            eval_episodes=5,
        ),
        EnvKind(
            name="routing",
            env_id="llmsched/Routing-v0",
            entry_point="llmsched_env.envs.routing_env:RoutingEnv",
            config_class=RoutingEnvConfig,
            policies="baselines.routing:POLICIES",
            hyperparams="agents.hyperparams:ROUTING_DEFAULTS",
            discrete_action=True,
            # One step per request: an episode is n_requests steps.
            eval_episodes=5,
        ),
    )
}

#: Env ids by kind name.
ENV_IDS: dict[str, str] = {kind.name: kind.env_id for kind in ENV_KINDS.values()}


def get_kind(name: str) -> EnvKind:
    """The kind called ``name``.

    Raises:
        ValueError: For an unknown name (the message lists the kinds and suggests the closest).
    """
    return resolve("environment kind", name, ENV_KINDS)


def kind_of_id(env_id: str) -> EnvKind:
    """The kind registered as ``env_id``.

    Raises:
        ValueError: For an id of no kind (the message lists the ids).
    """
    for kind in ENV_KINDS.values():
        if kind.env_id == env_id:
            return kind
    raise unknown_name_error("env id", env_id, [kind.env_id for kind in ENV_KINDS.values()])


def resolve_kind(name_or_id: str) -> EnvKind:
    """The kind given by its name (``"batch"``) or its env id (``"llmsched/BatchScheduling-v0"``).

    Raises:
        ValueError: For anything else (the message lists the names and ids).
    """
    if name_or_id in ENV_KINDS:
        return ENV_KINDS[name_or_id]
    if name_or_id in ENV_IDS.values():
        return kind_of_id(name_or_id)
    valid = [*ENV_KINDS, *ENV_IDS.values()]
    raise unknown_name_error("environment kind or env id", name_or_id, valid)


def kind_of_env(env: Any) -> EnvKind:
    """The kind of an env instance (wrappers are looked through with ``env.unwrapped``).

    Raises:
        TypeError: If the env is of no kind's class.
    """
    unwrapped = getattr(env, "unwrapped", env)
    for kind in ENV_KINDS.values():
        if isinstance(unwrapped, kind.env_class):
            return kind
    raise TypeError(
        f"{type(unwrapped).__name__} is not an environment of llmsched_env; expected one of "
        f"{[kind.entry_point.rpartition(':')[2] for kind in ENV_KINDS.values()]}"
    )
