"""Requests per second of CPU time through ``env.step`` in the reference simulator's configuration.

Run: ``python benchmarks/bench_reference.py`` (a few minutes). Each episode is a full episode of
``--requests`` ``burstgpt-synthetic`` requests of ``llmsched/BatchScheduling-v0`` in the
configuration ``scripts/reproduce_reference.py`` builds for the reference simulator
(llm-scheduler-sim: ``latency="calibrated"``, ``kv_memory="reference-sim"``, a 20 s deadline,
B_max = 128, and its three methods with their bins: FIFO with batches of 8 and dynamic batching
on one bin, Multi-Bin dynamic with K = 8), on ``--gpus`` GPUs with the generator's natural
arrival rate compressed ``--speedup`` times. The env and its episode are built by that script's
own ``scenarios`` and ``episode_tasks``, so the benchmark cannot drift from the reproduction.

Only the decision loop is timed (``policy.act`` then ``env.step`` until the episode ends, after
``gym.make`` and ``reset``), in ``time.process_time`` (CPU time of the process, so other
processes on a shared machine disturb it less than wall time), after one short untimed episode
of each policy (lazy imports and caches). The policies run interleaved (A B C A B C ...) for
``--repeats`` rounds; the median of each is printed.

``--baseline-path CHECKOUT`` also runs the same episodes with the code of another checkout of
the project (for example the main branch), interleaved with this one's (A A' B B' C C', then
A' A B' B C' C, ...), and prints the ratio of the medians and the median of the rounds' ratios
(the two episodes of a round run back to back, so they share the machine's load). Each checkout
runs in its own worker process, which imports the packages and
``scripts/reproduce_reference.py`` of that checkout only; the episodes' metrics of both are
compared, so a ratio is only printed for identical episodes.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]

#: The benchmarked baselines: registry name -> (method of ``reproduce_reference.METHODS``, bins).
POLICIES = {
    "static-fifo": ("FIFO (batch 8)", 1),
    "sla-dynamic": ("Dynamic, no bins", 1),
    "multibin-dynamic": ("Multi-Bin dynamic", 8),
}


# ---------------------------------------------------------------------------------- worker side
class _Episodes:
    """Runs the benchmark's episodes with the code of one checkout (inside a worker process)."""

    def __init__(self, checkout: Path, n_requests: int, gpus: int, speedup: float) -> None:
        sys.path.insert(0, str(checkout / "scripts"))
        import reproduce_reference as rr  # the checkout's script puts the checkout first

        import llmsched_env

        self.package = str(Path(llmsched_env.__file__).resolve().parents[1])
        natural = next(s for s in rr.scenarios() if s.key == "burstgpt-natural")
        rate = natural.rates_rps[0] * speedup  # rates_rps[0] is the natural rate (1x)
        self.tasks = {}
        for name, (method, bins) in POLICIES.items():
            [task] = rr.episode_tasks(
                natural, f"x{speedup:g}", rate, method, rr.METHODS[method], gpus, bins,
                n_requests, [0],
            )  # fmt: skip
            self.tasks[name] = task
        rr.warm_up(None)
        for name, task in self.tasks.items():  # a short untimed episode: lazy imports, caches
            self.tasks[name] = replace(task, env_kwargs={**task.env_kwargs, "n_requests": 200})
            self.run(name)
            self.tasks[name] = task

    def run(self, name: str) -> dict[str, Any]:
        """One full episode of policy ``name``: its CPU time, steps and metrics."""
        import gymnasium as gym

        task = self.tasks[name]
        env = gym.make(task.env_id, **task.env_kwargs)
        policy = task.policy(env)
        obs, info = env.reset(seed=task.seed)
        policy.reset()
        steps = 0
        gc.collect()  # earlier episodes' garbage is not this episode's cost
        started = time.process_time()
        while True:
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
            steps += 1
            if terminated or truncated:
                break
        cpu_s = time.process_time() - started
        env.close()
        metrics = {k: repr(v) for k, v in sorted(info["episode_metrics"].items())}
        return {"cpu_s": cpu_s, "steps": steps, "metrics": metrics}


