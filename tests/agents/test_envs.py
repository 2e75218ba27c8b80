"""Training environments: which wrappers each env gets."""

from __future__ import annotations

import pytest

from agents.envs import env_factory, make_training_env
from llmsched_env.envs.wrappers import EndWhenSettled, FlattenAction
from tests.agents.conftest import TINY_ENVS

BATCH = "llmsched/BatchScheduling-v0"
CONTINUOUS = "llmsched/ContinuousBatching-v0"


def wrapper_types(env) -> list[type]:
    """Types of the wrappers around ``env``'s core, outermost first."""
    types = []
    while env is not env.unwrapped:
        types.append(type(env))
        env = env.env
    return types


@pytest.mark.parametrize(
    ("env_id", "env_kwargs", "settles"),
    [
        (BATCH, TINY_ENVS["batch"], True),
        (BATCH, {**TINY_ENVS["batch"], "reward": "goodput-tokens"}, True),
        (BATCH, {**TINY_ENVS["batch"], "reward": "queue"}, False),
        (CONTINUOUS, TINY_ENVS["continuous"], False),
    ],
)
def test_episodes_end_when_settled_where_the_env_and_reward_allow_it(env_id, env_kwargs, settles):
    from stable_baselines3.common.monitor import Monitor

    env = env_factory(env_id, env_kwargs, flat_action=False, end_when_settled=True)()
    types = wrapper_types(env)
    assert types[0] is Monitor
    assert (EndWhenSettled in types) is settles
    plain = env_factory(env_id, env_kwargs, flat_action=False)()
    assert EndWhenSettled not in wrapper_types(plain)


def test_flat_action_wraps_outside_the_settled_end():
    env = env_factory(BATCH, TINY_ENVS["batch"], flat_action=True, end_when_settled=True)()
    types = wrapper_types(env)
    assert types.index(FlattenAction) < types.index(EndWhenSettled)


MIXTURE = {
    "components": [{"workload": "demo2"}, {"workload": "burstgpt-synthetic"}],
    "load": [0.8, 1.2],
    "arrival_cv": [1.0, 4.0],
}


@pytest.mark.parametrize(("reward", "settles"), [("sla", True), ("queue", False)])
def test_a_training_mixture_shares_the_run_kwargs_and_settles_inside(reward, settles):
    from stable_baselines3.common.monitor import Monitor

    from llmsched_env.envs.mixture import BatchMixtureEnv

    kwargs = {**TINY_ENVS["batch"], "reward": reward}
    env = env_factory(BATCH, kwargs, flat_action=False, end_when_settled=True, mixture=MIXTURE)()
    assert type(env) is Monitor and isinstance(env.unwrapped, BatchMixtureEnv)
    mixture = env.unwrapped
    assert mixture.component_names == ("demo2", "burstgpt-synthetic")
    # The run's kwargs other than workload and rate are every component's.
    assert all(c.config.n_requests == 40 and c.config.reward == reward for c in mixture.components)
    assert all(isinstance(s, EndWhenSettled) is settles for s in mixture._steppers)


@pytest.mark.parametrize("mixture", [None, MIXTURE], ids=["env", "mixture"])
def test_vectorised_training_env_steps_with_masks(mixture):
    venv = make_training_env(
        BATCH,
        TINY_ENVS["batch"],
        flat_action=False,
        end_when_settled=True,
        n_envs=2,
        first_seed=0,
        mixture=mixture,
    )
    venv.reset()
    masks = venv.env_method("action_masks")
    assert len(masks) == 2 and all(m.any() for m in masks)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_envs": 0}, r"n_envs must be an integer >= 1, got 0"),
        ({"n_envs": 2.0}, r"n_envs must be an integer >= 1, got 2.0"),
        ({"first_seed": "a"}, r"first_seed must be an integer >= 0, got 'a'"),
        ({"gamma": 5.0}, r"gamma must be a finite number in \[0(\.0)?, 1(\.0)?\], got 5.0"),
    ],
)
def test_bad_training_env_settings_are_named(kwargs, message):
    settings = {"flat_action": False, "n_envs": 2, "first_seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        make_training_env(BATCH, TINY_ENVS["batch"], **settings)


def test_a_subprocess_env_that_fails_at_reset_fails_here_with_its_message():
    """In the workers it printed their tracebacks and reached this process as an ``EOFError``."""
    kwargs = TINY_ENVS["batch"] | {"kv_memory": 64}
    with pytest.raises(ValueError, match="every one of its .* requests was rejected at arrival"):
        make_training_env(
            BATCH, kwargs, flat_action=False, n_envs=2, first_seed=0, vec_env="subproc"
        )
