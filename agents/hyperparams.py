"""Default training hyperparameters per environment and algorithm (rl-zoo3 style).

:data:`BATCH_DEFAULTS`, :data:`CONTINUOUS_DEFAULTS` and :data:`ROUTING_DEFAULTS` (named by
their env kind's row in :data:`llmsched_env.kinds.ENV_KINDS`) are keyed by algorithm name; each
entry is a :class:`TrainingDefaults`: the number of parallel envs, whether observations and
rewards are normalised with ``VecNormalize``, and the keyword arguments of the algorithm's
constructor.
``policy_kwargs`` use plain values (``activation_fn`` is a name from :data:`ACTIVATIONS`), and
``learning_rate``, ``clip_range`` or ``clip_range_vf`` may be ``"lin_<value>"`` (rl-zoo3's
notation: decay linearly from ``value`` to 0 over the training session; a resumed session's
schedule is stable-baselines3's, measured over every step so far, so it starts at ``value``
times the share of the steps so far that the session adds and still ends at 0), so a run's
configuration stays JSON.
Command-line or API overrides are merged over these defaults by :func:`resolve_hyperparams`,
which rejects unknown keys.

Why these values (the measurements behind them, on the scenarios of :mod:`agents.scenarios`,
are in ``docs/results.md``):

* BatchScheduling-v0 episodes are short (25 to 80 decisions for 1,000 requests) and each
  decision moves tens of requests, so per-step rewards are large (tens) and noisy. Reward
  normalisation (``VecNormalize``) keeps the value loss well scaled; observations are already
  in fixed ranges but differ in scale by up to 16x, so they are normalised too (except for the
  generalist ``batch-general``, whose unseen workloads put entries far outside the running
  statistics of its training: ``agents.scenarios.GENERAL_NORMALIZE_OBS``).
* ``gamma = 0.99`` over a few dozen decisions weighs a whole episode, which matters because a
  batch started now delays every later decision of that GPU.
* ``end_when_settled``: under overload most decisions of a whole episode come after every
  request has arrived and every waiting one is past its deadline, when no action can change the
  return; ending training episodes there (``EndWhenSettled``, same return) removes those
  samples, so training spends its steps on decisions that can change the return.
* PPO: 16 envs x 128 steps per rollout (2,048 steps), minibatches of 512 (earlier 256: the
  update, not the env, is most of a training step, and half as many minibatches train about
  1.3x the steps per second), 10 epochs, a small entropy bonus (the 5 x 7 action has many
  near-equivalent choices early on) and a 64-64 tanh MLP: the observation has 42 numbers (44
  with 4 GPUs). The alternatives tried against this recipe
  (larger networks, the joint ``FlattenAction`` action, other ``gamma``, ``gae_lambda`` and
  learning-rate schedules) ended within noise of it or lower, so none is the default.
  Earlier runs took the same rollout from 4 envs x 512 steps: 16 envs step the network on
  batches four times larger, which trains about 1.5x the steps per second at the same rollout
  size (``benchmarks/bench_training.py``); ``DummyVecEnv`` stays, since ``SubprocVecEnv`` was
  4x slower on 2 cores.
* ContinuousBatching-v0 episodes are long (2,000 to 4,000 iterations), so rollouts are longer
  (16 envs x 256 steps, 4,096 steps; earlier 4 x 1,024) and ``gamma = 0.995``.
* ContinuousBatching-v0's MaskablePPO starts from a copy of the best heuristic
  (``imitation``, :mod:`agents.imitation`): behaviour cloning of the baseline with the best
  validation return, 50,000 demonstration steps, 4 epochs, with an entropy bonus of 0.6 so the
  copy keeps exploring. From a random network every training seed spent its first 100,000 steps
  far below every heuristic and one in five went on to beat ``hybrid``; cloned without the bonus
  the policy stayed at ``hybrid``'s return for 200,000 steps (``docs/results.md``).
* Routing-v0 steps once per request (an episode is ``n_requests`` steps) and pays a request's
  reward when it completes, typically tens of routing steps after the decision: 8 envs x 256
  steps per rollout and ``gamma = 0.99`` (a horizon of about 100 requests). Its action is
  already ``Discrete``, so DQN needs no ``FlattenAction``.
* A2C and DQN use the same networks with the usual SB3 defaults adapted to these step counts;
  they are provided for comparison and are not tuned as carefully as MaskablePPO.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from agents.algorithms import get_algo
from agents.averaging import WeightAveraging
from llmsched_env import arguments
from llmsched_env.kinds import kind_of_id
from llmsched_env.registry import resolve

#: Activation functions by the name used in ``policy_kwargs``.
ACTIVATIONS = ("tanh", "relu", "elu", "leaky_relu")


@dataclass(frozen=True)
class TrainingDefaults:
    """Default training settings of one algorithm on one environment.

    Attributes:
        n_envs: Parallel training environments.
        normalize_obs: Normalise observations with running statistics (``VecNormalize``).
        normalize_reward: Scale rewards by a running estimate of the return's std.
        flatten_action: Act through ``FlattenAction``: one ``Discrete`` action whose exact
            joint mask also removes duplicate batch sizes (required by DQN).
        end_when_settled: End training episodes through ``EndWhenSettled`` as soon as no
            action can change the rest of the return (where the env and its reward allow it:
            ``BatchScheduling-v0`` under the ``"sla"`` or ``"goodput-tokens"`` reward).
        algo_kwargs: Keyword arguments of the algorithm's constructor (plain values).
        imitation: Warm start by behaviour cloning before training (the fields of
            :class:`agents.imitation.Imitation`), or ``None`` to start from a random network.
        weight_averaging: Snapshots whose mean weights the run also saves (the fields of
            :class:`agents.averaging.WeightAveraging`), or ``None`` for none.
    """

    n_envs: int = 4
    normalize_obs: bool = True
    normalize_reward: bool = True
    flatten_action: bool = False
    end_when_settled: bool = False
    algo_kwargs: Mapping[str, Any] = field(default_factory=dict)
    imitation: Mapping[str, Any] | None = None
    weight_averaging: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "algo_kwargs", MappingProxyType(dict(self.algo_kwargs)))
        if self.imitation is not None:
            object.__setattr__(self, "imitation", MappingProxyType(dict(self.imitation)))


_NET = {"net_arch": [64, 64], "activation_fn": "tanh"}


def _recipes(
    *,
    n_envs: int,
    n_steps: int,
    a2c_steps: int,
    gamma: float,
    dqn_target_update: int,
    ppo_batch_size: int = 256,
    end_when_settled: bool = False,
    dqn_flatten: bool = True,
    imitation: Mapping[str, Any] | None = None,
) -> dict[str, TrainingDefaults]:
    """One env's defaults for every algorithm.

    The settings that differ between envs are arguments; the rest (10 epochs, a small entropy
    bonus, the 64-64 MLP, DQN's replay and exploration) are shared.
    ``imitation`` warm-starts MaskablePPO only (the tuned recipe).
    """
    ppo_kwargs = {
        "learning_rate": 3e-4,
        "n_steps": n_steps,
        "batch_size": ppo_batch_size,
        "n_epochs": 10,
        "gamma": gamma,
        "gae_lambda": 0.95,
    }
    return {
        "maskable-ppo": TrainingDefaults(
            n_envs=n_envs,
            end_when_settled=end_when_settled,
            imitation=imitation,
            algo_kwargs={**ppo_kwargs, "clip_range": 0.2, "ent_coef": 0.01, "policy_kwargs": _NET},
        ),
        "ppo": TrainingDefaults(
            n_envs=n_envs,
            end_when_settled=end_when_settled,
            algo_kwargs={**ppo_kwargs, "ent_coef": 0.01, "policy_kwargs": _NET},
        ),
        "a2c": TrainingDefaults(
            end_when_settled=end_when_settled,
            algo_kwargs={
                "learning_rate": 7e-4,
                "n_steps": a2c_steps,
                "gamma": gamma,
                "gae_lambda": 0.95,
                "ent_coef": 0.01,
                "policy_kwargs": _NET,
            },
        ),
        "dqn": TrainingDefaults(
            n_envs=1,
            end_when_settled=end_when_settled,
            flatten_action=dqn_flatten,
            algo_kwargs={
                "learning_rate": 1e-4,
                "buffer_size": 100_000,
                "learning_starts": 5_000,
                "batch_size": 64,
                "gamma": gamma,
                "train_freq": 4,
                "target_update_interval": dqn_target_update,
                "exploration_fraction": 0.2,
                "exploration_final_eps": 0.02,
                "policy_kwargs": {"net_arch": [64, 64], "activation_fn": "relu"},
            },
        ),
    }


#: BatchScheduling-v0: PPO minibatches of 512 (1.3x the training steps/s of 256 at the same
#: returns, docs/results.md).
BATCH_DEFAULTS = _recipes(
    n_envs=16,
    n_steps=128,
    a2c_steps=16,
    gamma=0.99,
    dqn_target_update=2_000,
    ppo_batch_size=512,
    end_when_settled=True,
)
CONTINUOUS_DEFAULTS = _recipes(
    n_envs=16,
    n_steps=256,
    a2c_steps=32,
    gamma=0.995,
    dqn_target_update=5_000,
    imitation={"baseline": "best"},
)
#: Routing-v0: one step per request, already a ``Discrete`` action (no ``FlattenAction``).
ROUTING_DEFAULTS = _recipes(
    n_envs=8, n_steps=256, a2c_steps=32, gamma=0.99, dqn_target_update=2_000, dqn_flatten=False
)

#: Algorithm arguments that may be a linear schedule, written ``"lin_<start value>"``.
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")

#: Keys of an override that set :class:`TrainingDefaults` fields rather than algorithm kwargs.
SETTINGS_KEYS = (
    "n_envs",
    "normalize_obs",
    "normalize_reward",
    "flatten_action",
    "end_when_settled",
    "imitation",
    "weight_averaging",
)


def default_hyperparams(env_id: str, algo: str) -> TrainingDefaults:
    """The defaults of ``algo`` on ``env_id``.

    Raises:
        ValueError: For an env id or algorithm without defaults (the message lists them).
    """
    return resolve("algorithm", algo, kind_of_id(env_id).hyperparams_table())


#: Ranges of the algorithms' numeric keyword arguments that are checked before training (the
#: algorithms check few of them themselves: a batch size of 0 never ends, ``n_steps`` 0
#: divides by zero, a ``gamma`` of 5 trains on): integer ones by their minimum, real ones as
#: ``(minimum, maximum, positive)``.
_INTEGER_MINIMUMS: dict[str, int] = {
    "n_steps": 1,
    "batch_size": 1,
    "n_epochs": 1,
    "buffer_size": 1,
    "learning_starts": 0,
    "target_update_interval": 1,
}
#: Keywords whose null means "off" (no KL limit, no value clipping).
_NONE_ALLOWED = {"target_kl", "clip_range_vf"}
_REAL_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "target_kl": (None, None, True),
    "gamma": (0.0, 1.0, False),
    "gae_lambda": (0.0, 1.0, False),
    "ent_coef": (0.0, None, False),
    "vf_coef": (0.0, None, False),
    "max_grad_norm": (None, None, True),
    "tau": (0.0, 1.0, False),
    "exploration_fraction": (0.0, 1.0, False),
    "exploration_initial_eps": (0.0, 1.0, False),
    "exploration_final_eps": (0.0, 1.0, False),
}


def _checked_algo_value(key: str, value: Any, default: Any) -> Any:
    """``value`` of the algorithm keyword ``key`` (whose default is ``default``), checked.

    Ranges are checked where they are known; a keyword whose default is a boolean takes only
    booleans (``"no"`` would count as true); classes cannot be named in JSON settings.

    Raises:
        ValueError: Naming the hyperparameter, for a value of the wrong type or range.
    """
    if value is None and key in _NONE_ALLOWED:
        return None
    if key == "train_freq":  # stable-baselines3's (n, "episode") form is a tuple, not JSON
        return arguments.integer(
            "hyperparameter", key, value, minimum=1, reason="steps between updates"
        )
    if key in _INTEGER_MINIMUMS:
        return arguments.integer("hyperparameter", key, value, minimum=_INTEGER_MINIMUMS[key])
    if key in _REAL_RANGES:
        low, high, positive = _REAL_RANGES[key]
        return arguments.real(
            "hyperparameter", key, value, minimum=low, maximum=high, positive=positive
        )
    if key in SCHEDULE_KEYS:
        if isinstance(value, str):
            parse_schedule(key, value)
            return value
        return arguments.real("hyperparameter", key, value, positive=True)
    return _checked_plain_value(key, value, default)


def _checked_plain_value(key: str, value: Any, default: Any) -> Any:
    """``value`` of a keyword without a known range: a boolean's type, no class by name."""
    if isinstance(default, bool):
        return arguments.boolean("hyperparameter", key, value)
    if key.endswith("_class"):
        raise ValueError(
            f"hyperparameter {key!r} is a class, which JSON settings cannot name; leave it "
            f"to its default, got {value!r}"
        )
    if key.endswith("_kwargs") and value is not None and not isinstance(value, Mapping):
        raise ValueError(f"hyperparameter {key!r} must be a mapping or null, got {value!r}")
    return value


def _checked_policy_kwargs(algo: str, value: Any) -> dict[str, Any]:
    """``policy_kwargs`` checked against the algorithm's policy constructor.

    Raises:
        ValueError: For a key the policy does not take (the message lists them), or a bad
            value (``net_arch``, ``activation_fn``, a boolean, a class).
    """
    import inspect

    if not isinstance(value, Mapping):
        raise ValueError(f"policy_kwargs must be a mapping, got {value!r}")
    policy = get_algo(algo).load_class().policy_aliases["MlpPolicy"]
    parameters = inspect.signature(policy.__init__).parameters
    allowed = set(parameters) - {"self", "observation_space", "action_space", "lr_schedule"}
    checked: dict[str, Any] = {}
    for key, item in value.items():
        if key not in allowed:
            raise ValueError(
                f"unknown policy_kwargs key {key!r} for algo {algo!r}; expected one of "
                f"{sorted(allowed)}"
            )
        if key == "net_arch":
            _check_net_arch(item)
        elif key == "activation_fn" and item not in ACTIVATIONS:
            raise ValueError(
                f"policy_kwargs.activation_fn must be one of {list(ACTIVATIONS)}, got {item!r}"
            )
        elif key != "activation_fn":
            item = _checked_plain_value(f"policy_kwargs.{key}", item, parameters[key].default)
        checked[key] = item
    return checked


def _check_net_arch(net_arch: Any) -> None:
    """Refuse a ``policy_kwargs.net_arch`` that is not layer widths (a list, or per head).

    Raises:
        ValueError: Naming ``net_arch`` and its form.
    """
    heads = net_arch.values() if isinstance(net_arch, Mapping) else [net_arch]
    for widths in heads:
        if not isinstance(widths, list | tuple) or not all(
            isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths
        ):
            raise ValueError(
                "policy_kwargs.net_arch must be a list of layer widths (integers >= 1) or a "
                f"mapping of such lists per head (such as {{'pi': [64], 'vf': [64]}}), got "
                f"{net_arch!r}"
            )


def resolve_hyperparams(
    env_id: str,
    algo: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge ``overrides`` over the defaults into one flat, JSON-ready dict.

    The result holds ``n_envs``, ``normalize_obs``, ``normalize_reward``, ``flatten_action``,
    ``end_when_settled``, ``algo_kwargs``, ``imitation`` (all fields of
    :class:`agents.imitation.Imitation`, or ``None``) and ``weight_averaging`` (``{"start",
    "every"}`` of :class:`agents.averaging.WeightAveraging`, or ``None``). An override key is
    either one of :data:`SETTINGS_KEYS` or an algorithm keyword argument; ``policy_kwargs``
    overrides are merged key by key, and ``imitation`` fields over the imitation set so far.

    Args:
        env_id: Registered env id.
        algo: Algorithm name (see :data:`agents.algorithms.ALGOS`).
        overrides: Values replacing the defaults (and ``base``).
        base: Values applied before ``overrides``, in the same form: a scenario's own
            settings (:attr:`agents.scenarios.Scenario.hyperparams`).

    Returns:
        The resolved settings.

    Raises:
        ValueError: For an unknown key (the message lists the allowed ones) or a bad value of a
            settings key.

    Example:
        >>> h = resolve_hyperparams("llmsched/BatchScheduling-v0", "maskable-ppo",
        ...                         {"learning_rate": 1e-4, "n_envs": 2})
        >>> h["n_envs"], h["algo_kwargs"]["learning_rate"], h["algo_kwargs"]["n_steps"]
        (2, 0.0001, 128)
    """
    defaults = default_hyperparams(env_id, algo)
    result: dict[str, Any] = {
        "n_envs": defaults.n_envs,
        "normalize_obs": defaults.normalize_obs,
        "normalize_reward": defaults.normalize_reward,
        "flatten_action": defaults.flatten_action,
        "end_when_settled": defaults.end_when_settled,
        "algo_kwargs": {k: _copy(v) for k, v in defaults.algo_kwargs.items()},
        "imitation": _imitation(None, defaults.imitation),
        "weight_averaging": _weight_averaging(defaults.weight_averaging),
    }
    defaults_of_algo = algo_kwarg_defaults(algo)
    allowed = set(SETTINGS_KEYS) | set(defaults_of_algo)
    layered = [*(base or {}).items(), *(overrides or {}).items()]
    for key, value in layered:
        if key not in allowed:
            raise ValueError(
                f"unknown hyperparameter {key!r} for algo {algo!r}; expected one of "
                f"{sorted(allowed)}"
            )
        if key == "n_envs":
            result[key] = arguments.integer("", key, value, minimum=1)
        elif key == "imitation":
            result[key] = _imitation(result["imitation"], value)
        elif key == "weight_averaging":
            result[key] = _weight_averaging(value)
        elif key in SETTINGS_KEYS:
            result[key] = arguments.boolean("", key, value)
        elif key == "policy_kwargs":
            merged = dict(result["algo_kwargs"].get("policy_kwargs", {}))
            merged.update(_checked_policy_kwargs(algo, value))
            result["algo_kwargs"]["policy_kwargs"] = merged
        else:
            result["algo_kwargs"][key] = _checked_algo_value(key, value, defaults_of_algo[key])
    if kind_of_id(env_id).discrete_action:
        if result["flatten_action"]:
            raise ValueError(
                f"flatten_action must be false on {env_id}, whose action is already Discrete"
            )
    elif get_algo(algo).flat_action and not result["flatten_action"]:
        raise ValueError(
            f"flatten_action must be true for algo {algo!r}, which needs a Discrete action"
        )
    if result["imitation"] is not None and (
        result["flatten_action"] or not get_algo(algo).on_policy
    ):
        raise ValueError(
            f"imitation (a warm start by behaviour cloning) needs an actor-critic algorithm "
            f"acting in the env's own action space, got algo {algo!r} with flatten_action="
            f"{result['flatten_action']}; set imitation to null"
        )
    n_steps = result["algo_kwargs"].get("n_steps")
    if n_steps is not None and n_steps * result["n_envs"] < 2:
        raise ValueError(
            f"n_steps * n_envs must be at least 2 (a rollout of one step has no spread to "
            f"normalise advantages by), got n_steps={n_steps} with n_envs={result['n_envs']}"
        )
    return result


#: Keyword arguments the runner sets itself; overriding them is an error.
_RESERVED = {"policy", "env", "seed", "device", "verbose", "tensorboard_log", "_init_setup_model"}


def algo_kwarg_defaults(algo: str) -> dict[str, Any]:
    """The constructor keyword arguments of an algorithm a user may set, with their defaults.

    Read from the constructor's signature when the ``agents`` extra is installed, so every
    documented argument of the installed stable-baselines3 version is accepted
    (``inspect.Parameter.empty``: no default).
    """
    import inspect

    cls = get_algo(algo).load_class()
    parameters = inspect.signature(cls.__init__).parameters
    skipped = {"self", "args", "kwargs", *_RESERVED}
    return {name: p.default for name, p in parameters.items() if name not in skipped}


def parse_schedule(key: str, value: str) -> float:
    """The start value of a ``"lin_<value>"`` schedule.

    Raises:
        ValueError: If ``value`` is not ``"lin_"`` followed by a positive number.

    Example:
        >>> parse_schedule("learning_rate", "lin_3e-4")
        0.0003
    """
    number = value.removeprefix("lin_") if value.startswith("lin_") else None
    try:
        start = float(number) if number is not None else -1.0
    except ValueError:
        start = -1.0
    if not (start > 0 and math.isfinite(start)):
        raise ValueError(
            f"{key} must be a positive number or 'lin_<positive number>' (linear decay to 0), "
            f"got {value!r}"
        )
    return start


def _imitation(default: Mapping[str, Any] | None, override: Any) -> dict[str, Any] | None:
    """The resolved ``imitation`` setting: all fields, or ``None`` for no warm start.

    ``override`` is read by :meth:`agents.imitation.Imitation.from_setting`, over the
    ``default`` fields.
    """
    from agents.imitation import Imitation

    settings = Imitation.from_setting(override, defaults=default)
    return None if settings is None else settings.to_dict()


def _weight_averaging(setting: Any) -> dict[str, int] | None:
    """The resolved ``weight_averaging`` setting (checked), or ``None``."""
    schedule = WeightAveraging.from_setting(setting)
    return None if schedule is None else schedule.as_setting()


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value
