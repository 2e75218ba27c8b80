"""Multi-Bin batching (Guldogan et al., arXiv 2412.04504, Algorithm 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from baselines._checks import check_int
from baselines.batch._common import (
    BatchPolicy,
    check_choice,
    check_positive,
    fullest_bin,
    make_action,
    oldest_bin,
)
from llmsched_env.sim.batch_rules import is_late

BinChoice = Literal["formation", "round-robin", "longest-queue"]
BIN_CHOICES = ("formation", "round-robin", "longest-queue")
PartialChoice = Literal["fullest", "oldest"]
PARTIAL_CHOICES = ("fullest", "oldest")


class MultiBin(BatchPolicy):
    """Bins by predicted output length that emit only full batches, served in formation order.

    Algorithm 1 of Multi-Bin Batching: request ``i`` goes to the bin ``j`` whose length range
    holds its predicted length (the env does the binning, with ``bin_edges``); a bin emits a
    batch as soon as it holds ``batch_size`` requests, and formed batches are served first come,
    first served. A batch's formation time is the arrival time of the bin's ``batch_size``-th
    oldest request, so at each decision the policy serves, among the bins holding at least
    ``batch_size`` requests, the one whose ``batch_size``-th request arrived first. When no bin
    is full it WAITs; when WAIT is masked (no arrival is left and no GPU works, so no bin can
    ever fill) it flushes the fullest bin as a partial batch. With one GPU, unlimited memory,
    uniform lengths and oracle predictions this is exactly the model of Theorem 4.2, whose
    capacity ``B / E[t_k]`` grows with the number of bins ``k``.

    Options beyond the paper:

    * ``work_conserving=True``: when no bin is full, serve a partial batch instead of waiting
      (the deciding GPU is always idle at a decision), from the fullest bin or the bin with the
      oldest request (``partial``). This trades the theorem's batch efficiency for latency at
      low load.
    * ``bin_choice``: how to choose among full bins: ``"formation"`` (the paper),
      ``"round-robin"`` or ``"longest-queue"`` (the reference simulator's two choices). In
      work-conserving mode without a full bin, round-robin cycles over the non-empty bins and
      longest-queue takes the fullest one; ``partial`` applies to formation order only.
    * ``in_time_only=True``: bins count only their requests in time (deadline not yet passed)
      when the policy judges which bins are full, their formation times and which is fullest.
      A late request's miss is already counted, so neither waiting for it nor sizing a batch by
      it earns anything; a bin holding 64 late requests and 2 in time is not a full bin. When
      no request in time waits anywhere, every request counts again. Which requests a batch
      takes is the env's ``dispatch_order``: with ``"oldest-in-time"`` the counted requests are
      exactly the ones served first.
    * ``viable_fraction=f`` (implies the in-time judgement): bins count only their requests that
      would still be on time if a batch started now and lasted ``f`` times the bin's full-batch
      service estimate (``env.unwrapped.bin_service_s``), i.e. ``arrival + sla > now + f *
      service``. Static batching keeps every member until the batch ends, so a request this
      close to its deadline is served late anyway and its slot and KV memory are better given
      to one that can still make it. The estimate takes a full batch at the bin's upper length,
      which overstates a typical batch; ``f = 0.5`` (registered as ``multibin-wc-viable``) was
      chosen on tuning seeds (``docs/results.md``). When no request is viable anywhere, the
      requests in time count; when none is in time, every request counts.

    Args:
        env: A ``BatchScheduling-v0`` environment.
        batch_size: The batch size ``B``; it must be one of the env's size levels
            (``env.unwrapped.batch_sizes``) so that a full bin is served whole. Default: the
            env's ``max_batch_size``.
        work_conserving: Serve partial batches instead of waiting.
        bin_choice: ``"formation"``, ``"round-robin"`` or ``"longest-queue"``.
        partial: ``"fullest"`` or ``"oldest"``: the bin of a work-conserving partial batch.
        in_time_only: Judge bins by their requests in time only.
        viable_fraction: Judge bins by their requests that can still be on time, a batch
            taking this fraction (in ``(0, 1]``) of the bin's full-batch service estimate;
            ``None`` to not.

    Raises:
        ValueError: If an argument is not one of its allowed values.
    """

    name = "multibin"

    def __init__(
        self,
        env: gym.Env,
        batch_size: int | None = None,
        *,
        work_conserving: bool = False,
        bin_choice: BinChoice = "formation",
        partial: PartialChoice = "fullest",
        in_time_only: bool = False,
        viable_fraction: float | None = None,
    ) -> None:
        super().__init__(env)
        owner = type(self).__name__
        size = self.max_batch_size if batch_size is None else batch_size
        size = check_int(owner, "batch_size", size, 1)  # a float is refused, as elsewhere
        if size not in self.batch_sizes:
            raise ValueError(
                f"{owner}: batch_size must be one of the env's size levels "
                f"{list(self.batch_sizes)} (or None for max_batch_size), got {batch_size!r}"
            )
        self.batch_size = int(size)
        self._level = self.batch_sizes.index(self.batch_size)
        for flag, value in (("work_conserving", work_conserving), ("in_time_only", in_time_only)):
            if not isinstance(value, bool):
                raise ValueError(f"{owner}: {flag} must be a bool, got {value!r}")
        self.work_conserving = work_conserving
        self.in_time_only = in_time_only or viable_fraction is not None
        self.viable_fraction = viable_fraction
        #: The per-bin horizons tried in turn: a request counts while ``arrival + sla > now +
        #: horizon[bin]``; the last, all zeros, is the env's miss test.
        self._horizons_s: tuple[np.ndarray, ...] = (np.zeros(self.n_bins),)
        if viable_fraction is not None:
            fraction = check_positive(owner, "viable_fraction", viable_fraction, at_most=1)
            viable = fraction * np.asarray(env.unwrapped.bin_service_s, dtype=float)
            self._horizons_s = (viable, *self._horizons_s)
        self.bin_choice = check_choice(owner, "bin_choice", bin_choice, BIN_CHOICES)
        self.partial = check_choice(owner, "partial", partial, PARTIAL_CHOICES)
        judged = "-viable" if viable_fraction is not None else "-in-time" if in_time_only else ""
        self.name = ("multibin-wc" if work_conserving else "multibin") + judged
        self._next_bin = 0

    def reset(self) -> None:
        """Restart the round-robin pointer at bin 0."""
        self._next_bin = 0

    def _round_robin(self, eligible: list[int]) -> int:
        """The first eligible bin at or after the pointer (cyclically); advances the pointer."""
        chosen = min(eligible, key=lambda j: (j - self._next_bin) % self.n_bins)
        self._next_bin = (chosen + 1) % self.n_bins
        return chosen

    def _in_time(
        self, queues: Sequence[np.ndarray], arrivals: Sequence[np.ndarray], now_s: float
    ) -> tuple[Sequence[np.ndarray], Sequence[np.ndarray]]:
        """Each bin's requests that can still be on time, else those in time, else all.

        A request is late by the env's miss test (:func:`~llmsched_env.sim.batch_rules.
        is_late`). With ``viable_fraction`` a request first stops counting its bin's horizon
        earlier (late at ``now + horizon``); that test is dropped when no request passes it.
        """
        late = getattr(is_late, "py_func", is_late)  # the NumPy form of the compiled rule
        for horizon_s in self._horizons_s:
            keep = [
                ~late(arrival, self.sla_s, now_s + horizon_s[j])
                for j, arrival in enumerate(arrivals)
            ]
            if any(k.any() for k in keep):
                return (
                    [q[k] for q, k in zip(queues, keep, strict=True)],
                    [a[k] for a, k in zip(arrivals, keep, strict=True)],
                )
        return queues, arrivals

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Serve a full bin, else WAIT (or a partial batch when work-conserving or at the end)."""
        snapshot = self.env.queue_snapshot()
        queues, arrivals = snapshot.ids, snapshot.arrival_s
        if self.in_time_only:
            queues, arrivals = self._in_time(queues, arrivals, info["time_s"])
        b = self.batch_size
        full = [j for j, q in enumerate(queues) if q.size >= b]
        if full:
            if self.bin_choice == "formation":
                # Formation time, ties broken by the request index of the B-th request.
                chosen = min(full, key=lambda j: (arrivals[j][b - 1], queues[j][b - 1]))
            elif self.bin_choice == "round-robin":
                chosen = self._round_robin(full)
            else:
                chosen = max(full, key=lambda j: (queues[j].size, -queues[j][0]))
            return make_action(chosen, self._level)
        if not self.work_conserving:
            if info["action_mask"][0]:
                return make_action(None, 0)
            return make_action(fullest_bin(queues), self._level)  # nothing more will arrive
        if self.bin_choice == "round-robin":
            chosen = self._round_robin([j for j, q in enumerate(queues) if q.size])
        elif self.bin_choice == "formation" and self.partial == "oldest":
            chosen = oldest_bin(queues)
        else:
            chosen = fullest_bin(queues)
        return make_action(chosen, self._level)
