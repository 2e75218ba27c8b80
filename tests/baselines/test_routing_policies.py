"""The routers of Routing-v0: valid choices, their rules, and the queueing order they keep."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401 (registers the envs)
from baselines import make_policy, policy_names

ROUTING = "llmsched/Routing-v0"
ROUTERS = policy_names("routing")


def test_every_listed_router_exists():
    assert ROUTERS == [
        "random", "round-robin", "least-requests", "least-tokens", "power-of-two", "least-kv",
        "prefix-affinity", "balanced-affinity", "llm-d-scorer", "min-ttft", "length-split",
    ]  # fmt: skip


@pytest.mark.parametrize("router", ROUTERS)
def test_router_only_picks_allowed_replicas_on_heterogeneous_replicas(router):
    env = gym.make(ROUTING, workload="demo2", latency=("demo2", "sim-a", "demo2"),
                   kv_memory=(300, 4000, 2000), n_replicas=3, arrival_rate=8.0, n_requests=80,
                   invalid_action="raise")  # fmt: skip
    obs, info = env.reset(seed=3)
    agent = make_policy(router, env)
    agent.reset()
    chosen = set()
    while True:
        action = agent.act(obs, info)
        assert info["action_mask"][action]
        chosen.add(int(action))
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert info["episode_metrics"]["completed"] + info["episode_metrics"]["rejected"] == 80
    assert len(chosen) >= 2


def info_of(**arrays):
    """A decision's info with three replicas (defaults: idle, nothing cached, all allowed)."""
    zeros = np.zeros(3, dtype=np.int64)
    info = {
        "action_mask": np.ones(3, dtype=bool),
        "waiting": zeros,
        "running": zeros,
        "waiting_tokens": zeros,
        "prefill_remaining_tokens": zeros,
        "outstanding_tokens": zeros,
        "kv_used_tokens": zeros,
        "cached_prefix_tokens": zeros,
        "busy_remaining_s": np.zeros(3),
        "prompt_tokens": 512,
    }
    info.update({k: np.asarray(v) if isinstance(v, list) else v for k, v in arrays.items()})
    return info


@pytest.fixture(scope="module")
def env():
    return gym.make(ROUTING, n_replicas=3, n_requests=10)


def test_load_rules(env):
    info = info_of(waiting=[2, 0, 1], running=[1, 3, 1], outstanding_tokens=[90, 50, 10],
                   kv_used_tokens=[10, 5, 800])  # fmt: skip
    assert make_policy("least-requests", env).act(None, info) == 2  # 3, 3, 2 requests
    assert make_policy("least-tokens", env).act(None, info) == 2
    assert make_policy("least-kv", env).act(None, info) == 1
    info["action_mask"] = np.array([True, True, False])
    assert make_policy("least-requests", env).act(None, info) == 1  # 3 each: fewer tokens
    rr = make_policy("round-robin", env)
    assert [int(rr.act(None, info)) for _ in range(4)] == [0, 1, 0, 1]


def test_least_requests_breaks_ties_by_tokens_then_index(env):
    info = info_of(waiting=[1, 1, 1], outstanding_tokens=[30, 20, 20])
    assert make_policy("least-requests", env).act(None, info) == 1


def test_power_of_two_takes_the_less_loaded_of_its_two_probes_and_repeats_with_its_seed(env):
    info = info_of(waiting=[5, 0, 9])
    picks = [int(make_policy("power-of-two", env, seed=s).act(None, info)) for s in range(20)]
    assert 2 not in picks or picks.count(2) == 0  # replica 2 always loses to either other
    again = [int(make_policy("power-of-two", env, seed=s).act(None, info)) for s in range(20)]
    assert picks == again


def test_prefix_affinity_prefers_the_cache_then_the_load(env):
    agent = make_policy("prefix-affinity", env)
    assert agent.act(None, info_of(cached_prefix_tokens=[0, 256, 256], waiting=[0, 4, 2])) == 2
    assert agent.act(None, info_of(waiting=[3, 1, 2])) == 1


