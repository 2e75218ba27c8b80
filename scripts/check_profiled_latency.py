"""Accuracy and speed checks of the profiled iteration latency model (prints, asserts nothing).

1. Leave-one-out on the attention grid: each measured interior point predicted from its two
   neighbours along one axis, linearly and linearly in log2, as mean absolute relative error.
2. Held-out check: attention rows off the doubling grid (the RTX PRO 6000 profiles carry a
   1.5x-spaced sweep) predicted by the model's multilinear interpolation of the doubling grid.
3. The fill rule for the largest n_decode with a prefill, checked one n_decode lower.
4. Cost of one ``iteration_s`` call, and the sanity iterations of every preset.

Run: ``python scripts/check_profiled_latency.py``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from llmsched_env.latency.presets import ITERATION_LATENCY_PRESETS, vllm_bench_profile_dir
from llmsched_env.latency.profile_data import ATTENTION_AXES, load_layer_profile
from llmsched_env.latency.profiled import _attention

FOLDERS = [
    "RTX4090-Llama-3.1-8B",
    "RTXPRO6000-Llama-3.1-8B",
    "RTXPRO6000-Qwen3-32B",
    "RTXPRO6000-Qwen3-30B-A3B-Instruct-2507",
]


def leave_one_out(folder: str) -> dict[str, tuple[float, float]]:
    """Mean |error| / truth over interior measured points, per axis: (linear, log2)."""
    table = pd.read_csv(vllm_bench_profile_dir(folder) / "attention.csv")
    keys = table[list(ATTENTION_AXES)].to_numpy()
    pow2 = ((keys == 0) | ((keys & (keys - 1)) == 0)).all(axis=1)
    table = table[pow2]
    lookup = {tuple(r[:4]): r[4] for r in table.itertuples(index=False)}
    out = {}
    for axis, name in enumerate(ATTENTION_AXES):
        values = np.unique(table[name].to_numpy())
        positive = values[values > 0]
        lin, log = [], []
        for key, truth in lookup.items():
            x = key[axis]
            if x not in positive[1:-1]:
                continue
            i = int(np.searchsorted(positive, x))
            lo_key, hi_key = list(key), list(key)
            lo_key[axis], hi_key[axis] = positive[i - 1], positive[i + 1]
            lo, hi = lookup.get(tuple(lo_key)), lookup.get(tuple(hi_key))
            if lo is None or hi is None:
                continue
            x0, x1 = positive[i - 1], positive[i + 1]
            t_lin = (x - x0) / (x1 - x0)
            t_log = (np.log2(x) - np.log2(x0)) / (np.log2(x1) - np.log2(x0))
            lin.append(abs(lo + t_lin * (hi - lo) - truth) / truth)
            log.append(abs(lo + t_log * (hi - lo) - truth) / truth)
        out[name] = (float(np.mean(lin)), float(np.mean(log)))
    return out


def held_out(folder: str) -> tuple[int, float, float]:
    """Rows off the doubling grid: count, mean and 95th percentile of |error| / truth."""
    profile = load_layer_profile(vllm_bench_profile_dir(folder))
    table = pd.read_csv(vllm_bench_profile_dir(folder) / "attention.csv")
    keys = table[list(ATTENTION_AXES)].to_numpy()
    off = ~((keys == 0) | ((keys & (keys - 1)) == 0)).all(axis=1)
    if not off.any():
        return 0, float("nan"), float("nan")
    errors = []
    for row in table[off].itertuples(index=False):
        guess = _attention(*profile.attention_axes, profile.attention_us, *map(float, row[:4]))
        errors.append(abs(guess - row[4]) / row[4])
    return len(errors), float(np.mean(errors)), float(np.percentile(errors, 95))


def fill_rule(folder: str) -> float:
    """Mean |error| of A(c,p,n,k) = A(c,p,n',k) * A(0,0,n,k) / A(0,0,n',k) at n = 128, n' = 64."""
    profile = load_layer_profile(vllm_bench_profile_dir(folder))
    grid, nd = profile.attention_us, profile.attention_axes[2]
    n, m = int(np.searchsorted(nd, 128)), int(np.searchsorted(nd, 64))
    guess = grid[1:, :, m, 1:] * grid[0, 0, n, 1:] / grid[0, 0, m, 1:]
    truth = grid[1:, :, n, 1:]
    return float(np.mean(np.abs(guess - truth) / truth))


def main() -> None:
    """Print every check."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    for folder in FOLDERS:
        print(folder)
        for name, (lin, log) in leave_one_out(folder).items():
            print(f"  leave-one-out {name:13s} linear {lin:6.1%}  log2 {log:6.1%}")
        count, mean, p95 = held_out(folder)
        if count:
            print(f"  held-out 1.5x rows: {count}, mean |err| {mean:.1%}, p95 {p95:.1%}")
        print(f"  n_decode fill rule checked at 128: mean |err| {fill_rule(folder):.1%}")
    rng = np.random.default_rng(0)
    for name, factory in ITERATION_LATENCY_PRESETS.items():
        if not name.startswith("vllm0.19"):
            continue
        model = factory()
        model.iteration_s(512, 100, 150_000, rng, 1_000, 1)  # compiled (or cache-loaded) first
        start = time.perf_counter()
        for i in range(20_000):
            model.iteration_s(512, 100 + i % 20, 150_000, rng, 1_000, 1)
        per_call_us = (time.perf_counter() - start) / 20_000 * 1e6
        decode = model.iteration_s(0, 128, 128 * 1500, rng) * 1e3
        prefill = model.iteration_s(2048, 0, 0, rng, 0, 1) * 1e3
        small = model.iteration_s(0, 64, 64 * 600, rng) * 1e3
        print(
            f"{name}: {per_call_us:.2f} us/call; decode 128 x KV 1500 {decode:.1f} ms; "
            f"prefill 2048 {prefill:.1f} ms; decode 64 x KV 600 {small:.1f} ms"
        )


if __name__ == "__main__":
    main()
