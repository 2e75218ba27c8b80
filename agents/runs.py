"""The run directory: everything needed to reload, evaluate, resume or reproduce an agent.

=========================  ===============================================================
file                       contents
=========================  ===============================================================
``config.json``            :class:`RunConfig`: env id and kwargs, algorithm, resolved
                           hyperparameters, seeds, steps, throughput, package versions
``model.zip``              the final model (stable-baselines3 format)
``vecnormalize.pkl``       its ``VecNormalize`` statistics (when normalisation is on)
``best_model.zip``         the model with the best validation return (evaluation callback)
``best_vecnormalize.pkl``  the statistics saved with it
``averaged_model.zip``     the mean weights of late snapshots (``weight_averaging``)
``evaluations.csv``        the callback's validation results: agent vs best baseline
``progress.csv``           stable-baselines3's training log
``checkpoints/``           periodic checkpoints (model and statistics)
``events.out.tfevents.*``  TensorBoard logs, when tensorboard is installed
``*model.npz``             the numpy exports of the models (:mod:`agents.numpy_policy`)
=========================  ===============================================================
"""

from __future__ import annotations

import json
import platform
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from agents.averaging import AVERAGED_MODEL_FILE

CONFIG_FILE = "config.json"
#: Every file and folder a training run writes in its directory (the table above; names or
#: glob patterns), so that a run replaced by another (``llmsched train --force``) leaves none
#: of its own behind.
RUN_ENTRIES = (
    CONFIG_FILE,
    "model.zip",
    "vecnormalize.pkl",
    "best_model.zip",
    "best_vecnormalize.pkl",
    AVERAGED_MODEL_FILE,
    "evaluations.csv",
    "progress.csv",
    "checkpoints",
    "events.out.tfevents.*",
    "*model.npz",
)
FORMAT_VERSION = 1

ModelChoice = Literal["best", "final", "averaged"]
MODEL_CHOICES = ("best", "final", "averaged")

#: Packages whose versions are recorded in every run configuration.
VERSIONED_PACKAGES = (
    "llmsched-env",
    "gymnasium",
    "numpy",
    "torch",
    "stable-baselines3",
    "sb3-contrib",
)


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`VERSIONED_PACKAGES` and of Python."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass(frozen=True)
class RunConfig:
    """The full configuration of a training run, stored as ``config.json``.

    Attributes:
        env_id: Registered env id.
        env_kwargs: Plain env keyword arguments (workload names, not objects).
        algo: Algorithm name (:data:`agents.algorithms.ALGOS`).
        hyperparams: Resolved settings (:func:`agents.hyperparams.resolve_hyperparams`).
        seed: Training seed (network initialisation, action sampling, env seeds).
        training_env_seeds: Seed of each training env's first reset.
        validation_seeds: Seeds of the evaluation callback.
        total_timesteps: Environment steps trained so far (all sessions).
        vec_env: ``"dummy"`` or ``"subproc"``.
        torch_threads: Torch CPU threads used for training.
        scenario: Scenario name when trained on one (:data:`agents.scenarios.SCENARIOS`).
        env_config: The env's full configuration with its defaults filled in (objects by
            name), to detect later changes of env defaults (:func:`env_config_changes`).
        obs_names: The env's observation layout (``env.unwrapped.obs_names``) the model reads.
        command: The command line that started the run, when started from the CLI.
        training_mixture: Keyword arguments of the
            :class:`~llmsched_env.envs.mixture.BatchMixtureEnv` the training envs sample
            episodes from (a scenario's ``training``), or ``None`` when they are the run's env.
        eval_freq: Steps between validations, as the run was started (``None``: not recorded,
            the default then); a resumed session keeps it unless told otherwise.
        checkpoint_freq: Steps between checkpoints, likewise.
        sessions: One record per training session: steps, wall time, env steps per second.
        versions: Package versions of the first session.
        format_version: Version of this file's layout.
    """

    env_id: str
    env_kwargs: dict[str, Any]
    algo: str
    hyperparams: dict[str, Any]
    seed: int
    training_env_seeds: list[int]
    validation_seeds: list[int]
    total_timesteps: int = 0
    vec_env: str = "dummy"
    torch_threads: int = 1
    scenario: str | None = None
    env_config: dict[str, Any] = field(default_factory=dict)
    obs_names: list[str] = field(default_factory=list)
    command: str | None = None
    training_mixture: dict[str, Any] | None = None
    eval_freq: int | None = None
    checkpoint_freq: int | None = None
    sessions: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=package_versions)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """The configuration as indented JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """Parse a configuration written by :meth:`to_json`.

        Raises:
            ValueError: If the JSON is not a run configuration of a known format version.
        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a run configuration must be a JSON object, got {type(data)}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"run configuration format_version must be {FORMAT_VERSION}, got {version!r}"
            )
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        required -= {f.name for f in fields(cls) if f.default_factory is not MISSING}
        missing = required - set(data)
        unknown = set(data) - known
        if missing or unknown:
            raise ValueError(
                f"not a run configuration: missing keys {sorted(missing)}, unknown keys "
                f"{sorted(unknown)}"
            )
        return cls(**data)

    def save(self, run_dir: str | Path) -> Path:
        """Write ``config.json`` into ``run_dir`` (created if needed) and return its path."""
        path = Path(run_dir) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path


