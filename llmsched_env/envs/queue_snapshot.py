"""The contents of the waiting queues at one decision, without copying them.

:class:`BinQueueSnapshot` holds the per-bin queues of ``BatchScheduling-v0``;
:class:`WaitingQueueSnapshot` the waiting queue and the deciding GPU's requests of
``ContinuousBatching-v0``. Each env returns one from ``env.unwrapped.queue_snapshot()``; both
take the same time whatever the queue's length, so reading the queues never makes an overloaded
episode slower per step, and queue contents stay out of ``info``, which keeps a fixed shape.

``BatchScheduling-v0`` tells what waits in each bin (request indices, arrival times, predicted
output lengths, prompt lengths). Copying four arrays per bin at every step would cost more than
the rest of the observation, and most consumers (an RL agent, a vector env) never read them. A
:class:`QueueSnapshot` instead holds a reference to one read-only, per-episode array (the
attribute of every request, bins one after another in arrival order) and the bounds of each
bin's waiting part at the decision. Because that array never changes during the episode, a
snapshot kept from an earlier step still shows that step's queues: item ``j`` is a read-only
view.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, overload

import numpy as np


def read_only(values: np.ndarray) -> np.ndarray:
    """``values`` with writing disabled (in place), for use as a snapshot's backing array."""
    values.flags.writeable = False
    return values


