"""Training environments: one factory per worker, vectorised, optionally normalised.

Training envs are built exactly like evaluation envs (``gym.make`` with the same keyword
arguments) plus stable-baselines3's ``Monitor`` (episode returns for the logs), for algorithms
that need a ``Discrete`` action :class:`~llmsched_env.envs.wrappers.FlattenAction`, and, where
the env and its reward allow it, :class:`~llmsched_env.envs.wrappers.EndWhenSettled`, which ends
an episode with the same return as soon as no action can change it (the evaluation harness
always runs whole episodes).

A run trained on a distribution of workloads (a scenario with a ``training`` mixture, recorded
as the run's ``training_mixture``) builds each training env as a
:class:`~llmsched_env.envs.mixture.BatchMixtureEnv` instead (:func:`make_mixture_env`), its
components sharing the run's other env keyword arguments.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Mapping
from typing import Any, Literal

import gymnasium as gym

import llmsched_env  # noqa: F401  (registers the env ids)
from agents.extras import require_agents_extra
from agents.scenarios import build_env_kwargs
from llmsched_env import arguments
from llmsched_env.envs.mixture import BatchMixtureEnv
from llmsched_env.envs.wrappers import EndWhenSettled, FlattenAction

#: Env keyword arguments a mixture's components do not share: each has its own workload, and
#: the mixture draws every episode's load.
PER_COMPONENT = ("workload", "load", "arrival_rate")


def make_mixture_env(
    mixture: Mapping[str, Any], env_kwargs: Mapping[str, Any], *, end_when_settled: bool = False
) -> BatchMixtureEnv:
    """Build the training distribution of a run: a :class:`BatchMixtureEnv`.

    Args:
        mixture: Plain keyword arguments of :class:`BatchMixtureEnv` (``components``, each a
            mapping of plain env keyword arguments, ``load``, ``arrival_cv``,
            ``source_arrivals``).
        env_kwargs: The run's plain env keyword arguments; all but ``workload``, ``load`` and
            ``arrival_rate`` are shared by every component (so the spaces match the run's env).
        end_when_settled: Wrap each component in ``EndWhenSettled`` if its reward settles.
    """
    shared = {k: v for k, v in build_env_kwargs(env_kwargs).items() if k not in PER_COMPONENT}
    options = dict(mixture)
    components = [build_env_kwargs(c) for c in options.pop("components", ())]
    return BatchMixtureEnv(components, end_when_settled=end_when_settled, **options, **shared)


VecEnvKind = Literal["dummy", "subproc"]
VEC_ENV_KINDS = ("dummy", "subproc")


def env_factory(
    env_id: str,
    env_kwargs: Mapping[str, Any],
    *,
    flat_action: bool,
    end_when_settled: bool = False,
    monitor: bool = True,
    mixture: Mapping[str, Any] | None = None,
) -> Callable[[], gym.Env]:
    """A zero-argument function that builds one training env (picklable for subprocesses).

    Args:
        env_id: Registered env id.
        env_kwargs: Plain env keyword arguments (see :func:`agents.scenarios.build_env_kwargs`).
        flat_action: Wrap in ``FlattenAction`` (for ``Discrete``-only algorithms such as DQN).
        end_when_settled: Wrap in ``EndWhenSettled`` if the env and its reward allow it (see
            :meth:`EndWhenSettled.applies_to`).
        monitor: Wrap in stable-baselines3's ``Monitor`` to log episode returns.
        mixture: Keyword arguments of a :class:`BatchMixtureEnv` to train on instead of
            ``env_id`` (see :func:`make_mixture_env`), or ``None``.
    """
    plain = dict(env_kwargs)
    plain_mixture = None if mixture is None else dict(mixture)

    def make() -> gym.Env:
        if multiprocessing.parent_process() is not None:
            # A subprocess env worker: Ctrl-C is the main process's to handle (it saves the
            # model, then closes the workers); a worker dying of it would break the pipes.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if plain_mixture is not None:
            env: gym.Env = make_mixture_env(plain_mixture, plain, end_when_settled=end_when_settled)
        else:
            env = gym.make(env_id, **build_env_kwargs(plain))
            if end_when_settled and EndWhenSettled.applies_to(env):
                env = EndWhenSettled(env)
        if flat_action:
            env = FlattenAction(env)
        if monitor:
            from stable_baselines3.common.monitor import Monitor

            env = Monitor(env)
        return env

    return make


def _check_first_resets(factory: Callable[[], Any], n_envs: int, first_seed: int) -> None:
    """Make one env here and reset it with every env's first seed, raising what they raise.

    An env that fails when it is made or reset inside a ``SubprocVecEnv`` worker prints the
    worker's traceback and reaches this process only as an ``EOFError``; made here first, a
    bad setting (KV blocks that do not fit the trace, a window whose every request is
    rejected) fails with its own message, as with ``DummyVecEnv``.
    """
    env = factory()
    try:
        for seed in range(first_seed, first_seed + n_envs):
            env.reset(seed=seed)
    finally:
        env.close()


def make_training_env(
    env_id: str,
    env_kwargs: Mapping[str, Any],
    *,
    flat_action: bool,
    end_when_settled: bool = False,
    n_envs: int,
    first_seed: int,
    vec_env: VecEnvKind = "dummy",
    normalize_obs: bool = True,
    normalize_reward: bool = True,
    gamma: float = 0.99,
    mixture: Mapping[str, Any] | None = None,
) -> Any:
    """Build the vectorised (and possibly ``VecNormalize``-wrapped) training env.

    Args:
        env_id: Registered env id.
        env_kwargs: Plain env keyword arguments.
        flat_action: Wrap every env in ``FlattenAction``.
        end_when_settled: Wrap every env in ``EndWhenSettled`` where it applies.
        n_envs: Number of parallel envs.
        first_seed: Env ``i`` is first reset with seed ``first_seed + i`` (see
            :func:`agents.seeds.training_env_seeds`).
        vec_env: ``"dummy"`` (all envs in this process, one after another) or ``"subproc"``
            (one process per env).
        normalize_obs: Normalise observations with running statistics.
        normalize_reward: Scale rewards by a running std of the discounted return.
        gamma: Discount used by the reward normalisation (the algorithm's ``gamma``).
        mixture: Train on this :class:`BatchMixtureEnv` (its keyword arguments) instead of
            ``env_id``, or ``None``.

    Returns:
        A stable-baselines3 ``VecEnv``.

    Raises:
        ValueError: If ``vec_env`` is unknown, ``n_envs < 1``, ``first_seed < 0`` or ``gamma``
            is outside ``[0, 1]``.
    """
    require_agents_extra()
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

    if vec_env not in VEC_ENV_KINDS:
        raise ValueError(f"vec_env must be one of {list(VEC_ENV_KINDS)}, got {vec_env!r}")
    n_envs = arguments.integer("make_training_env", "n_envs", n_envs, minimum=1)
    first_seed = arguments.integer("make_training_env", "first_seed", first_seed, minimum=0)
    gamma = arguments.real("make_training_env", "gamma", gamma, minimum=0.0, maximum=1.0)
    factory = env_factory(
        env_id,
        env_kwargs,
        flat_action=flat_action,
        end_when_settled=end_when_settled,
        mixture=mixture,
    )
    factories = [factory] * n_envs
    if vec_env == "subproc":
        _check_first_resets(factory, n_envs, first_seed)
    venv = DummyVecEnv(factories) if vec_env == "dummy" else SubprocVecEnv(factories)
    venv.seed(first_seed)
    if normalize_obs or normalize_reward:
        venv = VecNormalize(venv, norm_obs=normalize_obs, norm_reward=normalize_reward, gamma=gamma)
    return venv
