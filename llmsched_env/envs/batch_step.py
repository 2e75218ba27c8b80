"""One ``BatchScheduling-v0`` step, compiled: the one home of the env's step arithmetic.

:func:`step_episode` carries out one decision of one episode and advances it to the next:
the remap of a forbidden bin choice, WAIT or the dispatch, the event loop up to the next
decision, the new action mask, the observation's prefix sums over positions a dispatch
reordered, the reward and the new observation. The single env
(:class:`~llmsched_env.envs.batch_env.BatchSchedulingEnv`, through :func:`step_one`) and the
compiled vector env (:mod:`llmsched_env.envs.batch_vector_env`) both call it, so their episodes
agree bit for bit. It needs a latency model with a compiled batch timing; a model timed in
Python (``ExponentialBatchService``) takes the server's Python path instead.

The reward is the change of the reward shape's cumulative objective (:func:`objective`, the
compiled form of :mod:`llmsched_env.envs.rewards`); the caller keeps the objective's previous
value (the single env in its reward object's ``_last``, so both paths stay in step).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmsched_env.envs import batch_observation as bo
from llmsched_env.jit import njit
from llmsched_env.sim import batch_kernels as k
from llmsched_env.sim import batch_rules as rules
from llmsched_env.sim.batch_state import SCHEMA, state_view

#: Codes of the reward shapes in :func:`objective` (by ``reward`` argument).
REWARD_CODES = {"sla": 0, "goodput-tokens": 1, "queue": 2}


def episode_arrays(server: Any, observer: Any) -> tuple[np.ndarray, ...]:
    """The arrays of an episode that the compiled step works on.

    The server's state buffers (:mod:`llmsched_env.sim.batch_state`), the observation's own
    buffers (:data:`~llmsched_env.envs.batch_observation.OBSERVATION_STATE`) and the
    workload's lengths, which a dispatch that reorders positions needs to redo the
    observation's prefix sums.

    Args:
        server: The episode's :class:`~llmsched_env.sim.batch_server.BatchServer`.
        observer: Its :class:`~llmsched_env.envs.batch_observation.BatchObservation`.
    """
    workload = server.workload
    return (
        *server.buffers,
        *observer._buffers,
        workload.predicted_output_tokens.astype(np.int64, copy=False),
        workload.prompt_tokens.astype(np.int64, copy=False),
    )


def episode_buffers(n_requests: int, n_gpus: int, n_bins: int) -> tuple[np.ndarray, ...]:
    """Zeroed arrays that hold any episode of ``n_requests`` requests, for :func:`start_episode`.

    :func:`episode_arrays`' eight (the server's and the observation's buffers, long enough
    whatever number of requests is rejected at arrival; predicted output and prompt tokens),
    then arrival times and output tokens.
    """
    n_floats, n_ints = k.run_buffer_lengths(n_requests, n_gpus, n_bins)
    own_floats, own_ints = bo.buffer_lengths(n_requests, n_bins)
    return (
        np.zeros(n_floats),
        np.zeros(n_ints, dtype=np.int64),
        np.zeros(len(SCHEMA.linear_layout[0]), dtype=np.int64),
        np.zeros(own_floats),
        np.zeros(own_ints, dtype=np.int64),
        np.zeros(len(bo.OBSERVATION_STATE.linear_layout[0]), dtype=np.int64),
        np.zeros(n_requests, dtype=np.int64),
        np.zeros(n_requests, dtype=np.int64),
        np.zeros(n_requests),
        np.zeros(n_requests, dtype=np.int64),
    )


@njit(cache=True)
def bin_of(predicted_tokens, edges):
    """Each request's bin: how many interior edges lie at or below its predicted length.

    ``np.searchsorted(edges, predicted_tokens, side="right")``, compiled, since every episode
    start bins its requests.
    """
    bins = np.empty(predicted_tokens.shape[0], dtype=np.int64)
    for j in range(predicted_tokens.shape[0]):
        bins[j] = rules.bisect_right(edges, float(predicted_tokens[j]), 0, edges.shape[0])
    return bins


@njit(cache=True, inline="always")
def start_episode(
    episode, templates, edges, bounds, mask, obs, reward_code, sla_penalty, time_scale_s
):
    """A new episode in used buffers, up to its first decision: the single env's ``reset``.

    After the env has drawn the episode's requests, its ``reset`` bins them, builds a new
    server and observation, takes the reward's starting objective, advances to the first
    decision, fills the mask and builds the first observation. This does the same in the
    buffers of an earlier episode (:func:`~llmsched_env.sim.batch_kernels.restart`,
    :func:`~llmsched_env.envs.batch_observation.restart`), bit for bit, for the compiled
    vector env, which starts its sub-envs' episodes without returning to Python.

    Args:
        episode: The arrays of :func:`episode_arrays` (the buffers, long enough for the new
            episode, are written over; ``episode[6]`` and ``episode[7]`` hold the requests'
            predicted output and prompt tokens), then the requests' arrival times and output
            tokens.
        templates: ``(server, observation)``: the buffers of a server and an observation of
            the env's configuration, whose parameters the new ones take.
        edges: The bins' interior edges.
        bounds: Observation bounds, ``(2, n_obs)``.
        mask: The per-component action mask (its WAIT and bin entries are written).
        obs: Where the first observation goes.
        reward_code: :data:`REWARD_CODES` of the reward shape.
        sla_penalty: Reward lost per miss (``"sla"``).
        time_scale_s: The deadline, the unit of the ``"queue"`` objective.

    Returns:
        ``(due, objective, now, gpu)``: whether the episode has a decision (else every
        request was rejected at arrival, and ``mask`` and ``obs`` are left alone), the
        reward's starting objective, the time and the deciding GPU.
    """
    floats, ints, layout, own_floats, own_ints, own_layout = episode[:6]
    predicted, prompt, arrival, output = episode[6:10]
    k.restart(floats, ints, layout, templates[0], bin_of(predicted, edges), prompt, output, arrival)
    state = state_view(floats, ints, layout)
    bo.restart(own_floats, own_ints, own_layout, templates[1], state.order, predicted, prompt)
    value = objective(state, reward_code, sla_penalty, time_scale_s)
    due = k._advance(floats, ints, layout)
    if due:
        rules.fill_decision_mask(state, mask)
        bo._build(obs, bounds, own_floats, own_ints, own_layout, floats, ints, layout)
    return due, value, state.now[0], state.decision_gpu[0]


@njit(cache=True)
def objective(state, reward_code, sla_penalty, time_scale_s):
    """The reward shape's cumulative objective (see :mod:`llmsched_env.envs.rewards`)."""
    if reward_code == 0:
        return state.n_on_time[0] - sla_penalty * state.n_late[0]
    if reward_code == 1:
        return state.on_time_tokens[0] / 1000.0
    return -state.in_system_s[0] / time_scale_s


