import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsched_env.metrics import PERCENTILES, SLATargets, summarize

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def _records(arrival, start, first, completion, output, status):
    return {
        "arrival_s": np.array(arrival, dtype=float),
        "start_s": np.array(start, dtype=float),
        "first_token_s": np.array(first, dtype=float),
        "completion_s": np.array(completion, dtype=float),
        "output_tokens": np.array(output),
        "status": np.array(status, dtype=np.int8),
    }


def test_summary_counts_latencies_and_attainment_by_hand():
    nan = float("nan")
    # Three completed requests (latencies 1, 2, 4), one in the system, one rejected.
    records = _records(
        arrival=[0.0, 1.0, 2.0, 3.0, 4.0],
        start=[0.5, 1.0, 3.0, nan, nan],
        first=[0.6, 1.5, 3.5, nan, nan],
        completion=[1.0, 3.0, 6.0, nan, nan],
        output=[5, 3, 1, 4, 2],
        status=[2, 2, 2, 1, 3],
    )
    out = summarize(
        records, end_s=10.0, n_gpus=2, busy_s=5.0, mean_batch_size=1.5, sla=SLATargets(e2e_s=2.0)
    )
    assert (out["arrived"], out["completed"], out["in_system"], out["rejected"]) == (5, 3, 1, 1)
    assert out["latency_s_mean"] == pytest.approx(7 / 3)
    assert out["latency_s_p50"] == 2.0
    assert out["queueing_delay_s_mean"] == pytest.approx(0.5)
    assert out["tbt_s_mean"] == pytest.approx(((1.0 - 0.6) / 4 + (3.0 - 1.5) / 2) / 2)
    # Met by the first two only; the denominator is every arrived request.
    assert out["sla_attainment"] == pytest.approx(2 / 5)
    assert out["goodput_rps"] == pytest.approx(2 / 10)
    assert out["gpu_utilization"] == pytest.approx(5.0 / 20.0)
    assert out["throughput_tokens_per_s"] == pytest.approx(9 / 10)


def test_summary_with_nothing_completed_reports_nan_percentiles():
    nan = float("nan")
    records = _records([0.0], [nan], [nan], [nan], [3], [1])
    out = summarize(records, end_s=1.0, n_gpus=1, busy_s=0.0, mean_batch_size=nan)
    assert all(np.isnan(out[f"latency_s_p{p}"]) for p in PERCENTILES)
    assert out["in_system"] == 1


def test_warmup_outside_the_run_is_rejected():
    records = _records([0.0], [0.0], [0.1], [0.2], [1], [2])
    with pytest.raises(ValueError, match=r"warmup_s must be in \[0, end_s=1.0\), got 2.0"):
        summarize(records, end_s=1.0, n_gpus=1, busy_s=0.2, mean_batch_size=1.0, warmup_s=2.0)


@pytest.mark.parametrize("module", ["llmsched_env.metrics", "llmsched_env.sim.records"])
def test_module_imports_first_without_a_cycle(module):
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


