"""Jobs in worker processes: same results, same order, whatever the number of workers."""

from __future__ import annotations

import multiprocessing
import signal
import threading

import pytest

from llmsched_env.parallel import run_jobs


def _square(x: int) -> int:
    return x * x


def test_results_keep_the_order_of_the_jobs_and_report_progress():
    jobs = list(range(7, 0, -1))
    seen = []
    assert run_jobs(_square, jobs, 1, lambda d, t: seen.append((d, t))) == [j * j for j in jobs]
    assert seen == [(i, 7) for i in range(1, 8)]
    seen.clear()
    assert run_jobs(_square, jobs, 2, lambda d, t: seen.append((d, t))) == [j * j for j in jobs]
    assert seen == [(i, 7) for i in range(1, 8)]
    assert run_jobs(_square, [], 2) == []


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks (Windows)")
def test_a_ctrl_c_during_fork_is_raised_once_the_workers_exist(monkeypatch):
    # A Ctrl-C that lands while the workers are forked must not be lost in the interpreter's
    # at-fork handlers: it is held until the pool exists, then raised, and the pool is stopped.
    context = multiprocessing.get_context()
    pools = []

    class InterruptedWhileForking:
        def Pool(self, *args, **kwargs):  # noqa: N802 (the name multiprocessing gives it)
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
            pools.append(context.Pool(*args, **kwargs))
            return pools[-1]

    monkeypatch.setattr(multiprocessing, "get_context", InterruptedWhileForking)
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_jobs(_square, [1, 2, 3], 2)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    assert _sigint_unblocked(), "the SIGINT mask was not restored"
    with pytest.raises(ValueError, match="Pool not running"):
        pools[0].apply(_square, (2,))


def _sigint_unblocked() -> bool:
    return signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
