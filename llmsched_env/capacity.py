"""Capacity estimates, so that a load can be asked for as a fraction of what the system serves.

``load=0.9`` means an arrival rate of 0.9 times the estimate below. The estimates are computed
from the workload source's calibration data (never from an episode) and are deterministic. They
count only the requests the env would serve (:func:`served_requests`): one rejected at arrival
takes no GPU time. The estimate is then the arrival rate whose served requests fill the GPUs
(:func:`per_arrival`), so that ``load`` is the share of the GPUs' capacity the served requests
ask for, whatever share of the arrivals is rejected.

* Request level (static batches): the throughput of first-come-first-served batches of the
  largest size that fits in KV memory, ``n_gpus * b / E[T(batch of b random requests)]``, with the
  expectation taken over random batches drawn from the calibration data (and, for a stochastic
  latency model with a ``mean_service_s``, over its draws exactly). Binning by predicted
  length can do better than this (shorter batches), so loads somewhat above 1 can still be stable.
* Iteration level (continuous batching): the work bound ``n_gpus / marginal_request_s``, the rate
  at which the requests' token work alone fills the GPUs (per-iteration overheads are amortised
  away). Real schedulers saturate below it.
"""

from __future__ import annotations

import numpy as np

from llmsched_env.latency import BatchLatencyModel, IterationLatencyModel
from llmsched_env.statistics import sequential_sum
from llmsched_env.workload import Workload

_BATCH_SAMPLES = 256
_SEED = 20_240_917


def served_requests(calibration: Workload, served: np.ndarray) -> Workload:
    """The calibration requests an env would serve (``served``), for its capacity estimate.

    A request rejected at arrival (too large for a GPU's KV memory or token budget) takes no
    GPU time. Averaged in, a few such requests made the mean lengths describe requests no GPU
    runs: on a trace with 10% of 3,000,000-token prompts the estimate, and with it the arrival
    rate of ``load=0.9``, fell to a two-hundredth of that of the other requests. When the env
    would serve none of them the calibration is returned whole (its episodes then fail at
    reset, naming the setting that rejects their requests).

    Args:
        calibration: The workload source's calibration requests.
        served: Per request, whether the env would serve it.
    """
    served = np.asarray(served, dtype=bool)
    if served.all() or not served.any():
        return calibration
    return Workload(
        calibration.arrival_s[served],
        calibration.prompt_tokens[served],
        calibration.output_tokens[served],
        calibration.predicted_output_tokens[served],
        name=calibration.name,
    )


def per_arrival(served_capacity_rps: float, served: np.ndarray) -> float:
    """The arrival rate whose served requests come at ``served_capacity_rps``.

    ``served_capacity_rps`` divided by the share of the calibration requests the env serves
    (all of them when it serves none: see :func:`served_requests`).

    Example:
        >>> per_arrival(9.0, np.array([True, True, True, False]))  # a quarter rejected
        12.0
    """
    served = np.asarray(served, dtype=bool)
    share = float(served.mean()) if served.any() else 1.0
    return served_capacity_rps / share


def routed_capacity_rps(shares: np.ndarray, rates: np.ndarray) -> float:
    """The largest request rate a router can spread over replicas that each serve some requests.

    Requests fall into classes by the replicas that would serve them (a small replica rejects
    long requests a large one serves). Class ``c`` is a share ``shares[c]`` of the requests,
    and replica ``r`` alone serves it at ``rates[c, r]`` requests per second (0: it rejects
    them). The estimate is the largest total rate ``lam`` that some split of each class over its
    replicas serves with no replica over-full: maximise ``lam`` over rates ``x[c, r] >= 0``
    with ``sum_r x[c, r] = lam * shares[c]`` and ``sum_c x[c, r] / rates[c, r] <= 1``. A linear
    program (scipy's HiGHS); with one class served by every replica it is the sum of their
    rates, which is returned as such.

    Adding each replica's rate on the whole mix instead counted a replica on requests it
    rejects: a pair of a 64-token and a 100,000-token replica got twice the capacity of the
    large one alone, although the small one serves nothing.

    Args:
        shares: Per class, its share of the requests (positive, summing to 1).
        rates: ``(classes, replicas)`` service rates, 0 where the replica rejects the class;
            every class has a replica with a positive rate.

    Example:
        >>> shares = np.array([0.25, 0.75])  # short requests, then long ones only replica 1 takes
        >>> rates = np.array([[10.0, 10.0], [0.0, 2.0]])
        >>> round(routed_capacity_rps(shares, rates), 6)  # replica 1 full of long requests
        2.666667
    """
    shares = np.asarray(shares, dtype=np.float64)
    rates = np.asarray(rates, dtype=np.float64)
    n_classes, n_replicas = rates.shape
    if shares.shape != (n_classes,) or not np.all(shares > 0):
        raise ValueError(f"shares must be {n_classes} positive numbers, got {shares!r}")
    if not np.all(rates >= 0) or not np.all(rates.max(axis=1) > 0):
        raise ValueError(f"every class needs a replica with a positive rate, got rates {rates!r}")
    if n_classes == 1 and np.all(rates > 0):
        return sequential_sum(rates[0].tolist())
    from scipy.optimize import linprog  # only heterogeneous clusters need it

    pairs = np.argwhere(rates > 0)  # variables x[c, r], then lam
    n = len(pairs) + 1
    equal = np.zeros((n_classes, n))
    equal[pairs[:, 0], np.arange(len(pairs))] = 1.0
    equal[:, -1] = -shares
    busy = np.zeros((n_replicas, n))
    busy[pairs[:, 1], np.arange(len(pairs))] = 1.0 / rates[pairs[:, 0], pairs[:, 1]]
    objective = np.zeros(n)
    objective[-1] = -1.0
    result = linprog(
        objective,
        A_ub=busy,
        b_ub=np.ones(n_replicas),
        A_eq=equal,
        b_eq=np.zeros(n_classes),
        bounds=(0, None),
        method="highs",
    )
    if not result.success:  # cannot happen for valid input: lam = 0 is feasible, lam bounded
        raise RuntimeError(f"the capacity program failed: {result.message}")
    return float(result.x[-1])


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
    # A stochastic model's own draws would add Monte-Carlo noise (6% for exponential service
    # over 256 batches): its mean over them, when it gives one, is used instead.
    mean_service_s = getattr(latency, "mean_service_s", None)
    times = np.empty(_BATCH_SAMPLES)
    for i in range(_BATCH_SAMPLES):
        ids = rng.integers(0, n, size=b)
        prompt, output = calibration.prompt_tokens[ids], calibration.output_tokens[ids]
        if mean_service_s is not None:
            times[i] = mean_service_s(prompt, output)
        else:
            times[i], _ = latency.batch_timing(prompt, output, rng)
    return float(n_gpus * b / times.mean())


