"""One ``ContinuousBatching-v0`` step, compiled (KV memory reserved or paged, prefix caching too).

:func:`step_compiled` carries out one decision of an episode served by
:class:`~llmsched_env.sim.compiled_iteration_server.CompiledIterationServer` and advances it to
the next: the action's check against the decision's mask answers, the remap of a forbidden
action, WAIT or the iteration (timed by the latency model's compiled timing), the event
loop, the reward's objective, the next decision's mask answers and its observation.
:func:`observe` does the last two alone (at ``reset``). They apply the rules of
:class:`~llmsched_env.envs.iteration_env.ContinuousBatchingEnv`'s Python path
(``_carry_out``, ``_compute_mask``, :class:`~llmsched_env.envs.iteration_observation
.IterationObservation`, :mod:`llmsched_env.envs.rewards`) with the same arithmetic in the same
order, so that both paths give the same episode bit for bit; the tests play them side by side.

The arrays the step reads besides the server's state:

* ``codec`` (int64): ``[D, P, C, uncapped level, max_tokens, caps (C), level budgets (P)]``,
  the action's levels (:class:`~llmsched_env.envs.continuous_action.ContinuousActionCodec`).
* ``answers`` (int64, ``3 + P - 1``): the decision's mask answers (running sequences, WAIT
  safe, a cap of 0 possible, each prefill level above 0 allowed), read to check the action and
  rewritten for the next decision.
* ``rates`` (float64, :data:`N_RATES`): the observation's moving miss rates and what they last
  saw.
* ``obs_params`` (float64): ``[ttft_sla_s, tbt_sla_s, length_scale_tokens, capacity_rps]``.
"""

from __future__ import annotations

import math

import numpy as np

from llmsched_env.envs.continuous_action import ContinuousActionCodec
from llmsched_env.jit import implementation, njit
from llmsched_env.sim import iteration_kernels as k
from llmsched_env.sim.batch_rules import bisect_right
from llmsched_env.sim.iteration_state import state_view

#: Entries of ``rates``: the moving sums of TTFT misses, TBT misses and finished requests; the
#: counts and time they last saw; the two moving rates.
N_RATES = 9
_E_TTFT, _E_TBT, _E_DONE, _SEEN_TTFT, _SEEN_TBT, _SEEN_DONE, _SEEN_S, _TTFT_RATE, _TBT_RATE = range(
    N_RATES
)

#: The step's refusal: a forbidden action under ``invalid_action="raise"`` (nothing was done).
FORBIDDEN = -1


def codec_array(codec: ContinuousActionCodec) -> np.ndarray:
    """The ``codec`` array of a :class:`ContinuousActionCodec` (see the module docstring)."""
    d, p, c = codec.nvec
    return np.array(
        [d, p, c, codec.uncapped, codec.max_tokens, *codec.prompt_caps, *codec.level_budgets],
        dtype=np.int64,
    )


@njit(cache=True, inline="always")
def _continue_only(floats, ints, layout, state, gpu, budget):
    """Whether a prefill-only iteration that admits nothing runs.

    A started prompt's chunk fits (and, paged, gets its blocks without preempting its own
    prompt).
    """
    return state.n_prefilling[gpu] > 0 and k.prefill_progresses(floats, ints, layout, gpu, budget)


@njit(cache=True, inline="always")
def _allowed(floats, ints, layout, state, gpu, decode, prefill, cap, codec, answers):
    """Whether ``[decode, prefill, cap]`` is allowed (``ContinuousBatchingEnv._allowed``)."""
    if decode == 0 and prefill == 0:
        return answers[1] != 0
    if decode > 0:
        return answers[0] != 0 and (prefill == 0 or answers[2 + prefill] != 0)
    n_caps = codec[2]
    budget = codec[5 + n_caps + prefill]
    if codec[5 + cap] == 0:
        return _continue_only(floats, ints, layout, state, gpu, budget)
    if state.paged[0]:
        return k.prefill_allowed(floats, ints, layout, gpu, budget, False)
    return answers[2 + prefill] != 0


