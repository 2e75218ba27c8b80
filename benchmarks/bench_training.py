"""Training steps per second of MaskablePPO: the old defaults against the current ones.

Run from the repository root (needs the ``agents`` extra), alone on the machine::

    python benchmarks/bench_training.py                  # 3 rounds of 20,000 steps each
    python benchmarks/bench_training.py --env continuous --steps 10000 --rounds 2

Both settings keep the rollout at the same size (``n_envs x n_steps`` environment steps per
update) and every other hyperparameter at the env's default:

* ``before``: 4 ``DummyVecEnv`` envs x 512 steps (1,024 on ContinuousBatching), torch's
  argument validation of distributions on (torch's default);
* ``after``: the current defaults, 16 envs x 128 steps (x 256), validation off during training
  (``agents.training.distribution_validation_off``).

``--settings all`` adds the two halves of the change, to see what each is worth: ``envs``
(16 envs, validation on) and ``no-validation`` (4 envs, validation off).

The settings alternate round by round (A, B, A, B, ...) so that a change in the machine's load
hits all alike; the script prints each run's steps/s and each setting's median relative to
``before``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from agents import training
from agents.hyperparams import resolve_hyperparams
from agents.training import resolve_env_id, train

#: The previous defaults' rollout per env (n_envs = 4) by env kind.
BEFORE_STEPS = {"batch": 512, "continuous": 1024}
#: Setting name: (the previous 4 envs, torch's distribution checks on).
SETTINGS = {
    "before": (True, True),
    "envs": (False, True),
    "no-validation": (True, False),
    "after": (False, False),
}


def run(env: str, steps: int, setting: str, out: Path) -> float:
    """Train ``steps`` steps with ``setting`` (a key of :data:`SETTINGS`); return steps/s."""
    defaults = resolve_hyperparams(resolve_env_id(env), "maskable-ppo")
    rollout = defaults["n_envs"] * defaults["algo_kwargs"]["n_steps"]
    old_envs, validate = SETTINGS[setting]
    hyper: dict = {}
    validation_off = training.distribution_validation_off
    if old_envs:
        hyper = {"n_envs": 4, "n_steps": BEFORE_STEPS[env]}
        assert 4 * BEFORE_STEPS[env] == rollout, "the rollout size must stay the same"
    if validate:  # the old code trained with torch's default (checks on)
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
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", choices=["before,after", "all"], default="before,after")
    args = parser.parse_args()
    names = list(SETTINGS) if args.settings == "all" else ["before", "after"]
    rates: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        run(args.env, 2_048, "after", Path(tmp) / "warm-up")  # compile the simulator's kernels
        for i in range(args.rounds):
            for setting in rates:
                rate = run(args.env, args.steps, setting, Path(tmp) / f"{setting}-{i}")
                rates[setting].append(rate)
                print(f"round {i + 1} {setting:13s} {rate:8.0f} steps/s", flush=True)
    before = statistics.median(rates["before"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"median {name:13s} {median:8.0f} steps/s  x{median / before:.2f}")


if __name__ == "__main__":
    main()
