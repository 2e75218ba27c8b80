"""Queueing theory through ContinuousBatching-v0 with the iteration-level baselines.

Unlike ``tests/sim/test_queueing_theory.py``, which drives the server directly, these checks go
through ``gym.make``, the env's action space and the registered baselines, so they also test
that the action expresses Simulator A's schedulers exactly. Tolerances are stated per test.

Convention: ``output_tokens`` counts the token the prefill emits, so Simulator A's jobs with
``B = 64`` decode steps have ``output_tokens = 65`` (workload ``"sim-a"``); the course formulas
are written with ``B`` = decode steps = ``output_tokens - 1``.
"""

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401  (registers the env ids)
from baselines import make_policy

ENV_ID = "llmsched/ContinuousBatching-v0"

# Simulator A: C ~ Exp(0.01 s), A ~ Exp(0.001 s/token), prompt L = 128, B = 64 decode steps.
E_C, E_A, L, B = 0.01, 0.001, 128, 64
SIM_A = dict(
    workload="sim-a",
    latency="sim-a",
    chunk_size=None,
    kv_memory="unlimited",
    max_sequences=1000,
    max_tokens=2048,
)


def run_episode(policy: str, seed: int, **env_kwargs):
    """Run a whole episode with a registered baseline; return the server (for its records)."""
    env = gym.make(ENV_ID, invalid_action="raise", **env_kwargs)
    agent = make_policy(policy, env)
    obs, info = env.reset(seed=seed)
    agent.reset()
    terminated = truncated = False
    while not (terminated or truncated):
        obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
    assert terminated
    return env.unwrapped.server


def batch_means_ci(values: np.ndarray, n_batches: int = 20) -> tuple[float, float]:
    """Mean and 95% half-width by the method of batch means (for correlated samples)."""
    means = np.array([b.mean() for b in np.array_split(values, n_batches)])
    t_975 = 2.093  # Student t quantile, 19 degrees of freedom
    return float(values.mean()), float(t_975 * means.std(ddof=1) / np.sqrt(n_batches))


def test_mm1_mean_response_time_through_the_env():
    """M/M/1, lambda = 2, Exp(0.4 s) service: E[T] = 1 / (mu - lambda) = 2.0 s.

    100,000 one-token requests under run-to-completion (one iteration each, about 4 s); the
    first 5,000 are warm-up. The 95% batch-means interval must contain 2.0 and be narrower than
    +/- 0.15 s (7.5%), so that the check has power.
    """
    s = run_episode(
        "run-to-completion",
        seed=1,
        workload="mm1",
        latency="mm1",
        arrival_rate=2.0,
        n_requests=100_000,
        chunk_size=None,
        kv_memory="unlimited",
    )
    assert s.n_completed == s.n_requests
    response = s.records.completion_s - s.workload.arrival_s
    mean, half_width = batch_means_ci(response[5_000:])
    assert abs(mean - 2.0) <= half_width, (mean, half_width)
    assert half_width < 0.15


def test_simulator_a_run_to_completion_saturates_at_mu_a():
    """mu_A = 1 / ((E[C] + L E[a]) + B (E[C] + E[a])) = 1.1876 jobs/s; at lambda = 2 (overload)
    the throughput is mu_A within 2% (1,000 jobs: about 1% standard error)."""
    mu_a = 1 / ((E_C + L * E_A) + B * (E_C + E_A))
    assert mu_a == pytest.approx(1.1876, abs=1e-4)
    s = run_episode("run-to-completion", seed=2, arrival_rate=2.0, n_requests=1000, **SIM_A)
    throughput = s.n_completed / s.now
    assert throughput == pytest.approx(mu_a, rel=0.02)
    # One job at a time: every job's prefill starts after the previous job completed.
    order = np.argsort(s.records.start_s)
    starts = s.records.start_s[order]
    ends = s.records.completion_s[order]
    assert np.all(starts[1:] >= ends[:-1])


