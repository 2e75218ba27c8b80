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

from llmsched_env.arguments import ArgumentTypeError, is_real
from llmsched_env.jit import njit
from llmsched_env.statistics import describe_rows

#: The states a request ends a run in; ``status`` columns hold indices into this tuple (see
#: :mod:`llmsched_env.sim.records`).
STATUS_NAMES = ("not_arrived", "in_system", "completed", "rejected")
PERCENTILES = (50, 95, 99)
#: The percentiles as fractions, divided as ``np.percentile`` divides them.
_PERCENTILE_FRACTIONS = np.true_divide(PERCENTILES, 100)
_NUMERIC_COLUMNS = ("arrival_s", "start_s", "first_token_s", "completion_s", "output_tokens")
#: Reported only by servers that resolve individual token times (the iteration level).
_GAP_COLUMN = "max_token_gap_s"
#: Read when present: token gaps, and prompt lengths (for a TTFT target per prompt token).
_OPTIONAL_COLUMNS = (_GAP_COLUMN, "prompt_tokens")
_NOT_ARRIVED, _IN_SYSTEM, _COMPLETED, _REJECTED = range(4)
#: An empty array: "not given" for the optional per-request arrays of request_stats.
_EMPTY = np.zeros(0)


@dataclass(frozen=True)
class SLATargets:
    """Service-level objectives a request is judged against; ``None`` disables one.

    Attributes:
        e2e_s: End-to-end latency target (deadline after arrival).
        ttft_s: Time-to-first-token target.
        tbt_s: Largest allowed gap between two consecutive output tokens.
        ttft_per_token_s: Time added to the TTFT target per prompt token: request *i* must
            see its first token within ``ttft_s + ttft_per_token_s * p_i`` of its arrival
            (``p_i`` its prompt tokens), a target that grows with the prefill work, for
            workloads whose long prompts no fixed target suits. 0 (the default) keeps one
            target for every request.
    """

    e2e_s: float | None = None
    ttft_s: float | None = None
    tbt_s: float | None = None
    ttft_per_token_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("e2e_s", "ttft_s", "tbt_s"):
            value = getattr(self, name)
            if value is None:
                continue
            if not is_real(value):
                raise ArgumentTypeError(
                    f"SLA target {name} must be a positive number or None, got {value!r}"
                )
            if not (np.isfinite(value) and value > 0):
                raise ValueError(
                    f"SLA target {name} must be a positive number or None, got {value!r}"
                )
            object.__setattr__(self, name, float(value))
        per_token = self.ttft_per_token_s
        expected = f"SLA target ttft_per_token_s must be a finite number >= 0, got {per_token!r}"
        if not is_real(per_token):
            raise ArgumentTypeError(expected)
        if not (np.isfinite(per_token) and per_token >= 0):
            raise ValueError(expected)
        object.__setattr__(self, "ttft_per_token_s", float(per_token))
        if per_token > 0 and self.ttft_s is None:
            raise ValueError(
                f"ttft_per_token_s={per_token!r} extends a TTFT target, but ttft_s is None"
            )

    def ttft_targets(self, prompt_tokens: np.ndarray) -> np.ndarray:
        """Each request's TTFT target (seconds) from its prompt tokens (``ttft_s`` must be set)."""
        if self.ttft_s is None:
            raise ValueError("no TTFT target is set (ttft_s is None)")
        return self.ttft_s + self.ttft_per_token_s * np.asarray(prompt_tokens, dtype=np.float64)


# What request_stats counts, in its ``counts`` array.
(
    _ARRIVED,
    _DONE,
    _REJECTED_IN_WINDOW,
    _IN_SYSTEM_IN_WINDOW,
    _NOT_ARRIVED_COUNT,
    _OUTPUT_TOKENS,
    _MET_E2E,
    _MET_TTFT,
    _MET_TBT,
    _MET_ALL,
) = range(10)
# Rows of its ``values`` array (finite values of the completed requests, in request order).
_LATENCY, _QUEUEING, _TTFT, _TBT, _GAP = range(5)


