"""Run independent jobs in worker processes, in order, and stop them all cleanly.

Ctrl-C in a terminal sends SIGINT to every process of the foreground group, workers included.
Workers here ignore it, so only the main process sees a ``KeyboardInterrupt``; it then terminates
the workers at once (a worker may be in the middle of a minutes-long simulation) instead of
waiting for them, and no worker prints a traceback. The workers are started with SIGINT blocked:
a Ctrl-C that lands in the middle of ``fork()`` would otherwise be raised inside the
interpreter's at-fork handlers, where it is reported as ignored and lost; blocked, it is
delivered as soon as the workers exist. SIGTERM sent to the main process alone (not to its
group) ends the workers too, and a worker that dies (killed, out of memory) fails the run at
once instead of leaving its job waiting forever.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

from llmsched_env import arguments

T = TypeVar("T")
R = TypeVar("R")

#: The most worker processes a run may ask for: each holds its own copy of the simulator, so
#: far more than the cores only costs memory (33 workers took 4 GB).
MAX_JOBS = 256


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


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit`` (so that the workers are ended).

    Only where this process would otherwise die of it without cleaning up: the main thread,
    with SIGTERM's default action; a handler the caller installed is left in place.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def check_n_jobs(n_jobs: Any) -> int:
    """``n_jobs`` as an int in ``[1, MAX_JOBS]``, or a ValueError naming it."""
    return arguments.integer("", "n_jobs", n_jobs, minimum=1, maximum=MAX_JOBS)


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
        n_jobs: Worker processes, 1 to :data:`MAX_JOBS`; 1 (or fewer jobs than 2) runs in this
            process.
        on_result: Called as ``on_result(done, total)`` after each finished job.

    Returns:
        The results, in the order of ``jobs``.

    Raises:
        ValueError: If ``n_jobs`` is not an integer in ``[1, MAX_JOBS]``.
        RuntimeError: If a worker process died before its job was done.
    """
    n_jobs = check_n_jobs(n_jobs)
    results: list[R] = []
    if n_jobs == 1 or len(jobs) < 2:
        for job in jobs:
            results.append(function(job))
            if on_result:
                on_result(len(results), len(jobs))
        return results
    before = set(multiprocessing.active_children())
    previous_mask = _block_sigint()
    try:
        pool = ProcessPoolExecutor(
            min(n_jobs, len(jobs)),
            mp_context=multiprocessing.get_context(),
            initializer=_ignore_sigint,
        )
        futures = [pool.submit(function, job) for job in jobs]  # starts the workers
    except BaseException:
        _restore_mask(previous_mask)
        raise
    finished = False
    try:
        with _sigterm_raises():
            _restore_mask(previous_mask)
            for future in futures:
                try:
                    results.append(future.result())
                except BrokenProcessPool as error:
                    raise RuntimeError(
                        f"a worker process died (killed, or out of memory) or its result could "
                        f"not be read, with {len(results)} of {len(jobs)} jobs done; run with "
                        f"fewer jobs (n_jobs={n_jobs}) or in this process (n_jobs=1) to see why"
                    ) from error
                if on_result:
                    on_result(len(results), len(jobs))
        finished = True
    finally:
        if not finished:  # stop the workers now, mid-job, rather than wait for them
            for process in set(multiprocessing.active_children()) - before:
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
    return results
