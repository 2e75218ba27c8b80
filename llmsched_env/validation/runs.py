"""Load and check a recorded vLLM run: per-request times, time series, LLMServingSim's errors.

A run is a directory with four files, in the layout of LLMServingSim 2.0's ``vllm-bench`` runs
(casys-kaist/LLMServingSim, MIT; the four runs it published ship in ``data/vllm_bench/runs``):

* ``requests.jsonl``: one JSON object a line with ``request_id``, ``input_toks``,
  ``output_toks`` and the engine's monotonic timestamps ``queued_ts``, ``first_token_ts`` and
  ``last_token_ts`` in seconds (other fields are ignored);
* ``timeseries.csv``: the engine's state once a tick, columns ``t`` (s), ``running`` and
  ``waiting`` (requests; other columns are kept);
* ``meta.json``: a JSON object with the sampling tick ``tick_seconds``;
* ``llmservingsim_validation_summary.txt``: LLMServingSim's table of measured and simulated
  TTFT, TPOT and latency statistics and their difference in percent.

Every check names the file, the line (and column) and the bad value. The requests must also fit
in the time the time series covers, which catches timestamps in another unit than seconds.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmsched_env.registry import unknown_name_error
from llmsched_env.validation.latencies import METRICS

REQUESTS_FILE = "requests.jsonl"
TIMESERIES_FILE = "timeseries.csv"
META_FILE = "meta.json"
SUMMARY_FILE = "llmservingsim_validation_summary.txt"
RUN_FILES = (REQUESTS_FILE, TIMESERIES_FILE, META_FILE, SUMMARY_FILE)

#: Fields of ``requests.jsonl`` that are read; ``request_id`` is a string, the rest numbers.
REQUEST_FIELDS = (
    "request_id",
    "input_toks",
    "output_toks",
    "queued_ts",
    "first_token_ts",
    "last_token_ts",
)
_TOKEN_FIELDS = ("input_toks", "output_toks")
_TIME_FIELDS = ("queued_ts", "first_token_ts", "last_token_ts")

#: Columns of ``timeseries.csv`` that are read (all numbers >= 0).
TIMESERIES_COLUMNS = ("t", "running", "waiting")

#: Summary row labels -> (metric, stat) names used throughout this package.
_SUMMARY_METRICS = {"TTFT": "ttft", "TPOT": "tpot", "Latency": "e2e"}
_SUMMARY_STATS = {"Mean": "mean", "Median": "p50", "P90": "p90", "P95": "p95", "P99": "p99"}
_SUMMARY_ROW = re.compile(
    r"^(?P<metric>\w+)\s+(?P<stat>\w+)\s+(?P<measured>\S+)\s+(?P<simulated>\S+)\s+"
    r"(?P<error>[+-]?\d+(?:\.\d+)?)%$"
)
#: The summary rows a run must have: every metric's mean, p50, p90 and p99.
_REQUIRED_SUMMARY_STATS = ("mean", "p50", "p90", "p99")
#: How much longer than the time series' range the requests may span, besides two ticks (the
#: shipped runs' requests span within 0.7 s of that range).
_SPAN_SLACK = 1.1

#: Where the shipped runs live inside the package ``llmsched_env.data``.
_SHIPPED_RUNS = ("vllm_bench", "runs")


class RunDataError(ValueError):
    """A run's files are missing or hold values that are not what a vLLM run records."""


