"""A batch heuristic over a mixture of workloads acts as it does on each component."""

from __future__ import annotations

import numpy as np
import pytest

from baselines import make_policy
from baselines.mixture import PerComponentPolicy
from llmsched_env.envs.batch_env import BatchSchedulingEnv
from llmsched_env.envs.mixture import BatchMixtureEnv


def _mixture() -> BatchMixtureEnv:
    return BatchMixtureEnv(
        [{"workload": "demo2"}, {"workload": "demo3"}, {"workload": "azure-conv"}],
        n_requests=40,
    )


@pytest.mark.parametrize("name", ["multibin-wc-viable", "sla-dynamic", "edf"])
def test_each_episode_is_decided_by_its_components_own_heuristic(name):
    env = _mixture()
    policy = make_policy(name, env)
    assert isinstance(policy, PerComponentPolicy) and policy.name == name
    # The same heuristic built directly on each component, driven in lockstep.
    twins = [make_policy(name, component) for component in env.components]
    seen = set()
    obs, info = env.reset(seed=3)
    for _ in range(9):
        policy.reset()
        twin = twins[env.active_index]
        twin.reset()
        seen.add(env.active_index)
        done = False
        while not done:
            action = policy.act(obs, info)
            np.testing.assert_array_equal(action, twin.act(obs, info))
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        obs, info = env.reset()
    assert len(seen) >= 2  # the episodes went to more than one component


def test_refuses_an_env_that_is_not_a_mixture():
    env = BatchSchedulingEnv(workload="demo2", n_requests=10)
    with pytest.raises(TypeError, match="needs a BatchMixtureEnv, got BatchSchedulingEnv"):
        PerComponentPolicy(env, lambda component: make_policy("edf", component))


def test_the_active_component_is_unknown_before_reset():
    with pytest.raises(RuntimeError, match="call reset"):
        _ = _mixture().active_index
