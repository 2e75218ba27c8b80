"""One ``Routing-v0`` step, compiled: route the request, run every replica to the next arrival.

:func:`route_and_advance` does in one call what
:class:`~llmsched_env.envs.routing_cluster.Cluster` does with its replicas in Python
(``_route``, then ``advance``): send the request to the chosen replica, let every replica make
its decisions by its in-replica rule up to the next arrival some replica can admit (a request
no replica can admit is sent to replica 0 without a decision), count the TTFT deadlines that
pass meanwhile, and measure the loads, the observation and the reward's counters for the
next decision. The rules and the arithmetic are those of the Python classes, in the same
order, so both give the same episode bit for bit; the tests play them side by side.

The replicas are :class:`~llmsched_env.sim.compiled_replica_server.CompiledReplicaServer`
states: ``replicas`` is ``(floats, ints, layouts)``, two numba typed lists of the replicas'
buffers and their layouts stacked (replica ``r``'s buffers are ``floats[r]``, ``ints[r]``,
``layouts[r]``). Their latency models' compiled tables are packed into two buffers
(``tables_all``: ``(floats, ints, offsets, layouts)``; replica ``r``'s floats are
``floats[offsets[0, r]:offsets[0, r + 1]]``, its ints likewise with ``offsets[1]``, its layout
``layouts[r]``, zero-padded to the longest). The cluster's own state is :data:`ClusterState`.

The in-replica rule is that of ``vllm-v1`` (and ``sarathi``, whose action is the same): decode
every running sequence and give prefill the whole budget left (prefill level ``P - 1``, no prompt
cap) when the per-component mask allows it; a prefill-only action the joint rule forbids would
step down to the largest allowed level, else WAIT (``ContinuousPolicy.feasible``; with paged KV
memory, as in every ``Routing-v0`` replica, the joint rule never forbids it); the env's own
check and fallback follow (:func:`~llmsched_env.envs.iteration_step.carry_out`).
"""

from __future__ import annotations

import numpy as np

from llmsched_env.envs.iteration_step import _allowed, carry_out
from llmsched_env.envs.routing_cluster import TTFT_SMOOTHING
from llmsched_env.jit import njit
from llmsched_env.sim import iteration_kernels as k
from llmsched_env.sim import prefix_kernels as pk
from llmsched_env.sim.iteration_state import state_view
from llmsched_env.sim.prefix_cache_state import SCHEMA as POOL_SCHEMA
from llmsched_env.sim.state_schema import Field, StateSchema

SCHEMA = StateSchema(
    "ClusterState",
    __name__,
    ("n", "n_replicas", "n_obs", "n_int_loads", "n_float_loads"),
    (
        Field("now", "f", 1, "time of the decision (the request's arrival), s"),
        Field("in_system_s", "f", 1, "the replicas' in-system integrals, summed, request-s"),
        Field("obs_params", "f", 5, "ttft_sla_s, tbt_sla_s, length scale, max_tokens, max_seqs"),
        Field("float_loads", "f", "n_float_loads", "per replica: recent TTFT, busy remaining"),
        Field("kv_capacity", "f", "n_replicas", "its KV memory, tokens"),
        Field("low", "f", "n_obs", "the observation's lower bounds"),
        Field("high", "f", "n_obs", "the observation's upper bounds"),
        Field("obs", "f", "n_obs", "the observation (float64; the env casts it)"),
        # the scalars Python reads after each call (SCALAR_INTS, first in the int buffer)
        Field("request", "i", 1, "the request to route (-1: none)"),
        Field("n_routed", "i", 1, "requests routed (those rejected without a decision too)"),
        Field("n_rejected_undecided", "i", 1, "requests no replica can admit, sent to 0"),
        Field("n_on_time", "i", 1, "requests that met both targets, all replicas"),
        Field("on_time_tokens", "i", 1, "output tokens of those, all replicas"),
        Field("n_ttft_misses", "i", 1, "TTFT misses (rejections included), all replicas"),
        Field("n_tbt_misses", "i", 1, "TBT misses, all replicas"),
        Field("n_completed", "i", 1, "completed requests, all replicas"),
        Field("n_rejected", "i", 1, "rejected requests, all replicas"),
        Field("n_preemptions", "i", 1, "preemptions, all replicas"),
        Field("prefix_hit_tokens", "i", 1, "tokens admissions found cached, all replicas"),
        # settings
        Field("prefix_caching", "i", 1, "1 if the replicas cache prefixes"),
        Field("block_tokens", "i", 1, "tokens per KV block"),
        Field("routed_to", "i", "n", "the replica each routed request went to (-1: not yet)"),
        Field("next_routed", "i", "n", "the next request routed to the same replica (-1: none)"),
        Field("last_routed", "i", "n_replicas", "the latest request routed to it (-1: none)"),
        Field("pending_head", "i", "n_replicas", "its first routed request not arrived there"),
        Field("n_pending", "i", "n_replicas", "routed requests its clock has not reached"),
        Field("pending_tokens", "i", "n_replicas", "their prompt tokens"),
        Field("pending_work", "i", "n_replicas", "their prompt plus predicted output tokens"),
        Field("awaiting_head", "i", "n_replicas", "its first routed request not yet in the TTFT"),
        Field("decisions", "i", "n_replicas", "in-replica decisions so far"),
        Field("mask", "i", "n_replicas", "1 if it can admit the request"),
        Field("int_loads", "i", "n_int_loads", "per replica: the integer ReplicaLoads"),
    ),
)