@njit(cache=True, inline="always")
def _fallback_prefill(floats, ints, layout, state, gpu, codec):
    """The prefill level of the remap of a forbidden action (``ContinuousBatchingEnv._fallback``).

    The whole budget when there is prefill work; paged, the largest level that forms an
    iteration (beside the decodes if sequences run, else alone).
    """
    n_levels = codec[1]
    if state.paged[0]:
        alongside = state.n_running[gpu] > 0
        n_caps = codec[2]
        for level in range(n_levels - 1, 0, -1):
            if k.prefill_allowed(floats, ints, layout, gpu, codec[5 + n_caps + level], alongside):
                return level
        return 0
    can_prefill = state.n_prefilling[gpu] > 0 or k._can_admit(state, gpu)
    return n_levels - 1 if can_prefill else 0


@njit(cache=True, inline="always")
def carry_out(floats, ints, layout, state, gpu, invalid, decode, prefill, cap, tables, codec):
    """Make ``gpu``'s decision ``[decode, prefill, cap]`` (``ContinuousBatchingEnv._carry_out``).

    A forbidden action (``invalid``) is first replaced by the env's fallback; then WAIT, or the
    iteration the levels give (``ContinuousActionCodec.decode``), timed by ``tables``.

    Returns:
        ``(code, decode, prefill, cap)``: a refusal code of
        :mod:`~llmsched_env.sim.iteration_kernels` (0: done) and the action carried out.
    """
    if invalid:
        decode = codec[0] - 1 if state.n_running[gpu] > 0 else 0
        prefill = _fallback_prefill(floats, ints, layout, state, gpu, codec)
        cap = codec[3]
    if decode == 0 and prefill == 0:
        return k._wait(state), decode, prefill, cap
    running = state.n_running[gpu]
    steps = codec[0] - 1
    count = (decode * running + steps - 1) // steps
    max_tokens = codec[4]
    left = max_tokens - min(count, max_tokens)
    prefill_steps = codec[1] - 1
    budget = (prefill * left) // prefill_steps
    rest = (prefill * left) % prefill_steps
    if 2 * rest > prefill_steps or (2 * rest == prefill_steps and budget % 2):
        budget += 1
    code, _ = k.run_timed_iteration(floats, ints, layout, count, budget, codec[5 + cap], tables)
    return code, decode, prefill, cap


@njit(cache=True, inline="always")
def objective(state, reward_code, sla_penalty, time_scale_s):
    """The reward shape's cumulative objective (see :mod:`llmsched_env.envs.rewards`)."""
    if reward_code == 0:
        misses = state.n_ttft_misses[0] + state.n_tbt_misses[0]
        return state.n_on_time[0] - sla_penalty * misses
    if reward_code == 1:
        return state.on_time_tokens[0] / 1000.0
    return -state.in_system_s[0] / time_scale_s


@njit(cache=True)
def _fill_answers(floats, ints, layout, codec, answers):
    """The deciding GPU's mask answers (``ContinuousBatchingEnv._compute_mask``); 0s if none."""
    state = state_view(floats, ints, layout)
    gpu = state.decision_gpu[0]
    if gpu < 0:
        answers[:] = 0
        return
    n_levels = codec[1]
    n_caps = codec[2]
    running = state.n_running[gpu] > 0
    can_wait = k._can_wait(state)
    zero_ok = can_wait or running
    if not zero_ok:
        admits_none = False
        for c in range(n_caps):
            if codec[5 + c] == 0:
                admits_none = True
        if admits_none:
            for level in range(1, n_levels):
                if _continue_only(floats, ints, layout, state, gpu, codec[5 + n_caps + level]):
                    zero_ok = True
                    break
    answers[0] = 1 if running else 0
    answers[1] = 1 if can_wait else 0
    answers[2] = 1 if zero_ok else 0
    for level in range(1, n_levels):
        allowed = k.prefill_allowed(floats, ints, layout, gpu, codec[5 + n_caps + level], True)
        answers[2 + level] = 1 if allowed else 0


