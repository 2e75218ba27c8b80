"""Theory checks of the simulation core: queueing formulas and the Multi-Bin theorem.

Each check drives a server with a plain scheduling callback (no environment) on a long run and
compares a measured quantity with its closed form, within the tolerance stated in the test.
"""

import numpy as np
import pytest

from llmsched_env.latency import ExponentialBatchService, MaxServiceLatency, make_iteration_latency
from llmsched_env.sim import BatchServer, IterationServer, simulate
from llmsched_env.workload import make_workload_source
from tests.conftest import multibin_batch_time_by_integration


def batch_means_ci(values: np.ndarray, n_batches: int = 20) -> tuple[float, float]:
    """Mean and 95% half-width by the method of batch means (for correlated samples)."""
    means = np.array([b.mean() for b in np.array_split(values, n_batches)])
    t_975 = 2.093  # Student t quantile, 19 degrees of freedom
    return float(values.mean()), float(t_975 * means.std(ddof=1) / np.sqrt(n_batches))


def test_mm1_mean_response_time_through_the_batch_server():
    """M/M/1, lambda = 2, mean service 0.4 s: E[T] = 1 / (mu - lambda) = 2.0 s."""
    rng = np.random.default_rng(2024)
    w = make_workload_source("mm1").sample(200_000, rng, arrival_rate_rps=2.0)
    s = BatchServer(
        w, n_gpus=1, latency=ExponentialBatchService(0.4), kv_capacity_tokens=10, rng=rng
    )
    simulate(s, lambda server: server.dispatch(0, 1))
    response = s.records.completion_s - w.arrival_s
    mean, half_width = batch_means_ci(response[10_000:])
    assert abs(mean - 2.0) <= half_width, (mean, half_width)
    assert half_width < 0.1  # the run is long enough for the check to mean something


def multibin_throughput(k: int, batch_size: int = 128, n_batches_per_bin: int = 150) -> float:
    """Saturated throughput of Multi-Bin batching with k bins: full batches, formation order."""
    rng = np.random.default_rng(k)
    n = batch_size * k * n_batches_per_bin
    # Service U(1, 20) s: output tokens U{100..2000} at 0.01 s per token; arrivals far above
    # capacity so that the server is saturated.
    w = make_workload_source("uniform").sample(n, rng, arrival_rate_rps=100.0)
    edges = 100 + np.arange(1, k) / k * 1901
    s = BatchServer(
        w,
        n_gpus=1,
        latency=MaxServiceLatency(0.01),
        kv_capacity_tokens=10**9,
        rng=rng,
        queue_of=np.searchsorted(edges, w.predicted_output_tokens, side="right"),
        n_queues=k,
    )

    def decide(server: BatchServer) -> None:
        # A bin forms a batch when it holds B requests; batches are served in formation order,
        # i.e. by the arrival time of each full bin's B-th request.
        formed = [
            (w.arrival_s[server.order[h + batch_size - 1]], q)
            for q, (h, t) in enumerate(zip(server.head, server.tail))
            if t - h >= batch_size
        ]
        if formed:
            server.dispatch(min(formed)[1], batch_size)
        elif server.can_wait():
            server.wait()
        else:  # end of the run: flush the partial bins
            server.dispatch(int(np.argmax(server.queue_lengths())), batch_size)

    simulate(s, decide)
    full = [(service, size) for _, _, service, size in s.batches if size == batch_size]
    return sum(size for _, size in full) / sum(service for service, _ in full)


def theorem_4_2(k: int, batch_size: int = 128, l_min: float = 1.0, l_max: float = 20.0) -> float:
    mean = (l_max + l_min) / 2
    expected_batch_time = (
        mean + (batch_size / (batch_size + 1) * l_max + l_min / (batch_size + 1) - mean) / k
    )
    return batch_size / expected_batch_time


@pytest.mark.parametrize("batch_size", [1, 8, 128])
@pytest.mark.parametrize("k", [1, 2, 3, 5, 16])
def test_theorem_4_2_formula_is_the_order_statistics_integral(k, batch_size):
    """The closed form the simulation is held to, against numerical integration of E[max]."""
    by_integration = multibin_batch_time_by_integration(k, batch_size)
    assert theorem_4_2(k, batch_size) == pytest.approx(batch_size / by_integration, rel=1e-8)


def test_theorem_4_2_limits():
    """One bin is plain batching (E[max of B uniforms]); many bins approach B / E[l]."""
    assert theorem_4_2(1) == pytest.approx(128 / (1 + 128 / 129 * 19), rel=1e-12)
    assert theorem_4_2(10**6) == pytest.approx(128 / 10.5, rel=1e-6)
    assert all(theorem_4_2(k) < theorem_4_2(k + 1) for k in range(1, 50))


def test_multibin_throughput_matches_theorem_4_2():
    """Throughput within 1.5% of Theorem 4.2 for k = 1..5 and strictly increasing in k."""
    measured = [multibin_throughput(k) for k in range(1, 6)]
    for k, value in enumerate(measured, start=1):
        assert value == pytest.approx(theorem_4_2(k), rel=0.015), (k, value)
    assert all(b > a for a, b in zip(measured, measured[1:]))


def run_to_completion(server: IterationServer) -> None:
    """Scheduler A: a job's prefill, then its decode steps alone; the next job waits."""
    if server.running[server.decision_gpu].size:
        server.run_iteration(1, 0, 0)
    else:
        server.run_iteration(0, server.max_tokens, 1)


def test_simulator_a_run_to_completion_capacity():
    """mu_A = 1 / ((E[C] + L E[A]) + B (E[C] + E[A])) = 1.1876 jobs/s; lambda = 2 overloads it."""
    rng = np.random.default_rng(11)
    w = make_workload_source("sim-a").sample(3000, rng, arrival_rate_rps=2.0)
    s = IterationServer(
        w,
        n_gpus=1,
        latency=make_iteration_latency("sim-a"),
        kv_capacity_tokens=10**6,
        max_tokens=4096,
        max_sequences=64,
        rng=rng,
    )
    simulate(s, run_to_completion)
    throughput = s.n_completed / s.now
    mu_a = 1 / ((0.01 + 128 * 0.001) + 64 * (0.01 + 0.001))
    assert mu_a == pytest.approx(1.1876, abs=1e-4)
    assert throughput == pytest.approx(mu_a, rel=0.02)