#: The :class:`~llmsched_env.envs.routing_observation.ReplicaLoads` fields in ``int_loads``
#: (field ``f`` of replica ``r`` at ``f * n_replicas + r``), then those in ``float_loads``.
INT_LOADS = (
    "waiting",
    "waiting_tokens",
    "running",
    "prefill_remaining_tokens",
    "outstanding_tokens",
    "kv_used_tokens",
    "cached_prefix_tokens",
)
FLOAT_LOADS = ("recent_ttft_s", "busy_remaining_s")
_WAITING, _WAITING_TOKENS, _RUNNING, _PREFILL, _OUTSTANDING, _KV_USED, _CACHED = range(7)
_RECENT_TTFT, _BUSY = range(2)
#: Where the prefix cache's ``hit_tokens_total`` starts in its layout (read without a view).
_HIT_TOKENS_AT = POOL_SCHEMA.start_index("hit_tokens_total")

#: The cluster's scalars that Python reads after each call, in buffer order: the first of the
#: int buffer, then the first two of the float buffer.
SCALAR_INTS = (
    "request",
    "n_routed",
    "n_rejected_undecided",
    "n_on_time",
    "on_time_tokens",
    "n_ttft_misses",
    "n_tbt_misses",
    "n_completed",
    "n_rejected",
    "n_preemptions",
    "prefix_hit_tokens",
)
SCALAR_FLOATS = ("now", "in_system_s")

#: The named tuple of the cluster's arrays.
ClusterState = SCHEMA.tuple_type
#: Compiled ``cluster_view(floats, ints, layout)``.
cluster_view = SCHEMA.view


# ---------------------------------------------------------------------- a replica's arrays
@njit(cache=True, inline="always")
def _buffers(replicas, r):
    """Replica ``r``'s ``(floats, ints, layout)``."""
    return replicas[0][r], replicas[1][r], replicas[2][r]


@njit(cache=True, inline="always")
def _replica_state(replicas, r):
    """Replica ``r``'s :data:`~llmsched_env.sim.iteration_state.IterationState`."""
    floats, ints, layout = _buffers(replicas, r)
    return state_view(floats, ints, layout)


@njit(cache=True, inline="always")
def _tables(tables_floats, tables_ints, table_offsets, table_layouts, r):
    """Replica ``r``'s latency tables ``(floats, ints, layout)``."""
    return (
        tables_floats[table_offsets[0, r] : table_offsets[0, r + 1]],
        tables_ints[table_offsets[1, r] : table_offsets[1, r + 1]],
        table_layouts[r],
    )


