"""The ``llmsched`` command: evaluate baselines, estimate stability, train and compare agents.

``llmsched validate`` replays real vLLM runs through the simulator and reports its error.
Argument parsing lives here and in :mod:`llmsched_env.cli_args`; each subcommand maps its flags
onto plain keyword arguments of library functions.

Every command checks its output directory before any work and never overwrites results without
``--force`` (:mod:`llmsched_env.outputs`), prints progress on stderr from its first second
(including while the simulator's kernels compile on a machine's first run), and stops on Ctrl-C
with a one-line message and exit status 130. Bad input exits with status 2 and one line naming
the bad value.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shlex
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from llmsched_env import __version__
from llmsched_env.cli_args import (
    HelpFormatter,
    bounded_int,
    check_env_kwargs,
    check_policy_kwargs,
    directory,
    integer_at_least,
    json_object,
    listing,
    nonnegative_int,
    positive_float,
    positive_int,
)
from llmsched_env.kinds import ENV_IDS, kind_of_id, resolve_kind
from llmsched_env.parallel import MAX_JOBS

#: The type of ``--seeds``: episodes per policy, each run and kept in memory.
SEED_COUNT = bounded_int(1, 100_000, "episodes per policy")

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130
#: Exit status when the output's reader closed the pipe (128 + SIGPIPE, as shells report it).
EXIT_BROKEN_PIPE = 141
#: Training steps of ``llmsched train`` without ``--steps`` or ``--scenario``.
DEFAULT_TRAIN_STEPS = 300_000
#: Files ``llmsched evaluate`` and ``llmsched compare`` write.
RESULT_FILES = ("episodes.csv", "summary.csv", "comparison.png")
RECORDS_FILE = "records.csv"
#: The argument type of ``--jobs``.
JOBS = bounded_int(1, MAX_JOBS, "worker processes, each with its own simulator")
#: Files ``llmsched compare --runs`` writes (as ``agents.compare_runs.RUNS_FILES``).
RUNS_OUTPUT_FILES = (
    "episodes.csv",
    "summary.csv",
    "reliable.csv",
    "run_scores.csv",
    "comparison.png",
    "performance_profile.png",
)

#: Columns of the printed comparison table: (summary column, header, format).
TABLE_COLUMNS = (
    ("return_mean", "return", "{:9.1f}"),
    ("return_ci95", "+/-", "{:7.1f}"),
    ("sla_attainment_mean", "SLA att.", "{:8.3f}"),
    ("goodput_rps_mean", "goodput/s", "{:9.2f}"),
    ("throughput_rps_mean", "thru/s", "{:8.2f}"),
    ("latency_s_p50_mean", "p50 lat", "{:8.2f}"),
    ("latency_s_p99_mean", "p99 lat", "{:8.2f}"),
    ("ttft_s_p50_mean", "p50 TTFT", "{:8.3f}"),
    ("ttft_s_p99_mean", "p99 TTFT", "{:8.3f}"),
    ("mean_batch_size_mean", "batch", "{:6.1f}"),
    ("gpu_utilization_mean", "GPU util", "{:8.3f}"),
    ("prefix_hit_rate_mean", "prefix hit", "{:10.3f}"),
)


def format_table(summary: Any) -> str:
    """Render a summary DataFrame (one row per policy) as a fixed-width text table.

    A confidence half-width that cannot be computed (one episode per policy) shows as ``n/a``,
    with a note under the table.
    """
    columns = [c for c in TABLE_COLUMNS if c[0] in summary.columns]
    width = max([len("policy"), *(len(str(p)) for p in summary["policy"])])
    header = f"{'policy':<{width}}  " + "  ".join(
        f"{h:>{len(fmt.format(0.0))}}" for _, h, fmt in columns
    )
    lines = [header, "-" * len(header)]
    missing_ci = False
    for _, row in summary.iterrows():
        cells = []
        for column, _, fmt in columns:
            value = row[column]
            if column.endswith("_ci95") and not math.isfinite(value):
                missing_ci = True
                cells.append(f"{'n/a':>{len(fmt.format(0.0))}}")
            else:
                cells.append(fmt.format(value))
        lines.append(f"{row['policy']:<{width}}  " + "  ".join(cells))
    if missing_ci:
        episodes = int(summary["episodes"].min()) if "episodes" in summary else 1
        lines.append(
            f"+/- is the 95% CI half-width over seeds: n/a ({episodes} seed"
            f"{'' if episodes == 1 else 's'}); use --seeds 2 or more for intervals"
        )
    return "\n".join(lines)


def env_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Collect the env keyword arguments given by named flags and ``--env-kwargs``.

    Raises:
        ValueError: If ``--env-kwargs`` is not a JSON object (the message names the flag),
            holds ``render_mode``, or gives a key a named flag gives another value.
    """
    kwargs = _env_kwargs_json(args.env_kwargs)
    # --gpus counts the env's servers: GPUs, or the replicas of Routing-v0.
    env = getattr(args, "env", None)
    units = resolve_kind(env).config_class.units_field if env is not None else "n_gpus"
    trace = _trace_workload(args)
    named = [
        ("workload", "--trace" if trace else "--workload", trace or args.workload),
        ("load", "--load", args.load),
        ("arrival_rate", "--arrival-rate", args.arrival_rate),
        (units, "--gpus", args.gpus),
        ("n_requests", "--n-requests", args.n_requests),
    ]
    return _with_named_flags(kwargs, named)


#: The settings of :mod:`llmsched_env.stability` by the flags that give them.
_STABILITY_FLAGS = {
    "horizon_s": "--horizon",
    "warmup_fraction": "--warmup",
    "drift_threshold": "--threshold",
    "rel_tol": "--rel-tol",
    "low_rps": "--low",
    "high_rps": "--high",
}


