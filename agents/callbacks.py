"""Training callbacks: periodic comparison with the best baseline, using the evaluation harness.

This module imports stable-baselines3 at import time; :func:`agents.training.train` imports it
only after checking that the ``agents`` extra is installed.
"""

from __future__ import annotations

import copy
import csv
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

from agents.algorithms import AlgoSpec
from agents.averaging import AVERAGED_MODEL_FILE, WeightAveraging
from agents.policy import AgentPolicy, LoadedAgent, ObsNormalizer
from agents.runs import RunConfig
from agents.scenarios import build_env_kwargs
from llmsched_env.evaluation import best_policy, evaluate

EVALUATIONS_FILE = "evaluations.csv"
_FIELDS = (
    "timesteps",
    "agent_return",
    "agent_return_ci95",
    "agent_sla_attainment",
    "best_baseline",
    "best_baseline_return",
    "margin",
    "wall_time_s",
)


def best_baseline(
    env_id: str, env_kwargs: dict[str, Any], seeds: Sequence[int], baselines: Sequence[str]
) -> tuple[str, float]:
    """The baseline with the highest mean return on ``seeds``, and that return.

    Every baseline runs on every seed through the evaluation harness (ties go to the first
    name in sort order, as :func:`~llmsched_env.evaluation.best_policy` breaks them).
    """
    _, summary = evaluate(list(baselines), env_id, env_kwargs, list(seeds), n_jobs=1)
    means = dict(zip(summary["policy"], summary["return_mean"], strict=True))
    best = best_policy(means)
    return best, float(means[best])


class BaselineEvalCallback(BaseCallback):
    """Every ``eval_freq`` steps, score the agent and the best baseline on validation seeds.

    At the start of training every baseline is evaluated once on ``seeds`` with the evaluation
    harness and the best (highest mean return) is kept as the reference. Every ``eval_freq``
    environment steps (and at the end of training) the current model, with frozen copies of the
    current observation statistics, is evaluated on the same seeds through
    :class:`~agents.policy.AgentPolicy`, exactly as ``llmsched compare`` will score it. Results
    go to the logger (``eval/agent_return``, ``eval/best_baseline_return``, ``eval/margin``) and
    to ``evaluations.csv``; the model with the best validation return so far is saved as
    ``best_model.zip`` with ``best_vecnormalize.pkl``.

    Args:
        config: The run's configuration (env, algorithm, seeds).
        algo: The algorithm's spec.
        run_dir: Where ``evaluations.csv`` and the best model go.
        seeds: Validation seeds (disjoint from training and evaluation seeds).
        eval_freq: Environment steps (summed over the parallel envs) between evaluations.
        baselines: Baseline names to compare with (all of the env's baselines when empty).
        verbose: 1 prints one line per evaluation.
        best: The best baseline and its validation return when already known (from
            :func:`best_baseline` on the same seeds), so they are not evaluated again.
        evaluate_at_start: Also score the model before the first step (a warm-started model
            is then a candidate for ``best_model.zip``).
    """

    def __init__(
        self,
        config: RunConfig,
        algo: AlgoSpec,
        run_dir: str | Path,
        seeds: Sequence[int],
        eval_freq: int,
        baselines: Sequence[str] = (),
        verbose: int = 0,
        best: tuple[str, float] | None = None,
        evaluate_at_start: bool = False,
    ) -> None:
        super().__init__(verbose)
        if eval_freq < 1:
            raise ValueError(f"eval_freq must be >= 1, got {eval_freq!r}")
        self.config = config
        self.algo = algo
        self.run_dir = Path(run_dir)
        self.seeds = list(seeds)
        self.eval_freq = int(eval_freq)
        self.baselines = list(baselines)
        self.env_kwargs = build_env_kwargs(config.env_kwargs)
        self.best_baseline: str | None = None if best is None else best[0]
        self.best_baseline_return = float("-inf") if best is None else float(best[1])
        self.evaluate_at_start = evaluate_at_start
        self.best_agent_return = float("-inf")
        self._last_eval = 0
        self._started = time.perf_counter()
        self.results: list[dict[str, Any]] = []
        previous = self.run_dir / EVALUATIONS_FILE
        if previous.is_file():  # a resumed run keeps its best validation return
            with previous.open(newline="", encoding="utf-8") as handle:
                returns = [float(r["agent_return"]) for r in csv.DictReader(handle)]
            self.best_agent_return = max(returns, default=float("-inf"))

    def _on_training_start(self) -> None:
        self._started = time.perf_counter()
        self._last_eval = self.num_timesteps
        if self.best_baseline is None and self.baselines:
            self.best_baseline, self.best_baseline_return = best_baseline(
                self.config.env_id, self.env_kwargs, self.seeds, self.baselines
            )
            if self.verbose:
                print(
                    f"validation: best baseline {self.best_baseline} "
                    f"return {self.best_baseline_return:.1f} on seeds {self.seeds}"
                )
        if self.evaluate_at_start:
            self._evaluate()

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last_eval >= self.eval_freq:
            self._evaluate()
        return True

    def _on_training_end(self) -> None:
        if self.num_timesteps > self._last_eval or not self.results:
            self._evaluate()

    def _evaluate(self) -> None:
        self._last_eval = self.num_timesteps
        env = self.model.get_env()
        normalizer = ObsNormalizer.from_vecnormalize(env) if isinstance(env, VecNormalize) else None
        agent = LoadedAgent(self.model, normalizer, self.algo, self.config)
        _, summary = evaluate(
            lambda e: AgentPolicy(e, agent),
            self.config.env_id,
            self.env_kwargs,
            self.seeds,
            n_jobs=1,
            names=["agent"],
        )
        row = summary.iloc[0]
        agent_return = float(row["return_mean"])
        result = {
            "timesteps": self.num_timesteps,
            "agent_return": agent_return,
            "agent_return_ci95": float(row["return_ci95"]),
            "agent_sla_attainment": float(row["sla_attainment"]),
            "best_baseline": self.best_baseline or "",
            "best_baseline_return": self.best_baseline_return,
            "margin": agent_return - self.best_baseline_return,
            "wall_time_s": time.perf_counter() - self._started,
        }
        self.results.append(result)
        self.logger.record("eval/agent_return", agent_return)
        self.logger.record("eval/agent_sla_attainment", result["agent_sla_attainment"])
        if self.best_baseline is not None:
            self.logger.record("eval/best_baseline_return", self.best_baseline_return)
            self.logger.record("eval/margin", result["margin"])
        self._append_csv(result)
        if agent_return > self.best_agent_return:
            self.best_agent_return = agent_return
            self.model.save(self.run_dir / "best_model.zip")
            if isinstance(env, VecNormalize):
                env.save(str(self.run_dir / "best_vecnormalize.pkl"))
        if self.verbose:
            print(
                f"eval @ {self.num_timesteps} steps: agent {agent_return:.1f} "
                f"(best {self.best_agent_return:.1f}), {self.best_baseline} "
                f"{self.best_baseline_return:.1f}"
            )

    def _append_csv(self, result: dict[str, Any]) -> None:
        path = self.run_dir / EVALUATIONS_FILE
        new = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(result)