def iteration_capacity_rps(
    latency: IterationLatencyModel, calibration: Workload, *, n_gpus: int
) -> float:
    """Estimated capacity (work bound) of the iteration-level server in requests per second."""
    per_request = latency.marginal_request_s(
        float(np.mean(calibration.prompt_tokens)), float(np.mean(calibration.output_tokens))
    )
    return float(n_gpus / per_request)


def saturated_iteration_rps(
    latency: IterationLatencyModel,
    calibration: Workload,
    *,
    n_gpus: int,
    max_sequences: int,
    max_tokens: int,
    kv_capacity_tokens: float,
) -> float:
    """Throughput of the best steady mix of full iterations, per-iteration cost included.

    :func:`iteration_capacity_rps` leaves out the fixed cost of an iteration, assuming a batch
    large enough to amortise it. The limits of a GPU bound that batch: at most ``max_sequences``
    decoding sequences, ``max_tokens`` tokens per iteration, and the KV memory of the sequences
    admitted (each reserves ``E[prompt] + E[output]`` tokens). With ``d`` sequences decoding per
    iteration, a steady state also prefills ``d * E[prompt] / (E[output] - 1)`` prompt tokens per
    iteration (one new request for each ``E[output] - 1`` decode steps) and completes
    ``d / (E[output] - 1)`` requests per iteration. This function returns the best such rate over
    ``d`` within the limits, with the iteration's duration from ``latency.estimate_s``. For
    ``ContinuousBatching-v0`` with Llama-3.1-8B on an H100 (``latency="llama3.1-8b-h100"``,
    5.75 ms per iteration, 256 sequences) on the ``demo2`` workload it is 161 requests/s
    against a work bound of 367, as the per-iteration cost amortised over 256 sequences is
    larger than the token work (with the env's default latency model, measured on an RTX PRO
    6000, 50 against 81).

    Args:
        latency: Iteration latency model.
        calibration: Requests representative of the workload.
        n_gpus: Number of GPUs.
        max_sequences: Most sequences per iteration.
        max_tokens: Token budget per iteration.
        kv_capacity_tokens: KV memory of one GPU in tokens (may be infinite).

    Returns:
        Requests per second; infinite when requests have no decode steps (one-token outputs).
    """
    prompt = float(np.mean(calibration.prompt_tokens))
    steps = float(np.mean(calibration.output_tokens)) - 1.0
    if steps <= 0:
        return float("inf")
    footprint = max(prompt + steps + 1.0, 1.0)
    most = min(
        float(max_sequences),
        float(kv_capacity_tokens) / footprint,
        float(max_tokens) / (1.0 + prompt / steps),
    )
    best = 0.0
    for d in np.unique(np.append(np.geomspace(1.0, max(most, 1.0), 64), max(most, 1.0))):
        duration = latency.estimate_s(
            d * prompt / steps,
            d,
            context_tokens=d * (prompt + steps / 2.0),
            prefill_sequences=d / steps,
        )
        if duration > 0:
            best = max(best, d / steps / duration)
    return float(n_gpus * best) if best > 0 else float("inf")
