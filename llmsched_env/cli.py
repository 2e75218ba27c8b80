"""The ``llmsched`` command: evaluate baselines, estimate stability, train and compare agents.

Argument parsing lives here only; each subcommand maps its flags onto plain keyword arguments of
library functions.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ENV_IDS = {
    "batch": "llmsched/BatchScheduling-v0",
    "continuous": "llmsched/ContinuousBatching-v0",
}

#: Columns of the printed comparison table: (summary column, header, format).
TABLE_COLUMNS = (
    ("return_mean", "return", "{:9.1f}"),
    ("return_ci95", "+/-", "{:7.1f}"),
    ("sla_attainment_mean", "SLA att.", "{:8.3f}"),
    ("goodput_rps_mean", "goodput/s", "{:9.2f}"),
    ("throughput_rps_mean", "thru/s", "{:8.2f}"),
    ("latency_s_p50_mean", "p50 lat", "{:8.2f}"),
    ("latency_s_p99_mean", "p99 lat", "{:8.2f}"),
    ("ttft_s_p99_mean", "p99 TTFT", "{:8.3f}"),
    ("mean_batch_size_mean", "batch", "{:6.1f}"),
    ("gpu_utilization_mean", "GPU util", "{:8.3f}"),
)


def format_table(summary: Any) -> str:
    """Render a summary DataFrame (one row per policy) as a fixed-width text table."""
    columns = [c for c in TABLE_COLUMNS if c[0] in summary.columns]
    width = max([len("policy"), *(len(str(p)) for p in summary["policy"])])
    header = f"{'policy':<{width}}  " + "  ".join(
        f"{h:>{len(fmt.format(0.0))}}" for _, h, fmt in columns
    )
    lines = [header, "-" * len(header)]
    for _, row in summary.iterrows():
        cells = "  ".join(fmt.format(row[c]) for c, _, fmt in columns)
        lines.append(f"{row['policy']:<{width}}  {cells}")
    return "\n".join(lines)


def env_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Collect the env keyword arguments given by named flags and ``--env-kwargs``."""
    kwargs: dict[str, Any] = json.loads(args.env_kwargs) if args.env_kwargs else {}
    if not isinstance(kwargs, dict):
        raise SystemExit(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    named = {
        "workload": args.workload,
        "load": args.load,
        "arrival_rate": args.arrival_rate,
        "n_gpus": args.gpus,
        "n_requests": args.n_requests,
    }
    kwargs.update({k: v for k, v in named.items() if v is not None})
    return kwargs


def progress_printer(label: str) -> Callable[[int, int], None]:
    """A progress callback: a tqdm bar when tqdm is installed, else a counter on stderr."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - depends on the installed extras

        def report(done: int, total: int) -> None:
            end = "\n" if done == total else ""
            print(f"\r{label}: {done}/{total} episodes", end=end, file=sys.stderr, flush=True)

        return report
    bar: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc=label, unit="episode", file=sys.stderr))
        bar[0].update(done - bar[0].n)
        if done == total:
            bar[0].close()

    return update


def _add_env_flags(parser: argparse.ArgumentParser, default_env: str | None = "batch") -> None:
    parser.add_argument("--env", choices=sorted(ENV_IDS), default=default_env, help="environment")
    parser.add_argument("--workload", help="workload preset (env default if omitted)")
    parser.add_argument("--load", type=float, help="arrival rate as a fraction of capacity")
    parser.add_argument("--arrival-rate", type=float, help="arrival rate in requests/s")
    parser.add_argument("--gpus", type=int, help="number of GPUs")
    parser.add_argument("--n-requests", type=int, help="requests per episode")
    parser.add_argument(
        "--env-kwargs", help="other env keyword arguments as JSON, e.g. '{\"sla\": 20}'"
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from baselines import policy_names
    from llmsched_env.evaluation import evaluate
    from llmsched_env.plotting import plot_comparison

    available = policy_names(args.env)
    if args.policies == "all":
        policies = available
    else:
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        unknown = [p for p in policies if p not in available]
        if unknown:
            raise SystemExit(f"unknown policies {unknown} for --env {args.env}; known: {available}")
    env_kwargs = env_kwargs_from_args(args)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    episodes, summary = evaluate(
        policies,
        ENV_IDS[args.env],
        env_kwargs,
        seeds,
        n_jobs=args.jobs,
        progress=None if args.quiet else progress_printer("evaluate"),
    )
    print(f"{ENV_IDS[args.env]} {json.dumps(env_kwargs)}, seeds {seeds.start}..{seeds.stop - 1}")
    print(format_table(summary))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        episodes.to_csv(out / "episodes.csv", index=False)
        summary.to_csv(out / "summary.csv", index=False)
        figure = plot_comparison(summary, out / "comparison.png", title=ENV_IDS[args.env])
        written = ["episodes.csv", "summary.csv"] + ([figure.name] if figure else [])
        print(f"wrote {', '.join(written)} to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``llmsched`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="llmsched", description="Scheduling environments for LLM inference."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="evaluate baseline policies on common seeds")
    _add_env_flags(ev)
    ev.add_argument("--policies", default="all", help="'all' or comma-separated policy names")
    ev.add_argument("--seeds", type=int, default=10, help="number of episodes per policy")
    ev.add_argument("--first-seed", type=int, default=10_000, help="first evaluation seed")
    ev.add_argument("--jobs", type=int, default=1, help="worker processes")
    ev.add_argument("--out", help="directory for episodes.csv, summary.csv and a figure")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmsched`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as error:  # bad configuration values: a clear message, no traceback
        print(f"llmsched {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
