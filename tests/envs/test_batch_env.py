"""Pieces of the BatchScheduling-v0 environment module."""

import pickle
import re

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmsched_env  # noqa: F401  (registers the envs)
from llmsched_env.envs.batch_env import (
    BatchSchedulingEnv,
    check_bins_reachable,
    equal_mass_edges,
)
from llmsched_env.envs.batch_step import bin_of


@settings(max_examples=100, deadline=None)
@given(
    predicted=st.lists(st.integers(1, 5000), min_size=1, max_size=50),
    edges=st.lists(st.floats(0.0, 6000.0), max_size=6),
)
def test_bins_are_searchsorted_right_of_the_edges(predicted, edges):
    edges = np.array(sorted(edges), dtype=np.float64)
    tokens = np.array(predicted, dtype=np.int64)
    np.testing.assert_array_equal(
        bin_of(tokens, edges), np.searchsorted(edges, tokens, side="right")
    )


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(1, 60), min_size=1, max_size=80),
    n_bins=st.integers(2, 8),
)
def test_default_edges_leave_no_bin_dead_that_the_lengths_can_fill(values, n_bins):
    # Heavy ties (most requests of one length) made coinciding quantiles leave a bin below or
    # above every length; the env's own edges are always accepted as explicit ones.
    predicted = np.array(values, dtype=np.int64)
    edges = equal_mass_edges(predicted, n_bins)
    assert len(edges) == n_bins - 1 and all(a < b for a, b in zip(edges, edges[1:]))
    check_bins_reachable("env", edges, predicted)
    filled = np.unique(np.searchsorted(edges, predicted, side="right")).size
    assert filled == min(n_bins, np.unique(predicted).size)


def test_default_edges_are_the_quantiles_without_ties():
    predicted = np.random.default_rng(0).lognormal(5, 1, 5000).round()
    expected = np.quantile(predicted, [0.25, 0.5, 0.75])
    np.testing.assert_array_equal(equal_mass_edges(predicted, 4), expected)
    tied = np.r_[np.ones(900), np.arange(2, 102)]  # 90% at the smallest length
    edges = equal_mass_edges(tied, 4)
    counts = np.bincount(np.searchsorted(edges, tied, side="right"))
    assert counts[0] == 900 and sorted(counts[1:]) in ([33, 33, 34], [33, 34, 33], [33, 34, 34])


def test_two_length_workload_accepts_its_own_default_edges():
    env = BatchSchedulingEnv(workload="demo2", load=0.9, n_requests=50)
    again = BatchSchedulingEnv(workload="demo2", load=0.9, n_requests=50, bin_edges=env.bin_edges)
    assert again.bin_edges == env.bin_edges
    # With two lengths and four bins any edges are accepted, one below a token included.
    low = BatchSchedulingEnv(workload="demo2", load=0.9, n_requests=50, bin_edges=(0.5, 64, 256))
    assert low.reset(seed=0)[0].shape == env.observation_space.shape


def _served_batch(env: BatchSchedulingEnv, action: tuple[int, int]) -> frozenset[int]:
    """The requests that ``action`` would start, played on a copy of ``env``."""
    probe = pickle.loads(pickle.dumps(env))
    waiting = set(np.concatenate(probe.queue_snapshot().ids).tolist())
    *_, info = probe.step(np.array(action))
    assert not info["invalid_action"]
    return frozenset(waiting - set(np.concatenate(probe.queue_snapshot().ids).tolist()))


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
        queue_lengths = [len(q) for q in env.queue_snapshot().ids]
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


def _episode(env: BatchSchedulingEnv, seed: int, *, compiled: bool) -> list:
    """Every step's outputs of a seeded episode of random allowed actions."""
    env._compiled_step = compiled
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    steps = [(obs, info)]
    while True:
        mask = env.action_masks()
        choices = np.flatnonzero(mask[: env._nvec[0]])
        # Also forbidden choices, which the env remaps.
        choice = int(rng.choice(choices)) if rng.random() < 0.8 else int(rng.integers(0, 5))
        action = np.array([choice, rng.integers(0, env._nvec[1])])
        obs, reward, terminated, truncated, info = env.step(action)
        steps.append((obs, reward, terminated, truncated, info, env.finished_batches()))
        if terminated or truncated:
            return steps


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"dispatch_order": "oldest-in-time", "sla": 2.0, "load": 1.5, "reward": "queue"},
        {"reward": "goodput-tokens", "max_steps": 40},
    ],
)
def test_compiled_step_equals_the_python_step(kwargs):
    # The compiled step (batch_step.step_one) and the server's Python path give the same
    # episode, bit for bit, and keep the reward object's objective in step.
    env = gym.make("llmsched/BatchScheduling-v0", n_requests=150, **kwargs).unwrapped
    assert env._compiled_step
    compiled = _episode(env, 5, compiled=True)
    last = env._reward._last
    python = _episode(env, 5, compiled=False)
    assert env._reward._last == last
    assert len(compiled) == len(python)
    assert pickle.dumps(compiled) == pickle.dumps(python)


