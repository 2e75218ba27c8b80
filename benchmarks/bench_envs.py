"""Environment steps per second with random valid actions, through ``gym.make``.

Run: ``python benchmarks/bench_envs.py``. The env is built with ``gym.make`` and its default
wrappers (order enforcing, passive env checker); each step samples a random action allowed by the
env's own mask, as a masked agent would. Episodes restart with new seeds until ``--steps`` steps
have run; the best of ``--repeats`` runs is reported (other processes only ever slow a run down).
Gymnasium's ``CartPole-v1`` (random actions, no mask) runs too, interleaved with the others
(one run of each env per round), as the yardstick of a cheap env through the same wrappers:
each env's rate is also printed as a ratio to CartPole's. The numbers in the README come from
this script.
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


#: The yardstick env (no action mask: random actions).
REFERENCE_ID = "CartPole-v1"
ENV_IDS = ("llmsched/BatchScheduling-v0", "llmsched/ContinuousBatching-v0", REFERENCE_ID)


def bench(env_id: str, steps: int, **kwargs) -> float:
    """Steps per second of ``env_id`` over ``steps`` steps (seeded resets, random actions)."""
    env = gym.make(env_id, **kwargs)
    rng = random.Random(0)
    unwrapped = env.unwrapped
    seed = 0
    env.reset(seed=seed)
    if not hasattr(unwrapped, "action_masks"):  # the reference: a Discrete action space
        n = int(env.action_space.n)
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(int(rng.random() * n))
            if terminated or truncated:
                seed += 1
                env.reset(seed=seed)
        return steps / (time.perf_counter() - start)
    nvec = env.action_space.nvec.tolist()
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
    parser.add_argument("--envs", nargs="+", default=list(ENV_IDS), help="env ids to run")
    args = parser.parse_args()
    env_ids = list(dict.fromkeys([*args.envs, REFERENCE_ID]))
    runs: dict[str, list[float]] = {env_id: [] for env_id in env_ids}
    for _ in range(args.repeats):  # interleaved, so that every env sees the same machine
        for env_id in env_ids:
            runs[env_id].append(bench(env_id, args.steps))
    reference = max(runs[REFERENCE_ID])
    for env_id in env_ids:
        rates = sorted(runs[env_id])
        best = rates[-1]
        print(
            f"{env_id} (defaults): {best:,.0f} steps/s ({1e6 / best:.1f} us/step; "
            f"best of {args.repeats}, median {rates[len(rates) // 2]:,.0f}; "
            f"{best / reference:.2f}x {REFERENCE_ID})"
        )


if __name__ == "__main__":
    main()
