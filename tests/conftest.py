"""Shared fixtures: small hand-made workloads."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import strategies as st

from llmsched_env.workload import Workload


def make_workload(arrival_s, prompt_tokens, output_tokens, predicted=None) -> Workload:
    """A workload from plain lists (predicted lengths default to the true ones)."""
    output = np.asarray(output_tokens)
    return Workload(
        arrival_s=np.asarray(arrival_s, dtype=float),
        prompt_tokens=np.asarray(prompt_tokens),
        output_tokens=output,
        predicted_output_tokens=output if predicted is None else np.asarray(predicted),
    )


def draw_tiny_routing_cluster(
    data: Any, *, coarse_arrivals: bool
) -> tuple[Workload, dict[str, Any], np.random.Generator]:
    """A tiny ``Routing-v0`` cluster drawn by hypothesis: its workload, env settings and rng.

    One to three replicas of a few dozen KV tokens and up to 24 requests whose prompts share
    prefixes (a random number of leading blocks of one of two documents). ``coarse_arrivals``
    puts arrivals on a 5 ms grid, so that some coincide with the ends of iterations; otherwise
    the gaps are exponential. The rng, drawn from too, is returned for the test's own draws.
    """
    n_replicas = data.draw(st.integers(1, 3), label="n_replicas")
    block = data.draw(st.sampled_from([1, 4, 16]), label="block")
    max_tokens = data.draw(st.integers(8, 48), label="max_tokens")
    kv = [data.draw(st.integers(max(block, 2) * 2, 96), label="kv") for _ in range(n_replicas)]
    n = data.draw(st.integers(1, 24), label="n")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    if coarse_arrivals:
        arrival = np.cumsum(rng.integers(0, 3, n) * 0.005)
    else:
        arrival = np.cumsum(rng.exponential(0.005, n))
    prompt = rng.integers(1, 30, n)
    output = rng.integers(1, 30, n)
    prompt[0], output[0] = 1, 1  # never an episode with every request rejected
    chains = []
    for p in prompt.tolist():
        shared = int(rng.integers(0, p // block + 1))
        doc = int(rng.integers(0, 2))
        chains.append([doc * 1000 + j for j in range(shared)])
    workload = make_workload(arrival, prompt, output).with_prefix_hashes(chains, block)
    settings = {
        "workload": "demo2",
        "latency": "demo2",
        "arrival_rate": 1.0,
        "n_replicas": n_replicas,
        "kv_memory": kv,
        "kv_block_tokens": block,
        "max_tokens": max_tokens,
        "chunk_size": max_tokens,
        "max_sequences": data.draw(st.integers(1, 6), label="max_sequences"),
    }
    return workload, settings, rng


def random_workload(rng: np.random.Generator, n: int, rate: float = 5.0) -> Workload:
    """Poisson arrivals with lognormal-ish prompt and output lengths."""
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    prompt = np.maximum(1, rng.lognormal(5.0, 1.0, n).astype(int))
    output = np.maximum(1, rng.lognormal(4.0, 1.0, n).astype(int))
    return make_workload(arrival, prompt, output)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def check_iteration_accounting(server) -> None:
    """Every arrived request of an ``IterationServer`` is in exactly one place; memory adds up.

    The places: completed, rejected, the waiting queue (preempted requests at its front, then the
    arrival-ordered rest), or a GPU's running or prefilling list. With paged KV, each GPU's blocks
    in use are the sum of its requests' blocks and never exceed its capacity, and no request off
    the GPUs holds blocks.
    """
    s = server
    waiting = s.waiting_ids().tolist()
    assert len(waiting) == s.n_waiting
    assert waiting[: len(s.requeued)] == list(s.requeued)
    on_gpus = []
    for g in range(s.n_gpus):
        mine = s.running[g].tolist() + list(s.prefilling[g])
        on_gpus += mine
        assert len(mine) == s.n_sequences[g] <= s.max_sequences
        if s.prefix_caching and hasattr(s, "_pools"):
            check_block_pool(s, g, mine)
        elif s.prefix_caching:
            check_compiled_block_pool(s, g, mine)
        elif s.paged:
            assert sum(s.request_blocks[i] for i in mine) == s.blocks_used[g]
        if s.paged:
            assert 0 <= s.blocks_used[g] <= s.capacity_blocks
            assert s.kv_used[g] == s.kv_reserved[g] == s.blocks_used[g] * s.kv_block_tokens
        else:
            assert s.kv_reserved[g] <= s.kv_capacity_tokens
    present = waiting + on_gpus
    assert len(present) == len(set(present))
    assert all(0 <= i < s.n_arrived for i in present)
    records = s.records
    assert not records.completed[present].any()
    assert (records.reject_reason[present] == 0).all()
    assert s.n_arrived == s.n_completed + s.n_rejected + len(present)
    assert int(records.completed.sum()) == s.n_completed
    if s.prefix_caching:
        # Requests off the GPUs hold no blocks.
        holding = (
            set(s._block_ids)
            if hasattr(s, "_pools")
            else set(np.flatnonzero(s.state.request_blocks).tolist())
        )
        assert holding <= set(on_gpus)
        assert int(records.prefix_hit_tokens.sum()) == s.prefix_hit_tokens
        assert 0 <= s.prefix_hit_tokens <= s.prefix_queried_tokens
    else:
        assert sum(s.request_blocks) == sum(s.blocks_used)
        assert s.prefix_hit_tokens == s.prefix_queried_tokens == 0
    assert int(records.preemptions.sum()) == s.n_preemptions
    assert int(records.recomputed_tokens.sum()) == s.recomputed_tokens


def check_block_pool(server, gpu: int, on_gpu: list[int]) -> None:
    """Prefix caching: ``gpu``'s block pool is consistent with the requests holding blocks.

    Referenced plus free blocks make the capacity, no block is both, each block's reference
    count is the number of requests on the GPU holding it, each request holds its counted blocks
    (no block twice), and every key is found in exactly the blocks that carry it: the first
    keyed in ``cached``, the others in ``duplicates``.
    """
    s = server
    pool = s._pools[gpu]
    holders = Counter()
    for i in on_gpu:
        blocks = s._block_ids.get(i, [])
        assert len(blocks) == s.request_blocks[i] and len(set(blocks)) == len(blocks)
        holders.update(blocks)
    referenced = [b for b in range(pool.n_blocks) if pool.ref_count[b] > 0]
    assert all(pool.ref_count[b] == holders[b] for b in range(pool.n_blocks))
    assert not set(referenced) & set(pool.free)
    assert len(referenced) + pool.n_free == pool.n_blocks == s.capacity_blocks
    assert s.blocks_used[gpu] == len(referenced)
    holding = {}
    for block, key in enumerate(pool.key):
        if key is not None:
            holding.setdefault(key, set()).add(block)
    assert holding.keys() == pool.cached.keys() and pool.duplicates.keys() <= holding.keys()
    for key, blocks in holding.items():
        others = pool.duplicates.get(key, [])
        assert {pool.cached[key], *others} == blocks and len(others) == len(blocks) - 1


def check_compiled_block_pool(server, gpu: int, on_gpu: list[int]) -> None:
    """:func:`check_block_pool` for the compiled server's arrays (``server.prefix_cache``).

    Also: the free queue's links run both ways, and the hash table finds every key at the
    block keyed first, the others following in its list of duplicates.
    """
    s = server
    p = s.prefix_cache
    size = int(p.blocks_per_gpu[0])
    lo = gpu * size
    room = int(p.room[0])
    held = [p.row_ids[p.row[i] * room : p.row[i] * room + s.request_blocks[i]] for i in on_gpu]
    rows = int(p.rows_per_gpu[0])
    mine = [int(p.row[i]) for i in on_gpu]
    free_rows = p.free_rows[gpu * rows : gpu * rows + p.n_free_rows[gpu]].tolist()
    assert sorted(mine + free_rows) == list(range(gpu * rows, (gpu + 1) * rows))
    for blocks in held:
        assert np.unique(blocks).size == blocks.size
        assert ((lo <= blocks) & (blocks < lo + size)).all()
    holders = np.bincount(np.concatenate([[lo], *held]) - lo, minlength=size)
    holders[0] -= 1
    ref_count = p.ref_count[lo : lo + size]
    np.testing.assert_array_equal(ref_count, holders)
    free, previous, b = [], -1, int(p.free_head[gpu])
    while b != -1:
        assert int(p.free_prev[b]) == previous
        free.append(b)
        previous, b = b, int(p.free_next[b])
    assert previous == int(p.free_tail[gpu])
    free = np.array(free, dtype=np.int64)
    assert np.unique(free).size == free.size and (ref_count[free - lo] == 0).all()
    assert int((ref_count > 0).sum()) + free.size == size == s.capacity_blocks
    assert s.blocks_used[gpu] == int((ref_count > 0).sum())
    assert not p.mark[lo : lo + size].any()  # freed_by's scratch is clean between calls
    keyed = p.key_b[lo : lo + size] != np.iinfo(np.int64).min
    keys = np.stack([p.key_a[lo : lo + size], p.key_b[lo : lo + size]], axis=1)
    table = slice(gpu * int(p.table_size[0]), (gpu + 1) * int(p.table_size[0]))
    blocks = p.table_block[table]
    heads = blocks[blocks != -1]
    found = np.stack([p.table_a[table], p.table_b[table]], axis=1)[blocks != -1]
    assert np.unique(found, axis=0).shape[0] == found.shape[0]
    np.testing.assert_array_equal(keys[heads - lo], found)
    assert keyed[heads - lo].all() and (p.dup_prev[heads] == -1).all()
    chained = heads.size
    for head in heads[p.dup_next[heads] != -1].tolist():
        b = int(p.dup_next[head])
        while b != -1:
            assert (keys[b - lo] == keys[head - lo]).all() and p.dup_prev[b] != -1
            chained += 1
            b = int(p.dup_next[b])
    assert chained == int(keyed.sum())  # every keyed block is found or chained
    assert np.unique(keys[keyed], axis=0).shape[0] == found.shape[0]


def check_deciding_gpu_blocks(server) -> None:
    """Paged KV: on the deciding (idle) GPU every request holds exactly the blocks of the tokens
    it has computed: ``p + g - 1`` for a decoding one, its prefilled tokens for a prefilling one."""
    s = server
    gpu = s.decision_gpu
    if not s.paged or gpu < 0:
        return
    prompt = s.workload.prompt_tokens
    b = s.kv_block_tokens
    for i, g in zip(s.running[gpu].tolist(), s.running_tokens_generated(gpu).tolist()):
        assert s.request_blocks[i] == -(-(int(prompt[i]) + g - 1) // b)
    for i in s.prefilling[gpu]:
        computed = int(prompt[i]) + int(s.records.tokens_generated[i]) - s.tokens_to_prefill(i)
        assert computed > 0
        assert s.request_blocks[i] == -(-computed // b)


def assert_same_workload_per_seed(episodes: pd.DataFrame) -> None:
    """Every policy served the same requests on a seed, and different seeds differ.

    Reads the ``workload_sha256`` fingerprint the evaluation harness records per episode.
    """
    per_seed = episodes.groupby("seed")["workload_sha256"]
    differing = per_seed.nunique()
    assert (differing == 1).all(), (
        "policies served different requests on seeds "
        f"{differing[differing > 1].index.tolist()}:\n"
        f"{episodes[['policy', 'seed', 'workload_sha256']].to_string()}"
    )
    assert per_seed.first().nunique() == episodes["seed"].nunique()


def multibin_batch_time_by_integration(
    k: int, batch_size: int, l_min: float = 1.0, l_max: float = 20.0, n_points: int = 200_000
) -> float:
    """Mean service time of a full batch under Multi-Bin batching, by numerical integration.

    An independent route to Theorem 4.2 of Guldogan et al. (Multi-Bin Batching for Increasing
    LLM Inference Throughput, arXiv 2412.04504): service times are uniform on
    ``[l_min, l_max]``, the k bins split that range into k equal intervals (equally likely), and a
    batch takes as long as its longest member. For a bin ``[a, b]`` the longest of ``B`` draws has
    ``E[max] = a + integral_a^b (1 - F(x)^B) dx`` with ``F(x) = (x - a) / (b - a)``; this
    integrates that with the midpoint rule and averages over the bins (no closed form used).
    """
    edges = np.linspace(l_min, l_max, k + 1)
    u = (np.arange(n_points) + 0.5) / n_points  # midpoints of [0, 1]
    tail_integral = float(np.mean(1.0 - u**batch_size))  # integral_0^1 (1 - u^B) du
    maxima = [a + (b - a) * tail_integral for a, b in zip(edges[:-1], edges[1:])]
    return float(np.mean(maxima))
