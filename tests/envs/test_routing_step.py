"""Routing-v0's compiled step against its Python replicas: the same episodes, bit for bit."""

from __future__ import annotations

import copy
import math
import pickle
from unittest import mock

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmsched_env  # noqa: F401  (registers the env ids)
from baselines import make_policy
from llmsched_env.envs.routing_cluster import Cluster
from llmsched_env.envs.routing_compiled import CompiledCluster
from llmsched_env.envs.routing_env import RoutingEnv
from llmsched_env.envs.routing_step import SCALAR_FLOATS, SCALAR_INTS, SCHEMA
from llmsched_env.latency.iteration import AffineIterationLatency
from llmsched_env.latency.iteration_timing import AFFINE_TIMING, compiled_timing
from tests.conftest import draw_tiny_routing_cluster

ROUTING = "llmsched/Routing-v0"

#: Settings the compiled step must reproduce: preemptions, rejections (with and without a
#: decision), prefix sharing, per-token TTFT targets, mixed latency models, truncation, and the
#: other reward shapes and in-replica rule.
SIDE_BY_SIDE = [
    {"n_replicas": 4, "n_requests": 200, "load": 0.9},
    {"n_replicas": 3, "n_requests": 200, "load": 1.2, "kv_memory": [40_000, 60_000, 200_000]},
    {"n_replicas": 2, "n_requests": 150, "load": 0.8, "prefix_caching": False,
     "ttft_sla_per_token": 0.001},
    {"n_replicas": 4, "n_requests": 200, "load": 0.7, "workload": "prefix-sharing"},
    {"workload": "demo2", "latency": "demo2", "kv_memory": (300, 600), "n_replicas": 2,
     "arrival_rate": 6.0, "n_requests": 120},
    {"n_replicas": 3, "n_requests": 200, "load": 1.5, "reward": "queue", "max_steps": 90,
     "latency": ["vllm0.19-rtxpro6000-llama3.1-8b", "llama3.1-8b-h100", "demo2"]},
    {"n_replicas": 2, "n_requests": 150, "load": 1.0, "replica_policy": "sarathi",
     "reward": "goodput-tokens"},
]  # fmt: skip


def play(compiled: bool, settings: dict, seed: int, router: str, workload=None):
    """An episode of ``router``: its records, metrics and every step's result."""
    with mock.patch.object(RoutingEnv, "_compiles_routing", lambda self: compiled):
        env = gym.make(ROUTING, **settings)
        options = None if workload is None else {"workload": workload}
        obs, info = env.reset(seed=seed, options=options)
    assert isinstance(env.unwrapped.server, CompiledCluster) == compiled
    agent = make_policy(router, env)
    steps = [(obs, 0.0, False, False, info)]
    while True:
        obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
        steps.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            return env.unwrapped.request_records(), info["episode_metrics"], steps


def assert_same_episode(python, compiled) -> None:
    pd.testing.assert_frame_equal(python[0], compiled[0], check_exact=True)
    np.testing.assert_equal(python[1], compiled[1])
    assert len(python[2]) == len(compiled[2])
    for one, two in zip(python[2], compiled[2]):
        (obs1, *rest1, info1), (obs2, *rest2, info2) = one, two
        assert obs1.dtype == obs2.dtype == np.float32
        np.testing.assert_array_equal(obs1, obs2)
        assert rest1 == rest2
        assert info1.keys() == info2.keys()
        for key in info1:
            np.testing.assert_equal(info1[key], info2[key], err_msg=key)
            assert np.asarray(info1[key]).dtype == np.asarray(info2[key]).dtype, key


@pytest.mark.parametrize("settings", SIDE_BY_SIDE)
@pytest.mark.parametrize("router", ["random", "least-tokens", "prefix-affinity"])
def test_compiled_steps_give_the_python_episode_bit_for_bit(settings, router):
    seed = SIDE_BY_SIDE.index(settings)
    python = play(False, settings, seed, router)
    compiled = play(True, settings, seed, router)
    assert_same_episode(python, compiled)


def test_the_side_by_side_settings_exercise_what_they_claim():
    metrics = [play(True, s, SIDE_BY_SIDE.index(s), "random")[1] for s in SIDE_BY_SIDE]
    assert metrics[1]["preemptions"] > 0 and metrics[3]["prefix_hit_rate"] > 0
    assert metrics[5]["in_system"] > 0  # truncated
    *_, steps = play(True, SIDE_BY_SIDE[4], 4, "random")
    assert steps[-1][-1]["rejected_without_decision"] > 0


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_compiled_steps_follow_the_python_replicas_on_random_tiny_clusters(data):
    workload, settings, _ = draw_tiny_routing_cluster(data, coarse_arrivals=True)
    settings["prefix_caching"] = data.draw(st.booleans(), label="prefix_caching")
    settings["ttft_sla"] = data.draw(st.sampled_from([0.005, 0.05, 1.0]), label="ttft_sla")
    router = data.draw(st.sampled_from(["random", "least-requests", "prefix-affinity"]))
    python = play(False, settings, 0, router, workload)
    compiled = play(True, settings, 0, router, workload)
    assert_same_episode(python, compiled)


