"""Compiled operations of the prefix cache: vLLM V1's block pool on the arrays of a run.

The operations of :class:`~llmsched_env.sim.prefix_cache.BlockPool` and of the prefix-caching
parts of :class:`~llmsched_env.sim.iteration_kv.PagedKVAccounting`, with the same rules in the
same order, on the state of :mod:`llmsched_env.sim.prefix_cache_state`: lookups of a request's
longest cached prefix, allocation from the head of the free queue (evicting the keys of the
blocks it reuses), keying of computed blocks, and release (last block first). The iteration
kernels (:mod:`llmsched_env.sim.iteration_kernels`) call them with the iteration state's
``now``, ``pool`` and ``pool_layout`` arrays; each returns what the caller's own counters need
(blocks taken off the free queue, blocks freed), and the caller keeps ``blocks_used`` and
``request_blocks``.
"""

from __future__ import annotations

from llmsched_env.jit import njit
from llmsched_env.sim.prefix_cache_state import NO_KEY, NONE, state_view

#: Multiplier of the table's hash (2**64 over the golden ratio, as a signed 64-bit integer).
_GOLDEN = -7046029254386353131


# ---------------------------------------------------------------------- the keys and the table
@njit(cache=True, inline="always")
def _key_of(p, index, j):
    """The key ``(key_a, key_b)`` of block ``j`` of request ``index`` (see the state's module).

    With hashed blocks of ``G`` tokens and KV blocks of ``B``, block ``j`` within the hashes is
    keyed by the hash of the hashed block holding its last token and its position in it
    (``PagedKVAccounting._prefix_keys``); any other block by the request and ``-1 - j``.
    """
    if j < _n_shared(p, index):
        b, g = p.block_tokens[0], p.hash_tokens[0]
        return p.hashes[p.hash_start[index] + ((j + 1) * b - 1) // g], (j * b % g) // b
    return index, -1 - j


@njit(cache=True, inline="always")
def _n_shared(p, index):
    """How many of ``index``'s blocks its prefix hashes cover."""
    return (p.hash_start[index + 1] - p.hash_start[index]) * p.hash_tokens[0] // p.block_tokens[0]


@njit(cache=True, inline="always")
def _home(a, b, mask):
    """The table slot where a lookup of key ``(a, b)`` starts."""
    return (((a * _GOLDEN) ^ b) * _GOLDEN >> 32) & mask


@njit(cache=True, inline="always")
def _find(p, gpu, a, b):
    """Position in the table arrays of key ``(a, b)`` on ``gpu``, or -1 if no block holds it."""
    size = p.table_size[0]
    base = gpu * size
    mask = size - 1
    slot = _home(a, b, mask)
    while p.table_block[base + slot] != NONE:
        if p.table_a[base + slot] == a and p.table_b[base + slot] == b:
            return base + slot
        slot = (slot + 1) & mask
    return -1


@njit(cache=True, inline="always")
def _insert(p, gpu, a, b, block):
    """Make ``block`` what a lookup of key ``(a, b)`` (not in the table) finds on ``gpu``."""
    size = p.table_size[0]
    base = gpu * size
    mask = size - 1
    slot = _home(a, b, mask)
    while p.table_block[base + slot] != NONE:
        slot = (slot + 1) & mask
    p.table_a[base + slot] = a
    p.table_b[base + slot] = b
    p.table_block[base + slot] = block


@njit(cache=True, inline="always")
def _delete(p, gpu, position):
    """Remove the table entry at ``position``, shifting back the entries probed past it."""
    size = p.table_size[0]
    base = gpu * size
    mask = size - 1
    i = position - base
    j = i
    while True:
        j = (j + 1) & mask
        if p.table_block[base + j] == NONE:
            break
        home = _home(p.table_a[base + j], p.table_b[base + j], mask)
        # The entry at j stays if its home is cyclically in (i, j].
        if (i < j and i < home <= j) or (i > j and (home > i or home <= j)):
            continue
        p.table_a[base + i] = p.table_a[base + j]
        p.table_b[base + i] = p.table_b[base + j]
        p.table_block[base + i] = p.table_block[base + j]
        i = j
    p.table_block[base + i] = NONE


@njit(cache=True, inline="always")
def _lookup(p, gpu, a, b):
    """The block a lookup of key ``(a, b)`` finds on ``gpu`` (the one keyed first), or -1."""
    position = _find(p, gpu, a, b)
    return p.table_block[position] if position >= 0 else NONE


# ---------------------------------------------------------------------- blocks
@njit(cache=True, inline="always")
def _unlink_free(p, gpu, block):
    """Take ``block`` off ``gpu``'s free queue."""
    before, after = p.free_prev[block], p.free_next[block]
    if before == NONE:
        p.free_head[gpu] = after
    else:
        p.free_next[before] = after
    if after == NONE:
        p.free_tail[gpu] = before
    else:
        p.free_prev[after] = before


@njit(cache=True, inline="always")
def _append_free(p, gpu, block):
    """Put ``block`` at the tail of ``gpu``'s free queue (evicted last)."""
    tail = p.free_tail[gpu]
    p.free_prev[block] = tail
    p.free_next[block] = NONE
    if tail == NONE:
        p.free_head[gpu] = block
    else:
        p.free_next[tail] = block
    p.free_tail[gpu] = block


@njit(cache=True, inline="always")
def _evict(p, gpu, block):
    """Drop ``block``'s key; the next block keyed with it, if any, is then found instead."""
    a, b = p.key_a[block], p.key_b[block]
    p.key_b[block] = NO_KEY
    before, after = p.dup_prev[block], p.dup_next[block]
    p.dup_prev[block] = p.dup_next[block] = NONE
    if before == NONE:  # the block lookups find
        position = _find(p, gpu, a, b)
        if after == NONE:
            _delete(p, gpu, position)
        else:
            p.table_block[position] = after
            p.dup_prev[after] = NONE
        return
    p.dup_next[before] = after
    if after != NONE:
        p.dup_prev[after] = before


@njit(cache=True, inline="always")
def _cache(p, gpu, block, a, b):
    """Give a computed full block the key ``(a, b)``, unless it has one (``BlockPool.cache``)."""
    if p.key_b[block] != NO_KEY:
        return
    p.key_a[block] = a
    p.key_b[block] = b
    position = _find(p, gpu, a, b)
    if position < 0:
        _insert(p, gpu, a, b, block)
        return
    last = p.table_block[position]
    while p.dup_next[last] != NONE:
        last = p.dup_next[last]
    p.dup_next[last] = block
    p.dup_prev[block] = last


@njit(cache=True, inline="always")
def _take(p, gpu, index, held, n):
    """Append ``n`` blocks from the head of the free queue to ``index``'s list of ``held``."""
    start = p.row[index] * p.room[0] + held
    for m in range(n):
        block = p.free_head[gpu]
        _unlink_free(p, gpu, block)
        if p.key_b[block] != NO_KEY:
            _evict(p, gpu, block)
        p.ref_count[block] = 1
        p.row_ids[start + m] = block


# ---------------------------------------------------------------------- the operations
@njit(cache=True)
def longest_hit(floats, ints, layout, gpu, index, tokens):
    """Cached blocks of the longest prefix of waiting ``index``'s keys on ``gpu``.

    At most ``(tokens - 1) // block_tokens`` blocks of its ``tokens`` to prefill, so that the
    last token is computed (``PagedKVAccounting._cache_hits``).

    Returns:
        ``(hits, evictable)``: how many blocks hit, and how many of those are free.
    """
    p = state_view(floats, ints, layout)
    most = (tokens - 1) // p.block_tokens[0]
    hits = evictable = 0
    for j in range(most):
        a, b = _key_of(p, index, j)
        block = _lookup(p, gpu, a, b)
        if block == NONE:
            break
        hits += 1
        if p.ref_count[block] == 0:
            evictable += 1
    return hits, evictable


@njit(cache=True)
def admit_cached(floats, ints, layout, gpu, index, hits, need, tokens, readmitted):
    """Give admitted ``index`` its ``hits`` cached blocks and ``need`` new ones.

    ``PagedKVAccounting._admit_cached``: the request gets a row of the GPU for its block list,
    the hits (looked up again: the pool has not changed since :func:`longest_hit` counted
    them) are held (free ones leave the free queue), then new blocks are taken; the hit
    counters grow by the hit tokens and the ``tokens`` looked up. Discarded tokens of its last
    preemption found in the cache are not recomputed.

    Returns:
        ``(revived, hit_tokens, saved)``: hit blocks that were free, the tokens they hold, and
        the recomputed tokens the hits save.
    """
    p = state_view(floats, ints, layout)
    # A row of the GPU's for its block list (one per sequence slot: one is free).
    rows = p.rows_per_gpu[0]
    p.n_free_rows[gpu] -= 1
    p.row[index] = p.free_rows[gpu * rows + p.n_free_rows[gpu]]
    start = p.row[index] * p.room[0]
    revived = 0
    for j in range(hits):
        a, b = _key_of(p, index, j)
        block = _lookup(p, gpu, a, b)
        if p.ref_count[block] == 0:
            _unlink_free(p, gpu, block)
            revived += 1
        p.ref_count[block] += 1
        p.row_ids[start + j] = block
    _take(p, gpu, index, hits, need)
    hit_tokens = hits * p.block_tokens[0]
    p.hit_tokens_total[0] += hit_tokens
    p.queried_tokens_total[0] += tokens
    p.hit_tokens[index] += hit_tokens
    if readmitted:
        p.preempted_hit_tokens[0] += hit_tokens
        p.preempted_queried_tokens[0] += tokens
    discarded = p.discarded[index]
    p.discarded[index] = 0
    saved = 0
    if discarded and hit_tokens:
        saved = min(discarded, hit_tokens)
    return revived, hit_tokens, saved


@njit(cache=True)
def grow(floats, ints, layout, gpu, index, held, n):
    """Give ``index``, holding ``held`` blocks, ``n`` more from the free queue's head."""
    _take(state_view(floats, ints, layout), gpu, index, held, n)


@njit(cache=True)
def release(floats, ints, layout, gpu, index, held, computed, comes_back):
    """Free ``index``'s ``held`` blocks, keeping the full blocks of ``computed`` tokens cached.

    ``PagedKVAccounting._release``: a request that ``comes_back`` (preempted) keys all of
    them, its own keys included, and remembers ``computed`` as its discarded tokens; a
    completed one keys only its hashed ones. Blocks are released last first, and the
    request's row goes back to the GPU's free rows.

    Returns:
        How many blocks became free (no other holder).
    """
    p = state_view(floats, ints, layout)
    row = p.row[index]
    start = row * p.room[0]
    full = computed // p.block_tokens[0]
    keyed = min(held, full)
    if not comes_back:
        keyed = min(keyed, _n_shared(p, index))
    for j in range(keyed):
        a, b = _key_of(p, index, j)
        _cache(p, gpu, p.row_ids[start + j], a, b)
    if comes_back:
        p.discarded[index] = computed
    freed = 0
    for j in range(held - 1, -1, -1):
        block = p.row_ids[start + j]
        p.ref_count[block] -= 1
        if p.ref_count[block] == 0:
            _append_free(p, gpu, block)
            freed += 1
    p.free_rows[gpu * p.rows_per_gpu[0] + p.n_free_rows[gpu]] = row
    p.n_free_rows[gpu] += 1
    p.row[index] = NONE
    return freed


@njit(cache=True)
def cache_prompt_blocks(floats, ints, layout, gpu, index, before, after):
    """Key the hashed blocks of ``index`` that its tokens ``before .. after - 1`` completed."""
    p = state_view(floats, ints, layout)
    stop = min(after // p.block_tokens[0], _n_shared(p, index))
    start = p.row[index] * p.room[0]
    for j in range(before // p.block_tokens[0], stop):
        a, b = _key_of(p, index, j)
        _cache(p, gpu, p.row_ids[start + j], a, b)


@njit(cache=True)
def freed_by(floats, ints, layout, running, started, admitted_at, since, request_blocks):
    """Blocks that preempting the requests admitted after ``since`` would free.

    ``PagedKVAccounting._freed_by`` over the GPU's ``running`` and ``started`` requests whose
    admission counter is above ``since``: the blocks they hold that no one else holds.
    """
    p = state_view(floats, ints, layout)
    room = p.room[0]
    freed = 0
    for counting in (True, False):  # count the holders among them, then the blocks they alone hold
        for group in (running, started):
            for i in range(group.shape[0]):
                index = group[i]
                if admitted_at[index] <= since:
                    continue
                start = p.row[index] * room
                for j in range(request_blocks[index]):
                    block = p.row_ids[start + j]
                    if counting:
                        p.mark[block] += 1
                    elif p.mark[block] != 0:
                        if p.mark[block] == p.ref_count[block]:
                            freed += 1
                        p.mark[block] = 0  # counted once; the scratch is clean again
    return freed
