"""Warm start by behaviour cloning: copy a baseline into the policy before reinforcement learning.

**Why.** On ``ContinuousBatching-v0`` a random valid policy scores far below every heuristic
(-301 against +219 for ``hybrid`` on the default scenario), and the return stays flat until a
policy serves most requests in time; PPO from a random network spent at least 100,000 steps
below -100 in each of five training seeds, and one seed in five went on to beat ``hybrid``
(``docs/results.md``). Cloning a heuristic first starts reinforcement learning where the
heuristic is, so the steps go to improving on it.

**How.** :func:`collect_demonstrations` runs the baseline on the training envs (their own seeds,
never the validation or evaluation ones) through the ``VecNormalize`` wrapper, so the
observation and return statistics are fitted on the states the cloned policy will visit first.
:func:`clone_into` then fits the actor-critic network by supervised learning (the masked
cross-entropy of the baseline's actions, as in Pomerleau's ALVINN and Ross et al.'s analysis
of behaviour cloning), its value head on the normalised discounted returns of the same
episodes, and subtracts an entropy bonus: without it the cloned policy puts all its
probability on the baseline's action and PPO, which explores by sampling its own policy, never
leaves it (measured: 200,000 PPO steps at exactly ``hybrid``'s validation return). With the
bonus the cloned policy still acts as the baseline when deterministic (the largest probability
is the baseline's action) and samples alternatives around it when training.

**Several baselines.** No single heuristic is best on every workload and load of a training
mixture (on ``batch-general``'s, ``multibin-wc-viable`` leads on most draws and ``spf`` in deep
overload). Given several baselines, each demonstration episode is first played by every one of
them on a copy of the training env (same arrivals, same random state); the one with the
highest return then demonstrates it, so the network clones the better heuristic of each
episode (docs/results.md, "A teacher chosen per episode"). With ``choose_every`` the choice is
made anew every so many decisions, from the state reached, by the same rollouts to the
episode's end: the rollout algorithm with several base heuristics (Bertsekas, Tsitsiklis and
Wu, "Rollout algorithms for combinatorial optimization", 1997), whose return on a copy that
holds the episode's future is never below the best of its heuristics played alone.

The settings live in the run's hyperparameters (``"imitation"``, see :class:`Imitation`), so a
run records how it was warm-started; ``llmsched train --imitate BASELINE`` sets them.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from llmsched_env import arguments

#: The baseline name that means "the baseline with the best validation return".
BEST = "best"

_OWNER = "imitation"


@dataclass(frozen=True)
class Imitation:
    """How to warm-start a run by behaviour cloning.

    Attributes:
        baseline: The baseline to clone: a name or setting of the env's baselines (such as
            ``"length-split(threshold_tokens=1024,long_replicas=2)"``, see
            :func:`baselines.make_policy`); ``"best"`` for the one with the best mean return
            on the run's validation seeds; or a sequence of two or more names or settings,
            whose best on each demonstration episode (or every ``choose_every`` decisions)
            demonstrates it (ties go to the first listed; see :func:`collect_demonstrations`).
        baseline_kwargs: Keyword arguments of the baseline, the structured form of a setting
            (merged over the setting's), e.g. ``{"threshold_tokens": 1024, "long_replicas":
            2}`` for ``length-split``; ``None`` for none. Only with one named baseline: not
            with ``"best"``, which compares the baselines' defaults, nor with several, which
            take theirs in their settings.
        steps: Demonstration steps, summed over the training envs.
        epochs: Passes of supervised learning over the demonstrations.
        entropy_coef: Weight of the entropy bonus (per decision, summed over the action's
            components); larger keeps the cloned policy more exploratory.
        value_coef: Weight of the value loss (the value head learns the baseline's returns).
        learning_rate: Adam's learning rate for the cloning.
        batch_size: Minibatch size of the cloning.
        choose_every: With several baselines, choose the demonstrator anew every this many
            decisions of an episode (each baseline's rollout to the episode's end, from the
            state reached, on copies of the env and of the baselines); ``None``: once, at the
            episode's start.
    """

    baseline: str | tuple[str, ...] = BEST
    baseline_kwargs: Mapping[str, Any] | None = None
    steps: int = 50_000
    epochs: int = 4
    entropy_coef: float = 0.6
    value_coef: float = 0.5
    learning_rate: float = 1e-3
    batch_size: int = 256
    choose_every: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.baseline, str):
            object.__setattr__(self, "baseline", self._check_candidates(self.baseline))
        elif not self.baseline:
            raise arguments.ArgumentTypeError(
                arguments.message(
                    _OWNER, "baseline", "a baseline name, 'best' or a list of names", ""
                )
            )
        kwargs = self.baseline_kwargs
        if kwargs is not None and isinstance(self.baseline, tuple):
            raise ValueError(
                f"imitation: baseline_kwargs {dict(kwargs)} need one named baseline, not "
                f"{list(self.baseline)}; give each its arguments in its setting, such as "
                "'length-split(threshold_tokens=1024)'"
            )
        if kwargs is not None:
            if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
                raise arguments.ArgumentTypeError(
                    arguments.message(
                        _OWNER,
                        "baseline_kwargs",
                        "null or a mapping of the baseline's keyword arguments",
                        kwargs,
                    )
                )
            if self.baseline == BEST:
                raise ValueError(
                    f"imitation: baseline_kwargs {dict(kwargs)} need a named baseline, not "
                    f"{BEST!r} (which picks among the baselines' defaults)"
                )
            object.__setattr__(self, "baseline_kwargs", dict(kwargs))
        arguments.integer(_OWNER, "steps", self.steps, minimum=1)
        arguments.integer(_OWNER, "epochs", self.epochs, minimum=1)
        arguments.real(_OWNER, "entropy_coef", self.entropy_coef, minimum=0.0)
        arguments.real(_OWNER, "value_coef", self.value_coef, minimum=0.0)
        arguments.real(_OWNER, "learning_rate", self.learning_rate, positive=True)
        arguments.integer(_OWNER, "batch_size", self.batch_size, minimum=1)
        if self.choose_every is not None:
            arguments.integer(_OWNER, "choose_every", self.choose_every, minimum=1)
            if not isinstance(self.baseline, tuple):
                raise ValueError(
                    f"imitation: choose_every={self.choose_every} chooses among several "
                    f"baselines, but baseline is one: {self.baseline!r}; give a list of names "
                    "or leave choose_every out"
                )

    @staticmethod
    def _check_candidates(value: Any) -> tuple[str, ...]:
        """The baselines to choose among: two or more distinct names, not ``"best"``."""
        names = arguments.sequence(_OWNER, "baseline", value, "a baseline name or a list of names")
        if (
            len(names) < 2
            or not all(isinstance(name, str) and name for name in names)
            or BEST in names
            or len(set(names)) < len(names)
        ):
            raise arguments.ArgumentTypeError(
                arguments.message(
                    _OWNER,
                    "baseline",
                    f"one name, or a list of two or more distinct baseline names (not {BEST!r})",
                    list(names),
                )
            )
        return tuple(names)

    @property
    def candidates(self) -> tuple[str, ...]:
        """The baselines that may demonstrate (one, unless a list was given)."""
        return self.baseline if isinstance(self.baseline, tuple) else (self.baseline,)

    def describe(self) -> str:
        """The baseline as logs and reports name it (``"best of a, b (each episode)"``)."""
        if not isinstance(self.baseline, tuple):
            return self.baseline
        when = (
            "each episode" if self.choose_every is None else f"every {self.choose_every} decisions"
        )
        return f"best of {', '.join(self.baseline)} ({when})"

    @classmethod
    def from_setting(
        cls, value: Any, defaults: Mapping[str, Any] | None = None
    ) -> Imitation | None:
        """Read an ``"imitation"`` hyperparameter.

        Args:
            value: ``None``, ``False`` or ``"none"`` (no warm start), a baseline name, a list
                of names (the best of them on each episode), or a mapping of this class's
                fields.
            defaults: Fields that a name or a mapping is merged over (a recipe's setting); a
                value that names the baseline drops the defaults' ``baseline_kwargs`` and
                ``choose_every`` unless it gives its own.

        Raises:
            ValueError: For an unknown field or a bad value (named in the message).
        """
        if value is None or value is False or value == "none":
            return None
        if isinstance(value, (list, tuple)) and "none" in value:
            raise ValueError(
                f"imitation {list(value)!r}: 'none' (no warm start) stands alone, not among the "
                "baselines to imitate"
            )
        if isinstance(value, (str, list, tuple)):
            value = {"baseline": value}
        if not isinstance(value, Mapping):
            raise arguments.ArgumentTypeError(
                arguments.message(
                    _OWNER,
                    "imitation",
                    "null, a baseline name, a list of names or a mapping of settings",
                    value,
                )
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"imitation: unknown settings {unknown}; expected some of {sorted(known)}"
            )
        merged = {**(defaults or {}), **value}
        if "baseline" in value:
            # A baseline named anew takes no inherited arguments, nor the recipe's way of
            # choosing among its baselines.
            for key in ("baseline_kwargs", "choose_every"):
                merged[key] = value.get(key)
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, as stored in the run's hyperparameters."""
        values = asdict(self)
        if isinstance(self.baseline, tuple):
            values["baseline"] = list(self.baseline)
        return values

    def check_baseline(self, kind: str, env: Any = None) -> None:
        """Check the baseline against the baselines of the env kind ``kind``.

        Args:
            kind: The env kind's name (``"batch"``, ``"continuous"``, ``"routing"``).
            env: An env of that kind: the baseline is also built on it with
                :attr:`baseline_kwargs`, so that a keyword it does not take or a value it
                refuses is reported before training.

        Raises:
            ValueError: For a name that is not one of ``kind``'s baselines (the message lists
                them), a keyword the baseline does not take, or a value it refuses.
        """
        from baselines import make_policy, parse_policy, policy_names

        if self.baseline == BEST:
            return
        for baseline in self.candidates:
            name, setting = parse_policy(baseline)
            arguments.one_of(_OWNER, "baseline", name, [BEST, *policy_names(kind)])
            if env is not None and (setting or self.baseline_kwargs):
                try:
                    make_policy(baseline, env, **(self.baseline_kwargs or {}))
                except (TypeError, ValueError) as error:
                    # The setting often comes from a scenario the user did not write.
                    raise type(error)(
                        f"imitation: the warm start's baseline {baseline!r} with "
                        f"{dict(self.baseline_kwargs or {})} (the run's imitation setting, or its "
                        f"scenario's) does not fit this env: {error}"
                    ) from None


@dataclass(frozen=True)
class Demonstrations:
    """A baseline's decisions on the training envs, step by step (leading axes: step, env).

    Attributes:
        observations: Raw (unnormalised) observations the baseline acted on.
        actions: Its actions, in the env's action space (``(steps, envs, components)``, or
            ``(steps, envs)`` for a ``Discrete`` action).
        action_masks: The env's action masks at each decision.
        rewards: Raw rewards that followed.
        dones: Whether the episode ended with that step.
        episodes: How many episodes each baseline began (the last ones cut at the last step).
        decisions: How many decisions each baseline made.
    """

    observations: np.ndarray
    actions: np.ndarray
    action_masks: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    episodes: Mapping[str, int] = field(default_factory=dict)
    decisions: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.rewards.size)


def collect_demonstrations(
    venv: Any,
    baseline: str | Sequence[str],
    steps: int,
    baseline_kwargs: Mapping[str, Any] | None = None,
    choose_every: int | None = None,
) -> Demonstrations:
    """Run ``baseline`` on every env of ``venv`` for ``steps`` steps in total.

    With several baselines, each episode of each env is first played to its end by every
    one of them on deep copies of that env (its workload and random state) and of the baseline,
    from the state the episode starts in; the baseline with the highest return then plays it
    for real (ties: the first listed). With ``choose_every``, the same choice is made again
    after every ``choose_every`` decisions, from the state reached; every baseline then acts on
    (and so observes) every step, the chosen one's action is carried out. The copies leave the
    training env and its ``VecNormalize`` statistics untouched.

    Args:
        venv: The training env: stable-baselines3's ``DummyVecEnv``, possibly inside
            ``VecNormalize`` (whose statistics are updated, as in training).
        baseline: A baseline name of the env's kind, or several.
        steps: Steps summed over the envs (rounded up to whole steps of every env).
        baseline_kwargs: Keyword arguments of the baseline (``None``: its defaults); one
            baseline only.
        choose_every: Decisions between two choices of the demonstrator (``None``: one per
            episode); several baselines only.

    Raises:
        ValueError: For an unknown baseline (the message lists them) or a vectorised env
            whose envs are not in this process (``SubprocVecEnv``).
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from baselines import make_policy

    inner = venv.venv if isinstance(venv, VecNormalize) else venv
    if not isinstance(inner, DummyVecEnv):
        raise ValueError(
            f"imitation needs the training envs in this process (vec_env='dummy'), got "
            f"{type(inner).__name__}"
        )
    names = (baseline,) if isinstance(baseline, str) else tuple(baseline)
    envs = [env.unwrapped for env in inner.envs]
    policies = {
        name: [make_policy(name, env, **(baseline_kwargs or {})) for env in envs] for name in names
    }
    episodes = dict.fromkeys(names, 0)
    decisions = dict.fromkeys(names, 0)
    demonstrator = [names[0]] * len(envs)
    since_choice = [0] * len(envs)

    def choose(i: int, observation: np.ndarray) -> None:
        """Give env ``i``'s next decisions to the baseline whose rollout returns most."""
        if len(names) > 1:
            returns = [_rollout_return(envs[i], policies[name][i], observation) for name in names]
            demonstrator[i] = names[int(np.argmax(returns))]
        since_choice[i] = 0

    def begin(i: int, observation: np.ndarray) -> None:
        """Start env ``i``'s episode that starts at ``observation``."""
        for name in names:
            policies[name][i].reset()
        choose(i, observation)
        episodes[demonstrator[i]] += 1

    def raw_observations() -> np.ndarray:
        return venv.get_original_obs() if isinstance(venv, VecNormalize) else obs

    obs = venv.reset()
    raw = raw_observations()
    for i in range(len(envs)):
        begin(i, raw[i])
    per_env = -(-int(steps) // len(envs))
    observations, actions, masks, rewards, dones = [], [], [], [], []
    for _ in range(per_env):
        chosen = []
        for i, env in enumerate(envs):
            acting = names if choose_every else (demonstrator[i],)
            proposed = {name: policies[name][i].act(raw[i], env.last_info) for name in acting}
            chosen.append(proposed[demonstrator[i]])
            decisions[demonstrator[i]] += 1
        observations.append(np.array(raw, copy=True))
        actions.append(np.stack([np.asarray(a) for a in chosen]))
        masks.append(np.stack([np.asarray(env.action_masks(), dtype=bool) for env in envs]))
        obs, reward, done, _ = venv.step(actions[-1])
        original = venv.get_original_reward() if isinstance(venv, VecNormalize) else reward
        rewards.append(np.array(original, dtype=np.float64, copy=True))
        dones.append(np.array(done, dtype=bool, copy=True))
        raw = raw_observations()  # the next step's (after the reset, for an ended episode)
        for i in range(len(envs)):
            if done[i]:
                begin(i, raw[i])
            elif choose_every:
                since_choice[i] += 1
                if since_choice[i] >= choose_every:
                    choose(i, raw[i])
    return Demonstrations(
        np.stack(observations),
        np.stack(actions),
        np.stack(masks),
        np.stack(rewards),
        np.stack(dones),
        episodes,
        decisions,
    )


def _rollout_return(env: Any, policy: Any, observation: np.ndarray) -> float:
    """The return ``policy`` would get from ``env``'s present state to its episode's end.

    Played on deep copies of the two (copied together, so that the copy of the policy reads
    the copy of the env); on a mixture only the episode's component and its instance of the
    policy are copied, a hundredth of the whole. A ``BatchScheduling-v0`` rollout stops once
    settled, with the rest of its return (``EndWhenSettled``: exact, in fewer steps).
    """
    from baselines.mixture import PerComponentPolicy
    from llmsched_env.envs.mixture import BatchMixtureEnv
    from llmsched_env.envs.wrappers import EndWhenSettled

    if isinstance(env, BatchMixtureEnv) and isinstance(policy, PerComponentPolicy):
        env, policy = env.active, policy.policies[env.active_index]
    trial, trial_policy = copy.deepcopy((env, policy))
    stepper = EndWhenSettled(trial) if EndWhenSettled.applies_to(trial) else trial
    obs, info, total = observation.copy(), trial.last_info, 0.0
    while True:
        obs, reward, terminated, truncated, info = stepper.step(trial_policy.act(obs, info))
        total += float(reward)
        if terminated or truncated:
            return total


def discounted_returns(rewards: np.ndarray, dones: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted return from every step to the end of its episode (``(steps, envs)``).

    Episodes still running at the last step are cut there (their tails count nothing after
    it), a small bias on the last ``1 / (1 - gamma)`` steps of each env.

    Example:
        >>> discounted_returns(np.array([[1.0], [1.0], [1.0]]), np.array([[0], [1], [0]]), 0.5)
        array([[1.5],
               [1. ],
               [1. ]])
    """
    returns = np.zeros_like(rewards, dtype=np.float64)
    following = np.zeros(rewards.shape[1:], dtype=np.float64)
    for step in range(len(rewards) - 1, -1, -1):
        following = rewards[step] + gamma * following * (1.0 - dones[step])
        returns[step] = following
    return returns


@dataclass(frozen=True)
class CloningReport:
    """How well the network learned the baseline.

    Attributes:
        baseline: The baseline cloned.
        steps: Demonstration steps.
        epochs: Passes over them.
        agreement: Fraction of demonstration decisions where the policy's deterministic action
            equals the baseline's.
        nll: Mean negative log-likelihood of the baseline's actions after the last epoch.
        entropy: Mean entropy of the policy on the demonstrations after the last epoch.
        value_loss: Mean squared error of the value head (normalised returns).
        episodes: Demonstration episodes begun per baseline (several when the best of
            several demonstrated).
        decisions: Demonstration decisions per baseline.
    """

    baseline: str
    steps: int
    epochs: int
    agreement: float
    nll: float
    entropy: float
    value_loss: float
    episodes: Mapping[str, int] = field(default_factory=dict)
    decisions: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (rounded), for the run's configuration."""
        values = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        values["episodes"] = dict(self.episodes)
        values["decisions"] = dict(self.decisions)
        return values


def clone_into(
    model: Any,
    venv: Any,
    demonstrations: Demonstrations,
    settings: Imitation,
    *,
    baseline: str,
    gamma: float,
    seed: int,
) -> CloningReport:
    """Fit ``model``'s actor-critic network to the demonstrations (in place).

    Observations are normalised and returns scaled with ``venv``'s ``VecNormalize`` statistics
    (when it has them), exactly as PPO will see them.

    Args:
        model: A stable-baselines3 actor-critic model (PPO, A2C, MaskablePPO).
        venv: The training env the demonstrations came from.
        demonstrations: What :func:`collect_demonstrations` returned.
        settings: Epochs, minibatch size, learning rate and loss weights.
        baseline: The name of the baseline cloned, or of the baselines (for the report).
        gamma: Discount of the value targets (the algorithm's).
        seed: Seed of the minibatch order.

    Raises:
        ValueError: If the model has no actor-critic policy (DQN).
    """
    import torch
    from stable_baselines3.common.vec_env import VecNormalize

    policy = model.policy
    if not hasattr(policy, "evaluate_actions"):
        raise ValueError(
            f"imitation needs an actor-critic algorithm (PPO, MaskablePPO, A2C); "
            f"{type(model).__name__} has no policy to clone into"
        )
    masked = "action_masks" in inspect.signature(policy.evaluate_actions).parameters
    demo = demonstrations
    returns = discounted_returns(demo.rewards, demo.dones, gamma)
    observations = demo.observations.reshape(-1, demo.observations.shape[-1])
    if isinstance(venv, VecNormalize):
        if venv.norm_obs:
            observations = venv.normalize_obs(observations)
        if venv.norm_reward:
            returns = returns / np.sqrt(venv.ret_rms.var + venv.epsilon)
    count = len(demo)
    x = torch.as_tensor(observations, dtype=torch.float32)
    # One row per decision: a number (Discrete) or the components (MultiDiscrete).
    actions = torch.as_tensor(demo.actions.reshape(count, *demo.actions.shape[2:]))
    masks = torch.as_tensor(demo.action_masks.reshape(count, -1))
    targets = torch.as_tensor(returns.reshape(-1), dtype=torch.float32)
    optimizer = torch.optim.Adam(policy.parameters(), lr=settings.learning_rate)
    order = np.random.default_rng(seed)
    policy.set_training_mode(True)
    for _ in range(settings.epochs):
        nll_sum = entropy_sum = value_sum = 0.0
        permutation = torch.as_tensor(order.permutation(count))
        for start in range(0, count, settings.batch_size):
            batch = permutation[start : start + settings.batch_size]
            extra = {"action_masks": masks[batch]} if masked else {}
            values, log_prob, entropy = policy.evaluate_actions(x[batch], actions[batch], **extra)
            nll = -log_prob.mean()
            entropy_mean = entropy.mean()
            value_loss = torch.nn.functional.mse_loss(values.flatten(), targets[batch])
            loss = nll + settings.value_coef * value_loss - settings.entropy_coef * entropy_mean
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            size = len(batch)
            nll_sum += nll.item() * size
            entropy_sum += entropy_mean.item() * size
            value_sum += value_loss.item() * size
    policy.set_training_mode(False)
    with torch.no_grad():
        extra = {"action_masks": masks.numpy()} if masked else {}
        predicted = policy.get_distribution(x, **extra).get_actions(deterministic=True)
    agree = (predicted.reshape(count, -1) == actions.reshape(count, -1)).all(dim=1)
    return CloningReport(
        baseline=baseline,
        steps=count,
        epochs=settings.epochs,
        agreement=float(agree.float().mean()),
        nll=nll_sum / count,
        entropy=entropy_sum / count,
        value_loss=value_sum / count,
        episodes=dict(demonstrations.episodes),
        decisions=dict(demonstrations.decisions),
    )
