"""Wrappers of the scheduling environments: EndWhenSettled."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import llmsched_env  # noqa: F401  (registers the env ids)
from baselines import make_policy
from llmsched_env.envs.wrappers import EndWhenSettled, FlattenAction

BATCH = "llmsched/BatchScheduling-v0"
#: Overloaded short episodes, so that most end with requests already late.
OVERLOADED = {"load": 1.5, "n_requests": 300}


def run_episode(env: gym.Env, policy_name: str, seed: int) -> tuple[float, int, list[dict]]:
    """Return, step count and infos of one episode of a baseline."""
    policy = make_policy(policy_name, env)
    obs, info = env.reset(seed=seed)
    total, infos = 0.0, []
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        total += float(reward)
        infos.append(info)
        if terminated or truncated:
            return total, len(infos), infos


@pytest.mark.parametrize(
    "env_kwargs",
    [
        OVERLOADED,
        {**OVERLOADED, "reward": "goodput-tokens"},
        {**OVERLOADED, "sla_penalty": 2.0, "n_gpus": 3},
    ],
)
def test_return_is_the_unwrapped_return_in_fewer_steps(env_kwargs):
    ended_early = 0
    for policy_name in ("random", "multibin-wc", "spf"):
        for seed in range(2):
            full, full_steps, _ = run_episode(gym.make(BATCH, **env_kwargs), policy_name, seed)
            wrapped = EndWhenSettled(gym.make(BATCH, **env_kwargs))
            settled, steps, infos = run_episode(wrapped, policy_name, seed)
            assert settled == pytest.approx(full, abs=1e-9)
            assert steps <= full_steps
            assert all("settled" not in info for info in infos[:-1])
            assert "episode_metrics" in infos[-1]  # every episode's last step has them
            if steps < full_steps:
                assert infos[-1]["settled"] is True
                metrics = infos[-1]["episode_metrics"]
                assert metrics["in_system"] > 0  # the late requests not yet served
                # Over as a natural end is: no deciding GPU, WAIT only, no further step.
                assert infos[-1]["gpu"] == -1
                assert infos[-1]["action_mask"][1 : wrapped.unwrapped.config.n_bins + 1].sum() == 0
                assert infos[-1]["action_mask"][0]
                with pytest.raises(RuntimeError, match="call reset"):
                    wrapped.step(np.array([0, 0]))
                ended_early += 1
    assert ended_early >= 2  # random scheduling always leaves late requests behind


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
def test_settled_end_is_a_termination_the_checkers_accept():
    env = EndWhenSettled(gym.make(BATCH, **OVERLOADED))
    gym_check_env(env, skip_render_check=True)
    sb3_env_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    sb3_env_checker.check_env(env, warn=True)


def test_masks_of_inner_wrappers_stay_reachable():
    env = EndWhenSettled(FlattenAction(gym.make(BATCH, **OVERLOADED)))
    env.reset(seed=0)
    mask = env.get_wrapper_attr("action_masks")()
    np.testing.assert_array_equal(mask, env.unwrapped.joint_action_mask().ravel())


def test_rejects_envs_and_rewards_that_do_not_settle():
    with pytest.raises(ValueError, match="reward='queue'"):
        EndWhenSettled(gym.make(BATCH, reward="queue", n_requests=20))
    with pytest.raises(TypeError, match="BatchScheduling-v0 env, got ContinuousBatchingEnv"):
        EndWhenSettled(gym.make("llmsched/ContinuousBatching-v0", n_requests=20))


def settled_flags(env: gym.Env, policy_name: str, seed: int) -> list[bool]:
    """``env.unwrapped.is_settled()`` after each step of one episode of a baseline."""
    policy = make_policy(policy_name, env)
    obs, info = env.reset(seed=seed)
    flags = []
    while True:
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        flags.append(env.unwrapped.is_settled())
        if terminated or truncated:
            return flags


@pytest.mark.parametrize("seed", [0, 1])
def test_is_settled_turns_true_where_the_wrapper_ends_and_stays_true(seed):
    flags = settled_flags(gym.make(BATCH, **OVERLOADED), "random", seed)
    _, steps, _ = run_episode(EndWhenSettled(gym.make(BATCH, **OVERLOADED)), "random", seed)
    first = flags.index(True)
    assert first + 1 == steps < len(flags)
    assert all(flags[first:])


def test_is_settled_is_never_true_under_a_reward_that_does_not_settle():
    assert not any(settled_flags(gym.make(BATCH, **OVERLOADED, reward="queue"), "random", 0))
    with pytest.raises(RuntimeError, match="reset"):
        gym.make(BATCH, **OVERLOADED).unwrapped.is_settled()


@pytest.mark.parametrize("action", [7.9, "7", True, [[1]], [1, 2], np.array([np.nan])])
def test_flatten_action_refuses_what_is_not_one_integer(action):
    env = FlattenAction(gym.make(BATCH, workload="demo2", arrival_rate=2.0, n_requests=20))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="must be one integer in"):
        env.step(action)
    env.step(7.0)  # a whole float is the integer, as the envs take it


def test_flatten_action_names_an_integer_beyond_int64_as_out_of_range():
    env = FlattenAction(gym.make(BATCH, n_requests=20))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=rf"action {2**70} is outside Discrete"):
        env.step(2**70)


def test_flatten_action_is_made_again_from_its_spec():
    env = FlattenAction(gym.make(BATCH, workload="demo2", arrival_rate=2.0, n_requests=20))
    again = gym.make(env.spec)
    assert isinstance(again, FlattenAction) and again.action_space == env.action_space
    gym_check_env(env)
