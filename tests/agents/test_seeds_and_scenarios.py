import gymnasium as gym
import numpy as np
import pytest

from agents.scenarios import (
    BURSTY_CV,
    SCENARIO_WORKLOADS,
    SCENARIOS,
    build_env_kwargs,
    get_scenario,
    scenario_workload,
)
from agents.seeds import (
    EVAL_SEED_START,
    TRAIN_SEED_LIMIT,
    VALIDATION_SEED_START,
    evaluation_seeds,
    training_env_seeds,
    validation_seeds,
)


@pytest.mark.parametrize("n_envs", [1, 2, 4, 8, 16])
def test_training_seeds_of_different_runs_are_disjoint_and_below_the_limit(n_envs):
    largest = TRAIN_SEED_LIMIT // n_envs - 1
    seen: set[int] = set()
    for seed in (0, 1, 2, largest):
        seeds = training_env_seeds(seed, n_envs)
        assert len(seeds) == n_envs and seen.isdisjoint(seeds)
        assert all(0 <= s < TRAIN_SEED_LIMIT for s in seeds)
        seen.update(seeds)
    with pytest.raises(ValueError, match=rf"seed must be an integer in \[0, {largest}\]"):
        training_env_seeds(largest + 1, n_envs)


def test_seed_ranges_do_not_overlap():
    assert TRAIN_SEED_LIMIT <= VALIDATION_SEED_START < EVAL_SEED_START
    validation = validation_seeds(1000)
    assert validation[0] == VALIDATION_SEED_START and validation[-1] < EVAL_SEED_START
    assert evaluation_seeds() == list(range(10_000, 10_020))
    with pytest.raises(ValueError, match="first must be an integer >= 10000"):
        evaluation_seeds(5, first=9_999)
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 1000\]"):
        validation_seeds(1001)
    with pytest.raises(ValueError, match=r"n_envs must be an integer in \[1, 9000\]"):
        training_env_seeds(0, 0)


def test_scenarios_cover_defaults_bursty_and_multi_gpu():
    assert dict(get_scenario("batch-default").env_kwargs) == {}
    assert dict(get_scenario("continuous-default").env_kwargs) == {}
    assert any(s.env_kwargs.get("n_gpus", 1) > 2 for s in SCENARIOS.values())
    bursty = [s for s in SCENARIOS.values() if s.env_kwargs.get("workload") in SCENARIO_WORKLOADS]
    assert {s.env for s in bursty} >= {"batch"}
    # Budgets that train in minutes on 2 cores; a training mixture gets twice a workload's.
    batch = [s for s in SCENARIOS.values() if s.env == "batch"]
    assert all(s.train_steps <= (1_000_000 if s.training else 500_000) for s in batch)
    with pytest.raises(ValueError, match="Did you mean 'batch-bursty'"):
        get_scenario("batch-burst")


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_builds_its_env(name):
    scenario = get_scenario(name)
    kwargs = scenario.make_env_kwargs()
    kwargs["n_requests"] = 50
    env = gym.make(scenario.env_id, **kwargs)
    obs, _ = env.reset(seed=EVAL_SEED_START)
    assert env.observation_space.contains(obs)


def test_bursty_workload_has_gamma_gaps_with_the_documented_cv():
    source = scenario_workload("azure-conv-bursty")
    workload = source.sample(200_000, np.random.default_rng(0))
    gaps = np.diff(workload.arrival_s)
    assert gaps.std() / gaps.mean() == pytest.approx(BURSTY_CV, rel=0.05)
    assert BURSTY_CV >= 3
    assert scenario_workload("azure-conv-bursty") is source  # built once


def test_build_env_kwargs_replaces_only_scenario_workloads():
    assert build_env_kwargs({"workload": "demo2", "load": 1.2}) == {
        "workload": "demo2",
        "load": 1.2,
    }
    built = build_env_kwargs({"workload": "azure-conv-bursty"})
    assert built["workload"] is scenario_workload("azure-conv-bursty")


