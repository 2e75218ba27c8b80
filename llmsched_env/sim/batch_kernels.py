"""Compiled event loop of the request-level server.

``BatchScheduling-v0`` steps once per dispatch, and its speed is the speed of this loop: process
the events up to the next decision (GPU work ending, arrivals, deadlines passing), then carry
out the decision. The functions here do that on the arrays of a :class:`~llmsched_env.sim.
batch_server.BatchServer`, compiled by numba, so that a step costs a few microseconds whatever
the number of requests. They follow the event rules of :class:`~llmsched_env.sim.engine.Engine`
exactly (the iteration-level server runs those rules in Python), and they give bit for bit the
results of the same arithmetic done in Python; the tests compare them.

The server's state is a set of arrays, all of them views of two buffers, one float64 and one
int64 (:func:`make_layout` places them), so that a call from Python passes two arrays and a
layout instead of twenty arrays, each of which would cost numba time to unpack:

* ``clock``: float64 ``[NOW, IN_SYSTEM]``, the time and the time integral of requests in the
  system; ``params``: ``[DEADLINE_S, B0 .. B3]``, the deadline (nan for none) and the
  coefficients of the engine latency model (see :func:`engine_batch_timing`);
* ``counts``: int64 counters (``N_ARRIVED`` ... ``N_FINISHED``) and, after them, the
  KV capacity in tokens (``KV_CAPACITY``), whether dispatches serve a queue's in-time requests
  ahead of its late ones (``IN_TIME_FIRST``, see :func:`put_in_time_first`) and the positions
  the latest dispatch reordered (``MOVED_LO .. MOVED_HI - 1``);
* ``gpu_f`` (float64) and ``gpu_i`` (int64), one column per GPU: when its work ends, how long it
  has worked, when it is free (its work's end, or now if idle); whether it is busy, whether it
  waits for the next event, its running batch;
* ``queues``: int64 ``[HEAD, TAIL, END]`` per queue: the positions of its oldest waiting
  request, one past its newest arrived request, and one past its last request;
* per request (arrival order): arrival time, position (-1 if rejected), reject reason; and the
  rejected requests' indices;
* per *position* (a request's place in the queue-ordered index array ``order``): prompt and
  output lengths, prefix sums of KV need and output tokens, arrival times, and the event times
  and completion flags that :attr:`BatchServer.records` presents in request order;
* per batch, one row each: ``batch_i`` columns ``GPU, QUEUE, SIZE, HEAD, MAX_TOTAL, MAX_OUTPUT,
  OUTPUT_TOKENS`` and ``batch_f`` columns ``START, SERVICE``; ``finished`` lists batch indices in
  the order they ended.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
from numba import njit

# clock
NOW, IN_SYSTEM = 0, 1
# params
DEADLINE_S, B0, B1, B2, B3 = range(5)
N_PARAMS = 5
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
    KV_CAPACITY,
    IN_TIME_FIRST,
    MOVED_LO,
    MOVED_HI,
) = range(15)
N_COUNTS = 15
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

#: The arrays of the float64 buffer, in order (see :func:`make_layout`).
FLOAT_FIELDS = ("clock", "params", "gpu_f", "arrival", "pos_arrival", "pos_f", "batch_f")
#: The arrays of the int64 buffer, in order.
INT_FIELDS = (
    "counts",
    "gpu_i",
    "queues",
    "position",
    "reject_reason",
    "rejected",
    "order",
    "pos_prompt",
    "pos_output",
    "pos_batch",
    "pos_completed",
    "kv_cumsum",
    "output_cumsum",
    "batch_i",
    "finished",
)
# Where the layout array keeps the sizes, then the offsets of each buffer's fields.
_N, _N_QUEUED, _N_REJECTED, _N_GPUS, _N_QUEUES = range(5)
_FLOAT_OFFSETS = 5
_INT_OFFSETS = _FLOAT_OFFSETS + len(FLOAT_FIELDS) + 1


def field_shapes(
    n: int, n_queued: int, n_rejected: int, n_gpus: int, n_queues: int
) -> dict[str, tuple[int, ...]]:
    """The shape of every state array of a run of ``n`` requests (``n_queued`` not rejected)."""
    return {
        "clock": (2,),
        "params": (N_PARAMS,),
        "gpu_f": (3, n_gpus),
        "arrival": (n,),
        "pos_arrival": (n_queued,),
        "pos_f": (3, n_queued),
        "batch_f": (n_queued, 2),
        "counts": (N_COUNTS,),
        "gpu_i": (3, n_gpus),
        "queues": (3, n_queues),
        "position": (n,),
        "reject_reason": (n,),
        "rejected": (n_rejected,),
        "order": (n_queued,),
        "pos_prompt": (n_queued,),
        "pos_output": (n_queued,),
        "pos_batch": (n_queued,),
        "pos_completed": (n_queued,),
        "kv_cumsum": (n_queued + 1,),
        "output_cumsum": (n_queued + 1,),
        "batch_i": (n_queued, 7),
        "finished": (n_queued,),
    }


@functools.lru_cache(maxsize=64)
def _placement(
    n: int, n_queued: int, n_rejected: int, n_gpus: int, n_queues: int
) -> tuple[tuple[int, ...], int, int, tuple[tuple[str, int, int, int, tuple[int, ...]], ...]]:
    """Where every field goes: ``(layout, float size, int size, fields)`` (cached by size).

    ``fields`` lists ``(name, buffer, start, end, shape)``, buffer 0 for floats and 1 for ints.
    """
    shapes = field_shapes(n, n_queued, n_rejected, n_gpus, n_queues)
    layout = [n, n_queued, n_rejected, n_gpus, n_queues]
    totals = []
    fields = []
    for buffer, names in enumerate((FLOAT_FIELDS, INT_FIELDS)):
        offsets = [0, *itertools.accumulate(math.prod(shapes[name]) for name in names)]
        layout += offsets
        totals.append(offsets[-1])
        fields += [
            (name, buffer, lo, hi, shapes[name])
            for name, lo, hi in zip(names, offsets, offsets[1:])
        ]
    return tuple(layout), totals[0], totals[1], tuple(fields)


def make_layout(
    n: int, n_queued: int, n_rejected: int, n_gpus: int, n_queues: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Allocate the two zeroed state buffers of a run; return ``(floats, ints, layout)``.

    ``layout`` holds the sizes and each field's offset in its buffer, which is what the
    compiled functions need to find the arrays (see :func:`buffer_views`).
    """
    layout, n_floats, n_ints, _ = _placement(n, n_queued, n_rejected, n_gpus, n_queues)
    return np.zeros(n_floats), np.zeros(n_ints, dtype=np.int64), np.array(layout, dtype=np.int64)


