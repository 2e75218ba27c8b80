import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest

from llmsched_env.envs.queue_snapshot import QueueSnapshot, read_only


def test_behaves_like_a_tuple_of_read_only_arrays():
    snapshot = QueueSnapshot(read_only(np.arange(10)), (0, 4, 4), (2, 4, 7))
    assert len(snapshot) == 3
    assert [a.tolist() for a in snapshot] == [[0, 1], [], [4, 5, 6]]
    assert snapshot[-1].tolist() == [4, 5, 6]
    assert [a.tolist() for a in snapshot[1:]] == [[], [4, 5, 6]]
    assert np.concatenate(snapshot).tolist() == [0, 1, 4, 5, 6]
    with pytest.raises(ValueError, match="read-only"):
        snapshot[0][0] = 99
    with pytest.raises(IndexError):
        snapshot[3]


def test_newest_is_the_last_entry_of_each_bin():
    snapshot = QueueSnapshot(read_only(np.arange(10, 20)), (0, 4, 4, 9), (2, 4, 7, 10))
    assert snapshot.newest() == [11, None, 16, 19]
    assert snapshot.newest() == [q[-1].item() if len(q) else None for q in snapshot]
    assert all(type(v) is int for v in snapshot.newest() if v is not None)


def test_needs_a_read_only_array():
    with pytest.raises(ValueError, match="read-only array"):
        QueueSnapshot(np.arange(3), (0,), (3,))


def test_copies_are_itself_and_pickling_keeps_only_the_waiting_entries():
    snapshot = QueueSnapshot(read_only(np.arange(1000.0)), (10, 500), (12, 501))
    assert copy.copy(snapshot) is snapshot and copy.deepcopy(snapshot) is snapshot
    restored = pickle.loads(pickle.dumps(snapshot))
    assert restored == snapshot
    assert len(pickle.dumps(snapshot)) < 1000
    assert snapshot != QueueSnapshot.from_arrays([np.array([10.0, 11.0]), np.array([0.0])])


@pytest.mark.parametrize("dispatch_order", ["oldest", "oldest-in-time"])
def test_a_snapshot_kept_from_an_earlier_step_still_shows_that_steps_queues(dispatch_order):
    # Under "oldest-in-time" dispatches reorder the queued requests' positions (sla 1 s makes
    # requests late while they wait); the snapshots of earlier steps must not see that.
    env = gym.make(
        "llmsched/BatchScheduling-v0",
        workload="demo2",
        arrival_rate=8.0,
        n_requests=60,
        sla=1.0,
        dispatch_order=dispatch_order,
    )
    env.reset(seed=3)
    snapshot = env.unwrapped.queue_snapshot()
    kept = [snapshot]
    frozen = [[a.copy() for a in snapshot.ids]]
    moves = 0
    for _ in range(20):
        _, _, terminated, _, _ = env.step(np.array([1, 0]))
        lo, hi = env.unwrapped.server.last_moved
        moves += hi > lo
        snapshot = env.unwrapped.queue_snapshot()
        kept.append(snapshot)
        frozen.append([a.copy() for a in snapshot.ids])
        if terminated:
            break
    assert (moves > 0) == (dispatch_order == "oldest-in-time")
    for snapshot, expected in zip(kept, frozen):
        assert [a.tolist() for a in snapshot.ids] == [a.tolist() for a in expected]
    w = env.unwrapped.server.workload
    for snapshot in kept:
        columns = (snapshot.arrival_s, snapshot.predicted_output_tokens, snapshot.prompt_tokens)
        for ids, times, predicted, prompt in zip(snapshot.ids, *columns):
            assert np.array_equal(w.arrival_s[ids], times)
            assert np.array_equal(w.predicted_output_tokens[ids], predicted)
            assert np.array_equal(w.prompt_tokens[ids], prompt)


