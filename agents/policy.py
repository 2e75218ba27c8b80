"""Trained agents as :class:`~baselines.base.Policy` objects, scored like every heuristic.

:class:`AgentPolicy` wraps a stable-baselines3 model: ``act(obs, info)`` normalises the
observation with the statistics saved with the model (``VecNormalize``, frozen) and returns
``model.predict(obs, action_masks=info["action_mask"], deterministic=True)`` in the env's own
action space. The evaluation harness (:func:`llmsched_env.evaluation.evaluate`) therefore runs an
agent through exactly the code path of a baseline: a plain ``gym.make`` env, the same seeds,
the same metrics.

**Without torch.** When a numpy export of the model (``model.npz`` beside ``model.zip``,
written by ``scripts/export_numpy_policy.py``, see :mod:`agents.numpy_policy`) is present and
matches the model's SHA-256, :func:`load_agent` runs the actor with numpy instead of loading
stable-baselines3: the shipped agents ship one, so ``llmsched compare --pretrained`` needs no
torch. Its actions equal the torch model's (tested at every step of full evaluation episodes).

**Settled episodes.** Once a ``BatchScheduling-v0`` episode is settled
(``env.unwrapped.is_settled()``: every request has arrived and every waiting one is late, so no
action can change the return), the policy hands its decisions to a heuristic,
:data:`SETTLED_POLICY` by default. Training episodes end at that point (``EndWhenSettled``), so
the model never learned those states; the hand-over leaves the return unchanged (exactly, by
construction) and serves the late requests as a work-conserving scheduler would, which is what
the latency and goodput metrics of the rest of the episode then measure.
``settled_policy=None`` lets the model act to the end.

:class:`AgentPolicyFactory` is the picklable ``env -> Policy`` callable that the harness takes;
it loads the model once per process.

Example (the shipped agent; a training run's directory works the same):
    >>> from agents.compare import pretrained_dir
    >>> from agents.policy import AgentPolicyFactory
    >>> from llmsched_env.evaluation import evaluate
    >>> agent = AgentPolicyFactory(str(pretrained_dir("batch-default")), name="agent")
    >>> episodes, summary = evaluate([agent, "edf"], "llmsched/BatchScheduling-v0",
    ...                              seeds=range(10_000, 10_002))
    >>> episodes[["policy", "seed", "return"]].values.tolist()
    [['agent', 10000, 626.0], ['agent', 10001, 812.0], ['edf', 10000, 268.0], ['edf', 10001, 56.0]]
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.algorithms import AlgoSpec, get_algo
from agents.extras import require_agents_extra
from agents.numpy_policy import NumpyPolicy, file_sha256, numpy_path
from agents.runs import ModelChoice, RunConfig, load_run_config, model_paths
from baselines.base import Policy

#: The heuristic that takes over once an episode is settled: work-conserving Multi-Bin serves
#: full batches of the bins in formation order and partial ones instead of idling.
SETTLED_POLICY = "multibin-wc"

#: Schedules are not needed to act; replacing them avoids unpickling training-only closures.
INFERENCE_CUSTOM_OBJECTS = {
    "learning_rate": 0.0,
    "lr_schedule": lambda _: 0.0,
    "clip_range": lambda _: 0.0,
    "exploration_schedule": lambda _: 0.0,
}


@dataclass(frozen=True)
class LoadedAgent:
    """A model ready to act.

    Attributes:
        model: The stable-baselines3 model, or its numpy export
            (:class:`~agents.numpy_policy.NumpyPolicy`, same ``predict`` for acting).
        normalizer: Frozen observation statistics, or ``None`` (no normalisation).
        algo: The algorithm's spec.
        config: The run configuration it was trained with.
    """

    model: Any
    normalizer: ObsNormalizer | None
    algo: AlgoSpec
    config: RunConfig

    @property
    def flat_action(self) -> bool:
        """Whether the model acts through ``FlattenAction`` (one ``Discrete`` action)."""
        return bool(self.config.hyperparams.get("flatten_action", self.algo.flat_action))


@dataclass(frozen=True)
class ObsNormalizer:
    """Frozen observation statistics of ``VecNormalize``, applied exactly as it does.

    Attributes:
        mean: Running mean of each observation entry.
        var: Running variance of each entry.
        clip: Normalised values are clipped to ``[-clip, clip]``.
        epsilon: Added to the variance before the square root.
    """

    mean: np.ndarray
    var: np.ndarray
    clip: float
    epsilon: float

    @classmethod
    def from_vecnormalize(cls, vec_normalize: Any) -> ObsNormalizer | None:
        """Copy the observation statistics of a ``VecNormalize`` (``None`` if it has none)."""
        if not vec_normalize.norm_obs:
            return None
        rms = vec_normalize.obs_rms
        return cls(
            np.array(rms.mean, dtype=np.float64),
            np.array(rms.var, dtype=np.float64),
            float(vec_normalize.clip_obs),
            float(vec_normalize.epsilon),
        )

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        """``clip((obs - mean) / sqrt(var + epsilon))`` as float32, like ``VecNormalize``."""
        scaled = (obs - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)


def load_normalizer(path: str | Path | None) -> ObsNormalizer | None:
    """Load the observation statistics saved by ``VecNormalize.save`` (``None``: no file)."""
    if path is None:
        return None
    require_agents_extra()
    with open(path, "rb") as handle:
        return ObsNormalizer.from_vecnormalize(pickle.load(handle))


def load_agent(run_dir: str | Path, which: ModelChoice = "best") -> LoadedAgent:
    """Load a run's model and observation statistics (cached per process and file version).

    Args:
        run_dir: A run directory written by :func:`agents.training.train` (or a pretrained
            agent's directory).
        which: ``"best"`` (validation-selected, the default), ``"final"`` or ``"averaged"``
            (:func:`agents.runs.model_paths`).

    Returns:
        The loaded agent.

    The model runs with numpy when a matching export (``.npz`` beside its ``.zip``) exists,
    with stable-baselines3 otherwise.

    Raises:
        ValueError: If the directory is not a run, holds no model, or its numpy export was
            made from another model (stale).
        agents.extras.AgentsExtraMissingError: If there is no numpy export and the ``agents``
            extra is not installed.
    """
    model_path, _ = model_paths(run_dir, which)
    stamp = os.stat(model_path).st_mtime_ns
    return _load_agent_cached(str(Path(run_dir).resolve()), which, stamp)


@lru_cache(maxsize=8)
def _load_agent_cached(run_dir: str, which: ModelChoice, stamp: int) -> LoadedAgent:
    config = load_run_config(run_dir)
    algo = get_algo(config.algo)
    model_path, stats_path = model_paths(run_dir, which)
    exported = numpy_path(model_path)
    if exported.is_file():
        model = NumpyPolicy.load(exported, expected_sha256=file_sha256(model_path))
        return LoadedAgent(model, _export_normalizer(model), algo, config)
    require_agents_extra()
    model = algo.load_class().load(
        model_path, device="cpu", custom_objects=INFERENCE_CUSTOM_OBJECTS
    )
    return LoadedAgent(model, load_normalizer(stats_path), algo, config)


def _export_normalizer(model: NumpyPolicy) -> ObsNormalizer | None:
    """The observation statistics stored in a numpy export (``None``: not normalised)."""
    if model.obs_mean is None or model.obs_var is None:
        return None
    return ObsNormalizer(model.obs_mean, model.obs_var, model.clip_obs, model.epsilon)


class AgentPolicy(Policy):
    """A trained model behind the :class:`~baselines.base.Policy` interface.

    Args:
        env: The env the policy acts in (a ``gym.make`` result or the bare env).
        agent: The loaded model and its statistics (:func:`load_agent`).
        name: Name in tables.
        settled_policy: Name of the ``BatchScheduling-v0`` baseline that acts once the episode
            is settled (see the module docstring), or ``None`` for the model throughout. It
            applies where ``EndWhenSettled`` does (a ``BatchScheduling-v0`` env with the
            ``"sla"`` or ``"goodput-tokens"`` reward) and is ignored elsewhere.

    Raises:
        ValueError: If the env's observation or action space differs from the model's (for
            example an agent trained on 2 GPUs evaluated on 8), or ``settled_policy`` is not a
            ``BatchScheduling-v0`` baseline.
    """

    name = "agent"
    reads_observation = True

    def __init__(
        self,
        env: gym.Env,
        agent: LoadedAgent,
        name: str = "agent",
        settled_policy: str | None = SETTLED_POLICY,
    ) -> None:
        super().__init__(env)
        self.agent = agent
        self.name = name
        self.settled_policy = _settled_policy(env, settled_policy)
        self.model = agent.model
        self.algo = agent.algo
        self.normalizer = agent.normalizer
        # A Discrete action (Routing-v0) is one component of n choices.
        action_space = self.env.action_space
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.nvec = (
            (int(action_space.n),) if self.discrete else tuple(int(n) for n in action_space.nvec)
        )
        expected_obs = self.model.observation_space.shape
        trained_on = agent.config.env_kwargs or "the env's defaults"
        if self.env.observation_space.shape != expected_obs:
            raise ValueError(
                f"agent {name!r} was trained on observations of shape {expected_obs}, but the env "
                f"has shape {self.env.observation_space.shape}: evaluate it on the env "
                f"configuration it was trained on ({trained_on})"
            )
        recorded = agent.config.obs_names
        now = [str(n) for n in self.env.obs_names]
        if recorded and list(recorded) != now:
            k = next(i for i, (a, b) in enumerate(zip([*recorded, None], [*now, None])) if a != b)
            shown = [recorded[k] if k < len(recorded) else None, now[k] if k < len(now) else None]
            raise ValueError(
                f"agent {name!r} was trained on a different observation layout than this env's "
                f"(entry {k} was {shown[0]!r}, is {shown[1]!r}): evaluate it on the env "
                f"configuration it was trained on ({trained_on}), or retrain it "
                "if that is the configuration (the installed version observes differently)"
            )
        space = self.model.action_space
        self.flat_action = agent.flat_action
        if self.flat_action or self.discrete:
            matches = isinstance(space, gym.spaces.Discrete) and int(space.n) == int(
                np.prod(self.nvec)
            )
        else:
            matches = tuple(int(n) for n in space.nvec) == self.nvec
        if not matches:
            raise ValueError(
                f"agent {name!r} has action space {space}, which does not match the env's "
                f"{self.env.action_space}"
            )

    @classmethod
    def from_run(
        cls,
        env: gym.Env,
        run_dir: str | Path,
        which: ModelChoice = "best",
        name: str = "agent",
        settled_policy: str | None = SETTLED_POLICY,
    ) -> AgentPolicy:
        """Build the policy from a run directory (the model is loaded once per process)."""
        return cls(env, load_agent(run_dir, which), name=name, settled_policy=settled_policy)

    def reset(self) -> None:
        """Reset the hand-over heuristic, if any."""
        if self.settled_policy is not None:
            self.settled_policy.reset()

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The model's deterministic action for ``obs``, masked by the env's masks.

        Once the episode is settled, the hand-over heuristic's action instead (if any).
        """
        if self.settled_policy is not None and self.env.is_settled():
            return self.settled_policy.act(obs, info)
        x = self.normalizer.normalize_obs(obs) if self.normalizer is not None else obs
        if self.discrete:
            mask = np.asarray(info["action_mask"], dtype=bool)
            if self.algo.name == "dqn":
                return np.int64(self._masked_q_argmax(x, mask))
            if self.algo.masked:
                action, _ = self.model.predict(x, action_masks=mask, deterministic=True)
            else:
                action, _ = self.model.predict(x, deterministic=True)
            return np.int64(action)
        if not self.flat_action:
            if self.algo.masked:
                action, _ = self.model.predict(
                    x, action_masks=info["action_mask"], deterministic=True
                )
            else:
                action, _ = self.model.predict(x, deterministic=True)
            return np.asarray(action, dtype=np.int64)
        mask = self.env.joint_action_mask().ravel()
        flat = self._masked_q_argmax(x, mask) if self.algo.name == "dqn" else None
        if flat is None:
            if self.algo.masked:
                flat, _ = self.model.predict(x, action_masks=mask, deterministic=True)
            else:
                flat, _ = self.model.predict(x, deterministic=True)
        return np.array(np.unravel_index(int(flat), self.nvec), dtype=np.int64)

    def _masked_q_argmax(self, x: np.ndarray, mask: np.ndarray) -> int:
        """DQN's greedy action among the allowed flat actions."""
        import torch

        obs_tensor, _ = self.model.policy.obs_to_tensor(x)
        with torch.no_grad():
            q = self.model.q_net(obs_tensor)[0].cpu().numpy()
        q = np.where(mask, q, -np.inf)
        return int(np.argmax(q))


def check_settled_policy(name: str | None) -> None:
    """Raise ``ValueError`` unless ``name`` is ``None`` or a ``BatchScheduling-v0`` baseline."""
    from baselines import policy_names

    known = policy_names("batch")
    if name is not None and name not in known:
        raise ValueError(
            f"settled_policy must be a BatchScheduling-v0 baseline {known} or None, got {name!r}"
        )


def _settled_policy(env: gym.Env, name: str | None) -> Policy | None:
    """The heuristic that acts once ``env``'s episode is settled (``None`` where none does)."""
    from baselines import make_policy
    from llmsched_env.envs import EndWhenSettled

    check_settled_policy(name)
    if name is None or not EndWhenSettled.applies_to(env):
        return None
    return make_policy(name, env)


@dataclass(frozen=True)
class AgentPolicyFactory:
    """A picklable ``env -> AgentPolicy`` callable for the evaluation harness.

    Attributes:
        run_dir: Run directory (or pretrained agent directory).
        which: ``"best"``, ``"final"`` or ``"averaged"`` model.
        name: Name of the policy in tables.
        torch_threads: Torch CPU threads set in the process that builds the policy (1 keeps
            parallel evaluation workers from oversubscribing the CPU; ``None`` leaves it).
        settled_policy: The heuristic that acts once an episode is settled, or ``None``
            (see :class:`AgentPolicy`).
    """

    run_dir: str
    which: ModelChoice = "best"
    name: str = "agent"
    torch_threads: int | None = 1
    settled_policy: str | None = SETTLED_POLICY

    def __post_init__(self) -> None:
        check_settled_policy(self.settled_policy)

    def __call__(self, env: gym.Env) -> AgentPolicy:
        """Build the policy for ``env``."""
        if self.torch_threads is not None and importlib.util.find_spec("torch") is not None:
            import torch

            torch.set_num_threads(self.torch_threads)
        return AgentPolicy.from_run(
            env, self.run_dir, self.which, self.name, settled_policy=self.settled_policy
        )
