"""Compiled event loop and dispatch of the request-level server.

``BatchScheduling-v0`` steps once per dispatch, and its speed is the speed of this loop: process
the events up to the next decision (GPU work ending, arrivals, deadlines passing), then carry
out the decision. The functions here do that on the state of a :class:`~llmsched_env.sim.
batch_server.BatchServer` (:mod:`~llmsched_env.sim.batch_state`), compiled by numba, so that a
step costs a few microseconds whatever the number of requests. The rules they apply (lateness,
dispatch sizing, the decision mask) live in :mod:`~llmsched_env.sim.batch_rules`, the batch
timings with the latency models (:func:`~llmsched_env.latency.batch.compiled_batch_timing`).

Events at the same time are processed in a fixed order: GPU work that ends (lowest GPU index
first), then arrivals (in arrival order), then deadlines; the tests check the loop against a
plain Python simulation of these rules.

The functions called from Python take the state's two buffers and layout
(``floats, ints, layout``) and view them as a :data:`~llmsched_env.sim.batch_state.BatchState`;
the others take that view (``state``).
"""

from __future__ import annotations

import math

import numpy as np

from llmsched_env.jit import njit
from llmsched_env.latency.batch import compiled_batch_timing
from llmsched_env.metrics import request_stats, summary_values
from llmsched_env.sim.batch_rules import (
    bisect_left,
    bisect_right,
    can_wait,
    dispatch_range,
    first_on_time,
    is_late,
    meets_deadline,
    queue_length,
)
from llmsched_env.sim.batch_rules import fill_batch_counts as _fill_batch_counts
from llmsched_env.sim.batch_rules import fill_decision_mask as _fill_decision_mask
from llmsched_env.sim.batch_rules import oldest_queue as _oldest_queue
from llmsched_env.sim.batch_rules import settled_counts as _settled_counts
from llmsched_env.sim.batch_state import SCHEMA, state_view
from llmsched_env.sim.state_schema import lay_out

#: The code :class:`~llmsched_env.sim.records.RejectReason` gives a request too large for KV memory.
REJECT_EXCEEDS_KV = 1

#: Codes a decision function returns when it refuses a decision (nothing changes then).
NO_DECISION_DUE, WAIT_DEADLOCKS, QUEUE_OUT_OF_RANGE, COUNT_BELOW_ONE, EMPTY_QUEUE = range(
    -1, -6, -1
)


@njit(cache=True)
def min_max(a):
    """``(a.min(), a.max())`` of a non-empty array in one pass."""
    low = high = a[0]
    for x in a:
        if x < low:
            low = x
        elif x > high:
            high = x
    return low, high


@njit(cache=True)
def count_too_large(prompt, output, kv_capacity):
    """How many requests need more than ``kv_capacity`` tokens (prompt plus output)."""
    count = 0
    for j in range(prompt.shape[0]):
        if prompt[j] + output[j] > kv_capacity:
            count += 1
    return count


@njit(cache=True)
def arrange(floats, ints, layout, queue_of, prompt, output, arrival):
    """Lay out a run in fresh (zeroed) buffers whose parameters are set.

    Requests whose prompt plus output exceed the KV capacity are rejected (listed in
    ``rejected``, position -1); the others are grouped by queue in arrival order (a stable
    counting sort), which defines their positions. Fills the per-request and per-position
    arrays, the queues' bounds, and the initial values of the event state (times nan, batch
    and running-batch indices -1).
    """
    state = state_view(floats, ints, layout)
    kv_capacity = state.kv_capacity[0]
    n = queue_of.shape[0]
    n_queues = state.queue_head.shape[0]
    per_queue = np.zeros(n_queues, dtype=np.int64)
    for j in range(n):
        state.arrival_s[j] = arrival[j]
        if prompt[j] + output[j] <= kv_capacity:
            per_queue[queue_of[j]] += 1
    start = 0
    for q in range(n_queues):
        state.queue_head[q] = start
        state.queue_tail[q] = start
        start += per_queue[q]
        state.queue_end[q] = start
    fill = state.queue_head.copy()
    r = 0
    for j in range(n):
        if prompt[j] + output[j] > kv_capacity:
            state.rejected[r] = j
            r += 1
            state.position[j] = -1
        else:
            p = fill[queue_of[j]]
            fill[queue_of[j]] = p + 1
            state.order[p] = j
            state.position[j] = p
    for p in range(state.order.shape[0]):
        j = state.order[p]
        state.pos_arrival_s[p] = arrival[j]
        state.pos_prompt[p] = prompt[j]
        state.pos_output[p] = output[j]
        state.kv_cumsum[p + 1] = state.kv_cumsum[p] + prompt[j] + output[j]
        state.output_cumsum[p + 1] = state.output_cumsum[p] + output[j]
    state.pos_start_s[:] = np.nan
    state.pos_first_token_s[:] = np.nan
    state.pos_completion_s[:] = np.nan
    state.pos_batch[:] = -1
    state.gpu_batch[:] = -1
    state.decision_gpu[0] = -1