class WeightAveragingCallback(BaseCallback):
    """Keeps the running mean of the policy's weights over the snapshots of ``schedule``.

    See :mod:`agents.averaging`.

    Args:
        schedule: When to take snapshots.
        n_envs: Parallel training envs (a callback step is ``n_envs`` env steps).
    """

    def __init__(self, schedule: WeightAveraging, n_envs: int) -> None:
        super().__init__()
        self.schedule = schedule
        self._every_calls = max(schedule.every // n_envs, 1)
        self.n_snapshots = 0
        self.first_step = self.last_step = -1
        self._averaged: Any = None

    def _on_step(self) -> bool:
        if self.n_calls % self._every_calls == 0 and self.num_timesteps >= self.schedule.start:
            self._take_snapshot()
        return True

    def _take_snapshot(self) -> None:
        from torch.optim.swa_utils import AveragedModel

        if self._averaged is None:
            self._averaged = AveragedModel(self.model.policy)
        self._averaged.update_parameters(self.model.policy)
        self.n_snapshots += 1
        self.last_step = int(self.num_timesteps)
        if self.first_step < 0:
            self.first_step = self.last_step

    def record(self) -> dict[str, int]:
        """What a run's session records: the number of snapshots, the first and last step."""
        return {
            "count": self.n_snapshots,
            "first_step": self.first_step,
            "last_step": self.last_step,
        }

    def save(self, run_dir: Path, model: Any) -> Path | None:
        """Write the averaged policy as ``run_dir/averaged_model.zip`` (``None``: no snapshot).

        ``model`` keeps its own (final) weights.
        """
        if self._averaged is None:
            return None
        final_weights = copy.deepcopy(model.policy.state_dict())
        model.policy.load_state_dict(self._averaged.module.state_dict())
        try:
            path = Path(run_dir) / AVERAGED_MODEL_FILE
            model.save(path)
        finally:
            model.policy.load_state_dict(final_weights)
        return path


class StopOnRequest(BaseCallback):
    """Ends training cleanly at the next step once ``stop.requested`` is set (a caught signal).

    Returning ``False`` from ``_on_step`` makes stable-baselines3 leave ``learn`` at once, after
    which the caller saves the model: the steps trained so far are kept.

    Args:
        stop: The :class:`agents.signals.StopRequest` that signal handlers set.
    """

    def __init__(self, stop: Any) -> None:
        super().__init__(0)
        self.stop = stop

    def _on_step(self) -> bool:
        return not self.stop.requested


class StepProgressBar(BaseCallback):
    """A tqdm bar of environment steps whose total is the number of steps that will really run.

    stable-baselines3 collects whole rollouts, so ``learn(total_timesteps=20_000)`` with rollouts
    of 2,048 steps runs 20,480 steps; its own bar then reads 20,480/20,000. This bar's total is
    the requested steps rounded up to whole rollouts (:func:`steps_that_will_run`), and the count
    never passes it.

    Args:
        total: Steps this session will run.
    """

    def __init__(self, total: int) -> None:
        super().__init__(0)
        self.total = int(total)
        self._bar: Any = None
        self._start = 0

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        self._start = self.num_timesteps
        self._bar = tqdm(total=self.total, desc="train", unit="step", unit_scale=True)

    def _on_step(self) -> bool:
        if self._bar is not None:
            self._bar.update(min(self.num_timesteps - self._start, self.total) - self._bar.n)
        return True

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def steps_that_will_run(model: Any, steps: int) -> int:
    """Environment steps ``model.learn(total_timesteps=steps)`` will run from step 0.

    On-policy algorithms (PPO, A2C) collect rollouts of ``n_steps * n_envs`` steps; off-policy
    ones (DQN) collect ``train_freq`` steps per env between updates. ``learn`` stops at the first
    rollout that reaches ``steps``, so the count is ``steps`` rounded up to whole rollouts.
    """
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    n_envs = int(getattr(model, "n_envs", 1) or 1)
    rollout = n_envs
    if isinstance(model, OnPolicyAlgorithm):
        rollout = int(model.n_steps) * n_envs
    else:
        freq = getattr(model, "train_freq", None)
        unit = getattr(getattr(freq, "unit", None), "value", None)
        if unit == "step":
            rollout = int(freq.frequency) * n_envs
    return -(-int(steps) // rollout) * rollout
