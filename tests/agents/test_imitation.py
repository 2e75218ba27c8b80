"""Warm start by behaviour cloning: settings, demonstrations, cloning and its use in training."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from agents.hyperparams import resolve_hyperparams
from agents.imitation import (
    Imitation,
    clone_into,
    collect_demonstrations,
    discounted_returns,
)
from agents.policy import AgentPolicy
from agents.runs import load_run_config
from agents.training import train
from baselines import make_policy
from tests.agents.conftest import TINY_ENVS, TINY_HYPERPARAMS, tiny_train

CONTINUOUS = "llmsched/ContinuousBatching-v0"
BATCH = "llmsched/BatchScheduling-v0"


def test_continuous_recipe_warm_starts_from_the_best_baseline_and_batch_does_not():
    assert resolve_hyperparams(CONTINUOUS, "maskable-ppo")["imitation"] == Imitation().to_dict()
    assert resolve_hyperparams(BATCH, "maskable-ppo")["imitation"] is None
    assert resolve_hyperparams(CONTINUOUS, "ppo")["imitation"] is None


@pytest.mark.parametrize("off", [None, False, "none"])
def test_imitation_can_be_turned_off(off):
    assert resolve_hyperparams(CONTINUOUS, "maskable-ppo", {"imitation": off})["imitation"] is None


def test_a_name_or_fields_merge_over_the_recipe():
    named = resolve_hyperparams(CONTINUOUS, "maskable-ppo", {"imitation": "sarathi"})["imitation"]
    assert named == {**Imitation().to_dict(), "baseline": "sarathi"}
    fields = resolve_hyperparams(BATCH, "maskable-ppo", {"imitation": {"steps": 100}})
    assert fields["imitation"] == {**Imitation().to_dict(), "steps": 100}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (5, "imitation must be null, a baseline name, a list of names or a mapping"),
        ({"stepz": 1}, r"unknown settings \['stepz'\]"),
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"entropy_coef": -1.0}, "entropy_coef must be"),
        ({"baseline": ""}, "baseline must be a baseline name"),
        ({"baseline": "best", "baseline_kwargs": {"a": 1}}, "need a named baseline, not 'best'"),
        ({"baseline": "hybrid", "baseline_kwargs": [1]}, "baseline_kwargs must be null or a"),
        ({"baseline": ["hybrid"]}, r"two or more distinct baseline names.*got \['hybrid'\]"),
        ({"baseline": ["hybrid", "hybrid"]}, "two or more distinct"),
        ({"baseline": ["best", "hybrid"]}, "two or more distinct baseline names"),
        ({"baseline": ["hybrid", 3]}, "two or more distinct baseline names"),
        ({"baseline": {"hybrid": 1}}, "baseline must be a baseline name or a list of names"),
        ({"baseline": "hybrid", "choose_every": 4}, "chooses among several baselines"),
        ({"baseline": ["hybrid", "vllm"], "choose_every": 0}, "choose_every must be an integer"),
        (
            {"baseline": ["hybrid", "vllm"], "baseline_kwargs": {"a": 1}},
            r"need one named baseline, not \['hybrid', 'vllm'\]",
        ),
    ],
)
def test_bad_settings_are_named(value, match):
    with pytest.raises(ValueError, match=match):
        resolve_hyperparams(CONTINUOUS, "maskable-ppo", {"imitation": value})


def test_several_baselines_are_kept_in_order_and_stored_as_a_list():
    resolved = resolve_hyperparams(CONTINUOUS, "maskable-ppo", {"imitation": ["vllm", "hybrid"]})
    assert resolved["imitation"]["baseline"] == ["vllm", "hybrid"]  # plain JSON
    imitation = Imitation.from_setting(resolved["imitation"])
    assert imitation.baseline == ("vllm", "hybrid") and imitation.candidates == ("vllm", "hybrid")
    assert imitation.describe() == "best of vllm, hybrid (each episode)"
    assert Imitation(baseline="hybrid").candidates == ("hybrid",)


def test_naming_baselines_anew_drops_the_recipes_way_of_choosing():
    recipe = {"baseline": ["vllm", "hybrid"], "choose_every": 4}
    kept = Imitation.from_setting({"steps": 100}, defaults=recipe)
    assert kept.choose_every == 4 and kept.baseline == ("vllm", "hybrid")
    assert Imitation.from_setting("sarathi", defaults=recipe).choose_every is None
    assert Imitation.from_setting(["sarathi", "vllm"], defaults=recipe).choose_every is None


def test_algorithms_without_an_actor_critic_policy_refuse_imitation():
    with pytest.raises(ValueError, match="needs an actor-critic algorithm.*'dqn'"):
        resolve_hyperparams(CONTINUOUS, "dqn", {"imitation": "hybrid"})


def test_discounted_returns_stop_at_episode_ends():
    rewards = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    dones = np.array([[False, True], [True, False], [False, False]])
    np.testing.assert_allclose(
        discounted_returns(rewards, dones, 0.5), [[1.5, 2.0], [1.0, 3.0], [1.0, 2.0]]
    )


def _tiny_model(env: str, n_envs: int = 2):
    """A MaskablePPO model on the tiny env's training venv (VecNormalize over DummyVecEnv)."""
    from sb3_contrib import MaskablePPO

    from agents.envs import make_training_env
    from agents.training import build_policy_kwargs

    env_id = {"continuous": CONTINUOUS, "routing": "llmsched/Routing-v0"}[env]
    settings = resolve_hyperparams(env_id, "maskable-ppo", {"n_envs": n_envs})
    kwargs = dict(settings["algo_kwargs"])
    kwargs["policy_kwargs"] = build_policy_kwargs(kwargs["policy_kwargs"])
    venv = make_training_env(
        env_id, TINY_ENVS[env], flat_action=False, n_envs=n_envs, first_seed=1_000
    )
    return MaskablePPO("MlpPolicy", venv, seed=0, device="cpu", **kwargs), venv, env_id


