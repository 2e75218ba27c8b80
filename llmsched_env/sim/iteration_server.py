"""Iteration-level server: G GPUs with continuous batching, prefill and decode per iteration.

Each GPU repeatedly forms an *iteration*: some prefill work (whole prompts, or chunks of them
when chunked prefill is on) and one new token for some of its running sequences. A decision is
due when a GPU is free and has something it could do: running sequences to decode, a prompt it
has started prefilling, or a waiting prompt it can admit.

Model, per GPU:

* Waiting prompts sit in one global FIFO queue. A GPU admits prompts from its head (first come,
  first served; the head blocks the queue when it does not fit) when it forms an iteration.
  Admission reserves the request's whole KV footprint (prompt plus output tokens) on that GPU, as
  engines that reserve ``max_new_tokens`` do, so memory never overflows and nothing is preempted.
  The KV memory *used* grows with every generated token and is what observations report.
* An iteration takes at most ``max_tokens`` tokens: one per decoded sequence plus the prefill
  tokens. Without chunked prefill a prompt is prefilled whole in one iteration, so a prompt longer
  than ``max_tokens`` could never run and is rejected at arrival
  (:attr:`RejectReason.PROMPT_EXCEEDS_TOKEN_BUDGET`). With ``chunk_size`` set, a prompt is
  prefilled over several iterations, at most ``chunk_size`` tokens per iteration, and a
  started prompt continues before new prompts are admitted.
* At most ``max_sequences`` requests (prefilling or decoding) are on a GPU at once.
* The iteration that completes a prompt's prefill emits its first output token (TTFT is measured
  at the end of that iteration); every decode step emits one more token. A request completes
  with its last token and frees its KV memory.
* The iteration's duration comes from the iteration latency model, charged on the iteration's
  total work (a mixed prefill + decode iteration costs the model's time for the sum).

SLA accounting (when targets are given): a request is on time when its first token came within
``ttft_deadline_s`` of its arrival and no gap between two of its consecutive tokens exceeded
``tbt_target_s``. A TTFT miss is counted at the moment the deadline passes without a first token
(a rejected request counts as a TTFT miss at its rejection); a TBT miss is counted once per
request, when the token that ends the first too-long gap is produced.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from llmsched_env.latency import IterationLatencyModel
from llmsched_env.sim.engine import Engine
from llmsched_env.sim.records import RejectReason, RequestRecords
from llmsched_env.workload import Workload

_EMPTY = np.zeros(0, dtype=np.int64)

#: Fields of a GPU's running-sequence state: one row per field, one column per running
#: sequence in ``running`` order (rows are contiguous, so a decode step's updates are fast).
#: Counts are held as floats, exactly (they stay far below 2**53).
_N_FIELDS = 6
_GENERATED, _LAST_TOKEN_S, _MAX_GAP_S, _TBT_MISSED, _OUTPUT, _PROMPT = range(_N_FIELDS)


@njit(cache=True)
def _decode_tokens(state, k, t, tbt_target_s):
    """Give running sequences ``0 .. k - 1`` (columns of ``state``) a token at time ``t``.

    Updates their token counts, last-token times, longest gaps and TBT flags (a gap above
    ``tbt_target_s`` marks a miss; ``nan`` means no target). Compiled, because every decode
    iteration runs it; it does per sequence the arithmetic numpy would do on the columns.

    Returns:
        ``(new_tbt_misses, n_done)``: sequences whose first TBT miss this is, and sequences that
        have now generated all their output tokens.
    """
    new_misses = 0
    n_done = 0
    for j in range(k):
        state[_GENERATED, j] += 1.0
        gap = t - state[_LAST_TOKEN_S, j]
        if gap > state[_MAX_GAP_S, j]:
            state[_MAX_GAP_S, j] = gap
        state[_LAST_TOKEN_S, j] = t
        if gap > tbt_target_s:
            if state[_TBT_MISSED, j] == 0.0:
                new_misses += 1
            state[_TBT_MISSED, j] = 1.0
        if state[_GENERATED, j] >= state[_OUTPUT, j]:
            n_done += 1
    return new_misses, n_done


@njit(cache=True)
def _context_tokens(state, k):
    """Prompt plus generated tokens of running sequences ``0 .. k - 1`` (whole numbers, exact)."""
    total = 0.0
    for j in range(k):
        total += state[_PROMPT, j] + state[_GENERATED, j]
    return int(total)


@njit(cache=True)
def _oldest_token_s(state):
    """The smallest last-token time of the running sequences in ``state`` (at least one)."""
    oldest = state[_LAST_TOKEN_S, 0]
    for j in range(1, state.shape[1]):
        if state[_LAST_TOKEN_S, j] < oldest:
            oldest = state[_LAST_TOKEN_S, j]
    return oldest


class IterationServer(Engine):
    """Continuous-batching server that stops whenever a GPU forms an iteration.

    Args:
        workload: Requests sorted by arrival.
        n_gpus: Number of identical GPUs (engine replicas sharing one waiting queue).
        latency: Iteration latency model.
        kv_capacity_tokens: KV-cache tokens one GPU holds.
        max_tokens: Token budget of one iteration (prefill tokens plus decoded sequences).
        max_sequences: Most requests on one GPU at once.
        chunk_size: Most prefill tokens of one prompt per iteration; ``None`` turns chunked
            prefill off (prompts are prefilled whole).
        rng: Source of randomness for stochastic iteration times.
        ttft_deadline_s: Time-to-first-token target; enables on-time/miss accounting.
        tbt_target_s: Time-between-tokens target (largest allowed gap between two consecutive
            output tokens of a request).

    Attributes:
        running: Per GPU, the decoding requests in admission order.
        prefilling: Per GPU, the admitted requests whose prefill is not finished, in order.
        n_on_time: Requests completed meeting both targets so far.
        n_ttft_misses: TTFT deadlines that passed without a first token (plus rejections).
        n_tbt_misses: Requests that breached the TBT target.
        n_iterations: Iterations run so far.
        last_iteration_s: Duration of each GPU's latest iteration.
    """

    def __init__(
        self,
        workload: Workload,
        *,
        n_gpus: int,
        latency: IterationLatencyModel,
        kv_capacity_tokens: int,
        max_tokens: int,
        max_sequences: int,
        rng: np.random.Generator,
        chunk_size: int | None = None,
        ttft_deadline_s: float | None = None,
        tbt_target_s: float | None = None,
    ) -> None:
        super().__init__(workload, n_gpus, rng)
        for name, value in (
            ("kv_capacity_tokens", kv_capacity_tokens),
            ("max_tokens", max_tokens),
            ("max_sequences", max_sequences),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size!r}")
        for name, value in (("ttft_deadline_s", ttft_deadline_s), ("tbt_target_s", tbt_target_s)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        self.latency = latency
        self.kv_capacity_tokens = int(kv_capacity_tokens)
        self.max_tokens = int(max_tokens)
        self.max_sequences = int(max_sequences)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.ttft_deadline_s = ttft_deadline_s
        self.tbt_target_s = tbt_target_s
        self._tbt_target_or_nan = math.nan if tbt_target_s is None else float(tbt_target_s)

        prompt = workload.prompt_tokens
        self.kv_need = prompt + workload.output_tokens
        reason = np.full(len(workload), RejectReason.NONE, dtype=np.int8)
        if self.chunk_size is None:
            reason[prompt > self.max_tokens] = RejectReason.PROMPT_EXCEEDS_TOKEN_BUDGET
        reason[self.kv_need > self.kv_capacity_tokens] = RejectReason.EXCEEDS_KV_CAPACITY
        self._reject_reason = reason
        self._admissible = (reason == RejectReason.NONE).tolist()
        #: Index of each request's times for the deadline scan (-1: rejected, never scanned).
        self._deadline_slot = np.where(
            reason == RejectReason.NONE, np.arange(len(workload)), -1
        ).tolist()
        #: Admissible request indices in arrival order: the global waiting queue is
        #: ``queue_order[queue_head:queue_tail]``.
        self.queue_order = np.flatnonzero(reason == RejectReason.NONE)
        self._queue_list = self.queue_order.tolist()
        self._queue_prompt_cumsum = [0, *np.cumsum(prompt[self.queue_order]).tolist()]
        self.queue_head = 0
        self.queue_tail = 0
        self._prompt = prompt.tolist()
        self._output = workload.output_tokens.tolist()
        self._kv_need = self.kv_need.tolist()
        self._prefilled = [0] * len(workload)
        self._ttft_deadline = (
            (workload.arrival_s + ttft_deadline_s).tolist() if ttft_deadline_s else None
        )

        g = self.n_gpus
        self.running: list[np.ndarray] = [_EMPTY] * g
        # Per GPU, the state of its running sequences, column i for running[gpu][i]. A decode
        # step serves a prefix of ``running``, so it updates this state with slices, not
        # gathers; :attr:`records` reads the tokens and gaps of running sequences from here.
        self._run_state: list[np.ndarray] = [np.zeros((_N_FIELDS, 0))] * g
        self.prefilling: list[list[int]] = [[] for _ in range(g)]
        self.kv_reserved = [0] * g
        self.kv_used = [0] * g
        self._running_context = [0] * g
        #: Per GPU, sums over the running sequences of prompt and predicted output tokens.
        self.running_prompt_tokens = [0] * g
        self.running_predicted_tokens = [0] * g
        self._predicted = workload.predicted_output_tokens.tolist()
        self.n_sequences = [0] * g
        self.last_iteration_s = [0.0] * g
        self._pending: list[tuple[list[tuple[int, int]], np.ndarray] | None] = [None] * g
        self.n_on_time = 0
        self.on_time_output_tokens = 0
        self.n_ttft_misses = 0
        self.n_tbt_misses = 0
        self.n_iterations = 0
        self.sequences_processed = 0
        self.prefill_tokens_processed = 0
        self.decode_tokens_processed = 0

    # ------------------------------------------------------------------ what a GPU can do
    @property
    def n_waiting(self) -> int:
        """Prompts waiting in the global queue (not yet admitted by any GPU)."""
        return self.queue_tail - self.queue_head

    def waiting_prompt_tokens(self) -> int:
        """Prompt tokens of the prompts in the global queue."""
        c = self._queue_prompt_cumsum
        return c[self.queue_tail] - c[self.queue_head]

    def waiting_head(self) -> int:
        """Index of the oldest waiting prompt, -1 if none waits."""
        return self._queue_list[self.queue_head] if self.queue_head < self.queue_tail else -1

    def waiting_ids(self) -> np.ndarray:
        """Indices of the waiting prompts, oldest first (a read-only view)."""
        view = self.queue_order[self.queue_head : self.queue_tail]
        view.flags.writeable = False
        return view

    def can_admit(self, gpu: int) -> bool:
        """Whether ``gpu`` could admit the prompt at the head of the waiting queue now."""
        if self.queue_head == self.queue_tail or self.n_sequences[gpu] >= self.max_sequences:
            return False
        head = self._queue_list[self.queue_head]
        return self.kv_reserved[gpu] + self._kv_need[head] <= self.kv_capacity_tokens

    def can_prefill(self, gpu: int) -> bool:
        """Whether ``gpu`` has prefill work: a started prompt or an admissible waiting one."""
        return bool(self.prefilling[gpu]) or self.can_admit(gpu)

    # ------------------------------------------------------------------ the decision
    def run_iteration(
        self, decode_count: int, prefill_budget_tokens: int, max_new_prompts: int
    ) -> bool:
        """Form and start the deciding GPU's next iteration.

        Args:
            decode_count: How many running sequences get one token, oldest admitted first
                (capped by the number running and by the token budget).
            prefill_budget_tokens: Most prefill tokens in this iteration (capped by what the
                decode tokens leave of ``max_tokens``). Started prompts continue first; then
                prompts are admitted from the head of the waiting queue.
            max_new_prompts: Most prompts admitted from the waiting queue in this iteration.

        Returns:
            ``True`` if an iteration started; ``False`` if it would have been empty, in which
            case nothing changed and the decision is still due.

        Raises:
            RuntimeError: If no decision is due.
        """
        gpu = self._require_decision()
        running = self.running[gpu]
        k = min(decode_count, running.size, self.max_tokens)
        decode_ids = running[:k] if k > 0 else _EMPTY
        budget = min(prefill_budget_tokens, self.max_tokens - k)
        plan: list[tuple[int, int]] = []
        prefill_tokens = 0
        if budget > 0:
            prefill_tokens = self._plan_prefill(gpu, budget, max_new_prompts, plan)
        if k == 0 and not plan:
            return False
        if k == running.size:
            context = self._running_context[gpu]
        else:
            state = self._run_state[gpu]
            context = _context_tokens(state, k)
        duration = self.latency.iteration_s(prefill_tokens, k, context, self.rng)
        self._pending[gpu] = (plan, decode_ids)
        self.last_iteration_s[gpu] = duration
        self.n_iterations += 1
        self.sequences_processed += k + len(plan)
        self.prefill_tokens_processed += prefill_tokens
        self.decode_tokens_processed += k
        self._start_work(gpu, duration)
        return True

    def _plan_prefill(
        self, gpu: int, budget: int, max_new_prompts: int, plan: list[tuple[int, int]]
    ) -> int:
        """Fill ``plan`` with (request, prefill tokens) within ``budget``; return the tokens."""
        chunk = self.chunk_size
        prompt = self._prompt
        prefilled = self._prefilled
        used = 0
        for index in self.prefilling[gpu]:
            remaining = prompt[index] - prefilled[index]
            take = min(remaining, budget - used, chunk or remaining)
            if take <= 0:
                return used
            plan.append((index, take))
            used += take
        admitted = 0
        records = self._records
        queue = self._queue_list
        while used < budget and admitted < max_new_prompts and self.can_admit(gpu):
            index = queue[self.queue_head]
            p = prompt[index]
            take = p if chunk is None else min(p, chunk, budget - used)
            if take > budget - used:
                break  # whole prompts only: the head does not fit, and the queue is FIFO
            self.queue_head += 1
            admitted += 1
            self.prefilling[gpu].append(index)
            self.kv_reserved[gpu] += self._kv_need[index]
            self.n_sequences[gpu] += 1
            records.start_s[index] = self.now
            records.gpu[index] = gpu
            plan.append((index, take))
            used += take
        return used

    # ------------------------------------------------------------------ engine hooks
    def _find_decision_gpu(self) -> int:
        busy = self.gpu_busy
        deferred = self._deferred
        for gpu in range(self.n_gpus):
            if busy[gpu] or gpu in deferred:
                continue
            if self.running[gpu].size or self.prefilling[gpu] or self.can_admit(gpu):
                return gpu
        return -1

    def _on_arrival(self, index: int) -> None:
        if self._admissible[index]:
            self.queue_tail += 1
            return
        self._records.reject_reason[index] = self._reject_reason[index]
        self.n_rejected += 1
        if self._ttft_deadline is not None:
            self.n_ttft_misses += 1

    def _on_work_done(self, gpu: int) -> None:
        pending = self._pending[gpu]
        self._pending[gpu] = None
        if pending is None:
            return
        plan, decode_ids = pending
        t = self.now
        records = self._records
        newly_running: list[int] = []
        if plan:
            prompt = self._prompt
            prefilled = self._prefilled
            finished_prefill = False
            for index, take in plan:
                prefilled[index] += take
                self.kv_used[gpu] += take
                if prefilled[index] == prompt[index]:
                    finished_prefill = True
                    records.first_token_s[index] = t
                    records.tokens_generated[index] = 1
                    self.kv_used[gpu] += 1
                    if self._output[index] == 1:
                        self._complete_one(gpu, index, 1, False)
                    else:
                        newly_running.append(index)
                        self._running_context[gpu] += prompt[index] + 1
                        self.running_prompt_tokens[gpu] += prompt[index]
                        self.running_predicted_tokens[gpu] += self._predicted[index]
            if finished_prefill:
                self.prefilling[gpu] = [i for i in self.prefilling[gpu] if prefilled[i] < prompt[i]]
        running = self.running[gpu]
        state = self._run_state[gpu]
        if decode_ids.size:
            k = decode_ids.size
            new_misses, n_done = _decode_tokens(state, k, t, self._tbt_target_or_nan)
            self.n_tbt_misses += new_misses
            self.kv_used[gpu] += k
            self._running_context[gpu] += k
            if n_done:
                decoded = state[:, :k]
                generated = decoded[_GENERATED]
                max_gap = decoded[_MAX_GAP_S]
                done = generated >= decoded[_OUTPUT]
                for row in done.nonzero()[0].tolist():
                    index = int(decode_ids[row])
                    n_generated = int(generated[row])
                    records.tokens_generated[index] = n_generated
                    records.max_token_gap_s[index] = max_gap[row]
                    self._complete_one(gpu, index, n_generated, bool(decoded[_TBT_MISSED, row]))
                    self._running_context[gpu] -= self._prompt[index] + self._output[index]
                    self.running_prompt_tokens[gpu] -= self._prompt[index]
                    self.running_predicted_tokens[gpu] -= self._predicted[index]
                keep = ~done
                # (compress keeps the state C-ordered, so that its rows stay contiguous)
                kept = np.compress(keep, decoded, axis=1)
                if k == running.size:
                    running, state = decode_ids[keep], kept
                else:
                    running = np.concatenate([decode_ids[keep], running[k:]])
                    state = np.concatenate([kept, state[:, k:]], axis=1)
        if newly_running:
            # Rows in _GENERATED .. _PROMPT order: one token, its time, no gap, no TBT miss.
            n_new = len(newly_running)
            new_state = np.array(
                [
                    [1.0] * n_new,
                    [t] * n_new,
                    [0.0] * n_new,
                    [0.0] * n_new,
                    [self._output[i] for i in newly_running],
                    [self._prompt[i] for i in newly_running],
                ]
            )
            running = np.concatenate([running, np.array(newly_running, dtype=np.int64)])
            state = np.concatenate([state, new_state], axis=1)
        self.running[gpu] = running
        self._run_state[gpu] = state

    def _complete_one(self, gpu: int, index: int, generated: int, tbt_missed: bool) -> None:
        records = self._records
        t = self.now
        records.completed[index] = True
        records.completion_s[index] = t
        self.n_completed += 1
        self.n_sequences[gpu] -= 1
        self.kv_reserved[gpu] -= self._kv_need[index]
        self.kv_used[gpu] -= self._prompt[index] + generated
        ttft_met = self._ttft_deadline is None or (
            records.first_token_s[index] <= self._ttft_deadline[index]
        )
        if ttft_met and not tbt_missed:
            self.n_on_time += 1
            self.on_time_output_tokens += self._output[index]

    def _on_time_passed(self, t: float) -> None:
        if self._ttft_deadline is not None:
            self.n_ttft_misses += self._deadlines_missed_until(
                t, self._ttft_deadline, self._records.first_token_s, self._deadline_slot
            )

    def prefill_remaining_tokens(self, gpu: int) -> int:
        """Prompt tokens still to prefill of the prompts ``gpu`` has started."""
        started = self.prefilling[gpu]
        if not started:
            return 0
        prompt, prefilled = self._prompt, self._prefilled
        return sum(prompt[i] - prefilled[i] for i in started)

    def running_generated_tokens(self, gpu: int) -> int:
        """Output tokens generated so far by the sequences running on ``gpu``."""
        return self._running_context[gpu] - self.running_prompt_tokens[gpu]

    def oldest_token_s(self, gpu: int) -> float:
        """Time of the least recent token among ``gpu``'s running sequences (``now`` if none)."""
        state = self._run_state[gpu]
        return _oldest_token_s(state) if state.shape[1] else self.now

    def running_tokens_generated(self, gpu: int) -> np.ndarray:
        """Output tokens generated so far by each of ``gpu``'s running sequences (a new array)."""
        return self._run_state[gpu][_GENERATED].astype(np.int64)

    @property
    def records(self) -> RequestRecords:
        """Per-request event times and states of the run so far.

        Running sequences keep their token counts and gaps in per-GPU state; reading the records
        copies those into them first.
        """
        records = self._records
        for running, state in zip(self.running, self._run_state):
            if running.size:
                records.tokens_generated[running] = state[_GENERATED]
                records.max_token_gap_s[running] = state[_MAX_GAP_S]
        return records

    @property
    def sla_misses(self) -> int:
        """TTFT misses (including rejections) plus TBT misses so far."""
        return self.n_ttft_misses + self.n_tbt_misses

    def mean_batch_size(self) -> float:
        """Mean number of sequences (prefilling or decoding) per iteration (nan before any)."""
        if not self.n_iterations:
            return float("nan")
        return self.sequences_processed / self.n_iterations

    def next_free_s(self) -> list[float]:
        """For every GPU, when its current iteration ends (``now`` for an idle GPU)."""
        now = self.now
        return [t if b else now for t, b in zip(self.gpu_free_at, self.gpu_busy)]
