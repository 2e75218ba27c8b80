"""The state of the compiled iteration-level server, declared once (see :mod:`~.state_schema`).

:class:`~llmsched_env.sim.compiled_iteration_server.CompiledIterationServer` keeps the state of
:class:`~llmsched_env.sim.iteration_server.IterationServer` (reserve or paged KV memory, with or
without prefix caching) in two buffers, so that its event loop and its iterations run compiled
(:mod:`llmsched_env.sim.iteration_kernels`). The prefix cache's own state
(:mod:`llmsched_env.sim.prefix_cache_state`) is one int buffer inside it, ``pool``.

Per GPU, the running sequences and the started prompts are the first ``n_running[g]`` and
``n_prefilling[g]`` entries of the GPU's row of slots (slot ``g * slots_per_gpu + j``, where
``slots_per_gpu`` is ``max_sequences``, or the episode's requests if fewer): the running ones in
the order they started decoding, the started prompts in admission order, as the Python server's
lists. The waiting queue is the requeued requests (paged mode's preempted ones,
``requeue[:n_requeued]``, a stack whose top is the head) followed by
``queue_order[queue_head:queue_tail]``. An iteration's plan (its prefill chunks) is kept in the
GPU's slots of ``plan_id`` and ``plan_take`` until the iteration ends; its decodes are the
first ``pending_decodes[g]`` running sequences, which nothing else changes meanwhile.

Compiled code gets the state as the named tuple :data:`IterationState` from :func:`state_view`;
Python code from :func:`state_views`. A scalar is a one-element array (``state.now[0]``).
"""

from __future__ import annotations

import numpy as np

from llmsched_env.latency.iteration_timing import N_TIMING_PARAMS
from llmsched_env.sim.state_schema import Field, StateSchema

