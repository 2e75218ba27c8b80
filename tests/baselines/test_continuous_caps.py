"""Iteration-level baselines choose prompt caps by value: the levels offered do not matter."""

import warnings

import gymnasium as gym
import numpy as np
import pytest

from baselines import make_policy
from baselines.continuous import POLICIES

ENV_ID = "llmsched/ContinuousBatching-v0"
SMALL = {"workload": "demo2", "latency": "demo2", "arrival_rate": 8.0, "n_requests": 30}
DETERMINISTIC = sorted(set(POLICIES) - {"random"})


def episode(policy_name, **kwargs):
    env = gym.make(ENV_ID, **SMALL, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # run-to-completion's overlap warning
        policy = make_policy(policy_name, env)
        obs, info = env.reset(seed=4)
        policy.reset()
        rewards = []
        while True:
            obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
            assert not info["invalid_action"]
            rewards.append(reward)
            if terminated or truncated:
                break
    return env.unwrapped.request_records(), rewards, env.unwrapped


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_a_cap_of_zero_changes_no_baseline_episode(name):
    """The default levels (with 0) and the levels without 0, reordered, give the same episode."""
    default, default_rewards, env = episode(name)
    assert env.prompt_caps[0] == 0
    other, other_rewards, _ = episode(name, prompt_caps=(None, 16, 8, 4, 2, 1))
    assert default.equals(other)
    np.testing.assert_array_equal(default_rewards, other_rewards)


def test_cap_levels_are_found_by_value():
    env = gym.make(ENV_ID, **SMALL, prompt_caps=(4, 0, None, 1))
    rtc = make_policy("run-to-completion", env)
    assert rtc.cap_level(0) == 1 and rtc.cap_level(1) == 3 and rtc.uncapped == 2
    assert rtc.prompt_caps == (4, 0, env.unwrapped.config.max_sequences, 1)
    with pytest.raises(ValueError, match=r"None = no cap, shown as max_sequences; 0 = admit"):
        rtc.cap_level(2)
