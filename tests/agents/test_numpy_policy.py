"""The numpy export of an agent acts exactly as the torch model it was exported from."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401  (registers the env ids)
from agents.compare import pretrained_dir, pretrained_names
from agents.numpy_policy import NumpyPolicy, export_numpy_policy, file_sha256, numpy_path
from agents.policy import INFERENCE_CUSTOM_OBJECTS, load_agent, load_normalizer
from agents.runs import load_run_config, model_paths
from agents.scenarios import build_env_kwargs
from agents.seeds import evaluation_seeds

REPO = Path(__file__).resolve().parents[2]


def torch_model(run_dir: Path, which: str = "best"):
    """The SB3 model and its statistics, loaded with torch whatever exports exist."""
    from agents.algorithms import get_algo

    model_path, stats_path = model_paths(run_dir, which)
    algo = get_algo(load_run_config(run_dir).algo)
    model = algo.load_class().load(
        model_path, device="cpu", custom_objects=INFERENCE_CUSTOM_OBJECTS
    )
    return model, load_normalizer(stats_path)


@pytest.mark.parametrize("name", pretrained_names())
def test_shipped_export_is_current(name):
    model_path, _ = model_paths(pretrained_dir(name))
    exported = NumpyPolicy.load(numpy_path(model_path))
    assert exported.model_sha256 == file_sha256(model_path)
    assert isinstance(load_agent(pretrained_dir(name)).model, NumpyPolicy)


@pytest.mark.parametrize("name", pretrained_names())
def test_numpy_actions_equal_torch_actions_at_every_step(name):
    """Five full evaluation episodes, every step, masked, including settled states."""
    run_dir = pretrained_dir(name)
    config = load_run_config(run_dir)
    model, normalizer = torch_model(run_dir)
    exported = load_agent(run_dir)
    assert isinstance(exported.model, NumpyPolicy)
    env = gym.make(config.env_id, **build_env_kwargs(config.env_kwargs))
    # An agent trained on raw observations (batch-general) has no statistics, nor its export.
    assert (exported.normalizer is None) == (normalizer is None)
    n_steps = 0
    for seed in evaluation_seeds(5):
        obs, info = env.reset(seed=seed)
        while True:
            mask = info["action_mask"]
            x = obs if normalizer is None else normalizer.normalize_obs(obs)
            if normalizer is not None:
                np.testing.assert_array_equal(exported.normalizer.normalize_obs(obs), x)
            expected, _ = model.predict(x, action_masks=mask, deterministic=True)
            got, _ = exported.model.predict(x, action_masks=mask, deterministic=True)
            np.testing.assert_array_equal(got, expected, err_msg=f"seed {seed} step {n_steps}")
            obs, _, terminated, truncated, info = env.step(expected)
            n_steps += 1
            if terminated or truncated:
                break
    assert n_steps > 100


def test_export_of_a_fresh_run_matches_and_stale_exports_are_refused(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    model_path, stats_path = model_paths(run_dir, "final")
    written = export_numpy_policy(model_path, stats_path)
    assert written == numpy_path(model_path)
    model, _ = torch_model(run_dir, "final")
    exported = NumpyPolicy.load(written)
    rng = np.random.default_rng(0)
    space = model.observation_space
    for _ in range(200):
        x = rng.normal(size=space.shape).astype(np.float32)
        mask = rng.random(int(sum(model.action_space.nvec))) < 0.7
        mask[0] = mask[int(model.action_space.nvec[0])] = True  # one allowed per component
        expected, _ = model.predict(x, action_masks=mask, deterministic=True)
        np.testing.assert_array_equal(exported.predict(x, action_masks=mask)[0], expected)
    model_path.write_bytes(model_path.read_bytes() + b"\0")  # the model changes
    with pytest.raises(ValueError, match="exported from another model"):
        NumpyPolicy.load(written, expected_sha256=file_sha256(model_path))


def test_bad_masks_and_stochastic_actions_are_refused():
    exported = NumpyPolicy.load(numpy_path(pretrained_dir("batch-default") / "model.zip"))
    obs = np.zeros(exported.observation_space.shape, dtype=np.float32)
    with pytest.raises(ValueError, match="action_masks must have 12 entries"):
        exported.predict(obs, action_masks=np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="only deterministically"):
        exported.predict(obs, deterministic=False)


def test_pretrained_compare_runs_without_torch(tmp_path):
    """The README's main command in a process where torch and SB3 cannot be imported."""
    code = (
        "import sys\n"
        "for name in ('torch', 'stable_baselines3', 'sb3_contrib'):\n"
        "    sys.modules[name] = None  # any import of them fails\n"
        "from llmsched_env.cli import main\n"
        "status = main(['compare', '--pretrained', 'batch-default', '--seeds', '1',\n"
        f"               '--policies', 'multibin-wc', '--quiet', '--out', {str(tmp_path)!r}])\n"
        "assert all(sys.modules.get(n) is None for n in ('torch', 'stable_baselines3'))\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "agent" in done.stdout
    assert (tmp_path / "summary.csv").is_file()
