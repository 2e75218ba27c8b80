"""``llmsched/Routing-v0`` steps per second with random valid actions, through ``gym.make``.

Run: ``python benchmarks/bench_routing.py`` (``--replicas 8`` by default). The env is built with
``gym.make`` and its default wrappers; each step routes the arriving request to a uniformly random
replica the mask allows. Episodes restart with new seeds until ``--steps`` steps have run; the
best of ``--repeats`` runs is printed (other processes only ever slow a run down), with the time
spent in resets counted, and the in-replica decisions (iterations scheduled by the replicas'
vLLM V1 policy) per routing step, which is where the time goes.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import gymnasium as gym

import llmsched_env  # noqa: F401  (registers the env ids)
from llmsched_env.cli_args import positive_int


def bench(steps: int, **kwargs) -> tuple[float, float]:
    """Routing steps per second and in-replica decisions per step, over ``steps`` steps."""
    env = gym.make("llmsched/Routing-v0", **kwargs)
    unwrapped = env.unwrapped
    rng = random.Random(0)
    seed = 0
    env.reset(seed=seed)
    decisions = 0
    start = time.perf_counter()
    for _ in range(steps):
        allowed = [i for i, ok in enumerate(unwrapped.action_masks().tolist()) if ok]
        _, _, terminated, truncated, info = env.step(allowed[int(rng.random() * len(allowed))])
        if terminated or truncated:
            decisions += int(info["replica_decisions"].sum())
            seed += 1
            env.reset(seed=seed)
    elapsed = time.perf_counter() - start
    decisions += int(unwrapped.last_info["replica_decisions"].sum())
    return steps / elapsed, decisions / steps


def main() -> None:
    """Parse the arguments, run the benchmark and print the best run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=positive_int, default=20_000, help="routing steps per run")
    parser.add_argument("--repeats", type=positive_int, default=3, help="runs; the best is printed")
    parser.add_argument("--replicas", type=positive_int, default=8, help="n_replicas")
    parser.add_argument("--env-kwargs", default="{}", help="other env arguments as JSON")
    args = parser.parse_args()
    kwargs = {"n_replicas": args.replicas, **json.loads(args.env_kwargs)}
    bench(200, **kwargs)  # warm-up: imports, compiled kernels
    runs = [bench(args.steps, **kwargs) for _ in range(args.repeats)]
    rate, per_step = max(runs)
    print(
        f"llmsched/Routing-v0 {json.dumps(kwargs)}: {rate:,.0f} steps/s "
        f"(best of {args.repeats} x {args.steps:,} steps; {per_step:.1f} in-replica decisions "
        f"per step)"
    )


if __name__ == "__main__":
    main()
