"""Each request-level baseline's rule, pinned on hand-made decision states.

The policies read only ``info``, the env's queries (``queue_snapshot()``,
``finished_batches()``) and its public configuration, so a decision state is a hand-written
``info`` dict over a real (small) environment whose queries :func:`act` answers from it.
"""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401 (registers the env ids)
from baselines import make_policy, policy_names
from baselines.batch import (
    POLICIES,
    EarliestDeadlineFirst,
    MultiBin,
    MultiBinDynamic,
    RandomBinAndSize,
    ShortestPredictedFirst,
    SLADynamic,
    StaticFIFO,
)
from baselines.batch._common import size_level
from baselines.batch.sla_control import (
    RequestLengthStats,
    SLAController,
    memory_bound,
    memory_bound_clt,
)
from llmsched_env.envs.queue_snapshot import BinQueueSnapshot, QueueSnapshot
from llmsched_env.sim.batch_server import FinishedBatch

BATCH = "llmsched/BatchScheduling-v0"


def make_env(n_bins: int = 3, **kwargs) -> gym.Env:
    config = {
        "workload": "demo2",
        "arrival_rate": 2.0,
        "n_requests": 50,
        "n_bins": n_bins,
        "bin_edges": tuple(100.0 * (i + 1) for i in range(n_bins - 1)) or None,
        "max_batch_size": 16,
        "sla": 10.0,
    }
    config.update(kwargs)
    return gym.make(BATCH, **config)


def make_info(bins, *, time_s=10.0, gpu=0, wait_allowed=True, finished=(), n_levels=5):
    """An ``info`` dict; ``bins`` holds per bin a list of (index, arrival_s, prompt, predicted)."""

    def column(j, k, dtype):
        return np.array([r[k] for r in bins[j]], dtype=dtype)

    n = len(bins)
    mask = np.ones(n + 1 + n_levels, dtype=bool)
    mask[0] = wait_allowed
    mask[1 : n + 1] = [len(b) > 0 for b in bins]
    return {
        "time_s": time_s,
        "gpu": gpu,
        "queues": tuple(column(j, 0, np.int64) for j in range(n)),
        "queue_arrival_s": tuple(column(j, 1, float) for j in range(n)),
        "queue_prompt_tokens": tuple(column(j, 2, np.int64) for j in range(n)),
        "queue_predicted_output_tokens": tuple(column(j, 3, np.int64) for j in range(n)),
        "gpu_busy_until_s": np.array([time_s]),
        "finished_batches": list(finished),
        "action_mask": mask,
    }


def snapshot_of(info) -> BinQueueSnapshot:
    """The queues of a :func:`make_info` dict as the env's ``queue_snapshot()`` gives them."""
    keys = ("queues", "queue_arrival_s", "queue_predicted_output_tokens", "queue_prompt_tokens")
    return BinQueueSnapshot(*(QueueSnapshot.from_arrays(info[key]) for key in keys))


def act(policy, info):
    """``policy.act`` at the decision state ``info``, whose queues and finished batches the
    env's ``queue_snapshot()`` and ``finished_batches()`` return."""
    snapshot = snapshot_of(info)
    policy.env.queue_snapshot = lambda: snapshot
    policy.env.finished_batches = lambda: list(info["finished_batches"])
    return policy.act(None, info)


def requests(indices, arrival_s=None, prompt=100, predicted=50):
    arrival_s = indices if arrival_s is None else arrival_s
    return [(i, float(a), prompt, predicted) for i, a in zip(indices, arrival_s)]


def batch(size, service_s, max_output_tokens, gpu=0, max_total_tokens=None):
    return FinishedBatch(
        gpu=gpu,
        queue=0,
        size=size,
        start_s=0.0,
        service_s=service_s,
        max_total_tokens=max_total_tokens or max_output_tokens,
        max_output_tokens=max_output_tokens,
        output_tokens=size * max_output_tokens,
    )


def episode_actions(make_policy_for, env: gym.Env, seed: int) -> list[list[int]]:
    """The actions of ``make_policy_for(env)`` over one whole episode of ``env``."""
    policy = make_policy_for(env)
    obs, info = env.reset(seed=seed)
    policy.reset()
    taken = []
    while True:
        action = policy.act(obs, info)
        taken.append(action.tolist())
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return taken


