"""The agent policy adapter: the hand-over to a heuristic once an episode is settled."""

import gymnasium as gym
import numpy as np
import pytest

from agents.policy import SETTLED_POLICY, AgentPolicy, load_agent
from baselines import make_policy
from tests.agents.conftest import TINY_ENVS

BATCH = "llmsched/BatchScheduling-v0"
#: The tiny env, overloaded with a tight deadline so that late requests are left waiting.
OVERLOADED = {**TINY_ENVS["batch"], "arrival_rate": 100.0, "sla": 1.0}


def play(env: gym.Env, policy: AgentPolicy, seed: int) -> tuple[float, list[np.ndarray], int]:
    """Return, actions and the number of settled decisions of one episode."""
    reference = make_policy(SETTLED_POLICY, env)
    obs, info = env.reset(seed=seed)
    policy.reset()
    total, actions, n_settled = 0.0, [], 0
    while True:
        action = policy.act(obs, info)
        if policy.settled_policy is not None and env.unwrapped.is_settled():
            np.testing.assert_array_equal(action, reference.act(obs, info))
            n_settled += 1
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        if terminated or truncated:
            return total, actions, n_settled


def test_settled_decisions_go_to_the_heuristic_and_the_return_is_unchanged(tiny_run):
    agent = load_agent(tiny_run.run_dir, "final")
    env = gym.make(BATCH, **OVERLOADED)
    handing_over = AgentPolicy(env, agent)
    model_only = AgentPolicy(env, agent, settled_policy=None)
    n_settled = 0
    for seed in (10_000, 10_001, 10_002):
        with_heuristic, actions, settled = play(env, handing_over, seed)
        alone, model_actions, _ = play(env, model_only, seed)
        assert with_heuristic == alone
        # Identical up to the first settled decision.
        first = len(actions) - settled
        assert all(np.array_equal(a, b) for a, b in zip(actions[:first], model_actions[:first]))
        n_settled += settled
    assert n_settled > 0


def test_no_hand_over_where_episodes_do_not_settle(tiny_run):
    agent = load_agent(tiny_run.run_dir, "final")
    queue = gym.make(BATCH, **{**OVERLOADED, "reward": "queue"})
    assert AgentPolicy(queue, agent).settled_policy is None


def test_unknown_settled_policy_is_named(tiny_run):
    agent = load_agent(tiny_run.run_dir, "final")
    with pytest.raises(ValueError, match="settled_policy must be .*got 'fastest'"):
        AgentPolicy(gym.make(BATCH, **OVERLOADED), agent, settled_policy="fastest")


def test_predict_of_an_agent_given_a_wrappers_observation_says_so(tiny_run):
    """The model acts on the env's own observations: a stacked one is named, not fed to it."""
    agent = load_agent(tiny_run.run_dir, "final")
    env = gym.wrappers.FrameStackObservation(gym.make(BATCH, **OVERLOADED), 2)
    policy = AgentPolicy(env, agent)
    stacked, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match=r"acts on the env's own observations \(shape \(42,\)\)"):
        policy.predict(stacked)
    own = AgentPolicy(env.unwrapped, agent)  # built on the env itself, it acts
    assert own.predict(stacked[-1][None])[0].shape == (1, 2)
