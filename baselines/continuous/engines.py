"""Engine-style token-budget schedulers: vLLM (prefill first), Sarathi-Serve and vLLM V1.

All form *mixed* iterations within the token budget ``max_tokens``; they differ in who gets the
budget first.

* vLLM's default scheduler (Kwon et al., SOSP 2023) schedules waiting prefills before running
  decodes. :class:`VLLMStyle` gives the budget to prefill first and lets the decodes use what is
  left in the same iteration.
* Sarathi-Serve (Agrawal et al., OSDI 2024) is "stall-free": every running sequence decodes in
  every iteration, and the rest of the budget is filled with prefill *chunks*, so a long prompt
  never stalls the decodes for a whole prefill. :class:`SarathiStyle` does exactly that with the
  env's ``chunk_size``.
* vLLM V1's scheduler (the default of vLLM 0.19) is unified: every running request is scheduled
  first, then waiting ones fill the rest of ``max_num_batched_tokens`` in chunks, with paged KV
  blocks and preemption. :class:`VLLMV1` is its policy for an env that models those blocks.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from baselines.continuous._common import ContinuousPolicy


class VLLMStyle(ContinuousPolicy):
    """Prefill first within the token budget; the decodes take what the prefill leaves.

    Each decision asks the env for the prefill tokens ``p`` it would take with the whole budget
    (its dry run ``prefill_plan()``: started chunks, then FIFO prompts while they fit, sequence
    slots remain and KV memory allows), then decodes ``min(running, max_tokens - p)`` sequences
    in the same iteration.

    Action: ``[v, P-1, no cap]`` where ``v = D-1`` (decode all) when every running sequence fits
    in ``max_tokens - p``; otherwise ``v`` is the largest decode level whose count
    ``ceil(v / (D-1) * running)`` fits, so prefill gets its ``p`` tokens and the decodes may
    get fewer slots than are left (with the default ``D = 5``, at worst a quarter of the running
    sequences fewer, or none when even a quarter does not fit). Without prefill work,
    ``[D-1, 0, *]``.

    With paged KV memory two things differ. The whole budget's prefill alone may not get its
    blocks (a started prompt's next chunk does not fit the free blocks) while a smaller level's
    does: the prefill is then the largest level that forms an iteration on its own, ``p`` is
    that level's plan, and the decodes take the rest. And an iteration's decodes take their new
    blocks before the prefill does (the env's order, as vLLM's for running requests), so under
    memory pressure a decode can preempt the prompt being prefilled: the prefill then gets less
    than ``p``. With reserved KV memory (the env's default) neither happens.

    Args:
        env: A ``ContinuousBatching-v0`` environment.
    """

    name = "vllm"

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Prefill first, decode in the leftover budget."""
        running = self.running(info)
        level = self.prefill_level(info)
        prefill_tokens = self.env.prefill_plan(level, self.uncapped).tokens if level else 0
        if prefill_tokens == 0:
            return self.feasible(self.action(self.decode_levels - 1 if running else 0, 0), info)
        left = self.max_tokens - prefill_tokens
        if running == 0:
            decode = 0
        elif running <= left:
            decode = self.decode_levels - 1
        else:
            decode = self.codec.largest_decode_level_within(running, left)
        return self.feasible(self.action(decode, level), info)

    def prefill_level(self, info: dict[str, Any]) -> int:
        """The largest prefill level that forms an iteration without decodes (0: none).

        ``P-1`` whenever the mask allows prefill and the env takes the whole budget's prefill on
        its own; with paged KV a smaller level when only its chunk gets blocks.
        """
        if not self.prefill_allowed(info):
            return 0
        for level in range(self.prefill_levels - 1, 0, -1):
            if self.env.action_allowed(self.action(0, level)):
                return level
        return 0


class SarathiStyle(ContinuousPolicy):
    """Decode every running sequence, fill the remaining budget with prefill chunks.

    Action: ``[D-1, P-1, no cap]`` (``[D-1, 0, *]`` when the mask forbids prefill, ``[0, P-1,
    no cap]`` when nothing runs): all running sequences decode (up to ``max_tokens``) and prefill
    gets ``max_tokens - running`` tokens, continuing started prompts first, at most
    ``chunk_size`` tokens per prompt per iteration.

    The chunks are the env's: with ``chunk_size=None`` prompts are prefilled whole and this is
    decode-first mixed batching without chunks (the same actions as ``Hybrid(1.0)``); a
    ``UserWarning`` says so.

    Args:
        env: A ``ContinuousBatching-v0`` environment, normally with ``chunk_size`` set.
    """

    name = "sarathi"

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        if self.chunk_size is None:
            self.warn(
                "the env prefills whole prompts (chunk_size=None), so there are no prefill "
                "chunks: this runs as decode-first mixed batching; set chunk_size for Sarathi"
            )

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Decode all, prefill chunks in the leftover budget."""
        decode = self.decode_levels - 1 if self.running(info) else 0
        prefill = self.prefill_levels - 1 if self.prefill_allowed(info) else 0
        return self.feasible(self.action(decode, prefill), info)


class VLLMV1(ContinuousPolicy):
    """vLLM V1's default scheduling (vLLM 0.19): decode every running sequence, prefill the rest.

    vLLM V1's scheduler (``vllm/v1/core/sched/scheduler.py``) has no prefill or decode phase:
    each step it first gives every running request its next tokens (one for a decoding request,
    a chunk for a partially prefilled one), then admits waiting requests first come first served
    into what is left of the token budget ``max_num_batched_tokens``, chunking the last one, with
    no cap on the number admitted; KV memory is paged (Kwon et al., PagedAttention, SOSP 2023)
    and a request that cannot get its blocks preempts the most recently admitted one.

    Action: ``[D-1, P-1, no cap]`` (``[D-1, 0, *]`` when the mask forbids prefill, ``[0, P-1,
    no cap]`` when nothing runs). The env does the rest, so this is vLLM V1 only in an env built
    with ``kv_allocation="paged"`` (the block allocation, preemption and head-of-line blocking)
    and ``chunk_size=max_tokens`` (chunked prefill that may fill the whole budget, vLLM's
    ``long_prefill_token_threshold = 0``); a ``UserWarning`` says when the env differs. One
    difference remains: the env counts the decodes against the budget first, while vLLM serves
    running requests in admission order, so an older partially prefilled request's chunk could
    take budget from the decodes there.

    Args:
        env: A ``ContinuousBatching-v0`` environment, normally with ``kv_allocation="paged"``
            and ``chunk_size`` equal to ``max_tokens``.
    """

    name = "vllm-v1"

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        cfg = self.env.config
        if cfg.kv_allocation != "paged" or self.chunk_size != self.max_tokens:
            differs = []
            if cfg.kv_allocation != "paged":
                differs.append(f"kv_allocation={cfg.kv_allocation!r} (vLLM V1: 'paged')")
            if self.chunk_size != self.max_tokens:
                differs.append(
                    f"chunk_size={self.chunk_size!r} (vLLM V1: chunks filling the budget, "
                    f"max_tokens={self.max_tokens})"
                )
            self.warn(
                f"the env differs from vLLM V1 in {' and '.join(differs)}; build it with "
                f"kv_allocation='paged' and chunk_size=max_tokens"
            )

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Decode all, give prefill the whole leftover budget."""
        decode = self.decode_levels - 1 if self.running(info) else 0
        prefill = self.prefill_levels - 1 if self.prefill_allowed(info) else 0
        return self.feasible(self.action(decode, prefill), info)
