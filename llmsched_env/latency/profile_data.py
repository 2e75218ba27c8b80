"""Per-layer GPU profiles of an LLM on one GPU: reading, checking and gridding the csv files.

The files are those written by the profiler of LLMServingSim 2.0 (casys-kaist/LLMServingSim, MIT),
which times each layer of a one-layer copy of the model inside vLLM (eager mode), in microseconds:

- ``attention.csv``: ``prefill_chunk, kv_prefill, n_decode, kv_decode, time_us``. One attention
  kernel call holding one prefill chunk of ``prefill_chunk`` new tokens whose sequence already had
  ``kv_prefill`` tokens in its KV cache (the chunk's own tokens are *not* included), plus
  ``n_decode`` decode sequences of ``kv_decode`` cached tokens each. Every axis is swept on a
  doubling grid (0, 16, 32, ... for chunks and KV; 0, 1, 2, 4, ... for decodes).
- ``dense.csv``: ``layer, tokens, time_us`` for each token-parameterised op (projections, norms,
  rotary embedding, activation, the embedding lookup and the final norm).
- ``per_sequence.csv``: ``layer, sequences, time_us`` for the ops that run once per sequence
  (``lm_head``, ``sampler``).
- ``moe.csv`` (mixture-of-experts models only): ``tokens, activated_experts, time_us`` for the whole
  sparse MoE block (router and grouped experts), ``activated_experts`` being the number of distinct
  experts the batch's tokens were routed to.

:func:`load_layer_profile` reads a folder of these files into :class:`LayerProfile`, whose arrays
the iteration model (:mod:`llmsched_env.latency.profiled`) interpolates. Folders are cached by
path, so building a model twice parses the files once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ATTENTION_AXES = ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode")
"""Columns of ``attention.csv`` that key a measurement, in the order of the 4-D array's axes."""


class ProfileDataError(ValueError):
    """A profile file is malformed; the message names the file, the column and the bad value."""


@dataclass(frozen=True, eq=False)
class LayerProfile:
    """The per-layer times of one model on one GPU, on regular grids, in microseconds.

    Attributes:
        directory: The folder the files were read from.
        attention_axes: The four grid axes of :attr:`attention_us` (``prefill_chunk``,
            ``kv_prefill``, ``n_decode``, ``kv_decode``), each sorted and starting at 0.
        attention_us: Attention time of one layer on the full 4-D grid (no missing cell; see
            :func:`load_layer_profile` for how the cells the profiler skips are filled).
        attention_filled: How many cells of :attr:`attention_us` were filled rather than measured.
        dense_tokens: Token counts of the ``dense.csv`` grid (shared by every op).
        dense_us: Time of each dense op on :attr:`dense_tokens`, by op name.
        sequence_counts: Sequence counts of the ``per_sequence.csv`` grid.
        per_sequence_us: Time of each per-sequence op on :attr:`sequence_counts`, by op name.
        moe_tokens: Token counts of the ``moe.csv`` grid (empty without ``moe.csv``).
        moe_experts: Activated-expert counts of the ``moe.csv`` grid (empty without it).
        moe_us: MoE block time, shape ``(len(moe_tokens), len(moe_experts))``; the cells of a row
            beyond :attr:`moe_valid` (more experts than the row's tokens can activate) hold the
            row's last valid value.
        moe_valid: For each token row, how many leading expert counts were measured.
    """

    directory: Path
    attention_axes: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    attention_us: np.ndarray
    attention_filled: int
    dense_tokens: np.ndarray
    dense_us: dict[str, np.ndarray]
    sequence_counts: np.ndarray
    per_sequence_us: dict[str, np.ndarray]
    moe_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))
    moe_experts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    moe_us: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    moe_valid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __reduce__(self) -> tuple:
        """Pickle as the folder path: unpickling reloads it (once per process, then cached)."""
        return load_layer_profile, (self.directory,)

    @property
    def has_moe(self) -> bool:
        """Whether the folder has a ``moe.csv``."""
        return self.moe_tokens.size > 0


