"""Compiled event loop of the request-level server.

``BatchScheduling-v0`` steps once per dispatch, and its speed is the speed of this loop: process
the events up to the next decision (GPU work ending, arrivals, deadlines passing), then carry
out the decision. The functions here do that on the arrays of a :class:`~llmsched_env.sim.
batch_server.BatchServer`, compiled by numba, so that a step costs a few microseconds whatever
the number of requests. They follow the event rules of :class:`~llmsched_env.sim.engine.Engine`
exactly (the iteration-level server runs those rules in Python), and they give bit for bit the
results of the same arithmetic done in Python; the tests compare them.

The server's state is a handful of arrays, indexed by the constants below:

* ``clock``: float64 ``[NOW, IN_SYSTEM]``, the time and the time integral of requests in the
  system;
* ``counts``: int64 counters (``N_ARRIVED`` ... ``N_FINISHED``);
* ``gpu_f`` (float64) and ``gpu_i`` (int64), one column per GPU: when its work ends, how long it
  has worked, when it is free (its work's end, or now if idle); whether it is busy, whether it
  waits for the next event, its running batch;
* ``queues``: int64 ``[HEAD, TAIL, END]`` per queue: the positions of its oldest waiting
  request, one past its newest arrived request, and one past its last request;
* per *position* (a request's place in the queue-ordered index array ``order``): prompt and
  output lengths, prefix sums of KV need and output tokens, arrival times, and the event times
  that :attr:`BatchServer.records` presents in request order;
* per batch, one row each: ``batch_i`` columns ``GPU, QUEUE, SIZE, HEAD, MAX_TOTAL, MAX_OUTPUT,
  OUTPUT_TOKENS`` and ``batch_f`` columns ``START, SERVICE``; ``finished`` lists batch indices in the order they
  ended.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# clock
NOW, IN_SYSTEM = 0, 1
# counts
(
    N_ARRIVED,
    N_COMPLETED,
    N_REJECTED,
    N_WAITING,
    N_ON_TIME,
    N_LATE,
    ON_TIME_TOKENS,
    DEADLINE_PTR,
    DECISION_GPU,
    N_BATCHES,
    N_FINISHED,
) = range(11)
N_COUNTS = 11
# gpu_f rows, gpu_i rows
FREE_AT, BUSY_S, UNTIL = 0, 1, 2
BUSY, DEFERRED, RUNNING = 0, 1, 2
# queues rows
HEAD, TAIL, END = 0, 1, 2
# pos_f rows: event times by position
START, FIRST_TOKEN, COMPLETION = 0, 1, 2
# batch_i columns
B_GPU, B_QUEUE, B_SIZE, B_HEAD, B_MAX_TOTAL, B_MAX_OUTPUT, B_OUTPUT_TOKENS = range(7)
# batch_f columns
B_START, B_SERVICE = 0, 1

#: The code :class:`~llmsched_env.sim.records.RejectReason` gives a request too large for KV memory.
REJECT_EXCEEDS_KV = 1


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
def arrange(queue_of, n_queues, prompt, output, arrival, kv_capacity):
    """Lay out a run: each request's queue position, and the per-position arrays.

    Requests whose prompt plus output exceed ``kv_capacity`` are rejected (listed in
    ``rejected``, position -1); the others are grouped by queue in arrival order (a stable
    counting sort), which defines their positions.

    Returns:
        ``(order, queues, rejected, position, pos_arrival, pos_prompt, pos_output, kv_cumsum,
        output_cumsum)``: the request of each position; per queue its first position (as
        ``HEAD`` and ``TAIL``) and one past its last (``END``); the rejected requests; each
        request's position; the arrival, prompt and output of each position; and prefix sums of
        the KV need (prompt plus output) and of the outputs along the positions.
    """
    n = queue_of.shape[0]
    counts = np.zeros(n_queues, dtype=np.int64)
    n_rejected = 0
    for i in range(n):
        if prompt[i] + output[i] > kv_capacity:
            n_rejected += 1
        else:
            counts[queue_of[i]] += 1
    queues = np.empty((3, n_queues), dtype=np.int64)
    start = 0
    for q in range(n_queues):
        queues[HEAD, q] = start
        queues[TAIL, q] = start
        start += counts[q]
        queues[END, q] = start
    n_queued = n - n_rejected
    order = np.empty(n_queued, dtype=np.int64)
    rejected = np.empty(n_rejected, dtype=np.int64)
    position = np.empty(n, dtype=np.int64)
    fill = queues[HEAD].copy()
    r = 0
    for i in range(n):
        if prompt[i] + output[i] > kv_capacity:
            rejected[r] = i
            r += 1
            position[i] = -1
        else:
            p = fill[queue_of[i]]
            fill[queue_of[i]] = p + 1
            order[p] = i
            position[i] = p
    pos_arrival = np.empty(n_queued)
    pos_prompt = np.empty(n_queued, dtype=np.int64)
    pos_output = np.empty(n_queued, dtype=np.int64)
    kv_cumsum = np.zeros(n_queued + 1, dtype=np.int64)
    output_cumsum = np.zeros(n_queued + 1, dtype=np.int64)
    for p in range(n_queued):
        i = order[p]
        pos_arrival[p] = arrival[i]
        pos_prompt[p] = prompt[i]
        pos_output[p] = output[i]
        kv_cumsum[p + 1] = kv_cumsum[p] + prompt[i] + output[i]
        output_cumsum[p + 1] = output_cumsum[p] + output[i]
    return (
        order,
        queues,
        rejected,
        position,
        pos_arrival,
        pos_prompt,
        pos_output,
        kv_cumsum,
        output_cumsum,
    )


@njit(cache=True)
def bisect_left(a, x, lo, hi):
    """First index in ``[lo, hi)`` whose value is ``>= x`` (``hi`` if none), as :mod:`bisect`."""
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def bisect_right(a, x, lo, hi):
    """First index in ``[lo, hi)`` whose value is ``> x`` (``hi`` if none), as :mod:`bisect`."""
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True)
def fsum(a, lo, hi):
    """Correctly rounded sum of ``a[lo:hi]``, the algorithm of CPython's :func:`math.fsum`.

    Shewchuk's exact partial sums, then the rounding step of CPython (half-even across partials),
    so the result equals ``math.fsum(a[lo:hi])`` for finite values.
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


