"""Static-batch latency fitted to the Splitwise measurements of Llama2-70B and BLOOM-176B.

The data is ``splitwise_perf_model.csv`` from splitwise-sim (Mutinifni/splitwise-sim, MIT; Patel
et al., "Splitwise: Efficient Generative LLM Inference Using Phase Splitting", ISCA 2024): static
batches of equal requests on A100-80GB and H100-80GB, in three one-factor sweeps around a prompt
of 512 tokens, a batch of 1 and 128 output tokens (prompt 128-8192, batch 1-64, output
128-8192), 5 repetitions each. A row gives the whole-batch prefill ``prompt_time``, the mean
decode step ``token_time`` and the batch's ``e2e_time``, in milliseconds.

**Consistency.** In a consistent row ``e2e_time = prompt_time + (token_size - 1) * token_time``:
the prefill emits the first token and ``token_size - 1`` decode steps follow (the same token
convention as :mod:`llmsched_env.latency.batch`). Kept rows match it to within 1%: their decode
part, divided by ``token_time``, is a median 0.14 steps more than ``token_size - 1`` (from 3.4
fewer to 2.2 more), against a median 0.86 fewer than ``token_size``, so the data supports
``token_size - 1`` decode steps. Rows off by more than :data:`E2E_TOLERANCE` (1.5%) are flagged
and left out of the fits: most stopped early (their implied step count, e.g. 361, 485, 582,
696 and 741 for the five repetitions, repeats across every ``token_size`` >= 1024, an end of
sequence reached by the same prompts), and the Llama2-70B TP 2 batches of 32 (A100) and 64
took 17% and 14-16 times longer than their own prefill and steps, where the 20 GB of KV memory
left by TP 2 is tightest.

**Power-capped H100.** The ``h100-80gb-pcap`` rows are not separate measurements: their
``prompt_time`` is exactly 1.3 times that of the ``h100-80gb`` row at the same place, and their
``token_time`` and ``e2e_time`` are copies of it (splitwise-sim's model of power capping, which
slows the compute-bound prefill and not the memory-bound decode).
:func:`recompute_power_capped_e2e` checks this and recomputes their ``e2e_time`` with the capped
prefill, so that the rows are consistent and fit like the others.

**The fitted model**, per (model, hardware, tensor parallelism), in the terms of
:class:`~llmsched_env.latency.batch.EngineStaticBatchLatency` (``b`` requests of prompt ``p``,
``P = b * p`` prompt tokens)::

    prefill(b, p) = max(a_floor, a1 * P + a2 * b * p ** 2)
    step(b, ctx)  = c0 + c1 * b + c2 * b * ctx,   ctx = p + o / 2 (mean context over the decode)
    e2e           = prefill + (o - 1) * step

Up to a few thousand tokens the prefill costs about the same as one decode step (reading the
weights dominates), then it grows in proportion to the tokens; a floor fits that bend better
than an intercept (held-out prefill error 5-15% instead of 8-24%). The prefill time depends
mostly on ``P`` (a batch of 16 prompts of 512 tokens takes 4-15% less than one prompt of 8192 on
H100, up to 34% more on A100), so the attention term ``a2`` is small and often zero.
Coefficients are weighted least squares on relative errors over the means of the kept rows of
each configuration, with every coefficient >= 0.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from llmsched_env.latency.batch import EngineStaticBatchLatency
from llmsched_env.latency.iteration import LinearIterationLatency

SPLITWISE_FILE = "splitwise_perf_model.csv"
"""The Splitwise measurements shipped in ``llmsched_env.data``."""

SPLITWISE_COLUMNS = (
    "model",
    "hardware",
    "tensor_parallel",
    "prompt_size",
    "batch_size",
    "token_size",
    "prompt_time",
    "token_time",
    "e2e_time",
)
"""Columns the loader needs; the file's power columns are read but not used."""

_TEXT_COLUMNS = ("model", "hardware")
_INTEGER_COLUMNS = ("tensor_parallel", "prompt_size", "batch_size", "token_size")
_TIME_COLUMNS = ("prompt_time", "token_time", "e2e_time")
_CONFIG = ["prompt_size", "batch_size", "token_size"]
_MS = 1e-3  # seconds per millisecond: the csv's times are in milliseconds

E2E_TOLERANCE = 0.015
"""Largest relative gap between ``e2e_time`` and ``prompt_time + (token_size - 1) * token_time``.

Kept rows of the shipped file are within 0.99%; the smallest gap of a flagged row is 1.95%.
"""

