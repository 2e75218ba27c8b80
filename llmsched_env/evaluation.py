"""Fair evaluation: run policies on the same seeds and summarise with confidence intervals.

Common random numbers: an episode's requests (arrivals, lengths, predictions) are drawn first
from the env's generator seeded by ``reset(seed=...)``, so every policy evaluated on seed ``s``
serves exactly the same requests. Service-time randomness (stochastic latency models) is drawn
afterwards from the same stream and may differ between policies.

A policy is given as a name from the baselines registry (``baselines.make_policy``) or as a
callable ``env -> Policy``. Episodes can run in parallel worker processes; results do not depend
on the number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, overload

import gymnasium as gym
import numpy as np
import pandas as pd

from llmsched_env.parallel import check_n_jobs, run_jobs

PolicySpec = str | Callable[[gym.Env], Any]

#: Metrics summarised per policy (mean and 95% confidence half-width), in table order.
SUMMARY_METRICS = (
    "return",
    "sla_attainment",
    "goodput_rps",
    "throughput_rps",
    "latency_s_mean",
    "latency_s_p50",
    "latency_s_p99",
    "ttft_s_p50",
    "ttft_s_p99",
    "mean_batch_size",
    "gpu_utilization",
    "prefix_hit_rate",
)

# Two-sided 95% Student t quantiles for 1..30 degrees of freedom.
_T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


_Z_975 = 1.959963984540054  # standard normal 97.5% quantile


def t_quantile_975(dof: int) -> float:
    """Two-sided 95% quantile of Student's t with ``dof`` degrees of freedom.

    Tabulated for 1..30 degrees of freedom; above, the Cornish-Fisher expansion
    ``z + (z^3 + z) / (4 v) + (5 z^5 + 16 z^3 + 3 z) / (96 v^2)`` (error below 1e-4 there),
    rather than the normal quantile 1.96, which would make intervals of 31..100 episodes up to
    4% too narrow.

    Example:
        >>> t_quantile_975(4), round(t_quantile_975(40), 3), round(t_quantile_975(10**6), 3)
        (2.776, 2.021, 1.96)
    """
    if dof < 1:
        return math.nan
    if dof <= len(_T_975):
        return _T_975[dof - 1]
    z = _Z_975
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% confidence half-width (Student t) of independent replications.

    A value that is not finite (``nan``: a metric an episode lacks) makes both ``nan``: a mean
    over the other replications would describe other requests. One value has no half-width.

    Example:
        >>> mean, half = mean_ci([1.0, 2.0, 3.0])
        >>> round(mean, 3), round(half, 3)
        (2.0, 2.484)
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0 or not np.isfinite(x).all():
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan
    return float(x.mean()), float(t_quantile_975(x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


@dataclass(frozen=True)
class EpisodeTask:
    """One episode to run: a policy on a seed of an env configuration (picklable)."""

    policy: PolicySpec
    policy_name: str
    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    reset_options: dict[str, Any] | None = None
    keep_records: bool = False


def policy_display_name(spec: PolicySpec) -> str:
    """The name a policy is shown under: a registry name, or the policy class's ``name``.

    Callables are looked through: ``functools.partial`` to its function, a bound method such as
    ``StaticFIFO.from_env`` to its class; otherwise the callable's ``__name__``.
    """
    if isinstance(spec, str):
        return spec
    target: Any = spec
    while isinstance(target, partial):
        target = target.func
    owner = getattr(target, "__self__", None)
    for candidate in (target, owner):
        name = getattr(candidate, "name", None)
        if isinstance(name, str):
            return name
    return getattr(target, "__name__", type(target).__name__)


def _build_policy(spec: PolicySpec, env: gym.Env) -> Any:
    if isinstance(spec, str):
        from baselines import make_policy

        return make_policy(spec, env)
    return spec(env)


_RECORDS_KEY = "_records"


def _build_once(env_id: str, env_kwargs: dict[str, Any] | None) -> None:
    """Build the env once in this process, before workers are forked.

    Building it reads its workload (a trace file is read once per process) and calibrates it;
    forked workers inherit what that cached, so a trace file's warnings are shown once, not
    once per worker, and a faulty setting is reported here rather than by every worker.
    """
    gym.make(env_id, **dict(env_kwargs or {})).close()


def run_episode(task: EpisodeTask) -> dict[str, Any]:
    """Run one episode and return a flat row: policy, seed, return, steps and episode metrics.

    Where the episode looked up a prefix cache, the row also holds ``prefix_hit_rate``: the
    share of the prompt tokens first admissions looked up that were cached, as vLLM reports it
    (:func:`llmsched_env.metrics.prefix_hit_rate`).

    ``workload_sha256`` is the fingerprint (:meth:`Workload.fingerprint`) of the requests the
    episode served, taken right after ``reset``: equal on one seed for every policy when the
    comparison is fair (common random numbers).

    With ``task.keep_records`` the row also holds, under ``"_records"``, the episode's
    per-request records (``env.unwrapped.request_records()``).
    """
    env = gym.make(task.env_id, **task.env_kwargs)
    try:
        policy = _build_policy(task.policy, env)
        obs, info = env.reset(seed=task.seed, options=task.reset_options)
        fingerprint = env.unwrapped.server.workload.fingerprint()
        policy.reset()
        total, steps, invalid = 0.0, 0, 0
        try:
            while True:
                obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
                total += reward
                steps += 1
                invalid += bool(info.get("invalid_action", False))
                if terminated or truncated:
                    break
        except Exception as error:  # say which of the many episodes (workers report it bare)
            note = (
                f"in the episode of policy {task.policy_name!r} on seed {task.seed}, "
                f"step {steps + 1}"
            )
            # BaseException.add_note from Python 3.11; __notes__ is what it appends to.
            error.__notes__ = [*getattr(error, "__notes__", []), note]
            raise
        row: dict[str, Any] = {
            "policy": task.policy_name,
            "seed": task.seed,
            "return": total,
            "steps": steps,
            "invalid_actions": invalid,
            "terminated": bool(terminated),
            "workload_sha256": fingerprint,
        }
        row.update(info["episode_metrics"])
        if task.keep_records:
            row[_RECORDS_KEY] = env.unwrapped.request_records()
        return row
    finally:
        env.close()


def summarize_episodes(episodes: pd.DataFrame) -> pd.DataFrame:
    """One row per policy: ``<metric>_mean`` and ``<metric>_ci95`` for each summary metric.

    Also provides the headline aliases ``sla_attainment`` and ``p99_latency_s`` (means). Rows are
    sorted by mean return, best first (ties by policy name, as :func:`best_policy` breaks them).

    A metric some episode of a policy lacks (``nan``: a latency percentile of an episode that
    completed no request) has mean and half-width ``nan`` for that policy: a mean over fewer
    seeds than the other policies' would compare it on other requests (the episodes' own
    values are in ``episodes.csv``).
    """
    rows = []
    for policy, group in episodes.groupby("policy", sort=False):
        row: dict[str, Any] = {"policy": policy, "episodes": len(group)}
        for metric in SUMMARY_METRICS:
            if metric in group:
                values = group[metric].to_numpy(dtype=float)
                mean, half = mean_ci(values)
                row[f"{metric}_mean"] = mean
                row[f"{metric}_ci95"] = half
        row["sla_attainment"] = row.get("sla_attainment_mean", math.nan)
        row["goodput_rps"] = row.get("goodput_rps_mean", math.nan)
        row["p99_latency_s"] = row.get("latency_s_p99_mean", math.nan)
        row["invalid_actions"] = int(group["invalid_actions"].sum())
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary = summary.sort_values(["return_mean", "policy"], ascending=[False, True], kind="stable")
    return summary.reset_index(drop=True)


def best_policy(mean_returns: Mapping[str, float]) -> str:
    """The policy with the highest mean return; among equal means, the first name in sort order.

    The one rule by which ``compare`` and ``compare --runs`` pick the best baseline, so that
    two heuristics tied on the mean (and different seed by seed) give both the same paired
    comparison.

    Example:
        >>> best_policy({"spf": 3.0, "edf": 3.0, "random": 1.0})
        'edf'
    """
    if not mean_returns:
        raise ValueError("best_policy needs at least one policy")
    return min(mean_returns, key=lambda name: (-mean_returns[name], name))


@overload
def evaluate(
    policies: Iterable[PolicySpec] | PolicySpec,
    env_id: str,
    env_kwargs: dict[str, Any] | None = ...,
    seeds: Iterable[int] = ...,
    *,
    n_jobs: int = ...,
    names: Sequence[str] | None = ...,
    progress: Callable[[int, int], None] | None = ...,
    records: Literal[False] = ...,
) -> tuple[pd.DataFrame, pd.DataFrame]: ...


@overload
def evaluate(
    policies: Iterable[PolicySpec] | PolicySpec,
    env_id: str,
    env_kwargs: dict[str, Any] | None = ...,
    seeds: Iterable[int] = ...,
    *,
    n_jobs: int = ...,
    names: Sequence[str] | None = ...,
    progress: Callable[[int, int], None] | None = ...,
    records: Literal[True],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]: ...


def evaluate(
    policies: Iterable[PolicySpec] | PolicySpec,
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    seeds: Iterable[int] = range(10),
    *,
    n_jobs: int = 1,
    names: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    records: bool = False,
) -> tuple[pd.DataFrame, ...]:
    """Evaluate policies on common seeds.

    Args:
        policies: One policy or several: registry names or callables ``env -> Policy``.
        env_id: Registered env id (``"llmsched/BatchScheduling-v0"`` ...).
        env_kwargs: Keyword arguments for ``gym.make``; plain values keep tasks picklable.
        seeds: Episode seeds; every policy runs on every seed.
        n_jobs: Worker processes (1 runs in this process). Ctrl-C stops them all at once.
        names: Display names of the policies, unique (default: :func:`policy_display_name`).
        progress: Called as ``progress(done, total)`` after every finished episode.
        records: Also return every episode's per-request records.

    Returns:
        ``(episodes, summary)``: one row per (policy, seed) episode with its return, metrics and
        ``workload_sha256`` (the fingerprint of its requests), and one row per policy with
        means and 95% confidence half-widths, best return first.
        With ``records=True``, a third frame with one row per request per episode: ``policy``
        and ``seed``, then the columns of ``env.unwrapped.request_records()``
        (:data:`llmsched_env.envs.common.REQUEST_RECORD_COLUMNS`).

    Raises:
        ValueError: If there are no policies or seeds, or the names are not unique.
    """
    if isinstance(policies, str) or callable(policies):
        policies = [policies]
    policies = list(policies)
    if not policies:
        raise ValueError("policies must not be empty")
    if names is None:
        names = [policy_display_name(p) for p in policies]
    names = list(names)
    if len(names) != len(policies):
        raise ValueError(f"got {len(names)} names for {len(policies)} policies")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"policy names must be unique (episodes are grouped by name), got {duplicates} more "
            "than once; pass names=[...]"
        )
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must not be empty")
    n_jobs = check_n_jobs(n_jobs)
    tasks = [
        EpisodeTask(p, n, env_id, dict(env_kwargs or {}), s, keep_records=records)
        for p, n in zip(policies, names)
        for s in seeds
    ]
    if n_jobs > 1 and len(tasks) > 1:
        _build_once(env_id, env_kwargs)
    rows = run_jobs(run_episode, tasks, n_jobs, progress)
    frames = [row.pop(_RECORDS_KEY) for row in rows] if records else []
    episodes = pd.DataFrame(rows)
    summary = summarize_episodes(episodes)
    if not records:
        return episodes, summary
    for row, frame in zip(rows, frames):
        frame.insert(0, "seed", row["seed"])
        frame.insert(0, "policy", row["policy"])
    return episodes, summary, pd.concat(frames, ignore_index=True)