@contextlib.contextmanager
def _flag_names(flags: dict[str, str]) -> Iterator[None]:
    """Re-raise a ``ValueError`` whose message names a setting with the flag that gives it."""
    try:
        yield
    except ValueError as error:
        pattern = r"\b(" + "|".join(map(re.escape, flags)) + r")\b"
        raise ValueError(re.sub(pattern, lambda m: flags[m.group(1)], str(error))) from None


def _env_kwargs_json(text: str | None) -> dict[str, Any]:
    """``--env-kwargs`` as a dict, refusing ``render_mode`` (no command renders its episodes)."""
    kwargs = json_object("--env-kwargs", text)
    if "render_mode" in kwargs:
        raise ValueError(
            f"--env-kwargs render_mode={kwargs['render_mode']!r}: the command does not render "
            "its episodes; leave render_mode out"
        )
    return kwargs


def _with_named_flags(
    kwargs: dict[str, Any], named: Iterable[tuple[str, str, Any]]
) -> dict[str, Any]:
    """``kwargs`` (from ``--env-kwargs``) with the named flags given, as ``(key, flag, value)``.

    Raises:
        ValueError: If a flag and ``--env-kwargs`` give one key different values.
    """
    for key, flag, value in named:
        if value is None:
            continue
        if key in kwargs and kwargs[key] != value:
            raise ValueError(
                f"{flag} {value!r} and --env-kwargs {key}={kwargs[key]!r} disagree; give {key} once"
            )
        kwargs[key] = value
    return kwargs


def _trace_workload(args: argparse.Namespace) -> str | None:
    """The ``workload`` string of ``--trace`` (format from ``--trace-format`` or detected).

    Raises:
        ValueError: For ``--trace-format`` without ``--trace``, or a trace file that is missing
            or in no known format (the message lists the formats and their columns).
    """
    from llmsched_env.workload import detect_trace_format
    from llmsched_env.workload._csv import existing_file
    from llmsched_env.workload.trace_files import trace_spec

    if args.trace is None:
        if args.trace_format is not None:
            raise ValueError("--trace-format needs --trace, the trace file to read")
        return None
    existing_file(args.trace)
    trace_format = args.trace_format or detect_trace_format(args.trace)
    # Absolute, so that a run trained on it can be compared or resumed from anywhere.
    return trace_spec(os.path.abspath(args.trace), trace_format)


def say(command: str) -> Callable[[str], None]:
    """A printer of one-line progress messages on stderr, prefixed with the command."""

    def report(message: str) -> None:
        print(f"llmsched {command}: {message}", file=sys.stderr, flush=True)

    return report


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


def _warm_up(report: Callable[[str], None], env_id: str | None = None) -> None:
    """Compile the kernels of ``env_id`` (default: every env's) now, announcing a cold start."""
    from llmsched_env.compilation import warm_up

    warm_up(report, None if env_id is None else [env_id])


def _write(
    out: Path,
    write: Callable[[Path], list[str]],
    report: Callable[[str], None],
    *,
    force: bool,
    owned: Iterable[str],
) -> None:
    """Write results into ``out`` (or a rescue directory) and print what went where.

    ``owned``: every file the command can write. With ``force`` (``--force``), those of an
    earlier run that this one does not write are removed (see
    :func:`llmsched_env.outputs.write_or_rescue`); without it, nothing is.
    """
    from llmsched_env.outputs import write_or_rescue

    replaces = owned if force else ()
    target, written = write_or_rescue(out, write, warn=report, replaces=replaces)
    print(f"wrote {', '.join(written)} to {target}")


def _scenario_workload_names() -> list[str]:
    """The scenario workloads' names for help texts, numbered families shortened to a range."""
    from agents.scenarios import SCENARIO_WORKLOADS

    names: list[str] = []
    families: dict[str, list[int]] = {}
    for name in SCENARIO_WORKLOADS:
        stem, _, number = name.rpartition("-")
        if number.isdigit():
            families.setdefault(stem, []).append(int(number))
        else:
            names.append(name)
    for stem, numbers in families.items():
        names.append(f"{stem}-{min(numbers)} to {stem}-{max(numbers)}")
    return names


