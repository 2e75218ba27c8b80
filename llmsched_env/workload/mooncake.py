"""Loader for Mooncake request traces (JSON lines with prefix block ids).

The Mooncake traces (Qin et al., "Mooncake: A KVCache-centric Disaggregated Architecture for LLM
Serving", FAST 2025; kvcache-ai/Mooncake, ``FAST25-release/traces``, Apache-2.0) hold one JSON
object per line::

    {"timestamp": 27, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, ..., 2353]}

``timestamp`` is the arrival in milliseconds, ``input_length`` and ``output_length`` the prompt and
output lengths in tokens, and ``hash_ids`` one id per 512-token block of the prompt, the last one
for the partial block if the prompt is not a multiple of 512 tokens. Equal ids at the same position
mean equal prompt blocks, and the trace's ids are given out so that equal ids also mean equal
prefixes up to that block (both shipped traces satisfy this).

How the ids become :attr:`Workload.prefix_block_hashes` (``prefix_block_tokens = 512``):

* Only full blocks are kept: ``input_length // 512`` ids (a partial last block is not shareable,
  as in vLLM, where only full blocks get a hash). A prompt shorter than 512 tokens has none.
* The ids are chained: hash ``j`` is a 64-bit BLAKE2b digest of hash ``j - 1`` and id ``j``
  (as :mod:`llmsched_env.workload.prefix_hashes` chains token blocks), so equal hashes mean
  equal ids in every block up to ``j``, whatever a file's id scheme. For the shipped traces this
  changes no sharing.
* The simulator's KV blocks need not be 512 tokens: with ``kv_block_tokens = B`` dividing 512,
  each hashed block covers ``512 / B`` KV blocks, keyed by the block's hash and the KV block's
  position in it (``IterationServer``), so a hit on one 512-token block reuses ``512 / B`` KV
  blocks.

The other policies follow :mod:`llmsched_env.workload.traces`: a ``ValueError`` names the file,
the line (1-based, as editors number them), the field and the value; rows out of timestamp order
are sorted stably with a ``UserWarning``; ``start_s``, ``start`` and ``count`` window the trace;
predictions are the true lengths unless a ``predictor`` is given. Blank lines are skipped (they
hold no request).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from llmsched_env.workload._checks import check_int
from llmsched_env.workload._csv import MAX_TOKENS, existing_file, span_outlier, text_lines
from llmsched_env.workload.predictors import OutputLengthPredictor
from llmsched_env.workload.requests import MAX_ARRIVAL_S, Workload
from llmsched_env.workload.traces import _sort_order, _window_and_build

#: The shipped Mooncake conversation trace (12,031 requests over one hour).
MOONCAKE_CONVERSATION_TRACE = "mooncake/conversation_trace.jsonl"
#: The shipped Mooncake synthetic trace (3,993 requests built from public datasets).
MOONCAKE_SYNTHETIC_TRACE = "mooncake/synthetic_trace.jsonl"
#: Tokens per ``hash_ids`` block in the Mooncake traces.
MOONCAKE_BLOCK_TOKENS = 512
#: The keys every line of a Mooncake trace holds.
MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _line_error(file: Path, line: int, field: str, value: Any, expected: str) -> ValueError:
    """The error for one bad field: file, line, field, value and what was expected."""
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return ValueError(
        f"trace file {str(file)!r}, line {line}, field {field!r}: got {shown}, expected {expected}"
    )


def _tokens(file: Path, line: int, record: dict[str, Any], field: str) -> int:
    """A whole token count in ``[1, MAX_TOKENS]`` (an integral float such as 12.0 is accepted)."""
    value = record[field]
    expected = f"a whole number of tokens in [1, {MAX_TOKENS}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _line_error(file, line, field, value, expected)
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise _line_error(file, line, field, value, expected)
    if not 1 <= value <= MAX_TOKENS:
        raise _line_error(file, line, field, value, expected)
    return int(value)


def _chain(ids: list[int]) -> np.ndarray:
    """Chain block ids into prefix hashes: hash ``j`` digests hash ``j - 1`` and id ``j``."""
    out = np.empty(len(ids), dtype=np.int64)
    parent = bytes(8)
    for j, block_id in enumerate(ids):
        data = parent + block_id.to_bytes(8, "little", signed=True)
        parent = hashlib.blake2b(data, digest_size=8).digest()
        out[j] = int.from_bytes(parent, "little", signed=True)
    out.flags.writeable = False
    return out


def _parse_line(
    file: Path, line: int, text: str, block_tokens: int
) -> tuple[float, int, int, np.ndarray]:
    """One line's arrival (ms), prompt and output lengths and chained full-block hashes."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"trace file {str(file)!r}, line {line}: not valid JSON ({error.msg} at column "
            f"{error.colno}); expected one object with the keys {list(MOONCAKE_FIELDS)}"
        ) from None
    except RecursionError:
        raise ValueError(
            f"trace file {str(file)!r}, line {line}: JSON nested too deeply to read; expected "
            f"one object with the keys {list(MOONCAKE_FIELDS)}"
        ) from None
    if not isinstance(record, dict):
        raise ValueError(
            f"trace file {str(file)!r}, line {line}: got a JSON {type(record).__name__}, expected "
            f"an object with the keys {list(MOONCAKE_FIELDS)}"
        )
    missing = [key for key in MOONCAKE_FIELDS if key not in record]
    if missing:
        raise ValueError(
            f"trace file {str(file)!r}, line {line}: missing keys {missing}; it has "
            f"{sorted(record)}, expected {list(MOONCAKE_FIELDS)}"
        )
    stamp = record["timestamp"]
    expected = "a finite number of milliseconds >= 0"
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
        raise _line_error(file, line, "timestamp", stamp, expected)
    try:
        milliseconds = float(stamp)
    except OverflowError:  # an integer too large for a float
        raise _line_error(file, line, "timestamp", stamp, expected) from None
    if not math.isfinite(milliseconds) or milliseconds < 0:
        raise _line_error(file, line, "timestamp", stamp, expected)
    prompt = _tokens(file, line, record, "input_length")
    output = _tokens(file, line, record, "output_length")
    ids = record["hash_ids"]
    if not isinstance(ids, list):
        raise _line_error(file, line, "hash_ids", ids, "a list of integer block ids")
    for block_id in ids:
        if isinstance(block_id, bool) or not isinstance(block_id, int):
            raise _line_error(file, line, "hash_ids", block_id, "an integer block id")
        if not _INT64_MIN <= block_id <= _INT64_MAX:
            raise _line_error(file, line, "hash_ids", block_id, "a block id that fits in int64")
    # One id per block: the full blocks' ids, then the partial last block's (which may be left
    # out, since a partial block is never shared).
    least, most = prompt // block_tokens, -(-prompt // block_tokens)
    if not least <= len(ids) <= most:
        raise _line_error(
            file,
            line,
            "hash_ids",
            f"{len(ids)} ids",
            f"one id per {block_tokens}-token block of the prompt, between "
            f"floor(input_length / {block_tokens}) = {least} and "
            f"ceil(input_length / {block_tokens}) = {most} ids for input_length {prompt}",
        )
    return milliseconds, prompt, output, _chain(ids[: prompt // block_tokens])


def load_mooncake_trace(
    path: str | os.PathLike[str],
    *,
    block_tokens: int = MOONCAKE_BLOCK_TOKENS,
    start: int = 0,
    count: int | None = None,
    start_s: float | None = None,
    name: str | None = None,
    predictor: OutputLengthPredictor | None = None,
    rng: np.random.Generator | None = None,
) -> Workload:
    """Load a Mooncake trace: JSON lines with a timestamp, lengths and prompt block ids.

    See the module docstring for the format and how ``hash_ids`` become prefix block hashes.

    Args:
        path: The JSONL file.
        block_tokens: Tokens per ``hash_ids`` block (512 in the Mooncake traces).
        start: Skip this many rows (after ``start_s``).
        count: Keep at most this many rows (``None``: all).
        start_s: Drop rows earlier than this many seconds after the earliest timestamp.
        name: Workload name (``None``: the file name without extension).
        predictor: Output-length predictor (``None``: the true lengths).
        rng: Generator for the predictor; required when ``predictor`` is given.

    Returns:
        The requests, arrivals in seconds since the first row kept, with
        ``prefix_block_hashes`` and ``prefix_block_tokens = block_tokens``.

    Raises:
        DataFileNotFoundError: If the file does not exist.
        ValueError: For an empty or malformed file (naming the line and field), or a window
            outside the trace.

    Example:
        >>> from llmsched_env.workload import shipped_data_path
        >>> trace = load_mooncake_trace(shipped_data_path(MOONCAKE_SYNTHETIC_TRACE), count=3)
        >>> len(trace), trace.prefix_block_tokens, len(trace.prefix_block_hashes[0])
        (3, 512, 78)
    """
    block_tokens = check_int("block_tokens", block_tokens, minimum=1)
    file = existing_file(path)
    stamps: list[float] = []
    lines: list[int] = []
    prompts: list[int] = []
    outputs: list[int] = []
    chains: list[np.ndarray] = []
    expected = f"one JSON object a line with the keys {list(MOONCAKE_FIELDS)}"
    with text_lines(file, expected) as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            stamp, prompt, output, chain = _parse_line(file, line, text, block_tokens)
            stamps.append(stamp)
            lines.append(line)
            prompts.append(prompt)
            outputs.append(output)
            chains.append(chain)
    if not stamps:
        raise ValueError(
            f"trace file {str(file)!r} holds no requests (it is empty or blank); expected one "
            f"JSON object a line with the keys {list(MOONCAKE_FIELDS)}"
        )
    seconds = np.asarray(stamps, dtype=np.float64) / 1000.0
    outlier = span_outlier(seconds)
    if outlier is not None:
        first, last = outlier
        expected = (
            f"milliseconds within {MAX_ARRIVAL_S * 1000:.0e} (about 317 years) of the earliest, "
            f"line {lines[first]}'s {stamps[first]:g}"
        )
        raise _line_error(file, lines[last], "timestamp", stamps[last], expected)
    seconds -= seconds.min()
    order = _sort_order(seconds, file)
    return _window_and_build(
        seconds[order],
        np.asarray(prompts, dtype=np.int64)[order],
        np.asarray(outputs, dtype=np.int64)[order],
        start=start,
        count=count,
        start_s=start_s,
        name=file.stem if name is None else name,
        predictor=predictor,
        rng=rng,
        prefix_block_hashes=[chains[row] for row in order],
        prefix_block_tokens=block_tokens,
    )
