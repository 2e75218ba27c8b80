"""Train an agent with stable-baselines3 and write a self-describing run directory.

:func:`train` starts a run, :func:`resume` continues one; both return a :class:`TrainResult`.
The command ``llmsched train`` calls :func:`train` with its flags.

Example:
    >>> from agents.training import train  # doctest: +SKIP
    >>> result = train("batch", scenario="batch-overload", steps=500_000,
    ...                out="runs/batch-overload", progress_bar=True)  # doctest: +SKIP
    >>> result.run_dir  # doctest: +SKIP
    PosixPath('runs/batch-overload')
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agents.algorithms import DEFAULT_ALGO, AlgoSpec, get_algo
from agents.averaging import AVERAGED_MODEL_FILE, WeightAveraging
from agents.envs import PER_COMPONENT, VEC_ENV_KINDS, VecEnvKind, make_training_env
from agents.extras import require_agents_extra
from agents.hyperparams import SCHEDULE_KEYS, parse_schedule, resolve_hyperparams
from agents.imitation import BEST, Imitation
from agents.runs import RUN_ENTRIES, RunConfig, load_run_config
from agents.scenarios import get_scenario, overridden
from agents.seeds import training_env_seeds, validation_seeds
from llmsched_env import arguments
from llmsched_env.kinds import ENV_KINDS, kind_of_id, resolve_kind

#: Prefix of the hidden folder that holds a replaced run while its replacement trains.
ASIDE_PREFIX = ".replaced-run-"
#: stable-baselines3's training log in the run directory.
PROGRESS_FILE = "progress.csv"
#: Default environment steps between evaluations of the callback.
DEFAULT_EVAL_FREQ = 25_000
#: Default number of validation seeds of the callback, per env id (each kind's
#: ``eval_episodes``): short episodes afford more seeds, which make the choice of the best model
#: reliable (see ``docs/results.md``).
DEFAULT_EVAL_EPISODES = {kind.env_id: kind.eval_episodes for kind in ENV_KINDS.values()}
#: Default environment steps between checkpoints.
DEFAULT_CHECKPOINT_FREQ = 100_000
#: Checkpoint files written by stable-baselines3's ``CheckpointCallback`` in ``checkpoints/``.
_CHECKPOINT = re.compile(r"model_(\d+)_steps\.zip")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM; the model and configuration were saved first.

    A ``KeyboardInterrupt``, so that code which stops on Ctrl-C still does.

    Attributes:
        run_dir: Where ``model.zip`` (and the rest of the run) was saved.
        steps: Steps trained in the interrupted session.
        signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
    """

    def __init__(self, run_dir: Path, steps: int, signal_name: str) -> None:
        super().__init__(f"training stopped by {signal_name} after {steps} steps")
        self.run_dir = run_dir
        self.steps = steps
        self.signal_name = signal_name


def latest_checkpoint(run_dir: str | Path) -> tuple[Path, Path] | None:
    """The checkpoint with the most steps in ``run_dir/checkpoints``, with its statistics' path.

    Returns:
        ``(model_<N>_steps.zip, model_vecnormalize_<N>_steps.pkl)`` for the largest ``N`` (the
        statistics file exists only for a run that normalised), or ``None`` when there is no
        checkpoint.
    """
    folder = Path(run_dir) / "checkpoints"
    found = [
        (int(m.group(1)), path)
        for path in (folder.iterdir() if folder.is_dir() else [])
        if (m := _CHECKPOINT.fullmatch(path.name))
    ]
    if not found:
        return None
    steps, model = max(found)
    return model, folder / f"model_vecnormalize_{steps}_steps.pkl"


@dataclass(frozen=True)
class TrainResult:
    """What a training session produced.

    Attributes:
        run_dir: The run directory.
        config: Its configuration after the session.
        model: The trained model (final weights).
        evaluations: The callback's validation results (one dict per evaluation).
    """

    run_dir: Path
    config: RunConfig
    model: Any
    evaluations: list[dict[str, Any]]


