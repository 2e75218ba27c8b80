"""Loaders for real request traces and access to the data files shipped with the package.

Two trace schemas are supported:

* Azure LLM inference trace 2023 (``TIMESTAMP,ContextTokens,GeneratedTokens``), of which the
  conversation trace ships with the package (:data:`AZURE_CONV_TRACE`).
* BurstGPT (``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``), not shipped
  (see ``data/README.md``).

Both loaders return a :class:`~llmsched_env.workload.requests.Workload` whose arrivals are seconds
since the first request kept, and share these policies:

* Bad input is a ``ValueError`` naming the file, column, row (0-based data row, header excluded)
  and value: a missing or empty file, a header without rows, missing columns, missing,
  non-numeric, fractional or negative token counts, unreadable timestamps.
* Rows out of timestamp order are sorted stably (ties keep file order) with a ``UserWarning``
  that says how many rows had a timestamp earlier than the row before them.
* Zero token counts: the shipped Azure conversation trace has none (context tokens >= 2,
  generated tokens >= 7), so :func:`load_azure_trace` refuses a zero as a sign of a different or
  damaged file. In BurstGPT a zero response marks a failed request (the dataset's own
  definition); :func:`load_burstgpt_trace` drops those rows or keeps them as prefill-only
  requests, and drops rows with zero request tokens (no prompt to serve) with a warning.
* Windowing: ``start_s`` drops rows before that time on the trace's clock, then ``start`` skips
  that many of the remaining rows, then ``count`` keeps at most that many.
* Predicted output lengths are the true ones unless a ``predictor`` (and an ``rng``) is given.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

from llmsched_env.registry import unknown_name_error
from llmsched_env.workload._checks import check_float, check_int, check_rng
from llmsched_env.workload._csv import (
    DataFileNotFoundError,
    bad_row,
    check_time_span,
    existing_file,
    numeric_column,
    read_table,
    token_column,
)
from llmsched_env.workload.predictors import OutputLengthPredictor
from llmsched_env.workload.requests import Workload

#: The Azure LLM inference trace 2023, conversation service (19,366 requests, about one hour).
AZURE_CONV_TRACE = "AzureLLMInferenceTrace_conv.csv"
#: The batch-latency grid of the reference request-level simulator (see ``data/README.md``).
QWEN_LATENCY_GRID = "qwen3_1_7b_latency_grid.csv"

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = (
    "Timestamp",
    "Model",
    "Request tokens",
    "Response tokens",
    "Total tokens",
    "Log Type",
)


_AZURE_ZERO_HINT = (
    " (the Azure conversation trace has no zero counts, so a zero suggests a different or "
    "damaged file)"
)


def shipped_data_path(filename: str) -> Path:
    """Return the path of a data file shipped in the package ``llmsched_env.data``.

    Args:
        filename: A file name such as :data:`AZURE_CONV_TRACE` or :data:`QWEN_LATENCY_GRID`.

    Returns:
        The file's path on disk.

    Raises:
        DataFileNotFoundError: If no such file is shipped; the message lists the files that are.

    Example:
        >>> shipped_data_path(AZURE_CONV_TRACE).name
        'AzureLLMInferenceTrace_conv.csv'
    """
    root = files("llmsched_env.data")
    resource = root / filename
    if not resource.is_file():
        available = sorted(
            item.name for item in root.iterdir() if item.name.endswith((".csv", ".md"))
        )
        raise DataFileNotFoundError(
            f"filename {filename!r} is not a shipped data file; expected one of {available}"
        )
    return Path(str(resource))


def _sort_order(seconds: np.ndarray, file: Path) -> np.ndarray:
    """Return the stable sort order of ``seconds``, warning if the rows were not sorted."""
    n_out_of_order = int(np.count_nonzero(np.diff(seconds) < 0))
    if n_out_of_order:
        warnings.warn(
            f"trace file {str(file)!r}: {n_out_of_order} rows have a timestamp earlier than the "
            "row before them; the rows were sorted stably by timestamp",
            UserWarning,
            stacklevel=3,
        )
    return np.argsort(seconds, kind="stable")


def _window_and_build(
    seconds: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    *,
    start: int,
    count: int | None,
    start_s: float | None,
    name: str,
    predictor: OutputLengthPredictor | None,
    rng: np.random.Generator | None,
    prefix_block_hashes: list[np.ndarray] | None = None,
    prefix_block_tokens: int = 16,
) -> Workload:
    """Apply ``start_s``, ``start`` and ``count`` to sorted rows, rebase, predict and build.

    ``prefix_block_hashes``, when given, holds one hash chain per sorted row and is windowed with
    the rows.
    """
    start = check_int("start", start, minimum=0)
    keep = np.ones(seconds.shape[0], dtype=bool)
    if start_s is not None:
        start_s = check_float("start_s", start_s)
        keep = seconds >= start_s
    rows = np.flatnonzero(keep)
    if rows.shape[0] == 0:
        raise ValueError(
            f"no rows at or after start_s={start_s} (the last row is at {seconds[-1]:.9g} s on "
            "the trace's clock)"
        )
    if start >= rows.shape[0]:
        raise ValueError(
            f"start must be < {rows.shape[0]} (rows left after filtering and start_s), got {start}"
        )
    stop = rows.shape[0] if count is None else start + check_int("count", count, minimum=1)
    rows = rows[start:stop]
    arrival_s = seconds[rows] - seconds[rows[0]]
    prompt, output = prompt_tokens[rows], output_tokens[rows]
    if predictor is None:
        predicted = output
    else:
        if not isinstance(predictor, OutputLengthPredictor):
            raise TypeError(f"predictor must have predict(), got {predictor!r}")
        if rng is None:
            raise ValueError("rng is required when a predictor is given, got rng=None")
        predicted = predictor.predict(prompt, output, check_rng(rng))
    hashes = None
    if prefix_block_hashes is not None:
        hashes = [prefix_block_hashes[row] for row in rows]
    return Workload(
        arrival_s,
        prompt,
        output,
        predicted,
        name=name,
        prefix_block_hashes=hashes,
        prefix_block_tokens=prefix_block_tokens,
    )


#: An ISO 8601 date (extended ``2023-11-16`` or basic ``20231116``), optionally with a time and
#: a UTC offset (``Z``, ``+HH``, ``+HHMM`` or ``+HH:MM``).
_ISO_TIMESTAMP = (
    r"\s*\d{4}-?\d{2}-?\d{2}(?:[T ]\d{2}:?\d{2}(?::?\d{2}(?:\.\d+)?)?"
    r"(?:\s*(?:Z|[+-]\d{2}(?::?\d{2})?))?)?\s*$"
)
#: A time followed by a UTC offset, at the end of a timestamp.
_UTC_OFFSET = r"[T ]\d{2}:?\d{2}(?::?\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)\s*$"


def load_azure_trace(
    path: str | os.PathLike[str],
    *,
    start: int = 0,
    count: int | None = None,
    start_s: float | None = None,
    name: str | None = None,
    predictor: OutputLengthPredictor | None = None,
    rng: np.random.Generator | None = None,
) -> Workload:
    """Load an Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``).

    ``TIMESTAMP`` is a date-time string such as ``2023-11-16 18:15:46.6805900`` (seven fractional
    digits, parsed at nanosecond resolution); ``ContextTokens`` is the prompt length and
    ``GeneratedTokens`` the output length. See the module docstring for the shared policies.

    Args:
        path: The CSV file.
        start: Skip this many rows (after ``start_s``).
        count: Keep at most this many rows (``None``: all).
        start_s: Drop rows earlier than this many seconds after the earliest timestamp.
        name: Workload name (``None``: the file name without extension).
        predictor: Output-length predictor (``None``: the true lengths).
        rng: Generator for the predictor; required when ``predictor`` is given.

    Returns:
        The requests, arrivals in seconds since the first row kept.

    Raises:
        DataFileNotFoundError: If the file does not exist.
        ValueError: For an empty or malformed file, or a window outside the trace.

    Example:
        >>> trace = load_azure_trace(shipped_data_path(AZURE_CONV_TRACE), count=100)
        >>> len(trace), float(trace.arrival_s[0])
        (100, 0.0)
    """
    file = existing_file(path)
    frame = read_table(file, AZURE_COLUMNS)
    raw = frame["TIMESTAMP"]
    if pd.api.types.is_numeric_dtype(raw):
        raise ValueError(
            f"trace file {str(file)!r}: column 'TIMESTAMP' holds numbers (dtype {raw.dtype}); "
            "expected date-time strings like '2023-11-16 18:15:46.6805900'"
        )
    # Only ISO 8601 date-times: pandas would also read "now", "today" and "18:1" (a time cut
    # short) without a word.
    text = raw.astype(str)
    malformed = ~text.str.match(_ISO_TIMESTAMP).to_numpy(dtype=bool)
    if malformed.any():
        index = int(np.argmax(malformed))
        expected = "an ISO 8601 date-time like '2023-11-16 18:15:46.6805900' (UTC offset optional)"
        raise bad_row(file, "TIMESTAMP", index, raw.iloc[index], expected)
    # Timestamps with UTC offsets are compared in UTC (an offset may change mid-trace, at a
    # daylight-saving change); those without one are taken as UTC too.
    utc = bool(text.str.contains(_UTC_OFFSET).any())
    try:
        stamps = pd.to_datetime(raw, format="ISO8601", errors="coerce", utc=utc)
    except (ValueError, TypeError) as error:
        raise ValueError(f"trace file {str(file)!r}: cannot parse TIMESTAMP ({error})") from None
    missing = stamps.isna().to_numpy()
    if missing.any():
        index = int(np.argmax(missing))
        expected = "a timestamp like '2023-11-16 18:15:46.6805900'"
        raise bad_row(file, "TIMESTAMP", index, raw.iloc[index], expected)
    # Seconds since 1970 as floats, for the span check (in the unit pandas parsed them in).
    per_second = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[stamps.dt.unit]
    ticks = stamps.array.asi8
    check_time_span(ticks / per_second, file, "TIMESTAMP", raw.tolist())
    # Seconds since the first request: a whole number of ticks divided once, so each time is
    # the correctly rounded value whatever unit this pandas parses in (pandas 3 reads
    # '...46.6805900' in microseconds, pandas 2 in nanoseconds, and its total_seconds()
    # rounds the two differently). The ticks are subtracted as unsigned integers: a span the
    # check above allows (up to about 317 years) can exceed int64's nanoseconds (292 years).
    unsigned = ticks.view(np.uint64)
    seconds = (unsigned - unsigned[int(np.argmin(ticks))]) / per_second
    prompt = token_column(frame, "ContextTokens", file, 1, _AZURE_ZERO_HINT)
    output = token_column(frame, "GeneratedTokens", file, 1, _AZURE_ZERO_HINT)
    order = _sort_order(seconds, file)
    return _window_and_build(
        seconds[order],
        prompt[order],
        output[order],
        start=start,
        count=count,
        start_s=start_s,
        name=file.stem if name is None else name,
        predictor=predictor,
        rng=rng,
    )


def _select(
    frame: pd.DataFrame, column: str, wanted: str | Iterable[str] | None, file: Path
) -> np.ndarray:
    """Boolean mask of rows whose ``column`` is in ``wanted``; unknown values are an error."""
    if wanted is None:
        return np.ones(len(frame), dtype=bool)
    wanted_list = [wanted] if isinstance(wanted, str) else list(wanted)
    if isinstance(wanted, bytes) or not all(isinstance(value, str) for value in wanted_list):
        raise TypeError(
            f"the {column!r} values to keep must be a str or a sequence of str, got {wanted!r}"
        )
    values = frame[column].astype(str)
    present = sorted(values.unique().tolist())
    for value in wanted_list:
        if value not in present:
            error = unknown_name_error(f"{column!r} value in {str(file)!r}", value, present)
            raise error
    return values.isin(wanted_list).to_numpy()


def load_burstgpt_trace(
    path: str | os.PathLike[str],
    *,
    models: str | Iterable[str] | None = None,
    log_types: str | Iterable[str] | None = None,
    drop_failed: bool = True,
    start: int = 0,
    count: int | None = None,
    start_s: float | None = None,
    name: str | None = None,
    predictor: OutputLengthPredictor | None = None,
    rng: np.random.Generator | None = None,
) -> Workload:
    """Load a BurstGPT trace (``Timestamp,Model,Request tokens,Response tokens,...,Log Type``).

    ``Timestamp`` is seconds from midnight of the trace's first day; ``Request tokens`` is the
    prompt length and ``Response tokens`` the output length. The columns ``Timestamp``,
    ``Request tokens`` and ``Response tokens`` are required; ``Model`` and ``Log Type`` only when
    filtering by them. ``Total tokens`` is not used.

    Order of operations: validate every row, sort by timestamp, filter by ``models`` and
    ``log_types``, handle failed requests (``Response tokens`` = 0) and drop rows with 0 request
    tokens (with a ``UserWarning`` giving how many), then window (see the module docstring).

    Args:
        path: The CSV file.
        models: Keep only these models (e.g. ``"ChatGPT"`` or ``["ChatGPT", "GPT-4"]``).
        log_types: Keep only these log types (``"Conversation log"``, ``"API log"``).
        drop_failed: Drop failed requests. If ``False`` they are kept as prefill-only requests
            (``output_tokens = 1``): they still arrived and occupied a prefill.
        start: Skip this many of the rows left after filtering and ``start_s``.
        count: Keep at most this many rows (``None``: all).
        start_s: Drop rows whose ``Timestamp`` is below this value (the trace's own clock).
        name: Workload name (``None``: the file name without extension).
        predictor: Output-length predictor (``None``: the true lengths).
        rng: Generator for the predictor; required when ``predictor`` is given.

    Returns:
        The requests, arrivals in seconds since the first row kept.

    Raises:
        DataFileNotFoundError: If the file does not exist.
        ValueError: For an empty or malformed file, a filter value absent from the file (the
            message lists the values present), no rows left, or a window outside the trace.
    """
    file = existing_file(path)
    required = ["Timestamp", "Request tokens", "Response tokens"]
    required += ["Model"] if models is not None else []
    required += ["Log Type"] if log_types is not None else []
    frame = read_table(file, required)
    seconds = numeric_column(frame, "Timestamp", file, "a finite number of seconds")
    negative = seconds < 0
    if negative.any():
        index = int(np.argmax(negative))
        raw = frame["Timestamp"].iloc[index]
        raise bad_row(file, "Timestamp", index, raw, "seconds >= 0 (from the trace's start)")
    check_time_span(seconds, file, "Timestamp", frame["Timestamp"].tolist())
    prompt = token_column(frame, "Request tokens", file, minimum=0)
    output = token_column(frame, "Response tokens", file, minimum=0)
    order = _sort_order(seconds, file)
    frame = frame.iloc[order].reset_index(drop=True)
    seconds, prompt, output = seconds[order], prompt[order], output[order]

    if not isinstance(drop_failed, bool | np.bool_):
        raise TypeError(f"drop_failed must be True or False, got {drop_failed!r}")
    keep = _select(frame, "Model", models, file) & _select(frame, "Log Type", log_types, file)
    failed = keep & (output == 0)
    if drop_failed and failed.any():
        warnings.warn(
            f"trace file {str(file)!r}: dropped {int(failed.sum())} failed requests (0 response "
            "tokens; load_burstgpt_trace(..., drop_failed=False) keeps them as prefill-only "
            "requests)",
            UserWarning,
            stacklevel=2,
        )
        keep &= ~failed
    no_prompt = keep & (prompt == 0)
    if no_prompt.any():
        warnings.warn(
            f"trace file {str(file)!r}: dropped {int(no_prompt.sum())} rows with 0 request "
            "tokens (a request needs at least one prompt token)",
            UserWarning,
            stacklevel=2,
        )
        keep &= ~no_prompt
    if not keep.any():
        raise ValueError(
            f"trace file {str(file)!r}: no rows left after filtering (models={models!r}, "
            f"log_types={log_types!r}, drop_failed={drop_failed})"
        )
    return _window_and_build(
        seconds[keep],
        prompt[keep],
        np.maximum(output[keep], 1),
        start=start,
        count=count,
        start_s=start_s,
        name=file.stem if name is None else name,
        predictor=predictor,
        rng=rng,
    )
