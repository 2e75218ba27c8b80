import numpy as np
import pytest

from llmsched_env.latency import AffineIterationLatency
from llmsched_env.sim import IterationServer, simulate
from llmsched_env.sim.prefix_cache import BlockPool
from tests.conftest import check_iteration_accounting, make_workload, random_workload


class RecordingLatency(AffineIterationLatency):
    """10 ms plus 1 ms per token, remembering each iteration's prefill tokens and cached KV."""

    def __init__(self):
        super().__init__(c_s=0.01, a_s_per_token=0.001)
        self.prefills: list[tuple[int, int]] = []

    def iteration_s(self, prefill_tokens, decode_tokens, context_tokens, rng, **kw):
        self.prefills.append((prefill_tokens, kw.get("prefill_kv_tokens", 0)))
        return super().iteration_s(prefill_tokens, decode_tokens, context_tokens, rng, **kw)


def cached_server(w, *, blocks, block_tokens=4, chunk_size=None, caching=True):
    return IterationServer(
        w,
        n_gpus=1,
        latency=RecordingLatency(),
        kv_capacity_tokens=blocks * block_tokens,
        max_tokens=100,
        max_sequences=16,
        rng=np.random.default_rng(0),
        chunk_size=chunk_size,
        kv_allocation="paged",
        kv_block_tokens=block_tokens,
        prefix_caching=caching,
    )


def step(s, decode=10**9, budget=10**9, cap=10**9):
    assert s.run_iteration(decode, budget, cap)
    check_iteration_accounting(s)
    s.advance()


# ---------------------------------------------------------------------- the block pool
def test_pool_evicts_the_least_recently_freed_block_and_a_request_tail_first():
    pool = BlockPool(6)
    a = pool.take(3)  # [0, 1, 2]
    b = pool.take(2)  # [3, 4]
    for j, block in enumerate(a):
        pool.cache(block, ("a", j))
    pool.cache(b[0], ("b", 0))
    assert pool.release(a) == 3 and list(pool.free) == [5, 2, 1, 0]
    assert pool.release(b) == 2 and list(pool.free) == [5, 2, 1, 0, 4, 3]
    # The never-used block first, then a's tail, then a's head, then b.
    assert pool.take(2) == [5, 2] and ("a", 2) not in pool.cached
    assert pool.longest_hit([("a", 0), ("a", 1), ("a", 2)]) == [0, 1]
    assert pool.take(1) == [1] and pool.longest_hit([("a", 0), ("a", 1)]) == [0]


def test_pool_touch_revives_a_free_cached_block():
    pool = BlockPool(3)
    [x] = pool.take(1)
    assert pool.cache(x, "k") and not pool.cache(x, "other")  # a block keeps its first key
    [y] = pool.take(1)
    pool.release([x])
    assert pool.evictable([x, y]) == 1 and pool.n_free == 2
    pool.touch([x])
    assert pool.ref_count[x] == 1 and x not in pool.free and pool.cached["k"] == x
    pool.touch([x])  # a second holder
    assert pool.release([x]) == 0 and pool.release([x]) == 1
    with pytest.raises(RuntimeError, match="3 KV blocks requested, only 2 free"):
        pool.take(3)


def test_pool_cache_all_keys_blocks_as_cache_does_one_by_one():
    one_by_one, at_once = BlockPool(6), BlockPool(6)
    blocks = one_by_one.take(5)
    assert at_once.take(5) == blocks
    keys = ["a", "b", "a", "c"]  # "a" twice: both blocks hold it
    for pool in (one_by_one, at_once):
        pool.cache(blocks[1], "z")  # an already keyed block keeps its key
    keyed = [one_by_one.cache(b, k) for b, k in zip(blocks, keys)]
    assert at_once.cache_all(blocks, keys) == sum(keyed) == 3  # pairs up to the shorter
    assert at_once.key == one_by_one.key and at_once.cached == one_by_one.cached
    assert at_once.duplicates == one_by_one.duplicates == {"a": [blocks[2]]}
    assert at_once.version == one_by_one.version