def test_info_has_fixed_keys_and_queues_come_from_queue_snapshot():
    env = gym.make("llmsched/BatchScheduling-v0", n_requests=100, load=1.5).unwrapped
    _, info = env.reset(seed=0)
    keys = {"time_s", "gpu", "gpu_busy_until_s", "action_mask", "invalid_action"}
    assert keys | {"applied_action"} <= set(info)
    assert env.finished_batches() == []
    seen = 0
    while True:
        snapshot = env.queue_snapshot()
        w = env.server.workload
        for j, ids in enumerate(snapshot.ids):
            assert len(ids) == env.server.queue_lengths()[j]
            np.testing.assert_array_equal(w.arrival_s[ids], snapshot.arrival_s[j])
            np.testing.assert_array_equal(w.prompt_tokens[ids], snapshot.prompt_tokens[j])
        n_finished = int(env.server.state.n_finished[0])
        *_, terminated, truncated, info = env.step(
            np.array([0 if info["action_mask"][0] else 1, 0])
        )
        finished = env.finished_batches()
        assert len(finished) == int(env.server.state.n_finished[0]) - n_finished
        seen += len(finished)
        assert set(info) == keys | {"applied_action"} | (
            {"episode_metrics"} if terminated or truncated else set()
        )
        if terminated or truncated:
            break
    assert seen == int(env.server.state.n_batches[0])
    assert sum(b.size for b in env.server.finished_between(0, seen)) == env.server.n_completed


def test_joint_mask_allows_only_wait_once_the_episode_is_over():
    env = gym.make("llmsched/BatchScheduling-v0", n_requests=30).unwrapped
    env.reset(seed=0)
    terminated = truncated = False
    while not (terminated or truncated):
        joint = env.joint_action_mask()
        flat = np.argmax(joint.ravel())
        _, _, terminated, truncated, _ = env.step(np.array(np.unravel_index(flat, joint.shape)))
    joint = env.joint_action_mask()
    expected = np.zeros_like(joint)
    expected[0, 0] = True
    np.testing.assert_array_equal(joint, expected)
    assert env.action_masks()[0] and not env.action_masks()[1 : env._nvec[0]].any()


def test_the_metrics_count_on_time_requests_as_the_reward_does():
    # A deadline of 10 ms on single-request batches: completions land within rounding of it,
    # where "completion - arrival <= sla" and "completion <= arrival + sla" can disagree.
    env = gym.make(
        "llmsched/BatchScheduling-v0", workload="mm1", latency="multibin-uniform", sla=0.01,
        n_requests=10, max_batch_size=1, load=0.05,
    ).unwrapped  # fmt: skip
    for seed in range(4):
        env.reset(seed=seed)
        total, terminated = 0.0, False
        while not terminated:
            queues = np.flatnonzero(env.action_masks()[1 : env.config.n_bins + 1])
            _, reward, terminated, _, info = env.step(np.array([queues[0] + 1, 0]))
            total += reward
        metrics = info["episode_metrics"]
        on_time = round(metrics["sla_attainment"] * metrics["arrived"])
        assert on_time == env.server.n_on_time
        assert total == on_time - (metrics["arrived"] - on_time)  # each late request: -1


def test_the_text_render_labels_each_bin_with_the_whole_lengths_it_holds():
    """``demo2``'s edges (64, 64.000001, 256) printed bin 1 as the empty ``[64, 64)``: a bin
    holds the whole predicted lengths ``lo <= x < hi``, which are ``ceil(lo) .. ceil(hi) - 1``."""
    env = gym.make("llmsched/BatchScheduling-v0", workload="demo2", render_mode="ansi")
    env.reset(seed=0)
    u = env.unwrapped
    assert u.bin_edges[1] == pytest.approx(64.000001)
    labels = re.findall(r"bin \d+ \[\s*(\d+),\s*(\d+|inf)\)", env.render())
    assert labels == [("0", "64"), ("64", "65"), ("65", "256"), ("256", "inf")]