def describe_env(env: Any) -> tuple[dict[str, Any], list[str]]:
    """The env's configuration as plain JSON values and its observation names.

    Objects (a workload source, a latency model) are recorded by their ``name`` attribute, or
    their class name.
    """
    unwrapped = env.unwrapped
    return _plain(asdict(unwrapped.config)), [str(n) for n in unwrapped.obs_names]


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as JSON would give them back, objects by their ``name`` (or class name)."""

    def name(value: Any) -> Any:
        return getattr(value, "name", type(value).__name__)

    return json.loads(json.dumps(values, default=name))


def env_config_changes(config: RunConfig, env: Any) -> dict[str, tuple[Any, Any]]:
    """Entries of the env's configuration that differ from those a run was trained with.

    An option the run did not record did not exist then; it counts as having had its default,
    which keeps the env's earlier behaviour (so adding an option does not flag older runs).

    Returns:
        ``{name: (at training, now)}``; empty when nothing changed or nothing was recorded.
    """
    if not config.env_config:
        return {}
    now, _ = describe_env(env)
    defaults = {f.name: f.default for f in fields(env.unwrapped.config) if f.default is not MISSING}
    unrecorded = {k: v for k, v in defaults.items() if k not in config.env_config}
    then = {**_plain(unrecorded), **config.env_config}
    keys = set(then) | set(now)
    return {k: (then.get(k), now.get(k)) for k in sorted(keys) if then.get(k) != now.get(k)}


def load_run_config(run_dir: str | Path) -> RunConfig:
    """Read the ``config.json`` of a run directory.

    Raises:
        ValueError: If ``run_dir`` holds no ``config.json`` or it is not a run configuration.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        what = "is not a directory" if Path(run_dir).exists() else "does not exist"
        raise ValueError(f"run directory {str(run_dir)!r} {what}; expected a training run")
    if not path.is_file():
        raise ValueError(f"run_dir {str(run_dir)!r} holds no {CONFIG_FILE}; is it a training run?")
    return RunConfig.from_json(path.read_text(encoding="utf-8"))


def model_paths(run_dir: str | Path, which: ModelChoice = "best") -> tuple[Path, Path | None]:
    """Paths of a run's model and its ``VecNormalize`` statistics.

    Args:
        run_dir: The run directory.
        which: ``"best"`` (the model kept by the evaluation callback; the final model when the
            run has none), ``"final"``, or ``"averaged"`` (the mean weights of the run's late
            snapshots, :mod:`agents.averaging`, with the final statistics).

    Returns:
        ``(model, statistics)``; statistics is ``None`` when the run did not normalise.

    Raises:
        ValueError: If ``which`` is unknown or the run holds no such model.
    """
    if which not in MODEL_CHOICES:
        raise ValueError(f"which must be one of {list(MODEL_CHOICES)}, got {which!r}")
    run_dir = Path(run_dir)
    if which == "averaged":
        model = run_dir / AVERAGED_MODEL_FILE
        if not model.is_file():
            averaging = (run_dir / CONFIG_FILE).is_file() and load_run_config(
                run_dir
            ).hyperparams.get("weight_averaging")
            why = (
                "an exported (pretrained) agent holds only the model it was exported with, as "
                "model.zip (--model final), or the run stopped before its first snapshot"
                if averaging
                else "the run was trained without the weight_averaging setting (or stopped "
                "before its first snapshot)"
            )
            raise ValueError(f"run_dir {str(run_dir)!r} holds no {AVERAGED_MODEL_FILE}: {why}")
        return model, _statistics(run_dir, run_dir / "vecnormalize.pkl")
    prefix = "best_" if which == "best" and (run_dir / "best_model.zip").is_file() else ""
    model = run_dir / f"{prefix}model.zip"
    if not model.is_file():
        raise ValueError(f"run_dir {str(run_dir)!r} holds no {model.name}")
    return model, _statistics(run_dir, run_dir / f"{prefix}vecnormalize.pkl")


def _statistics(run_dir: Path, stats: Path) -> Path | None:
    """``stats`` if it exists; ``None`` if the run did not normalise its observations.

    Raises:
        ValueError: If the run normalised its observations but ``stats`` is missing: without
            them the agent would act on observations it never saw (silently, another agent).
    """
    if stats.is_file():
        return stats
    if (run_dir / CONFIG_FILE).is_file():
        if load_run_config(run_dir).hyperparams.get("normalize_obs"):
            raise ValueError(
                f"run_dir {str(run_dir)!r} was trained on normalised observations "
                f"(normalize_obs) but holds no {stats.name}, their statistics; restore it"
            )
    return None


def export_run(run_dir: str | Path, dest: str | Path, which: ModelChoice = "best") -> list[Path]:
    """Copy a run's model, statistics and configuration into ``dest`` (a pretrained agent).

    The chosen model becomes ``dest/model.zip`` and its statistics ``dest/vecnormalize.pkl``;
    checkpoints, logs and the other model are left out, so the copy is small.

    Args:
        run_dir: The run directory.
        dest: The directory to write (created; existing files of the same names are replaced).
        which: ``"best"``, ``"final"`` or ``"averaged"`` model (see :func:`model_paths`).

    Returns:
        The written files.
    """
    import shutil

    model, stats = model_paths(run_dir, which)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = [Path(shutil.copyfile(model, dest / "model.zip"))]
    if stats is not None:
        written.append(Path(shutil.copyfile(stats, dest / "vecnormalize.pkl")))
    written.append(Path(shutil.copyfile(Path(run_dir) / CONFIG_FILE, dest / CONFIG_FILE)))
    return written
