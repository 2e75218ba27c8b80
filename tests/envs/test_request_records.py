"""``env.unwrapped.request_records()``: one row per request, every request accounted for."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401
from baselines import make_policy
from llmsched_env.envs.common import REQUEST_RECORD_COLUMNS

ENVS = {
    "llmsched/BatchScheduling-v0": {"workload": "demo2", "arrival_rate": 4.0, "n_requests": 40},
    "llmsched/ContinuousBatching-v0": {"workload": "demo2", "arrival_rate": 4.0, "n_requests": 30},
}


def _run(env_id, max_steps=None, **extra):
    env = gym.make(env_id, **ENVS[env_id], max_steps=max_steps, **extra)
    policy = make_policy("random", env)
    obs, info = env.reset(seed=3)
    while True:
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        if terminated or truncated:
            return env, info


@pytest.mark.parametrize("env_id", sorted(ENVS))
def test_records_of_a_whole_episode_match_its_metrics(env_id):
    env, info = _run(env_id)
    records = env.unwrapped.request_records()
    assert list(records.columns) == list(REQUEST_RECORD_COLUMNS)
    assert records["request"].tolist() == list(range(ENVS[env_id]["n_requests"]))
    counts = records["status"].value_counts()
    metrics = info["episode_metrics"]
    assert counts.get("completed", 0) == metrics["completed"]
    assert counts.get("completed", 0) + counts.get("rejected", 0) == len(records)
    done = records[records["status"] == "completed"]
    assert (done["tokens_generated"] == done["output_tokens"]).all()
    times = done[["arrival_s", "start_s", "first_token_s", "completion_s"]].to_numpy()
    assert np.all(np.diff(times, axis=1) >= 0)  # arrival <= start <= first token <= completion


@pytest.mark.parametrize("env_id", sorted(ENVS))
def test_after_truncation_no_time_lies_in_the_future(env_id):
    env, _ = _run(env_id, max_steps=6)
    records = env.unwrapped.request_records()
    now = env.unwrapped.server.now
    statuses = set(records["status"])
    assert statuses <= {"completed", "rejected", "in_system", "not_arrived"}
    assert {"in_system", "not_arrived"} & statuses  # stopped early
    for column in ("start_s", "first_token_s", "completion_s"):
        values = records[column].to_numpy()
        assert np.all(np.isnan(values) | (values <= now)), column
    waiting = records[records["status"] != "completed"]
    assert waiting["completion_s"].isna().all()
    assert (records["status"] == "not_arrived").sum() == (records["arrival_s"] > now).sum()


def test_records_need_a_reset():
    env = gym.make("llmsched/BatchScheduling-v0", **ENVS["llmsched/BatchScheduling-v0"])
    with pytest.raises(RuntimeError, match="call reset"):
        env.unwrapped.request_records()


def test_the_records_count_preemptions_recomputation_and_prefix_hits_as_the_metrics_do():
    env, info = _run(
        "llmsched/ContinuousBatching-v0",
        kv_allocation="paged",
        kv_memory=1500,
        prefix_caching=True,
    )
    records = env.unwrapped.request_records()
    metrics = info["episode_metrics"]
    assert records["preemptions"].sum() == metrics["preemptions"] > 0
    assert records["recomputed_tokens"].sum() == metrics["recomputed_tokens"]
    assert records["prefix_hit_tokens"].sum() == metrics["prefix_hit_tokens"]
    batch, _ = _run("llmsched/BatchScheduling-v0")
    counts = batch.unwrapped.request_records()[["preemptions", "recomputed_tokens"]]
    assert (counts.to_numpy() == 0).all()  # static batches are never preempted