SCHEMA = StateSchema(
    "IterationState",
    __name__,
    ("n", "n_queued", "n_gpus", "n_slots", "n_pool", "n_pool_layout"),
    (
        # clock and parameters
        Field("now", "f", 1, "current simulated time, s"),
        Field("in_system_s", "f", 1, "time integral of the requests in the system, request-s"),
        Field("tbt_target_s", "f", 1, "largest allowed gap between tokens, s (nan: none)"),
        Field("latency_params", "f", N_TIMING_PARAMS, "the latency model's compiled parameters"),
        Field("latency_code", "i", 1, "which compiled timing to use (0: timed in Python)"),
        Field("kv_capacity", "i", 1, "KV-cache tokens one GPU holds"),
        Field("max_tokens", "i", 1, "token budget of one iteration"),
        Field("max_sequences", "i", 1, "most requests on one GPU at once"),
        Field("slots_per_gpu", "i", 1, "slots of a GPU: max_sequences, at most the requests"),
        Field("chunk_size", "i", 1, "most prefill tokens of a prompt per iteration (0: whole)"),
        Field("has_deadline", "i", 1, "1 if TTFT deadlines are counted"),
        Field("reads_spread", "i", 1, "1 if the latency model takes the decode context spread"),
        Field("paged", "i", 1, "1 for paged KV memory (blocks as tokens are computed)"),
        Field("block_tokens", "i", 1, "tokens per KV block (paged)"),
        Field("capacity_blocks", "i", 1, "KV blocks of one GPU (paged; 0 in reserve mode)"),
        Field("prefix_caching", "i", 1, "1 with prefix caching (paged; the pool below)"),
        # counters
        Field("n_arrived", "i", 1, "requests arrived (a prefix of the arrival order)"),
        Field("n_completed", "i", 1, "requests completed"),
        Field("n_rejected", "i", 1, "requests rejected at arrival"),
        Field("n_on_time", "i", 1, "requests completed meeting both targets"),
        Field("on_time_tokens", "i", 1, "output tokens of the on-time requests"),
        Field("n_ttft_misses", "i", 1, "TTFT deadlines passed without a first token, rejections"),
        Field("n_tbt_misses", "i", 1, "requests that breached the TBT target"),
        Field("n_iterations", "i", 1, "iterations run"),
        Field("sequences_processed", "i", 1, "sequences of all iterations"),
        Field("prefill_tokens_processed", "i", 1, "prefill tokens of all iterations"),
        Field("decode_tokens_processed", "i", 1, "decode tokens of all iterations"),
        Field("queue_head", "i", 1, "position in queue_order of the oldest waiting request"),
        Field("queue_tail", "i", 1, "one past the position of the newest arrived one"),
        Field("deadline_ptr", "i", 1, "deadlines (in scan order) already checked"),
        Field("decision_gpu", "i", 1, "GPU that must decide now (-1: none)"),
        Field("admissions", "i", 1, "admissions so far (paged: the admission counter)"),
        Field("n_preemptions", "i", 1, "preemptions so far"),
        Field("recomputed_tokens", "i", 1, "KV tokens discarded by preemptions"),
        Field("n_requeued", "i", 1, "preempted requests waiting ahead of the queue"),
        Field("requeued_tokens", "i", 1, "tokens the requeued requests must recompute"),
        # a replica of a routed cluster (llmsched_env.sim.compiled_replica_server)
        Field("horizon", "i", 1, "requests routed so far: later ones wait (no routing: n)"),
        Field("blocked", "i", 1, "1 if the event loop stopped at the horizon"),
        Field("n_elsewhere", "i", 1, "arrivals routed to other replicas"),
        Field("n_assigned", "i", 1, "requests routed to this replica"),
        Field("queue_filled", "i", 1, "entries of queue_order filled (a replica: as routed)"),
        # per GPU
        Field("gpu_free_at", "f", "n_gpus", "when the GPU's latest iteration ends (or ended), s"),
        Field("gpu_busy_s", "f", "n_gpus", "time the GPU has worked (running work in full), s"),
        Field("last_iteration_s", "f", "n_gpus", "duration of the GPU's latest iteration, s"),
        Field("gpu_busy", "i", "n_gpus", "1 if the GPU works"),
        Field("gpu_deferred", "i", "n_gpus", "1 if the GPU waits for the next event (WAIT)"),
        Field("kv_reserved", "i", "n_gpus", "KV tokens reserved by the admitted requests"),
        Field("kv_used", "i", "n_gpus", "KV tokens in use"),
        Field("running_context", "i", "n_gpus", "prompt plus generated tokens of the running"),
        Field("running_prompt", "i", "n_gpus", "prompt tokens of the running sequences"),
        Field("running_predicted", "i", "n_gpus", "predicted output tokens of the running"),
        Field("n_sequences", "i", "n_gpus", "requests on the GPU (prefilling or running)"),
        Field("blocks_used", "i", "n_gpus", "KV blocks allocated (paged)"),
        Field("n_running", "i", "n_gpus", "running (decoding) sequences"),
        Field("n_prefilling", "i", "n_gpus", "started prompts (admitted, prefill not done)"),
        Field("pending", "i", "n_gpus", "1 while an iteration runs whose tokens are not applied"),
        Field("pending_decodes", "i", "n_gpus", "running sequences the iteration decodes"),
        Field("pending_chunks", "i", "n_gpus", "prefill chunks of the iteration"),
        # per slot: GPU g's slots are g * slots_per_gpu .. (g + 1) * slots_per_gpu - 1
        Field("run_id", "i", "n_slots", "request index of a running sequence"),
        Field("run_generated", "i", "n_slots", "its output tokens generated"),
        Field("run_last_token_s", "f", "n_slots", "the time of its latest token, s"),
        Field("run_max_gap_s", "f", "n_slots", "its longest gap between tokens, s"),
        Field("run_tbt_missed", "i", "n_slots", "1 once a gap exceeded the TBT target"),
        Field("prefilling_id", "i", "n_slots", "request index of a started prompt"),
        Field("plan_id", "i", "n_slots", "request index of a prefill chunk of the iteration"),
        Field("plan_take", "i", "n_slots", "its tokens"),
        # per request, in arrival order
        Field("arrival_s", "f", "n", "arrival time, s"),
        Field("ttft_deadline_s", "f", "n", "time by which its first token is due, s"),
        Field("start_s", "f", "n", "admission time, s (nan: not yet)"),
        Field("first_token_s", "f", "n", "time of its first token, s (nan: not yet)"),
        Field("completion_s", "f", "n", "completion time, s (nan: not yet)"),
        Field("max_gap_s", "f", "n", "longest gap between tokens, once completed, s"),
        Field("prompt", "i", "n", "prompt tokens"),
        Field("output", "i", "n", "output tokens"),
        Field("predicted", "i", "n", "predicted output tokens"),
        Field(
            "rejection", "i", "n", "why rejected at arrival (RejectReason; 0: not; < 0: elsewhere)"
        ),
        Field("reject_reason", "i", "n", "why it was rejected, once arrived (0: not rejected)"),
        Field("prefilled", "i", "n", "tokens prefilled (or recomputed) before the next token"),
        Field("target", "i", "n", "tokens to prefill: the prompt, after a preemption plus output"),
        Field("request_blocks", "i", "n", "KV blocks the request holds (paged)"),
        Field("admitted_at", "i", "n", "the admission counter when it was last admitted"),
        Field("preemptions", "i", "n", "times it was preempted"),
        Field("recomputed", "i", "n", "its KV tokens discarded by preemptions"),
        Field("has_resume", "i", "n", "1 while a preempted request keeps its token state"),
        Field("resume_generated", "i", "n", "a preempted request's output tokens generated"),
        Field("resume_tbt_missed", "i", "n", "1 if it had breached the TBT target"),
        Field("resume_last_token_s", "f", "n", "the time of its latest token, s"),
        Field("resume_max_gap_s", "f", "n", "its longest gap between tokens, s"),
        Field("requeue", "i", "n", "the requeued requests, the queue's head last (a stack)"),
        Field("tokens_generated", "i", "n", "output tokens generated, once no longer running"),
        Field("gpu", "i", "n", "GPU that admitted it (-1: none)"),
        Field("completed", "i", "n", "1 once completed"),
        Field("scan_deadline_s", "f", "n", "the TTFT deadlines in ascending order, s"),
        Field("scan_order", "i", "n", "request of each entry of scan_deadline_s"),
        Field("later_due_s", "f", "n", "earliest TTFT deadline of it and the later (replicas)"),
        # the waiting queue
        Field("queue_order", "i", "n_queued", "admissible request indices in arrival order"),
        Field("queue_prompt_cumsum", "i", "n_queued + 1", "prefix sums of their prompt tokens"),
        Field("queue_work_cumsum", "i", "n_queued + 1", "of prompt plus predicted (replicas)"),
        # the prefix cache (its own state: llmsched_env.sim.prefix_cache_state)
        Field("pool", "i", "n_pool", "the prefix cache's int buffer (empty without caching)"),
        Field("pool_layout", "i", "n_pool_layout", "the prefix cache's layout"),
    ),
)

