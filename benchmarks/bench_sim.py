"""Simulated requests per second of each server with a FIFO-style scheduling callback.

Run: ``python benchmarks/bench_sim.py`` (``--requests N`` sets the run's length, at most the
15,493 requests of the Azure trace's episode region). Prints one line per server; the numbers
in the README come from this script.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from llmsched_env.capacity import batch_capacity_rps, iteration_capacity_rps
from llmsched_env.cli_args import positive_float, positive_int
from llmsched_env.latency import make_batch_latency, make_iteration_latency, make_kv_memory
from llmsched_env.sim import BatchServer, IterationServer, simulate
from llmsched_env.workload import make_workload_source


def bench_batch_server(n_requests: int, load: float, batch_size: int, n_gpus: int) -> float:
    source = make_workload_source("azure-conv")
    latency = make_batch_latency("llama3.1-8b-h100")
    kv = make_kv_memory("h100-80gb-llama3.1-8b").capacity_tokens
    capacity = batch_capacity_rps(
        latency,
        source.calibration(),
        n_gpus=n_gpus,
        max_batch_size=batch_size,
        kv_capacity_tokens=kv,
    )
    rng = np.random.default_rng(0)
    workload = source.sample(n_requests, rng, arrival_rate_rps=load * capacity)
    server = BatchServer(workload, n_gpus=n_gpus, latency=latency, kv_capacity_tokens=kv, rng=rng)
    start = time.perf_counter()
    simulate(server, lambda s: s.dispatch(0, batch_size))
    elapsed = time.perf_counter() - start
    assert server.done
    return n_requests / elapsed


def bench_iteration_server(n_requests: int, load: float) -> float:
    source = make_workload_source("demo2")
    latency = make_iteration_latency("demo2")
    capacity = iteration_capacity_rps(latency, source.calibration(), n_gpus=1)
    rng = np.random.default_rng(0)
    workload = source.sample(n_requests, rng, arrival_rate_rps=load * capacity)
    server = IterationServer(
        workload,
        n_gpus=1,
        latency=latency,
        kv_capacity_tokens=10**7,
        max_tokens=2048,
        max_sequences=1000,
        rng=rng,
    )
    start = time.perf_counter()
    # FIFO-style: decode every running sequence, fill the rest of the budget with prefill.
    simulate(server, lambda s: s.run_iteration(10**9, 10**9, 10**9))
    elapsed = time.perf_counter() - start
    assert server.done
    return n_requests / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    # The request-level server replays windows of the Azure trace, which bound the episode.
    most = make_workload_source("azure-conv").max_episode_requests
    parser.add_argument(
        "--requests", type=positive_int, default=15_000, help=f"requests per run (at most {most:,})"
    )
    parser.add_argument("--load", type=positive_float, default=0.9, help="load of both servers")
    parser.add_argument("--repeats", type=positive_int, default=3, help="runs (best is printed)")
    args = parser.parse_args()
    if args.requests > most:
        parser.error(
            f"--requests {args.requests:,} is more than the {most:,} requests of the Azure "
            "trace's episode region, which the request-level server replays"
        )
    batch = max(bench_batch_server(args.requests, args.load, 8, 2) for _ in range(args.repeats))
    print(
        f"request-level server (azure-conv, 2 GPUs, FIFO batch 8, load {args.load}): "
        f"{batch:,.0f} simulated requests/s"
    )
    it = max(bench_iteration_server(args.requests, args.load) for _ in range(args.repeats))
    print(
        f"iteration-level server (demo2, 1 GPU, decode-all + prefill, load {args.load}): "
        f"{it:,.0f} simulated requests/s"
    )


if __name__ == "__main__":
    main()
