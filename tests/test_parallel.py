"""Jobs in worker processes: same results, same order, whatever the number of workers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from llmsched_env import parallel
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
    # A Ctrl-C that lands while the workers are started must not be lost in the interpreter's
    # at-fork handlers: it is held until the pool exists, then raised, and the workers stopped.
    before = set(multiprocessing.active_children())

    class InterruptedWhileStarting(parallel.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(parallel, "ProcessPoolExecutor", InterruptedWhileStarting)
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_jobs(_square, [1, 2, 3], 2)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    assert _sigint_unblocked(), "the SIGINT mask was not restored"
    assert set(multiprocessing.active_children()) <= before


def _die_on_two(x: int) -> int:
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
    time.sleep(0.05)
    return x


def test_a_worker_that_dies_fails_the_run_instead_of_hanging():
    """multiprocessing.Pool never reported the lost job: the run waited forever."""
    before = set(multiprocessing.active_children())
    with pytest.raises(RuntimeError, match=r"a worker process died .* with [01] of 4 jobs done"):
        run_jobs(_die_on_two, [1, 2, 3, 4], 2)
    assert set(multiprocessing.active_children()) <= before


#: A main process whose worker sends it SIGTERM; each worker writes its pid to a file first.
SIGTERM_SCRIPT = """
import os, signal, sys, time
from llmsched_env.parallel import run_jobs

def job(x):
    with open(os.path.join(sys.argv[1], str(os.getpid())), "w"):
        pass
    if x == 1:
        time.sleep(0.5)  # both workers have started
        os.kill(os.getppid(), signal.SIGTERM)
    time.sleep(60)  # a long simulation, ended by the main process
    return x

if __name__ == "__main__":
    run_jobs(job, [1, 2], 2)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signals (Windows)")
def test_sigterm_to_the_main_process_ends_the_workers(tmp_path):
    """The workers were left running with no parent. Run in a process of its own: the test
    runner's own handling of SIGTERM (or a worker thread) must not decide the outcome."""
    script = tmp_path / "main.py"
    script.write_text(SIGTERM_SCRIPT)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=50
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-2000:]
    assert time.perf_counter() - started < 30
    workers = [int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()]
    assert len(workers) == 2
    deadline = time.perf_counter() + 5
    while any(_alive(pid) for pid in workers) and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)


@pytest.mark.parametrize("n_jobs", [0, -1, 2.5, "2", None, 10**6])
def test_a_bad_number_of_workers_is_refused_by_name(n_jobs):
    with pytest.raises(ValueError, match=r"n_jobs must be an integer in \[1, 256\]"):
        run_jobs(_square, [1, 2], n_jobs)


def _sigint_unblocked() -> bool:
    return signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