@njit(cache=True)
def request_stats(
    arrival, start, first_token, completion, output, status, gaps, warmup_s, targets, ttft_deadline
):
    """One pass over the requests: what :func:`summarize` reports, before percentiles.

    Args:
        arrival: Arrival times (float64, as every time below).
        start: Start of service.
        first_token: First output token.
        completion: Last output token.
        output: Output tokens (int64).
        status: Codes into :data:`STATUS_NAMES`.
        gaps: Largest token gap per request, or an empty array when not resolved.
        warmup_s: Start of the measurement window.
        targets: ``[e2e_s, ttft_s, tbt_s]``, ``nan`` for an objective that is not set.
        ttft_deadline: Per request, the time its first token is due (with a target per prompt
            token), or an empty array (due ``ttft_s`` after arrival).

    A request meets a deadline when its event comes at or before ``arrival + target``, the
    comparison the servers make as they count misses (``completion - arrival <= target`` can
    round the other way), so the attainments agree with the rewards.

    Returns:
        ``(counts, values, lengths)``: counts indexed by ``_ARRIVED`` ... ``_MET_ALL``; per
        quantity (``_LATENCY`` ... ``_GAP``) the finite values of the window's completed
        requests in request order, ``values[q, :lengths[q]]``.
    """
    n = arrival.shape[0]
    has_gaps = gaps.shape[0] == n
    has_ttft_deadline = ttft_deadline.shape[0] == n
    counts = np.zeros(10, dtype=np.int64)
    values = np.empty((5, n))
    lengths = np.zeros(5, dtype=np.int64)
    e2e, ttft_target, tbt_target = targets[0], targets[1], targets[2]
    for i in range(n):
        code = status[i]
        if code == _NOT_ARRIVED:
            counts[_NOT_ARRIVED_COUNT] += 1
            continue
        if not arrival[i] >= warmup_s:
            continue
        counts[_ARRIVED] += 1
        if code == _REJECTED:
            counts[_REJECTED_IN_WINDOW] += 1
        elif code == _IN_SYSTEM:
            counts[_IN_SYSTEM_IN_WINDOW] += 1
        if code != _COMPLETED:
            continue
        counts[_DONE] += 1
        counts[_OUTPUT_TOKENS] += output[i]
        a = arrival[i]
        latency = completion[i] - a
        ttft = first_token[i] - a
        tbt = (completion[i] - first_token[i]) / (output[i] - 1) if output[i] >= 2 else np.nan
        gap = gaps[i] if has_gaps else np.nan
        for row, x in (
            (_LATENCY, latency),
            (_QUEUEING, start[i] - a),
            (_TTFT, ttft),
            (_TBT, tbt),
            (_GAP, gap),
        ):
            if np.isfinite(x):
                values[row, lengths[row]] = x
                lengths[row] += 1
        met_all = True
        if not np.isnan(e2e):
            met = completion[i] <= a + e2e
            counts[_MET_E2E] += met
            met_all = met_all and met
        if not np.isnan(ttft_target):
            met = first_token[i] <= (ttft_deadline[i] if has_ttft_deadline else a + ttft_target)
            counts[_MET_TTFT] += met
            met_all = met_all and met
        if not np.isnan(tbt_target):
            met = gap <= tbt_target
            counts[_MET_TBT] += met
            met_all = met_all and met
        counts[_MET_ALL] += met_all
    return counts, values, lengths


