"""The ``llmsched`` command line."""

from __future__ import annotations

import pandas as pd

from baselines import policy_names
from llmsched_env.cli import build_parser, main

TINY = ["--workload", "demo2", "--n-requests", "60", "--seeds", "2", "--quiet"]


# ---------------------------------------------------------------- evaluate
def test_evaluate_writes_episodes_summary_and_a_table(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["evaluate", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert '"workload": "demo2"' in printed and "seeds 10000..10001" in printed
    episodes = pd.read_csv(out / "episodes.csv")
    summary = pd.read_csv(out / "summary.csv")
    names = policy_names("batch")
    assert len(episodes) == 2 * len(names)
    assert set(episodes["seed"]) == {10_000, 10_001}
    assert (episodes["invalid_actions"] == 0).all()
    assert sorted(summary["policy"]) == sorted(names)
    for column in ("policy", "return_mean", "sla_attainment", "goodput_rps", "p99_latency_s"):
        assert column in summary.columns
    assert list(summary["return_mean"]) == sorted(summary["return_mean"], reverse=True)
    table = printed.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("policy"))
    rows = [line.split()[0] for line in table[header + 2 : header + 2 + len(names)]]
    assert rows == list(summary["policy"])  # printed in the summary's order (best return first)
    assert "wrote episodes.csv, summary.csv" in printed


def test_evaluate_selected_policies_and_env_flags(tmp_path, capsys):
    argv = ["evaluate", *TINY, "--policies", "edf, random", "--gpus", "1", "--load", "0.5"]
    argv += ["--env-kwargs", '{"sla": 20, "n_bins": 2}', "--out", str(tmp_path)]
    assert main(argv) == 0
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert sorted(summary["policy"]) == ["edf", "random"]
    printed = capsys.readouterr().out
    assert '"n_gpus": 1' in printed and '"load": 0.5' in printed and '"sla": 20' in printed


def test_evaluate_rejects_unknown_policies_with_a_suggestion(capsys):
    assert main(["evaluate", *TINY, "--policies", "multibn"]) == 2
    error = capsys.readouterr().err
    assert "unknown batch policy 'multibn'" in error and "Did you mean 'multibin'?" in error
    assert main(["evaluate", *TINY, "--policies", ","]) == 2
    assert "names no policy" in capsys.readouterr().err


def test_evaluate_reports_bad_configurations_without_a_traceback(capsys):
    assert main(["evaluate", *TINY, "--load", "0.5", "--arrival-rate", "3"]) == 2
    assert "exactly one of load" in capsys.readouterr().err
    assert main(["evaluate", *TINY[:-3], "--seeds", "0", "--quiet"]) == 2
    assert "seeds must not be empty" in capsys.readouterr().err


def test_evaluate_defaults():
    args = build_parser().parse_args(["evaluate"])
    assert (args.env, args.policies, args.seeds, args.first_seed, args.jobs) == (
        "batch",
        "all",
        10,
        10_000,
        1,
    )
