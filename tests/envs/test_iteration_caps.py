"""ContinuousBatching-v0's prompt-cap component: 0 admits no new prompt, ``None`` is no cap."""

import pickle

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401  (registers the envs)
from llmsched_env.envs import InvalidActionError

CONTINUOUS = "llmsched/ContinuousBatching-v0"
SMALL = {"workload": "demo2", "latency": "demo2", "arrival_rate": 6.0, "n_requests": 40}
CONFIGS = [
    {**SMALL, "max_tokens": 256, "chunk_size": 96},
    {**SMALL, "max_tokens": 512, "chunk_size": None},
    {**SMALL, "max_tokens": 256, "chunk_size": 64, "kv_allocation": "paged",
     "kv_memory": 600, "kv_block_tokens": 16},
    {**SMALL, "max_tokens": 192, "chunk_size": 192, "kv_allocation": "paged",
     "kv_memory": 400, "kv_block_tokens": 8, "prefix_caching": True, "n_gpus": 2},
    # Prefill levels round to budgets (0, 0, 1, 2, 2): a level above 0 may prefill nothing.
    {**SMALL, "max_tokens": 2, "chunk_size": 2},
]  # fmt: skip
IDS = ["reserve-chunked", "reserve-whole", "paged", "paged-cached-2gpu", "reserve-tiny-budget"]


def runs_an_iteration(env, decode, prefill, cap):
    """Whether the action's iteration starts on a copy of the server (the behavioural truth)."""
    server = pickle.loads(pickle.dumps(env.server))
    gpu = server.decision_gpu
    request = env.action_codec.decode((decode, prefill, cap), server.running[gpu].size)
    server.run_iteration(*request)
    return bool(server.gpu_busy[gpu])


@pytest.mark.parametrize("kwargs", CONFIGS, ids=IDS)
def test_joint_mask_is_exact_for_every_cap_including_zero(kwargs):
    env = gym.make(CONTINUOUS, **{**kwargs, "n_requests": 12}).unwrapped
    env.reset(seed=1)
    caps = env.prompt_caps
    assert caps[0] == 0 and caps[-1] == env.config.max_sequences  # the default levels
    d, p, c = env.action_space.nvec
    rng = np.random.default_rng(1)
    seen = {"cap0-continue": 0, "cap0-forbidden": 0}
    for _ in range(80):
        joint = env.joint_action_mask()
        mask = env.action_masks()
        gpu = env.server.decision_gpu
        running = env.server.running[gpu].size > 0
        assert joint[0, 0, 0] == env.server.can_wait()
        assert (joint[1:, 0, 0] == running).all()
        for level in range(1, p):
            for cap in range(c):
                # Without decodes: allowed exactly when an iteration starts.
                assert joint[0, level, cap] == runs_an_iteration(env, 0, level, cap), (level, cap)
            # With decodes the cap does not matter: decodes make progress.
            assert (joint[1:, level, :] == joint[1:, level, :1]).all()
            assert not joint[1:, level, :].any() or running
        if env.server.prefilling[gpu]:
            seen["cap0-continue"] += int(joint[0, 1:, 0].any())
        seen["cap0-forbidden"] += int(joint[0, 1:, 1:].any() and not joint[0, 1:, 0].any())
        # The per-component mask: cap 0 is allowed exactly when some action with it is.
        assert mask[d + p] == joint[:, :, 0].any()
        assert mask[d + p + 1 :].all()
        # The step agrees with the joint mask (cap levels above 0 of WAIT and decode-only
        # actions are the same actions as cap level 0; decode levels above 0 differ only in
        # how many run, so the first and last stand for them).
        for index in np.ndindex(d, p, c):
            if 0 < index[0] < d - 1:
                continue
            listed = index if index[1] > 0 else (index[0], 0, 0)
            probe = pickle.loads(pickle.dumps(env))
            *_, info = probe.step(np.array(index))
            assert info["invalid_action"] == (not joint[listed]), index
        allowed = np.argwhere(joint)
        *_, terminated, truncated, info = env.step(allowed[rng.integers(len(allowed))])
        assert not info["invalid_action"]
        if terminated or truncated:
            break
    assert seen["cap0-forbidden"] > 0  # the checks were not vacuous
    if env.config.chunk_size is not None:  # without chunks no prompt stays started
        assert seen["cap0-continue"] > 0


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ((-1, 6), r"prefill_level must be an integer in \[0, 4\], got -1"),
        ((5, 6), r"prefill_level must be an integer in \[0, 4\], got 5"),
        ((2.5, 6), r"prefill_level must be an integer in \[0, 4\], got 2.5"),
        ((4, -1), r"cap_level must be an integer in \[0, 6\], got -1"),
        ((1, 7), r"cap_level must be an integer in \[0, 6\], got 7"),
        (("1", 0), r"prefill_level must be an integer in \[0, 4\], got '1'"),
        ((True, 0), r"prefill_level must be an integer in \[0, 4\], got True"),
    ],
)
def test_prefill_plan_refuses_levels_outside_the_action_space(levels, message):
    env = gym.make(CONTINUOUS, **SMALL).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.prefill_plan(*levels)
    assert env.prefill_plan(np.int64(4), 6).tokens >= 0  # numpy integers are levels too