#: The quantities summarised by mean and percentiles, by row of ``request_stats``' values.
_DESCRIBED = ("latency_s", "queueing_delay_s", "ttft_s", "tbt_s", "max_token_gap_s")
#: What each quantity is summarised by, in the columns of ``describe_rows``.
_STATISTICS = ("mean", *(f"p{p}" for p in PERCENTILES))
#: Every value :func:`summary_values` computes, in its order (which is :func:`summarize`'s).
SUMMARY_FIELDS = (
    "requests",
    "arrived",
    "completed",
    "rejected",
    "in_system",
    "not_arrived",
    "duration_s",
    "throughput_rps",
    "throughput_tokens_per_s",
    *(f"{quantity}_{stat}" for quantity in _DESCRIBED for stat in _STATISTICS),
    "sla_attainment_e2e",
    "sla_attainment_ttft",
    "sla_attainment_tbt",
    "sla_attainment",
    "goodput_rps",
    "gpu_utilization",
    "mean_batch_size",
)
_N_FIELDS = len(SUMMARY_FIELDS)
_FIELD = {name: i for i, name in enumerate(SUMMARY_FIELDS)}
_FIRST_DESCRIBED = _FIELD["latency_s_mean"]
_ATTAINMENT = _FIELD["sla_attainment_e2e"]


def summary_fields(sla: SLATargets, *, has_gaps: bool) -> list[tuple[int, str]]:
    """The metrics :func:`summarize` reports, each with its index in :data:`SUMMARY_FIELDS`.

    Token gaps only when the records resolve them, an objective's attainment only when its
    target is set; before the counts that only some servers report.
    """
    skipped = set()
    if not has_gaps:
        skipped.update(f"max_token_gap_s_{stat}" for stat in _STATISTICS)
    for name, target in (("e2e", sla.e2e_s), ("ttft", sla.ttft_s), ("tbt", sla.tbt_s)):
        if target is None:
            skipped.add(f"sla_attainment_{name}")
    return [(i, name) for i, name in enumerate(SUMMARY_FIELDS) if name not in skipped]


def target_array(sla: SLATargets) -> np.ndarray:
    """``[e2e_s, ttft_s, tbt_s]`` of ``sla`` (``nan`` for a target not set), for the kernels."""
    return np.array([np.nan if t is None else float(t) for t in (sla.e2e_s, sla.ttft_s, sla.tbt_s)])


@njit(cache=True)
def summary_values(
    counts, values, lengths, n_requests, warmup_s, end_s, n_gpus, busy_s, mean_batch_size
):
    """Every value of :data:`SUMMARY_FIELDS` for one run, in one compiled call.

    Args:
        counts: What :func:`request_stats` counted.
        values: Its finite values per quantity.
        lengths: How many of each.
        n_requests: The run's requests.
        warmup_s: Start of the measurement window.
        end_s: Simulated time at which the run stopped.
        n_gpus: Number of GPUs.
        busy_s: Their total busy time.
        mean_batch_size: Mean requests per batch or iteration.

    An objective without a target, or token gaps the records lack, get a value all the same;
    :func:`summary_fields` says which to report.
    """
    out = np.empty(_N_FIELDS)
    out[0] = n_requests
    out[1] = counts[_ARRIVED]
    out[2] = counts[_DONE]
    out[3] = counts[_REJECTED_IN_WINDOW]
    out[4] = counts[_IN_SYSTEM_IN_WINDOW]
    out[5] = counts[_NOT_ARRIVED_COUNT]
    duration = max(end_s - warmup_s, 0.0)
    out[6] = duration
    out[7] = counts[_DONE] / duration if duration > 0 else np.nan
    out[8] = counts[_OUTPUT_TOKENS] / duration if duration > 0 else np.nan
    # Mean and percentiles of each quantity, as np.mean and np.percentile give them.
    described = describe_rows(values, lengths, _PERCENTILE_FRACTIONS)
    for row in range(described.shape[0]):
        for column in range(described.shape[1]):
            out[_FIRST_DESCRIBED + row * described.shape[1] + column] = described[row, column]
    denominator = max(counts[_ARRIVED], 1)
    out[_ATTAINMENT] = counts[_MET_E2E] / denominator
    out[_ATTAINMENT + 1] = counts[_MET_TTFT] / denominator
    out[_ATTAINMENT + 2] = counts[_MET_TBT] / denominator
    out[_ATTAINMENT + 3] = counts[_MET_ALL] / denominator
    out[_ATTAINMENT + 4] = counts[_MET_ALL] / duration if duration > 0 else np.nan
    out[_ATTAINMENT + 5] = _busy_share(busy_s, n_gpus * end_s) if end_s > 0 else np.nan
    out[_ATTAINMENT + 6] = mean_batch_size
    return out


