"""The simulator's compiled kernels: say when they compile, and compile them before the work.

The hot paths run compiled with numba (``cache=True``): the first episode of an env on a machine
compiles its kernels, which takes :data:`COMPILE_SECONDS` (per env) on one core, and numba
caches the result (in ``__pycache__`` beside the sources, or numba's cache directory when that
is read-only). :func:`warm_up` runs tiny episodes of the envs a command uses, so the compilation
happens at a known moment, announced by a message when the cache is cold, instead of silently
inside the first real episode (or once in every worker process).
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numba

from llmsched_env.jit import numba_cannot_cache

_BATCH = "llmsched/BatchScheduling-v0"
_CONTINUOUS = "llmsched/ContinuousBatching-v0"
_ROUTING = "llmsched/Routing-v0"

#: Kernels every env runs: the episode metrics.
_SHARED_KERNELS = (
    ("llmsched_env.metrics", "request_stats"),
    ("llmsched_env.metrics", "summary_values"),
)
#: The Python iteration-level server's compiled pieces (random iteration times, ``Routing-v0``'s
#: replicas).
_PYTHON_ITERATION_KERNELS = (
    ("llmsched_env.sim.running_state", "decode_tokens"),
    ("llmsched_env.latency.profiled", "_iteration_s"),
)
_BATCH_KERNELS = (
    ("llmsched_env.envs.batch_step", "step_one"),
    ("llmsched_env.sim.batch_kernels", "advance"),
    ("llmsched_env.sim.batch_kernels", "metric_columns"),
    ("llmsched_env.envs.batch_observation", "_build"),
    *_SHARED_KERNELS,
)
_CONTINUOUS_KERNELS = (
    ("llmsched_env.envs.iteration_step", "step_compiled"),
    ("llmsched_env.sim.iteration_kernels", "plan_prefill"),
    ("llmsched_env.envs.iteration_step", "observe"),
    ("llmsched_env.sim.iteration_kernels", "advance"),
    *_PYTHON_ITERATION_KERNELS,
    *_SHARED_KERNELS,
)
#: ``Routing-v0``'s compiled steps (``vllm-v1`` replicas); other in-replica policies run the
#: Python replicas, whose kernels compile with their first episode.
_ROUTING_KERNELS = (
    ("llmsched_env.envs.routing_step", "route_and_advance"),
    ("llmsched_env.envs.routing_step", "advance_cluster"),
    ("llmsched_env.sim.iteration_kernels", "advance"),
    *_SHARED_KERNELS,
)

#: Per env id, the largest compiled functions its episodes run, one or more per module
#: (module, function): the ones whose compilation takes the time. Smaller helpers compile with
#: them.
ENV_KERNELS: dict[str, tuple[tuple[str, str], ...]] = {
    _BATCH: _BATCH_KERNELS,
    _CONTINUOUS: _CONTINUOUS_KERNELS,
    _ROUTING: _ROUTING_KERNELS,
}
#: Every env's key kernels.
KEY_KERNELS = tuple(dict.fromkeys(k for kernels in ENV_KERNELS.values() for k in kernels))
#: Seconds a cold compilation of each env's kernels takes, about, measured on one core of a
#: shared two-core machine (:func:`warm_up` of that env alone, on an empty cache).
COMPILE_SECONDS: dict[str, int] = {_BATCH: 25, _CONTINUOUS: 140, _ROUTING: 155}
#: Seconds a cold compilation of every env's kernels takes, about (measured the same way).
COMPILE_ALL_SECONDS = 180

#: Tiny episodes that reach the key kernels: (env id, keyword arguments (``"policy"``: the
#: baseline that plays it, ``"random"`` if not given), the env ids whose kernels they reach).
_TINY_EPISODES: tuple[tuple[str, dict[str, object], tuple[str, ...]], ...] = (
    (_BATCH, {"workload": "demo2", "arrival_rate": 4.0, "n_requests": 20}, (_BATCH,)),
    (
        _BATCH,
        {
            "workload": "demo2",
            "arrival_rate": 4.0,
            "n_requests": 20,
            "dispatch_order": "oldest-in-time",
        },
        (_BATCH,),
    ),
    (_CONTINUOUS, {"workload": "demo2", "arrival_rate": 2.0, "n_requests": 8}, (_CONTINUOUS,)),
    # The vLLM-style baseline asks for prefill plans (its own kernel).
    (
        _CONTINUOUS,
        {"workload": "demo2", "arrival_rate": 2.0, "n_requests": 8, "policy": "vllm"},
        (_CONTINUOUS,),
    ),
    (
        _CONTINUOUS,
        {
            "workload": "demo2",
            "arrival_rate": 2.0,
            "n_requests": 8,
            "kv_memory": "unlimited",
            "latency": "vllm0.19-rtxpro6000-qwen3-30b-a3b-ep2",
        },
        (_CONTINUOUS,),
    ),
    # Random iteration times run the Python server.
    (
        _CONTINUOUS,
        {"workload": "demo2", "arrival_rate": 2.0, "n_requests": 8, "latency": "sim-a"},
        (_CONTINUOUS,),
    ),
    (_ROUTING, {"n_requests": 8, "n_replicas": 2}, (_ROUTING,)),
)


def _env_ids(env_ids: Iterable[str] | None) -> tuple[str, ...]:
    """The env ids asked for (every env when ``None``), checked."""
    if env_ids is None:
        return tuple(ENV_KERNELS)
    chosen = tuple(env_ids)
    unknown = [e for e in chosen if e not in ENV_KERNELS]
    if unknown:
        raise ValueError(f"no kernels are known for env ids {unknown}; known: {list(ENV_KERNELS)}")
    return chosen


def kernels_cached(kernels: Iterable[tuple[str, str]] = KEY_KERNELS) -> bool:
    """Whether numba's cache holds a fresh entry for each of ``kernels`` (module, function).

    numba's index of a kernel's cached versions is empty when missing or stale (made from other
    sources, see :mod:`llmsched_env.numba_cache`); then the kernel compiles. Where this numba
    does not say (no index loader), an index file that exists counts.
    """
    for module_name, function in kernels:
        kernel = getattr(importlib.import_module(module_name), function)
        cache_file = getattr(getattr(kernel, "_cache", None), "_cache_file", None)
        load_index = getattr(cache_file, "_load_index", None)
        if load_index is not None:
            try:
                found = load_index()
            except Exception:  # a damaged index: the kernel compiles again
                found = None
            if not found:
                return False
            continue
        index = getattr(cache_file, "_index_path", None)
        if index is None or not Path(index).is_file():
            return False
    return True


def warm_up(log: Callable[[str], None] | None = None, env_ids: Iterable[str] | None = None) -> None:
    """Compile (or load from numba's cache) the kernels of envs by running tiny episodes.

    Args:
        log: Told, before compiling, that a cold compilation is starting and how long it takes.
        env_ids: The envs whose kernels to compile (default: every env's); a command that runs
            one env compiles only what that env runs.
    """
    chosen = _env_ids(env_ids)
    if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1: nothing to compile
        return
    kernels = tuple(dict.fromkeys(k for env_id in chosen for k in ENV_KERNELS[env_id]))
    if log is not None and not kernels_cached(kernels):
        every = set(chosen) == set(ENV_KERNELS)
        seconds = COMPILE_ALL_SECONDS if every else sum(COMPILE_SECONDS[e] for e in set(chosen))
        if numba_cannot_cache():  # jit.njit warned: every start compiles
            when = f"about {seconds} s; not cached here"
        else:
            when = f"first run only, about {seconds} s; cached afterwards"
        log(f"compiling the simulator's kernels ({when})")
    episodes = [(e, kwargs) for e, kwargs, serves in _TINY_EPISODES if set(serves) & set(chosen)]
    with _ctrl_c_not_lost():
        _run_tiny_episodes(episodes)


@contextlib.contextmanager
def _ctrl_c_not_lost() -> Iterator[None]:
    """Make sure a Ctrl-C during compilation stops the program.

    Compiling creates and frees many LLVM objects; a ``KeyboardInterrupt`` raised while one of
    their finalizers runs is printed as "Exception ignored" and lost, so the program would carry
    on. Here Ctrl-C is also noted, and a noted one is raised again once the compilation is over.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []

    def note_and_interrupt(signum: int, frame: object) -> None:
        noted.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, note_and_interrupt)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if noted:
        raise KeyboardInterrupt


def _run_tiny_episodes(episodes: Iterable[tuple[str, dict[str, object]]]) -> None:
    import gymnasium as gym

    import llmsched_env  # noqa: F401  (registers the env ids)
    from baselines import make_policy

    for env_id, settings in episodes:
        kwargs = dict(settings)
        policy_name = kwargs.pop("policy", "random")
        env = gym.make(env_id, **kwargs)
        try:
            policy = make_policy(policy_name, env)
            obs, info = env.reset(seed=0)
            policy.reset()
            while True:
                obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
                if terminated or truncated:
                    break
        finally:
            env.close()
