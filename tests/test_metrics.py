import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from llmsched_env.metrics import PERCENTILES, SLATargets, percentiles, summarize

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    values=arrays(np.float64, st.integers(1, 60), elements=finite),
    ps=st.lists(st.floats(0, 100), min_size=1, max_size=5),
)
def test_percentiles_equal_numpy_bit_for_bit(values, ps):
    expected = np.percentile(values, ps).tolist()
    assert percentiles(values, tuple(ps)) == expected


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
