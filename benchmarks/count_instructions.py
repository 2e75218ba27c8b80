"""CPU instructions per environment step, counted by valgrind's callgrind (needs valgrind).

Run: ``python benchmarks/count_instructions.py [--steps 5000]``. Wall-clock steps per second
(``bench_envs.py``) vary from run to run with whatever else the machine does; an instruction
count does not, so this is the measure to compare two versions of the code with. Each env runs
the loop of ``bench_envs.py`` (random valid actions through ``gym.make``, seeded resets) twice
under callgrind, once with a warm-up (the first episode, then 300 steps) and once with the
warm-up and ``--steps`` more; the difference divided by the steps is the cost of a step,
episode resets and end-of-episode metrics included. (The warm-up makes one-time costs, such as
numba loading its compiled functions at their first call, the same in both runs; it runs to
the first episode's end because the end-of-episode metrics are first called there, after
about 2,800 steps of ``ContinuousBatching-v0``.)

The count of a whole run still varies between identical runs (by up to about 30 million of
4.5-6 billion instructions, with Python's hash seed fixed as here), so the run without the
counted steps is made twice, before and after the counted one: the difference is subtracted
from their mean, and their gap divided by the steps is printed as the count's uncertainty.
That gap is a lower bound on the spread: five invocations on the same code gave 83,600 to
102,900 instructions per ``BatchScheduling-v0`` step at 3,000 steps, so compare two versions
by several alternated invocations, with thousands of steps each.

The compiled (numba) parts are compiled once natively before the counted runs, into a
temporary cache that the counted runs load, so compilation is not counted: numba is told to
compile for a generic CPU (``NUMBA_CPU_NAME=generic``), because the CPU that valgrind presents
differs from the real one and would otherwise miss the cache.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from llmsched_env.cli_args import positive_int

ENV_IDS = ("llmsched/BatchScheduling-v0", "llmsched/ContinuousBatching-v0")

LOOP = """
import random, sys
sys.path.insert(0, {bench_dir!r})
import gymnasium as gym
import llmsched_env
from bench_envs import random_masked_action
env = gym.make({env_id!r}); rng = random.Random(0)
nvec = env.action_space.nvec.tolist(); unwrapped = env.unwrapped
seed = 0; env.reset(seed=seed)
def step():
    global seed
    action = random_masked_action(unwrapped.action_masks().tolist(), nvec, rng)
    *_, terminated, truncated, _ = env.step(action)
    if terminated or truncated:
        seed += 1; env.reset(seed=seed)
    return terminated or truncated
while not step():  # the first episode, whose end reaches the end-of-episode metrics
    pass
for _ in range({steps}):
    step()
"""


#: Steps after the first episode and before the counted ones, in both runs.
WARMUP_STEPS = 300


def count(env_id: str, steps: int, env: dict[str, str]) -> int:
    """Instructions that callgrind counts for the loop with warm-up and ``steps`` more steps."""
    code = LOOP.format(
        bench_dir=str(Path(__file__).parent), env_id=env_id, steps=WARMUP_STEPS + steps
    )
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{result.stderr[-2000:]}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=positive_int, default=5000, help="steps per env")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as cache:
        env = {
            **os.environ,
            "NUMBA_CPU_NAME": "generic",
            "NUMBA_CACHE_DIR": cache,
            "PYTHONHASHSEED": "0",  # the same dict and set orders in every run
        }
        for env_id in ENV_IDS:
            # Compile natively (the warm-up reaches every compiled function).
            code = LOOP.format(
                bench_dir=str(Path(__file__).parent), env_id=env_id, steps=WARMUP_STEPS
            )
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            before = count(env_id, 0, env)
            counted = count(env_id, args.steps, env)
            after = count(env_id, 0, env)
            per_step = (counted - (before + after) / 2) / args.steps
            uncertainty = abs(after - before) / args.steps
            print(
                f"{env_id} (defaults): {per_step:,.0f} +/- {uncertainty:,.0f} instructions/step "
                f"(the two runs without the {args.steps:,} counted steps differ by "
                f"{abs(after - before):,})"
            )


if __name__ == "__main__":
    main()
