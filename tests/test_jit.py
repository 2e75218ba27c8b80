import numpy as np

from llmsched_env.jit import implementation, njit


@njit(cache=False)
def _weighted_total(values, weights, scale):
    total = 0.0
    for i in range(values.shape[0]):
        total += values[i] * weights[i]
    return total * scale


def test_implementation_computes_what_the_dispatcher_computes() -> None:
    rng = np.random.default_rng(0)
    values, weights = rng.normal(size=50), rng.normal(size=50)
    compiled = implementation(_weighted_total, values, weights, 2.0)
    assert compiled(values, weights, 2.0) == _weighted_total(values, weights, 2.0)
    other = rng.normal(size=7), rng.normal(size=7)
    assert compiled(*other, 0.5) == _weighted_total(*other, 0.5)


def test_implementation_is_looked_up_once_per_set_of_argument_types() -> None:
    values = np.arange(5.0)
    first = implementation(_weighted_total, values, values, 1.0)
    assert implementation(_weighted_total, np.ones(9), np.zeros(9), 3.0) is first
    read_only = values.copy()
    read_only.flags.writeable = False
    # numba types a read-only array, an int scale or an int64 array differently: their own
    # implementations, each computing the same as the dispatcher.
    for args in (
        (read_only, values, 1.0),
        (values, values, 1),
        (np.arange(5), values, 1.0),
        (values[::2], values[::2], 1.0),
    ):
        compiled = implementation(_weighted_total, *args)
        assert compiled is not first
        assert compiled(*args) == _weighted_total(*args)


def test_a_kernel_numba_cannot_cache_compiles_uncached_after_a_warning() -> None:
    """With nowhere to cache (a read-only install, no writable cache directory) numba refused
    ``cache=True`` and importing the package failed; a file numba finds no cache for shows it."""
    import pytest

    namespace: dict = {}
    exec(compile("def add_one(x):\n    return x + 1\n", "<nowhere>", "exec"), namespace)
    with pytest.warns(RuntimeWarning, match="numba cannot cache the simulator's kernels"):
        add_one = njit(cache=True)(namespace["add_one"])
    assert add_one(1) == 2


def test_a_damaged_cache_index_reads_as_empty(tmp_path) -> None:
    """An index numba cannot unpickle failed every command with an UnpicklingError."""
    from numba.core.caching import IndexDataCacheFile

    cache = IndexDataCacheFile(str(tmp_path), "kernel-1", source_stamp=("stamp",))
    with open(cache._index_path, "wb") as f:
        f.write(bytes(range(2, 102)))
    assert cache._load_index() == {}


def test_the_envs_run_uncompiled_with_the_same_episodes(tmp_path) -> None:
    """NUMBA_DISABLE_JIT=1 (to debug a kernel in Python) failed in every env."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json; from llmsched_env.evaluation import evaluate\n"
        "rows = {}\n"
        "for env, policy in (('BatchScheduling-v0', 'multibin-wc'),\n"
        "                    ('ContinuousBatching-v0', 'vllm-v1'), ('Routing-v0', 'min-ttft')):\n"
        "    episodes, _ = evaluate([policy], 'llmsched/' + env, {'n_requests': 40}, [3])\n"
        "    rows[env] = episodes['return'].tolist()\n"
        "print(json.dumps(rows))\n"
    )
    returns = []
    for disable in ("0", "1"):
        env = {**os.environ, "NUMBA_DISABLE_JIT": disable}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-2000:]
        returns.append(json.loads(done.stdout.splitlines()[-1]))
    assert returns[0] == returns[1]


def test_a_damaged_cache_data_file_reads_as_missing(tmp_path) -> None:
    """A truncated kernel file failed every run with 'pickle data was truncated'."""
    from numba.core.caching import IndexDataCacheFile

    cache = IndexDataCacheFile(str(tmp_path), "kernel-1", source_stamp=("stamp",))
    cache._save_index({"key": "kernel-1.0.nbc"})
    (tmp_path / "kernel-1.0.nbc").write_bytes(b"\x80\x04\x95")
    assert cache.load("key") is None
