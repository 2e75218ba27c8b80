"""The prefix cache of the compiled iteration-level server: its state, declared once.

:class:`~llmsched_env.sim.compiled_iteration_server.CompiledIterationServer` keeps, with prefix
caching on, what :class:`~llmsched_env.sim.prefix_cache.BlockPool` keeps per GPU and what
:class:`~llmsched_env.sim.iteration_kv.PagedKVAccounting` keeps per request, in one int64 buffer
(see :mod:`~llmsched_env.sim.state_schema`) that sits inside the server's state as its ``pool``
field, so that the compiled kernels (:mod:`llmsched_env.sim.prefix_kernels`) reach it from the
iteration state.

**Keys.** The Python server keys KV block ``j`` of request ``i`` with ``(hash, position)`` when
the workload's prefix hashes cover it, and with ``(i, j, 0)`` otherwise. Here a key is two
integers, ``(key_a, key_b)``: ``(hash, position)`` with ``position >= 0``, or ``(i, -1 - j)``.
Equal keys stay equal and different ones different, and nothing is made per key when the
episode starts: the workload's hashes are copied in (``hashes``) and each key is computed when a
block is looked up or keyed.

**Blocks.** Per GPU ``g``, blocks ``g * blocks_per_gpu .. (g + 1) * blocks_per_gpu - 1`` are its
pool, in the Python pool's numbering plus that offset. The free queue is a doubly linked list
over them (``free_next``, ``free_prev``, ``free_head``, ``free_tail``: least recently freed at
the head), so that a hit takes a free block off the queue in O(1). A key maps to the block a
lookup finds through the GPU's open-addressing hash table (``table_a``, ``table_b``,
``table_block``; linear probing, at most half full); the other blocks holding the same key
follow it in keying order in a doubly linked list (``dup_next``, ``dup_prev``), as the Python
pool's ``duplicates``.

**Block lists.** Only requests on a GPU hold blocks, at most one per sequence slot, so a
request's blocks are listed in a *row* of its GPU (``row_ids[row * room ...]``, ``room`` the
most blocks one request can hold), taken from the GPU's stack of free rows when it is admitted
and given back when its blocks are released.
"""

from __future__ import annotations

import numpy as np

from llmsched_env.sim.state_schema import Field, StateSchema
from llmsched_env.workload import Workload

#: The end of a linked list, an empty table slot, a request without a row.
NONE = -1
#: ``key_b`` of a block that holds no key (no private key's ``-1 - j`` reaches it).
NO_KEY = -(2**63)

SCHEMA = StateSchema(
    "PrefixCacheState",
    __name__,
    ("n_gpus", "n", "n_hashes", "n_rows", "n_row_ids", "n_blocks", "n_table"),
    (
        Field("block_tokens", "i", 1, "tokens per KV block (B)"),
        Field("hash_tokens", "i", 1, "tokens per hashed block of the workload (G)"),
        Field("blocks_per_gpu", "i", 1, "KV blocks of one GPU's pool"),
        Field("table_size", "i", 1, "hash-table slots per GPU (a power of two)"),
        Field("rows_per_gpu", "i", 1, "block-list rows of one GPU (its sequence slots)"),
        Field("room", "i", 1, "entries of a row: the most blocks one request can hold"),
        Field("hit_tokens_total", "i", 1, "tokens admissions skipped, all requests"),
        Field("queried_tokens_total", "i", 1, "tokens admissions looked up, all requests"),
        Field("preempted_hit_tokens", "i", 1, "the part of the hits readmissions made"),
        Field("preempted_queried_tokens", "i", 1, "the tokens readmissions looked up"),
        # per GPU
        Field("free_head", "i", "n_gpus", "the least recently freed block (-1: none free)"),
        Field("free_tail", "i", "n_gpus", "the most recently freed block (-1: none free)"),
        Field("n_free_rows", "i", "n_gpus", "rows on the GPU's stack of free rows"),
        # per request
        Field("hash_start", "i", "n + 1", "where its prefix hashes start in hashes"),
        Field("row", "i", "n", "the row listing its blocks (-1: it holds none)"),
        Field("hit_tokens", "i", "n", "tokens its admissions skipped (cached blocks)"),
        Field("discarded", "i", "n", "KV tokens its latest preemption discarded (0: none)"),
        Field("hashes", "i", "n_hashes", "the workload's prefix hashes, request after request"),
        # per row
        Field("free_rows", "i", "n_rows", "per GPU, a stack of its free rows"),
        Field("row_ids", "i", "n_row_ids", "per row, the blocks its request holds, in order"),
        # per block
        Field("ref_count", "i", "n_blocks", "requests holding the block"),
        Field("key_a", "i", "n_blocks", "its key's first part"),
        Field("key_b", "i", "n_blocks", "its key's second part (NO_KEY: no key)"),
        Field("free_next", "i", "n_blocks", "the next block of the free queue (-1: tail)"),
        Field("free_prev", "i", "n_blocks", "the previous block of the free queue (-1: head)"),
        Field("dup_next", "i", "n_blocks", "the next block keyed with its key (-1: none)"),
        Field("dup_prev", "i", "n_blocks", "the previous block keyed with its key (-1: none)"),
        Field("mark", "i", "n_blocks", "scratch: holders counted by freed_by (0 between calls)"),
        # per GPU, its hash table
        Field("table_a", "i", "n_table", "a key's first part"),
        Field("table_b", "i", "n_table", "its second part"),
        Field("table_block", "i", "n_table", "the block a lookup of it finds (-1: empty slot)"),
    ),
)