#: The state's layout as a linear function of a run's sizes (for :func:`restart`).
_LAYOUT_CONSTANT, _LAYOUT_MATRIX = SCHEMA.linear_layout
_FLOATS_END = SCHEMA.floats_end


@njit(cache=True)
def restart(floats, ints, layout, template, queue_of, prompt, output, arrival):
    """Start a new run in buffers used before: what a new server's would hold, bit for bit.

    A new :class:`~llmsched_env.sim.batch_server.BatchServer` allocates zeroed buffers, sets
    its parameters and lays out its requests (:func:`arrange`); this does the same in buffers
    it reuses, taking the parameters (deadline, latency timing, KV capacity, dispatch order)
    from ``template``, the ``(floats, ints, layout)`` of a server of the same configuration.
    The buffers must hold the run: those of :func:`run_buffer_lengths` hold any run of ``n``
    requests.
    """
    params = state_view(template[0], template[1], template[2])
    n = queue_of.shape[0]
    n_rejected = count_too_large(prompt, output, params.kv_capacity[0])
    sizes = np.array(
        [n, n - n_rejected, n_rejected, params.gpu_busy.shape[0], params.queue_head.shape[0]]
    )
    lay_out(layout, _LAYOUT_CONSTANT, _LAYOUT_MATRIX, sizes)
    floats[: layout[_FLOATS_END]] = 0.0
    ints[: layout[-1]] = 0
    state = state_view(floats, ints, layout)
    state.deadline_s[0] = params.deadline_s[0]
    state.latency_params[:] = params.latency_params
    state.latency_code[0] = params.latency_code[0]
    state.kv_capacity[0] = params.kv_capacity[0]
    state.in_time_first[0] = params.in_time_first[0]
    arrange(floats, ints, layout, queue_of, prompt, output, arrival)


def run_buffer_lengths(n: int, n_gpus: int, n_queues: int) -> tuple[int, int]:
    """``(floats, ints)``: buffer lengths that hold any run of ``n`` requests (for :func:`restart`).

    A run's lengths depend on how many of its requests are rejected at arrival; they are linear
    in that count, so the longest are those of none or all rejected.
    """
    lengths = [
        SCHEMA.buffer_lengths(
            SCHEMA.layout(
                n=n, n_queued=n - rejected, n_rejected=rejected, n_gpus=n_gpus, n_queues=n_queues
            )
        )
        for rejected in (0, n)
    ]
    return max(f for f, _ in lengths), max(i for _, i in lengths)


