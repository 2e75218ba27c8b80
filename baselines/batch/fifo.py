"""Static FIFO batching: the reference simulator's ``static_fifo`` scheduler."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from baselines._checks import check_int
from baselines.batch._common import BatchPolicy, make_action, oldest_bin


class StaticFIFO(BatchPolicy):
    """First come, first served with a fixed batch size, work-conserving.

    Whenever a GPU is idle and requests wait, serve the bin whose oldest request is the oldest
    of all, taking up to ``batch_size`` of its oldest requests (even a single one: the policy
    never waits). This is the request-level reference simulator's ``static_fifo`` mode (an idle
    GPU takes up to 8 requests). The env forms a batch from one bin, so the batch is strictly
    first come, first served only with ``n_bins=1``; with several bins the *choice* of bin
    follows one FIFO order across bins and the batch takes the oldest requests of that bin.

    ``batch_size`` is mapped to the largest size level of the env that is ``<= batch_size``
    (the levels are powers of two and ``max_batch_size``; 8 is a level whenever
    ``max_batch_size >= 8``). By default it is ``min(8, max_batch_size)``: the reference
    simulator's 8, capped so that the policy runs in an env with smaller batches.

    Args:
        env: A ``BatchScheduling-v0`` environment.
        batch_size: Largest batch, in requests (``1 <= batch_size <= max_batch_size``);
            ``None`` for ``min(8, max_batch_size)``.

    Raises:
        ValueError: If ``batch_size`` is out of range.
    """

    name = "static-fifo"

    def __init__(self, env: gym.Env, batch_size: int | None = None) -> None:
        super().__init__(env)
        if batch_size is None:
            batch_size = min(8, self.max_batch_size)
        self.batch_size = check_int(
            type(self).__name__, "batch_size", batch_size, 1, self.max_batch_size
        )
        self._level = self.level(self.batch_size)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Serve the oldest bin with up to ``batch_size`` requests."""
        return make_action(oldest_bin(self.env.queue_snapshot().ids), self._level)