POWER_CAPPED = {"h100-80gb-pcap": ("h100-80gb", 1.3)}
"""Power-capped hardware: the uncapped hardware it is derived from and the prefill factor."""

SPLITWISE_GROUPS = (
    ("llama2-70b", "a100-80gb", 2),
    ("llama2-70b", "a100-80gb", 4),
    ("llama2-70b", "a100-80gb", 8),
    ("llama2-70b", "h100-80gb", 2),
    ("llama2-70b", "h100-80gb", 4),
    ("llama2-70b", "h100-80gb", 8),
    ("llama2-70b", "h100-80gb-pcap", 2),
    ("llama2-70b", "h100-80gb-pcap", 4),
    ("llama2-70b", "h100-80gb-pcap", 8),
    ("bloom-176b", "a100-80gb", 8),
    ("bloom-176b", "h100-80gb", 8),
    ("bloom-176b", "h100-80gb-pcap", 8),
)
"""The (model, hardware, tensor parallelism) groups of the shipped file."""


def load_splitwise_perf(
    source: pd.DataFrame | str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Read Splitwise static-batch measurements and check them.

    Args:
        source: A data frame, a CSV path, or ``None`` for the shipped file.

    Returns:
        The rows, with the columns of :data:`SPLITWISE_COLUMNS` (sizes as ``int64``, times as
        ``float64``, in milliseconds) and any others unchanged.

    Raises:
        TypeError: If ``source`` is of another type.
        ValueError: If the file has no rows, a column is missing, a size is not a positive integer,
            a time is not a finite number > 0, or a model or hardware name is empty.
    """
    if source is None:
        name = f"llmsched_env.data/{SPLITWISE_FILE}"
        with (resources.files("llmsched_env.data") / SPLITWISE_FILE).open("rb") as handle:
            frame = pd.read_csv(handle)
    elif isinstance(source, pd.DataFrame):
        name, frame = "data frame", source.copy()
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        try:
            frame = pd.read_csv(source)
        except pd.errors.EmptyDataError:
            raise ValueError(f"{name}: the file is empty; expected a header and rows") from None
    else:
        raise TypeError(
            f"expected Splitwise measurements as a pandas DataFrame, a CSV path or None, "
            f"got {source!r}"
        )
    missing = [column for column in SPLITWISE_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{name}: missing column(s) {missing}; expected columns {list(SPLITWISE_COLUMNS)}, "
            f"got {list(frame.columns)}"
        )
    if frame.empty:
        raise ValueError(f"{name}: no rows; expected at least one measurement")
    for column in _TEXT_COLUMNS:
        text = frame[column].astype("string").str.strip()
        bad = (text.isna() | (text == "")).to_numpy()
        _raise_on_bad(name, frame, column, bad, "a non-empty name")
        frame[column] = text.astype(object)
    for column in _INTEGER_COLUMNS + _TIME_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values <= 0.0)
        if column in _INTEGER_COLUMNS:
            bad |= values % 1.0 != 0.0
            _raise_on_bad(name, frame, column, bad, "an integer >= 1")
            frame[column] = values.astype(np.int64)
        else:
            _raise_on_bad(name, frame, column, bad, "a finite number > 0 (milliseconds)")
            frame[column] = values
    return frame.reset_index(drop=True)


def _raise_on_bad(name: str, frame: pd.DataFrame, column: str, bad: np.ndarray, expected: str):
    """Raise a ``ValueError`` naming the first bad row (a data row number, 1 = first row)."""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name}: every {column} must be {expected}, got "
            f"{frame[column].iloc[row]!r} in data row {row + 1}"
        )


def e2e_gap(frame: pd.DataFrame) -> np.ndarray:
    """``e2e_time / (prompt_time + (token_size - 1) * token_time) - 1`` of every row.

    Args:
        frame: Rows as returned by :func:`load_splitwise_perf`.

    Returns:
        The relative gap of each row (0 for a row that is its own prefill and decode steps).
    """
    decode_steps = frame["token_size"].to_numpy(dtype=np.float64) - 1.0
    expected = frame["prompt_time"].to_numpy() + decode_steps * frame["token_time"].to_numpy()
    return frame["e2e_time"].to_numpy() / expected - 1.0


def flag_inconsistent(frame: pd.DataFrame, tolerance: float = E2E_TOLERANCE) -> np.ndarray:
    """Flag rows whose ``e2e_time`` is not their prefill plus ``token_size - 1`` decode steps.

    Args:
        frame: Rows as returned by :func:`load_splitwise_perf`.
        tolerance: Largest accepted ``|e2e_gap|`` (relative), > 0.

    Returns:
        A boolean array, ``True`` for a flagged row.

    Raises:
        ValueError: If ``tolerance`` is not a finite number > 0.

    Example:
        >>> rows = pd.DataFrame({"prompt_time": [100.0, 100.0], "token_time": [10.0, 10.0],
        ...                      "token_size": [11, 11], "e2e_time": [201.0, 150.0]})
        >>> flag_inconsistent(rows).tolist()  # 0.5% off, then 25% off
        [False, True]
    """
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance!r}")
    return np.abs(e2e_gap(frame)) > tolerance


def recompute_power_capped_e2e(frame: pd.DataFrame) -> pd.DataFrame:
    """Give the power-capped rows the ``e2e_time`` of their own prefill.

    The power-capped rows of the shipped file copy ``token_time`` and ``e2e_time`` from the
    uncapped rows and multiply ``prompt_time`` by a factor (see :data:`POWER_CAPPED`); this checks
    that, then adds the extra prefill time to ``e2e_time``.

    Args:
        frame: Rows as returned by :func:`load_splitwise_perf`.

    Returns:
        A copy with the power-capped rows' ``e2e_time`` recomputed (others unchanged).

    Raises:
        ValueError: If power-capped rows do not line up with uncapped rows as described.
    """
    frame = frame.copy()
    for capped, (base, factor) in POWER_CAPPED.items():
        for (model, tp), rows in frame[frame["hardware"] == capped].groupby(
            ["model", "tensor_parallel"], sort=False
        ):
            source = frame[
                (frame["model"] == model)
                & (frame["hardware"] == base)
                & (frame["tensor_parallel"] == tp)
            ]
            ok = len(source) == len(rows)
            if ok:
                ok = (
                    np.array_equal(rows[_CONFIG].to_numpy(), source[_CONFIG].to_numpy())
                    and np.array_equal(rows["token_time"].to_numpy(), source["token_time"])
                    and np.array_equal(rows["e2e_time"].to_numpy(), source["e2e_time"])
                    and np.allclose(
                        rows["prompt_time"].to_numpy(),
                        factor * source["prompt_time"].to_numpy(),
                        rtol=1e-9,
                        atol=0.0,
                    )
                )
            if not ok:
                raise ValueError(
                    f"expected the {capped!r} rows of {model} TP {tp} to be the {base!r} rows "
                    f"with prompt_time x {factor} and the same token_time and e2e_time"
                )
            extra = rows["prompt_time"].to_numpy() - source["prompt_time"].to_numpy()
            frame.loc[rows.index, "e2e_time"] = rows["e2e_time"].to_numpy() + extra
    return frame


def _nonnegative_least_squares(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least squares ``design @ x ~ target`` with ``x >= 0``, by trying every support.

    The problem is convex and its optimum is the unconstrained solution on some subset of the
    columns; with three columns there are seven subsets, so trying them all is exact and cheap.
    """
    n_columns = design.shape[1]
    best_sse, best = math.inf, np.zeros(n_columns)
    for size in range(1, n_columns + 1):
        for support in itertools.combinations(range(n_columns), size):
            columns = list(support)
            solution, *_ = np.linalg.lstsq(design[:, columns], target, rcond=None)
            if (solution < 0.0).any():
                continue
            residual = target - design[:, columns] @ solution
            sse = float(residual @ residual)
            if sse < best_sse:
                best_sse, best = sse, np.zeros(n_columns)
                best[columns] = solution
    return best


def _relative_fit(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Nonnegative least squares of the relative errors ``design @ x / target - 1``."""
    return _nonnegative_least_squares(design / target[:, None], np.ones_like(target))


def _fit_prefill(batch: np.ndarray, prompt: np.ndarray, time_ms: np.ndarray):
    """``(a_floor, a1, a2)`` of ``max(a_floor, a1 * b * p + a2 * b * p ** 2)``, in ms.

    Every split of the configurations by prompt tokens ``b * p`` is tried: the floor is fitted to
    those below the split, the line to those at or above it, and the split with the smallest
    relative error of the whole model wins.
    """
    tokens = batch * prompt
    design = np.column_stack([tokens, tokens * prompt])
    best_sse, best = math.inf, (0.0, 0.0, 0.0)
    for split in np.unique(tokens):
        low = tokens < split
        if (~low).sum() < 2:
            continue
        inverse = 1.0 / time_ms[low]
        floor = float(inverse.sum() / (inverse @ inverse)) if low.any() else 0.0
        a1, a2 = _relative_fit(design[~low], time_ms[~low])
        predicted = np.maximum(floor, design @ np.array([a1, a2]))
        sse = float(np.sum((predicted / time_ms - 1.0) ** 2))
        if sse < best_sse:
            best_sse, best = sse, (floor, float(a1), float(a2))
    return best


def fit_phases(rows: pd.DataFrame) -> EngineStaticBatchLatency:
    """Fit the prefill and decode model of the module docstring to some rows.

    Args:
        rows: Consistent rows of one (model, hardware, TP) group; each configuration
            ``(prompt_size, batch_size, token_size)`` counts once, with its mean times.

    Returns:
        The static-batch latency, in seconds.

    Raises:
        ValueError: If the rows have fewer than 3 configurations or the fitted step has no
            fixed cost.
    """
    means = rows.groupby(_CONFIG, as_index=False)[["prompt_time", "token_time"]].mean()
    if len(means) < 3:
        raise ValueError(f"expected at least 3 configurations to fit, got {len(means)}")
    batch = means["batch_size"].to_numpy(dtype=np.float64)
    prompt = means["prompt_size"].to_numpy(dtype=np.float64)
    output = means["token_size"].to_numpy(dtype=np.float64)
    floor, a1, a2 = _fit_prefill(batch, prompt, means["prompt_time"].to_numpy())
    step_design = np.column_stack([np.ones_like(batch), batch, batch * (prompt + 0.5 * output)])
    c0, c1, c2 = _relative_fit(step_design, means["token_time"].to_numpy())
    if not c0 > 0.0:
        raise ValueError("the fitted decode step has no fixed cost; expected c0 > 0")
    return EngineStaticBatchLatency(
        LinearIterationLatency(c0 * _MS, a1 * _MS, c1 * _MS, c2 * _MS),
        prefill_fixed_s=0.0,
        prefill_s_per_squared_token=a2 * _MS,
        prefill_floor_s=floor * _MS,
    )


def predict_ms(latency: EngineStaticBatchLatency, rows: pd.DataFrame) -> pd.DataFrame:
    """``prompt_time``, ``token_time`` and ``e2e_time`` (ms) the model gives for some rows.

    Each row is run as a static batch of ``batch_size`` equal requests through
    :meth:`~llmsched_env.latency.batch.EngineStaticBatchLatency.batch_timing`.

    Args:
        latency: The model.
        rows: Rows with ``prompt_size``, ``batch_size`` and ``token_size``.

    Returns:
        A frame with the three predicted times, indexed like ``rows``.
    """
    predicted = []
    for prompt, batch, output in rows[_CONFIG].itertuples(index=False):
        service_s, prefill_s = latency.batch_timing(
            np.full(batch, prompt), np.full(batch, output), None
        )
        step_s = (service_s - prefill_s) / (output - 1) if output > 1 else math.nan
        predicted.append((prefill_s / _MS, step_s / _MS, service_s / _MS))
    return pd.DataFrame(predicted, index=rows.index, columns=list(_TIME_COLUMNS))


def mape_percent(predicted: pd.DataFrame, rows: pd.DataFrame) -> dict[str, float]:
    """Mean absolute percentage error of each time column.

    Args:
        predicted: Predicted times, as :func:`predict_ms` returns.
        rows: The measured rows.

    Returns:
        ``{"prompt_time": ..., "token_time": ..., "e2e_time": ...}`` in percent.
    """
    return {
        column: float(100.0 * np.mean(np.abs(predicted[column] / rows[column] - 1.0)))
        for column in _TIME_COLUMNS
    }


@dataclass(frozen=True)
class SplitwiseFit:
    """Fit of one (model, hardware, tensor parallelism) group, with its held-out errors.

    Attributes:
        model: Model name of the csv (``"llama2-70b"`` or ``"bloom-176b"``).
        hardware: Hardware name of the csv.
        tensor_parallel: Tensor parallelism (GPUs per model instance).
        latency: The model fitted to all kept rows.
        rows_used: Rows kept (consistent).
        rows_flagged: Rows flagged by :func:`flag_inconsistent` and left out.
        configurations: Distinct configurations among the kept rows.
        heldout_mape: Leave-one-configuration-out error, in percent, over the kept rows, per time
            column: each configuration is predicted by a fit to all the others.
    """

    model: str
    hardware: str
    tensor_parallel: int
    latency: EngineStaticBatchLatency
    rows_used: int
    rows_flagged: int
    configurations: int
    heldout_mape: dict[str, float]


def _group_rows(frame: pd.DataFrame, model: str, hardware: str, tensor_parallel: int):
    """The rows of one group; ``ValueError`` if there are none."""
    rows = frame[
        (frame["model"] == model)
        & (frame["hardware"] == hardware)
        & (frame["tensor_parallel"] == tensor_parallel)
    ]
    if rows.empty:
        groups = sorted(set(frame[["model", "hardware", "tensor_parallel"]].itertuples(False)))
        raise ValueError(
            f"no rows for model={model!r}, hardware={hardware!r}, "
            f"tensor_parallel={tensor_parallel!r}; the data has {groups}"
        )
    return rows


def fit_splitwise_group(
    frame: pd.DataFrame,
    model: str,
    hardware: str,
    tensor_parallel: int,
    *,
    tolerance: float = E2E_TOLERANCE,
    holdout: bool = True,
) -> SplitwiseFit:
    """Flag, fit and cross-validate one group.

    Args:
        frame: Rows as returned by :func:`load_splitwise_perf`, power-capped ``e2e_time``
            recomputed (:func:`recompute_power_capped_e2e`).
        model: Model name.
        hardware: Hardware name.
        tensor_parallel: Tensor parallelism.
        tolerance: The flagging tolerance of :func:`flag_inconsistent`.
        holdout: Compute the leave-one-configuration-out errors (``heldout_mape`` is empty
            otherwise).

    Returns:
        The fit.

    Raises:
        ValueError: If the group has no rows or too few consistent configurations.
    """
    rows = _group_rows(frame, model, hardware, tensor_parallel)
    flagged = flag_inconsistent(rows, tolerance)
    kept = rows[~flagged]
    latency = fit_phases(kept)
    configurations = kept.groupby(_CONFIG).ngroups
    heldout: dict[str, float] = {}
    if holdout:
        config_of = pd.MultiIndex.from_frame(kept[_CONFIG])
        predicted = []
        for config in config_of.unique():
            held = config_of == config
            predicted.append(predict_ms(fit_phases(kept[~held]), kept[held]))
        heldout = mape_percent(pd.concat(predicted).loc[kept.index], kept)
    return SplitwiseFit(
        model=model,
        hardware=hardware,
        tensor_parallel=int(tensor_parallel),
        latency=latency,
        rows_used=len(kept),
        rows_flagged=int(flagged.sum()),
        configurations=configurations,
        heldout_mape=heldout,
    )


def fit_splitwise(
    source: pd.DataFrame | str | os.PathLike[str] | None = None, *, holdout: bool = True
) -> dict[tuple[str, str, int], SplitwiseFit]:
    """Fit every (model, hardware, TP) group of a Splitwise file.

    Args:
        source: As for :func:`load_splitwise_perf` (``None``: the shipped file).
        holdout: Compute the held-out errors.

    Returns:
        The fits by ``(model, hardware, tensor_parallel)``, in the order of the file.
    """
    frame = recompute_power_capped_e2e(load_splitwise_perf(source))
    groups = frame[["model", "hardware", "tensor_parallel"]].drop_duplicates()
    return {
        (model, hardware, int(tp)): fit_splitwise_group(frame, model, hardware, tp, holdout=holdout)
        for model, hardware, tp in groups.itertuples(index=False)
    }


@functools.cache
def _shipped_frame() -> pd.DataFrame:
    """The shipped file, checked, with power-capped ``e2e_time`` recomputed (read once)."""
    return recompute_power_capped_e2e(load_splitwise_perf())


@functools.cache
def splitwise_batch_latency(
    model: str, hardware: str, tensor_parallel: int
) -> EngineStaticBatchLatency:
    """The static-batch latency of one group, fitted to the shipped file (once per process).

    Args:
        model: ``"llama2-70b"`` or ``"bloom-176b"``.
        hardware: ``"a100-80gb"``, ``"h100-80gb"`` or ``"h100-80gb-pcap"``.
        tensor_parallel: 2, 4 or 8 for Llama2-70B; 8 for BLOOM-176B.

    Returns:
        The fitted model (immutable, so sharing it is safe).

    Raises:
        ValueError: If the shipped file has no such group.

    Example:
        >>> latency = splitwise_batch_latency("llama2-70b", "a100-80gb", 4)
        >>> service_s, first_token_s = latency.batch_timing(np.full(8, 512), np.full(8, 128), None)
        >>> round(first_token_s, 2), round(service_s, 1)  # measured: 1.21 s and 7.0 s
        (1.05, 7.0)
    """
    frame = _shipped_frame()
    return fit_splitwise_group(frame, model, hardware, tensor_parallel, holdout=False).latency
