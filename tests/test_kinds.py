"""The env-kind table: every caller's one source of kinds, ids, classes and parts."""

import gymnasium as gym
import pytest

import llmsched_env
from baselines import POLICY_TABLES, env_kind, policy_names
from llmsched_env.kinds import ENV_KINDS, get_kind, kind_of_env, kind_of_id, resolve_kind


@pytest.mark.parametrize("name", sorted(ENV_KINDS))
def test_every_kind_is_registered_and_complete(name):
    kind = ENV_KINDS[name]
    assert kind.env_id in llmsched_env.ENV_IDS
    env = gym.make(kind.env_id, workload="demo2", n_requests=20)
    assert kind_of_env(env) is kind and env_kind(env) == name
    assert isinstance(env.unwrapped, kind.env_class)
    assert env.unwrapped.config_class is kind.config_class
    assert kind_of_id(kind.env_id) is kind and resolve_kind(kind.env_id) is kind
    assert list(POLICY_TABLES[name]) == policy_names(name) and "random" in policy_names(name)
    if kind.hyperparams is None:  # no agent trains on it yet
        with pytest.raises(ValueError, match="has no training defaults"):
            kind.hyperparams_table()
    else:
        assert kind.hyperparams_table()  # training defaults exist


def test_unknown_kinds_and_ids_are_errors_not_a_fall_back():
    with pytest.raises(ValueError, match="unknown environment kind 'batc'.*Did you mean 'batch'"):
        get_kind("batc")
    with pytest.raises(ValueError, match="unknown env id 'llmsched/Disaggregated-v0'"):
        kind_of_id("llmsched/Disaggregated-v0")
    with pytest.raises(ValueError, match="expected one of"):
        resolve_kind("disaggregated")
    with pytest.raises(ValueError, match="unknown environment kind"):
        policy_names("disaggregated")
    with pytest.raises(TypeError, match="CartPoleEnv is not an environment of llmsched_env"):
        kind_of_env(gym.make("CartPole-v1"))


def test_training_and_scenarios_refuse_an_unknown_kind():
    from agents.scenarios import Scenario
    from agents.training import resolve_env_id

    with pytest.raises(ValueError, match="unknown environment kind or env id 'disaggregated'"):
        resolve_env_id("disaggregated")
    with pytest.raises(ValueError, match="unknown environment kind 'disaggregated'"):
        Scenario("disaggregated-default", "disaggregated")
