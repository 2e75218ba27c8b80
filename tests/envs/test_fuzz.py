"""Fuzzing both environments' constructors and actions with random and hostile values.

Every outcome must be a working env or a ``ValueError``/``TypeError`` whose message names the
argument; an episode must never give a nan reward, hang (steps are bounded), fail from inside or
lose a request (completed + rejected + waiting + on a GPU + not yet arrived == n_requests).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import llmsched_env
from llmsched_env.envs import BatchSchedulingEnv, ContinuousBatchingEnv, InvalidActionError

BATCH = "llmsched/BatchScheduling-v0"
CONTINUOUS = "llmsched/ContinuousBatching-v0"
MAX_STEPS = 200
ENV_CLASSES = {BATCH: BatchSchedulingEnv, CONTINUOUS: ContinuousBatchingEnv}

HOSTILE = st.sampled_from(
    [
        None,
        float("nan"),
        float("inf"),
        -float("inf"),
        -1,
        0,
        -0.5,
        2.5,
        10**18,
        1e8,
        "x",
        "",
        (),
        [],
        (1, "a"),
        True,
        np.int64(2),
        np.float32(0.5),
        np.uint8(3),
        np.bool_(True),
        np.array([1, 2]),
        {"a": 1},
        object(),
    ]
)

#: Valid values of each argument (small, so an episode takes milliseconds).
COMMON = {
    "workload": st.sampled_from(["demo2", "mm1", "sim-a", "uniform"]),
    "load": st.sampled_from([None, 0.2, np.float64(0.9), 2]),
    "n_gpus": st.integers(1, 3),
    "n_requests": st.integers(1, 30),
    "sla_penalty": st.sampled_from([0, 0.5, np.float32(2.0)]),
    "reward": st.sampled_from(["sla", "queue"]),
    "invalid_action": st.sampled_from(["remap", "raise"]),
    "max_steps": st.sampled_from([None, 5, np.int64(50)]),
    "render_mode": st.sampled_from([None, "ansi"]),
}
BATCH_ARGS = {
    **COMMON,
    "sla": st.sampled_from([0.5, 10.0]),
    "n_bins": st.integers(1, 5),
    "max_batch_size": st.integers(1, 20),
    "dispatch_order": st.sampled_from(["oldest", "oldest-in-time"]),
}
CONTINUOUS_ARGS = {
    **COMMON,
    "ttft_sla": st.sampled_from([0.1, 1.0]),
    "tbt_sla": st.sampled_from([0.01, 0.1]),
    "max_tokens": st.integers(1, 3000),
    "max_sequences": st.integers(1, 300),
    "chunk_size": st.sampled_from([None, 1, 64, 512]),
    "kv_allocation": st.sampled_from(["reserve", "paged"]),
    "kv_block_tokens": st.sampled_from([1, 16]),
    "decode_levels": st.integers(2, 6),
    "prefill_levels": st.integers(2, 6),
    "prompt_caps": st.sampled_from([(None,), (0, 1, 2, None), [3], (np.int64(1), 0)]),
}


def _config(args: dict) -> st.SearchStrategy[tuple[str | None, dict]]:
    """Valid values for a random subset of arguments, and at most one hostile argument."""

    @st.composite
    def draw(data_draw) -> tuple[str | None, dict]:
        names = sorted(args)
        chosen = data_draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
        kwargs = {name: data_draw(args[name]) for name in chosen}
        kwargs.setdefault("n_requests", data_draw(args["n_requests"]))
        hostile = data_draw(st.one_of(st.none(), st.sampled_from(names)))
        if hostile is not None:
            kwargs[hostile] = data_draw(HOSTILE)
        return hostile, kwargs

    return draw()


def _in_system(server) -> int:
    """Requests waiting or on a GPU, counted from the queues themselves (not from counters)."""
    if hasattr(server, "prefilling"):
        on_gpu = sum(r.size for r in server.running) + sum(len(p) for p in server.prefilling)
        return server.n_waiting + on_gpu
    return server.n_waiting + server.n_running


def _check_accounting(env, n_requests: int) -> None:
    server = env.unwrapped.server
    not_arrived = n_requests - server.n_arrived
    total = server.n_completed + server.n_rejected + _in_system(server) + not_arrived
    assert total == n_requests


def _action(draw, env):
    kind = draw(st.sampled_from(["sample", "sample", "sample", "hostile"]))
    if kind == "sample":
        return env.action_space.sample(), True
    nvec = env.action_space.nvec
    hostile = draw(
        st.sampled_from(
            [
                [int(n) for n in nvec],
                [-1] * len(nvec),
                [0.5] * len(nvec),
                [0] * (len(nvec) + 1),
                "wait",
                None,
                [[0] * len(nvec)],
                [np.nan] * len(nvec),
            ]
        )
    )
    return hostile, False


def _run(env_id: str, hostile: str | None, kwargs: dict, data) -> None:
    # The env class itself, not gym.make: gymnasium's make reads render_mode (calls .endswith on
    # it) before the environment's own checks run.
    env_class = ENV_CLASSES[env_id]
    try:
        env = env_class(**kwargs)
    except (ValueError, TypeError) as error:
        message = str(error)
        named = [name for name in kwargs if name in message]
        assert named, f"error names no argument of {sorted(kwargs)}: {message}"
        if hostile is not None and hostile != "workload":
            assert hostile in message or any(n != hostile for n in named), message
        assert "Traceback" not in message
        return
    n_requests = int(kwargs["n_requests"])
    env.action_space.seed(data.draw(st.integers(0, 2**16), label="action seed"))
    try:
        obs, info = env.reset(seed=data.draw(st.integers(0, 100), label="seed"))
    except ValueError as error:
        # A valid configuration whose every request is too large for the KV memory.
        assert "no scheduling decision" in str(error)
        return
    _check_accounting(env, n_requests)
    for _ in range(MAX_STEPS):
        action, in_space = data.draw(st.composite(_action)(env), label="action")
        try:
            obs, reward, terminated, truncated, info = env.step(action)
        except InvalidActionError as error:
            assert env.unwrapped.config.invalid_action == "raise" and "forbidden" in str(error)
            continue
        except (ValueError, TypeError) as error:
            assert not in_space, f"an action in the space was refused: {action!r}: {error}"
            assert "action" in str(error)
            continue
        assert np.isfinite(reward), f"reward {reward} after action {action!r}"
        assert np.all(np.isfinite(obs))
        _check_accounting(env, n_requests)
        if terminated or truncated:
            break
    else:
        # Random actions may need thousands of steps to finish; bounded, the episode must at
        # least have moved simulated time forward (no step that changes nothing forever).
        assert env.unwrapped.server.now > 0, f"no progress in {MAX_STEPS} steps with {kwargs}"


FUZZ = settings(
    max_examples=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking episodes is too slow
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(config=_config(BATCH_ARGS), data=st.data())
def test_batch_env_survives_random_and_hostile_arguments_and_actions(config, data):
    hostile, kwargs = config
    _run(BATCH, hostile, kwargs, data)


@FUZZ
@given(config=_config(CONTINUOUS_ARGS), data=st.data())
def test_continuous_env_survives_random_and_hostile_arguments_and_actions(config, data):
    hostile, kwargs = config
    _run(CONTINUOUS, hostile, kwargs, data)


def test_the_package_registers_both_envs():
    assert {BATCH, CONTINUOUS} <= set(gym.registry) and llmsched_env is not None