@njit(cache=True)
def fitting_end(kv_cumsum, capacity, head, end):
    """The largest ``k <= end`` such that positions ``head .. k - 1`` fit in ``capacity`` tokens."""
    limit = kv_cumsum[head] + capacity
    if kv_cumsum[end] <= limit:
        return end
    return bisect_right(kv_cumsum, limit, head, end + 1) - 1


@njit(cache=True)
def engine_batch_timing(prompt, output, head, stop, coefficients):
    """``(service_s, first_token_s)`` of positions ``head .. stop - 1`` as one static batch.

    The closed form of :class:`~llmsched_env.latency.batch.EngineStaticBatchLatency` with
    ``coefficients = (b0, b1, b2, b3)``, in the same operation order. Its sums are of integers
    below 2**53, so they are exact in any order.
    """
    b0, b1, b2, b3 = coefficients[0], coefficients[1], coefficients[2], coefficients[3]
    size = stop - head
    total_prompt = 0
    longest = 0
    for p in range(head, stop):
        total_prompt += prompt[p]
        if output[p] > longest:
            longest = output[p]
    total_prompt_f = float(total_prompt)
    longest_f = float(longest)
    decode_steps = longest_f - 1.0
    prefill_s = b0 + b1 * total_prompt_f
    service_s = prefill_s + decode_steps * (b0 + b2 * size)
    if b3 != 0.0:
        generated = 0.0
        for p in range(head, stop):
            out = float(output[p])
            generated += out * (2.0 * longest_f - 1.0 - out)
        generated = 0.5 * generated
        service_s += b3 * (decode_steps * total_prompt_f + generated)
    return service_s, prefill_s