def _read_csv(path: Path, key_columns: tuple[str, ...], text_column: str | None) -> pd.DataFrame:
    """Read one profile csv and check its columns and values.

    Args:
        path: The file.
        key_columns: Integer columns (grid coordinates), which must be >= 0.
        text_column: A column of op names, if the file has one.

    Returns:
        The table, with integer key columns and a float ``time_us`` column.

    Raises:
        FileNotFoundError: If the file does not exist.
        ProfileDataError: If a column is missing, a value is not a number (or not an integer for
            a key column), a key is negative, a time is not finite and > 0, or a key repeats.
    """
    if not path.is_file():
        raise FileNotFoundError(f"profile file {str(path)!r} does not exist")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    expected = ([text_column] if text_column else []) + list(key_columns) + ["time_us"]
    missing = [name for name in expected if name not in table.columns]
    if missing:
        raise ProfileDataError(
            f"{path}: missing column(s) {missing}; expected columns {expected}, "
            f"found {list(table.columns)}"
        )
    if table.empty:
        raise ProfileDataError(f"{path}: no rows")
    out = pd.DataFrame()
    if text_column:
        out[text_column] = table[text_column].str.strip()
    for name in (*key_columns, "time_us"):
        values = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)
        if name == "time_us":
            bad = ~(np.isfinite(values) & (values > 0.0))
            what = "a finite time in microseconds > 0"
        else:
            bad = ~(np.isfinite(values) & (values >= 0.0) & (values == np.round(values)))
            what = "an integer >= 0"
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ProfileDataError(
                f"{path}: column {name!r} has value {table[name].iloc[row]!r} on line {row + 2}; "
                f"expected {what}"
            )
        out[name] = values if name == "time_us" else values.astype(np.int64)
    keys = ([text_column] if text_column else []) + list(key_columns)
    dup = out.duplicated(subset=keys)
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise ProfileDataError(
            f"{path}: key {dict(out[keys].iloc[row])} appears twice (line {row + 2})"
        )
    return out


def _is_doubling(values: np.ndarray) -> np.ndarray:
    """True for 0 and powers of two."""
    return (values == 0) | ((values & (values - 1)) == 0)


def _attention_grid(path: Path) -> tuple[tuple[np.ndarray, ...], np.ndarray, int]:
    """Build the full 4-D attention array from ``attention.csv``.

    Rows off the doubling grid (some profiles add a 1.5x-spaced sweep) are not used. Cells the
    profiler does not measure are filled so that the array is complete:

    - no decodes (``n_decode = 0``): the time does not depend on ``kv_decode``;
    - no prefill (``prefill_chunk = 0``): the time does not depend on ``kv_prefill``;
    - an empty batch costs 0;
    - decodes with ``kv_decode = 0`` (never a real decode) take the ``kv_decode`` 16 value;
    - the largest ``n_decode`` together with a prefill chunk (one sequence more than the
      profiler's ``max_num_seqs``) scales the value at the previous ``n_decode`` by the decode-only
      ratio: ``A(c, p, n, k) = A(c, p, n', k) * A(0, 0, n, k) / A(0, 0, n', k)``. Checked one
      level lower (128 from 64) this rule is off by 22-24% on average, better than adding the
      decode-only increment (33-42%) or extrapolating along ``n_decode`` (31%); it only matters
      for engines with more than 128 running sequences.

    Returns:
        The axes, the array and the number of filled mixed cells (the last rule).

    Raises:
        ProfileDataError: If any other cell of the grid is missing.
    """
    table = _read_csv(path, ATTENTION_AXES, None)
    keys = table[list(ATTENTION_AXES)].to_numpy()
    on_grid = _is_doubling(keys).all(axis=1)
    keys, times = keys[on_grid], table["time_us"].to_numpy()[on_grid]
    axes = tuple(np.unique(keys[:, i]) for i in range(4))
    for name, axis in zip(ATTENTION_AXES, axes, strict=True):
        if axis[0] != 0 or axis.size < 3:
            raise ProfileDataError(
                f"{path}: column {name!r} has grid {axis.tolist()}; expected 0 and at least two "
                "positive powers of two"
            )
    grid = np.full(tuple(a.size for a in axes), np.nan)
    index = tuple(np.searchsorted(axes[i], keys[:, i]) for i in range(4))
    grid[index] = times
    grid[:, :, 0, :] = grid[:, :, 0, :1]  # no decodes: kv_decode is irrelevant
    grid[0] = grid[0, :1]  # no prefill: kv_prefill is irrelevant
    grid[0, :, 0, :] = 0.0  # empty batch
    grid[:, :, 1:, 0] = grid[:, :, 1:, 1]  # a decode always has context: kv 0 -> first kv
    filled = 0
    top = axes[2].size - 1
    hole = np.isnan(grid[1:, :, top, :])
    if hole.any():
        ratio = grid[0, 0, top, :] / grid[0, 0, top - 1, :]
        fill = grid[1:, :, top - 1, :] * ratio
        grid[1:, :, top, :] = np.where(hole, fill, grid[1:, :, top, :])
        filled = int((hole & ~np.isnan(fill)).sum())
    if np.isnan(grid).any():
        cell = np.argwhere(np.isnan(grid))[0]
        point = {name: int(axes[i][cell[i]]) for i, name in enumerate(ATTENTION_AXES)}
        raise ProfileDataError(
            f"{path}: no measurement for {point}; the doubling grid must be complete except for "
            "the largest n_decode together with a prefill chunk"
        )
    return axes, grid, filled