def _add_env_flags(parser: argparse.ArgumentParser, default_env: str | None = "batch") -> None:
    """Add the env flags; ``default_env=None`` leaves out ``--env`` (the run fixes it)."""
    from llmsched_env.workload import TRACE_FORMATS, WORKLOAD_PRESETS

    if default_env is not None:
        parser.add_argument(
            "--env", choices=sorted(ENV_IDS), default=default_env, help="environment"
        )
    workload = parser.add_mutually_exclusive_group()
    workload.add_argument(
        "--workload",
        help=f"workload preset (env default if omitted): {listing(WORKLOAD_PRESETS)}; or a "
        f"workload of the agents' scenarios: {listing(_scenario_workload_names())}",
    )
    workload.add_argument(
        "--trace",
        metavar="PATH",
        help="replay your own trace file (Azure CSV, BurstGPT CSV or Mooncake JSONL) instead of "
        "a preset; episodes are windows of it after its first 20%% (calibration history)",
    )
    parser.add_argument(
        "--trace-format",
        choices=sorted(TRACE_FORMATS),
        help="format of --trace (detected from its header or JSON keys if omitted)",
    )
    parser.add_argument("--load", type=positive_float, help="arrival rate / capacity estimate")
    parser.add_argument("--arrival-rate", type=positive_float, help="arrival rate in requests/s")
    parser.add_argument(
        "--gpus", type=positive_int, help="number of GPUs (Routing-v0: of replicas)"
    )
    parser.add_argument("--n-requests", type=positive_int, help="requests per episode")
    parser.add_argument(
        "--env-kwargs", help="other env keyword arguments as JSON, e.g. '{\"sla\": 20}'"
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from agents.scenarios import build_env_kwargs
    from baselines import check_policies, policy_names
    from llmsched_env.evaluation import evaluate
    from llmsched_env.outputs import check_output_dir
    from llmsched_env.plotting import plot_comparison

    report = say("evaluate")
    available = policy_names(args.env)
    if args.policies == "all":
        policies = available
    else:
        policies = _policy_list(args.policies)
        if not policies:
            raise ValueError(f"--policies names no policy; expected 'all' or some of {available}")
        check_policies(args.env, policies)
    env_id = ENV_IDS[args.env]
    env_kwargs = env_kwargs_from_args(args)
    check_env_kwargs(env_id, env_kwargs)
    if args.records and not args.out:
        raise ValueError("--records needs --out, the directory for records.csv")
    files = [*RESULT_FILES, *([RECORDS_FILE] if args.records else [])]
    out = check_output_dir(args.out, files, overwrite=args.force) if args.out else None
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    report(f"{len(policies)} policies x {args.seeds} seeds on {env_id}")
    _warm_up(report, env_id)
    result = evaluate(
        policies,
        env_id,
        build_env_kwargs(env_kwargs),  # the scenario workloads, as train and compare take them
        seeds,
        n_jobs=args.jobs,
        progress=None if args.quiet else progress_printer("evaluate"),
        records=args.records,
    )
    episodes, summary = result[0], result[1]
    print(f"{env_id} {_json(env_kwargs)}, seeds {seeds.start}..{seeds.stop - 1}")
    print(format_table(summary))
    _warn_of_unserved(episodes, report, "--records gives each one's reason")
    if out is None:
        return 0

    def write(target: Path) -> list[str]:
        episodes.to_csv(target / "episodes.csv", index=False)
        summary.to_csv(target / "summary.csv", index=False)
        written = ["episodes.csv", "summary.csv"]
        if args.records:
            result[2].to_csv(target / RECORDS_FILE, index=False)
            written.append(RECORDS_FILE)
        figure = plot_comparison(summary, target / "comparison.png", title=env_id)
        return written + ([figure.name] if figure else [])

    _write(out, write, report, force=args.force, owned=(*RESULT_FILES, RECORDS_FILE))
    return 0


def _warn_of_unserved(
    episodes: Any,
    report: Callable[[str], None],
    reasons: str = "llmsched evaluate --records with the same settings gives each one's reason",
) -> None:
    """Say what the table leaves unsaid: requests rejected, and episodes cut off before the end."""
    _warn_of_rejections(episodes, report, reasons)
    _warn_of_unfinished(episodes, report)


def _warn_of_unfinished(episodes: Any, report: Callable[[str], None]) -> None:
    """Say how many episodes stopped with requests not served yet (``max_steps`` reached).

    Their metrics cover only the requests that arrived, and SLA attainment counts those still
    in the system as misses; a full episode ends with every request served or rejected.
    """
    if "in_system" not in episodes or "not_arrived" not in episodes:
        return
    unfinished = episodes[(episodes["in_system"] > 0) | (episodes["not_arrived"] > 0)]
    if len(unfinished):
        report(
            f"warning: {len(unfinished):,} of the {len(episodes):,} episodes stopped before "
            f"every request was served ({int(unfinished['not_arrived'].sum()):,} requests had "
            f"not arrived and {int(unfinished['in_system'].sum()):,} were still in the system: "
            "max_steps cut them off); their metrics cover the arrived requests only, and SLA "
            "attainment counts those still in the system as misses"
        )


def _warn_of_rejections(
    episodes: Any,
    report: Callable[[str], None],
    reasons: str = "llmsched evaluate --records with the same settings gives each one's reason",
) -> None:
    """Say how many requests were rejected at arrival, if any were (the table does not).

    Whether a request is rejected depends on its size and the env's settings, not on the
    policy, so the count is taken once per seed (the most over the policies: an episode cut
    short may not have seen all its arrivals).
    """
    if "rejected" not in episodes or "arrived" not in episodes:
        return
    per_seed = episodes.groupby("seed")[["rejected", "arrived"]].max()
    rejected, arrived = int(per_seed["rejected"].sum()), int(per_seed["arrived"].sum())
    if rejected:
        report(
            f"warning: {rejected:,} of the {arrived:,} requests that arrived "
            f"({rejected / arrived:.1%}) were rejected at arrival, too large to serve (a "
            "GPU's KV memory, or its token budget without chunked prefill); they count as SLA "
            f"misses ({reasons})"
        )


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _cmd_stability(args: argparse.Namespace) -> int:
    from baselines import parse_policy, policy_names
    from llmsched_env.config import ContinuousEnvConfig
    from llmsched_env.outputs import check_output_dir
    from llmsched_env.plotting import plot_stability
    from llmsched_env.registry import unknown_name_error
    from llmsched_env.stability import (
        ENV_ID,
        REJECTED_NOTE,
        DriftPoint,
        StabilitySettings,
        estimate_stability,
    )
    from llmsched_env.workload import TraceSource, make_workload_source

    report = say("stability")
    available = policy_names("continuous")
    # A setting ("hybrid(decode_share=0.3)") is the policy and its --policy-kwargs in one.
    args.policy, in_setting = parse_policy(args.policy)
    if args.policy not in available:
        raise unknown_name_error("continuous policy", args.policy, available)
    env_kwargs = _env_kwargs_json(args.env_kwargs)
    policy_kwargs = json_object("--policy-kwargs", args.policy_kwargs)
    check_policy_kwargs("continuous", args.policy, in_setting, "--policy")
    check_policy_kwargs("continuous", args.policy, policy_kwargs)
    for key, value in in_setting.items():
        if key in policy_kwargs and policy_kwargs[key] != value:
            raise ValueError(
                f"--policy sets {key}={value!r} and --policy-kwargs {key}={policy_kwargs[key]!r}; "
                f"give {key} once"
            )
        policy_kwargs[key] = value
    named = [("workload", "--workload", args.workload), ("n_gpus", "--gpus", args.gpus)]
    env_kwargs = _with_named_flags(env_kwargs, named)
    check_env_kwargs(ENV_ID, env_kwargs)
    with _flag_names(_STABILITY_FLAGS):
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
    # A file name: a trace workload ("trace:azure:dir/file.csv") keeps its letters and digits.
    workload = re.sub(r"[^A-Za-z0-9._-]+", "_", str(env_kwargs.get("workload", "default")))
    stem = f"{args.policy}_{workload}"
    out = check_output_dir(args.out, [f"{stem}.csv", f"{stem}.png"], overwrite=args.force)
    _warm_up(report, ENV_ID)
    source = make_workload_source(env_kwargs.get("workload", ContinuousEnvConfig.workload))
    if isinstance(source, TraceSource):
        report(
            f"warning: workload {source.name!r} replays a trace, whose arrival rate varies "
            "within a run: the drift says little about stability there (docs/stability.md); "
            "a synthetic --workload gives Poisson arrivals"
        )

    def tested(point: DriftPoint) -> None:
        verdict = "stable" if point.stable else "unstable"
        print(
            f"  lambda {point.arrival_rate_rps:9.4f} req/s: drift {point.drift_per_arrival:+.4f} "
            f"+/- {point.drift_ci95:.4f}, throughput {point.throughput_rps:.3f} req/s: {verdict}",
            file=sys.stderr,
            flush=True,
        )

    with _flag_names(_STABILITY_FLAGS):
        result = estimate_stability(
            args.policy,
            env_kwargs,
            settings,
            policy_kwargs=policy_kwargs,
            low_rps=args.low,
            high_rps=args.high,
            progress=None if args.quiet else tested,
            announce=None if args.quiet else report,
        )
    print(f"{ENV_ID} {_json(env_kwargs)}, policy {args.policy} {_json(policy_kwargs)}")
    over = result.overload_point
    print(
        f"lambda* = {result.lambda_star_rps:.3f} req/s, interval [{result.lambda_low_rps:.3f}, "
        f"{result.lambda_high_rps:.3f}] (largest rate judged stable, smallest judged unstable)"
    )
    print(
        f"throughput in overload: {over.throughput_rps:.3f} +/- {over.throughput_ci95:.3f} req/s "
        f"at {over.arrival_rate_rps:.3f} req/s (capacity estimate "
        f"{result.capacity_estimate_rps:.3f} req/s)"
    )
    if result.inconsistent_rates:
        print(f"warning: stability is not monotone here, see the rates {result.inconsistent_rates}")
    if result.rejected_fraction > 0:
        print(
            f"warning: up to {result.rejected_fraction:.1%} of the requests were rejected at "
            f"arrival: {REJECTED_NOTE}"
        )

    def write(target: Path) -> list[str]:
        result.to_frame().to_csv(target / f"{stem}.csv", index=False)
        figure = plot_stability(result, target / f"{stem}.png")
        return [f"{stem}.csv"] + ([figure.name] if figure else [])

    _write(out, write, report, force=args.force, owned=(f"{stem}.csv", f"{stem}.png"))
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
    from llmsched_env.validation import RUN_SETTINGS, validate
    from llmsched_env.validation.report import VALIDATION_CSV, check_output_dir

    report = say("validate")
    if args.runs and not all(run.strip() for run in args.runs):
        raise ValueError("--runs names an empty run; expected shipped run names or run directories")
    names = [Path(run).name for run in args.runs] if args.runs else list(RUN_SETTINGS)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"--runs names {listing(twice)} more than once; name each run once")
    out = check_output_dir(args.out, args.force, names)
    written = [VALIDATION_CSV]
    report(f"replaying {'every shipped run' if not args.runs else listing(args.runs)}")
    _warm_up(report, "llmsched/ContinuousBatching-v0")

    def done(result: Any) -> None:
        print(format_validation(result), end="\n\n", flush=True)
        figure = out / f"{result.run.name}.png"
        if figure.exists():  # not without matplotlib (the plots extra)
            written.append(figure.name)

    validate(
        args.runs,
        out,
        max_requests=args.max_requests,
        overwrite=args.force,
        on_run=done,
        warn=report,
    )
    print(f"wrote {', '.join(written)} to {out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from agents.extras import AgentsExtraMissingError

    if args.framework == "rllib":
        return _cmd_train_rllib(args)
    report = say("train")
    report("loading torch and stable-baselines3")
    try:
        from agents.training import resume, train

        if args.resume:
            if args.imitate is not None:
                raise ValueError(
                    "--imitate warm-starts a new run; a resumed run continues from its model"
                )
            _refuse_settings_on_resume(args)
            _warm_up(report)
            result = resume(
                args.resume,
                steps=args.steps or DEFAULT_TRAIN_STEPS,
                eval_freq=args.eval_freq,
                checkpoint_freq=args.checkpoint_freq,
                progress_bar=not args.quiet,
                verbose=int(args.verbose),
                log=report,
            )
        else:
            if not args.out:
                raise ValueError("--out is required (the run directory to create)")
            from agents.scenarios import get_scenario
            from llmsched_env.outputs import check_output_dir

            hyperparams = json_object("--hyperparams", args.hyperparams)
            if args.imitate is not None:
                # One name, or several whose best on each episode demonstrates it.
                imitate = args.imitate[0] if len(args.imitate) == 1 else args.imitate
                if "imitation" in (hyperparams or {}):
                    raise ValueError(
                        f"--imitate {' '.join(args.imitate)} and --hyperparams' imitation "
                        f"{hyperparams['imitation']!r} both set the warm start; give one"
                    )
                hyperparams = {**(hyperparams or {}), "imitation": imitate}
            scenario = get_scenario(args.scenario) if args.scenario else None
            if scenario is not None:  # the scenario names the env (what --gpus counts, too)
                given = any(a == "--env" or a.startswith("--env=") for a in args.argv)
                if given and args.env != scenario.env:
                    raise ValueError(
                        f"--env {args.env} contradicts --scenario {args.scenario}, a "
                        f"{scenario.env} scenario ({scenario.env_id}); drop --env"
                    )
                args.env = scenario.env
            env_kwargs = env_kwargs_from_args(args)
            env_id = scenario.env_id if scenario else ENV_IDS[args.env]
            steps = args.steps or (scenario.train_steps if scenario else DEFAULT_TRAIN_STEPS)
            check_env_kwargs(env_id, env_kwargs)
            check_output_dir(args.out)
            _warm_up(report, env_id)
            result = train(
                args.env,
                out=args.out,
                steps=steps,
                algo=args.algo,
                scenario=args.scenario,
                env_kwargs=env_kwargs,
                n_envs=args.n_envs,
                seed=args.seed,
                hyperparams=hyperparams,
                vec_env=args.vec_env,
                eval_episodes=args.eval_episodes,
                **_given(eval_freq=args.eval_freq, checkpoint_freq=args.checkpoint_freq),
                progress_bar=not args.quiet,
                torch_threads=args.threads,
                overwrite=args.overwrite,
                command=shlex.join(["llmsched", *args.argv]),
                verbose=int(args.verbose),
                log=report,
            )
    except AgentsExtraMissingError as error:
        print(f"llmsched train: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        if not hasattr(stop, "run_dir"):  # before training started: nothing to save
            raise
        print(
            f"llmsched train: stopped by {stop.signal_name} after {stop.steps} steps; saved "
            f"model.zip to {stop.run_dir} (continue with: llmsched train --resume {stop.run_dir} "
            "--steps N)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
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


#: What ``train --resume`` may set: the session's length, its evaluations and its output.
_RESUME_OPTIONS = ("resume", "steps", "eval_freq", "checkpoint_freq", "quiet", "verbose")


def _refuse_settings_on_resume(args: argparse.Namespace) -> None:
    """Refuse options a resumed run would ignore (it continues with its own settings).

    Raises:
        ValueError: Naming the options given that differ from their defaults.
    """
    defaults = vars(build_parser().parse_args(["train", "--resume", args.resume]))
    given = [
        "--" + name.replace("_", "-")
        for name, default in defaults.items()
        if name not in (*_RESUME_OPTIONS, "func", "command") and getattr(args, name) != default
    ]
    if given:
        raise ValueError(
            f"--resume continues the run with its own settings, so {listing(given)} would be "
            f"ignored; with --resume give only --steps, --eval-freq, --checkpoint-freq, --quiet "
            f"or --verbose"
        )


def _cmd_train_rllib(args: argparse.Namespace) -> int:
    """``llmsched train --framework rllib``: masked PPO with Ray RLlib (docs/scaling.md)."""
    from agents.rllib import RLlibSettings, require_rllib, train_rllib
    from llmsched_env.outputs import check_output_dir

    report = say("train")
    if args.resume or args.scenario or args.algo != "maskable-ppo" or args.imitate:
        raise ValueError(
            "--framework rllib trains masked PPO from scratch: drop --resume, --scenario, --algo "
            "and --imitate"
        )
    if not args.out:
        raise ValueError("--out is required (the run directory to create)")
    env_id = ENV_IDS[args.env]
    env_kwargs = env_kwargs_from_args(args)
    check_env_kwargs(env_id, env_kwargs)
    check_output_dir(args.out)
    steps = args.steps or DEFAULT_TRAIN_STEPS
    batch = min(4000, steps)
    settings = RLlibSettings(
        env_id,
        env_kwargs,
        iterations=-(-steps // batch),
        num_env_runners=args.env_runners,
        num_envs_per_env_runner=args.n_envs or 2,
        train_batch_size=batch,
        minibatch_size=min(256, batch),
        seed=args.seed,
    )
    try:
        ray = require_rllib()
    except ImportError as error:
        print(f"llmsched train: error: {error}", file=sys.stderr)
        return 2
    # Called from a process that already runs Ray (a notebook, a test session), train there and
    # leave that instance running; otherwise start or join one and shut it down afterwards.
    started_ray = not ray.is_initialized()
    if started_ray:
        report(f"connecting to Ray ({args.ray_address or 'a local instance'})")
        ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=not args.quiet)
    else:
        report("using the Ray instance already running in this process")
    try:
        result = train_rllib(settings, out=args.out, log=report)
    finally:
        if started_ray:
            ray.shutdown()
    print(
        f"trained masked PPO (RLlib) on {env_id} for {result.env_steps} env steps; last mean "
        f"episode return {result.returns[-1]:.1f}; checkpoint saved to {result.checkpoint}"
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from agents.extras import AgentsExtraMissingError
    from llmsched_env.outputs import check_output_dir

    report = say("compare")
    policies = None
    if args.policies != "all":
        policies = _policy_list(args.policies)
    # The env of the run(s), for what --gpus counts and which options apply.
    args.env = _compared_kind(args)
    if args.settled_policy is not None and args.env != "batch":
        raise ValueError(
            f"--settled-policy {args.settled_policy!r}: only BatchScheduling-v0 episodes settle; "
            f"this agent is a {resolve_kind(args.env).env_id} one"
        )
    if args.runs:
        return _compare_runs(args, policies)
    if args.bootstrap_reps is not None:
        raise ValueError("--bootstrap-reps applies to --runs (pooled statistics), not to one agent")
    if args.out:
        out = Path(args.out)
    elif args.run:
        out = Path(args.run) / "compare"
    else:
        out = Path("runs") / f"pretrained-{args.pretrained}" / "compare"
    env_overrides = env_kwargs_from_args(args)
    check_output_dir(out, RESULT_FILES, overwrite=args.force)
    try:
        from agents.compare import compare, write_comparison

        report(f"{args.seeds} seeds from {args.first_seed}; loading the agent")
        if args.run and args.model == "best" and not (Path(args.run) / "best_model.zip").is_file():
            report("the run kept no validation-best model (no validation ran): its final model")
        _warm_up(report, resolve_kind(args.env).env_id)
        result = compare(
            args.run,
            pretrained=args.pretrained,
            n_seeds=args.seeds,
            first_seed=args.first_seed,
            policies=policies,
            which=args.model,
            n_jobs=args.jobs,
            progress=None if args.quiet else progress_printer("compare"),
            env_overrides=env_overrides,
            **_settled_policy_option(args.settled_policy),
        )
    except AgentsExtraMissingError as error:
        print(f"llmsched compare: error: {error}", file=sys.stderr)
        return 2
    config = result.config
    label = f" ({config.scenario})" if config.scenario else ""
    print(
        f"{config.env_id}{label} {_json(config.env_kwargs)}, seeds "
        f"{result.seeds[0]}..{result.seeds[-1]}"
    )
    print(format_table(result.summary))
    print(result.verdict())
    _warn_of_unserved(result.episodes, report)
    _write(
        out,
        lambda target: [p.name for p in write_comparison(result, target)],
        report,
        force=args.force,
        owned=RESULT_FILES,
    )
    return 0


def _compare_runs(args: argparse.Namespace, policies: list[str] | None) -> int:
    """``llmsched compare --runs``: every run's agent and the baselines, pooled statistics."""
    from agents.extras import AgentsExtraMissingError
    from llmsched_env.outputs import check_output_dir

    report = say("compare")
    runs = args.runs
    if len({os.path.isabs(run) for run in runs}) > 1:  # commonpath needs them alike
        runs = [os.path.abspath(run) for run in runs]
    out = Path(args.out) if args.out else Path(os.path.commonpath(runs)) / "compare"
    check_output_dir(out, RUNS_OUTPUT_FILES, overwrite=args.force)
    try:
        from agents.compare_runs import compare_runs, write_runs_comparison

        report(f"{len(args.runs)} runs, {args.seeds} seeds from {args.first_seed}")
        _warm_up(report)
        result = compare_runs(
            args.runs,
            n_seeds=args.seeds,
            first_seed=args.first_seed,
            policies=policies,
            which=args.model,
            n_jobs=args.jobs,
            progress=None if args.quiet else progress_printer("compare"),
            **({"reps": args.bootstrap_reps} if args.bootstrap_reps else {}),
            env_overrides=env_kwargs_from_args(args),
            **_settled_policy_option(args.settled_policy),
        )
    except (AgentsExtraMissingError, ImportError) as error:
        print(f"llmsched compare: error: {error}", file=sys.stderr)
        return 2
    config = result.config
    label = f" ({config.scenario})" if config.scenario else ""
    print(
        f"{config.env_id}{label} {_json(config.env_kwargs)}, {len(result.runs)} runs, seeds "
        f"{result.seeds[0]}..{result.seeds[-1]}"
    )
    print(format_table(result.summary.assign(policy=_run_labels(result.summary))))
    print("\n".join(result.reliable.lines()))
    _warn_of_unserved(result.episodes, report)
    _write(
        out,
        lambda target: [p.name for p in write_runs_comparison(result, target)],
        report,
        force=args.force,
        owned=RUNS_OUTPUT_FILES,
    )
    return 0


def _run_labels(summary: Any) -> list[str]:
    """``agent (<run>)`` for an agent's row of a multi-run summary, the policy otherwise."""
    return [f"{p} ({r})" if r else str(p) for p, r in zip(summary["policy"], summary["run"])]


def _compared_kind(args: argparse.Namespace) -> str:
    """The env kind of the agent(s) ``compare`` scores, from the (first) run's ``config.json``."""
    from agents.compare import pretrained_dir
    from agents.runs import load_run_config

    if args.runs:
        directory = Path(args.runs[0])
    elif args.run:
        directory = Path(args.run)
    else:
        directory = pretrained_dir(args.pretrained)
    return kind_of_id(load_run_config(directory).env_id).name


def _policy_list(text: str) -> list[str]:
    """The baselines of ``--policies``, each once (``name()`` is ``name``).

    Raises:
        ValueError: If a baseline is named twice (results are grouped by name).
    """
    from baselines import split_policies

    policies = [p[:-2] if p.endswith("()") else p for p in split_policies(text)]
    twice = sorted({p for p in policies if policies.count(p) > 1})
    if twice:
        raise ValueError(f"--policies names {listing(twice)} more than once; name each once")
    return policies


def _given(**options: Any) -> dict[str, Any]:
    """The options given on the command line (not ``None``), as keyword arguments."""
    return {name: value for name, value in options.items() if value is not None}


def _settled_policy_option(value: str | None) -> dict[str, Any]:
    """``compare``'s ``settled_policy`` argument from ``--settled-policy`` (none: its default)."""
    if value is None:
        return {}
    return {"settled_policy": None if value == "none" else value}


def _pretrained_names() -> list[str]:
    from agents.compare import pretrained_names

    return pretrained_names()


def build_parser() -> argparse.ArgumentParser:
    """The ``llmsched`` argument parser (valid names in the help come from the registries)."""
    from agents.runs import MODEL_CHOICES
    from agents.scenarios import SCENARIOS
    from baselines import policy_names

    parser = argparse.ArgumentParser(
        prog="llmsched",
        description="Scheduling environments for LLM inference. Progress goes to stderr, results "
        "to stdout; output directories are checked before any work and results are never "
        "overwritten without --force; Ctrl-C stops a command cleanly (exit status 130).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )

    ev = command("evaluate", "evaluate baseline policies on common seeds")
    _add_env_flags(ev)
    ev.add_argument(
        "--policies",
        default="all",
        help="'all' or comma-separated policy names or settings, e.g. "
        "'vllm,length-split(threshold_tokens=1024,long_replicas=2)'; batch: "
        f"{listing(policy_names('batch'))}; continuous: {listing(policy_names('continuous'))}; "
        f"routing: {listing(policy_names('routing'))}",
    )
    ev.add_argument("--seeds", type=SEED_COUNT, default=10, help="number of episodes per policy")
    ev.add_argument("--first-seed", type=nonnegative_int, default=10_000, help="first seed")
    ev.add_argument("--jobs", type=JOBS, default=1, help="worker processes")
    ev.add_argument(
        "--out", type=directory, help="directory for episodes.csv, summary.csv and a figure"
    )
    ev.add_argument(
        "--records",
        action="store_true",
        help="also write records.csv to --out: one row per request per policy and seed",
    )
    ev.add_argument("--force", action="store_true", help="overwrite results already in --out")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_evaluate)

    st = command("stability", "estimate the largest stable arrival rate of a continuous policy")
    st.add_argument(
        "--policy",
        required=True,
        help=f"continuous-batching baseline: {listing(policy_names('continuous'))}, or a "
        "setting such as 'hybrid(decode_share=0.3)'",
    )
    st.add_argument("--policy-kwargs", help="policy keyword arguments as a JSON object")
    st.add_argument("--workload", help="workload preset (env default if omitted)")
    st.add_argument("--gpus", type=positive_int, help="number of GPUs")
    st.add_argument(
        "--env-kwargs",
        help="other env keyword arguments as a JSON object (docs/stability.md gives the course "
        'settings, e.g. \'{"latency": "demo2", "max_sequences": 1000, '
        '"max_tokens": 2048, "chunk_size": null, "kv_memory": "unlimited"}\')',
    )
    st.add_argument("--low", type=positive_float, help="start of the bracket in req/s")
    st.add_argument("--high", type=positive_float, help="end of the bracket in req/s")
    st.add_argument(
        "--horizon", type=positive_float, default=2000.0, help="simulated seconds per run"
    )
    st.add_argument("--warmup", type=float, default=0.25, help="share of the run discarded")
    st.add_argument(
        "--replications",
        type=bounded_int(2, 1_000, "runs per arrival rate"),
        default=3,
        help="runs per arrival rate",
    )
    st.add_argument(
        "--threshold", type=float, default=0.01, help="drift per arrival that means unstable"
    )
    st.add_argument("--rel-tol", type=float, default=0.02, help="relative width of the bracket")
    st.add_argument(
        "--grid",
        type=bounded_int(0, 1_000, "extra rates tested"),
        default=0,
        help="extra rates tested for the curve",
    )
    st.add_argument("--seed", type=nonnegative_int, default=0, help="first seed")
    st.add_argument("--jobs", type=JOBS, default=1, help="worker processes")
    st.add_argument(
        "--out", type=directory, default="runs/stability", help="directory for the CSV and figure"
    )
    st.add_argument("--force", action="store_true", help="overwrite results already in --out")
    st.add_argument("--quiet", action="store_true", help="do not print each tested rate")
    st.set_defaults(func=_cmd_stability)

    va = command("validate", "replay real vLLM runs in ContinuousBatching-v0 and report the error")
    va.add_argument(
        "--runs", nargs="+", metavar="RUN", help="shipped run names or run directories (all)"
    )
    va.add_argument(
        "--out", type=directory, default="runs/validate", help="directory for validation.csv"
    )
    va.add_argument(
        "--max-requests",
        type=positive_int,
        help="replay only each run's first requests: a smoke test of the replay, not a fidelity "
        "figure (the measured requests shared the GPU with later ones the replay leaves out)",
    )
    va.add_argument("--force", action="store_true", help="overwrite an existing validation.csv")
    va.set_defaults(func=_cmd_validate)

    tr = command("train", "train an RL agent (needs the 'agents' extra)")
    _add_env_flags(tr)
    tr.add_argument(
        "--scenario",
        help=f"a named scenario; sets env and kwargs: {listing(SCENARIOS)}",
    )
    tr.add_argument(
        "--algo", default="maskable-ppo", help="maskable-ppo, ppo, a2c or dqn (via FlattenAction)"
    )
    tr.add_argument(
        "--steps",
        type=positive_int,
        help=f"environment steps (default: the scenario's budget with --scenario, "
        f"else {DEFAULT_TRAIN_STEPS:,}; with --resume, the steps to add)",
    )
    tr.add_argument(
        "--n-envs",
        type=bounded_int(1, 9_000, "training env seeds stay below the validation seeds, 9,000"),
        help="parallel envs (default: per env, algo)",
    )
    tr.add_argument("--seed", type=nonnegative_int, default=0, help="training seed")
    tr.add_argument("--out", type=directory, help="run directory to create")
    tr.add_argument(
        "--resume",
        metavar="RUN",
        type=directory,
        help="continue the run in this directory (from model.zip, else its latest checkpoint)",
    )
    tr.add_argument("--hyperparams", help="hyperparameter overrides as a JSON object")
    tr.add_argument(
        "--imitate",
        metavar="BASELINE",
        nargs="+",
        help="warm start: clone this baseline, a name or a setting such as "
        "'length-split(threshold_tokens=1024,long_replicas=2)' ('best': the best on the "
        "validation seeds) before training; several names: each demonstration episode is "
        "played by the one of them with the best return on it; 'none' trains from a random "
        "network (default: the env's recipe, 'best' for ContinuousBatching-v0)",
    )
    tr.add_argument(
        "--vec-env",
        choices=["dummy", "subproc"],
        default="dummy",
        help="the training envs all in this process (dummy) or one process each (subproc: "
        "slower than dummy on few cores)",
    )
    tr.add_argument(
        "--eval-freq",
        type=nonnegative_int,
        help="steps between validations (0: none; default 25,000, or with --resume the run's)",
    )
    tr.add_argument(
        "--eval-episodes",
        type=bounded_int(1, 1_000, "the validation seeds are 9,000 to 9,999"),
        help="validation seeds (default 20 or 5)",
    )
    tr.add_argument(
        "--checkpoint-freq",
        type=nonnegative_int,
        help="steps between checkpoints (0: none; default 100,000, or with --resume the run's)",
    )
    tr.add_argument(
        "--threads",
        type=bounded_int(1, 1_024, "torch CPU threads"),
        default=1,
        help="torch CPU threads",
    )
    tr.add_argument(
        "--framework",
        choices=["sb3", "rllib"],
        default="sb3",
        help="stable-baselines3 on this machine, or Ray RLlib's masked PPO on a Ray cluster "
        "(needs the 'rllib' extra; see docs/scaling.md)",
    )
    tr.add_argument("--env-runners", type=nonnegative_int, default=2, help="rllib: sampling actors")
    tr.add_argument("--ray-address", help="rllib: Ray cluster to join (default: a local one)")
    tr.add_argument(
        "--force",
        "--overwrite",
        dest="overwrite",
        action="store_true",
        help="reuse a non-empty --out",
    )
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.add_argument("--verbose", action="store_true", help="print validation results")
    tr.set_defaults(func=_cmd_train)

    co = command("compare", "compare an agent with every baseline on common seeds")
    source = co.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=directory, help="a training run directory")
    source.add_argument(
        "--runs",
        nargs="+",
        type=directory,
        metavar="DIR",
        help="several training runs of one env configuration (independent training seeds, 5 "
        "or more): adds normalised IQM, P(agent > best heuristic) with bootstrap CIs, paired "
        "per-seed differences and a performance profile (default --out: their common parent "
        "directory's compare/)",
    )
    source.add_argument(
        "--pretrained",
        help=f"a pretrained agent shipped with the package: {listing(_pretrained_names())}",
    )
    co.add_argument("--seeds", type=SEED_COUNT, default=20, help="number of evaluation seeds")
    co.add_argument(
        "--first-seed",
        type=integer_at_least(10_000),  # below are the training and validation seeds
        default=10_000,
        help="first evaluation seed (>= 10000)",
    )
    co.add_argument(
        "--policies",
        default="all",
        help="'all' or comma-separated baselines, names or settings such as "
        "'length-split(threshold_tokens=1024,long_replicas=2)'",
    )
    co.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        default="best",
        help="which model of each run: validation-best (the final one for a run that "
        "validated none), final, or averaged weights (a run trained with weight_averaging)",
    )
    co.add_argument("--jobs", type=JOBS, default=1, help="worker processes")
    co.add_argument(
        "--out",
        type=directory,
        help="output directory (default: RUN/compare; with --pretrained NAME, "
        "runs/pretrained-NAME/compare in the current directory)",
    )
    co.add_argument("--force", action="store_true", help="overwrite results already in --out")
    co.add_argument(
        "--settled-policy",
        help="baseline that acts for the agent once no action can change the return "
        "(only late requests left), or 'none' (default: multibin-wc)",
    )
    co.add_argument(
        "--bootstrap-reps",
        type=bounded_int(1, 1_000_000, "bootstrap replications"),
        help="with --runs: bootstrap replications of the IQM and P(improvement) intervals "
        "(default 10,000)",
    )
    co.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_env_flags(co, default_env=None)
    co.epilog = (
        "The env flags override the settings the agent was trained with (e.g. --trace my.csv "
        "--load 0.9); settings that change its observation or action space are refused."
    )
    co.set_defaults(func=_cmd_compare)
    return parser


def _one_line_warnings() -> None:
    """Print warnings as one line (``llmsched: warning: ...``), without the source line."""

    def formatwarning(message: Warning | str, *args: Any, **kwargs: Any) -> str:
        return f"llmsched: warning: {message}\n"

    warnings.formatwarning = formatwarning  # type: ignore[assignment]


#: What ``gym.make`` appends to a ``TypeError`` raised while building the env.
_ENV_CREATOR_SUFFIX = " was raised from the environment creator"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmsched`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _one_line_warnings()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a bad argument (already printed)
        return stop.code if isinstance(stop.code, int) else 2
    except KeyboardInterrupt:  # while the package was still loading
        print("llmsched: interrupted (Ctrl-C); nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    args.argv = argv  # recorded with trained runs, so that a run says how it was made
    try:
        return int(args.func(args) or 0)
    except ValueError as error:  # bad configuration values: a clear message, no traceback
        # An ArgumentTypeError (also a ValueError) that gym.make re-raised carries its suffix.
        text = str(error).partition(_ENV_CREATOR_SUFFIX)[0]
        print(f"llmsched {args.command}: error: {text}", file=sys.stderr)
        return 2
    except TypeError as error:
        # An env refusing a value of the wrong type given in --env-kwargs: gym.make re-raises
        # it with this suffix. Any other TypeError is a fault of the program: raised as is.
        text, marker, _ = str(error).partition(_ENV_CREATOR_SUFFIX)
        if not marker:
            raise
        print(f"llmsched {args.command}: error: {text}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of the output went away (``| head``): stop quietly
        # Python flushes stdout at exit; pointing it at /dev/null keeps that from failing too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as error:  # a file or directory the command could not read or write
        print(f"llmsched {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"llmsched {args.command}: interrupted (Ctrl-C); nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
