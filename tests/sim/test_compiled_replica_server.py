"""The compiled replica server against the Python one, driven by Routing-v0's Python replicas."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import llmsched_env  # noqa: F401  (registers the env ids)
from baselines import make_policy
from llmsched_env.envs.routing_cluster import Cluster, Replica
from llmsched_env.envs.routing_env import RoutingEnv
from llmsched_env.sim.compiled_replica_server import CompiledReplicaServer
from llmsched_env.sim.replica_server import ReplicaServer
from tests.conftest import check_compiled_block_pool

ROUTING = "llmsched/Routing-v0"

SETTINGS = [
    {"n_replicas": 3, "n_requests": 150, "load": 1.2, "kv_memory": [40_000, 60_000, 200_000]},
    {"n_replicas": 2, "n_requests": 120, "load": 0.8, "workload": "prefix-sharing",
     "ttft_sla_per_token": 0.001},
    {"workload": "demo2", "latency": "demo2", "kv_memory": (300, 600), "n_replicas": 2,
     "arrival_rate": 6.0, "n_requests": 100},
]  # fmt: skip


def play(server_class, settings, policy, monkeypatch):
    """An episode of Routing-v0's Python replicas on servers of ``server_class``."""
    start = Replica.start

    def start_with(self, workload, index, routed_to, rng, server_class_=server_class):
        return start(self, workload, index, routed_to, rng, server_class=server_class_)

    with monkeypatch.context() as patch:
        patch.setattr(Replica, "start", start_with)
        patch.setattr(RoutingEnv, "_compiles_routing", lambda self: False)
        env = gym.make(ROUTING, replica_policy=policy, **settings)
        obs, info = env.reset(seed=SETTINGS.index(settings))
        cluster = env.unwrapped.server
        assert type(cluster) is Cluster and type(cluster.servers[0]) is server_class
        router = make_policy("random", env)
        rewards = []
        while True:
            obs, reward, terminated, truncated, info = env.step(router.act(obs, info))
            rewards.append(reward)
            for server in cluster.servers:
                if server_class is CompiledReplicaServer and server.prefix_caching:
                    check_compiled_block_pool(
                        server, 0, [*server.running[0], *server.prefilling[0]]
                    )
            if terminated or truncated:
                break
    return env.unwrapped.request_records(), info["episode_metrics"], rewards, cluster


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("policy", ["vllm-v1", "random", "decode-first"])
def test_compiled_replicas_serve_the_python_replicas_episode(settings, policy, monkeypatch):
    python = play(ReplicaServer, settings, policy, monkeypatch)
    compiled = play(CompiledReplicaServer, settings, policy, monkeypatch)
    pd.testing.assert_frame_equal(python[0], compiled[0], check_exact=True)
    np.testing.assert_equal(python[1], compiled[1])
    assert python[2] == compiled[2]
    for one, two in zip(python[3].servers, compiled[3].servers):
        assert (one.n_elsewhere, one.n_assigned, one.known) == (
            two.n_elsewhere,
            two.n_assigned,
            two.known,
        )
        assert one.n_in_system == two.n_in_system and one.done == two.done
        np.testing.assert_array_equal(
            one.queue_order[: one.queue_tail], two.queue_order[: two.queue_tail]
        )


def test_queue_columns_grow_as_requests_are_routed_and_stay_read_only():
    env = gym.make(ROUTING, n_replicas=2, n_requests=60, load=1.5)
    env.reset(seed=0)
    for _ in range(30):
        env.step(0)
    server = env.unwrapped.server.servers[0]
    assert isinstance(server, CompiledReplicaServer)
    order = server.queue_order
    assert order.size == server.n_assigned > 0 and np.all(np.diff(order) > 0)
    for values in (order, server.queue_arrival_s, server.queue_prompt_tokens):
        assert not values.flags.writeable
    np.testing.assert_array_equal(server.queue_arrival_s, server.workload.arrival_s[order])
    assert env.unwrapped.server.servers[1].n_elsewhere >= 29


def test_a_request_marked_elsewhere_twice_stays_elsewhere():
    env = gym.make(ROUTING, n_replicas=2, n_requests=20, load=0.5)
    env.reset(seed=0)
    server = env.unwrapped.server.servers[1]
    index = env.unwrapped.server.request
    assert server.admissible(index)
    server.mark_elsewhere(index)
    server.mark_elsewhere(index)
    assert int(server.state.rejection[index]) < 0 and server.admissible(index)
    assert server.reject_reason_of(index) == 0
