"""The rules of the request-level server, each written once, and the questions others ask it.

Every function here is compiled (numba) and reads a :data:`~llmsched_env.sim.batch_state.
BatchState`. The event loop and dispatch (:mod:`~llmsched_env.sim.batch_kernels`), the
environment's observation and mask, and the baselines call these, so the lateness test, the
dispatch sizing and the mask have one definition each. A rule's plain Python/NumPy form is its
``py_func`` (for example ``is_late.py_func(arrivals, sla_s, now_s)`` on arrays).
"""

from __future__ import annotations

from llmsched_env.jit import njit


# ---------------------------------------------------------------------------------- deadlines
@njit(cache=True, inline="always")
def is_late(arrival_s, deadline_s, now_s):
    """Whether a request's deadline has passed at ``now_s``: ``arrival_s + deadline_s <= now_s``.

    The test that counts a miss; the observation, the in-time-first dispatch and the baselines
    use it too, so they agree on every request to the last bit (``arrival_s <= now_s -
    deadline_s`` can round the other way).
    """
    return arrival_s + deadline_s <= now_s


@njit(cache=True, inline="always")
def meets_deadline(arrival_s, deadline_s, completion_s):
    """Whether a request completing at ``completion_s`` is on time: not after its deadline."""
    return completion_s <= arrival_s + deadline_s


@njit(cache=True)
def first_not_late(arrival, deadline_s, now, lo, hi):
    """First index in ``[lo, hi)`` whose request is not late at ``now`` (``hi`` if none).

    ``arrival`` is ascending over the range, so the late requests are a prefix of it.
    """
    while lo < hi:
        mid = (lo + hi) // 2
        if is_late(arrival[mid], deadline_s, now):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def first_on_time(arrival, deadline_s, completion, lo, hi):
    """First index in ``[lo, hi)`` whose request completing at ``completion`` is on time.

    ``arrival`` is ascending over the range, so the on-time requests are a suffix of it.
    """
    while lo < hi:
        mid = (lo + hi) // 2
        if meets_deadline(arrival[mid], deadline_s, completion):
            hi = mid
        else:
            lo = mid + 1
    return lo


# ---------------------------------------------------------------------------------- searches
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


# ---------------------------------------------------------------------------------- dispatch
@njit(cache=True)
def fitting_end(kv_cumsum, capacity, head, end):
    """The largest ``k <= end`` such that positions ``head .. k - 1`` fit in ``capacity`` tokens."""
    limit = kv_cumsum[head] + capacity
    if kv_cumsum[end] <= limit:
        return end
    return bisect_right(kv_cumsum, limit, head, end + 1) - 1


@njit(cache=True, inline="always")
def dispatch_range(state, queue, max_count):
    """The positions ``(start, stop)`` a dispatch of at most ``max_count`` from ``queue`` serves.

    The dispatch sizing rule. A dispatch serves the queue's oldest waiting requests; with
    ``in_time_first`` set and late requests ahead of in-time ones, the oldest in time, from
    the first one not late. It takes at most ``max_count`` of them, as many as fit together in
    one GPU's KV memory, and at least one (a request too large alone was rejected at arrival).
    The queue must not be empty; nothing changes.
    """
    head = state.queue_head[queue]
    tail = state.queue_tail[queue]
    start = head
    if state.in_time_first[0] != 0:
        first = first_not_late(state.pos_arrival_s, state.deadline_s[0], state.now[0], head, tail)
        if first < tail:
            start = first
    end = min(start + max_count, tail)
    stop = max(fitting_end(state.kv_cumsum, state.kv_capacity[0], start, end), start + 1)
    return start, stop


@njit(cache=True)
def fill_batch_counts(state, max_counts, counts):
    """``counts[q, i]``: the size of a dispatch from queue ``q`` of at most ``max_counts[i]``.

    0 for an empty queue (see :func:`dispatch_range`).
    """
    for q in range(state.queue_head.shape[0]):
        if state.queue_head[q] == state.queue_tail[q]:
            counts[q, :] = 0
            continue
        for i in range(max_counts.shape[0]):
            start, stop = dispatch_range(state, q, max_counts[i])
            counts[q, i] = stop - start


# ---------------------------------------------------------------------------------- questions
@njit(cache=True, inline="always")
def n_requests(state):
    """Number of requests of the run."""
    return state.arrival_s.shape[0]


@njit(cache=True, inline="always")
def can_wait(state):
    """Whether WAIT is safe: a request is still to arrive or a GPU is working."""
    if state.n_arrived[0] < n_requests(state):
        return True
    for g in range(state.gpu_busy.shape[0]):
        if state.gpu_busy[g] != 0:
            return True
    return False