@njit(cache=True)
def start_batch(
    clock,
    counts,
    gpu_f,
    gpu_i,
    queues,
    pos_f,
    pos_batch,
    prompt,
    output,
    output_cumsum,
    batch_i,
    batch_f,
    queue,
    stop,
    service_s,
    first_token_s,
):
    """Start the oldest requests of ``queue`` up to position ``stop`` on the deciding GPU."""
    gpu = counts[DECISION_GPU]
    head = queues[HEAD, queue]
    size = stop - head
    now = clock[NOW]
    end = now + service_s
    gpu_i[BUSY, gpu] = 1
    gpu_f[FREE_AT, gpu] = end
    gpu_f[BUSY_S, gpu] += service_s
    gpu_f[UNTIL, gpu] = end
    counts[DECISION_GPU] = -1
    b = counts[N_BATCHES]
    first_token = now + first_token_s
    longest_total = 0
    longest_output = 0
    for p in range(head, stop):
        pos_f[START, p] = now
        pos_f[FIRST_TOKEN, p] = first_token
        pos_f[COMPLETION, p] = end
        pos_batch[p] = b
        if prompt[p] + output[p] > longest_total:
            longest_total = prompt[p] + output[p]
        if output[p] > longest_output:
            longest_output = output[p]
    batch_i[b, B_GPU] = gpu
    batch_i[b, B_QUEUE] = queue
    batch_i[b, B_SIZE] = size
    batch_i[b, B_HEAD] = head
    batch_i[b, B_MAX_TOTAL] = longest_total
    batch_i[b, B_MAX_OUTPUT] = longest_output
    batch_i[b, B_OUTPUT_TOKENS] = output_cumsum[stop] - output_cumsum[head]
    batch_f[b, B_START] = now
    batch_f[b, B_SERVICE] = service_s
    counts[N_BATCHES] = b + 1
    gpu_i[RUNNING, gpu] = b
    queues[HEAD, queue] = stop
    counts[N_WAITING] -= size
    return size


@njit(cache=True)
def dispatch_engine_batch(
    clock,
    counts,
    gpu_f,
    gpu_i,
    queues,
    pos_f,
    pos_batch,
    prompt,
    output,
    kv_cumsum,
    output_cumsum,
    batch_i,
    batch_f,
    kv_capacity,
    coefficients,
    queue,
    max_count,
):
    """:func:`fitting_end`, :func:`engine_batch_timing` and :func:`start_batch` in one call."""
    head = queues[HEAD, queue]
    end = min(head + max_count, queues[TAIL, queue])
    stop = max(fitting_end(kv_cumsum, kv_capacity, head, end), head + 1)
    service_s, first_token_s = engine_batch_timing(prompt, output, head, stop, coefficients)
    return start_batch(
        clock,
        counts,
        gpu_f,
        gpu_i,
        queues,
        pos_f,
        pos_batch,
        prompt,
        output,
        output_cumsum,
        batch_i,
        batch_f,
        queue,
        stop,
        service_s,
        first_token_s,
    )


@njit(cache=True)
def _admit(counts, queues, order, rejected, reject_reason, has_deadline, lo, hi):
    """Admit requests ``lo .. hi - 1``: move each queue's tail past its arrived members."""
    counts[N_ARRIVED] = hi
    waiting = 0
    for q in range(queues.shape[1]):
        tail = queues[TAIL, q]
        end = queues[END, q]
        if tail < end and order[tail] < hi:
            new_tail = bisect_left(order, hi, tail, end)
            waiting += new_tail - tail
            queues[TAIL, q] = new_tail
    counts[N_WAITING] += waiting
    first = bisect_left(rejected, lo, 0, rejected.shape[0])
    last = bisect_left(rejected, hi, first, rejected.shape[0])
    for k in range(first, last):
        reject_reason[rejected[k]] = REJECT_EXCEEDS_KV
        counts[N_REJECTED] += 1
        if has_deadline:
            counts[N_LATE] += 1


@njit(cache=True)
def _mark_idle_until_now(clock, gpu_f, gpu_i):
    """Set the ``UNTIL`` time of idle GPUs to now."""
    for g in range(gpu_i.shape[1]):
        if gpu_i[BUSY, g] == 0:
            gpu_f[UNTIL, g] = clock[NOW]


