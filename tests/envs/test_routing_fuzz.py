"""Routing-v0 on random tiny clusters: every request accounted for, caches and memory consistent."""

from __future__ import annotations

from unittest import mock

import gymnasium as gym
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import llmsched_env  # noqa: F401  (registers the env ids)
from llmsched_env.envs.routing_compiled import CompiledCluster
from llmsched_env.envs.routing_env import RoutingEnv
from llmsched_env.sim.compiled_replica_server import CompiledReplicaServer
from tests.conftest import (
    check_block_pool,
    check_compiled_block_pool,
    draw_tiny_routing_cluster,
)

ROUTING = "llmsched/Routing-v0"


def check_replica_accounting(server, routed_to) -> None:
    """Each arrived request routed to the replica is in exactly one place; memory adds up."""
    s = server
    routed = np.asarray(routed_to)
    waiting = s.waiting_ids().tolist()
    mine = s.running[0].tolist() + list(s.prefilling[0])
    present = waiting + mine
    assert len(present) == len(set(present)) == s.n_in_system
    assert all(routed[i] == s.replica for i in present)
    assert s.n_arrived == s.n_completed + s.n_rejected + s.n_elsewhere + len(present)
    assert len(mine) == s.n_sequences[0] <= s.max_sequences
    assert 0 <= s.blocks_used[0] <= s.capacity_blocks
    records = s.records
    here = routed[: s.n_arrived] == s.replica
    assert int(records.completed[: s.n_arrived][here].sum()) == s.n_completed
    assert not records.completed[: s.n_arrived][~here].any()
    if s.prefix_caching:
        check = (
            check_compiled_block_pool if isinstance(s, CompiledReplicaServer) else check_block_pool
        )
        check(s, 0, mine)
        assert int(records.prefix_hit_tokens.sum()) == s.prefix_hit_tokens
        assert 0 <= s.prefix_hit_tokens <= s.prefix_queried_tokens


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_routing_on_tiny_replicas_conserves_every_request(data):
    workload, settings, rng = draw_tiny_routing_cluster(data, coarse_arrivals=False)
    compiled = data.draw(st.booleans(), label="compiled")
    n, block = len(workload), settings["kv_block_tokens"]
    env = gym.make(ROUTING, **settings, invalid_action="raise")
    with mock.patch.object(RoutingEnv, "_compiles_routing", lambda self: compiled):
        obs, info = env.reset(seed=0, options={"workload": workload})
    cluster = env.unwrapped.server
    assert isinstance(cluster, CompiledCluster) == compiled
    steps = 0
    while True:
        for server in cluster.servers:
            check_replica_accounting(server, cluster.routed_to)
        assert info["prompt_tokens"] == workload.prompt_tokens[info["request"]]
        hits = info["cached_prefix_tokens"]
        assert (hits <= max(info["prompt_tokens"] - 1, 0)).all() and (hits % block == 0).all()
        allowed = np.flatnonzero(info["action_mask"])
        obs, _, terminated, truncated, info = env.step(int(rng.choice(allowed)))
        steps += 1
        if terminated or truncated:
            break
    assert terminated and steps + info["rejected_without_decision"] == n
    for server in cluster.servers:
        check_replica_accounting(server, cluster.routed_to)
        assert server.n_in_system == 0
    records = env.unwrapped.request_records()
    assert set(records["status"].astype(str)) <= {"completed", "rejected"}
    rejected = records["status"] == "rejected"
    assert (records.loc[rejected, "reject_reason"] != "none").all()
    assert (records.loc[~rejected, "gpu"] == np.asarray(cluster.routed_to)[~rejected]).all()
    metrics = info["episode_metrics"]
    assert metrics["completed"] + metrics["rejected"] == n
    assert metrics["prefix_hit_tokens"] == sum(s.prefix_hit_tokens for s in cluster.servers)
