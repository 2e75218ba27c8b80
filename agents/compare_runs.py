"""Compare a group of training runs (independent training seeds) with every baseline.

:func:`compare_runs` is what ``llmsched compare --runs DIR [DIR ...]`` runs. Every run's agent
and every baseline of the env are evaluated on the same evaluation seeds, the baselines once
(a baseline is deterministic given the seed, so a second pass would repeat the same episodes),
and :func:`agents.reliable.reliable_statistics` pools the runs by the standard of Agarwal et al.
(NeurIPS 2021): normalised IQM, probability of improvement over the best heuristic, paired
per-seed differences and a performance profile. The ``random`` baseline is always evaluated,
because it anchors normalised score 0.

The runs must share the env they were trained on (env id, keyword arguments and the env's full
configuration); a group mixing env settings is refused, since their scores would measure
different problems.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from agents.compare import AGENT_NAME, _title, with_env_overrides
from agents.policy import SETTLED_POLICY, AgentPolicyFactory
from agents.reliable import (
    INTERVAL_REPS,
    PROFILE_REPS,
    RANDOM_POLICY,
    ReliableResult,
    plot_performance_profile,
    reliable_statistics,
)
from agents.runs import ModelChoice, RunConfig, load_run_config
from agents.scenarios import build_env_kwargs
from agents.seeds import evaluation_seeds
from llmsched_env.evaluation import evaluate
from llmsched_env.kinds import kind_of_id

#: Files :func:`write_runs_comparison` writes (the figures only with matplotlib).
RUNS_FILES = (
    "episodes.csv",
    "summary.csv",
    "reliable.csv",
    "run_scores.csv",
    "comparison.png",
    "performance_profile.png",
)


@dataclass(frozen=True)
class RunsComparison:
    """The result of :func:`compare_runs`.

    Attributes:
        config: The first run's configuration (all runs share its env settings).
        runs: Label of each run (its directory name, or its path when names repeat).
        seeds: Evaluation seeds.
        episodes: One row per (policy, seed), plus ``run`` (the run's label; empty for
            baselines): agent rows are named ``agent``, one per run and seed.
        summary: One row per run's agent and per baseline, best mean return first, with
            ``run`` as in ``episodes``.
        reliable: The pooled statistics (:class:`agents.reliable.ReliableResult`).
    """

    config: RunConfig
    runs: list[str]
    seeds: list[int]
    episodes: pd.DataFrame
    summary: pd.DataFrame
    reliable: ReliableResult


def compare_runs(
    run_dirs: Sequence[str | Path],
    *,
    n_seeds: int = 20,
    first_seed: int = 10_000,
    policies: Sequence[str] | None = None,
    which: ModelChoice = "best",
    n_jobs: int = 1,
    out: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    settled_policy: str | None = SETTLED_POLICY,
    bootstrap_seed: int = 0,
    reps: int = INTERVAL_REPS,
    profile_reps: int = PROFILE_REPS,
    env_overrides: Mapping[str, Any] | None = None,
) -> RunsComparison:
    """Evaluate several runs' agents and the baselines on common seeds; pool the runs.

    Args:
        run_dirs: Training run directories (independent training seeds of one recipe).
        n_seeds: Number of evaluation seeds.
        first_seed: First evaluation seed, ``>= 10,000``.
        policies: Baselines to include, names or settings such as
            ``"length-split(long_replicas=2)"`` (default: every baseline of the env); ``random`` is
            added when missing.
        which: ``"best"`` (validation-selected), ``"final"`` or ``"averaged"`` model of each
            run (:func:`agents.runs.model_paths`).
        n_jobs: Worker processes of the evaluation harness.
        out: When given, write the files of :func:`write_runs_comparison` there.
        progress: Called as ``progress(done, total)`` after each episode.
        settled_policy: As in :func:`agents.compare.compare`.
        bootstrap_seed: Seed of the bootstrap intervals.
        reps: Bootstrap replications of the IQM and probability intervals.
        profile_reps: Bootstrap replications of the performance-profile bands.
        env_overrides: Env settings that replace the runs' (as in
            :func:`agents.compare.compare`: refused when they change the agents' spaces).

    Returns:
        The :class:`RunsComparison`.

    Raises:
        ValueError: For no runs, a run given twice, runs trained on different env settings,
            or a bad argument (named in the message).
    """
    from baselines import check_policies, policy_names

    if not run_dirs:
        raise ValueError("run_dirs is empty; give one or more training run directories")
    paths = [Path(d) for d in run_dirs]
    resolved = [p.resolve() for p in paths]
    repeated = sorted({str(p) for p in paths if resolved.count(p.resolve()) > 1})
    if repeated:
        raise ValueError(f"run directories {repeated} are given more than once")
    configs = [load_run_config(p) for p in paths]
    _check_same_env(paths, configs)
    config = configs[0]
    names = [p.name for p in paths]
    labels = names if len(set(names)) == len(names) else [str(p) for p in paths]
    seeds = evaluation_seeds(n_seeds, first_seed)
    kind = kind_of_id(config.env_id).name
    available = policy_names(kind)
    chosen = available if policies is None else list(policies)
    check_policies(kind, chosen)
    if RANDOM_POLICY not in chosen:
        chosen = [*chosen, RANDOM_POLICY]
    config = with_env_overrides(config, env_overrides)
    agent_names = [f"{AGENT_NAME}[{label}]" for label in labels]
    clash = sorted(set(agent_names) & set(chosen))
    if clash:
        raise ValueError(f"baseline names {clash} clash with the agents' names")
    agents = [
        AgentPolicyFactory(str(p), which=which, name=n, settled_policy=settled_policy)
        for p, n in zip(paths, agent_names)
    ]
    episodes, summary = evaluate(
        [*agents, *chosen],
        config.env_id,
        build_env_kwargs(config.env_kwargs),
        seeds,
        n_jobs=n_jobs,
        names=[*agent_names, *chosen],
        progress=progress,
    )
    run_of = dict(zip(agent_names, labels))
    episodes, summary = _label_runs(episodes, run_of), _label_runs(summary, run_of)
    scenario = config.scenario or "default"
    if env_overrides:  # scored away from the training settings: say where
        scenario += " (" + ", ".join(f"{k}={v}" for k, v in env_overrides.items()) + ")"
    reliable = reliable_statistics(
        episodes,
        scenario=scenario,
        seed=bootstrap_seed,
        reps=reps,
        profile_reps=profile_reps,
    )
    comparison = RunsComparison(config, labels, seeds, episodes, summary, reliable)
    if out is not None:
        write_runs_comparison(comparison, out)
    return comparison


def _label_runs(frame: pd.DataFrame, run_of: dict[str, str]) -> pd.DataFrame:
    """Rename ``agent[<run>]`` rows to ``agent`` with a ``run`` column after ``policy``."""
    frame = frame.copy()
    run = frame["policy"].map(run_of).fillna("")
    frame["policy"] = frame["policy"].where(run == "", AGENT_NAME)
    frame.insert(frame.columns.get_loc("policy") + 1, "run", run)
    return frame


def _check_same_env(paths: Sequence[Path], configs: Sequence[RunConfig]) -> None:
    """Refuse runs whose env id, env configuration or training distribution differ.

    The configuration is the env's resolved one, recorded at training (``env_config``): the same
    env reached through different arguments (a default given explicitly) is the same env. Runs
    that did not record it are compared by their keyword arguments. Runs trained on different
    mixtures of workloads (``training_mixture``), or one on a mixture and one on the env
    itself, are different recipes even when they are validated on the same env.
    """
    first = configs[0]
    for path, config in zip(paths[1:], configs[1:]):
        resolved = bool(first.env_config) and bool(config.env_config)
        fields = ("env_id", "env_config") if resolved else ("env_id", "env_kwargs", "env_config")
        fields = (*fields, "training_mixture")
        for field in fields:
            a, b = getattr(first, field), getattr(config, field)
            if a == b:
                continue
            if field == "training_mixture":
                detail = f"{_distribution(a)} vs {_distribution(b)}"
            elif isinstance(a, dict) and isinstance(b, dict):
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                detail = ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys)
            else:
                detail = f"{a!r} vs {b!r}"
            raise ValueError(
                f"runs {str(paths[0])!r} and {str(path)!r} were trained on different env "
                f"settings ({field} differ: {detail}); compare runs of one env configuration"
            )


def _distribution(mixture: dict[str, Any] | None) -> str:
    """What a run trained on, for a message: the env itself, or a mixture of n components."""
    if not mixture:
        return "the env itself"
    return f"a mixture of {len(mixture.get('components', ()))} components"


def write_runs_comparison(comparison: RunsComparison, out: str | Path) -> list[Path]:
    """Write the episodes, summary, statistics, run scores and (with matplotlib) figures.

    ``episodes.csv`` and ``summary.csv`` have the columns of :mod:`agents.compare`'s files plus
    ``run``; ``reliable.csv`` has one row per scenario (:data:`agents.reliable.COLUMNS`);
    ``run_scores.csv`` one row per run with its mean return and normalised score.
    """
    from llmsched_env.plotting import plot_comparison

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames: dict[str, Any] = {
        "episodes.csv": comparison.episodes,
        "summary.csv": comparison.summary,
        "reliable.csv": comparison.reliable.table,
        "run_scores.csv": comparison.reliable.run_scores,
    }
    written = []
    for name, frame in frames.items():
        frame.to_csv(out / name, index=False)
        written.append(out / name)
    labelled = comparison.summary.assign(policy=_display_names(comparison.summary))
    title = _title(comparison)  # type: ignore[arg-type]
    for figure in (
        plot_comparison(labelled, out / "comparison.png", title=title),
        plot_performance_profile(comparison.reliable, out / "performance_profile.png", title),
    ):
        if figure is not None:
            written.append(figure)
    return written


def _display_names(frame: pd.DataFrame) -> list[str]:
    """``agent (<run>)`` for agent rows, the policy name otherwise."""
    return [f"{p} ({r})" if r else str(p) for p, r in zip(frame["policy"], frame["run"].fillna(""))]
