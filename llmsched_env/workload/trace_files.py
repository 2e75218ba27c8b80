"""Any supported trace file as a workload: format detection, one loader, and trace sources.

Three formats are read (:data:`TRACE_FORMATS`):

* ``azure``: the Azure LLM inference trace CSV (``TIMESTAMP,ContextTokens,GeneratedTokens``);
* ``burstgpt``: the BurstGPT CSV (``Timestamp,Request tokens,Response tokens``, more optional);
* ``mooncake``: Mooncake JSON lines (``timestamp``, ``input_length``, ``output_length``,
  ``hash_ids``).

:func:`detect_trace_format` tells them apart by the header's columns or the first line's JSON
keys, not by the file name. :func:`load_trace` loads a file in any of them, and
:func:`trace_source` makes it a :class:`~llmsched_env.workload.sources.TraceSource` that an env
samples episodes from. An env takes a trace by a plain string, ``workload="trace:PATH"`` or
``workload="trace:FORMAT:PATH"`` (:func:`parse_trace_spec`), so its keyword arguments stay simple
values that can be stored, printed and sent to worker processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmsched_env.registry import resolve
from llmsched_env.workload._csv import existing_file, text_lines
from llmsched_env.workload.mooncake import MOONCAKE_FIELDS, load_mooncake_trace
from llmsched_env.workload.predictors import LogNormalNoisePredictor
from llmsched_env.workload.requests import Workload
from llmsched_env.workload.sources import TraceSource
from llmsched_env.workload.traces import AZURE_COLUMNS, load_azure_trace, load_burstgpt_trace

#: Format name -> loader (each takes the path and the windowing and predictor keywords).
TRACE_FORMATS: dict[str, Callable[..., Workload]] = {
    "azure": load_azure_trace,
    "burstgpt": load_burstgpt_trace,
    "mooncake": load_mooncake_trace,
}
#: Format name -> the columns (CSV) or keys (JSON lines) a file of that format needs.
TRACE_FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "azure": AZURE_COLUMNS,
    "burstgpt": ("Timestamp", "Request tokens", "Response tokens"),
    "mooncake": MOONCAKE_FIELDS,
}
#: Prefix of the ``workload`` strings that name a trace file.
TRACE_SPEC_PREFIX = "trace:"


def _formats_expected() -> str:
    """The formats and what each needs, for error messages."""
    return "; ".join(
        f"{name}: {'JSON lines with keys' if name == 'mooncake' else 'CSV with columns'} "
        f"{list(fields)}"
        for name, fields in TRACE_FORMAT_FIELDS.items()
    )


#: The longest first line :func:`detect_trace_format` reads (a JSON line holds a whole request,
#: a prompt's text among its keys perhaps).
_FIRST_LINE_LIMIT = 64 * 2**20


def _first_line(file: Path) -> str:
    """The first non-blank line of ``file``, whole (decompressed by extension).

    Raises:
        ValueError: If the file is empty, or its first line is longer than 64 MiB.
    """
    with text_lines(file, f"one of these formats: {_formats_expected()}") as handle:
        for text in iter(lambda: handle.readline(_FIRST_LINE_LIMIT), ""):
            if len(text) == _FIRST_LINE_LIMIT and not text.endswith("\n"):
                raise ValueError(
                    f"trace file {str(file)!r}: its first line is longer than "
                    f"{_FIRST_LINE_LIMIT // 2**20} MiB, too long to tell its format; name the "
                    f"format (trace_format=..., --trace-format), one of {list(TRACE_FORMAT_FIELDS)}"
                )
            if text.strip():
                return text.strip()
    raise ValueError(
        f"trace file {str(file)!r} is empty; expected one of these formats: {_formats_expected()}"
    )


def detect_trace_format(path: str | os.PathLike[str]) -> str:
    """Tell which trace format a file is in, from its header or its first line's JSON keys.

    Args:
        path: The trace file.

    Returns:
        ``"azure"``, ``"burstgpt"`` or ``"mooncake"``.

    Raises:
        DataFileNotFoundError: If the file does not exist.
        ValueError: If the file is empty, not text, or matches no format; the message lists the
            formats with the columns or keys each needs, and what the file has.

    Example:
        >>> from llmsched_env.workload import AZURE_CONV_TRACE, shipped_data_path
        >>> detect_trace_format(shipped_data_path(AZURE_CONV_TRACE))
        'azure'
    """
    file = existing_file(path)
    first = _first_line(file)
    if first.startswith("{"):
        try:
            record = json.loads(first)
        except (json.JSONDecodeError, RecursionError) as error:
            why = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deeply"
            raise ValueError(
                f"trace file {str(file)!r}: its first line starts like JSON but is not valid JSON "
                f"({why}); expected one of these formats: {_formats_expected()}"
            ) from None
        found = sorted(record) if isinstance(record, dict) else []
        what = f"JSON keys {_shown(found)}"
    else:
        found = [column.strip().strip('"').strip() for column in first.split(",")]
        what = f"columns {_shown(found)}"
    matches = [name for name, fields in TRACE_FORMAT_FIELDS.items() if set(fields) <= set(found)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(
            f"trace file {str(file)!r} has the columns of several trace formats {matches}: its "
            f"first line has {what}; name the format (trace_format=..., --trace-format)"
        )
    raise ValueError(
        f"trace file {str(file)!r} is in no known trace format: its first line has {what}; "
        f"expected one of these formats: {_formats_expected()}"
    )


def _shown(names: list[str]) -> str:
    """At most 12 column names or keys of at most 40 characters each, for a message."""
    shown = [name if len(name) <= 40 else name[:37] + "..." for name in names[:12]]
    more = f" and {len(names) - 12} more" if len(names) > 12 else ""
    return f"{shown}{more}"


def load_trace(
    path: str | os.PathLike[str], trace_format: str | None = None, **kwargs: Any
) -> Workload:
    """Load a trace file in any supported format.

    Args:
        path: The trace file.
        trace_format: ``"azure"``, ``"burstgpt"`` or ``"mooncake"``; ``None`` detects it
            (:func:`detect_trace_format`).
        **kwargs: Passed to the format's loader (``start``, ``count``, ``start_s``, ``name``,
            ``predictor``, ``rng``, and the format's own options).

    Returns:
        The requests (with prefix block hashes for Mooncake traces).

    Raises:
        ValueError: For an unknown format name (listing the formats), an undetectable format, a
            named format that the file's first line shows to be another, or a malformed file.
    """
    name = detect_trace_format(path) if trace_format is None else trace_format
    loader = resolve("trace format", name, TRACE_FORMATS)
    if trace_format is not None:
        _check_named_format(path, name)
    return loader(path, **kwargs)


def _check_named_format(path: str | os.PathLike[str], name: str) -> None:
    """Refuse a named format that the file's first line shows to be another one.

    Read as the named format, a file of another one failed on a symptom (a Mooncake JSON-lines
    file named ``azure`` was said to have rows wider than its header). A first line that fits
    no format, or several, is left to the named format's reader.
    """
    try:
        detected = detect_trace_format(path)
    except ValueError:
        return
    if detected != name:
        raise ValueError(
            f"trace file {str(path)!r} is in the {detected!r} format by its first line, but the "
            f"format named is {name!r}; name {detected!r} or leave the format out"
        )


@lru_cache(maxsize=4)
def _cached_trace(path: str, trace_format: str, mtime_ns: int, size: int) -> Workload:
    """A trace read once per process while the file is unchanged (workloads are read-only).

    ``trace_format`` is known good for the file (detected, or named and checked).
    """
    return TRACE_FORMATS[trace_format](path)


def trace_source(path: str | os.PathLike[str], trace_format: str | None = None) -> TraceSource:
    """A workload source whose episodes are windows of a trace file.

    As the ``azure-conv`` preset: the first 20% of the trace is calibration history, episodes
    are windows of the rest, replayed at the env's arrival rate (or load), and the scheduler sees
    output lengths through ``LogNormalNoisePredictor(sigma=0.5)``, the predictor the shipped
    agents were trained with. The file is read once per process (again if it changes).

    Args:
        path: The trace file.
        trace_format: The format, or ``None`` to detect it.

    Returns:
        The source, named after the file (without extension).

    Raises:
        ValueError: For a malformed file or a trace too short to split into history and
            episodes.
    """
    file = existing_file(path)
    name = detect_trace_format(file) if trace_format is None else trace_format
    resolve("trace format", name, TRACE_FORMATS)
    if trace_format is not None:
        _check_named_format(file, name)
    stat = file.stat()
    trace = _cached_trace(str(file.resolve()), name, stat.st_mtime_ns, stat.st_size)
    try:
        return TraceSource(file.stem, trace, LogNormalNoisePredictor(sigma=0.5))
    except ValueError as error:
        raise ValueError(f"trace file {str(file)!r}: {error}") from None


def parse_trace_spec(spec: str) -> tuple[str, str | None]:
    """Split a ``"trace:[FORMAT:]PATH"`` workload string into its path and format.

    Args:
        spec: ``"trace:PATH"`` (format detected) or ``"trace:FORMAT:PATH"``.

    Returns:
        ``(path, format or None)``.

    Raises:
        ValueError: If ``spec`` does not start with ``"trace:"`` or names no path.

    Example:
        >>> parse_trace_spec("trace:mooncake:runs/my.jsonl")
        ('runs/my.jsonl', 'mooncake')
        >>> parse_trace_spec("trace:runs/my.csv")
        ('runs/my.csv', None)
    """
    if not spec.startswith(TRACE_SPEC_PREFIX):
        raise ValueError(f"a trace workload must look like 'trace:[FORMAT:]PATH', got {spec!r}")
    rest = spec[len(TRACE_SPEC_PREFIX) :]
    head, sep, tail = rest.partition(":")
    if sep and head not in TRACE_FORMATS and head.lower() in TRACE_FORMATS:
        raise ValueError(
            f"trace workload {spec!r} names the format {head!r}; formats are written in lower "
            f"case, one of {list(TRACE_FORMATS)}: did you mean {head.lower()!r}?"
        )
    path, trace_format = (tail, head) if sep and head in TRACE_FORMATS else (rest, None)
    if not path:
        raise ValueError(f"trace workload {spec!r} names no file; expected 'trace:[FORMAT:]PATH'")
    return path, trace_format


def trace_spec(path: str | os.PathLike[str], trace_format: str | None = None) -> str:
    """The ``workload`` string of a trace file (inverse of :func:`parse_trace_spec`).

    Example:
        >>> trace_spec("my.csv", "azure")
        'trace:azure:my.csv'
        >>> trace_spec("azure:my.csv")  # a file whose name starts like a format
        'trace:./azure:my.csv'
    """
    path = os.fspath(path)
    if trace_format is not None:
        resolve("trace format", trace_format, TRACE_FORMATS)
        return f"{TRACE_SPEC_PREFIX}{trace_format}:{path}"
    head, sep, _ = path.partition(":")
    if sep and head.lower() in TRACE_FORMATS:  # a file named "azure:x.csv" is not a format
        path = os.path.join(os.curdir, path)
    return f"{TRACE_SPEC_PREFIX}{path}"