@njit(cache=True, inline="always")
def _update_rates(state, rates, ttft_sla_s):
    """Fold the misses and completions since the last call into the moving rates."""
    now = state.now[0]
    decay = math.exp(-(now - rates[_SEEN_S]) / ttft_sla_s)
    ttft = state.n_ttft_misses[0]
    tbt = state.n_tbt_misses[0]
    done = state.n_completed[0] + state.n_rejected[0]
    rates[_E_TTFT] = rates[_E_TTFT] * decay + (ttft - rates[_SEEN_TTFT])
    rates[_E_TBT] = rates[_E_TBT] * decay + (tbt - rates[_SEEN_TBT])
    rates[_E_DONE] = rates[_E_DONE] * decay + (done - rates[_SEEN_DONE])
    rates[_SEEN_TTFT] = ttft
    rates[_SEEN_TBT] = tbt
    rates[_SEEN_DONE] = done
    rates[_SEEN_S] = now
    e_done = rates[_E_DONE]
    rates[_TTFT_RATE] = min(rates[_E_TTFT] / e_done, 1.0) if e_done > 0 else 0.0
    rates[_TBT_RATE] = min(rates[_E_TBT] / e_done, 1.0) if e_done > 0 else 0.0


@njit(cache=True)
def _build(floats, ints, layout, rates, obs_params, bounds, obs):
    """The observation of the current decision (``IterationObservation.build``), clipped."""
    state = state_view(floats, ints, layout)
    ttft_sla_s = obs_params[0]
    tbt_sla_s = obs_params[1]
    length_scale = obs_params[2]
    capacity_rps = obs_params[3]
    now = state.now[0]
    gpu = max(state.decision_gpu[0], 0)
    head = state.queue_head[0]
    tail = state.queue_tail[0]
    n_requeued = state.n_requeued[0]
    n_waiting = tail - head + n_requeued
    arrival = state.arrival_s
    if n_waiting:
        # The earliest arrived: the queue's head, or (paged) the earliest of the requeued ones,
        # which all arrived before every request never admitted.
        oldest = state.queue_order[head] if head < tail else -1
        if n_requeued:
            oldest = state.requeue[0]
            for j in range(1, n_requeued):
                if state.requeue[j] < oldest:
                    oldest = state.requeue[j]
        oldest_wait = now - arrival[oldest]
        head_prompt = state.target[k._waiting_head(state)]
    else:
        oldest_wait = 0.0
        head_prompt = 0
    n_arrived = state.n_arrived[0]
    recent = n_arrived - bisect_right(arrival, now - ttft_sla_s, 0, n_arrived)
    base = gpu * state.slots_per_gpu[0]
    n_running = state.n_running[gpu]
    prefill_remaining = 0
    for j in range(state.n_prefilling[gpu]):
        index = state.prefilling_id[base + j]
        prefill_remaining += state.target[index] - state.prefilled[index]
    if n_running:
        generated = state.running_context[gpu] - state.running_prompt[gpu]
        mean_generated = generated / n_running
        remaining = max(state.running_predicted[gpu] - generated, 0) / n_running
        oldest = state.run_last_token_s[base]
        for j in range(1, n_running):
            if state.run_last_token_s[base + j] < oldest:
                oldest = state.run_last_token_s[base + j]
        oldest_gap = now - oldest
    else:
        mean_generated = remaining = oldest_gap = 0.0
    kv = state.kv_capacity[0]
    max_sequences = state.max_sequences[0]
    max_tokens = state.max_tokens[0]
    obs[0] = n_waiting / max_sequences
    queued_tokens = state.queue_prompt_cumsum[tail] - state.queue_prompt_cumsum[head]
    obs[1] = (queued_tokens + state.requeued_tokens[0]) / max_tokens
    obs[2] = oldest_wait / ttft_sla_s
    obs[3] = head_prompt / max_tokens
    obs[4] = recent / ttft_sla_s / capacity_rps
    obs[5] = rates[_TTFT_RATE]
    obs[6] = rates[_TBT_RATE]
    obs[7] = n_arrived / state.arrival_s.shape[0]
    obs[8] = n_running / max_sequences
    obs[9] = prefill_remaining / max_tokens
    obs[10] = mean_generated / length_scale
    obs[11] = remaining / length_scale
    obs[12] = oldest_gap / tbt_sla_s
    obs[13] = state.kv_used[gpu] / kv
    obs[14] = state.kv_reserved[gpu] / kv
    obs[15] = state.last_iteration_s[gpu] / tbt_sla_s
    for g in range(state.gpu_busy.shape[0]):
        busy = (state.gpu_free_at[g] - now) / tbt_sla_s if state.gpu_busy[g] else 0.0
        obs[16 + g] = busy
    low = bounds[0]
    high = bounds[1]
    for i in range(obs.shape[0]):
        obs[i] = max(min(obs[i], high[i]), low[i])
    return prefill_remaining