@njit(cache=True)
def fsum(a, lo, hi):
    """Correctly rounded sum of ``a[lo:hi]``, the algorithm of CPython's :func:`math.fsum`.

    Shewchuk's exact partial sums, then the rounding step of CPython (half-even across partials),
    so the result equals ``math.fsum(a[lo:hi])`` for finite values. The in-system integral sums
    admitted arrival times with it; a plain sum would change the ``"queue"`` reward's bits.
    """
    partials = np.empty(hi - lo + 1)
    n = 0
    for k in range(lo, hi):
        x = a[k]
        i = 0
        for j in range(n):
            y = partials[j]
            if abs(x) < abs(y):
                x, y = y, x
            total = x + y
            lo_part = y - (total - x)
            if lo_part != 0.0:
                partials[i] = lo_part
                i += 1
            x = total
        n = i
        if x != 0.0:
            partials[n] = x
            n += 1
    result = 0.0
    if n > 0:
        n -= 1
        result = partials[n]
        lo_part = 0.0
        while n > 0:
            x = result
            n -= 1
            y = partials[n]
            result = x + y
            lo_part = y - (result - x)
            if lo_part != 0.0:
                break
        if n > 0 and (
            (lo_part < 0.0 and partials[n - 1] < 0.0) or (lo_part > 0.0 and partials[n - 1] > 0.0)
        ):
            y = lo_part * 2.0
            x = result + y
            if y == x - result:
                result = x
    return result


# ---------------------------------------------------------------------------------- dispatch
@njit(cache=True)
def _reverse(a, lo, hi):
    """Reverse ``a[lo:hi]`` in place."""
    hi -= 1
    while lo < hi:
        a[lo], a[hi] = a[hi], a[lo]
        lo += 1
        hi -= 1


@njit(cache=True)
def _rotate(a, lo, mid, hi):
    """Move ``a[mid:hi]`` ahead of ``a[lo:mid]`` in place (rotation by three reversals)."""
    _reverse(a, lo, mid)
    _reverse(a, mid, hi)
    _reverse(a, lo, hi)


@njit(cache=True, inline="always")
def _refusal(state, waits, queue, max_count):
    """The code of the reason a decision cannot be made now, or 0 if it can.

    The decision is WAIT if ``waits``, else a dispatch of at most ``max_count`` from
    ``queue``. The checks, in order: a decision is due; WAIT would not deadlock; the queue
    exists, ``max_count >= 1`` and the queue is not empty.
    """
    if state.decision_gpu[0] < 0:
        return NO_DECISION_DUE
    if waits:
        return 0 if can_wait(state) else WAIT_DEADLOCKS
    if not 0 <= queue < state.queue_head.shape[0]:
        return QUEUE_OUT_OF_RANGE
    if max_count < 1:
        return COUNT_BELOW_ONE
    if queue_length(state, queue) == 0:
        return EMPTY_QUEUE
    return 0


@njit(cache=True, inline="always")
def _take(state, queue, max_count):
    """Bring the requests a dispatch serves to the head of ``queue``; return the batch's end.

    The requests are those of :func:`~llmsched_env.sim.batch_rules.dispatch_range`. When they
    start behind late requests (``in_time_first``), this moves them ahead: the late ones are
    the first ``d`` waiting positions, and the ``m`` to serve are rotated from behind them to
    the head (in the arrays of request values, with the prefix sums redone and the moved
    requests' ``position`` updated; waiting positions have no event times, batch or completion
    yet, so those stay). The waiting requests stay in arrival order: the late ones, then the
    ones after the served ones. With ``in_time_first`` set, ``moved_lo .. moved_hi - 1`` are
    the positions reordered (none: equal bounds); without it they stay 0.
    """
    head = state.queue_head[queue]
    start, stop = dispatch_range(state, queue, max_count)
    if state.in_time_first[0] == 0:  # FIFO: nothing moves, ever
        return stop
    state.moved_lo[0] = head
    state.moved_hi[0] = head
    if start == head:
        return stop
    _rotate(state.order, head, start, stop)
    _rotate(state.pos_prompt, head, start, stop)
    _rotate(state.pos_output, head, start, stop)
    _rotate(state.pos_arrival_s, head, start, stop)
    prompt, output, kv_cumsum, output_cumsum = (
        state.pos_prompt,
        state.pos_output,
        state.kv_cumsum,
        state.output_cumsum,
    )
    for p in range(head, stop):
        state.position[state.order[p]] = p
        kv_cumsum[p + 1] = kv_cumsum[p] + prompt[p] + output[p]
        output_cumsum[p + 1] = output_cumsum[p] + output[p]
    state.moved_hi[0] = stop
    return head + (stop - start)


