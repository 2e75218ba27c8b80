"""The ``llmsched`` command: evaluate baselines, estimate stability, train and compare agents.

``llmsched validate`` replays real vLLM runs through the simulator and reports its error.
Argument parsing lives here only; each subcommand maps its flags onto plain keyword arguments of
library functions.
"""

from __future__ import annotations

import argparse
import json
import shlex
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
    from llmsched_env.registry import unknown_name_error

    available = policy_names(args.env)
    if args.policies == "all":
        policies = available
    else:
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        if not policies:
            raise ValueError(f"--policies names no policy; expected 'all' or some of {available}")
        for name in policies:
            if name not in available:
                raise unknown_name_error(f"{args.env} policy", name, available)
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


def _cmd_stability(args: argparse.Namespace) -> int:
    from baselines import policy_names
    from llmsched_env.plotting import plot_stability
    from llmsched_env.registry import unknown_name_error
    from llmsched_env.stability import (
        ENV_ID,
        DriftPoint,
        StabilitySettings,
        estimate_stability,
    )

    available = policy_names("continuous")
    if args.policy not in available:
        raise unknown_name_error("continuous policy", args.policy, available)
    env_kwargs: dict[str, Any] = json.loads(args.env_kwargs) if args.env_kwargs else {}
    policy_kwargs: dict[str, Any] = json.loads(args.policy_kwargs) if args.policy_kwargs else {}
    for flag, value in (("--env-kwargs", env_kwargs), ("--policy-kwargs", policy_kwargs)):
        if not isinstance(value, dict):
            raise ValueError(f"{flag} must be a JSON object, got {value!r}")
    if args.workload is not None:
        env_kwargs["workload"] = args.workload
    if args.gpus is not None:
        env_kwargs["n_gpus"] = args.gpus
    settings = StabilitySettings(
        horizon_s=args.horizon,
        warmup_fraction=args.warmup,
        replications=args.replications,
        drift_threshold=args.threshold,
        rel_tol=args.rel_tol,
        grid_points=args.grid,
        seed=args.seed,
        n_jobs=args.jobs,
    )

    def report(point: DriftPoint) -> None:
        verdict = "stable" if point.stable else "unstable"
        print(
            f"  lambda {point.arrival_rate_rps:9.4f} req/s: drift {point.drift_per_arrival:+.4f} "
            f"+/- {point.drift_ci95:.4f}, throughput {point.throughput_rps:.3f} req/s: {verdict}",
            file=sys.stderr,
            flush=True,
        )

    result = estimate_stability(
        args.policy,
        env_kwargs,
        settings,
        policy_kwargs=policy_kwargs,
        low_rps=args.low,
        high_rps=args.high,
        progress=None if args.quiet else report,
    )
    print(f"{ENV_ID} {json.dumps(env_kwargs)}, policy {args.policy} {json.dumps(policy_kwargs)}")
    over = result.overload_point
    print(
        f"lambda* = {result.lambda_star_rps:.3f} req/s, interval [{result.lambda_low_rps:.3f}, "
        f"{result.lambda_high_rps:.3f}] (largest rate judged stable, smallest judged unstable)"
    )
    print(
        f"throughput in overload: {over.throughput_rps:.3f} +/- {over.throughput_ci95:.3f} req/s "
        f"at {over.arrival_rate_rps:.3f} req/s (work-bound estimate "
        f"{result.capacity_estimate_rps:.3f} req/s)"
    )
    if result.inconsistent_rates:
        print(f"warning: stability is not monotone here, see the rates {result.inconsistent_rates}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.policy}_{env_kwargs.get('workload', 'default')}"
    result.to_frame().to_csv(out / f"{stem}.csv", index=False)
    figure = plot_stability(result, out / f"{stem}.png")
    written = [f"{stem}.csv"] + ([figure.name] if figure else [])
    print(f"wrote {', '.join(written)} to {out}")
    return 0


def format_validation(result: Any) -> str:
    """Render one run's validation as text: a header line, then one row per metric and stat.

    Args:
        result: A :class:`llmsched_env.validation.RunValidation`.
    """
    replay, run = result.replay, result.run
    settings = replay.settings
    lines = [
        f"{run.name}: {len(run)} requests, policy {settings.policy}, latency {settings.latency}, "
        f"replay {replay.wall_time_s:.2f} s wall ({replay.n_decisions} decisions)",
        f"{'metric':<6}  {'stat':<4}  {'measured ms':>12}  {'simulated ms':>12}  {'error %':>8}  "
        f"{'LLMServingSim %':>15}",
    ]
    for row in result.table.itertuples(index=False):
        published = run.published_error_pct(row.metric, row.stat)
        lines.append(
            f"{row.metric:<6}  {row.stat:<4}  {row.measured_ms:12.1f}  {row.simulated_ms:12.1f}  "
            f"{row.error_pct:+8.1f}  {published:+15.1f}"
        )
    return "\n".join(lines)


def _cmd_validate(args: argparse.Namespace) -> int:
    from llmsched_env.validation import validate
    from llmsched_env.validation.report import VALIDATION_CSV

    out = Path(args.out)
    written = [VALIDATION_CSV]

    def report(result: Any) -> None:
        print(format_validation(result), end="\n\n", flush=True)
        figure = out / f"{result.run.name}.png"
        if figure.exists():  # not without matplotlib (the plots extra)
            written.append(figure.name)

    validate(
        args.runs,
        out,
        max_requests=args.max_requests,
        overwrite=args.force,
        on_run=report,
    )
    print(f"wrote {', '.join(written)} to {out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from agents.extras import AgentsExtraMissingError

    try:
        from agents.training import resume, train

        if args.resume:
            result = resume(
                args.resume,
                steps=args.steps,
                eval_freq=args.eval_freq,
                checkpoint_freq=args.checkpoint_freq,
                progress_bar=not args.quiet,
                verbose=int(args.verbose),
            )
        else:
            if not args.out:
                raise ValueError("--out is required (the run directory to create)")
            hyperparams = json.loads(args.hyperparams) if args.hyperparams else {}
            if not isinstance(hyperparams, dict):
                raise ValueError(f"--hyperparams must be a JSON object, got {args.hyperparams!r}")
            result = train(
                args.env,
                out=args.out,
                steps=args.steps,
                algo=args.algo,
                scenario=args.scenario,
                env_kwargs=env_kwargs_from_args(args),
                n_envs=args.n_envs,
                seed=args.seed,
                hyperparams=hyperparams,
                vec_env=args.vec_env,
                eval_freq=args.eval_freq,
                eval_episodes=args.eval_episodes,
                checkpoint_freq=args.checkpoint_freq,
                progress_bar=not args.quiet,
                torch_threads=args.threads,
                overwrite=args.overwrite,
                command=shlex.join(["llmsched", *args.argv]),
                verbose=int(args.verbose),
            )
    except AgentsExtraMissingError as error:
        print(f"llmsched train: error: {error}", file=sys.stderr)
        return 2
    session = result.config.sessions[-1]
    print(
        f"trained {result.config.algo} on {result.config.env_id} for {session['steps']} steps "
        f"({session['steps_per_s']:.0f} steps/s, {session['wall_time_s']:.0f} s); "
        f"run saved to {result.run_dir}"
    )
    if result.evaluations:
        last = result.evaluations[-1]
        print(
            f"validation (seeds {result.config.validation_seeds[0]}..): agent "
            f"{last['agent_return']:.1f}, best {session['best_agent_validation_return']:.1f}; "
            f"best baseline {last['best_baseline']} {last['best_baseline_return']:.1f}"
        )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from agents.extras import AgentsExtraMissingError

    policies = None
    if args.policies != "all":
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if args.out:
        out = Path(args.out)
    elif args.run:
        out = Path(args.run) / "compare"
    else:
        out = Path("runs") / f"pretrained-{args.pretrained}" / "compare"
    try:
        from agents.compare import compare

        result = compare(
            args.run,
            pretrained=args.pretrained,
            n_seeds=args.seeds,
            first_seed=args.first_seed,
            policies=policies,
            which=args.model,
            n_jobs=args.jobs,
            out=out,
            progress=None if args.quiet else progress_printer("compare"),
            **_settled_policy_option(args.settled_policy),
        )
    except AgentsExtraMissingError as error:
        print(f"llmsched compare: error: {error}", file=sys.stderr)
        return 2
    config = result.config
    label = f" ({config.scenario})" if config.scenario else ""
    print(
        f"{config.env_id}{label} {json.dumps(config.env_kwargs)}, seeds "
        f"{result.seeds[0]}..{result.seeds[-1]}"
    )
    print(format_table(result.summary))
    print(result.verdict())
    print(f"wrote episodes.csv, summary.csv and comparison.png to {out}")
    return 0


def _settled_policy_option(value: str | None) -> dict[str, Any]:
    """``compare``'s ``settled_policy`` argument from ``--settled-policy`` (none: its default)."""
    if value is None:
        return {}
    return {"settled_policy": None if value == "none" else value}


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

    st = sub.add_parser(
        "stability", help="estimate the largest stable arrival rate of a continuous policy"
    )
    st.add_argument("--policy", required=True, help="continuous-batching baseline name")
    st.add_argument("--policy-kwargs", help="policy keyword arguments as JSON")
    st.add_argument("--workload", help="workload preset (env default if omitted)")
    st.add_argument("--gpus", type=int, help="number of GPUs")
    st.add_argument("--env-kwargs", help="other env keyword arguments as a JSON object")
    st.add_argument("--low", type=float, help="start of the bracket in req/s")
    st.add_argument("--high", type=float, help="end of the bracket in req/s")
    st.add_argument("--horizon", type=float, default=2000.0, help="simulated seconds per run")
    st.add_argument("--warmup", type=float, default=0.25, help="share of the run discarded")
    st.add_argument("--replications", type=int, default=3, help="runs per arrival rate")
    st.add_argument(
        "--threshold", type=float, default=0.01, help="drift per arrival that means unstable"
    )
    st.add_argument("--rel-tol", type=float, default=0.02, help="relative width of the bracket")
    st.add_argument("--grid", type=int, default=0, help="extra rates tested for the curve")
    st.add_argument("--seed", type=int, default=0, help="first seed")
    st.add_argument("--jobs", type=int, default=1, help="worker processes")
    st.add_argument("--out", default="runs/stability", help="directory for the CSV and figure")
    st.add_argument("--quiet", action="store_true", help="do not print each tested rate")
    st.set_defaults(func=_cmd_stability)

    va = sub.add_parser(
        "validate", help="replay real vLLM runs in ContinuousBatching-v0 and report the error"
    )
    va.add_argument(
        "--runs", nargs="+", metavar="RUN", help="shipped run names or run directories (all)"
    )
    va.add_argument("--out", default="runs/validate", help="directory for validation.csv, figures")
    va.add_argument(
        "--max-requests", type=int, help="replay only each run's first requests (quick check)"
    )
    va.add_argument("--force", action="store_true", help="overwrite an existing validation.csv")
    va.set_defaults(func=_cmd_validate)

    tr = sub.add_parser("train", help="train an RL agent (needs the 'agents' extra)")
    _add_env_flags(tr)
    tr.add_argument("--scenario", help="a named scenario (agents.scenarios); sets env and kwargs")
    tr.add_argument(
        "--algo", default="maskable-ppo", help="maskable-ppo, ppo, a2c or dqn (via FlattenAction)"
    )
    tr.add_argument("--steps", type=int, default=300_000, help="environment steps to train")
    tr.add_argument("--n-envs", type=int, help="parallel envs (default: per env and algo)")
    tr.add_argument("--seed", type=int, default=0, help="training seed")
    tr.add_argument("--out", help="run directory to create")
    tr.add_argument("--resume", metavar="RUN", help="continue the run in this directory")
    tr.add_argument("--hyperparams", help="hyperparameter overrides as JSON")
    tr.add_argument("--vec-env", choices=["dummy", "subproc"], default="dummy")
    tr.add_argument(
        "--eval-freq", type=int, default=25_000, help="steps between validations (0: none)"
    )
    tr.add_argument("--eval-episodes", type=int, help="validation seeds (default 20 or 5)")
    tr.add_argument(
        "--checkpoint-freq", type=int, default=100_000, help="steps between checkpoints (0: none)"
    )
    tr.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    tr.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.add_argument("--verbose", action="store_true", help="print validation results")
    tr.set_defaults(func=_cmd_train)

    co = sub.add_parser("compare", help="compare an agent with every baseline on common seeds")
    source = co.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a training run directory")
    source.add_argument("--pretrained", help="a pretrained agent shipped with the package")
    co.add_argument("--seeds", type=int, default=20, help="number of evaluation seeds")
    co.add_argument("--first-seed", type=int, default=10_000, help="first evaluation seed")
    co.add_argument("--policies", default="all", help="'all' or comma-separated baselines")
    co.add_argument("--model", choices=["best", "final"], default="best", help="which model")
    co.add_argument("--jobs", type=int, default=1, help="worker processes")
    co.add_argument("--out", help="output directory (default: RUN/compare)")
    co.add_argument(
        "--settled-policy",
        help="baseline that acts for the agent once no action can change the return "
        "(only late requests left), or 'none' (default: multibin-wc)",
    )
    co.add_argument("--quiet", action="store_true", help="no progress bar")
    co.set_defaults(func=_cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmsched`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded with trained runs, so that a run says how it was made
    try:
        return int(args.func(args) or 0)
    except ValueError as error:  # bad configuration values: a clear message, no traceback
        print(f"llmsched {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