def test_general_scenario_holds_out_its_evaluation_workloads():
    from agents.length_mixes import LENGTH_MIX_NAMES
    from agents.scenarios import GENERAL_HELD_OUT, GENERAL_TRAINING, HELD_OUT_WORKLOADS

    general = get_scenario("batch-general")
    assert general.training == GENERAL_TRAINING
    trained_on = {c["workload"] for c in GENERAL_TRAINING["components"]}
    traces = {"azure-conv", "burstgpt-synthetic", "mooncake-conversation"}
    assert trained_on == traces | set(LENGTH_MIX_NAMES)
    assert not trained_on & set(HELD_OUT_WORKLOADS)
    assert len(GENERAL_HELD_OUT) == 6
    spaces = gym.make(general.env_id, **general.make_env_kwargs())
    for name in GENERAL_HELD_OUT:
        held_out = get_scenario(name)
        assert held_out.training is None
        assert held_out.env_kwargs["workload"] not in trained_on
        env = gym.make(held_out.env_id, **held_out.make_env_kwargs())
        assert env.observation_space == spaces.observation_space
        assert env.action_space == spaces.action_space


def test_a_training_mixture_needs_the_batch_env():
    from agents.scenarios import Scenario

    with pytest.raises(ValueError, match="env must be 'batch', got 'continuous'"):
        Scenario("x", "continuous", training={"components": [{}]})


@pytest.mark.parametrize(
    ("name", "tuned"),
    [
        ("routing-prefix-sharing", {"threshold_tokens": 1024, "long_replicas": 2}),
        ("routing-mooncake", {"threshold_tokens": 5000, "long_replicas": 3}),
    ],
)
def test_routing_scenarios_warm_start_maskable_ppo_from_the_tuned_length_split(name, tuned):
    from agents.hyperparams import resolve_hyperparams
    from agents.imitation import Imitation

    scenario = get_scenario(name)
    base = scenario.hyperparams["maskable-ppo"]
    imitation = Imitation.from_setting(
        resolve_hyperparams(scenario.env_id, "maskable-ppo", base=base)["imitation"]
    )
    assert imitation.baseline == "length-split" and imitation.entropy_coef == 0.1
    assert dict(imitation.baseline_kwargs) == tuned
    imitation.check_baseline("routing", gym.make(scenario.env_id, **scenario.make_env_kwargs()))
    assert "dqn" not in scenario.hyperparams  # other algorithms keep their recipes
    # With too few replicas for its long ones, the warm start is named as the fault.
    two = gym.make(scenario.env_id, **(scenario.make_env_kwargs() | {"n_replicas": 2}))
    with pytest.raises(ValueError, match=r"^imitation: the warm start's baseline 'length-split'"):
        imitation.check_baseline("routing", two)


def test_the_general_scenario_warm_starts_from_the_better_of_two_heuristics_on_its_mixture():
    from agents.envs import make_mixture_env
    from agents.hyperparams import resolve_hyperparams
    from agents.imitation import Imitation
    from baselines import make_policy
    from baselines.mixture import PerComponentPolicy

    scenario = get_scenario("batch-general")
    base = scenario.hyperparams["maskable-ppo"]
    resolved = resolve_hyperparams(scenario.env_id, "maskable-ppo", base=base)
    imitation = Imitation.from_setting(resolved["imitation"])
    assert imitation.baseline == ("multibin-wc-viable", "spf") and imitation.choose_every == 4
    assert imitation.baseline_kwargs is None
    assert resolved["normalize_obs"] is False and resolved["normalize_reward"] is True
    mixture = make_mixture_env(scenario.training, {"n_requests": 40})
    for baseline in imitation.candidates:
        demonstrator = make_policy(baseline, mixture)
        assert isinstance(demonstrator, PerComponentPolicy)
        assert len(demonstrator.policies) == len(scenario.training["components"])
    assert "ppo" not in scenario.hyperparams  # other algorithms keep their recipes
