"""Figures of evaluation results (needs the ``plots`` extra: matplotlib)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PANELS = (
    ("return", "episode return"),
    ("sla_attainment", "SLA attainment"),
    ("goodput_rps", "goodput (req/s)"),
    ("latency_s_p99", "p99 latency (s)"),
)


def plot_comparison(summary: pd.DataFrame, path: str | Path, title: str = "") -> Path | None:
    """Bar charts of mean return, SLA attainment, goodput and p99 latency with 95% CIs.

    Args:
        summary: One row per policy, as returned by ``llmsched_env.evaluation.evaluate``.
        path: Where to write the PNG.
        title: Figure title.

    Returns:
        The written path, or ``None`` when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [p for p in PANELS if f"{p[0]}_mean" in summary.columns]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False)
    names = summary["policy"].astype(str).tolist()
    for ax, (metric, label) in zip(axes[0], panels):
        means = summary[f"{metric}_mean"].to_numpy(dtype=float)
        errors = summary[f"{metric}_ci95"].fillna(0.0).to_numpy(dtype=float)
        ax.barh(names, means, xerr=errors, color="tab:blue", alpha=0.8, capsize=3)
        ax.set_xlabel(label)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[0][1:]:
        ax.set_yticklabels([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
