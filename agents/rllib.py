"""Ray RLlib as the scale-out path: masked PPO on any of the envs, from one machine to a cluster.

RLlib's new API stack (Ray 2.60) samples with ``EnvRunner`` actors that each step a Gymnasium
vector env, and learns with ``RLModule`` objects. Masks reach the policy the way RLlib's own action
masking example does (``ray.rllib.examples.rl_modules.classes.action_masking_rlm``): the env's
observation is a ``Dict`` ``{"observations": <the env's Box>, "action_mask": <0/1 per action>}``
and ``ActionMaskingTorchRLModule`` adds ``log(mask)`` to the action logits. That module masks one
``Discrete`` action, so :class:`RLlibEnv` flattens the ``MultiDiscrete`` action with
:class:`~llmsched_env.envs.FlattenAction` (exact joint masks), and keeps only the scalar entries
of ``info``: RLlib does not use its per-GPU arrays and masks, and the metrics of an ended
episode would change the keys a vector env stacks.

As in ``llmsched train``, a ``BatchScheduling-v0`` episode ends once it is settled
(:class:`~llmsched_env.envs.EndWhenSettled`; same return, fewer steps).

The env is registered with ``ray.tune.registry.register_env`` under :data:`RLLIB_ENV`; the
creator travels to every worker of a cluster through Ray itself, and workers need only this
package installed. ``docs/scaling.md`` shows how to point training at a Ray cluster.

Example (no Ray needed for the env itself):
    >>> env = RLlibEnv({"env_id": "llmsched/BatchScheduling-v0",
    ...                 "env_kwargs": {"workload": "demo2", "arrival_rate": 2.0,
    ...                                "n_requests": 20}})
    >>> env.action_space, sorted(env.observation_space.spaces)
    (Discrete(35), ['action_mask', 'observations'])
"""

from __future__ import annotations

import json
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import llmsched_env  # noqa: F401  (registers the env ids on every worker that builds an env)
from llmsched_env.envs import EndWhenSettled, FlattenAction

#: Name of the env creator in Ray Tune's registry.
RLLIB_ENV = "llmsched-rllib"

INSTALL_HINT = "pip install 'llmsched-env[rllib]'"


class RLlibEnv(gym.Wrapper):
    """An llmsched env as RLlib's masked PPO takes it: flat action, mask in a ``Dict`` obs.

    A ``MultiDiscrete`` action is flattened (:class:`~llmsched_env.envs.FlattenAction`, whose
    mask is the joint one); ``Routing-v0``'s ``Discrete`` replica choice is taken as it is.

    Args:
        config: RLlib's ``env_config``: ``env_id`` (a registered id) and ``env_kwargs`` (the
            ``gym.make`` keyword arguments, plain values), and optionally
            ``end_when_settled`` (default true: end ``BatchScheduling-v0`` episodes once
            settled, where that applies).

    Raises:
        ValueError: If ``config`` has keys other than those, or no ``env_id``.
    """

    KEYS = ("env_id", "env_kwargs", "end_when_settled")

    def __init__(self, config: dict[str, Any]) -> None:
        config = dict(config)
        unknown = sorted(set(config) - set(self.KEYS))
        if unknown or "env_id" not in config:
            raise ValueError(
                f"env_config must have 'env_id' and may have {list(self.KEYS[1:])}, got keys "
                f"{sorted(config)}"
            )
        env = gym.make(config["env_id"], **dict(config.get("env_kwargs") or {}))
        if config.get("end_when_settled", True) and EndWhenSettled.applies_to(env):
            env = EndWhenSettled(env)
        # Routing-v0's action is one Discrete choice already, with an exact mask.
        discrete = isinstance(env.action_space, spaces.Discrete)
        super().__init__(env if discrete else FlattenAction(env))
        self._masks = env.get_wrapper_attr("action_masks") if discrete else self.env.action_masks
        n_actions = int(self.env.action_space.n)
        self.observation_space = spaces.Dict(
            {
                "observations": self.env.observation_space,
                "action_mask": spaces.Box(0.0, 1.0, shape=(n_actions,), dtype=np.float32),
            }
        )

    def _observation(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        mask = np.asarray(self._masks(), dtype=np.float32)
        return {"observations": obs, "action_mask": mask}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset the env; the observation carries the joint action mask."""
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observation(obs), scalar_info(info)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Step with a flat action; the observation carries the next joint action mask."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observation(obs), float(reward), terminated, truncated, scalar_info(info)


def scalar_info(info: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``info`` that are single numbers or booleans (what vector envs stack)."""
    return {k: v for k, v in info.items() if isinstance(v, numbers.Number | np.bool_ | np.number)}


def make_rllib_env(config: dict[str, Any]) -> RLlibEnv:
    """The env creator registered with Ray Tune (``config`` is RLlib's ``env_config``)."""
    return RLlibEnv(dict(config))


def require_rllib() -> Any:
    """Import ``ray`` with RLlib, or fail with the command that installs the extra.

    Raises:
        ImportError: If Ray RLlib is not installed.
    """
    try:
        import ray
        from ray.rllib.algorithms.ppo import PPOConfig  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"training with RLlib needs Ray RLlib, which is not installed ({error}); install "
            f"it with: {INSTALL_HINT}"
        ) from error
    return ray


