"""The environments refuse silent nonsense, say why, and accept numpy scalars."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env
from llmsched_env.envs.footprint import (
    BATCH_BYTES_PER_REQUEST,
    available_memory_bytes,
    check_episode_fits,
)

BATCH = "llmsched/BatchScheduling-v0"
CONTINUOUS = "llmsched/ContinuousBatching-v0"


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
@pytest.mark.parametrize("penalty", [float("inf"), float("nan"), -1.0])
def test_a_non_finite_or_negative_penalty_is_refused(env_id, penalty):
    with pytest.raises(ValueError, match=r"sla_penalty must be a finite number >= 0, got"):
        gym.make(env_id, sla_penalty=penalty, n_requests=10)


@pytest.mark.parametrize(
    ("env_id", "setting"),
    [
        (BATCH, "sla"),
        (CONTINUOUS, "ttft_sla"),
        (CONTINUOUS, "tbt_sla"),
        ("llmsched/Routing-v0", "ttft_sla"),
        ("llmsched/Routing-v0", "tbt_sla"),
    ],
)
def test_sla_targets_shorter_than_a_nanosecond_are_refused(env_id, setting):
    # Observations measure waits in units of the targets: 1e-300 s put them beyond float32.
    expected = rf"{setting} must be a finite number >= 1e-09, got 1e-300"
    with pytest.raises(ValueError, match=expected):
        gym.make(env_id, **{setting: 1e-300}, n_requests=10)
    gym.make(env_id, **{setting: 1e-9}, n_requests=10).reset(seed=0)


@pytest.mark.parametrize(
    "edges", [(np.nan, np.nan, np.nan), (1.0, np.inf, 5.0), (30.0, 20.0, 40.0), (1, "a", 3)]
)
def test_non_finite_or_unsorted_bin_edges_are_refused(edges):
    with pytest.raises(ValueError, match=r"BatchScheduling-v0: bin_edges must be 3 finite"):
        gym.make(BATCH, bin_edges=edges, n_requests=10)


@pytest.mark.parametrize("edges", [(1e6, 2e6, 3e6), (0.5, 1.0, 1.5), (10.0, 20.0, 1e9)])
def test_bin_edges_leaving_a_bin_unreachable_are_refused(edges):
    with pytest.raises(ValueError, match=r"can never hold a request") as error:
        gym.make(BATCH, bin_edges=edges, n_requests=10)
    assert "bin_edges" in str(error.value) and "calibration data:" in str(error.value)


def test_bin_edges_inside_the_length_range_are_accepted():
    env = gym.make(BATCH, bin_edges=(50, np.int64(100), np.float32(400.0)), n_requests=10)
    assert env.unwrapped.bin_edges == (50.0, 100.0, 400.0)
    env.reset(seed=0)


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
def test_an_episode_larger_than_memory_is_refused_before_it_is_built(env_id):
    with pytest.raises(ValueError, match=r"n_requests must fit in memory") as error:
        gym.make(env_id, n_requests=10**13)
    text = str(error.value)
    assert "is available" in text and "the largest n_requests that fits is" in text


def test_the_memory_check_gives_estimate_available_and_largest_size():
    with pytest.raises(ValueError) as error:
        check_episode_fits("Env", 1000, BATCH_BYTES_PER_REQUEST, available_bytes=100_000)
    text = str(error.value)
    assert "Env: n_requests" in text and "390.6 KB" in text and "97.7 KB" in text
    assert f"fits is {100_000 // BATCH_BYTES_PER_REQUEST:,}" in text
    assert check_episode_fits("Env", 10, 400, available_bytes=4000) == 4000
    available = available_memory_bytes()
    assert available is None or available > 0


def test_the_memory_check_counts_what_an_episode_needs_whatever_its_length():
    fixed = dict(fixed_bytes=60_000, fixed_for="the KV blocks of n_replicas=4 replicas")
    with pytest.raises(ValueError, match=r"plus 58.6 KB for the KV blocks.*fits is 100 "):
        check_episode_fits("Env", 1000, 400, available_bytes=100_000, **fixed)
    with pytest.raises(ValueError, match=r"n_replicas=4 replicas alone needs about 58.6 KB"):
        check_episode_fits("Env", 1, 400, available_bytes=50_000, **fixed)
    assert check_episode_fits("Env", 10, 400, available_bytes=64_000, **fixed) == 64_000


def test_paged_kv_memory_whose_blocks_cannot_fit_in_memory_is_refused():
    # Each GPU's (or replica's) server keeps a pool of its blocks: 10^12 tokens need ~10 TB.
    with pytest.raises(ValueError, match=r"the KV blocks of n_gpus=2 GPUs alone"):
        gym.make(CONTINUOUS, kv_allocation="paged", kv_memory=10**12, n_gpus=2, n_requests=10)
    with pytest.raises(ValueError, match=r"Routing-v0: n_requests must fit in memory"):
        gym.make("llmsched/Routing-v0", n_requests=10**13, workload="demo2")
    with pytest.raises(ValueError, match=r"the KV blocks of n_replicas=1024 replicas alone"):
        gym.make("llmsched/Routing-v0", n_replicas=1024, kv_memory=10**9, n_requests=10)
    gym.make(CONTINUOUS, kv_memory=10**12, n_requests=10)  # reserved memory keeps counters only


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
@pytest.mark.parametrize("value", [1e3, 10.0, np.float64(20)])
def test_a_float_count_is_a_type_error_naming_the_argument(env_id, value):
    with pytest.raises(TypeError, match=r"n_requests must be an integer >= 1, got .*a float"):
        gym.make(env_id, n_requests=value)


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
def test_numpy_scalars_are_accepted_and_stored_as_python_scalars(env_id):
    env = gym.make(
        env_id,
        n_gpus=np.int64(2),
        n_requests=np.int32(20),
        sla_penalty=np.float32(0.5),
        load=np.float64(0.3),
        max_steps=np.uint16(50),
    )
    cfg = env.unwrapped.config
    for name in ("n_gpus", "n_requests", "max_steps"):
        assert type(getattr(cfg, name)) is int
    assert type(cfg.sla_penalty) is float and type(cfg.load) is float
    env.reset(seed=0)


@pytest.mark.parametrize("caps", [5, "1,2", None, (), (1, -1), (1, 2.0), np.int64(3), (0,)])
def test_bad_prompt_caps_are_a_clear_error(caps):
    with pytest.raises((TypeError, ValueError), match=r"ContinuousBatching-v0: prompt_caps must"):
        gym.make(CONTINUOUS, prompt_caps=caps, n_requests=10)


def test_a_forbidden_joint_wait_names_the_joint_rule():
    env = gym.make(CONTINUOUS, n_requests=1, invalid_action="raise")
    env.reset(seed=0)
    assert env.unwrapped.action_masks()[0]  # decode level 0 is allowed on its own
    with pytest.raises(llmsched_env.envs.InvalidActionError) as error:
        env.step(np.array([0, 0, 0]))
    text = str(error.value)
    assert "is WAIT" in text and "joint rule" in text and "can_wait() is False" in text


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS, "llmsched/Routing-v0"])
def test_a_failed_reset_leaves_no_episode_to_step(env_id):
    # One request and a KV memory of 1,000 tokens: some seeds draw a request that never fits.
    env = gym.make(env_id, n_requests=1, kv_memory=1000).unwrapped
    env.reset(seed=0)  # an episode that runs
    with pytest.raises(ValueError, match="every one of its 1 requests was rejected"):
        env.reset(seed=2)
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        env.step(env.action_space.sample())
    env.reset(seed=0)  # a reset that succeeds starts an episode again
    env.step(env.action_space.sample())  # (forbidden actions are remapped by default)


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS, "llmsched/Routing-v0"])
def test_more_requests_than_the_trace_holds_are_refused_when_the_env_is_built(env_id):
    with pytest.raises(ValueError, match=r"-v0: n_requests=20000 is more than the \d+ requests"):
        gym.make(env_id, n_requests=20_000)  # the Azure conversation trace's region: 15,493


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS, "llmsched/Routing-v0"])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"load": 1e308}, r"load=1e\+308 is too large: the arrival rate becomes inf"),
        # 5 requests over ~5e18 s: a 0.17 s batch took 0.03 s through float rounding.
        ({"arrival_rate": 1e-18}, r"arrival_rate=1e-18 is too low for n_requests=5: .* 5e\+18 s"),
    ],
)
def test_arrival_rates_that_overflow_or_lose_time_resolution_are_refused(env_id, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make(env_id, workload="demo2", n_requests=5, **kwargs)


def test_a_workload_arriving_after_the_time_resolution_limit_is_refused():
    from llmsched_env.workload import MAX_ARRIVAL_S, Workload

    ones = np.ones(2, dtype=np.int64)
    Workload(np.array([0.0, MAX_ARRIVAL_S]), ones, ones, ones)
    with pytest.raises(ValueError, match=r"arrival_s must end by 1e\+10 s"):
        Workload(np.array([0.0, 2 * MAX_ARRIVAL_S]), ones, ones, ones)


def test_a_path_as_workload_points_to_the_trace_spec():
    from pathlib import Path

    with pytest.raises(TypeError, match=r"'trace:\[FORMAT:\]PATH' for a trace file"):
        gym.make(BATCH, workload=Path("trace.csv"))


@pytest.mark.parametrize(
    ("env_id", "kwargs", "cause"),
    [
        (BATCH, {"kv_memory": 10}, r"3 because its prompt and output need more KV memory .*10"),
        (
            CONTINUOUS,
            {"max_tokens": 16, "chunk_size": None},
            r"3 because its prompt exceeds .*max_tokens=16.*chunk_size=None",
        ),
        ("llmsched/Routing-v0", {"n_replicas": 2, "kv_memory": [20, 30]}, r"per replica 20, 30"),
    ],
)
def test_an_episode_whose_every_request_is_rejected_says_which_setting_rejects_them(
    env_id, kwargs, cause
):
    env = gym.make(env_id, n_requests=3, **kwargs)
    with pytest.raises(ValueError, match=r"every one of its 3 requests was rejected at arrival"):
        env.reset(seed=0)
    with pytest.raises(ValueError, match=cause):
        env.reset(seed=0)


@pytest.mark.parametrize(
    ("env_id", "kwargs", "message"),
    [
        (BATCH, {"latency": None}, r"^BatchScheduling-v0: latency=None: expected a batch latency"),
        (CONTINUOUS, {"latency": 3}, r"^ContinuousBatching-v0: latency=3: expected an iteration"),
        (BATCH, {"kv_memory": 0}, r"^BatchScheduling-v0: kv_memory=0: KVMemory: capacity_tokens"),
        (CONTINUOUS, {"kv_memory": 2**63}, r"^ContinuousBatching-v0: kv_memory=92233720368547"),
    ],
)
def test_a_bad_latency_or_kv_memory_names_the_env_and_the_setting(env_id, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make(env_id, n_requests=50, **kwargs)


def test_a_bad_replica_latency_names_the_replica_even_when_it_is_a_type_error():
    with pytest.raises(TypeError, match=r"^Routing-v0: replica 1 \(latency=None"):
        gym.make("llmsched/Routing-v0", n_replicas=2, n_requests=50, latency=["demo2", None])


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS, "llmsched/Routing-v0"])
@pytest.mark.parametrize("options", ["abc", [], 3])
def test_reset_options_that_are_not_a_dict_are_refused(env_id, options):
    # A string was read as the options "a", "b", "c", and an empty list as no options.
    env = gym.make(env_id, n_requests=50)
    with pytest.raises(TypeError, match=r"options must be a dict of reset options .*, got"):
        env.reset(seed=0, options=options)


@pytest.mark.parametrize(
    ("env_id", "action"),
    [(BATCH, [True, 0]), (CONTINUOUS, [True, 0, 0]), (CONTINUOUS, (0, np.True_, 0))],
)
def test_a_bool_among_the_components_of_an_action_is_refused(env_id, action):
    # numpy reads [True, 0] as the integers [1, 0].
    env = gym.make(env_id, n_requests=50)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"must hold integers, not booleans"):
        env.step(action)


def test_an_episode_arriving_beyond_the_time_limit_names_the_rate_settings():
    # The constructor checks the average span (1000 / 1.2e-7 = 8.3e9 s, under 1e10 s); a
    # window of the trace can still arrive over longer, and is refused at its reset.
    env = gym.make(BATCH, arrival_rate=1.2e-7)
    messages = []
    for seed in range(20):
        try:
            env.reset(seed=seed)
        except ValueError as error:
            messages.append(str(error))
    assert 0 < len(messages) < 20
    assert all(
        m.startswith("BatchScheduling-v0: at 1.2e-07 requests/s (from arrival_rate, load")
        and "raise the rate or lower n_requests" in m
        for m in messages
    )


def test_the_memory_check_counts_the_prefix_hashes_of_the_workload(monkeypatch):
    from llmsched_env.envs import footprint

    # prefix-sharing holds about 213 hashes per request: some 6.4 KB of peak memory per request
    # beside BatchScheduling-v0's own 400 bytes, which alone would pass with room to spare.
    n = 100_000
    source = llmsched_env.workload.make_workload_source("prefix-sharing")
    extra = footprint.prefix_hash_bytes_per_request(source, n)
    assert 5_000 < extra < 8_000
    assert (
        footprint.prefix_hash_bytes_per_request(
            llmsched_env.workload.make_workload_source("burstgpt-synthetic"), n
        )
        == 0
    )
    monkeypatch.setattr(
        footprint, "available_memory_bytes", lambda: 10 * BATCH_BYTES_PER_REQUEST * n
    )
    gym.make(BATCH, workload="burstgpt-synthetic", n_requests=n)  # fits
    with pytest.raises(ValueError, match=r"BatchScheduling-v0: n_requests must fit in memory"):
        gym.make(BATCH, workload="prefix-sharing", n_requests=n)
    with pytest.raises(ValueError, match=r"Routing-v0: n_requests must fit in memory"):
        gym.make("llmsched/Routing-v0", workload="prefix-sharing", n_requests=n, n_replicas=2)
