"""The policy interface: SB3's ``predict`` runs a heuristic through SB3's own evaluation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

import llmsched_env  # noqa: F401 (registers the env ids)
from baselines import make_policy

#: Small, loaded configurations, so that episodes differ in return.
SMALL = {
    "llmsched/BatchScheduling-v0": {"load": 1.3, "n_requests": 100},
    "llmsched/ContinuousBatching-v0": {"load": 1.5, "n_requests": 60},
}
POLICY = {
    "llmsched/BatchScheduling-v0": "static-fifo",
    "llmsched/ContinuousBatching-v0": "prefill-first",
}


@pytest.mark.parametrize("env_id", list(SMALL))
def test_sb3_evaluate_policy_scores_a_heuristic_like_act_does(env_id):
    env = Monitor(gym.make(env_id, **SMALL[env_id]))
    env.reset(seed=5)  # evaluate_policy's reset then continues this generator
    policy = make_policy(POLICY[env_id], env)
    returns, _ = evaluate_policy(policy, env, n_eval_episodes=3, return_episode_rewards=True)
    expected_env = gym.make(env_id, **SMALL[env_id])
    expected_env.reset(seed=5)
    expected_policy = make_policy(POLICY[env_id], expected_env)  # reads its own env's queues
    expected = []
    for _ in range(3):
        obs, info = expected_env.reset()
        expected_policy.reset()
        total, done = 0.0, False
        while not done:
            action = expected_policy.act(obs, info)
            obs, reward, terminated, truncated, info = expected_env.step(action)
            total += reward
            done = terminated or truncated
        expected.append(total)
    assert returns == pytest.approx(expected)
    assert len(set(returns)) > 1  # three different episodes, not one repeated


def test_predict_keeps_the_batch_shape_and_refuses_larger_batches():
    env_id = "llmsched/BatchScheduling-v0"
    env = gym.make(env_id, **SMALL[env_id])
    policy = make_policy("multibin-wc", env)
    with pytest.raises(RuntimeError, match="reset"):
        policy.predict(np.zeros(env.observation_space.shape, dtype=np.float32))
    obs, info = env.reset(seed=0)
    action, state = policy.predict(obs)
    assert action.shape == (2,) and state is None
    assert np.array_equal(action, policy.act(obs, info))
    batched, _ = policy.predict(obs[None], episode_start=np.array([True]))
    assert batched.shape == (1, 2)
    with pytest.raises(ValueError, match="batch of 2"):
        policy.predict(np.stack([obs, obs]))
    with pytest.raises(ValueError, match=r"neither one observation .* nor a batch"):
        policy.predict(obs[:5])


def test_predict_reads_the_observations_of_the_env_it_was_given_wrapped_or_not():
    """A wrapper that stacks, extends or replaces the observation does not confuse predict."""
    env_id = "llmsched/BatchScheduling-v0"
    for wrap in (
        lambda env: gym.wrappers.FrameStackObservation(env, 4),
        lambda env: gym.wrappers.TimeAwareObservation(env),
        lambda env: gym.wrappers.TransformObservation(
            env,
            lambda queues: {"queues": queues, "step": np.zeros(1, dtype=np.float32)},
            gym.spaces.Dict(
                {
                    "queues": env.observation_space,
                    "step": gym.spaces.Box(0.0, 1.0, (1,), dtype=np.float32),
                }
            ),
        ),
    ):
        env = Monitor(wrap(gym.make(env_id, max_episode_steps=500, **SMALL[env_id])))
        policy = make_policy("multibin-wc", env)
        obs, info = env.reset(seed=0)
        action, _ = policy.predict(obs)
        assert np.array_equal(action, policy.act(obs, info))
        batch = {k: v[None] for k, v in obs.items()} if isinstance(obs, dict) else obs[None]
        assert policy.predict(batch)[0].shape == (1, 2)
        returns, _ = evaluate_policy(policy, env, n_eval_episodes=1)
        assert np.isfinite(returns)


def test_sb3_contrib_masked_evaluate_policy_scores_a_heuristic():
    masked = pytest.importorskip("sb3_contrib.common.maskable.evaluation")
    env_id = "llmsched/BatchScheduling-v0"
    env = Monitor(gym.make(env_id, **SMALL[env_id]))
    env.reset(seed=5)
    policy = make_policy(POLICY[env_id], env)
    plain, _ = evaluate_policy(policy, env, n_eval_episodes=2, return_episode_rewards=True)
    env.reset(seed=5)
    policy = make_policy(POLICY[env_id], env)
    with_masks, _ = masked.evaluate_policy(
        policy, env, n_eval_episodes=2, return_episode_rewards=True
    )
    assert with_masks == plain
