"""What every iteration-level baseline shares: the env's constants and the action's levels.

A baseline sees ``ContinuousBatching-v0`` only through its public configuration (read once in
:class:`ContinuousPolicy`) and the documented ``info`` fields of each step. The action is
``[decode_level, prefill_level, prompt_cap_level]``; with ``D`` decode and ``P`` prefill levels
the env decodes ``k = ceil(decode_level / (D - 1) * running)`` of the deciding GPU's running
sequences (oldest first) and gives prefill a budget of
``round(prefill_level / (P - 1) * (max_tokens - k))`` tokens, admitting at most
``prompt_caps[prompt_cap_level]`` new prompts from the head of the shared FIFO queue. So
``decode_level = D - 1`` decodes every running sequence (up to ``max_tokens``) and
``prefill_level = P - 1`` hands prefill whatever the decodes leave of the token budget.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from baselines.base import Policy


def decoded_count(level: int, running: int, decode_levels: int) -> int:
    """Sequences the env decodes at ``level`` with ``running`` sequences: ``ceil(l/(D-1) * n)``.

    Example:
        >>> [decoded_count(level, 10, 5) for level in range(5)]
        [0, 3, 5, 8, 10]
    """
    return math.ceil(level / (decode_levels - 1) * running)


def nearest_decode_level(running: int, target: float, decode_levels: int) -> int:
    """The decode level whose decoded count is nearest to ``target`` (ties: fewer decoded).

    Never level 0 while ``target >= 1`` and sequences run, so decoding always progresses.

    Example:
        >>> nearest_decode_level(running=200, target=128, decode_levels=5)  # 100 or 150 decoded
        3
        >>> nearest_decode_level(running=100, target=128, decode_levels=5)  # all of them
        4
    """
    if running <= 0:
        return 0
    if target >= running:
        return decode_levels - 1
    counts = [decoded_count(v, running, decode_levels) for v in range(decode_levels)]
    best = min(range(1, decode_levels), key=lambda v: (abs(counts[v] - target), counts[v]))
    return best if target >= 1 else 0


def largest_decode_level_within(running: int, limit: int, decode_levels: int) -> int:
    """The largest decode level that decodes at most ``limit`` sequences (0 if none does).

    Example:
        >>> largest_decode_level_within(running=300, limit=48, decode_levels=5)
        0
        >>> largest_decode_level_within(running=300, limit=160, decode_levels=5)
        2
    """
    best = 0
    for v in range(1, decode_levels):
        if decoded_count(v, running, decode_levels) <= limit:
            best = v
    return best


class ContinuousPolicy(Policy):
    """A policy over ``llmsched/ContinuousBatching-v0``, with the env's constants at hand.

    Attributes:
        max_tokens: Token budget of one iteration.
        max_sequences: Most requests (prefilling or decoding) on one GPU.
        chunk_size: Chunk size of chunked prefill, ``None`` when prompts are prefilled whole.
        decode_levels: Number of decode levels ``D``; level ``D - 1`` decodes all.
        prefill_levels: Number of prefill levels ``P``; level ``P - 1`` is the whole budget.
        prompt_caps: The env's prompt-cap levels with 0 ("no cap") resolved to
            ``max_sequences`` (``env.unwrapped.prompt_caps``).
        uncapped: The prompt-cap level with the largest cap (no cap when the env offers one).

    Raises:
        TypeError: If ``env`` is not a ``ContinuousBatching-v0`` environment.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        from llmsched_env.envs import ContinuousBatchingEnv

        if not isinstance(self.env, ContinuousBatchingEnv):
            raise TypeError(
                f"{type(self).__name__} schedules llmsched/ContinuousBatching-v0, "
                f"got {type(self.env).__name__}"
            )
        cfg = self.env.config
        self.max_tokens = int(cfg.max_tokens)
        self.max_sequences = int(cfg.max_sequences)
        self.chunk_size: int | None = cfg.chunk_size
        self.decode_levels = int(cfg.decode_levels)
        self.prefill_levels = int(cfg.prefill_levels)
        self.prompt_caps: tuple[int, ...] = tuple(int(c) for c in self.env.prompt_caps)
        self.uncapped = int(np.argmax(self.prompt_caps))

    # ------------------------------------------------------------------ action building
    def action(
        self, decode_level: int, prefill_level: int, cap_level: int | None = None
    ) -> np.ndarray:
        """The env action; ``cap_level`` defaults to :attr:`uncapped`."""
        cap = self.uncapped if cap_level is None else cap_level
        return np.array([decode_level, prefill_level, cap], dtype=np.int64)

    def cap_level(self, cap: int) -> int:
        """The prompt-cap level whose cap is exactly ``cap`` prompts.

        Raises:
            ValueError: If the env offers no such level (the message lists the levels).
        """
        if cap not in self.prompt_caps:
            raise ValueError(
                f"{type(self).__name__}: a prompt cap of {cap} is not one of the env's prompt_caps "
                f"levels {self.prompt_caps} (0 = no cap, shown as max_sequences); build the env "
                f"with prompt_caps including {cap}"
            )
        return self.prompt_caps.index(cap)

    def prefill_allowed(self, info: dict[str, Any], level: int | None = None) -> bool:
        """Whether the mask allows prefill ``level`` (default: the whole budget) now."""
        level = self.prefill_levels - 1 if level is None else level
        return bool(info["action_mask"][self.decode_levels + level])

    def level_budget(self, level: int) -> int:
        """Prefill budget in tokens of ``level`` when nothing is decoded."""
        return int(round(level / (self.prefill_levels - 1) * self.max_tokens))

    def warn(self, message: str) -> None:
        """Warn (once per call site) that the env cannot express this policy's rule exactly."""
        warnings.warn(f"{type(self).__name__}: {message}", UserWarning, stacklevel=3)

    def planned_prefill_tokens(self, info: dict[str, Any], budget_tokens: int) -> int:
        """Prefill tokens the env would take with a budget of ``budget_tokens`` and no cap.

        Mirrors the env's FIFO plan from ``info``: the deciding GPU's started prompts continue
        first (at most ``chunk_size`` tokens each; only their total remainder is known, so this
        is an upper bound when several are started), then waiting prompts are admitted from the
        head of the queue while sequence slots remain (whole prompts, or chunks with chunked
        prefill). KV memory is not checked: it only ever admits fewer prompts.

        Args:
            info: The step's ``info``.
            budget_tokens: The prefill budget.

        Returns:
            The planned prefill tokens, at most ``budget_tokens``.
        """
        if not self.prefill_allowed(info):
            return 0
        chunk = self.chunk_size
        started = len(info["prefilling"])
        remaining = int(info["prefill_remaining_tokens"])
        used = min(remaining, budget_tokens if chunk is None else started * chunk, budget_tokens)
        slots = self.max_sequences - started - len(info["running"])
        prompts: Sequence[int] = info["waiting_prompt_tokens"]
        for p in prompts:
            if used >= budget_tokens or slots <= 0:
                break
            take = int(p) if chunk is None else min(int(p), chunk, budget_tokens - used)
            if take > budget_tokens - used:
                break
            used += take
            slots -= 1
        return used
