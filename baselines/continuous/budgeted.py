"""The token-budget schedulers of the course's Simulator B: decode-first, prefill-first, hybrid.

From the Cornell ORIE 4580/5580 "LLM Serving System Simulator": each
iteration takes at most ``max_tokens`` tokens (one per decoded sequence plus prefill tokens) and a
GPU holds at most ``max_sequences`` requests; prompts are prefilled whole, or in chunks of
``chunk_size`` tokens when the env has chunked prefill on. The policies follow the env's settings:
the same rule with or without chunking.

The reference simulator charges a mixed iteration ``max(S(prefill), S(decode))``; the env charges
the sum, so mixed batches (hybrid) cannot beat the work bound here.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from baselines.continuous._common import ContinuousPolicy


class DecodePrioritizing(ContinuousPolicy):
    """Decode every running sequence; prefill only when nothing decodes.

    Action: with running sequences, ``[D-1, 0, *]`` (each gets one token, up to ``max_tokens``);
    otherwise ``[0, P-1, no cap]``: prefill FIFO prompts (continuing started chunks first) within
    the whole token budget and the free sequence slots. A batch of prompts is therefore decoded
    to completion before the next batch is admitted.

    Args:
        env: A ``ContinuousBatching-v0`` environment.
    """

    name = "decode-first"

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Decode all when anything runs, else fill the budget with prefill."""
        if self.running(info):
            return self.feasible(self.action(self.decode_levels - 1, 0), info)
        return self.feasible(self.action(0, self.prefill_levels - 1), info)


class PrefillPrioritizing(ContinuousPolicy):
    """Prefill waiting prompts first (FIFO, within the token budget); decode otherwise.

    Action: when the mask allows prefill (a started prompt, or a waiting prompt the GPU can
    admit), ``[0, P-1, no cap]``: a prefill-only iteration filling the token budget with prompts
    from the head of the queue (whole prompts, or chunks). Otherwise ``[D-1, 0, *]``: decode every
    running sequence. Iterations are never mixed.

    Args:
        env: A ``ContinuousBatching-v0`` environment.
    """

    name = "prefill-first"

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Prefill when possible, else decode all."""
        if self.prefill_allowed(info):
            return self.feasible(self.action(0, self.prefill_levels - 1), info)
        return self.feasible(self.action(self.decode_levels - 1, 0), info)


class Hybrid(ContinuousPolicy):
    """Hybrid(r): decode up to ``r * max_sequences`` sequences, fill the rest of the budget.

    Every iteration decodes ``min(running, r * max_sequences)`` of the oldest running sequences
    and gives prefill the token budget they leave (``max_tokens - decoded``), FIFO, whole prompts
    or chunks: mixed iterations.

    Action: ``[v, P-1, no cap]`` (``P-1`` becomes ``[v, 0, *]`` when the mask forbids prefill).
    While ``running <= r * max_sequences``, ``v = D-1`` decodes them all: exact. Above that, the
    env can only decode ``ceil(v / (D-1) * running)`` sequences, so ``v`` is the level whose count
    is nearest to ``r * max_sequences`` (ties: fewer): with the default ``D = 5`` the decoded
    share of the running sequences is rounded to a quarter (e.g. 200 running and 128 slots
    decode 150). More decode levels make the approximation finer.

    Args:
        env: A ``ContinuousBatching-v0`` environment.
        decode_share: ``r`` in ``(0, 1]``, with ``r * max_sequences >= 1``; ``None`` for
            ``max(0.5, 1 / max_sequences)``: one half, raised to one sequence when
            ``max_sequences = 1`` so the default runs in every env.

    Raises:
        ValueError: If ``decode_share`` is out of range.
    """

    def __init__(self, env: gym.Env, decode_share: float | None = None) -> None:
        super().__init__(env)
        if decode_share is None:
            decode_share = max(0.5, 1.0 / self.max_sequences)
        r = decode_share
        ok = isinstance(r, (int, float, np.integer, np.floating)) and not isinstance(r, bool)
        if not ok or not 0 < r <= 1 or r * self.max_sequences < 1:
            raise ValueError(
                f"Hybrid: decode_share must be a number in (0, 1] with decode_share * "
                f"max_sequences >= 1 (max_sequences = {self.max_sequences}), got {decode_share!r}"
            )
        self.decode_share = float(r)
        self.decode_slots = self.decode_share * self.max_sequences
        self.name = f"hybrid-{self.decode_share:g}"

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Decode up to the decode share, prefill with the remaining budget."""
        decode = self.codec.nearest_decode_level(self.running(info), self.decode_slots)
        prefill = self.prefill_levels - 1 if self.prefill_allowed(info) else 0
        return self.feasible(self.action(decode, prefill), info)
