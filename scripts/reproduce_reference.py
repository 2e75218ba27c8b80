"""Redo the request-level reference simulator's comparison and write ``docs/reproduction.md``.

The reference ("llm-scheduler-sim", TravisLeeTS/llm-scheduler-sim) compares static FIFO batching,
dynamic batching without bins, Multi-Bin dynamic batching (K = 8) and a grid-searched "optimal"
configuration (the fewest GPUs, then the best K, with at most 5% SLA violations) at three loads
on BurstGPT, then varies K at 4 GPUs. This script runs the same comparison through
``llmsched/BatchScheduling-v0`` and the baselines of ``baselines.batch``, with the reference's
settings (``latency="calibrated"``, ``kv_memory="reference-sim"``, a 20 s end-to-end deadline,
B_max = 128), prints the headline table and writes the report, reference numbers beside ours.

Usage::

    python scripts/reproduce_reference.py                  # about 2 minutes on 2 cores
    python scripts/reproduce_reference.py --requests 2000 --seeds 1 --out /tmp/quick.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.batch import MultiBinDynamic, SLADynamic, StaticFIFO  # noqa: E402
from llmsched_env.cli_args import positive_int  # noqa: E402
from llmsched_env.compilation import warm_up  # noqa: E402
from llmsched_env.envs import BatchSchedulingEnv  # noqa: E402
from llmsched_env.evaluation import EpisodeTask, run_episode  # noqa: E402
from llmsched_env.kinds import ENV_KINDS  # noqa: E402
from llmsched_env.outputs import check_output_dir  # noqa: E402
from llmsched_env.parallel import run_jobs  # noqa: E402

ENV_ID = ENV_KINDS["batch"].env_id
SETTINGS = {
    "latency": "calibrated",
    "kv_memory": "reference-sim",
    "sla": 20.0,
    "max_batch_size": 128,
}
"""The reference's settings: T(b, L) fit, 37,333 KV tokens, D_SLA = 20 s, B_MAX = 128."""

GPUS = (1, 2, 4, 8, 16, 32, 64, 100)
BINS = (1, 2, 4, 8, 16, 32)
SENSITIVITY_GPUS = 4
MAX_VIOLATION_PCT = 5.0

REFERENCE_PREFIX_RATE_RPS = 0.0314
"""Arrival rate of the BurstGPT prefix the reference replays (its 10K-request, 1x runs).

Read off its published results: unsaturated runs complete requests at the offered rate, and its
10K-request runs report 0.031 / 0.314 / 3.13 req/s at 1x / 10x / 100x.
"""

#: Sizing of the reference's dynamic modes: its 10 ms per-token target, per-token time as in its
#: T(b, L) model (prompt and output tokens cost alike), and sizes rounded to the nearest level
#: (the env then stops a batch before the first request that would overflow KV memory).
DYNAMIC = {"tbt_sla_s": 0.010, "tbt_tokens": "total", "size_rounding": "nearest"}

METHODS = {
    "FIFO (batch 8)": partial(StaticFIFO.from_env, batch_size=8),
    "Dynamic, no bins": partial(SLADynamic.from_env, **DYNAMIC),
    "Multi-Bin dynamic": partial(MultiBinDynamic.from_env, **DYNAMIC),
}
VARIANTS = {
    "TBT per prompt+output token, nearest level (used above)": METHODS["Dynamic, no bins"],
    "TBT per output token (service / longest output)": partial(
        SLADynamic.from_env, **{**DYNAMIC, "tbt_tokens": "output"}
    ),
    "batch latency vs 0.5 x deadline (sla_signal='batch-latency')": partial(
        SLADynamic.from_env, **{**DYNAMIC, "sla_signal": "batch-latency"}
    ),
    "sizes rounded down to a level": partial(
        SLADynamic.from_env, **{**DYNAMIC, "size_rounding": "down"}
    ),
    "library defaults (per output token, rounded down)": SLADynamic.from_env,
}

# The reference's published 10K-request rows (reference_results/*_step2_comparison.csv):
# violation %, mean latency s, P99 latency s, throughput req/s, GPU utilisation %, mean batch.
REF_COMPARISON = {
    "low": {
        "FIFO (batch 8)": (1, 1, 2.71, 6.68, 23.64, 0.031, 15.3, 1.1),
        "Dynamic, no bins": (1, 1, 2.71, 6.68, 23.64, 0.031, 15.3, 1.1),
        "Multi-Bin dynamic": (1, 8, 2.63, 6.63, 24.97, 0.031, 15.6, 1.0),
        "Optimal": (1, 2, 2.09, 6.46, 22.89, 0.031, 15.4, 1.0),
    },
    "medium": {
        "FIFO (batch 8)": (1, 1, 84.78, 305.35, 1018.86, 0.314, 67.1, 5.1),
        "Dynamic, no bins": (1, 1, 56.77, 21.17, 41.34, 0.314, 63.0, 4.8),
        "Multi-Bin dynamic": (1, 8, 71.35, 44.43, 271.23, 0.314, 65.2, 3.3),
        "Optimal": (4, 4, 1.80, 6.45, 21.93, 0.314, 35.4, 1.2),
    },
    "high": {
        "FIFO (batch 8)": (1, 1, 99.54, 7623.21, 14866.11, 0.550, 99.5, 7.9),
        "Dynamic, no bins": (1, 1, 99.03, 1182.62, 2051.77, 1.939, 98.0, 36.2),
        "Multi-Bin dynamic": (1, 8, 93.34, 594.75, 3814.29, 1.448, 99.2, 19.6),
        "Optimal": (16, 4, 4.01, 8.12, 23.25, 3.132, 58.5, 2.0),
    },
}
# reference_results/medium_10x_sensitivity_analysis.csv (K = 1..16, 4 GPUs, 10x, 10K requests)
# and, for K = 32, the 4-GPU row of medium_10x_step1_grid_search.csv.
REF_SENSITIVITY = {1: 2.84, 2: 1.99, 4: 1.79, 8: 2.39, 16: 4.21, 32: 7.50}