@dataclass(frozen=True, eq=False)
class VllmRun:
    """One recorded vLLM serving run, checked.

    Attributes:
        name: The run's directory name (for example ``"RTX4090-Llama-3.1-8B"``).
        path: The run's directory.
        requests: One row per request in file order, columns :data:`REQUEST_FIELDS`
            (``request_id`` as str, token counts as int64, timestamps as float64 seconds).
        timeseries: The engine's state once a tick: ``t`` (s since the run started), ``running``,
            ``waiting`` and any other columns of the file.
        tick_s: The sampling period of ``timeseries`` (``meta.json``'s ``tick_seconds``).
        meta: The parsed ``meta.json``.
        llmservingsim: LLMServingSim's published comparison, one row per (metric, stat), columns
            ``metric`` (ttft, tpot, e2e), ``stat`` (mean, p50, p90, p95, p99), ``measured_ms``,
            ``simulated_ms`` and ``error_pct``.
        file_rows: For a subset made by :meth:`head`, the line index (0-based) in the run's
            ``requests.jsonl`` of each of its requests; ``None`` for the whole run.
    """

    name: str
    path: Path
    requests: pd.DataFrame
    timeseries: pd.DataFrame
    tick_s: float
    meta: dict[str, Any]
    llmservingsim: pd.DataFrame
    file_rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.requests)

    def head(self, n_requests: int) -> VllmRun:
        """The same run reduced to its first ``n_requests`` requests by ``queued_ts``.

        For quick replays (tests, smoke runs): the measured statistics are then those of the
        subset. The time series and LLMServingSim's numbers stay those of the whole run.

        Raises:
            ValueError: If ``n_requests`` is below 1.
        """
        if isinstance(n_requests, bool) or not isinstance(n_requests, int) or n_requests < 1:
            raise ValueError(f"n_requests must be an integer >= 1, got {n_requests!r}")
        order = np.argsort(self.requests["queued_ts"].to_numpy(), kind="stable")[:n_requests]
        kept = np.sort(order)
        subset = self.requests.iloc[kept].reset_index(drop=True)
        rows = self.file_rows[kept] if self.file_rows is not None else kept
        return VllmRun(
            self.name,
            self.path,
            subset,
            self.timeseries,
            self.tick_s,
            self.meta,
            self.llmservingsim,
            rows,
        )

    def published_error_pct(self, metric: str, stat: str) -> float:
        """LLMServingSim's published error of one statistic, in percent (nan if not published)."""
        rows = self.llmservingsim
        match = rows[(rows["metric"] == metric) & (rows["stat"] == stat)]
        return float(match["error_pct"].iloc[0]) if len(match) else math.nan


def shipped_runs_dir() -> Path:
    """The directory of the runs shipped in the package (``data/vllm_bench/runs``)."""
    return Path(str(files("llmsched_env.data").joinpath(*_SHIPPED_RUNS)))


def shipped_run_names() -> list[str]:
    """Names of the shipped runs, sorted.

    Example:
        >>> shipped_run_names()[0]
        'RTX4090-Llama-3.1-8B'
    """
    root = shipped_runs_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def load_run(path_or_name: str | Path) -> VllmRun:
    """Read and check a run: a shipped run's name or a run directory.

    Args:
        path_or_name: A name from :func:`shipped_run_names`, or a directory with the files
            :data:`RUN_FILES`.

    Returns:
        The checked run.

    Raises:
        ValueError: If the name is neither a shipped run nor a directory (the message lists the
            shipped runs and suggests the closest).
        RunDataError: If a file is missing or holds a bad value (the message names the file, the
            line or column, and the value).

    Example:
        >>> run = load_run("RTX4090-Llama-3.1-8B")
        >>> len(run), run.tick_s
        (300, 1.0)
    """
    names = shipped_run_names()
    if isinstance(path_or_name, str) and path_or_name in names:
        path = shipped_runs_dir() / path_or_name
    else:
        path = Path(path_or_name)
        if path.exists() and not path.is_dir():
            raise RunDataError(f"run {str(path)!r} is a file; expected a run directory")
        if not path.is_dir():
            error = unknown_name_error("vLLM run", str(path_or_name), names)
            raise ValueError(f"{error} (or the path of a run directory)")
    missing = [f for f in RUN_FILES if not (path / f).is_file()]
    if missing:
        raise RunDataError(f"run directory {str(path)!r} lacks {missing}; a run needs {RUN_FILES}")
    meta = read_meta(path / META_FILE)
    requests = read_requests(path / REQUESTS_FILE)
    timeseries = read_timeseries(path / TIMESERIES_FILE)
    tick_s = float(meta["tick_seconds"])
    check_requests_span(path, requests, timeseries, tick_s)
    return VllmRun(
        name=path.name,
        path=path,
        requests=requests,
        timeseries=timeseries,
        tick_s=tick_s,
        meta=meta,
        llmservingsim=read_llmservingsim_summary(path / SUMMARY_FILE),
    )