def test_continuous_snapshot_views_do_not_copy_and_survive_later_steps():
    env = gym.make(
        "llmsched/ContinuousBatching-v0",
        workload="demo2",
        latency="demo2",
        arrival_rate=50.0,
        n_requests=60,
    )
    env.reset(seed=0)
    server = env.unwrapped.server
    for _ in range(5):
        env.step(np.array([4, 4, 5]))
    snapshot = env.unwrapped.queue_snapshot()
    assert snapshot.queued.base is not None and not snapshot.queued.flags.writeable
    assert np.shares_memory(snapshot.queued, server.queue_order)
    kept = snapshot.waiting().tolist()
    assert kept == server.waiting_ids().tolist() and snapshot.n_waiting == server.n_waiting
    np.testing.assert_array_equal(
        snapshot.waiting_arrival_s(), server.workload.arrival_s[snapshot.waiting()]
    )
    for _ in range(5):
        env.step(np.array([4, 4, 5]))
    assert snapshot.waiting().tolist() == kept  # a kept snapshot still shows its step
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    assert not clone.queue_snapshot().queued.flags.writeable


def _continuous_with_a_queue() -> gym.Env:
    """``ContinuousBatching-v0`` overloaded until at least three prompts wait."""
    env = gym.make("llmsched/ContinuousBatching-v0", n_requests=100, load=3.0)
    u = env.unwrapped
    env.reset(seed=0)
    while u.queue_snapshot().queued.size < 3:
        env.step(np.argwhere(u.joint_action_mask())[0])
    return env


def test_continuous_snapshot_arrays_cannot_be_made_writable():
    """Writing through a snapshot once rewrote the server's queue (``[0 0 0]``): ``queued`` was
    a view of a writable array, ``running`` a view of the server's own array."""
    env = _continuous_with_a_queue()
    u = env.unwrapped
    while not u.queue_snapshot().running.size:
        env.step(np.argwhere(u.joint_action_mask())[-1])
    snapshot = u.queue_snapshot()
    for name in ("queued", "queued_arrival_s", "queued_prompt_tokens"):
        array = getattr(snapshot, name)
        with pytest.raises(ValueError, match="WRITEABLE"):
            array.flags.writeable = True
    # ``running`` is a read-only copy: made writable, writing to it leaves the server alone.
    running = u.server.running[snapshot.gpu].copy()
    with pytest.raises(ValueError, match="read-only"):
        snapshot.running[0] = -1
    snapshot.running.flags.writeable = True
    snapshot.running[:] = -1
    assert np.array_equal(u.server.running[snapshot.gpu], running)


def test_continuous_snapshots_compare_by_content():
    env = _continuous_with_a_queue()
    u = env.unwrapped
    first = u.queue_snapshot()
    assert first == u.queue_snapshot() and first == copy.deepcopy(first)
    assert (first != u.queue_snapshot()) is False
    env.step(np.argwhere(u.joint_action_mask())[-1])
    assert first != u.queue_snapshot()
    with pytest.raises(TypeError):
        hash(first)


@pytest.mark.parametrize(
    "env_id", ["llmsched/BatchScheduling-v0", "llmsched/ContinuousBatching-v0"]
)
def test_no_gpu_is_deciding_once_an_episode_is_truncated(env_id):
    """After ``max_steps`` the snapshot and the text render named a deciding GPU (``info`` -1)."""
    env = gym.make(env_id, n_requests=50, max_steps=3, render_mode="ansi")
    u = env.unwrapped
    env.reset(seed=0)
    for _ in range(3):
        action = (
            np.argwhere(u.joint_action_mask())[-1]
            if hasattr(u, "joint_action_mask")
            else [
                int(np.flatnonzero(u.action_masks()[: u.action_space.nvec[0]])[-1]),
                int(u.action_space.nvec[1] - 1),
            ]
        )
        *_, truncated, info = env.step(action)
    assert truncated and info["gpu"] == -1
    assert "deciding" not in env.render()
    if env_id.endswith("ContinuousBatching-v0"):
        snapshot = u.queue_snapshot()
        assert snapshot.gpu == -1 and snapshot.running.size == 0 and snapshot.prefilling == ()
