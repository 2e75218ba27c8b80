"""ContinuousBatching-v0's compiled step plays the Python step's episodes bit for bit."""

import copy
import pickle
from dataclasses import dataclass

import numpy as np
import pytest

from llmsched_env.envs.common import InvalidActionError
from llmsched_env.envs.iteration_env import ContinuousBatchingEnv
from llmsched_env.latency import LinearIterationLatency
from llmsched_env.sim import IterationServer
from llmsched_env.sim.compiled_iteration_server import CompiledIterationServer

#: Paged KV memory with vLLM V1's automatic prefix caching.
PREFIX_CACHING = dict(kv_allocation="paged", prefix_caching=True)


def make_pair(**settings):
    """The env with compiled steps, and the same env held to the Python path."""
    compiled = ContinuousBatchingEnv(**settings)
    python = ContinuousBatchingEnv(**settings)
    python._compiles_steps = lambda: False
    return compiled, python


def assert_same(a, b, where=""):
    """Equal values of equal types (arrays: dtype, shape and bits)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), where
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def play(compiled, python, seed, episodes=2, forbidden_share=0.2):
    """Random actions (some forbidden) on both envs; compare everything a step returns."""
    rng = np.random.default_rng(seed)
    steps = 0
    for episode in range(episodes):
        first = compiled.reset(seed=seed + episode), python.reset(seed=seed + episode)
        assert isinstance(compiled.server, CompiledIterationServer)
        assert isinstance(python.server, IterationServer)
        assert_same(first[0], first[1], "reset")
        done = False
        while not done:
            if rng.random() < forbidden_share:
                action = [int(rng.integers(n)) for n in compiled.action_space.nvec]
            else:
                joint = compiled.joint_action_mask()
                assert_same(joint, python.joint_action_mask(), "joint mask")
                allowed = np.argwhere(joint)
                action = allowed[rng.integers(len(allowed))].tolist()
            assert compiled.action_allowed(action) == python.action_allowed(action)
            result = compiled.step(action)
            assert_same(result, python.step(action), f"step {steps}")
            assert_same(compiled.action_masks(), python.action_masks(), "mask")
            done = result[2] or result[3]
            steps += 1
    return steps


@pytest.mark.parametrize(
    "settings",
    [
        dict(n_requests=120),
        dict(n_requests=120, load=1.5, n_gpus=2),
        dict(n_requests=100, load=0.8, chunk_size=None, reward="queue"),
        dict(n_requests=100, load=0.9, ttft_sla_per_token=0.001, reward="goodput-tokens"),
        dict(n_requests=80, load=1.0, max_sequences=3, prompt_caps=(1, 4, None), n_gpus=3),
        dict(n_requests=80, load=0.7, max_tokens=256, chunk_size=32, kv_memory=30_000),
        dict(n_requests=60, latency="vllm0.19-rtx4090-llama3.1-8b", load=0.6, max_steps=70),
        dict(n_requests=60, decode_levels=2, prefill_levels=9, prompt_caps=(0, 2), load=0.9),
        dict(n_requests=80, latency="demo2", workload="demo2", load=0.9),
        dict(n_requests=80, latency="llama3.1-8b-h100", load=0.8, n_gpus=2),
        dict(n_requests=100, kv_allocation="paged", kv_memory=20_000, load=1.2),
        dict(n_requests=80, kv_allocation="paged", kv_memory=8_000, kv_block_tokens=64, n_gpus=2),
        dict(n_requests=80, kv_allocation="paged", kv_memory=6_000, chunk_size=None, load=1.5),
        dict(n_requests=80, kv_allocation="paged", kv_memory=9_000, prompt_caps=(0, 2, None)),
        dict(n_requests=100, workload="prefix-sharing", kv_memory=20_000, **PREFIX_CACHING),
        dict(n_requests=80, workload="prefix-sharing", kv_memory=8_000, kv_block_tokens=32,
             n_gpus=2, load=1.5, **PREFIX_CACHING),
        dict(n_requests=60, workload="prefix-sharing", kv_memory=60_000, chunk_size=None,
             invalid_action="remap", **PREFIX_CACHING),
        dict(n_requests=60, workload="mooncake-conversation", kv_memory=200_000,
             **PREFIX_CACHING),
    ],
)  # fmt: skip
def test_compiled_steps_play_the_python_episode(settings):
    compiled, python = make_pair(**settings)
    assert play(compiled, python, seed=len(settings)) > 100


def test_the_compiled_step_is_the_default_and_random_times_keep_python():
    for settings in (dict(), dict(kv_allocation="paged"), PREFIX_CACHING):
        env = ContinuousBatchingEnv(n_requests=10, **settings)
        env.reset(seed=0)
        assert isinstance(env.server, CompiledIterationServer)
    env = ContinuousBatchingEnv(n_requests=10, latency="sim-a")
    env.reset(seed=0)
    assert isinstance(env.server, IterationServer)


def test_a_forbidden_action_raises_the_same_error_and_changes_nothing():
    compiled, python = make_pair(n_requests=40, invalid_action="raise")
    rng = np.random.default_rng(0)
    compiled.reset(seed=4), python.reset(seed=4)
    raised = 0
    for _ in range(300):
        action = [int(rng.integers(n)) for n in compiled.action_space.nvec]
        if compiled.action_allowed(action):
            result = compiled.step(action)
            assert_same(result, python.step(action))
            if result[2] or result[3]:
                break
            continue
        with pytest.raises(InvalidActionError) as compiled_error:
            compiled.step(action)
        with pytest.raises(InvalidActionError) as python_error:
            python.step(action)
        assert str(compiled_error.value) == str(python_error.value)
        raised += 1
    assert raised > 10
    assert_same(compiled.last_info, python.last_info)


def test_copies_and_pickles_of_the_env_continue_its_episode():
    env = ContinuousBatchingEnv(n_requests=80, load=1.0)
    env.reset(seed=2)
    for _ in range(60):
        env.step([4, 4, 6])
    for copied in (copy.deepcopy(env), pickle.loads(pickle.dumps(env))):
        original = copy.deepcopy(env)
        for _ in range(100):
            action = [2, 3, 2]
            if not original.action_allowed(action):
                action = [4, 4, 6]
            assert_same(original.step(action), copied.step(action))


def test_a_subclassed_latency_model_is_timed_by_its_own_code():
    """A subclass may override iteration_s; the compiled timing of its parent would ignore it."""

    @dataclass(frozen=True)
    class Slower(LinearIterationLatency):
        def iteration_s(self, *args, **kwargs):
            return 2.0 * super().iteration_s(*args, **kwargs)

    latency = Slower(0.005, 1.7e-5, 6e-6)
    env = ContinuousBatchingEnv(n_requests=5, latency=latency)
    env.reset(seed=0)
    assert isinstance(env.server, IterationServer)
    info = env.step([4, 4, 6])[-1]
    plain = ContinuousBatchingEnv(n_requests=5, latency=LinearIterationLatency(0.005, 1.7e-5, 6e-6))
    plain.reset(seed=0)
    assert info["last_iteration_s"][0] == 2.0 * plain.step([4, 4, 6])[-1]["last_iteration_s"][0]
