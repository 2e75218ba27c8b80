"""Capacity estimates: what ``load=1`` means for each env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401  (registers the env ids)
from llmsched_env.capacity import (
    batch_capacity_rps,
    per_arrival,
    routed_capacity_rps,
    served_requests,
)
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
    from llmsched_env.capacity import iteration_capacity_rps

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
    """Replicas with different KV memory: each serves only what it admits, and the estimate is
    the rate the best split of the requests over them serves.

    Adding each replica's rate on the whole mix counted the small replica on the long requests
    it rejects: a 64-token replica (which serves nothing) doubled a 100,000-token one's
    capacity, and on Mooncake's conversation trace a 3,000-token replica beside a
    100,000-token one gave the capacity of two large ones (1.95 req/s), so ``load=0.5`` kept
    the large replica busy all the time (TTFT p50 66 s). Rating each class by the work of its
    mean lengths instead made that pair's estimate lower than the large replica's alone.
    """
    kwargs = {"n_replicas": 2, "workload": "mooncake-conversation"}
    one = gym.make("llmsched/ContinuousBatching-v0", kv_memory=100_000, workload=kwargs["workload"])
    big = one.unwrapped.capacity_rps
    equal = gym.make("llmsched/Routing-v0", kv_memory=[100_000, 100_000], **kwargs).unwrapped
    assert equal.capacity_rps == pytest.approx(2 * big, rel=1e-12)
    useless = gym.make("llmsched/Routing-v0", kv_memory=[64, 100_000], **kwargs).unwrapped
    assert useless.capacity_rps == pytest.approx(big, rel=1e-9)

    mixed = gym.make("llmsched/Routing-v0", kv_memory=[3_000, 100_000], **kwargs).unwrapped
    small, large = mixed._views
    served = small.capacity_served | large.capacity_served
    assert 0.1 < small.capacity_served.sum() / served.sum() < 0.5
    assert not (small.capacity_served & ~large.capacity_served).any()
    # The large replica serving the long requests alone bounds the rate; the small one takes
    # every short request (it has time to spare), so the bound is the estimate. A long
    # request's time on the large replica: its time per request of the mix, scaled by the
    # long requests' share of the per-request work.
    mix = served_requests(large.source.calibration(), served)
    long_only = ~small.capacity_served[served]
    work = large.request_work_s(mix)
    long_s = work[long_only].mean() / work.mean() / large.served_capacity_rps(mix)
    expected = per_arrival(1.0 / (long_only.mean() * long_s), served)
    assert mixed.capacity_rps == pytest.approx(expected, rel=1e-9)
    assert big < mixed.capacity_rps < 0.55 * equal.capacity_rps


def test_less_memory_for_a_replica_never_raises_the_cluster_estimate():
    """With replicas of different speeds, a replica with less memory split the requests into
    classes the program could send where each was relatively cheapest, which the sum of rates
    of replicas serving everything does not: 62.5 req/s against 57.9 with more memory."""
    fast, slow = "llama3.1-8b-h100", "vllm0.19-rtxpro6000-llama3.1-8b"

    def capacity(kv_memory):
        env = gym.make(
            "llmsched/Routing-v0",
            n_replicas=2,
            workload="azure-conv",
            latency=[fast, slow],
            kv_memory=kv_memory,
        )
        return env.unwrapped.capacity_rps

    full = capacity([slow, slow])  # the presets' memory: every request fits both
    assert capacity([3_000, slow]) < full
    assert capacity([64, slow]) < capacity([3_000, slow])


def test_routed_capacity_is_the_best_split_of_the_classes():
    """The linear program against splits worked out by hand."""
    # One class every replica serves: the sum of the rates, exactly.
    assert routed_capacity_rps(np.array([1.0]), np.array([[3.0, 5.0]])) == 8.0
    # Long requests only replica 1 serves: it fills with them; replica 0 takes the short ones.
    shares = np.array([0.25, 0.75])
    assert routed_capacity_rps(shares, np.array([[10.0, 10.0], [0.0, 2.0]])) == pytest.approx(8 / 3)
    # Short requests so many that replica 0 cannot take them all: replica 1 takes the rest.
    # lam = 0.9 lam split as 10 + y, and 0.1 lam / 2 + y / 10 = 1 on replica 1.
    lam = routed_capacity_rps(np.array([0.9, 0.1]), np.array([[10.0, 10.0], [0.0, 2.0]]))
    assert lam == pytest.approx(20.0 / 1.4)
    # Two disjoint classes: the scarcer replica bounds it.
    assert routed_capacity_rps(np.array([0.5, 0.5]), np.array([[4.0, 0.0], [0.0, 1.0]])) == (
        pytest.approx(2.0)
    )


@pytest.mark.parametrize(
    ("shares", "rates", "match"),
    [
        ([0.5, 0.5], [[1.0, 1.0], [0.0, 0.0]], "every class needs a replica"),
        ([1.0], [[-1.0, 2.0]], "every class needs a replica"),
        ([0.0, 1.0], [[1.0], [1.0]], "shares must be 2 positive numbers"),
        ([1.0], [[1.0], [1.0]], "shares must be 2 positive numbers"),
    ],
)
def test_routed_capacity_refuses_bad_classes(shares, rates, match):
    with pytest.raises(ValueError, match=match):
        routed_capacity_rps(np.array(shares), np.array(rates))
