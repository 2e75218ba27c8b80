"""Capacity estimates: what ``load=1`` means for each env."""

from __future__ import annotations

import gymnasium as gym
import pytest

import llmsched_env  # noqa: F401  (registers the env ids)
from llmsched_env.capacity import batch_capacity_rps
from llmsched_env.latency import ExponentialBatchService, StaticBatchLatency
from llmsched_env.workload import make_workload_source


def test_exponential_service_has_its_exact_capacity_not_a_monte_carlo_one():
    """M/M/1: one request per batch, Exp(0.4 s) service, so the capacity is 1 / 0.4 exactly.

    Averaging 256 draws of the service time instead gave 2.639 (5.6% above), and ``load=0.95``
    an unstable queue.
    """
    env = gym.make(
        "llmsched/BatchScheduling-v0",
        workload="mm1",
        latency="mm1",
        max_batch_size=1,
        n_gpus=1,
        kv_memory="unlimited",
    )
    assert env.unwrapped.capacity_rps == pytest.approx(2.5, rel=1e-12)


def test_a_deterministic_model_is_timed_on_random_batches_of_the_largest_fitting_size():
    calibration = make_workload_source("mm1").calibration()
    model = StaticBatchLatency(alpha_s=0.5, beta_s_per_token=0.0, gamma=0.0)  # 0.5 s a batch
    rate = batch_capacity_rps(
        model, calibration, n_gpus=2, max_batch_size=4, kv_capacity_tokens=10**9
    )
    assert rate == pytest.approx(2 * 4 / 0.5)
    exponential = ExponentialBatchService(0.5)
    assert batch_capacity_rps(
        exponential, calibration, n_gpus=2, max_batch_size=4, kv_capacity_tokens=10**9
    ) == pytest.approx(rate)


def test_requests_rejected_at_arrival_are_left_out_of_the_estimate():
    """A request the env rejects takes no GPU time: averaged in, a few 3,000,000-token prompts
    put the estimate (and the arrival rate of ``load=0.9``) at a two-hundredth of the rest's."""
    from llmsched_env.capacity import iteration_capacity_rps, per_arrival, served_requests

    # Without chunked prefill a prompt longer than max_tokens is rejected at arrival.
    env = gym.make("llmsched/ContinuousBatching-v0", chunk_size=None, max_tokens=512)
    u = env.unwrapped
    everyone = u.source.calibration()
    served = everyone.prompt_tokens <= 512
    assert 0 < served.sum() < len(everyone)  # some, not all, are rejected
    assert len(u.capacity_calibration) == served.sum()
    # The arrival rate whose served requests fill the GPU: load is the share they ask for.
    mix = served_requests(everyone, served)
    expected = iteration_capacity_rps(u.latency, mix, n_gpus=1) / served.mean()
    assert u.capacity_rps == pytest.approx(expected, rel=1e-12)
    assert per_arrival(9.0, served) == pytest.approx(9.0 / served.mean())
    assert u.capacity_rps != pytest.approx(
        iteration_capacity_rps(u.latency, everyone, n_gpus=1), rel=1e-3
    )
    # A request whose KV need exceeds a GPU's memory, at the request level.
    batch = gym.make("llmsched/BatchScheduling-v0", kv_memory=2000).unwrapped
    everyone = batch.source.calibration()
    fits = everyone.prompt_tokens + everyone.output_tokens <= 2000
    assert 0 < fits.sum() < len(everyone)
    assert len(batch.capacity_calibration) == fits.sum()
    # Nothing the env serves: the estimate keeps every request (reset then names the cause).
    assert served_requests(everyone, ~fits & fits) is everyone


def test_a_request_one_replica_rejects_is_served_by_another_in_the_cluster_estimate():
    """Replicas with different KV memory: the cluster serves what some replica would, and each
    replica's share is its rate on that mix. Summing each replica's estimate on the requests it
    alone admits counted a small replica's rate on short requests only (10.6 req/s for a pair
    whose replicas serve about 1 each)."""
    kwargs = {"n_replicas": 2, "workload": "mooncake-conversation"}
    equal = gym.make("llmsched/Routing-v0", kv_memory=[100_000, 100_000], **kwargs).unwrapped
    mixed = gym.make("llmsched/Routing-v0", kv_memory=[3_000, 100_000], **kwargs).unwrapped
    assert mixed.capacity_rps == pytest.approx(equal.capacity_rps, rel=1e-12)
    one = gym.make("llmsched/ContinuousBatching-v0", kv_memory=100_000, workload=kwargs["workload"])
    assert equal.capacity_rps == pytest.approx(2 * one.unwrapped.capacity_rps, rel=1e-12)
