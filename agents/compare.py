"""Compare an agent with every baseline on common held-out seeds, with the evaluation harness.

:func:`compare` is what ``llmsched compare`` runs: the agent (from a run directory or a
pretrained agent shipped with the package) and every baseline of its env are evaluated by
:func:`llmsched_env.evaluation.evaluate` on the same evaluation seeds (20 from 10,000 by
default, disjoint from training and validation seeds), in the env configuration the agent was
trained on. Besides the per-policy summary (means with 95% confidence intervals across seeds),
:func:`paired_difference` gives the agent's per-seed advantage over a baseline, a sharper test
because both policies serve the same requests on each seed.

Once an episode is settled (no action can change its return), the agent hands its decisions to
``settled_policy`` (``multibin-wc`` by default, see :mod:`agents.policy`): the agent's return is
its own, while its latency and goodput columns also count how the late requests left at the end
are served.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from agents.policy import SETTLED_POLICY, AgentPolicyFactory
from agents.runs import ModelChoice, RunConfig, load_run_config
from agents.scenarios import RATE_SETTINGS, build_env_kwargs, overridden
from agents.seeds import evaluation_seeds
from llmsched_env.cli_args import check_env_kwargs
from llmsched_env.evaluation import best_policy, evaluate, mean_ci
from llmsched_env.kinds import kind_of_id
from llmsched_env.registry import unknown_name_error

AGENT_NAME = "agent"


def pretrained_root() -> Path:
    """The directory of the pretrained agents shipped with the package."""
    return Path(str(resources.files("agents") / "pretrained"))


def pretrained_names() -> list[str]:
    """Names of the shipped pretrained agents (directories holding a ``config.json``)."""
    root = pretrained_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())


def pretrained_dir(name: str) -> Path:
    """The directory of the pretrained agent ``name``.

    Raises:
        ValueError: For an unknown name; the message lists the shipped agents.
    """
    names = pretrained_names()
    if name not in names:
        raise unknown_name_error("pretrained agent", name, names)
    return pretrained_root() / name


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare`.

    Attributes:
        config: The agent's run configuration (env id and keyword arguments).
        seeds: Evaluation seeds.
        episodes: One row per (policy, seed).
        summary: One row per policy, best mean return first.
        best_baseline: Name of the baseline with the best mean return.
        paired: The agent minus the best baseline, per seed (:func:`paired_difference`).
    """

    config: RunConfig
    seeds: list[int]
    episodes: pd.DataFrame
    summary: pd.DataFrame
    best_baseline: str | None
    paired: dict[str, float]

    def verdict(self) -> str:
        """One line: is the agent above or below the best baseline, and are the 95% CIs apart?

        "above (below) the best baseline, 95% CIs apart" when the intervals do not overlap;
        "CIs overlap" otherwise, saying on which side the agent's mean lies; with one seed there
        is no interval and the line says so.
        """
        if self.best_baseline is None:
            return "no baseline to compare with"
        rows = self.summary.set_index("policy")
        agent, base = rows.loc[AGENT_NAME], rows.loc[self.best_baseline]
        a_mean, a_half = float(agent["return_mean"]), float(agent["return_ci95"])
        b_mean, b_half = float(base["return_mean"]), float(base["return_ci95"])
        side = "above" if a_mean > b_mean else "below" if a_mean < b_mean else "level with"
        p = self.paired
        if not (math.isfinite(a_half) and math.isfinite(b_half)):
            return (
                f"agent {a_mean:.1f} vs best baseline {self.best_baseline} {b_mean:.1f}: "
                f"{side} it by {abs(a_mean - b_mean):.1f} on {p['n']:.0f} seed (no confidence "
                "interval with 1 seed; use --seeds 2 or more)"
            )
        if a_mean - a_half > b_mean + b_half:
            finding = f"above the best baseline by {a_mean - b_mean:.1f}, 95% CIs apart"
        elif a_mean + a_half < b_mean - b_half:
            finding = f"below the best baseline by {b_mean - a_mean:.1f}, 95% CIs apart"
        else:
            finding = f"CIs overlap (agent {side} it by {abs(a_mean - b_mean):.1f})"
        return (
            f"agent {a_mean:.1f} +/- {a_half:.1f} vs best baseline {self.best_baseline} "
            f"{b_mean:.1f} +/- {b_half:.1f}: {finding}; paired difference "
            f"{p['mean']:+.1f} +/- {p['ci95']:.1f}, agent better on {p['wins']:.0f}/{p['n']:.0f} "
            "seeds"
        )


def paired_difference(episodes: pd.DataFrame, a: str, b: str) -> dict[str, float]:
    """Per-seed difference of returns ``a - b``: mean, 95% CI half-width, wins, seeds.

    Raises:
        ValueError: If ``a`` or ``b`` has no episodes.
    """
    returns = episodes.pivot_table(index="seed", columns="policy", values="return")
    for name in (a, b):
        if name not in returns.columns:
            raise ValueError(f"policy {name!r} has no episodes; policies: {list(returns.columns)}")
    diff = (returns[a] - returns[b]).dropna().to_numpy(dtype=float)
    mean, half = mean_ci(diff)
    return {
        "mean": mean,
        "ci95": half,
        "wins": float((diff > 0).sum()),
        "n": float(diff.size),
    }


