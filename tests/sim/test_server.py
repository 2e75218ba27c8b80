"""Both servers satisfy the :class:`~llmsched_env.sim.server.Server` protocol the envs rely on."""

from __future__ import annotations

import gymnasium as gym
import pytest

import llmsched_env  # noqa: F401  (registers the env ids)
from llmsched_env.sim import Server
from llmsched_env.sim.server import Server as ServerProtocol


@pytest.mark.parametrize(
    "env_id", ["llmsched/BatchScheduling-v0", "llmsched/ContinuousBatching-v0"]
)
def test_each_env_server_is_a_server(env_id: str) -> None:
    env = gym.make(env_id, n_requests=30)
    env.reset(seed=0)
    server = env.unwrapped.server
    assert Server is ServerProtocol
    assert isinstance(server, Server)
    # The protocol's questions answer consistently with each other.
    assert server.n_arrived <= server.n_requests == len(server.workload)
    assert server.decision_gpu in range(server.n_gpus)
    assert server.can_wait() in (True, False)
    assert not server.done
    summary = server.summary()
    assert summary["requests"] == server.n_requests
    assert summary["arrived"] == server.n_arrived
