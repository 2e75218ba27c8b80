"""Simple bin-choice rules: shortest predicted first, earliest deadline first, random.

Each decision serves one bin chosen by a fixed rule, with no model of batch time. They bracket
the Multi-Bin and SLA-dynamic schedulers: SPF and EDF are the textbook answers to "which bin
next?" for mean latency and deadlines, and :class:`RandomBinAndSize` (a random bin and batch size
among those the mask allows) is the floor every reasonable policy must beat.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from baselines._checks import check_int
from baselines.batch._common import BatchPolicy, make_action
from llmsched_env.envs.queue_snapshot import BinQueueSnapshot


class _BinScorer(BatchPolicy):
    """Serve the non-empty bin with the smallest score, at a fixed size level; never wait."""

    def __init__(self, env: gym.Env, batch_size: int | None = None) -> None:
        super().__init__(env)
        size = self.max_batch_size if batch_size is None else batch_size
        self.batch_size = check_int(type(self).__name__, "batch_size", size, 1, self.max_batch_size)
        self._level = self.level(self.batch_size)
        #: The batch the level forms: what a bin is scored on (a batch_size between two levels
        #: serves the smaller one).
        self._served = self.batch_sizes[self._level]

    def score(self, queues: BinQueueSnapshot, info: dict[str, Any], j: int, take: int) -> float:
        """Score of serving the oldest ``take`` requests of bin ``j`` (smaller is served first).

        ``queues`` is the env's ``queue_snapshot()`` at the decision.
        """
        raise NotImplementedError

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Serve the non-empty bin with the smallest score (ties: the lower bin index)."""
        best, best_score = -1, np.inf
        queues = self.env.queue_snapshot()
        for j, queue in enumerate(queues.ids):
            if queue.size:
                score = self.score(queues, info, j, min(queue.size, self._served))
                if best < 0 or score < best_score:
                    best, best_score = j, score
        return make_action(best, self._level)


class ShortestPredictedFirst(_BinScorer):
    """Shortest predicted job first, at the granularity of the env's batches.

    Serves the bin whose next batch (its oldest requests, as many as the size level serves) has
    the smallest largest predicted output length: in a static batch the longest member sets the
    service time, so this is the batch expected to finish first. Bins are ordered by predicted
    length, so this usually serves the lowest non-empty bin, and long requests can starve under
    load, as with any shortest-job-first rule.

    Args:
        env: A ``BatchScheduling-v0`` environment.
        batch_size: Largest batch (default: the env's ``max_batch_size``); mapped to the largest
            size level ``<= batch_size``.

    Raises:
        ValueError: If ``batch_size`` is out of range.
    """

    name = "spf"

    def score(self, queues: BinQueueSnapshot, info: dict[str, Any], j: int, take: int) -> float:
        """The largest predicted output length among the batch's members."""
        return float(queues.predicted_output_tokens[j][:take].max())


class EarliestDeadlineFirst(_BinScorer):
    """Least slack first: serve the bin whose oldest request is closest to missing its deadline.

    The slack of bin ``j`` is ``arrival_0 + sla - now - T_hat``: the time left until the
    deadline of its oldest request (the one a FIFO bin serves first) minus the estimated service
    time ``T_hat`` of the batch the bin would form, from the env's latency model
    (``latency.estimate_s`` with the batch size and the batch's longest prompt and longest
    predicted output). Requests already past their deadline have negative slack and are served
    first, the classic weakness of EDF under overload.

    Args:
        env: A ``BatchScheduling-v0`` environment.
        batch_size: Largest batch (default: the env's ``max_batch_size``); mapped to the largest
            size level ``<= batch_size``.

    Raises:
        ValueError: If ``batch_size`` is out of range.
    """

    name = "edf"

    def score(self, queues: BinQueueSnapshot, info: dict[str, Any], j: int, take: int) -> float:
        """The slack of bin ``j`` in seconds."""
        prompt = float(queues.prompt_tokens[j][:take].max())
        output = float(queues.predicted_output_tokens[j][:take].max())
        service_s = self.latency.estimate_s(take, prompt, output)
        return float(queues.arrival_s[j][0]) + self.sla_s - info["time_s"] - service_s


class RandomBinAndSize(BatchPolicy):
    """Uniformly random over the actions the mask allows: the floor every policy must beat.

    Each component is drawn uniformly from the values allowed by ``info["action_mask"]`` (the
    concatenated per-component mask of ``action_masks()``, as MaskablePPO samples): component 0
    from WAIT (when allowed) and the non-empty bins, component 1 from the size levels.

    Args:
        env: A ``BatchScheduling-v0`` environment.
        seed: Seed of the policy's generator, used by :meth:`reset` when it gets no seed.

    Raises:
        ValueError: If ``seed`` is not a non-negative integer.
    """

    name = "random"

    def __init__(self, env: gym.Env, seed: int = 0) -> None:
        super().__init__(env)
        self.seed = check_int(type(self).__name__, "seed", seed, 0)
        self._n_choices = self.n_bins + 1
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Restart the generator from ``seed`` (default: the constructor's seed)."""
        self.rng = np.random.default_rng(self.seed if seed is None else seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Draw each action component uniformly from its allowed values."""
        mask = np.asarray(info["action_mask"], dtype=bool)
        choices = np.flatnonzero(mask[: self._n_choices])
        levels = np.flatnonzero(mask[self._n_choices :])
        return np.array([self.rng.choice(choices), self.rng.choice(levels)], dtype=np.int64)
