"""Iteration-level server: G GPUs with continuous batching, prefill and decode per iteration.

Each GPU repeatedly forms an *iteration*: some prefill work (whole prompts, or chunks of them
when chunked prefill is on) and one new token for some of its running sequences. A decision is
due when a GPU is free and has something it could do: running sequences to decode, a prompt it
has started prefilling, or a waiting prompt it can admit.

Model, per GPU:

* Waiting prompts sit in one global FIFO queue. A GPU admits prompts from its head (first come,
  first served; the head blocks the queue when it does not fit) when it forms an iteration.
* KV memory is allocated in one of two ways (``kv_allocation``):

  - ``"reserve"`` (default): admission reserves the request's whole KV footprint (prompt plus
    output tokens) on that GPU, as engines that reserve ``max_new_tokens`` do, so memory never
    overflows and nothing is preempted. The KV memory *used* grows with every generated token.
  - ``"paged"``: vLLM V1's paged allocation (Kwon et al., PagedAttention, SOSP 2023; vLLM V1's
    scheduler, ``vllm/v1/core/sched/scheduler.py``). The KV cache is split into blocks of
    ``kv_block_tokens`` tokens, and a request holds the blocks for the tokens it has computed:
    when an iteration schedules ``n`` new tokens of a request with ``c`` tokens in its cache, it
    must hold ``ceil((c + n) / B)`` blocks, and the missing ones are taken from the GPU's free
    blocks when the iteration is formed. A decode step of a request with prompt ``p`` and ``g``
    generated tokens computes one token (the last sampled one), so it needs
    ``ceil((p + g) / B)`` blocks. The deciding GPU first schedules its admitted requests (the
    chosen decodes and the continuing chunks of started prompts) in admission order; when one
    cannot get its blocks, the most recently admitted request on the GPU (possibly itself) is
    *preempted*: its blocks are freed, its KV is discarded and it goes back to the front of the
    waiting queue (several preempted in one iteration keep their admission order there), until
    the blocks are free or the request itself was preempted, which ends this phase. Waiting
    prompts are admitted only in iterations without a preemption, each needing the blocks of its
    first chunk; when the head's are not free, admission stops (head-of-line blocking). A
    preempted request recomputes when admitted again: it prefills its prompt plus the tokens it
    generated (chunked as usual), and the iteration that finishes this emits its *next* token
    (its TTFT stays the first one; the gap since its previous token counts for TBT). If every
    request of an iteration was preempted, no iteration runs and the GPU decides again at once.
  - ``"paged"`` with ``prefix_caching``: vLLM V1's automatic prefix caching on top
    (``vllm/v1/core/kv_cache_manager.py``, ``block_pool.py``; :mod:`llmsched_env.sim.prefix_cache`
    holds the block pool). Every full block of a request's computed tokens gets a content key:
    its prompt blocks covered by the workload's ``prefix_block_hashes`` are keyed by those
    hashes (shared between requests with equal prefixes; keyed as soon as their prefill chunk
    is computed), every other block by a key of its own (request, block), so that only the same
    request finds it again (keyed when the request frees its blocks). Freed blocks keep their key
    and join the tail of the GPU's free queue (a request's blocks last first); new blocks come
    from its head, evicting the key of a cached one. Admitting a waiting request (new or
    preempted) first looks up the longest prefix of its block keys in the cache, at most
    ``(tokens - 1) // B`` blocks (at least the last token is computed): it holds those blocks
    (free ones leave the free queue and count against the free blocks in the admission check, as
    in vLLM's ``allocate_slots``), its prefill starts after them, and the latency model sees them
    as cached context (``prefill_kv_tokens``). Preemptions free only blocks no other request
    holds, so each victim is released before the free blocks are counted again.
* An iteration takes at most ``max_tokens`` tokens: one per decoded sequence plus the prefill
  tokens. Without chunked prefill a prompt is prefilled whole in one iteration, so a prompt longer
  than ``max_tokens`` could never run and is rejected at arrival
  (:attr:`RejectReason.PROMPT_EXCEEDS_TOKEN_BUDGET`; in paged mode, a request whose prompt plus
  output minus one token exceeds ``max_tokens``, since a recomputation after a preemption could
  need that many tokens in one iteration, as vLLM requires ``max_num_batched_tokens >=
  max_model_len`` without chunked prefill). With ``chunk_size`` set, a prompt is
  prefilled over several iterations, at most ``chunk_size`` tokens per iteration, and a
  started prompt continues before new prompts are admitted.
* A request whose prompt plus output tokens exceed one GPU's KV memory could never finish and is
  rejected at arrival (:attr:`RejectReason.EXCEEDS_KV_CAPACITY`); in paged mode the memory is
  that of the whole blocks, ``kv_capacity_tokens // B * B`` tokens. So a request alone on a GPU
  can always get its blocks, and the oldest admitted request of a GPU is never preempted.
* At most ``max_sequences`` requests (prefilling or decoding) are on a GPU at once.
* The iteration that completes a prompt's prefill emits its first output token (TTFT is measured
  at the end of that iteration); every decode step emits one more token. A request completes
  with its last token and frees its KV memory.
* The iteration's duration comes from the iteration latency model, charged on the iteration's
  total work (a mixed prefill + decode iteration costs the model's time for the sum). The model
  also gets the KV tokens each prefill chunk attends to beyond itself (the sequence's tokens
  computed before the chunk) and the number of prefill chunks.

SLA accounting (when targets are given): a request is on time when its first token came within
``ttft_deadline_s`` of its arrival and no gap between two of its consecutive tokens exceeded
``tbt_target_s``. A TTFT miss is counted at the moment the deadline passes without a first token
(a rejected request counts as a TTFT miss at its rejection); a TBT miss is counted once per
request, when the token that ends the first too-long gap is produced.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Hashable

import numpy as np
from numba import njit

from llmsched_env.config import KV_ALLOCATIONS
from llmsched_env.latency import IterationLatencyModel
from llmsched_env.sim.engine import Engine
from llmsched_env.sim.paged_kv import (
    allocate_in_admission_order,
    blocks_for,
    decode_rows_needing_block,
)
from llmsched_env.sim.prefix_cache import BlockPool
from llmsched_env.sim.records import RejectReason, RequestRecords
from llmsched_env.workload import Workload

_EMPTY = np.zeros(0, dtype=np.int64)

#: Fields of a GPU's running-sequence state: one row per field, one column per running
#: sequence in ``running`` order (rows are contiguous, so a decode step's updates are fast).
#: Counts are held as floats, exactly (they stay far below 2**53).
_N_FIELDS = 6
_GENERATED, _LAST_TOKEN_S, _MAX_GAP_S, _TBT_MISSED, _OUTPUT, _PROMPT = range(_N_FIELDS)


@njit(cache=True)
def _decode_tokens(state, k, t, tbt_target_s):
    """Give running sequences ``0 .. k - 1`` (columns of ``state``) a token at time ``t``.

    Updates their token counts, last-token times, longest gaps and TBT flags (a gap above
    ``tbt_target_s`` marks a miss; ``nan`` means no target). Compiled, because every decode
    iteration runs it; it does per sequence the arithmetic numpy would do on the columns.

    Returns:
        ``(new_tbt_misses, n_done)``: sequences whose first TBT miss this is, and sequences that
        have now generated all their output tokens.
    """
    new_misses = 0
    n_done = 0
    for j in range(k):
        state[_GENERATED, j] += 1.0
        gap = t - state[_LAST_TOKEN_S, j]
        if gap > state[_MAX_GAP_S, j]:
            state[_MAX_GAP_S, j] = gap
        state[_LAST_TOKEN_S, j] = t
        if gap > tbt_target_s:
            if state[_TBT_MISSED, j] == 0.0:
                new_misses += 1
            state[_TBT_MISSED, j] = 1.0
        if state[_GENERATED, j] >= state[_OUTPUT, j]:
            n_done += 1
    return new_misses, n_done


@njit(cache=True)
def _context_tokens(state, k):
    """Prompt plus generated tokens of running sequences ``0 .. k - 1`` (whole numbers, exact)."""
    total = 0.0
    for j in range(k):
        total += state[_PROMPT, j] + state[_GENERATED, j]
    return int(total)


@njit(cache=True)
def _context_spread(state, k):
    """Longest and shortest KV context (prompt plus generated) of running sequences ``0 .. k-1``."""
    longest = shortest = state[_PROMPT, 0] + state[_GENERATED, 0]
    for j in range(1, k):
        context = state[_PROMPT, j] + state[_GENERATED, j]
        if context > longest:
            longest = context
        elif context < shortest:
            shortest = context
    return int(longest), int(shortest)


@njit(cache=True)
def _oldest_token_s(state):
    """The smallest last-token time of the running sequences in ``state`` (at least one)."""
    oldest = state[_LAST_TOKEN_S, 0]
    for j in range(1, state.shape[1]):
        if state[_LAST_TOKEN_S, j] < oldest:
            oldest = state[_LAST_TOKEN_S, j]
    return oldest


class IterationServer(Engine):
    """Continuous-batching server that stops whenever a GPU forms an iteration.

    Args:
        workload: Requests sorted by arrival.
        n_gpus: Number of identical GPUs (engine replicas sharing one waiting queue).
        latency: Iteration latency model.
        kv_capacity_tokens: KV-cache tokens one GPU holds.
        max_tokens: Token budget of one iteration (prefill tokens plus decoded sequences).
        max_sequences: Most requests on one GPU at once.
        chunk_size: Most prefill tokens of one prompt per iteration; ``None`` turns chunked
            prefill off (prompts are prefilled whole).
        rng: Source of randomness for stochastic iteration times.
        ttft_deadline_s: Time-to-first-token target; enables on-time/miss accounting.
        tbt_target_s: Time-between-tokens target (largest allowed gap between two consecutive
            output tokens of a request).
        kv_allocation: ``"reserve"`` (whole footprint at admission, never preempts) or
            ``"paged"`` (blocks as tokens are computed, preemption by recomputation); see the
            module docstring.
        kv_block_tokens: Tokens per KV block in paged mode (vLLM's default block size is 16).
        prefix_caching: Automatic prefix caching of KV blocks (paged mode only; see the module
            docstring). The workload's ``prefix_block_hashes``, if any, let requests share
            prompt prefixes; their ``prefix_block_tokens`` and ``kv_block_tokens`` must divide
            one another.

    Attributes:
        running: Per GPU, the decoding requests, in the order they started decoding.
        prefilling: Per GPU, the admitted requests whose prefill (or recomputation) is not
            finished, in admission order.
        requeued: Preempted requests waiting ahead of the arrival-ordered queue
            ``queue_order[queue_head:queue_tail]``; the waiting queue is ``requeued`` followed
            by that slice. Always empty in reserve mode.
        kv_used: Per GPU, KV tokens in use (reserve mode: computed tokens plus the latest
            sampled one; paged mode: the allocated blocks times ``kv_block_tokens``).
        kv_reserved: Per GPU, KV tokens reserved (reserve mode: the admitted requests' whole
            footprints; paged mode: equal to ``kv_used``, since blocks are taken only as
            tokens are computed).
        capacity_blocks: KV blocks of one GPU in paged mode (``kv_capacity_tokens //
            kv_block_tokens``); 0 in reserve mode.
        blocks_used: Per GPU, the KV blocks allocated (paged mode; zeros in reserve mode).
        request_blocks: Per request, the KV blocks it holds (paged mode; zeros in reserve mode).
        n_preemptions: Preemptions so far.
        recomputed_tokens: KV tokens discarded by preemptions (to be computed again) so far;
            with prefix caching, minus those found in the cache when the request came back.
        prefix_caching: Whether automatic prefix caching is on.
        prefix_hit_tokens: Tokens admissions skipped because their blocks were cached.
        prefix_queried_tokens: Tokens admitted requests had to compute, before cache hits.
        n_on_time: Requests completed meeting both targets so far.
        n_ttft_misses: TTFT deadlines that passed without a first token (plus rejections).
        n_tbt_misses: Requests that breached the TBT target.
        n_iterations: Iterations run so far.
        last_iteration_s: Duration of each GPU's latest iteration.
    """

    def __init__(
        self,
        workload: Workload,
        *,
        n_gpus: int,
        latency: IterationLatencyModel,
        kv_capacity_tokens: int,
        max_tokens: int,
        max_sequences: int,
        rng: np.random.Generator,
        chunk_size: int | None = None,
        ttft_deadline_s: float | None = None,
        tbt_target_s: float | None = None,
        kv_allocation: str = "reserve",
        kv_block_tokens: int = 16,
        prefix_caching: bool = False,
    ) -> None:
        super().__init__(workload, n_gpus, rng)
        if kv_allocation not in KV_ALLOCATIONS:
            raise ValueError(
                f"kv_allocation must be one of {list(KV_ALLOCATIONS)}, got {kv_allocation!r}"
            )
        whole = isinstance(kv_block_tokens, (int, np.integer))
        if not whole or isinstance(kv_block_tokens, bool) or kv_block_tokens < 1:
            raise ValueError(f"kv_block_tokens must be an integer >= 1, got {kv_block_tokens!r}")
        if not isinstance(prefix_caching, (bool, np.bool_)):
            raise ValueError(f"prefix_caching must be True or False, got {prefix_caching!r}")
        if prefix_caching and kv_allocation != "paged":
            raise ValueError(
                f"prefix_caching=True needs kv_allocation='paged' (cached KV blocks), got "
                f"kv_allocation={kv_allocation!r}"
            )
        hash_tokens = workload.prefix_block_tokens
        if (
            prefix_caching
            and workload.prefix_block_hashes is not None
            and hash_tokens % kv_block_tokens
            and kv_block_tokens % hash_tokens
        ):
            raise ValueError(
                f"the workload's prefix_block_tokens={hash_tokens} and kv_block_tokens="
                f"{kv_block_tokens} must divide one another for prefix caching"
            )
        if kv_allocation == "paged" and kv_capacity_tokens < kv_block_tokens:
            raise ValueError(
                f"kv_capacity_tokens={kv_capacity_tokens!r} holds no whole KV block of "
                f"kv_block_tokens={kv_block_tokens!r} tokens; paged allocation needs at least one"
            )
        for name, value in (
            ("kv_capacity_tokens", kv_capacity_tokens),
            ("max_tokens", max_tokens),
            ("max_sequences", max_sequences),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size!r}")
        for name, value in (("ttft_deadline_s", ttft_deadline_s), ("tbt_target_s", tbt_target_s)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        self.latency = latency
        # Models that correct for uneven decode contexts get the longest and shortest one.
        self._latency_reads_spread = bool(getattr(latency, "uses_decode_spread", False))
        self.kv_capacity_tokens = int(kv_capacity_tokens)
        self.max_tokens = int(max_tokens)
        self.max_sequences = int(max_sequences)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.ttft_deadline_s = ttft_deadline_s
        self.tbt_target_s = tbt_target_s
        self._tbt_target_or_nan = math.nan if tbt_target_s is None else float(tbt_target_s)
        self.kv_allocation = kv_allocation
        self.paged = kv_allocation == "paged"
        self.kv_block_tokens = int(kv_block_tokens)
        self.capacity_blocks = self.kv_capacity_tokens // self.kv_block_tokens if self.paged else 0

        prompt = workload.prompt_tokens
        self.kv_need = prompt + workload.output_tokens
        reason = np.full(len(workload), RejectReason.NONE, dtype=np.int8)
        if self.chunk_size is None:
            # In paged mode a recomputation (prompt plus all but the last output token) must fit.
            longest = self.kv_need - 1 if self.paged else prompt
            reason[longest > self.max_tokens] = RejectReason.PROMPT_EXCEEDS_TOKEN_BUDGET
        usable = self.capacity_blocks * self.kv_block_tokens if self.paged else kv_capacity_tokens
        reason[self.kv_need > usable] = RejectReason.EXCEEDS_KV_CAPACITY
        self._reject_reason = reason
        self._admissible = (reason == RejectReason.NONE).tolist()
        #: Index of each request's times for the deadline scan (-1: rejected, never scanned).
        self._deadline_slot = np.where(
            reason == RejectReason.NONE, np.arange(len(workload)), -1
        ).tolist()
        #: Admissible request indices in arrival order: the global waiting queue is
        #: ``queue_order[queue_head:queue_tail]``.
        self.queue_order = np.flatnonzero(reason == RejectReason.NONE)
        self._queue_list = self.queue_order.tolist()
        self._queue_prompt_cumsum = [0, *np.cumsum(prompt[self.queue_order]).tolist()]
        self.queue_head = 0
        self.queue_tail = 0
        self._prompt = prompt.tolist()
        self._output = workload.output_tokens.tolist()
        self._kv_need = self.kv_need.tolist()
        self._prefilled = [0] * len(workload)
        #: Tokens each request prefills before its next token: its prompt, or after a preemption
        #: its prompt plus the tokens generated so far.
        self._target = prompt.tolist()
        self.requeued: deque[int] = deque()
        self._requeued_tokens = 0
        self.n_preemptions = 0
        self.recomputed_tokens = 0
        self.request_blocks = [0] * len(workload)
        self.prefix_caching = bool(prefix_caching)
        self.prefix_hit_tokens = 0
        self.prefix_queried_tokens = 0
        #: Prefix caching: per GPU, its block pool; per request, the blocks it holds in order;
        #: per preempted request, the tokens its preemption discarded (see recomputed_tokens);
        #: per request, the content keys of its hashed prompt blocks (built when first needed).
        self._pools = (
            [BlockPool(self.capacity_blocks) for _ in range(self.n_gpus)] if prefix_caching else []
        )
        self._block_ids: dict[int, list[int]] = {}
        self._discarded: dict[int, int] = {}
        self._shared_keys: dict[int, list[tuple[int, int]]] = {}
        self._hit_memo: list[tuple[int, int, list[int], int]] = [(-1, -1, [], 0)] * self.n_gpus
        #: Per request, when it was last admitted (a counter; paged mode only).
        self._admitted_at = [0] * len(workload)
        self._admissions = 0
        #: Token state of preempted requests that had produced tokens, until they resume:
        #: generated tokens, last token time, longest gap, TBT missed (1.0 or 0.0).
        self._resume_state: dict[int, tuple[float, float, float, float]] = {}
        self._ttft_deadline = (
            (workload.arrival_s + ttft_deadline_s).tolist() if ttft_deadline_s else None
        )

        g = self.n_gpus
        self.running: list[np.ndarray] = [_EMPTY] * g
        # Per GPU, the state of its running sequences, column i for running[gpu][i]. A decode
        # step serves a prefix of ``running``, so it updates this state with slices, not
        # gathers; :attr:`records` reads the tokens and gaps of running sequences from here.
        self._run_state: list[np.ndarray] = [np.zeros((_N_FIELDS, 0))] * g
        self.prefilling: list[list[int]] = [[] for _ in range(g)]
        self.kv_reserved = [0] * g
        self.kv_used = [0] * g
        self.blocks_used = [0] * g
        self._running_context = [0] * g
        #: Per GPU, sums over the running sequences of prompt and predicted output tokens.
        self.running_prompt_tokens = [0] * g
        self.running_predicted_tokens = [0] * g
        self._predicted = workload.predicted_output_tokens.tolist()
        self.n_sequences = [0] * g
        self.last_iteration_s = [0.0] * g
        self._pending: list[tuple[list[tuple[int, int]], np.ndarray] | None] = [None] * g
        self.n_on_time = 0
        self.on_time_output_tokens = 0
        self.n_ttft_misses = 0
        self.n_tbt_misses = 0
        self.n_iterations = 0
        self.sequences_processed = 0
        self.prefill_tokens_processed = 0
        self.decode_tokens_processed = 0

    # ------------------------------------------------------------------ what a GPU can do
    @property
    def n_waiting(self) -> int:
        """Requests waiting in the global queue (not admitted, or preempted and not readmitted)."""
        return self.queue_tail - self.queue_head + len(self.requeued)

    def waiting_prompt_tokens(self) -> int:
        """Tokens the waiting requests must prefill (a preempted one: its tokens to recompute)."""
        c = self._queue_prompt_cumsum
        return c[self.queue_tail] - c[self.queue_head] + self._requeued_tokens

    def waiting_head(self) -> int:
        """Index of the request at the head of the waiting queue, -1 if none waits."""
        if self.requeued:
            return self.requeued[0]
        return self._queue_list[self.queue_head] if self.queue_head < self.queue_tail else -1

    def waiting_head_tokens(self) -> int:
        """Tokens the head of the waiting queue must prefill (0 if none waits)."""
        head = self.waiting_head()
        return self._target[head] if head >= 0 else 0

    def oldest_waiting(self) -> int:
        """Index of the earliest-arrived waiting request, -1 if none waits.

        The head, except after preemptions: requeued requests keep their admission order, which
        need not be their arrival order. Requests are indexed in arrival order, and every requeued
        request arrived before every request that was never admitted.
        """
        if self.requeued:
            return min(self.requeued)
        return self.waiting_head()

    def waiting_ids(self) -> np.ndarray:
        """Indices of the waiting requests, head first (read-only; a copy after preemptions)."""
        view = self.queue_order[self.queue_head : self.queue_tail]
        if self.requeued:
            view = np.concatenate([np.fromiter(self.requeued, np.int64), view])
        view.flags.writeable = False
        return view

    def tokens_to_prefill(self, index: int) -> int:
        """Tokens request ``index`` must still prefill before its next token."""
        return self._target[index] - self._prefilled[index]

    def free_blocks(self, gpu: int) -> int:
        """Free KV blocks of ``gpu`` (paged mode)."""
        return self.capacity_blocks - self.blocks_used[gpu]

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

    def _blocks_for(self, tokens: int) -> int:
        return blocks_for(tokens, self.kv_block_tokens)

    # ------------------------------------------------------------------ prefix caching
    def _block_key(self, index: int, j: int) -> Hashable:
        """The content key of request ``index``'s block ``j`` (tokens ``j*B .. (j+1)*B - 1``).

        A block covered by the workload's prefix hashes is keyed by the hash of the hashed
        block that ends with (or contains) it and its position in that block; any other block
        gets a key of its own, ``(index, j, 0)``, that only the same request can hit again.
        """
        shared = self._prefix_keys(index)
        return shared[j] if j < len(shared) else (index, j, 0)

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
        logits give the next token). Memoised per GPU until its pool changes.

        Returns:
            The blocks, and how many of them are free (their use takes them off the free queue).
        """
        pool = self._pools[gpu]
        memo = self._hit_memo[gpu]
        if memo[0] == index and memo[1] == pool.version:
            return memo[2], memo[3]
        most = (self._target[index] - 1) // self.kv_block_tokens
        hits = pool.longest_hit(self._block_key(index, j) for j in range(most))
        evictable = pool.evictable(hits)
        self._hit_memo[gpu] = (index, pool.version, hits, evictable)
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

    def _release(self, gpu: int, index: int, computed: int) -> None:
        """Free request ``index``'s blocks (paged mode).

        With prefix caching the full blocks of its ``computed`` tokens stay cached, and only the
        blocks no other request holds become free.
        """
        if not self.prefix_caching:
            self.blocks_used[gpu] -= self.request_blocks[index]
            self.request_blocks[index] = 0
            return
        pool = self._pools[gpu]
        blocks = self._block_ids.pop(index, [])
        for j in range(computed // self.kv_block_tokens):
            pool.cache(blocks[j], self._block_key(index, j))
        self.blocks_used[gpu] -= pool.release(blocks)
        self.request_blocks[index] = 0

    def _cache_prompt_blocks(self, gpu: int, index: int, before: int, after: int) -> None:
        """Key the hashed blocks of ``index`` that its tokens ``before .. after - 1`` completed.

        Others can hit them while ``index`` still runs; its other blocks are keyed when freed.
        """
        shared = self._prefix_keys(index)
        b = self.kv_block_tokens
        stop = min(after // b, len(shared))
        if before // b < stop:
            pool = self._pools[gpu]
            blocks = self._block_ids[index]
            for j in range(before // b, stop):
                pool.cache(blocks[j], shared[j])

    # ------------------------------------------------------------------ the decision
    def run_iteration(
        self, decode_count: int, prefill_budget_tokens: int, max_new_prompts: int
    ) -> bool:
        """Form and start the deciding GPU's next iteration.

        Args:
            decode_count: How many running sequences get one token, the first ones of
                :attr:`running` (capped by the number running and by the token budget).
            prefill_budget_tokens: Most prefill tokens in this iteration (capped by what the
                decode tokens leave of ``max_tokens``). Started prompts continue first; then
                prompts are admitted from the head of the waiting queue.
            max_new_prompts: Most prompts admitted from the waiting queue in this iteration.

        Returns:
            ``True`` if the decision was made: an iteration started or, in paged mode, requests
            were preempted (if every request of the iteration was, no iteration runs and the GPU
            decides again at the same time). ``False`` if the iteration would have been empty,
            in which case nothing changed and the decision is still due.

        Raises:
            RuntimeError: If no decision is due.
        """
        gpu = self._require_decision()
        if self.paged:
            return self._run_paged_iteration(
                gpu, decode_count, prefill_budget_tokens, max_new_prompts
            )
        running = self.running[gpu]
        k = min(decode_count, running.size, self.max_tokens)
        decode_ids = running[:k] if k > 0 else _EMPTY
        budget = min(prefill_budget_tokens, self.max_tokens - k)
        plan: list[tuple[int, int]] = []
        prefill_tokens = prefill_kv_tokens = 0
        if budget > 0:
            prefill_tokens, prefill_kv_tokens = self._plan_continuations(gpu, budget, plan)
            if prefill_tokens < budget:
                prefill_tokens, _ = self._plan_admissions(
                    gpu, budget, prefill_tokens, max_new_prompts, plan
                )
        if k == 0 and not plan:
            return False
        self._start_iteration(gpu, plan, decode_ids, prefill_tokens, prefill_kv_tokens)
        return True

    def _start_iteration(
        self,
        gpu: int,
        plan: list[tuple[int, int]],
        decode_ids: np.ndarray,
        prefill_tokens: int,
        prefill_kv_tokens: int,
    ) -> None:
        """Charge the planned iteration on ``gpu`` and start it."""
        k = decode_ids.size
        if k == self.running[gpu].size:
            context = self._running_context[gpu]
        else:
            context = _context_tokens(self._run_state[gpu], k)
        longest = shortest = 0
        if k > 1 and self._latency_reads_spread:
            longest, shortest = _context_spread(self._run_state[gpu], k)
        duration = self.latency.iteration_s(
            prefill_tokens,
            k,
            context,
            self.rng,
            prefill_kv_tokens=prefill_kv_tokens,
            prefill_sequences=len(plan),
            decode_kv_max=longest,
            decode_kv_min=shortest,
        )
        self._pending[gpu] = (plan, decode_ids)
        self.last_iteration_s[gpu] = duration
        self.n_iterations += 1
        self.sequences_processed += k + len(plan)
        self.prefill_tokens_processed += prefill_tokens
        self.decode_tokens_processed += k
        self._start_work(gpu, duration)

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
        discarded = self._discarded.pop(index, 0)
        if discarded and hit_tokens:
            # Discarded tokens found in the cache are not computed again.
            saved = min(discarded, hit_tokens)
            self.recomputed_tokens -= saved
            records.recomputed_tokens[index] -= saved

    def _run_paged_iteration(
        self, gpu: int, decode_count: int, prefill_budget_tokens: int, max_new_prompts: int
    ) -> bool:
        """:meth:`run_iteration` in paged mode (see the module docstring)."""
        running = self.running[gpu]
        k = min(decode_count, running.size, self.max_tokens)
        budget = min(prefill_budget_tokens, self.max_tokens - k)
        plan: list[tuple[int, int]] = []
        prefill_tokens = prefill_kv_tokens = 0
        if budget > 0:
            prefill_tokens, prefill_kv_tokens = self._plan_continuations(gpu, budget, plan)
        state = self._run_state[gpu]
        held = self.request_blocks
        rows = decode_rows_needing_block(state[_PROMPT], state[_GENERATED], k, self.kv_block_tokens)
        chunk_blocks = [
            self._blocks_for(self._prefilled[index] + take) - held[index] for index, take in plan
        ]
        need = rows.size + sum(chunk_blocks)
        if need <= self.capacity_blocks - self.blocks_used[gpu]:
            # Every scheduled request gets its blocks: the order does not matter.
            for j in rows.tolist():
                self._grow(gpu, int(running[j]), 1)
            for (index, _), blocks in zip(plan, chunk_blocks):
                if blocks:
                    self._grow(gpu, index, blocks)
            preempted = False
        else:
            k, prefill_tokens, prefill_kv_tokens, preempted = self._allocate_with_preemption(
                gpu, k, rows.tolist(), plan, chunk_blocks
            )
            running = self.running[gpu]
        if not preempted and prefill_tokens < budget:
            prefill_tokens, hit_tokens = self._plan_admissions(
                gpu, budget, prefill_tokens, max_new_prompts, plan
            )
            prefill_kv_tokens += hit_tokens
        self.kv_used[gpu] = self.kv_reserved[gpu] = self.blocks_used[gpu] * self.kv_block_tokens
        if k == 0 and not plan:
            if preempted:
                self.decision_gpu = -1  # the GPU decides again, with the preempted ones waiting
            return preempted
        decode_ids = running[:k] if k > 0 else _EMPTY
        self._start_iteration(gpu, plan, decode_ids, prefill_tokens, prefill_kv_tokens)
        return True

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
            generated, last_s, max_gap, missed = (float(x) for x in state[:_OUTPUT, j])
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
        self._release(gpu, index, discarded)
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

    # ------------------------------------------------------------------ engine hooks
    def _find_decision_gpu(self) -> int:
        busy = self.gpu_busy
        deferred = self._deferred
        for gpu in range(self.n_gpus):
            if busy[gpu] or gpu in deferred:
                continue
            if self.running[gpu].size or self.prefilling[gpu] or self.can_admit(gpu):
                return gpu
        return -1

    def _on_arrival(self, index: int) -> None:
        if self._admissible[index]:
            self.queue_tail += 1
            return
        self._records.reject_reason[index] = self._reject_reason[index]
        self.n_rejected += 1
        if self._ttft_deadline is not None:
            self.n_ttft_misses += 1

    def _on_work_done(self, gpu: int) -> None:
        pending = self._pending[gpu]
        self._pending[gpu] = None
        if pending is None:
            return
        plan, decode_ids = pending
        t = self.now
        records = self._records
        newly_running: list[int] = []
        resumed: dict[int, tuple[float, float, float, float]] | None = None
        if plan:
            prompt = self._prompt
            target = self._target
            prefilled = self._prefilled
            resume_state = self._resume_state
            finished_prefill = False
            caching = self.prefix_caching
            for index, take in plan:
                if caching:
                    done = prefilled[index]
                    self._cache_prompt_blocks(gpu, index, done, done + take)
                prefilled[index] += take
                self.kv_used[gpu] += take
                if prefilled[index] == target[index]:
                    finished_prefill = True
                    if resume_state and index in resume_state:
                        if resumed is None:
                            resumed = {}
                        self._resume(gpu, index, resume_state.pop(index), newly_running, resumed)
                        continue
                    records.first_token_s[index] = t
                    records.tokens_generated[index] = 1
                    self.kv_used[gpu] += 1
                    if self._output[index] == 1:
                        self._complete_one(gpu, index, 1, False)
                    else:
                        newly_running.append(index)
                        self._running_context[gpu] += prompt[index] + 1
                        self.running_prompt_tokens[gpu] += prompt[index]
                        self.running_predicted_tokens[gpu] += self._predicted[index]
            if finished_prefill:
                self.prefilling[gpu] = [i for i in self.prefilling[gpu] if prefilled[i] < target[i]]
        running = self.running[gpu]
        state = self._run_state[gpu]
        if decode_ids.size:
            k = decode_ids.size
            new_misses, n_done = _decode_tokens(state, k, t, self._tbt_target_or_nan)
            self.n_tbt_misses += new_misses
            self.kv_used[gpu] += k
            self._running_context[gpu] += k
            if n_done:
                decoded = state[:, :k]
                generated = decoded[_GENERATED]
                max_gap = decoded[_MAX_GAP_S]
                done = generated >= decoded[_OUTPUT]
                for row in done.nonzero()[0].tolist():
                    index = int(decode_ids[row])
                    n_generated = int(generated[row])
                    records.tokens_generated[index] = n_generated
                    records.max_token_gap_s[index] = max_gap[row]
                    self._complete_one(gpu, index, n_generated, bool(decoded[_TBT_MISSED, row]))
                    self._running_context[gpu] -= self._prompt[index] + self._output[index]
                    self.running_prompt_tokens[gpu] -= self._prompt[index]
                    self.running_predicted_tokens[gpu] -= self._predicted[index]
                keep = ~done
                # (compress keeps the state C-ordered, so that its rows stay contiguous)
                kept = np.compress(keep, decoded, axis=1)
                if k == running.size:
                    running, state = decode_ids[keep], kept
                else:
                    running = np.concatenate([decode_ids[keep], running[k:]])
                    state = np.concatenate([kept, state[:, k:]], axis=1)
        if newly_running:
            # Rows in _GENERATED .. _PROMPT order: one token, its time, no gap, no TBT miss.
            n_new = len(newly_running)
            if resumed is None:
                token_rows = [[1.0] * n_new, [t] * n_new, [0.0] * n_new, [0.0] * n_new]
            else:
                # Recomputed requests resume with their own counts, gaps and TBT flags.
                fresh = (1.0, t, 0.0, 0.0)
                columns = [resumed.get(i, fresh) for i in newly_running]
                token_rows = [list(row) for row in zip(*columns)]
            new_state = np.array(
                [
                    *token_rows,
                    [self._output[i] for i in newly_running],
                    [self._prompt[i] for i in newly_running],
                ]
            )
            running = np.concatenate([running, np.array(newly_running, dtype=np.int64)])
            state = np.concatenate([state, new_state], axis=1)
        self.running[gpu] = running
        self._run_state[gpu] = state
        if self.paged:
            self.kv_used[gpu] = self.kv_reserved[gpu] = self.blocks_used[gpu] * self.kv_block_tokens

    def _resume(
        self,
        gpu: int,
        index: int,
        saved: tuple[float, float, float, float],
        newly_running: list[int],
        resumed: dict[int, tuple[float, float, float, float]],
    ) -> None:
        """Emit the next token of a preempted request whose recomputation just finished.

        ``saved`` holds its generated tokens, last token time, longest gap and TBT flag from
        before the preemption; the gap since that last token counts like any other.
        """
        t = self.now
        generated, last_s, max_gap, missed = saved
        gap = t - last_s
        if gap > max_gap:
            max_gap = gap
        if gap > self._tbt_target_or_nan:
            if missed == 0.0:
                self.n_tbt_misses += 1
            missed = 1.0
        generated += 1.0
        n_generated = int(generated)
        self._records.tokens_generated[index] = n_generated
        if n_generated >= self._output[index]:
            self._records.max_token_gap_s[index] = max_gap
            self._complete_one(gpu, index, n_generated, missed == 1.0)
            return
        prompt = self._prompt[index]
        newly_running.append(index)
        resumed[index] = (generated, t, max_gap, missed)
        self._running_context[gpu] += prompt + n_generated
        self.running_prompt_tokens[gpu] += prompt
        self.running_predicted_tokens[gpu] += self._predicted[index]

    def _complete_one(self, gpu: int, index: int, generated: int, tbt_missed: bool) -> None:
        records = self._records
        t = self.now
        records.completed[index] = True
        records.completion_s[index] = t
        self.n_completed += 1
        self.n_sequences[gpu] -= 1
        if self.paged:
            self._release(gpu, index, self._prompt[index] + generated - 1)
        else:
            self.kv_reserved[gpu] -= self._kv_need[index]
            self.kv_used[gpu] -= self._prompt[index] + generated
        ttft_met = self._ttft_deadline is None or (
            records.first_token_s[index] <= self._ttft_deadline[index]
        )
        if ttft_met and not tbt_missed:
            self.n_on_time += 1
            self.on_time_output_tokens += self._output[index]

    def _on_time_passed(self, t: float) -> None:
        if self._ttft_deadline is not None:
            self.n_ttft_misses += self._deadlines_missed_until(
                t, self._ttft_deadline, self._records.first_token_s, self._deadline_slot
            )

    def prefill_remaining_tokens(self, gpu: int) -> int:
        """Tokens still to prefill (or recompute) of the prompts ``gpu`` has started."""
        started = self.prefilling[gpu]
        if not started:
            return 0
        target, prefilled = self._target, self._prefilled
        return sum(target[i] - prefilled[i] for i in started)

    def running_generated_tokens(self, gpu: int) -> int:
        """Output tokens generated so far by the sequences running on ``gpu``."""
        return self._running_context[gpu] - self.running_prompt_tokens[gpu]

    def oldest_token_s(self, gpu: int) -> float:
        """Time of the least recent token among ``gpu``'s running sequences (``now`` if none)."""
        state = self._run_state[gpu]
        return _oldest_token_s(state) if state.shape[1] else self.now

    def running_tokens_generated(self, gpu: int) -> np.ndarray:
        """Output tokens generated so far by each of ``gpu``'s running sequences (a new array)."""
        return self._run_state[gpu][_GENERATED].astype(np.int64)

    @property
    def records(self) -> RequestRecords:
        """Per-request event times and states of the run so far.

        Running sequences keep their token counts and gaps in per-GPU state; reading the records
        copies those into them first.
        """
        records = self._records
        for running, state in zip(self.running, self._run_state):
            if running.size:
                records.tokens_generated[running] = state[_GENERATED]
                records.max_token_gap_s[running] = state[_MAX_GAP_S]
        return records

    def _run_counts(self) -> dict[str, int]:
        return {
            "preemptions": self.n_preemptions,
            "recomputed_tokens": self.recomputed_tokens,
            "prefix_hit_tokens": self.prefix_hit_tokens,
            "prefix_queried_tokens": self.prefix_queried_tokens,
        }

    @property
    def sla_misses(self) -> int:
        """TTFT misses (including rejections) plus TBT misses so far."""
        return self.n_ttft_misses + self.n_tbt_misses

    def mean_batch_size(self) -> float:
        """Mean number of sequences (prefilling or decoding) per iteration (nan before any)."""
        if not self.n_iterations:
            return float("nan")
        return self.sequences_processed / self.n_iterations

    def next_free_s(self) -> list[float]:
        """For every GPU, when its current iteration ends (``now`` for an idle GPU)."""
        now = self.now
        return [t if b else now for t, b in zip(self.gpu_free_at, self.gpu_busy)]
