"""The iteration of the iteration-level server: form it, charge its time, apply its tokens.

:class:`IterationRun` forms the deciding GPU's iteration from a decode count, a prefill budget
and a prompt cap (allocating KV blocks, and preempting, in paged mode), charges its duration
from the iteration latency model, and when it ends gives its sequences their tokens, completing
the requests that are done. The rules are stated in :mod:`llmsched_env.sim.iteration_server`.
"""

from __future__ import annotations

import numpy as np

from llmsched_env.sim.paged_kv import decode_rows_needing_block
from llmsched_env.sim.running_state import (
    EMPTY,
    GENERATED,
    MAX_GAP_S,
    OUTPUT,
    PROMPT,
    TBT_MISSED,
    context_spread,
    context_tokens,
    decode_tokens,
)


class IterationRun:
    """Runs the iterations of :class:`~llmsched_env.sim.iteration_server.IterationServer`.

    A mixin: it works on the server's state, which the server's constructor sets up.
    """

    # ------------------------------------------------------------------ the decision
    def run_iteration(
        self, decode_count: int, prefill_budget_tokens: int, max_new_prompts: int
    ) -> bool:
        """Form and start the deciding GPU's next iteration.

        Args:
            decode_count: How many running sequences get one token, the first ones of
                :attr:`running` (capped by the number running and by the token budget).
            prefill_budget_tokens: Most prefill tokens in this iteration (capped by what the
                decode tokens leave of ``max_tokens``). Started prompts continue first; then
                prompts are admitted from the head of the waiting queue.
            max_new_prompts: Most prompts admitted from the waiting queue in this iteration.

        Returns:
            ``True`` if the decision was made: an iteration started or, in paged mode, requests
            were preempted (if every request of the iteration was, no iteration runs and the GPU
            decides again at the same time). ``False`` if the iteration would have been empty,
            in which case nothing changed and the decision is still due.

        Raises:
            RuntimeError: If no decision is due.
        """
        gpu = self._require_decision()
        if self.paged:
            return self._run_paged_iteration(
                gpu, decode_count, prefill_budget_tokens, max_new_prompts
            )
        running = self.running[gpu]
        k = min(decode_count, running.size, self.max_tokens)
        decode_ids = running[:k] if k > 0 else EMPTY
        budget = min(prefill_budget_tokens, self.max_tokens - k)
        plan: list[tuple[int, int]] = []
        prefill_tokens = prefill_kv_tokens = 0
        if budget > 0:
            prefill_tokens, prefill_kv_tokens = self._plan_continuations(gpu, budget, plan)
            if prefill_tokens < budget:
                prefill_tokens, _ = self._plan_admissions(
                    gpu, budget, prefill_tokens, max_new_prompts, plan
                )
        if k == 0 and not plan:
            return False
        self._start_iteration(gpu, plan, decode_ids, prefill_tokens, prefill_kv_tokens)
        return True

    def _start_iteration(
        self,
        gpu: int,
        plan: list[tuple[int, int]],
        decode_ids: np.ndarray,
        prefill_tokens: int,
        prefill_kv_tokens: int,
    ) -> None:
        """Charge the planned iteration on ``gpu`` and start it."""
        k = decode_ids.size
        if k == self.running[gpu].size:
            context = self._running_context[gpu]
        else:
            context = context_tokens(self._run_state[gpu], k)
        longest = shortest = 0
        if k > 1 and self._latency_reads_spread:
            longest, shortest = context_spread(self._run_state[gpu], k)
        duration = self.latency.iteration_s(
            prefill_tokens,
            k,
            context,
            self.rng,
            prefill_kv_tokens=prefill_kv_tokens,
            prefill_sequences=len(plan),
            decode_kv_max=longest,
            decode_kv_min=shortest,
        )
        self._pending[gpu] = (plan, decode_ids)
        self.last_iteration_s[gpu] = duration
        self.n_iterations += 1
        self.sequences_processed += k + len(plan)
        self.prefill_tokens_processed += prefill_tokens
        self.decode_tokens_processed += k
        self._start_work(gpu, duration)

    def _run_paged_iteration(
        self, gpu: int, decode_count: int, prefill_budget_tokens: int, max_new_prompts: int
    ) -> bool:
        """:meth:`run_iteration` in paged mode (see the module docstring)."""
        running = self.running[gpu]
        k = min(decode_count, running.size, self.max_tokens)
        budget = min(prefill_budget_tokens, self.max_tokens - k)
        plan: list[tuple[int, int]] = []
        prefill_tokens = prefill_kv_tokens = 0
        if budget > 0:
            prefill_tokens, prefill_kv_tokens = self._plan_continuations(gpu, budget, plan)
        state = self._run_state[gpu]
        held = self.request_blocks
        rows = decode_rows_needing_block(state[PROMPT], state[GENERATED], k, self.kv_block_tokens)
        chunk_blocks = [
            self._blocks_for(self._prefilled[index] + take) - held[index] for index, take in plan
        ]
        need = rows.size + sum(chunk_blocks)
        if need <= self.capacity_blocks - self.blocks_used[gpu]:
            # Every scheduled request gets its blocks: the order does not matter.
            for j in rows.tolist():
                self._grow(gpu, int(running[j]), 1)
            for (index, _), blocks in zip(plan, chunk_blocks):
                if blocks:
                    self._grow(gpu, index, blocks)
            preempted = False
        else:
            k, prefill_tokens, prefill_kv_tokens, preempted = self._allocate_with_preemption(
                gpu, k, rows.tolist(), plan, chunk_blocks
            )
            running = self.running[gpu]
        if not preempted and prefill_tokens < budget:
            prefill_tokens, hit_tokens = self._plan_admissions(
                gpu, budget, prefill_tokens, max_new_prompts, plan
            )
            prefill_kv_tokens += hit_tokens
        self.kv_used[gpu] = self.kv_reserved[gpu] = self.blocks_used[gpu] * self.kv_block_tokens
        if k == 0 and not plan:
            if preempted:
                self.decision_gpu = -1  # the GPU decides again, with the preempted ones waiting
            return preempted
        decode_ids = running[:k] if k > 0 else EMPTY
        self._start_iteration(gpu, plan, decode_ids, prefill_tokens, prefill_kv_tokens)
        return True

    def _on_work_done(self, gpu: int) -> None:
        pending = self._pending[gpu]
        self._pending[gpu] = None
        if pending is None:
            return
        plan, decode_ids = pending
        t = self.now
        records = self._records
        newly_running: list[int] = []
        resumed: dict[int, tuple[float, float, float, float]] | None = None
        if plan:
            prompt = self._prompt
            target = self._target
            prefilled = self._prefilled
            resume_state = self._resume_state
            finished_prefill = False
            caching = self.prefix_caching
            for index, take in plan:
                if caching:
                    done = prefilled[index]
                    self._cache_prompt_blocks(gpu, index, done, done + take)
                prefilled[index] += take
                self.kv_used[gpu] += take
                if prefilled[index] == target[index]:
                    finished_prefill = True
                    if resume_state and index in resume_state:
                        if resumed is None:
                            resumed = {}
                        self._resume(gpu, index, resume_state.pop(index), newly_running, resumed)
                        continue
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
                self.prefilling[gpu] = [i for i in self.prefilling[gpu] if prefilled[i] < target[i]]
        running = self.running[gpu]
        state = self._run_state[gpu]
        if decode_ids.size:
            k = decode_ids.size
            new_misses, n_done = decode_tokens(state, k, t, self._tbt_target_or_nan)
            self.n_tbt_misses += new_misses
            self.kv_used[gpu] += k
            self._running_context[gpu] += k
            if n_done:
                decoded = state[:, :k]
                generated = decoded[GENERATED]
                max_gap = decoded[MAX_GAP_S]
                done = generated >= decoded[OUTPUT]
                for row in done.nonzero()[0].tolist():
                    index = int(decode_ids[row])
                    n_generated = int(generated[row])
                    records.tokens_generated[index] = n_generated
                    records.max_token_gap_s[index] = max_gap[row]
                    self._complete_one(gpu, index, n_generated, bool(decoded[TBT_MISSED, row]))
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
            # Rows in GENERATED .. PROMPT order: one token, its time, no gap, no TBT miss.
            n_new = len(newly_running)
            if resumed is None:
                token_rows = [[1.0] * n_new, [t] * n_new, [0.0] * n_new, [0.0] * n_new]
            else:
                # Recomputed requests resume with their own counts, gaps and TBT flags.
                fresh = (1.0, t, 0.0, 0.0)
                columns = [resumed.get(i, fresh) for i in newly_running]
                token_rows = [list(row) for row in zip(*columns)]
            new_state = np.array(
                [
                    *token_rows,
                    [self._output[i] for i in newly_running],
                    [self._prompt[i] for i in newly_running],
                ]
            )
            running = np.concatenate([running, np.array(newly_running, dtype=np.int64)])
            state = np.concatenate([state, new_state], axis=1)
        self.running[gpu] = running
        self._run_state[gpu] = state
        if self.paged:
            self.kv_used[gpu] = self.kv_reserved[gpu] = self.blocks_used[gpu] * self.kv_block_tokens

    def _resume(
        self,
        gpu: int,
        index: int,
        saved: tuple[float, float, float, float],
        newly_running: list[int],
        resumed: dict[int, tuple[float, float, float, float]],
    ) -> None:
        """Emit the next token of a preempted request whose recomputation just finished.

        ``saved`` holds its generated tokens, last token time, longest gap and TBT flag from
        before the preemption; the gap since that last token counts like any other.
        """
        t = self.now
        generated, last_s, max_gap, missed = saved
        gap = t - last_s
        if gap > max_gap:
            max_gap = gap
        if gap > self._tbt_target_or_nan:
            if missed == 0.0:
                self.n_tbt_misses += 1
            missed = 1.0
        generated += 1.0
        n_generated = int(generated)
        self._records.tokens_generated[index] = n_generated
        if n_generated >= self._output[index]:
            self._records.max_token_gap_s[index] = max_gap
            self._complete_one(gpu, index, n_generated, missed == 1.0)
            return
        prompt = self._prompt[index]
        newly_running.append(index)
        resumed[index] = (generated, t, max_gap, missed)
        self._running_context[gpu] += prompt + n_generated
        self.running_prompt_tokens[gpu] += prompt
        self.running_predicted_tokens[gpu] += self._predicted[index]

    def _complete_one(self, gpu: int, index: int, generated: int, tbt_missed: bool) -> None:
        records = self._records
        t = self.now
        records.completed[index] = True
        records.completion_s[index] = t
        self.n_completed += 1
        self.n_sequences[gpu] -= 1
        if self.paged:
            self._release(gpu, index, self._prompt[index] + generated - 1, comes_back=False)
        else:
            self.kv_reserved[gpu] -= self._kv_need[index]
            self.kv_used[gpu] -= self._prompt[index] + generated
        ttft_met = self._ttft_deadline is None or (
            records.first_token_s[index] <= self._ttft_deadline[index]
        )
        if ttft_met and not tbt_missed:
            self.n_on_time += 1
            self.on_time_output_tokens += self._output[index]
