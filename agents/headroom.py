"""How much better than a baseline can a BatchScheduling-v0 scheduler get? A lookahead bound.

:func:`lookahead_episode` plays one episode with a *clairvoyant one-step lookahead* over a
baseline: at every decision it tries each allowed action (the env's exact joint mask) on a
copy of the env, finishes the copy's episode with the baseline, and carries out the action with
the best total. The copy holds the episode's future arrivals, true output lengths and the random
state of service times, so this scheduler sees the future: it is not a fair competitor, but its
return shows how much a better policy could gain over the baseline on a seed. It is never worse
than the baseline when the baseline is deterministic and keeps no state between decisions (as
``multibin-wc``): the baseline's own action is among those tried at every decision.

Run from the repository root (a few seconds per episode of ``batch-default``)::

    python -m agents.headroom --scenario batch-default --first-seed 8000 --seeds 20
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

import llmsched_env  # noqa: F401  (registers the env ids)
from agents.scenarios import build_env_kwargs, get_scenario
from baselines import make_policy
from llmsched_env.cli_args import nonnegative_int, positive_int
from llmsched_env.evaluation import mean_ci

#: The baseline that finishes every tried episode by default (the best one in every scenario).
DEFAULT_BASE = "multibin-wc"


def finish_with(env: Any, obs: np.ndarray, info: dict[str, Any], base: str) -> float:
    """Play ``env`` (a bare env) to the end of its episode with ``base``; the return earned."""
    policy = make_policy(base, env)
    total = 0.0
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        total += float(reward)
        if terminated or truncated:
            return total


def best_action(env: Any, base: str) -> np.ndarray:
    """The allowed action whose reward plus the baseline's return afterwards is largest."""
    best_value, best = -np.inf, None
    for action in np.argwhere(env.joint_action_mask()):
        trial = copy.deepcopy(env)
        obs, reward, terminated, truncated, info = trial.step(action)
        value = float(reward)
        if not (terminated or truncated):
            value += finish_with(trial, obs, info, base)
        if value > best_value:
            best_value, best = value, action
    return best


def lookahead_episode(
    env_id: str, env_kwargs: Mapping[str, Any], seed: int, base: str = DEFAULT_BASE
) -> tuple[float, float]:
    """Returns of the lookahead scheduler and of ``base`` alone on the episode of ``seed``.

    Args:
        env_id: ``"llmsched/BatchScheduling-v0"`` (the lookahead needs its joint action mask).
        env_kwargs: ``gym.make`` keyword arguments (workload objects already built).
        seed: Episode seed.
        base: Baseline name (``baselines.make_policy``).

    Returns:
        ``(lookahead return, baseline return)``.
    """
    env = gym.make(env_id, **env_kwargs).unwrapped
    obs, info = env.reset(seed=seed)
    base_return = finish_with(copy.deepcopy(env), obs, info, base)
    total = 0.0
    while True:
        obs, reward, terminated, truncated, info = env.step(best_action(env, base))
        total += float(reward)
        if terminated or truncated:
            return total, base_return


def lookahead_returns(
    scenario: str, seeds: Iterable[int], base: str = DEFAULT_BASE
) -> pd.DataFrame:
    """One row per seed of a scenario: ``seed``, ``lookahead``, ``base`` returns."""
    chosen = get_scenario(scenario)
    kwargs = build_env_kwargs(chosen.env_kwargs)
    rows = []
    for seed in seeds:
        ahead, alone = lookahead_episode(chosen.env_id, kwargs, seed, base)
        rows.append({"seed": seed, "lookahead": ahead, "base": alone})
    return pd.DataFrame(rows)


def summary_lines(returns: pd.DataFrame, base: str = DEFAULT_BASE) -> list[str]:
    """Mean and 95% CI of both returns and of their per-seed difference, one line each."""
    lines = []
    for column, name in (("lookahead", "lookahead"), ("base", base)):
        mean, half = mean_ci(returns[column].to_numpy(dtype=float))
        lines.append(f"{name}: {mean:.1f} +/- {half:.1f}")
    diff = (returns["lookahead"] - returns["base"]).to_numpy(dtype=float)
    mean, half = mean_ci(diff)
    lines.append(f"paired lookahead - {base}: {mean:+.1f} +/- {half:.1f}")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    """Print the per-seed returns and their summary for one scenario."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="batch-default")
    parser.add_argument("--first-seed", type=nonnegative_int, default=8000)
    parser.add_argument("--seeds", type=positive_int, default=20)
    parser.add_argument("--base", default=DEFAULT_BASE)
    args = parser.parse_args(argv)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    returns = lookahead_returns(args.scenario, seeds, args.base)
    print(returns.to_string(index=False))
    print("\n".join(summary_lines(returns, args.base)))


if __name__ == "__main__":
    main()