# ---------------------------------------------------------------------- the in-replica rule
@njit(cache=True)
def run_replica(floats, ints, layout, tables, codec, answers):
    """Make the replica's decisions until its loop stops (the horizon, or nothing left).

    Returns:
        ``(code, decisions)``: a refusal code (0: none) and the decisions made.
    """
    state = state_view(floats, ints, layout)
    decisions = 0
    top = codec[1] - 1
    budget_top = codec[5 + codec[2] + top]
    cap = codec[3]
    # With paged KV and an uncapped level that admits prompts, the per-component answer for
    # the top level is, when nothing runs, the joint rule's for [0, top, cap] (both ask
    # prefill_progresses with the top budget): the policy's action is then allowed as it is,
    # but for WAIT where WAIT is not safe. Otherwise the rule is followed step by step.
    answered = state.paged[0] != 0 and codec[5 + cap] > 0
    while k.advance(floats, ints, layout):
        gpu = state.decision_gpu[0]
        running = state.n_running[gpu] > 0
        top_ok = k.prefill_allowed(floats, ints, layout, gpu, budget_top, True)
        # The answers the rule and the env's check read: running, WAIT safe, the top level.
        answers[0] = 1 if running else 0
        answers[1] = 1 if k._can_wait(state) else 0
        answers[2 + top] = 1 if top_ok else 0
        decode = codec[0] - 1 if running else 0
        prefill = top if top_ok else 0
        if answered:
            invalid = decode == 0 and prefill == 0 and answers[1] == 0
        else:
            if decode == 0 and prefill > 0:
                # ContinuousPolicy.feasible: the largest prefill-only level the joint rule
                # allows (in reserve mode, the rule reads the level's answer).
                while prefill > 0:
                    if not state.paged[0]:
                        budget = codec[5 + codec[2] + prefill]
                        allowed = k.prefill_allowed(floats, ints, layout, gpu, budget, True)
                        answers[2 + prefill] = 1 if allowed else 0
                    if _allowed(floats, ints, layout, state, gpu, 0, prefill, cap, codec, answers):
                        break
                    prefill -= 1
            invalid = not _allowed(
                floats, ints, layout, state, gpu, decode, prefill, cap, codec, answers
            )
        code, _, _, _ = carry_out(
            floats, ints, layout, state, gpu, invalid, decode, prefill, cap, tables, codec
        )
        if code != k.DONE:
            return code, decisions
        decisions += 1
    return k.DONE, decisions


# ---------------------------------------------------------------------- routing
@njit(cache=True, inline="always")
def _enqueue(c, s, replica, index):
    """The cluster's side of routing ``index`` to ``replica`` (state ``s``; ``Cluster._route``).

    A request the replica can admit is pending there until its clock reaches the arrival, and
    awaits its first token for the moving TTFT; one it rejects at arrival is neither.
    """
    if s.rejection[index] != 0:
        return
    c.next_routed[index] = -1
    last = c.last_routed[replica]
    if last >= 0:
        c.next_routed[last] = index
    c.last_routed[replica] = index
    if c.pending_head[replica] < 0:
        c.pending_head[replica] = index
    if c.awaiting_head[replica] < 0:
        c.awaiting_head[replica] = index
    c.n_pending[replica] += 1
    c.pending_tokens[replica] += s.prompt[index]
    c.pending_work[replica] += s.prompt[index] + s.predicted[index]


@njit(cache=True, inline="always")
def _update_views(c, s, r, n_replicas, now):
    """Replica ``r``'s pending requests its clock reached are dropped; its TTFT updated.

    ``Cluster._update_views``. Doing it again later (after a request no replica can admit)
    changes nothing: both walks only move forward.
    """
    i = c.pending_head[r]
    while i >= 0 and i < s.n_arrived[0]:
        c.n_pending[r] -= 1
        c.pending_tokens[r] -= s.prompt[i]
        c.pending_work[r] -= s.prompt[i] + s.predicted[i]
        i = c.next_routed[i]
    c.pending_head[r] = i
    i = c.awaiting_head[r]
    recent = _RECENT_TTFT * n_replicas + r
    while i >= 0 and s.first_token_s[i] <= now:
        ttft = s.first_token_s[i] - s.arrival_s[i]
        c.float_loads[recent] += TTFT_SMOOTHING * (ttft - c.float_loads[recent])
        i = c.next_routed[i]
    c.awaiting_head[r] = i