@njit(cache=True, inline="always")
def _start_batch(state, queue, stop, service_s, first_token_s):
    """Start the waiting positions of ``queue`` up to ``stop`` as a batch on the deciding GPU."""
    gpu = state.decision_gpu[0]
    head = state.queue_head[queue]
    size = stop - head
    now = state.now[0]
    end = now + service_s
    state.gpu_busy[gpu] = 1
    state.gpu_free_at[gpu] = end
    state.gpu_busy_s[gpu] += service_s
    state.gpu_until[gpu] = end
    state.decision_gpu[0] = -1
    b = state.n_batches[0]
    first_token = now + first_token_s
    prompt, output = state.pos_prompt, state.pos_output
    longest_total = 0
    longest_output = 0
    for p in range(head, stop):
        state.pos_start_s[p] = now
        state.pos_first_token_s[p] = first_token
        state.pos_completion_s[p] = end
        state.pos_batch[p] = b
        if prompt[p] + output[p] > longest_total:
            longest_total = prompt[p] + output[p]
        if output[p] > longest_output:
            longest_output = output[p]
    state.batch_gpu[b] = gpu
    state.batch_queue[b] = queue
    state.batch_size[b] = size
    state.batch_head[b] = head
    state.batch_max_total[b] = longest_total
    state.batch_max_output[b] = longest_output
    state.batch_output_tokens[b] = state.output_cumsum[stop] - state.output_cumsum[head]
    state.batch_start_s[b] = now
    state.batch_service_s[b] = service_s
    state.n_batches[0] = b + 1
    state.gpu_batch[gpu] = b
    state.queue_head[queue] = stop
    state.n_waiting[0] -= size
    return size


@njit(cache=True, inline="always")
def _dispatch(state, queue, max_count):
    """A whole dispatch timed by the compiled latency model; returns the batch size."""
    stop = _take(state, queue, max_count)
    head = state.queue_head[queue]
    service_s, first_token_s = compiled_batch_timing(
        state.latency_code[0], state.latency_params, state.pos_prompt, state.pos_output, head, stop
    )
    return _start_batch(state, queue, stop, service_s, first_token_s)


@njit(cache=True, inline="always")
def _wait(state):
    """Let the deciding GPU idle until the next event."""
    state.gpu_deferred[state.decision_gpu[0]] = 1
    state.decision_gpu[0] = -1


# ---------------------------------------------------------------------------------- events
@njit(cache=True, inline="always")
def _admit(state, has_deadline, lo, hi):
    """Admit requests ``lo .. hi - 1``: move each queue's tail past its arrived members."""
    order, rejected = state.order, state.rejected
    state.n_arrived[0] = hi
    waiting = 0
    for q in range(state.queue_tail.shape[0]):
        tail = state.queue_tail[q]
        end = state.queue_end[q]
        if tail < end and order[tail] < hi:
            new_tail = bisect_left(order, hi, tail, end)
            waiting += new_tail - tail
            state.queue_tail[q] = new_tail
    state.n_waiting[0] += waiting
    first = bisect_left(rejected, lo, 0, rejected.shape[0])
    last = bisect_left(rejected, hi, first, rejected.shape[0])
    for k in range(first, last):
        state.reject_reason[rejected[k]] = REJECT_EXCEEDS_KV
        state.n_rejected[0] += 1
        if has_deadline:
            state.n_late[0] += 1


@njit(cache=True)
def _admitted_arrival_s(arrival, rejected, lo, hi, now):
    """Request-seconds between ``now`` and the arrivals ``lo .. hi - 1`` not rejected.

    ``sum(arrival) - count * now`` over the admitted ones, the sum correctly rounded
    (:func:`fsum`).
    """
    first = bisect_left(rejected, lo, 0, rejected.shape[0])
    last = bisect_left(rejected, hi, first, rejected.shape[0])
    if first == last:
        return fsum(arrival, lo, hi) - (hi - lo) * now
    admitted = np.empty(hi - lo - (last - first), dtype=np.float64)
    k = first
    m = 0
    for j in range(lo, hi):
        if k < last and rejected[k] == j:
            k += 1
        else:
            admitted[m] = arrival[j]
            m += 1
    return fsum(admitted, 0, m) - m * now


