"""Fit the static-batch model ``T(b, L)`` to a measured latency grid.

The model ``T(b, L) = alpha + beta * L * (1 + gamma * (b - 1) / b)`` is nonlinear in its three
parameters, but for a fixed ``gamma`` it is linear in ``alpha`` and ``beta``. The fit therefore
solves a linear least-squares problem inside a bounded one-dimensional search over ``gamma`` (a
coarse grid, then golden-section refinement around its best point), with numpy only.

The shipped grid, ``qwen3_1_7b_latency_grid.csv`` (from llm-scheduler-sim, see ``data/README.md``),
gives alpha = 0.0597 s, beta = 0.005742 s/token, gamma = 0.3157 and R^2 = 0.9995. Its numbers look
constructed rather than measured (the b = 1 rows are exactly ``0.05 + 0.00586 * L``, the other rows
fixed multiples of them, and every standard deviation is 7% of its mean), so the fit reproduces that
simulator's "calibrated" preset, not a measurement of Qwen3-1.7B.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from llmsched_env.latency.batch import StaticBatchLatency

GRID_COLUMNS = ("batch_size", "max_seq_len", "mean_latency_sec")
"""Columns a latency grid must have: batch size ``b``, longest sequence ``L``, mean latency (s)."""

QWEN3_GRID_FILE = "qwen3_1_7b_latency_grid.csv"
"""The calibration grid shipped in ``llmsched_env.data``."""

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class StaticBatchFit:
    """Result of :func:`fit_static_batch_latency`.

    Attributes:
        model: The fitted model (``floor_s`` at its default).
        r_squared: Coefficient of determination of the fit on the grid's mean latencies.
        rmse_s: Root-mean-square error of the fit, in seconds.
    """

    model: StaticBatchLatency
    r_squared: float
    rmse_s: float


def load_latency_grid(source: pd.DataFrame | str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Read a latency grid and check it.

    Args:
        source: A data frame, a CSV path, or ``None`` for the shipped Qwen3-1.7B grid.

    Returns:
        The grid, with at least the columns of :data:`GRID_COLUMNS` (as floats), checked.

    Raises:
        TypeError: If ``source`` is of another type.
        ValueError: If a column is missing, a value is not a finite number, a batch size is not a
            positive integer, a length or latency is not positive, or the grid cannot determine the
            three parameters (fewer than 3 rows, or fewer than two distinct batch sizes or lengths).
    """
    if source is None:
        with (resources.files("llmsched_env.data") / QWEN3_GRID_FILE).open("rb") as handle:
            grid = pd.read_csv(handle)
    elif isinstance(source, pd.DataFrame):
        grid = source
    elif isinstance(source, (str, os.PathLike)):
        grid = pd.read_csv(source)
    else:
        raise TypeError(
            f"expected a latency grid as a pandas DataFrame, a CSV path or None, got {source!r}"
        )
    missing = [column for column in GRID_COLUMNS if column not in grid.columns]
    if missing:
        raise ValueError(
            f"latency grid is missing column(s) {missing}; expected columns {list(GRID_COLUMNS)}, "
            f"got {list(grid.columns)}"
        )
    grid = grid.copy()
    for column in GRID_COLUMNS:
        values = pd.to_numeric(grid[column], errors="coerce").astype(np.float64)
        bad = ~np.isfinite(values.to_numpy())
        if column == "batch_size":
            bad |= (values.to_numpy() < 1) | (values.to_numpy() % 1 != 0)
            expected = "an integer >= 1"
        else:
            bad |= values.to_numpy() <= 0
            expected = "a finite number > 0"
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"latency grid: every {column} must be {expected}, got "
                f"{grid[column].iloc[row]!r} in row {row}"
            )
        grid[column] = values
    if len(grid) < 3 or grid["batch_size"].nunique() < 2 or grid["max_seq_len"].nunique() < 2:
        raise ValueError(
            "latency grid: fitting alpha, beta and gamma needs at least 3 rows with at least two "
            f"distinct `batch_size` and two distinct `max_seq_len` values, got {len(grid)} rows, "
            f"{grid['batch_size'].nunique()} batch sizes and "
            f"{grid['max_seq_len'].nunique()} lengths"
        )
    return grid