def compare(
    run_dir: str | Path | None = None,
    *,
    pretrained: str | None = None,
    n_seeds: int = 20,
    first_seed: int = 10_000,
    policies: Sequence[str] | None = None,
    which: ModelChoice = "best",
    n_jobs: int = 1,
    out: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    settled_policy: str | None = SETTLED_POLICY,
    env_overrides: Mapping[str, Any] | None = None,
) -> Comparison:
    """Evaluate the agent and the baselines on common evaluation seeds.

    ``env_overrides`` replaces env settings the agent was trained with (another workload or
    trace, load, arrival rate, GPU count, ...), to score the agent and the baselines in a setting
    of the user's choice. Overrides that change the observation or action space (the network's
    input or output, e.g. ``n_gpus`` or ``n_bins`` in ``BatchScheduling-v0``) are refused, naming
    the setting.

    Args:
        run_dir: A training run directory (exactly one of ``run_dir`` and ``pretrained``).
        pretrained: Name of a shipped pretrained agent (:func:`pretrained_names`).
        n_seeds: Number of evaluation seeds.
        first_seed: First evaluation seed, ``>= 10,000``.
        policies: Baselines to include, names or settings such as
            ``"length-split(long_replicas=2)"`` (default: every baseline of the env).
        which: ``"best"`` (validation-selected), ``"final"`` or ``"averaged"`` model of the
            run (:func:`agents.runs.model_paths`).
        n_jobs: Worker processes of the evaluation harness.
        out: When given, write ``episodes.csv``, ``summary.csv`` and ``comparison.png`` there.
        progress: Called as ``progress(done, total)`` after each episode.
        settled_policy: The baseline that acts for the agent once an episode is settled, or
            ``None`` for the model to the end (:class:`~agents.policy.AgentPolicy`).
        env_overrides: Plain env keyword arguments that replace the run's (workload names or
            ``"trace:[FORMAT:]PATH"`` strings, numbers); the returned comparison's config holds
            the merged settings.

    Returns:
        The :class:`Comparison`.

    Raises:
        ValueError: For a bad argument (named in the message).
    """
    from baselines import check_policies, policy_names

    if (run_dir is None) == (pretrained is None):
        raise ValueError(
            f"give exactly one of run_dir and pretrained, got run_dir={run_dir!r}, "
            f"pretrained={pretrained!r}"
        )
    directory = Path(run_dir) if run_dir is not None else pretrained_dir(str(pretrained))
    config = load_run_config(directory)
    seeds = evaluation_seeds(n_seeds, first_seed)
    kind = kind_of_id(config.env_id).name
    available = policy_names(kind)
    chosen = available if policies is None else list(policies)
    check_policies(kind, chosen)
    if AGENT_NAME in chosen:
        raise ValueError(f"{AGENT_NAME!r} is reserved for the agent; rename the baseline")
    config = with_env_overrides(config, env_overrides)
    agent = AgentPolicyFactory(
        str(directory), which=which, name=AGENT_NAME, settled_policy=settled_policy
    )
    specs: list[Any] = [agent, *chosen]
    episodes, summary = evaluate(
        specs,
        config.env_id,
        build_env_kwargs(config.env_kwargs),
        seeds,
        n_jobs=n_jobs,
        names=[AGENT_NAME, *chosen],
        progress=progress,
    )
    baselines = summary[summary["policy"] != AGENT_NAME]
    means = dict(zip(baselines["policy"], baselines["return_mean"], strict=True))
    best = best_policy(means) if means else None
    paired = (
        paired_difference(episodes, AGENT_NAME, best)
        if best
        else {"mean": math.nan, "ci95": math.nan, "wins": 0.0, "n": 0.0}
    )
    comparison = Comparison(config, seeds, episodes, summary, best, paired)
    if out is not None:
        write_comparison(comparison, out)
    return comparison


def with_env_overrides(config: RunConfig, env_overrides: Mapping[str, Any] | None) -> RunConfig:
    """The run's configuration with ``env_overrides`` replacing its env settings, once checked.

    Warns when the env's defaults changed since the run was trained (:func:`_warn_on_env_changes`).

    Raises:
        ValueError: For an unknown setting, or one that changes the observation or action space
            (:func:`check_same_spaces`).
    """
    overrides = dict(env_overrides or {})
    if overrides:
        check_env_kwargs(config.env_id, overrides)
    _warn_on_env_changes(config, overrides)
    if not overrides:
        return config
    check_same_spaces(config, overrides)
    return replace(config, env_kwargs=overridden(config.env_kwargs, overrides))