@njit(cache=True, inline="always")
def _mark_idle_until_now(state):
    """Set the ``gpu_until`` time of idle GPUs to now."""
    for g in range(state.gpu_busy.shape[0]):
        if state.gpu_busy[g] == 0:
            state.gpu_until[g] = state.now[0]


@njit(cache=True, inline="always")
def _finish_batch(state, gpu, has_deadline):
    """The batch of ``gpu`` ends now: complete its members and count the on-time ones."""
    state.gpu_busy[gpu] = 0
    b = state.gpu_batch[gpu]
    state.gpu_batch[gpu] = -1
    head = state.batch_head[b]
    stop = head + state.batch_size[b]
    for p in range(head, stop):
        state.pos_completed[p] = 1
    state.n_completed[0] += stop - head
    if has_deadline:
        # Members end together and their deadlines ascend along the queue, so the on-time
        # members are a suffix of the batch.
        on_time = first_on_time(
            state.pos_arrival_s, state.deadline_s[0], state.gpu_free_at[gpu], head, stop
        )
        state.n_on_time[0] += stop - on_time
        state.on_time_tokens[0] += state.output_cumsum[stop] - state.output_cumsum[on_time]
    state.finished[state.n_finished[0]] = b
    state.n_finished[0] += 1


@njit(cache=True)
def _advance(floats, ints, layout):
    """Process events until a decision is due.

    Takes the state's buffers, not its named tuple of views: a compiled call passes a named
    tuple of arrays field by field (seven values per array), while the views cost a few
    additions each to make again.

    Returns ``True`` when a GPU must decide (``decision_gpu``), ``False`` when nothing is left
    to happen: every request has arrived and no GPU works.
    """
    state = state_view(floats, ints, layout)
    arrival = state.arrival_s
    deadline_s = state.deadline_s[0]  # nan when the server has no deadline
    n_gpus = state.gpu_busy.shape[0]
    n_requests = arrival.shape[0]
    has_deadline = not math.isnan(deadline_s)
    busy, free_at = state.gpu_busy, state.gpu_free_at
    while True:
        # A decision is due: requests wait and a GPU is idle and not waiting.
        if state.n_waiting[0] > 0:
            for g in range(n_gpus):
                if busy[g] == 0 and state.gpu_deferred[g] == 0:
                    state.decision_gpu[0] = g
                    _mark_idle_until_now(state)
                    return True
        # The earliest end of GPU work, ties to the lowest GPU (the order of a (time, gpu) heap).
        first_end = math.inf
        n_busy = 0
        for g in range(n_gpus):
            if busy[g] != 0:
                n_busy += 1
                if free_at[g] < first_end:
                    first_end = free_at[g]
        lo = state.n_arrived[0]
        if n_busy == n_gpus:
            # Every GPU works: admit the arrivals before the first end in one go, without
            # moving the clock; each admitted one counts in the integral from its own arrival
            # (a rejected one never enters the system).
            t = first_end
            hi = bisect_left(arrival, t, lo, n_requests)
            if hi > lo:
                state.in_system_s[0] -= _admitted_arrival_s(
                    arrival, state.rejected, lo, hi, state.now[0]
                )
                _admit(state, has_deadline, lo, hi)
        else:
            t = arrival[lo] if lo < n_requests else math.inf
            if first_end < t:
                t = first_end
            if t == math.inf:
                state.decision_gpu[0] = -1
                _mark_idle_until_now(state)
                return False
        # Move the clock to t and process what is due by then.
        in_system = state.n_arrived[0] - state.n_completed[0] - state.n_rejected[0]
        state.in_system_s[0] += in_system * (t - state.now[0])
        state.now[0] = t
        state.gpu_deferred[:] = 0
        while True:  # GPU work ending by t, in (time, gpu) order
            gpu = -1
            best = t
            for g in range(n_gpus):
                if busy[g] != 0 and free_at[g] <= best:
                    if gpu < 0 or free_at[g] < best:
                        gpu = g
                        best = free_at[g]
            if gpu < 0:
                break
            _finish_batch(state, gpu, has_deadline)
        lo = state.n_arrived[0]
        if lo < n_requests and arrival[lo] <= t:
            _admit(state, has_deadline, lo, bisect_right(arrival, t, lo, n_requests))
        if has_deadline:
            # Deadlines follow arrival order; those passed by t unmet are misses.
            ptr = state.deadline_ptr[0]
            missed = 0
            while ptr < n_requests and is_late(arrival[ptr], deadline_s, t):
                p = state.position[ptr]
                if p >= 0 and not meets_deadline(
                    arrival[ptr], deadline_s, state.pos_completion_s[p]
                ):
                    missed += 1
                ptr += 1
            state.deadline_ptr[0] = ptr
            state.n_late[0] += missed