def test_simulator_a_scheduler_b_k4_saturated_capacity():
    """B(K=4) saturated: ``1 / ((E[C] + E[a] K L) / K + B E[a])`` = 5.141 jobs/s, within 3%.

    ``B`` is the number of decode steps (64 = output_tokens - 1): with this package's convention
    the prefill's token is not a decode step, so the formula is unchanged (using 65 would give
    5.115). 40,000 jobs arrive almost at once and max_sequences = 1000 amortises the decode
    iterations' fixed cost, as the formula assumes; the throughput is jobs over makespan. Each
    iteration draws one A for its whole batch, so the makespan has a standard error of about 1%.
    """
    k = 4
    formula = 1 / ((E_C + E_A * k * L) / k + B * E_A)
    assert formula == pytest.approx(5.141, abs=1e-3)
    s = run_episode("prefill-k4", seed=3, arrival_rate=1000.0, n_requests=40_000, **SIM_A)
    assert s.n_completed / s.now == pytest.approx(formula, rel=0.03)


def test_simulator_a_scheduler_b_keeps_up_at_lambda_2_where_a_does_not():
    """At lambda = 2, B(4) delivers the offered load with sub-second TTFT (reference: 1.97 jobs/s,
    TTFT 0.22 s) while run-to-completion's TTFT grows without bound (reference: 170 s)."""
    b = run_episode("prefill-k4", seed=4, arrival_rate=2.0, n_requests=1000, **SIM_A)
    metrics = b.summary()
    assert metrics["throughput_rps"] == pytest.approx(2.0, rel=0.05)
    assert metrics["ttft_s_mean"] < 0.5
    a = run_episode("run-to-completion", seed=4, arrival_rate=2.0, n_requests=300, **SIM_A)
    assert a.summary()["ttft_s_mean"] > 20.0


@pytest.mark.parametrize("policy", ["run-to-completion", "prefill-k4"])
def test_simulator_a_light_load_response_is_one_job_time(policy):
    """At lambda = 0.1 jobs rarely meet: the mean response time is one job's time, 0.842 s, plus
    a small M/G/1 wait. For run-to-completion it is exactly M/G/1 (Pollaczek-Khinchine):
    ``E[S] + lambda E[S^2] / (2 (1 - rho))`` = 0.882 s, with ``Var[S] = (B + 1) E[C]^2 +
    L^2 E[a]^2 + B E[a]^2``. 600 jobs; checked within 3 standard errors (about 3%) of 0.882 s
    and within 6% of 0.842 s for both schedulers."""
    lam = 0.1
    mean_s = (B + 1) * E_C + L * E_A + B * E_A
    assert mean_s == pytest.approx(0.842)
    var_s = (B + 1) * E_C**2 + (L * E_A) ** 2 + B * E_A**2
    pk = mean_s + lam * (mean_s**2 + var_s) / (2 * (1 - lam * mean_s))
    s = run_episode(policy, seed=5, arrival_rate=lam, n_requests=600, **SIM_A)
    response = s.records.completion_s - s.workload.arrival_s
    standard_error = response.std(ddof=1) / np.sqrt(response.size)
    assert abs(response.mean() - pk) < 3 * standard_error, (response.mean(), pk)
    assert response.mean() == pytest.approx(mean_s, rel=0.06)


def test_multi_gpu_run_to_completion_scales_with_gpus():
    """G = 2 GPUs each running Scheduler A, lambda = 4: throughput 2 mu_A = 2.375 (reference 2.37),
    within 3%; every job is served by one GPU from prefill to completion."""
    mu_a = 1 / ((E_C + L * E_A) + B * (E_C + E_A))
    s = run_episode(
        "run-to-completion", seed=6, arrival_rate=4.0, n_requests=600, n_gpus=2, **SIM_A
    )
    assert s.n_completed / s.now == pytest.approx(2 * mu_a, rel=0.03)
    assert set(np.unique(s.records.gpu)) == {0, 1}
