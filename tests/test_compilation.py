"""The compiled kernels: warmed up before the work, a cold compilation announced."""

from __future__ import annotations

import pytest

import llmsched_env.compilation as compilation


def test_warm_up_fills_the_cache_and_says_nothing_when_warm():
    compilation.warm_up()
    assert compilation.kernels_cached()
    said = []
    compilation.warm_up(said.append)
    assert said == []


def test_a_cold_cache_is_announced_before_compiling(monkeypatch):
    monkeypatch.setattr(compilation, "kernels_cached", lambda *a: False)
    monkeypatch.setattr(compilation, "numba_cannot_cache", lambda: False)
    said = []
    compilation.warm_up(said.append)
    assert said == [
        "compiling the simulator's kernels (first run only, about "
        f"{compilation.COMPILE_SECONDS} s; cached afterwards)"
    ]


def test_where_nothing_can_be_cached_the_announcement_does_not_promise_a_cache(monkeypatch):
    """After the warning that kernels compile at every start, it said "first run only"."""
    monkeypatch.setattr(compilation, "kernels_cached", lambda *a: False)
    monkeypatch.setattr(compilation, "numba_cannot_cache", lambda: True)
    said = []
    compilation.warm_up(said.append)
    seconds = compilation.COMPILE_SECONDS
    assert said == [f"compiling the simulator's kernels (about {seconds} s; not cached here)"]


def test_a_missing_cache_entry_counts_as_cold():
    assert not compilation.kernels_cached([("tests.test_compilation", "_not_compiled")])


def _not_compiled():  # a plain function: no numba cache at all
    return None


def test_a_ctrl_c_swallowed_during_compilation_still_stops_the_program():
    import os
    import signal

    from llmsched_env.compilation import _ctrl_c_not_lost

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with _ctrl_c_not_lost():
            try:  # a finalizer that swallows the interrupt, as LLVM objects' do
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                pass
    assert signal.getsignal(signal.SIGINT) is before


_WARM_UP = "import llmsched_env.compilation as c; c.warm_up()"
_CACHED = "import llmsched_env.compilation as c; print(c.kernels_cached())"


@pytest.mark.slow
def test_the_warm_up_reaches_every_key_kernel(tmp_path):
    """On an empty cache, the warm-up's tiny episodes leave every key kernel cached.

    A key kernel that the warm-up never runs would keep the cache "cold" for ever, and every
    command would announce a compilation that does not happen.
    """
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    cold = subprocess.run([sys.executable, "-c", _CACHED], env=env, capture_output=True, text=True)
    assert cold.stdout.strip() == "False", cold.stderr
    subprocess.run([sys.executable, "-c", _WARM_UP], env=env, check=True)
    warm = subprocess.run([sys.executable, "-c", _CACHED], env=env, capture_output=True, text=True)
    assert warm.stdout.strip() == "True", warm.stderr
