import json
import shutil

import pandas as pd
import pytest

from agents.compare import AGENT_NAME, compare
from agents.compare_runs import compare_runs
from llmsched_env.cli import main
from tests.agents.conftest import tiny_train

#: A tiny env under load, where random and the heuristics differ.
LOADED = {"n_requests": 60, "load": 1.5}
SEEDS = {"n_seeds": 2, "first_seed": 10_005}
FAST = {"reps": 100, "profile_reps": 20}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("group")
    for seed in (0, 1):
        tiny_train(root / f"seed{seed}", seed=seed, env_kwargs=LOADED)
    return [root / "seed0", root / "seed1"]


def test_runs_are_pooled_and_baselines_run_once(two_runs, tmp_path):
    with pytest.warns(UserWarning, match="2 training runs"):
        result = compare_runs(two_runs, policies=["edf"], out=tmp_path / "cmp", **SEEDS, **FAST)
    episodes = result.episodes
    assert list(episodes.columns[:3]) == ["policy", "run", "seed"] and "return" in episodes
    counts = episodes.groupby(["policy", "run"]).size().to_dict()
    # random is added to anchor score 0; every baseline plays each seed once.
    assert counts == {
        (AGENT_NAME, "seed0"): 2,
        (AGENT_NAME, "seed1"): 2,
        ("edf", ""): 2,
        ("random", ""): 2,
    }
    assert result.runs == ["seed0", "seed1"]
    row = result.reliable.table.iloc[0]
    assert (row["n_runs"], row["n_seeds"], row["paired_n"]) == (2, 2, 2)
    assert row["best_heuristic"] == "edf"
    written = {p.name for p in (tmp_path / "cmp").iterdir()}
    assert {"episodes.csv", "summary.csv", "reliable.csv", "run_scores.csv"} <= written
    assert "performance_profile.png" in written
    # Each run's agent plays exactly as in a single-run comparison.
    single = compare(two_runs[1], policies=["edf"], **SEEDS).episodes
    pooled = episodes[episodes["run"] == "seed1"]
    assert pooled["return"].tolist() == single[single["policy"] == AGENT_NAME]["return"].tolist()


@pytest.mark.filterwarnings("ignore:2 training runs per scenario")
def test_a_baseline_setting_is_scored_beside_its_defaults(two_runs):
    setting = "static-fifo(batch_size=1)"
    result = compare_runs(two_runs, policies=["static-fifo", setting], **SEEDS, **FAST)
    returns = result.episodes.groupby("policy")["return"].mean()
    assert {"static-fifo", setting, "random"} <= set(returns.index)
    assert returns["static-fifo"] != returns[setting]  # batches of 8 against batches of 1
    best = max(("static-fifo", setting), key=lambda p: returns[p])
    assert result.reliable.table.iloc[0]["best_heuristic"] == best
    with pytest.raises(ValueError, match="unknown batch policy 'static-fif'"):
        compare_runs(two_runs, policies=["static-fif(batch_size=1)"], **SEEDS, **FAST)


def test_runs_of_different_env_settings_are_refused(two_runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(two_runs[1], other)
    config = json.loads((other / "config.json").read_text())
    same = json.loads(json.dumps(config))
    config["env_kwargs"]["load"] = config["env_config"]["load"] = 2.0
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"different env settings \(env_config differ: load: "):
        compare_runs([two_runs[0], other], **SEEDS, **FAST)
    # The same env reached through other arguments (a default given explicitly) is accepted.
    same["env_kwargs"]["n_gpus"] = same["env_config"]["n_gpus"]
    (other / "config.json").write_text(json.dumps(same))
    result = compare_runs([two_runs[0], other], policies=["edf"], **SEEDS, **FAST)
    assert len(result.reliable.run_scores) == 2
    with pytest.raises(ValueError, match="given more than once"):
        compare_runs([two_runs[0], two_runs[0]], **SEEDS, **FAST)
    # The same validation env, another training distribution: a different recipe.
    mixed = json.loads(json.dumps(same))
    mixed["training_mixture"] = {"components": [{"workload": "demo2"}, {"workload": "demo3"}]}
    (other / "config.json").write_text(json.dumps(mixed))
    with pytest.raises(ValueError, match="the env itself vs a mixture of 2 components"):
        compare_runs([two_runs[0], other], **SEEDS, **FAST)


@pytest.mark.filterwarnings("ignore:2 training runs per scenario")
def test_cli_compare_runs(two_runs, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [
        "compare",
        "--runs",
        *map(str, two_runs),
        "--seeds",
        "2",
        "--first-seed",
        "10005",
        "--policies",
        "edf,multibin-wc",
        "--bootstrap-reps",
        "100",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "agent (seed0)" in printed and "normalised IQM" in printed
    assert (out / "reliable.csv").is_file()
    assert main(["compare", "--run", str(two_runs[0]), "--runs", str(two_runs[1])]) == 2


def test_the_cli_checks_the_files_compare_runs_writes():
    from agents.compare_runs import RUNS_FILES
    from llmsched_env.cli import RUNS_OUTPUT_FILES

    assert RUNS_OUTPUT_FILES == RUNS_FILES


@pytest.mark.filterwarnings("ignore:2 training runs per scenario")
def test_env_overrides_reach_every_run_and_space_changes_are_refused(two_runs, tmp_path):
    # The runs are scored on the overridden env, exactly as a single-run comparison would be.
    pooled = compare_runs(two_runs, policies=["edf"], env_overrides={"load": 1.2}, **SEEDS, **FAST)
    assert pooled.config.env_kwargs["load"] == 1.2
    assert pooled.reliable.table["scenario"].tolist() == [
        f"{pooled.config.scenario or 'default'} (load=1.2)"
    ]
    single = compare(two_runs[0], policies=["edf"], env_overrides={"load": 1.2}, **SEEDS).episodes
    agent = pooled.episodes[pooled.episodes["run"] == "seed0"]
    assert agent["return"].tolist() == single[single["policy"] == AGENT_NAME]["return"].tolist()
    with pytest.raises(ValueError, match="n_gpus"):
        compare_runs(two_runs, env_overrides={"n_gpus": 3}, **SEEDS, **FAST)
    # From the command line: the env flags are applied, not dropped.
    argv = ["compare", "--runs", *map(str, two_runs), "--seeds", "2", "--first-seed", "10005"]
    argv += ["--policies", "edf", "--bootstrap-reps", "100", "--quiet", "--load", "1.2"]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0
    written = pd.read_csv(tmp_path / "cli" / "episodes.csv")
    from_cli = written[written["policy"] == AGENT_NAME]["return"].tolist()
    assert from_cli == pooled.episodes[pooled.episodes["policy"] == AGENT_NAME]["return"].tolist()
