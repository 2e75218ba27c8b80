"""What every iteration-level baseline shares: the env's constants and the action's levels.

A baseline sees ``ContinuousBatching-v0`` only through its public interface: its configuration
and action codec (``env.unwrapped.action_codec``, which says what each action level means; see
:mod:`llmsched_env.envs.continuous_action`), the documented ``info`` fields of each step, and
the env's queries (``prefill_plan()``, ``queue_snapshot()``, ``joint_action_mask()``), the
same calls an agent can make.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from baselines.base import Policy


class ContinuousPolicy(Policy):
    """A policy over ``llmsched/ContinuousBatching-v0``, with the env's constants at hand.

    Attributes:
        max_tokens: Token budget of one iteration.
        max_sequences: Most requests (prefilling or decoding) on one GPU.
        chunk_size: Chunk size of chunked prefill, ``None`` when prompts are prefilled whole.
        decode_levels: Number of decode levels ``D``; level ``D - 1`` decodes all.
        prefill_levels: Number of prefill levels ``P``; level ``P - 1`` is the whole budget.
        prompt_caps: The env's prompt-cap levels with ``None`` ("no cap") resolved to
            ``max_sequences`` (``env.unwrapped.prompt_caps``); 0 admits no new prompt.
        uncapped: The prompt-cap level with the largest cap (no cap when the env offers one).
        codec: The env's action codec (decode counts and prefill budgets of the levels).

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
        self.codec = self.env.action_codec
        self.prompt_caps: tuple[int, ...] = tuple(int(c) for c in self.codec.prompt_caps)
        self.uncapped = self.codec.uncapped

    # ------------------------------------------------------------------ the decision
    @staticmethod
    def running(info: dict[str, Any]) -> int:
        """Sequences decoding on the deciding GPU (``info["n_running"][info["gpu"]]``)."""
        return int(info["n_running"][info["gpu"]])

    @staticmethod
    def prefilling(info: dict[str, Any]) -> bool:
        """Whether the deciding GPU has started prompts (prefill tokens remain)."""
        return info["prefill_remaining_tokens"] > 0

    # ------------------------------------------------------------------ action building
    def action(
        self, decode_level: int, prefill_level: int, cap_level: int | None = None
    ) -> np.ndarray:
        """The env action; ``cap_level`` defaults to :attr:`uncapped`."""
        cap = self.uncapped if cap_level is None else cap_level
        return np.array([decode_level, prefill_level, cap], dtype=np.int64)

    def feasible(self, action: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """``action``, or the nearest one the env allows when it is a forbidden prefill alone.

        The per-component mask that the policies read says that a prefill level forms *some*
        iteration. Whether it forms one without decodes only the joint rule says
        (``env.action_allowed``): with paged KV memory the whole budget's first chunk may not
        get its blocks while a smaller chunk does. A forbidden prefill-only action
        ``[0, p, cap]`` becomes ``[0, v, cap]`` with the largest allowed level ``v < p``; if
        there is none, decoding every running sequence, or WAIT when none runs (a policy's
        action is never silently replaced by the env's fallback).
        """
        decode, prefill, cap = action.tolist()
        if decode > 0 or prefill == 0 or self.env.action_allowed(action):
            return action
        for level in range(prefill - 1, 0, -1):
            smaller = self.action(0, level, cap)
            if self.env.action_allowed(smaller):
                return smaller
        return self.action(self.decode_levels - 1 if self.running(info) else 0, 0, cap)

    def cap_level(self, cap: int) -> int:
        """The prompt-cap level whose cap is exactly ``cap`` prompts.

        Raises:
            ValueError: If the env offers no such level (the message lists the levels).
        """
        if cap not in self.prompt_caps:
            raise ValueError(
                f"{type(self).__name__}: a prompt cap of {cap} is not one of the env's prompt_caps "
                f"levels {self.prompt_caps} (None = no cap, shown as max_sequences; 0 = admit "
                f"none); build the env "
                f"with prompt_caps including {cap}"
            )
        return self.prompt_caps.index(cap)

    def prefill_allowed(self, info: dict[str, Any], level: int | None = None) -> bool:
        """Whether the mask allows prefill ``level`` (default: the whole budget) now."""
        level = self.prefill_levels - 1 if level is None else level
        return bool(info["action_mask"][self.decode_levels + level])

    def level_budget(self, level: int) -> int:
        """Prefill budget in tokens of ``level`` when nothing is decoded."""
        return self.codec.prefill_budget(level, 0)

    def warn(self, message: str) -> None:
        """Warn (once per call site) that the env cannot express this policy's rule exactly."""
        warnings.warn(f"{type(self).__name__}: {message}", UserWarning, stacklevel=3)
