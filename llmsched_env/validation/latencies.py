"""Per-request latencies (TTFT, TPOT, E2E) and their statistics, as vLLM's benchmark defines them.

For a request with arrival ``a``, first output token at ``f``, last at ``l`` and ``n`` output
tokens:

* TTFT = ``f - a`` (time to first token);
* TPOT = ``(l - f) / (n - 1)`` (time per output token after the first). It is undefined for
  ``n = 1``: such a request gets ``nan`` TPOT and is left out of the TPOT statistics, as vLLM's
  ``benchmarks/serve.py`` leaves it out (it only adds a TPOT when the output has more than one
  token). TTFT and E2E statistics include every request;
* E2E = ``l - a`` (end-to-end latency).

The statistics are the mean and the 50th, 90th and 99th percentiles, with NumPy's default
(linear) interpolation, which is also what vLLM's benchmark uses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmsched_env.workload.requests import MAX_TOKENS

#: Metric names, in report order.
METRICS = ("ttft", "tpot", "e2e")
#: Statistic names, in report order; ``pXX`` is the XXth percentile.
STATS = ("mean", "p50", "p90", "p99")
_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}


def request_latencies_ms(
    arrival_s: np.ndarray,
    first_token_s: np.ndarray,
    last_token_s: np.ndarray,
    output_tokens: np.ndarray,
) -> pd.DataFrame:
    """Each request's TTFT, TPOT and E2E in milliseconds.

    Args:
        arrival_s: Arrival times (s).
        first_token_s: First-token times (s), on the same clock.
        last_token_s: Last-token times (s).
        output_tokens: Output tokens per request (>= 1).

    Returns:
        Columns ``output_tokens, ttft_ms, tpot_ms, e2e_ms``, one row per request in input order;
        ``tpot_ms`` is ``nan`` exactly where ``output_tokens == 1`` (see the module docstring).

    Raises:
        ValueError: If the arrays differ in length, a value is not finite, an output count is not
            a whole number in ``[1, MAX_TOKENS]``, or a request's first token comes before its
            arrival or its last token before its first (the message names the array, the index
            and the value).

    Example:
        >>> frame = request_latencies_ms([0.0, 1.0], [0.5, 1.25], [2.5, 1.25], [5, 1])
        >>> frame["ttft_ms"].tolist(), frame["tpot_ms"].tolist(), frame["e2e_ms"].tolist()
        ([500.0, 250.0], [500.0, nan], [2500.0, 250.0])
    """
    columns = {
        "arrival_s": np.asarray(arrival_s, dtype=float),
        "first_token_s": np.asarray(first_token_s, dtype=float),
        "last_token_s": np.asarray(last_token_s, dtype=float),
        "output_tokens": np.asarray(output_tokens, dtype=float),
    }
    sizes = {name: values.shape for name, values in columns.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the arrays must have one shape, got {sizes}")
    for name, values in columns.items():
        _first_bad(name, values, ~np.isfinite(values), "must be finite")
    arrival, first, last, counts = columns.values()
    _first_bad(
        "output_tokens",
        counts,
        (counts < 1) | (counts > MAX_TOKENS) | (counts != np.floor(counts)),
        f"must be a whole number in [1, {MAX_TOKENS}]",
    )
    _first_bad(
        "first_token_s", first, first < arrival, "must not be before", ("arrival_s", arrival)
    )
    _first_bad("last_token_s", last, last < first, "must not be before", ("first_token_s", first))
    output = counts.astype(np.int64)
    decode_steps = output - 1
    tpot = np.full(output.shape, np.nan)
    has_tpot = decode_steps > 0
    tpot[has_tpot] = (last[has_tpot] - first[has_tpot]) / decode_steps[has_tpot] * 1e3
    return pd.DataFrame(
        {
            "output_tokens": output,
            "ttft_ms": (first - arrival) * 1e3,
            "tpot_ms": tpot,
            "e2e_ms": (last - arrival) * 1e3,
        }
    )


def _first_bad(
    name: str,
    values: np.ndarray,
    bad: np.ndarray,
    requirement: str,
    other: tuple[str, np.ndarray] | None = None,
) -> None:
    """Raise naming the first entry of ``values`` where ``bad`` holds (if any).

    ``other`` is the array the requirement compares with (its name ends the requirement), whose
    entry is shown beside the bad one.
    """
    if not bad.any():
        return
    i = int(np.argmax(bad))
    if other is None:
        raise ValueError(f"{name} {requirement}, got {name}[{i}] = {float(values[i])!r}")
    other_name, other_values = other
    raise ValueError(
        f"{name} {requirement} {other_name}, got {name}[{i}] = {float(values[i])!r} and "
        f"{other_name}[{i}] = {float(other_values[i])!r}"
    )


def latency_stats(latencies: pd.DataFrame) -> pd.DataFrame:
    """Mean, p50, p90 and p99 of each metric of :func:`request_latencies_ms`.

    TPOT statistics are over the requests with more than one output token; when there are none,
    they are ``nan`` (undefined, not zero).

    Args:
        latencies: A frame from :func:`request_latencies_ms`.

    Raises:
        ValueError: If a column of :func:`request_latencies_ms` is missing.

    Returns:
        Columns ``metric, stat, value_ms``: one row per metric in :data:`METRICS` and stat in
        :data:`STATS`, in that order.

    Example:
        >>> frame = request_latencies_ms([0, 0, 0], [1, 2, 3], [1, 3, 5], [1, 2, 3])
        >>> stats = latency_stats(frame).set_index(["metric", "stat"])["value_ms"]
        >>> float(stats["ttft", "mean"]), float(stats["tpot", "mean"]), float(stats["e2e", "p50"])
        (2000.0, 1000.0, 3000.0)
    """
    needed = ["output_tokens", *(f"{metric}_ms" for metric in METRICS)]
    missing = [column for column in needed if column not in latencies]
    if missing:
        raise ValueError(
            f"latencies lacks column(s) {missing}; expected a frame of request_latencies_ms "
            f"with {needed}"
        )
    rows = []
    for metric in METRICS:
        values = latencies[f"{metric}_ms"].to_numpy(dtype=float)
        if metric == "tpot":
            values = values[latencies["output_tokens"].to_numpy() > 1]
        for stat in STATS:
            rows.append((metric, stat, _stat(values, stat)))
    return pd.DataFrame(rows, columns=["metric", "stat", "value_ms"])


def _stat(values: np.ndarray, stat: str) -> float:
    if values.size == 0:
        return float("nan")
    if stat == "mean":
        return float(np.mean(values))
    return float(np.percentile(values, _PERCENTILES[stat]))