@njit(cache=True)
def advance(
    clock,
    counts,
    gpu_f,
    gpu_i,
    queues,
    order,
    arrival,
    position,
    rejected,
    reject_reason,
    pos_f,
    pos_completed,
    pos_arrival,
    output_cumsum,
    batch_i,
    finished,
    deadline_s,
):
    """Process events until a decision is due (see :meth:`Engine.advance`).

    Returns ``True`` when a GPU must decide (``counts[DECISION_GPU]``), ``False`` when nothing is
    left to happen. ``deadline_s`` is ``nan`` when the server has no deadline.
    """
    n_gpus = gpu_i.shape[1]
    n_requests = arrival.shape[0]
    has_deadline = not math.isnan(deadline_s)
    while True:
        # A decision is due: requests wait and a GPU is idle and not waiting.
        if counts[N_WAITING] > 0:
            for g in range(n_gpus):
                if gpu_i[BUSY, g] == 0 and gpu_i[DEFERRED, g] == 0:
                    counts[DECISION_GPU] = g
                    _mark_idle_until_now(clock, gpu_f, gpu_i)
                    return True
        # The earliest end of GPU work, ties to the lowest GPU (the order of a (time, gpu) heap).
        first_end = math.inf
        n_busy = 0
        for g in range(n_gpus):
            if gpu_i[BUSY, g] != 0:
                n_busy += 1
                if gpu_f[FREE_AT, g] < first_end:
                    first_end = gpu_f[FREE_AT, g]
        lo = counts[N_ARRIVED]
        if n_busy == n_gpus:
            # Every GPU works: admit the arrivals before the first end in one go, without
            # moving the clock; each counts in the integral from its own arrival.
            t = first_end
            hi = bisect_left(arrival, t, lo, n_requests)
            if hi > lo:
                clock[IN_SYSTEM] -= fsum(arrival, lo, hi) - (hi - lo) * clock[NOW]
                _admit(counts, queues, order, rejected, reject_reason, has_deadline, lo, hi)
        else:
            t = arrival[lo] if lo < n_requests else math.inf
            if first_end < t:
                t = first_end
            if t == math.inf:
                counts[DECISION_GPU] = -1
                _mark_idle_until_now(clock, gpu_f, gpu_i)
                return False
        # Move the clock to t and process what is due by then.
        in_system = counts[N_ARRIVED] - counts[N_COMPLETED] - counts[N_REJECTED]
        clock[IN_SYSTEM] += in_system * (t - clock[NOW])
        clock[NOW] = t
        for g in range(n_gpus):
            gpu_i[DEFERRED, g] = 0
        while True:  # GPU work ending by t, in (time, gpu) order
            gpu = -1
            best = t
            for g in range(n_gpus):
                if gpu_i[BUSY, g] != 0 and gpu_f[FREE_AT, g] <= best:
                    if gpu < 0 or gpu_f[FREE_AT, g] < best:
                        gpu = g
                        best = gpu_f[FREE_AT, g]
            if gpu < 0:
                break
            gpu_i[BUSY, gpu] = 0
            b = gpu_i[RUNNING, gpu]
            gpu_i[RUNNING, gpu] = -1
            head = batch_i[b, B_HEAD]
            stop = head + batch_i[b, B_SIZE]
            for p in range(head, stop):
                pos_completed[p] = True
            counts[N_COMPLETED] += stop - head
            if has_deadline:
                # Members end together and their deadlines ascend along the queue, so the
                # on-time members are a suffix of the batch.
                end = gpu_f[FREE_AT, gpu]
                first_on_time = head
                hi_p = stop
                while first_on_time < hi_p:
                    mid = (first_on_time + hi_p) // 2
                    if pos_arrival[mid] + deadline_s < end:
                        first_on_time = mid + 1
                    else:
                        hi_p = mid
                counts[N_ON_TIME] += stop - first_on_time
                counts[ON_TIME_TOKENS] += output_cumsum[stop] - output_cumsum[first_on_time]
            finished[counts[N_FINISHED]] = b
            counts[N_FINISHED] += 1
        lo = counts[N_ARRIVED]
        if lo < n_requests and arrival[lo] <= t:
            _admit(
                counts,
                queues,
                order,
                rejected,
                reject_reason,
                has_deadline,
                lo,
                bisect_right(arrival, t, lo, n_requests),
            )
        if has_deadline:
            # Deadlines follow arrival order; those at or before t that passed unmet are misses.
            ptr = counts[DEADLINE_PTR]
            missed = 0
            while ptr < n_requests and arrival[ptr] + deadline_s <= t:
                p = position[ptr]
                if p >= 0 and not pos_f[COMPLETION, p] <= arrival[ptr] + deadline_s:
                    missed += 1
                ptr += 1
            counts[DEADLINE_PTR] = ptr
            counts[N_LATE] += missed


