"""Env-steps per second of the compiled vector env of ``BatchScheduling-v0``, random valid actions.

Run: ``python benchmarks/bench_vector_env.py``. Builds ``gym.make_vec("llmsched/BatchScheduling-v0",
num_envs=N)`` (the compiled vector env) with the env's defaults, and steps it with a random action
allowed by each sub-env's mask (drawn for all sub-envs at once with numpy, as a batched masked
agent would); episodes reset automatically. For comparison it runs Gymnasium's ``SyncVectorEnv``
over the same env, interleaved with the compiled one, and with ``--threads 1 2`` the compiled
env with each thread count (its ``threads`` argument). Prints env-steps per second (steps times
``num_envs`` per second) through the loop, which includes drawing the actions, and counting only
the time inside ``envs.step``; and the ratios (of the loop's rates).
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

import llmsched_env  # noqa: F401  (registers the env ids)
from llmsched_env.cli_args import positive_int


def random_valid_actions(
    masks: np.ndarray, nvec: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A uniformly random allowed bin choice and size level per sub-env."""
    n_choices = int(nvec[0])
    scores = rng.random(masks.shape)
    scores *= masks
    actions = np.empty((masks.shape[0], 2), dtype=np.int64)
    actions[:, 0] = scores[:, :n_choices].argmax(axis=1)
    actions[:, 1] = scores[:, n_choices:].argmax(axis=1)
    return actions


def masks_of(envs: gym.vector.VectorEnv) -> np.ndarray:
    """The sub-envs' masks, as one array (either vector env)."""
    if hasattr(envs, "action_masks"):
        return envs.action_masks()
    return np.stack(envs.call("action_masks"))


def bench(mode: str, num_envs: int, steps: int, seed: int, threads: int = 1) -> tuple[float, float]:
    """Env-steps per second of ``steps`` vector steps (``threads``: the compiled env's groups).

    Returns:
        The loop's rate, and the rate counting only the time inside ``envs.step``.
    """
    kwargs = {"threads": threads} if mode == "vector_entry_point" else {}
    envs = gym.make_vec(
        "llmsched/BatchScheduling-v0", num_envs=num_envs, vectorization_mode=mode, **kwargs
    )
    rng = np.random.default_rng(seed)
    nvec = np.asarray(envs.single_action_space.nvec)
    envs.reset(seed=seed)
    inside = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        actions = random_valid_actions(masks_of(envs), nvec, rng)
        before = time.perf_counter()
        envs.step(actions)
        inside += time.perf_counter() - before
    elapsed = time.perf_counter() - start
    envs.close()
    return steps * num_envs / elapsed, steps * num_envs / inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=positive_int, default=64, help="sub-envs")
    parser.add_argument("--steps", type=positive_int, default=2_000, help="vector steps per run")
    parser.add_argument(
        "--repeats", type=positive_int, default=3, help="runs per mode, interleaved"
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1],
        help="the compiled env's thread counts to run (each also interleaved)",
    )
    args = parser.parse_args()
    runs = {f"compiled, {t} thread{'s' if t > 1 else ''}": t for t in args.threads}
    rates: dict[str, list[float]] = {name: [] for name in [*runs, "sync"]}
    inside: dict[str, list[float]] = {name: [] for name in rates}
    for threads in args.threads:  # compile once, outside the timing
        bench("vector_entry_point", args.num_envs, 10, 0, threads)
    for repeat in range(args.repeats):
        for name in rates:
            if name == "sync":
                rate, env_only = bench("sync", args.num_envs, args.steps, repeat)
            else:
                rate, env_only = bench(
                    "vector_entry_point", args.num_envs, args.steps, repeat, runs[name]
                )
            rates[name].append(rate)
            inside[name].append(env_only)
    for name, values in rates.items():
        values.sort()
        inside[name].sort()
        print(
            f"{name:>20}: {values[-1]:>11,.0f} env-steps/s with {args.num_envs} envs "
            f"(best of {args.repeats}, median {statistics.median(values):,.0f}); inside "
            f"envs.step: {inside[name][-1]:,.0f}"
        )
    first = next(iter(runs))
    print(f"compiled ({first.split(', ')[1]}) / sync: {rates[first][-1] / rates['sync'][-1]:.1f}x")
    for name in list(runs)[1:]:
        print(f"{name} / {first}: {rates[name][-1] / rates[first][-1]:.2f}x")


if __name__ == "__main__":
    main()
