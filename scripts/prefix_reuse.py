"""How much prefix caching could save on a workload's episodes: the reusable prefix fraction.

For each episode (``Routing-v0``'s requests for seeds ``--first-seed`` on), the hit rate an
unbounded cache shared by every request would reach (``reusable_prefix_fraction``): each prompt's
longest block-aligned prefix that an earlier prompt of the episode held. No router can beat it
(a real cache is split across replicas and evicts), so it says how much prefix-aware routing
has to gain before the load it costs. Printed per workload and episode length: the mean, least
and greatest over the episodes.

Usage::

    python scripts/prefix_reuse.py
    python scripts/prefix_reuse.py --workloads mooncake-conversation --n-requests 400 2000
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import llmsched_env  # noqa: F401  (registers the env ids)
from llmsched_env.cli_args import positive_int
from llmsched_env.workload import reusable_prefix_fraction


def episode_fractions(workload: str, n_requests: int, seeds: list[int]) -> list[float]:
    """The reusable prefix fraction of each seed's episode of ``workload``."""
    env = gym.make("llmsched/Routing-v0", workload=workload, n_requests=n_requests)
    fractions = []
    for seed in seeds:
        env.reset(seed=seed)
        w = env.unwrapped.server.workload
        fractions.append(
            reusable_prefix_fraction(w.prompt_tokens, w.prefix_block_hashes, w.prefix_block_tokens)
        )
    env.close()
    return fractions


def main() -> None:
    """Parse the arguments and print one line per workload and episode length."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=["mooncake-conversation", "mooncake-synthetic", "prefix-sharing"],
        help="workload presets (with prefix hashes)",
    )
    parser.add_argument("--n-requests", type=positive_int, nargs="+", default=[400, 2000])
    parser.add_argument(
        "--seeds", type=positive_int, default=10, help="episodes per workload and length"
    )
    parser.add_argument("--first-seed", type=int, default=10_000)
    args = parser.parse_args()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    for workload in args.workloads:
        for n in args.n_requests:
            f = np.array(episode_fractions(workload, n, seeds))
            print(
                f"{workload}, {n:,} requests: reusable prefix fraction {f.mean():.3f} "
                f"(least {f.min():.3f}, greatest {f.max():.3f}; {len(f)} episodes)"
            )


if __name__ == "__main__":
    main()