def buffer_views(floats: np.ndarray, ints: np.ndarray, layout: np.ndarray) -> dict[str, np.ndarray]:
    """Every field of :data:`FLOAT_FIELDS` and :data:`INT_FIELDS` as a view of its buffer."""
    *_, fields = _placement(*layout[:_FLOAT_OFFSETS].tolist())
    buffers = (floats, ints)
    return {name: buffers[buffer][lo:hi].reshape(shape) for name, buffer, lo, hi, shape in fields}


#: Where each array is in the tuple :func:`state_views` returns (the fields in buffer order).
(
    V_CLOCK,
    V_PARAMS,
    V_GPU_F,
    V_ARRIVAL,
    V_POS_ARRIVAL,
    V_POS_F,
    V_BATCH_F,
    V_COUNTS,
    V_GPU_I,
    V_QUEUES,
    V_POSITION,
    V_REJECT_REASON,
    V_REJECTED,
    V_ORDER,
    V_POS_PROMPT,
    V_POS_OUTPUT,
    V_POS_BATCH,
    V_POS_COMPLETED,
    V_KV_CUMSUM,
    V_OUTPUT_CUMSUM,
    V_BATCH_I,
    V_FINISHED,
) = range(len(FLOAT_FIELDS) + len(INT_FIELDS))


