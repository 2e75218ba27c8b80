"""Run independent jobs in worker processes, in order, and stop them all cleanly on Ctrl-C.

Ctrl-C in a terminal sends SIGINT to every process of the foreground group, workers included.
Workers here ignore it, so only the main process sees a ``KeyboardInterrupt``; it then terminates
the workers at once (a worker may be in the middle of a minutes-long simulation) instead of
waiting for them, and no worker prints a traceback. The workers are forked with SIGINT blocked:
a Ctrl-C that lands in the middle of ``fork()`` would otherwise be raised inside the
interpreter's at-fork handlers, where it is reported as ignored and lost; blocked, it is
delivered as soon as the workers exist.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _block_sigint() -> set[int] | None:
    """Block SIGINT in this thread and return the previous mask (None where masks do not exist)."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: workers are spawned, not forked
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _restore_mask(previous: set[int] | None) -> None:
    """Restore the mask; a Ctrl-C that arrived while blocked is raised now."""
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def run_jobs(
    function: Callable[[T], R],
    jobs: Sequence[T],
    n_jobs: int = 1,
    on_result: Callable[[int, int], None] | None = None,
) -> list[R]:
    """Return ``[function(job) for job in jobs]``, computed in up to ``n_jobs`` processes.

    Results come back in the order of ``jobs`` whatever the number of workers.

    Args:
        function: A picklable function of one job (for workers).
        jobs: The jobs (picklable for workers).
        n_jobs: Worker processes; 1 (or fewer jobs than 2) runs in this process.
        on_result: Called as ``on_result(done, total)`` after each finished job.

    Returns:
        The results, in the order of ``jobs``.
    """
    results: list[R] = []
    if n_jobs <= 1 or len(jobs) < 2:
        for job in jobs:
            results.append(function(job))
            if on_result:
                on_result(len(results), len(jobs))
        return results
    previous_mask = _block_sigint()
    try:
        pool = multiprocessing.get_context().Pool(
            min(n_jobs, len(jobs)), initializer=_ignore_sigint
        )
    except BaseException:
        _restore_mask(previous_mask)
        raise
    try:
        _restore_mask(previous_mask)
        for result in pool.imap(function, jobs):
            results.append(result)
            if on_result:
                on_result(len(results), len(jobs))
        pool.close()
    finally:
        pool.terminate()
        pool.join()
    return results
