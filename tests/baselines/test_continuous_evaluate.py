"""Monte Carlo evaluation of the iteration-level baselines: `llmsched evaluate --env continuous`."""

import json
import math

import pandas as pd
import pytest

from baselines import policy_names
from llmsched_env.cli import main
from llmsched_env.evaluation import evaluate, mean_ci
from tests.conftest import assert_same_workload_per_seed

ENV_ID = "llmsched/ContinuousBatching-v0"


@pytest.mark.filterwarnings("ignore:SarathiStyle:UserWarning", "ignore:VLLMV1:UserWarning")
def test_evaluate_command_writes_the_same_files_as_the_batch_version(tmp_path, capsys):
    """Every registered policy, 2 seeds: the table, episodes.csv, summary.csv (and the figure
    when matplotlib is installed), with 95% confidence half-widths."""
    kwargs = {"n_requests": 20, "chunk_size": None}
    code = main(
        [
            "evaluate",
            "--env",
            "continuous",
            "--workload",
            "demo2",
            "--policies",
            "all",
            "--seeds",
            "2",
            "--env-kwargs",
            json.dumps(kwargs),
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    names = policy_names("continuous")
    assert all(name in out for name in names)
    episodes = pd.read_csv(tmp_path / "episodes.csv")
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(episodes) == 2 * len(names)
    assert set(summary["policy"]) == set(names)
    assert summary["return_ci95"].notna().all()
    assert (episodes["invalid_actions"] == 0).all()
    assert (episodes["completed"] + episodes["rejected"] == 20).all()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "comparison.png").stat().st_size > 0


def test_replications_give_student_t_confidence_intervals():
    """Common seeds give every policy the same requests; the summary's CI is the Student t
    half-width of the per-episode values."""
    kwargs = {"workload": "demo2", "latency": "demo2", "arrival_rate": 3.0, "n_requests": 60}
    episodes, summary = evaluate(["prefill-first", "decode-first"], ENV_ID, kwargs, range(4))
    by_policy = {p: g.sort_values("seed") for p, g in episodes.groupby("policy")}
    assert_same_workload_per_seed(episodes)
    row = summary.set_index("policy").loc["decode-first"]
    mean, half = mean_ci(by_policy["decode-first"]["ttft_s_p99"])
    assert row["ttft_s_p99_mean"] == pytest.approx(mean)
    assert row["ttft_s_p99_ci95"] == pytest.approx(half)
    assert math.isfinite(half) and half > 0
