"""BatchMixtureEnv: per-episode component, load and burstiness; delegation; determinism."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import llmsched_env  # noqa: F401  (registers the env ids)
from llmsched_env.envs import BatchSchedulingEnv, FlattenAction
from llmsched_env.envs.mixture import BatchMixtureEnv

COMPONENTS = [{"workload": "azure-conv"}, {"workload": "burstgpt-synthetic"}]


def _mixture(**kwargs):
    return BatchMixtureEnv(COMPONENTS, n_requests=120, **kwargs)


def _run(env, seed, n_episodes=4):
    """Episode descriptions and every observation and reward of ``n_episodes`` episodes."""
    episodes, trajectory = [], []
    env.reset(seed=seed)
    for _ in range(n_episodes):
        obs, info = env.reset()
        episodes.append((info["component"], info["load"], info["arrival_cv"]))
        trajectory.append(obs)
        done = False
        while not done:
            mask = env.action_masks()
            # The fullest allowed bin at the largest size, else WAIT.
            action = np.array([int(np.flatnonzero(mask[: len(mask) - 7])[-1]), 6])
            obs, reward, terminated, truncated, _ = env.step(action)
            trajectory.extend([obs, np.float32([reward])])
            done = terminated or truncated
    return episodes, trajectory


def test_both_env_checkers_pass():
    sb3_env_checker = pytest.importorskip("stable_baselines3.common.env_checker")

    check_env(_mixture(), skip_render_check=True)
    sb3_env_checker.check_env(_mixture())


def test_same_seed_same_episodes_bit_for_bit_and_the_draws_cover_the_ranges():
    a_episodes, a = _run(_mixture(), seed=7, n_episodes=12)
    b_episodes, b = _run(_mixture(), seed=7, n_episodes=12)
    assert a_episodes == b_episodes
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    c_episodes, _ = _run(_mixture(), seed=8, n_episodes=12)
    assert c_episodes != a_episodes
    assert {name for name, _, _ in a_episodes} == {"azure-conv", "burstgpt-synthetic"}
    assert all(0.6 <= load <= 1.5 for _, load, _ in a_episodes)
    cvs = [cv for _, _, cv in a_episodes]
    assert None in cvs and all(1.0 <= cv <= 4.0 for cv in cvs if cv is not None)


def test_an_episode_is_the_component_env_reset_with_the_drawn_load_and_cv():
    env = _mixture()
    obs, info = env.reset(seed=3)
    active = env.active
    assert active is env.components[info["component_index"]]
    assert info["arrival_rate_rps"] == pytest.approx(info["load"] * active.capacity_rps)
    # The same episode from a plain env of the component, built with that load.
    workload = active.server.workload
    plain = BatchSchedulingEnv(workload=info["component"], n_requests=120, load=info["load"])
    rng_state = np.random.default_rng(3)  # the mixture's draws, replayed
    rng_state.integers(2), rng_state.uniform(), rng_state.random(), rng_state.uniform()
    seed = int(rng_state.integers(2**63 - 1))
    options = {} if info["arrival_cv"] is None else {"arrival_cv": info["arrival_cv"]}
    plain_obs, _ = plain.reset(seed=seed, options=options)
    np.testing.assert_array_equal(plain.server.workload.arrival_s, workload.arrival_s)
    np.testing.assert_array_equal(plain_obs, obs)


def test_pinned_options_and_their_errors():
    env = _mixture()
    _, info = env.reset(seed=0, options={"component": "burstgpt-synthetic", "load": 0.9})
    assert (info["component"], info["load"]) == ("burstgpt-synthetic", 0.9)
    _, info = env.reset(seed=0, options={"component": 0, "arrival_cv": None})
    assert (info["component"], info["arrival_cv"]) == ("azure-conv", None)
    with pytest.raises(ValueError, match=r"options\['component'\] must be an index in \[0, 1\]"):
        env.reset(seed=0, options={"component": "sharegpt"})
    with pytest.raises(ValueError, match=r"unknown reset options \['start'\]"):
        env.reset(seed=0, options={"start": 3})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"load": (1.5, 0.6)}, r"load must satisfy 0 < low <= high"),
        ({"load": 1.0}, r"load must be a pair"),
        ({"load": "12"}, r"load must be a pair"),
        ({"load": ("0.5", "1.0")}, r"load must be a pair"),  # float() read the strings
        ({"load": (True, True)}, r"load must be a pair"),
        ({"end_when_settled": 1}, r"end_when_settled must be True or False, got 1"),
        ({"arrival_cv": (0.0, 2.0)}, r"arrival_cv must satisfy"),
        ({"arrival_cv": (1e-160, 2.0)}, r"arrival_cv must lie in \[0.001, 1000\]"),
        ({"source_arrivals": 1.5}, r"source_arrivals must be a probability"),
        ({"arrival_rate": 3.0}, r"arrival_rate=3.0 may not be given"),
        ({"render_mode": "human"}, r"BatchMixtureEnv: render_mode must be one of"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _mixture(**kwargs)


def test_components_must_have_equal_spaces_and_may_not_set_the_load():
    with pytest.raises(ValueError, match=r"same spaces.*component 1 \(burstgpt-synthetic\)"):
        BatchMixtureEnv(
            [{"workload": "azure-conv"}, {"workload": "burstgpt-synthetic", "n_gpus": 4}]
        )
    with pytest.raises(ValueError, match=r"components\[0\] sets load=1.0"):
        BatchMixtureEnv([{"workload": "azure-conv", "load": 1.0}])
    with pytest.raises(ValueError, match="at least one component"):
        BatchMixtureEnv([])


def test_queries_go_to_the_active_component_and_flatten_action_works():
    env = FlattenAction(_mixture())
    _, info = env.reset(seed=1)
    core = env.unwrapped
    assert np.array_equal(env.action_masks(), core.active.joint_action_mask().ravel())
    assert core.last_info["component"] == info["component"]
    assert len(core.queue_snapshot().ids) == core.active.config.n_bins
    assert len(core.request_records()) == 120
    obs, *_ = env.step(int(np.flatnonzero(env.action_masks())[-1]))
    assert obs.shape == core.observation_space.shape


def test_end_when_settled_wraps_each_component():
    env = _mixture(end_when_settled=True, load=(1.5, 1.5))
    env.reset(seed=0)
    settled = False
    for _ in range(6):
        env.reset()
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(
                np.array([0, 0]) if env.action_masks()[0] else np.array([1, 6])
            )
            done = terminated or truncated
        settled |= bool(info.get("settled"))
    assert settled


@pytest.mark.parametrize("options", [{"lod": 1.2}, {"component": 7}, {"load": -1.0}])
def test_a_failed_reset_leaves_no_episode_and_the_generator_untouched(options):
    # A refused reset drew the next episode's settings first (so every later episode
    # changed) and left the previous episode running.
    plain, failed = _mixture(), _mixture()
    plain.reset(seed=0)
    failed.reset(seed=0)
    with pytest.raises(ValueError):
        failed.reset(options=options)
    with pytest.raises(RuntimeError, match="reset"):
        failed.step(np.array([0, 0]))
    _, expected = plain.reset()
    _, info = failed.reset()
    assert (info["component"], info["load"]) == (expected["component"], expected["load"])


def test_step_before_reset_is_an_error():
    with pytest.raises(RuntimeError, match="reset"):
        _mixture().step(np.array([0, 0]))


def test_gym_wrapped_env_is_not_needed():
    env = _mixture()
    assert not isinstance(env, gym.Wrapper)
    assert env.unwrapped is env


def _draws(env, seed, n):
    """(component index, load, arrival cv) of ``n`` resets after seeding with ``seed``."""
    env.reset(seed=seed)
    draws = []
    for _ in range(n):
        _, info = env.reset()
        draws.append((info["component_index"], info["load"], info["arrival_cv"]))
    return draws


def test_weights_draw_exactly_as_repeating_a_component():
    weighted = BatchMixtureEnv(COMPONENTS, weights=[3, 1], n_requests=20)
    repeated = BatchMixtureEnv([COMPONENTS[0]] * 3 + [COMPONENTS[1]], n_requests=20)
    by_weight = _draws(weighted, seed=3, n=40)
    by_copy = _draws(repeated, seed=3, n=40)
    # Copies 0-2 of the first component are its three slots.
    assert by_weight == [(int(k == 3), load, cv) for k, load, cv in by_copy]
    shares = np.bincount([k for k, _, _ in by_weight], minlength=2) / len(by_weight)
    assert 0.5 < shares[0] < 0.95  # 3/4 expected


def test_unit_weights_draw_as_no_weights():
    assert _draws(_mixture(weights=[1, 1]), seed=5, n=12) == _draws(_mixture(), seed=5, n=12)


@pytest.mark.parametrize(
    "weights", [[1], [1, 0], [1, -2], [1, 1.5], [True, 1], "ab", {"a": 1}, [10**19, 1]]
)
def test_bad_weights_are_named(weights):
    with pytest.raises(ValueError, match="weights must"):
        _mixture(weights=weights)


def test_numpy_bools_are_accepted_as_end_when_settled():
    assert _mixture(end_when_settled=np.True_) is not None