def test_balanced_affinity_follows_the_cache_only_while_balanced_and_cached_enough(env):
    agent = make_policy("balanced-affinity", env)
    # Balanced, 256 of 512 prompt tokens cached (0.5 > 0.3): the cache wins over a longer queue.
    cached = info_of(cached_prefix_tokens=[0, 256, 0], waiting=[0, 5, 1])
    assert not agent.imbalanced(cached)
    assert agent.act(None, cached) == 1
    # Too little cached (128 / 512 = 0.25 <= 0.3): the least loaded.
    assert agent.act(None, info_of(cached_prefix_tokens=[0, 128, 0], waiting=[2, 5, 1])) == 2
    # Equal cached prefixes: the less loaded of the two holders.
    assert agent.act(None, info_of(cached_prefix_tokens=[0, 256, 256], waiting=[0, 5, 3])) == 2
    # Imbalanced (difference 70 > 64 and 80 > 1.5 * 10): the least loaded, cache or not.
    busy = info_of(cached_prefix_tokens=[0, 512, 0], waiting=[10, 80, 30])
    assert agent.imbalanced(busy)
    assert agent.act(None, busy) == 0
    # One threshold crossed is still balanced: a difference of 70 > 64 but 80 <= 10 * 10 ...
    assert make_policy("balanced-affinity", env, balance_rel_threshold=10.0).act(None, busy) == 1
    # ... or a ratio of 8 > 1.5 but a difference of 70 <= 100.
    assert make_policy("balanced-affinity", env, balance_abs_threshold=100).act(None, busy) == 1
    # A forbidden replica is never chosen, however much it holds.
    masked = info_of(cached_prefix_tokens=[0, 512, 0], action_mask=[True, False, True])
    assert agent.act(None, masked) == 0


@pytest.mark.parametrize(
    ("key", "value"),
    [("cache_threshold", 1.5), ("cache_threshold", -0.1), ("balance_abs_threshold", -1),
     ("balance_rel_threshold", 0.5), ("balance_rel_threshold", float("nan"))],
)  # fmt: skip
def test_balanced_affinity_refuses_thresholds_out_of_range(env, key, value):
    with pytest.raises(ValueError, match=key):
        make_policy("balanced-affinity", env, **{key: value})


def test_llm_d_scorer_weighs_prefix_against_queue(env):
    info = info_of(cached_prefix_tokens=[512, 0, 0], waiting=[4, 0, 2])
    # prefix 3 * 1 + queue 2 * 0 = 3 against 0 + 2 * 1 = 2: the cache wins.
    assert make_policy("llm-d-scorer", env).act(None, info) == 0
    # Queue-heavy weights: the emptiest queue wins.
    assert (
        make_policy("llm-d-scorer", env, prefix_weight=1.0, queue_weight=2.0).act(None, info) == 1
    )
    with pytest.raises(ValueError, match="prefix_weight"):
        make_policy("llm-d-scorer", env, prefix_weight=-1.0)


def test_min_ttft_estimates_queueing_plus_uncached_prefill(env):
    agent = make_policy("min-ttft", env)
    # Equal queues: the replica with the prompt cached needs less prefill.
    info = info_of(waiting_tokens=[4096, 4096, 4096], cached_prefix_tokens=[0, 0, 496])
    estimates = agent.estimates_s(info)
    assert estimates[2] < estimates[0] == estimates[1]
    assert agent.act(None, info) == 2
    # A long queue outweighs a cached prompt.
    info = info_of(waiting_tokens=[0, 40_000, 40_000], cached_prefix_tokens=[0, 496, 496])
    assert agent.act(None, info) == 0


def test_length_split_keeps_long_prefills_on_the_reserved_replica(env):
    agent = make_policy("length-split", env, threshold_tokens=1000)
    # Short prompt: the rest of the replicas, even though replica 0 is idle and the others busy.
    busy = info_of(prompt_tokens=500, waiting_tokens=[0, 8000, 9000])
    assert agent.act(None, busy) == 1
    # Long prompt: the reserved replica, however busy it is.
    assert agent.act(None, info_of(prompt_tokens=3000, waiting_tokens=[9000, 0, 0])) == 0
    # Long, but cached enough everywhere to be short: the short pool (least estimated TTFT).
    cached = info_of(prompt_tokens=3000, cached_prefix_tokens=[2500, 2500, 2600])
    assert agent.act(None, cached) == 2
    # Its pool forbidden: the best allowed replica of the other pool.
    blocked = info_of(prompt_tokens=3000, action_mask=[False, True, True], waiting_tokens=[0, 9, 0])
    assert agent.act(None, blocked) == 2
    two = make_policy("length-split", env, long_replicas=2, threshold_tokens=1000)
    assert two.act(None, info_of(prompt_tokens=3000, waiting_tokens=[9000, 0, 0])) == 1
    assert make_policy("length-split", env).threshold_tokens == env.unwrapped.config.max_tokens


