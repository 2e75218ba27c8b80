"""The compiled vector env of ``BatchScheduling-v0`` against the single env, step by step."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401  (registers the env ids)
from baselines import make_policy
from llmsched_env.envs.batch_vector_env import BatchSchedulingVectorEnv
from llmsched_env.envs.common import InvalidActionError
from llmsched_env.latency import ExponentialBatchService
from tests.conftest import make_workload

ENV_ID = "llmsched/BatchScheduling-v0"


def _random_actions(masks: np.ndarray, nvec: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random allowed bin choice and size level per sub-env."""
    n_choices = int(nvec[0])
    actions = []
    for mask in masks:
        choices = np.flatnonzero(mask[:n_choices])
        levels = np.flatnonzero(mask[n_choices:])
        actions.append([rng.choice(choices), rng.choice(levels)])
    return np.array(actions)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_requests": 120},
        {"n_requests": 120, "latency": "calibrated", "n_bins": 2},
        {"n_requests": 150, "dispatch_order": "oldest-in-time", "reward": "queue", "n_gpus": 3},
        {"n_requests": 150, "reward": "goodput-tokens", "load": 1.5, "max_steps": 25},
        {"n_requests": 100, "workload": "azure-conv-oracle", "load": 1.2},
        {"n_requests": 100, "workload": "demo3"},  # requests drawn whole in Python
        {"n_requests": 100, "workload": "mooncake-synthetic", "load": 0.8},
    ],
)
def test_each_sub_env_replays_the_single_env_bit_for_bit(kwargs: dict) -> None:
    n = 3
    envs = gym.make_vec(ENV_ID, num_envs=n, **kwargs)
    assert isinstance(envs.unwrapped, BatchSchedulingVectorEnv)
    singles = [gym.make(ENV_ID, **kwargs).unwrapped for _ in range(n)]
    obs, _ = envs.reset(seed=11)
    for i, single in enumerate(singles):
        np.testing.assert_array_equal(obs[i], single.reset(seed=11 + i)[0])
    rng = np.random.default_rng(0)
    nvec = np.asarray(envs.single_action_space.nvec)
    ended = np.zeros(n, dtype=bool)
    episodes = 0
    for t in range(400):
        masks = envs.unwrapped.action_masks()
        actions = _random_actions(masks, nvec, rng)
        forbidden = np.flatnonzero(~masks[t % n, : nvec[0]])
        if t % 5 == 0 and forbidden.size:
            actions[t % n, 0] = forbidden[0]  # remapped, as the single env does
        obs, rewards, terminated, truncated, info = envs.step(actions)
        for i, single in enumerate(singles):
            if ended[i]:  # autoreset (next step): the action is ignored
                np.testing.assert_array_equal(obs[i], single.reset()[0])
                assert rewards[i] == 0.0 and not terminated[i] and not truncated[i]
                ended[i] = False
                episodes += 1
                continue
            o, r, te, tr, single_info = single.step(actions[i])
            np.testing.assert_array_equal(obs[i], o)
            assert rewards[i] == r and terminated[i] == te and truncated[i] == tr
            assert info["invalid_action"][i] == single_info["invalid_action"]
            assert info["time_s"][i] == single_info["time_s"]
            assert info["gpu"][i] == single_info["gpu"]
            if te or tr:
                ended[i] = True
                assert info["_episode_metrics"][i]
                expected = single_info["episode_metrics"]
                got = {
                    key: values[i]
                    for key, values in info["episode_metrics"].items()
                    if not key.startswith("_")
                }
                assert got.keys() == expected.keys()
                np.testing.assert_array_equal(list(got.values()), list(expected.values()))
            else:
                np.testing.assert_array_equal(masks_now(envs)[i], single.action_masks())
        if t % 7 == 0:  # the sub-envs' Python side, read through the vector env
            _assert_sub_envs_match(envs, singles)
    assert episodes >= 3