def test_a_key_several_blocks_hold_stays_findable_until_the_last_is_evicted():
    # vLLM keeps every block of a hash (its get_one_block takes the first): evicting the block
    # a lookup finds leaves the content findable in the others, in the order they were keyed.
    pool = BlockPool(4)
    x, y, z = pool.take(3)
    assert pool.cache_all([x, y, z], ["k", "k", "k"]) == 3
    assert pool.longest_hit(["k"]) == [x] and pool.duplicates == {"k": [y, z]}
    pool.release([y])  # free queue: [3, y]
    assert pool.take(2) == [3, y] and pool.duplicates == {"k": [z]}  # y's copy evicted
    pool.release([x])
    assert pool.take(1) == [x] and pool.longest_hit(["k"]) == [z] and not pool.duplicates
    pool.release([z])
    assert pool.take(1) == [z] and pool.longest_hit(["k"]) == [] and "k" not in pool.cached


# ---------------------------------------------------------------------- preemption
def preemption_schedule(caching):
    """Blocks of 4 tokens, 7 of them. Request 0 (prompt 4, 10 tokens) decodes beside request 1
    (prompt 11, 17 tokens); 1 preempts itself at its 7th decode, when its 16 computed tokens
    fill 4 blocks (keyed (1, j, 0)), which go to the free queue last first: [5, 3, 2, 1]. 0's
    next block (its 10th decision) evicts 5, 1's last block; 0 then completes and frees
    [0, 4, 6, 5] last first. Request 1 comes back to 17 tokens (11 + 6 generated): it finds
    blocks 1, 2, 3 (12 tokens) and recomputes only the 5-token tail."""
    w = make_workload([0.0, 0.0], [4, 11], [10, 17])
    s = cached_server(w, blocks=7, caching=caching)
    s.advance()
    step(s)  # both prefilled whole: 0 holds [0], 1 holds [1, 2, 3]
    for _ in range(5):
        step(s)  # decisions 2-6: 0 takes 4 and 6, 1 takes 5
    assert s.records.tokens_generated.tolist() == [6, 6] and s.free_blocks(0) == 0
    step(s)  # decision 7: 1's decode needs a block, and 1 is the most recent: preempted
    assert list(s.requeued) == [1] and s.records.preemptions.tolist() == [0, 1]
    return s


def test_readmitted_request_hits_its_own_cached_blocks_and_recomputes_only_the_tail():
    s = preemption_schedule(caching=True)
    pool = s._pools[0]
    assert list(pool.free) == [5, 3, 2, 1] and s.recomputed_tokens == 16
    assert [pool.cached[(1, j, 0)] for j in range(4)] == [1, 2, 3, 5]
    step(s)  # decision 8: 1's 4 cached blocks are free, so they count: 4 - 4 < 1 block needed
    assert list(s.requeued) == [1] and not s.can_admit(0)
    step(s)  # decision 9
    step(s)  # decision 10: 0's block evicts 5, then 0 completes
    assert (1, 3, 0) not in pool.cached and s.records.completed.tolist() == [True, False]
    assert list(pool.free) == [3, 2, 1, 5, 6, 4, 0]
    assert s.tokens_to_prefill(1) == 17
    step(s)  # decision 11: 1 takes [1, 2, 3] from the cache and 2 new blocks (5, then 6)
    assert s._block_ids[1] == [1, 2, 3, 5, 6] and list(pool.free) == [4, 0]
    # 0 completed: its own blocks were freed unkeyed (only 0 could have hit them again).
    assert all((0, j, 0) not in pool.cached for j in range(3))
    assert s.latency.prefills[-1] == (5, 12)  # 5 tokens computed, attending to 12 cached
    assert s.records.prefix_hit_tokens.tolist() == [0, 12] and s.prefix_hit_tokens == 12
    assert s.prefix_queried_tokens == 4 + 11 + 17
    assert s.records.recomputed_tokens.tolist() == [0, 4] and s.recomputed_tokens == 4
    assert s.records.tokens_generated[1] == 7  # the recomputation emitted the next token
    simulate(s, lambda server: server.run_iteration(10**9, 10**9, 10**9))
    assert s.done and s.records.completed.all() and s.blocks_used == [0]
    summary = s.summary()
    assert summary["prefix_hit_tokens"] == 12 and summary["prefix_queried_tokens"] == 32
    # The 12 hits were the readmission's (17 queried), which vLLM keeps out of its hit rate:
    # the first admissions (4 + 11 tokens) hit nothing.
    assert summary["preempted_prefix_hit_tokens"] == 12
    assert summary["preempted_prefix_queried_tokens"] == 17
    assert summary["prefix_hit_rate"] == 0.0