# ---------------------------------------------------------------------------------- entry points
@njit(cache=True)
def advance(floats, ints, layout):
    """Process events until a decision is due; ``True`` if one is (see :func:`_advance`)."""
    return _advance(floats, ints, layout)


@njit(cache=True)
def wait(floats, ints, layout):
    """WAIT on the deciding GPU; returns 0, or a refusal code (nothing changes then)."""
    state = state_view(floats, ints, layout)
    code = _refusal(state, True, -1, 1)
    if code == 0:
        _wait(state)
    return code


@njit(cache=True)
def dispatch(floats, ints, layout, queue, max_count):
    """Dispatch from ``queue`` timed by the compiled latency model.

    Returns the batch size, or a (negative) refusal code, in which case nothing changes.
    """
    state = state_view(floats, ints, layout)
    code = _refusal(state, False, queue, max_count)
    if code < 0:
        return code
    return _dispatch(state, queue, max_count)


@njit(cache=True)
def take(floats, ints, layout, queue, max_count):
    """The first half of a dispatch timed in Python: :func:`_take`, after the checks.

    Returns ``(head, stop)`` (the batch is positions ``head .. stop - 1`` of ``queue``), or
    ``(code, code)`` with a refusal code, in which case nothing changes. :func:`start_batch`
    completes the dispatch.
    """
    state = state_view(floats, ints, layout)
    code = _refusal(state, False, queue, max_count)
    if code < 0:
        return code, code
    stop = _take(state, queue, max_count)
    return state.queue_head[queue], stop


@njit(cache=True)
def start_batch(floats, ints, layout, queue, stop, service_s, first_token_s):
    """Start positions ``head .. stop - 1`` of ``queue`` as a batch; returns its size."""
    return _start_batch(state_view(floats, ints, layout), queue, stop, service_s, first_token_s)


@njit(cache=True)
def decide(floats, ints, layout, queue, max_count, mask):
    """Dispatch from ``queue`` (WAIT if ``queue < 0``), advance, fill ``mask``, in one call.

    The dispatch is timed by the compiled latency model. Returns 1 if a decision is due, 0 if
    nothing is left to happen, or a refusal code, in which case nothing changes.
    """
    state = state_view(floats, ints, layout)
    code = _refusal(state, queue < 0, queue, max_count)
    if code < 0:
        return code
    if queue < 0:
        _wait(state)
    else:
        _dispatch(state, queue, max_count)
    due = _advance(floats, ints, layout)
    _fill_decision_mask(state, mask)
    return 1 if due else 0


@njit(cache=True)
def fill_decision_mask(floats, ints, layout, mask):
    """:func:`~llmsched_env.sim.batch_rules.fill_decision_mask` on the buffers."""
    _fill_decision_mask(state_view(floats, ints, layout), mask)


@njit(cache=True)
def oldest_queue(floats, ints, layout):
    """:func:`~llmsched_env.sim.batch_rules.oldest_queue` on the buffers."""
    return _oldest_queue(state_view(floats, ints, layout))


