"""RLlib's view of the envs (flat action, mask in a Dict observation) and masked PPO training."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from agents.rllib import RLlibEnv, RLlibSettings, scalar_info
from tests.agents.conftest import TINY_ENVS

ENV_IDS = {
    "batch": "llmsched/BatchScheduling-v0",
    "continuous": "llmsched/ContinuousBatching-v0",
}

#: The envs RLlib trains on: Routing-v0's Discrete action is taken as it is.
ALL_ENV_IDS = {**ENV_IDS, "routing": "llmsched/Routing-v0"}


def tiny_config(kind: str) -> dict:
    return {"env_id": ALL_ENV_IDS[kind], "env_kwargs": TINY_ENVS[kind]}


@pytest.mark.parametrize("kind", sorted(ENV_IDS))
def test_masks_are_the_joint_masks_and_masked_episodes_match_the_env(kind):
    """A masked random episode through RLlibEnv is the unwrapped env's, step for step."""
    env = RLlibEnv(tiny_config(kind))
    plain = gym.make(ENV_IDS[kind], **TINY_ENVS[kind])
    nvec = tuple(int(n) for n in plain.action_space.nvec)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=3)
    plain_obs, _ = plain.reset(seed=3)
    steps, total = 0, 0.0
    while True:
        assert env.observation_space.contains(obs)
        np.testing.assert_array_equal(obs["observations"], plain_obs)
        mask = obs["action_mask"]
        np.testing.assert_array_equal(mask, plain.unwrapped.joint_action_mask().ravel())
        assert all(np.ndim(v) == 0 for v in info.values())
        action = int(rng.choice(np.flatnonzero(mask)))
        obs, reward, terminated, truncated, info = env.step(action)
        plain_obs, plain_reward, *_ = plain.step(np.array(np.unravel_index(action, nvec)))
        total += reward
        steps += 1
        if terminated or truncated:
            break
    assert steps > 5
    assert np.isfinite(total)


@pytest.mark.parametrize("kind", sorted(ALL_ENV_IDS))
def test_stable_baselines3s_env_checker_passes(kind):
    """(Gymnasium's own checker also recreates the env from its spec, which a wrapper made from
    RLlib's env config cannot do; RLlib's gym.make needs that spec, so it stays.)"""
    from stable_baselines3.common.env_checker import check_env

    check_env(RLlibEnv({"env_id": ALL_ENV_IDS[kind], "env_kwargs": {"n_requests": 40}}), warn=False)


def test_routing_takes_its_discrete_action_and_mask_as_they_are():
    config = tiny_config("routing")
    env = RLlibEnv(config)
    plain = gym.make(config["env_id"], **TINY_ENVS["routing"])
    assert env.action_space == plain.action_space
    rng = np.random.default_rng(0)
    (obs, _), (plain_obs, _) = env.reset(seed=3), plain.reset(seed=3)
    steps = 0
    while True:
        np.testing.assert_array_equal(obs["observations"], plain_obs)
        np.testing.assert_array_equal(obs["action_mask"], plain.unwrapped.action_masks())
        action = int(rng.choice(np.flatnonzero(obs["action_mask"])))
        obs, reward, terminated, truncated, _ = env.step(action)
        plain_obs, plain_reward, *_ = plain.step(action)
        assert reward == plain_reward
        steps += 1
        if terminated or truncated:
            break
    assert steps == TINY_ENVS["routing"]["n_requests"]


@pytest.mark.parametrize("kind", sorted(ALL_ENV_IDS))
def test_vector_env_of_rllib_envs_steps(kind):
    """What an RLlib env runner builds: a Gymnasium vector env of the creator's envs."""
    vec = gym.vector.SyncVectorEnv([lambda: RLlibEnv(tiny_config(kind))] * 2)
    obs, _ = vec.reset(seed=0)
    for _ in range(20):
        actions = [int(np.flatnonzero(m)[0]) for m in obs["action_mask"]]
        obs, rewards, *_ = vec.step(np.array(actions))
    assert obs["observations"].shape == (2, *vec.single_observation_space["observations"].shape)


def test_bad_config_and_settings_are_named():
    with pytest.raises(ValueError, match="env_config must have 'env_id'.*'workload'"):
        RLlibEnv({"env_id": ENV_IDS["batch"], "workload": "demo2"})
    with pytest.raises(ValueError, match="minibatch_size must be in"):
        RLlibSettings(ENV_IDS["batch"], train_batch_size=64, minibatch_size=128)
    with pytest.raises(ValueError, match="num_env_runners must be >= 0, got -1"):
        RLlibSettings(ENV_IDS["batch"], num_env_runners=-1)


def test_scalar_info_keeps_numbers_only():
    info = {"a": 1, "b": 2.5, "c": np.float32(1), "d": np.zeros(3), "e": [1], "f": True}
    assert sorted(scalar_info(info)) == ["a", "b", "c", "f"]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.rllib")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(ALL_ENV_IDS))
def test_masked_ppo_trains_two_iterations_with_two_runners(kind, local_ray, tmp_path):
    from agents.rllib import train_rllib

    settings = RLlibSettings(
        ALL_ENV_IDS[kind],
        TINY_ENVS[kind],
        iterations=2,
        num_env_runners=2,
        num_envs_per_env_runner=2,
        train_batch_size=256,
        minibatch_size=64,
        num_epochs=2,
    )
    lines: list[str] = []
    result = train_rllib(settings, out=tmp_path, log=lines.append)
    assert len(result.returns) == 2 and len(lines) == 2
    assert result.env_steps >= 2 * 256
    assert np.isfinite(result.returns[-1])
    assert (tmp_path / "checkpoint").is_dir()
    assert (tmp_path / "rllib_settings.json").is_file()


def test_cli_refuses_options_rllib_does_not_take(capsys, tmp_path):
    from llmsched_env.cli import main

    status = main(["train", "--framework", "rllib", "--algo", "dqn", "--out", str(tmp_path / "r")])
    assert status == 2
    assert "--framework rllib trains masked PPO from scratch" in capsys.readouterr().err


RLLIB_CLI_ARGS = ["train", "--framework", "rllib", "--env", "continuous", "--workload", "mm1"]
RLLIB_CLI_ARGS += ["--arrival-rate", "4", "--n-requests", "30", "--steps", "256"]
RLLIB_CLI_ARGS += ["--env-runners", "1", "--n-envs", "2", "--quiet"]


@pytest.mark.slow
def test_cli_trains_with_rllib_in_a_process_already_running_ray(local_ray, tmp_path, capsys):
    from llmsched_env.cli import main

    out = tmp_path / "run"
    assert main([*RLLIB_CLI_ARGS, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "trained masked PPO (RLlib) on llmsched/ContinuousBatching-v0" in captured.out
    assert "using the Ray instance already running in this process" in captured.err
    assert (out / "checkpoint").is_dir()
    assert local_ray.is_initialized(), "the CLI shut down a Ray instance it did not start"


@pytest.mark.slow
def test_cli_starts_and_stops_its_own_ray(tmp_path):
    pytest.importorskip("ray.rllib")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "llmsched_env.cli", *RLLIB_CLI_ARGS, "--out", str(out)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "connecting to Ray (a local instance)" in finished.stderr
    assert "trained masked PPO (RLlib) on llmsched/ContinuousBatching-v0" in finished.stdout
    assert (out / "checkpoint").is_dir()
