"""The per-episode reset options ``load`` and ``arrival_cv`` of the scheduling envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401  (registers the env ids)
from llmsched_env.envs.common import episode_arrival_rate

BATCH = "llmsched/BatchScheduling-v0"
CONTINUOUS = "llmsched/ContinuousBatching-v0"


def _rollout(env, seed, options=None, steps=400):
    """Observations, rewards and the reset info of an episode under a fixed action rule."""
    obs, info = env.reset(seed=seed, options=options)
    first_info = info
    observations, rewards = [obs], []
    for _ in range(steps):
        mask = env.unwrapped.action_masks()
        action = env.action_space.sample(mask=_component_masks(env, mask))
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards), first_info


def _component_masks(env, mask):
    """Split a concatenated MultiDiscrete mask into the per-component masks ``sample`` takes."""
    nvec = env.action_space.nvec
    bounds = np.cumsum([0, *nvec])
    return tuple(mask[a:b].astype(np.int8) for a, b in zip(bounds[:-1], bounds[1:]))


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        (BATCH, {"n_requests": 150}),
        (BATCH, {"n_requests": 150, "workload": "burstgpt-synthetic"}),
        (CONTINUOUS, {"n_requests": 40}),
    ],
)
def test_load_option_gives_the_episode_of_an_env_built_with_that_load(env_id, kwargs):
    built = gym.make(env_id, load=1.3, **kwargs)
    default = gym.make(env_id, **kwargs)
    built.action_space.seed(5)
    default.action_space.seed(5)
    obs_a, rew_a, info_a = _rollout(built, seed=11)
    obs_b, rew_b, info_b = _rollout(default, seed=11, options={"load": 1.3})
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    np.testing.assert_array_equal(
        built.unwrapped.server.workload.arrival_s, default.unwrapped.server.workload.arrival_s
    )
    assert info_a["arrival_rate_rps"] == info_b["arrival_rate_rps"]
    assert info_b["arrival_rate_rps"] != default.unwrapped.arrival_rate_rps
    # The option is for one episode: the next reset without it runs at the configured load.
    _, info = default.reset(seed=11)
    assert info["arrival_rate_rps"] == default.unwrapped.arrival_rate_rps


def test_load_option_moves_the_arrival_rate_feature():
    env = gym.make(BATCH, n_requests=2000)
    names = env.unwrapped.obs_names
    rate, arrived = names.index("arrival_rate"), names.index("arrived_fraction")

    def mean_rate_feature(load):
        observations, _, _ = _rollout(env, seed=3, options={"load": load}, steps=10_000)
        # Once the window of the last sla seconds is full, and before the arrivals stop.
        arriving = (observations[:, arrived] > 0.5) & (observations[:, arrived] < 0.95)
        return float(observations[arriving, rate].mean())

    env.action_space.seed(0)
    low = mean_rate_feature(0.6)
    env.action_space.seed(0)
    high = mean_rate_feature(1.5)
    assert 0.5 < low < 0.7 and 1.3 < high < 1.7  # load 0.6 and 1.5, measured


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
def test_arrival_cv_option_retimes_arrivals_and_keeps_lengths(env_id):
    env = gym.make(env_id, n_requests=300, workload="mooncake-conversation")
    env.reset(seed=4, options={"start": 50})
    plain = env.unwrapped.server.workload
    env.reset(seed=4, options={"start": 50, "arrival_cv": 4.0})
    bursty = env.unwrapped.server.workload
    np.testing.assert_array_equal(plain.prompt_tokens, bursty.prompt_tokens)
    np.testing.assert_array_equal(plain.output_tokens, bursty.output_tokens)
    np.testing.assert_array_equal(plain.predicted_output_tokens, bursty.predicted_output_tokens)
    assert len(bursty.prefix_block_hashes) == len(plain.prefix_block_hashes)
    for a, b in zip(bursty.prefix_block_hashes, plain.prefix_block_hashes):
        np.testing.assert_array_equal(a, b)
    gaps = np.diff(bursty.arrival_s)
    assert np.all(gaps >= 0)
    assert gaps.std() / gaps.mean() > 2.5  # cv 4 (a sample of 300 gaps)
    env.reset(seed=4, options={"start": 50, "arrival_cv": 4.0})
    np.testing.assert_array_equal(env.unwrapped.server.workload.arrival_s, bursty.arrival_s)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"load": 0}, r"options\['load'\] must be a finite number > 0, got 0"),
        ({"load": float("nan")}, r"options\['load'\]"),
        ({"load": True}, r"options\['load'\]"),
        ({"load": 10**400}, r"options\['load'\] must be .* got an integer of about 401 digits$"),
        ({"load": 10**5000}, r"options\['load'\] must be .* got an integer of about 5001 digits$"),
        (
            {"arrival_cv": 10**30},
            r"options\['arrival_cv'\] must be in \[0.001, 1000\] .*got 1e\+30",
        ),
        ({"arrival_cv": -1.0}, r"options\['arrival_cv'\] must be a finite number > 0"),
        ({"arrival_cv": 1e-160}, r"options\['arrival_cv'\] must be in \[0.001, 1000\]"),
        ({"load": 1e308}, r"options\['load'\]=1e\+308 is too large: the arrival rate becomes inf"),
        ({"load": 1e-14}, r"options\['load'\]=1e-14 is too low for n_requests=50"),
        ({"lod": 1.0}, r"unknown reset options \['lod'\]"),
    ],
)
def test_bad_reset_options_are_refused(options, message):
    env = gym.make(BATCH, n_requests=50)
    with pytest.raises(ValueError, match=message):
        env.reset(seed=0, options=options)


def test_workload_option_cannot_be_combined_with_load():
    env = gym.make(BATCH, n_requests=50)
    env.reset(seed=0)
    workload = env.unwrapped.server.workload
    with pytest.raises(ValueError, match=r"cannot be combined with \['load'\]"):
        env.reset(seed=0, options={"workload": workload, "load": 1.0})
    with pytest.raises(ValueError, match=r"cannot be combined with \['start'\]"):
        env.reset(seed=0, options={"workload": workload, "start": -5})


def test_episode_arrival_rate_without_load_is_the_configured_rate():
    assert episode_arrival_rate({}, 3.5, 2.0) == 3.5
    assert episode_arrival_rate({"load": 1.5}, 3.5, 2.0) == 3.0


def test_load_option_sets_the_routing_env_rate_too():
    env = gym.make("llmsched/Routing-v0", n_requests=30)
    _, info = env.reset(seed=0, options={"load": 0.7})
    assert info["arrival_rate_rps"] == 0.7 * env.unwrapped.capacity_rps
    _, info = env.reset(seed=0)
    assert info["arrival_rate_rps"] == env.unwrapped.arrival_rate_rps