def _assert_sub_envs_match(envs, singles) -> None:
    """What each sub-env reports in Python equals what the single env reports."""
    for name in ("action_masks", "finished_batches", "joint_action_mask"):
        for got, single in zip(envs.call(name), singles):
            expected = getattr(single, name)()
            if isinstance(expected, np.ndarray):
                np.testing.assert_array_equal(got, expected)
            else:
                assert got == expected, name
    for snapshot, single in zip(envs.call("queue_snapshot"), singles):
        for queue in range(single.config.n_bins):
            expected = single.queue_snapshot().ids[queue]
            np.testing.assert_array_equal(snapshot.ids[queue], expected)
    for info, single in zip(envs.get_attr("last_info"), singles):
        assert info.keys() == single.last_info.keys()
        for key, value in info.items():
            expected = single.last_info[key]
            if isinstance(value, dict):  # episode_metrics (nan where nothing was measured)
                assert repr(value) == repr(expected)
            else:
                np.testing.assert_array_equal(value, expected, err_msg=key)


def test_ended_episodes_metrics_take_gymnasiums_vector_info_form() -> None:
    """The metrics info equals what ``VectorEnv._add_info`` builds sub-env by sub-env."""
    n = 4
    envs = gym.make_vec(ENV_ID, num_envs=n, n_requests=40)
    envs.reset(seed=3)
    rng = np.random.default_rng(2)
    nvec = np.asarray(envs.single_action_space.nvec)
    checked = 0
    for _ in range(300):
        _, _, terminated, truncated, info = envs.step(
            _random_actions(envs.unwrapped.action_masks(), nvec, rng)
        )
        ended = np.flatnonzero(terminated | truncated)
        if not ended.size:
            assert "episode_metrics" not in info and "_episode_metrics" not in info
            continue
        expected: dict = {}
        for i in ended:
            metrics = envs.unwrapped.envs[int(i)].episode_metrics()
            expected = envs.unwrapped._add_info(expected, {"episode_metrics": metrics}, int(i))
        assert list(info["episode_metrics"]) == list(expected["episode_metrics"])
        for key, values in expected["episode_metrics"].items():
            got = info["episode_metrics"][key]
            assert got.dtype == values.dtype, key
            np.testing.assert_array_equal(got, values)
        np.testing.assert_array_equal(info["_episode_metrics"], expected["_episode_metrics"])
        checked += len(ended)
    assert checked >= n


def masks_now(envs: gym.vector.VectorEnv) -> np.ndarray:
    return envs.unwrapped.action_masks()


def test_masks_are_batched_and_always_allow_an_action() -> None:
    envs = gym.make_vec(ENV_ID, num_envs=4, n_requests=60)
    envs.reset(seed=0)
    nvec = np.asarray(envs.single_action_space.nvec)
    rng = np.random.default_rng(1)
    for _ in range(300):
        masks = envs.unwrapped.action_masks()
        assert masks.shape == (4, int(nvec.sum()))
        assert masks[:, : nvec[0]].any(axis=1).all() and masks[:, nvec[0] :].any(axis=1).all()
        np.testing.assert_array_equal(np.stack(envs.call("action_masks")), masks)
        envs.step(_random_actions(masks, nvec, rng))


