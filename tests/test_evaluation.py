"""The evaluation harness: common random numbers, determinism, parallel runs, CI arithmetic."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import llmsched_env  # noqa: F401 (registers the env ids)
from baselines import make_policy
from baselines.batch import MultiBin, StaticFIFO
from llmsched_env import evaluation
from llmsched_env.evaluation import (
    EpisodeTask,
    best_policy,
    evaluate,
    mean_ci,
    policy_display_name,
    run_episode,
    summarize_episodes,
    t_quantile_975,
)
from tests.conftest import assert_same_workload_per_seed

BATCH = "llmsched/BatchScheduling-v0"
SMALL = {"workload": "azure-conv", "load": 1.0, "n_requests": 120}


def test_policies_on_one_seed_see_the_same_workload():
    episodes, _ = evaluate(["static-fifo", "random", "edf"], BATCH, SMALL, seeds=[3, 4])
    assert_same_workload_per_seed(episodes)
    # The requests themselves: reset with the seed, then play different policies to the end.
    workloads = []
    for name in ("static-fifo", "random"):
        env = gym.make(BATCH, **SMALL)
        policy = make_policy(name, env)
        obs, info = env.reset(seed=3)
        policy.reset()
        while True:
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
            if terminated or truncated:
                break
        workloads.append(env.unwrapped.server.workload)
    first, second = workloads
    for column in ("arrival_s", "prompt_tokens", "output_tokens", "predicted_output_tokens"):
        np.testing.assert_array_equal(getattr(first, column), getattr(second, column))
    other = gym.make(BATCH, **SMALL)
    other.reset(seed=4)
    assert not np.array_equal(other.unwrapped.server.workload.arrival_s, first.arrival_s)


def test_workload_check_fails_when_one_policy_is_reseeded(monkeypatch):
    """The fingerprint check catches a harness that reseeds one policy differently."""
    honest = evaluation.run_episode

    def reseeding_run_episode(task: EpisodeTask) -> dict:
        if task.policy_name != "random":
            return honest(task)
        row = honest(replace(task, seed=task.seed + 1000))
        row["seed"] = task.seed  # the row still claims the seed it was asked for
        return row

    monkeypatch.setattr(evaluation, "run_episode", reseeding_run_episode)
    episodes, _ = evaluate(["static-fifo", "random"], BATCH, SMALL, seeds=[3, 4])
    assert (episodes["arrived"] == SMALL["n_requests"]).all()  # the old check sees nothing
    with pytest.raises(AssertionError, match="different requests on seeds"):
        assert_same_workload_per_seed(episodes)


def test_workload_fingerprint_is_the_served_requests():
    """The recorded fingerprint is that of the workload the env serves after reset."""
    episodes, _ = evaluate(["static-fifo"], BATCH, SMALL, seeds=[5])
    env = gym.make(BATCH, **SMALL)
    env.reset(seed=5)
    workload = env.unwrapped.server.workload
    assert episodes["workload_sha256"].item() == workload.fingerprint()
    assert workload.fingerprint() == workload.window(0).fingerprint()  # a copy, same requests
    assert workload.fingerprint() != workload.window(1).fingerprint()


def test_same_call_gives_identical_episodes():
    args = (["multibin-wc", "random", "sla-dynamic"], BATCH, SMALL, [0, 1])
    first, summary = evaluate(*args)
    second, _ = evaluate(*args)
    pd.testing.assert_frame_equal(first, second)
    assert len(first) == 6 and set(first["policy"]) == {"multibin-wc", "random", "sla-dynamic"}
    assert (first["invalid_actions"] == 0).all() and first["terminated"].all()
    assert list(summary["return_mean"]) == sorted(summary["return_mean"], reverse=True)


def test_parallel_workers_give_the_same_rows():
    args = (["edf", "random"], BATCH, SMALL, [0, 1, 2])
    serial, serial_summary = evaluate(*args, n_jobs=1)
    parallel, parallel_summary = evaluate(*args, n_jobs=2)
    pd.testing.assert_frame_equal(serial, parallel)
    pd.testing.assert_frame_equal(serial_summary, parallel_summary)


def test_callables_and_their_display_names():
    fifo4 = partial(StaticFIFO.from_env, batch_size=4)
    assert policy_display_name("edf") == "edf"
    assert policy_display_name(StaticFIFO.from_env) == "static-fifo"
    assert policy_display_name(fifo4) == "static-fifo"
    assert policy_display_name(lambda env: MultiBin(env)) == "<lambda>"
    episodes, summary = evaluate(
        [StaticFIFO.from_env, fifo4], BATCH, SMALL, seeds=[0], names=["fifo-8", "fifo-4"]
    )
    assert set(summary["policy"]) == {"fifo-8", "fifo-4"}
    assert episodes.loc[episodes["policy"] == "fifo-4", "mean_batch_size"].item() <= 4
    with pytest.raises(ValueError, match=r"unique.*\['static-fifo'\]"):
        evaluate([StaticFIFO.from_env, fifo4], BATCH, SMALL, seeds=[0])
    with pytest.raises(ValueError, match="seeds must not be empty"):
        evaluate("edf", BATCH, SMALL, seeds=[])
    with pytest.raises(ValueError, match="policies must not be empty"):
        evaluate([], BATCH, SMALL, seeds=[0])


def test_run_episode_row():
    row = run_episode(EpisodeTask("edf", "edf", BATCH, SMALL, seed=7))
    assert row["policy"] == "edf" and row["seed"] == 7 and row["terminated"]
    assert row["requests"] == 120 and row["completed"] + row["rejected"] == 120
    assert row["return"] == pytest.approx(
        row["sla_attainment"] * 120 - (120 - row["sla_attainment"] * 120)
    )


def test_prefix_hit_rate_is_reported_where_a_prefix_cache_was_looked_up():
    routing = {"n_replicas": 2, "workload": "prefix-sharing", "n_requests": 60}
    episodes, summary = evaluate(["prefix-affinity"], "llmsched/Routing-v0", routing, seeds=[3])
    row = episodes.iloc[0]
    assert row["prefix_queried_tokens"] > row["preempted_prefix_queried_tokens"]
    hits = row["prefix_hit_tokens"] - row["preempted_prefix_hit_tokens"]
    queried = row["prefix_queried_tokens"] - row["preempted_prefix_queried_tokens"]
    assert row["prefix_hit_rate"] == hits / queried
    assert 0 < summary["prefix_hit_rate_mean"].iloc[0] <= 1
    assert "ttft_s_p50_mean" in summary
    # ContinuousBatching-v0 caches no prefix by default: no hit rate to report.
    episodes, summary = evaluate(["hybrid"], "llmsched/ContinuousBatching-v0", {"n_requests": 30})
    assert "prefix_hit_rate" not in episodes and "prefix_hit_rate_mean" not in summary


def test_t_quantiles():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(30) == 2.042
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=2e-4)
    assert t_quantile_975(120) == pytest.approx(1.9799, abs=2e-4)
    assert math.isnan(t_quantile_975(0))


def test_mean_ci_math():
    values = [1.0, 2.0, 4.0, 8.0]
    mean, half = mean_ci(values)
    assert mean == pytest.approx(3.75)
    assert half == pytest.approx(3.182 * np.std(values, ddof=1) / 2)
    assert mean_ci([5.0]) == (5.0, pytest.approx(math.nan, nan_ok=True))
    # A missing value is not dropped: the mean of the rest would describe other episodes.
    for values in ([1.0, math.nan, 3.0], [1.0, math.inf], []):
        mean, half = mean_ci(values)
        assert math.isnan(mean) and math.isnan(half), values


def test_summary_means_and_confidence_half_widths():
    episodes = pd.DataFrame(
        {
            "policy": ["a"] * 3 + ["b"] * 5,
            "seed": [0, 1, 2, 0, 1, 2, 3, 4],
            "return": [1.0, 2.0, 3.0, 10.0, 12.0, 14.0, 16.0, 18.0],
            "sla_attainment": [0.5, 0.6, 0.7, 0.9, 0.9, 0.9, 0.9, 0.9],
            "goodput_rps": [1.0] * 8,
            "latency_s_p99": [3.0, 4.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            "invalid_actions": [0, 1, 0, 0, 0, 0, 0, 0],
        }
    )
    summary = summarize_episodes(episodes)
    assert list(summary["policy"]) == ["b", "a"]  # best mean return first
    b, a = summary.iloc[0], summary.iloc[1]
    assert a["episodes"] == 3 and b["episodes"] == 5
    assert a["return_mean"] == 2.0
    assert a["return_ci95"] == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert b["return_mean"] == 14.0
    assert b["return_ci95"] == pytest.approx(2.776 * np.std([10, 12, 14, 16, 18], ddof=1) / 5**0.5)
    assert b["sla_attainment_ci95"] == pytest.approx(0.0)
    assert a["sla_attainment"] == pytest.approx(0.6)
    assert a["p99_latency_s"] == pytest.approx(4.0) and a["goodput_rps"] == 1.0
    assert a["invalid_actions"] == 1


def test_a_metric_some_episode_lacks_has_no_summary_mean():
    # Averaged over the episodes that have it, "a" (no completion on seeds 2 and 3) would look
    # better than "b" on the seeds they share.
    episodes = pd.DataFrame(
        {
            "policy": ["a"] * 4 + ["b"] * 4,
            "seed": [0, 1, 2, 3] * 2,
            "return": [1.0, 2.0, 3.0, 4.0] * 2,
            "latency_s_p99": [3.0, 4.0, math.nan, math.nan, 3.0, 4.0, 9.0, 9.0],
            "invalid_actions": [0] * 8,
        }
    )
    summary = summarize_episodes(episodes).set_index("policy")
    assert math.isnan(summary.loc["a", "latency_s_p99_mean"])
    assert math.isnan(summary.loc["a", "latency_s_p99_ci95"])
    assert summary.loc["b", "latency_s_p99_mean"] == 6.25
    assert summary.loc["a", "return_mean"] == 2.5  # the other metrics are unaffected


def test_ties_on_the_mean_return_go_to_the_first_name():
    episodes = pd.DataFrame(
        {
            "policy": ["spf", "edf", "random"],
            "seed": [0, 0, 0],
            "return": [3.0, 3.0, 1.0],
            "invalid_actions": [0, 0, 0],
        }
    )
    assert list(summarize_episodes(episodes)["policy"]) == ["edf", "spf", "random"]
    assert best_policy({"spf": 3.0, "edf": 3.0, "random": 1.0}) == "edf"
    with pytest.raises(ValueError, match="at least one policy"):
        best_policy({})


def test_records_are_the_request_records_of_every_episode():
    from llmsched_env.envs.common import REQUEST_RECORD_COLUMNS

    args = (["edf", "random"], BATCH, SMALL, [0, 1])
    episodes, summary, records = evaluate(*args, records=True)
    plain, plain_summary = evaluate(*args)
    pd.testing.assert_frame_equal(episodes, plain)  # asking for records changes nothing else
    pd.testing.assert_frame_equal(summary, plain_summary)
    assert list(records.columns) == ["policy", "seed", *REQUEST_RECORD_COLUMNS]
    for (policy, seed), group in records.groupby(["policy", "seed"]):
        env = gym.make(BATCH, **SMALL)
        env.reset(seed=int(seed))  # pandas before 3 groups by numpy integers
        workload = env.unwrapped.server.workload
        assert group["arrival_s"].tolist() == workload.arrival_s.tolist()
        row = episodes[(episodes["policy"] == policy) & (episodes["seed"] == seed)].iloc[0]
        assert (group["status"] == "completed").sum() == row["completed"]
    _, _, parallel = evaluate(*args, records=True, n_jobs=2)
    pd.testing.assert_frame_equal(records, parallel)


class _FailsAtTheThirdStep:
    """A policy that raises on its third decision."""

    def __init__(self, env):
        self.env = env
        self.calls = 0

    def reset(self):
        self.calls = 0

    def act(self, obs, info):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("policy blew up")
        return self.env.unwrapped.action_space.sample(mask=None) * 0


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_an_error_in_an_episode_says_which_episode(n_jobs):
    """The error named neither the policy nor the seed, in a run of many episodes."""
    with pytest.raises(RuntimeError, match="policy blew up") as raised:
        evaluate(
            [_FailsAtTheThirdStep],
            "llmsched/BatchScheduling-v0",
            {"n_requests": 40},
            [5, 6],
            names=["failing"],
            n_jobs=n_jobs,
        )
    notes = getattr(raised.value, "__notes__", [])
    assert "in the episode of policy 'failing' on seed 5, step 3" in notes