LEVELS = (("low", 1), ("medium", 10), ("high", 100))


@dataclass(frozen=True)
class Scenario:
    """A workload at three load levels."""

    key: str
    title: str
    workload: str
    rates_rps: tuple[float, float, float]
    has_reference: bool
    rate_note: str


def capacity_one_gpu(workload: str) -> float:
    """The env's capacity estimate of one GPU under the reference settings (req/s)."""
    env = BatchSchedulingEnv(workload=workload, n_gpus=1, n_bins=1, arrival_rate=1.0, **SETTINGS)
    return float(env.capacity_rps)


def scenarios() -> list[Scenario]:
    """BurstGPT-like load at the reference's rates and at natural-rate compression; Azure."""
    natural = BatchSchedulingEnv(workload="burstgpt-synthetic", arrival_rate=1.0).source
    natural_rps = natural.natural_rate_rps
    cap_burst = capacity_one_gpu("burstgpt-synthetic")
    cap_azure = capacity_one_gpu("azure-conv")
    matched = tuple(REFERENCE_PREFIX_RATE_RPS * s for _, s in LEVELS)
    return [
        Scenario(
            "burstgpt",
            "burstgpt-synthetic at the reference's arrival rates",
            "burstgpt-synthetic",
            matched,
            True,
            f"{REFERENCE_PREFIX_RATE_RPS} req/s x 1 / 10 / 100: the rate of the BurstGPT prefix "
            "the reference replays, compressed 1x / 10x / 100x",
        ),
        Scenario(
            "burstgpt-natural",
            "burstgpt-synthetic at its natural rate, compressed",
            "burstgpt-synthetic",
            tuple(natural_rps * s for _, s in LEVELS),
            False,
            f"natural rate {natural_rps:.3f} req/s (BurstGPT's 61-day mean gap, 3.69 s) x 1 / 10 / "
            "100",
        ),
        Scenario(
            "azure",
            "Azure LLM inference trace (conversation), load-matched",
            "azure-conv",
            tuple(r * cap_azure / cap_burst for r in matched),
            False,
            f"the reference's rates scaled by the ratio of one GPU's capacity, {cap_azure:.3f} / "
            f"{cap_burst:.3f} req/s (Azure / burstgpt-synthetic), so each level loads a GPU alike",
        ),
    ]


def episode_tasks(
    scenario: Scenario,
    level: str,
    rate: float,
    tag: str,
    policy: Any,
    gpus: int,
    k: int,
    n_requests: int,
    seeds: list[int],
) -> list[EpisodeTask]:
    """The episodes of one configuration, one per seed, tagged for aggregation."""
    kwargs = {
        **SETTINGS,
        "workload": scenario.workload,
        "arrival_rate": rate,
        "n_gpus": gpus,
        "n_bins": k,
        "n_requests": n_requests,
    }
    name = f"{scenario.key}|{level}|{tag}|{gpus}|{k}"
    return [EpisodeTask(policy, name, ENV_ID, kwargs, seed) for seed in seeds]


def floor_pct(scenario: Scenario, n_requests: int, seeds: list[int]) -> float:
    """Share of an episode's requests that miss the deadline even alone on an idle GPU (%).

    ``T(1, prompt + output) > sla``: no scheduler and no number of GPUs can serve them in time,
    so this is the floor of the violation rate. The mean over the seeds' episodes (a seed fixes
    an episode's requests whatever the arrival rate).
    """
    env = BatchSchedulingEnv(
        workload=scenario.workload, arrival_rate=1.0, n_requests=n_requests, **SETTINGS
    )
    shares = []
    for seed in seeds:
        env.reset(seed=seed)
        w = env.server.workload
        alone = [
            env.latency.estimate_s(1, float(p), float(o))
            for p, o in zip(w.prompt_tokens, w.output_tokens)
        ]
        shares.append(100.0 * float(np.mean(np.array(alone) > SETTINGS["sla"])))
    return float(np.mean(shares))


