"""The state of the request-level server, declared once (see :mod:`~llmsched_env.sim.state_schema`).

Requests are grouped by queue in arrival order into one index array, ``order``; a request's
place in it is its *position*. Each queue is a contiguous range of positions: its waiting
requests are ``queue_head .. queue_tail - 1``, arrivals move the tail and dispatches move the
head, so a batch is a range of positions. Values the event loop reads per batch (lengths,
arrival times, prefix sums) and the event times are kept by position; requests too large for
KV memory have no position (they are rejected at arrival).

Compiled code gets the state as the named tuple :data:`BatchState` from :func:`state_view`;
Python code from :func:`state_views`. A scalar is a one-element array (``state.now[0]``).
"""

from __future__ import annotations

import numpy as np

from llmsched_env.latency.batch import N_TIMING_PARAMS
from llmsched_env.sim.state_schema import Field, StateSchema

SCHEMA = StateSchema(
    "BatchState",
    __name__,
    ("n", "n_queued", "n_rejected", "n_gpus", "n_queues"),
    (
        # clock and parameters
        Field("now", "f", 1, "current simulated time, s"),
        Field("in_system_s", "f", 1, "time integral of the requests in the system, request-s"),
        Field("deadline_s", "f", 1, "end-to-end deadline of every request, s (nan: none)"),
        Field("latency_params", "f", N_TIMING_PARAMS, "the latency model's compiled parameters"),
        Field("latency_code", "i", 1, "which compiled timing to use (0: timed in Python)"),
        Field("kv_capacity", "i", 1, "KV-cache tokens one GPU holds"),
        Field("in_time_first", "i", 1, "1 if a dispatch serves in-time requests before late"),
        # counters
        Field("n_arrived", "i", 1, "requests arrived (a prefix of the arrival order)"),
        Field("n_completed", "i", 1, "requests completed"),
        Field("n_rejected", "i", 1, "requests rejected at arrival"),
        Field("n_waiting", "i", 1, "requests waiting in all queues"),
        Field("n_on_time", "i", 1, "requests completed within their deadline"),
        Field("n_late", "i", 1, "deadlines passed unfinished, plus rejections"),
        Field("on_time_tokens", "i", 1, "output tokens of the on-time requests"),
        Field("deadline_ptr", "i", 1, "requests (arrival order) whose deadline was checked"),
        Field("decision_gpu", "i", 1, "GPU that must decide now (-1: none)"),
        Field("n_batches", "i", 1, "batches dispatched"),
        Field("n_finished", "i", 1, "batches finished"),
        Field("moved_lo", "i", 1, "first position the latest dispatch reordered"),
        Field("moved_hi", "i", 1, "one past the last position it reordered"),
        # per GPU
        Field("gpu_free_at", "f", "n_gpus", "when the GPU's latest work ends (or ended), s"),
        Field("gpu_busy_s", "f", "n_gpus", "time the GPU has worked (running work in full), s"),
        Field("gpu_until", "f", "n_gpus", "end of the GPU's work, or now if idle, s"),
        Field("gpu_busy", "i", "n_gpus", "1 if the GPU works"),
        Field("gpu_deferred", "i", "n_gpus", "1 if the GPU waits for the next event (WAIT)"),
        Field("gpu_batch", "i", "n_gpus", "the batch the GPU runs (-1: none)"),
        # per queue
        Field("queue_head", "i", "n_queues", "position of the oldest waiting request"),
        Field("queue_tail", "i", "n_queues", "one past the position of the newest arrived one"),
        Field("queue_end", "i", "n_queues", "one past the queue's last position"),
        # per request, in arrival order
        Field("arrival_s", "f", "n", "arrival time, s"),
        Field("position", "i", "n", "the request's position (-1: rejected)"),
        Field("reject_reason", "i", "n", "RejectReason code (0: not rejected)"),
        Field("rejected", "i", "n_rejected", "indices of the requests rejected at arrival"),
        # per position
        Field("order", "i", "n_queued", "request index at each position"),
        Field("pos_arrival_s", "f", "n_queued", "arrival time, s"),
        Field("pos_prompt", "i", "n_queued", "prompt tokens"),
        Field("pos_output", "i", "n_queued", "output tokens"),
        Field("pos_start_s", "f", "n_queued", "dispatch time, s (nan: not yet)"),
        Field("pos_first_token_s", "f", "n_queued", "first-token time, s (nan: not yet/unknown)"),
        Field("pos_completion_s", "f", "n_queued", "completion time, s (nan: not dispatched)"),
        Field("pos_batch", "i", "n_queued", "batch index (-1: not dispatched)"),
        Field("pos_completed", "i", "n_queued", "1 once the request has completed"),
        Field("kv_cumsum", "i", "n_queued + 1", "prefix sums of prompt plus output tokens"),
        Field("output_cumsum", "i", "n_queued + 1", "prefix sums of output tokens"),
        # per batch, in dispatch order (at most one per queued request)
        Field("batch_gpu", "i", "n_queued", "GPU that runs it"),
        Field("batch_queue", "i", "n_queued", "queue its requests came from"),
        Field("batch_size", "i", "n_queued", "number of requests"),
        Field("batch_head", "i", "n_queued", "position of its first request"),
        Field("batch_max_total", "i", "n_queued", "longest member's prompt plus output tokens"),
        Field("batch_max_output", "i", "n_queued", "longest member's output tokens"),
        Field("batch_output_tokens", "i", "n_queued", "output tokens of all members"),
        Field("batch_start_s", "f", "n_queued", "dispatch time, s"),
        Field("batch_service_s", "f", "n_queued", "time the GPU is busy with it, s"),
        Field("finished", "i", "n_queued", "batch indices in the order the batches ended"),
    ),
)

#: The named tuple of the state's arrays (one entry per field of :data:`SCHEMA`).
BatchState = SCHEMA.tuple_type
#: Compiled ``state_view(floats, ints, layout)``: the :data:`BatchState` of a run's buffers.
state_view = SCHEMA.view


def allocate(
    n: int, n_queued: int, n_rejected: int, n_gpus: int, n_queues: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zeroed ``(floats, ints, layout)`` of a run of ``n`` requests (``n_queued`` not rejected)."""
    return SCHEMA.allocate(
        n=n, n_queued=n_queued, n_rejected=n_rejected, n_gpus=n_gpus, n_queues=n_queues
    )


def state_views(floats: np.ndarray, ints: np.ndarray, layout: np.ndarray) -> BatchState:
    """The :data:`BatchState` of a run's buffers, as numpy views (for Python code)."""
    return SCHEMA.views(floats, ints, layout)