def test_the_default_env_steps_compiled_and_other_policies_in_python():
    env = gym.make(ROUTING, n_replicas=2, n_requests=30)
    env.reset(seed=0)
    assert isinstance(env.unwrapped.server, CompiledCluster)
    env = gym.make(ROUTING, n_replicas=2, n_requests=30, replica_policy="decode-first")
    env.reset(seed=0)
    assert type(env.unwrapped.server) is Cluster
    env = gym.make(ROUTING, n_replicas=2, n_requests=30, latency=["sim-a", "demo2"])
    env.reset(seed=0)
    assert type(env.unwrapped.server) is Cluster  # a stochastic model is timed in Python


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda env: pickle.loads(pickle.dumps(env))])
def test_a_copied_compiled_episode_continues_as_the_original(clone):
    env = gym.make(ROUTING, n_replicas=3, n_requests=120, load=1.2).unwrapped
    env.reset(seed=3)
    for _ in range(40):
        env.step(int(np.flatnonzero(env.action_masks())[-1]))
    twin = clone(env)
    assert isinstance(twin.server, CompiledCluster)
    for step in range(200):
        action = step % 3 if env.action_masks()[step % 3] else 0
        one, two = env.step(action), twin.step(action)
        np.testing.assert_array_equal(one[0], two[0])
        assert one[1:4] == two[1:4]
        np.testing.assert_equal(one[4], two[4])
        if one[2] or one[3]:
            break
    pd.testing.assert_frame_equal(env.request_records(), twin.request_records())
    assert env.server.servers[0].buffers[1] is not twin.server.servers[0].buffers[1]
    # The copy's replicas count their decisions in the copy's state.
    decisions = [replica.decisions for replica in twin.server.replicas]
    assert decisions == twin.server.replica_decisions().tolist() and sum(decisions) > 0


def test_a_latency_model_without_a_valid_time_raises_its_own_error():
    class Broken(AffineIterationLatency):
        """Its compiled timing gives no valid time; asked in Python, it says why."""

        def compiled_timing(self):
            return compiled_timing(AFFINE_TIMING, math.nan, 0.0, 0.0)

        def iteration_s(self, *args, **kwargs):
            raise ValueError("Broken: no valid time for this iteration")

    env = gym.make(ROUTING, n_replicas=2, n_requests=20, arrival_rate=1.0,
                   latency=Broken(c_s=0.01, a_s_per_token=0.0))  # fmt: skip
    with pytest.raises(ValueError, match="Broken: no valid time"):
        env.reset(seed=0)
        env.step(0)
    assert isinstance(env.unwrapped.server, CompiledCluster)


def test_the_scalars_python_reads_lead_the_cluster_buffers():
    """``CompiledCluster`` reads them as the first entries of each buffer, in this order."""
    layout = SCHEMA.layout(n=5, n_replicas=2, n_obs=19, n_int_loads=14, n_float_loads=4)
    for names in (SCALAR_INTS, SCALAR_FLOATS):
        assert [int(layout[SCHEMA.start_index(name)]) for name in names] == list(range(len(names)))
    env = gym.make(ROUTING, n_replicas=2, n_requests=30, load=1.0).unwrapped
    env.reset(seed=1)
    for _ in range(10):
        env.step(0)
    cluster = env.server
    for name in SCALAR_INTS + SCALAR_FLOATS:
        attribute = {"on_time_tokens": "on_time_output_tokens", "in_system_s": "in_system_integral"}
        assert getattr(cluster, attribute.get(name, name)) == getattr(cluster.state, name)[0]


def test_the_compiled_cluster_refuses_a_replica_out_of_range_and_a_route_not_due():
    env = gym.make(ROUTING, n_replicas=2, n_requests=20).unwrapped
    env.reset(seed=0)
    cluster = env.server
    for replica in (2, -1):
        with pytest.raises(IndexError, match=f"replica {replica} is out of range for 2"):
            cluster.route_and_advance(replica)
    assert cluster.n_routed == 0 and cluster.request == 0  # nothing was routed
    while cluster.route_and_advance(0):
        pass
    with pytest.raises(RuntimeError, match="no routing decision is due"):
        cluster.route_and_advance(0)
    assert cluster.n_completed + cluster.n_rejected == 20
