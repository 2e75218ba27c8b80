import pytest

from agents.algorithms import ALGOS
from agents.hyperparams import default_hyperparams, resolve_hyperparams
from llmsched_env.kinds import ENV_KINDS

ENV_IDS = sorted(kind.env_id for kind in ENV_KINDS.values() if kind.hyperparams)


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_every_env_and_algo_has_defaults_the_algorithm_accepts(env_id, algo):
    settings = resolve_hyperparams(env_id, algo)
    assert settings["n_envs"] >= 1
    # Routing-v0's action is already Discrete: nothing to flatten, whatever the algorithm.
    discrete = ENV_KINDS["routing"].env_id == env_id
    assert settings["flatten_action"] == (ALGOS[algo].flat_action and not discrete)
    assert "policy_kwargs" in settings["algo_kwargs"]
    resolve_hyperparams(env_id, algo, settings["algo_kwargs"])  # every default key is accepted


def test_batch_training_ends_settled_episodes_by_default():
    for algo in sorted(ALGOS):
        assert resolve_hyperparams("llmsched/BatchScheduling-v0", algo)["end_when_settled"]
        assert not resolve_hyperparams("llmsched/ContinuousBatching-v0", algo)["end_when_settled"]
    off = resolve_hyperparams("llmsched/BatchScheduling-v0", "ppo", {"end_when_settled": False})
    assert off["end_when_settled"] is False


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("algo", ["maskable-ppo", "ppo"])
def test_ppo_minibatches_divide_the_rollout(env_id, algo):
    settings = resolve_hyperparams(env_id, algo)
    rollout = settings["n_envs"] * settings["algo_kwargs"]["n_steps"]
    batch = settings["algo_kwargs"]["batch_size"]
    assert rollout % batch == 0
    # BatchScheduling-v0 updates on minibatches of 512 (docs/results.md), the others on 256.
    assert batch == (512 if env_id == "llmsched/BatchScheduling-v0" else 256)


def test_overrides_merge_over_defaults_without_mutating_them():
    env_id = "llmsched/BatchScheduling-v0"
    before = dict(default_hyperparams(env_id, "maskable-ppo").algo_kwargs)
    settings = resolve_hyperparams(
        env_id, "maskable-ppo", {"gamma": 0.9, "policy_kwargs": {"net_arch": [32]}}
    )
    assert settings["algo_kwargs"]["gamma"] == 0.9
    assert settings["algo_kwargs"]["policy_kwargs"] == {"net_arch": [32], "activation_fn": "tanh"}
    assert dict(default_hyperparams(env_id, "maskable-ppo").algo_kwargs) == before


