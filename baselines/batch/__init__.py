"""Baselines for BatchScheduling-v0 (request-level static batching).

Every entry of :data:`POLICIES` is a factory ``(env, **kwargs) -> Policy``;
``baselines.make_policy(name, env)`` resolves a name and builds the policy. Keyword arguments
given to a factory override its defaults, e.g. ``make_policy("multibin", env, batch_size=32)``.

| name | rule |
|------|------|
| ``static-fifo`` | oldest bin first, batches of up to 8, never waits |
| ``multibin`` | Multi-Bin Algorithm 1: full batches of ``max_batch_size``, formation order |
| ``multibin-wc`` | Multi-Bin, but a partial batch of the fullest bin instead of waiting |
| ``multibin-wc-in-time`` | ``multibin-wc`` judging bins by their requests still in time |
| ``multibin-wc-viable`` | ``multibin-wc`` judging bins by requests that can still be on time |
| ``sla-dynamic`` | one FIFO order, ``min(b_mem, b_SLA)`` with a per-token (TBT) controller |
| ``sla-dynamic-e2e`` | the same, controller driven by batch latency against the deadline |
| ``multibin-dynamic`` | bins served round-robin, each sized by its own ``min(b_mem, b_SLA)`` |
| ``spf`` | the bin whose next batch has the shortest predicted longest output |
| ``edf`` | the bin whose oldest request has the least slack to its deadline |
| ``random`` | uniform over mask-allowed actions |
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from baselines.base import Policy
from baselines.batch.bin_choice import (
    EarliestDeadlineFirst,
    RandomBinAndSize,
    ShortestPredictedFirst,
)
from baselines.batch.dynamic import MultiBinDynamic, SLADynamic
from baselines.batch.fifo import StaticFIFO
from baselines.batch.multibin import MultiBin

POLICIES: dict[str, Callable[..., Policy]] = {
    "static-fifo": StaticFIFO.from_env,
    "multibin": MultiBin.from_env,
    "multibin-wc": partial(MultiBin.from_env, work_conserving=True),
    "multibin-wc-in-time": partial(MultiBin.from_env, work_conserving=True, in_time_only=True),
    "multibin-wc-viable": partial(MultiBin.from_env, work_conserving=True, viable_fraction=0.5),
    "sla-dynamic": SLADynamic.from_env,
    "sla-dynamic-e2e": partial(SLADynamic.from_env, sla_signal="batch-latency"),
    "multibin-dynamic": MultiBinDynamic.from_env,
    "spf": ShortestPredictedFirst.from_env,
    "edf": EarliestDeadlineFirst.from_env,
    "random": RandomBinAndSize.from_env,
}
"""Request-level baselines by the name users type (``llmsched evaluate --policies``)."""

__all__ = [
    "POLICIES",
    "EarliestDeadlineFirst",
    "MultiBin",
    "MultiBinDynamic",
    "RandomBinAndSize",
    "SLADynamic",
    "ShortestPredictedFirst",
    "StaticFIFO",
]