@njit(cache=True)
def batch_counts(floats, ints, layout, max_counts, counts):
    """:func:`~llmsched_env.sim.batch_rules.fill_batch_counts` on the buffers."""
    _fill_batch_counts(state_view(floats, ints, layout), max_counts, counts)


@njit(cache=True)
def settled_counts(floats, ints, layout):
    """:func:`~llmsched_env.sim.batch_rules.settled_counts` on the buffers."""
    return _settled_counts(state_view(floats, ints, layout))


@njit(cache=True)
def metric_columns(floats, ints, layout):
    """Event times and states in request order, as :meth:`RequestRecords.columns` has them.

    Returns ``(start_s, first_token_s, completion_s, status)``; ``status`` holds codes into
    :data:`~llmsched_env.metrics.STATUS_NAMES` (0 not arrived, 1 in system, 2 completed,
    3 rejected).
    """
    state = state_view(floats, ints, layout)
    n = state.reject_reason.shape[0]
    start = np.full(n, np.nan)
    first_token = np.full(n, np.nan)
    completion = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int8)
    status[: state.n_arrived[0]] = 1
    for p in range(state.order.shape[0]):
        j = state.order[p]
        start[j] = state.pos_start_s[p]
        first_token[j] = state.pos_first_token_s[p]
        completion[j] = state.pos_completion_s[p]
        if state.pos_completed[p]:
            status[j] = 2
    for j in range(n):
        if state.reject_reason[j] != 0:
            status[j] = 3
    return start, first_token, completion, status


@njit(cache=True)
def busy_time_s(floats, ints, layout):
    """Total time all GPUs have worked up to now (work still running counts up to now).

    Each sum is added left to right, GPU by GPU, as :func:`~llmsched_env.statistics.
    sequential_sum` adds.
    """
    state = state_view(floats, ints, layout)
    now = state.now[0]
    worked = 0.0
    ahead = 0.0
    for g in range(state.gpu_busy_s.shape[0]):
        worked += state.gpu_busy_s[g]
        if state.gpu_busy[g]:
            ahead += state.gpu_free_at[g] - now
    return worked - ahead


@njit(cache=True)
def mean_batch_size(floats, ints, layout):
    """Mean size of the batches dispatched so far (nan before the first)."""
    state = state_view(floats, ints, layout)
    n = state.n_batches[0]
    if n == 0:
        return np.nan
    total = 0
    for b in range(n):
        total += state.batch_size[b]
    return total / n


@njit(cache=True)
def summary_row(floats, ints, layout, arrival, output, warmup_s, targets, ttft_deadline):
    """:func:`~llmsched_env.metrics.summary_values` of a run, from its buffers in one call.

    What :meth:`BatchServer.summary <llmsched_env.sim.batch_server.BatchServer.summary>`
    reports (its values, in :data:`~llmsched_env.metrics.SUMMARY_FIELDS` order), without the
    Python between the pieces: the compiled vector env summarises ended episodes with it.

    Args:
        floats: The run's float buffer.
        ints: Its int buffer.
        layout: Its layout.
        arrival: The workload's arrival times (float64).
        output: Its output tokens (int64).
        warmup_s: Start of the measurement window.
        targets: ``[e2e_s, ttft_s, tbt_s]``, ``nan`` for an objective that is not set.
        ttft_deadline: Per request, its first token's due time, or an empty array (as
            :func:`~llmsched_env.metrics.request_stats` takes them).
    """
    start, first_token, completion, status = metric_columns(floats, ints, layout)
    state = state_view(floats, ints, layout)
    counts, values, lengths = request_stats(
        arrival,
        start,
        first_token,
        completion,
        output,
        status.astype(np.int64),
        np.zeros(0),
        warmup_s,
        targets,
        ttft_deadline,
    )
    return summary_values(
        counts,
        values,
        lengths,
        status.shape[0],
        warmup_s,
        state.now[0],
        state.gpu_busy_s.shape[0],
        busy_time_s(floats, ints, layout),
        mean_batch_size(floats, ints, layout),
    )
