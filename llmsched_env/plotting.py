"""Figures of evaluation and stability results (needs the ``plots`` extra: matplotlib).

Every function returns the written path, or ``None`` when matplotlib is not installed, so the
command-line tools work without it and just skip the figure. Figures are drawn on
:class:`matplotlib.figure.Figure` objects of their own, not through ``pyplot``: the caller's
backend and open figures are left as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from llmsched_env.stability import StabilityResult
    from llmsched_env.validation import RunValidation

PANELS = (
    ("return", "episode return"),
    ("sla_attainment", "SLA attainment"),
    ("goodput_rps", "goodput (req/s)"),
    ("latency_s_p99", "p99 latency (s)"),
)
#: The range each plotted quantity can take; error bars are clipped to it (``None``: unbounded).
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "return": (None, None),
    "sla_attainment": (0.0, 1.0),
    "goodput_rps": (0.0, None),
    "latency_s_p99": (0.0, None),
    "throughput_rps": (0.0, None),
}
CLIPPED_NOTE = "error bars: 95% CIs, clipped to the range the quantity can take"


def clipped_errors(
    means: np.ndarray, halves: np.ndarray, bounds: tuple[float | None, float | None]
) -> tuple[np.ndarray, bool]:
    """Asymmetric error bars ``[[below], [above]]`` of ``means +/- halves`` cut to ``bounds``.

    Missing half-widths (``nan``, one episode) draw no bar.

    Returns:
        The ``(2, n)`` array matplotlib's ``xerr``/``yerr`` take, and whether any bar was cut.

    Example:
        >>> bars, cut = clipped_errors(np.array([0.2, 3.0]), np.array([0.5, 1.0]), (0.0, None))
        >>> bars.tolist(), cut
        ([[0.2, 1.0], [0.5, 1.0]], True)
    """
    halves = np.nan_to_num(np.asarray(halves, dtype=float), nan=0.0)
    means = np.asarray(means, dtype=float)
    below, above = halves.copy(), halves.copy()
    low, high = bounds
    if low is not None:
        below = np.minimum(below, np.maximum(means - low, 0.0))
    if high is not None:
        above = np.minimum(above, np.maximum(high - means, 0.0))
    cut = bool(np.any(below < halves) or np.any(above < halves))
    return np.vstack([below, above]), cut


def plot_comparison(summary: pd.DataFrame, path: str | Path, title: str = "") -> Path | None:
    """Bar charts of mean return, SLA attainment, goodput and p99 latency with 95% CIs.

    Args:
        summary: One row per policy, as returned by ``llmsched_env.evaluation.evaluate``.
        path: Where to write the PNG.
        title: Figure title.

    Returns:
        The written path, or ``None`` when matplotlib is not installed.
    """
    panels = [p for p in PANELS if f"{p[0]}_mean" in summary.columns]
    expected = [f"{metric}_{part}" for metric, _ in panels for part in ("mean", "ci95")]
    missing = [c for c in ("policy", *expected) if c not in summary.columns]
    if not panels or missing:
        raise ValueError(
            f"a summary to plot needs a 'policy' column and, for at least one of "
            f"{[metric for metric, _ in PANELS]}, the columns '<metric>_mean' and "
            f"'<metric>_ci95'; missing {missing or [f'{m}_mean' for m, _ in PANELS]}"
        )
    fig = new_figure(figsize=(4 * len(panels), 3.6))
    if fig is None:
        return None
    axes = fig.subplots(1, len(panels), squeeze=False)
    names = summary["policy"].astype(str).tolist()
    any_cut = False
    for ax, (metric, label) in zip(axes[0], panels):
        means = summary[f"{metric}_mean"].to_numpy(dtype=float)
        errors, cut = clipped_errors(
            means, summary[f"{metric}_ci95"].to_numpy(dtype=float), BOUNDS[metric]
        )
        any_cut |= cut
        ax.barh(names, means, xerr=errors, color="tab:blue", alpha=0.8, capsize=3)
        ax.set_xlabel(label)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[0][1:]:
        ax.set_yticklabels([])
    if title:
        fig.suptitle(title)
    if any_cut:
        fig.text(0.01, 0.01, CLIPPED_NOTE, fontsize=7, color="0.35")
    return save_figure(fig, path)


def plot_stability(result: StabilityResult, path: str | Path, title: str = "") -> Path | None:
    """Throughput and drift against the arrival rate, with lambda* marked.

    Args:
        result: An estimate from :func:`estimate_stability`.
        path: Where to write the PNG.
        title: Figure title.

    Returns:
        The written path, or ``None`` when matplotlib is not installed.
    """
    fig = new_figure(figsize=(9, 3.6))
    if fig is None:
        return None
    df = result.to_frame()
    rate = df["arrival_rate_rps"].to_numpy()
    left, right = fig.subplots(1, 2)
    throughput = df["throughput_rps"].to_numpy(dtype=float)
    errors, cut = clipped_errors(
        throughput, df["throughput_ci95"].to_numpy(dtype=float), BOUNDS["throughput_rps"]
    )
    left.errorbar(rate, throughput, yerr=errors, fmt="o-")
    if cut:
        fig.text(0.01, 0.01, CLIPPED_NOTE, fontsize=7, color="0.35")
    left.plot(rate, rate, "k:", label="throughput = arrival rate")
    left.set_ylabel("throughput (req/s)")
    right.errorbar(
        rate, df["drift_per_arrival"], yerr=df["drift_ci95"].fillna(0.0).to_numpy(), fmt="o-"
    )
    right.axhline(result.settings.drift_threshold, color="tab:red", ls="--", label="threshold")
    right.set_ylabel("drift of N(t) per arrival")
    for ax in (left, right):
        ax.axvspan(result.lambda_low_rps, result.lambda_high_rps, color="tab:green", alpha=0.3)
        ax.axvline(result.lambda_star_rps, color="tab:green", label="lambda*")
        ax.set_xlabel("arrival rate (req/s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or result.describe(), fontsize=9)
    return save_figure(fig, path)


def plot_validation(result: RunValidation, path: str | Path, title: str = "") -> Path | None:
    """A replay against its recorded run: E2E latency CDFs and requests over time.

    Left: the empirical CDF of per-request end-to-end latency, measured and simulated. Right:
    running and waiting requests at each tick, from the run's ``timeseries.csv`` and from the
    replay.

    Args:
        result: A run's comparison from :func:`llmsched_env.validation.validate_run`.
        path: Where to write the PNG.
        title: Figure title (default: the run, the policy and the latency preset).

    Returns:
        The written path, or ``None`` when matplotlib is not installed.
    """
    fig = new_figure(figsize=(9, 3.6))
    if fig is None:
        return None
    left, right = fig.subplots(1, 2)
    for frame, label, style in (
        (result.measured, "measured", "-"),
        (result.simulated, "simulated", "--"),
    ):
        e2e = np.sort(frame["e2e_ms"].to_numpy()) / 1e3
        left.step(e2e, np.arange(1, e2e.size + 1) / e2e.size, style, where="post", label=label)
    left.set_xlabel("end-to-end latency (s)")
    left.set_ylabel("fraction of requests")
    measured, simulated = result.run.timeseries, result.replay.timeseries
    for column, colour in (("running", "tab:blue"), ("waiting", "tab:orange")):
        right.plot(measured["t"], measured[column], "-", color=colour, label=f"{column}, measured")
        right.plot(
            simulated["t"], simulated[column], "--", color=colour, label=f"{column}, simulated"
        )
    right.set_xlabel("time since the run started (s)")
    right.set_ylabel("requests")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    settings = result.replay.settings
    fig.suptitle(
        title or f"{result.run.name}: policy {settings.policy}, latency {settings.latency}",
        fontsize=9,
    )
    return save_figure(fig, path)


def new_figure(**kwargs: Any) -> Any:
    """A :class:`matplotlib.figure.Figure` (``kwargs`` as its own), or ``None`` without matplotlib.

    Not made through ``pyplot``, so it neither switches the caller's backend nor joins pyplot's
    open figures (nothing to close, even when drawing fails).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(**kwargs)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out ``fig`` and write it to ``path`` at 120 dpi; return the path written.

    A path without a suffix gets ``.png`` (matplotlib would add it, and the returned path
    would name no file); otherwise the suffix chooses the format, as in matplotlib.
    """
    fig.tight_layout()
    path = Path(path)
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    fig.savefig(path, dpi=120)
    return path
