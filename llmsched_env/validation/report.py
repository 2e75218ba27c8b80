"""Compare replays with the recorded runs: one table of errors, one figure per run."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from llmsched_env.outputs import check_output_dir as check_dir
from llmsched_env.validation.latencies import latency_stats, request_latencies_ms
from llmsched_env.validation.replay import ReplayResult, replay
from llmsched_env.validation.runs import VllmRun, load_run
from llmsched_env.validation.settings import RUN_SETTINGS, RunSettings, run_settings

#: Columns of :func:`validate`'s table (and of ``validation.csv``), in order.
VALIDATION_COLUMNS = ("run", "metric", "stat", "measured_ms", "simulated_ms", "error_pct")
VALIDATION_CSV = "validation.csv"


@dataclass(frozen=True, eq=False)
class RunValidation:
    """One run compared with its replay.

    Attributes:
        run: The recorded run (or the subset that was replayed).
        replay: The replay.
        measured: The run's per-request latencies (``request_latencies_ms``), in request order.
        simulated: The replay's per-request latencies, in the same order.
        table: Rows of the validation table for this run (:data:`VALIDATION_COLUMNS`).
    """

    run: VllmRun
    replay: ReplayResult
    measured: pd.DataFrame
    simulated: pd.DataFrame
    table: pd.DataFrame


def measured_latencies_ms(run: VllmRun) -> pd.DataFrame:
    """The run's per-request TTFT, TPOT and E2E (ms), from its recorded timestamps."""
    r = run.requests
    return request_latencies_ms(
        r["queued_ts"].to_numpy(),
        r["first_token_ts"].to_numpy(),
        r["last_token_ts"].to_numpy(),
        r["output_toks"].to_numpy(),
    )


def validate_run(run: VllmRun, settings: RunSettings | None = None) -> RunValidation:
    """Replay one run and compare each statistic: ``error_pct = 100 (sim - measured) / measured``.

    Args:
        run: The recorded run.
        settings: Replay settings; by default the run's row of ``RUN_SETTINGS``.
    """
    result = replay(run, settings)
    measured = measured_latencies_ms(run)
    simulated = result.latencies_ms()
    left = latency_stats(measured).rename(columns={"value_ms": "measured_ms"})
    right = latency_stats(simulated)
    table = left.assign(run=run.name, simulated_ms=right["value_ms"].to_numpy())
    table["error_pct"] = (
        100.0 * (table["simulated_ms"] - table["measured_ms"]) / table["measured_ms"]
    )
    return RunValidation(run, result, measured, simulated, table[list(VALIDATION_COLUMNS)])


def check_output_dir(
    out: str | Path, overwrite: bool = False, run_names: Sequence[str] = ()
) -> Path:
    """Check, without creating anything, that the validation's files can be written to ``out``.

    ``out`` must be a writable directory, or not exist yet below a writable directory (see
    :func:`llmsched_env.outputs.check_output_dir`, shared by every command); the files are
    ``validation.csv`` and one ``<run>.png`` per name of ``run_names``.

    Raises:
        ValueError: If ``out`` (or the nearest existing folder above it) is a file or not
            writable, or ``out`` already holds one of the files and ``overwrite`` is false.
    """
    figures = [f"{name}.png" for name in run_names]
    return check_dir(out, [VALIDATION_CSV, *figures], overwrite=overwrite)


def validate(
    runs: Sequence[str | Path | VllmRun] | None = None,
    out: str | Path | None = None,
    *,
    max_requests: int | None = None,
    overwrite: bool = False,
    on_run: Callable[[RunValidation], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Replay recorded vLLM runs and tabulate the error of every latency statistic.

    Args:
        runs: Shipped run names, run directories or loaded runs (or one of them); by default
            every run of ``RUN_SETTINGS``. Every run's name needs a row in ``RUN_SETTINGS``.
        out: Directory for ``validation.csv`` and one ``<run>.png`` per run (the figure needs
            the ``plots`` extra); nothing is written when ``None``.
        max_requests: Replay only each run's first requests (by arrival), for a quick check.
        overwrite: Replace an existing ``validation.csv`` in ``out``.
        on_run: Called with each run's :class:`RunValidation` as soon as it is done.
        warn: Told, in one line, when ``max_requests`` leaves out some run's later requests
            (the replay's errors are then not the simulator's fidelity).

    Returns:
        Columns :data:`VALIDATION_COLUMNS`: per run, metric (ttft, tpot, e2e) and stat (mean,
        p50, p90, p99), the measured and simulated values in ms and
        ``error_pct = 100 * (simulated - measured) / measured``.

    Raises:
        ValueError: For an unknown run, a bad ``out`` (see :func:`check_output_dir`), or a
            run that cannot be replayed. ``out`` is checked first and created only once every
            run has loaded.
        TypeError: If ``runs`` is neither a run nor an iterable of runs.
    """
    from llmsched_env.plotting import plot_validation

    if max_requests is not None and (
        isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests < 1
    ):
        raise ValueError(f"max_requests must be an integer >= 1 or None, got {max_requests!r}")
    if isinstance(runs, (str, Path, VllmRun)):
        runs = [runs]
    elif runs is not None and not isinstance(runs, Iterable):
        raise TypeError(
            f"runs must be a run name, a run directory, a VllmRun or a sequence of them, got "
            f"{runs!r}"
        )
    target = None if out is None else check_output_dir(out, overwrite)
    # Load and check every run and its settings before the first replay, so a bad name or file
    # fails at once.
    jobs = []
    cut = []
    for spec in list(RUN_SETTINGS) if runs is None else runs:
        run = spec if isinstance(spec, VllmRun) else load_run(spec)
        if max_requests is not None and len(run) > max_requests:
            cut.append(run.name)
            run = run.head(max_requests)
        jobs.append((run, run_settings(run.name)))
    if not jobs:
        raise ValueError("runs names no run; expected at least one run")
    if cut and warn is not None:
        warn(
            f"replaying only the first {max_requests} requests of {', '.join(cut)}: the measured "
            "requests shared the GPU with later ones the replay leaves out, so these errors are "
            "not the simulator's fidelity (the full replay's are)"
        )
    if target is not None:
        target.mkdir(parents=True, exist_ok=True)
    tables = []
    for run, settings in jobs:
        result = validate_run(run, settings)
        tables.append(result.table)
        if target is not None:
            plot_validation(result, target / f"{run.name}.png")
        if on_run is not None:
            on_run(result)
    table = pd.concat(tables, ignore_index=True)
    if target is not None:
        table.to_csv(target / VALIDATION_CSV, index=False)
    return table