def resolve_env_id(env: str) -> str:
    """Map an env kind (``"batch"``, ``"continuous"``) or a registered id to the env id.

    Raises:
        ValueError: For anything else (the message lists the kinds and ids).
    """
    return resolve_kind(env).env_id


def _check_int(name: str, value: Any, minimum: int) -> int:
    return arguments.integer("", name, value, minimum=minimum)


def train(
    env: str = "batch",
    *,
    out: str | Path,
    steps: int = 300_000,
    algo: str = DEFAULT_ALGO,
    scenario: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    n_envs: int | None = None,
    seed: int = 0,
    hyperparams: Mapping[str, Any] | None = None,
    vec_env: VecEnvKind = "dummy",
    eval_freq: int = DEFAULT_EVAL_FREQ,
    eval_episodes: int | None = None,
    checkpoint_freq: int = DEFAULT_CHECKPOINT_FREQ,
    progress_bar: bool = False,
    torch_threads: int = 1,
    overwrite: bool = False,
    command: str | None = None,
    verbose: int = 0,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train an agent and save it, with its configuration, in ``out``.

    SIGINT (Ctrl-C) or SIGTERM during training stops it at the next step; ``model.zip``, its
    statistics and ``config.json`` are saved, then :class:`TrainingInterrupted` is raised, and
    :func:`resume` continues the run.

    Args:
        env: ``"batch"``, ``"continuous"`` or an env id (ignored when ``scenario`` is given).
        out: The run directory to create.
        steps: Environment steps to train (summed over the parallel envs), ``>= 1``.
        algo: ``"maskable-ppo"`` (default), ``"ppo"``, ``"a2c"`` or ``"dqn"``.
        scenario: A scenario of :data:`agents.scenarios.SCENARIOS`: its env and keyword
            arguments (``env_kwargs`` entries override them).
        env_kwargs: Plain env keyword arguments (numbers and names).
        n_envs: Parallel training envs (default: the algorithm's default for the env).
        seed: Training seed: network initialisation, action sampling and training env seeds
            (:func:`agents.seeds.training_env_seeds`).
        hyperparams: Overrides of the defaults of :mod:`agents.hyperparams` (``"imitation"``:
            the warm start by behaviour cloning of :mod:`agents.imitation`; ``None`` turns it
            off).
        vec_env: ``"dummy"`` (envs stepped in this process) or ``"subproc"`` (one process each).
        eval_freq: Steps between comparisons with the best baseline on validation seeds
            (0 disables the evaluation callback, and no best model is kept).
        eval_episodes: Validation episodes per comparison (default: 20 for BatchScheduling-v0,
            5 for ContinuousBatching-v0, see :data:`DEFAULT_EVAL_EPISODES`).
        checkpoint_freq: Steps between checkpoints (0 disables them).
        progress_bar: Show a progress bar of the steps that will run (tqdm).
        torch_threads: Torch CPU threads during training (restored afterwards).
        overwrite: Allow ``out`` to exist already (its files are replaced).
        command: The command line to record in the configuration.
        verbose: 1 prints evaluation results and stable-baselines3's log.
        log: Told, in one line each, what the session is doing (steps to run, a stop).

    Returns:
        The run directory, configuration, model and validation results.

    Raises:
        ValueError: For a bad argument (named in the message) or an existing ``out``.
        agents.extras.AgentsExtraMissingError: If the ``agents`` extra is not installed.
        TrainingInterrupted: After saving, when SIGINT or SIGTERM stopped the training.
    """
    require_agents_extra()
    spec = get_algo(algo)
    kwargs: dict[str, Any] = {}
    mixture: dict[str, Any] | None = None
    if scenario is not None:
        chosen = get_scenario(scenario)
        env_id = chosen.env_id
        kwargs.update(chosen.env_kwargs)
        if chosen.training is not None:
            mixture = _json_ready(chosen.training)
            per_component = sorted(set(env_kwargs or {}) & set(PER_COMPONENT))
            if per_component:
                raise ValueError(
                    f"scenario {scenario!r} trains on a mixture whose components set "
                    f"{per_component} themselves: given, they would change only its validation "
                    "env (model selection); drop them, and score a held-out workload with "
                    "`llmsched compare --run RUN --workload ...`"
                )
    else:
        env_id = resolve_env_id(env)
    kwargs = overridden(kwargs, env_kwargs or {})
    _check_int("steps", steps, 1)
    _check_int("eval_freq", eval_freq, 0)
    if eval_episodes is None:
        eval_episodes = DEFAULT_EVAL_EPISODES[env_id]
    _check_int("eval_episodes", eval_episodes, 1)
    _check_int("checkpoint_freq", checkpoint_freq, 0)
    _check_int("torch_threads", torch_threads, 1)
    if vec_env not in VEC_ENV_KINDS:
        raise ValueError(f"vec_env must be one of {list(VEC_ENV_KINDS)}, got {vec_env!r}")
    overrides = dict(hyperparams or {})
    if n_envs is not None:
        n_envs = _check_int("n_envs", n_envs, 1)
        if overrides.get("n_envs", n_envs) != n_envs:
            raise ValueError(
                f"n_envs={n_envs!r} (--n-envs) and hyperparams n_envs={overrides['n_envs']!r} "
                "disagree; give the number of envs once"
            )
        overrides["n_envs"] = n_envs
    base = chosen.hyperparams.get(spec.name) if scenario is not None else None
    settings = resolve_hyperparams(env_id, spec.name, overrides, base=base)
    imitation = Imitation.from_setting(settings["imitation"])
    if imitation is not None:
        imitation.check_baseline(kind_of_id(env_id).name)
        if vec_env != "dummy":
            raise ValueError(
                "imitation (the warm start by behaviour cloning) runs the baseline on the "
                f"training envs in this process: it needs vec_env='dummy', got {vec_env!r}; "
                "pass hyperparams={'imitation': None} (--imitate none) to train from scratch"
            )
        if mixture is not None and imitation.baseline == BEST:
            raise ValueError(
                f"imitation: baseline {BEST!r} picks the best baseline on the validation env, "
                "one workload, but this run trains on a mixture of workloads; name the "
                "baseline to clone (it acts on every component of the mixture)"
            )
    env_config, obs_names = _describe(env_id, kwargs, mixture, imitation)
    run_dir = Path(out)
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise ValueError(
            f"out {str(run_dir)!r} already exists and is not empty; choose another directory, "
            "overwrite it (overwrite=True; --overwrite or --force), or resume it"
        )
    config = RunConfig(
        env_id=env_id,
        env_kwargs=_json_ready(kwargs),
        algo=spec.name,
        hyperparams=settings,
        seed=seed,
        training_env_seeds=training_env_seeds(seed, settings["n_envs"]),
        validation_seeds=validation_seeds(eval_episodes),
        vec_env=vec_env,
        torch_threads=torch_threads,
        scenario=scenario,
        env_config=env_config,
        obs_names=obs_names,
        command=command,
        training_mixture=mixture,
        eval_freq=eval_freq,
        checkpoint_freq=checkpoint_freq,
    )
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    replaced = _set_aside(run_dir)
    before = set(run_dir.iterdir())
    try:
        config.save(run_dir)
        result = _run_session(
            run_dir,
            config,
            spec,
            steps,
            load_from=None,
            eval_freq=eval_freq,
            checkpoint_freq=checkpoint_freq,
            progress_bar=progress_bar,
            verbose=verbose,
            log=log,
        )
    except BaseException:  # Ctrl-C or an error before the first model was saved: no run
        if not (run_dir / "model.zip").exists() and latest_checkpoint(run_dir) is None:
            _remove_new_entries(run_dir, before, remove_dir=created)
            _put_back(run_dir, replaced)
        elif replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
        raise
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    return result


def resume(
    run_dir: str | Path,
    *,
    steps: int,
    eval_freq: int | None = None,
    checkpoint_freq: int | None = None,
    progress_bar: bool = False,
    verbose: int = 0,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Continue training a run from its final model and statistics, or its latest checkpoint.

    The model, optimiser state and ``VecNormalize`` statistics are reloaded; the step counter
    continues (``reset_num_timesteps=False``). The training envs restart from the run's
    training env seeds; the best model and validation history are kept and extended. A run
    without ``model.zip`` (a process killed before it could save) continues from its checkpoint
    with the most steps, ``checkpoints/model_<N>_steps.zip``, and ``log`` is told which.

    Args:
        run_dir: A run directory written by :func:`train`.
        steps: Additional environment steps, ``>= 1``.
        eval_freq: Steps between validation comparisons (0 disables them; ``None``: the
            run's own, as it was started).
        checkpoint_freq: Steps between checkpoints (0 disables them; ``None``: the run's own).
        progress_bar: Show the progress bar.
        verbose: 1 prints evaluation results.
        log: Told, in one line each, what the session is doing (which model it resumes).

    Returns:
        The run directory, updated configuration, model and this session's validation results.

    Raises:
        ValueError: If ``run_dir`` is not a run with a final model or a checkpoint, or an
            argument is bad.
        TrainingInterrupted: After saving, when SIGINT or SIGTERM stopped the training.
    """
    require_agents_extra()
    _check_int("steps", steps, 1)
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if eval_freq is None:
        eval_freq = DEFAULT_EVAL_FREQ if config.eval_freq is None else config.eval_freq
    if checkpoint_freq is None:
        recorded = config.checkpoint_freq
        checkpoint_freq = DEFAULT_CHECKPOINT_FREQ if recorded is None else recorded
    _check_int("eval_freq", eval_freq, 0)
    _check_int("checkpoint_freq", checkpoint_freq, 0)
    model = run_dir / "model.zip"
    stats = run_dir / "vecnormalize.pkl"
    if not model.is_file():
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise ValueError(
                f"run_dir {str(run_dir)!r} holds no model.zip and no "
                "checkpoints/model_<N>_steps.zip to resume from"
            )
        model, stats = checkpoint
        if log:
            log(f"no model.zip in {run_dir}; resuming from its latest checkpoint {model}")
    normalised = [k for k in ("normalize_obs", "normalize_reward") if config.hyperparams.get(k)]
    if normalised and not stats.is_file():
        raise ValueError(
            f"run_dir {str(run_dir)!r} was trained with {' and '.join(normalised)} but the "
            f"statistics of {model.name} ({stats.name}) are missing; "
            "restore them: resumed without them, the model would train on observations and "
            "rewards on another scale"
        )
    return _run_session(
        run_dir,
        config,
        get_algo(config.algo),
        steps,
        load_from=(model, stats),
        eval_freq=eval_freq,
        checkpoint_freq=checkpoint_freq,
        progress_bar=progress_bar,
        verbose=verbose,
        log=log,
    )


def _run_session(
    run_dir: Path,
    config: RunConfig,
    spec: AlgoSpec,
    steps: int,
    *,
    load_from: tuple[Path, Path] | None,
    eval_freq: int,
    checkpoint_freq: int,
    progress_bar: bool,
    verbose: int,
    log: Callable[[str], None] | None,
) -> TrainResult:
    """Train ``steps`` more steps (from ``load_from``: model and statistics, or from scratch)."""
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.callbacks import (
        BaselineEvalCallback,
        StepProgressBar,
        StopOnRequest,
        WeightAveragingCallback,
        steps_that_will_run,
    )
    from agents.signals import stop_requested_by_signals
    from baselines import policy_names

    load_existing = load_from is not None

    settings = config.hyperparams
    algo_kwargs = dict(settings["algo_kwargs"])
    gamma = float(algo_kwargs.get("gamma", 0.99))
    with torch_threads(config.torch_threads):
        venv = make_training_env(
            config.env_id,
            config.env_kwargs,
            flat_action=settings["flatten_action"],
            # Runs saved before this setting existed trained on whole episodes.
            end_when_settled=settings.get("end_when_settled", False),
            n_envs=settings["n_envs"],
            first_seed=config.training_env_seeds[0],
            vec_env=config.vec_env,  # type: ignore[arg-type]
            normalize_obs=settings["normalize_obs"] and not load_existing,
            normalize_reward=settings["normalize_reward"] and not load_existing,
            gamma=gamma,
            mixture=config.training_mixture,
        )
        if load_from is not None and load_from[1].is_file():
            venv = VecNormalize.load(str(load_from[1]), venv)
            venv.training = True
        cls = spec.load_class()
        if load_from is not None:
            model = cls.load(load_from[0], env=venv, device="cpu")
        else:
            algo_kwargs["policy_kwargs"] = build_policy_kwargs(algo_kwargs.get("policy_kwargs"))
            for key in SCHEDULE_KEYS:
                if isinstance(algo_kwargs.get(key), str):
                    from stable_baselines3.common.utils import LinearSchedule

                    start = parse_schedule(key, algo_kwargs[key])
                    algo_kwargs[key] = LinearSchedule(start, 0.0, 1.0)
            try:
                model = cls(
                    "MlpPolicy", venv, seed=config.seed, device="cpu", verbose=0, **algo_kwargs
                )
            except (TypeError, ValueError, AssertionError) as error:  # what the checks miss
                venv.close()
                raise ValueError(
                    f"the hyperparameters do not make a {spec.name} model "
                    f"({str(error) or type(error).__name__}); algorithm keyword arguments: "
                    f"{config.hyperparams['algo_kwargs']}"
                ) from None
        # The algorithm's seeding set env seeds seed + i; use the run's training env seeds.
        venv.seed(config.training_env_seeds[0])
        kind = kind_of_id(config.env_id).name
        best = None
        cloning = None
        imitation = None if load_existing else Imitation.from_setting(settings.get("imitation"))
        if imitation is not None:
            best, cloning = _warm_start(model, venv, config, imitation, gamma, log)
        callbacks: list[Any] = []
        evaluator = None
        if eval_freq:
            evaluator = BaselineEvalCallback(
                config,
                spec,
                run_dir,
                config.validation_seeds,
                eval_freq,
                baselines=policy_names(kind),
                verbose=verbose,
                best=best,
                evaluate_at_start=cloning is not None,
            )
            callbacks.append(evaluator)
        if checkpoint_freq:
            callbacks.append(
                CheckpointCallback(
                    save_freq=max(checkpoint_freq // settings["n_envs"], 1),
                    save_path=str(run_dir / "checkpoints"),
                    name_prefix="model",
                    save_vecnormalize=True,
                )
            )
        averager = None
        averaging = WeightAveraging.from_setting(settings.get("weight_averaging"))
        if averaging is not None:
            averager = WeightAveragingCallback(averaging, settings["n_envs"])
            callbacks.append(averager)
        first_step = int(model.num_timesteps) if load_existing else 0
        planned = steps_that_will_run(model, steps)
        if log:
            rounding = "" if planned == steps else f" ({steps:,} rounded up to whole rollouts)"
            log(f"training {planned:,} steps{rounding}; Ctrl-C or SIGTERM stops and saves")
        message = (
            "llmsched train: {signal} received: stopping at the next step and saving model.zip "
            "(Ctrl-C again quits without saving)"
        )
        started = time.perf_counter()
        formats = ["csv"] + (["stdout"] if verbose else [])
        if importlib.util.find_spec("tensorboard") is not None:
            formats.append("tensorboard")
        # Read before the logger opens the file anew, which truncates it.
        earlier_log = _read_progress(run_dir) if load_existing else None
        model.set_logger(_in_sorted_columns(configure(str(run_dir), formats)))
        try:
            with stop_requested_by_signals(message if log else "") as stop:
                callbacks.append(StopOnRequest(stop))
                if progress_bar:
                    callbacks.append(StepProgressBar(planned))
                with distribution_validation_off():
                    model.learn(
                        total_timesteps=steps,
                        callback=CallbackList(callbacks),
                        reset_num_timesteps=not load_existing,
                    )
        finally:
            if earlier_log is not None:  # the logger rewrote the file from this session's rows
                model.logger.close()
                _prepend_progress(run_dir, earlier_log, first_step)
        wall = time.perf_counter() - started
        trained = int(model.num_timesteps) - first_step
        saved_in = _save_final(run_dir, model, venv, log)
        if averager is not None and averager.save(saved_in, model) is None and log:
            log(
                f"weight averaging: no snapshot was taken (the first is at step "
                f"{averaging.start:,}), so no {AVERAGED_MODEL_FILE} was written"
            )
        venv.close()
    evaluations = evaluator.results if evaluator else []
    session: dict[str, Any] = {
        "steps": trained,
        "wall_time_s": round(wall, 2),
        "steps_per_s": round(trained / wall, 1) if wall > 0 else 0.0,
        "total_timesteps": int(model.num_timesteps),
    }
    if cloning is not None:
        session["imitation"] = cloning
    if averager is not None:
        session["averaged_snapshots"] = averager.record()
    if stop.requested:
        session["stopped_by"] = stop.signal_name
    if evaluator is not None and evaluator.best_baseline is not None:
        session["best_baseline"] = evaluator.best_baseline
        session["best_baseline_validation_return"] = evaluator.best_baseline_return
        session["best_agent_validation_return"] = evaluator.best_agent_return
    config = replace(
        config,
        total_timesteps=int(model.num_timesteps),
        sessions=[*config.sessions, session],
    )
    config.save(saved_in)
    if stop.requested:
        raise TrainingInterrupted(saved_in, trained, stop.signal_name)
    return TrainResult(saved_in, config, model, evaluations)


def _warm_start(
    model: Any,
    venv: Any,
    config: RunConfig,
    imitation: Imitation,
    gamma: float,
    log: Callable[[str], None] | None,
) -> tuple[tuple[str, float] | None, dict[str, Any]]:
    """Clone a baseline into ``model`` before training (see :mod:`agents.imitation`).

    Returns:
        The best baseline on the validation seeds with its return (when ``"best"`` was asked
        for, else ``None``), and the cloning report with its wall time.
    """
    from agents.callbacks import best_baseline
    from agents.imitation import clone_into, collect_demonstrations
    from agents.scenarios import build_env_kwargs
    from baselines import policy_names

    started = time.perf_counter()
    best = None
    baseline = imitation.baseline
    if baseline == BEST:
        best = best_baseline(
            config.env_id,
            build_env_kwargs(config.env_kwargs),
            config.validation_seeds,
            policy_names(kind_of_id(config.env_id).name),
        )
        baseline = best[0]
    name = best[0] if best is not None else imitation.describe()
    if log:
        setting = f" {imitation.baseline_kwargs}" if imitation.baseline_kwargs else ""
        log(
            f"warm start: cloning {name}{setting} from {imitation.steps:,} demonstration "
            f"steps ({imitation.epochs} epochs)"
        )
    demonstrations = collect_demonstrations(
        venv, baseline, imitation.steps, imitation.baseline_kwargs, imitation.choose_every
    )
    report = clone_into(
        model,
        venv,
        demonstrations,
        imitation,
        baseline=name,
        gamma=gamma,
        seed=config.seed,
    ).to_dict()
    report["wall_time_s"] = round(time.perf_counter() - started, 2)
    if log:
        by = ", ".join(f"{k} {v}" for k, v in report["decisions"].items())
        log(
            f"warm start: the policy's deterministic action is the demonstrator's at "
            f"{report['agreement']:.1%} of the demonstration decisions (decisions: {by})"
        )
    return best, report


class _SortedWhenExtended(list):
    """A list whose ``extend`` adds the new items in sorted order."""

    def extend(self, items: Any) -> None:
        super().extend(sorted(items))


def _read_progress(run_dir: Path) -> Any:
    """The rows of ``progress.csv`` so far (a DataFrame), or ``None`` without any."""
    import pandas as pd

    path = run_dir / PROGRESS_FILE
    if not path.is_file() or path.stat().st_size == 0:
        return None
    return pd.read_csv(path)


def _prepend_progress(run_dir: Path, earlier: Any, resumed_at: int) -> None:
    """Put the earlier sessions' rows back in front of this session's in ``progress.csv``.

    stable-baselines3 opens the file anew (truncating it) in every session, so a resumed run's
    log held only its last session. Earlier rows beyond ``resumed_at`` (the step this session
    started from: a checkpoint, when the last session was killed) are dropped, since this
    session trained those steps again. Columns are the union of both, in sorted order, as
    :func:`_in_sorted_columns` keeps them.
    """
    import pandas as pd

    steps = earlier.get("time/total_timesteps")
    if steps is not None:
        earlier = earlier[~(steps > resumed_at)]
    latest = _read_progress(run_dir)
    rows = earlier if latest is None else pd.concat([earlier, latest], ignore_index=True)
    rows[sorted(rows.columns)].to_csv(run_dir / PROGRESS_FILE, index=False)


def _in_sorted_columns(logger: Any) -> Any:
    """``logger`` with its ``progress.csv`` columns added in sorted order.

    stable-baselines3's CSV output adds the keys first seen at a dump in the order of a set
    difference, which depends on Python's string hashing: two identical runs wrote
    ``progress.csv`` with their columns in different orders. Its list of keys is replaced by
    one whose ``extend`` sorts what it adds.
    """
    from stable_baselines3.common.logger import CSVOutputFormat

    for output in logger.output_formats:
        if isinstance(output, CSVOutputFormat):
            output.keys = _SortedWhenExtended(output.keys)
    return logger


def _set_aside(run_dir: Path) -> Path | None:
    """Move the files of a run already in ``run_dir`` into a hidden folder there; return it.

    A run replaced by another (``overwrite``) must leave none of its files beside the new
    run's: its statistics would be applied to a new model trained without normalisation, its
    checkpoints offered to ``--resume``. They are set aside rather than deleted, so that a
    session that saves no model can put them back (:func:`_put_back`); once the new run has a
    model, the folder is removed (and so is one a killed session left). Other files in
    ``run_dir`` are left alone.

    Returns:
        The folder, or ``None`` if ``run_dir`` held no run file.
    """
    for left in run_dir.glob(f"{ASIDE_PREFIX}*"):  # of a forced session that was killed
        shutil.rmtree(left, ignore_errors=True)
    entries = sorted({entry for pattern in RUN_ENTRIES for entry in run_dir.glob(pattern)})
    if not entries:
        return None
    aside = Path(tempfile.mkdtemp(prefix=ASIDE_PREFIX, dir=run_dir))
    for entry in entries:
        os.replace(entry, aside / entry.name)
    return aside


def _put_back(run_dir: Path, aside: Path | None) -> None:
    """Restore the run files :func:`_set_aside` moved into ``aside``."""
    if aside is None:
        return
    for entry in aside.iterdir():
        os.replace(entry, run_dir / entry.name)
    aside.rmdir()


def _remove_new_entries(run_dir: Path, before: set[Path], *, remove_dir: bool) -> None:
    """Remove what a session that saved no model wrote into ``run_dir`` (``config.json``, logs).

    The directory is left as it was before (removed if the session created it), so the same
    command can be run again, and ``--resume`` is not offered a run without a model.
    """
    for entry in set(run_dir.iterdir()) - before:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if remove_dir and not any(run_dir.iterdir()):
        run_dir.rmdir()


def _save_final(run_dir: Path, model: Any, venv: Any, log: Callable[[str], None] | None) -> Path:
    """Save the final model and statistics in ``run_dir``, or in a rescue directory.

    Returns:
        Where they were saved (``run_dir`` unless writing there failed).
    """
    from stable_baselines3.common.vec_env import VecNormalize

    from llmsched_env.outputs import write_or_rescue

    def write(target: Path) -> None:
        model.save(target / "model.zip")
        if isinstance(venv, VecNormalize):
            venv.save(str(target / "vecnormalize.pkl"))

    saved_in, _ = write_or_rescue(run_dir, write, warn=log)
    return saved_in


def _describe(
    env_id: str,
    env_kwargs: Mapping[str, Any],
    mixture: Mapping[str, Any] | None = None,
    imitation: Imitation | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Build the env once: checks its arguments and records its full configuration.

    With a training ``mixture``, it is built too, and its spaces and observation names must be
    the env's (an agent trained on it is evaluated on the env). The baseline of an
    ``imitation`` is built on the env with its keyword arguments.

    Raises:
        ValueError: If the mixture's spaces or observation names differ from the env's, or
            the imitated baseline refuses its keyword arguments.
    """
    import gymnasium as gym

    from agents.envs import make_mixture_env
    from agents.runs import describe_env
    from agents.scenarios import build_env_kwargs

    env = gym.make(env_id, **build_env_kwargs(_json_ready(env_kwargs)))
    try:
        described = describe_env(env)
        if imitation is not None:
            imitation.check_baseline(kind_of_id(env_id).name, env)
        if mixture is not None:
            mixed = make_mixture_env(mixture, env_kwargs)
            if (
                mixed.observation_space != env.observation_space
                or mixed.action_space != env.action_space
                or list(mixed.obs_names) != list(env.unwrapped.obs_names)
            ):
                raise ValueError(
                    f"the training mixture's spaces (observation {mixed.observation_space}, "
                    f"action {mixed.action_space}) differ from the env's (observation "
                    f"{env.observation_space}, action {env.action_space}); give the "
                    "components the env's n_bins, n_gpus and max_batch_size"
                )
            mixed.close()
        return described
    finally:
        env.close()


def build_policy_kwargs(policy_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Turn JSON ``policy_kwargs`` into stable-baselines3's (activation name -> torch class)."""
    import torch

    kwargs = dict(policy_kwargs or {})
    activation = kwargs.get("activation_fn")
    if isinstance(activation, str):
        classes: dict[str, Callable[..., Any]] = {
            "tanh": torch.nn.Tanh,
            "relu": torch.nn.ReLU,
            "elu": torch.nn.ELU,
            "leaky_relu": torch.nn.LeakyReLU,
        }
        kwargs["activation_fn"] = classes[activation]
    return kwargs


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads, restoring the previous number afterwards.

    One thread is the fastest setting for these small networks and makes same-seed runs
    bit-for-bit repeatable.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def distribution_validation_off() -> Iterator[None]:
    """Run the block without torch's argument checks of distributions, then restore them.

    By default torch checks the parameters of every distribution it builds (probabilities on
    the simplex, finite logits) and the support of every value passed to ``log_prob``. A
    rollout builds one masked categorical per env step and an update one per minibatch, so on
    these small networks the checks cost 20-30% of training steps per second
    (``benchmarks/bench_training.py``). They can never fail here: the logits come from the
    network and masking only replaces some by a large negative number, and the actions scored
    are the ones sampled. Turning them off changes no number, only speed; the previous
    default is restored so that other code in the process keeps torch's behaviour.
    """
    from torch.distributions import Distribution

    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


def _json_ready(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Check that env keyword arguments are plain JSON values (names, not objects)."""
    import json

    try:
        return json.loads(json.dumps(dict(kwargs)))
    except TypeError as error:
        raise ValueError(
            "env_kwargs must be plain JSON values (numbers, strings, lists) so the run can be "
            "reloaded; name a workload preset or a scenario workload "
            f"(agents.scenarios.SCENARIO_WORKLOADS) instead of passing an object ({error})"
        ) from error
