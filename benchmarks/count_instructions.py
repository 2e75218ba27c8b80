"""CPU instructions per environment step, counted by valgrind's callgrind (needs valgrind).

Run: ``python benchmarks/count_instructions.py [--steps 5000]``. Wall-clock steps per second
(``bench_envs.py``) vary from run to run with whatever else the machine does; an instruction
count does not, so this is the measure to compare two versions of the code with. Each env runs
the loop of ``bench_envs.py`` (random valid actions through ``gym.make``, seeded resets) twice
under callgrind, once with no steps and once with ``--steps`` steps; the difference divided by
the steps is the cost of a step, episode resets and end-of-episode metrics included.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

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
for _ in range({steps}):
    action = random_masked_action(unwrapped.action_masks().tolist(), nvec, rng)
    *_, terminated, truncated, _ = env.step(action)
    if terminated or truncated:
        seed += 1; env.reset(seed=seed)
"""


def count(env_id: str, steps: int) -> int:
    """Instructions that callgrind counts for the loop with ``steps`` steps (imports included)."""
    code = LOOP.format(bench_dir=str(Path(__file__).parent), env_id=env_id, steps=steps)
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
    )
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{result.stderr[-2000:]}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5000, help="steps per env")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    for env_id in ENV_IDS:
        per_step = (count(env_id, args.steps) - count(env_id, 0)) / args.steps
        print(f"{env_id} (defaults): {per_step:,.0f} instructions/step")


if __name__ == "__main__":
    main()
