"""The compiled event loop and iterations of the iteration-level server.

The rules are those of :mod:`llmsched_env.sim.iteration_server` with either KV allocation
(reserve, or paged with preemption, with or without prefix caching), applied in the same order
with the same arithmetic as
:class:`~llmsched_env.sim.iteration_server.IterationServer`'s Python
(:mod:`~llmsched_env.sim.engine`, :mod:`~llmsched_env.sim.iteration_planning`,
:mod:`~llmsched_env.sim.iteration_run`), so that both servers give the same episode bit for bit;
the tests play both side by side. The state is :data:`~llmsched_env.sim.iteration_state
.IterationState`; the prefix cache's operations are :mod:`llmsched_env.sim.prefix_kernels`.

An iteration is formed in two parts: :func:`plan_iteration` chooses its decodes and prefill
chunks (admitting prompts from the queue) and returns what the latency model needs;
:func:`start_iteration` starts it with its duration. :func:`run_timed_iteration` does both
with the latency model's compiled timing in between (:mod:`llmsched_env.latency.iteration_timing`);
a model without one is timed in Python between the two calls.
"""

from __future__ import annotations

import math

import numpy as np

from llmsched_env.jit import njit
from llmsched_env.latency.iteration_timing import iteration_time_s
from llmsched_env.sim import prefix_kernels as pk
from llmsched_env.sim.batch_kernels import fsum
from llmsched_env.sim.batch_rules import bisect_left, bisect_right
from llmsched_env.sim.iteration_state import state_view

#: A replica of a routed cluster marks a request routed elsewhere by making its ``rejection``
#: ``ELSEWHERE - reason`` (negative; ``reason`` is its own rejection code, kept).
ELSEWHERE = -1

#: Refusal codes of the kernels (0: done); the server turns them into exceptions.
DONE = 0
NO_DECISION_DUE = 1
WAIT_DEADLOCKS = 2
NO_VALID_TIME = 3