def _numpy_statement(columns, *, end_s, warmup_s, sla):
    """The summary's quantities written with plain numpy calls, one array operation at a time."""
    status = columns["status"]
    in_window = (columns["arrival_s"] >= warmup_s) & (status != 0)
    done = in_window & (status == 2)
    a, c = columns["arrival_s"][done], columns["completion_s"][done]
    f, s = columns["first_token_s"][done], columns["start_s"][done]
    n_out = columns["output_tokens"][done]
    gaps = columns["max_token_gap_s"][done] if "max_token_gap_s" in columns else None
    with np.errstate(divide="ignore", invalid="ignore"):
        tbt = np.where(n_out >= 2, (c - f) / (n_out - 1), np.nan)
    out = {
        "arrived": float(np.count_nonzero(in_window)),
        "completed": float(np.count_nonzero(done)),
        "rejected": float(np.count_nonzero(in_window & (status == 3))),
        "in_system": float(np.count_nonzero(in_window & (status == 1))),
        "not_arrived": float(np.count_nonzero(status == 0)),
        "throughput_tokens_per_s": float(n_out.sum()) / (end_s - warmup_s),
    }
    quantities = {"latency_s": c - a, "queueing_delay_s": s - a, "ttft_s": f - a, "tbt_s": tbt}
    if gaps is not None:
        quantities["max_token_gap_s"] = gaps
    for prefix, values in quantities.items():
        values = values[np.isfinite(values)]
        out[f"{prefix}_mean"] = float(values.mean()) if values.size else float("nan")
        for p in PERCENTILES:
            out[f"{prefix}_p{p}"] = float(np.percentile(values, p)) if values.size else float("nan")
    met_all = np.ones(a.size, dtype=bool)
    denominator = max(int(out["arrived"]), 1)
    # A deadline is met when the event comes at or before arrival + target (as the servers
    # count misses), the per-token part of a TTFT target added last.
    ttft_due = None if sla.ttft_s is None else a + sla.ttft_s
    if sla.ttft_per_token_s > 0:
        ttft_due = ttft_due + sla.ttft_per_token_s * columns["prompt_tokens"][done]
    for name, due, values in (
        ("e2e", None if sla.e2e_s is None else a + sla.e2e_s, c),
        ("ttft", ttft_due, f),
        ("tbt", sla.tbt_s, gaps),
    ):
        if due is not None:
            met = values <= due
            met_all &= met
            out[f"sla_attainment_{name}"] = float(np.count_nonzero(met)) / denominator
    out["sla_attainment"] = float(np.count_nonzero(met_all)) / denominator
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(1, 300), with_gaps=st.booleans())
def test_summary_is_the_numpy_statement_bit_for_bit(data, n, with_gaps):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    arrival = np.sort(rng.uniform(0, 100, n))
    start = arrival + rng.exponential(1.0, n)
    first = np.where(rng.random(n) < 0.1, np.nan, start + rng.exponential(0.5, n))
    completion = start + rng.exponential(3.0, n)
    columns = {
        "arrival_s": arrival,
        "start_s": start,
        "first_token_s": first,
        "completion_s": completion,
        "output_tokens": rng.integers(1, 50, n),
        "prompt_tokens": rng.integers(1, 20_000, n),
        "status": rng.integers(0, 4, n).astype(np.int8),
    }
    if with_gaps:
        columns["max_token_gap_s"] = np.where(rng.random(n) < 0.1, np.nan, rng.exponential(1, n))
    ttft_s = data.draw(st.none() | st.floats(0.5, 10))
    sla = SLATargets(
        e2e_s=data.draw(st.none() | st.floats(0.5, 10)),
        ttft_s=ttft_s,
        tbt_s=data.draw(st.none() | st.floats(0.1, 3)) if with_gaps else None,
        ttft_per_token_s=0.0 if ttft_s is None else data.draw(st.sampled_from([0.0, 1e-4])),
    )
    warmup_s = data.draw(st.sampled_from([0.0, 10.0, 50.0]))
    got = summarize(
        columns, end_s=120.0, n_gpus=1, busy_s=1.0, mean_batch_size=1.0, sla=sla, warmup_s=warmup_s
    )
    expected = _numpy_statement(columns, end_s=120.0, warmup_s=warmup_s, sla=sla)
    assert repr({k: got[k] for k in expected}) == repr(expected)


def test_a_deadline_is_met_by_arrival_plus_target_as_the_servers_count_it():
    # 0.1 + 0.2 rounds up to 0.30000000000000004: a completion there is on time for the
    # servers (completion <= arrival + target), though completion - arrival = 0.20000000000000004
    # exceeds the 0.2 s target.
    done_at = 0.1 + 0.2
    records = _records([0.1], [0.1], [done_at], [done_at], [1], [2])
    assert done_at - 0.1 > 0.2
    sla = SLATargets(e2e_s=0.2, ttft_s=0.2)
    out = summarize(records, end_s=1.0, n_gpus=1, busy_s=1.0, mean_batch_size=1.0, sla=sla)
    assert out["sla_attainment_e2e"] == out["sla_attainment_ttft"] == 1.0


def test_ttft_target_per_prompt_token_by_hand():
    # TTFTs 0.6 s and 1.5 s; prompts 1,000 and 8,000 tokens; targets 0.5 s + 0.1 ms per token:
    # 0.6 s (met, on the boundary) and 1.3 s (missed).
    records = _records([0.0, 1.0], [0.2, 1.2], [0.6, 2.5], [1.0, 3.0], [5, 3], [2, 2])
    records["prompt_tokens"] = np.array([1_000, 8_000])
    sla = SLATargets(ttft_s=0.5, ttft_per_token_s=1e-4)
    out = summarize(records, end_s=10.0, n_gpus=1, busy_s=1.0, mean_batch_size=1.0, sla=sla)
    assert out["sla_attainment_ttft"] == 0.5
    np.testing.assert_allclose(sla.ttft_targets(records["prompt_tokens"]), [0.6, 1.3])
    del records["prompt_tokens"]
    with pytest.raises(ValueError, match="needs the requests' prompt_tokens column"):
        summarize(records, end_s=10.0, n_gpus=1, busy_s=1.0, mean_batch_size=1.0, sla=sla)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttft_s": 1.0, "ttft_per_token_s": -1e-4}, r"finite number >= 0, got -0.0001"),
        ({"ttft_s": 1.0, "ttft_per_token_s": float("nan")}, r"finite number >= 0, got nan"),
        ({"ttft_per_token_s": 1e-4}, r"extends a TTFT target, but ttft_s is None"),
    ],
)
def test_ttft_target_per_prompt_token_is_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SLATargets(**kwargs)


