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
        f"{compilation.COMPILE_ALL_SECONDS} s; cached afterwards)"
    ]


def test_where_nothing_can_be_cached_the_announcement_does_not_promise_a_cache(monkeypatch):
    """After the warning that kernels compile at every start, it said "first run only"."""
    monkeypatch.setattr(compilation, "kernels_cached", lambda *a: False)
    monkeypatch.setattr(compilation, "numba_cannot_cache", lambda: True)
    said = []
    compilation.warm_up(said.append)
    seconds = compilation.COMPILE_ALL_SECONDS
    assert said == [f"compiling the simulator's kernels (about {seconds} s; not cached here)"]


@pytest.mark.parametrize("env_id", sorted(compilation.ENV_KERNELS))
def test_a_command_of_one_env_compiles_that_envs_kernels_only(monkeypatch, env_id):
    """The batch env's first run does not wait for the iteration-level kernels."""
    ran = []
    monkeypatch.setattr(compilation, "_run_tiny_episodes", lambda episodes: ran.extend(episodes))
    monkeypatch.setattr(compilation, "kernels_cached", lambda *a: False)
    monkeypatch.setattr(compilation, "numba_cannot_cache", lambda: False)
    said = []
    compilation.warm_up(said.append, [env_id])
    assert ran and {e for e, _ in ran} == {env_id}
    assert f"about {compilation.COMPILE_SECONDS[env_id]} s" in said[0]


def test_an_unknown_env_id_is_named():
    named = r"no kernels are known for env ids \['llmsched/Nope-v0'\]"
    with pytest.raises(ValueError, match=named):
        compilation.warm_up(None, ["llmsched/Nope-v0"])


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
