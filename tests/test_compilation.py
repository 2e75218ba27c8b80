"""The compiled kernels: warmed up before the work, a cold compilation announced."""

from __future__ import annotations

import llmsched_env.compilation as compilation


def test_warm_up_fills_the_cache_and_says_nothing_when_warm():
    compilation.warm_up()
    assert compilation.kernels_cached()
    said = []
    compilation.warm_up(said.append)
    assert said == []


def test_a_cold_cache_is_announced_before_compiling(monkeypatch):
    monkeypatch.setattr(compilation, "kernels_cached", lambda *a: False)
    said = []
    compilation.warm_up(said.append)
    assert said == [
        "compiling the simulator's kernels (first run only, about "
        f"{compilation.COMPILE_SECONDS} s; cached afterwards)"
    ]


def test_a_missing_cache_entry_counts_as_cold():
    assert not compilation.kernels_cached([("tests.test_compilation", "_not_compiled")])


def _not_compiled():  # a plain function: no numba cache at all
    return None