def test_preemption_counts_are_reported_only_when_given():
    columns = {
        "arrival_s": np.array([0.0]),
        "start_s": np.array([0.0]),
        "first_token_s": np.array([1.0]),
        "completion_s": np.array([2.0]),
        "output_tokens": np.array([2]),
        "status": np.array([2], dtype=np.int8),
    }
    plain = summarize(columns, end_s=2.0, n_gpus=1, busy_s=2.0, mean_batch_size=1.0)
    assert "preemptions" not in plain and "recomputed_tokens" not in plain
    counted = summarize(
        columns,
        end_s=2.0,
        n_gpus=1,
        busy_s=2.0,
        mean_batch_size=1.0,
        preemptions=3,
        recomputed_tokens=120,
    )
    assert counted["preemptions"] == 3.0 and counted["recomputed_tokens"] == 120.0
    assert {k: v for k, v in counted.items() if k in plain} == plain


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"e2e_s": True}, r"SLA target e2e_s must be a positive number or None, got True"),
        ({"ttft_s": "abc"}, r"SLA target ttft_s must be a positive number or None, got 'abc'"),
        ({"tbt_s": [1, 2]}, r"SLA target tbt_s must be a positive number or None, got \[1, 2\]"),
        ({"ttft_s": 1.0, "ttft_per_token_s": None}, r"ttft_per_token_s must be a finite number"),
    ],
)
def test_sla_targets_of_the_wrong_type_are_a_type_error_naming_the_target(kwargs, message):
    with pytest.raises(TypeError, match=message):
        SLATargets(**kwargs)


def test_sla_targets_are_stored_as_python_floats():
    targets = SLATargets(e2e_s=np.float32(2.5), ttft_s=2, ttft_per_token_s=np.int64(0))
    assert (targets.e2e_s, targets.ttft_s, targets.ttft_per_token_s) == (2.5, 2.0, 0.0)
    assert all(type(v) is float for v in (targets.e2e_s, targets.ttft_s, targets.ttft_per_token_s))


def test_the_prefix_hit_rate_leaves_readmissions_out_as_vllm_does():
    from llmsched_env.metrics import prefix_hit_rate

    # 300 hits of 1,000 queried tokens, of which a readmission's 200 of 400: 100 / 600.
    assert prefix_hit_rate(300, 1000, 200, 400) == pytest.approx(100 / 600)
    assert math.isnan(prefix_hit_rate(0, 0, 0, 0))


def test_gpu_utilization_is_a_share_even_when_event_times_round():
    """A batch's end is its start plus its service, rounded: busy time summed from such times
    put truncated runs a few ulps outside [0, 1] (-2.2e-17, 1.0000000000000002)."""
    import gymnasium as gym

    import llmsched_env  # noqa: F401  (registers the env ids)
    from llmsched_env.workload import Workload

    runs = [
        (
            Workload(
                [0.6289549845497133] * 2 + [3.8806673178451923],
                [2938, 2620, 694],
                [236, 300, 456],
                [236, 300, 456],
            ),
            {"n_gpus": 16, "max_batch_size": 1, "max_steps": 1},
        ),
        (
            Workload(
                [0.0] * 4, [2247, 2885, 277, 2174], [147, 271, 462, 139], [147, 271, 462, 139]
            ),
            {"n_gpus": 2, "max_batch_size": 1, "n_bins": 1, "max_steps": 3},
        ),
    ]
    for workload, kwargs in runs:
        env = gym.make("llmsched/BatchScheduling-v0", **kwargs)
        env.reset(seed=0, options={"workload": workload})
        while True:
            *_, terminated, truncated, info = env.step([1, 0])
            if terminated or truncated:
                break
        assert 0.0 <= info["episode_metrics"]["gpu_utilization"] <= 1.0
    columns = {name: np.zeros(1) for name in ("arrival_s", "start_s", "first_token_s")}
    columns |= {"completion_s": np.zeros(1), "output_tokens": np.ones(1, int), "status": [1]}

    def utilization(busy_s: float) -> float:
        return summarize(columns, end_s=1.0, n_gpus=1, busy_s=busy_s, mean_batch_size=1.0)[
            "gpu_utilization"
        ]

    assert utilization(-2.2e-17) == 0.0 and utilization(1.0000000000000002) == 1.0
    assert utilization(1.5) == 1.5  # a real excess is a fault: left to show
