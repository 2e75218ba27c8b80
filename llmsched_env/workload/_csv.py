"""Reading trace files and validating their columns, with errors that point at the bad cell.

Every error is a ``ValueError`` naming the file, the column, the row (0-based data row, header
excluded) and the value, so a malformed trace can be fixed without guessing. The checks every
format shares live here too: the path (:func:`existing_file`), compressed text
(:func:`text_lines`) and the span of the timestamps (:func:`check_time_span`).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from llmsched_env.workload.requests import MAX_ARRIVAL_S, MAX_TOKENS

__all__ = ["MAX_TOKENS"]  # re-exported: trace readers and predictors take it from here


class DataFileNotFoundError(FileNotFoundError, ValueError):
    """A trace or data file does not exist (both a ``FileNotFoundError`` and a ``ValueError``)."""


def existing_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a ``Path``, checked to name a trace file that exists.

    Raises:
        DataFileNotFoundError: If nothing exists at ``path``.
        ValueError: If ``path`` is empty (``Path("")`` would mean the working directory) or
            names something other than a file.
    """
    if not str(os.fspath(path)).strip():
        raise ValueError(f"a trace path must name a file, got the empty path {os.fspath(path)!r}")
    file = Path(path)
    if not file.exists():
        raise DataFileNotFoundError(f"trace file {str(file)!r} does not exist")
    if not file.is_file():
        raise ValueError(f"trace path {str(file)!r} is not a file")
    return file


@contextlib.contextmanager
def text_lines(file: Path, expected: str) -> Iterator[TextIO]:
    """Open a trace file as UTF-8 text, decompressing ``.gz``, ``.bz2``, ``.xz`` or ``.zip``.

    The compression is told by the file's extension, as pandas tells it for CSV files (a
    ``.zip`` must hold one file); a byte-order mark at the start is skipped. Reading a file that
    is not what its extension says, or not UTF-8 text, raises a ``ValueError`` naming the file
    and ending with ``expected`` (what the caller reads).
    """
    suffix = file.suffix.lower()
    archive = None
    try:
        if suffix in _OPENERS:
            handle = _OPENERS[suffix](file, "rt", encoding="utf-8-sig")
        elif suffix == ".zip":
            archive = zipfile.ZipFile(file)
            names = archive.namelist()
            if len(names) != 1:
                raise ValueError(
                    f"trace file {str(file)!r} is a zip archive of {len(names)} files; expected "
                    f"exactly one, {expected}"
                )
            handle = io.TextIOWrapper(archive.open(names[0]), encoding="utf-8-sig")
        else:
            handle = file.open(encoding="utf-8-sig")
        with handle:
            yield handle
    except UnicodeDecodeError:
        raise ValueError(
            f"trace file {str(file)!r} is not UTF-8 text (a binary or compressed file?); "
            f"expected {expected}"
        ) from None
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"trace file {str(file)!r} cannot be read as a {suffix} file ({error}); expected "
            f"{expected}"
        ) from None
    finally:
        if archive is not None:
            archive.close()


#: pandas' message for a row with more fields than the first: header's count, line, row's count.
_FIELD_COUNT_ERROR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")

