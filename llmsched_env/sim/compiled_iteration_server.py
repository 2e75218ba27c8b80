"""The iteration-level server, its state in arrays and its loop compiled.

:class:`CompiledIterationServer` serves the same episodes as
:class:`~llmsched_env.sim.iteration_server.IterationServer` with either KV allocation (reserve,
or paged with preemption, with or without prefix caching), bit for bit (the rules are stated
there), and offers the same attributes and questions; its event loop and iterations run compiled
(:mod:`llmsched_env.sim.iteration_kernels`, :mod:`llmsched_env.sim.prefix_kernels`) on the state
of :mod:`llmsched_env.sim.iteration_state`.

Its Python attributes read the state arrays: cheap for scalars, a small copy for a GPU's
running sequences or started prompts (at most ``max_sequences``), and the records are assembled
when read.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from llmsched_env.jit import implementation
from llmsched_env.latency import IterationLatencyModel
from llmsched_env.latency.iteration_timing import CompiledTiming
from llmsched_env.metrics import SLATargets, summarize
from llmsched_env.sim import iteration_kernels as k
from llmsched_env.sim.iteration_planning import PrefillPlan
from llmsched_env.sim.iteration_server import (
    arrival_rejections,
    check_settings,
    iteration_run_counts,
)
from llmsched_env.sim.iteration_state import IterationState, allocate, state_views
from llmsched_env.sim.prefix_cache_state import (
    PrefixCacheState,
    prefix_cache_layout,
    prefix_cache_views,
    start_prefix_cache,
)
from llmsched_env.sim.records import RequestRecords
from llmsched_env.sim.state_schema import state_counter
from llmsched_env.statistics import sequential_sum
from llmsched_env.workload import Workload

_REFUSALS: dict[int, tuple[type[Exception], str]] = {
    k.NO_DECISION_DUE: (RuntimeError, "no scheduling decision is due; call advance() first"),
    k.WAIT_DEADLOCKS: (
        RuntimeError,
        "WAIT would deadlock: no request is left to arrive and no GPU is working",
    ),
    k.NO_VALID_TIME: (ValueError, "the latency model gives no valid time for the iteration"),
}


def _per_gpu(name: str, kind: type) -> property:
    """A read-only attribute: the per-GPU state array ``name``, as a list of ``kind``."""

    def read(server: CompiledIterationServer) -> list[Any]:
        return [kind(v) for v in getattr(server.state, name).tolist()]

    return property(read, doc=f"``state.{name}``, one {kind.__name__} per GPU (a new list).")


def _prefix_counter(name: str, doc: str) -> property:
    """A read-only attribute: the prefix cache's counter ``name`` (0 without prefix caching)."""

    def read(server: CompiledIterationServer) -> int:
        cache = server.prefix_cache
        return 0 if cache is None else int(getattr(cache, name)[0])

    return property(read, doc=doc)