@njit(cache=True)
def fill_decision_mask(mask, counts, gpu_i, queues, n_requests):
    """``mask[0]``: whether WAIT is safe; ``mask[1 + q]``: whether queue ``q`` holds requests."""
    can_wait = counts[N_ARRIVED] < n_requests
    for g in range(gpu_i.shape[1]):
        if gpu_i[BUSY, g] != 0:
            can_wait = True
    mask[0] = can_wait
    for q in range(queues.shape[1]):
        mask[1 + q] = queues[HEAD, q] < queues[TAIL, q]


#: Codes :func:`decide_and_advance` returns for a decision it refuses (nothing changes then).
NO_DECISION_DUE, EMPTY_QUEUE, WAIT_DEADLOCKS = -1, -2, -3


@njit(cache=True)
def decide_and_advance(
    clock,
    counts,
    gpu_f,
    gpu_i,
    queues,
    order,
    arrival,
    position,
    rejected,
    reject_reason,
    pos_f,
    pos_batch,
    pos_completed,
    pos_arrival,
    prompt,
    output,
    kv_cumsum,
    output_cumsum,
    batch_i,
    batch_f,
    finished,
    deadline_s,
    kv_capacity,
    coefficients,
    queue,
    max_count,
):
    """Dispatch from ``queue`` (WAIT if ``queue < 0``), then :func:`advance`, in one call.

    Returns 1 if a decision is due afterwards, 0 if nothing is left to happen, or a negative
    code (:data:`NO_DECISION_DUE`, :data:`EMPTY_QUEUE`, :data:`WAIT_DEADLOCKS`) if the decision
    cannot be made, in which case nothing changes. ``max_count`` must be at least 1.
    """
    gpu = counts[DECISION_GPU]
    if gpu < 0:
        return NO_DECISION_DUE
    if queue < 0:
        can_wait = counts[N_ARRIVED] < arrival.shape[0]
        for g in range(gpu_i.shape[1]):
            if gpu_i[BUSY, g] != 0:
                can_wait = True
        if not can_wait:
            return WAIT_DEADLOCKS
        gpu_i[DEFERRED, gpu] = 1
        counts[DECISION_GPU] = -1
    else:
        if queues[HEAD, queue] == queues[TAIL, queue]:
            return EMPTY_QUEUE
        dispatch_engine_batch(
            clock,
            counts,
            gpu_f,
            gpu_i,
            queues,
            pos_f,
            pos_batch,
            prompt,
            output,
            kv_cumsum,
            output_cumsum,
            batch_i,
            batch_f,
            kv_capacity,
            coefficients,
            queue,
            max_count,
        )
    due = advance(
        clock,
        counts,
        gpu_f,
        gpu_i,
        queues,
        order,
        arrival,
        position,
        rejected,
        reject_reason,
        pos_f,
        pos_completed,
        pos_arrival,
        output_cumsum,
        batch_i,
        finished,
        deadline_s,
    )
    return 1 if due else 0


@njit(cache=True)
def metric_columns(order, pos_f, pos_completed, reject_reason, n_arrived):
    """Event times and states in request order, as :meth:`RequestRecords.columns` has them.

    Returns ``(start_s, first_token_s, completion_s, status)``; ``status`` holds codes into
    :data:`~llmsched_env.metrics.STATUS_NAMES` (0 not arrived, 1 in system, 2 completed,
    3 rejected).
    """
    n = reject_reason.shape[0]
    start = np.full(n, np.nan)
    first_token = np.full(n, np.nan)
    completion = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int8)
    status[:n_arrived] = 1
    for p in range(order.shape[0]):
        i = order[p]
        start[i] = pos_f[START, p]
        first_token[i] = pos_f[FIRST_TOKEN, p]
        completion[i] = pos_f[COMPLETION, p]
        if pos_completed[p]:
            status[i] = 2
    for i in range(n):
        if reject_reason[i] != 0:
            status[i] = 3
    return start, first_token, completion, status
