"""The simulator's compiled kernels: say when they compile, and compile them before the work.

The hot paths run compiled with numba (``cache=True``): the first episode on a machine compiles
them, which takes about :data:`COMPILE_SECONDS` seconds on one core, and numba caches the result
(in ``__pycache__`` beside the sources, or numba's cache directory when that is read-only).
:func:`warm_up` runs one tiny episode of each environment, so the compilation happens at a
known moment, announced by a message when the cache is cold, instead of silently inside the
first real episode (or once in every worker process).
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

#: The largest compiled functions, one or more per module (module, function): the ones whose
#: compilation takes the time. Smaller helpers compile with them.
KEY_KERNELS = (
    ("llmsched_env.envs.batch_step", "step_one"),
    ("llmsched_env.sim.batch_kernels", "advance"),
    ("llmsched_env.sim.batch_kernels", "metric_columns"),
    ("llmsched_env.sim.running_state", "decode_tokens"),
    ("llmsched_env.envs.iteration_step", "step_reserve"),
    ("llmsched_env.envs.iteration_step", "observe"),
    ("llmsched_env.sim.iteration_kernels", "advance"),
    ("llmsched_env.envs.batch_observation", "_build"),
    ("llmsched_env.metrics", "_request_stats"),
    ("llmsched_env.statistics", "describe_rows"),
    ("llmsched_env.latency.profiled", "_iteration_s"),
)
#: Seconds a cold compilation of every kernel takes, about: 33 s measured on one core of a
#: shared two-core machine, 14 s on a faster one.
COMPILE_SECONDS = 30

#: Tiny episodes that reach every kernel: (env id, keyword arguments).
_TINY_ENVS = (
    (
        "llmsched/BatchScheduling-v0",
        {"workload": "demo2", "arrival_rate": 4.0, "n_requests": 20},
    ),
    (
        "llmsched/BatchScheduling-v0",
        {
            "workload": "demo2",
            "arrival_rate": 4.0,
            "n_requests": 20,
            "dispatch_order": "oldest-in-time",
        },
    ),
    (
        "llmsched/ContinuousBatching-v0",
        {"workload": "demo2", "arrival_rate": 2.0, "n_requests": 8},
    ),
    (
        "llmsched/ContinuousBatching-v0",
        {
            "workload": "demo2",
            "arrival_rate": 2.0,
            "n_requests": 8,
            "kv_memory": "unlimited",
            "latency": "vllm0.19-rtxpro6000-qwen3-30b-a3b-ep2",
        },
    ),
)


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


def warm_up(log: Callable[[str], None] | None = None) -> None:
    """Compile (or load from numba's cache) every kernel by running tiny episodes of both envs.

    Args:
        log: Told, before compiling, that a cold compilation is starting and how long it takes.
    """
    if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1: nothing to compile
        return
    if log is not None and not kernels_cached():
        if numba_cannot_cache():  # jit.njit warned: every start compiles
            when = f"about {COMPILE_SECONDS} s; not cached here"
        else:
            when = f"first run only, about {COMPILE_SECONDS} s; cached afterwards"
        log(f"compiling the simulator's kernels ({when})")
    with _ctrl_c_not_lost():
        _run_tiny_episodes()


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


def _run_tiny_episodes() -> None:
    import gymnasium as gym

    import llmsched_env  # noqa: F401  (registers the env ids)
    from baselines import make_policy

    for env_id, kwargs in _TINY_ENVS:
        env = gym.make(env_id, **kwargs)
        try:
            policy = make_policy("random", env)
            obs, info = env.reset(seed=0)
            policy.reset()
            while True:
                obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
                if terminated or truncated:
                    break
        finally:
            env.close()
