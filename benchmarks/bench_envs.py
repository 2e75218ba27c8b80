"""Environment steps per second with random valid actions, through ``gym.make``.

Run: ``python benchmarks/bench_envs.py``. The env is built with ``gym.make`` and its default
wrappers (order enforcing, passive env checker); each step samples a random action allowed by the
env's own mask, as a masked agent would. Episodes restart with new seeds until ``--steps`` steps
have run; the best of ``--repeats`` runs is reported (other processes only ever slow a run down).
The numbers in the README come from this script.
"""

from __future__ import annotations

import argparse
import random
import time

import gymnasium as gym
import numpy as np

import llmsched_env  # noqa: F401  (registers the env ids)


def random_masked_action(mask: list[bool], nvec: list[int], rng: random.Random) -> np.ndarray:
    """A uniformly random allowed value of each component (as a masked agent would sample)."""
    action = []
    offset = 0
    for n in nvec:
        allowed = [i for i, ok in enumerate(mask[offset : offset + n]) if ok]
        action.append(allowed[int(rng.random() * len(allowed))])
        offset += n
    return np.array(action)


def bench(env_id: str, steps: int, **kwargs) -> float:
    env = gym.make(env_id, **kwargs)
    rng = random.Random(0)
    nvec = env.action_space.nvec.tolist()
    unwrapped = env.unwrapped
    seed = 0
    env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        action = random_masked_action(unwrapped.action_masks().tolist(), nvec, rng)
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            seed += 1
            env.reset(seed=seed)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30_000, help="steps per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per env (best is reported)")
    args = parser.parse_args()
    for env_id in ("llmsched/BatchScheduling-v0", "llmsched/ContinuousBatching-v0"):
        rates = sorted(bench(env_id, args.steps) for _ in range(args.repeats))
        best = rates[-1]
        print(
            f"{env_id} (defaults): {best:,.0f} steps/s ({1e6 / best:.1f} us/step; "
            f"best of {args.repeats}, median {rates[len(rates) // 2]:,.0f})"
        )


if __name__ == "__main__":
    main()
