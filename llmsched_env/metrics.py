"""Run metrics from per-request records: counts, throughput, latency percentiles, SLA attainment.

Symbols, per request *i* (see ``docs/metrics.md`` for the full glossary):

* ``a_i`` arrival, ``s_i`` start of service (batch dispatch or prefill start), ``f_i`` first output
  token, ``c_i`` completion (last token), ``n_i`` output tokens;
* end-to-end latency ``c_i - a_i``; queueing delay ``s_i - a_i``; TTFT ``f_i - a_i``;
  TBT (mean time between tokens) ``(c_i - f_i) / (n_i - 1)`` for ``n_i >= 2``; the largest gap
  between two consecutive tokens is reported as ``max_token_gap``.

The measurement window is ``[warmup_s, end_s]``, where ``end_s`` is the time the run stopped.
Only requests arriving inside the window are counted. Throughput counts their completions per
second of window, so it is what the system delivered, not the offered load. A request meets an
objective only if it completed and met it; the attainment of an objective is the share of the
window's arrived requests that met it (rejected and unfinished requests count as misses).
Goodput is the rate of requests meeting every objective. GPU utilisation is the busy share of the
GPUs over the whole run ``[0, end_s]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: The states a request ends a run in; ``status`` columns hold indices into this tuple (see
#: :mod:`llmsched_env.sim.records`).
STATUS_NAMES = ("not_arrived", "in_system", "completed", "rejected")
PERCENTILES = (50, 95, 99)
_NUMERIC_COLUMNS = ("arrival_s", "start_s", "first_token_s", "completion_s", "output_tokens")
#: Reported only by servers that resolve individual token times (the iteration level).
_GAP_COLUMN = "max_token_gap_s"
_NOT_ARRIVED, _IN_SYSTEM, _COMPLETED, _REJECTED = range(4)


@dataclass(frozen=True)
class SLATargets:
    """Service-level objectives a request is judged against; ``None`` disables one.

    Attributes:
        e2e_s: End-to-end latency target (deadline after arrival).
        ttft_s: Time-to-first-token target.
        tbt_s: Largest allowed gap between two consecutive output tokens.
    """

    e2e_s: float | None = None
    ttft_s: float | None = None
    tbt_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("e2e_s", "ttft_s", "tbt_s"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(
                    f"SLA target {name} must be a positive number or None, got {value!r}"
                )


def percentiles(values: np.ndarray, ps: tuple[float, ...]) -> list[float]:
    """``np.percentile(values, ps)`` (its default ``"linear"`` method), bit for bit, but faster.

    NumPy's general implementation costs tens of microseconds per call in argument handling,
    which dominated the metrics of an episode. This partially sorts once (only the order
    statistics it needs land in place) and interpolates like NumPy does: virtual index
    ``(n - 1) * p / 100``, and ``a + (b - a) * g`` below ``g = 0.5`` but ``b - (b - a) * (1 - g)``
    from it. ``values`` must be non-empty and free of nan.

    Example:
        >>> percentiles(np.array([1.0, 2.0, 3.0, 4.0]), (50, 95))
        [2.5, 3.8499999999999996]
    """
    last = len(values) - 1
    spots = []  # (below, g) per percentile; below == last means the maximum
    for p in ps:
        virtual = last * (p / 100)
        below = last if virtual >= last else math.floor(virtual)
        spots.append((below, virtual - below))
    needed = sorted({i for below, _ in spots for i in (below, min(below + 1, last))})
    ordered = np.partition(values, needed)
    result = []
    for below, g in spots:
        if below == last:
            result.append(float(ordered[last]))
            continue
        a, b = float(ordered[below]), float(ordered[below + 1])
        result.append(a + (b - a) * g if g < 0.5 else b - (b - a) * (1 - g))
    return result


def _describe(prefix: str, values: np.ndarray, out: dict[str, float]) -> None:
    values = values[np.isfinite(values)]
    if values.size == 0:
        out[f"{prefix}_mean"] = float("nan")
        for p in PERCENTILES:
            out[f"{prefix}_p{p}"] = float("nan")
        return
    out[f"{prefix}_mean"] = float(np.add.reduce(values) / values.size)  # values.mean(), faster
    for p, v in zip(PERCENTILES, percentiles(values, PERCENTILES)):
        out[f"{prefix}_p{p}"] = float(v)


def _columns(requests: pd.DataFrame | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-request columns as numpy arrays, with ``status`` as codes into STATUS_NAMES."""
    if isinstance(requests, pd.DataFrame):
        names = [*_NUMERIC_COLUMNS, *([_GAP_COLUMN] if _GAP_COLUMN in requests else [])]
        columns = {name: requests[name].to_numpy() for name in names}
        status = requests["status"]
        if isinstance(status.dtype, pd.CategoricalDtype):
            columns["status"] = status.cat.codes.to_numpy()
        else:
            lookup = {name: i for i, name in enumerate(STATUS_NAMES)}
            columns["status"] = status.map(lookup).to_numpy()
        return columns
    missing = [c for c in (*_NUMERIC_COLUMNS, "status") if c not in requests]
    if missing:
        raise ValueError(f"request records lack the columns {missing}")
    names = [*_NUMERIC_COLUMNS, "status", *([_GAP_COLUMN] if _GAP_COLUMN in requests else [])]
    return {name: np.asarray(requests[name]) for name in names}