def test_masks_are_made_once_per_answer_and_handed_out_as_copies():
    env = gym.make(CONTINUOUS, **CONFIGS[0]).unwrapped
    _, info = env.reset(seed=3)
    rng = np.random.default_rng(3)
    for _ in range(60):
        shared = env._mask
        assert not shared.flags.writeable  # one array per combination of answers
        mask, reported = env.action_masks(), info["action_mask"]
        assert (mask == shared).all() and (reported == shared).all()
        mask[:] = reported[:] = False  # the copies are the caller's
        assert shared.any() and env.action_masks().any()
        allowed = np.argwhere(env.joint_action_mask())
        *_, terminated, truncated, info = env.step(allowed[rng.integers(len(allowed))])
        if terminated or truncated:
            break
    assert 1 < len(env._masks_made) < 60  # shared between decisions


def first_started_prompt(env):
    """Step until the deciding GPU has a started (chunked) prompt, with cap 1 admissions."""
    for _ in range(200):
        gpu = env.server.decision_gpu
        if env.server.prefilling[gpu] and env.server.n_waiting:
            return
        joint = env.joint_action_mask()
        action = (0, 1, 1) if joint[0, 1, 1] else tuple(np.argwhere(joint)[0])
        env.step(np.array(action))
    pytest.fail("no started prompt with others waiting")


def test_cap_zero_continues_started_prompts_and_admits_none():
    env = gym.make(CONTINUOUS, **{**CONFIGS[0], "arrival_rate": 40.0}).unwrapped
    env.reset(seed=0)
    first_started_prompt(env)
    server = env.server
    gpu = server.decision_gpu
    started = list(server.prefilling[gpu])
    waiting = server.n_waiting
    p = env.action_space.nvec[1]
    plan = env.prefill_plan(p - 1, 0)
    assert plan.admitted == 0 and plan.continued >= 1
    assert env.prefill_plan(p - 1, 1).admitted >= 1  # a cap of 1 would admit the head
    *_, info = env.step(np.array([0, p - 1, 0]))
    assert not info["invalid_action"]
    assert server.n_waiting >= waiting  # nobody admitted (arrivals may add to the queue)
    assert set(server.prefilling[gpu]) <= set(started) | set(server.running[gpu].tolist())


def test_cap_zero_without_a_started_prompt_is_forbidden_and_explained():
    env = gym.make(CONTINUOUS, invalid_action="raise", **{**CONFIGS[0], "n_requests": 5})
    env.reset(seed=0)
    server = env.unwrapped.server
    assert not server.prefilling[server.decision_gpu] and server.n_waiting
    with pytest.raises(InvalidActionError, match="admits no new prompt"):
        env.step(np.array([0, 4, 0]))
    remapped = gym.make(CONTINUOUS, **{**CONFIGS[0], "n_requests": 5})
    remapped.reset(seed=0)
    *_, info = remapped.step(np.array([0, 4, 0]))
    assert info["invalid_action"]
    np.testing.assert_array_equal(info["applied_action"], [0, 4, 6])  # full budget, no cap


def test_prompt_caps_accept_none_and_zero():
    env = gym.make(CONTINUOUS, prompt_caps=[None, 0, np.int64(3)], max_sequences=32)
    assert env.unwrapped.config.prompt_caps == (None, 0, 3)
    assert env.unwrapped.prompt_caps == (32, 0, 3)
    assert env.unwrapped.action_codec.uncapped == 0
    assert gym.make(CONTINUOUS).unwrapped.config.prompt_caps == (0, 1, 2, 4, 8, 16, None)


@pytest.mark.parametrize(
    ("caps", "error", "match"),
    [
        ((0,), ValueError, r"prompt_caps must be a sequence with a level that admits prompts"),
        ((0, 0), ValueError, r"0 now means 'admit no new prompt', no longer 'no cap'"),
        ((1, -1), ValueError, r"prompt_caps must be .* or None \(no cap\), .*entry 1 is -1"),
        ((1, 2.5), TypeError, r"prompt_caps must be .*entry 1 is 2.5"),
        (("none",), TypeError, r"prompt_caps must be"),
    ],
)
def test_bad_prompt_caps_name_the_value(caps, error, match):
    with pytest.raises(error, match=match):
        gym.make(CONTINUOUS, prompt_caps=caps)