#: Openers of compressed text by file extension (``.zip`` is handled on its own).
_OPENERS: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def read_table(path: str | os.PathLike[str], required: Iterable[str]) -> pd.DataFrame:
    """Read a CSV trace and check that it has rows and the ``required`` columns."""
    file = existing_file(path)
    required = tuple(required)
    expected = f"a comma-separated text file with a header line naming the columns {list(required)}"
    with text_lines(file, expected) as handle:  # not text, or not what its name says
        handle.read(2**16)
    try:
        with warnings.catch_warnings():
            # Rows with more fields than the header: pandas would drop the extra fields with
            # this warning (index_col=False) or, without index_col=False, shift every column
            # onto the one to its left. A trailing comma on every row is read as no field.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(file, index_col=False)
    except pd.errors.EmptyDataError:
        size = file.stat().st_size
        what = "is empty (0 bytes)" if size == 0 else f"holds only whitespace ({size} bytes)"
        raise ValueError(
            f"trace file {str(file)!r} {what} and no rows; expected {expected}, then rows"
        ) from None
    except pd.errors.ParserWarning:
        raise ValueError(
            f"trace file {str(file)!r}: its rows have more fields than its header has column "
            f"names; expected {expected}, and as many fields in every row"
        ) from None
    except pd.errors.ParserError as error:
        fields = _FIELD_COUNT_ERROR.search(str(error))
        if fields is None:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(
                f"trace file {str(file)!r} could not be read as CSV ({reason}); is it a binary "
                f"or compressed file? expected {expected}"
            ) from None
        header, line, found = fields.groups()
        raise ValueError(
            f"trace file {str(file)!r}, line {line}: {found} fields, but the header names "
            f"{header} columns; expected {expected}, and as many fields in every row"
        ) from None
    except (UnicodeDecodeError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"trace file {str(file)!r} could not be read as CSV ({reason}); is it a binary or "
            f"compressed file? expected {expected}"
        ) from None
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"trace file {str(file)!r} cannot be read as a {file.suffix.lower()} file "
            f"({error}); expected {expected}"
        ) from None
    frame.columns = [str(column).strip() for column in frame.columns]
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(
            f"trace file {str(file)!r} is missing columns {missing}; it has {list(frame.columns)}"
        )
    # pandas renames a repeated column "X" to "X.1"; a name repeated with other spaces around
    # it is only repeated once stripped. Which of them is meant cannot be told.
    names = list(frame.columns)
    repeated = [column for column in required if f"{column}.1" in names or names.count(column) > 1]
    if repeated:
        raise ValueError(
            f"trace file {str(file)!r} names the column {repeated[0]!r} more than once; "
            f"expected {expected}, each once"
        )
    if len(frame) == 0:
        raise ValueError(f"trace file {str(file)!r} has a header but no rows")
    return frame


def bad_row(file: Path, column: str, index: int, value: object, expected: str) -> ValueError:
    """Build the error for one bad cell: file, column, row, the value and what was expected.

    Rows count from 0 after the header (pandas' index), which the message says: a file's line
    numbers would count the header and blank lines too.
    """
    if isinstance(value, np.generic):
        value = value.item()
    return ValueError(
        f"trace file {str(file)!r}, column {column!r}, row {index}: got {value!r}, "
        f"expected {expected} (rows count from 0 after the header line)"
    )


def numeric_column(frame: pd.DataFrame, column: str, file: Path, expected: str) -> np.ndarray:
    """Return ``column`` as float64, refusing missing and non-numeric cells."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        index = int(np.argmax(bad))
        raise bad_row(file, column, index, raw.iloc[index], expected)
    return values


def check_time_span(seconds: np.ndarray, file: Path, column: str, raw: Sequence[Any]) -> None:
    """Refuse timestamps that span more than ``MAX_ARRIVAL_S`` (one far from the others).

    ``seconds`` are the rows' times in seconds on any clock, ``raw`` their values as the file
    gives them (for the message). A trace whose arrivals span more than about 317 years holds a
    typo, and its event times would lose their resolution.
    """
    outlier = span_outlier(seconds)
    if outlier is not None:
        first, last = outlier
        raise bad_row(
            file,
            column,
            last,
            raw[last],
            f"a time within {MAX_ARRIVAL_S:.0e} s (about 317 years) of the earliest, row "
            f"{first}'s {raw[first]!r}",
        )


def span_outlier(seconds: np.ndarray) -> tuple[int, int] | None:
    """The rows of the earliest and latest times if they are more than ``MAX_ARRIVAL_S`` apart."""
    if seconds.shape[0] == 0:
        return None
    first, last = int(np.argmin(seconds)), int(np.argmax(seconds))
    if seconds[last] - seconds[first] > MAX_ARRIVAL_S:
        return first, last
    return None


def token_column(
    frame: pd.DataFrame, column: str, file: Path, minimum: int, zero_hint: str = ""
) -> np.ndarray:
    """Return ``column`` as int64 token counts, each a whole number in ``[minimum, MAX_TOKENS]``.

    ``zero_hint`` is appended to the message when the offending value is 0.
    """
    expected = f"a whole number of tokens in [{minimum}, {MAX_TOKENS}]"
    values = numeric_column(frame, column, file, expected)
    bad = (values != np.floor(values)) | (values < minimum) | (values > MAX_TOKENS)
    if bad.any():
        index = int(np.argmax(bad))
        message = expected + (zero_hint if values[index] == 0 else "")
        raise bad_row(file, column, index, frame[column].iloc[index], message)
    return values.astype(np.int64)