def _columns(requests: pd.DataFrame | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-request columns as numpy arrays, with ``status`` as codes into STATUS_NAMES."""
    if isinstance(requests, pd.DataFrame):
        names = [*_NUMERIC_COLUMNS, *(c for c in _OPTIONAL_COLUMNS if c in requests)]
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
    names = [*_NUMERIC_COLUMNS, "status", *(c for c in _OPTIONAL_COLUMNS if c in requests)]
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
    preemptions: int | None = None,
    recomputed_tokens: int | None = None,
    prefix_hit_tokens: int | None = None,
    prefix_queried_tokens: int | None = None,
    preempted_prefix_hit_tokens: int | None = None,
    preempted_prefix_queried_tokens: int | None = None,
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
        preemptions: Preemptions over the whole run, reported by servers that can preempt
            (the iteration level; 0 with reserved KV memory). ``None`` leaves the key out.
        recomputed_tokens: KV tokens the preemptions discarded (computed again), over the
            whole run; ``None`` leaves the key out.
        prefix_hit_tokens: Tokens admissions skipped thanks to the prefix cache (0 without
            one); ``None`` leaves the key out.
        prefix_queried_tokens: Tokens admitted requests had to compute before the cache was
            looked up; ``None`` leaves the key out.
        preempted_prefix_hit_tokens: The part of ``prefix_hit_tokens`` skipped by readmissions
            after a preemption; ``None`` leaves the key out.
        preempted_prefix_queried_tokens: The part of ``prefix_queried_tokens`` of readmissions
            after a preemption; ``None`` leaves the key out. With the three others it gives
            ``prefix_hit_rate``, over first admissions only, as vLLM reports it.

    Returns:
        A flat dict of metrics (all floats; counts are whole numbers). Keys: ``requests``,
        ``arrived``, ``completed``, ``rejected``, ``in_system``, ``not_arrived``, ``duration_s``,
        ``throughput_rps``, ``throughput_tokens_per_s``, ``latency_s_*``, ``queueing_delay_s_*``,
        ``ttft_s_*``, ``tbt_s_*``, ``max_token_gap_s_*`` (each ``_mean``, ``_p50``, ``_p95``,
        ``_p99``), ``sla_attainment_e2e``/``_ttft``/``_tbt`` (for the objectives set),
        ``sla_attainment`` (all set objectives), ``goodput_rps``, ``gpu_utilization``,
        ``mean_batch_size``, and ``preemptions``, ``recomputed_tokens`` and the four prefix
        counts when given, with ``prefix_hit_rate`` when a first admission queried the cache.

    Raises:
        ValueError: If ``warmup_s`` is not inside ``[0, end_s)`` (when ``end_s > 0``).
    """
    if warmup_s < 0 or (end_s > 0 and warmup_s >= end_s):
        raise ValueError(f"warmup_s must be in [0, end_s={end_s}), got {warmup_s!r}")
    col = _columns(requests)
    has_gaps = _GAP_COLUMN in col
    if sla.tbt_s is not None and not has_gaps:
        raise ValueError("a TBT target needs per-token times, which these records lack")
    targets = target_array(sla)
    ttft_deadline = _EMPTY
    if sla.ttft_per_token_s > 0:
        if "prompt_tokens" not in col:
            raise ValueError(
                "a TTFT target per prompt token needs the requests' prompt_tokens column"
            )
        # Summed in the servers' order: arrival, then the target, then the per-token part.
        prompt = np.asarray(col["prompt_tokens"], dtype=np.float64)
        arrival = np.asarray(col["arrival_s"], dtype=np.float64)
        ttft_deadline = arrival + sla.ttft_s + sla.ttft_per_token_s * prompt
    counts, values, lengths = request_stats(
        np.asarray(col["arrival_s"], dtype=np.float64),
        np.asarray(col["start_s"], dtype=np.float64),
        np.asarray(col["first_token_s"], dtype=np.float64),
        np.asarray(col["completion_s"], dtype=np.float64),
        np.asarray(col["output_tokens"], dtype=np.int64),
        np.asarray(col["status"], dtype=np.int64),
        np.asarray(col[_GAP_COLUMN], dtype=np.float64) if has_gaps else _EMPTY,
        float(warmup_s),
        targets,
        ttft_deadline,
    )
    summary = summary_values(
        counts,
        values,
        lengths,
        len(col["status"]),
        float(warmup_s),
        float(end_s),
        int(n_gpus),
        float(busy_s),
        float(mean_batch_size),
    ).tolist()
    out = {name: summary[i] for i, name in summary_fields(sla, has_gaps=has_gaps)}
    if preemptions is not None:
        out["preemptions"] = float(preemptions)
    if recomputed_tokens is not None:
        out["recomputed_tokens"] = float(recomputed_tokens)
    if prefix_hit_tokens is not None:
        out["prefix_hit_tokens"] = float(prefix_hit_tokens)
    if prefix_queried_tokens is not None:
        out["prefix_queried_tokens"] = float(prefix_queried_tokens)
    if preempted_prefix_hit_tokens is not None:
        out["preempted_prefix_hit_tokens"] = float(preempted_prefix_hit_tokens)
    if preempted_prefix_queried_tokens is not None:
        out["preempted_prefix_queried_tokens"] = float(preempted_prefix_queried_tokens)
        rate = prefix_hit_rate(
            prefix_hit_tokens or 0,
            prefix_queried_tokens or 0,
            preempted_prefix_hit_tokens or 0,
            preempted_prefix_queried_tokens,
        )
        if math.isfinite(rate):
            out["prefix_hit_rate"] = rate
    return out


#: How far outside [0, 1] rounding can put a busy share (a few ulps of 1), clipped.
_ROUNDING = 1e-12


@njit(cache=True)
def _busy_share(busy_s: float, capacity_s: float) -> float:
    """``busy_s / capacity_s``, a share of the GPUs' time.

    Busy time is summed from rounded event times (a batch's end is its start plus its service,
    rounded), so a run that is all idle or all busy can come out a few ulps outside
    ``[0, 1]`` (-2e-17, 1.0000000000000002); such a share is clipped to the bound. A larger
    excess would be a fault and is left as it is, to show.
    """
    share = busy_s / capacity_s
    if -_ROUNDING < share < 0.0:
        return 0.0
    if 1.0 < share < 1.0 + _ROUNDING:
        return 1.0
    return share


def prefix_hit_rate(
    hit_tokens: float,
    queried_tokens: float,
    preempted_hit_tokens: float,
    preempted_queried_tokens: float,
) -> float:
    """The prefix cache hit rate as vLLM reports it: over first admissions only.

    vLLM counts the lookups of requests readmitted after a preemption apart (its
    ``preempted_queries``, vllm-project/vllm#25787): recomputing a preempted request's own
    blocks is not a prefix shared with other requests.

    Returns:
        Hit tokens over queried tokens of first admissions; ``nan`` when there were none.

    Example:
        >>> prefix_hit_rate(300, 1000, 200, 400)  # 100 of the 600 first-admission tokens
        0.16666666666666666
    """
    queried = queried_tokens - preempted_queried_tokens
    return (hit_tokens - preempted_hit_tokens) / queried if queried > 0 else math.nan