def _serve(checkout: Path, n_requests: int, gpus: int, speedup: float) -> None:
    """Worker loop: read a policy name per line on stdin, answer one JSON line on stdout."""
    out, sys.stdout = sys.stdout, sys.stderr  # anything else printed goes to stderr
    episodes = _Episodes(checkout, n_requests, gpus, speedup)
    print(json.dumps({"package": episodes.package}), file=out, flush=True)
    for line in sys.stdin:
        print(json.dumps(episodes.run(line.strip())), file=out, flush=True)


# ---------------------------------------------------------------------------------- parent side
class Worker:
    """A worker process running episodes with the code of ``checkout``."""

    def __init__(self, checkout: Path, args: argparse.Namespace) -> None:
        self.checkout = checkout
        command = [
            sys.executable, __file__, "--worker", str(checkout),
            "--requests", str(args.requests), "--gpus", str(args.gpus),
            "--speedup", str(args.speedup),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=checkout
        )
        package = self._read()["package"]
        if Path(package) != checkout:
            self.close()
            raise RuntimeError(f"the worker for {checkout} imported llmsched_env from {package}")

    def _read(self) -> dict[str, Any]:
        stdout: TextIO = self.process.stdout  # type: ignore[assignment]
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the worker for {self.checkout} stopped (see its stderr above)")
        return json.loads(line)

    def run(self, name: str) -> dict[str, Any]:
        """Run one episode of policy ``name`` in the worker and return its result."""
        stdin: TextIO = self.process.stdin  # type: ignore[assignment]
        stdin.write(name + "\n")
        stdin.flush()
        return self._read()

    def close(self) -> None:
        """Stop the worker."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per episode, then the medians (and ratios)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000, help="requests per episode")
    parser.add_argument("--repeats", type=int, default=5, help="episodes per policy and checkout")
    parser.add_argument("--gpus", type=int, default=4, help="GPUs")
    parser.add_argument(
        "--speedup", type=float, default=8.0, help="compression of the natural arrival rate"
    )
    parser.add_argument(
        "--baseline-path", type=Path, help="another checkout to compare with (e.g. main)"
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        _serve(args.worker.resolve(), args.requests, args.gpus, args.speedup)
        return 0
    for name, value in (("requests", args.requests), ("repeats", args.repeats)):
        if value < 1:
            parser.error(f"--{name} must be at least 1, got {value}")
    checkouts = {"this": ROOT}
    if args.baseline_path is not None:
        baseline = args.baseline_path.resolve()
        if not (baseline / "scripts" / "reproduce_reference.py").is_file():
            parser.error(f"--baseline-path {baseline} is not a checkout of this project")
        checkouts["baseline"] = baseline
    print(
        f"burstgpt-synthetic, {args.requests:,} requests, {args.gpus} GPUs, natural rate x "
        f"{args.speedup:g}, reference settings; requests per CPU second of the decision loop"
    )
    workers = {label: Worker(path, args) for label, path in checkouts.items()}
    rates: dict[tuple[str, str], list[float]] = {}
    metrics: dict[str, dict[str, Any]] = {}
    try:
        for repeat in range(args.repeats):
            for name in POLICIES:
                order = list(workers.items())
                for label, worker in order if repeat % 2 == 0 else order[::-1]:
                    result = worker.run(name)
                    rate = args.requests / result["cpu_s"]
                    rates.setdefault((name, label), []).append(rate)
                    same = metrics.setdefault(name, result["metrics"]) == result["metrics"]
                    print(
                        f"  round {repeat + 1} {name:17s} {label:8s} {rate:12,.0f} req/s "
                        f"({result['steps']:,} steps)" + ("" if same else "  DIFFERENT EPISODE"),
                        flush=True,
                    )
                    if not same:
                        raise RuntimeError(f"{name}: {label} ran a different episode")
    finally:
        for worker in workers.values():
            worker.close()
    print(f"medians of {args.repeats}:")
    for name in POLICIES:
        line = f"  {name:17s} {statistics.median(rates[name, 'this']):12,.0f} req/s"
        if "baseline" in workers:
            base = statistics.median(rates[name, "baseline"])
            ratio = statistics.median(rates[name, "this"]) / base
            paired = statistics.median(
                a / b for a, b in zip(rates[name, "this"], rates[name, "baseline"], strict=True)
            )
            line += (
                f"   baseline {base:12,.0f} req/s   ratio {ratio:.2f}x "
                f"(median of the rounds' ratios {paired:.2f}x)"
            )
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
