import pickle
import subprocess
import sys

import numpy as np
import pytest

from llmsched_env.workload import (
    Workload,
    prefix_block_hashes,
    prefix_block_hashes_from_token_ids,
    reusable_prefix_fraction,
)


def _workload(hashes, block_tokens=4):
    return Workload(
        [0.0, 1.0, 2.0],
        [8, 9, 3],
        [2, 2, 2],
        [2, 2, 2],
        prefix_block_hashes=hashes,
        prefix_block_tokens=block_tokens,
    )


def test_hash_chain_equal_exactly_on_equal_prefixes():
    a = prefix_block_hashes([1, 2, 3, 4, 5, 6, 7], block_tokens=2)
    b = prefix_block_hashes([1, 2, 3, 4, 9, 6], block_tokens=2)
    c = prefix_block_hashes([9, 2, 3, 4], block_tokens=2)
    assert a.dtype == np.int64 and len(a) == 3 and len(b) == 3
    assert a[0] == b[0] and a[1] == b[1] and a[2] != b[2]
    # The chain: same second block after a different first block gives a different hash.
    assert c[0] != a[0] and c[1] != a[1]
    assert len(prefix_block_hashes([1], block_tokens=2)) == 0


def test_hashes_are_the_same_in_another_process():
    code = (
        "from llmsched_env.workload import prefix_block_hashes;"
        "print(prefix_block_hashes(list(range(40)), 16).tolist())"
    )
    here = prefix_block_hashes(list(range(40)), 16).tolist()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(here)


def test_from_token_ids_names_the_bad_request():
    chains = prefix_block_hashes_from_token_ids([[1] * 32, [2] * 5], block_tokens=16)
    assert [len(c) for c in chains] == [2, 0] and not chains[0].flags.writeable
    with pytest.raises(ValueError, match="request 1: token ids must be"):
        prefix_block_hashes_from_token_ids([[1], [1.5]])
    with pytest.raises(ValueError, match="block_tokens must be an integer >= 1"):
        prefix_block_hashes([1, 2], block_tokens=0)


def test_workload_validates_the_hashes():
    ok = _workload(([1, 2], np.array([3, 4], dtype=np.uint64), []))
    assert [h.dtype for h in ok.prefix_block_hashes] == [np.int64] * 3
    assert not ok.prefix_block_hashes[0].flags.writeable
    with pytest.raises(ValueError, match=r"one array per request \(3\), got 2"):
        _workload(([1], [2]))
    with pytest.raises(ValueError, match=r"prefix_block_hashes\[1\] has 3 hashes.*= 9 holds"):
        _workload(([1], [1, 2, 3], []))
    with pytest.raises(ValueError, match=r"prefix_block_hashes\[0\] must be a 1-D array"):
        _workload(([0.5], [], []))
    with pytest.raises(ValueError, match=r"prefix_block_hashes\[1\] repeats the hash 7"):
        _workload(([1], [7, 7], []))  # a collision: one prompt's two blocks would share a key
    with pytest.raises(TypeError, match="sequence of one integer array"):
        _workload(np.zeros((3, 1), dtype=np.int64))
    with pytest.raises(ValueError, match="prefix_block_tokens"):
        _workload(None, block_tokens=0)


def test_derived_workloads_keep_the_hashes():
    w = _workload(([1, 2], [1], []))
    for derived in (
        w.time_scaled(2.0),
        w.with_predictions([1, 1, 1]),
        pickle.loads(pickle.dumps(w)),
    ):
        assert [h.tolist() for h in derived.prefix_block_hashes] == [[1, 2], [1], []]
        assert derived.prefix_block_tokens == 4
    window = w.window(1, 2)
    assert [h.tolist() for h in window.prefix_block_hashes] == [[1], []]
    assert w.with_prefix_hashes(None).prefix_block_hashes is None
    assert Workload([0.0], [3], [1], [1]).prefix_block_hashes is None
    assert w.window(0).prefix_block_tokens == 4


def test_reusable_prefix_fraction_counts_prefixes_seen_earlier():
    # Blocks of 2 tokens. b's first two blocks are a's; so are c's two full blocks, 4 tokens,
    # which are also its 5 tokens less the last (a cache lookup leaves that one to compute).
    a = [1, 2, 3, 4, 5, 6]
    b = [1, 2, 3, 4, 9, 9, 9]
    c = [1, 2, 3, 4, 9]
    chains = prefix_block_hashes_from_token_ids([a, b, c], block_tokens=2)
    assert reusable_prefix_fraction([6, 7, 5], chains, 2) == (0 + 4 + 4) / 18
    # Order matters: the first request never hits.
    assert reusable_prefix_fraction([6], chains[:1], 2) == 0.0
    # A prefix must start at the first block: equal later blocks after a different first
    # block are different hashes.
    d = [7, 7, 3, 4, 5, 6]
    chains = prefix_block_hashes_from_token_ids([a, d], block_tokens=2)
    assert reusable_prefix_fraction([6, 6], chains, 2) == 0.0
    # A hit is whole blocks, at most (tokens - 1) // B, as the simulator's lookup counts it:
    # two identical 32-token prompts in 16-token blocks share 16 tokens, not 31.
    chains = prefix_block_hashes_from_token_ids([list(range(32))] * 2, block_tokens=16)
    assert reusable_prefix_fraction([32, 32], chains, 16) == 16 / 64


def test_reusable_prefix_fraction_without_hashes_or_tokens_is_zero():
    assert reusable_prefix_fraction([5, 6], None, 16) == 0.0
    assert reusable_prefix_fraction([], (), 16) == 0.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([4, 4], (np.zeros(1, np.int64),), 2), "1 hash chains for 2 prompts"),
        (([4], (np.zeros(1, np.int64),), 0), "block_tokens must be an integer >= 1, got 0"),
    ],
)
def test_reusable_prefix_fraction_refuses_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        reusable_prefix_fraction(*args)
