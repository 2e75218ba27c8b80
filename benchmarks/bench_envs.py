"""Environment steps per second with random valid actions, through ``gym.make``.

Run: ``python benchmarks/bench_envs.py``. The env is built with ``gym.make`` and its default
wrappers (order enforcing, passive env checker); each step samples a random action allowed by the
env's own mask, as a masked agent would. Episodes restart with new seeds until ``--steps`` steps
have run; the best of ``--repeats`` runs is reported (other processes only ever slow a run down).
Gymnasium's ``CartPole-v1`` (random actions, no mask) runs too, interleaved with the others
(one run of each env per round), as the yardstick of a cheap env through the same wrappers:
each env's rate is also printed as a ratio to CartPole's. The numbers in the README come from
this script.

Two rates are printed per env: the loop's (everything between the first and the last step,
the benchmark's own action sampling included) and the env's own (only the time spent inside
``env.step`` and ``env.reset``, each call timed). Sampling a random allowed action from a mask
in Python costs about 2 us, a fifth of a ``BatchScheduling-v0`` step, against almost nothing
for CartPole's unmasked actions; the env's own rate leaves that harness cost out of the
comparison. Timing each call adds the same small cost (two clock reads) to every env.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import gymnasium as gym
import numpy as np

import llmsched_env  # noqa: F401  (registers the env ids)
from llmsched_env.cli_args import positive_int


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


def bench(env_id: str, steps: int, **kwargs) -> tuple[float, float]:
    """Steps per second of ``env_id`` over ``steps`` steps (seeded resets, random actions).

    Returns:
        The loop's rate (action sampling included) and the env's own rate (time inside
        ``env.step`` and ``env.reset`` only).
    """
    env = gym.make(env_id, **kwargs)
    rng = random.Random(0)
    unwrapped = env.unwrapped
    clock = time.perf_counter
    seed = 0
    env.reset(seed=seed)
    masked = hasattr(unwrapped, "action_masks")
    space = env.action_space
    # A masked Discrete space (Routing-v0) is one component of n values.
    nvec = ([int(space.n)] if hasattr(space, "n") else space.nvec.tolist()) if masked else []
    n = 0 if masked else int(space.n)  # the reference: a Discrete action space
    inside = 0.0
    start = clock()
    for _ in range(steps):
        if masked:
            action = random_masked_action(unwrapped.action_masks().tolist(), nvec, rng)
        else:
            action = int(rng.random() * n)
        before = clock()
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            seed += 1
            env.reset(seed=seed)
        inside += clock() - before
    return steps / (clock() - start), steps / inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=positive_int, default=30_000, help="steps per run")
    parser.add_argument(
        "--repeats", type=positive_int, default=5, help="runs per env (best is reported)"
    )
    parser.add_argument("--envs", nargs="+", default=list(ENV_IDS), help="env ids to run")
    args = parser.parse_args()
    env_ids = list(dict.fromkeys([*args.envs, REFERENCE_ID]))
    loop_runs: dict[str, list[float]] = {env_id: [] for env_id in env_ids}
    env_runs: dict[str, list[float]] = {env_id: [] for env_id in env_ids}
    for _ in range(args.repeats):  # interleaved, so that every env sees the same machine
        for env_id in env_ids:
            loop_rate, env_rate = bench(env_id, args.steps)
            loop_runs[env_id].append(loop_rate)
            env_runs[env_id].append(env_rate)
    headings = ("loop (action sampling included):", "env only (inside env.step and env.reset):")
    for heading, runs in zip(headings, (loop_runs, env_runs)):
        reference = max(runs[REFERENCE_ID])
        print(heading)
        for env_id in env_ids:
            rates = sorted(runs[env_id])
            best = rates[-1]
            print(
                f"  {env_id} (defaults): {best:,.0f} steps/s ({1e6 / best:.1f} us/step; "
                f"best of {args.repeats}, median {statistics.median(rates):,.0f}; "
                f"{best / reference:.2f}x {REFERENCE_ID})"
            )


if __name__ == "__main__":
    main()
