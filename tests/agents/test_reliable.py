import numpy as np
import pandas as pd
import pytest
import scipy.stats

from agents.reliable import (
    AGENT_NAME,
    COLUMNS,
    _pandas2_deprecate_kwarg,
    import_rliable,
    reliable_statistics,
)

SEEDS = [10_000, 10_001, 10_002, 10_003]
#: Per-seed returns of the baselines: random has mean 10, edf 20 (the best heuristic), fifo 15.
BASELINES = {
    "random": [8.0, 12.0, 9.0, 11.0],
    "edf": [18.0, 22.0, 19.0, 21.0],
    "fifo": [15.0, 15.0, 15.0, 15.0],
}
#: Mean return of each run's agent; each run's per-seed returns are its mean +/- 1.
RUN_MEANS = {"r0": 14.0, "r1": 18.0, "r2": 21.0, "r3": 25.0, "r4": 30.0}


def episodes(run_means=RUN_MEANS, baselines=BASELINES):
    rows = []
    for policy, returns in baselines.items():
        rows += [(policy, "", s, r) for s, r in zip(SEEDS, returns)]
    for run, mean in run_means.items():
        rows += [(AGENT_NAME, run, s, mean + d) for s, d in zip(SEEDS, (-1, 1, -1, 1))]
    return pd.DataFrame(rows, columns=["policy", "run", "seed", "return"])


def stats(frame, **kwargs):
    return reliable_statistics(frame, reps=300, profile_reps=50, **kwargs)


def test_scores_are_normalised_between_random_and_the_best_heuristic():
    result = stats(episodes())
    row = result.table.iloc[0]
    assert list(result.table.columns) == list(COLUMNS)
    assert row["best_heuristic"] == "edf"
    assert (row["random_mean"], row["best_heuristic_mean"]) == (10.0, 20.0)
    scores = dict(zip(result.run_scores["run"], result.run_scores["score"]))
    assert scores == pytest.approx({r: (m - 10.0) / 10.0 for r, m in RUN_MEANS.items()})
    # IQM: the 25% trimmed mean of the run scores, inside its bootstrap interval.
    iqm = scipy.stats.trim_mean(list(scores.values()), 0.25)
    assert row["iqm"] == pytest.approx(iqm)
    assert row["iqm_ci_low"] <= iqm <= row["iqm_ci_high"]
    # P(agent > best heuristic): 3 of 5 runs score above 1.
    assert row["p_improvement"] == pytest.approx(0.6)
    assert row["p_improvement_ci_low"] < 0.6 < row["p_improvement_ci_high"]


def test_heuristics_tied_on_the_mean_are_broken_by_name_as_compare_breaks_them():
    # "zeta" is listed first and ties "edf" on the mean, seed by seed differently.
    tied = {"random": BASELINES["random"], "zeta": [20.0] * 4, **BASELINES}
    assert stats(episodes(baselines=tied)).table.iloc[0]["best_heuristic"] == "edf"


def test_paired_differences_compare_the_agents_seed_mean_with_the_best_heuristic():
    row = stats(episodes()).table.iloc[0]
    agent = np.mean(list(RUN_MEANS.values())) + np.array([-1, 1, -1, 1])
    diff = agent - np.array(BASELINES["edf"])
    assert row["paired_mean"] == pytest.approx(diff.mean())
    assert (row["paired_wins"], row["paired_n"]) == (int((diff > 0).sum()), 4)
    assert row["paired_ci95"] > 0


def test_same_seed_same_intervals_and_the_global_generator_is_left_alone():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    a = stats(episodes(), seed=7)
    assert np.random.random() == expected
    b = stats(episodes(), seed=7)
    pd.testing.assert_frame_equal(a.table, b.table)
    np.testing.assert_array_equal(a.profile_ci, b.profile_ci)
    assert a.profile.shape == a.taus.shape and a.profile_ci.shape == (2, a.taus.size)


def test_fewer_than_five_runs_warn():
    few = {k: RUN_MEANS[k] for k in ("r0", "r1")}
    with pytest.warns(UserWarning, match="2 training runs per scenario"):
        stats(episodes(run_means=few))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda f: f[f["policy"] != "random"], "has no 'random' episodes"),
        (lambda f: f[~f["policy"].isin(["edf", "fifo"])], "no heuristic besides 'random'"),
        (lambda f: f.drop(index=f.index[-1]), r"runs \['r4'\] did not play every seed"),
        (lambda f: f.drop(columns="run"), r"lack the columns \['run'\]"),
        (lambda f: f.assign(**{"return": f["return"].where(f.index != 0)}), "not a finite"),
    ],
)
def test_bad_episodes_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        stats(change(episodes()))


def test_a_best_heuristic_no_better_than_random_cannot_normalise():
    flat = {"random": [10.0] * 4, "edf": [10.0] * 4}
    with pytest.raises(ValueError, match="not above random's 10.0"):
        stats(episodes(baselines=flat))


def test_the_import_shim_restores_pandas():
    from pandas.util import _decorators

    original = _decorators.deprecate_kwarg
    with _pandas2_deprecate_kwarg():
        pass
    import_rliable("metrics")
    assert _decorators.deprecate_kwarg is original


def test_each_scenario_is_normalised_by_its_own_baselines():
    a = episodes().assign(scenario="a")
    b = episodes().assign(scenario="b")
    b["return"] = b["return"] * 2
    result = stats(pd.concat([a, b], ignore_index=True))
    assert result.table["scenario"].tolist() == ["a", "b"]
    assert result.table["best_heuristic_mean"].tolist() == [20.0, 40.0]
    # Doubling every return leaves the normalised scores unchanged.
    scores = result.run_scores.pivot_table(index="run", columns="scenario", values="score")
    np.testing.assert_allclose(scores["a"], scores["b"])
    with pytest.raises(ValueError, match="same number of runs"):
        stats(pd.concat([a, b[b["run"] != "r4"]], ignore_index=True))


def test_the_profile_figure_is_skipped_without_matplotlib(monkeypatch, tmp_path):
    from agents import reliable

    result = stats(episodes())
    assert reliable.plot_performance_profile(result, tmp_path / "p.png") == tmp_path / "p.png"
    monkeypatch.setattr("llmsched_env.plotting.new_figure", lambda **kwargs: None)
    assert reliable.plot_performance_profile(result, tmp_path / "q.png") is None
    assert not (tmp_path / "q.png").exists()
