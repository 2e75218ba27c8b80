import json
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from agents.algorithms import ALGOS
from agents.policy import AgentPolicy, AgentPolicyFactory, load_agent
from agents.runs import load_run_config
from agents.scenarios import build_env_kwargs
from agents.seeds import TRAIN_SEED_LIMIT
from agents.training import resume, train
from baselines import policy_names
from llmsched_env.evaluation import evaluate
from tests.agents.conftest import TINY_ENVS, TINY_HYPERPARAMS, tiny_train

ENV_IDS = {
    "batch": "llmsched/BatchScheduling-v0",
    "continuous": "llmsched/ContinuousBatching-v0",
    "routing": "llmsched/Routing-v0",
}


@pytest.mark.parametrize("env", ["batch", "continuous", "routing"])
@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_smoke_training_every_algo_on_every_env(tmp_path, env, algo):
    result = tiny_train(tmp_path / "run", env=env, algo=algo)
    assert result.model.num_timesteps >= 256
    assert (tmp_path / "run" / "model.zip").is_file()
    assert (tmp_path / "run" / "vecnormalize.pkl").is_file()
    config = load_run_config(tmp_path / "run")
    assert config.env_id == ENV_IDS[env] and config.algo == algo
    # The saved agent acts in a plain env through the evaluation harness.
    factory = AgentPolicyFactory(str(tmp_path / "run"))
    episodes, _ = evaluate([factory], ENV_IDS[env], TINY_ENVS[env], [10_000], names=["agent"])
    assert episodes["terminated"].all()
    if ALGOS[algo].masked or ALGOS[algo].flat_action:
        assert episodes["invalid_actions"].sum() == 0  # masks (or masked Q-values) respected


def test_run_directory_holds_full_configuration(tiny_run):
    run_dir = tiny_run.run_dir
    config = json.loads((run_dir / "config.json").read_text())
    for key in (
        "env_id",
        "env_kwargs",
        "algo",
        "hyperparams",
        "seed",
        "training_env_seeds",
        "validation_seeds",
        "versions",
        "sessions",
        "total_timesteps",
    ):
        assert key in config
    assert config["hyperparams"]["algo_kwargs"]["n_steps"] == 64
    assert set(config["versions"]) >= {"stable-baselines3", "sb3-contrib", "torch", "gymnasium"}
    assert config["sessions"][0]["steps_per_s"] > 0
    for name in (
        "model.zip",
        "vecnormalize.pkl",
        "best_model.zip",
        "best_vecnormalize.pkl",
        "evaluations.csv",
        "progress.csv",
    ):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "checkpoints").glob("model_*_steps.zip"))


def test_seed_ranges_are_disjoint(tiny_run):
    config = tiny_run.config
    assert all(0 <= s < TRAIN_SEED_LIMIT for s in config.training_env_seeds)
    assert all(TRAIN_SEED_LIMIT <= s < 10_000 for s in config.validation_seeds)


def test_callback_compares_with_best_baseline(tiny_run):
    evaluations = tiny_run.evaluations
    assert [e["timesteps"] for e in evaluations][:2] == [128, 256]
    # The best of every batch baseline on the validation seeds, evaluated here independently.
    config = tiny_run.config
    _, summary = evaluate(
        policy_names("batch"),
        config.env_id,
        build_env_kwargs(config.env_kwargs),
        config.validation_seeds,
    )
    for e in evaluations:
        assert e["best_baseline"] == summary["policy"].iloc[0]
        assert e["best_baseline_return"] == summary["return_mean"].iloc[0]
        assert e["margin"] == e["agent_return"] - e["best_baseline_return"]
    best = max(e["agent_return"] for e in evaluations)
    assert tiny_run.config.sessions[0]["best_agent_validation_return"] == best


def test_save_load_round_trip_gives_identical_actions(tiny_run):
    import gymnasium as gym

    from agents.policy import LoadedAgent, load_normalizer

    run_dir = tiny_run.run_dir
    in_memory = LoadedAgent(
        tiny_run.model,
        load_normalizer(run_dir / "vecnormalize.pkl"),
        ALGOS["maskable-ppo"],
        tiny_run.config,
    )
    env = gym.make(ENV_IDS["batch"], **TINY_ENVS["batch"])
    before = AgentPolicy(env, in_memory)
    after = AgentPolicy.from_run(env, run_dir, which="final")
    assert after.agent is load_agent(run_dir, "final")  # cached per process
    obs, info = env.reset(seed=10_000)
    steps = 0
    while True:
        a, b = before.act(obs, info), after.act(obs, info)
        np.testing.assert_array_equal(a, b)
        obs, _, terminated, truncated, info = env.step(a)
        steps += 1
        if terminated or truncated:
            break
    assert steps > 3


