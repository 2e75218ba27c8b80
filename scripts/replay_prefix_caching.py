"""Replay the RTX 4090 vLLM run with paged KV, with and without prefix caching.

The RTX 4090 run (LLMServingSim 2.0, casys-kaist/LLMServingSim, MIT) had vLLM's automatic prefix
caching on. This replays it with the profiled RTX 4090 latency preset, its KV cache (41,408
tokens), ``max_num_batched_tokens`` 2048, ``max_num_seqs`` 256 and vLLM V1's scheduling
(``vllm-v1``, paged KV) three ways: no prefix caching; prefix caching where a preempted request
finds only its own blocks; and prefix caching with the prompts' shipped prefix hashes. It prints
preemptions, recomputed and cache-hit tokens (those of readmissions after a preemption apart,
and the hit rate of first admissions, as vLLM reports it), the wall time, and the errors of
mean, p50, p90 and p99 TTFT, TPOT and E2E against the measured run.

Usage::

    python scripts/replay_prefix_caching.py
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from llmsched_env.compilation import warm_up
from llmsched_env.validation import RUN_SETTINGS, load_run, measured_latencies_ms, replay

RUN = "RTX4090-Llama-3.1-8B"
STATS = {
    "mean": np.nanmean,
    "p50": lambda x: np.nanpercentile(x, 50),
    "p90": lambda x: np.nanpercentile(x, 90),
    "p99": lambda x: np.nanpercentile(x, 99),
}


def main() -> None:
    """Replay the run three ways and print each replay's counts and errors."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    run = load_run(RUN)
    measured = measured_latencies_ms(run)
    base = dataclasses.replace(
        RUN_SETTINGS[RUN],
        latency="vllm0.19-rtx4090-llama3.1-8b",
        kv_capacity_tokens=41_408,
        max_tokens=2048,
        max_sequences=256,
        policy="vllm-v1",
    )
    paged = {"kv_allocation": "paged"}
    cached = {"kv_allocation": "paged", "prefix_caching": True}
    cases = (
        ("paged KV, no prefix caching", paged, base.prompt_hashes),
        ("prefix caching, own blocks only", cached, None),
        ("prefix caching with prompt hashes", cached, base.prompt_hashes),
    )
    warm_up(print)  # the first replay's wall time would include compiling the kernels
    for label, env_kwargs, hashes in cases:
        settings = dataclasses.replace(base, env_kwargs=env_kwargs, prompt_hashes=hashes)
        result = replay(run, settings)
        m = result.metrics
        hit, queried = m["prefix_hit_tokens"], m["prefix_queried_tokens"]
        again = m["preempted_prefix_hit_tokens"], m["preempted_prefix_queried_tokens"]
        print(
            f"{label}: {m['preemptions']:.0f} preemptions, {m['recomputed_tokens']:.0f} "
            f"recomputed tokens, {hit:.0f} hit of {queried:.0f} queried tokens, of which "
            f"readmissions {again[0]:.0f} of {again[1]:.0f}; hit rate as vLLM reports it "
            f"(first admissions) {m.get('prefix_hit_rate', 0.0):.1%}; {result.n_decisions} "
            f"decisions in {result.wall_time_s:.2f} s wall"
        )
        simulated = result.latencies_ms()
        for metric in ("ttft", "tpot", "e2e"):
            cells = []
            for name, stat in STATS.items():
                real = stat(measured[f"{metric}_ms"].to_numpy())
                sim = stat(simulated[f"{metric}_ms"].to_numpy())
                cells.append(f"{name} {real:9.1f} {sim:9.1f} {100 * (sim - real) / real:+6.1f}%")
            print(f"  {metric:4} (measured, simulated ms, error) " + " | ".join(cells))


if __name__ == "__main__":
    main()