def run(
    sets: list[Scenario], n_requests: int, seeds: list[int], jobs: int, floors: dict[str, float]
) -> pd.DataFrame:
    """Run every episode and return one row per episode.

    The first wave runs the 1-GPU comparison rows, the controller variants (first scenario
    only), the grid's 1-GPU row and the sensitivity row (4 GPUs, medium load). Later waves add
    one GPU count of the grid at a time, for every K, and only for the loads at which, with
    fewer GPUs, no K has met the 5% target (larger counts cannot change the "optimal" row) and
    the best K is still more than 0.1 points above the floor ``floors[scenario]`` (more GPUs
    cannot help requests that are too long for the deadline).
    """
    levels = [(s, level, rate) for s in sets for (level, _), rate in zip(LEVELS, s.rates_rps)]
    first: list[EpisodeTask] = []
    for scenario, level, rate in levels:
        tasks = partial(episode_tasks, scenario, level, rate, n_requests=n_requests, seeds=seeds)
        for tag in ("FIFO (batch 8)", "Dynamic, no bins"):
            first += tasks(tag, METHODS[tag], 1, 1)
        if scenario is sets[0]:
            for tag, policy in VARIANTS.items():
                if policy is not METHODS["Dynamic, no bins"]:
                    first += tasks(tag, policy, 1, 1)
        for gpus in {1, SENSITIVITY_GPUS} if level == "medium" else {1}:
            for k in BINS:
                first += tasks("grid", METHODS["Multi-Bin dynamic"], gpus, k)
    rows: list[dict[str, Any]] = []
    started = time.time()

    def progress(done: int, total: int) -> None:
        if done == total or done % max(total // 10, 1) == 0:
            say(f"{len(rows) + done} episodes ({done}/{total} of this wave), "
                f"{time.time() - started:.0f} s")  # fmt: skip

    wave, done_gpus = first, {(s.key, level): {1} for s, level, _ in levels}
    for gpus in GPUS[1:]:
        rows += run_jobs(run_episode, wave, jobs, progress)
        frame = to_frame(rows)
        grid = frame[frame["method"] == "grid"]
        wave = []
        for scenario, level, rate in levels:
            key = (scenario.key, level)
            here = grid[
                (grid["scenario"] == scenario.key)
                & (grid["level"] == level)
                & (grid["gpus"] < gpus)
            ]
            means = here.groupby(["gpus", "k"])["violation_pct"].mean()
            largest = means[means.index.get_level_values("gpus") == max(done_gpus[key])]
            if (
                (means <= MAX_VIOLATION_PCT).any()
                or largest.min() <= floors[scenario.key] + 0.1
                or gpus in done_gpus[scenario.key, level]
            ):
                continue
            done_gpus[scenario.key, level].add(gpus)
            for k in BINS:
                wave += episode_tasks(
                    scenario, level, rate, "grid", METHODS["Multi-Bin dynamic"], gpus, k,
                    n_requests, seeds,
                )  # fmt: skip
        if not wave:
            break
    rows += run_jobs(run_episode, wave, jobs, progress)
    return to_frame(rows)


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Episode rows with the configuration split out of the tag, and percentages."""
    frame = pd.DataFrame(rows)
    parts = frame["policy"].str.split("|", expand=True)
    frame["scenario"], frame["level"], frame["method"] = parts[0], parts[1], parts[2]
    frame["gpus"], frame["k"] = parts[3].astype(int), parts[4].astype(int)
    frame["violation_pct"] = 100.0 * (1.0 - frame["sla_attainment"])
    frame["gpu_util_pct"] = 100.0 * frame["gpu_utilization"]
    return frame


METRICS = (
    "violation_pct",
    "latency_s_mean",
    "latency_s_p99",
    "throughput_rps",
    "gpu_util_pct",
    "mean_batch_size",
)


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds of each (scenario, level, method, GPUs, K), plus the seeds' spread."""
    keys = ["scenario", "level", "method", "gpus", "k"]
    means = frame.groupby(keys, sort=False)[list(METRICS)].mean()
    spread = frame.groupby(keys, sort=False)["violation_pct"].agg(["min", "max"])
    return means.join(spread.add_prefix("violation_pct_")).reset_index()


def optimum(grid: pd.DataFrame) -> pd.Series | None:
    """Fewest GPUs with mean violations <= 5%, then the K with the fewest violations."""
    feasible = grid[grid["violation_pct"] <= MAX_VIOLATION_PCT]
    if feasible.empty:
        return None
    fewest = feasible[feasible["gpus"] == feasible["gpus"].min()]
    return fewest.sort_values(["violation_pct", "k"]).iloc[0]


# ---------------------------------------------------------------- markdown
def cell(value: float, digits: int = 1) -> str:
    """A number for a table cell (``-`` for nan)."""
    return "-" if value is None or not np.isfinite(value) else f"{value:,.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def comparison_rows(agg: pd.DataFrame, scenario: str, level: str) -> dict[str, pd.Series]:
    """Our four rows of the reference's comparison (``Optimal`` may be missing)."""
    here = agg[(agg["scenario"] == scenario) & (agg["level"] == level)]
    grid = here[here["method"] == "grid"]
    rows = {m: here[here["method"] == m].iloc[0] for m in ("FIFO (batch 8)", "Dynamic, no bins")}
    rows["Multi-Bin dynamic"] = grid[(grid["gpus"] == 1) & (grid["k"] == 8)].iloc[0]
    best = optimum(grid)
    if best is not None:
        rows["Optimal"] = best
    return rows


def comparison_table(agg: pd.DataFrame, scenario: Scenario, level: str) -> list[str]:
    """The reference's comparison layout, with its numbers beside ours when it has them."""
    rows = comparison_rows(agg, scenario.key, level)
    ref = REF_COMPARISON[level] if scenario.has_reference else {}
    digits = (1, 2, 2, 3, 1, 1)
    names = ("SLA viol. %", "mean lat. s", "P99 lat. s", "thr. req/s", "GPU util. %", "batch")
    header = ["method", "GPUs x K"]
    for name in names:
        header += [name, "ref"] if ref else [name]
    out = []
    for method in ("FIFO (batch 8)", "Dynamic, no bins", "Multi-Bin dynamic", "Optimal"):
        theirs = ref.get(method)
        row = rows.get(method)
        config = "none <= 5%" if row is None else f"{int(row['gpus'])} x {int(row['k'])}"
        if theirs:
            config += f" (ref {theirs[0]} x {theirs[1]})"
        line = [method, config]
        for i, (metric, d) in enumerate(zip(METRICS, digits)):
            value = cell(row[metric], d) if row is not None else "-"
            if i == 0 and row is not None:
                low, high = row["violation_pct_min"], row["violation_pct_max"]
                value += f" [{cell(low, d)}, {cell(high, d)}]"
            line.append(value)
            if ref:
                line.append(cell(theirs[2 + i], d) if theirs else "-")
        out.append(line)
    return table(header, out)


def grid_table(agg: pd.DataFrame, scenario: str, level: str) -> list[str]:
    """SLA violation % over GPUs x K, the optimum in bold, ``.`` where not run."""
    here = agg[(agg["scenario"] == scenario) & (agg["level"] == level)]
    grid = here[here["method"] == "grid"].set_index(["gpus", "k"])["violation_pct"]
    best = optimum(here[here["method"] == "grid"])
    rows = []
    for gpus in GPUS:
        line = [str(gpus)]
        for k in BINS:
            text = cell(grid[(gpus, k)]) if (gpus, k) in grid.index else "."
            if best is not None and (gpus, k) == (best["gpus"], best["k"]):
                text = f"**{text}**"
            line.append(text)
        rows.append(line)
    return table(["GPUs \\ K", *map(str, BINS)], rows)


def sensitivity_table(agg: pd.DataFrame, sets: list[Scenario]) -> tuple[list[str], list[str]]:
    """K sensitivity at medium load: at 4 GPUs (the reference's) and at each optimum's GPUs."""
    columns, header = [], ["K"]
    for scenario in sets:
        grid = agg[
            (agg["scenario"] == scenario.key)
            & (agg["level"] == "medium")
            & (agg["method"] == "grid")
        ]
        best = optimum(grid)
        counts = [SENSITIVITY_GPUS]
        if best is not None and int(best["gpus"]) != SENSITIVITY_GPUS:
            counts.append(int(best["gpus"]))
        for gpus in counts:
            columns.append(grid[grid["gpus"] == gpus].set_index("k"))
            header.append(f"{scenario.key}, {gpus} GPUs: viol. % / P99 s")
    header.append("ref (4 GPUs): viol. %")
    rows = []
    for k in BINS:
        line = [str(k)]
        for frame in columns:
            line.append(
                f"{cell(frame.loc[k, 'violation_pct'])} / {cell(frame.loc[k, 'latency_s_p99'])}"
            )
        line.append(cell(REF_SENSITIVITY.get(k, np.nan), 2))
        rows.append(line)
    return table(header, rows), header


def variants_table(agg: pd.DataFrame, scenario: str) -> list[str]:
    """Controller options of the no-bins dynamic policy, 1 GPU, at each load."""
    header = ["SLADynamic option"] + [f"{level}: viol. % / batch" for level, _ in LEVELS]
    rows = []
    for tag in VARIANTS:
        method = "Dynamic, no bins" if VARIANTS[tag] is METHODS["Dynamic, no bins"] else tag
        line = [tag]
        for level, _ in LEVELS:
            row = agg[
                (agg["scenario"] == scenario) & (agg["level"] == level) & (agg["method"] == method)
            ].iloc[0]
            line.append(f"{cell(row['violation_pct'])} / {cell(row['mean_batch_size'])}")
        rows.append(line)
    return table(header, rows)


def headline(agg: pd.DataFrame, sets: list[Scenario]) -> list[str]:
    """SLA violation % of each method at each load; the reference's in parentheses."""
    header = ["workload", "load", "req/s", "FIFO", "dynamic", "Multi-Bin dyn. K=8", "optimal"]
    rows = []
    for scenario in sets:
        for (level, scale), rate in zip(LEVELS, scenario.rates_rps):
            ours = comparison_rows(agg, scenario.key, level)
            ref = REF_COMPARISON[level] if scenario.has_reference else {}
            line = [scenario.key, f"{level} ({scale}x)", f"{rate:.3g}"]
            for method in ("FIFO (batch 8)", "Dynamic, no bins", "Multi-Bin dynamic"):
                text = cell(ours[method]["violation_pct"])
                if ref:
                    text += f" ({cell(ref[method][2])})"
                line.append(text)
            best = ours.get("Optimal")
            text = (
                "none <= 5%"
                if best is None
                else f"{int(best['gpus'])}x{int(best['k'])}: {cell(best['violation_pct'])}"
            )
            if ref:
                g, k, v = ref["Optimal"][:3]
                text += f" ({g}x{k}: {cell(v)})"
            line.append(text)
            rows.append(line)
    return table(header, rows)


def report(agg: pd.DataFrame, sets: list[Scenario], context: dict[str, Any]) -> str:
    """The whole markdown report."""
    lines = [
        "# Reproduction of the request-level reference simulator's comparison",
        "",
        "Generated by",
        "",
        "```",
        context["command"],
        "```",
        "",
        f"({context['episodes']} episodes of {context['requests']:,} requests, seeds "
        f"{context['seeds']}, {context['minutes']:.1f} minutes on {context['jobs']} worker "
        "processes.) Every number below is produced by that command; the text around the "
        "tables is fixed.",
        "",
        "## Headline: SLA violations (% of requests later than 20 s)",
        "",
        "Ours are means over the seeds; the reference's published 10K-request numbers are in "
        "parentheses (they exist for the BurstGPT scenario only). `optimal` is GPUs x K.",
        "",
        *headline(agg, sets),
        "",
        *setup(context),
    ]
    for scenario in sets:
        floor = context["floors"][scenario.key]
        lines += [
            "",
            f"## {scenario.title}",
            "",
            f"Arrival rates: {scenario.rate_note}. {floor:.2f}% of the episodes' requests miss "
            "20 s even alone on an idle GPU: the floor of every violation rate below.",
            "",
        ]
        for (level, scale), rate in zip(LEVELS, scenario.rates_rps):
            lines += [f"### {level} load ({scale}x, {rate:.3g} req/s)", ""]
            lines += comparison_table(agg, scenario, level)
            lines += [
                "",
                "SLA violation % of Multi-Bin dynamic over GPUs x K (`.`: not run, because fewer "
                "GPUs already met the 5% target or reached the floor):",
                "",
            ]
            lines += grid_table(agg, scenario.key, level)
            lines.append("")
    sensitivity, _ = sensitivity_table(agg, sets)
    lines += ["## Sensitivity to the number of bins K (medium load)", "", *sensitivity, ""]
    lines += [
        "## Controller options of the dynamic policy (1 GPU, no bins)",
        "",
        "burstgpt-synthetic at the reference's rates; SLA violation % / mean batch size.",
        "",
        *variants_table(agg, "burstgpt"),
        "",
    ]
    lines += discussion(agg, context)
    return "\n".join(lines) + "\n"


SETUP_ROWS = (
    (
        "service time",
        "`T(b, L) = alpha + beta L (1 + gamma (b - 1) / b)` fitted to its grid",
        'the same: `latency="calibrated"` (0.0597 s, 5.742 ms/token, 0.3157)',
    ),
    (
        "KV memory",
        "12 GB - 4 GB model - 1 GB margin, 1.875e-4 GB per token",
        'the same: `kv_memory="reference-sim"`, {kv_tokens:,} tokens',
    ),
    ("deadline", "20 s end to end", "the same: `sla=20`"),
    ("B_max, B_min", "128, 1", "the same: size levels 1, 2, 4, ..., 64, 128"),
    (
        "workload",
        "first 10K rows of the real BurstGPT trace",
        "`burstgpt-synthetic` (fitted to BurstGPT's published statistics); the Azure "
        "conversation trace",
    ),
    (
        "predictions",
        "`1.5 prompt^0.7 LogNormal(0, 0.1)`",
        "the same for `burstgpt-synthetic`; Azure: true length x LogNormal(0, 0.5)",
    ),
    (
        "bin edges",
        "equal-mass quantiles of the whole run's predictions",
        "equal-mass quantiles of calibration data, never of the episode",
    ),
    (
        "dynamic sizing",
        "`min(b_mem, b_SLA)`, per-token target 10 ms",
        '`SLADynamic` / `MultiBinDynamic`: `tbt_sla_s=0.010`, `tbt_tokens="total"`, '
        '`size_rounding="nearest"`',
    ),
    ("FIFO", "one queue, up to 8 per batch", "`StaticFIFO(batch_size=8)`, one bin"),
    (
        "runs",
        "one run per configuration",
        "{n_seeds} seeds per configuration, common random numbers; [min, max] over seeds",
    ),
)

SETUP_TEXT = """Methods, as in the reference: FIFO and dynamic without bins on 1 GPU,
Multi-Bin dynamic with K = 8 bins (served round-robin) on 1 GPU, and the "optimal" Multi-Bin
dynamic configuration: the fewest GPUs in {{1, 2, 4, 8, 16, 32, 64, 100}} for which some K in
{{1, 2, 4, 8, 16, 32}} keeps violations at or below 5%, with the best such K. Episodes have
{requests:,} requests (the reference's headline runs have 10K)."""


def setup(context: dict[str, Any]) -> list[str]:
    """The settings table and the methods paragraph."""
    rows = [[cell.format(**context) for cell in row] for row in SETUP_ROWS]
    header = ["", "reference (llm-scheduler-sim)", "here"]
    return ["## Setup", "", *table(header, rows), "", *SETUP_TEXT.format(**context).splitlines()]


def value(
    agg: pd.DataFrame,
    scenario: str,
    level: str,
    method: str,
    gpus: int = 1,
    k: int = 1,
    metric: str = "violation_pct",
) -> float:
    """One aggregated number (``method="grid"`` for Multi-Bin dynamic at ``gpus`` x ``k``)."""
    row = agg[
        (agg["scenario"] == scenario)
        & (agg["level"] == level)
        & (agg["method"] == method)
        & (agg["gpus"] == gpus)
        & (agg["k"] == k)
    ]
    return float(row[metric].iloc[0]) if len(row) else float("nan")


def floor_gpus(agg: pd.DataFrame, scenario: str, level: str, floor: float) -> str:
    """Fewest GPUs at which the best K is within 0.1 points of the floor (``-`` if none)."""
    grid = agg[(agg["scenario"] == scenario) & (agg["level"] == level) & (agg["method"] == "grid")]
    best = grid.groupby("gpus")["violation_pct"].min()
    reached = best[best <= floor + 0.1]
    return str(int(reached.index.min())) if len(reached) else "-"


def discussion(agg: pd.DataFrame, context: dict[str, Any]) -> list[str]:
    """The discussion: fixed text around numbers taken from the results."""
    b = "burstgpt"

    def v(level: str, method: str, gpus: int = 1, k: int = 1, metric: str = "violation_pct"):
        return cell(value(agg, b, level, method, gpus, k, metric), 1)

    def vv(level: str, method: str, gpus: int = 1, k: int = 1, metric: str = "violation_pct"):
        return cell(value(agg, b, level, method, gpus, k, metric), 2)

    fifo, dyn, mbd = "FIFO (batch 8)", "Dynamic, no bins", "grid"
    optima = {}
    for level, _ in LEVELS:
        grid = agg[(agg["scenario"] == b) & (agg["level"] == level) & (agg["method"] == "grid")]
        best = optimum(grid)
        optima[level] = "none" if best is None else f"{int(best['gpus'])}"
    natural = agg[
        (agg["scenario"] == "burstgpt-natural")
        & (agg["level"] == "medium")
        & (agg["method"] == "grid")
        & (agg["gpus"] == SENSITIVITY_GPUS)
    ].set_index("k")["violation_pct"]
    variant = {
        tag: value(agg, b, "medium", dyn if policy is METHODS[dyn] else tag)
        for tag, policy in VARIANTS.items()
    }
    natural_gpus = {}
    for level in ("low", "medium"):
        grid = agg[
            (agg["scenario"] == "burstgpt-natural")
            & (agg["level"] == level)
            & (agg["method"] == "grid")
        ]
        best = optimum(grid)
        natural_gpus[level] = "none" if best is None else str(int(best["gpus"]))
    azure_grid = agg[(agg["scenario"] == "azure") & (agg["method"] == "grid")]
    azure_met = [
        lv for lv, _ in LEVELS if optimum(azure_grid[azure_grid["level"] == lv]) is not None
    ]
    azure_target = (
        "so no configuration reaches 5% violations"
        if not azure_met
        else f"which leaves little room under the 5% target (met at {', '.join(azure_met)} load)"
    )
    tags = list(VARIANTS)
    floor_azure = context["floor_azure_pct"]
    text = f"""## Discussion

**What agrees.** The reference's qualitative results hold here. At low load every method
serves batches of about one request, so FIFO and dynamic batching take identical decisions and
give identical numbers (theirs are identical too), and bins change little. At medium load on one
GPU, dynamic batching has fewer violations than FIFO ({v("medium", dyn)}% vs {v("medium", fifo)}%;
theirs 56.8% vs 84.8%), and Multi-Bin dynamic with K = 8 has more than dynamic without bins
({v("medium", mbd, 1, 8)}%; theirs 71.3%). At high load every 1-GPU method misses more than 90%
of deadlines and Multi-Bin dynamic is the least bad ({v("high", mbd, 1, 8)}%; theirs 93.3%); the
throughputs are close to theirs: FIFO {vv("high", fifo, metric="throughput_rps")} req/s
(0.55), dynamic {vv("high", dyn, metric="throughput_rps")} (1.94), Multi-Bin dynamic
{vv("high", mbd, 1, 8, "throughput_rps")} (1.45). The grid search finds the same numbers of
GPUs as the reference at all three loads: {optima["low"]} / {optima["medium"]} /
{optima["high"]} GPUs (theirs 1 / 4 / 16).

**Why the numbers differ.**

1. *The workload is not their trace.* BurstGPT cannot be shipped, so `burstgpt-synthetic`
   draws requests from distributions fitted to BurstGPT's published 61-day statistics, while
   the reference replays the first 10K rows of the real trace. Our length tail is heavier:
   with `T(1, L) = 0.0597 + 0.005742 L`, a request with more than 3,472 prompt plus output
   tokens misses the 20 s deadline even alone on an idle GPU, and
   {context["floor_burst_pct"]:.2f}% of our requests are that long (their many-GPU rows
   bottom out at 0.13%). This floor, and the long service of requests just below it, which
   delays whoever queues behind them, raise our low-load violations ({v("low", fifo)}% for
   FIFO; theirs 2.7%) and P99 latency ({v("low", fifo, metric="latency_s_p99")} s; theirs
   23.6 s), while the mean latency is close ({v("low", fifo, metric="latency_s_mean")} s;
   theirs 6.7 s).
2. *Arrivals are smoother.* Our synthetic arrivals are a Gamma renewal process with the
   BurstGPT paper's shape 0.5 (gap cv 1.41); the real prefix has bursts (BurstGPT's cv over
   61 days is 13.3). Bursts are what wreck FIFO with batches of 8 in the reference at medium
   load: a mean latency of 305 s and a P99 of 1,019 s at only 67% utilisation. Ours, at the
   same mean rate, has a mean of {v("medium", fifo, metric="latency_s_mean")} s and a P99 of
   {v("medium", fifo, metric="latency_s_p99")} s, so our medium-load violations are lower for
   every 1-GPU method, and most for FIFO.
3. *The arrival rates are theirs, not the generator's.* The prefix they replay arrives at
   0.031 req/s (their unsaturated runs complete requests at the offered rate), a ninth of
   BurstGPT's 61-day mean rate, 0.271 req/s. Compressing our generator's own rate 1x / 10x /
   100x (the `burstgpt-natural` scenario) therefore loads the system about 8.6 times more at
   each label: its 1x and 10x resemble the 10x and 100x rows at the reference's rates (the
   grid needs {natural_gpus["low"]} and {natural_gpus["medium"]} GPUs; the reference needed 4 and
   16 at its 10x and 100x).
4. *Multi-Bin gains need full bins.* Round-robin over K = 8 bins serves each non-empty bin in
   turn with whatever it holds, so on one GPU at medium load the batches are smaller
   ({v("medium", mbd, 1, 8, "mean_batch_size")} vs {v("medium", dyn, metric="mean_batch_size")}
   requests) and the GPU busier than without bins: worse than dynamic without bins, in both
   simulators. Under overload the bins fill, batches group similar lengths and the Theorem 4.2
   effect appears (the best 1-GPU result at high load). The number of bins that is best
   depends on load: at 4 GPUs and medium load our violations fall from {v("medium", mbd, 4, 1)}%
   (K = 1) to {v("medium", mbd, 4, 32)}% (K = 32), changing little beyond K = 8, while at 4 GPUs
   under the
   8.6 times heavier natural-rate load the curve is U-shaped with its minimum at
   K = {int(natural.idxmin())} ({cell(natural.min())}%, K = 32: {cell(natural[32])}%): too many
   bins split the queue into batches too small to keep up. The reference's U-shape at its
   lightly loaded 4-GPU point (1.8% at K = 4, 7.5% at K = 32) does not appear here. We cannot
   run its code to tell why, but two of its listed bugs act on exactly this comparison: its bin
   edges come from the whole run's future predictions, and a cap meant for memory limits the
   top bin's batches (so its K = 1 differs from its no-bins mode, while our K = 1 takes exactly
   the decisions of the no-bins policy, which a test checks).
5. *The SLA controller does not restrain, here as there, for the same reason.* In the
   `T(b, L)` model the time per token of the longest request is
   `beta (1 + gamma (b - 1) / b) + alpha / L`, at most 7.6 ms plus `alpha / L`, below the 10 ms
   target for every batch size. The reference computes this quantity (its "bug": the per-token
   SLA can never be violated); we measure it from finished batches, which cannot change a
   property of the model, so `b_SLA` climbs to B_max and `b* = b_mem`. What the controller does
   when it does bind is in the variants table: measuring the time per *output* token
   (service time / longest output, the library default) charges prefill to the few output
   tokens (BurstGPT prompts average 611 tokens, outputs 123), exceeds 10 ms at almost any size
   and drives batches down ({v("high", tags[1], metric="mean_batch_size")} requests at high load
   instead of {v("high", dyn, metric="mean_batch_size")}; {cell(variant[tags[1]])}% violations at
   medium load instead of {cell(variant[tags[0]])}%); driving it by batch latency against half the
   deadline also shrinks batches ({cell(variant[tags[2]])}%). With static batches and this
   model, the memory bound is the only useful limit.
6. *Batch sizes are levels.* The env offers sizes 1, 2, 4, ..., 64, 128. Rounding `b*` to the
   nearest level and letting the env stop a batch before the first request that would overflow
   KV memory is the closest we get to the reference's integer `b* = b_mem`: mean batch
   {v("high", dyn, metric="mean_batch_size")} at high load (theirs 36.2; `b_mem` is 37,333 tokens
   over the mean request, whose length differs between their prefix and our generator).
   Rounding down (the library default) caps it at 32
   ({v("high", tags[3], metric="mean_batch_size")}), and
   Algorithm 2's interval then cannot climb to the next level at all (with integer batch
   sizes, `low <= high - alpha` keeps `b_SLA` below B_max - alpha / 2).

**The reference's bugs, and what we do instead.** Bin edges are equal-mass quantiles of
calibration data (the first 20% of a trace, or a separate sample of a synthetic source), never
of the episode being scheduled. No memory cap is applied per bin beyond each bin's own
`b_mem`. A request too large for KV memory is rejected with a reason and counted as a
violation instead of vanishing ({context["rejected"]} in these runs: no request here exceeds
37,333 tokens). TTFT is not reported, because `T(b, L)` does not say when the first token
appears (the reference reports the constant alpha). Throughput is completions per second of
the episode, equal to the offered rate when the system keeps up and to capacity when it does
not. Events at the same time are ordered deterministically. Prompt tokens still cost as much
as output tokens, because that is the calibrated model being reproduced (the `llama3.1-8b-*`
presets charge prefill and decode separately).

**Azure.** Compressing the Azure conversation trace in time makes no sense for this
comparison: its natural rate, 5.53 req/s, is {context["azure_natural_load"]:.1f} times the
capacity of one GPU under the reference's model ({context["azure_capacity"]:.3f} req/s; its
prompts are about twice as long as BurstGPT's), so even 1x overloads every 1-GPU method. We
use the reference's rates scaled by the ratio of one GPU's capacity instead (load-matched).
Here {floor_azure:.1f}% of requests are longer than 3,472 tokens and miss 20 s even alone,
{azure_target}; the grid reaches that floor with
{floor_gpus(agg, "azure", "low", floor_azure)} / {floor_gpus(agg, "azure", "medium", floor_azure)}
/ {floor_gpus(agg, "azure", "high", floor_azure)} GPUs at low / medium / high load, and bins
barely matter there: its predictions are noisy (LogNormal(0, 0.5) around the true length)
and long prompts, which binning by predicted output does not sort, dominate `L`.

**Scale of the runs.** Episodes have {context["requests"]:,} requests like the reference's
headline rows, and each configuration runs on {context["n_seeds"]} seeds instead of one replay;
the grid stops adding GPUs once some K meets the target or the violations reach the floor, so
larger configurations are not run (`.` in the grids).
"""
    return text.splitlines()


def say(message: str) -> None:
    """Print one progress line on stderr."""
    print(f"reproduce_reference: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the reproduction, print the headline table and write the report.

    Ctrl-C stops it with one line and exit status 130.
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        say("interrupted (Ctrl-C); nothing written")
        return 130
    except ValueError as error:
        say(f"error: {error}")
        return 2


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=positive_int, default=10_000, help="requests per episode"
    )
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds per configuration")
    parser.add_argument(
        "--jobs", type=positive_int, default=min(2, os.cpu_count() or 1), help="workers"
    )
    parser.add_argument(
        "--out",
        default="docs/reproduction.md",
        help="markdown report to write (replaced if it exists; the default is the repository's)",
    )
    parser.add_argument("--csv", help="also write every episode's metrics to this CSV file")
    args = parser.parse_args(argv)
    # Every output path is checked, and its directory made, before the minutes of simulation.
    for flag, path in (("--out", args.out), ("--csv", args.csv)):
        if path is None:
            continue
        if Path(path).is_dir():
            raise ValueError(f"{flag} {path!r} is a directory; expected a file path")
        check_output_dir(Path(path).parent or ".").mkdir(parents=True, exist_ok=True)
    started = time.time()
    say(f"{args.seeds} seeds x {args.requests:,} requests per configuration, {args.jobs} workers")
    warm_up(say)
    sets = scenarios()
    seeds = list(range(args.seeds))
    floors = {s.key: floor_pct(s, args.requests, seeds) for s in sets}
    frame = run(sets, args.requests, seeds, args.jobs, floors)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    agg = aggregate(frame)
    context = {
        "command": " ".join(["python scripts/reproduce_reference.py", *(argv or sys.argv[1:])]),
        "episodes": len(frame),
        "requests": args.requests,
        "seeds": f"{seeds[0]}..{seeds[-1]}",
        "n_seeds": len(seeds),
        "jobs": args.jobs,
        "minutes": (time.time() - started) / 60,
        "kv_tokens": BatchSchedulingEnv(
            workload="demo2", arrival_rate=1.0, **SETTINGS
        ).kv_capacity_tokens,
        "rejected": int(frame["rejected"].sum()),
        "floors": floors,
        "floor_burst_pct": floors[sets[0].key],
        "floor_azure_pct": floors["azure"],
        "azure_capacity": capacity_one_gpu("azure-conv"),
        "azure_natural_load": 5.53 / capacity_one_gpu("azure-conv"),
    }
    text = report(agg, sets, context)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print("\n".join(headline(agg, sets)))
    print(f"wrote {args.out} ({context['minutes']:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