def test_evaluation_is_deterministic_and_independent_of_workers(tiny_run):
    factory = AgentPolicyFactory(str(tiny_run.run_dir))
    args = ([factory, "random"], ENV_IDS["batch"], TINY_ENVS["batch"], [10_000, 10_001])
    first, _ = evaluate(*args, names=["agent", "random"])
    second, _ = evaluate(*args, names=["agent", "random"])
    parallel, _ = evaluate(*args, names=["agent", "random"], n_jobs=2)
    columns = ["policy", "seed", "return", "steps", "sla_attainment"]
    assert first[columns].equals(second[columns])
    assert first[columns].equals(parallel[columns])


def test_distribution_checks_are_off_only_during_training_and_change_no_number(
    tmp_path, monkeypatch
):
    import contextlib

    from torch.distributions import Distribution

    from agents import training

    before = Distribution._validate_args
    seen = []
    original = training.distribution_validation_off

    @contextlib.contextmanager
    def recording():
        with original():
            seen.append(Distribution._validate_args)
            yield

    monkeypatch.setattr(training, "distribution_validation_off", recording)
    fast = tiny_train(tmp_path / "fast", seed=5)
    assert seen == [False] and Distribution._validate_args == before
    monkeypatch.setattr(training, "distribution_validation_off", contextlib.nullcontext)
    Distribution.set_default_validate_args(True)
    try:
        checked = tiny_train(tmp_path / "checked", seed=5)
    finally:
        Distribution.set_default_validate_args(before)
    params = [r.model.policy.state_dict() for r in (fast, checked)]
    for key in params[0]:
        assert params[0][key].equal(params[1][key]), key


def test_same_seed_runs_are_identical(tmp_path):
    import gymnasium as gym

    runs = [tiny_train(tmp_path / f"run{i}", seed=3) for i in range(2)]
    env = gym.make(ENV_IDS["batch"], **TINY_ENVS["batch"])
    policies = [AgentPolicy.from_run(env, r.run_dir, which="final") for r in runs]
    obs, info = env.reset(seed=10_000)
    while True:
        actions = [p.act(obs, info) for p in policies]
        np.testing.assert_array_equal(*actions)
        obs, _, terminated, truncated, info = env.step(actions[0])
        if terminated or truncated:
            break
    params = [r.model.policy.state_dict() for r in runs]
    for key in params[0]:
        assert params[0][key].equal(params[1][key]), key


def test_resume_continues_step_count_and_history(tmp_path):
    first = tiny_train(tmp_path / "run", steps=128)
    again = resume(first.run_dir, steps=128, eval_freq=0, checkpoint_freq=0)
    assert again.config.total_timesteps == 256
    assert [s["steps"] for s in again.config.sessions] == [128, 128]
    assert again.config.training_env_seeds == first.config.training_env_seeds


def test_resume_keeps_the_run_s_validation_and_checkpoint_frequencies(tmp_path):
    first = tiny_train(tmp_path / "run", steps=128, eval_freq=128, eval_episodes=1)
    assert (first.config.eval_freq, first.config.checkpoint_freq) == (128, 0)
    again = resume(first.run_dir, steps=256)  # validates every 128 steps, as the run did
    assert len(again.evaluations) == 2
    assert not (first.run_dir / "checkpoints").exists()  # and still writes no checkpoints
    told = resume(first.run_dir, steps=128, eval_freq=0)
    assert told.evaluations == []


def test_scenario_sets_env_and_kwargs(tmp_path):
    result = tiny_train(
        tmp_path / "run", steps=64, scenario="batch-bursty", env_kwargs={"n_requests": 40}
    )
    config = result.config
    assert config.scenario == "batch-bursty"
    assert config.env_kwargs["workload"] == "azure-conv-bursty"
    assert config.env_kwargs["n_requests"] == 40