class CompiledIterationServer:
    """Continuous-batching server that stops whenever a GPU decides, compiled.

    Args:
        workload: Requests sorted by arrival.
        n_gpus: Number of identical GPUs (engine replicas sharing one waiting queue).
        latency: Iteration latency model; one with a compiled timing (``compiled_timing()``,
            :mod:`llmsched_env.latency.iteration_timing`) is timed inside the compiled
            iteration, any other in Python.
        kv_capacity_tokens: KV-cache tokens one GPU holds.
        max_tokens: Token budget of one iteration (prefill tokens plus decoded sequences).
        max_sequences: Most requests on one GPU at once.
        rng: Source of randomness for stochastic iteration times.
        chunk_size: Most prefill tokens of one prompt per iteration; ``None`` turns chunked
            prefill off.
        ttft_deadline_s: Time-to-first-token target; enables on-time/miss accounting.
        ttft_per_token_s: Time added to a request's TTFT target per prompt token.
        tbt_target_s: Time-between-tokens target.
        kv_allocation: ``"reserve"`` or ``"paged"`` (see :class:`IterationServer`).
        kv_block_tokens: Tokens per KV block in paged mode.
        prefix_caching: Automatic prefix caching of KV blocks (paged mode only).

    Attributes:
        state: The state's arrays by name (:data:`~llmsched_env.sim.iteration_state
            .IterationState`, numpy views); read-only by convention, the kernels write them.
        buffers: The state's ``(floats, ints, layout)``, which compiled callers pass on.
        prefix_cache: With prefix caching, the prefix cache's arrays by name
            (:data:`~llmsched_env.sim.prefix_cache_state.PrefixCacheState`, views of the
            state's ``pool``); ``None`` without.

    The other attributes and methods are those of :class:`IterationServer`.
    """

    #: Whether requests join the queue's columns as they are routed here (a replica of a routed
    #: cluster, :class:`~llmsched_env.sim.compiled_replica_server.CompiledReplicaServer`)
    #: instead of all at the start.
    ROUTED = False

    now = state_counter("now", float)
    in_system_integral = state_counter("in_system_s", float)
    n_arrived = state_counter("n_arrived", int)
    n_completed = state_counter("n_completed", int)
    n_rejected = state_counter("n_rejected", int)
    n_on_time = state_counter("n_on_time", int)
    on_time_output_tokens = state_counter("on_time_tokens", int)
    n_ttft_misses = state_counter("n_ttft_misses", int)
    n_tbt_misses = state_counter("n_tbt_misses", int)
    n_iterations = state_counter("n_iterations", int)
    sequences_processed = state_counter("sequences_processed", int)
    prefill_tokens_processed = state_counter("prefill_tokens_processed", int)
    decode_tokens_processed = state_counter("decode_tokens_processed", int)
    n_preemptions = state_counter("n_preemptions", int)
    recomputed_tokens = state_counter("recomputed_tokens", int)
    queue_head = state_counter("queue_head", int)
    queue_tail = state_counter("queue_tail", int)
    decision_gpu = state_counter("decision_gpu", int)
    kv_reserved = _per_gpu("kv_reserved", int)
    kv_used = _per_gpu("kv_used", int)
    running_prompt_tokens = _per_gpu("running_prompt", int)
    running_predicted_tokens = _per_gpu("running_predicted", int)
    n_sequences = _per_gpu("n_sequences", int)
    blocks_used = _per_gpu("blocks_used", int)
    last_iteration_s = _per_gpu("last_iteration_s", float)
    gpu_busy = _per_gpu("gpu_busy", bool)
    gpu_free_at = _per_gpu("gpu_free_at", float)
    busy_s = _per_gpu("gpu_busy_s", float)
    prefix_hit_tokens = _prefix_counter(
        "hit_tokens_total", "Tokens admissions skipped because their blocks were cached."
    )
    prefix_queried_tokens = _prefix_counter(
        "queried_tokens_total", "Tokens admissions looked up in the prefix cache."
    )
    preempted_prefix_hit_tokens = _prefix_counter(
        "preempted_hit_tokens", "The part of the hit tokens that readmissions made."
    )
    preempted_prefix_queried_tokens = _prefix_counter(
        "preempted_queried_tokens", "The part of the queried tokens that readmissions made."
    )

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
        ttft_per_token_s: float = 0.0,
        tbt_target_s: float | None = None,
        kv_allocation: str = "reserve",
        kv_block_tokens: int = 16,
        prefix_caching: bool = False,
    ) -> None:
        if not isinstance(n_gpus, (int, np.integer)) or isinstance(n_gpus, bool) or n_gpus < 1:
            raise ValueError(f"n_gpus must be a positive integer, got {n_gpus!r}")
        check_settings(
            workload,
            kv_capacity_tokens=kv_capacity_tokens,
            max_tokens=max_tokens,
            max_sequences=max_sequences,
            chunk_size=chunk_size,
            ttft_deadline_s=ttft_deadline_s,
            ttft_per_token_s=ttft_per_token_s,
            tbt_target_s=tbt_target_s,
            kv_allocation=kv_allocation,
            kv_block_tokens=kv_block_tokens,
            prefix_caching=prefix_caching,
        )
        self.workload = workload
        self.n_gpus = int(n_gpus)
        self.n_requests = n = len(workload)
        self.rng = rng
        self.latency = latency
        self.kv_capacity_tokens = int(kv_capacity_tokens)
        self.max_tokens = int(max_tokens)
        self.max_sequences = int(max_sequences)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.ttft_deadline_s = ttft_deadline_s
        self.ttft_per_token_s = float(ttft_per_token_s)
        self.tbt_target_s = tbt_target_s
        self.kv_allocation = kv_allocation
        self.paged = kv_allocation == "paged"
        self.kv_block_tokens = int(kv_block_tokens)
        self.capacity_blocks = self.kv_capacity_tokens // self.kv_block_tokens if self.paged else 0
        self.prefix_caching = bool(prefix_caching)

        prompt = workload.prompt_tokens
        output = workload.output_tokens
        self.kv_need = prompt + output
        rejection = arrival_rejections(
            prompt,
            output,
            kv_capacity_tokens=self.kv_capacity_tokens,
            max_tokens=self.max_tokens,
            chunk_size=self.chunk_size,
            kv_allocation=kv_allocation,
            kv_block_tokens=self.kv_block_tokens,
        )
        queue_order = np.flatnonzero(rejection == 0)
        rows_per_gpu = min(self.max_sequences, max(n, 1))
        pool_layout = None
        if self.prefix_caching:
            pool_layout = prefix_cache_layout(
                workload, self.n_gpus, self.capacity_blocks, self.kv_block_tokens, rows_per_gpu
            )
        floats, ints, layout = allocate(
            n, queue_order.size, self.n_gpus, self.max_sequences, pool_layout=pool_layout
        )
        s = state_views(floats, ints, layout)
        s.tbt_target_s[0] = math.nan if tbt_target_s is None else float(tbt_target_s)
        s.kv_capacity[0] = self.kv_capacity_tokens
        s.max_tokens[0] = self.max_tokens
        s.max_sequences[0] = self.max_sequences
        s.slots_per_gpu[0] = min(self.max_sequences, max(n, 1))
        s.chunk_size[0] = self.chunk_size or 0
        s.reads_spread[0] = bool(getattr(latency, "uses_decode_spread", False))
        s.paged[0] = self.paged
        s.block_tokens[0] = self.kv_block_tokens
        s.capacity_blocks[0] = self.capacity_blocks
        s.prefix_caching[0] = self.prefix_caching
        s.decision_gpu[0] = -1
        s.arrival_s[:] = workload.arrival_s
        s.start_s[:] = s.first_token_s[:] = s.completion_s[:] = math.nan
        s.prompt[:] = s.target[:] = prompt
        s.output[:] = output
        s.predicted[:] = workload.predicted_output_tokens
        s.rejection[:] = rejection
        s.gpu[:] = -1
        if not self.ROUTED:  # every request is this server's, its queue's columns known now
            s.horizon[0] = n
            s.queue_filled[0] = queue_order.size
            s.queue_order[:] = queue_order
            np.cumsum(prompt[queue_order], out=s.queue_prompt_cumsum[1:])
        if ttft_deadline_s:
            s.has_deadline[0] = 1
            deadline = workload.arrival_s + ttft_deadline_s + self.ttft_per_token_s * prompt
            s.ttft_deadline_s[:] = deadline
            if self.ttft_per_token_s > 0:  # targets grow with the prompt: deadlines out of order
                order = np.argsort(deadline, kind="stable")
                s.scan_deadline_s[:] = deadline[order]
                s.scan_order[:] = order
            else:
                s.scan_deadline_s[:] = deadline
                s.scan_order[:] = np.arange(n)
            if self.ROUTED:  # the earliest deadline of each request and those after it
                s.later_due_s[:] = np.minimum.accumulate(deadline[::-1])[::-1]
        # A model with a compiled timing is timed inside the compiled iteration; others in Python.
        #: The latency model's compiled timing (``None``: the model is timed in Python).
        self.timing: CompiledTiming | None = getattr(latency, "compiled_timing", lambda: None)()
        if self.timing is not None:
            s.latency_code[0] = self.timing.code
            s.latency_params[:] = self.timing.params
        self.buffers = (floats, ints, layout)
        self.state: IterationState = s
        if self.prefix_caching:
            start_prefix_cache(s.pool, s.pool_layout, workload, self.kv_block_tokens)
        self.prefix_cache = self._prefix_cache_views()
        self._look_up_kernels()
        self._queue_columns: tuple[np.ndarray, ...] = ()
        if not self.ROUTED:
            self._queue_columns = tuple(
                _read_only(values)
                for values in (
                    s.queue_order.copy(),
                    workload.arrival_s[queue_order],
                    prompt[queue_order],
                )
            )

    def _prefix_cache_views(self) -> PrefixCacheState | None:
        """The prefix cache's arrays (views of the state's ``pool``), or ``None`` without it."""
        if not self.prefix_caching:
            return None
        return prefix_cache_views(self.state.pool, self.state.pool_layout)

    def _look_up_kernels(self) -> None:
        """The hot kernels' implementations for this run's buffers (no dispatcher per call)."""
        self._advance = implementation(k.advance, *self.buffers)
        self._run_timed = None  # looked up when first needed: the env's compiled step times itself

    # ------------------------------------------------------------------ pickling and copies
    def __getstate__(self) -> dict[str, Any]:
        """The server without its views, which a copy rebuilds on its own buffers."""
        state = self.__dict__.copy()
        for name in ("state", "prefix_cache", "_advance", "_run_timed"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled or deep-copied server."""
        self.__dict__.update(state)
        self.state = state_views(*self.buffers)
        self.prefix_cache = self._prefix_cache_views()
        self._look_up_kernels()
        for values in self._queue_columns:
            values.flags.writeable = False

    # ------------------------------------------------------------------ the decision loop
    def advance(self) -> bool:
        """Process events until a decision is due (see :meth:`Engine.advance`)."""
        return self._advance(*self.buffers)

    def wait(self) -> None:
        """Let the deciding GPU idle until the next event (the WAIT decision).

        Raises:
            RuntimeError: If no decision is due, or waiting would deadlock.
        """
        self._refuse(k.wait(*self.buffers))

    def can_wait(self) -> bool:
        """Whether WAIT is safe: some event (an arrival or the end of GPU work) is still ahead."""
        return k.can_wait(*self.buffers)

    def run_iteration(
        self, decode_count: int, prefill_budget_tokens: int, max_new_prompts: int
    ) -> bool:
        """Form and start the deciding GPU's next iteration (``IterationServer.run_iteration``).

        Returns:
            ``True`` if an iteration started, ``False`` if it would have been empty (nothing
            changed, the decision is still due).

        Raises:
            RuntimeError: If no decision is due.
            ValueError: If the latency model gives no valid time.
        """
        decode_count = int(decode_count)
        prefill_budget_tokens = int(prefill_budget_tokens)
        max_new_prompts = int(max_new_prompts)
        timing = self.timing
        if timing is not None:
            if self._run_timed is None:
                self._run_timed = implementation(
                    k.run_timed_iteration, *self.buffers, 0, 0, 0, timing.tables
                )
            code, formed = self._run_timed(
                *self.buffers, decode_count, prefill_budget_tokens, max_new_prompts, timing.tables
            )
            self._refuse(code)
            return formed
        code, formed, decodes, prefill, kv, chunks, context, longest, shortest = k.plan_iteration(
            *self.buffers, decode_count, prefill_budget_tokens, max_new_prompts
        )
        self._refuse(code)
        if not formed or (decodes == 0 and chunks == 0):
            return formed  # nothing changed, or (paged) requests were only preempted
        duration = self._time_in_python(decodes, prefill, kv, chunks, context, longest, shortest)
        k.start_iteration(*self.buffers, decodes, prefill, chunks, duration)
        return True

    def _time_in_python(
        self,
        decodes: int,
        prefill: int,
        kv: int,
        chunks: int,
        context: int,
        longest: int,
        shortest: int,
    ) -> float:
        """The latency model's time for a planned iteration (its errors raised as they are)."""
        return self.latency.iteration_s(
            prefill,
            decodes,
            context,
            self.rng,
            prefill_kv_tokens=kv,
            prefill_sequences=chunks,
            decode_kv_max=longest,
            decode_kv_min=shortest,
        )

    def _last_plan(self) -> tuple[int, int, int, int, int, int, int]:
        """The latency inputs of the deciding GPU's planned iteration (for an error message)."""
        s = self.state
        gpu = int(s.decision_gpu[0])
        base = gpu * int(s.slots_per_gpu[0])
        decodes = int(s.pending_decodes[gpu])
        chunks = int(s.pending_chunks[gpu])
        ids = s.plan_id[base : base + chunks]
        prefill = int(s.plan_take[base : base + chunks].sum())
        kv = int(s.prefilled[ids].sum())
        running = s.run_id[base : base + decodes]
        contexts = s.prompt[running] + s.run_generated[base : base + decodes]
        context = int(contexts.sum())
        spread = decodes > 1 and bool(s.reads_spread[0])
        longest = int(contexts.max()) if spread else 0
        shortest = int(contexts.min()) if spread else 0
        return decodes, prefill, kv, chunks, context, longest, shortest

    def raise_refusal(self, code: int) -> None:
        """Raise the error of a kernel's refusal ``code`` (the latency model's own, if any)."""
        if code == k.NO_VALID_TIME:
            self._time_in_python(*self._last_plan())
        kind, message = _REFUSALS[code]
        raise kind(message)

    def _refuse(self, code: int) -> None:
        if code != k.DONE:
            self.raise_refusal(code)

    # ------------------------------------------------------------------ the waiting queue
    @property
    def queue_order(self) -> np.ndarray:
        """The admissible requests in arrival order (read-only; ``queue_head:queue_tail`` wait)."""
        return self._queue_columns[0]

    @property
    def queue_arrival_s(self) -> np.ndarray:
        """Arrival time of each entry of :attr:`queue_order` (read-only)."""
        return self._queue_columns[1]

    @property
    def queue_prompt_tokens(self) -> np.ndarray:
        """Prompt tokens of each entry of :attr:`queue_order` (read-only)."""
        return self._queue_columns[2]

    @property
    def requeued(self) -> deque[int]:
        """Preempted requests waiting ahead of the arrival-ordered queue, head first (a copy)."""
        s = self.state
        return deque(s.requeue[: s.n_requeued[0]][::-1].tolist())

    @property
    def n_waiting(self) -> int:
        """Requests waiting (never admitted, or preempted and not readmitted)."""
        return self.queue_tail - self.queue_head + int(self.state.n_requeued[0])

    def waiting_prompt_tokens(self) -> int:
        """Tokens the waiting requests must prefill (a preempted one: its tokens to recompute)."""
        s = self.state
        c = s.queue_prompt_cumsum
        return int(c[s.queue_tail[0]] - c[s.queue_head[0]] + s.requeued_tokens[0])

    def waiting_head(self) -> int:
        """Index of the request at the head of the waiting queue, -1 if none waits."""
        s = self.state
        if s.n_requeued[0]:
            return int(s.requeue[s.n_requeued[0] - 1])
        head = int(s.queue_head[0])
        return int(s.queue_order[head]) if head < s.queue_tail[0] else -1

    def waiting_head_tokens(self) -> int:
        """Tokens the head of the waiting queue must prefill (0 if none waits)."""
        head = self.waiting_head()
        return int(self.state.target[head]) if head >= 0 else 0

    def oldest_waiting(self) -> int:
        """Index of the earliest-arrived waiting request, -1 if none waits.

        The head, except after preemptions (see :meth:`IterationServer.oldest_waiting`).
        """
        s = self.state
        if s.n_requeued[0]:
            return int(s.requeue[: s.n_requeued[0]].min())
        return self.waiting_head()

    def queued_ids(self) -> np.ndarray:
        """Indices of the never-admitted waiting requests, oldest first (a read-only view)."""
        return self.queue_order[self.queue_head : self.queue_tail]

    def waiting_ids(self) -> np.ndarray:
        """Indices of the waiting requests, head first (a new array)."""
        s = self.state
        return np.concatenate([s.requeue[: s.n_requeued[0]][::-1], self.queued_ids()])

    def tokens_to_prefill(self, index: int) -> int:
        """Tokens request ``index`` must still prefill (or recompute) before its next token."""
        return int(self.state.target[index] - self.state.prefilled[index])

    # ------------------------------------------------------------------ the GPUs
    def _slots(self, gpu: int, count_field: str) -> slice:
        base = gpu * int(self.state.slots_per_gpu[0])
        return slice(base, base + int(getattr(self.state, count_field)[gpu]))

    @property
    def running(self) -> list[np.ndarray]:
        """Per GPU, the decoding requests in the order they started decoding (new arrays)."""
        return [self.state.run_id[self._slots(g, "n_running")].copy() for g in range(self.n_gpus)]

    @property
    def prefilling(self) -> list[list[int]]:
        """Per GPU, the admitted requests whose prefill is not finished, in admission order."""
        ids = self.state.prefilling_id
        return [ids[self._slots(g, "n_prefilling")].tolist() for g in range(self.n_gpus)]

    @property
    def request_blocks(self) -> list[int]:
        """Per request, the KV blocks it holds (paged mode; zeros in reserve mode)."""
        return self.state.request_blocks.tolist()

    def free_blocks(self, gpu: int) -> int:
        """Free KV blocks of ``gpu`` (paged mode)."""
        return self.capacity_blocks - int(self.state.blocks_used[gpu])

    def prefill_remaining_tokens(self, gpu: int) -> int:
        """Tokens still to prefill of the prompts ``gpu`` has started."""
        ids = self.state.prefilling_id[self._slots(gpu, "n_prefilling")]
        return int((self.state.target[ids] - self.state.prefilled[ids]).sum())

    def running_generated_tokens(self, gpu: int) -> int:
        """Output tokens generated so far by the sequences running on ``gpu``."""
        s = self.state
        return int(s.running_context[gpu] - s.running_prompt[gpu])

    def running_tokens_generated(self, gpu: int) -> np.ndarray:
        """Output tokens generated so far by each of ``gpu``'s running sequences (a new array)."""
        return self.state.run_generated[self._slots(gpu, "n_running")].copy()

    def oldest_token_s(self, gpu: int) -> float:
        """Time of the least recent token among ``gpu``'s running sequences (``now`` if none)."""
        times = self.state.run_last_token_s[self._slots(gpu, "n_running")]
        return float(times.min()) if times.size else self.now

    def next_free_s(self) -> list[float]:
        """For every GPU, when its current iteration ends (``now`` for an idle GPU)."""
        now = self.now
        return [t if b else now for t, b in zip(self.gpu_free_at, self.gpu_busy)]

    def next_event_time(self) -> float:
        """Time of the next arrival or end of GPU work, ``inf`` if there is none."""
        s = self.state
        lo = int(s.n_arrived[0])
        t = float(s.arrival_s[lo]) if lo < self.n_requests else math.inf
        busy = s.gpu_free_at[s.gpu_busy != 0]
        return min(t, float(busy.min())) if busy.size else t

    # ------------------------------------------------------------------ admission questions
    def _gpu(self, gpu: int) -> int:
        """``gpu`` as an index of the state's per-GPU arrays (negative counts from the end).

        The kernels check no bounds, so a GPU out of range is refused here, as a Python list
        would refuse it.
        """
        if not -self.n_gpus <= gpu < self.n_gpus:
            raise IndexError(f"gpu {gpu!r} is out of range for {self.n_gpus} GPUs")
        return int(gpu) % self.n_gpus

    def can_admit(self, gpu: int) -> bool:
        """Whether ``gpu`` could admit the head of the waiting queue now."""
        return k.can_admit(*self.buffers, self._gpu(gpu))

    def can_prefill(self, gpu: int) -> bool:
        """Whether ``gpu`` has prefill work: a started prompt or an admissible waiting one."""
        return bool(self.state.n_prefilling[self._gpu(gpu)]) or self.can_admit(gpu)

    def can_admit_within(self, gpu: int, budget_tokens: int) -> bool:
        """Whether a prefill budget of ``budget_tokens`` (no decodes) admits the queue's head."""
        return k.can_admit_within(*self.buffers, self._gpu(gpu), _tokens(budget_tokens))

    def prefill_progresses(self, gpu: int, budget_tokens: int) -> bool:
        """Whether a prefill-only iteration of ``gpu`` with this budget would make progress."""
        return k.prefill_progresses(*self.buffers, self._gpu(gpu), _tokens(budget_tokens))

    def smallest_prefill_budget(self, gpu: int) -> float:
        """The least prefill budget that gives ``gpu`` prefill work (``inf``: none does)."""
        budget = k.smallest_prefill_budget(*self.buffers, self._gpu(gpu))
        return budget if budget == math.inf else int(budget)

    def prefill_allowed(self, gpu: int, budget_tokens: int, alongside_decodes: bool) -> bool:
        """Whether a prefill budget of ``budget_tokens`` forms an allowed iteration on ``gpu``."""
        return k.prefill_allowed(
            *self.buffers, self._gpu(gpu), _tokens(budget_tokens), bool(alongside_decodes)
        )

    def prefill_allowed_budgets(
        self, gpu: int, budgets_tokens: Any, alongside_decodes: bool
    ) -> list[bool]:
        """:meth:`prefill_allowed` for each of ``budgets_tokens``."""
        return [self.prefill_allowed(gpu, budget, alongside_decodes) for budget in budgets_tokens]

    def plan_prefill(self, gpu: int, budget_tokens: int, max_new_prompts: int) -> PrefillPlan:
        """What a prefill-only iteration of ``gpu`` would prefill, without changing anything."""
        plan = k.plan_prefill(
            *self.buffers, self._gpu(gpu), _tokens(budget_tokens), _tokens(max_new_prompts)
        )
        return PrefillPlan(*plan)

    # ------------------------------------------------------------------ results
    @property
    def sla_misses(self) -> int:
        """TTFT misses (including rejections) plus TBT misses so far."""
        return self.n_ttft_misses + self.n_tbt_misses

    @property
    def n_in_system(self) -> int:
        """Requests that arrived and are neither completed nor rejected."""
        return self.n_arrived - self.n_completed - self.n_rejected

    @property
    def done(self) -> bool:
        """Whether every request has completed or been rejected."""
        return self.n_completed + self.n_rejected == self.n_requests

    def mean_batch_size(self) -> float:
        """Mean number of sequences (prefilling or decoding) per iteration (nan before any)."""
        if not self.n_iterations:
            return float("nan")
        return self.sequences_processed / self.n_iterations

    def busy_time_s(self, until_s: float | None = None) -> float:
        """Total time all GPUs have worked up to ``until_s`` (default now)."""
        end = self.now if until_s is None else until_s
        ahead = sequential_sum(
            max(t - end, 0.0) for t, b in zip(self.gpu_free_at, self.gpu_busy) if b
        )
        return sequential_sum(self.busy_s) - ahead

    @property
    def records(self) -> RequestRecords:
        """Per-request event times and states of the run so far (assembled from the state)."""
        s = self.state
        records = RequestRecords(self.workload)
        records.start_s[:] = s.start_s
        records.first_token_s[:] = s.first_token_s
        records.completion_s[:] = s.completion_s
        records.gpu[:] = s.gpu
        records.reject_reason[:] = s.reject_reason
        records.completed[:] = s.completed != 0
        records.tokens_generated[:] = s.tokens_generated
        records.max_token_gap_s[:] = s.max_gap_s
        records.preemptions[:] = s.preemptions
        records.recomputed_tokens[:] = s.recomputed
        if self.prefix_cache is not None:
            records.prefix_hit_tokens[:] = self.prefix_cache.hit_tokens
        for gpu in range(self.n_gpus):
            slots = self._slots(gpu, "n_running")
            running = s.run_id[slots]
            records.tokens_generated[running] = s.run_generated[slots]
            records.max_token_gap_s[running] = s.run_max_gap_s[slots]
        return records

    def _run_counts(self) -> dict[str, int]:
        return iteration_run_counts(self)

    def summary(self, sla: SLATargets | None = None, warmup_s: float = 0.0) -> dict[str, float]:
        """The metrics of the run so far (see :func:`llmsched_env.metrics.summarize`)."""
        return summarize(
            self.records.columns(self.n_arrived),
            end_s=self.now,
            n_gpus=self.n_gpus,
            busy_s=self.busy_time_s(),
            mean_batch_size=self.mean_batch_size(),
            sla=sla or SLATargets(),
            warmup_s=warmup_s,
            **self._run_counts(),
        )


def _tokens(count: float) -> int:
    """A count of tokens (or prompts) as the kernels' integer; ``inf`` (no limit) as a huge one."""
    return int(min(count, 1 << 62))


def _read_only(values: np.ndarray) -> np.ndarray:
    values.flags.writeable = False
    return values