def test_length_split_refuses_what_it_cannot_split(env):
    with pytest.raises(ValueError, match="long_replicas must be .*got 3"):
        make_policy("length-split", env, long_replicas=3)
    # One replica: nothing to split, every request goes to it.
    single = make_policy("length-split", gym.make(ROUTING, n_replicas=1, n_requests=10))
    one = {k: v[:1] if isinstance(v, np.ndarray) else v for k, v in info_of().items()}
    assert single.act(None, {**one, "prompt_tokens": 500}) == 0
    assert single.act(None, {**one, "prompt_tokens": 50_000}) == 0


def mean_ttft(router: str, seeds=(0, 1)) -> float:
    """Mean TTFT of four identical single-slot replicas (M/M/1 queues) at load 0.9."""
    env = gym.make(ROUTING, workload="mm1", latency="mm1", n_replicas=4, n_requests=1500,
                   arrival_rate=0.9 * 4 / 0.4, prefix_caching=False, max_sequences=1,
                   ttft_sla=5.0, tbt_sla=1.0)  # fmt: skip
    values = []
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        agent = make_policy(router, env)
        while True:
            obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
            if terminated or truncated:
                break
        values.append(info["episode_metrics"]["ttft_s_mean"])
    return float(np.mean(values))


def test_queueing_order_power_of_two_near_shortest_queue_far_ahead_of_random():
    """Mitzenmacher (2001): with exponential service at load 0.9, random routing makes four
    M/M/1 queues (mean response 0.4 / 0.1 = 4 s in steady state), join-the-shortest-queue comes
    close to M/M/4 (about 1.1 s), and two choices lie close to the latter."""
    jsq, p2, rnd = (mean_ttft(r) for r in ("least-requests", "power-of-two", "random"))
    assert jsq < p2 < 1.4 * jsq
    assert rnd > 2.0 * p2


def test_llmsched_evaluate_runs_the_routers_through_the_harness(tmp_path, capsys):
    import pandas as pd

    from llmsched_env.cli import main

    argv = ["evaluate", "--env", "routing", "--workload", "demo2", "--gpus", "3"]
    argv += ["--n-requests", "40", "--seeds", "2", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    assert '"n_replicas": 3' in capsys.readouterr().out
    episodes = pd.read_csv(tmp_path / "episodes.csv")
    assert sorted(set(episodes["policy"])) == sorted(ROUTERS)
    assert (episodes["invalid_actions"] == 0).all()


def shared_system_prompts(n=240, seed=0):
    """Requests whose prompts start with one of 48 system prompts of 1024 tokens (16 blocks)."""
    from tests.conftest import make_workload

    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(0.08, n))
    suffix = rng.integers(16, 256, n)
    output = rng.integers(8, 128, n)
    docs = rng.integers(0, 48, n)
    workload = make_workload(arrival, 1024 + suffix, output)
    chains = [[int(d) * 1000 + j for j in range(16)] for d in docs]
    return workload.with_prefix_hashes(chains, 64)


@pytest.mark.parametrize(
    "router", ["prefix-affinity", "balanced-affinity", "llm-d-scorer", "min-ttft"]
)
def test_cache_aware_routers_hit_the_prefix_cache_more_than_random(router):
    # Each replica caches about 20 of the 48 prompts: random routing evicts what it will need.
    env = gym.make(ROUTING, n_replicas=4, n_requests=240, arrival_rate=12.0, kv_memory=24_000)
    hits = {}
    for name in ("random", router):
        obs, info = env.reset(seed=0, options={"workload": shared_system_prompts()})
        agent = make_policy(name, env)
        while True:
            obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
            if terminated or truncated:
                break
        metrics = info["episode_metrics"]
        hits[name] = metrics["prefix_hit_tokens"] / metrics["prefix_queried_tokens"]
    assert hits[router] > hits["random"] + 0.1, hits