def check_requests_span(
    path: Path, requests: pd.DataFrame, timeseries: pd.DataFrame, tick_s: float
) -> None:
    """Check that the requests' timestamps fit in the time the run's time series covers.

    Both come from the same run, so requests spanning more than the time series' ``t`` range
    (plus two ticks and 10%) have timestamps in another unit than seconds (milliseconds or
    nanoseconds make the span 1,000 or 10**9 times too long).

    Raises:
        RunDataError: Naming both spans and both files.
    """
    span = float(requests["last_token_ts"].max() - requests["queued_ts"].min())
    t = timeseries["t"]
    covered = float(t.max() - t.min())
    if span > covered * _SPAN_SLACK + 2 * tick_s:
        raise RunDataError(
            f"{path / REQUESTS_FILE}: the requests span {span:,.6g} s (first queued_ts to last "
            f"last_token_ts), but {TIMESERIES_FILE} of the same run covers {covered:,.6g} s; "
            "timestamps must be in seconds"
        )


def read_requests(path: Path) -> pd.DataFrame:
    """Read and check ``requests.jsonl`` (see :class:`VllmRun` for the columns).

    Checks, naming the line and field: every line is a JSON object with the fields
    :data:`REQUEST_FIELDS`; ``request_id`` is a non-empty string, unique; token counts are whole
    numbers >= 1; timestamps are finite numbers >= 0 with ``queued_ts <= first_token_ts <=
    last_token_ts``. Blank lines are skipped.

    Raises:
        RunDataError: On the first bad line or value.
    """
    rows: list[tuple[Any, ...]] = []
    lines: list[int] = []
    first_line_of: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                raise RunDataError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise RunDataError(f"{where}: expected a JSON object, got {text.strip()[:60]!r}")
            missing = [f for f in REQUEST_FIELDS if f not in record]
            if missing:
                raise RunDataError(f"{where}: missing field(s) {missing}")
            rid = record["request_id"]
            if not isinstance(rid, str) or not rid:
                raise RunDataError(f"{where}: request_id must be a non-empty string, got {rid!r}")
            if rid in first_line_of:
                raise RunDataError(
                    f"{where}: duplicate request_id {rid!r} (first on line {first_line_of[rid]})"
                )
            first_line_of[rid] = number
            for field in _TOKEN_FIELDS:
                _check_tokens(where, field, record[field])
            for field in _TIME_FIELDS:
                _check_time(where, field, record[field])
            queued, first, last = (record[f] for f in _TIME_FIELDS)
            if first < queued:
                raise RunDataError(
                    f"{where}: first_token_ts = {first!r} is before queued_ts = {queued!r}"
                )
            if last < first:
                raise RunDataError(
                    f"{where}: last_token_ts = {last!r} is before first_token_ts = {first!r}"
                )
            rows.append(tuple(record[f] for f in REQUEST_FIELDS))
            lines.append(number)
    if not rows:
        raise RunDataError(f"{path}: no requests (the file is empty)")
    frame = pd.DataFrame(rows, columns=list(REQUEST_FIELDS))
    frame = frame.astype({"request_id": str, **dict.fromkeys(_TOKEN_FIELDS, np.int64)})
    return frame.astype(dict.fromkeys(_TIME_FIELDS, np.float64))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_tokens(where: str, field: str, value: Any) -> None:
    if not _is_number(value) or not math.isfinite(value) or value != int(value):
        raise RunDataError(f"{where}: {field} must be a whole number of tokens, got {value!r}")
    if value < 1:
        raise RunDataError(f"{where}: {field} must be >= 1 token, got {value!r}")


def _check_time(where: str, field: str, value: Any) -> None:
    if not _is_number(value) or not math.isfinite(value):
        raise RunDataError(f"{where}: {field} must be a finite number of seconds, got {value!r}")
    if value < 0:
        raise RunDataError(f"{where}: {field} must be >= 0 s, got {value!r}")


