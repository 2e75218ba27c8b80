"""Prefill planning of the iteration-level server: what a GPU can admit and prefill.

:class:`PrefillPlanning` answers, for the deciding GPU, whether the head of the waiting queue
can be admitted, whether a prefill budget would make progress, and what a prefill budget and
prompt cap would prefill (a dry run that changes nothing); it also plans the chunks of an
iteration that :class:`~llmsched_env.sim.iteration_server.IterationServer` runs. Started
prompts continue first, oldest first; then prompts are admitted from the head of the FIFO queue
(Agrawal et al., Sarathi-Serve, OSDI 2024, for chunked prefill).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple


class PrefillPlan(NamedTuple):
    """What a prefill budget and prompt cap would prefill on a GPU now (see ``plan_prefill``).

    Attributes:
        tokens: Prefill tokens of the plan.
        continued: Started prompts whose next chunk it prefills.
        admitted: Waiting prompts it admits, from the head of the queue.
    """

    tokens: int
    continued: int
    admitted: int


class PrefillPlanning:
    """Admission and prefill queries of :class:`~llmsched_env.sim.iteration_server.IterationServer`.

    A mixin: it works on the server's state (the waiting queue, the started prompts and the KV
    accounting), which the server's constructor sets up.
    """

    def can_admit(self, gpu: int) -> bool:
        """Whether ``gpu`` could admit the request at the head of the waiting queue now.

        Reserve mode: a sequence slot is free and the head's whole footprint fits the unreserved
        memory. Paged mode: a slot is free and the blocks of the smallest first chunk are free
        (one block with chunked prefill; the blocks of the whole prompt, or recomputation,
        without).
        """
        if self.n_sequences[gpu] >= self.max_sequences:
            return False
        if self.requeued:
            head = self.requeued[0]
        elif self.queue_head < self.queue_tail:
            head = self._queue_list[self.queue_head]
        else:
            return False
        if self.paged:
            free = self.capacity_blocks - self.blocks_used[gpu]
            tokens = self._target[head]
            if self.prefix_caching:
                hits, evictable = self._cache_hits(gpu, head)
                tokens -= len(hits) * self.kv_block_tokens
                free -= evictable
            need = 1 if self.chunk_size is not None else self._blocks_for(tokens)
            return need <= free
        return self.kv_reserved[gpu] + self._kv_need[head] <= self.kv_capacity_tokens

    def can_admit_within(self, gpu: int, budget_tokens: int) -> bool:
        """Whether a prefill budget of ``budget_tokens`` (no decodes) admits the queue's head.

        Started prompts, which come first, are ignored: this is about the waiting queue alone.
        """
        if not self.can_admit(gpu):
            return False
        head = self.waiting_head()
        target = self._target[head]
        evictable = 0
        if self.prefix_caching:
            hits, evictable = self._cache_hits(gpu, head)
            target -= len(hits) * self.kv_block_tokens
        take = target if self.chunk_size is None else min(target, self.chunk_size, budget_tokens)
        if take < 1 or take > budget_tokens:
            return False
        return not self.paged or self._blocks_for(take) <= self.free_blocks(gpu) - evictable

    def prefill_progresses(self, gpu: int, budget_tokens: int) -> bool:
        """Whether a prefill-only iteration of ``gpu`` with this budget would make progress.

        Its first request is the oldest started prompt, whose next chunk must get its blocks
        (in paged mode by preempting more recent requests if need be, but not itself); with no
        started prompt, the head of the waiting queue must be admitted (:meth:`can_admit_within`).
        A prefill-only iteration that could only preempt its own prompt would change the state
        without progress, and repeating it would livelock.
        """
        started = self.prefilling[gpu]
        if not started:
            return self.can_admit_within(gpu, budget_tokens)
        first = started[0]
        done = self._prefilled[first]
        remaining = self._target[first] - done
        take = min(remaining, budget_tokens, self.chunk_size or remaining)
        if take < 1:
            return False
        if not self.paged:
            return True
        need = self._blocks_for(done + take) - self.request_blocks[first]
        free = self.capacity_blocks - self.blocks_used[gpu]
        if need <= free:
            return True
        since = self._admitted_at[first]
        on_gpu = [*self.running[gpu].tolist(), *started]
        later = [i for i in on_gpu if self._admitted_at[i] > since]
        if self.prefix_caching:
            return need <= free + self._freed_by(gpu, later)
        return need <= free + sum(self.request_blocks[i] for i in later)

    def can_prefill(self, gpu: int) -> bool:
        """Whether ``gpu`` has prefill work: a started prompt or an admissible waiting one."""
        return bool(self.prefilling[gpu]) or self.can_admit(gpu)

    def smallest_prefill_budget(self, gpu: int) -> float:
        """The least prefill budget that gives ``gpu`` prefill work (``inf``: none does).

        A started prompt continues with one token of budget, and so does a new prompt with
        chunked prefill; without, a new prompt needs its whole length. (A budget of 0, which a
        prefill level rounds to when ``max_tokens`` is small, prefills nothing. Paged mode also
        needs free blocks for the chunk the budget makes: see :meth:`prefill_allowed`.)
        """
        if self.prefilling[gpu]:
            return 1
        if not self.can_admit(gpu):
            return math.inf
        if self.chunk_size is not None:
            return 1
        return self.waiting_head_tokens()

    def prefill_allowed(self, gpu: int, budget_tokens: int, alongside_decodes: bool) -> bool:
        """Whether a prefill budget of ``budget_tokens`` forms an allowed iteration on ``gpu``.

        Reserve mode: the budget is at least :meth:`smallest_prefill_budget`. Paged mode: a
        prefill-only iteration with this budget makes progress (:meth:`prefill_progresses`), or
        (``alongside_decodes``) running sequences decode beside it and there is a started prompt
        or an admissible head, whose decodes change the state whatever the prefill does.

        Args:
            gpu: The deciding GPU.
            budget_tokens: The prefill budget when nothing is decoded.
            alongside_decodes: Whether running sequences decode in the same iteration.
        """
        return self.prefill_allowed_budgets(gpu, (budget_tokens,), alongside_decodes)[0]

    def prefill_allowed_budgets(
        self, gpu: int, budgets_tokens: Sequence[int], alongside_decodes: bool
    ) -> list[bool]:
        """:meth:`prefill_allowed` for each of ``budgets_tokens``, at the cost of about one.

        An action mask asks about every prefill level of a decision. What does not depend on
        the budget is asked once: the smallest allowed budget in reserve mode; in paged mode,
        whether decodes beside the prefill already change the state (then every budget is
        allowed), before each budget's :meth:`prefill_progresses`.
        """
        if not self.paged:
            smallest = self.smallest_prefill_budget(gpu)
            return [smallest <= budget for budget in budgets_tokens]
        if (
            alongside_decodes
            and self.running[gpu].size
            and (self.prefilling[gpu] or self.can_admit(gpu))
        ):
            return [True] * len(budgets_tokens)
        return [self.prefill_progresses(gpu, budget) for budget in budgets_tokens]

    def plan_prefill(self, gpu: int, budget_tokens: int, max_new_prompts: int) -> PrefillPlan:
        """What a prefill-only iteration of ``gpu`` would prefill, without changing anything.

        The same plan as :meth:`run_iteration` with no decodes: the started prompts continue
        first (oldest first, at most ``chunk_size`` tokens each), then prompts are admitted from
        the head of the waiting queue while the budget, ``max_new_prompts``, the sequence slots
        and KV memory allow (whole prompts, or chunks). Paged mode: when the continuing chunks'
        blocks are not free the iteration would preempt and admit nothing, and the plan says
        so (it does not predict which requests would be preempted); with prefix caching every
        admitted request's hits are looked up in the pool as it is now (an earlier admission of
        the same iteration can take blocks a later one would have hit), so the plan can admit
        more than the iteration does. The cost grows with the admitted prompts, not the queue.

        Args:
            gpu: The deciding GPU.
            budget_tokens: Most prefill tokens (capped by ``max_tokens``).
            max_new_prompts: Most prompts admitted from the waiting queue.

        Returns:
            The planned prefill tokens, continued prompts and admitted prompts.
        """
        budget = min(budget_tokens, self.max_tokens)
        chunk = self.chunk_size
        target = self._target
        prefilled = self._prefilled
        paged = self.paged
        used = continued = blocks = 0
        for index in self.prefilling[gpu]:
            done = prefilled[index]
            remaining = target[index] - done
            take = min(remaining, budget - used, chunk or remaining)
            if take <= 0:
                break
            used += take
            continued += 1
            if paged:
                blocks += self._blocks_for(done + take) - self.request_blocks[index]
        free = self.capacity_blocks - self.blocks_used[gpu] - blocks
        if paged and free < 0:
            return PrefillPlan(used, continued, 0)
        admitted = 0
        slots = self.max_sequences - self.n_sequences[gpu]
        reserved = self.kv_reserved[gpu]
        for index in self._waiting_in_order():
            if used >= budget or admitted >= max_new_prompts or slots <= 0:
                break
            remaining = target[index]
            evictable = 0
            if self.prefix_caching:
                hits, evictable = self._cache_hits(gpu, index)
                remaining -= len(hits) * self.kv_block_tokens
            if paged:
                smallest = 1 if chunk is not None else self._blocks_for(remaining)
                if smallest > free - evictable:
                    break
            elif reserved + self._kv_need[index] > self.kv_capacity_tokens:
                break
            take = remaining if chunk is None else min(remaining, chunk, budget - used)
            if take > budget - used:
                break
            if paged:
                need = self._blocks_for(take)
                if need > free - evictable:
                    break
                free -= need + evictable
            else:
                reserved += self._kv_need[index]
            used += take
            admitted += 1
            slots -= 1
        return PrefillPlan(used, continued, admitted)

    def _waiting_in_order(self) -> Iterator[int]:
        """The waiting requests, head first (preempted ones, then the others by arrival)."""
        yield from self.requeued
        queue = self._queue_list
        for position in range(self.queue_head, self.queue_tail):
            yield queue[position]

    def _plan_continuations(
        self, gpu: int, budget: int, plan: list[tuple[int, int]]
    ) -> tuple[int, int]:
        """Plan the next chunks of ``gpu``'s started prompts within ``budget``, oldest first.

        Returns:
            ``(tokens, kv_tokens)``: the planned prefill tokens, and the tokens those prompts
            had computed before their chunks.
        """
        chunk = self.chunk_size
        target = self._target
        prefilled = self._prefilled
        used = kv = 0
        for index in self.prefilling[gpu]:
            done = prefilled[index]
            remaining = target[index] - done
            take = min(remaining, budget - used, chunk or remaining)
            if take <= 0:
                break
            plan.append((index, take))
            used += take
            kv += done
        return used, kv

    def _plan_admissions(
        self, gpu: int, budget: int, used: int, max_new_prompts: int, plan: list[tuple[int, int]]
    ) -> tuple[int, int]:
        """Admit requests from the head of the waiting queue into ``plan``.

        Reserve mode reserves each admitted request's footprint; paged mode gives it the blocks of
        its first chunk and stops at a head whose blocks are not free. With prefix caching a
        request first takes its cached prefix blocks (free ones count against the free blocks)
        and its prefill starts after them.

        Returns:
            ``(tokens, kv_tokens)``: the prefill tokens planned so far (``used`` plus the
            admissions'), and the cached tokens the admitted chunks attend to.
        """
        chunk = self.chunk_size
        target = self._target
        records = self._records
        paged = self.paged
        caching = self.prefix_caching
        admitted = kv = 0
        while used < budget and admitted < max_new_prompts and self.can_admit(gpu):
            requeued = bool(self.requeued)
            index = self.requeued[0] if requeued else self._queue_list[self.queue_head]
            p = target[index]
            hits: list[int] = []
            if caching:
                hits, evictable = self._cache_hits(gpu, index)
                hit_tokens = len(hits) * self.kv_block_tokens
                remaining = p - hit_tokens
            else:
                evictable = hit_tokens = 0
                remaining = p
            take = remaining if chunk is None else min(remaining, chunk, budget - used)
            if take > budget - used:
                break  # whole prompts only: the head does not fit, and the queue is FIFO
            if paged:
                need = self._blocks_for(take)
                if need > self.capacity_blocks - self.blocks_used[gpu] - evictable:
                    break  # the head's blocks are not free: head-of-line blocking, as in vLLM
                if caching:
                    self._admit_cached(gpu, index, hits, need)
                else:
                    self._grow(gpu, index, need)
                self._admissions += 1
                self._admitted_at[index] = self._admissions
            else:
                self.kv_reserved[gpu] += self._kv_need[index]
            if requeued:
                self.requeued.popleft()
                self._requeued_tokens -= p
            else:
                self.queue_head += 1
                records.start_s[index] = self.now
            admitted += 1
            self.prefilling[gpu].append(index)
            self.n_sequences[gpu] += 1
            records.gpu[index] = gpu
            plan.append((index, take))
            used += take
            kv += hit_tokens
        return used, kv