def test_seeds_and_options_reach_every_sub_env() -> None:
    envs = gym.make_vec(ENV_ID, num_envs=2, n_requests=40)
    a, _ = envs.reset(seed=[5, 6])
    b, _ = envs.reset(seed=5)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="2 seeds"):
        envs.reset(seed=[1, 2, 3])
    for seed, shown in ((1.5, "1.5"), ("x", "'x'"), (True, "True"), ([0, 2.5], "2.5")):
        with pytest.raises(ValueError, match=rf"an int, None or a sequence of 2 seeds.*{shown}"):
            envs.reset(seed=seed)
    c, _ = envs.reset(seed=np.array([5, 6]))  # numpy seeds in an array reached gymnasium
    np.testing.assert_array_equal(a, c)
    sync = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="sync", n_requests=40)
    sync.reset(seed=5)
    assert envs.np_random_seed == sync.np_random_seed == (5, 6)  # as SyncVectorEnv reports
    draws = [generator.random() for generator in envs.np_random]
    assert draws == [generator.random() for generator in sync.np_random]
    # The load option alone keeps the window cut compiled; the others draw in Python.
    for options in ({"load": 1.7}, {"load": 0.5, "start": 3}, {"arrival_cv": 2.0}):
        loaded, _ = envs.reset(seed=5, options=options)
        for i, sub_env in enumerate(envs.unwrapped.envs):
            single = gym.make(ENV_ID, n_requests=40).unwrapped
            np.testing.assert_array_equal(loaded[i], single.reset(seed=5 + i, options=options)[0])
            assert sub_env.episode_arrival_rate_rps == single.episode_arrival_rate_rps
            np.testing.assert_array_equal(
                sub_env.server.workload.arrival_s, single.server.workload.arrival_s
            )


def test_a_reset_mask_resets_only_the_sub_envs_it_marks() -> None:
    """As Gymnasium's SyncVectorEnv: the marked sub-envs restart with their seeds, the others go
    on with their episodes, bit for bit."""
    kwargs = {"n_requests": 40}
    envs = gym.make_vec(ENV_ID, num_envs=3, **kwargs)
    sync = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="sync", **kwargs)
    actions = np.zeros((3, 2), dtype=int)
    for vector in (envs, sync):
        vector.reset(seed=0)
        vector.step(actions)
    mask = np.array([True, False, True])
    obs, _ = envs.reset(seed=10, options={"reset_mask": mask})
    expected, _ = sync.reset(seed=10, options={"reset_mask": mask})
    np.testing.assert_array_equal(obs, expected)
    for _ in range(5):
        a = envs.step(actions)
        b = sync.step(actions)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    for bad, message in (
        (np.array([True, False]), "boolean numpy array of shape"),
        ([True, False, True], "boolean numpy array of shape"),
        (np.zeros(3, dtype=bool), "marks no sub-env"),
    ):
        with pytest.raises(ValueError, match=message):
            envs.reset(options={"reset_mask": bad})
    fresh = gym.make_vec(ENV_ID, num_envs=3, **kwargs)
    with pytest.raises(ValueError, match="reset them all first"):
        fresh.reset(options={"reset_mask": mask})


def test_autoreset_modes_other_than_next_step_are_refused_by_name() -> None:
    from gymnasium.vector import AutoresetMode

    for mode in (AutoresetMode.NEXT_STEP, "NextStep"):
        BatchSchedulingVectorEnv(2, autoreset_mode=mode, n_requests=30)
    for mode in (AutoresetMode.SAME_STEP, AutoresetMode.DISABLED, "same-step"):
        with pytest.raises(ValueError, match="in AutoresetMode.NEXT_STEP mode only"):
            gym.make_vec(ENV_ID, num_envs=2, autoreset_mode=mode)


def test_a_failed_reset_leaves_nothing_to_step() -> None:
    envs = gym.make_vec(ENV_ID, num_envs=2, n_requests=40)
    envs.reset(seed=0)
    envs.step(np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="lod"):
        envs.reset(seed=1, options={"lod": 1.0})
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        envs.step(np.zeros((2, 2), dtype=int))
    envs.reset(seed=1)  # a good reset makes it usable again
    envs.step(np.zeros((2, 2), dtype=int))