# ---------------------------------------------------------------------- queries
@njit(cache=True, inline="always")
def _blocks_for(tokens, block_tokens):
    """Blocks that hold ``tokens`` tokens of KV: ``ceil(tokens / block_tokens)``."""
    return -(-tokens // block_tokens)


@njit(cache=True, inline="always")
def _waiting_head(state):
    """The request at the head of the waiting queue (requeued ones first), -1 if none waits."""
    if state.n_requeued[0]:
        return state.requeue[state.n_requeued[0] - 1]
    head = state.queue_head[0]
    return state.queue_order[head] if head < state.queue_tail[0] else -1


@njit(cache=True, inline="always")
def _waiting_at(state, position):
    """The waiting request at ``position`` from the head (requeued ones, then the queue)."""
    n_requeued = state.n_requeued[0]
    if position < n_requeued:
        return state.requeue[n_requeued - 1 - position]
    return state.queue_order[state.queue_head[0] + position - n_requeued]


@njit(cache=True, inline="always")
def _hits(state, gpu, index):
    """``(hits, evictable)``: the cached prefix blocks of waiting ``index`` on ``gpu``."""
    return pk.longest_hit(state.now, state.pool, state.pool_layout, gpu, index, state.target[index])


@njit(cache=True, inline="always")
def _can_admit(state, gpu):
    """Whether ``gpu`` could admit the head of the waiting queue now.

    A sequence slot is free and, in reserve mode, the head's whole footprint fits the unreserved
    memory; in paged mode the blocks of its smallest first chunk are free (with prefix caching,
    after its cached prefix, whose free blocks it would take off the free queue).
    """
    if state.n_sequences[gpu] >= state.max_sequences[0]:
        return False
    index = _waiting_head(state)
    if index < 0:
        return False
    if state.paged[0]:
        free = state.capacity_blocks[0] - state.blocks_used[gpu]
        tokens = state.target[index]
        if state.prefix_caching[0]:
            hits, evictable = _hits(state, gpu, index)
            tokens -= hits * state.block_tokens[0]
            free -= evictable
        if state.chunk_size[0] > 0:
            need = 1
        else:
            need = _blocks_for(tokens, state.block_tokens[0])
        return need <= free
    need = state.prompt[index] + state.output[index]
    return state.kv_reserved[gpu] + need <= state.kv_capacity[0]


@njit(cache=True, inline="always")
def _can_wait(state):
    """Whether WAIT is safe: a request is still to arrive or a GPU works."""
    if state.n_arrived[0] < state.arrival_s.shape[0]:
        return True
    for g in range(state.gpu_busy.shape[0]):
        if state.gpu_busy[g]:
            return True
    return False


@njit(cache=True, inline="always")
def _smallest_prefill_budget(state, gpu):
    """The least prefill budget that gives ``gpu`` prefill work (``inf``: none does)."""
    if state.n_prefilling[gpu]:
        return 1.0
    if not _can_admit(state, gpu):
        return math.inf
    if state.chunk_size[0] > 0:
        return 1.0
    return float(state.target[_waiting_head(state)])


@njit(cache=True, inline="always")
def _can_admit_within(state, gpu, budget_tokens):
    """Whether a prefill budget of ``budget_tokens`` (no decodes) admits the queue's head."""
    if not _can_admit(state, gpu):
        return False
    index = _waiting_head(state)
    target = state.target[index]
    evictable = 0
    if state.prefix_caching[0]:
        hits, evictable = _hits(state, gpu, index)
        target -= hits * state.block_tokens[0]
    take = target
    chunk = state.chunk_size[0]
    if chunk > 0:
        take = min(target, chunk, budget_tokens)
    if take < 1 or take > budget_tokens:
        return False
    if not state.paged[0]:
        return True
    free = state.capacity_blocks[0] - state.blocks_used[gpu] - evictable
    return _blocks_for(take, state.block_tokens[0]) <= free


@njit(cache=True)
def prefill_progresses(floats, ints, layout, gpu, budget_tokens):
    """Whether a prefill-only iteration of ``gpu`` with this budget would make progress.

    ``IterationServer.prefill_progresses``: the oldest started prompt's next chunk gets its
    blocks, preempting only more recently admitted requests; with none started, the queue's head
    is admitted.
    """
    state = state_view(floats, ints, layout)
    if state.n_prefilling[gpu] == 0:
        return _can_admit_within(state, gpu, budget_tokens)
    base = gpu * state.slots_per_gpu[0]
    first = state.prefilling_id[base]
    done = state.prefilled[first]
    remaining = state.target[first] - done
    take = min(remaining, budget_tokens)
    chunk = state.chunk_size[0]
    if chunk > 0 and chunk < take:
        take = chunk
    if take < 1:
        return False
    if not state.paged[0]:
        return True
    need = _blocks_for(done + take, state.block_tokens[0]) - state.request_blocks[first]
    free = state.capacity_blocks[0] - state.blocks_used[gpu]
    if need <= free:
        return True
    since = state.admitted_at[first]
    if state.prefix_caching[0]:  # a victim frees only the blocks no one else holds
        return need <= free + pk.freed_by(
            state.now,
            state.pool,
            state.pool_layout,
            state.run_id[base : base + state.n_running[gpu]],
            state.prefilling_id[base : base + state.n_prefilling[gpu]],
            state.admitted_at,
            since,
            state.request_blocks,
        )
    for j in range(state.n_running[gpu]):
        index = state.run_id[base + j]
        if state.admitted_at[index] > since:
            free += state.request_blocks[index]
    for j in range(state.n_prefilling[gpu]):
        index = state.prefilling_id[base + j]
        if state.admitted_at[index] > since:
            free += state.request_blocks[index]
    return need <= free


@njit(cache=True)
def prefill_allowed(floats, ints, layout, gpu, budget_tokens, alongside_decodes):
    """``IterationServer.prefill_allowed``: whether the budget forms an allowed iteration."""
    state = state_view(floats, ints, layout)
    if not state.paged[0]:
        return _smallest_prefill_budget(state, gpu) <= budget_tokens
    if (
        alongside_decodes
        and state.n_running[gpu]
        and (state.n_prefilling[gpu] or _can_admit(state, gpu))
    ):
        return True
    return prefill_progresses(floats, ints, layout, gpu, budget_tokens)


@njit(cache=True)
def plan_prefill(floats, ints, layout, gpu, budget_tokens, max_new_prompts):
    """What a prefill-only iteration of ``gpu`` would prefill: ``(tokens, continued, admitted)``.

    The dry run of :meth:`IterationServer.plan_prefill`; nothing changes.
    """
    state = state_view(floats, ints, layout)
    max_tokens = state.max_tokens[0]
    budget = budget_tokens if budget_tokens < max_tokens else max_tokens
    chunk = state.chunk_size[0]
    paged = state.paged[0]
    block_tokens = state.block_tokens[0]
    base = gpu * state.slots_per_gpu[0]
    used = continued = blocks = 0
    for j in range(state.n_prefilling[gpu]):
        index = state.prefilling_id[base + j]
        done = state.prefilled[index]
        remaining = state.target[index] - done
        take = min(remaining, budget - used)
        if chunk > 0 and chunk < take:
            take = chunk
        if take <= 0:
            break
        used += take
        continued += 1
        if paged:
            blocks += _blocks_for(done + take, block_tokens) - state.request_blocks[index]
    free = state.capacity_blocks[0] - state.blocks_used[gpu] - blocks
    if paged and free < 0:
        return used, continued, 0
    admitted = 0
    slots = state.max_sequences[0] - state.n_sequences[gpu]
    reserved = state.kv_reserved[gpu]
    n_waiting = state.n_requeued[0] + state.queue_tail[0] - state.queue_head[0]
    for position in range(n_waiting):
        if used >= budget or admitted >= max_new_prompts or slots <= 0:
            break
        index = _waiting_at(state, position)
        remaining = state.target[index]
        evictable = 0
        if state.prefix_caching[0]:  # hits in the pool as it is now
            hits, evictable = _hits(state, gpu, index)
            remaining -= hits * block_tokens
        need = state.prompt[index] + state.output[index]
        if paged:
            smallest = 1 if chunk > 0 else _blocks_for(remaining, block_tokens)
            if smallest > free - evictable:
                break
        elif reserved + need > state.kv_capacity[0]:
            break
        take = remaining
        if chunk > 0:
            take = min(remaining, chunk, budget - used)
        if take > budget - used:
            break
        if paged:
            new_blocks = _blocks_for(take, block_tokens)
            if new_blocks > free - evictable:
                break
            free -= new_blocks + evictable
        else:
            reserved += need
        used += take
        admitted += 1
        slots -= 1
    return used, continued, admitted


# ---------------------------------------------------------------------- the event loop
@njit(cache=True, inline="always")
def _find_decision_gpu(state):
    """The lowest-index GPU that must decide now (idle, not waiting, with work), or -1."""
    for gpu in range(state.gpu_busy.shape[0]):
        if state.gpu_busy[gpu] or state.gpu_deferred[gpu]:
            continue
        if state.n_running[gpu] or state.n_prefilling[gpu] or _can_admit(state, gpu):
            return gpu
    return -1


@njit(cache=True, inline="always")
def _on_arrivals(state, lo, hi):
    """Queue (or reject) requests ``lo .. hi - 1``, which arrive now.

    A replica only counts the arrivals routed elsewhere (see :data:`ELSEWHERE`).
    """
    for index in range(lo, hi):
        state.n_arrived[0] = index + 1
        reason = state.rejection[index]
        if reason == 0:
            state.queue_tail[0] += 1
        elif reason < 0:  # routed elsewhere
            state.n_elsewhere[0] += 1
        else:
            state.reject_reason[index] = reason
            state.n_rejected[0] += 1
            if state.has_deadline[0]:
                state.n_ttft_misses[0] += 1


@njit(cache=True, inline="always")
def _pass_deadlines(state, t):
    """Count the TTFT deadlines at or before ``t`` that passed without a first token."""
    ptr = state.deadline_ptr[0]
    n = state.scan_deadline_s.shape[0]
    missed = 0
    while ptr < n and state.scan_deadline_s[ptr] <= t:
        index = state.scan_order[ptr]
        if (
            state.rejection[index] == 0
            and not state.first_token_s[index] <= state.scan_deadline_s[ptr]
        ):
            missed += 1
        ptr += 1
    state.deadline_ptr[0] = ptr
    state.n_ttft_misses[0] += missed


@njit(cache=True, inline="always")
def _admit_arrivals_before(state, t):
    """Queue every arrival strictly before ``t`` without moving the clock (every GPU works).

    The in-system integral is corrected so that each queued request counts from its own
    arrival (:meth:`Engine._admit_arrivals_before`: the correctly rounded sum of their arrival
    times); a rejected request never enters the system, nor does one routed elsewhere.
    """
    arrival = state.arrival_s
    lo = state.n_arrived[0]
    hi = bisect_left(arrival, t, lo, arrival.shape[0])
    if hi == lo:
        return
    queued_before = state.queue_tail[0]
    _on_arrivals(state, lo, hi)
    now = state.now[0]
    if state.queue_tail[0] - queued_before == hi - lo:
        state.in_system_s[0] -= fsum(arrival, lo, hi) - (hi - lo) * now
        return
    admitted = np.empty(hi - lo, dtype=np.float64)
    m = 0
    for j in range(lo, hi):
        if state.rejection[j] == 0:
            admitted[m] = arrival[j]
            m += 1
    state.in_system_s[0] -= fsum(admitted, 0, m) - m * now


@njit(cache=True, inline="always")
def _advance_to(floats, ints, layout, state, t):
    """Move the clock to ``t`` and process every event due by then (GPUs, arrivals, deadlines)."""
    in_system = (
        state.n_arrived[0] - state.n_completed[0] - state.n_rejected[0] - state.n_elsewhere[0]
    )
    state.in_system_s[0] += in_system * (t - state.now[0])
    state.now[0] = t
    state.gpu_deferred[:] = 0
    n_gpus = state.gpu_busy.shape[0]
    while True:  # iterations ending by t, in (time, gpu) order
        gpu = -1
        best = t
        for g in range(n_gpus):
            if state.gpu_busy[g] and state.gpu_free_at[g] <= best:
                if gpu < 0 or state.gpu_free_at[g] < best:
                    gpu = g
                    best = state.gpu_free_at[g]
        if gpu < 0:
            break
        state.gpu_busy[gpu] = 0
        _on_work_done(floats, ints, layout, gpu)
    arrival = state.arrival_s
    lo = state.n_arrived[0]
    n = arrival.shape[0]
    if lo < n and arrival[lo] <= t:
        _on_arrivals(state, lo, bisect_right(arrival, t, lo, n))
    if state.has_deadline[0]:
        _pass_deadlines(state, t)


@njit(cache=True)
def advance(floats, ints, layout):
    """Process events until a decision is due (``True``) or nothing is left to happen.

    A replica also stops (``False``, with ``blocked`` set) before processing an arrival at or
    beyond its ``horizon``, which is not routed yet (:meth:`ReplicaServer.advance`); the next
    call, once more requests are routed, resumes where it stopped.
    """
    state = state_view(floats, ints, layout)
    arrival = state.arrival_s
    n = arrival.shape[0]
    n_gpus = state.gpu_busy.shape[0]
    known = state.horizon[0]
    routed_all = known >= n
    unrouted_s = math.inf if routed_all else arrival[known]
    state.blocked[0] = 0
    while True:
        gpu = _find_decision_gpu(state)
        if gpu >= 0:
            state.decision_gpu[0] = gpu
            return True
        n_busy = 0
        first_end = math.inf
        for g in range(n_gpus):
            if state.gpu_busy[g]:
                n_busy += 1
                if state.gpu_free_at[g] < first_end:
                    first_end = state.gpu_free_at[g]
        if n_busy == n_gpus:
            # Every GPU works: nothing is decided before the first of them finishes.
            t = first_end
            if not routed_all and unrouted_s <= t:
                break
            _admit_arrivals_before(state, t)
        else:
            lo = state.n_arrived[0]
            t = arrival[lo] if lo < n else math.inf
            if first_end < t:
                t = first_end
            if not routed_all and unrouted_s <= t:
                break
            if t == math.inf:
                state.decision_gpu[0] = -1
                return False
        _advance_to(floats, ints, layout, state, t)
    state.decision_gpu[0] = -1
    state.blocked[0] = 1
    return False


@njit(cache=True, inline="always")
def _wait(state):
    """The WAIT decision: the deciding GPU idles until the next event (a refusal code)."""
    gpu = state.decision_gpu[0]
    if gpu < 0:
        return NO_DECISION_DUE
    if not _can_wait(state):
        return WAIT_DEADLOCKS
    state.gpu_deferred[gpu] = 1
    state.decision_gpu[0] = -1
    return DONE


# ---------------------------------------------------------------------- iterations
@njit(cache=True, inline="always")
def _needs_block(state, slot, block_tokens):
    """Whether the running sequence in ``slot`` starts a new KV block with its next token.

    It holds the blocks of its ``prompt + generated - 1`` computed tokens (the last sampled one
    is computed by the decode step), so it needs one more exactly when that is a multiple of
    the block size (``llmsched_env.sim.paged_kv.decode_rows_needing_block``).
    """
    index = state.run_id[slot]
    return (state.prompt[index] + state.run_generated[slot] - 1) % block_tokens == 0


@njit(cache=True, inline="always")
def _chunk_blocks(state, slot, block_tokens):
    """New KV blocks the prefill chunk in plan ``slot`` needs beyond what its request holds."""
    index = state.plan_id[slot]
    tokens = state.prefilled[index] + state.plan_take[slot]
    return _blocks_for(tokens, block_tokens) - state.request_blocks[index]


@njit(cache=True, inline="always")
def _sort_by_admission(state, ids, values):
    """Sort ``ids`` (and ``values`` alongside) by the requests' admission counters, in place."""
    for i in range(1, ids.shape[0]):
        index = ids[i]
        value = values[i]
        key = state.admitted_at[index]
        j = i - 1
        while j >= 0 and state.admitted_at[ids[j]] > key:
            ids[j + 1] = ids[j]
            values[j + 1] = values[j]
            j -= 1
        ids[j + 1] = index
        values[j + 1] = value


@njit(cache=True, inline="always")
def _release(state, gpu, index, computed, comes_back):
    """Free request ``index``'s blocks of ``gpu`` (paged mode; ``PagedKVAccounting._release``).

    With prefix caching the full blocks of its ``computed`` tokens stay cached (all of them if
    it ``comes_back`` from a preemption, its hashed ones if it completed), and only the blocks
    no other request holds become free.
    """
    if state.prefix_caching[0]:
        freed = pk.release(
            state.now,
            state.pool,
            state.pool_layout,
            gpu,
            index,
            state.request_blocks[index],
            computed,
            comes_back,
        )
    else:
        freed = state.request_blocks[index]
    state.blocks_used[gpu] -= freed
    state.request_blocks[index] = 0


@njit(cache=True)
def _preempt(floats, ints, layout, gpu, index):
    """Free ``index``'s blocks, discard its KV and put it at the head of the waiting queue.

    ``PagedKVAccounting._preempt``: a running request keeps its token state until it resumes
    and recomputes its prompt plus the tokens it generated; a started prompt starts over.
    """
    state = state_view(floats, ints, layout)
    base = gpu * state.slots_per_gpu[0]
    prompt = state.prompt[index]
    n_running = state.n_running[gpu]
    j = 0
    while j < n_running and state.run_id[base + j] != index:
        j += 1
    if j < n_running:
        slot = base + j
        generated = state.run_generated[slot]
        state.has_resume[index] = 1
        state.resume_generated[index] = generated
        state.resume_last_token_s[index] = state.run_last_token_s[slot]
        state.resume_max_gap_s[index] = state.run_max_gap_s[slot]
        state.resume_tbt_missed[index] = state.run_tbt_missed[slot]
        state.tokens_generated[index] = generated
        state.max_gap_s[index] = state.run_max_gap_s[slot]
        discarded = prompt + generated - 1
        state.target[index] = prompt + generated
        state.running_context[gpu] -= prompt + generated
        state.running_prompt[gpu] -= prompt
        state.running_predicted[gpu] -= state.predicted[index]
        for m in range(slot, base + n_running - 1):
            state.run_id[m] = state.run_id[m + 1]
            state.run_generated[m] = state.run_generated[m + 1]
            state.run_last_token_s[m] = state.run_last_token_s[m + 1]
            state.run_max_gap_s[m] = state.run_max_gap_s[m + 1]
            state.run_tbt_missed[m] = state.run_tbt_missed[m + 1]
        state.n_running[gpu] = n_running - 1
    else:
        n_prefilling = state.n_prefilling[gpu]
        j = 0
        while state.prefilling_id[base + j] != index:
            j += 1
        for m in range(base + j, base + n_prefilling - 1):
            state.prefilling_id[m] = state.prefilling_id[m + 1]
        state.n_prefilling[gpu] = n_prefilling - 1
        discarded = state.prefilled[index]
    _release(state, gpu, index, discarded, True)
    state.prefilled[index] = 0
    state.n_sequences[gpu] -= 1
    state.n_preemptions[0] += 1
    state.recomputed_tokens[0] += discarded
    state.preemptions[index] += 1
    state.recomputed[index] += discarded
    state.requeue[state.n_requeued[0]] = index
    state.n_requeued[0] += 1
    state.requeued_tokens[0] += state.target[index]


@njit(cache=True)
def _allocate_with_preemption(floats, ints, layout, gpu, k, chunks):
    """Give the iteration's requests their blocks in admission order, preempting as vLLM V1.

    ``PagedKVAccounting._allocate_with_preemption`` (and ``allocate_in_admission_order``):
    when a request's blocks are not free, the most recently admitted request on the GPU is
    preempted, again and again, until they are or the request itself was. The plan loses the
    preempted requests' chunks. Without prefix caching a victim frees all of its blocks, so the
    victims are chosen first and preempted after; with it a victim frees only the blocks no one
    else holds, so each is preempted at once and the free blocks counted again, and each request
    takes its blocks from the free queue in admission order
    (``PagedKVAccounting._allocate_cached``).

    Returns:
        ``(decodes, prefill_tokens, prefill_kv_tokens, chunks, preempted)`` that remain.
    """
    state = state_view(floats, ints, layout)
    block_tokens = state.block_tokens[0]
    caching = state.prefix_caching[0]
    base = gpu * state.slots_per_gpu[0]
    n_scheduled = k + chunks
    scheduled = np.empty(n_scheduled, dtype=np.int64)
    needs = np.empty(n_scheduled, dtype=np.int64)
    for j in range(k):
        scheduled[j] = state.run_id[base + j]
        needs[j] = 1 if _needs_block(state, base + j, block_tokens) else 0
    for c in range(chunks):
        scheduled[k + c] = state.plan_id[base + c]
        needs[k + c] = _chunk_blocks(state, base + c, block_tokens)
    decodes = scheduled[:k].copy()
    _sort_by_admission(state, scheduled, needs)
    n_running = state.n_running[gpu]
    n_on_gpu = n_running + state.n_prefilling[gpu]
    on_gpu = np.empty(n_on_gpu, dtype=np.int64)
    on_gpu[:n_running] = state.run_id[base : base + n_running]
    on_gpu[n_running:] = state.prefilling_id[base : base + state.n_prefilling[gpu]]
    _sort_by_admission(state, on_gpu, np.zeros(n_on_gpu, dtype=np.int64))
    free = state.capacity_blocks[0] - state.blocks_used[gpu]
    victims = np.empty(n_on_gpu, dtype=np.int64)
    n_victims = 0
    n_left = n_on_gpu
    served = n_scheduled
    for i in range(n_scheduled):
        index = scheduled[i]
        need = needs[i]
        gone = False
        for v in range(n_victims):
            if victims[v] == index:
                gone = True
        while not gone and need > free:
            n_left -= 1
            victim = on_gpu[n_left]
            victims[n_victims] = victim
            n_victims += 1
            if caching:
                _preempt(floats, ints, layout, gpu, victim)
                free = state.capacity_blocks[0] - state.blocks_used[gpu]
            else:
                free += state.request_blocks[victim]
            gone = victim == index
        if gone:
            served = i
            break  # every later request is more recent, so preempted too
        free -= need
        if caching:
            if need:
                _grow(state, gpu, index, need, True)
        else:
            state.request_blocks[index] += need
    if not caching:
        for i in range(served):
            state.blocks_used[gpu] += needs[i]
        for v in range(n_victims):
            _preempt(floats, ints, layout, gpu, victims[v])
    decodes_gone = 0
    for j in range(k):
        for v in range(n_victims):
            if victims[v] == decodes[j]:
                decodes_gone += 1
    kept = 0
    for c in range(chunks):
        index = state.plan_id[base + c]
        gone = False
        for v in range(n_victims):
            if victims[v] == index:
                gone = True
        if not gone:
            state.plan_id[base + kept] = index
            state.plan_take[base + kept] = state.plan_take[base + c]
            kept += 1
    tokens = kv = 0
    for c in range(kept):
        tokens += state.plan_take[base + c]
        kv += state.prefilled[state.plan_id[base + c]]
    return k - decodes_gone, tokens, kv, kept, n_victims > 0


@njit(cache=True)
def _allocate_blocks(floats, ints, layout, gpu, k, chunks, used, kv):
    """Paged mode: the blocks of the iteration's decodes and chunks (preempting if short).

    Returns:
        ``(decodes, prefill_tokens, prefill_kv_tokens, chunks, preempted)``.
    """
    state = state_view(floats, ints, layout)
    block_tokens = state.block_tokens[0]
    base = gpu * state.slots_per_gpu[0]
    need = 0
    for j in range(k):
        if _needs_block(state, base + j, block_tokens):
            need += 1
    for c in range(chunks):
        need += _chunk_blocks(state, base + c, block_tokens)
    if need > state.capacity_blocks[0] - state.blocks_used[gpu]:
        return _allocate_with_preemption(floats, ints, layout, gpu, k, chunks)
    caching = state.prefix_caching[0]
    # Every scheduled request gets its blocks: the decodes first, then the chunks (with prefix
    # caching, the order in which they leave the free queue).
    for j in range(k):
        if _needs_block(state, base + j, block_tokens):
            _grow(state, gpu, state.run_id[base + j], 1, caching)
    for c in range(chunks):
        blocks = _chunk_blocks(state, base + c, block_tokens)
        if blocks:
            _grow(state, gpu, state.plan_id[base + c], blocks, caching)
    return k, used, kv, chunks, False


@njit(cache=True, inline="always")
def _grow(state, gpu, index, n, caching):
    """Give request ``index`` ``n`` more blocks of ``gpu`` (with caching, from the free queue)."""
    if caching:
        pk.grow(
            state.now, state.pool, state.pool_layout, gpu, index, state.request_blocks[index], n
        )
    state.request_blocks[index] += n
    state.blocks_used[gpu] += n


@njit(cache=True)
def _admit(floats, ints, layout, gpu, budget, used, max_new_prompts, chunks):
    """Admit requests from the head of the waiting queue into the plan (``_plan_admissions``).

    Reserve mode reserves each one's footprint; paged mode gives it the blocks of its first
    chunk and stops at a head whose blocks are not free; with prefix caching it first takes
    its cached prefix blocks (free ones count against the free blocks) and its prefill starts
    after them. Returns ``(prefill tokens, chunks, cached tokens the admitted chunks attend
    to)``.
    """
    state = state_view(floats, ints, layout)
    base = gpu * state.slots_per_gpu[0]
    chunk = state.chunk_size[0]
    paged = state.paged[0]
    caching = state.prefix_caching[0]
    block_tokens = state.block_tokens[0]
    admitted = kv = 0
    while used < budget and admitted < max_new_prompts and _can_admit(state, gpu):
        requeued = state.n_requeued[0] > 0
        index = _waiting_head(state)
        target = state.target[index]
        hits = evictable = 0
        if caching:
            hits, evictable = _hits(state, gpu, index)
        remaining = target - hits * block_tokens
        take = remaining
        if chunk > 0:
            take = min(remaining, chunk, budget - used)
        if take > budget - used:
            break  # whole prompts only: the head does not fit, and the queue is FIFO
        if paged:
            need = _blocks_for(take, block_tokens)
            if need > state.capacity_blocks[0] - state.blocks_used[gpu] - evictable:
                break  # the head's blocks are not free: head-of-line blocking, as in vLLM
            if caching:
                revived, hit_tokens, saved = pk.admit_cached(
                    state.now,
                    state.pool,
                    state.pool_layout,
                    gpu,
                    index,
                    hits,
                    need,
                    target,
                    state.preemptions[index] > 0,
                )
                state.blocks_used[gpu] += revived + need
                state.request_blocks[index] = hits + need
                state.prefilled[index] = hit_tokens
                state.recomputed_tokens[0] -= saved
                state.recomputed[index] -= saved
                kv += hit_tokens
            else:
                state.request_blocks[index] += need
                state.blocks_used[gpu] += need
            state.admissions[0] += 1
            state.admitted_at[index] = state.admissions[0]
        else:
            state.kv_reserved[gpu] += state.prompt[index] + state.output[index]
        if requeued:
            state.n_requeued[0] -= 1
            state.requeued_tokens[0] -= target
        else:
            state.queue_head[0] += 1
            state.start_s[index] = state.now[0]
        admitted += 1
        state.prefilling_id[base + state.n_prefilling[gpu]] = index
        state.n_prefilling[gpu] += 1
        state.n_sequences[gpu] += 1
        state.gpu[index] = gpu
        state.plan_id[base + chunks] = index
        state.plan_take[base + chunks] = take
        chunks += 1
        used += take
    return used, chunks, kv


@njit(cache=True)
def plan_iteration(floats, ints, layout, decode_count, prefill_budget_tokens, max_new_prompts):
    """Choose the deciding GPU's next iteration, admitting prompts into it.

    :meth:`IterationServer.run_iteration` up to the latency model: the first ``decode_count``
    running sequences (capped) decode; the started prompts continue, oldest first; in paged
    mode the decodes and chunks get their blocks, preempting if short; then (unless someone
    was preempted) prompts are admitted from the head of the queue, within the prefill budget
    and the cap.

    Returns:
        ``(code, formed, decodes, prefill_tokens, prefill_kv_tokens, chunks, context,
        longest, shortest)``: a refusal code; whether the decision was made (else nothing
        changed: the iteration would have been empty); then the latency model's inputs (the
        decodes' context and its spread). A decision with no decodes and no chunks only
        preempted (paged mode): no iteration runs and the GPU decides again.
    """
    state = state_view(floats, ints, layout)
    gpu = state.decision_gpu[0]
    if gpu < 0:
        return NO_DECISION_DUE, False, 0, 0, 0, 0, 0, 0, 0
    max_tokens = state.max_tokens[0]
    n_running = state.n_running[gpu]
    k = min(decode_count, n_running, max_tokens)
    if k < 0:
        k = 0
    budget = min(prefill_budget_tokens, max_tokens - k)
    base = gpu * state.slots_per_gpu[0]
    chunk = state.chunk_size[0]
    used = kv = chunks = 0
    if budget > 0:
        for j in range(state.n_prefilling[gpu]):  # the started prompts continue
            index = state.prefilling_id[base + j]
            done = state.prefilled[index]
            take = min(state.target[index] - done, budget - used)
            if chunk > 0 and chunk < take:
                take = chunk
            if take <= 0:
                break
            state.plan_id[base + chunks] = index
            state.plan_take[base + chunks] = take
            chunks += 1
            used += take
            kv += done
    preempted = False
    paged = state.paged[0]
    if paged:
        k, used, kv, chunks, preempted = _allocate_blocks(
            floats, ints, layout, gpu, k, chunks, used, kv
        )
    if not preempted and used < budget:
        used, chunks, hit_kv = _admit(
            floats, ints, layout, gpu, budget, used, max_new_prompts, chunks
        )
        kv += hit_kv
    if paged:
        blocks = state.blocks_used[gpu] * state.block_tokens[0]
        state.kv_used[gpu] = blocks
        state.kv_reserved[gpu] = blocks
    if k == 0 and chunks == 0:
        if preempted:
            state.decision_gpu[0] = -1  # the GPU decides again, with the preempted ones waiting
        return DONE, preempted, 0, 0, 0, 0, 0, 0, 0
    if k == state.n_running[gpu]:
        context = state.running_context[gpu]
    else:
        context = 0
        for j in range(k):
            context += state.prompt[state.run_id[base + j]] + state.run_generated[base + j]
    longest = shortest = 0
    if k > 1 and state.reads_spread[0]:
        longest = shortest = state.prompt[state.run_id[base]] + state.run_generated[base]
        for j in range(1, k):
            c = state.prompt[state.run_id[base + j]] + state.run_generated[base + j]
            if c > longest:
                longest = c
            elif c < shortest:
                shortest = c
    state.pending_decodes[gpu] = k
    state.pending_chunks[gpu] = chunks
    return DONE, True, k, used, kv, chunks, context, longest, shortest


@njit(cache=True, inline="always")
def _start_iteration(state, decodes, prefill_tokens, chunks, duration):
    """Start the planned iteration of the deciding GPU, lasting ``duration`` seconds."""
    gpu = state.decision_gpu[0]
    state.pending[gpu] = 1
    state.last_iteration_s[gpu] = duration
    state.n_iterations[0] += 1
    state.sequences_processed[0] += decodes + chunks
    state.prefill_tokens_processed[0] += prefill_tokens
    state.decode_tokens_processed[0] += decodes
    end = state.now[0] + duration
    state.gpu_busy[gpu] = 1
    state.gpu_free_at[gpu] = end
    state.gpu_busy_s[gpu] += duration
    state.decision_gpu[0] = -1


@njit(cache=True)
def run_timed_iteration(
    floats, ints, layout, decode_count, prefill_budget_tokens, max_new_prompts, tables
):
    """:func:`plan_iteration`, the compiled latency model's time, :func:`_start_iteration`.

    The model is ``state.latency_code`` with ``state.latency_params`` and ``tables``
    (:func:`~llmsched_env.latency.iteration_timing.iteration_time_s`). Returns ``(code,
    formed)``; ``NO_VALID_TIME`` if the model gives no valid time (the iteration's admissions
    are then done, as in Python).
    """
    state = state_view(floats, ints, layout)
    code, formed, k, prefill, kv, chunks, context, longest, shortest = plan_iteration(
        floats, ints, layout, decode_count, prefill_budget_tokens, max_new_prompts
    )
    if code != DONE or not formed or (k == 0 and chunks == 0):
        return code, formed
    duration = iteration_time_s(
        state.latency_code[0],
        state.latency_params,
        tables,
        prefill,
        k,
        context,
        kv,
        chunks,
        longest,
        shortest,
    )
    if not duration >= 0.0:
        return NO_VALID_TIME, False
    _start_iteration(state, k, prefill, chunks, duration)
    return DONE, True


# ---------------------------------------------------------------------- the end of an iteration
@njit(cache=True)
def _complete_one(floats, ints, layout, gpu, index, generated, tbt_missed):
    """Complete request ``index`` with ``generated`` tokens; free its KV memory."""
    state = state_view(floats, ints, layout)
    t = state.now[0]
    state.completed[index] = 1
    state.completion_s[index] = t
    state.tokens_generated[index] = generated
    state.n_completed[0] += 1
    state.n_sequences[gpu] -= 1
    if state.paged[0]:
        _release(state, gpu, index, state.prompt[index] + generated - 1, False)
    else:
        state.kv_reserved[gpu] -= state.prompt[index] + state.output[index]
        state.kv_used[gpu] -= state.prompt[index] + generated
    ttft_met = (not state.has_deadline[0]) or (
        state.first_token_s[index] <= state.ttft_deadline_s[index]
    )
    if ttft_met and not tbt_missed:
        state.n_on_time[0] += 1
        state.on_time_tokens[0] += state.output[index]


@njit(cache=True, inline="always")
def _resume(floats, ints, layout, state, gpu, index):
    """Emit the next token of a preempted request whose recomputation just finished.

    ``IterationRun._resume``: the gap since its last token before the preemption counts like
    any other. Returns whether it keeps running (else it completed).
    """
    t = state.now[0]
    gap = t - state.resume_last_token_s[index]
    max_gap = state.resume_max_gap_s[index]
    if gap > max_gap:
        max_gap = gap
    missed = state.resume_tbt_missed[index]
    if gap > state.tbt_target_s[0]:
        if missed == 0:
            state.n_tbt_misses[0] += 1
        missed = 1
    generated = state.resume_generated[index] + 1
    state.tokens_generated[index] = generated
    if generated >= state.output[index]:
        state.has_resume[index] = 0
        state.max_gap_s[index] = max_gap
        _complete_one(floats, ints, layout, gpu, index, generated, missed != 0)
        return False
    state.resume_generated[index] = generated
    state.resume_last_token_s[index] = t
    state.resume_max_gap_s[index] = max_gap
    state.resume_tbt_missed[index] = missed
    prompt = state.prompt[index]
    state.running_context[gpu] += prompt + generated
    state.running_prompt[gpu] += prompt
    state.running_predicted[gpu] += state.predicted[index]
    return True


@njit(cache=True)
def _on_work_done(floats, ints, layout, gpu):
    """Apply the tokens of ``gpu``'s iteration, which just ended (``IterationRun``'s rules)."""
    state = state_view(floats, ints, layout)
    if not state.pending[gpu]:
        return
    state.pending[gpu] = 0
    t = state.now[0]
    base = gpu * state.slots_per_gpu[0]
    n_new = 0  # requests that start (or resume) decoding, after the kept running ones
    chunks = state.pending_chunks[gpu]
    finished_prefill = False
    for c in range(chunks):
        index = state.plan_id[base + c]
        take = state.plan_take[base + c]
        if state.prefix_caching[0]:
            done = state.prefilled[index]
            pk.cache_prompt_blocks(
                state.now, state.pool, state.pool_layout, gpu, index, done, done + take
            )
        state.prefilled[index] += take
        state.kv_used[gpu] += take
        if state.prefilled[index] != state.target[index]:
            continue
        finished_prefill = True
        if state.has_resume[index]:
            if _resume(floats, ints, layout, state, gpu, index):
                state.plan_id[base + n_new] = index  # slots before c are read already
                n_new += 1
            continue
        state.first_token_s[index] = t
        state.tokens_generated[index] = 1
        state.kv_used[gpu] += 1
        if state.output[index] == 1:
            _complete_one(floats, ints, layout, gpu, index, 1, False)
        else:
            state.plan_id[base + n_new] = index
            n_new += 1
            state.running_context[gpu] += state.prompt[index] + 1
            state.running_prompt[gpu] += state.prompt[index]
            state.running_predicted[gpu] += state.predicted[index]
    if finished_prefill:
        kept = 0
        for j in range(state.n_prefilling[gpu]):
            index = state.prefilling_id[base + j]
            if state.prefilled[index] < state.target[index]:
                state.prefilling_id[base + kept] = index
                kept += 1
        state.n_prefilling[gpu] = kept
    k = state.pending_decodes[gpu]
    n_running = state.n_running[gpu]
    if k:
        target = state.tbt_target_s[0]
        new_misses = 0
        n_done = 0
        for j in range(k):
            s = base + j
            state.run_generated[s] += 1
            gap = t - state.run_last_token_s[s]
            if gap > state.run_max_gap_s[s]:
                state.run_max_gap_s[s] = gap
            state.run_last_token_s[s] = t
            if gap > target:
                if state.run_tbt_missed[s] == 0:
                    new_misses += 1
                state.run_tbt_missed[s] = 1
            if state.run_generated[s] >= state.output[state.run_id[s]]:
                n_done += 1
        state.n_tbt_misses[0] += new_misses
        state.kv_used[gpu] += k
        state.running_context[gpu] += k
        if n_done:
            kept = 0
            for j in range(n_running):
                s = base + j
                index = state.run_id[s]
                if j < k and state.run_generated[s] >= state.output[index]:
                    state.max_gap_s[index] = state.run_max_gap_s[s]
                    _complete_one(
                        floats,
                        ints,
                        layout,
                        gpu,
                        index,
                        state.run_generated[s],
                        state.run_tbt_missed[s] != 0,
                    )
                    state.running_context[gpu] -= state.prompt[index] + state.output[index]
                    state.running_prompt[gpu] -= state.prompt[index]
                    state.running_predicted[gpu] -= state.predicted[index]
                    continue
                if kept != j:
                    d = base + kept
                    state.run_id[d] = index
                    state.run_generated[d] = state.run_generated[s]
                    state.run_last_token_s[d] = state.run_last_token_s[s]
                    state.run_max_gap_s[d] = state.run_max_gap_s[s]
                    state.run_tbt_missed[d] = state.run_tbt_missed[s]
                kept += 1
            n_running = kept
    for j in range(n_new):
        index = state.plan_id[base + j]
        s = base + n_running + j
        state.run_id[s] = index
        if state.has_resume[index]:  # recomputed: its own counts, gaps and TBT flag
            state.has_resume[index] = 0
            state.run_generated[s] = state.resume_generated[index]
            state.run_last_token_s[s] = state.resume_last_token_s[index]
            state.run_max_gap_s[s] = state.resume_max_gap_s[index]
            state.run_tbt_missed[s] = state.resume_tbt_missed[index]
        else:
            state.run_generated[s] = 1
            state.run_last_token_s[s] = t
            state.run_max_gap_s[s] = 0.0
            state.run_tbt_missed[s] = 0
    state.n_running[gpu] = n_running + n_new
    if state.paged[0]:
        blocks = state.blocks_used[gpu] * state.block_tokens[0]
        state.kv_used[gpu] = blocks
        state.kv_reserved[gpu] = blocks


# ---------------------------------------------------------------------- entry points
# Python calls these with the state's buffers: a call that passed the state's named tuple would
# unbox each of its arrays.


@njit(cache=True)
def wait(floats, ints, layout):
    """:func:`_wait` on a run's buffers."""
    return _wait(state_view(floats, ints, layout))


@njit(cache=True)
def can_wait(floats, ints, layout):
    """:func:`_can_wait` on a run's buffers."""
    return _can_wait(state_view(floats, ints, layout))


@njit(cache=True)
def can_admit(floats, ints, layout, gpu):
    """:func:`_can_admit` on a run's buffers."""
    return _can_admit(state_view(floats, ints, layout), gpu)


@njit(cache=True)
def can_admit_within(floats, ints, layout, gpu, budget_tokens):
    """:func:`_can_admit_within` on a run's buffers."""
    return _can_admit_within(state_view(floats, ints, layout), gpu, budget_tokens)


@njit(cache=True)
def smallest_prefill_budget(floats, ints, layout, gpu):
    """:func:`_smallest_prefill_budget` on a run's buffers."""
    return _smallest_prefill_budget(state_view(floats, ints, layout), gpu)


@njit(cache=True)
def start_iteration(floats, ints, layout, decodes, prefill_tokens, chunks, duration):
    """:func:`_start_iteration` on a run's buffers."""
    _start_iteration(state_view(floats, ints, layout), decodes, prefill_tokens, chunks, duration)


# ---------------------------------------------------------------------- a routed replica
@njit(cache=True, inline="always")
def _assign(state, index):
    """Take request ``index`` (the next routed, routed here) into a replica's queue columns.

    It joins the waiting queue when the replica's clock reaches its arrival
    (:meth:`ReplicaServer.assign`); one the replica cannot admit is rejected then.
    """
    state.n_assigned[0] += 1
    state.horizon[0] = index + 1
    if state.rejection[index] != 0:
        return
    k = state.queue_filled[0]
    state.queue_order[k] = index
    state.queue_prompt_cumsum[k + 1] = state.queue_prompt_cumsum[k] + state.prompt[index]
    work = state.prompt[index] + state.predicted[index]
    state.queue_work_cumsum[k + 1] = state.queue_work_cumsum[k] + work
    state.queue_filled[0] = k + 1


@njit(cache=True, inline="always")
def _mark_elsewhere(state, index):
    """Note that request ``index`` (the next routed) went to another replica (once)."""
    state.horizon[0] = index + 1
    if state.rejection[index] >= 0:
        state.rejection[index] = ELSEWHERE - state.rejection[index]


@njit(cache=True)
def assign(floats, ints, layout, index):
    """:func:`_assign` on a replica's buffers."""
    _assign(state_view(floats, ints, layout), index)


@njit(cache=True)
def mark_elsewhere(floats, ints, layout, index):
    """:func:`_mark_elsewhere` on a replica's buffers."""
    _mark_elsewhere(state_view(floats, ints, layout), index)


@njit(cache=True, inline="always")
def _pass_deadlines_before(state, horizon_s):
    """Count the TTFT deadlines before ``horizon_s`` that pass unmet, the clock left alone.

    :meth:`ReplicaServer.pass_deadlines_before`: the deadlines at the horizon too, unless an
    iteration ends then or a request not routed yet is due then (``later_due_s``).
    """
    if not state.has_deadline[0]:
        return
    through = True
    for g in range(state.gpu_busy.shape[0]):
        if state.gpu_busy[g] and state.gpu_free_at[g] <= horizon_s:
            through = False
    known = state.horizon[0]
    if through and known < state.arrival_s.shape[0]:
        through = state.later_due_s[known] > horizon_s
    _pass_deadlines(state, horizon_s if through else np.nextafter(horizon_s, -math.inf))


@njit(cache=True)
def pass_deadlines_before(floats, ints, layout, horizon_s):
    """:func:`_pass_deadlines_before` on a replica's buffers."""
    _pass_deadlines_before(state_view(floats, ints, layout), horizon_s)