#: The named tuple of the state's arrays (one entry per field of :data:`SCHEMA`).
IterationState = SCHEMA.tuple_type
#: Compiled ``state_view(floats, ints, layout)``: the :data:`IterationState` of a run's buffers.
state_view = SCHEMA.view


def allocate(
    n: int,
    n_queued: int,
    n_gpus: int,
    max_sequences: int,
    pool_layout: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zeroed ``(floats, ints, layout)`` of a run of ``n`` requests (``n_queued`` admissible).

    With ``pool_layout`` (the prefix cache's, :mod:`~llmsched_env.sim.prefix_cache_state`), the
    ``pool`` field is a zeroed buffer of that layout, which ``pool_layout`` holds.
    """
    slots = n_gpus * min(max_sequences, max(n, 1))
    if pool_layout is None:
        pool_layout = _EMPTY
    floats, ints, layout = SCHEMA.allocate(
        n=n,
        n_queued=n_queued,
        n_gpus=n_gpus,
        n_slots=slots,
        n_pool=int(pool_layout[-1]) if pool_layout.size else 0,
        n_pool_layout=pool_layout.shape[0],
    )
    state_views(floats, ints, layout).pool_layout[:] = pool_layout
    return floats, ints, layout


_EMPTY = np.zeros(0, dtype=np.int64)


def state_views(floats: np.ndarray, ints: np.ndarray, layout: np.ndarray) -> IterationState:
    """The :data:`IterationState` of a run's buffers, as numpy views (for Python code)."""
    return SCHEMA.views(floats, ints, layout)