# ---------------------------------------------------------------- registry and arguments
def test_registry_names_and_factories():
    assert policy_names("batch") == list(POLICIES)
    for name in (
        "static-fifo",
        "multibin",
        "multibin-wc",
        "sla-dynamic",
        "multibin-dynamic",
        "spf",
        "edf",
        "random",
    ):
        assert name in POLICIES
    env = make_env()
    for name in POLICIES:
        policy = make_policy(name, env)
        assert policy.name == name
    assert make_policy("multibin", env, batch_size=4).batch_size == 4
    with pytest.raises(ValueError, match="Did you mean 'multibin'"):
        make_policy("multibn", env)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (StaticFIFO, {"batch_size": 0}, r"StaticFIFO: batch_size must be an integer in \[1, 16\]"),
        (StaticFIFO, {"batch_size": 17}, "got 17"),
        (MultiBin, {"batch_size": 12}, r"size levels \[1, 2, 4, 8, 16\].*got 12"),
        (MultiBin, {"batch_size": 8.0}, r"batch_size must be an integer >= 1, got 8.0 \(a float"),
        (MultiBin, {"bin_choice": "random"}, "bin_choice must be one of"),
        (MultiBin, {"work_conserving": "yes"}, "work_conserving must be a bool"),
        (MultiBin, {"in_time_only": 1}, "in_time_only must be a bool, got 1"),
        (
            MultiBin,
            {"viable_fraction": 0.0},
            r"viable_fraction must be a finite number in \(0, 1\]",
        ),
        (MultiBin, {"viable_fraction": 1.5}, "got 1.5"),
        (MultiBin, {"viable_fraction": True}, "got True"),
        (SLADynamic, {"sla_signal": "ttft"}, "sla_signal must be one of"),
        (SLADynamic, {"alpha": 0}, "alpha must be an integer >= 1, got 0"),
        (SLADynamic, {"b_max": 32}, r"b_max must be an integer in \[1, 16\], got 32"),
        (SLADynamic, {"eps_m": 0.7}, r"eps_m must be a finite number in \(0, 0.5\]"),
        (SLADynamic, {"tbt_sla_s": -1.0}, "tbt_sla_s must be a finite number > 0"),
        (SLADynamic, {"size_rounding": "up"}, "size_rounding must be one of"),
        (MultiBinDynamic, {"bin_choice": "formation"}, "bin_choice must be one of"),
        (RandomBinAndSize, {"seed": -1}, "seed must be an integer >= 0"),
        (EarliestDeadlineFirst, {"batch_size": 0}, "batch_size must be an integer"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls.from_env(make_env(), **kwargs)


def test_policies_refuse_another_environment():
    env = gym.make("llmsched/ContinuousBatching-v0", workload="demo2", latency="demo2")
    with pytest.raises(TypeError, match="BatchScheduling-v0"):
        StaticFIFO.from_env(env)


def test_size_level_is_the_largest_level_not_above_the_size():
    levels = (1, 2, 4, 8, 16)
    assert [size_level(levels, b) for b in (0, 1, 3, 4, 15, 16, 100)] == [0, 0, 1, 2, 3, 4, 4]


# ---------------------------------------------------------------- FIFO, SPF, EDF
def test_static_fifo_serves_the_bin_with_the_oldest_request():
    policy = StaticFIFO.from_env(make_env())
    info = make_info([requests([5, 6]), requests([2, 9]), requests([3])])
    assert act(policy, info).tolist() == [2, 3]  # bin 1, level of 8
    info = make_info([requests([5, 6]), [], requests([3])], wait_allowed=False)
    assert act(policy, info).tolist() == [3, 3]


def test_static_fifo_is_work_conserving():
    policy = StaticFIFO.from_env(make_env(), batch_size=4)
    assert act(policy, make_info([[], requests([7]), []])).tolist() == [2, 2]


def test_spf_serves_the_batch_with_the_shortest_predicted_longest_output():
    policy = ShortestPredictedFirst.from_env(make_env(), batch_size=2)
    info = make_info(
        [
            [(1, 1.0, 10, 90), (4, 4.0, 10, 10)],
            [(2, 2.0, 10, 50), (3, 3.0, 10, 60), (5, 5.0, 10, 900)],  # only 2 are taken
            [(6, 6.0, 10, 70)],
        ]
    )
    assert act(policy, info).tolist() == [2, 1]


def test_spf_scores_the_batch_its_size_level_serves():
    # batch_size=3 serves the level of 2: bin 0's next batch is (10, 10), not (10, 10, 900).
    policy = ShortestPredictedFirst.from_env(make_env(), batch_size=3)
    assert policy.batch_sizes[policy.level(3)] == 2
    info = make_info(
        [
            [(1, 1.0, 10, 10), (2, 2.0, 10, 10), (3, 3.0, 10, 900)],
            [(4, 4.0, 10, 50), (5, 5.0, 10, 50)],
            [],
        ]
    )
    assert act(policy, info).tolist() == [1, 1]


def test_edf_serves_the_bin_with_the_least_slack():
    env = make_env()
    policy = EarliestDeadlineFirst.from_env(env, batch_size=4)
    latency = env.unwrapped.latency
    bins = [
        [(1, 1.0, 10, 30)],  # oldest request, but a short batch
        [(2, 2.0, 500, 250), (3, 3.0, 500, 250)],  # younger, but a long batch
        [],
    ]
    info = make_info(bins, time_s=5.0)
    slack = [
        1.0 + 10.0 - 5.0 - latency.estimate_s(1, 10, 30),
        2.0 + 10.0 - 5.0 - latency.estimate_s(2, 500, 250),
    ]
    expected = int(np.argmin(slack))
    assert act(policy, info).tolist() == [expected + 1, 2]
    assert policy.score(snapshot_of(info), info, 0, 1) == pytest.approx(slack[0])
    assert policy.score(snapshot_of(info), info, 1, 2) == pytest.approx(slack[1])


# ---------------------------------------------------------------- Multi-Bin
def test_multibin_waits_until_a_bin_is_full():
    policy = MultiBin.from_env(make_env(), batch_size=4)
    info = make_info([requests([1, 2, 3]), requests([4, 5]), []])
    assert act(policy, info)[0] == 0  # WAIT


def test_multibin_serves_full_bins_in_formation_order():
    policy = MultiBin.from_env(make_env(), batch_size=2)
    # Bin 0 holds the oldest request but its second request arrived after bin 2's second.
    info = make_info(
        [
            requests([1, 9, 10], arrival_s=[1.0, 9.0, 10.0]),
            requests([3], arrival_s=[3.0]),
            requests([4, 5, 6], arrival_s=[4.0, 5.0, 6.0]),
        ]
    )
    assert act(policy, info).tolist() == [3, 1]


def test_multibin_flushes_the_fullest_bin_when_waiting_is_masked():
    policy = MultiBin.from_env(make_env(), batch_size=4)
    info = make_info([requests([1]), requests([2, 3, 4]), requests([5])], wait_allowed=False)
    assert act(policy, info).tolist() == [2, 2]


def test_multibin_work_conserving_serves_a_partial_batch():
    env = make_env()
    info = make_info([requests([1]), requests([2, 3, 4]), requests([5])])
    fullest = MultiBin.from_env(env, batch_size=8, work_conserving=True)
    assert act(fullest, info).tolist() == [2, 3]
    oldest = MultiBin.from_env(env, batch_size=8, work_conserving=True, partial="oldest")
    assert act(oldest, info).tolist() == [1, 3]


def test_multibin_round_robin_and_longest_queue_choices():
    env = make_env()
    info = make_info([requests([1, 2]), requests([3, 4, 5]), requests([6, 7])])
    rr = MultiBin.from_env(env, batch_size=2, bin_choice="round-robin")
    assert [act(rr, info)[0] for _ in range(4)] == [1, 2, 3, 1]
    longest = MultiBin.from_env(env, batch_size=2, bin_choice="longest-queue")
    assert act(longest, info)[0] == 2


def test_multibin_in_time_judges_bins_by_their_requests_in_time():
    env = make_env()  # sla 10 s; at time 20 requests that arrived at or before 10 s are late
    late, in_time = [1.0, 2.0, 3.0, 10.0], [12.0, 13.0]
    info = make_info(
        [
            requests([1, 2, 3, 4, 7, 8], arrival_s=late + in_time),  # 6 requests, 2 in time
            requests([5, 6, 9], arrival_s=[11.0, 11.5, 14.0]),  # 3 in time
            [],
        ],
        time_s=20.0,
    )
    plain = MultiBin.from_env(env, batch_size=4, work_conserving=True)
    assert act(plain, info).tolist() == [1, 2]  # bin 0 counts as full
    aware = MultiBin.from_env(env, batch_size=4, work_conserving=True, in_time_only=True)
    assert aware.name == "multibin-wc-in-time"
    assert act(aware, info).tolist() == [2, 2]  # no bin has 4 in time: the fullest in time
    # Formation order by the B-th request in time: bin 1's second (11.5) before bin 0's (13).
    two = MultiBin.from_env(env, batch_size=2, in_time_only=True)
    assert act(two, info).tolist() == [2, 1]
    assert act(MultiBin.from_env(env, batch_size=4, in_time_only=True), info)[0] == 0


def test_multibin_in_time_uses_the_envs_miss_test():
    """A request that arrived at 10.0 is late at 20.0 exactly (``arrival + sla <= now``)."""
    env = make_env()
    info = make_info([requests([1], arrival_s=[10.0]), requests([2], arrival_s=[15.0]), []])
    aware = MultiBin.from_env(env, batch_size=4, work_conserving=True, in_time_only=True)
    assert act(aware, {**info, "time_s": 20.0}).tolist() == [2, 2]
    # A moment earlier both are in time, and the tie goes to the bin with the oldest request.
    assert act(aware, {**info, "time_s": 19.999}).tolist() == [1, 2]


def test_multibin_in_time_counts_every_request_when_none_is_in_time():
    env = make_env()
    info = make_info([requests([1, 2]), requests([3, 4, 5]), []], time_s=50.0)
    aware = MultiBin.from_env(env, batch_size=4, work_conserving=True, in_time_only=True)
    plain = MultiBin.from_env(env, batch_size=4, work_conserving=True)
    assert act(aware, info).tolist() == act(plain, info).tolist() == [2, 2]


def test_multibin_in_time_is_multibin_wc_while_no_request_is_late():
    """With a deadline no request misses, the two policies take the same actions throughout."""
    plain, aware = (
        episode_actions(partial(make_policy, name), make_env(sla=1e6), seed=3)
        for name in ("multibin-wc", "multibin-wc-in-time")
    )
    assert len(plain) > 20
    assert plain == aware


def test_multibin_viable_judges_bins_by_requests_that_can_still_be_on_time():
    """A request stops counting ``fraction * bin_service_s[j]`` before its deadline."""
    env = make_env()
    horizon = 0.5 * env.unwrapped.bin_service_s  # the registered fraction
    now = 20.0
    # Bin 0: four requests in time, but only one still viable; bin 1: two viable requests.
    close = [now - 10.0 + 0.5 * horizon[0]] * 3  # in time, deadline within the horizon
    info = make_info(
        [
            requests([1, 2, 3, 4], arrival_s=[*close, now - 1.0]),
            requests([5, 6], arrival_s=[now - 2.0, now - 1.5]),
            [],
        ],
        time_s=now,
    )
    in_time = MultiBin.from_env(env, batch_size=4, work_conserving=True, in_time_only=True)
    assert act(in_time, info).tolist() == [1, 2]  # bin 0 counts as full
    viable = make_policy("multibin-wc-viable", env, batch_size=4)
    assert viable.name == "multibin-wc-viable"
    assert viable.in_time_only
    np.testing.assert_allclose(viable._horizons_s[0], horizon)
    assert act(viable, info).tolist() == [2, 2]  # the fullest bin of viable requests


def test_multibin_viable_boundary_is_the_miss_test_moved_by_the_horizon():
    """At ``arrival + sla == now + horizon`` a request no longer counts; a moment later it does."""
    env = make_env()
    policy = MultiBin.from_env(env, batch_size=4, work_conserving=True, viable_fraction=1.0)
    h = float(env.unwrapped.bin_service_s[0])
    info = make_info([requests([1], arrival_s=[10.0]), requests([2], arrival_s=[12.0]), []])
    # Bin 1's request is viable at both times; bin 0's only while 10 + 10 > now + h.
    assert act(policy, {**info, "time_s": 20.0 - h}).tolist() == [2, 2]
    assert act(policy, {**info, "time_s": 20.0 - h - 1e-3}).tolist() == [1, 2]


def test_multibin_viable_falls_back_to_in_time_then_to_every_request():
    env = make_env()
    policy = make_policy("multibin-wc-viable", env, batch_size=4)
    in_time = MultiBin.from_env(env, batch_size=4, work_conserving=True, in_time_only=True)
    plain = MultiBin.from_env(env, batch_size=4, work_conserving=True)
    h = env.unwrapped.bin_service_s
    # Nothing viable, bin 0 holds the only request in time: the in-time judgement decides.
    nothing_viable = make_info(
        [
            requests([1], arrival_s=[10.0 + 0.25 * h[0]]),
            requests([2, 3], arrival_s=[5.0, 6.0]),
            [],
        ],
        time_s=20.0,
    )
    assert act(policy, nothing_viable).tolist() == act(in_time, nothing_viable).tolist()
    assert act(policy, nothing_viable).tolist() == [1, 2]
    # Nothing in time: every request counts, as for multibin-wc.
    all_late = make_info([requests([1, 2]), requests([3, 4, 5]), []], time_s=50.0)
    assert act(policy, all_late).tolist() == act(plain, all_late).tolist() == [2, 2]


# ---------------------------------------------------------------- Algorithm 1 (memory)
def test_memory_bound_matches_the_formula():
    # floor((eta - L0) / (E[l_in] + E[l_out])), then min(max(b, N_decode), B_max)
    assert memory_bound(37_333, 611 + 123, 128) == 50
    assert memory_bound(10_000, 300.0, 128, l0_tokens=4_000, n_decode=30) == 30
    assert memory_bound(10_000, 300.0, 128, l0_tokens=1_000) == 30
    assert memory_bound(10**9, 300.0, 128) == 128
    assert memory_bound(100, 300.0, 128) == 0


def test_clt_memory_bound_solves_the_quadratic():
    eta, mu, sigma, eps = 37_333, 734.0, 800.0, 0.05
    b = memory_bound_clt(eta, mu, sigma, 128, eps_m=eps)
    theta = 1.6448536269514722
    need = lambda n: n * mu + theta * sigma * np.sqrt(n)  # noqa: E731
    assert need(b) <= eta < need(b + 1)
    assert memory_bound_clt(eta, mu, 0.0, 128) == memory_bound(eta, mu, 128)


def test_length_stats_count_each_request_once():
    stats = RequestLengthStats(n_bins=2)
    stats.observe(
        snapshot_of(make_info([[(0, 0.0, 100, 50), (2, 1.0, 300, 50)], [(1, 0.5, 10, 40)]]))
    )
    stats.observe(snapshot_of(make_info([[(2, 1.0, 300, 50), (3, 2.0, 500, 100)], []])))
    tokens = np.array([150, 350, 50, 600], dtype=float)
    assert stats.count[0] == 4
    assert (stats.total[0], stats.total_sq[0]) == (1_150, 150**2 + 350**2 + 50**2 + 600**2)
    assert stats.mean(0) == pytest.approx(tokens.mean())
    assert stats.std(0) == pytest.approx(tokens.std(ddof=1))


def test_length_stats_read_env_snapshots_as_they_read_arrays():
    # The env's QueueSnapshot queues take a faster path; along a real episode the statistics
    # must equal those of the same queues given as plain tuples of arrays.
    env = make_env(n_bins=3, n_requests=200, arrival_rate=20.0)
    policy = SLADynamic.from_env(env)
    fast, plain = RequestLengthStats(3), RequestLengthStats(3)
    obs, info = env.reset(seed=1)
    policy.reset()
    keys = ("ids", "prompt_tokens", "predicted_output_tokens")
    while True:
        snapshot = env.unwrapped.queue_snapshot()
        assert isinstance(snapshot.ids, QueueSnapshot)
        fast.observe(snapshot)
        plain.observe(
            SimpleNamespace(
                **{key: tuple(np.array(q) for q in getattr(snapshot, key)) for key in keys}
            )
        )
        assert (fast.count, fast.total, fast.total_sq) == (plain.count, plain.total, plain.total_sq)
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        if terminated or truncated:
            break
    assert fast.count[0] == 200


def test_sla_dynamic_b_mem_uses_the_kv_capacity_and_the_mean_request():
    env = make_env(kv_memory=1_000)
    policy = SLADynamic.from_env(env)
    info = make_info([[(0, 0.0, 100, 50)], [(1, 1.0, 30, 20)], []])
    act(policy, info)
    assert policy.b_mem(0) == 1_000 // ((150 + 50) / 2)  # 10
    # b* = min(b_mem, b_SLA) = min(10, (1 + 16) // 2 = 8) = 8 -> level of 8
    assert policy.batch_size(0) == 8
    assert act(policy, info).tolist() == [1, 3]
    clt = SLADynamic.from_env(env, memory="clt", eps_m=0.05)
    act(clt, info)
    assert clt.b_mem(0) == memory_bound_clt(1_000, 100.0, clt.stats.std(0), 16, eps_m=0.05)


# ---------------------------------------------------------------- Algorithm 2 (SLA)
def test_sla_controller_moves_the_interval_as_the_paper_says():
    c = SLAController(target_s=0.010, eps_s=0.001, b_min=1, b_max=64, alpha=8, delta=4)
    assert (c.low, c.high, c.b_sla) == (1, 64, 32)
    # Too slow: high = max(b_avg, low + alpha) = 32, low = max(low - delta, B_min) = 1.
    assert c.update(0.015, 32) == 16 and (c.low, c.high) == (1, 32)
    # Too slow again: high = max(16, 9) = 16, low = 1.
    assert c.update(0.012, 16) == 8 and (c.low, c.high) == (1, 16)
    # Headroom: low = min(b_avg, high - alpha) = min(8, 8) = 8, high = min(16 + 4, 64) = 20.
    assert c.update(0.005, 8) == 14 and (c.low, c.high) == (8, 20)
    # Headroom: low = min(14, 12) = 12, high = 24.
    assert c.update(0.008, 14) == 18 and (c.low, c.high) == (12, 24)
    # Within tolerance: high = min(18 + 4, 64) = 22, low = max(18 - 4, 1) = 14.
    assert c.update(0.0105, 18) == 18 and (c.low, c.high) == (14, 22)
    # Too slow with small batches: high = max(2, low + alpha), low steps down by delta ...
    assert c.update(0.02, 2) == 16 and (c.low, c.high) == (10, 22)
    assert c.update(0.02, 2) == 12 and (c.low, c.high) == (6, 18)
    assert c.update(0.02, 2) == 8 and (c.low, c.high) == (2, 14)
    # ... and never below B_min.
    assert c.update(0.02, 2) == 5 and (c.low, c.high) == (1, 10)
    # Headroom near B_max: high never exceeds B_max.
    c = SLAController(target_s=1.0, eps_s=0.1, b_min=1, b_max=64, alpha=8, delta=4)
    assert c.update(0.5, 60) == 60 and (c.low, c.high) == (56, 64)


def test_sla_controller_clamps_b_sla_to_n_decode_and_b_max():
    c = SLAController(target_s=1.0, eps_s=0.1, b_min=1, b_max=64, alpha=8, delta=4, n_decode=40)
    assert c.b_sla == 40  # (1 + 64) // 2 = 32 < N_decode


def test_sla_dynamic_drives_algorithm_2_by_measured_time_per_token():
    env = make_env(kv_memory=10**6)
    policy = SLADynamic.from_env(env, tbt_sla_s=0.010, eps_s=0.001, alpha=4, delta=2, window=2)
    queue = [requests([0, 1, 2, 3])]
    info = make_info([*queue, [], []])
    assert act(policy, info).tolist() == [1, 3]  # b_SLA = (1 + 16) // 2 = 8
    # The batch ends: 8 requests, 4 s for 200 output tokens = 20 ms per token > 10 ms + 1 ms.
    info = make_info([*queue, [], []], finished=[batch(8, 4.0, 200)])
    action = act(policy, info)
    # high = max(8, 1 + 4) = 8, low = max(1 - 2, 1) = 1 -> b_SLA = 4
    assert (policy.controllers[0].low, policy.controllers[0].high) == (1, 8)
    assert action.tolist() == [1, 2]
    # A batch of 4 at 5 ms per token: the window mean is 12.5 ms, b_avg = 6: still too slow.
    info = make_info([*queue, [], []], finished=[batch(4, 1.0, 200)])
    act(policy, info)
    assert (policy.controllers[0].low, policy.controllers[0].high) == (1, 6)
    # A decision without a newly finished batch does not move the interval.
    act(policy, make_info([*queue, [], []]))
    assert (policy.controllers[0].low, policy.controllers[0].high) == (1, 6)


def test_sla_dynamic_measurements():
    env = make_env()
    b = batch(8, 4.0, 200, max_total_tokens=1000)
    assert SLADynamic.from_env(env).measure(b) == pytest.approx(0.02)
    assert SLADynamic.from_env(env, tbt_tokens="total").measure(b) == pytest.approx(0.004)
    e2e = SLADynamic.from_env(env, sla_signal="batch-latency", latency_budget=0.5)
    assert e2e.measure(b) == 4.0 and e2e.target_s == 5.0 and e2e.name == "sla-dynamic-e2e"


def test_size_rounding_nearest_takes_the_closer_level():
    env = make_env(kv_memory=10**6)
    info = make_info([requests([0]), [], []])
    nearest = SLADynamic.from_env(env, size_rounding="nearest", b_max=12)
    assert nearest.batch_size(0) == 6 and act(nearest, info).tolist() == [1, 3]  # 6 -> 8
    down = SLADynamic.from_env(env, b_max=12)
    assert act(down, info).tolist() == [1, 2]  # 6 -> 4


def test_multibin_dynamic_keeps_statistics_and_controllers_per_bin():
    env = make_env(kv_memory=1_000, n_gpus=2)
    policy = MultiBinDynamic.from_env(env, window=1)
    bins = [[(0, 0.0, 50, 50)], [(1, 1.0, 400, 100)], []]
    assert act(policy, make_info(bins, gpu=0)).tolist() == [1, 3]  # bin 0: min(10, 8) = 8
    assert policy.b_mem(0) == 10 and policy.b_mem(1) == 2
    assert act(policy, make_info(bins, gpu=1)).tolist() == [2, 1]  # bin 1: min(2, 8) = 2
    # GPU 1's batch (bin 1) ends at 100 ms per token: only bin 1's controller moves.
    info = make_info(bins, gpu=1, finished=[batch(2, 10.0, 100, gpu=1)])
    act(policy, info)
    assert (policy.controllers[1].low, policy.controllers[1].high) == (1, 9)
    assert (policy.controllers[0].low, policy.controllers[0].high) == (1, 16)


def test_multibin_dynamic_with_one_bin_decides_like_sla_dynamic():
    kwargs = {"workload": "azure-conv", "n_bins": 1, "bin_edges": None, "arrival_rate": 25.0,
              "n_requests": 300, "max_batch_size": 64, "kv_memory": 40_000}  # fmt: skip
    actions = [
        episode_actions(cls.from_env, make_env(**kwargs), seed=5)
        for cls in (SLADynamic, MultiBinDynamic)
    ]
    assert actions[0] == actions[1]
    assert len({a[1] for a in actions[0]}) > 1  # the sizes did change during the episode


# ---------------------------------------------------------------- random
def test_random_valid_draws_only_allowed_values_and_is_reproducible():
    env = make_env()
    info = make_info([[], requests([1]), []], wait_allowed=False)
    policy = RandomBinAndSize.from_env(env, seed=3)
    first = [act(policy, info).tolist() for _ in range(50)]
    assert {a[0] for a in first} == {2}
    assert {a[1] for a in first} == set(range(5))
    policy.reset()
    assert [act(policy, info).tolist() for _ in range(50)] == first
    policy.reset(seed=4)
    assert [act(policy, info).tolist() for _ in range(50)] != first
    info = make_info([requests([0]), requests([1]), []])
    assert {act(policy, info)[0] for _ in range(100)} == {0, 1, 2}
