"""KV-block accounting of the iteration-level server in paged mode, with prefix caching.

:class:`PagedKVAccounting` gives requests KV blocks as their tokens are computed, frees them
(keeping full blocks cached when prefix caching is on), and preempts the most recently admitted
requests when an iteration's blocks are not free, as vLLM V1's scheduler and KV cache manager do
(Kwon et al., PagedAttention, SOSP 2023; ``vllm/v1/core/sched/scheduler.py``,
``vllm/v1/core/kv_cache_manager.py``). The rules are stated in
:mod:`llmsched_env.sim.iteration_server`; the block pool is :mod:`llmsched_env.sim.prefix_cache`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterator
from itertools import chain

import numpy as np

from llmsched_env.sim.paged_kv import allocate_in_admission_order, blocks_for
from llmsched_env.sim.running_state import OUTPUT


class PagedKVAccounting:
    """KV blocks of :class:`~llmsched_env.sim.iteration_server.IterationServer` (paged mode).

    A mixin: it works on the server's state (``blocks_used``, ``request_blocks``, the block
    pools and the waiting queue), which the server's constructor sets up.
    """

    def free_blocks(self, gpu: int) -> int:
        """Free KV blocks of ``gpu`` (paged mode)."""
        return self.capacity_blocks - self.blocks_used[gpu]

    def _blocks_for(self, tokens: int) -> int:
        return blocks_for(tokens, self.kv_block_tokens)

    # ------------------------------------------------------------------ prefix caching
    def _block_keys(self, index: int, stop: int) -> Iterator[Hashable]:
        """The content keys of request ``index``'s blocks ``0 .. stop - 1``, in order (lazily).

        Block ``j`` holds tokens ``j*B .. (j+1)*B - 1``. A block covered by the workload's prefix
        hashes is keyed by the hash of the hashed block that ends with (or contains) it and its
        position in that block (:meth:`_prefix_keys`); any other block gets a key of its own,
        ``(index, j, 0)``, that only the same request can hit again.
        """
        shared = self._prefix_keys(index)
        n_shared = len(shared)
        if stop <= n_shared:
            return iter(shared[:stop])
        return chain(shared, ((index, j, 0) for j in range(n_shared, stop)))

    def _prefix_keys(self, index: int) -> list[tuple[int, int]]:
        """The keys of request ``index``'s blocks that its prefix hashes cover (memoised).

        With hashed blocks of ``G`` tokens and KV blocks of ``B``, KV block ``j`` is keyed by
        ``(hash of the hashed block holding its last token, (j * B mod G) // B)``: one hashed
        block covers ``G / B`` KV blocks when ``G >= B``, and ``B / G`` hashed blocks make one KV
        block (keyed by the last one's hash, which covers the whole prefix) when ``B > G``.
        """
        keys = self._shared_keys.get(index)
        if keys is not None:
            return keys
        hashes = self.workload.prefix_block_hashes
        keys = []
        if hashes is not None:
            chain = hashes[index].tolist()
            g, b = self.workload.prefix_block_tokens, self.kv_block_tokens
            n_blocks = len(chain) * g // b
            keys = [(chain[((j + 1) * b - 1) // g], (j * b % g) // b) for j in range(n_blocks)]
        self._shared_keys[index] = keys
        return keys

    def _cache_hits(self, gpu: int, index: int) -> tuple[list[int], int]:
        """Cached blocks of the longest prefix of waiting ``index``'s blocks on ``gpu``.

        At most ``(tokens - 1) // B`` blocks, so that at least the last token is computed (its
        logits give the next token). Memoised per GPU until its pool or the request's tokens
        to prefill change (a preemption on another GPU raises them, allowing one more block).

        Returns:
            The blocks, and how many of them are free (their use takes them off the free queue).
        """
        pool = self._pools[gpu]
        most = (self._target[index] - 1) // self.kv_block_tokens
        memo = self._hit_memo[gpu]
        if memo[0] == index and memo[1] == pool.version and memo[2] == most:
            return memo[3], memo[4]
        hits = pool.longest_hit(self._block_keys(index, most))
        evictable = pool.evictable(hits)
        self._hit_memo[gpu] = (index, pool.version, most, hits, evictable)
        return hits, evictable

    def _freed_by(self, gpu: int, requests: list[int]) -> int:
        """Blocks of ``gpu`` that preempting all of ``requests`` would free (no other holder)."""
        counts = Counter(b for i in requests for b in self._block_ids.get(i, ()))
        ref_count = self._pools[gpu].ref_count
        return sum(1 for block, n in counts.items() if n == ref_count[block])

    def _grow(self, gpu: int, index: int, n: int) -> None:
        """Give request ``index`` ``n`` new blocks of ``gpu`` (from its pool's free queue head)."""
        if self.prefix_caching:
            blocks = self._pools[gpu].take(n)
            self._block_ids.setdefault(index, []).extend(blocks)
        self.request_blocks[index] += n
        self.blocks_used[gpu] += n

    def _release(self, gpu: int, index: int, computed: int, *, comes_back: bool) -> None:
        """Free request ``index``'s blocks (paged mode).

        With prefix caching the full blocks of its ``computed`` tokens stay cached, and only the
        blocks no other request holds become free. A block outside the prefix hashes has a key
        that only ``index`` can hit (:meth:`_block_keys`), so it is keyed only when the request
        ``comes_back`` (a preemption); a completed request's own blocks stay unkeyed, which no
        lookup can tell apart from keyed blocks no one will ever ask for.
        """
        if not self.prefix_caching:
            self.blocks_used[gpu] -= self.request_blocks[index]
            self.request_blocks[index] = 0
            return
        pool = self._pools[gpu]
        blocks = self._block_ids.pop(index, [])
        full = computed // self.kv_block_tokens
        if comes_back:
            pool.cache_all(blocks, self._block_keys(index, full))
        else:
            pool.cache_all(blocks, self._prefix_keys(index)[:full])
            # Done: its keys (about 100 bytes a block) would otherwise stay for the episode.
            self._shared_keys.pop(index, None)
        self.blocks_used[gpu] -= pool.release(blocks)
        self.request_blocks[index] = 0

    def _cache_prompt_blocks(self, gpu: int, index: int, before: int, after: int) -> None:
        """Key the hashed blocks of ``index`` that its tokens ``before .. after - 1`` completed.

        Others can hit them while ``index`` still runs; its other blocks are keyed when a
        preemption frees them (:meth:`_release`).
        """
        shared = self._prefix_keys(index)
        b = self.kv_block_tokens
        stop = min(after // b, len(shared))
        if before // b < stop:
            start = before // b
            self._pools[gpu].cache_all(self._block_ids[index][start:stop], shared[start:stop])

    def _admit_cached(self, gpu: int, index: int, hits: list[int], need: int) -> None:
        """Give admitted ``index`` its cached prefix ``hits`` and ``need`` new blocks."""
        pool = self._pools[gpu]
        hit_tokens = len(hits) * self.kv_block_tokens
        self.blocks_used[gpu] += pool.evictable(hits)  # free cached blocks now held again
        pool.touch(hits)
        self._block_ids[index] = list(hits)
        self.request_blocks[index] = len(hits)
        self._grow(gpu, index, need)
        self._prefilled[index] = hit_tokens
        self.prefix_hit_tokens += hit_tokens
        self.prefix_queried_tokens += self._target[index]
        records = self._records
        records.prefix_hit_tokens[index] += hit_tokens
        if records.preemptions[index]:
            self.preempted_prefix_hit_tokens += hit_tokens
            self.preempted_prefix_queried_tokens += self._target[index]
        discarded = self._discarded.pop(index, 0)
        if discarded and hit_tokens:
            # Discarded tokens found in the cache are not computed again.
            saved = min(discarded, hit_tokens)
            self.recomputed_tokens -= saved
            records.recomputed_tokens[index] -= saved

    def _allocate_with_preemption(
        self,
        gpu: int,
        k: int,
        new_block_rows: list[int],
        plan: list[tuple[int, int]],
        chunk_blocks: list[int],
    ) -> tuple[int, int, int, bool]:
        """Allocate the iteration's blocks in admission order, preempting as vLLM V1 does.

        ``plan`` (the continuing chunks) loses the preempted requests' entries in place.

        Returns:
            The decode count, the prefill tokens and their earlier KV tokens that remain, and
            whether any request was preempted.
        """
        running = self.running[gpu]
        admitted_at = self._admitted_at
        decodes = running[:k].tolist()
        needs = dict.fromkeys(decodes, 0)
        for j in new_block_rows:
            needs[decodes[j]] = 1
        for (index, _), blocks in zip(plan, chunk_blocks):
            needs[index] = blocks
        scheduled = sorted(needs, key=admitted_at.__getitem__)
        on_gpu = sorted([*running.tolist(), *self.prefilling[gpu]], key=admitted_at.__getitem__)
        if self.prefix_caching:
            victims = self._allocate_cached(gpu, scheduled, needs, on_gpu)
        else:
            free = self.capacity_blocks - self.blocks_used[gpu]
            served, victims, _ = allocate_in_admission_order(
                scheduled, [needs[i] for i in scheduled], on_gpu, self.request_blocks, free
            )
            self.blocks_used[gpu] += sum(needs[i] for i in scheduled[:served])
            for victim in victims:
                self._preempt(gpu, victim)
        if victims:
            gone = set(victims)
            plan[:] = [item for item in plan if item[0] not in gone]
            k -= sum(1 for i in decodes if i in gone)
        prefilled = self._prefilled
        tokens = sum(take for _, take in plan)
        kv = sum(prefilled[index] for index, _ in plan)
        return k, tokens, kv, bool(victims)

    def _allocate_cached(
        self, gpu: int, scheduled: list[int], needs: dict[int, int], on_gpu: list[int]
    ) -> list[int]:
        """:func:`allocate_in_admission_order` with shared blocks: preempt, then count.

        A victim frees only the blocks no other request holds, so each victim is preempted
        (its blocks released) before the free blocks are counted again.

        Returns:
            The victims, in preemption order (already preempted).
        """
        pool = self._pools[gpu]
        victims: list[int] = []
        gone: set[int] = set()
        for index in scheduled:
            need = needs[index]
            while index not in gone and need > pool.n_free:
                victim = on_gpu.pop()
                victims.append(victim)
                gone.add(victim)
                self._preempt(gpu, victim)
            if index in gone:
                break  # every later request is more recent, so preempted too
            if need:
                self._grow(gpu, index, need)
        return victims

    def _preempt(self, gpu: int, index: int) -> None:
        """Free ``index``'s blocks, discard its KV and put it at the front of the waiting queue."""
        records = self._records
        prompt = self._prompt[index]
        running = self.running[gpu]
        where = np.flatnonzero(running == index)
        if where.size:
            j = int(where[0])
            state = self._run_state[gpu]
            generated, last_s, max_gap, missed = (float(x) for x in state[:OUTPUT, j])
            self._resume_state[index] = (generated, last_s, max_gap, missed)
            records.tokens_generated[index] = int(generated)
            records.max_token_gap_s[index] = max_gap
            n_generated = int(generated)
            discarded = prompt + n_generated - 1
            self._target[index] = prompt + n_generated
            self._running_context[gpu] -= prompt + n_generated
            self.running_prompt_tokens[gpu] -= prompt
            self.running_predicted_tokens[gpu] -= self._predicted[index]
            self.running[gpu] = np.delete(running, j)
            self._run_state[gpu] = np.ascontiguousarray(np.delete(state, j, axis=1))
        else:
            self.prefilling[gpu].remove(index)
            discarded = self._prefilled[index]
        self._release(gpu, index, discarded, comes_back=True)
        if self.prefix_caching:
            self._discarded[index] = discarded
        self._prefilled[index] = 0
        self.n_sequences[gpu] -= 1
        self.n_preemptions += 1
        self.recomputed_tokens += discarded
        records.preemptions[index] += 1
        records.recomputed_tokens[index] += discarded
        self.requeued.appendleft(index)
        self._requeued_tokens += self._target[index]
