"""Checks run on every registered environment id, with defaults and non-default configurations."""

from __future__ import annotations

import json
import pickle
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.utils.env_match import check_environments_match

import llmsched_env

BATCH = "llmsched/BatchScheduling-v0"
CONTINUOUS = "llmsched/ContinuousBatching-v0"

#: (env id, kwargs) pairs: the defaults (with a short episode) and non-default configurations.
CONFIGS = [
    (BATCH, {"n_requests": 120}),
    (BATCH, {"workload": "burstgpt-synthetic", "n_gpus": 1, "load": 0.7, "n_requests": 80}),
    (
        BATCH,
        {
            "workload": "demo2",
            "arrival_rate": 3.0,
            "latency": "calibrated",
            "kv_memory": "reference-sim",
            "n_bins": 8,
            "max_batch_size": 24,
            "reward": "queue",
            "n_requests": 80,
        },
    ),
    (BATCH, {"workload": "uniform", "n_gpus": 3, "bin_edges": (500.0, 1500.0), "n_bins": 3,
             "latency": "multibin-uniform", "reward": "goodput-tokens", "n_requests": 150}),
    (BATCH, {"load": 2.0, "sla": 4.0, "dispatch_order": "oldest-in-time", "n_requests": 200}),
    (CONTINUOUS, {"n_requests": 60}),
    (CONTINUOUS, {"workload": "demo2", "latency": "demo2", "arrival_rate": 4.0, "chunk_size": None,
                  "max_sequences": 64, "n_requests": 60}),
    (CONTINUOUS, {"workload": "demo3", "latency": "demo3", "load": 0.9, "chunk_size": 64,
                  "n_gpus": 2, "decode_levels": 3, "prefill_levels": 9, "reward": "queue",
                  "n_requests": 60}),
    (CONTINUOUS, {"workload": "sim-a", "latency": "sim-a", "arrival_rate": 2.0,
                  "prompt_caps": (1, 4), "n_requests": 40}),
    (CONTINUOUS, {"workload": "demo2", "latency": "demo2", "arrival_rate": 6.0, "kv_memory": 900,
                  "kv_allocation": "paged", "kv_block_tokens": 16, "chunk_size": 128,
                  "n_requests": 60}),
]  # fmt: skip
IDS = [f"{env_id.split('/')[1]}-{i}" for i, (env_id, _) in enumerate(CONFIGS)]


def masked_random_action(env: gym.Env, rng: np.random.Generator) -> np.ndarray:
    mask = env.unwrapped.action_masks()
    action, offset = [], 0
    for n in env.action_space.nvec:
        allowed = np.flatnonzero(mask[offset : offset + n])
        action.append(rng.choice(allowed))
        offset += n
    return np.array(action)


def rollout(env: gym.Env, seed: int, policy_seed: int = 0, max_steps: int = 100_000):
    rng = np.random.default_rng(policy_seed)
    obs, info = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], [info]
    for _ in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(masked_random_action(env, rng))
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            break
    return observations, rewards, infos, terminated, truncated


def test_every_id_is_registered_and_listed():
    assert set(llmsched_env.ENV_IDS) == {BATCH, CONTINUOUS, "llmsched/Routing-v0"}
    for env_id in llmsched_env.ENV_IDS:
        assert env_id in gym.registry


@pytest.mark.parametrize(("env_id", "kwargs"), CONFIGS, ids=IDS)
def test_gymnasium_env_checker_passes_without_warnings(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=False)


