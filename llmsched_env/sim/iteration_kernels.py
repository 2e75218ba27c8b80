"""The compiled event loop and iterations of the iteration-level server (reserve mode).

The rules are those of :mod:`llmsched_env.sim.iteration_server` with ``kv_allocation="reserve"``
(no preemption, no prefix caching), applied in the same order with the same arithmetic by
:class:`~llmsched_env.sim.iteration_server.IterationServer`'s Python
(:mod:`~llmsched_env.sim.engine`, :mod:`~llmsched_env.sim.iteration_planning`,
:mod:`~llmsched_env.sim.iteration_run`), so that both servers give the same episode bit for bit;
the tests play both side by side. The state is :data:`~llmsched_env.sim.iteration_state
.IterationState`.

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
from llmsched_env.sim.batch_kernels import fsum
from llmsched_env.sim.batch_rules import bisect_left, bisect_right
from llmsched_env.sim.iteration_state import state_view

#: Refusal codes of the kernels (0: done); the server turns them into exceptions.
DONE = 0
NO_DECISION_DUE = 1
WAIT_DEADLOCKS = 2
NO_VALID_TIME = 3


# ---------------------------------------------------------------------- queries
@njit(cache=True)
def _can_admit(state, gpu):
    """Whether ``gpu`` could admit the head of the waiting queue now (a slot and its footprint)."""
    if state.n_sequences[gpu] >= state.max_sequences[0]:
        return False
    head = state.queue_head[0]
    if head >= state.queue_tail[0]:
        return False
    index = state.queue_order[head]
    need = state.prompt[index] + state.output[index]
    return state.kv_reserved[gpu] + need <= state.kv_capacity[0]


@njit(cache=True)
def _can_wait(state):
    """Whether WAIT is safe: a request is still to arrive or a GPU works."""
    if state.n_arrived[0] < state.arrival_s.shape[0]:
        return True
    for g in range(state.gpu_busy.shape[0]):
        if state.gpu_busy[g]:
            return True
    return False


@njit(cache=True)
def _smallest_prefill_budget(state, gpu):
    """The least prefill budget that gives ``gpu`` prefill work (``inf``: none does)."""
    if state.n_prefilling[gpu]:
        return 1.0
    if not _can_admit(state, gpu):
        return math.inf
    if state.chunk_size[0] > 0:
        return 1.0
    return float(state.prompt[state.queue_order[state.queue_head[0]]])


@njit(cache=True)
def _plan_prefill(state, gpu, budget_tokens, max_new_prompts):
    """What a prefill-only iteration of ``gpu`` would prefill: ``(tokens, continued, admitted)``.

    The dry run of :meth:`IterationServer.plan_prefill` (reserve mode); nothing changes.
    """
    max_tokens = state.max_tokens[0]
    budget = budget_tokens if budget_tokens < max_tokens else max_tokens
    chunk = state.chunk_size[0]
    base = gpu * state.slots_per_gpu[0]
    used = continued = 0
    for j in range(state.n_prefilling[gpu]):
        index = state.prefilling_id[base + j]
        remaining = state.prompt[index] - state.prefilled[index]
        take = min(remaining, budget - used)
        if chunk > 0 and chunk < take:
            take = chunk
        if take <= 0:
            break
        used += take
        continued += 1
    admitted = 0
    slots = state.max_sequences[0] - state.n_sequences[gpu]
    reserved = state.kv_reserved[gpu]
    for position in range(state.queue_head[0], state.queue_tail[0]):
        if used >= budget or admitted >= max_new_prompts or slots <= 0:
            break
        index = state.queue_order[position]
        remaining = state.prompt[index]
        need = remaining + state.output[index]
        if reserved + need > state.kv_capacity[0]:
            break
        take = remaining
        if chunk > 0:
            take = min(remaining, chunk, budget - used)
        if take > budget - used:
            break
        reserved += need
        used += take
        admitted += 1
        slots -= 1
    return used, continued, admitted


# ---------------------------------------------------------------------- the event loop
@njit(cache=True)
def _find_decision_gpu(state):
    """The lowest-index GPU that must decide now (idle, not waiting, with work), or -1."""
    for gpu in range(state.gpu_busy.shape[0]):
        if state.gpu_busy[gpu] or state.gpu_deferred[gpu]:
            continue
        if state.n_running[gpu] or state.n_prefilling[gpu] or _can_admit(state, gpu):
            return gpu
    return -1


@njit(cache=True)
def _on_arrivals(state, lo, hi):
    """Queue (or reject) requests ``lo .. hi - 1``, which arrive now."""
    for index in range(lo, hi):
        state.n_arrived[0] = index + 1
        reason = state.rejection[index]
        if reason == 0:
            state.queue_tail[0] += 1
        else:
            state.reject_reason[index] = reason
            state.n_rejected[0] += 1
            if state.has_deadline[0]:
                state.n_ttft_misses[0] += 1


@njit(cache=True)
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


@njit(cache=True)
def _admit_arrivals_before(state, t):
    """Queue every arrival strictly before ``t`` without moving the clock (every GPU works).

    The in-system integral is corrected so that each queued request counts from its own
    arrival (:meth:`Engine._admit_arrivals_before`: the correctly rounded sum of their arrival
    times); a rejected request never enters the system.
    """
    arrival = state.arrival_s
    lo = state.n_arrived[0]
    hi = bisect_left(arrival, t, lo, arrival.shape[0])
    if hi == lo:
        return
    rejected_before = state.n_rejected[0]
    _on_arrivals(state, lo, hi)
    now = state.now[0]
    if state.n_rejected[0] == rejected_before:
        state.in_system_s[0] -= fsum(arrival, lo, hi) - (hi - lo) * now
        return
    admitted = np.empty(hi - lo, dtype=np.float64)
    m = 0
    for j in range(lo, hi):
        if state.reject_reason[j] == 0:
            admitted[m] = arrival[j]
            m += 1
    state.in_system_s[0] -= fsum(admitted, 0, m) - m * now


@njit(cache=True)
def _advance_to(state, t):
    """Move the clock to ``t`` and process every event due by then (GPUs, arrivals, deadlines)."""
    in_system = state.n_arrived[0] - state.n_completed[0] - state.n_rejected[0]
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
        _on_work_done(state, gpu)
    arrival = state.arrival_s
    lo = state.n_arrived[0]
    n = arrival.shape[0]
    if lo < n and arrival[lo] <= t:
        _on_arrivals(state, lo, bisect_right(arrival, t, lo, n))
    if state.has_deadline[0]:
        _pass_deadlines(state, t)


@njit(cache=True)
def _advance(state):
    """Process events until a decision is due (``True``) or nothing is left to happen."""
    arrival = state.arrival_s
    n = arrival.shape[0]
    n_gpus = state.gpu_busy.shape[0]
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
            _admit_arrivals_before(state, t)
        else:
            lo = state.n_arrived[0]
            t = arrival[lo] if lo < n else math.inf
            if first_end < t:
                t = first_end
            if t == math.inf:
                state.decision_gpu[0] = -1
                return False
        _advance_to(state, t)


@njit(cache=True)
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
@njit(cache=True)
def _plan_iteration(state, decode_count, prefill_budget_tokens, max_new_prompts):
    """Choose the deciding GPU's next iteration, admitting prompts into it.

    :meth:`IterationServer.run_iteration` up to the latency model: the first ``decode_count``
    running sequences (capped) decode; the started prompts continue, oldest first, then prompts
    are admitted from the head of the queue, within the prefill budget and the cap.

    Returns:
        ``(code, formed, decodes, prefill_tokens, prefill_kv_tokens, chunks, context,
        longest, shortest)``: a refusal code, whether the iteration has work (else nothing
        changed), then the latency model's inputs (the decodes' context and its spread).
    """
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
            take = min(state.prompt[index] - done, budget - used)
            if chunk > 0 and chunk < take:
                take = chunk
            if take <= 0:
                break
            state.plan_id[base + chunks] = index
            state.plan_take[base + chunks] = take
            chunks += 1
            used += take
            kv += done
        admitted = 0
        while used < budget and admitted < max_new_prompts and _can_admit(state, gpu):
            index = state.queue_order[state.queue_head[0]]
            take = state.prompt[index]
            if chunk > 0:
                take = min(take, chunk, budget - used)
            if take > budget - used:
                break  # whole prompts only: the head does not fit, and the queue is FIFO
            state.kv_reserved[gpu] += state.prompt[index] + state.output[index]
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
    if k == 0 and chunks == 0:
        return DONE, False, 0, 0, 0, 0, 0, 0, 0
    if k == n_running:
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


@njit(cache=True)
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
def _run_timed(state, decode_count, prefill_budget_tokens, max_new_prompts, tables):
    """:func:`_plan_iteration`, the compiled latency model's time, :func:`_start_iteration`.

    The model is ``state.latency_code`` with ``state.latency_params`` and ``tables``
    (:func:`~llmsched_env.latency.iteration_timing.iteration_time_s`). Returns ``(code,
    formed)``; ``NO_VALID_TIME`` if the model gives no valid time (the iteration's admissions
    are then done, as in Python).
    """
    code, formed, k, prefill, kv, chunks, context, longest, shortest = _plan_iteration(
        state, decode_count, prefill_budget_tokens, max_new_prompts
    )
    if code != DONE or not formed:
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
def _complete_one(state, gpu, index, generated, tbt_missed):
    """Complete request ``index`` with ``generated`` tokens; free its KV memory."""
    t = state.now[0]
    state.completed[index] = 1
    state.completion_s[index] = t
    state.tokens_generated[index] = generated
    state.n_completed[0] += 1
    state.n_sequences[gpu] -= 1
    state.kv_reserved[gpu] -= state.prompt[index] + state.output[index]
    state.kv_used[gpu] -= state.prompt[index] + generated
    ttft_met = (not state.has_deadline[0]) or (
        state.first_token_s[index] <= state.ttft_deadline_s[index]
    )
    if ttft_met and not tbt_missed:
        state.n_on_time[0] += 1
        state.on_time_tokens[0] += state.output[index]


@njit(cache=True)
def _on_work_done(state, gpu):
    """Apply the tokens of ``gpu``'s iteration, which just ended (``IterationRun``'s rules)."""
    if not state.pending[gpu]:
        return
    state.pending[gpu] = 0
    t = state.now[0]
    base = gpu * state.slots_per_gpu[0]
    n_new = 0  # requests that start decoding, appended after the kept running ones
    chunks = state.pending_chunks[gpu]
    # Their indices go to plan_id's free end, after the plan: at most max_sequences in all.
    finished_prefill = False
    for c in range(chunks):
        index = state.plan_id[base + c]
        take = state.plan_take[base + c]
        state.prefilled[index] += take
        state.kv_used[gpu] += take
        if state.prefilled[index] == state.prompt[index]:
            finished_prefill = True
            state.first_token_s[index] = t
            state.tokens_generated[index] = 1
            state.kv_used[gpu] += 1
            if state.output[index] == 1:
                _complete_one(state, gpu, index, 1, False)
            else:
                # Reuse the plan's slot c: chunks before it are read already.
                state.plan_id[base + n_new] = index
                n_new += 1
                state.running_context[gpu] += state.prompt[index] + 1
                state.running_prompt[gpu] += state.prompt[index]
                state.running_predicted[gpu] += state.predicted[index]
    if finished_prefill:
        kept = 0
        for j in range(state.n_prefilling[gpu]):
            index = state.prefilling_id[base + j]
            if state.prefilled[index] < state.prompt[index]:
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
                        state, gpu, index, state.run_generated[s], state.run_tbt_missed[s] != 0
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
        state.run_generated[s] = 1
        state.run_last_token_s[s] = t
        state.run_max_gap_s[s] = 0.0
        state.run_tbt_missed[s] = 0
    state.n_running[gpu] = n_running + n_new


# ---------------------------------------------------------------------- entry points
# Python calls these with the state's buffers: a call that passed the state's named tuple would
# unbox each of its arrays.
@njit(cache=True)
def advance(floats, ints, layout):
    """:func:`_advance` on a run's buffers."""
    return _advance(state_view(floats, ints, layout))


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
def smallest_prefill_budget(floats, ints, layout, gpu):
    """:func:`_smallest_prefill_budget` on a run's buffers."""
    return _smallest_prefill_budget(state_view(floats, ints, layout), gpu)


@njit(cache=True)
def plan_prefill(floats, ints, layout, gpu, budget_tokens, max_new_prompts):
    """:func:`_plan_prefill` on a run's buffers."""
    return _plan_prefill(state_view(floats, ints, layout), gpu, budget_tokens, max_new_prompts)


@njit(cache=True)
def plan_iteration(floats, ints, layout, decode_count, prefill_budget_tokens, max_new_prompts):
    """:func:`_plan_iteration` on a run's buffers."""
    state = state_view(floats, ints, layout)
    return _plan_iteration(state, decode_count, prefill_budget_tokens, max_new_prompts)


@njit(cache=True)
def run_timed_iteration(
    floats, ints, layout, decode_count, prefill_budget_tokens, max_new_prompts, tables
):
    """:func:`_run_timed` on a run's buffers."""
    state = state_view(floats, ints, layout)
    return _run_timed(state, decode_count, prefill_budget_tokens, max_new_prompts, tables)


@njit(cache=True)
def start_iteration(floats, ints, layout, decodes, prefill_tokens, chunks, duration):
    """:func:`_start_iteration` on a run's buffers."""
    _start_iteration(state_view(floats, ints, layout), decodes, prefill_tokens, chunks, duration)