def _warn_on_env_changes(config: RunConfig, overrides: Mapping[str, Any]) -> None:
    """Warn when the env's defaults changed since the agent was trained.

    The env is built with the ``overrides`` (so a trace the run was trained on need not exist
    any more when another replaces it); the settings they change on purpose are not reported.
    """
    import warnings

    import gymnasium as gym

    from agents.runs import env_config_changes

    env = gym.make(config.env_id, **build_env_kwargs(overridden(config.env_kwargs, overrides)))
    try:
        changes = env_config_changes(config, env)
    finally:
        env.close()
    # The settings the overrides replace are changed on purpose too (``--arrival-rate`` over a
    # recorded ``load``: see ``overridden``).
    chosen = set(overrides)
    if chosen & set(RATE_SETTINGS):
        chosen |= set(RATE_SETTINGS)
    changes = {key: change for key, change in changes.items() if key not in chosen}
    if changes:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        warnings.warn(
            f"the env's configuration differs from the one the agent was trained on ({listed}); "
            "the comparison is fair between policies, but the agent may be out of its training "
            "distribution: retrain it",
            UserWarning,
            stacklevel=3,
        )


def _spaces(env_id: str, env_kwargs: Mapping[str, Any]) -> tuple[tuple[Any, ...], Any]:
    """The observation space, action space and observation names of the env, and its config."""
    import gymnasium as gym

    env = gym.make(env_id, **build_env_kwargs(env_kwargs))
    try:
        names = [str(n) for n in env.unwrapped.obs_names]
        return (env.observation_space, env.action_space, names), env.unwrapped.config
    finally:
        env.close()


def _describe(space: Any) -> str:
    """A short description of a space: a Box by its shape, others as Gymnasium prints them."""
    shape = getattr(space, "shape", None)
    return f"Box{shape}" if type(space).__name__ == "Box" else str(space)


def check_same_spaces(config: RunConfig, env_overrides: Mapping[str, Any]) -> None:
    """Refuse env overrides that change the observation or action space the agent was trained on.

    Raises:
        ValueError: Naming the overridden settings that change a space, and how.
    """
    # An env's spaces depend neither on its workload nor on the episode length, so the trained
    # ones are built with the overriding values (the run's own trace may be gone, and another
    # trace may hold fewer requests than the run's episodes).
    trained_kwargs = dict(config.env_kwargs)
    for key in ("workload", "n_requests"):
        if key in env_overrides:
            trained_kwargs[key] = env_overrides[key]
    trained, trained_config = _spaces(config.env_id, trained_kwargs)
    merged, _ = _spaces(config.env_id, overridden(trained_kwargs, env_overrides))
    if merged == trained:
        return
    culprits = [
        key
        for key, value in env_overrides.items()
        if _spaces(config.env_id, overridden(trained_kwargs, {key: value}))[0] != trained
    ] or list(env_overrides)
    named = ", ".join(
        f"{key}={env_overrides[key]!r} (trained with {getattr(trained_config, key, None)!r})"
        for key in culprits
    )
    parts = ("observation space", "action space", "observation layout")
    what = [part for part, a, b in zip(parts, trained, merged) if a != b]
    raise ValueError(
        f"the env settings {named} change the {' and '.join(what)} the agent was trained on "
        f"({config.env_id}: observation {_describe(trained[0])}, action {trained[1]}; with the "
        f"overrides: observation {_describe(merged[0])}, action {merged[1]}); keep these "
        "settings as trained, or train an agent for them"
    )


def write_comparison(comparison: Comparison, out: str | Path) -> list[Path]:
    """Write ``episodes.csv``, ``summary.csv`` and (with matplotlib) ``comparison.png``."""
    from llmsched_env.plotting import plot_comparison

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "episodes.csv", out / "summary.csv"]
    comparison.episodes.to_csv(written[0], index=False)
    comparison.summary.to_csv(written[1], index=False)
    figure = plot_comparison(comparison.summary, out / "comparison.png", title=_title(comparison))
    if figure is not None:
        written.append(figure)
    return written


def _title(comparison: Comparison) -> str:
    config = comparison.config
    label = config.scenario or ", ".join(f"{k}={v}" for k, v in config.env_kwargs.items())
    return f"{config.env_id} {label}".strip()


#: Columns of :func:`markdown_table`: (summary column, CI column or None, header, format).
MARKDOWN_COLUMNS = (
    ("return_mean", "return_ci95", "return (95% CI)", "{:.1f} ± {:.1f}"),
    ("sla_attainment_mean", "sla_attainment_ci95", "SLA attainment", "{:.3f} ± {:.3f}"),
    ("goodput_rps_mean", None, "goodput (req/s)", "{:.2f}"),
    ("latency_s_p99_mean", None, "p99 latency (s)", "{:.2f}"),
)


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table: return and SLA attainment with CIs, goodput, p99."""
    header = "| policy | " + " | ".join(c[2] for c in MARKDOWN_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(MARKDOWN_COLUMNS) + 1)]
    for _, row in summary.iterrows():
        cells = []
        for column, ci, _, fmt in MARKDOWN_COLUMNS:
            values = (row[column], row[ci]) if ci else (row[column],)
            cells.append(fmt.format(*values))
        name = f"**{row['policy']}**" if row["policy"] == AGENT_NAME else str(row["policy"])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
