"""The meaning of a ``ContinuousBatching-v0`` action: one codec for the env and its baselines.

The action is ``[decode_level, prefill_level, prompt_cap_level]`` in
``MultiDiscrete([D, P, len(prompt_caps)])``. With ``running`` sequences on the deciding GPU it
asks for an iteration that decodes ``k = ceil(decode_level / (D - 1) * running)`` of them
(oldest first), gives prefill a budget of ``round(prefill_level / (P - 1) * (max_tokens -
min(k, max_tokens)))`` tokens and admits at most ``prompt_caps[prompt_cap_level]`` new prompts
(a cap of 0 admits none: only started prompts continue; the env's ``None``, no cap, is resolved
to ``max_sequences`` here). So ``decode_level = D - 1`` decodes every running sequence and
``prefill_level = P - 1`` hands prefill whatever the decodes leave of the token budget.
``[0, 0, *]`` is WAIT.

The env decodes actions with :class:`ContinuousActionCodec`, builds its mask from the prefill
budgets it lists, and the baselines choose levels with it, so the rule lives here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class IterationRequest(NamedTuple):
    """What an action asks of :meth:`IterationServer.run_iteration`.

    Attributes:
        decode_count: Running sequences to decode, oldest first.
        prefill_budget_tokens: Most prefill tokens of the iteration.
        max_new_prompts: Most prompts admitted from the waiting queue.
    """

    decode_count: int
    prefill_budget_tokens: int
    max_new_prompts: int

    @property
    def is_wait(self) -> bool:
        """Whether the action is WAIT (nothing decoded, no prefill budget level)."""
        return self.decode_count == 0 and self.prefill_budget_tokens == 0


@dataclass(frozen=True)
class ContinuousActionCodec:
    """Maps action levels to decode counts, prefill budgets and prompt caps, and back.

    Args:
        decode_levels: ``D``, the number of decode levels (at least 2).
        prefill_levels: ``P``, the number of prefill levels (at least 2).
        prompt_caps: Most new prompts of each cap level (0: none), with "no cap" (``None``)
            already resolved to ``max_sequences`` (``env.unwrapped.prompt_caps``).
        max_tokens: Token budget of one iteration.

    Example:
        >>> codec = ContinuousActionCodec(5, 5, (1, 4, 256), 2048)
        >>> codec.decode((4, 4, 2), running=10)
        IterationRequest(decode_count=10, prefill_budget_tokens=2038, max_new_prompts=256)
        >>> codec.level_budgets
        (0, 512, 1024, 1536, 2048)
    """

    decode_levels: int
    prefill_levels: int
    prompt_caps: tuple[int, ...]
    max_tokens: int

    @property
    def nvec(self) -> tuple[int, int, int]:
        """Number of values of each action component."""
        return (self.decode_levels, self.prefill_levels, len(self.prompt_caps))

    @property
    def level_budgets(self) -> tuple[int, ...]:
        """Prefill budget of every prefill level when nothing is decoded (ascending)."""
        return tuple(self.prefill_budget(level, 0) for level in range(self.prefill_levels))

    @property
    def uncapped(self) -> int:
        """The prompt-cap level with the largest cap (no cap when the env offers one)."""
        caps = self.prompt_caps
        return caps.index(max(caps))

    def decode_count(self, level: int, running: int) -> int:
        """Sequences decoded at ``level`` with ``running`` sequences: ``ceil(l/(D-1) * n)``.

        Example:
            >>> codec = ContinuousActionCodec(5, 5, (0,), 2048)
            >>> [codec.decode_count(level, 10) for level in range(5)]
            [0, 3, 5, 8, 10]
        """
        # In integers: in floats 11 / 20 * 100 is 55.00000000000001, whose ceiling is 56.
        return -(-level * running // (self.decode_levels - 1))

    def prefill_budget(self, level: int, decoded: int) -> int:
        """Prefill budget of ``level`` beside ``decoded`` decodes (what they leave, scaled).

        ``round(l/(P-1) * left)``, halves to even as Python's ``round``, computed exactly.
        """
        left = self.max_tokens - min(decoded, self.max_tokens)
        steps = self.prefill_levels - 1
        budget, rest = divmod(level * left, steps)
        if 2 * rest > steps or (2 * rest == steps and budget % 2):
            budget += 1
        return budget

    def decode(self, action: tuple[int, int, int], running: int) -> IterationRequest:
        """The iteration ``action`` (already checked levels) asks for with ``running`` sequences."""
        decode, prefill, cap = action
        k = self.decode_count(decode, running)
        return IterationRequest(k, self.prefill_budget(prefill, k), self.prompt_caps[cap])

    def nearest_decode_level(self, running: int, target: float) -> int:
        """The decode level whose decoded count is nearest to ``target`` (ties: fewer decoded).

        Never level 0 while ``target >= 1`` and sequences run, so decoding always progresses.

        Example:
            >>> codec = ContinuousActionCodec(5, 5, (0,), 2048)
            >>> codec.nearest_decode_level(running=200, target=128)  # 100 or 150 decoded
            3
            >>> codec.nearest_decode_level(running=100, target=128)  # all of them
            4
        """
        if running <= 0:
            return 0
        if target >= running:
            return self.decode_levels - 1
        counts = [self.decode_count(v, running) for v in range(self.decode_levels)]
        best = min(range(1, self.decode_levels), key=lambda v: (abs(counts[v] - target), counts[v]))
        return best if target >= 1 else 0

    def largest_decode_level_within(self, running: int, limit: int) -> int:
        """The largest decode level that decodes at most ``limit`` sequences (0 if none does).

        Example:
            >>> codec = ContinuousActionCodec(5, 5, (0,), 2048)
            >>> codec.largest_decode_level_within(running=300, limit=48)
            0
            >>> codec.largest_decode_level_within(running=300, limit=160)
            2
        """
        best = 0
        for v in range(1, self.decode_levels):
            if self.decode_count(v, running) <= limit:
                best = v
        return best