def test_an_arrival_rate_replaces_the_scenario_s_load(tmp_path):
    result = tiny_train(
        tmp_path / "run",
        steps=64,
        scenario="batch-overload",
        env_kwargs={"n_requests": 40, "arrival_rate": 20.0},
    )
    assert "load" not in result.config.env_kwargs
    assert result.config.env_kwargs["arrival_rate"] == 20.0


def test_a_mixture_scenario_refuses_settings_its_components_give(tmp_path):
    for setting in ({"workload": "sharegpt"}, {"load": 1.25}):
        with pytest.raises(ValueError, match="would change only its validation env"):
            tiny_train(tmp_path / "run", steps=64, scenario="batch-general", env_kwargs=setting)


def test_general_scenario_trains_on_its_mixture_and_compares_on_a_held_out_workload(tmp_path):
    from agents.compare import compare
    from agents.scenarios import GENERAL_TRAINING

    result = tiny_train(
        tmp_path / "run", steps=256, scenario="batch-general", env_kwargs={"n_requests": 60}
    )
    config = result.config
    assert config.scenario == "batch-general"
    assert config.training_mixture["components"] == GENERAL_TRAINING["components"]
    assert config.env_kwargs == {"n_requests": 60}
    assert result.model.num_timesteps >= 256
    # Raw observations: the rewards are still scaled, the observations are not.
    assert config.hyperparams["normalize_obs"] is False
    stats = pickle.loads((result.run_dir / "vecnormalize.pkl").read_bytes())
    assert stats.norm_obs is False and stats.norm_reward is True
    assert load_agent(result.run_dir, "final").normalizer is None
    comparison = compare(
        result.run_dir,
        n_seeds=2,
        policies=["edf"],
        env_overrides={"workload": "sharegpt", "load": 1.25},
    )
    assert set(comparison.summary["policy"]) == {"agent", "edf"}
    assert comparison.config.env_kwargs["workload"] == "sharegpt"
    again = resume(result.run_dir, steps=128, eval_freq=0, checkpoint_freq=0)
    assert again.config.training_mixture == config.training_mixture
    assert pickle.loads((result.run_dir / "vecnormalize.pkl").read_bytes()).norm_obs is False
    assert again.config.total_timesteps > config.total_timesteps


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"algo": "sac"}, "unknown algorithm 'sac'"),
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"env": "atari"}, "unknown environment kind or env id 'atari'"),
        ({"seed": 5000}, r"seed must be an integer in \[0, 561\] \(with n_envs=16"),
        ({"hyperparams": {"learning_rat": 1e-3}}, "unknown hyperparameter 'learning_rat'"),
        ({"vec_env": "ray"}, "vec_env must be one of"),
        ({"env_kwargs": {"workload": object()}}, "env_kwargs must be plain JSON values"),
        ({"scenario": "batch-defualt"}, "Did you mean 'batch-default'"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(tmp_path, kwargs, match):
    options = {"out": tmp_path / "run", "steps": 64, "eval_freq": 0, "checkpoint_freq": 0}
    options.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train(**options)


def test_existing_run_directory_is_not_overwritten(tiny_run):
    with pytest.raises(ValueError, match="already exists and is not empty"):
        train("batch", out=tiny_run.run_dir, steps=64)


def test_maskable_ppo_through_flatten_action_uses_exact_joint_masks(tmp_path):
    hyper = {"n_steps": 64, "batch_size": 64, "n_epochs": 2, "n_envs": 2, "flatten_action": True}
    result = tiny_train(tmp_path / "run", hyperparams=hyper)
    assert result.model.action_space.n == 5 * 7
    factory = AgentPolicyFactory(str(tmp_path / "run"))
    episodes, _ = evaluate([factory], ENV_IDS["batch"], TINY_ENVS["batch"], [10_000, 10_001])
    assert episodes["invalid_actions"].sum() == 0


def test_linear_schedule_decays_learning_rate_to_zero(tmp_path):
    result = tiny_train(
        tmp_path / "lin",
        hyperparams={**TINY_HYPERPARAMS["maskable-ppo"], "learning_rate": "lin_1e-3"},
    )
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["hyperparams"]["algo_kwargs"]["learning_rate"] == "lin_1e-3"
    model = result.model
    assert model.lr_schedule(1.0) == pytest.approx(1e-3)
    assert model.lr_schedule(0.0) == pytest.approx(0.0)


def test_resume_continues_from_the_latest_checkpoint_without_model_zip(tmp_path):
    first = tiny_train(tmp_path / "run", steps=384, checkpoint_freq=128)
    (first.run_dir / "model.zip").unlink()
    checkpoints = sorted((first.run_dir / "checkpoints").glob("model_*_steps.zip"))
    assert len(checkpoints) >= 2
    said = []
    again = resume(first.run_dir, steps=128, eval_freq=0, checkpoint_freq=0, log=said.append)
    latest = first.run_dir / "checkpoints" / "model_384_steps.zip"
    assert f"resuming from its latest checkpoint {latest}" in said[0]
    assert again.config.total_timesteps == 384 + 128
    assert (first.run_dir / "model.zip").is_file()


def test_resume_refuses_a_normalised_run_whose_statistics_are_missing(tmp_path):
    first = tiny_train(tmp_path / "run", steps=256, checkpoint_freq=128)
    assert first.config.hyperparams["normalize_obs"]
    (first.run_dir / "vecnormalize.pkl").unlink()
    with pytest.raises(ValueError, match=r"statistics of model.zip \(vecnormalize.pkl\)"):
        resume(first.run_dir, steps=128)
    (first.run_dir / "model.zip").unlink()  # the latest checkpoint, its statistics gone too
    (first.run_dir / "checkpoints" / "model_vecnormalize_256_steps.pkl").unlink()
    pattern = r"statistics of model_256_steps.zip \(model_vecnormalize_256_steps.pkl\)"
    with pytest.raises(ValueError, match=pattern):
        resume(first.run_dir, steps=128)


def test_resume_without_model_or_checkpoint_says_so(tmp_path):
    first = tiny_train(tmp_path / "run", steps=128)
    (first.run_dir / "model.zip").unlink()
    with pytest.raises(ValueError, match="no model.zip and no checkpoints/model_<N>_steps.zip"):
        resume(first.run_dir, steps=128)


def test_steps_that_will_run_round_up_to_whole_rollouts(tmp_path):
    from agents.callbacks import steps_that_will_run

    result = tiny_train(tmp_path / "run", steps=100)  # rollouts of 64 steps x 2 envs
    assert steps_that_will_run(result.model, 100) == 128 == result.config.total_timesteps
    assert steps_that_will_run(result.model, 256) == 256
    dqn = tiny_train(tmp_path / "dqn", algo="dqn", steps=10)  # train_freq 4, one env
    assert steps_that_will_run(dqn.model, 10) == 12 == dqn.config.total_timesteps


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_training_saves_the_model_and_resume_continues(tmp_path, sig):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "llmsched_env.cli", "train", "--workload", "demo2"]
    argv += ["--arrival-rate", "4", "--n-requests", "30", "--steps", "1000000", "--n-envs", "2"]
    argv += ["--hyperparams", json.dumps(TINY_HYPERPARAMS["maskable-ppo"])]
    argv += ["--eval-freq", "0", "--checkpoint-freq", "0", "--quiet", "--out", str(out)]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stderr.readline().startswith("llmsched train: ")  # progress at once
    while not process.stderr.readline().startswith("llmsched train: training 1,000,064 steps"):
        assert process.poll() is None
    time.sleep(1.0)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert f"stopped by {sig.name} after" in err and "Traceback" not in err
    config = json.loads((out / "config.json").read_text())
    session = config["sessions"][-1]
    assert session["stopped_by"] == sig.name and 0 < session["steps"] < 1_000_000
    assert (out / "model.zip").is_file() and (out / "vecnormalize.pkl").is_file()
    again = resume(out, steps=128, eval_freq=0, checkpoint_freq=0)
    assert again.config.total_timesteps == config["total_timesteps"] + 128


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_a_session_stopped_before_its_first_model_leaves_no_run(tmp_path, monkeypatch, failure):
    """Ctrl-C during the warm start (or an error) left config.json: not a run, yet not empty."""
    import agents.training as training

    def fail(run_dir, *args, **kwargs):
        (run_dir / "progress.csv").write_text("time/total_timesteps\n")  # the logger's file
        raise failure()

    monkeypatch.setattr(training, "_run_session", fail)
    out = tmp_path / "new"
    with pytest.raises(failure):
        tiny_train(out)
    assert not out.exists()  # made by the session, so removed with what it wrote
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(failure):
        tiny_train(kept, overwrite=True)
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