def test_bad_actions_name_the_sub_env() -> None:
    envs = gym.make_vec(ENV_ID, num_envs=2, n_requests=40)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        envs.step(np.zeros((3, 2), dtype=int))
    with pytest.raises(ValueError, match="sub-env 1 is outside the action space"):
        envs.step(np.array([[0, 0], [0, 99]]))
    with pytest.raises(ValueError, match="integers"):
        envs.step(np.array([[0.5, 0], [0, 0]]))
    with pytest.raises(ValueError, match="integers"):
        envs.step(np.array([[np.inf, 0], [0, 0]]))
    # Values too large for int64 are named as given, not as the cast would wrap them.
    with pytest.raises(ValueError, match=r"sub-env 0 is outside .* got 1e\+30"):
        envs.step(np.array([[1e30, 0], [0, 0]]))
    with pytest.raises(ValueError, match=r"got 9223372036854775808"):
        envs.step(np.array([[2**63, 0], [0, 0]], dtype=np.uint64))
    # numpy would read the bool as bin choice 1.
    with pytest.raises(ValueError, match=r"integers, not booleans"):
        envs.step([[True, 0], [0, 0]])


def test_forbidden_actions_raise_when_asked() -> None:
    envs = gym.make_vec(ENV_ID, num_envs=2, n_requests=40, invalid_action="raise")
    envs.reset(seed=0)
    masks = envs.unwrapped.action_masks()
    nvec = np.asarray(envs.single_action_space.nvec)
    forbidden = np.flatnonzero(~masks[1, : nvec[0]])
    assert forbidden.size  # at the first decision most bins are empty
    actions = _random_actions(masks, nvec, np.random.default_rng(0))
    actions[1, 0] = forbidden[0]
    with pytest.raises(InvalidActionError, match="sub-env 1"):
        envs.step(actions)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="num_envs"):
        BatchSchedulingVectorEnv(0)
    with pytest.raises(ValueError, match="does not render"):
        BatchSchedulingVectorEnv(2, render_mode="ansi")
    with pytest.raises(ValueError, match="compiled batch timing"):
        BatchSchedulingVectorEnv(2, latency=ExponentialBatchService(mean_s=0.4))
    envs = BatchSchedulingVectorEnv(2, n_requests=30)
    with pytest.raises(RuntimeError, match="reset"):
        envs.step(np.zeros((2, 2), dtype=int))


def test_sync_and_async_modes_still_give_gymnasium_vector_envs() -> None:
    sync = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="sync", n_requests=40)
    assert isinstance(sync, gym.vector.SyncVectorEnv)


def test_threads_step_groups_of_sub_envs_with_the_same_episodes() -> None:
    def run(threads: int) -> list[tuple[np.ndarray, ...]]:
        envs = gym.make_vec(
            ENV_ID, num_envs=5, threads=threads, n_requests=60, dispatch_order="oldest-in-time"
        )
        assert envs.unwrapped.threads == threads
        rng = np.random.default_rng(1)
        nvec = np.asarray(envs.single_action_space.nvec)
        steps = [envs.reset(seed=3)]
        for _ in range(120):  # several episodes each, with automatic resets
            actions = _random_actions(envs.unwrapped.action_masks(), nvec, rng)
            obs, rewards, terminated, truncated, info = envs.step(actions)
            steps.append((obs, rewards, terminated, truncated, info["gpu"], info["time_s"]))
        return steps

    serial, grouped = run(1), run(2)
    for one, other in zip(serial[1:], grouped[1:]):
        for a, b in zip(one, other):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(serial[0][0], grouped[0][0])


@pytest.mark.parametrize("threads", [0, 1.5, True, "2"])
def test_bad_threads_are_refused(threads) -> None:
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        gym.make_vec(ENV_ID, num_envs=2, threads=threads, n_requests=40)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_pickled_or_copied_vector_env_continues_as_the_original(threads: int) -> None:
    import copy
    import pickle

    envs = gym.make_vec(ENV_ID, num_envs=4, threads=threads, n_requests=40).unwrapped
    rng = np.random.default_rng(0)
    nvec = np.asarray(envs.single_action_space.nvec)
    envs.reset(seed=3)
    for _ in range(25):
        envs.step(_random_actions(envs.action_masks(), nvec, rng))
    copies = [pickle.loads(pickle.dumps(envs)), copy.deepcopy(envs)]
    for _ in range(150):  # several episodes each: the copies reset as the original does
        actions = _random_actions(envs.action_masks(), nvec, rng)
        expected = envs.step(actions)
        for other in copies:
            got = other.step(actions)
            for a, b in zip(expected[:4], got[:4]):
                np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(expected[4]["time_s"], got[4]["time_s"])
            np.testing.assert_array_equal(envs.action_masks(), other.action_masks())
    assert [env.server.now for env in copies[0].envs] == [env.server.now for env in envs.envs]


