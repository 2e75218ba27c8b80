"""Env ids reach a fresh process: the module-prefixed id and the ``gymnasium.envs`` plugin."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

import llmsched_env

TINY = "workload='demo2', arrival_rate=2.0, n_requests=20"


def run_fresh(code: str) -> str:
    """Run ``code`` in a new interpreter that has not imported ``llmsched_env``; its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_module_prefixed_ids_make_the_envs_in_a_fresh_process():
    out = run_fresh(
        f"""
        import sys
        import gymnasium as gym
        assert "llmsched_env" not in sys.modules
        for env_id in {list(llmsched_env.ENV_IDS)!r}:
            env = gym.make("llmsched_env:" + env_id)
            obs, info = env.reset(seed=0)
            vec = gym.make_vec("llmsched_env:" + env_id, num_envs=2)
            print(env.spec.id, obs.shape == env.observation_space.shape, vec.num_envs)
        """
    )
    assert out.split() == [w for i in llmsched_env.ENV_IDS for w in (i, "True", "2")]


def entry_point() -> metadata.EntryPoint:
    found = [ep for ep in metadata.entry_points(group="gymnasium.envs") if ep.name == "llmsched"]
    if not found:
        pytest.skip("the package's metadata is not installed (pip install -e .)")
    return found[0]


def test_plugin_entry_point_names_the_registration_function():
    assert entry_point().value == "llmsched_env:register_envs"
    assert entry_point().load() is llmsched_env.register_envs


def test_plugin_entry_point_registers_every_id_as_a_plugin_loader_would():
    """Gymnasium 0.26-0.29's loader: load the entry point, call it in its namespace."""
    out = run_fresh(
        f"""
        from importlib import metadata
        import gymnasium as gym
        from gymnasium.envs.registration import namespace, registry
        (ep,) = [e for e in metadata.entry_points(group="gymnasium.envs") if e.name == "llmsched"]
        with namespace(ep.name):
            ep.load()()
        ids = sorted(i for i in registry if i.startswith("llmsched/"))
        env = gym.make(ids[0], {TINY})
        env.reset(seed=0)
        print(" ".join(ids))
        """
    )
    assert out.split() == sorted(llmsched_env.ENV_IDS)
