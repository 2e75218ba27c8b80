"""Tiny environments and a shared tiny training run, so agent tests take seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

#: Small, fast configurations of each env (a few dozen steps per episode).
TINY_ENVS = {
    "batch": {"workload": "demo2", "arrival_rate": 4.0, "n_requests": 40},
    "continuous": {"workload": "mm1", "arrival_rate": 4.0, "n_requests": 30},
    "routing": {"workload": "prefix-sharing", "n_replicas": 2, "load": 0.5, "n_requests": 40},
}

#: Hyperparameters that make an update happen within a few hundred steps.
TINY_HYPERPARAMS = {
    "maskable-ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 2, "n_envs": 2},
    "ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 2, "n_envs": 2},
    "a2c": {"n_steps": 8, "n_envs": 2},
    "dqn": {"learning_starts": 50, "buffer_size": 1_000, "train_freq": 4, "batch_size": 32},
}

#: The warm start of ContinuousBatching-v0's recipe, shortened.
TINY_IMITATION = {"steps": 128, "epochs": 1}


def tiny_train(out: Path, env: str = "batch", algo: str = "maskable-ppo", **kwargs):
    """Train for a few hundred steps without callbacks (unless asked) and return the result."""
    from agents.training import train

    hyperparams = dict(TINY_HYPERPARAMS[algo])
    if algo == "maskable-ppo":  # the recipe's warm start, on a few demonstration steps
        hyperparams["imitation"] = TINY_IMITATION if env == "continuous" else None
    options = {
        "steps": 256,
        "eval_freq": 0,
        "checkpoint_freq": 0,
        "hyperparams": hyperparams,
        "env_kwargs": TINY_ENVS[env],
    }
    options.update(kwargs)
    return train(env, out=out, algo=algo, **options)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """One MaskablePPO run on the tiny batch env with validation and checkpoints."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    return tiny_train(out, steps=384, eval_freq=128, eval_episodes=2, checkpoint_freq=256)