@njit(cache=True, inline="always")
def queue_length(state, queue):
    """Number of requests waiting in ``queue``."""
    return state.queue_tail[queue] - state.queue_head[queue]


@njit(cache=True, inline="always")
def fill_decision_mask(state, mask):
    """``mask[0]``: whether WAIT is safe; ``mask[1 + q]``: whether queue ``q`` holds requests."""
    mask[0] = can_wait(state)
    for q in range(state.queue_head.shape[0]):
        mask[1 + q] = queue_length(state, q) > 0


@njit(cache=True, inline="always")
def oldest_queue(state):
    """The queue whose oldest waiting request arrived first (``-1`` if every queue is empty).

    First come, first served across queues: where a forbidden action is remapped
    (``invalid_action="remap"``).
    """
    best, best_index = -1, -1
    for q in range(state.queue_head.shape[0]):
        if queue_length(state, q) > 0:
            index = state.order[state.queue_head[q]]
            if best_index < 0 or index < best_index:
                best, best_index = q, index
    return best


@njit(cache=True, inline="always")
def waiting_positions(state, queue):
    """``(head, tail)``: the waiting requests of ``queue`` are positions ``head .. tail - 1``."""
    return state.queue_head[queue], state.queue_tail[queue]


@njit(cache=True, inline="always")
def n_late_waiting(state, queue):
    """Waiting requests of ``queue`` whose deadline has passed (0 without a deadline)."""
    head, tail = state.queue_head[queue], state.queue_tail[queue]
    return first_not_late(state.pos_arrival_s, state.deadline_s[0], state.now[0], head, tail) - head


@njit(cache=True, inline="always")
def waiting_arrival_s(state, queue, k):
    """Arrival time of the ``k``-th oldest waiting request of ``queue`` (from 0)."""
    return state.pos_arrival_s[state.queue_head[queue] + k]


@njit(cache=True, inline="always")
def n_waiting_arrived_before(state, queue, t, at_least):
    """Waiting requests of ``queue`` that arrived before ``t``, counted from the ``at_least``-th.

    The first ``at_least`` waiting requests count without being tested (a caller that knows
    they qualify saves the search over them).
    """
    head, tail = state.queue_head[queue], state.queue_tail[queue]
    return bisect_left(state.pos_arrival_s, t, head + at_least, tail) - head


@njit(cache=True, inline="always")
def n_arrived_since(state, t):
    """Requests that arrived after time ``t`` (and by now)."""
    n_arrived = state.n_arrived[0]
    return n_arrived - bisect_right(state.arrival_s, t, 0, n_arrived)


@njit(cache=True, inline="always")
def busy_remaining_s(state, gpu):
    """How long ``gpu``'s running batch still takes (0 for an idle GPU)."""
    if state.gpu_busy[gpu] != 0:
        return state.gpu_free_at[gpu] - state.now[0]
    return 0.0


@njit(cache=True)
def settled_counts(state):
    """The run's final ``(n_on_time, n_late, on_time_tokens)`` if no decision can change them.

    That is once every request has arrived and every waiting request's deadline has passed:
    a running batch's end is fixed when it starts, so its members' outcomes are known, and a
    late request stays late however it is served. Returns ``(False, 0, 0, 0)`` otherwise, and
    always for a server without a deadline (``deadline_s`` nan).
    """
    deadline_s = state.deadline_s[0]
    now = state.now[0]
    if deadline_s != deadline_s or state.n_arrived[0] < n_requests(state):
        return False, 0, 0, 0
    arrival = state.pos_arrival_s
    for q in range(state.queue_head.shape[0]):
        head, tail = state.queue_head[q], state.queue_tail[q]
        if head < tail and not is_late(arrival[tail - 1], deadline_s, now):  # youngest in time
            return False, 0, 0, 0
    n_on_time, n_late, tokens = state.n_on_time[0], state.n_late[0], state.on_time_tokens[0]
    for gpu in range(state.gpu_batch.shape[0]):
        b = state.gpu_batch[gpu]
        if b < 0:
            continue
        head = state.batch_head[b]
        stop = head + state.batch_size[b]
        # The on-time members are a suffix; before them come the late ones whose deadline is
        # still ahead (not counted yet) and, first, those already counted.
        on_time = first_on_time(arrival, deadline_s, state.gpu_free_at[gpu], head, stop)
        unpaid = first_not_late(arrival, deadline_s, now, head, stop)
        n_on_time += stop - on_time
        n_late += on_time - unpaid
        tokens += state.output_cumsum[stop] - state.output_cumsum[on_time]
    return True, n_on_time, n_late, tokens
