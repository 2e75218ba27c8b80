"""Capacity estimates, so that a load can be asked for as a fraction of what the system serves.

``load=0.9`` means an arrival rate of 0.9 times the estimate below. The estimates are computed
from the workload source's calibration data (never from an episode) and are deterministic.

* Request level (static batches): the throughput of first-come-first-served batches of the
  largest size that fits in KV memory, ``n_gpus * b / E[T(batch of b random requests)]``, with the
  expectation taken over random batches drawn from the calibration data. Binning by predicted
  length can do better than this (shorter batches), so loads somewhat above 1 can still be stable.
* Iteration level (continuous batching): the work bound ``n_gpus / marginal_request_s``, the rate
  at which the requests' token work alone fills the GPUs (per-iteration overheads are amortised
  away). Real schedulers saturate below it.
"""

from __future__ import annotations

import numpy as np

from llmsched_env.latency import BatchLatencyModel, IterationLatencyModel
from llmsched_env.workload import Workload

_BATCH_SAMPLES = 256
_SEED = 20_240_917


def largest_fitting_batch(
    calibration: Workload, kv_capacity_tokens: int, max_batch_size: int
) -> int:
    """Largest batch size whose mean KV need (prompt plus output tokens) fits in KV memory."""
    mean_need = float(np.mean(calibration.prompt_tokens + calibration.output_tokens))
    return int(max(1, min(max_batch_size, kv_capacity_tokens // max(mean_need, 1.0))))


def batch_capacity_rps(
    latency: BatchLatencyModel,
    calibration: Workload,
    *,
    n_gpus: int,
    max_batch_size: int,
    kv_capacity_tokens: int,
) -> float:
    """Estimated capacity of the request-level server in requests per second.

    Args:
        latency: Batch latency model.
        calibration: Requests representative of the workload.
        n_gpus: Number of GPUs.
        max_batch_size: Largest batch the scheduler may form.
        kv_capacity_tokens: KV memory of one GPU in tokens.

    Returns:
        ``n_gpus * b / mean service time`` of random batches of size ``b``.
    """
    rng = np.random.default_rng(_SEED)
    b = largest_fitting_batch(calibration, kv_capacity_tokens, max_batch_size)
    n = len(calibration)
    times = np.empty(_BATCH_SAMPLES)
    for i in range(_BATCH_SAMPLES):
        ids = rng.integers(0, n, size=b)
        times[i], _ = latency.batch_timing(
            calibration.prompt_tokens[ids], calibration.output_tokens[ids], rng
        )
    return float(n_gpus * b / times.mean())


def iteration_capacity_rps(
    latency: IterationLatencyModel, calibration: Workload, *, n_gpus: int
) -> float:
    """Estimated capacity (work bound) of the iteration-level server in requests per second."""
    per_request = latency.marginal_request_s(
        float(np.mean(calibration.prompt_tokens)), float(np.mean(calibration.output_tokens))
    )
    return float(n_gpus / per_request)