def test_without_caching_the_same_schedule_recomputes_everything():
    s = preemption_schedule(caching=False)
    for _ in range(4):
        step(s)
    assert s.latency.prefills[-1] == (17, 0)
    assert s.recomputed_tokens == 16 and s.prefix_hit_tokens == s.prefix_queried_tokens == 0
    assert s.summary()["prefix_hit_tokens"] == 0


# ---------------------------------------------------------------------- shared prefixes
@pytest.mark.parametrize(
    ("block_tokens", "hash_tokens", "hashes", "hit"),
    [
        (4, 4, ([10, 11, 12], [10, 11, 99]), 8),  # two shared blocks
        (4, 8, ([10], [10]), 8),  # one 8-token hash covers two blocks: (10, 0), (10, 1)
        (8, 4, ([10, 11, 12], [10, 11, 99]), 8),  # one block of two hashes: keyed by (11, 0)
        (4, 4, ([10, 11, 12], [13, 11, 12]), 0),  # a different first block shares nothing
    ],
)
def test_a_second_request_skips_the_prefix_blocks_it_shares(block_tokens, hash_tokens, hashes, hit):
    w = make_workload([0.0, 0.1], [12, 14], [50, 2]).with_prefix_hashes(hashes, hash_tokens)
    s = cached_server(w, blocks=20, block_tokens=block_tokens)
    s.advance()
    step(s)  # 0 prefilled whole; its hashed blocks are keyed at once
    while s.n_arrived < 2:
        step(s)
    shared = s._block_ids[0][: hit // block_tokens]
    step(s)
    assert s._block_ids[1][: hit // block_tokens] == shared
    assert all(s._pools[0].ref_count[b] == 2 for b in shared)  # still held by 0 too
    assert s.records.prefix_hit_tokens.tolist() == [0, hit]
    assert s.latency.prefills[-1] == (14 - hit, hit)
    assert s.prefix_queried_tokens == 12 + 14


def test_a_fully_cached_prompt_still_computes_its_last_block():
    # Equal 8-token prompts: 7 tokens may hit, which is 1 whole block of 4.
    w = make_workload([0.0, 0.1], [8, 8], [50, 1]).with_prefix_hashes(([1, 2], [1, 2]), 4)
    s = cached_server(w, blocks=20)
    s.advance()
    step(s)
    while s.n_arrived < 2:
        step(s)
    step(s)
    assert s.records.prefix_hit_tokens.tolist() == [0, 4] and s.latency.prefills[-1] == (4, 4)
    assert s.records.completed[1]  # output 1: done at its prefill, its blocks freed


def test_admission_counts_the_free_cached_blocks_it_revives():
    # 5 blocks of 4. Request 0 (prompt 8, hashes [1, 2], one token) completes at its prefill and
    # leaves blocks 0 and 1 cached and free; request 1 decodes and grows (block 3 at its first
    # decode). Request 2 (prompt 13, hashes [1, 2, 5]) finds blocks 0 and 1 but needs 2 more:
    # with 3 free blocks, 2 of them the ones it revives, it does not fit, although 2 new blocks
    # would be free.
    w = make_workload([0.0, 0.0, 0.03], [8, 4, 13], [1, 12, 1]).with_prefix_hashes(
        ([1, 2], [], [1, 2, 5]), 4
    )
    s = cached_server(w, blocks=5)
    s.advance()
    step(s)  # 0 and 1 admitted; 0 completes
    assert list(s._pools[0].free) == [3, 4, 1, 0]
    while s.n_arrived < 3:
        step(s)
    assert s.free_blocks(0) == 3 and s._cache_hits(0, 2) == ([0, 1], 2)
    assert not s.can_admit(0) and not s.can_admit_within(0, 100)
    step(s)
    assert s.waiting_ids().tolist() == [2]
    simulate(s, lambda server: server.run_iteration(10**9, 10**9, 10**9))
    # Meanwhile 1's third block (at its 10th decision) evicted block 1, the tail of 0's chain:
    # request 2 finds block 0 only.
    assert s.done and s.records.prefix_hit_tokens.tolist() == [0, 0, 4]


# ---------------------------------------------------------------------- settings
def test_prefix_caching_without_hits_matches_plain_paged_allocation():
    rng = np.random.default_rng(3)
    w = random_workload(rng, 60, rate=20.0)
    records = []
    for caching in (False, True):
        s = cached_server(w, blocks=10_000, chunk_size=64, caching=caching)
        s.max_tokens = 512
        simulate(s, lambda server: server.run_iteration(10**9, 10**9, 10**9))
        records.append(s.records.to_frame(s.n_arrived).drop(columns="prefix_hit_tokens"))
        assert s.n_preemptions == 0
    assert records[0].equals(records[1])


def test_bad_settings_are_refused():
    w = make_workload([0.0], [8], [2])
    with pytest.raises(ValueError, match="prefix_caching=True needs kv_allocation='paged'"):
        IterationServer(
            w,
            n_gpus=1,
            latency=RecordingLatency(),
            kv_capacity_tokens=100,
            max_tokens=100,
            max_sequences=4,
            rng=np.random.default_rng(0),
            prefix_caching=True,
        )
    hashed = w.with_prefix_hashes(([1, 2],), 4)
    with pytest.raises(ValueError, match="prefix_block_tokens=4 and kv_block_tokens=6 must divide"):
        cached_server(hashed, blocks=10, block_tokens=6)
    cached_server(hashed, blocks=10, block_tokens=6, caching=False)  # hashes unused: fine


def _play_to_the_end(env_id: str, policy_name: str, **kwargs):
    """The env after one seeded episode under the baseline ``policy_name``, and its end."""
    import gymnasium as gym

    import llmsched_env  # noqa: F401 (registers the env ids)
    from baselines import make_policy

    env = gym.make(env_id, workload="prefix-sharing", n_requests=200, **kwargs)
    obs, info = env.reset(seed=0)
    policy = make_policy(policy_name, env)
    while True:
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        if terminated or truncated:
            return env.unwrapped, terminated


def test_a_finished_request_leaves_no_block_keys_behind():
    # The keys of a request's blocks (about 100 bytes a block) were kept for the whole episode:
    # 23 KB per request of prefix-sharing, most of an episode's memory.
    # (A stochastic latency model keeps the Python server, whose keys are made when needed and
    # memoised; the compiled server computes each key from the hashes whenever it needs one.)
    env, terminated = _play_to_the_end(
        "llmsched/ContinuousBatching-v0",
        "vllm-v1",
        kv_allocation="paged",
        prefix_caching=True,
        latency="sim-a",
    )
    assert terminated and env.server.n_completed == 200 and env.server._shared_keys == {}
    # In a routed cluster, a Python replica also forgets the requests routed elsewhere.
    env, _ = _play_to_the_end(
        "llmsched/Routing-v0", "prefix-affinity", n_replicas=3, latency="sim-a"
    )
    assert all(replica._shared_keys == {} for replica in env.server.servers)