def _nonnegative_line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least squares ``y ~ alpha + beta * x`` with ``alpha, beta >= 0``.

    The problem is convex, so its optimum is the unconstrained solution when that is feasible, and
    otherwise the better of the two boundary solutions (``alpha = 0`` or ``beta = 0``).

    Returns:
        ``(alpha, beta, sum of squared residuals)``.
    """
    design = np.column_stack([np.ones_like(x), x])
    (alpha, beta), *_ = np.linalg.lstsq(design, y, rcond=None)
    candidates = [(float(alpha), float(beta))]
    if alpha < 0.0 or beta < 0.0:
        candidates = [(0.0, max(0.0, float(x @ y / (x @ x)))), (max(0.0, float(y.mean())), 0.0)]

    def with_sse(coefficients: tuple[float, float]) -> tuple[float, float, float]:
        residual = y - coefficients[0] - coefficients[1] * x
        return (*coefficients, float(residual @ residual))

    return min(map(with_sse, candidates), key=lambda fitted: fitted[2])


def fit_static_batch_latency(
    grid: pd.DataFrame | str | os.PathLike[str],
    *,
    gamma_bounds: tuple[float, float] = (0.0, 4.0),
    coarse_points: int = 101,
    gamma_tol: float = 1e-9,
) -> StaticBatchFit:
    """Fit ``T(b, L) = alpha + beta * L * (1 + gamma * (b - 1) / b)`` to a latency grid.

    Ordinary least squares on ``mean_latency_sec`` over ``(batch_size, max_seq_len)``, with
    ``alpha, beta >= 0`` and ``gamma`` within ``gamma_bounds``.

    Args:
        grid: A data frame or CSV path with the columns of :data:`GRID_COLUMNS` (the shipped grid
            is read by ``load_latency_grid()``).
        gamma_bounds: Search interval ``(low, high)`` for ``gamma``, with ``0 <= low < high``.
        coarse_points: Points of the coarse grid over ``gamma_bounds`` (at least 3).
        gamma_tol: Width of the final golden-section bracket.

    Returns:
        The fitted model with its R^2 and RMSE.

    Raises:
        ValueError: If the grid is invalid (see :func:`load_latency_grid`), its latencies are all
            equal, or the search settings are invalid.

    Example:
        >>> fit = fit_static_batch_latency(load_latency_grid())
        >>> m = fit.model
        >>> round(m.alpha_s, 4), round(m.beta_s_per_token, 6), round(m.gamma, 4)
        (0.0597, 0.005742, 0.3157)
        >>> round(fit.r_squared, 4)
        0.9995
    """
    low, high = gamma_bounds
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low < high):
        raise ValueError(f"gamma_bounds must be finite with 0 <= low < high, got {gamma_bounds!r}")
    if coarse_points < 3:
        raise ValueError(f"coarse_points must be >= 3, got {coarse_points!r}")
    if not gamma_tol > 0.0:
        raise ValueError(f"gamma_tol must be > 0, got {gamma_tol!r}")

    grid = load_latency_grid(grid)
    batch = grid["batch_size"].to_numpy()
    length = grid["max_seq_len"].to_numpy()
    latency = grid["mean_latency_sec"].to_numpy()
    spread = latency - latency.mean()
    total_ss = float(spread @ spread)
    if total_ss == 0.0:
        raise ValueError("latency grid: every `mean_latency_sec` is equal; nothing to fit")
    crowding = (batch - 1.0) / batch

    def sse(gamma: float) -> float:
        return _nonnegative_line_fit(length * (1.0 + gamma * crowding), latency)[2]

    gammas = np.linspace(low, high, coarse_points)
    errors = [sse(float(g)) for g in gammas]
    best = int(np.argmin(errors))
    left = float(gammas[max(best - 1, 0)])
    right = float(gammas[min(best + 1, coarse_points - 1)])
    inner_left = right - _GOLDEN * (right - left)
    inner_right = left + _GOLDEN * (right - left)
    sse_left, sse_right = sse(inner_left), sse(inner_right)
    while right - left > gamma_tol:
        if sse_left < sse_right:
            right, inner_right, sse_right = inner_right, inner_left, sse_left
            inner_left = right - _GOLDEN * (right - left)
            sse_left = sse(inner_left)
        else:
            left, inner_left, sse_left = inner_left, inner_right, sse_right
            inner_right = left + _GOLDEN * (right - left)
            sse_right = sse(inner_right)
    candidates = [
        (errors[best], float(gammas[best])),
        (sse_left, inner_left),
        (sse_right, inner_right),
    ]
    _, gamma = min(candidates)
    alpha, beta, residual_ss = _nonnegative_line_fit(length * (1.0 + gamma * crowding), latency)
    return StaticBatchFit(
        model=StaticBatchLatency(alpha_s=alpha, beta_s_per_token=beta, gamma=gamma),
        r_squared=1.0 - residual_ss / total_ss,
        rmse_s=math.sqrt(residual_ss / len(latency)),
    )
