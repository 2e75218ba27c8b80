"""The compiled prefix cache: keys as the Python server's, and a hash table that finds them.

The side-by-side episodes of ``test_compiled_iteration_server.py`` check the pool against
:class:`~llmsched_env.sim.prefix_cache.BlockPool`; these check its two parts of its own.
"""

import numpy as np
import pytest

from llmsched_env.sim import prefix_kernels as pk
from llmsched_env.sim.prefix_cache_state import allocate_prefix_cache, prefix_cache_views
from tests.conftest import make_workload


def shared_keys(hashes, hash_tokens, block_tokens):
    """``PagedKVAccounting._prefix_keys`` for every request: its ``(hash, position)`` pairs."""
    g, b = hash_tokens, block_tokens
    return [
        [(chain[((j + 1) * b - 1) // g], (j * b % g) // b) for j in range(len(chain) * g // b)]
        for chain in (h.tolist() for h in hashes)
    ]


@pytest.mark.parametrize(
    ("hash_tokens", "block_tokens"), [(16, 16), (16, 4), (4, 16), (64, 1), (2, 128), (8, 8)]
)
def test_keys_are_equal_exactly_where_the_pythons_are(hash_tokens, block_tokens):
    """Shared blocks by (hash, position), others by request and block, as in Python."""
    rng = np.random.default_rng(hash_tokens * 1000 + block_tokens)
    n = 40
    prompt = rng.integers(1, 700, n)
    # Few distinct hashes (and huge ones, as 64-bit digests are), so that keys repeat across
    # prompts; within one prompt they differ, as a hash chain's do.
    values = (np.arange(700 // hash_tokens + 3) - 3) * 10**17 + 5
    hashes = [
        rng.choice(values, int(rng.integers(0, p // hash_tokens + 1)), replace=False)
        for p in prompt
    ]
    w = make_workload(np.arange(n, dtype=float), prompt, np.ones(n, dtype=int))
    w = w.with_prefix_hashes(hashes, hash_tokens)
    ints, layout = allocate_prefix_cache(w, 1, 64, block_tokens, rows_per_gpu=4)
    p = prefix_cache_views(ints, layout)
    python_keys: dict[tuple, tuple[int, int]] = {}
    for i, pairs in enumerate(shared_keys(w.prefix_block_hashes, hash_tokens, block_tokens)):
        assert pk._n_shared(p, i) == len(pairs)
        blocks = -(-int(prompt[i]) // block_tokens) + 2
        own = [(i, j, 0) for j in range(len(pairs), blocks)]
        for j, key in enumerate(pairs + own):
            mine = tuple(int(x) for x in pk._key_of(p, i, j))
            assert python_keys.setdefault(key, mine) == mine  # an equal key, the same pair
    assert len(set(python_keys.values())) == len(python_keys)  # different keys, different pairs
    assert sum(len(k) == 2 for k in python_keys) > 1  # some shared keys, some repeated


def test_the_table_finds_colliding_keys_through_any_order_of_removals():
    """Keys that all start probing at one slot, kept and evicted in random order."""
    w = make_workload([0.0], [10], [1])
    ints, layout = allocate_prefix_cache(w, 2, 32, 16, rows_per_gpu=1)
    p = prefix_cache_views(ints, layout)
    size = int(p.table_size[0])
    assert size == 64
    mask = size - 1
    homes: dict[int, list[tuple[int, int]]] = {}
    for a in range(20_000):
        for b in (0, 3, -1, -7):
            homes.setdefault(int(pk._home(a, b, mask)), []).append((a, b))
    crowded = max(homes.values(), key=len)[:20]  # one home slot
    others = [keys[0] for keys in homes.values() if keys[0] not in crowded][:12]
    rng = np.random.default_rng(0)
    gpu = 1
    model: dict[tuple[int, int], int] = {}
    for (a, b), block in zip(crowded + others, rng.permutation(32) + 32):
        pk._insert(p, gpu, a, b, block)
        model[(a, b)] = int(block)
    for position in rng.permutation(len(model)).tolist():
        key = list(model)[position % len(model)]
        where = pk._find(p, gpu, *key)
        assert where >= 0 and p.table_block[where] == model[key]
        pk._delete(p, gpu, where)
        del model[key]
        for other, block in model.items():  # every key left is still found
            assert pk._lookup(p, gpu, *other) == block
        assert pk._lookup(p, gpu, *key) == -1
    assert (p.table_block == -1).all()  # both GPUs' tables are empty again
