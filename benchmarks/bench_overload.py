"""Cost of a step across one long overloaded ``ContinuousBatching-v0`` episode, window by window.

Run: ``python benchmarks/bench_overload.py [--requests 1000000] [--load 2.0] [--window 100000]``
(default workload: the synthetic ``burstgpt-synthetic`` preset, which samples any number of
requests).
At twice the capacity the waiting queue grows while the requests arrive, then drains: with the
defaults it holds about 600,000 prompts at step 100,000, 590,000, 380,000 and 175,000 at the
next windows' ends, and none at the episode's last step, about 490,000. A step whose cost grew
with the queue (copying it into ``info``, say) would make the windows with the long queue far
slower than the last one and such an episode quadratic; this prints the mean time
of a step (CPU time of this process, which other processes slow down less than wall-clock
time) in consecutive windows of ``--window`` steps, with the queue length at each window's
end, and the ratio of the last full window to the first. The policy is Sarathi-style (decode
every running sequence, fill the rest of the budget with prefill chunks), which reads only
``info``. Times still vary with whatever else the machine runs; compare the windows of one run
with one another. Run it from the repository root with ``PYTHONPATH=.`` to measure the checkout's
code rather than an installed copy.
"""

from __future__ import annotations

import argparse
import time
import warnings

import gymnasium as gym

import llmsched_env  # noqa: F401  (registers the env ids)
from baselines import make_policy
from llmsched_env.cli_args import positive_float, positive_int


def window_costs(
    workload: str, n_requests: int, load: float, window: int, seed: int
) -> list[tuple[int, int, float]]:
    """Step through one episode; per window: steps so far, waiting prompts, us per step."""
    env = gym.make(
        "llmsched/ContinuousBatching-v0", workload=workload, n_requests=n_requests, load=load
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        policy = make_policy("sarathi", env)
    obs, info = env.reset(seed=seed)
    server = env.unwrapped.server
    rows: list[tuple[int, int, float]] = []
    steps = 0
    done = False
    while not done:
        start = time.process_time()
        for _ in range(window):
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
            steps += 1
            if terminated or truncated:
                done = True
                break
        elapsed = time.process_time() - start
        in_window = steps - (rows[-1][0] if rows else 0)
        rows.append((steps, server.n_waiting, 1e6 * elapsed / in_window))
        print(f"steps {steps:>10,}  waiting {server.n_waiting:>9,}  {rows[-1][2]:8.1f} us/step")
    env.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workload",
        default="burstgpt-synthetic",
        help="workload preset (a synthetic one: "
        "trace presets hold too few requests for a long episode)",
    )
    parser.add_argument(
        "--requests", type=positive_int, default=1_000_000, help="requests in the episode"
    )
    parser.add_argument("--load", type=positive_float, default=2.0, help="arrival rate / capacity")
    parser.add_argument("--window", type=positive_int, default=100_000, help="steps per window")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = window_costs(args.workload, args.requests, args.load, args.window, args.seed)
    full = [row for row in rows if row[0] % args.window == 0] or rows
    first, last = full[0][2], full[-1][2]
    print(
        f"first window {first:.1f} us/step, last full window {last:.1f} us/step: "
        f"ratio {last / first:.2f} over {rows[-1][0]:,} steps"
    )


if __name__ == "__main__":
    main()