@njit(cache=True, inline="always")
def step_episode(
    choice,
    level,
    episode,
    bounds,
    batch_sizes,
    mask,
    obs,
    reward_code,
    sla_penalty,
    time_scale_s,
    skip_late,
):
    """One decision of one episode: the single env's ``step``, compiled.

    A forbidden bin choice (by ``mask``) is remapped to the queue whose oldest waiting request
    arrived first, as ``invalid_action="remap"`` does (``"raise"`` is checked before the call).
    ``mask`` is then refilled for the next decision and ``obs`` filled with its observation.

    Args:
        choice: Component 0 of the action (0 WAIT, ``j`` bin ``j - 1``), in range.
        level: Component 1 (index into ``batch_sizes``), in range.
        episode: :func:`episode_arrays` of the episode (more arrays may follow them: those of
            :func:`start_episode`).
        bounds: Observation bounds, ``(2, n_obs)``.
        batch_sizes: The size levels.
        mask: The per-component action mask (its WAIT and bin entries are written).
        obs: Where the next observation goes.
        reward_code: :data:`REWARD_CODES` of the reward shape.
        sla_penalty: Reward lost per miss (``"sla"``).
        time_scale_s: The deadline, the unit of the ``"queue"`` objective.
        skip_late: Whether ``dispatch_order="oldest-in-time"``.

    Returns:
        ``(invalid, queue, due, moved, objective, now, gpu)``: whether the choice was
        forbidden, the queue served (-1: WAIT), whether a next decision is due (else the episode
        is over), whether the dispatch reordered positions, the objective, the time and the
        deciding GPU after the step.
    """
    floats, ints, layout, own_floats, own_ints, own_layout, predicted, prompt = episode[:8]
    state = state_view(floats, ints, layout)
    invalid = not mask[choice]
    queue = rules.oldest_queue(state) if invalid else choice - 1
    if queue < 0:
        k._wait(state)
    else:
        k._dispatch(state, queue, batch_sizes[level])
    due = k._advance(floats, ints, layout)
    rules.fill_decision_mask(state, mask)
    moved = skip_late and queue >= 0 and state.moved_hi[0] > state.moved_lo[0]
    if moved:
        own = bo._observation_view(own_floats, own_ints, own_layout)
        bo._prefix_sums(
            own.predicted_cumsum,
            own.need_cumsum,
            state.order,
            predicted,
            prompt,
            state.moved_lo[0],
            state.moved_hi[0],
        )
    value = objective(state, reward_code, sla_penalty, time_scale_s)
    bo._build(obs, bounds, own_floats, own_ints, own_layout, floats, ints, layout)
    return invalid, queue, due, moved, value, state.now[0], state.decision_gpu[0]


@njit(cache=True)
def step_one(
    choice,
    level,
    episode,
    bounds,
    batch_sizes,
    mask,
    obs,
    reward_code,
    sla_penalty,
    time_scale_s,
    skip_late,
):
    """:func:`step_episode` for the single env, with what its ``info`` needs.

    Returns:
        ``(invalid, queue, due, moved, objective, now, gpu, n_finished_before)``: those of
        :func:`step_episode`, then the count of finished batches before the step (the batches
        finished during it follow it in the state's ``finished`` list).
    """
    n_finished = state_view(episode[0], episode[1], episode[2]).n_finished[0]
    invalid, queue, due, moved, value, now, gpu = step_episode(
        choice,
        level,
        episode,
        bounds,
        batch_sizes,
        mask,
        obs,
        reward_code,
        sla_penalty,
        time_scale_s,
        skip_late,
    )
    return invalid, queue, due, moved, value, now, gpu, n_finished
