"""Every baseline builds and runs an episode in unusual but valid environments."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from baselines import make_policy, policy_names
from baselines.batch.fifo import StaticFIFO
from baselines.registry import env_kind

BATCH_CONFIGS = [
    {"max_batch_size": 1},
    {"max_batch_size": 3, "n_bins": 1},
    {"max_batch_size": 5, "n_gpus": 3, "n_bins": 2, "dispatch_order": "oldest-in-time"},
]
CONTINUOUS_CONFIGS = [
    {"decode_levels": 2, "prefill_levels": 2, "prompt_caps": (None,), "max_sequences": 1},
    {"prompt_caps": (0, 1), "max_tokens": 128, "chunk_size": 32},
    {"max_tokens": 64, "chunk_size": None, "n_gpus": np.int64(2), "prompt_caps": [3]},
    {"kv_allocation": "paged", "kv_block_tokens": 1, "max_tokens": 100, "chunk_size": 7},
]


def _run(env_id: str, policy: str, kwargs: dict) -> None:
    env = gym.make(env_id, n_requests=25, workload="demo2", max_steps=400, **kwargs)
    caps = env.unwrapped.prompt_caps if "Continuous" in env_id else ()
    if (
        policy == "run-to-completion"
        and 1 not in caps
        or (policy.startswith("prefill-k") and int(policy[len("prefill-k") :]) not in caps)
    ):
        # These policies are defined by a prompt cap: without it they refuse, naming the fix.
        with pytest.raises(ValueError, match=r"is not one of the env's prompt_caps levels"):
            make_policy(policy, env)
        return
    agent = make_policy(policy, env)
    obs, info = env.reset(seed=3)
    agent.reset()
    for _ in range(400):
        obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
        assert np.isfinite(reward)
        if terminated or truncated:
            break
    assert terminated or truncated


@pytest.mark.parametrize("kwargs", BATCH_CONFIGS, ids=str)
@pytest.mark.parametrize("policy", policy_names("batch"))
def test_every_batch_baseline_runs_with_small_batches(policy: str, kwargs: dict) -> None:
    _run("llmsched/BatchScheduling-v0", policy, kwargs)


@pytest.mark.parametrize("kwargs", CONTINUOUS_CONFIGS, ids=str)
@pytest.mark.parametrize("policy", policy_names("continuous"))
def test_every_continuous_baseline_runs_with_unusual_levels(policy: str, kwargs: dict) -> None:
    _run("llmsched/ContinuousBatching-v0", policy, kwargs)


def test_static_fifo_batch_size_defaults_to_eight_capped_by_max_batch_size() -> None:
    small = gym.make("llmsched/BatchScheduling-v0", n_requests=10, max_batch_size=4)
    large = gym.make("llmsched/BatchScheduling-v0", n_requests=10, max_batch_size=64)
    assert StaticFIFO(small).batch_size == 4
    assert StaticFIFO(large).batch_size == 8
    with pytest.raises(ValueError, match=r"StaticFIFO: batch_size must be an integer in \[1, 4\]"):
        StaticFIFO(small, batch_size=8)


@pytest.mark.parametrize(
    "env_id", ["llmsched/BatchScheduling-v0", "llmsched/ContinuousBatching-v0"]
)
def test_act_without_observation_and_info_is_a_clear_type_error(env_id: str) -> None:
    env = gym.make(env_id, n_requests=10, workload="demo2")
    kind = env_kind(env)
    for name in policy_names(kind):
        policy = make_policy(name, env)
        with pytest.raises(TypeError, match=r"act\(obs, info\) needs the observation and the info"):
            policy.act(None, None)
