"""Training steps per second of MaskablePPO: earlier defaults against the current ones.

Run from the repository root (needs the ``agents`` extra), alone on the machine::

    python benchmarks/bench_training.py                  # 3 rounds of 100,000 steps each
    python benchmarks/bench_training.py --env continuous --steps 20000 --rounds 2

Every setting keeps the rollout at the same size (``n_envs x n_steps`` environment steps per
update) and every other hyperparameter at the env's default; none validates or saves
checkpoints during the run (``llmsched train`` does both, a few percent more):

* ``before``: the first recipe: 4 ``DummyVecEnv`` envs x 512 steps (1,024 on
  ContinuousBatching), torch's argument validation of distributions on (torch's default),
  PPO minibatches of 256;
* ``minibatch-256``: the defaults before the minibatches of 512 on BatchScheduling-v0: 16 envs
  x 128 steps (x 256), validation off during training
  (``agents.training.distribution_validation_off``), minibatches of 256;
* ``after``: the current defaults (BatchScheduling-v0: minibatches of 512; ContinuousBatching-v0
  keeps 256, so there ``minibatch-256`` equals ``after``).

``--settings all`` adds the halves of the first change, to see what each is worth: ``envs``
(16 envs, validation on) and ``no-validation`` (4 envs, validation off), both with minibatches
of 256.

Runs of 100,000 steps measure training as it goes on: in the first few rollouts the random
policy's episodes step faster than a learning policy's (runs of 20,000 steps printed up to
1.4x the rate of whole runs). The settings alternate round by round (A, B, C, A, B, C, ...) so
that a change in the machine's load hits all alike; the script prints each run's steps/s and
each setting's median relative to ``before``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents import training
from agents.hyperparams import resolve_hyperparams
from agents.training import resolve_env_id, train
from llmsched_env.cli_args import positive_int

#: The first defaults' rollout per env (n_envs = 4) by env kind.
BEFORE_STEPS = {"batch": 512, "continuous": 1024}
#: The first defaults' PPO minibatch.
BEFORE_MINIBATCH = 256


@dataclass(frozen=True)
class Setting:
    """What a setting changes from the current defaults."""

    four_envs: bool  # 4 envs x BEFORE_STEPS instead of the default split of the rollout
    validate: bool  # torch's distribution argument checks on
    minibatch_256: bool  # PPO minibatches of 256


SETTINGS = {
    "before": Setting(four_envs=True, validate=True, minibatch_256=True),
    "envs": Setting(four_envs=False, validate=True, minibatch_256=True),
    "no-validation": Setting(four_envs=True, validate=False, minibatch_256=True),
    "minibatch-256": Setting(four_envs=False, validate=False, minibatch_256=True),
    "after": Setting(four_envs=False, validate=False, minibatch_256=False),
}
DEFAULT_SETTINGS = ("before", "minibatch-256", "after")


def run(env: str, steps: int, setting: Setting, out: Path) -> float:
    """Train ``steps`` steps with ``setting``; return steps/s."""
    defaults = resolve_hyperparams(resolve_env_id(env), "maskable-ppo")
    rollout = defaults["n_envs"] * defaults["algo_kwargs"]["n_steps"]
    hyper: dict[str, Any] = {}
    validation_off = training.distribution_validation_off
    if setting.four_envs:
        hyper.update(n_envs=4, n_steps=BEFORE_STEPS[env])
        assert 4 * BEFORE_STEPS[env] == rollout, "the rollout size must stay the same"
    if setting.minibatch_256:
        hyper["batch_size"] = BEFORE_MINIBATCH
    if setting.validate:  # the first recipe trained with torch's default (checks on)
        training.distribution_validation_off = contextlib.nullcontext
    try:
        started = time.perf_counter()
        result = train(
            env,
            steps=steps,
            out=out,
            hyperparams=hyper,
            eval_freq=0,
            checkpoint_freq=0,
            progress_bar=False,
        )
        wall = time.perf_counter() - started
    finally:
        training.distribution_validation_off = validation_off
    return result.config.total_timesteps / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(BEFORE_STEPS), default="batch")
    parser.add_argument("--steps", type=positive_int, default=100_000)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument(
        "--settings",
        choices=[",".join(DEFAULT_SETTINGS), "all"],
        default=",".join(DEFAULT_SETTINGS),
    )
    args = parser.parse_args()
    names = list(SETTINGS) if args.settings == "all" else list(DEFAULT_SETTINGS)
    rates: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        run(args.env, 2_048, SETTINGS["after"], Path(tmp) / "warm-up")  # compile the kernels
        for i in range(args.rounds):
            for name in rates:
                rate = run(args.env, args.steps, SETTINGS[name], Path(tmp) / f"{name}-{i}")
                rates[name].append(rate)
                print(f"round {i + 1} {name:13s} {rate:8.0f} steps/s", flush=True)
    before = statistics.median(rates["before"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"median {name:13s} {median:8.0f} steps/s  x{median / before:.2f}")


if __name__ == "__main__":
    main()