@pytest.mark.parametrize("policy", ["random", "multibin-dynamic", "multibin-wc"])
def test_heuristics_built_once_on_the_sub_envs_act_as_on_the_single_envs(policy: str) -> None:
    """A sub-env kept from ``envs.envs`` reads as the single env does after the same steps.

    Its last_info, masks, queue snapshot and finished batches are brought up to date when
    read, so a heuristic built on it once and driven through ``predict`` acts as it would in
    the sync vector env (they read stale values before: `random` sent masked actions).
    """
    kwargs = {"n_requests": 60, "load": 1.2}
    envs = gym.make_vec(ENV_ID, num_envs=3, **kwargs)
    sync = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="sync", **kwargs)
    obs, _ = envs.reset(seed=11)
    sync_obs, _ = sync.reset(seed=11)
    ours = [make_policy(policy, env) for env in envs.unwrapped.envs]
    theirs = [make_policy(policy, env) for env in sync.unwrapped.envs]
    for _ in range(120):
        masks = envs.action_masks()
        actions = np.stack([p.predict(o)[0] for p, o in zip(ours, obs)])
        expected = np.stack([p.predict(o)[0] for p, o in zip(theirs, sync_obs)])
        np.testing.assert_array_equal(actions, expected)
        assert masks[np.arange(3), actions[:, 0]].all()  # never a masked bin choice
        obs, rewards, *_ = envs.step(actions)
        sync_obs, sync_rewards, *_ = sync.step(expected)
        np.testing.assert_array_equal(rewards, sync_rewards)
        np.testing.assert_array_equal(obs, sync_obs)


def test_a_kept_sub_env_is_copied_as_it_is_now() -> None:
    import copy
    import pickle

    kwargs = {"n_requests": 60, "load": 1.2}
    envs = gym.make_vec(ENV_ID, num_envs=2, **kwargs).unwrapped
    single = gym.make(ENV_ID, **kwargs).unwrapped
    envs.reset(seed=5)
    single.reset(seed=5)
    kept = envs.envs[0]
    for _ in range(5):
        action = _random_actions(envs.action_masks(), envs._nvec, np.random.default_rng(0))
        envs.step(action)
        single.step(action[0])
    for other in (copy.deepcopy(kept), pickle.loads(pickle.dumps(kept))):
        assert other.last_info["time_s"] == single.last_info["time_s"]
        np.testing.assert_array_equal(other.action_masks(), single.action_masks())
        action = np.array([int(np.flatnonzero(single.action_masks()[1:5])[0]) + 1, 3])
        assert other.step(action)[1] == copy.deepcopy(single).step(action)[1]


def test_setting_a_sub_env_attribute_is_refused_by_name() -> None:
    envs = gym.make_vec(ENV_ID, num_envs=2, n_requests=40)
    with pytest.raises(AttributeError, match="cannot set 'config' on the sub-envs"):
        envs.unwrapped.set_attr("config", [None, None])


