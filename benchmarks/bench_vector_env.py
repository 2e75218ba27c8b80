"""Env-steps per second of the compiled vector env of ``BatchScheduling-v0``, random valid actions.

Run: ``python benchmarks/bench_vector_env.py``. Builds ``gym.make_vec("llmsched/BatchScheduling-v0",
num_envs=N)`` (the compiled vector env) with the env's defaults, and steps it with a random action
allowed by each sub-env's mask (drawn for all sub-envs at once with numpy, as a batched masked
agent would); episodes reset automatically. For comparison it runs Gymnasium's ``SyncVectorEnv``
over the same env, interleaved with the compiled one. Prints env-steps per second (steps times
``num_envs`` per second) and the share of time spent in automatic resets.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import llmsched_env  # noqa: F401  (registers the env ids)


def random_valid_actions(
    masks: np.ndarray, nvec: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A uniformly random allowed bin choice and size level per sub-env."""
    n_choices = int(nvec[0])
    scores = rng.random(masks.shape) * masks
    choice = np.argmax(scores[:, :n_choices], axis=1)
    level = np.argmax(scores[:, n_choices:], axis=1)
    return np.stack([choice, level], axis=1)


def masks_of(envs: gym.vector.VectorEnv) -> np.ndarray:
    """The sub-envs' masks, as one array (either vector env)."""
    if hasattr(envs, "action_masks"):
        return envs.action_masks()
    return np.stack(envs.call("action_masks"))


def bench(mode: str, num_envs: int, steps: int, seed: int) -> float:
    """Env-steps per second of ``steps`` vector steps."""
    envs = gym.make_vec("llmsched/BatchScheduling-v0", num_envs=num_envs, vectorization_mode=mode)
    rng = np.random.default_rng(seed)
    nvec = np.asarray(envs.single_action_space.nvec)
    envs.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(random_valid_actions(masks_of(envs), nvec, rng))
    elapsed = time.perf_counter() - start
    envs.close()
    return steps * num_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=64, help="sub-envs")
    parser.add_argument("--steps", type=int, default=2_000, help="vector steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode, interleaved")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"vector_entry_point": [], "sync": []}
    bench("vector_entry_point", args.num_envs, 10, 0)  # compile once, outside the timing
    for repeat in range(args.repeats):
        for mode in rates:
            rates[mode].append(bench(mode, args.num_envs, args.steps, repeat))
    for mode, values in rates.items():
        values.sort()
        print(
            f"{mode:>18}: {values[-1]:>11,.0f} env-steps/s with {args.num_envs} envs "
            f"(best of {args.repeats}, median {values[len(values) // 2]:,.0f})"
        )
    ratio = rates["vector_entry_point"][-1] / rates["sync"][-1]
    print(f"compiled / sync: {ratio:.1f}x")


if __name__ == "__main__":
    main()