class QueueSnapshot(Sequence[np.ndarray]):
    """One attribute of the waiting requests of every bin, oldest first, as read-only views.

    A sequence of ``n_bins`` arrays, like a tuple: ``snapshot[j]``, ``len(snapshot)``,
    iteration, ``np.concatenate(snapshot)``. It is immutable, so copying it returns itself;
    pickling it (for example to send an ``info`` between processes) stores only the waiting
    entries.

    Args:
        values: The attribute of every queued request of the episode, in queue order (bin after
            bin, oldest first); it must be read-only (see :func:`read_only`).
        heads: Position in ``values`` of the oldest waiting request of each bin.
        tails: Position one past the newest waiting request of each bin.

    Example:
        >>> values = read_only(np.array([10, 11, 12, 20, 21]))
        >>> snapshot = QueueSnapshot(values, (1, 3), (3, 5))
        >>> [a.tolist() for a in snapshot]
        [[11, 12], [20, 21]]
    """

    __slots__ = ("_heads", "_tails", "_values")

    def __init__(self, values: np.ndarray, heads: Sequence[int], tails: Sequence[int]) -> None:
        if values.flags.writeable:
            raise ValueError("QueueSnapshot needs a read-only array (see read_only())")
        self._values = values
        self._heads = tuple(heads)
        self._tails = tuple(tails)

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray]) -> QueueSnapshot:
        """A snapshot whose bins hold copies of ``arrays``."""
        values = read_only(np.concatenate([np.asarray(a) for a in arrays]))
        bounds = np.cumsum([0, *(len(a) for a in arrays)]).tolist()
        return cls(values, bounds[:-1], bounds[1:])

    def __len__(self) -> int:
        return len(self._heads)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[np.ndarray, ...]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | tuple[np.ndarray, ...]:
        if isinstance(index, slice):
            return tuple(self[j] for j in range(*index.indices(len(self))))
        return self._values[self._heads[index] : self._tails[index]]

    def newest(self) -> list[Any]:
        """The last (newest) entry of each bin as a Python scalar, ``None`` for an empty bin.

        The same as ``[q[-1].item() if len(q) else None for q in snapshot]``, without making a
        view per bin: a policy that only looks for new requests reads one number per bin.

        Example:
            >>> QueueSnapshot(read_only(np.array([10, 11, 12, 20])), (1, 3), (3, 3)).newest()
            [12, None]
        """
        values = self._values
        return [values.item(t - 1) if t > h else None for h, t in zip(self._heads, self._tails)]

    def __iter__(self) -> Iterator[np.ndarray]:
        values = self._values
        for h, t in zip(self._heads, self._tails):
            yield values[h:t]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueueSnapshot):
            return NotImplemented
        return len(self) == len(other) and all(np.array_equal(a, b) for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  (equality is by content)

    def __copy__(self) -> QueueSnapshot:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> QueueSnapshot:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (QueueSnapshot.from_arrays, (tuple(self),))

    def __repr__(self) -> str:
        return f"QueueSnapshot({[a.tolist() for a in self]!r})"


@dataclass(frozen=True)
class BinQueueSnapshot:
    """The waiting requests of every bin of ``BatchScheduling-v0`` at one decision.

    ``env.unwrapped.queue_snapshot()`` returns one. Each attribute is a :class:`QueueSnapshot`
    (``n_bins`` read-only arrays, oldest request first), and entry ``i`` of bin ``j`` of every
    attribute belongs to the same request.

    Attributes:
        ids: Request indices (in arrival order, so a smaller index arrived earlier).
        arrival_s: Arrival times.
        predicted_output_tokens: Predicted output lengths.
        prompt_tokens: Prompt lengths.
    """

    ids: QueueSnapshot
    arrival_s: QueueSnapshot
    predicted_output_tokens: QueueSnapshot
    prompt_tokens: QueueSnapshot


@dataclass(frozen=True, eq=False)
class WaitingQueueSnapshot:
    """The waiting prompts and the deciding GPU's requests of ``ContinuousBatching-v0``.

    ``env.unwrapped.queue_snapshot()`` returns one for the current decision. The waiting queue
    is the preempted requests (head first) followed by the never-admitted ones (oldest first).
    The never-admitted part is a read-only view of per-episode arrays that never change, so
    taking a snapshot costs the same however long the queue is, and a snapshot kept from an
    earlier step keeps showing that step's queue. The other arrays are small copies: at most
    ``n_gpus * max_sequences`` requests can be preempted at once, and at most
    ``max_sequences`` run on a GPU.

    Attributes:
        gpu: The deciding GPU (-1 when no decision is due: the episode is over).
        preempted: Preempted requests waiting at the head of the queue, head first.
        preempted_arrival_s: Their arrival times.
        preempted_tokens: Tokens each must prefill again (prompt plus generated tokens).
        queued: Never-admitted waiting requests, oldest first (read-only view).
        queued_arrival_s: Their arrival times (read-only view).
        queued_prompt_tokens: Their prompt tokens (read-only view).
        running: The deciding GPU's decoding requests, oldest admitted first.
        running_tokens_generated: Output tokens each has generated.
        running_predicted_output_tokens: Their predicted output lengths.
        prefilling: The deciding GPU's started prompts (prefill or recomputation unfinished).
    """

    gpu: int
    preempted: np.ndarray
    preempted_arrival_s: np.ndarray
    preempted_tokens: np.ndarray
    queued: np.ndarray
    queued_arrival_s: np.ndarray
    queued_prompt_tokens: np.ndarray
    running: np.ndarray
    running_tokens_generated: np.ndarray
    running_predicted_output_tokens: np.ndarray
    prefilling: tuple[int, ...]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WaitingQueueSnapshot):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
        )

    __hash__ = None  # type: ignore[assignment]  (equality is by content)

    @property
    def n_waiting(self) -> int:
        """Requests waiting (preempted plus never admitted)."""
        return self.preempted.size + self.queued.size

    def waiting(self) -> np.ndarray:
        """Every waiting request, head first (a new array: its cost grows with the queue)."""
        return np.concatenate([self.preempted, self.queued])

    def waiting_arrival_s(self) -> np.ndarray:
        """Arrival times of :meth:`waiting` (a new array)."""
        return np.concatenate([self.preempted_arrival_s, self.queued_arrival_s])

    def waiting_prompt_tokens(self) -> np.ndarray:
        """Tokens each of :meth:`waiting` must prefill (preempted: to recompute; a new array)."""
        return np.concatenate([self.preempted_tokens, self.queued_prompt_tokens])
