"""A GPU's pool of KV blocks with automatic prefix caching, as vLLM V1 keeps it.

vLLM V1 (``vllm/v1/core/block_pool.py``, ``kv_cache_utils.py``, ``kv_cache_manager.py``) gives
each full block of a request's computed tokens a content key (a hash of the block's tokens and of
its prefix). A block stays in the cache, findable by its key, until it is *evicted*: freed blocks
are not wiped but appended to the tail of a free queue, and allocation takes blocks from its
head, dropping the key of a cached block it reuses. So the least recently freed block is evicted
first, and since a request frees its blocks last block first, its tail goes before its head. A
request that arrives (or comes back after a preemption) looks up the longest prefix of its keys
in the cache and references those blocks instead of computing their tokens again; a referenced
block that was free leaves the free queue. Blocks are shared by reference counts.

Several blocks can hold the same key (two requests that computed the same prefix, one of them
before the other's blocks were cached): a lookup finds the one keyed first, and when it is
evicted the next one, as vLLM's ``get_one_block`` does over its blocks of a hash.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable


class BlockPool:
    """``n_blocks`` KV blocks with reference counts, content keys and an LRU free queue.

    Args:
        n_blocks: Blocks of the GPU.

    Attributes:
        ref_count: Per block, how many requests hold it.
        key: Per block, its content key, or ``None`` (never computed in full, or evicted).
        cached: Content key to the block a lookup finds (the one keyed first), for every key.
        duplicates: For a key that more blocks hold, those others, in the order they were keyed.
        free: The free queue, head first: blocks with no holder (keyed ones are still cached).
        version: Increases with every change (callers memoise lookups on it).

    Example:
        >>> pool = BlockPool(3)
        >>> a = pool.take(2)
        >>> pool.cache(a[0], "x"), pool.release(a), list(pool.free)
        (True, 2, [2, 1, 0])
        >>> pool.longest_hit(["x", "y"]), pool.take(2), "x" in pool.cached
        ([0], [2, 1], True)
    """

    def __init__(self, n_blocks: int) -> None:
        self.n_blocks = int(n_blocks)
        self.ref_count = [0] * self.n_blocks
        self.key: list[Hashable | None] = [None] * self.n_blocks
        self.cached: dict[Hashable, int] = {}
        self.duplicates: dict[Hashable, list[int]] = {}
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(self.n_blocks))
        self.version = 0

    @property
    def n_free(self) -> int:
        """Blocks with no holder (cached or not): what an allocation can take."""
        return len(self.free)

    def longest_hit(self, keys: Iterable[Hashable]) -> list[int]:
        """The cached blocks of the longest prefix of ``keys`` found in the cache."""
        cached = self.cached
        hits = []
        for key in keys:
            block = cached.get(key)
            if block is None:
                break
            hits.append(block)
        return hits

    def evictable(self, blocks: Iterable[int]) -> int:
        """How many of ``blocks`` have no holder (they sit in the free queue)."""
        ref_count = self.ref_count
        return sum(1 for block in blocks if ref_count[block] == 0)

    def touch(self, blocks: Iterable[int]) -> None:
        """Add a holder to each of ``blocks`` (cache hits), taking free ones off the queue."""
        ref_count, free = self.ref_count, self.free
        for block in blocks:
            if ref_count[block] == 0:
                del free[block]
            ref_count[block] += 1
        self.version += 1

    def take(self, n: int) -> list[int]:
        """Allocate ``n`` blocks from the head of the free queue, evicting their keys.

        Raises:
            RuntimeError: If fewer than ``n`` blocks are free (the caller checks first).
        """
        free = self.free
        if n > len(free):
            raise RuntimeError(f"{n} KV blocks requested, only {len(free)} free")
        ref_count, key = self.ref_count, self.key
        blocks = []
        for _ in range(n):
            block = free.popitem(last=False)[0]
            if key[block] is not None:
                self._evict(block)
            ref_count[block] = 1
            blocks.append(block)
        self.version += 1
        return blocks

    def _evict(self, block: int) -> None:
        """Drop ``block``'s key; another block with the same key, if any, takes its place."""
        old = self.key[block]
        self.key[block] = None
        others = self.duplicates.get(old)
        if others is None:
            del self.cached[old]
            return
        if self.cached[old] == block:
            self.cached[old] = others.pop(0)
        else:
            others.remove(block)
        if not others:
            del self.duplicates[old]

    def cache(self, block: int, key: Hashable) -> bool:
        """Give a computed full block its content key, unless it has one already.

        Returns:
            Whether the block got the key.
        """
        return self.cache_all((block,), (key,)) == 1

    def cache_all(self, blocks: Iterable[int], keys: Iterable[Hashable]) -> int:
        """:meth:`cache` each of ``blocks`` with its key from ``keys`` (pairs up to the shorter).

        Returns:
            How many blocks got their key.
        """
        block_key, cached = self.key, self.cached
        n = 0
        for block, key in zip(blocks, keys):
            if block_key[block] is not None:
                continue
            block_key[block] = key
            if key in cached:
                self.duplicates.setdefault(key, []).append(block)
            else:
                cached[key] = block
            n += 1
        self.version += n
        return n

    def release(self, blocks: list[int]) -> int:
        """Drop a holder from each of a request's ``blocks``; return how many became free.

        The blocks are visited last first, so a request's tail joins the free queue (and is
        evicted) before its head, as vLLM frees them.
        """
        ref_count, free = self.ref_count, self.free
        freed = 0
        for block in reversed(blocks):
            ref_count[block] -= 1
            if ref_count[block] == 0:
                free[block] = None
                freed += 1
        self.version += 1
        return freed
