"""Every env runs whole episodes in vector envs (Gymnasium's and SB3's), with autoreset.

Vector envs stack every ``info`` value across envs, so ``info`` must hold fixed-shape values
only; and they ask for ``action_masks`` after every step, episode ends included, so every mask
must allow at least one value of every action component.
"""

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401  (registers the env ids)

BATCH = "llmsched/BatchScheduling-v0"
CONTINUOUS = "llmsched/ContinuousBatching-v0"
SMALL = dict(workload="demo2", latency="demo2", arrival_rate=4.0, n_requests=12)
ENVS = [(BATCH, dict(workload="demo2", arrival_rate=2.0, n_requests=12)), (CONTINUOUS, SMALL)]


def check_mask(mask: np.ndarray, nvec: np.ndarray) -> None:
    """Every component group of the concatenated mask allows at least one value."""
    assert mask.dtype == bool and mask.shape == (int(nvec.sum()),)
    bounds = np.cumsum([0, *nvec.tolist()])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        assert mask[lo:hi].any(), f"component group {lo}:{hi} of mask {mask.tolist()} is empty"


def masked_actions(masks, nvec: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One allowed value per component for each env, drawn uniformly."""
    bounds = np.cumsum([0, *nvec.tolist()])
    return np.array(
        [
            [rng.choice(np.flatnonzero(m[lo:hi])) for lo, hi in zip(bounds[:-1], bounds[1:])]
            for m in masks
        ],
        dtype=np.int64,
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("env_id", "kwargs"), ENVS)
def test_gymnasium_vector_env_runs_episodes_with_valid_masks(env_id, kwargs, mode):
    vec = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode, **kwargs)
    nvec = vec.single_action_space.nvec
    rng = np.random.default_rng(0)
    vec.reset(seed=0)
    episode_ends = 0
    for _ in range(2000):
        masks = vec.call("action_masks")
        for mask in masks:
            check_mask(mask, nvec)
        obs, reward, terminated, truncated, info = vec.step(masked_actions(masks, nvec, rng))
        assert obs.shape == (2, *vec.single_observation_space.shape)
        assert info["action_mask"].shape == (2, int(nvec.sum()))
        episode_ends += int(np.sum(terminated | truncated))
        if episode_ends >= 4:
            break
    for mask in vec.call("action_masks"):
        check_mask(mask, nvec)
    vec.close()
    assert episode_ends >= 4


@pytest.mark.parametrize(("env_id", "kwargs"), ENVS)
def test_sb3_dummy_vec_env_runs_episodes_with_valid_masks(env_id, kwargs):
    vec_env = pytest.importorskip("stable_baselines3.common.vec_env")
    vec = vec_env.DummyVecEnv([lambda: gym.make(env_id, **kwargs)] * 2)
    nvec = vec.action_space.nvec
    rng = np.random.default_rng(0)
    vec.seed(0)
    vec.reset()
    episode_ends = 0
    for _ in range(2000):
        masks = vec.env_method("action_masks")
        for mask in masks:
            check_mask(mask, nvec)
        _, _, dones, infos = vec.step(masked_actions(masks, nvec, rng))
        episode_ends += int(dones.sum())
        if episode_ends >= 4:
            break
    assert episode_ends >= 4
    assert all("episode_metrics" in infos[i] for i in np.flatnonzero(dones))
    vec.close()


@pytest.mark.parametrize("kv_allocation", ["reserve", "paged"])
def test_continuous_info_holds_fixed_shape_values_only(kv_allocation):
    env = gym.make(CONTINUOUS, **SMALL, kv_allocation=kv_allocation)
    _, info = env.reset(seed=0)
    shapes = {}
    done = False
    while True:
        for key, value in info.items():
            if key == "episode_metrics":
                assert all(np.isscalar(v) for v in value.values())
                continue
            if isinstance(value, np.ndarray):
                assert shapes.setdefault(key, value.shape) == value.shape, key
            else:
                assert value is None or isinstance(
                    value, int | float | bool | str | tuple | np.number | np.bool_
                ), (key, type(value))
        if done:
            break
        joint = env.unwrapped.joint_action_mask()
        action = np.array(np.unravel_index(np.argmax(joint), joint.shape))
        _, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    assert shapes["applied_action"] == (3,)


def test_finished_episode_masks_allow_wait_only():
    """After the last step no decision is due: WAIT alone is allowed, in both mask forms."""
    for env_id, kwargs in ENVS:
        env = gym.make(env_id, **kwargs)
        env.reset(seed=0)
        terminated = truncated = False
        while not (terminated or truncated):
            joint = env.unwrapped.joint_action_mask()
            action = np.unravel_index(np.flatnonzero(joint)[-1], joint.shape)
            _, _, terminated, truncated, info = env.step(np.array(action))
        mask = env.unwrapped.action_masks()
        np.testing.assert_array_equal(mask, info["action_mask"])
        nvec = env.action_space.nvec
        check_mask(mask, nvec)
        assert mask[0] and not mask[1 : nvec[0]].any(), env_id


ROUTING = "llmsched/Routing-v0"
ROUTING_KWARGS = dict(n_replicas=3, n_requests=30)


@pytest.mark.parametrize("mode", ["sync", "async", "sb3-dummy"])
def test_routing_runs_episodes_in_vector_envs_with_valid_masks(mode):
    # Routing-v0's action is one Discrete replica index: its mask has one group.
    if mode == "sb3-dummy":
        vec_env = pytest.importorskip("stable_baselines3.common.vec_env")
        vec = vec_env.DummyVecEnv([lambda: gym.make(ROUTING, **ROUTING_KWARGS)] * 2)
        vec.seed(0)
        vec.reset()
        n_actions = vec.action_space.n
    else:
        vec = gym.make_vec(ROUTING, num_envs=2, vectorization_mode=mode, **ROUTING_KWARGS)
        vec.reset(seed=0)
        n_actions = vec.single_action_space.n
    rng = np.random.default_rng(0)
    episode_ends = 0
    for _ in range(500):
        masks = vec.env_method("action_masks") if mode == "sb3-dummy" else vec.call("action_masks")
        for mask in masks:
            assert mask.shape == (n_actions,) and mask.any()
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
        if mode == "sb3-dummy":
            _, _, dones, infos = vec.step(actions)
            assert all("episode_metrics" in infos[i] for i in np.flatnonzero(dones))
        else:
            _, _, terminated, truncated, _ = vec.step(actions)
            dones = terminated | truncated
        episode_ends += int(np.sum(dones))
        if episode_ends >= 4:
            break
    vec.close()
    assert episode_ends >= 4
