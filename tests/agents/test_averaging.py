"""Tests for weight averaging: the setting, the averaged model a run saves, and choosing it."""

from __future__ import annotations

import numpy as np
import pytest

from agents.averaging import AVERAGED_MODEL_FILE, WeightAveraging
from agents.hyperparams import resolve_hyperparams
from agents.policy import AgentPolicy, load_agent
from agents.runs import model_paths
from tests.agents.conftest import TINY_ENVS, TINY_HYPERPARAMS, tiny_train

BATCH = "llmsched/BatchScheduling-v0"


def _weights(path) -> dict[str, np.ndarray]:
    from sb3_contrib import MaskablePPO

    policy = MaskablePPO.load(path, device="cpu").policy
    return {k: v.detach().numpy().copy() for k, v in policy.state_dict().items()}


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"start": 10}, "keys 'start' and 'every'"),
        ({"start": 10, "every": 5, "decay": 0.9}, "keys 'start' and 'every'"),
        ([10, 5], "keys 'start' and 'every'"),
        ({"start": -1, "every": 5}, "start must be an integer >= 0, got -1"),
        ({"start": 10, "every": 0}, "every must be an integer >= 1, got 0"),
        ({"start": 10, "every": 2.5}, "every must be an integer >= 1, got 2.5"),
    ],
)
def test_bad_settings_are_refused_naming_the_value(setting, match):
    with pytest.raises(ValueError, match=match):
        WeightAveraging.from_setting(setting)
    with pytest.raises(ValueError, match=match):
        resolve_hyperparams(BATCH, "maskable-ppo", {"weight_averaging": setting})


def test_setting_resolves_to_plain_values_and_defaults_to_none():
    assert resolve_hyperparams(BATCH, "maskable-ppo")["weight_averaging"] is None
    resolved = resolve_hyperparams(
        BATCH, "maskable-ppo", {"weight_averaging": {"start": 6, "every": 2}}
    )
    assert resolved["weight_averaging"] == {"start": 6, "every": 2}


def test_averaged_model_is_the_mean_of_the_snapshots_at_the_checkpoint_steps(tmp_path):
    """Snapshots every 128 steps from step 256 on are the checkpoints at 256, 384 and 512."""
    hyperparams = {**TINY_HYPERPARAMS["maskable-ppo"], "imitation": None}
    hyperparams["weight_averaging"] = {"start": 256, "every": 128}
    result = tiny_train(tmp_path / "run", steps=512, checkpoint_freq=128, hyperparams=hyperparams)
    run = result.run_dir
    taken = result.config.sessions[-1]["averaged_snapshots"]
    assert taken == {"count": 3, "first_step": 256, "last_step": 512}
    snapshots = [_weights(run / "checkpoints" / f"model_{k}_steps.zip") for k in (256, 384, 512)]
    averaged = _weights(run / AVERAGED_MODEL_FILE)
    for name, value in averaged.items():
        expected = np.mean([s[name] for s in snapshots], axis=0)
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=name)
    final = _weights(run / "model.zip")
    assert any(not np.array_equal(final[k], averaged[k]) for k in final)  # final is kept apart
    model, stats = model_paths(run, "averaged")
    assert model.name == AVERAGED_MODEL_FILE and stats == run / "vecnormalize.pkl"

    import gymnasium as gym

    env = gym.make(BATCH, **TINY_ENVS["batch"])
    policy = AgentPolicy(env, load_agent(run, "averaged"))
    obs, info = env.reset(seed=0)
    assert env.action_space.contains(policy.act(obs, info))


def test_a_run_without_averaging_says_so_when_its_averaged_model_is_asked_for(tmp_path):
    result = tiny_train(tmp_path / "run", steps=128)
    assert not (result.run_dir / AVERAGED_MODEL_FILE).exists()
    with pytest.raises(ValueError, match="without the weight_averaging setting"):
        model_paths(result.run_dir, "averaged")


def test_no_snapshot_before_the_start_writes_no_averaged_model(tmp_path):
    hyperparams = {**TINY_HYPERPARAMS["maskable-ppo"], "imitation": None}
    hyperparams["weight_averaging"] = {"start": 10_000, "every": 128}
    messages: list[str] = []
    result = tiny_train(tmp_path / "run", steps=128, hyperparams=hyperparams, log=messages.append)
    assert result.config.sessions[-1]["averaged_snapshots"]["count"] == 0
    assert not (result.run_dir / AVERAGED_MODEL_FILE).exists()
    assert any("no snapshot was taken" in m for m in messages)


def test_averaged_model_of_an_exported_agent_says_it_holds_one_model():
    from agents.compare import pretrained_dir

    with pytest.raises(ValueError, match=r"exported \(pretrained\) agent holds only the model"):
        model_paths(pretrained_dir("batch-general"), "averaged")
