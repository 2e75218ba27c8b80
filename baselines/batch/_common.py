"""What every request-level baseline shares: the env's constants, size levels and bin choices.

A baseline sees the environment only through its public configuration (read once in
:class:`BatchPolicy`), the documented ``info`` fields of each step and the env's queries
(``queue_snapshot()``, ``finished_batches()``). Requests are indexed in arrival order and every
bin of ``queue_snapshot().ids`` is a FIFO, so the first entry of a bin is its oldest request and
a smaller index means an earlier arrival.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from baselines.base import Policy
from llmsched_env.envs.queue_snapshot import QueueSnapshot

WAIT = 0
"""Component 0 of the action: idle the deciding GPU until the next arrival or batch end."""


def check_positive(owner: str, name: str, value: Any, *, at_most: float | None = None) -> float:
    """Return ``value`` if it is a finite number > 0 (and <= ``at_most``), else raise.

    Raises:
        ValueError: Naming the argument, the value and what is allowed.
    """
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value <= 0 or (at_most is not None and value > at_most):
        bound = "> 0" if at_most is None else f"in (0, {at_most}]"
        raise ValueError(f"{owner}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {list(choices)}, got {value!r}")
    return value


def size_level(batch_sizes: Sequence[int], batch_size: float) -> int:
    """Index of the largest size level that is ``<= batch_size``; level 0 (size 1) at least.

    Example:
        >>> size_level((1, 2, 4, 8, 16, 32, 64), 50)
        5
        >>> size_level((1, 2, 4, 8), 0)
        0
    """
    return max(bisect_right(batch_sizes, batch_size) - 1, 0)


def make_action(bin_index: int | None, level: int) -> np.ndarray:
    """The env action serving bin ``bin_index`` at size level ``level`` (``None``: WAIT).

    Actions are read-only arrays shared between calls (one per value, made on first use): a
    policy decides many times a second, and making a new array is a large part of the cost of
    a simple rule's decision.

    Example:
        >>> make_action(2, 5)
        array([3, 5])
        >>> make_action(None, 0) is make_action(None, 0)
        True
    """
    return _action(WAIT if bin_index is None else bin_index + 1, level)


@functools.cache
def _action(choice: int, level: int) -> np.ndarray:
    action = np.array((choice, level), dtype=np.int64)
    action.flags.writeable = False
    return action


def oldest_bin(queues: Sequence[np.ndarray]) -> int:
    """The bin whose oldest waiting request arrived first; ``-1`` when every bin is empty."""
    best, best_index = -1, -1
    for j, queue in enumerate(queues):
        if len(queue):
            first = queue.item(0)
            if best < 0 or first < best_index:
                best, best_index = j, first
    return best


def newest_entries(queues: Sequence[np.ndarray]) -> list[Any]:
    """The newest (last) entry of each bin as a Python scalar, ``None`` for an empty bin.

    The env's ``queue_snapshot().ids`` answers without building a view per bin
    (``QueueSnapshot.newest``); any other sequence of arrays is read bin by bin.

    Example:
        >>> newest_entries([np.array([3, 5]), np.array([], dtype=np.int64)])
        [5, None]
    """
    if isinstance(queues, QueueSnapshot):
        return queues.newest()
    return [q.item(-1) if len(q) else None for q in queues]


def first_non_empty(queues: Sequence[np.ndarray], start: int) -> int:
    """The first non-empty bin at or after ``start``, cyclically; ``-1`` when every bin is empty.

    Example:
        >>> first_non_empty([np.array([3]), np.array([], dtype=int), np.array([])], 1)
        0
    """
    n = len(queues)
    for k in range(n):
        j = (start + k) % n
        if len(queues[j]):
            return j
    return -1


def fullest_bin(queues: Sequence[np.ndarray]) -> int:
    """The bin holding the most requests (ties: the one with the oldest request); ``-1`` if none."""
    best, best_key = -1, (0, 0)
    for j, queue in enumerate(queues):
        if queue.size:
            key = (queue.size, -int(queue[0]))
            if best < 0 or key > best_key:
                best, best_key = j, key
    return best


class BatchPolicy(Policy):
    """A policy over ``llmsched/BatchScheduling-v0``, with the env's constants at hand.

    Attributes:
        batch_sizes: The env's size levels (``env.unwrapped.batch_sizes``).
        n_bins: Number of bins.
        n_gpus: Number of GPUs.
        max_batch_size: Largest size level.
        sla_s: End-to-end deadline in seconds.
        kv_capacity_tokens: KV-cache tokens one GPU holds.
        bin_edges: Interior bin edges in predicted output tokens.
        latency: The env's batch latency model (for ``estimate_s``).

    Raises:
        TypeError: If ``env`` is not a ``BatchScheduling-v0`` environment.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        from llmsched_env.envs import BatchSchedulingEnv

        if not isinstance(self.env, BatchSchedulingEnv):
            raise TypeError(
                f"{type(self).__name__} schedules llmsched/BatchScheduling-v0, "
                f"got {type(self.env).__name__}"
            )
        u = self.env
        self.batch_sizes: tuple[int, ...] = tuple(int(b) for b in u.batch_sizes)
        self.n_bins = int(u.config.n_bins)
        self.n_gpus = int(u.config.n_gpus)
        self.max_batch_size = int(u.config.max_batch_size)
        self.sla_s = float(u.config.sla)
        self.kv_capacity_tokens = int(u.kv_capacity_tokens)
        self.bin_edges = tuple(float(e) for e in u.bin_edges)
        self.latency = u.latency

    def level(self, batch_size: float) -> int:
        """Size level of a wanted batch size: the largest level ``<= batch_size``, at least 1."""
        return size_level(self.batch_sizes, batch_size)
