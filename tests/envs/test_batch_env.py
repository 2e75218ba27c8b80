"""Pieces of the BatchScheduling-v0 environment module."""

import pickle

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmsched_env  # noqa: F401  (registers the envs)
from llmsched_env.envs.batch_env import BatchSchedulingEnv, _bin_of


@settings(max_examples=100, deadline=None)
@given(
    predicted=st.lists(st.integers(1, 5000), min_size=1, max_size=50),
    edges=st.lists(st.floats(0.0, 6000.0), max_size=6),
)
def test_bins_are_searchsorted_right_of_the_edges(predicted, edges):
    edges = np.array(sorted(edges), dtype=np.float64)
    tokens = np.array(predicted, dtype=np.int64)
    np.testing.assert_array_equal(
        _bin_of(tokens, edges), np.searchsorted(edges, tokens, side="right")
    )


def _served_batch(env: BatchSchedulingEnv, action: tuple[int, int]) -> frozenset[int]:
    """The requests that ``action`` would start, played on a copy of ``env``."""
    probe = pickle.loads(pickle.dumps(env))
    waiting = set(np.concatenate(probe.last_info["queues"]).tolist())
    *_, info = probe.step(np.array(action))
    assert not info["invalid_action"]
    return frozenset(waiting - set(np.concatenate(info["queues"]).tolist()))


@pytest.mark.parametrize("dispatch_order", ["oldest", "oldest-in-time"])
def test_joint_mask_lists_every_distinct_batch_once(dispatch_order):
    # Overload with a short deadline leaves late and in-time requests in the same bins, and a
    # small KV memory makes the larger size levels serve the same batch as smaller ones.
    env = gym.make(
        "llmsched/BatchScheduling-v0",
        load=2.0,
        sla=4.0,
        kv_memory=40_000,
        dispatch_order=dispatch_order,
        n_requests=200,
    ).unwrapped
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    n_bins, n_levels = env.action_space.nvec[0] - 1, env.action_space.nvec[1]
    beyond_queue_length = 0
    for _ in range(25):
        joint = env.joint_action_mask()
        queue_lengths = [len(q) for q in env.last_info["queues"]]
        batches = {}
        for bin_ in range(1, n_bins + 1):
            for level in range(n_levels):
                if queue_lengths[bin_ - 1] == 0:
                    assert not joint[bin_, level]
                    continue
                batches[bin_, level] = _served_batch(env, (bin_, level))
        listed = [batches[a] for a in batches if joint[a]]
        assert len(set(listed)) == len(listed)  # no two listed actions start the same batch
        assert set(batches.values()) == set(listed)  # and every batch some action starts is listed
        smaller = (0, *env.batch_sizes[:-1])
        beyond_queue_length += sum(
            not joint[b, s] and smaller[s] < queue_lengths[b - 1] for b, s in batches
        )
        allowed = np.argwhere(joint)
        *_, terminated, _, _ = env.step(allowed[rng.integers(len(allowed))])
        if terminated:
            break
    assert beyond_queue_length > 0  # levels were removed that the bins' lengths alone allow
