"""ContinuousBatching-v0 with paged KV memory: episodes end, and the queue and masks stay exact."""

import pickle

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmsched_env  # noqa: F401  (registers the env ids)
from baselines import make_policy
from tests.conftest import check_iteration_accounting, make_workload

CONTINUOUS = "llmsched/ContinuousBatching-v0"
MAX_STEPS = 20_000


def tiny_env(data, *, chunk_is_budget=False):
    """A paged env with tiny memory and budgets, and a workload of small requests."""
    block = data.draw(st.sampled_from([1, 4, 16]), label="block")
    max_tokens = data.draw(st.integers(4, 48), label="max_tokens")
    chunks = [max_tokens] if chunk_is_budget else [None, 1, 3, max_tokens]
    chunk = data.draw(st.sampled_from(chunks), label="chunk")
    kv = data.draw(st.integers(max(block, 2), 96), label="kv")
    n = data.draw(st.integers(1, 24), label="n")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    # Near-simultaneous arrivals, so that requests share the memory and preempt each other.
    arrival = np.cumsum(rng.exponential(0.005, n))
    prompt = rng.integers(1, 30, n)
    output = rng.integers(1, 30, n)
    prompt[0], output[0] = 1, 1  # never an episode with every request rejected
    caching = data.draw(st.booleans(), label="prefix_caching")
    workload = make_workload(arrival, prompt, output)
    if caching:
        # Prompts start with a prefix of one of two documents (hashes of `block` tokens).
        chains = []
        for p in prompt.tolist():
            shared = int(rng.integers(0, p // block + 1))
            doc = int(rng.integers(0, 2))
            chains.append([doc * 1000 + j for j in range(shared)])
        workload = workload.with_prefix_hashes(chains, block)
    env = gym.make(
        CONTINUOUS,
        workload="demo2",
        latency="demo2",
        arrival_rate=1.0,
        kv_memory=kv,
        kv_allocation="paged",
        kv_block_tokens=block,
        prefix_caching=caching,
        max_tokens=max_tokens,
        chunk_size=chunk,
        max_sequences=data.draw(st.integers(1, 6), label="max_sequences"),
        n_gpus=data.draw(st.integers(1, 2), label="n_gpus"),
        invalid_action="raise",
    )
    return env, workload


def run_to_the_end(env, workload, act):
    obs, info = env.reset(seed=0, options={"workload": workload})
    server = env.unwrapped.server
    for _ in range(MAX_STEPS):
        obs, _, terminated, truncated, info = env.step(act(obs, info))
        check_iteration_accounting(server)
        if terminated or truncated:
            break
    assert terminated, "the episode did not end within the step bound"
    assert server.n_completed + server.n_rejected == len(workload)
    return info, server


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_valid_actions_end_every_tiny_paged_episode(data):
    env, workload = tiny_env(data)
    rng = np.random.default_rng(0)

    def act(obs, info):
        joint = env.unwrapped.joint_action_mask()
        allowed = np.argwhere(joint)
        return allowed[rng.integers(len(allowed))]

    info, server = run_to_the_end(env, workload, act)
    assert info["episode_metrics"]["preemptions"] == server.n_preemptions
    assert info["episode_metrics"]["prefix_hit_tokens"] == server.prefix_hit_tokens


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_vllm_v1_ends_every_tiny_paged_episode_without_invalid_actions(data):
    env, workload = tiny_env(data, chunk_is_budget=True)
    policy = make_policy("vllm-v1", env)
    run_to_the_end(env, workload, lambda obs, info: policy.act(obs, info))


def test_queue_snapshot_and_observation_see_the_preempted_requests_at_the_front():
    env = gym.make(
        CONTINUOUS,
        workload="demo2",
        latency="demo2",
        arrival_rate=1.0,
        kv_memory=20,
        kv_allocation="paged",
        kv_block_tokens=4,
        max_tokens=16,
        chunk_size=8,
    )
    w = make_workload([0.0] * 4, [19, 4, 4, 4], [1, 3, 3, 3])
    obs, info = env.reset(seed=0, options={"workload": w})
    names = env.unwrapped.obs_names
    server = env.unwrapped.server
    # Same schedule as the server test: 0's last chunk preempts 2, then 1.
    for action in ([0, 1, 0], [0, 4, 1], [0, 2, 0]):
        obs, _, _, _, info = env.step(np.array(action))
    assert list(server.requeued) == [1, 2] and info["preemptions"] == 2
    snapshot = env.unwrapped.queue_snapshot()
    assert snapshot.preempted.tolist() == [1, 2] and snapshot.queued.tolist() == [3]
    assert snapshot.waiting().tolist() == [1, 2, 3]
    assert snapshot.waiting_prompt_tokens().tolist() == [5, 5, 4]
    np.testing.assert_array_equal(snapshot.waiting_arrival_s(), [0.0, 0.0, 0.0])
    assert obs[names.index("head_prompt")] == np.float32(5 / 16)
    assert obs[names.index("waiting_tokens")] == np.float32(14 / 16)
    # Request 0 finished with that chunk (one output token) and freed its blocks.
    assert obs[names.index("gpu/kv_used")] == obs[names.index("gpu/kv_reserved")] == 0.0
    # The exact joint mask agrees with what a step does, on a copy of the env.
    joint = env.unwrapped.joint_action_mask()
    for index in np.argwhere(joint):
        probe = pickle.loads(pickle.dumps(env.unwrapped))
        *_, step_info = probe.step(index)
        assert not step_info["invalid_action"]


def test_prefix_caching_is_an_env_option_of_paged_memory_only():
    with pytest.raises(ValueError, match="prefix_caching=True needs kv_allocation='paged'"):
        gym.make(CONTINUOUS, prefix_caching=True)
    with pytest.raises(ValueError, match="prefix_caching must be True or False"):
        gym.make(CONTINUOUS, kv_allocation="paged", prefix_caching="yes")
    env = gym.make(CONTINUOUS, kv_allocation="paged", prefix_caching=True, n_requests=20)
    _, info = env.reset(seed=0)
    assert info["prefix_caching"] is True and info["prefix_hit_tokens"] == 0
    assert env.unwrapped.server.prefix_caching


def test_shared_prompt_prefixes_skip_prefill_in_the_env():
    # Three 64-token prompts with the same first 48 tokens (3 blocks of 16), arriving apart.
    w = make_workload([0.0, 5.0, 10.0], [64, 64, 64], [4, 4, 4]).with_prefix_hashes(
        ([1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 6]), 16
    )
    metrics = {}
    for caching in (False, True):
        env = gym.make(
            CONTINUOUS,
            kv_allocation="paged",
            prefix_caching=caching,
            n_requests=3,
            chunk_size=2048,
        )
        info, _ = run_to_the_end(env, w, make_policy("vllm-v1", env).act)
        metrics[caching] = info["episode_metrics"]
    assert metrics[True]["prefix_hit_tokens"] == 2 * 48
    assert metrics[True]["prefix_queried_tokens"] == 3 * 64
    assert metrics[False]["prefix_hit_tokens"] == metrics[False]["prefix_queried_tokens"] == 0
    assert metrics[True]["ttft_s_mean"] < metrics[False]["ttft_s_mean"]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kv_allocation="paged", kv_memory=1500, max_tokens=1024),
        dict(kv_allocation="paged", kv_memory=4000, chunk_size=256, prompt_caps=(1, 0, None)),
        dict(kv_memory=3000),  # reserved KV memory
    ],
    ids=["paged", "paged chunked", "reserve"],
)
def test_action_allowed_is_the_joint_masks_entry(kwargs):
    env = gym.make(CONTINUOUS, workload="demo2", latency="demo2", n_requests=30, **kwargs)
    unwrapped = env.unwrapped
    env.reset(seed=4)
    rng = np.random.default_rng(0)
    nvec = tuple(env.action_space.nvec)
    for step in range(100_000):
        joint = unwrapped.joint_action_mask()
        if step < 60 or step % 20 == 0:
            for action in np.ndindex(*nvec):
                d, p, _ = action
                # The joint mask lists WAIT and decode-only actions with cap level 0 only.
                expected = joint[d, p, 0] if p == 0 else joint[action]
                assert unwrapped.action_allowed(action) == expected, action
        allowed = np.argwhere(joint)
        *_, terminated, truncated, _ = env.step(allowed[rng.integers(len(allowed))])
        if terminated or truncated:
            break
    assert unwrapped.action_allowed([0, 0, 1])  # the episode is over: WAIT only
    assert not unwrapped.action_allowed([1, 0, 0])
