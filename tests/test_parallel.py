"""Jobs in worker processes: same results, same order, whatever the number of workers."""

from __future__ import annotations

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
