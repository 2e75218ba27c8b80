"""``llmsched/ContinuousBatching-v0``: iteration-level scheduling, one step per GPU iteration."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from llmsched_env.capacity import iteration_capacity_rps, per_arrival, served_requests
from llmsched_env.config import ContinuousEnvConfig
from llmsched_env.envs.base import SchedulingEnv, built_setting
from llmsched_env.envs.batch_step import REWARD_CODES
from llmsched_env.envs.common import InvalidActionError, configured_arrival_rate, parse_action
from llmsched_env.envs.continuous_action import ContinuousActionCodec
from llmsched_env.envs.footprint import (
    CONTINUOUS_BYTES_PER_REQUEST,
    PAGED_BYTES_PER_BLOCK,
    check_episode_fits,
)
from llmsched_env.envs.iteration_observation import (
    IterationObservation,
    feature_bounds,
    feature_names,
    observation_bounds,
)
from llmsched_env.envs.iteration_step import FORBIDDEN, CompiledSteps, codec_array
from llmsched_env.envs.queue_snapshot import WaitingQueueSnapshot
from llmsched_env.latency import make_iteration_latency
from llmsched_env.metrics import SLATargets
from llmsched_env.sim.compiled_iteration_server import CompiledIterationServer
from llmsched_env.sim.iteration_planning import PrefillPlan
from llmsched_env.sim.iteration_server import (
    IterationServer,
    arrival_rejections,
    check_prefix_blocks,
)
from llmsched_env.sim.prefix_cache_state import row_room
from llmsched_env.workload import Workload


class ContinuousBatchingEnv(SchedulingEnv):
    """Split each GPU iteration's token budget between decoding and prefilling LLM requests.

    ## Description

    G GPUs serve LLM requests with *continuous batching*: every iteration of a GPU processes some
    prefill work (whole prompts, or chunks of them with chunked prefill) and one new token for
    some of its running sequences, within a token budget ``max_tokens`` and at most
    ``max_sequences`` requests per GPU. Prompts wait in one FIFO queue shared by the GPUs; a GPU
    admits them from its head. The iteration that finishes a prompt's prefill emits its first
    token (TTFT); each decode step emits one more (TBT is the gap between consecutive tokens).

    KV memory (``kv_allocation``): by default (``"reserve"``) admission reserves a request's full
    KV footprint, so memory never overflows and nothing is preempted. With ``"paged"`` the GPU
    allocates blocks of ``kv_block_tokens`` tokens as tokens are computed, as vLLM V1 does: the
    deciding GPU's admitted requests get their blocks first, in admission order, and when one
    cannot, the most recently admitted request on the GPU is preempted (its KV is discarded and
    it returns to the front of the queue, to recompute its prompt plus generated tokens when
    readmitted; its next token comes when the recomputation ends). Waiting prompts are admitted
    only in iterations without a preemption, and only while the head's first chunk finds free
    blocks. If every request of an iteration was preempted, no iteration runs and the same GPU
    decides again at once. ``llmsched_env.sim.iteration_server`` states the rules in full.

    Prefix caching (``prefix_caching=True``, paged only) keeps freed KV blocks cached until
    they are evicted, least recently freed first, as vLLM V1's automatic prefix caching does: a
    request admitted (or readmitted after a preemption) skips the prefill of its longest cached
    block-aligned prefix, always computing at least its last token. A request finds its own
    blocks again after a preemption; requests share prompt prefixes when the workload carries
    ``prefix_block_hashes`` (``llmsched_env.workload.prefix_block_hashes_from_token_ids``).

    The environment steps once per iteration: whenever a GPU is free and has work (running
    sequences, a started prompt, or a waiting prompt it can admit). The classic iteration
    schedulers are policies over this action (``baselines``): run-to-completion, prefill-first with
    at most K prompts, decode-first, prefill-first, hybrid with a decode share, chunked prefill,
    vLLM-style and Sarathi-style token budgets.

    ## Action Space

    ``MultiDiscrete([decode_levels, prefill_levels, len(prompt_caps)])``:

    | component | value ``v`` | meaning |
    |-----------|-------------|---------|
    | 0 decode | 0..D-1 | decode the ``ceil(v/(D-1) * running)`` oldest running sequences |
    | 1 prefill | 0..P-1 | prefill budget ``round(v/(P-1) * (max_tokens - decoded))`` tokens |
    | 2 prompt cap | c | admit at most ``prompt_caps[c]`` new prompts (``None``: no cap) |

    Prefill continues the GPU's started prompts first, then admits prompts from the head of the
    queue (whole prompts, or chunks of at most ``chunk_size`` tokens). A cap of 0 admits no new
    prompt: the iteration decodes and continues the started prompts only ("finish what was
    started"). ``[0, 0, *]`` is WAIT: the GPU idles until the next event. Defaults: D = P = 5
    and caps ``(0, 1, 2, 4, 8, 16, None)``. (Before 0.1.0 was released, 0 meant "no cap"; it now
    means "admit none", and ``None`` is "no cap".)

    **Masking.** ``action_masks()`` returns the concatenated per-component mask (sb3-contrib's
    MaskablePPO format): decode levels above 0 need running sequences; a prefill level above 0
    needs prefill it can actually do (a started prompt, or an admissible head prompt that fits in
    that level's budget); level 0 of a component is allowed when the other component can be
    non-zero or WAIT is safe; a cap that admits prompts is always allowed, and a cap of 0 when
    WAIT is safe, sequences run, or a started prompt's next chunk fits some prefill level. WAIT
    (both 0) is forbidden only when it would deadlock, and ``[0, p, cap 0]`` only runs when a
    started prompt continues at level ``p``, which per-component masks cannot express:
    ``joint_action_mask()`` (behind ``FlattenAction``) is exact, and an iteration that would
    do nothing (nothing decoded, nothing prefilled) is never allowed. With
    paged KV an admissible head prompt must also find free blocks for its first chunk at that
    level's budget, so a larger budget (a larger chunk) can be forbidden where a smaller one is
    allowed; beside running sequences (whose decodes shrink the budget) a started prompt or a
    free block for the head suffices. A prefill-only action must make progress (the joint mask
    says which): the oldest started prompt must get its blocks without preempting itself, since
    repeating an iteration that only preempts its own prompt would never end. A
    forbidden action is mapped to "decode all, full prefill budget, no cap" (paged, with nothing
    running: the largest prefill level that makes progress) and flagged in
    ``info["invalid_action"]``, or raises ``InvalidActionError`` with ``invalid_action="raise"``.
    An action outside the action space always raises ``ValueError``. Once the episode is over
    no decision is due and both masks allow WAIT only: a valid mask for the action a vector env
    passes to a finished episode, which it resets instead of carrying out.

    ## Observation Space

    A float32 ``Box``; ``env.unwrapped.obs_names`` names each entry. Times are in units of the
    targets (waits / ttft_sla, gaps and iteration times / tbt_sla); values are clipped.

    | name | meaning | normalisation | range |
    |------|---------|---------------|-------|
    | waiting | prompts waiting | / max_sequences | [0, 16] |
    | waiting_tokens | their prompt tokens (to recompute, if preempted) | / max_tokens | [0, 64] |
    | oldest_wait | age of the oldest waiting prompt | / ttft_sla | [0, 8] |
    | head_prompt | prompt tokens of the queue head (ditto) | / max_tokens | [0, 8] |
    | arrival_rate | arrivals per second over the last ttft_sla | / capacity | [0, 4] |
    | ttft_miss_rate | TTFT misses per finished request (moving) | - | [0, 1] |
    | tbt_miss_rate | TBT misses per finished request (moving) | - | [0, 1] |
    | arrived_fraction | share of the episode's requests arrived | - | [0, 1] |
    | gpu/running | running sequences of the deciding GPU | / max_sequences | [0, 1] |
    | gpu/prefill_remaining | prompt tokens left of its started prompts | / max_tokens | [0, 16] |
    | gpu/mean_generated | mean tokens generated per running sequence | / length scale | [0, 4] |
    | gpu/mean_predicted_remaining | mean predicted tokens to go | / length scale | [0, 4] |
    | gpu/oldest_token_gap | time since its least recent token | / tbt_sla | [0, 4] |
    | gpu/kv_used | KV memory in use (paged: allocated blocks) | / capacity | [0, 1] |
    | gpu/kv_reserved | KV memory reserved (paged: = kv_used) | / capacity | [0, 1] |
    | gpu/last_iteration | duration of its latest iteration | / tbt_sla | [0, 4] |
    | gpu{g}/busy_remaining | per GPU, time until its iteration ends | / tbt_sla | [0, 4] |

    The length scale is the 99th percentile of output lengths in the calibration data.

    ## Rewards

    ``reward="sla"`` (default): +1 when a request finishes having met both its TTFT and TBT
    targets; ``-sla_penalty`` once when its TTFT deadline (arrival plus ``ttft_sla``, plus
    ``ttft_sla_per_token`` per prompt token) passes without a first token (a request
    rejected at arrival counts here), and once when a gap between two of its tokens first exceeds
    ``tbt_sla`` (paid when the late token is produced). The return is exactly
    ``on_time - sla_penalty * (ttft_misses + tbt_misses)``. Example: a request whose first token
    comes late and whose decode never stalls earns -1 (TTFT miss) and nothing at completion.
    Other shapes: ``"goodput-tokens"`` and ``"queue"`` (``llmsched_env.envs.rewards``; the queue
    shape's time unit is ``ttft_sla``).

    ## Starting State

    As in ``BatchScheduling-v0``: ``reset(seed=...)`` draws the episode's requests and advances
    to the first iteration; ``options={"start": i}`` or ``{"workload": w}`` replays fixed inputs;
    ``{"load": x}`` and ``{"arrival_cv": c}`` set this episode's load and arrival burstiness.

    ## Episode End

    * Termination: every request has completed or been rejected.
    * Truncation: ``max_steps`` steps were taken (when set); unfinished requests are reported as
      ``in_system`` (or ``not_arrived``). ``gym.make(..., max_episode_steps=N)`` instead
      wraps Gymnasium's ``TimeLimit``, whose truncation the env does not see: that last step
      has no ``episode_metrics`` (use ``max_steps=N``, or ``env.unwrapped.episode_metrics()``).

    ## Information

    Every ``info`` holds values of a fixed shape only, so that vector envs can stack them:
    ``time_s``, ``gpu`` (the deciding GPU, -1 once the episode is over),
    ``prefill_remaining_tokens`` (of its started prompts), per GPU ``n_running``,
    ``kv_reserved_tokens`` and ``last_iteration_s``; ``preemptions`` (so far, all GPUs);
    ``prefix_hit_tokens`` (prefill tokens skipped by the prefix cache so far, all GPUs);
    ``action_mask``, ``invalid_action`` and ``applied_action`` (the action carried out, an array of
    3; ``[-1, -1, -1]`` at ``reset``). Arrays are fresh copies. ``reset`` adds the constants
    ``max_tokens``, ``max_sequences``, ``chunk_size``, ``kv_allocation``, ``kv_block_tokens``,
    ``prefix_caching``, ``prompt_caps``, ``decode_levels``, ``prefill_levels``, ``ttft_sla_s``,
    ``ttft_sla_per_token_s``, ``tbt_sla_s``, ``capacity_rps`` and ``arrival_rate_rps``. At the end
    of an episode: ``episode_metrics``. ``env.unwrapped.last_info`` is the latest ``info`` returned
    (what a heuristic's SB3-style ``predict`` reads when a vector env hides the infos).

    Queue contents vary in length and are not in ``info``: ``env.unwrapped.queue_snapshot()``
    returns a :class:`~llmsched_env.envs.queue_snapshot.WaitingQueueSnapshot` of the current
    decision, whose cost does not grow with the queue: the waiting prompts (preempted ones at
    the head, then the others oldest first, as read-only views) with their arrival times and
    tokens to prefill, and the deciding GPU's running requests (with their generated and
    predicted output tokens) and started prompts. ``env.unwrapped.prefill_plan(level, cap)``
    says what the action ``[0, level, cap]`` would prefill now (a dry run), and
    ``env.unwrapped.action_codec`` maps action levels to decode counts and prefill budgets
    (:mod:`llmsched_env.envs.continuous_action`). ``env.unwrapped.request_records()`` gives one
    row per request of the episode so far: arrival, start, first token, completion, tokens, GPU
    and outcome (:meth:`~llmsched_env.envs.common.RequestRecordsMixin.request_records`).

    ## Arguments

    | argument | default | meaning |
    |----------|---------|---------|
    | workload | ``"azure-conv"`` | preset name or ``WorkloadSource`` |
    | load | 0.4 | arrival rate / the work-bound capacity (``llmsched_env.capacity``) |
    | arrival_rate | None | arrival rate in requests/s (instead of ``load``) |
    | n_gpus | 1 | GPUs (engine replicas) |
    | latency | ``"vllm0.19-rtxpro6000-llama3.1-8b"`` | iteration latency preset or model |
    | kv_memory | ``"vllm0.19-rtxpro6000-llama3.1-8b"`` | KV memory preset, tokens or ``KVMemory`` |
    | n_requests | 300 | requests per episode |
    | ttft_sla | 1.0 | TTFT target (s) |
    | ttft_sla_per_token | 0.0 | seconds added to the TTFT target per prompt token |
    | tbt_sla | 0.1 | largest allowed gap between tokens (s) |
    | sla_penalty | 1.0 | reward lost per missed target |
    | reward | ``"sla"`` | reward shape |
    | max_tokens | 2048 | token budget per iteration |
    | max_sequences | 256 | requests per GPU |
    | chunk_size | 512 | chunked-prefill chunk (None: whole prompts) |
    | kv_allocation | ``"reserve"`` | ``"reserve"`` (whole footprint at admission) or ``"paged"`` |
    | kv_block_tokens | 16 | tokens per KV block with ``"paged"`` (vLLM's default) |
    | prefix_caching | False | keep freed KV blocks cached for reuse (``"paged"`` only) |
    | decode_levels, prefill_levels | 5, 5 | action granularity |
    | prompt_caps | (0, 1, 2, 4, 8, 16, None) | levels of the prompt cap (0: none, None: no cap) |
    | invalid_action | ``"remap"`` | or ``"raise"`` |
    | max_steps | None | truncation limit |
    | render_mode | None | ``"ansi"`` (text) or ``"rgb_array"`` (bars) |

    Why these defaults: real Azure conversation traffic on Llama-3.1-8B served by vLLM 0.19 on
    one RTX PRO 6000, with iteration times built from that GPU's measured per-layer profiles (a
    setting ``llmsched validate`` checks against a real vLLM run: mean TPOT and E2E within 1%),
    vLLM's usual 2048-token budget and 512-token chunks. The work bound (``capacity_rps``, 12.1
    requests/s here) counts only each request's marginal GPU work, while a decode iteration
    mostly reads the weights, so real batches sustain about half of it. The load is where
    scheduling matters: the largest tested load at which the best baseline stays stable but is
    stressed. At 0.4 (4.8 requests/s; 5 seeds of 300 requests) Sarathi-style scheduling meets
    both targets for 84% of the requests with a flat queue, prefill-first for 10%; at 0.5 the
    best baseline's queue grows (7% of the arrivals accumulate) and it meets them for 51%
    (``docs/continuous-batching.md`` has the table). The prefill/decode trade-off decides which
    requests make a 1 s TTFT and a 100 ms TBT target.

    ## References

    * Agrawal et al., Sarathi-Serve (OSDI 2024): chunked prefill and stall-free batching.
    * Kwon et al., vLLM / PagedAttention (SOSP 2023); vLLM V1's scheduler
      (``vllm/v1/core/sched/scheduler.py``) for paged allocation and preemption.
    * Li, Dai, Peng, throughput-optimal LLM scheduling, arXiv 2504.07347 (iteration cost model).

    ## Version History

    * v0: Initial version. The ``kv_allocation="paged"`` and ``prefix_caching`` options were
      added later; the defaults (``"reserve"``, ``False``) keep the original dynamics. The
      queue arrays of ``info`` (``waiting``, ``waiting_arrival_s``, ``waiting_prompt_tokens``,
      ``running``, ``running_tokens_generated``, ``running_predicted_output_tokens``,
      ``prefilling``) moved to ``queue_snapshot()``; the dynamics did not change. Before the
      first release the prompt-cap levels changed meaning: 0 admits no new prompt (it meant no
      cap) and ``None`` is no cap; the default levels became ``(0, 1, 2, 4, 8, 16, None)``.
    """

    config_class = ContinuousEnvConfig

    def __init__(
        self,
        workload: Any = "azure-conv",
        load: float | None = None,
        arrival_rate: float | None = None,
        n_gpus: int = 1,
        latency: Any = "vllm0.19-rtxpro6000-llama3.1-8b",
        kv_memory: Any = "vllm0.19-rtxpro6000-llama3.1-8b",
        n_requests: int = 300,
        ttft_sla: float = 1.0,
        ttft_sla_per_token: float = 0.0,
        tbt_sla: float = 0.1,
        sla_penalty: float = 1.0,
        reward: str = "sla",
        max_tokens: int = 2048,
        max_sequences: int = 256,
        chunk_size: int | None = 512,
        kv_allocation: str = "reserve",
        kv_block_tokens: int = 16,
        prefix_caching: bool = False,
        decode_levels: int = 5,
        prefill_levels: int = 5,
        prompt_caps: tuple[int | None, ...] = (0, 1, 2, 4, 8, 16, None),
        invalid_action: str = "remap",
        max_steps: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        cfg: ContinuousEnvConfig = self._set_up(locals(), CONTINUOUS_BYTES_PER_REQUEST)
        self.latency = built_setting(cfg.owner, "latency", cfg.latency, make_iteration_latency)
        self.paged = cfg.kv_allocation == "paged"
        if self.paged and self.kv_capacity_tokens < cfg.kv_block_tokens:
            raise ValueError(
                f"kv_block_tokens={cfg.kv_block_tokens!r} is larger than the KV memory "
                f"({self.kv_capacity_tokens} tokens): paged allocation needs at least one block"
            )
        everyone = self.source.calibration()
        if self.paged:  # each GPU keeps a pool of its blocks
            blocks = -(-self.kv_capacity_tokens // cfg.kv_block_tokens)
            fixed = blocks * PAGED_BYTES_PER_BLOCK
            if cfg.prefix_caching:  # and a list of blocks per sequence slot
                rows = min(cfg.max_sequences, cfg.n_requests)
                fixed += rows * row_room(everyone, cfg.kv_block_tokens, blocks) * 8
            check_episode_fits(
                cfg.owner,
                cfg.n_requests,
                CONTINUOUS_BYTES_PER_REQUEST + self._hash_bytes_per_request,
                fixed_bytes=cfg.n_gpus * fixed,
                fixed_for=f"the KV blocks of n_gpus={cfg.n_gpus} GPUs",
            )
        if self.paged and cfg.prefix_caching:  # found at construction, not at the first reset
            check_prefix_blocks(everyone, cfg.kv_block_tokens)
        rejected = arrival_rejections(
            everyone.prompt_tokens,
            everyone.output_tokens,
            kv_capacity_tokens=self.kv_capacity_tokens,
            max_tokens=cfg.max_tokens,
            chunk_size=cfg.chunk_size,
            kv_allocation=cfg.kv_allocation,
            kv_block_tokens=cfg.kv_block_tokens,
        )
        #: Per calibration request, whether the env would serve it (the others are rejected at
        #: arrival), and those requests: what the capacity estimate is made of.
        self.capacity_served = rejected == 0
        self.capacity_calibration = served_requests(everyone, self.capacity_served)
        self.capacity_rps = per_arrival(
            self.served_capacity_rps(self.capacity_calibration), self.capacity_served
        )
        self.arrival_rate_rps = configured_arrival_rate(
            cfg.owner, cfg.arrival_rate, cfg.load, self.capacity_rps, cfg.n_requests
        )
        self.length_scale_tokens = float(max(np.quantile(everyone.output_tokens, 0.99), 1.0))
        #: The prompt caps with ``None`` (no cap) resolved to ``max_sequences``.
        self.prompt_caps = tuple(cfg.max_sequences if c is None else c for c in cfg.prompt_caps)
        self.obs_names = feature_names(cfg.n_gpus)
        low, high = feature_bounds(cfg.n_gpus)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        #: The meaning of an action (decode count, prefill budget, prompt cap), shared with the
        #: baselines.
        self.action_codec = ContinuousActionCodec(
            cfg.decode_levels, cfg.prefill_levels, self.prompt_caps, cfg.max_tokens
        )
        self._nvec = self.action_codec.nvec
        self.action_space = spaces.MultiDiscrete(list(self._nvec))
        # Prefill budget of each prefill level when nothing is decoded (for the mask).
        self._level_budgets = list(self.action_codec.level_budgets)
        self._prefill_budgets = self._level_budgets[1:]  # of the levels that prefill
        self._caps_admit_none = 0 in self.prompt_caps
        #: The masks made so far, by the answers they are made of (see ``_compute_mask``).
        self._masks_made: dict[tuple[bool, ...], np.ndarray] = {}
        #: The answers of the current decision (``()`` before the first and after the last).
        self._answers: tuple[bool, ...] = ()
        #: The answers of each ``answers`` array of the compiled steps seen so far, by its bytes.
        self._answer_keys: dict[bytes, tuple[bool, ...]] = {}
        self._codec_array = codec_array(self.action_codec)
        self._steps_compiled: CompiledSteps | None = None
        self.server: IterationServer | CompiledIterationServer | None = None
        self._observer: IterationObservation | None = None

    # ------------------------------------------------------------------ gymnasium API
    def served_capacity_rps(self, calibration: Workload) -> float:
        """Requests per second the GPUs serve of ``calibration``'s mix (its work bound).

        With no per-token work (latency ``"mm1"``) the work bound is infinite, and the estimate
        is the rate of serving requests one at a time (prefill, then decode steps alone).
        """
        mean_prompt = float(np.mean(calibration.prompt_tokens))
        mean_output = float(np.mean(calibration.output_tokens))
        n_gpus = self.config.n_gpus
        if self._has_token_work(mean_prompt, mean_output):
            return iteration_capacity_rps(self.latency, calibration, n_gpus=n_gpus)
        return n_gpus / self._request_s(mean_prompt, mean_output, token_work=False)

    def request_work_s(self, calibration: Workload) -> np.ndarray:
        """Each request's GPU time in the work bound of :meth:`served_capacity_rps`.

        Its token work (``marginal_request_s`` of its own lengths), or, with no per-token work,
        its time served alone. The estimate itself takes the work of the mean lengths, which
        differs from the mean of these (attention grows with the context); these give the
        relative cost of parts of the mix (``Routing-v0``'s classes of requests).
        """
        token_work = self._has_token_work(
            float(np.mean(calibration.prompt_tokens)), float(np.mean(calibration.output_tokens))
        )
        pairs = zip(calibration.prompt_tokens.tolist(), calibration.output_tokens.tolist())
        work = [self._request_s(p, o, token_work=token_work) for p, o in pairs]
        return np.array(work, dtype=np.float64)

    def _has_token_work(self, prompt_tokens: float, output_tokens: float) -> bool:
        """Whether the latency model charges per token (``"mm1"`` does not)."""
        return self.latency.marginal_request_s(prompt_tokens, output_tokens) > 0

    def _request_s(self, prompt_tokens: float, output_tokens: float, *, token_work: bool) -> float:
        """A request's GPU time in the work bound: its token work, or its time served alone."""
        latency = self.latency
        if token_work:
            return latency.marginal_request_s(prompt_tokens, output_tokens)
        decode_s = latency.estimate_s(0, 1)
        return latency.estimate_s(prompt_tokens, 0) + (output_tokens - 1.0) * decode_s

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; see the class docstring's Starting State."""
        workload = self._new_episode(seed, options)
        cfg = self.config
        compiled = self._compiles_steps()
        server_class = CompiledIterationServer if compiled else IterationServer
        self.server = server_class(
            workload,
            n_gpus=cfg.n_gpus,
            latency=self.latency,
            kv_capacity_tokens=self.kv_capacity_tokens,
            max_tokens=cfg.max_tokens,
            max_sequences=cfg.max_sequences,
            rng=self.np_random,
            chunk_size=cfg.chunk_size,
            ttft_deadline_s=cfg.ttft_sla,
            ttft_per_token_s=cfg.ttft_sla_per_token,
            tbt_target_s=cfg.tbt_sla,
            kv_allocation=cfg.kv_allocation,
            kv_block_tokens=cfg.kv_block_tokens,
            prefix_caching=cfg.prefix_caching,
        )
        self._reward = self._reward_factory(cfg.sla_penalty, cfg.ttft_sla)
        self._reward.reset(self.server)
        if compiled:
            self._observer = None
            self._steps_compiled = CompiledSteps(
                self.server,
                self._codec_array,
                np.array([cfg.ttft_sla, cfg.tbt_sla, self.length_scale_tokens, self.capacity_rps]),
                observation_bounds(cfg.n_gpus),
                REWARD_CODES[self._reward.name],
                self._reward.sla_penalty,
                self._reward.time_scale_s,
                cfg.invalid_action == "raise",
            )
        else:
            self._steps_compiled = None
            self._observer = IterationObservation(
                self.server,
                ttft_sla_s=cfg.ttft_sla,
                tbt_sla_s=cfg.tbt_sla,
                length_scale_tokens=self.length_scale_tokens,
                capacity_rps=self.capacity_rps,
            )
        self._first_decision(workload)
        if compiled:
            obs, remaining = self._steps_compiled.observe()
            info = self._compiled_info(invalid=False, applied=None, remaining=remaining)
        else:
            obs = None
            info = self._info(invalid=False, applied=None)
        info.update(
            max_tokens=cfg.max_tokens,
            max_sequences=cfg.max_sequences,
            chunk_size=cfg.chunk_size,
            kv_allocation=cfg.kv_allocation,
            kv_block_tokens=cfg.kv_block_tokens,
            prefix_caching=cfg.prefix_caching,
            prompt_caps=cfg.prompt_caps,
            decode_levels=cfg.decode_levels,
            prefill_levels=cfg.prefill_levels,
            ttft_sla_s=cfg.ttft_sla,
            ttft_sla_per_token_s=cfg.ttft_sla_per_token,
            tbt_sla_s=cfg.tbt_sla,
            capacity_rps=self.capacity_rps,
            arrival_rate_rps=self.episode_arrival_rate_rps,
        )
        self.last_info = info
        return (self._observe() if obs is None else obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Form the deciding GPU's next iteration and advance to the next decision."""
        server = self._running_server()
        if self._steps_compiled is not None:
            return self._compiled_step(action)
        invalid, applied = self._carry_out(action)
        return self._finish_step(server.advance(), invalid, applied)

    def _compiles_steps(self) -> bool:
        """Whether episodes run compiled steps (:mod:`llmsched_env.envs.iteration_step`).

        They need a latency model with a compiled timing (every preset but the stochastic
        ``sim-a`` and ``mm1``) and one of the shipped reward shapes; other settings run the
        Python server and step.
        """
        cfg = self.config
        return (
            getattr(self.latency, "compiled_timing", lambda: None)() is not None
            and cfg.reward in REWARD_CODES
        )

    def _compiled_step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """:meth:`step` by the compiled step: the same episode as the Python path, bit for bit."""
        decode, prefill, cap = parse_action(action, self._nvec)
        code, invalid, *applied, due, value, remaining, obs = self._steps_compiled.step(
            decode, prefill, cap
        )
        if code == FORBIDDEN:
            why = self._why_forbidden(decode, prefill, cap)
            raise InvalidActionError(
                f"action {[decode, prefill, cap]} is forbidden by the mask rules: {why}"
            )
        if code:
            self.server.raise_refusal(code)
        terminated, truncated = self._count_step(bool(due))
        reward = self._reward.take(float(value))
        info = self._compiled_info(
            invalid=bool(invalid), applied=tuple(map(int, applied)), remaining=int(remaining)
        )
        if self._episode_over:
            info["episode_metrics"] = self.episode_metrics()
        self.last_info = info
        return obs, reward, terminated, truncated, info

    def _carry_out(self, action: Any) -> tuple[bool, tuple[int, int, int]]:
        """Check ``action`` against the mask and make the deciding GPU's decision, no more.

        The server is left right after the decision (``step`` then advances it to the next
        one); ``llmsched/Routing-v0`` drives its replicas' servers through this too.

        Returns:
            Whether the action was forbidden, and the action carried out.
        """
        server = self.server
        decode, prefill, cap = parse_action(action, self._nvec)
        invalid = not self._allowed(decode, prefill, cap)
        if invalid:
            if self.config.invalid_action == "raise":
                why = self._why_forbidden(decode, prefill, cap)
                raise InvalidActionError(
                    f"action {[decode, prefill, cap]} is forbidden by the mask rules: {why}"
                )
            decode, prefill, cap = self._fallback()
        if decode == 0 and prefill == 0:
            server.wait()
        else:
            running = server.running[server.decision_gpu].size
            server.run_iteration(*self.action_codec.decode((decode, prefill, cap), running))
        return invalid, (decode, prefill, cap)

    def _prefill_allowed(self, level: int) -> bool:
        """Whether prefill ``level`` is allowed beside decodes (the per-component mask)."""
        server = self.server
        budget = self._level_budgets[level]
        return level == 0 or server.prefill_allowed(server.decision_gpu, budget, True)

    def _prefill_only_allowed(self, level: int) -> bool:
        """Paged mode: whether ``[0, level, *]`` makes progress, exactly.

        See ``IterationServer.prefill_progresses``: larger budgets make larger chunks, so the
        allowed levels need not be the upper ones.
        """
        server = self.server
        return server.prefill_allowed(server.decision_gpu, self._level_budgets[level], False)

    def _continue_only_allowed(self, level: int) -> bool:
        """Whether ``[0, level, cap 0]`` makes progress: a started prompt's chunk runs.

        Cap 0 admits no prompt, so a prefill-only iteration needs a started prompt whose next
        chunk fits the level's budget (and, paged, gets its blocks without preempting itself:
        ``IterationServer.prefill_progresses`` checks the oldest started prompt, which comes
        first). Otherwise the iteration would be empty, a no-op that is never allowed.
        """
        server = self.server
        gpu = server.decision_gpu
        return bool(server.prefilling[gpu]) and server.prefill_progresses(
            gpu, self._level_budgets[level]
        )

    def _allowed(self, decode: int, prefill: int, cap: int) -> bool:
        """Whether ``[decode, prefill, cap]`` is allowed: exactly :meth:`joint_action_mask`.

        The answers the decision's mask was made of (:meth:`_compute_mask`) settle WAIT, every
        action that decodes and, in reserve mode, prefill alone; what they cannot say (a
        prefill-only iteration with a cap of 0, or in paged mode) is asked of the server.
        """
        answers = self._answers
        if decode == 0 and prefill == 0:
            return answers[1]
        if decode > 0:
            return answers[0] and (prefill == 0 or answers[2 + prefill])
        if self.prompt_caps[cap] == 0:
            return self._continue_only_allowed(prefill)
        if self.paged:
            return self._prefill_only_allowed(prefill)
        return answers[2 + prefill]

    def _why_forbidden(self, decode: int, prefill: int, cap: int) -> str:
        """Which rule forbids ``(decode, prefill)``, with the mask that encodes it.

        The per-component mask of :meth:`action_masks` cannot express the joint rules (WAIT is
        ``decode = prefill = 0``, allowed only while something is in flight; decode levels need
        running sequences), so the message states the joint rule instead of a per-component
        mask that may allow both components separately.
        """
        server = self.server
        d = self._nvec[0]
        decode_mask = self._mask[:d].tolist()
        prefill_mask = self._mask[d : d + self._nvec[1]].tolist()
        if decode == 0 and prefill == 0:
            return (
                "decode level 0 with prefill level 0 is WAIT, which is allowed only while an "
                "iteration is running or a request is yet to arrive (joint rule: can_wait() is "
                f"False now); per-component masks: decode {decode_mask}, prefill {prefill_mask}"
            )
        gpu = server.decision_gpu
        if decode > 0 and server.running[gpu].size == 0:
            return (
                f"decode level {decode} needs running sequences and GPU {gpu} has none "
                f"(decode mask {decode_mask})"
            )
        if decode == 0 and self.prompt_caps[cap] == 0:
            return (
                f"prompt-cap level {cap} admits no new prompt, so prefill level {prefill} without "
                f"decodes needs a started prompt on GPU {gpu} whose next chunk fits its budget "
                f"({self._level_budgets[prefill]} tokens) and its free KV memory; GPU {gpu} has "
                f"{len(server.prefilling[gpu])} started prompts (an empty iteration is never "
                f"allowed)"
            )
        return (
            f"prefill level {prefill} cannot form an iteration with decode level {decode} "
            f"(no waiting prompt fits the budget or the free KV memory; prefill mask "
            f"{prefill_mask})"
        )

    def _fallback(self) -> tuple[int, int, int]:
        """Decode every running sequence and give prefill the whole remaining budget.

        Paged mode without running sequences: the largest prefill level that forms an
        iteration (the whole budget's first chunk may not fit the free blocks).
        """
        server = self.server
        cfg = self.config
        running = server.running[server.decision_gpu].size > 0
        decode = cfg.decode_levels - 1 if running else 0
        cap = self.action_codec.uncapped
        if self.paged:
            levels = range(cfg.prefill_levels - 1, 0, -1)
            ok = self._prefill_allowed if running else self._prefill_only_allowed
            return decode, next((v for v in levels if ok(v)), 0), cap
        prefill = cfg.prefill_levels - 1 if server.can_prefill(server.decision_gpu) else 0
        return decode, prefill, cap

    def _compute_mask(self) -> np.ndarray:
        """The per-component mask of the decision, from the server's queries (read-only).

        After the episode's last step no decision is due; the mask then allows WAIT only (decode
        and prefill level 0, every cap), a valid mask for the action a vector env passes to a
        finished episode (it resets instead of carrying the action out).

        The mask is a function of a few answers (running sequences, WAIT safe, a cap of 0
        possible, each prefill level allowed), so each combination's array is made once per env
        and shared: :meth:`action_masks` and ``info`` hand out copies.
        """
        server = self.server
        gpu = server.decision_gpu
        if gpu < 0 or self._episode_over:
            key: tuple[bool, ...] = ()
        else:
            running = server.running[gpu].size > 0
            can_wait = server.can_wait()
            zero_ok = can_wait or running
            if not zero_ok and self._caps_admit_none:
                zero_ok = any(
                    self._continue_only_allowed(level) for level in range(1, self._nvec[1])
                )
            key = (
                running,
                can_wait,
                zero_ok,
                *server.prefill_allowed_budgets(gpu, self._prefill_budgets, True),
            )
        self._answers = key
        mask = self._masks_made.get(key)
        if mask is None:
            mask = self._masks_made[key] = self._make_mask(key)
        return mask

    def _make_mask(self, answers: tuple[bool, ...]) -> np.ndarray:
        """The read-only mask of a decision's answers (see :meth:`_compute_mask`).

        Args:
            answers: ``()`` once the episode is over; otherwise whether sequences run, whether
                WAIT is safe, whether a cap of 0 forms an iteration, then per prefill level
                above 0 whether it is allowed beside decodes.
        """
        d, p, c = self._nvec
        if not answers:
            mask = np.zeros(d + p + c, dtype=bool)
            mask[0] = mask[d] = True
            mask[d + p :] = True
        else:
            running, can_wait, zero_ok, *prefill_ok = answers
            # A cap of 0 forms an iteration beside decodes, as WAIT, or with a started prompt's
            # chunk; a cap that admits prompts goes with every allowed decode and prefill level.
            mask = np.array(
                [can_wait or any(prefill_ok)]
                + [running] * (d - 1)
                + [can_wait or running]
                + prefill_ok
                + [zero_ok or cap > 0 for cap in self.prompt_caps]
            )
        mask.flags.writeable = False
        return mask

    def joint_action_mask(self) -> np.ndarray:
        """Exact validity of every action, shape ``nvec``.

        WAIT and decode-only actions are listed with prompt-cap level 0 only (the cap does not
        matter without prefill). Levels that come to the same iteration (decode levels whose
        shares round to the same count when few sequences run, prefill budgets beyond what
        waits) stay separate allowed actions.
        """
        server = self.server
        if server is None:
            raise RuntimeError("call reset() before joint_action_mask()")
        d, p, c = self._nvec
        mask = np.zeros(self._nvec, dtype=bool)
        gpu = server.decision_gpu
        if gpu < 0 or self._episode_over:
            mask[0, 0, 0] = True  # the episode is over: WAIT only, as in action_masks()
            return mask
        running = server.running[gpu].size > 0
        mask[0, 0, 0] = server.can_wait()
        mask[1:, 0, 0] = running
        admits = np.array([cap > 0 for cap in self.prompt_caps])
        for level in range(1, p):
            if self._prefill_allowed(level):
                alone = not self.paged or self._prefill_only_allowed(level)
                # Cap 0 admits nothing: without decodes, a started prompt must continue.
                mask[0, level, :] = alone & (admits | self._continue_only_allowed(level))
                mask[1:, level, :] = running
        return mask

    def action_allowed(self, action: Any) -> bool:
        """Whether ``action`` is allowed now: its entry of :meth:`joint_action_mask`, alone.

        A few of the server's queries at most, for a policy that weighs one or two actions: the
        per-component mask of :meth:`action_masks` says that a prefill level forms *some*
        iteration, but with paged KV memory only the joint rule says whether it forms one
        without decodes (the whole budget's first chunk may not get its blocks while a smaller
        one does). Any prompt cap is accepted with WAIT or without prefill, as by ``step``.

        Raises:
            ValueError: If ``action`` is not in the action space.
            RuntimeError: Before ``reset``.
        """
        if self.server is None:
            raise RuntimeError("call reset() before action_allowed()")
        decode, prefill, cap = parse_action(action, self._nvec)
        if self._episode_over:
            return decode == 0 and prefill == 0  # WAIT only, as in action_masks()
        return self._allowed(decode, prefill, cap)

    def _sla_targets(self) -> SLATargets:
        cfg = self.config
        return SLATargets(
            ttft_s=cfg.ttft_sla, tbt_s=cfg.tbt_sla, ttft_per_token_s=cfg.ttft_sla_per_token
        )

    def queue_snapshot(self) -> WaitingQueueSnapshot:
        """The waiting queue and the deciding GPU's requests now.

        The never-admitted part of the queue is a read-only view, the rest small copies, so its
        cost does not grow with the queue (see :class:`WaitingQueueSnapshot`); this is where
        heuristics and agents read queue contents, which ``info`` does not carry. Once the
        episode is over no GPU is deciding (``gpu`` is -1, with no running or started requests).
        """
        s = self.server
        if s is None:
            raise RuntimeError("call reset() before queue_snapshot()")
        preempted = np.fromiter(s.requeued, np.int64, len(s.requeued))
        head, tail = s.queue_head, s.queue_tail
        gpu = -1 if self._episode_over else s.decision_gpu
        # A copy (at most max_sequences requests): a view of the server's array could be made
        # writable again, and writing to it would change the episode.
        running = s.running[gpu].copy() if gpu >= 0 else np.zeros(0, dtype=np.int64)
        running.flags.writeable = False
        return WaitingQueueSnapshot(
            gpu=gpu,
            preempted=preempted,
            preempted_arrival_s=s.workload.arrival_s[preempted],
            preempted_tokens=np.array(
                [s.tokens_to_prefill(i) for i in s.requeued], dtype=s.queue_prompt_tokens.dtype
            ),
            queued=s.queue_order[head:tail],
            queued_arrival_s=s.queue_arrival_s[head:tail],
            queued_prompt_tokens=s.queue_prompt_tokens[head:tail],
            running=running,
            running_tokens_generated=(
                s.running_tokens_generated(gpu) if gpu >= 0 else np.zeros(0, dtype=np.int64)
            ),
            running_predicted_output_tokens=s.workload.predicted_output_tokens[running],
            prefilling=tuple(s.prefilling[gpu]) if gpu >= 0 else (),
        )

    def prefill_plan(self, prefill_level: int, cap_level: int) -> PrefillPlan:
        """What the action ``[0, prefill_level, cap_level]`` would prefill now, without acting.

        The server's dry run (``IterationServer.plan_prefill``): the started prompts' chunks,
        then the prompts admitted from the head of the queue within the level's budget, the cap,
        the sequence slots and KV memory.

        Raises:
            ValueError: If a level is not an integer of its action component's range.
            RuntimeError: If no decision is due (before ``reset``, or the episode is over).
        """
        for name, level, n in (
            ("prefill_level", prefill_level, self._nvec[1]),
            ("cap_level", cap_level, self._nvec[2]),
        ):
            whole = isinstance(level, int | np.integer) and not isinstance(level, bool)
            if not whole or not 0 <= level < n:
                raise ValueError(f"{name} must be an integer in [0, {n - 1}], got {level!r}")
        s = self.server
        if s is None or s.decision_gpu < 0 or self._episode_over:
            raise RuntimeError("prefill_plan() needs a decision: call reset() (or step())")
        codec = self.action_codec
        budget = codec.prefill_budget(prefill_level, 0)
        return s.plan_prefill(s.decision_gpu, budget, codec.prompt_caps[cap_level])

    def _bars(self) -> tuple[list[float], list[int]]:
        """Waiting prompt tokens (/ 4 max_tokens); per GPU, running sequences and KV in use."""
        s = self.server
        fractions = [s.waiting_prompt_tokens() / (4 * s.max_tokens)]
        groups = [0]
        for g in range(s.n_gpus):
            fractions += [
                s.running[g].size / s.max_sequences,
                s.kv_used[g] / s.kv_capacity_tokens,
            ]
            groups += [1, 2]
        return fractions, groups

    def _outcome_text(self) -> str:
        s = self.server
        return f"TTFT misses {s.n_ttft_misses}  TBT misses {s.n_tbt_misses}"

    def _render_lines(self) -> list[str]:
        """The waiting queue, then one line per GPU."""
        s = self.server
        deciding = -1 if self._episode_over else s.decision_gpu
        lines = [f"  waiting: {s.n_waiting} prompts, {s.waiting_prompt_tokens()} tokens"]
        for g in range(s.n_gpus):
            state = f"busy until {s.gpu_free_at[g]:10.3f}s" if s.gpu_busy[g] else "idle"
            marker = "  <- deciding" if g == deciding else ""
            lines.append(
                f"  gpu {g}: {state}, {s.running[g].size} decoding, {len(s.prefilling[g])} "
                f"prefilling, KV {s.kv_used[g]}/{s.kv_capacity_tokens} tokens{marker}"
            )
        return lines

    # ------------------------------------------------------------------ helpers
    def _observe(self) -> np.ndarray:
        if self._steps_compiled is not None:
            return self._steps_compiled.observe()[0]
        self._observer.update_rates()
        return self._observer.build()

    def _compiled_info(
        self, *, invalid: bool, applied: tuple[int, int, int] | None, remaining: int
    ) -> dict[str, Any]:
        """:meth:`_info` of a compiled step, from the state and the step's mask answers."""
        s = self.server.state
        gpu = -1 if self._episode_over else int(s.decision_gpu[0])
        if self._episode_over:
            key: tuple[bool, ...] = ()
        else:
            raw = self._steps_compiled.answers
            key = self._answer_keys.get(raw.tobytes())
            if key is None:
                key = self._answer_keys[raw.tobytes()] = tuple(v != 0 for v in raw.tolist())
        self._answers = key
        mask = self._masks_made.get(key)
        if mask is None:
            mask = self._masks_made[key] = self._make_mask(key)
        self._mask = mask
        return {
            "time_s": float(s.now[0]),
            "gpu": gpu,
            "prefill_remaining_tokens": remaining if gpu >= 0 else 0,
            "n_running": s.n_running.copy(),
            "kv_reserved_tokens": s.kv_reserved.copy(),
            "preemptions": int(s.n_preemptions[0]),
            "prefix_hit_tokens": self.server.prefix_hit_tokens,
            "last_iteration_s": s.last_iteration_s.copy(),
            "action_mask": mask.copy(),
            "invalid_action": invalid,
            "applied_action": np.array(applied if applied is not None else (-1, -1, -1)),
        }

    def _info(self, *, invalid: bool, applied: tuple[int, int, int] | None) -> dict[str, Any]:
        """The step's ``info``: scalars and arrays whose shape is fixed for the episode.

        Queue contents vary in length, so they are read from :meth:`queue_snapshot` instead
        (vector envs stack every ``info`` value, and copying the queue at every step would make
        a step's cost grow with the queue).
        """
        s = self.server
        gpu = -1 if self._episode_over else s.decision_gpu
        self._mask = self._compute_mask()
        return {
            "time_s": s.now,
            "gpu": gpu,
            "prefill_remaining_tokens": s.prefill_remaining_tokens(gpu) if gpu >= 0 else 0,
            "n_running": np.array([r.size for r in s.running]),
            "kv_reserved_tokens": np.array(s.kv_reserved),
            "preemptions": s.n_preemptions,
            "prefix_hit_tokens": s.prefix_hit_tokens,
            "last_iteration_s": np.array(s.last_iteration_s),
            "action_mask": self._mask.copy(),
            "invalid_action": invalid,
            "applied_action": np.array(applied if applied is not None else (-1, -1, -1)),
        }
