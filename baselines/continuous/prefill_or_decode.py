"""Schedulers whose iterations are either a prefill batch or a decode batch, never mixed.

Run-to-completion (Scheduler A) and prefill-first with K (Scheduler B) of the Cornell ORIE
4580/5580 "LLM Serving Simulation" (its Simulator A):

* Scheduler A serves one job at a time: its prefill, then all its decode steps; the next job
  waits. Capacity ``1 / ((E[C] + L E[a]) + B (E[C] + E[a]))`` for prompt ``L`` and ``B`` decode
  steps.
* Scheduler B(K): when the GPU frees, if prompts wait, prefill the first ``min(K, n)`` together;
  otherwise decode every running job one token.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from baselines._checks import check_int
from baselines.continuous._common import ContinuousPolicy


class RunToCompletion(ContinuousPolicy):
    """Scheduler A: one job per GPU at a time, its prefill then all its decode steps.

    Action: when the deciding GPU has a running sequence, ``[D-1, 0, *]`` (decode it, no
    prefill); otherwise ``[0, P-1, cap 1]`` (prefill the head of the FIFO queue alone, with the
    whole token budget). With several GPUs each idle GPU takes the oldest waiting job, because
    the queue is shared and FIFO.

    Exactness needs every prompt prefilled in one iteration. With ``chunk_size=None`` (the
    setting to use) that holds for every prompt the env accepts: a prompt longer than
    ``max_tokens`` is rejected at arrival with ``PROMPT_EXCEEDS_TOKEN_BUDGET``. With chunked
    prefill, a prompt longer than ``chunk_size`` is prefilled over several iterations; each
    continuation uses the largest prefill level whose budget does not exceed the next piece, so
    that the budget is used up and nothing new is admitted. When the last piece is shorter than
    the smallest non-zero level's budget (``max_tokens / (P - 1)``), the next job's prefill
    starts in the same iteration. Such overlaps are counted in :attr:`n_overlaps` and reported
    once with a ``UserWarning``. The env's cap of 0 ("admit no new prompt") could make this
    exact; the policy keeps its cap of 1 so that its results stay comparable with those
    published before that level existed.

    Args:
        env: A ``ContinuousBatching-v0`` environment whose ``prompt_caps`` include 1.

    Raises:
        ValueError: If the env offers no prompt cap of 1.
    """

    name = "run-to-completion"

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._one = self.cap_level(1)
        self.n_overlaps = 0

    def reset(self) -> None:
        """Forget the overlap count of the previous episode."""
        self.n_overlaps = 0

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Decode the running job, or prefill the next one alone."""
        if self.running(info):
            return self.feasible(self.action(self.decode_levels - 1, 0, self._one), info)
        if not self.prefilling(info):
            return self.feasible(self.action(0, self.prefill_levels - 1, self._one), info)
        # A chunked prompt in progress: continue it and use the budget up, so nothing is admitted.
        piece = min(int(info["prefill_remaining_tokens"]), self.chunk_size or self.max_tokens)
        exact = [v for v in range(1, self.prefill_levels) if self.level_budget(v) <= piece]
        if exact:
            return self.feasible(self.action(0, exact[-1], self._one), info)
        if self.n_overlaps == 0:
            self.warn(
                "the last piece of a chunked prompt is shorter than the smallest prefill budget "
                f"({self.level_budget(1)} tokens), so the next job's prefill starts in the same "
                "iteration; build the env with chunk_size=None for exact run-to-completion"
            )
        self.n_overlaps += 1
        return self.feasible(self.action(0, 1, self._one), info)


class PrefillPrioritizingK(ContinuousPolicy):
    """Scheduler B(K): prefill the first ``min(K, n)`` waiting prompts together, else decode all.

    Action: when the mask allows prefill (a prompt waits and the GPU can admit it, or a started
    prompt continues), ``[0, P-1, cap K]``: a prefill-only iteration with the whole token budget
    that admits at most K prompts from the head of the FIFO queue. Otherwise ``[D-1, 0, *]``:
    every running sequence gets one token (up to ``max_tokens``).

    The K prompts are prefilled together only if they fit in ``max_tokens`` (sim-a: ``K * 128``
    tokens) and in the free sequence slots; otherwise the env takes fewer (FIFO, whole prompts).
    With chunked prefill K limits the prompts *admitted* per iteration; started prompts continue
    first, so more than K may be in prefill at once (Scheduler B is defined without chunking).

    Args:
        env: A ``ContinuousBatching-v0`` environment.
        k: Most prompts prefilled together; must be one of the env's ``prompt_caps`` levels.

    Raises:
        ValueError: If ``k`` is not a positive integer or not one of the env's prompt caps.
    """

    def __init__(self, env: gym.Env, k: int = 4) -> None:
        super().__init__(env)
        self.k = check_int(type(self).__name__, "k", k, 1)
        self._cap = self.cap_level(self.k)
        self.name = f"prefill-k{self.k}"

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Prefill up to K prompts when possible, else decode every running sequence."""
        if self.prefill_allowed(info):
            return self.feasible(self.action(0, self.prefill_levels - 1, self._cap), info)
        return self.feasible(self.action(self.decode_levels - 1, 0, self._cap), info)