def test_a_forced_run_keeps_no_file_of_the_run_it_replaces(tmp_path):
    """The old run's vecnormalize.pkl stayed beside a new run trained without normalisation
    (and was applied to its model), its checkpoints were offered to --resume."""
    out = tmp_path / "run"
    tiny_train(out, checkpoint_freq=128)
    assert (out / "vecnormalize.pkl").is_file() and (out / "checkpoints").is_dir()
    (out / "notes.txt").write_text("mine")
    (out / "model.npz").write_bytes(b"an export of the old model")
    (out / "events.out.tfevents.1.host").write_bytes(b"old TensorBoard log")
    (out / ".replaced-run-left").mkdir()  # what a killed forced session leaves
    plain = {**TINY_HYPERPARAMS["maskable-ppo"], "normalize_obs": False, "normalize_reward": False}
    tiny_train(out, overwrite=True, hyperparams={**plain, "imitation": None})
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.zip",
        "notes.txt",
        "progress.csv",
    ]


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_a_forced_session_that_saves_no_model_puts_the_old_run_back(tmp_path, monkeypatch, failure):
    """It left the new config.json beside the old model.zip (scored as the new settings')."""
    import agents.training as training

    out = tmp_path / "run"
    tiny_train(out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def fail(run_dir, *args, **kwargs):
        (run_dir / "progress.csv").write_text("time/total_timesteps\n")
        raise failure()

    monkeypatch.setattr(training, "_run_session", fail)
    with pytest.raises(failure):
        tiny_train(out, overwrite=True, env_kwargs={**TINY_ENVS["batch"], "arrival_rate": 6.0})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_resumed_run_keeps_the_earlier_sessions_training_log(tmp_path):
    """Each session truncated progress.csv: after a resume only its own rows were left."""
    from agents.training import resume

    out = tmp_path / "run"
    tiny_train(out)
    first = pd.read_csv(out / "progress.csv")
    resume(out, steps=256, eval_freq=0, checkpoint_freq=0)
    both = pd.read_csv(out / "progress.csv")
    steps = both["time/total_timesteps"].tolist()
    assert steps[: len(first)] == first["time/total_timesteps"].tolist()
    assert len(both) > len(first) and steps == sorted(steps) and steps[-1] == 512
    assert list(both.columns) == sorted(both.columns)


def test_a_run_resumed_from_a_checkpoint_logs_the_steps_it_trains_again_once(tmp_path):
    """The killed session's rows after its checkpoint stayed beside the same steps trained
    again: 128, 256, 256, 384."""
    from agents.training import resume

    out = tmp_path / "run"
    tiny_train(out, checkpoint_freq=128)
    (out / "model.zip").unlink()
    (out / "vecnormalize.pkl").unlink()
    for late in (out / "checkpoints").glob("*_256_steps*"):
        late.unlink()
    resume(out, steps=256, eval_freq=0, checkpoint_freq=0)
    steps = pd.read_csv(out / "progress.csv")["time/total_timesteps"].tolist()
    assert steps == sorted(set(steps)) and steps[0] == 128 and steps[-1] == 384


def test_progress_csv_columns_are_added_in_sorted_order(tmp_path):
    """stable-baselines3 adds new columns in set order (string hashing): runs differed."""
    from stable_baselines3.common.logger import configure

    from agents.training import _in_sorted_columns

    logger = _in_sorted_columns(configure(str(tmp_path), ["csv"]))
    for names in (["time/fps", "eval/margin", "rollout/ep_len_mean"], ["b/x", "a/y"]):
        for name in names:
            logger.record(name, 1)
        logger.dump(step=0)
    logger.close()
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    assert header == ["eval/margin", "rollout/ep_len_mean", "time/fps", "a/y", "b/x"]


def test_settings_the_checks_cannot_judge_fail_as_a_value_error_naming_them(tmp_path):
    """A keyword argument the algorithm's constructor refuses was a raw TypeError (exit 1)."""
    out = tmp_path / "run"
    hyperparams = {**TINY_HYPERPARAMS["maskable-ppo"], "rollout_buffer_kwargs": {"x": 1}}
    with pytest.raises(ValueError, match=r"do not make a maskable-ppo model .*rollout_buffer"):
        tiny_train(out, hyperparams={**hyperparams, "imitation": None})
    assert not out.exists()