@njit(cache=True, inline="always")
def _measure(c, s, r, n_replicas, request, now):
    """Replica ``r``'s loads (``ReplicaLoads.measure``); its counters added to the cluster's."""
    head = s.queue_head[0]
    tail = s.queue_tail[0]
    n_requeued = s.n_requeued[0]
    requeued_work = 0
    for j in range(n_requeued):
        index = s.requeue[j]
        requeued_work += s.prompt[index] + s.predicted[index]
    started_work = 0
    prefill_remaining = 0
    for j in range(s.n_prefilling[0]):
        index = s.prefilling_id[j]
        started_work += s.prompt[index] + s.predicted[index]
        prefill_remaining += s.target[index] - s.prefilled[index]
    waiting_tokens = (
        s.queue_prompt_cumsum[tail] - s.queue_prompt_cumsum[head] + s.requeued_tokens[0]
    )
    waiting_work = s.queue_work_cumsum[tail] - s.queue_work_cumsum[head] + requeued_work
    running_work = s.running_prompt[0] + s.running_predicted[0] + started_work
    loads = c.int_loads
    loads[_WAITING * n_replicas + r] = tail - head + n_requeued + c.n_pending[r]
    loads[_WAITING_TOKENS * n_replicas + r] = waiting_tokens + c.pending_tokens[r]
    loads[_RUNNING * n_replicas + r] = s.n_running[0] + s.n_prefilling[0]
    loads[_PREFILL * n_replicas + r] = prefill_remaining
    loads[_OUTSTANDING * n_replicas + r] = waiting_work + running_work + c.pending_work[r]
    loads[_KV_USED * n_replicas + r] = s.kv_used[0]
    cached = 0
    if request >= 0 and c.prefix_caching[0]:
        hits, _ = pk.longest_hit(s.now, s.pool, s.pool_layout, 0, request, s.target[request])
        cached = hits * c.block_tokens[0]
    loads[_CACHED * n_replicas + r] = cached
    busy = max(s.gpu_free_at[0] - now, 0.0) if s.gpu_busy[0] else 0.0
    c.float_loads[_BUSY * n_replicas + r] = busy
    c.n_on_time[0] += s.n_on_time[0]
    c.on_time_tokens[0] += s.on_time_tokens[0]
    c.n_ttft_misses[0] += s.n_ttft_misses[0]
    c.n_tbt_misses[0] += s.n_tbt_misses[0]
    c.n_completed[0] += s.n_completed[0]
    c.n_rejected[0] += s.n_rejected[0]
    c.n_preemptions[0] += s.n_preemptions[0]
    if c.prefix_caching[0]:
        c.prefix_hit_tokens[0] += s.pool[s.pool_layout[_HIT_TOKENS_AT]]


@njit(cache=True, inline="always")
def _clear_counters(c):
    c.n_on_time[0] = c.on_time_tokens[0] = c.n_ttft_misses[0] = c.n_tbt_misses[0] = 0
    c.n_completed[0] = c.n_rejected[0] = c.n_preemptions[0] = c.prefix_hit_tokens[0] = 0


@njit(cache=True, inline="always")
def _observe(c, n_replicas, prompt, predicted):
    """``RoutingObservation.build`` of the loads, into ``c.obs`` (clipped; float64)."""
    ttft_sla_s = c.obs_params[0]
    tbt_sla_s = c.obs_params[1]
    length_scale = c.obs_params[2]
    max_tokens = c.obs_params[3]
    max_sequences = c.obs_params[4]
    loads = c.int_loads
    obs = c.obs
    for r in range(n_replicas):
        base = 8 * r
        obs[base] = loads[_WAITING * n_replicas + r] / max_sequences
        obs[base + 1] = loads[_WAITING_TOKENS * n_replicas + r] / max_tokens
        obs[base + 2] = loads[_RUNNING * n_replicas + r] / max_sequences
        obs[base + 3] = loads[_OUTSTANDING * n_replicas + r] / c.kv_capacity[r]
        obs[base + 4] = loads[_KV_USED * n_replicas + r] / c.kv_capacity[r]
        obs[base + 5] = loads[_CACHED * n_replicas + r] / max(prompt, 1)
        obs[base + 6] = c.float_loads[_RECENT_TTFT * n_replicas + r] / ttft_sla_s
        obs[base + 7] = c.float_loads[_BUSY * n_replicas + r] / tbt_sla_s
    base = 8 * n_replicas
    obs[base] = prompt / max_tokens
    obs[base + 1] = predicted / length_scale
    arrived = c.n_routed[0] + (1 if c.request[0] >= 0 else 0)
    obs[base + 2] = arrived / c.routed_to.shape[0]
    for j in range(obs.shape[0]):
        # The float32 value, clipped to the float32 bounds (RoutingObservation.build).
        value = np.float32(obs[j])
        obs[j] = max(min(value, np.float32(c.high[j])), np.float32(c.low[j]))