def test_max_episode_steps_truncates_as_in_the_sync_vector_env() -> None:
    compiled = gym.make_vec(ENV_ID, num_envs=3, max_episode_steps=4, n_requests=60)
    sync = gym.make_vec(
        ENV_ID, num_envs=3, max_episode_steps=4, n_requests=60, vectorization_mode="sync"
    )
    rng = np.random.default_rng(2)
    nvec = np.asarray(compiled.single_action_space.nvec)
    np.testing.assert_array_equal(compiled.reset(seed=5)[0], sync.reset(seed=5)[0])
    truncations = 0
    for _ in range(12):
        actions = _random_actions(compiled.unwrapped.action_masks(), nvec, rng)
        got, expected = compiled.step(actions), sync.step(actions)
        for a, b in zip(got[:4], expected[:4]):
            np.testing.assert_array_equal(a, b)
        truncations += int(got[3].sum())
    assert truncations == 6  # every sub-env, after steps 4 and 9 (step 5 is its reset)
    with pytest.raises(ValueError, match="max_episode_steps=3 and max_steps=4 disagree"):
        gym.make_vec(ENV_ID, num_envs=2, max_episode_steps=3, max_steps=4)


def test_a_kept_sub_env_follows_its_resets_and_a_kept_server_keeps_its_episode() -> None:
    """A sub-env's Python side, made when read, is its current episode's; an old one stays.

    The compiled step starts each new episode in arrays the sub-env reuses, unless the Python
    side of the old episode was made on them: then the old server keeps showing its episode,
    as the single env's does after ``reset``.
    """
    kwargs = {"n_requests": 30, "load": 1.5}
    envs = gym.make_vec(ENV_ID, num_envs=2, **kwargs).unwrapped
    single = gym.make(ENV_ID, **kwargs).unwrapped
    envs.reset(seed=4)
    single.reset(seed=4)
    kept = envs.envs[0]
    rng = np.random.default_rng(1)
    for _ in range(3):  # three episodes of sub-env 0
        old_server = kept.server
        while True:
            actions = _random_actions(envs.action_masks(), envs._nvec, rng)
            _, _, terminated, truncated, _ = envs.step(actions)
            single.step(actions[0])
            if terminated[0] or truncated[0]:
                break
        ended_at = old_server.now
        envs.step(actions)  # the autoreset
        single.reset()
        assert kept.server is not old_server and old_server.now == ended_at
        np.testing.assert_array_equal(kept.server.state.order, single.server.state.order)
        assert kept.last_info.keys() == single.last_info.keys()
        assert kept.episode_arrival_rate_rps == single.episode_arrival_rate_rps
        assert repr(kept.episode_metrics()) == repr(single.episode_metrics())


def test_episodes_of_another_length_and_without_a_decision_reset_as_the_single_env() -> None:
    envs = gym.make_vec(ENV_ID, num_envs=2, n_requests=40)
    single = gym.make(ENV_ID, n_requests=40).unwrapped
    envs.reset(seed=0)
    single.reset(seed=0)
    workload = single.server.workload.window(0, 25)  # fewer requests than the sub-envs' own
    obs, _ = envs.reset(seed=0, options={"workload": workload})
    np.testing.assert_array_equal(obs[0], single.reset(seed=0, options={"workload": workload})[0])
    rng = np.random.default_rng(0)
    ended = False
    while not ended:  # the whole 25-request episode, in the arrays made for it
        actions = _random_actions(envs.action_masks(), envs.single_action_space.nvec, rng)
        obs, rewards, terminated, truncated, _ = envs.step(actions)
        o, r, te, tr, _ = single.step(actions[0])
        np.testing.assert_array_equal(obs[0], o)
        assert (rewards[0], terminated[0], truncated[0]) == (r, te, tr)
        ended = te or tr
    too_large = make_workload(np.arange(3.0), np.full(3, single.kv_capacity_tokens), np.full(3, 10))
    with pytest.raises(ValueError) as expected:
        single.reset(seed=0, options={"workload": too_large})
    with pytest.raises(ValueError, match="no scheduling decision") as error:
        envs.reset(seed=0, options={"workload": too_large})
    assert str(error.value) == str(expected.value)
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        envs.step(np.zeros((2, 2), dtype=int))