def summarize(
    requests: pd.DataFrame | Mapping[str, np.ndarray],
    *,
    end_s: float,
    n_gpus: int,
    busy_s: float,
    mean_batch_size: float,
    sla: SLATargets = SLATargets(),
    warmup_s: float = 0.0,
) -> dict[str, float]:
    """Summarise one run.

    Args:
        requests: Per-request columns, as a DataFrame from ``RequestRecords.to_frame`` or a
            mapping of arrays from ``RequestRecords.columns``.
        end_s: Simulated time at which the run stopped.
        n_gpus: Number of GPUs.
        busy_s: Total busy time of all GPUs together.
        mean_batch_size: Mean requests per batch (request level) or per iteration (iteration
            level), computed by the server.
        sla: Objectives to judge requests against.
        warmup_s: Requests arriving before this time are excluded.

    Returns:
        A flat dict of metrics (all floats; counts are whole numbers). Keys: ``requests``,
        ``arrived``, ``completed``, ``rejected``, ``in_system``, ``not_arrived``, ``duration_s``,
        ``throughput_rps``, ``throughput_tokens_per_s``, ``latency_s_*``, ``queueing_delay_s_*``,
        ``ttft_s_*``, ``tbt_s_*``, ``max_token_gap_s_*`` (each ``_mean``, ``_p50``, ``_p95``,
        ``_p99``), ``sla_attainment_e2e``/``_ttft``/``_tbt`` (for the objectives set),
        ``sla_attainment`` (all set objectives), ``goodput_rps``, ``gpu_utilization``,
        ``mean_batch_size``.

    Raises:
        ValueError: If ``warmup_s`` is not inside ``[0, end_s)`` (when ``end_s > 0``).
    """
    if warmup_s < 0 or (end_s > 0 and warmup_s >= end_s):
        raise ValueError(f"warmup_s must be in [0, end_s={end_s}), got {warmup_s!r}")
    col = _columns(requests)
    status = col["status"]
    in_window = (col["arrival_s"] >= warmup_s) & (status != _NOT_ARRIVED)
    done = in_window & (status == _COMPLETED)
    out: dict[str, float] = {
        "requests": float(status.size),
        "arrived": float(np.count_nonzero(in_window)),
        "completed": float(np.count_nonzero(done)),
        "rejected": float(np.count_nonzero(in_window & (status == _REJECTED))),
        "in_system": float(np.count_nonzero(in_window & (status == _IN_SYSTEM))),
        "not_arrived": float(np.count_nonzero(status == _NOT_ARRIVED)),
    }
    a = col["arrival_s"][done]
    c = col["completion_s"][done]
    f = col["first_token_s"][done]
    n_out = col["output_tokens"][done]
    gaps = col[_GAP_COLUMN][done] if _GAP_COLUMN in col else None
    start_s = col["start_s"][done]
    n_in_window = int(out["arrived"])
    duration = max(end_s - warmup_s, 0.0)
    out["duration_s"] = float(duration)
    latency = c - a
    ttft = f - a
    with np.errstate(divide="ignore", invalid="ignore"):
        tbt = np.where(n_out >= 2, (c - f) / (n_out - 1), np.nan)
    out["throughput_rps"] = a.size / duration if duration > 0 else float("nan")
    out["throughput_tokens_per_s"] = float(n_out.sum()) / duration if duration > 0 else float("nan")
    _describe("latency_s", latency, out)
    _describe("queueing_delay_s", start_s - a, out)
    _describe("ttft_s", ttft, out)
    _describe("tbt_s", tbt, out)
    if gaps is not None:
        _describe("max_token_gap_s", gaps, out)

    met_all = np.ones(a.size, dtype=bool)
    denominator = max(n_in_window, 1)
    checks = (
        ("e2e", sla.e2e_s, latency),
        ("ttft", sla.ttft_s, ttft),
        ("tbt", sla.tbt_s, gaps),
    )
    for name, target, values in checks:
        if target is None:
            continue
        if values is None:
            raise ValueError("a TBT target needs per-token times, which these records lack")
        met = values <= target
        met_all &= met
        out[f"sla_attainment_{name}"] = float(np.count_nonzero(met)) / denominator
    out["sla_attainment"] = float(np.count_nonzero(met_all)) / denominator
    out["goodput_rps"] = (
        float(np.count_nonzero(met_all)) / duration if duration > 0 else float("nan")
    )
    out["gpu_utilization"] = busy_s / (n_gpus * end_s) if end_s > 0 else float("nan")
    out["mean_batch_size"] = float(mean_batch_size)
    return out