@njit(cache=True)
def _routing_loop(c_floats, c_ints, c_layout, replicas, tables_all, codec, answers, replica,
                  index):  # fmt: skip
    """Route ``index`` to ``replica`` (none if ``index`` is -1), then run to the next decision.

    ``Cluster._route`` and ``Cluster.advance`` with each replica's part done in one pass over
    the replicas: the route, its decisions up to the next arrival, the TTFT deadlines passed
    meanwhile, whether it can admit the arrival, its pending requests and moving TTFT, its loads
    and counters. Replicas are independent given the routing, so the order of these parts
    across replicas changes nothing.

    Returns:
        ``(code, replica, due)``: a refusal code and the replica that raised it (0, -1: none),
        and whether a routing decision is due.
    """
    c = cluster_view(c_floats, c_ints, c_layout)
    n = c.routed_to.shape[0]
    n_replicas = replicas[2].shape[0]
    tables_floats, tables_ints, table_offsets, table_layouts = tables_all
    # Every replica holds the episode's per-request columns (arrivals, lengths): read replica 0's.
    columns = _replica_state(replicas, 0)
    if index >= 0:
        c.routed_to[index] = replica
        c.n_routed[0] = index + 1
        c.request[0] = -1
    while True:
        i = c.n_routed[0]
        routed_all = i >= n
        now = 0.0 if routed_all else columns.arrival_s[i]
        admissible = False
        in_system = 0.0
        _clear_counters(c)
        for r in range(n_replicas):
            floats, ints, layout = _buffers(replicas, r)
            s = state_view(floats, ints, layout)
            if index >= 0:
                if r == replica:
                    k._assign(s, index)
                    _enqueue(c, s, r, index)
                else:
                    k._mark_elsewhere(s, index)
            tables = _tables(tables_floats, tables_ints, table_offsets, table_layouts, r)
            code, decisions = run_replica(floats, ints, layout, tables, codec, answers)
            c.decisions[r] += decisions
            if code != k.DONE:
                return code, r, False
            if not routed_all:
                k._pass_deadlines_before(s, now)
                c.mask[r] = 1 if s.rejection[i] == 0 else 0
                admissible = admissible or s.rejection[i] == 0
                _update_views(c, s, r, n_replicas, now)
                _measure(c, s, r, n_replicas, i, now)
                in_system += s.in_system_s[0]
        if routed_all:
            break
        if admissible:
            c.request[0] = i
            c.now[0] = now
            c.in_system_s[0] = in_system
            _observe(c, n_replicas, columns.prompt[i], columns.predicted[i])
            return k.DONE, -1, True
        # No replica can admit request i: it goes to replica 0, to be rejected at its arrival.
        c.n_rejected_undecided[0] += 1
        index, replica = i, 0
        c.routed_to[index] = replica
        c.n_routed[0] = index + 1
    # Every request is routed and every replica has finished.
    c.request[0] = -1
    c.mask[:] = 0
    latest = -np.inf
    for r in range(n_replicas):
        latest = max(latest, _replica_state(replicas, r).now[0])
    c.now[0] = latest
    in_system = 0.0
    _clear_counters(c)
    for r in range(n_replicas):
        s = _replica_state(replicas, r)
        _update_views(c, s, r, n_replicas, latest)
        _measure(c, s, r, n_replicas, -1, latest)
        in_system += s.in_system_s[0]
    c.in_system_s[0] = in_system
    _observe(c, n_replicas, 0, 0)
    return k.DONE, -1, False


@njit(cache=True)
def advance_cluster(c_floats, c_ints, c_layout, replicas, tables_all, codec, answers):
    """Run the replicas to the first routing decision (``Cluster.advance``; at ``reset``)."""
    return _routing_loop(c_floats, c_ints, c_layout, replicas, tables_all, codec, answers, -1, -1)


@njit(cache=True)
def route_and_advance(replica, c_floats, c_ints, c_layout, replicas, tables_all, codec, answers):
    """Send the decided request to ``replica``, then run to the next routing decision."""
    request = cluster_view(c_floats, c_ints, c_layout).request[0]
    return _routing_loop(
        c_floats, c_ints, c_layout, replicas, tables_all, codec, answers, replica, request
    )