@pytest.mark.parametrize(
    # hybrid is nearly one action per state kind; least-tokens compares two replicas' loads
    # (chance agreement about 1/2), which 2,000 decisions teach less exactly.
    ("env", "baseline", "least"),
    [("continuous", "hybrid", 0.97), ("routing", "least-tokens", 0.9)],
)
def test_cloned_policy_acts_as_the_baseline(env, baseline, least):
    model, venv, env_id = _tiny_model(env)
    demos = collect_demonstrations(venv, baseline, 2_000)
    assert len(demos) == 2_000 and demos.action_masks.dtype == bool
    assert demos.dones.any()  # whole episodes, the policy reset between them
    report = clone_into(
        model, venv, demos, Imitation(epochs=20), baseline=baseline, gamma=0.99, seed=0
    )
    assert report.agreement >= least, report
    # On a fresh evaluation episode the deterministic policy mostly takes the baseline's action.
    from agents.algorithms import get_algo
    from agents.policy import LoadedAgent, ObsNormalizer
    from agents.runs import RunConfig

    config = RunConfig(
        env_id, dict(TINY_ENVS[env]), "maskable-ppo", {"flatten_action": False}, 0, [], []
    )
    agent = LoadedAgent(
        model, ObsNormalizer.from_vecnormalize(venv), get_algo("maskable-ppo"), config
    )
    plain = gym.make(env_id, **TINY_ENVS[env])
    cloned, teacher = AgentPolicy(plain, agent), make_policy(baseline, plain)
    obs, info = plain.reset(seed=10_000)
    same = total = 0
    while True:
        action = teacher.act(obs, info)
        same += bool(np.array_equal(cloned.act(obs, info), action))
        total += 1
        obs, _, terminated, truncated, info = plain.step(action)
        if terminated or truncated:
            break
    assert same / total >= least - 0.1, (same, total)