def _op_grid(path: Path, key: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read ``dense.csv`` or ``per_sequence.csv``: one curve per op on a shared grid."""
    table = _read_csv(path, (key,), "layer")
    grid: np.ndarray | None = None
    curves: dict[str, np.ndarray] = {}
    for op, rows in table.groupby("layer", sort=True):
        rows = rows.sort_values(key)
        points = rows[key].to_numpy()
        if grid is None:
            grid = points
        elif not np.array_equal(points, grid):
            raise ProfileDataError(
                f"{path}: layer {op!r} has column {key!r} grid {points.tolist()}, which differs "
                f"from the other layers' {grid.tolist()}"
            )
        if points[0] < 1 or points.size < 2:
            raise ProfileDataError(
                f"{path}: layer {op!r} has column {key!r} grid {points.tolist()}; expected at "
                "least two values >= 1"
            )
        curves[str(op)] = rows["time_us"].to_numpy()
    assert grid is not None
    return grid.astype(float), curves


def _moe_grid(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read ``moe.csv`` into a 2-D array; each token row's measured experts must be a prefix."""
    table = _read_csv(path, ("tokens", "activated_experts"), None)
    tokens = np.unique(table["tokens"].to_numpy())
    experts = np.unique(table["activated_experts"].to_numpy())
    grid = np.full((tokens.size, experts.size), np.nan)
    grid[
        np.searchsorted(tokens, table["tokens"].to_numpy()),
        np.searchsorted(experts, table["activated_experts"].to_numpy()),
    ] = table["time_us"].to_numpy()
    valid = np.zeros(tokens.size, dtype=np.int64)
    for row in range(tokens.size):
        measured = ~np.isnan(grid[row])
        count = int(measured.sum())
        if tokens[0] < 1 or not measured[:count].all():
            raise ProfileDataError(
                f"{path}: tokens {int(tokens[row])} has activated_experts "
                f"{experts[measured].tolist()}; expected the smallest counts of "
                f"{experts.tolist()} without gaps, and tokens >= 1"
            )
        valid[row] = count
        grid[row, count:] = grid[row, count - 1]
    return tokens.astype(float), experts.astype(float), grid, valid


@functools.lru_cache(maxsize=16)
def _load_cached(directory: Path) -> LayerProfile:
    axes, attention, filled = _attention_grid(directory / "attention.csv")
    tokens, dense = _op_grid(directory / "dense.csv", "tokens")
    sequences, per_sequence = _op_grid(directory / "per_sequence.csv", "sequences")
    extra = {}
    if (directory / "moe.csv").is_file():
        moe_tokens, moe_experts, moe_us, moe_valid = _moe_grid(directory / "moe.csv")
        extra = dict(
            moe_tokens=moe_tokens, moe_experts=moe_experts, moe_us=moe_us, moe_valid=moe_valid
        )
    return LayerProfile(
        directory=directory,
        attention_axes=tuple(a.astype(float) for a in axes),  # type: ignore[arg-type]
        attention_us=attention,
        attention_filled=filled,
        dense_tokens=tokens,
        dense_us=dense,
        sequence_counts=sequences,
        per_sequence_us=per_sequence,
        **extra,
    )


def load_layer_profile(directory: str | Path) -> LayerProfile:
    """Read a profile folder, cached by resolved path (a second call returns the same object).

    The folder holds ``attention.csv``, ``dense.csv``, ``per_sequence.csv`` and, for a MoE model,
    ``moe.csv``.

    Args:
        directory: The folder.

    Returns:
        The gridded profile.

    Raises:
        FileNotFoundError: If the folder or a required file does not exist.
        ProfileDataError: If a file is malformed (the message names file, column and value) or the
            attention grid has a hole that cannot be filled.
    """
    path = Path(directory).resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"profile folder {str(path)!r} does not exist")
    return _load_cached(path)