#: The named tuple of the prefix cache's arrays.
PrefixCacheState = SCHEMA.tuple_type
#: Compiled ``state_view(floats, ints, layout)`` (``floats``: any float64 array; none is read).
state_view = SCHEMA.view


def row_room(workload: Workload, block_tokens: int, blocks_per_gpu: int) -> int:
    """Entries of a block-list row: the most blocks a request of ``workload`` can hold.

    A request holds the blocks of its computed tokens, fewer than its prompt plus output; one
    whose prompt plus output exceed a GPU's blocks is rejected at arrival, so none holds more
    than ``blocks_per_gpu`` (the kernels check no bounds: this is the row's whole room).
    """
    if len(workload) == 0:
        return 1
    tokens = int((workload.prompt_tokens.astype(np.int64) + workload.output_tokens).max())
    return max(1, min(-(-tokens // block_tokens), blocks_per_gpu))


def prefix_cache_layout(
    workload: Workload, n_gpus: int, blocks_per_gpu: int, block_tokens: int, rows_per_gpu: int
) -> np.ndarray:
    """The layout of an episode's prefix cache (its int buffer's length is the last entry).

    Args:
        workload: The episode's requests (their prefix hashes are copied in).
        n_gpus: GPUs, each with a pool of its own.
        blocks_per_gpu: KV blocks of one GPU.
        block_tokens: Tokens per KV block.
        rows_per_gpu: Requests one GPU can hold at once (its sequence slots).
    """
    hashes = workload.prefix_block_hashes
    n_rows = n_gpus * rows_per_gpu
    table_size = 2
    while table_size < 2 * blocks_per_gpu:
        table_size *= 2
    return SCHEMA.layout(
        n_gpus=n_gpus,
        n=len(workload),
        n_hashes=0 if hashes is None else sum(h.shape[0] for h in hashes),
        n_rows=n_rows,
        n_row_ids=n_rows * row_room(workload, block_tokens, blocks_per_gpu),
        n_blocks=n_gpus * blocks_per_gpu,
        n_table=n_gpus * table_size,
    )


def start_prefix_cache(
    ints: np.ndarray, layout: np.ndarray, workload: Workload, block_tokens: int
) -> None:
    """Fill a zeroed prefix cache laid out by :func:`prefix_cache_layout` for the episode's start.

    Every block is free, in order (as a fresh ``BlockPool``'s), no block has a key and every row
    is free. It is filled in place (the buffer may be a view into the server's state), so that
    nothing of the episode's size is allocated twice.
    """
    sizes = SCHEMA.sizes(layout)
    n_gpus, n_blocks, n_rows = sizes["n_gpus"], sizes["n_blocks"], sizes["n_rows"]
    blocks_per_gpu, rows_per_gpu = n_blocks // n_gpus, n_rows // n_gpus
    p = SCHEMA.views(np.zeros(0), ints, layout)
    p.block_tokens[0] = block_tokens
    p.hash_tokens[0] = workload.prefix_block_tokens
    p.blocks_per_gpu[0] = blocks_per_gpu
    p.table_size[0] = sizes["n_table"] // n_gpus
    p.rows_per_gpu[0] = rows_per_gpu
    p.room[0] = sizes["n_row_ids"] // max(n_rows, 1)
    hashes = workload.prefix_block_hashes
    if hashes is not None:
        np.cumsum([h.shape[0] for h in hashes], out=p.hash_start[1:])
        if p.hashes.size:
            np.concatenate(hashes, out=p.hashes)
    p.row[:] = NONE
    p.n_free_rows[:] = rows_per_gpu
    p.free_rows[:] = np.arange(n_rows, dtype=np.int64)
    p.key_b[:] = NO_KEY
    p.dup_next[:] = NONE
    p.dup_prev[:] = NONE
    p.table_block[:] = NONE
    ids = np.arange(n_blocks, dtype=np.int64)
    p.free_next[:] = ids + 1
    p.free_prev[:] = ids - 1
    if blocks_per_gpu:
        first = np.arange(n_gpus, dtype=np.int64) * blocks_per_gpu
        last = first + blocks_per_gpu - 1
        p.free_next[last] = NONE
        p.free_prev[first] = NONE
        p.free_head[:] = first
        p.free_tail[:] = last
    else:
        p.free_head[:] = NONE
        p.free_tail[:] = NONE


def allocate_prefix_cache(
    workload: Workload, n_gpus: int, blocks_per_gpu: int, block_tokens: int, rows_per_gpu: int
) -> tuple[np.ndarray, np.ndarray]:
    """A prefix cache of its own ``(ints, layout)`` at the start of an episode (for tests).

    The server lays its prefix cache out in its own state instead (:func:`prefix_cache_layout`,
    :func:`start_prefix_cache`).
    """
    layout = prefix_cache_layout(workload, n_gpus, blocks_per_gpu, block_tokens, rows_per_gpu)
    ints = np.zeros(int(layout[-1]), dtype=np.int64)
    start_prefix_cache(ints, layout, workload, block_tokens)
    return ints, layout


def prefix_cache_views(ints: np.ndarray, layout: np.ndarray) -> PrefixCacheState:
    """The prefix cache's arrays, as numpy views (for Python code)."""
    return SCHEMA.views(np.zeros(0), ints, layout)
