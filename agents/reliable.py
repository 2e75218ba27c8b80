"""Statistics of agent results over several training seeds, with the ``rliable`` package.

Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical Precipice"
(NeurIPS 2021), show that a point estimate from a few training runs misleads, and recommend
interval estimates over independent training runs: the interquartile mean (IQM) with
stratified-bootstrap confidence intervals, the probability of improvement, and performance
profiles. Their library, ``rliable`` (google-research/rliable), computes all three; this module
only arranges the episodes of ``llmsched compare --runs`` into its inputs.

Definitions (per scenario, that is per env configuration):

* **Normalised score** of a return ``R``: ``(R - R_random) / (R_best - R_random)``, where
  ``R_random`` is the mean return of the ``random`` baseline (uniform over valid actions) and
  ``R_best`` the mean return of the best heuristic (the baseline other than ``random`` with the
  highest mean return), both over the same evaluation seeds. So 0 is the random valid policy
  and 1 the best heuristic.
* **Run score**: a training run's normalised score is its agent's mean return over the
  evaluation seeds, normalised. The score matrices ``rliable`` takes are
  ``(n_runs, n_scenarios)``; with one scenario, the runs (training seeds) are the rows.
* **IQM**: the mean of the run scores left after dropping the lowest and the highest
  ``floor(n / 4)`` (``rliable.metrics.aggregate_iqm``, ``scipy.stats.trim_mean(scores, 0.25)``:
  the middle 3 of 5 runs), with a 95% stratified-bootstrap percentile interval over runs
  (``library.get_interval_estimates``).
* **P(agent > best heuristic)**: ``rliable.metrics.probability_of_improvement`` of the agent's
  run scores over the best heuristic's score. A heuristic is deterministic given the seed, so
  it has one "run" whose score is 1 by definition; the probability is the fraction of training
  runs scoring above it (ties count one half), with a bootstrap interval over runs.
* **Paired differences**: on each evaluation seed, the agent's return averaged over runs minus
  the best heuristic's return on that seed (both serve the same requests): the mean with a
  Student-t 95% interval, and the seeds on which the agent is ahead.
* **Performance profile**: the fraction of run scores above each threshold ``tau``
  (``library.create_performance_profile``) with bootstrap bands, drawn with
  ``rliable.plot_utils``.

``rliable`` draws its bootstrap samples from NumPy's global generator; :func:`reliable_statistics`
seeds it for the duration of the call and restores its state afterwards, so the same episodes
and ``seed`` give the same intervals and the caller's global stream is left untouched.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from llmsched_env.evaluation import best_policy, mean_ci

#: Name of agent rows in episodes (as in :mod:`agents.compare`).
AGENT_NAME = "agent"
#: The baseline that anchors normalised score 0.
RANDOM_POLICY = "random"
#: Training runs below which results are not reliable (Agarwal et al. 2021 report 5 or more).
MIN_RUNS = 5
#: Bootstrap replications of the IQM and probability intervals. ``rliable``'s default of 50,000
#: takes about 30 s per scenario for the probability of improvement (a Mann-Whitney U per
#: replication); 10,000 take about 7 s and move the percentile bounds of a few runs little.
INTERVAL_REPS = 10_000
#: Bootstrap replications of the performance-profile bands (``rliable``'s default).
PROFILE_REPS = 2_000
#: Columns of the statistics table, one row per scenario.
COLUMNS = (
    "scenario",
    "n_runs",
    "n_seeds",
    "random_mean",
    "best_heuristic",
    "best_heuristic_mean",
    "agent_mean",
    "iqm",
    "iqm_ci_low",
    "iqm_ci_high",
    "p_improvement",
    "p_improvement_ci_low",
    "p_improvement_ci_high",
    "paired_mean",
    "paired_ci95",
    "paired_wins",
    "paired_n",
)
INSTALL_HINT = "pip install 'llmsched-env[agents]'"


def import_rliable(submodule: str = "library") -> ModuleType:
    """Import ``rliable.<submodule>``, or fail with an install hint.

    ``rliable`` 1.2 requires ``arch < 8`` (``arch`` 8 no longer accepts the ``random_state``
    argument rliable passes), and ``arch`` 7 calls pandas' private ``deprecate_kwarg`` with
    its pandas-2 signature while being imported, which pandas 3 rejects. Under pandas 3 the
    import therefore runs with a stand-in that forwards the pandas-2 call to the pandas-3 one
    (with ``FutureWarning``, the pandas-2 default); pandas is restored right after.

    Raises:
        ImportError: If ``rliable`` is not installed (the message says how to install it).
    """
    with _pandas2_deprecate_kwarg():
        try:
            return importlib.import_module(f"rliable.{submodule}")
        except ImportError as error:
            raise ImportError(
                f"the statistics of several training runs need the 'rliable' package of the "
                f"'agents' extra, which cannot be imported ({error}); install it with: "
                f"{INSTALL_HINT}"
            ) from error


@contextlib.contextmanager
def _pandas2_deprecate_kwarg() -> Iterator[None]:
    """Let modules written for pandas 2 call ``deprecate_kwarg(old, new)`` under pandas 3."""
    import inspect

    from pandas.util import _decorators

    original = _decorators.deprecate_kwarg
    if next(iter(inspect.signature(original).parameters)) != "klass":
        yield
        return

    def deprecate_kwarg(old_arg_name: str, new_arg_name: str | None, *args: Any, **kwargs: Any):
        return original(FutureWarning, old_arg_name, new_arg_name, *args, **kwargs)

    _decorators.deprecate_kwarg = deprecate_kwarg
    try:
        yield
    finally:
        _decorators.deprecate_kwarg = original


@contextlib.contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator (rliable's bootstrap uses it) and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


@dataclass(frozen=True)
class ReliableResult:
    """The statistics of :func:`reliable_statistics`.

    Attributes:
        table: One row per scenario, columns :data:`COLUMNS` (see the module docstring).
        run_scores: One row per (scenario, run): ``scenario, run, return_mean, score``.
        taus: Thresholds of the performance profile.
        profile: Fraction of run scores above each threshold.
        profile_ci: ``(2, len(taus))`` lower and upper 95% bootstrap bands of ``profile``.
    """

    table: pd.DataFrame
    run_scores: pd.DataFrame
    taus: np.ndarray
    profile: np.ndarray
    profile_ci: np.ndarray

    def lines(self) -> list[str]:
        """One line per scenario: IQM, probability of improvement, paired difference."""
        out = []
        for _, row in self.table.iterrows():
            out.append(
                f"{row['scenario']}: {int(row['n_runs'])} runs x {int(row['n_seeds'])} seeds; "
                f"normalised IQM {row['iqm']:.3f} [{row['iqm_ci_low']:.3f}, "
                f"{row['iqm_ci_high']:.3f}] (0 = random, 1 = {row['best_heuristic']}); "
                f"P(agent > {row['best_heuristic']}) {row['p_improvement']:.2f} "
                f"[{row['p_improvement_ci_low']:.2f}, {row['p_improvement_ci_high']:.2f}]; "
                f"paired return difference {row['paired_mean']:+.1f} +/- "
                f"{row['paired_ci95']:.1f}, agent ahead on {int(row['paired_wins'])}/"
                f"{int(row['paired_n'])} seeds"
            )
        return out


def reliable_statistics(
    episodes: pd.DataFrame,
    *,
    scenario: str = "default",
    seed: int = 0,
    reps: int = INTERVAL_REPS,
    profile_reps: int = PROFILE_REPS,
) -> ReliableResult:
    """IQM, probability of improvement, paired differences and a profile from episodes.

    Args:
        episodes: One row per episode with columns ``policy, seed, return`` and ``run`` (the
            training run of ``agent`` rows), and optionally ``scenario``. Agent rows are named
            :data:`AGENT_NAME`; the baselines, including ``random``, ran once per seed.
        scenario: Scenario name when ``episodes`` has no ``scenario`` column.
        seed: Seed of the bootstrap.
        reps: Bootstrap replications of the IQM and probability intervals.
        profile_reps: Bootstrap replications of the performance-profile bands.

    Returns:
        The :class:`ReliableResult`.

    Raises:
        ValueError: For missing columns, no agent or ``random`` or heuristic episodes, runs
            or baselines that did not play every seed, a different number of runs per
            scenario, or a best heuristic not above ``random`` (scores cannot be normalised).
    """
    library, metrics = import_rliable("library"), import_rliable("metrics")
    frame = _checked(episodes, scenario)
    scenarios = list(dict.fromkeys(frame["scenario"]))
    rows, scores = [], []
    for name in scenarios:
        row, run_scores = _scenario_statistics(frame[frame["scenario"] == name], name)
        rows.append(row)
        scores.append(run_scores)
    counts = {name: len(s) for name, s in zip(scenarios, scores)}
    if len(set(counts.values())) > 1:
        raise ValueError(f"every scenario needs the same number of runs, got {counts}")
    if min(counts.values()) < MIN_RUNS:
        warnings.warn(
            f"{min(counts.values())} training runs per scenario; Agarwal et al. (NeurIPS 2021) "
            f"report intervals over at least {MIN_RUNS} independent runs",
            UserWarning,
            stacklevel=2,
        )
    matrix = np.column_stack([s["score"].to_numpy(dtype=float) for s in scores])

    def iqm(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x)])

    def improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.array([metrics.probability_of_improvement(x, y)])

    low = min(0.0, float(matrix.min()))
    high = max(1.0, float(matrix.max()))
    margin = 0.05 * (high - low)
    taus = np.linspace(low - margin, high + margin, 101)
    with _seeded_global_numpy(seed), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch's notices about its own options
        for j, row in enumerate(rows):
            column = matrix[:, [j]]
            point, interval = library.get_interval_estimates({"a": column}, iqm, reps=reps)
            row.update(iqm=point["a"][0], iqm_ci_low=interval["a"][0, 0])
            row.update(iqm_ci_high=interval["a"][1, 0])
            pair = [column, np.ones((1, 1))]
            point, interval = library.get_interval_estimates({"p": pair}, improvement, reps=reps)
            row.update(p_improvement=point["p"][0], p_improvement_ci_low=interval["p"][0, 0])
            row.update(p_improvement_ci_high=interval["p"][1, 0])
        profiles, bands = library.create_performance_profile({"a": matrix}, taus, reps=profile_reps)
    table = pd.DataFrame(rows)[list(COLUMNS)]
    return ReliableResult(
        table=table,
        run_scores=pd.concat(scores, ignore_index=True),
        taus=taus,
        profile=np.asarray(profiles["a"], dtype=float),
        profile_ci=np.asarray(bands["a"], dtype=float),
    )


def _checked(episodes: pd.DataFrame, scenario: str) -> pd.DataFrame:
    """``episodes`` with a ``scenario`` column, after checking the required columns."""
    missing = [c for c in ("policy", "seed", "return", "run") if c not in episodes.columns]
    if missing:
        raise ValueError(
            f"episodes lack the columns {missing}; expected policy, seed, return and run"
        )
    frame = episodes.copy()
    if "scenario" not in frame.columns:
        frame["scenario"] = scenario
    bad = frame[~np.isfinite(frame["return"].to_numpy(dtype=float))]
    if len(bad):
        first = bad.iloc[0]
        raise ValueError(
            f"episode return {first['return']!r} of policy {first['policy']!r} on seed "
            f"{first['seed']} is not a finite number"
        )
    return frame


def _scenario_statistics(frame: pd.DataFrame, name: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """The row of one scenario without the bootstrap columns, and its per-run scores."""
    agent = frame[frame["policy"] == AGENT_NAME]
    baselines = frame[frame["policy"] != AGENT_NAME]
    if agent.empty:
        raise ValueError(f"scenario {name!r} has no {AGENT_NAME!r} episodes")
    seeds = sorted(frame["seed"].unique())
    returns = baselines.pivot_table(index="seed", columns="policy", values="return")
    by_run = agent.pivot_table(index="seed", columns="run", values="return")
    for label, table in (("baseline", returns), ("run", by_run)):
        incomplete = [str(c) for c in table.columns if table[c].reindex(seeds).isna().any()]
        if incomplete:
            raise ValueError(
                f"scenario {name!r}: {label}s {incomplete} did not play every seed of {seeds}"
            )
    if RANDOM_POLICY not in returns.columns:
        raise ValueError(
            f"scenario {name!r} has no {RANDOM_POLICY!r} episodes, which anchor score 0"
        )
    means = returns.mean()
    heuristics = means.drop(RANDOM_POLICY)
    if heuristics.empty:
        raise ValueError(f"scenario {name!r} has no heuristic besides {RANDOM_POLICY!r}")
    best = best_policy({str(name): float(mean) for name, mean in heuristics.items()})
    random_mean, best_mean = float(means[RANDOM_POLICY]), float(heuristics[best])
    if not best_mean > random_mean:
        raise ValueError(
            f"scenario {name!r}: the best heuristic {best!r} has mean return {best_mean!r}, "
            f"not above random's {random_mean!r}, so returns cannot be normalised"
        )
    run_means = by_run.mean()
    run_scores = pd.DataFrame(
        {
            "scenario": name,
            "run": [str(r) for r in run_means.index],
            "return_mean": run_means.to_numpy(dtype=float),
            "score": (run_means.to_numpy(dtype=float) - random_mean) / (best_mean - random_mean),
        }
    )
    diff = (by_run.mean(axis=1) - returns[best]).reindex(seeds).to_numpy(dtype=float)
    paired_mean, paired_half = mean_ci(diff)
    row = {
        "scenario": name,
        "n_runs": len(run_means),
        "n_seeds": len(seeds),
        "random_mean": random_mean,
        "best_heuristic": best,
        "best_heuristic_mean": best_mean,
        "agent_mean": float(run_means.mean()),
        "paired_mean": paired_mean,
        "paired_ci95": paired_half,
        "paired_wins": int((diff > 0).sum()),
        "paired_n": int(diff.size),
    }
    return row, run_scores


def plot_performance_profile(
    result: ReliableResult, path: str | Path, title: str = ""
) -> Path | None:
    """Draw the agent's performance profile with ``rliable.plot_utils``.

    Vertical lines mark score 0 (random valid policy) and 1 (best heuristic).

    Returns:
        The written path, or ``None`` when matplotlib is not installed.
    """
    from llmsched_env.plotting import new_figure, save_figure

    fig = new_figure(figsize=(6, 3.6))
    if fig is None:
        return None
    plot_utils = import_rliable("plot_utils")
    ax = fig.subplots()
    plot_utils.plot_performance_profiles(
        {AGENT_NAME: result.profile},
        result.taus,
        performance_profile_cis={AGENT_NAME: result.profile_ci},
        ax=ax,
        colors={AGENT_NAME: "tab:blue"},
        xlabel=r"normalised score $\tau$ (0 = random, 1 = best heuristic)",
        ylabel=r"fraction of runs with score $> \tau$",
        labelsize="medium",
        ticklabelsize="medium",
    )
    for x, label in ((0.0, "random"), (1.0, "best heuristic")):
        ax.axvline(x, color="gray", linestyle="--", linewidth=1)
        ax.text(x, 1.02, label, ha="center", va="bottom", fontsize=8, color="gray")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