def read_timeseries(path: Path) -> pd.DataFrame:
    """Read and check ``timeseries.csv``: columns :data:`TIMESERIES_COLUMNS`, numbers >= 0.

    ``t`` must increase strictly. Other columns are kept as read.

    Raises:
        RunDataError: If a column is missing, or a value is missing, not a number or negative
            (the message names the line, the column and the value).
    """
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise RunDataError(f"{path}: empty file; expected columns {TIMESERIES_COLUMNS}") from None
    missing = [c for c in TIMESERIES_COLUMNS if c not in raw.columns]
    if missing:
        raise RunDataError(
            f"{path}: missing column(s) {missing}; found {list(raw.columns)}, "
            f"expected at least {list(TIMESERIES_COLUMNS)}"
        )
    if raw.empty:
        raise RunDataError(f"{path}: no rows")
    frame = raw.copy()
    for column in TIMESERIES_COLUMNS:
        values = pd.to_numeric(raw[column].str.strip(), errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            row = int(np.argmax(bad))
            raise RunDataError(
                f"{path}, line {row + 2}, column {column!r}: expected a number >= 0, "
                f"got {raw[column].iloc[row]!r}"
            )
        frame[column] = values
    t = frame["t"].to_numpy()
    steps = np.diff(t) <= 0
    if steps.any():
        row = int(np.argmax(steps)) + 1
        raise RunDataError(
            f"{path}, line {row + 2}, column 't': times must increase, got {float(t[row])!r} "
            f"after {float(t[row - 1])!r}"
        )
    return frame


def read_meta(path: Path) -> dict[str, Any]:
    """Read ``meta.json``: a JSON object whose ``tick_seconds`` is a positive number.

    Raises:
        RunDataError: If the file is not a JSON object or ``tick_seconds`` is missing or bad.
    """
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunDataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise RunDataError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    tick = meta.get("tick_seconds")
    if not _is_number(tick) or not math.isfinite(tick) or tick <= 0:
        raise RunDataError(f"{path}: tick_seconds must be a positive number, got {tick!r}")
    return meta


def read_llmservingsim_summary(path: Path) -> pd.DataFrame:
    """Parse LLMServingSim's ``llmservingsim_validation_summary.txt``.

    The file is a text table: a header line starting with ``Metric``, a line of dashes, then
    rows like ``TTFT Mean  65456.6  65820.2  +0.6%`` (metric TTFT, TPOT or Latency; stat Mean,
    Median, P90, P95 or P99; measured and simulated in ms; difference in percent). Blank lines
    are skipped. Latency is reported here as ``e2e`` and Median as ``p50``.

    Returns:
        Columns ``metric, stat, measured_ms, simulated_ms, error_pct``, in file order.

    Raises:
        RunDataError: For a line that is not such a row, an unknown metric or stat, a repeated
            row, or a missing mean, p50, p90 or p99 of a metric.
    """
    rows: list[tuple[str, str, float, float, float]] = []
    seen: set[tuple[str, str]] = set()
    for number, raw_line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("Metric") or set(line) == {"-"}:
            continue
        where = f"{path}, line {number}"
        match = _SUMMARY_ROW.match(line)
        if match is None:
            raise RunDataError(
                f"{where}: expected '<metric> <stat> <measured> <simulated> <diff>%', got {line!r}"
            )
        metric = _SUMMARY_METRICS.get(match["metric"])
        stat = _SUMMARY_STATS.get(match["stat"])
        if metric is None or stat is None:
            raise RunDataError(
                f"{where}: unknown row {match['metric']} {match['stat']}; expected a metric in "
                f"{list(_SUMMARY_METRICS)} and a stat in {list(_SUMMARY_STATS)}"
            )
        if (metric, stat) in seen:
            raise RunDataError(f"{where}: row {match['metric']} {match['stat']} appears twice")
        seen.add((metric, stat))
        values = []
        for column in ("measured", "simulated"):
            try:
                value = float(match[column])
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value < 0:
                raise RunDataError(
                    f"{where}: {column} value must be a number >= 0 (ms), got {match[column]!r}"
                )
            values.append(value)
        rows.append((metric, stat, values[0], values[1], float(match["error"])))
    missing = [(m, s) for m in METRICS for s in _REQUIRED_SUMMARY_STATS if (m, s) not in seen]
    if missing:
        raise RunDataError(f"{path}: missing rows for (metric, stat) {missing}")
    return pd.DataFrame(
        rows, columns=["metric", "stat", "measured_ms", "simulated_ms", "error_pct"]
    )