@pytest.mark.parametrize(("env_id", "kwargs"), CONFIGS, ids=IDS)
def test_stable_baselines3_env_checker_passes(env_id, kwargs):
    sb3_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    env = gym.make(env_id, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_checker.check_env(env.unwrapped, warn=True)


@pytest.mark.parametrize(("env_id", "kwargs"), CONFIGS, ids=IDS)
def test_same_seed_gives_the_same_episode_bit_for_bit(env_id, kwargs):
    env_a, env_b = gym.make(env_id, **kwargs), gym.make(env_id, **kwargs)
    obs_a, rew_a, info_a, *_ = rollout(env_a, seed=5)
    obs_b, rew_b, info_b, *_ = rollout(env_b, seed=5)
    assert len(obs_a) == len(obs_b)
    assert all(np.array_equal(a, b) for a, b in zip(obs_a, obs_b))
    assert rew_a == rew_b
    np.testing.assert_equal(info_a[-1]["episode_metrics"], info_b[-1]["episode_metrics"])
    check_environments_match(
        env_a, env_b, num_steps=15, seed=3, skip_render=True, info_comparison="keys-equivalence"
    )
    obs_c, *_ = rollout(gym.make(env_id, **kwargs), seed=6)
    assert len(obs_c) != len(obs_a) or not all(np.array_equal(a, c) for a, c in zip(obs_a, obs_c))


@pytest.mark.parametrize(("env_id", "kwargs"), CONFIGS, ids=IDS)
def test_return_equals_the_objective_from_episode_metrics(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    _, rewards, infos, terminated, _ = rollout(env, seed=1)
    assert terminated
    metrics = infos[-1]["episode_metrics"]
    unwrapped = env.unwrapped
    server = unwrapped.server
    assert metrics["completed"] + metrics["rejected"] == metrics["requests"]
    shape = unwrapped.config.reward
    penalty = unwrapped.config.sla_penalty
    if shape == "sla":
        on_time = metrics["sla_attainment"] * metrics["arrived"]
        assert sum(rewards) == pytest.approx(on_time - penalty * server.sla_misses)
        if env_id == BATCH:
            late = metrics["arrived"] - on_time
            assert server.sla_misses == pytest.approx(late)
            assert sum(rewards) == pytest.approx(on_time - penalty * late)
    elif shape == "queue":
        total_time = server.records.completion_s - server.workload.arrival_s
        done = server.records.completed
        scale = unwrapped.config.sla if env_id == BATCH else unwrapped.config.ttft_sla
        assert sum(rewards) == pytest.approx(-np.sum(total_time[done]) / scale)
    else:
        done = server.records.completed
        latency = server.records.completion_s - server.workload.arrival_s
        on_time = done & (latency <= unwrapped.config.sla)
        tokens = server.workload.output_tokens[on_time].sum()
        assert sum(rewards) == pytest.approx(tokens / 1000)


def test_continuous_return_counts_ttft_and_tbt_misses():
    env = gym.make(CONTINUOUS, workload="demo2", latency="demo2", arrival_rate=6.0, n_requests=80,
                   ttft_sla=0.3, tbt_sla=0.05, sla_penalty=0.5)  # fmt: skip
    _, rewards, infos, terminated, _ = rollout(env, seed=2)
    assert terminated
    metrics = infos[-1]["episode_metrics"]
    ttft_missed = metrics["arrived"] * (1 - metrics["sla_attainment_ttft"])
    tbt_missed = metrics["arrived"] * (1 - metrics["sla_attainment_tbt"])
    on_time = metrics["arrived"] * metrics["sla_attainment"]
    # A request misses TBT in the metrics if it was never served on time; the reward counts each
    # target once per request, so the objective is on_time - penalty * (TTFT + TBT misses).
    server = env.unwrapped.server
    assert server.n_ttft_misses == pytest.approx(ttft_missed)
    assert server.n_tbt_misses <= tbt_missed + 1e-9
    assert sum(rewards) == pytest.approx(
        on_time - 0.5 * (server.n_ttft_misses + server.n_tbt_misses)
    )
    assert server.n_ttft_misses > 0 and server.n_tbt_misses > 0  # the check is not vacuous


@pytest.mark.parametrize(
    ("env_id", "kwargs", "per_token"),
    [
        (CONTINUOUS, {"latency": "demo2", "arrival_rate": 6.0}, 5e-4),
        ("llmsched/Routing-v0", {"n_replicas": 2, "load": 0.9}, 2e-4),
    ],
)
def test_ttft_target_per_prompt_token_in_reward_and_metrics(env_id, kwargs, per_token):
    """Each request's TTFT target is ttft_sla plus ttft_sla_per_token per prompt token, in the
    reward's miss count and in the episode's attainment alike."""
    env = gym.make(env_id, workload="demo2", n_requests=80, ttft_sla=0.05,
                   ttft_sla_per_token=per_token, tbt_sla=10.0, **kwargs)  # fmt: skip
    _, info = env.reset(seed=4)
    assert info["ttft_sla_per_token_s"] == per_token
    rng = np.random.default_rng(0)
    rewards, terminated, truncated = [], False, False
    while not (terminated or truncated):  # random valid actions, whatever the action space
        mask = np.asarray(env.unwrapped.action_masks())
        space = env.action_space
        nvec = space.nvec if hasattr(space, "nvec") else [space.n]
        action, offset = [], 0
        for n in nvec:
            action.append(rng.choice(np.flatnonzero(mask[offset : offset + n])))
            offset += n
        chosen = np.array(action) if len(action) > 1 else int(action[0])
        _, reward, terminated, truncated, info = env.step(chosen)
        rewards.append(reward)
    assert terminated
    records = env.unwrapped.request_records()
    target = 0.05 + per_token * records["prompt_tokens"].to_numpy()
    ttft = (records["first_token_s"] - records["arrival_s"]).to_numpy()
    met = (records["status"] == "completed").to_numpy() & (ttft <= target)
    metrics = info["episode_metrics"]
    assert metrics["sla_attainment_ttft"] == pytest.approx(met.mean())
    assert sum(rewards) == pytest.approx(met.sum() - (len(met) - met.sum()))  # no TBT misses
    fixed_met = (records["status"] == "completed").to_numpy() & (ttft <= 0.05)
    assert 0 < fixed_met.sum() < met.sum() < len(met)  # the per-token part decides some requests


@pytest.mark.parametrize("env_id", [CONTINUOUS, "llmsched/Routing-v0"])
@pytest.mark.parametrize("value", [-1e-4, float("inf"), "0.001"])
def test_ttft_sla_per_token_refuses_a_bad_value(env_id, value):
    with pytest.raises((ValueError, TypeError), match=r"ttft_sla_per_token must be"):
        gym.make(env_id, ttft_sla_per_token=value)


@pytest.mark.parametrize(("env_id", "kwargs"), CONFIGS, ids=IDS)
def test_every_allowed_action_is_accepted_and_every_forbidden_one_flagged(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    nvec = env.action_space.nvec
    checked_forbidden = 0
    for _ in range(60):
        unwrapped = env.unwrapped
        joint = unwrapped.joint_action_mask()
        mask = unwrapped.action_masks()
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        for index in np.ndindex(*nvec):
            allowed = all(mask[o + v] for o, v in zip(offsets, index))
            if joint[index]:
                assert allowed, index  # the exact mask never allows what the components forbid
            if not allowed:
                probe = pickle.loads(pickle.dumps(unwrapped))
                *_, info = probe.step(np.array(index))
                assert info["invalid_action"], index
                checked_forbidden += 1
        allowed_actions = np.argwhere(joint)
        action = allowed_actions[rng.integers(len(allowed_actions))]
        *_, terminated, truncated, info = env.step(action)
        assert not info["invalid_action"]
        if terminated or truncated:
            break
    assert checked_forbidden > 0


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
def test_forbidden_action_raises_when_asked(env_id):
    env = gym.make(env_id, n_requests=30, invalid_action="raise")
    env.reset(seed=0)
    mask = env.unwrapped.action_masks()
    forbidden = np.zeros(len(env.action_space.nvec), dtype=np.int64)
    nvec = env.action_space.nvec
    # Find a forbidden value of some component.
    offset = 0
    for i, n in enumerate(nvec):
        bad = np.flatnonzero(~mask[offset : offset + n])
        if bad.size:
            forbidden[i] = bad[0]
            break
        offset += n
    else:
        pytest.fail("no forbidden action at the first decision")
    with pytest.raises(llmsched_env.envs.InvalidActionError, match="forbidden by the mask"):
        env.step(forbidden)


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
@pytest.mark.parametrize(
    ("action", "message"),
    [
        ([99, 0, 0], "outside the action space: component 0"),
        ([-1, 0, 0], "outside the action space: component 0"),
        ([10**30, 0, 0], "outside the action space: component 0 must be in [0, 4], got 1000"),
        ([0.5, 0, 0], "must hold integers, got dtype float64"),
        ([np.inf, 0, 0], "must hold integers, got dtype float64"),
        ("wait", "must have shape"),
        ([[0, 0, 0]], "must have shape"),
    ],
    ids=str,
)
def test_action_outside_the_space_always_raises(env_id, action, message):
    env = gym.make(env_id, n_requests=30)
    env.reset(seed=0)
    if env_id == BATCH and isinstance(action, list) and len(action) == 3:
        action = action[:2]
    with pytest.raises(ValueError, match=re.escape(message)):
        env.step(action)


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
def test_always_waiting_never_deadlocks(env_id):
    """A policy that waits whenever allowed still ends every episode (WAIT masked at the end)."""
    env = gym.make(env_id, workload="demo2", arrival_rate=3.0, n_requests=40)
    env.reset(seed=0)
    wait = np.zeros(len(env.action_space.nvec), dtype=np.int64)
    for _ in range(100_000):
        joint = env.unwrapped.joint_action_mask()
        action = wait if joint[tuple(wait)] else np.argwhere(joint)[-1]
        *_, terminated, truncated, info = env.step(action)
        assert not info["invalid_action"]
        if terminated:
            break
    assert terminated
    assert info["episode_metrics"]["completed"] == 40


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
def test_truncation_keeps_the_accounting(env_id):
    env = gym.make(env_id, n_requests=200, max_steps=10)
    _, rewards, infos, terminated, truncated = rollout(env, seed=0)
    assert truncated and not terminated and len(rewards) == 10
    m = infos[-1]["episode_metrics"]
    assert m["completed"] + m["rejected"] + m["in_system"] + m["not_arrived"] == 200
    assert m["in_system"] + m["not_arrived"] > 0


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
def test_a_truncated_episode_is_over_like_a_terminated_one(env_id):
    # The server stops at a decision, but the episode is over: no GPU decides, WAIT only.
    env = gym.make(env_id, n_requests=200, max_steps=10)
    _, _, infos, _, truncated = rollout(env, seed=0)
    assert truncated and infos[-1]["gpu"] == -1
    joint = env.unwrapped.joint_action_mask()
    assert joint.sum() == 1 and joint.flat[0]  # WAIT (every component at level 0)
    mask = env.unwrapped.action_masks()
    np.testing.assert_array_equal(infos[-1]["action_mask"], mask)
    n_first = env.action_space.nvec[0]
    assert mask[0] and not mask[1:n_first].any()  # component 0: its level 0 alone


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
def test_reset_options_replay_a_chosen_window(env_id):
    env = gym.make(env_id, n_requests=50)
    env.reset(seed=1, options={"start": 100})
    first = env.unwrapped.server.workload
    env.reset(seed=2, options={"start": 100})
    second = env.unwrapped.server.workload
    np.testing.assert_array_equal(first.prompt_tokens, second.prompt_tokens)
    np.testing.assert_array_equal(first.arrival_s, second.arrival_s)
    env.reset(seed=3, options={"workload": first})
    assert env.unwrapped.server.workload is first
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(seed=0, options={"strat": 1})


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
def test_obs_names_match_the_space_and_the_docstring(env_id):
    env = gym.make(env_id)
    unwrapped = env.unwrapped
    assert len(unwrapped.obs_names) == env.observation_space.shape[0]
    assert len(set(unwrapped.obs_names)) == len(unwrapped.obs_names)
    doc = type(unwrapped).__doc__
    documented = set(re.findall(r"^\s*\| ([a-z_/{}]+) \|", doc, flags=re.MULTILINE))
    for name in unwrapped.obs_names:
        base = re.sub(r"^(bin|gpu)\d+/", "", name)
        base = base.removeprefix("gpu/")
        assert any(base == d.split("/")[-1] for d in documented), name
    for section in (
        "Description",
        "Action Space",
        "Observation Space",
        "Rewards",
        "Starting State",
        "Episode End",
        "Information",
        "Arguments",
        "Version History",
    ):
        assert f"## {section}" in doc  # fmt: skip


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
def test_observations_stay_inside_the_box(env_id):
    env = gym.make(env_id, load=1.5, n_requests=150)
    observations, *_ = rollout(env, seed=0)
    space = env.observation_space
    for obs in observations:
        assert space.contains(obs)


@pytest.mark.filterwarnings("ignore:.*not in the possible render_modes:UserWarning")
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_gpus": 0}, "n_gpus must be an integer"),
        ({"n_gpus": 1.5}, "n_gpus must be an integer"),
        ({"load": -0.5}, "load must be a finite number > 0"),
        ({"load": 0.5, "arrival_rate": 2.0}, "exactly one of load"),
        ({"workload": "azure-conf"}, "Did you mean 'azure-conv'"),
        ({"latency": "nope"}, "unknown"),
        ({"reward": "slaa"}, "Did you mean 'sla'"),
        ({"n_requests": 0}, "n_requests must be an integer"),
        ({"sla_penalty": -1}, "sla_penalty must be a finite number >= 0"),
        ({"invalid_action": "ignore"}, "invalid_action must be one of"),
        ({"render_mode": "rgb"}, "render_mode must be one of"),
        ({"n_bins": 3, "bin_edges": (10.0,)}, "bin_edges must be 2 finite, strictly increasing"),
        ({"max_batch_size": 0}, "max_batch_size must be an integer"),
        ({"sla": 0}, "sla must be a finite number >= 1e-09, got 0"),
        (
            {"dispatch_order": "newest"},
            "dispatch_order must be one of ['oldest', 'oldest-in-time']",
        ),
    ],
)
def test_bad_batch_arguments_fail_at_make_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        gym.make(BATCH, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens must be an integer"),
        ({"chunk_size": 0}, "chunk_size must be an integer"),
        ({"tbt_sla": float("nan")}, "tbt_sla must be a finite number >= 1e-09"),
        ({"decode_levels": 1}, "decode_levels must be an integer in [2, 101]"),
        ({"prompt_caps": ()}, "prompt_caps must be a non-empty sequence"),
        ({"kv_allocation": "page"}, "kv_allocation must be one of ['reserve', 'paged']"),
        ({"kv_block_tokens": 0}, "kv_block_tokens must be an integer >= 1"),
        ({"kv_allocation": "paged", "kv_memory": 8}, "kv_block_tokens=16 is larger than the KV"),
        ({"n_requests": 10**9}, "n_requests"),
    ],
)
def test_bad_continuous_arguments_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        env = gym.make(CONTINUOUS, **kwargs)
        env.reset(seed=0)


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
def test_spec_json_pickle_and_render(env_id):
    env = gym.make(env_id, workload="demo2", arrival_rate=2.0, n_requests=30, render_mode="ansi")
    spec = gym.spec(env_id)
    assert json.loads(spec.to_json())["id"] == env_id
    assert json.loads(env.spec.to_json())["kwargs"]["workload"] == "demo2"
    env.reset(seed=0)
    text = env.render()
    assert "arrived" in text and "gpu 0" in text
    clone = pickle.loads(pickle.dumps(env))
    a = env.step(env.action_space.sample(mask=None) * 0 + np.argmax(env.unwrapped.action_masks()))
    b = clone.step(np.asarray(a[-1]["applied_action"]))
    assert np.array_equal(a[0], b[0])
    env.close()
    env.close()


