"""Request-level baselines over whole episodes: valid actions, their rules, and theory.

The Multi-Bin check runs Theorem 4.2's model through the environment and the ``MultiBin``
policy (not on the server directly, as ``tests/sim/test_queueing_theory.py`` does).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401 (registers the env ids)
from baselines import make_policy
from baselines.batch import POLICIES, MultiBin
from tests.conftest import multibin_batch_time_by_integration

BATCH = "llmsched/BatchScheduling-v0"

#: Small configurations: several GPUs and bins, memory that binds, a trace, a synthetic source.
CONFIGS = {
    "azure-2gpu": {"workload": "azure-conv", "load": 1.1, "n_requests": 200},
    "burstgpt-reference": {
        "workload": "burstgpt-synthetic",
        "arrival_rate": 3.0,
        "n_gpus": 1,
        "latency": "calibrated",
        "kv_memory": "reference-sim",
        "sla": 20.0,
        "n_bins": 8,
        "max_batch_size": 128,
        "n_requests": 150,
    },
    "demo2-3gpu": {
        "workload": "demo2",
        "arrival_rate": 40.0,
        "n_gpus": 3,
        "n_bins": 2,
        "max_batch_size": 24,
        "kv_memory": 3_000,
        "n_requests": 200,
    },
}


def run(policy_name: str, env_kwargs: dict, seed: int = 0, check=None, **policy_kwargs):
    """Run one episode; return the actions taken, the final info and the return."""
    env = gym.make(BATCH, invalid_action="raise", **env_kwargs)
    policy = make_policy(policy_name, env, **policy_kwargs)
    obs, info = env.reset(seed=seed)
    policy.reset()
    total, actions = 0.0, []
    while True:
        action = policy.act(obs, info)
        if check is not None:
            check(policy, info, action)
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        assert not info["invalid_action"]
        if terminated or truncated:
            return actions, info, total


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("name", sorted(POLICIES))
def test_baselines_take_only_allowed_actions(name, config):
    def allowed(policy, info, action):
        mask = info["action_mask"]
        n_choices = policy.n_bins + 1
        assert action.shape == (2,) and action.dtype.kind == "i"
        assert mask[action[0]] and mask[n_choices + action[1]]

    _, info, _ = run(name, CONFIGS[config], check=allowed)  # invalid_action="raise"
    metrics = info["episode_metrics"]
    assert metrics["completed"] + metrics["rejected"] == metrics["requests"]


def test_multibin_never_emits_a_partial_batch_before_the_end():
    def full_or_final(policy, info, action):
        if action[0] != 0:
            waiting = len(policy.env.queue_snapshot().ids[action[0] - 1])
            assert waiting >= policy.batch_size or not info["action_mask"][0]

    config = {**CONFIGS["demo2-3gpu"], "arrival_rate": 5.0}
    actions, _, _ = run("multibin", config, check=full_or_final, batch_size=8)
    assert any(a[0] == 0 for a in actions)  # at this load it has to wait


def test_work_conserving_policies_never_wait():
    for name in ("static-fifo", "multibin-wc", "sla-dynamic", "multibin-dynamic", "spf", "edf"):
        actions, _, _ = run(name, CONFIGS["demo2-3gpu"])
        assert all(a[0] != 0 for a in actions), name


@pytest.mark.parametrize("name", ["multibin-wc", "sla-dynamic", "sla-dynamic-e2e", "edf"])
def test_baselines_beat_random_near_capacity(name):
    """Near capacity, throughput decides: random waits and picks small batches, so it must lose.

    The compared policies never wait and batch up to the largest size that their rule allows,
    so on the same requests they serve more, and more of them on time.
    """
    config = {"workload": "azure-conv", "load": 1.0, "n_requests": 400}
    for seed in range(3):
        _, _, baseline = run(name, config, seed=seed)
        _, _, random = run("random", config, seed=seed)
        assert baseline > random, (name, seed, baseline, random)


# ---------------------------------------------------------------- Multi-Bin Theorem 4.2
B = 128


def theorem_4_2(k: int, l_min: float = 1.0, l_max: float = 20.0) -> float:
    """``B / E[t_k]`` with ``E[t_k] = m + (B/(B+1) l_max + l_min/(B+1) - m) / k``, m the mean."""
    mean = (l_max + l_min) / 2
    return B / (mean + (B / (B + 1) * l_max + l_min / (B + 1) - mean) / k)


def multibin_throughput_through_the_env(k: int, batches_per_bin: int = 60) -> float:
    """Saturated throughput of ``MultiBin`` over full batches: requests / busy seconds.

    Theorem 4.2's model: one server, service U(1, 20) s (output tokens U{100..2000} at 10 ms per
    token, batch time the longest member's), full batches of B = 128 served in formation order,
    k equal-mass bins at the uniform quantiles, oracle predictions, memory that never binds and
    arrivals (100/s) far above capacity (about 10/s), so the server never idles.
    """
    env = gym.make(
        BATCH,
        workload="uniform",
        n_gpus=1,
        latency="multibin-uniform",
        kv_memory="unlimited",
        max_batch_size=B,
        n_bins=k,
        bin_edges=tuple(100 + i / k * 1901 for i in range(1, k)) or None,
        arrival_rate=100.0,
        n_requests=B * k * batches_per_bin,
        invalid_action="raise",
    )
    policy = MultiBin.from_env(env)
    assert policy.batch_size == B
    obs, info = env.reset(seed=k)
    policy.reset()
    served, busy_s = 0, 0.0
    while True:
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        for batch in env.unwrapped.finished_batches():
            if batch.size == B:
                served += batch.size
                busy_s += batch.service_s
        if terminated or truncated:
            return served / busy_s


def test_theorem_4_2_values():
    """The formula the env is held to, against numerical integration of E[max] per bin."""
    by_integration = [B / multibin_batch_time_by_integration(k, B) for k in range(1, 6)]
    assert [theorem_4_2(k) for k in range(1, 6)] == pytest.approx(by_integration, rel=1e-8)


def test_multibin_policy_reaches_theorem_4_2_through_the_env():
    """Throughput within 1.5% of ``B / E[t_k]`` for k = 1..5, and strictly increasing in k."""
    measured = [multibin_throughput_through_the_env(k) for k in range(1, 6)]
    for k, value in enumerate(measured, start=1):
        assert value == pytest.approx(theorem_4_2(k), rel=0.015), (k, value)
    assert all(b > a for a, b in zip(measured, measured[1:]))
    assert np.isfinite(measured).all()