@njit(cache=True)
def state_views(floats, ints, layout):
    """Every state array, as views of the buffers, in the order of the fields (``V_*``)."""
    n_queued = layout[_N_QUEUED]
    n_gpus = layout[_N_GPUS]
    n_queues = layout[_N_QUEUES]
    f = layout[_FLOAT_OFFSETS:]
    i = layout[_INT_OFFSETS:]
    return (
        floats[f[0] : f[1]],
        floats[f[1] : f[2]],
        floats[f[2] : f[3]].reshape((3, n_gpus)),
        floats[f[3] : f[4]],
        floats[f[4] : f[5]],
        floats[f[5] : f[6]].reshape((3, n_queued)),
        floats[f[6] : f[7]].reshape((n_queued, 2)),
        ints[i[0] : i[1]],
        ints[i[1] : i[2]].reshape((3, n_gpus)),
        ints[i[2] : i[3]].reshape((3, n_queues)),
        ints[i[3] : i[4]],
        ints[i[4] : i[5]],
        ints[i[5] : i[6]],
        ints[i[6] : i[7]],
        ints[i[7] : i[8]],
        ints[i[8] : i[9]],
        ints[i[9] : i[10]],
        ints[i[10] : i[11]],
        ints[i[11] : i[12]],
        ints[i[12] : i[13]],
        ints[i[13] : i[14]].reshape((n_queued, 7)),
        ints[i[14] : i[15]],
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
    """Lay out a run in fresh (zeroed) buffers whose ``params`` and ``counts[KV_CAPACITY]`` are set.

    Requests whose prompt plus output exceed the KV capacity are rejected (listed in
    ``rejected``, position -1); the others are grouped by queue in arrival order (a stable
    counting sort), which defines their positions. Fills the per-request and per-position
    arrays, the queues' bounds, and the initial values of the event state (times nan, batch
    and running-batch indices -1).
    """
    v = state_views(floats, ints, layout)
    counts, gpu_i, queues, position = v[V_COUNTS], v[V_GPU_I], v[V_QUEUES], v[V_POSITION]
    arrival_out, rejected, order = v[V_ARRIVAL], v[V_REJECTED], v[V_ORDER]
    pos_arrival, pos_prompt, pos_output = v[V_POS_ARRIVAL], v[V_POS_PROMPT], v[V_POS_OUTPUT]
    pos_f, pos_batch = v[V_POS_F], v[V_POS_BATCH]
    kv_cumsum, output_cumsum = v[V_KV_CUMSUM], v[V_OUTPUT_CUMSUM]
    kv_capacity = counts[KV_CAPACITY]
    n = queue_of.shape[0]
    n_queues = queues.shape[1]
    per_queue = np.zeros(n_queues, dtype=np.int64)
    for j in range(n):
        arrival_out[j] = arrival[j]
        if prompt[j] + output[j] <= kv_capacity:
            per_queue[queue_of[j]] += 1
    start = 0
    for q in range(n_queues):
        queues[HEAD, q] = start
        queues[TAIL, q] = start
        start += per_queue[q]
        queues[END, q] = start
    fill = queues[HEAD].copy()
    r = 0
    for j in range(n):
        if prompt[j] + output[j] > kv_capacity:
            rejected[r] = j
            r += 1
            position[j] = -1
        else:
            p = fill[queue_of[j]]
            fill[queue_of[j]] = p + 1
            order[p] = j
            position[j] = p
    for p in range(order.shape[0]):
        j = order[p]
        pos_arrival[p] = arrival[j]
        pos_prompt[p] = prompt[j]
        pos_output[p] = output[j]
        kv_cumsum[p + 1] = kv_cumsum[p] + prompt[j] + output[j]
        output_cumsum[p + 1] = output_cumsum[p] + output[j]
    pos_f[:] = np.nan
    pos_batch[:] = -1
    gpu_i[RUNNING] = -1
    counts[DECISION_GPU] = -1


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
def first_not_late(arrival, deadline_s, now, lo, hi):
    """First index in ``[lo, hi)`` whose request is not late at ``now`` (``hi`` if none).

    ``arrival`` is ascending over the range. A request is late once ``arrival + deadline_s <=
    now``: the test that counts its miss, so the observation, the in-time-first dispatch and
    the miss count agree on every request, to the last bit.
    """
    while lo < hi:
        mid = (lo + hi) // 2
        if arrival[mid] + deadline_s <= now:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def in_time_start(arrival, deadline_s, now, head, tail):
    """Where an in-time-first dispatch from the queue at ``head .. tail - 1`` starts.

    At its first request not late at ``now`` when late ones precede it, else at ``head`` (the
    queue's requests are all in time, or all late). The one rule shared by the dispatch
    (:func:`_put_in_time_first`) and the server's preview of batch sizes.
    """
    first = first_not_late(arrival, deadline_s, now, head, tail)
    return first if first < tail else head


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
def _core_views(v):
    """``(clock, counts, gpu_f, gpu_i, queues)`` of the tuple of :func:`state_views`."""
    return v[V_CLOCK], v[V_COUNTS], v[V_GPU_F], v[V_GPU_I], v[V_QUEUES]


@njit(cache=True)
def _start_batch(v, queue, stop, service_s, first_token_s):
    """Start the oldest requests of ``queue`` up to position ``stop`` on the deciding GPU.

    ``v`` is the tuple of :func:`state_views`, as for every function below.
    """
    clock, counts, gpu_f, gpu_i, queues = _core_views(v)
    pos_f, pos_batch, prompt, output = v[V_POS_F], v[V_POS_BATCH], v[V_POS_PROMPT], v[V_POS_OUTPUT]
    output_cumsum, batch_i, batch_f = v[V_OUTPUT_CUMSUM], v[V_BATCH_I], v[V_BATCH_F]
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


@njit(cache=True)
def _put_in_time_first(v, queue, max_count):
    """Move the requests the next dispatch from ``queue`` serves ahead of its late ones.

    With ``counts[IN_TIME_FIRST]`` set, a dispatch serves the oldest waiting requests of the
    queue whose deadline has not passed (up to ``max_count``, as many as fit in KV memory);
    the late ones, whose miss is already counted, keep waiting and go only when no request in
    time is left in the queue. A queue's waiting requests are in arrival order, so the late
    ones are its first ``d`` positions; this moves the ``m`` requests to serve from behind
    them to the head (a rotation of positions ``head .. head + d + m - 1`` in the arrays of
    request values, with the prefix sums redone over them and the moved requests' ``position``
    updated; the event arrays hold the same values for every waiting position, so they stay).
    The waiting requests stay in arrival order: the late ones, then the requests after the
    served ones.

    Returns the batch size to ask for, ``m`` (``max_count`` when nothing moves: the flag is
    off, or the queue holds only late or only in-time requests). With the flag set,
    ``counts[MOVED_LO]`` and ``counts[MOVED_HI]`` receive the bounds of the reordered positions
    (equal when none); without it they stay 0.
    """
    counts, queues, clock = v[V_COUNTS], v[V_QUEUES], v[V_CLOCK]
    if counts[IN_TIME_FIRST] == 0:  # FIFO: nothing moves, ever (MOVED_LO == MOVED_HI == 0)
        return max_count
    head = queues[HEAD, queue]
    tail = queues[TAIL, queue]
    counts[MOVED_LO] = head
    counts[MOVED_HI] = head
    deadline_s = v[V_PARAMS][DEADLINE_S]
    if math.isnan(deadline_s):
        return max_count
    pos_arrival = v[V_POS_ARRIVAL]
    first_in_time = in_time_start(pos_arrival, deadline_s, clock[NOW], head, tail)
    if first_in_time == head:
        return max_count
    kv_cumsum, output_cumsum = v[V_KV_CUMSUM], v[V_OUTPUT_CUMSUM]
    end = min(first_in_time + max_count, tail)
    stop = max(fitting_end(kv_cumsum, counts[KV_CAPACITY], first_in_time, end), first_in_time + 1)
    order, prompt, output = v[V_ORDER], v[V_POS_PROMPT], v[V_POS_OUTPUT]
    # Waiting positions have no event times, batch or completion yet (nan, -1, False), so only
    # the request values move.
    _rotate(order, head, first_in_time, stop)
    _rotate(prompt, head, first_in_time, stop)
    _rotate(output, head, first_in_time, stop)
    _rotate(pos_arrival, head, first_in_time, stop)
    position = v[V_POSITION]
    for p in range(head, stop):
        position[order[p]] = p
        kv_cumsum[p + 1] = kv_cumsum[p] + prompt[p] + output[p]
        output_cumsum[p + 1] = output_cumsum[p] + output[p]
    counts[MOVED_HI] = stop
    return stop - first_in_time


@njit(cache=True)
def put_in_time_first(floats, ints, layout, queue, max_count):
    """:func:`_put_in_time_first` on the buffers (for dispatches made from Python)."""
    return _put_in_time_first(state_views(floats, ints, layout), queue, max_count)


@njit(cache=True)
def _dispatch_engine_batch(v, queue, max_count):
    """A whole dispatch with the engine latency model, in one call.

    :func:`_put_in_time_first` (which requests go), :func:`fitting_end` (how many fit),
    :func:`engine_batch_timing` and :func:`_start_batch`.
    """
    max_count = _put_in_time_first(v, queue, max_count)
    queues = v[V_QUEUES]
    head = queues[HEAD, queue]
    end = min(head + max_count, queues[TAIL, queue])
    stop = max(fitting_end(v[V_KV_CUMSUM], v[V_COUNTS][KV_CAPACITY], head, end), head + 1)
    service_s, first_token_s = engine_batch_timing(
        v[V_POS_PROMPT], v[V_POS_OUTPUT], head, stop, v[V_PARAMS][B0:]
    )
    return _start_batch(v, queue, stop, service_s, first_token_s)


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
def _admitted_arrival_s(arrival, rejected, lo, hi, now):
    """Request-seconds between ``now`` and the arrivals ``lo .. hi - 1`` not rejected.

    ``sum(arrival) - count * now`` over the admitted ones, summed exactly (:func:`fsum`) as
    :meth:`Engine._admit_arrivals_before` does.
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


@njit(cache=True)
def _mark_idle_until_now(clock, gpu_f, gpu_i):
    """Set the ``UNTIL`` time of idle GPUs to now."""
    for g in range(gpu_i.shape[1]):
        if gpu_i[BUSY, g] == 0:
            gpu_f[UNTIL, g] = clock[NOW]


@njit(cache=True)
def _advance(v):
    """Process events until a decision is due (see :meth:`Engine.advance`).

    Returns ``True`` when a GPU must decide (``counts[DECISION_GPU]``), ``False`` when nothing is
    left to happen.
    """
    clock, counts, gpu_f, gpu_i, queues = _core_views(v)
    order, arrival, position = v[V_ORDER], v[V_ARRIVAL], v[V_POSITION]
    rejected, reject_reason = v[V_REJECTED], v[V_REJECT_REASON]
    pos_f, pos_completed, pos_arrival = v[V_POS_F], v[V_POS_COMPLETED], v[V_POS_ARRIVAL]
    output_cumsum, batch_i, finished = v[V_OUTPUT_CUMSUM], v[V_BATCH_I], v[V_FINISHED]
    deadline_s = v[V_PARAMS][DEADLINE_S]  # nan when the server has no deadline
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
            # moving the clock; each admitted one counts in the integral from its own arrival
            # (a rejected one never enters the system).
            t = first_end
            hi = bisect_left(arrival, t, lo, n_requests)
            if hi > lo:
                clock[IN_SYSTEM] -= _admitted_arrival_s(arrival, rejected, lo, hi, clock[NOW])
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
def _can_wait(counts, gpu_i, n_requests):
    """Whether WAIT is safe: a request is still to arrive or a GPU is working."""
    if counts[N_ARRIVED] < n_requests:
        return True
    for g in range(gpu_i.shape[1]):
        if gpu_i[BUSY, g] != 0:
            return True
    return False


@njit(cache=True)
def _fill_decision_mask(mask, counts, gpu_i, queues, n_requests):
    """``mask[0]``: whether WAIT is safe; ``mask[1 + q]``: whether queue ``q`` holds requests."""
    mask[0] = _can_wait(counts, gpu_i, n_requests)
    for q in range(queues.shape[1]):
        mask[1 + q] = queues[HEAD, q] < queues[TAIL, q]


@njit(cache=True)
def advance(floats, ints, layout):
    """Process events until a decision is due (see :meth:`Engine.advance`).

    Returns ``True`` when a GPU must decide (``counts[DECISION_GPU]``), ``False`` when nothing is
    left to happen.
    """
    return _advance(state_views(floats, ints, layout))


@njit(cache=True)
def start_batch(floats, ints, layout, queue, stop, service_s, first_token_s):
    """Start positions ``head .. stop - 1`` of ``queue`` as a batch on the deciding GPU.

    For latency models that are evaluated in Python; returns the batch size.
    """
    return _start_batch(state_views(floats, ints, layout), queue, stop, service_s, first_token_s)


@njit(cache=True)
def fill_decision_mask(mask, floats, ints, layout):
    """``mask[0]``: whether WAIT is safe; ``mask[1 + q]``: whether queue ``q`` holds requests."""
    v = state_views(floats, ints, layout)
    _fill_decision_mask(mask, v[V_COUNTS], v[V_GPU_I], v[V_QUEUES], layout[_N])


#: Codes :func:`decide` returns for a decision it refuses (nothing changes then).
NO_DECISION_DUE, EMPTY_QUEUE, WAIT_DEADLOCKS = -1, -2, -3


@njit(cache=True)
def decide(floats, ints, layout, queue, max_count, mask):
    """Dispatch from ``queue`` (WAIT if ``queue < 0``), then advance, in one call.

    The dispatch uses the engine latency model of ``params``; afterwards ``mask`` holds the
    decisions allowed (see :func:`fill_decision_mask`). Returns 1 if a decision is due, 0 if
    nothing is left to happen, or a negative code (:data:`NO_DECISION_DUE`,
    :data:`EMPTY_QUEUE`, :data:`WAIT_DEADLOCKS`) if the decision cannot be made, in which case
    nothing changes. ``max_count`` must be at least 1.
    """
    v = state_views(floats, ints, layout)
    counts, gpu_i, queues, arrival = v[V_COUNTS], v[V_GPU_I], v[V_QUEUES], v[V_ARRIVAL]
    gpu = counts[DECISION_GPU]
    if gpu < 0:
        return NO_DECISION_DUE
    if queue < 0:
        if not _can_wait(counts, gpu_i, arrival.shape[0]):
            return WAIT_DEADLOCKS
        gpu_i[DEFERRED, gpu] = 1
        counts[DECISION_GPU] = -1
    else:
        if queues[HEAD, queue] == queues[TAIL, queue]:
            return EMPTY_QUEUE
        _dispatch_engine_batch(v, queue, max_count)
    due = _advance(v)
    _fill_decision_mask(mask, counts, gpu_i, queues, arrival.shape[0])
    return 1 if due else 0


@njit(cache=True)
def metric_columns(floats, ints, layout):
    """Event times and states in request order, as :meth:`RequestRecords.columns` has them.

    Returns ``(start_s, first_token_s, completion_s, status)``; ``status`` holds codes into
    :data:`~llmsched_env.metrics.STATUS_NAMES` (0 not arrived, 1 in system, 2 completed,
    3 rejected).
    """
    v = state_views(floats, ints, layout)
    pos_f, counts, reject_reason = v[V_POS_F], v[V_COUNTS], v[V_REJECT_REASON]
    order, pos_completed = v[V_ORDER], v[V_POS_COMPLETED]
    n = reject_reason.shape[0]
    start = np.full(n, np.nan)
    first_token = np.full(n, np.nan)
    completion = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int8)
    status[: counts[N_ARRIVED]] = 1
    for p in range(order.shape[0]):
        j = order[p]
        start[j] = pos_f[START, p]
        first_token[j] = pos_f[FIRST_TOKEN, p]
        completion[j] = pos_f[COMPLETION, p]
        if pos_completed[p]:
            status[j] = 2
    for j in range(n):
        if reject_reason[j] != 0:
            status[j] = 3
    return start, first_token, completion, status