@njit(cache=True)
def observe(floats, ints, layout, codec, answers, rates, obs_params, bounds, obs):
    """The current decision's mask answers and observation (the rates updated first).

    Returns:
        The deciding GPU's tokens still to prefill of its started prompts.
    """
    _fill_answers(floats, ints, layout, codec, answers)
    _update_rates(state_view(floats, ints, layout), rates, obs_params[0])
    return _build(floats, ints, layout, rates, obs_params, bounds, obs)


@njit(cache=True)
def step_compiled(
    decode,
    prefill,
    cap,
    raise_forbidden,
    floats,
    ints,
    layout,
    tables,
    codec,
    answers,
    rates,
    obs_params,
    bounds,
    obs,
    reward_code,
    sla_penalty,
    time_scale_s,
):
    """One decision of an episode: the env's ``step`` up to its ``info`` and truncation.

    Args:
        decode: Component 0 of the action, in range.
        prefill: Component 1, in range.
        cap: Component 2, in range.
        raise_forbidden: Whether a forbidden action is refused (``invalid_action="raise"``)
            instead of remapped.
        floats: The server's float buffer.
        ints: The server's int buffer.
        layout: The server's layout.
        tables: The latency model's compiled tables (its ``CompiledTiming.tables``).
        codec: See the module docstring.
        answers: See the module docstring.
        rates: See the module docstring.
        obs_params: See the module docstring.
        bounds: Observation bounds, ``(2, n_obs)`` float32.
        obs: Where the next observation goes (float32).
        reward_code: ``REWARD_CODES`` of the reward shape (as ``BatchScheduling-v0``'s).
        sla_penalty: Reward lost per miss (``"sla"``).
        time_scale_s: The TTFT target, the unit of the ``"queue"`` objective.

    Returns:
        ``(code, invalid, decode, prefill, cap, due, objective, prefill_remaining)``: 0, or
        :data:`FORBIDDEN` (nothing was done), or a refusal code of
        :mod:`~llmsched_env.sim.iteration_kernels`; whether the action was forbidden; the
        action carried out; whether a next decision is due; the reward's objective; the next
        deciding GPU's tokens still to prefill.
    """
    state = state_view(floats, ints, layout)
    gpu = state.decision_gpu[0]
    invalid = not _allowed(floats, ints, layout, state, gpu, decode, prefill, cap, codec, answers)
    if invalid and raise_forbidden:
        return FORBIDDEN, True, decode, prefill, cap, True, 0.0, 0
    code, decode, prefill, cap = carry_out(
        floats, ints, layout, state, gpu, invalid, decode, prefill, cap, tables, codec
    )
    if code != k.DONE:
        return code, invalid, decode, prefill, cap, True, 0.0, 0
    due = k.advance(floats, ints, layout)
    value = objective(state, reward_code, sla_penalty, time_scale_s)
    _fill_answers(floats, ints, layout, codec, answers)
    _update_rates(state, rates, obs_params[0])
    remaining = _build(floats, ints, layout, rates, obs_params, bounds, obs)
    return 0, invalid, decode, prefill, cap, due, value, remaining


