"""Training environments: one factory per worker, vectorised, optionally normalised.

Training envs are built exactly like evaluation envs (``gym.make`` with the same keyword
arguments) plus stable-baselines3's ``Monitor`` (episode returns for the logs), for algorithms
that need a ``Discrete`` action :class:`~llmsched_env.envs.wrappers.FlattenAction`, and, where
the env and its reward allow it, :class:`~llmsched_env.envs.wrappers.EndWhenSettled`, which ends
an episode with the same return as soon as no action can change it (the evaluation harness
always runs whole episodes).
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
from llmsched_env.envs.wrappers import EndWhenSettled, FlattenAction

VecEnvKind = Literal["dummy", "subproc"]
VEC_ENV_KINDS = ("dummy", "subproc")


def env_factory(
    env_id: str,
    env_kwargs: Mapping[str, Any],
    *,
    flat_action: bool,
    end_when_settled: bool = False,
    monitor: bool = True,
) -> Callable[[], gym.Env]:
    """A zero-argument function that builds one training env (picklable for subprocesses).

    Args:
        env_id: Registered env id.
        env_kwargs: Plain env keyword arguments (see :func:`agents.scenarios.build_env_kwargs`).
        flat_action: Wrap in ``FlattenAction`` (for ``Discrete``-only algorithms such as DQN).
        end_when_settled: Wrap in ``EndWhenSettled`` if the env and its reward allow it (see
            :meth:`EndWhenSettled.applies_to`).
        monitor: Wrap in stable-baselines3's ``Monitor`` to log episode returns.
    """
    plain = dict(env_kwargs)

    def make() -> gym.Env:
        if multiprocessing.parent_process() is not None:
            # A subprocess env worker: Ctrl-C is the main process's to handle (it saves the
            # model, then closes the workers); a worker dying of it would break the pipes.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
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

    Returns:
        A stable-baselines3 ``VecEnv``.

    Raises:
        ValueError: If ``vec_env`` is unknown.
    """
    require_agents_extra()
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

    if vec_env not in VEC_ENV_KINDS:
        raise ValueError(f"vec_env must be one of {list(VEC_ENV_KINDS)}, got {vec_env!r}")
    factory = env_factory(
        env_id, env_kwargs, flat_action=flat_action, end_when_settled=end_when_settled
    )
    factories = [factory] * n_envs
    venv = DummyVecEnv(factories) if vec_env == "dummy" else SubprocVecEnv(factories)
    venv.seed(first_seed)
    if normalize_obs or normalize_reward:
        venv = VecNormalize(venv, norm_obs=normalize_obs, norm_reward=normalize_reward, gamma=gamma)
    return venv
