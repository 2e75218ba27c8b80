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