def test_demonstrations_follow_the_baseline_with_its_arguments():
    # length-split with every prompt long and one long replica sends everything to replica 0;
    # with its defaults (long: above the iteration budget) most prompts go to replica 1.
    _, venv, _ = _tiny_model("routing")
    tuned = collect_demonstrations(
        venv, "length-split", 400, {"threshold_tokens": 0, "long_replicas": 1}
    )
    default = collect_demonstrations(venv, "length-split", 400)
    spelled = collect_demonstrations(venv, "length-split(threshold_tokens=0,long_replicas=1)", 400)
    assert (spelled.actions == 0).mean() > 0.95
    assert (tuned.actions == 0).mean() > 0.95, np.bincount(tuned.actions.ravel())
    assert (default.actions == 0).mean() < 0.5, np.bincount(default.actions.ravel())


def _first_episodes(demos) -> list[tuple[float, np.ndarray]]:
    """Each env's first episode in ``demos``: its return and its actions."""
    episodes = []
    for i in range(demos.rewards.shape[1]):
        end = int(np.flatnonzero(demos.dones[:, i])[0]) + 1
        episodes.append((float(demos.rewards[:end, i].sum()), demos.actions[:end, i]))
    return episodes


#: Three heuristics whose returns differ on the overloaded env below.
CANDIDATES = ("static-fifo", "spf", "multibin-wc-viable")


def _overloaded_demonstrations(baseline, choose_every=None):
    """30 decisions of each of 4 envs, overloaded enough that the heuristics' returns differ
    (episodes of 9-21 decisions), normalised as in training."""
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.envs import make_training_env

    overloaded = {"workload": "burstgpt-synthetic", "load": 1.5, "n_requests": 120}
    venv = make_training_env(BATCH, overloaded, flat_action=False, n_envs=4, first_seed=3_000)
    assert isinstance(venv, VecNormalize)
    return collect_demonstrations(venv, baseline, 4 * 30, choose_every=choose_every)


@pytest.fixture(scope="module")
def alone() -> dict[str, list[tuple[float, np.ndarray]]]:
    """Each candidate's first episodes when it demonstrates alone (shared by the tests)."""
    return {name: _first_episodes(_overloaded_demonstrations(name)) for name in CANDIDATES}


def test_the_best_of_several_baselines_demonstrates_each_episode(alone):
    candidates = CANDIDATES
    chosen = _overloaded_demonstrations(list(candidates))
    assert sum(chosen.episodes.values()) == int(chosen.dones.sum()) + 4  # begun episodes
    for i, (total, actions) in enumerate(_first_episodes(chosen)):
        returns = [alone[name][i][0] for name in candidates]
        best = candidates[int(np.argmax(returns))]
        # The demonstrator's episode is exactly the one it plays alone: the trial runs on
        # copies left the env, its random state and the normalisation statistics untouched.
        assert total == max(returns), (i, returns, total)
        np.testing.assert_array_equal(actions, alone[best][i][1])
    winners = {candidates[int(np.argmax([alone[n][i][0] for n in candidates]))] for i in range(4)}
    assert len(winners) >= 2, winners  # the env seeds make the choice matter


def test_choosing_every_few_decisions_does_at_least_as_well_as_each_baseline(alone):
    # The rollout algorithm's property: on copies that hold the episode's future, a choice
    # never returns less than continuing with the baseline chosen before, so the episode's
    # return is at least the best baseline's alone.
    candidates = CANDIDATES
    chosen = _overloaded_demonstrations(list(candidates), choose_every=2)
    assert sum(chosen.decisions.values()) == len(chosen) == 4 * 30
    gains = []
    for i, (total, _) in enumerate(_first_episodes(chosen)):
        best_alone = max(alone[name][i][0] for name in candidates)
        assert total >= best_alone - 1e-9, (i, total, best_alone)
        gains.append(total - best_alone)
    assert max(gains) > 0, gains  # switching heuristics within an episode pays somewhere


def test_the_entropy_bonus_keeps_the_cloned_policy_exploring():
    reports = []
    for coef in (0.0, 0.6):
        model, venv, _ = _tiny_model("continuous")
        demos = collect_demonstrations(venv, "hybrid", 2_000)
        reports.append(
            clone_into(
                model,
                venv,
                demos,
                Imitation(epochs=20, entropy_coef=coef),
                baseline="hybrid",
                gamma=0.99,
                seed=0,
            )
        )
    plain, bonus = reports
    assert plain.agreement >= 0.97 and bonus.agreement >= 0.97
    assert bonus.entropy > plain.entropy + 0.5, (plain, bonus)
    assert plain.nll < bonus.nll