@pytest.mark.parametrize(
    ("algo", "overrides", "match"),
    [
        ("maskable-ppo", {"n_step": 8}, r"unknown hyperparameter 'n_step'.*'n_steps'"),
        ("maskable-ppo", {"seed": 1}, "unknown hyperparameter 'seed'"),
        ("ppo", {"n_envs": 0}, "n_envs must be an integer >= 1, got 0"),
        ("ppo", {"normalize_obs": "yes"}, "normalize_obs must be True or False"),
        ("ppo", {"end_when_settled": 1}, "end_when_settled must be True or False, got 1"),
        ("dqn", {"flatten_action": False}, "flatten_action must be true for algo 'dqn'"),
        ("a2c", {"policy_kwargs": {"activation_fn": "gelu"}}, "activation_fn must be one of"),
        ("sac", {}, "unknown algorithm 'sac'"),
        ("ppo", {"learning_rate": "lin_x"}, r"learning_rate must be .*got 'lin_x'"),
        ("ppo", {"clip_range": "exp_0.2"}, r"clip_range must be .*got 'exp_0.2'"),
        ("ppo", {"learning_rate": "lin_-1"}, r"learning_rate must be .*got 'lin_-1'"),
        ("maskable-ppo", {"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ("maskable-ppo", {"n_steps": 0}, r"n_steps must be an integer >= 1, got 0"),
        ("maskable-ppo", {"n_epochs": 2.5}, r"n_epochs must be an integer >= 1, got 2.5"),
        ("maskable-ppo", {"gamma": 5}, r"gamma must be .*\[0(\.0)?, 1(\.0)?\].*got 5"),
        ("maskable-ppo", {"ent_coef": "abc"}, r"ent_coef must be .*got 'abc'"),
        ("ppo", {"learning_rate": -1}, r"learning_rate must be .*> 0.*got -1"),
        ("dqn", {"exploration_final_eps": 2.0}, r"exploration_final_eps must be"),
        ("ppo", {"policy_kwargs": {"net_arch": "x"}}, r"net_arch must be a list of layer widths"),
        ("ppo", {"policy_kwargs": {"net_arch": {"pi": [0]}}}, r"net_arch must be a list"),
        # Accepted once, each training wrongly or failing mid-way with a traceback:
        ("maskable-ppo", {"target_kl": -1}, r"target_kl must be .*> 0.*got -1"),
        ("maskable-ppo", {"target_kl": 0}, r"target_kl must be .*> 0.*got 0"),
        ("ppo", {"normalize_advantage": "no"}, r"normalize_advantage must be True or False"),
        ("ppo", {"learning_rate": "lin_inf"}, r"learning_rate must be .*got 'lin_inf'"),
        ("ppo", {"clip_range": "lin_1e999"}, r"clip_range must be .*got 'lin_1e999'"),
        ("ppo", {"clip_range_vf": "abc"}, r"clip_range_vf must be .*got 'abc'"),
        ("ppo", {"clip_range_vf": -1}, r"clip_range_vf must be .*got -1"),
        ("ppo", {"rollout_buffer_class": "foo"}, r"'rollout_buffer_class' is a class"),
        ("ppo", {"rollout_buffer_kwargs": 3}, r"'rollout_buffer_kwargs' must be a mapping"),
        ("maskable-ppo", {"policy_kwargs": {"foo": 1}}, r"unknown policy_kwargs key 'foo'"),
        ("ppo", {"policy_kwargs": {"activation_fn": None}}, "activation_fn must be one of"),
        ("ppo", {"policy_kwargs": {"optimizer_class": "adam"}}, r"optimizer_class' is a class"),
        ("ppo", {"policy_kwargs": {"ortho_init": "no"}}, r"ortho_init must be True or False"),
        ("maskable-ppo", {"n_steps": 1, "n_envs": 1}, r"n_steps \* n_envs must be at least 2"),
        ("dqn", {"train_freq": 0}, r"train_freq must be an integer >= 1 .*got 0"),
        ("dqn", {"train_freq": [1, "episode"]}, r"train_freq must be an integer >= 1"),
    ],
)
def test_bad_overrides_raise_value_error(algo, overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_hyperparams("llmsched/BatchScheduling-v0", algo, overrides)


def test_flattening_a_discrete_action_is_refused():
    with pytest.raises(ValueError, match="flatten_action must be false on llmsched/Routing-v0"):
        resolve_hyperparams("llmsched/Routing-v0", "ppo", {"flatten_action": True})


def test_unknown_env_id_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown env id 'llmsched/Batch-v0'"):
        default_hyperparams("llmsched/Batch-v0", "ppo")


ROUTING = "llmsched/Routing-v0"
WARM = {"imitation": {"baseline": "length-split", "baseline_kwargs": {"long_replicas": 2}}}


def test_a_base_applies_before_the_overrides_and_imitation_fields_merge_over_it():
    based = resolve_hyperparams(ROUTING, "maskable-ppo", base=WARM)
    assert based["imitation"]["baseline"] == "length-split"
    assert based["imitation"]["baseline_kwargs"] == {"long_replicas": 2}
    steps = resolve_hyperparams(ROUTING, "maskable-ppo", {"imitation": {"steps": 10}}, base=WARM)
    assert steps["imitation"] == {**based["imitation"], "steps": 10}
    off = resolve_hyperparams(ROUTING, "maskable-ppo", {"imitation": None}, base=WARM)
    assert off["imitation"] is None
    # Another baseline does not inherit the base's arguments.
    other = resolve_hyperparams(ROUTING, "maskable-ppo", {"imitation": "min-ttft"}, base=WARM)
    assert (other["imitation"]["baseline"], other["imitation"]["baseline_kwargs"]) == (
        "min-ttft",
        None,
    )
    assert (
        resolve_hyperparams(ROUTING, "maskable-ppo")["imitation"] is None
    )  # no base, no warm start


def test_null_turns_off_the_keywords_that_take_it():
    h = resolve_hyperparams(
        "llmsched/BatchScheduling-v0", "ppo", {"target_kl": None, "clip_range_vf": "lin_0.2"}
    )
    assert h["algo_kwargs"]["target_kl"] is None and h["algo_kwargs"]["clip_range_vf"] == "lin_0.2"
