"""Train an agent on every benchmark scenario and compare it with every baseline.

Run from the repository root (needs the ``agents`` extra)::

    python benchmarks/train_scenarios.py run                    # every trainable scenario
    python benchmarks/train_scenarios.py run --scenarios batch-default,batch-bursty
    python benchmarks/train_scenarios.py throughput             # env and training steps/s
    python benchmarks/train_scenarios.py export --run runs/scenarios/batch-default \
        --name batch-default                                    # ship as a pretrained agent

``run`` does, for each scenario of :data:`agents.scenarios.SCENARIOS` (``all`` leaves out the
``batch-heldout-*`` scenarios, which exist to evaluate ``batch-general`` on workloads it never
trained on), exactly what these commands do::

    llmsched train --scenario NAME --steps STEPS --seed 0 --out runs/scenarios/NAME
    llmsched compare --run runs/scenarios/NAME --out runs/scenarios/NAME/compare

and writes ``runs/scenarios/results.md`` with one Markdown table per scenario (the tables of
``docs/results.md``). As ``llmsched train`` does, it refuses to train over an existing run
unless ``--force`` is given (``--compare-only`` compares existing runs). ``throughput``
measures environment steps per second through stable-baselines3's ``DummyVecEnv`` and
``SubprocVecEnv`` (random masked actions), and training steps per second of MaskablePPO with
each, for 1, 2 and 4 envs. ``export`` copies a run's
model (``--model``: validation-selected by default, ``final`` or ``averaged``), statistics and
configuration into ``agents/pretrained/NAME/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from agents.compare import compare, markdown_table
from agents.runs import MODEL_CHOICES
from agents.scenarios import GENERAL_HELD_OUT, SCENARIOS, get_scenario
from agents.training import train
from llmsched_env.cli_args import nonnegative_int, positive_int


def run(args: argparse.Namespace) -> None:
    if args.scenarios == "all":
        names = [name for name in SCENARIOS if name not in GENERAL_HELD_OUT]
    else:
        names = args.scenarios.split(",")
    try:
        scenarios = [get_scenario(name) for name in names]  # every name, before any training
    except ValueError as error:
        sys.exit(f"train_scenarios.py run: error: --scenarios: {error}")
    root = Path(args.runs_dir)
    if not args.compare_only and not args.force:
        existing = [str(root / name) for name in names if (root / name / "config.json").exists()]
        if existing:
            sys.exit(
                f"train_scenarios.py run: error: {existing} hold trained runs; pass --force to "
                "train them again (replacing them) or --compare-only to compare them"
            )
    sections = []
    for name, scenario in zip(names, scenarios):
        steps = args.steps or scenario.train_steps
        out = root / name
        command = f"llmsched train --scenario {name} --steps {steps} --seed {args.seed} --out {out}"
        print(command, flush=True)
        if not args.compare_only:
            result = train(
                scenario=name,
                out=out,
                steps=steps,
                seed=args.seed,
                overwrite=True,
                progress_bar=not args.quiet,
                command=command,
            )
            session = result.config.sessions[-1]
            print(f"  {session['steps_per_s']:.0f} steps/s, {session['wall_time_s']:.0f} s")
        comparison = compare(out, n_jobs=args.jobs, out=out / "compare")
        print(comparison.verdict(), flush=True)
        session = comparison.config.sessions[-1]
        sections.append(
            f"### {name}: {scenario.description}\n\n"
            f"`{scenario.env_id}` with `{dict(scenario.env_kwargs)}`; agent trained for "
            f"{comparison.config.total_timesteps:,} steps "
            f"({session['wall_time_s'] / 60:.1f} min, {session['steps_per_s']:.0f} steps/s).\n\n"
            f"```\n{command}\nllmsched compare --run {out}\n```\n\n"
            f"{markdown_table(comparison.summary)}\n\n{comparison.verdict()}.\n"
        )
    path = root / "results.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sections), encoding="utf-8")
    print(f"wrote {path}")


def env_steps_per_s(vec_env: str, n_envs: int, steps: int) -> float:
    from sb3_contrib.common.maskable.utils import get_action_masks
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from agents.envs import env_factory

    factory = env_factory("llmsched/BatchScheduling-v0", {}, flat_action=False)
    venv = (DummyVecEnv if vec_env == "dummy" else SubprocVecEnv)([factory] * n_envs)
    venv.seed(0)
    venv.reset()
    rng = np.random.default_rng(0)
    nvec = venv.action_space.nvec
    start = time.perf_counter()
    for _ in range(steps // n_envs):
        masks = get_action_masks(venv)
        actions = []
        for mask in masks:
            parts = np.split(mask, np.cumsum(nvec)[:-1])
            actions.append([rng.choice(np.flatnonzero(p)) for p in parts])
        venv.step(np.array(actions))
    rate = (steps // n_envs) * n_envs / (time.perf_counter() - start)
    venv.close()
    return rate


def throughput(args: argparse.Namespace) -> None:
    import tempfile

    for n_envs in (1, 2, 4):
        for vec_env in ("dummy", "subproc"):
            env_rate = env_steps_per_s(vec_env, n_envs, args.steps)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                train(
                    "batch",
                    out=tmp,
                    steps=args.steps,
                    n_envs=n_envs,
                    vec_env=vec_env,  # type: ignore[arg-type]
                    eval_freq=0,
                    checkpoint_freq=0,
                    overwrite=True,
                )
                train_rate = args.steps / (time.perf_counter() - start)
            print(
                f"{vec_env:8s} n_envs={n_envs}: env {env_rate:8,.0f} steps/s, "
                f"MaskablePPO training {train_rate:6,.0f} steps/s",
                flush=True,
            )


def export(args: argparse.Namespace) -> None:
    from agents.compare import pretrained_root
    from agents.numpy_policy import export_numpy_policy
    from agents.runs import export_run, load_run_config

    dest = Path(args.dest) if args.dest else pretrained_root() / args.name
    written = export_run(args.run, dest, which=args.model)
    stats = dest / "vecnormalize.pkl"
    try:  # the actor as numpy arrays, so the agent acts without torch (agents.numpy_policy)
        written.append(export_numpy_policy(dest / "model.zip", stats if stats.is_file() else None))
    except ValueError as error:
        print(f"no numpy export, the agent will need torch: {error}")
    config = load_run_config(args.run)
    if not config.env_config:  # runs of older versions did not record it: record it now
        import dataclasses

        import gymnasium as gym

        from agents.runs import describe_env
        from agents.scenarios import build_env_kwargs

        env_config, obs_names = describe_env(
            gym.make(config.env_id, **build_env_kwargs(config.env_kwargs))
        )
        config = dataclasses.replace(config, env_config=env_config, obs_names=obs_names)
        config.save(dest)
    seeds = config.validation_seeds
    command = config.command
    if "--eval-episodes" not in command:  # the default has changed over versions: be explicit
        command += f" --eval-episodes {len(seeds)}"
    if args.model == "averaged":
        taken = config.sessions[-1]["averaged_snapshots"]
        every = config.hyperparams["weight_averaging"]["every"]
        chosen = (
            f"the mean weights of its {taken['count']} snapshots, every {every:,} steps from "
            f"step {taken['first_step']:,} to {taken['last_step']:,}"
        )
    elif args.model == "final":
        chosen = "the final one"
    else:
        chosen = f"the one with the best validation return on seeds {seeds[0]:,}-{seeds[-1]:,}"
    model_option = "" if args.model == "best" else f" --model {args.model}"
    (dest / "README.md").write_text(
        f"# Pretrained agent `{args.name}`\n\n"
        f"{config.algo} on `{config.env_id}` with `{config.env_kwargs}`, trained for "
        f"{config.total_timesteps:,} steps with seed {config.seed}; the model is {chosen}. "
        f"Reproduce it with:\n\n"
        f"```\n{command}\npython benchmarks/train_scenarios.py export --run "
        f"{args.run} --name {args.name}{model_option}\n```\n\nand compare it with every "
        f"baseline with `llmsched compare --pretrained {args.name}`.\n",
        encoding="utf-8",
    )
    size = sum(p.stat().st_size for p in dest.iterdir())
    print(f"wrote {[p.name for p in written]} and README.md to {dest} ({size / 1024:.0f} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and compare on each scenario")
    r.add_argument(
        "--scenarios",
        default="all",
        help="'all' (every scenario but batch-heldout-*) or comma-separated names",
    )
    r.add_argument(
        "--steps", type=positive_int, help="training steps (default: the scenario's budget)"
    )
    r.add_argument("--seed", type=nonnegative_int, default=0)
    r.add_argument("--runs-dir", default="runs/scenarios")
    r.add_argument("--jobs", type=positive_int, default=1, help="evaluation worker processes")
    r.add_argument("--compare-only", action="store_true", help="reuse existing runs")
    r.add_argument("--force", action="store_true", help="train again over existing runs")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=run)
    t = sub.add_parser("throughput", help="env and training steps/s per VecEnv kind")
    t.add_argument("--steps", type=positive_int, default=20_000)
    t.set_defaults(func=throughput)
    e = sub.add_parser("export", help="copy a run into agents/pretrained/NAME")
    e.add_argument("--run", required=True, help="the run directory")
    e.add_argument("--name", required=True, help="name of the pretrained agent")
    e.add_argument("--dest", help="directory to write instead (default: agents/pretrained/NAME)")
    e.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        default="best",
        help="which model of the run: validation-best, final, or averaged weights",
    )
    e.set_defaults(func=export)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
