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
    request finds it again (keyed when a preemption frees its blocks; a completed request never
    comes back, so its own blocks are freed unkeyed). Two differences from vLLM V1: its
    ``allocate_slots`` keys a block when the chunk that fills it is scheduled, so a request
    admitted in the same step already hits a prefix another computes in that step (here it
    computes its own copy, and a router's view of a replica's cache leaves out the chunks the
    replica is computing); and it hashes every full block by its tokens, generated ones too,
    while the workload's hashes cover prompts only, so a later prompt that repeats an earlier
    answer (the next turn of a conversation) finds only the earlier prompt. Freed blocks keep
    their key and join the tail of the GPU's free queue (a request's blocks last first); new
    blocks come from its head, evicting the key of a cached one. Admitting a waiting request (new or
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
``ttft_deadline_s`` (plus ``ttft_per_token_s`` per prompt token) of its arrival and no gap between
two of its consecutive tokens exceeded ``tbt_target_s``. A TTFT miss is counted at the moment the
deadline passes without a first token (a rejected request counts as a TTFT miss at its rejection); a
TBT miss is counted once per request, when the token that ends the first too-long gap is produced.

This module holds the server's state, its waiting queue and its engine hooks; its other jobs
live beside it: :mod:`~llmsched_env.sim.iteration_planning` (admission and prefill queries,
including the dry-run :meth:`~IterationServer.plan_prefill`, and the iteration's prefill plan),
:mod:`~llmsched_env.sim.iteration_kv` (paged KV blocks, prefix caching, preemption),
:mod:`~llmsched_env.sim.iteration_run` (forming, charging and completing an iteration) and
:mod:`~llmsched_env.sim.running_state` (the running sequences' token state and its compiled
loops).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from llmsched_env.config import KV_ALLOCATIONS
from llmsched_env.latency import IterationLatencyModel
from llmsched_env.sim.engine import Engine
from llmsched_env.sim.iteration_kv import PagedKVAccounting
from llmsched_env.sim.iteration_planning import PrefillPlanning
from llmsched_env.sim.iteration_run import IterationRun
from llmsched_env.sim.prefix_cache import BlockPool
from llmsched_env.sim.records import RejectReason, RequestRecords
from llmsched_env.sim.running_state import EMPTY, GENERATED, MAX_GAP_S, N_FIELDS, oldest_token_time
from llmsched_env.workload import Workload


def arrival_rejections(
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    *,
    kv_capacity_tokens: int,
    max_tokens: int,
    chunk_size: int | None,
    kv_allocation: str,
    kv_block_tokens: int,
) -> np.ndarray:
    """Why each request would be rejected at arrival (:class:`RejectReason`; ``NONE``: served).

    The rules of the module docstring: a whole-prompt prefill (no ``chunk_size``) longer than
    the token budget (in paged mode, a recomputation of all but the last output token), or a KV
    need beyond one GPU's memory (in paged mode, its whole blocks).
    """
    kv_need = prompt_tokens + output_tokens
    reason = np.full(kv_need.shape, RejectReason.NONE, dtype=np.int8)
    paged = kv_allocation == "paged"
    if chunk_size is None:
        longest = kv_need - 1 if paged else prompt_tokens
        reason[longest > max_tokens] = RejectReason.PROMPT_EXCEEDS_TOKEN_BUDGET
    usable = (
        kv_capacity_tokens // kv_block_tokens * kv_block_tokens if paged else kv_capacity_tokens
    )
    reason[kv_need > usable] = RejectReason.EXCEEDS_KV_CAPACITY
    return reason


def iteration_run_counts(server: Any) -> dict[str, int]:
    """The preemption and prefix-cache counts an iteration-level server adds to its summary."""
    return {
        "preemptions": server.n_preemptions,
        "recomputed_tokens": server.recomputed_tokens,
        "prefix_hit_tokens": server.prefix_hit_tokens,
        "prefix_queried_tokens": server.prefix_queried_tokens,
        "preempted_prefix_hit_tokens": server.preempted_prefix_hit_tokens,
        "preempted_prefix_queried_tokens": server.preempted_prefix_queried_tokens,
    }


def check_prefix_blocks(workload: Workload, kv_block_tokens: int) -> None:
    """Refuse KV blocks that do not line up with the blocks of the workload's prefix hashes.

    A cached KV block is found by the hashes of the prompt blocks it covers, so one of the two
    block sizes must be a multiple of the other.

    Raises:
        ValueError: Naming both sizes and the settings that would work.
    """
    hash_tokens = workload.prefix_block_tokens
    if (
        workload.prefix_block_hashes is not None
        and hash_tokens % kv_block_tokens
        and kv_block_tokens % hash_tokens
    ):
        raise ValueError(
            f"the workload's prefix_block_tokens={hash_tokens} and kv_block_tokens="
            f"{kv_block_tokens} must divide one another for prefix caching; use a "
            f"kv_block_tokens that divides {hash_tokens} or is a multiple of it, or "
            "prefix_caching=False"
        )


def check_settings(
    workload: Workload,
    *,
    kv_capacity_tokens: int,
    max_tokens: int,
    max_sequences: int,
    chunk_size: int | None,
    ttft_deadline_s: float | None,
    ttft_per_token_s: float,
    tbt_target_s: float | None,
    kv_allocation: str,
    kv_block_tokens: int,
    prefix_caching: bool,
) -> None:
    """Refuse settings of an iteration-level server that break the module docstring's rules.

    Raises:
        ValueError: Naming the setting, its value and what it must be.
    """
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
    if prefix_caching:
        check_prefix_blocks(workload, kv_block_tokens)
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
    if not (math.isfinite(ttft_per_token_s) and ttft_per_token_s >= 0):
        raise ValueError(f"ttft_per_token_s must be a number >= 0, got {ttft_per_token_s!r}")
    if ttft_per_token_s > 0 and ttft_deadline_s is None:
        raise ValueError("ttft_per_token_s needs a TTFT target (ttft_deadline_s)")


def _read_only(values: np.ndarray) -> np.ndarray:
    """``values`` with writing disabled (in place)."""
    values.flags.writeable = False
    return values


class IterationServer(PrefillPlanning, PagedKVAccounting, IterationRun, Engine):
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
        ttft_per_token_s: Time added to a request's TTFT target per prompt token (0: the same
            target for every request; needs ``ttft_deadline_s``).
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
        preempted_prefix_hit_tokens: The part of ``prefix_hit_tokens`` that readmissions after
            a preemption skipped (vLLM counts them apart, out of its hit rate).
        preempted_prefix_queried_tokens: The part of ``prefix_queried_tokens`` that
            readmissions after a preemption had to compute.
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
        ttft_per_token_s: float = 0.0,
        tbt_target_s: float | None = None,
        kv_allocation: str = "reserve",
        kv_block_tokens: int = 16,
        prefix_caching: bool = False,
    ) -> None:
        super().__init__(workload, n_gpus, rng)
        check_settings(
            workload,
            kv_capacity_tokens=kv_capacity_tokens,
            max_tokens=max_tokens,
            max_sequences=max_sequences,
            chunk_size=chunk_size,
            ttft_deadline_s=ttft_deadline_s,
            ttft_per_token_s=ttft_per_token_s,
            tbt_target_s=tbt_target_s,
            kv_allocation=kv_allocation,
            kv_block_tokens=kv_block_tokens,
            prefix_caching=prefix_caching,
        )
        self.latency = latency
        # Models that correct for uneven decode contexts get the longest and shortest one.
        self._latency_reads_spread = bool(getattr(latency, "uses_decode_spread", False))
        self.kv_capacity_tokens = int(kv_capacity_tokens)
        self.max_tokens = int(max_tokens)
        self.max_sequences = int(max_sequences)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.ttft_deadline_s = ttft_deadline_s
        self.ttft_per_token_s = float(ttft_per_token_s)
        self.tbt_target_s = tbt_target_s
        self._tbt_target_or_nan = math.nan if tbt_target_s is None else float(tbt_target_s)
        self.kv_allocation = kv_allocation
        self.paged = kv_allocation == "paged"
        self.kv_block_tokens = int(kv_block_tokens)
        self.capacity_blocks = self.kv_capacity_tokens // self.kv_block_tokens if self.paged else 0

        n = len(workload)
        prompt = workload.prompt_tokens
        self.kv_need = prompt + workload.output_tokens
        reason = arrival_rejections(
            prompt,
            workload.output_tokens,
            kv_capacity_tokens=self.kv_capacity_tokens,
            max_tokens=self.max_tokens,
            chunk_size=self.chunk_size,
            kv_allocation=kv_allocation,
            kv_block_tokens=self.kv_block_tokens,
        )
        self._reject_reason = reason
        admissible = reason == RejectReason.NONE
        self._admissible = admissible.tolist()
        #: Index of each request's times for the deadline scan (-1: rejected, never scanned).
        self._deadline_slot = np.where(admissible, np.arange(n), -1).tolist()
        #: Admissible request indices in arrival order: the global waiting queue is
        #: ``queue_order[queue_head:queue_tail]``.
        # A copy: flatnonzero's result is a view of an array that could be made writable.
        self.queue_order = _read_only(np.flatnonzero(admissible).copy())
        #: Arrival times and prompt tokens of :attr:`queue_order`'s requests (read-only), so
        #: that the never-admitted part of the queue is a slice of these, never a copy.
        self.queue_arrival_s = _read_only(workload.arrival_s[self.queue_order])
        self.queue_prompt_tokens = _read_only(prompt[self.queue_order])
        self._queue_list = self.queue_order.tolist()
        self._queue_prompt_cumsum = [0, *np.cumsum(self.queue_prompt_tokens).tolist()]
        self.queue_head = 0
        self.queue_tail = 0
        self._prompt = prompt.tolist()
        self._output = workload.output_tokens.tolist()
        self._kv_need = self.kv_need.tolist()
        self._prefilled = [0] * n
        #: Tokens each request prefills before its next token: its prompt, or after a preemption
        #: its prompt plus the tokens generated so far.
        self._target = self._prompt.copy()
        self.requeued: deque[int] = deque()
        self._requeued_tokens = 0
        self.n_preemptions = 0
        self.recomputed_tokens = 0
        self.request_blocks = [0] * n
        self.prefix_caching = bool(prefix_caching)
        self.prefix_hit_tokens = 0
        self.prefix_queried_tokens = 0
        self.preempted_prefix_hit_tokens = 0
        self.preempted_prefix_queried_tokens = 0
        #: Prefix caching: per GPU, its block pool; per request, the blocks it holds in order;
        #: per preempted request, the tokens its preemption discarded (see recomputed_tokens);
        #: per request, the content keys of its hashed prompt blocks (built when first needed).
        self._pools = (
            [BlockPool(self.capacity_blocks) for _ in range(self.n_gpus)] if prefix_caching else []
        )
        self._block_ids: dict[int, list[int]] = {}
        self._discarded: dict[int, int] = {}
        self._shared_keys: dict[int, list[tuple[int, int]]] = {}
        self._hit_memo: list[tuple[int, int, int, list[int], int]] = [
            (-1, -1, -1, [], 0)
        ] * self.n_gpus
        #: Per request, when it was last admitted (a counter; paged mode only).
        self._admitted_at = [0] * n
        self._admissions = 0
        #: Token state of preempted requests that had produced tokens, until they resume:
        #: generated tokens, last token time, longest gap, TBT missed (1.0 or 0.0).
        self._resume_state: dict[int, tuple[float, float, float, float]] = {}
        #: Per request, its TTFT deadline (absolute time). The miss scan walks the deadlines
        #: sorted: ``_ttft_scan_deadline`` in ``_ttft_scan_order`` (``None``: arrival order,
        #: which is already sorted when every request has the same target).
        self._ttft_deadline: list[float] | None = None
        self._ttft_scan_deadline: list[float] | None = None
        self._ttft_scan_order: list[int] | None = None
        if ttft_deadline_s:
            deadline = workload.arrival_s + ttft_deadline_s + self.ttft_per_token_s * prompt
            self._ttft_deadline = deadline.tolist()
            if self.ttft_per_token_s > 0:  # targets grow with the prompt: deadlines out of order
                order = np.argsort(deadline, kind="stable")
                self._ttft_scan_deadline = deadline[order].tolist()
                self._ttft_scan_order = order.tolist()
            else:
                self._ttft_scan_deadline = self._ttft_deadline

        g = self.n_gpus
        self.running: list[np.ndarray] = [EMPTY] * g
        # Per GPU, the state of its running sequences, column i for running[gpu][i]. A decode
        # step serves a prefix of ``running``, so it updates this state with slices, not
        # gathers; :attr:`records` reads the tokens and gaps of running sequences from here.
        self._run_state: list[np.ndarray] = [np.zeros((N_FIELDS, 0))] * g
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

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled or deep-copied server; its queue columns come back read-only."""
        self.__dict__.update(state)
        for values in (self.queue_order, self.queue_arrival_s, self.queue_prompt_tokens):
            values.flags.writeable = False

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
        """Indices of the waiting requests, head first (a new array: its cost grows with the queue).

        Per-step code reads the two parts instead: :attr:`requeued` (at most ``n_gpus *
        max_sequences`` requests) and :meth:`queued_ids` (a view).
        """
        return np.concatenate([np.fromiter(self.requeued, np.int64), self.queued_ids()])

    def queued_ids(self) -> np.ndarray:
        """Indices of the never-admitted waiting requests, oldest first (a read-only view)."""
        return self.queue_order[self.queue_head : self.queue_tail]

    def tokens_to_prefill(self, index: int) -> int:
        """Tokens request ``index`` must still prefill before its next token."""
        return self._target[index] - self._prefilled[index]

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

    def _on_time_passed(self, t: float) -> None:
        if self._ttft_deadline is not None:
            self.n_ttft_misses += self._deadlines_missed_until(
                t,
                self._ttft_scan_deadline,
                self._records.first_token_s,
                self._deadline_slot,
                self._ttft_scan_order,
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
        return oldest_token_time(state) if state.shape[1] else self.now

    def running_tokens_generated(self, gpu: int) -> np.ndarray:
        """Output tokens generated so far by each of ``gpu``'s running sequences (a new array)."""
        return self._run_state[gpu][GENERATED].astype(np.int64)

    @property
    def records(self) -> RequestRecords:
        """Per-request event times and states of the run so far.

        Running sequences keep their token counts and gaps in per-GPU state; reading the records
        copies those into them first.
        """
        records = self._records
        for running, state in zip(self.running, self._run_state):
            if running.size:
                records.tokens_generated[running] = state[GENERATED]
                records.max_token_gap_s[running] = state[MAX_GAP_S]
        return records

    def _run_counts(self) -> dict[str, int]:
        return iteration_run_counts(self)

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