class CompiledSteps:
    """The arrays and kernels of one episode's compiled steps (see the module docstring).

    Args:
        server: The episode's server; its latency model must have a compiled timing
            (``server.timing``).
        codec: The env's action codec as :func:`codec_array` gives it.
        obs_params: ``[ttft_sla_s, tbt_sla_s, length_scale_tokens, capacity_rps]``.
        bounds: Observation bounds, ``(2, n_obs)`` float32 (read-only).
        reward_code: ``REWARD_CODES`` of the reward shape (as ``BatchScheduling-v0``'s).
        sla_penalty: Reward lost per miss.
        time_scale_s: The unit of the ``"queue"`` objective.
        raise_forbidden: Whether a forbidden action is refused instead of remapped.

    Attributes:
        answers: The current decision's mask answers (int64; see the module docstring).
        rates: The observation's moving rates (see :data:`N_RATES`).
    """

    def __init__(
        self,
        server: object,
        codec: np.ndarray,
        obs_params: np.ndarray,
        bounds: np.ndarray,
        reward_code: int,
        sla_penalty: float,
        time_scale_s: float,
        raise_forbidden: bool,
    ) -> None:
        self.server = server
        self.codec = codec
        self.obs_params = obs_params
        self.bounds = bounds
        self.reward_code = int(reward_code)
        self.sla_penalty = float(sla_penalty)
        self.time_scale_s = float(time_scale_s)
        self.raise_forbidden = bool(raise_forbidden)
        self.answers = np.zeros(3 + int(codec[1]) - 1, dtype=np.int64)
        self.rates = np.zeros(N_RATES)
        self._look_up()

    def _look_up(self) -> None:
        """The kernels' implementations for this episode's arrays (no dispatcher per call)."""
        obs = np.zeros(self.bounds.shape[1], dtype=np.float32)
        arrays = (self.codec, self.answers, self.rates, self.obs_params, self.bounds, obs)
        buffers = self.server.buffers
        tables = self.server.timing.tables
        self._step = implementation(
            step_compiled, 0, 0, 0, False, *buffers, tables, *arrays, 0, 0.0, 0.0
        )
        self._observe = implementation(observe, *buffers, *arrays)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        del state["_step"], state["_observe"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        # Copies come back writable; read-only again, they take the kernels compiled already.
        self.bounds.flags.writeable = False
        self._look_up()

    def step(self, decode: int, prefill: int, cap: int) -> tuple:
        """:func:`step_compiled` of the action, with a new observation array last."""
        obs = np.empty(self.bounds.shape[1], dtype=np.float32)
        server = self.server
        result = self._step(
            decode,
            prefill,
            cap,
            self.raise_forbidden,
            *server.buffers,
            server.timing.tables,
            self.codec,
            self.answers,
            self.rates,
            self.obs_params,
            self.bounds,
            obs,
            self.reward_code,
            self.sla_penalty,
            self.time_scale_s,
        )
        return (*result, obs)

    def observe(self) -> tuple[np.ndarray, int]:
        """The current decision's observation and its GPU's tokens still to prefill.

        The rates are updated and the mask answers refilled first.
        """
        obs = np.empty(self.bounds.shape[1], dtype=np.float32)
        remaining = self._observe(
            *self.server.buffers,
            self.codec,
            self.answers,
            self.rates,
            self.obs_params,
            self.bounds,
            obs,
        )
        return obs, int(remaining)