@dataclass(frozen=True)
class RLlibSettings:
    """How :func:`train_rllib` trains: PPO with masks, sampling spread over env runners.

    Attributes:
        env_id: Registered env id.
        env_kwargs: ``gym.make`` keyword arguments (plain values).
        iterations: Training iterations (each samples ``train_batch_size`` env steps).
        num_env_runners: Sampling actors (0: sample in the driver process).
        num_envs_per_env_runner: Envs each runner steps as one vector env.
        train_batch_size: Env steps per iteration, over all runners.
        minibatch_size: SGD minibatch size.
        num_epochs: SGD passes over each batch.
        lr: Learning rate.
        gamma: Discount factor.
        hidden: Hidden layer sizes of the policy and value networks.
        seed: Seed of networks and env runners.
    """

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    iterations: int = 10
    num_env_runners: int = 2
    num_envs_per_env_runner: int = 2
    train_batch_size: int = 4000
    minibatch_size: int = 256
    num_epochs: int = 10
    lr: float = 3e-4
    gamma: float = 0.99
    hidden: tuple[int, ...] = (64, 64)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("iterations", "num_envs_per_env_runner", "train_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.num_env_runners < 0:
            raise ValueError(f"num_env_runners must be >= 0, got {self.num_env_runners!r}")
        if not 1 <= self.minibatch_size <= self.train_batch_size:
            raise ValueError(
                f"minibatch_size must be in [1, train_batch_size={self.train_batch_size}], got "
                f"{self.minibatch_size!r}"
            )


def ppo_config(settings: RLlibSettings) -> Any:
    """RLlib's ``PPOConfig`` for ``settings``, with the action-masking RLModule.

    Registers :func:`make_rllib_env` as :data:`RLLIB_ENV` in Ray Tune's registry first.
    """
    require_rllib()
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.examples.rl_modules.classes.action_masking_rlm import (
        ActionMaskingTorchRLModule,
    )
    from ray.tune.registry import register_env

    register_env(RLLIB_ENV, make_rllib_env)
    return (
        PPOConfig()
        .environment(
            env=RLLIB_ENV,
            env_config={"env_id": settings.env_id, "env_kwargs": dict(settings.env_kwargs)},
        )
        .env_runners(
            num_env_runners=settings.num_env_runners,
            num_envs_per_env_runner=settings.num_envs_per_env_runner,
        )
        .training(
            train_batch_size_per_learner=settings.train_batch_size,
            minibatch_size=settings.minibatch_size,
            num_epochs=settings.num_epochs,
            lr=settings.lr,
            gamma=settings.gamma,
        )
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=ActionMaskingTorchRLModule,
                model_config={
                    "fcnet_hiddens": list(settings.hidden),
                    "fcnet_activation": "tanh",
                    "head_fcnet_hiddens": [],
                },
            )
        )
        .debugging(seed=settings.seed)
    )


@dataclass(frozen=True)
class RLlibResult:
    """What :func:`train_rllib` returns.

    Attributes:
        checkpoint: Directory of the final algorithm checkpoint (``None`` if not saved).
        returns: Mean episode return of each iteration (NaN before the first episode ends).
        env_steps: Env steps sampled in total.
    """

    checkpoint: Path | None
    returns: list[float]
    env_steps: int


def train_rllib(
    settings: RLlibSettings, out: str | Path | None = None, log: Any = None
) -> RLlibResult:
    """Train masked PPO with RLlib on the Ray instance this process is connected to.

    Call ``ray.init()`` first to choose the cluster (``ray.init(address="auto")`` on a cluster
    node, ``ray.init(num_cpus=2)`` locally); without it, RLlib starts a local Ray instance.

    Args:
        settings: What to train and how.
        out: When given, a directory for the final checkpoint (``out/checkpoint``) and the
            settings (``out/rllib_settings.json``).
        log: Called with one line per iteration, when given.

    Returns:
        The :class:`RLlibResult`.
    """
    config = ppo_config(settings)
    algo = config.build_algo()
    returns: list[float] = []
    env_steps = 0
    try:
        for i in range(settings.iterations):
            result = algo.train()
            runners = result.get("env_runners", {})
            returns.append(float(runners.get("episode_return_mean", float("nan"))))
            env_steps = int(result.get("num_env_steps_sampled_lifetime", 0) or 0)
            if not env_steps:
                env_steps = int(runners.get("num_env_steps_sampled_lifetime", 0) or 0)
            if log is not None:
                log(
                    f"iteration {i + 1}/{settings.iterations}: mean episode return "
                    f"{returns[-1]:.1f}, {env_steps:,} env steps"
                )
        checkpoint = None
        if out is not None:
            out = Path(out)
            out.mkdir(parents=True, exist_ok=True)
            checkpoint = out / "checkpoint"
            algo.save_to_path(str(checkpoint.resolve()))
            settings_json = json.dumps(asdict(settings), indent=2)
            (out / "rllib_settings.json").write_text(settings_json + "\n", encoding="utf-8")
    finally:
        algo.stop()
    return RLlibResult(checkpoint, returns, env_steps)