def test_training_records_the_warm_start_and_validates_the_cloned_model_first(tmp_path):
    result = tiny_train(tmp_path / "run", env="continuous", eval_freq=128, eval_episodes=2)
    session = load_run_config(result.run_dir).sessions[-1]
    cloning = session["imitation"]
    assert cloning["baseline"] == session["best_baseline"]  # "best" resolved on validation
    assert cloning["steps"] >= 128 and 0.0 <= cloning["agreement"] <= 1.0
    assert result.evaluations[0]["timesteps"] == 0


def test_same_seed_warm_started_runs_are_identical(tmp_path):
    runs = [tiny_train(tmp_path / f"run{i}", env="continuous", seed=2) for i in range(2)]
    params = [r.model.policy.state_dict() for r in runs]
    for key in params[0]:
        assert params[0][key].equal(params[1][key]), key


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vec_env": "subproc"}, "needs vec_env='dummy', got 'subproc'"),
        ({"hyperparams": {"imitation": "edf"}}, "imitation: baseline must be one of"),
        ({"hyperparams": {"imitation": "sarathi(x=1)"}}, r"does not take the arguments \{'x': 1\}"),
        (
            {"hyperparams": {"imitation": {"baseline": "sarathi", "baseline_kwargs": {"x": 1}}}},
            r"sarathi does not take the arguments \{'x': 1\}",
        ),
        ({"hyperparams": {"imitation": ["none", "sarathi"]}}, r"'none' \(no warm start\) stands"),
    ],
)
def test_imitation_refuses_what_it_cannot_do(tmp_path, kwargs, match):
    options = {"hyperparams": {**TINY_HYPERPARAMS["maskable-ppo"], "imitation": "hybrid"}}
    options.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train(
            "continuous",
            out=tmp_path / "run",
            steps=64,
            env_kwargs=TINY_ENVS["continuous"],
            **options,
        )


def test_a_mixture_scenario_refuses_the_best_baseline(tmp_path):
    with pytest.raises(ValueError, match="trains on a mixture of workloads; name the baseline"):
        train(
            "batch",
            out=tmp_path / "run",
            steps=64,
            scenario="batch-general",
            hyperparams={**TINY_HYPERPARAMS["maskable-ppo"], "imitation": "best"},
        )


def test_a_mixture_run_clones_the_named_baseline_on_its_components(tmp_path):
    result = tiny_train(
        tmp_path / "run",
        scenario="batch-general",
        env_kwargs={"n_requests": 60},
        hyperparams={
            **TINY_HYPERPARAMS["maskable-ppo"],
            "imitation": {"baseline": "multibin-wc-viable", "steps": 600, "epochs": 2},
        },
    )
    cloning = load_run_config(result.run_dir).sessions[-1]["imitation"]
    assert cloning["baseline"] == "multibin-wc-viable"
    assert cloning["steps"] >= 600 and 0.0 < cloning["agreement"] <= 1.0
    assert set(cloning["episodes"]) == {"multibin-wc-viable"}


def test_a_run_records_which_of_several_baselines_demonstrated(tmp_path):
    result = tiny_train(
        tmp_path / "run",
        scenario="batch-general",
        env_kwargs={"n_requests": 60},
        hyperparams={**TINY_HYPERPARAMS["maskable-ppo"], "imitation": {"steps": 600}},
    )
    config = load_run_config(result.run_dir)
    assert config.hyperparams["imitation"]["baseline"] == ["multibin-wc-viable", "spf"]
    cloning = config.sessions[-1]["imitation"]
    assert cloning["baseline"] == "best of multibin-wc-viable, spf (every 4 decisions)"
    assert set(cloning["decisions"]) == {"multibin-wc-viable", "spf"}
    assert sum(cloning["decisions"].values()) == cloning["steps"]