@pytest.mark.parametrize("env_id", [BATCH, CONTINUOUS])
def test_rgb_array_render_draws_the_state(env_id):
    env = gym.make(env_id, n_requests=300, load=2.0, render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(3):
        *_, terminated, _, _ = env.step(np.argwhere(env.unwrapped.joint_action_mask())[-1])
        assert not terminated
    image = env.render()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert (image != 255).any() and (image < 200).any()  # tracks and at least one coloured bar


def test_make_without_prior_import_and_vector_envs():
    env = gym.make("llmsched_env:llmsched/BatchScheduling-v0", n_requests=20)
    env.reset(seed=0)
    vec = gym.make_vec(BATCH, num_envs=4, n_requests=30, vectorization_mode="sync")
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (4, *env.observation_space.shape)
    vec.step(np.zeros((4, 2), dtype=np.int64) + [1, 0])
    vec.close()


def test_stable_baselines3_make_vec_env():
    env_util = pytest.importorskip("stable_baselines3.common.env_util")
    vec = env_util.make_vec_env(CONTINUOUS, n_envs=2, env_kwargs={"n_requests": 20}, seed=0)
    obs = vec.reset()
    assert obs.shape == (2, *vec.observation_space.shape)
    masks = vec.env_method("action_masks")
    assert len(masks) == 2 and masks[0].dtype == bool
    vec.close()
