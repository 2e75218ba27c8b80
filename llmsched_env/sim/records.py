"""Per-request records of one simulation run, held as numpy arrays.

Every request of a run ends in exactly one of four states, and the counts always add up:

* ``completed``: its last token was produced;
* ``rejected``: refused at arrival, with a :class:`RejectReason`;
* ``in_system``: it arrived and is waiting or being served when the run stops;
* ``not_arrived``: its arrival time lies after the moment the run stopped (only after a truncation).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import pandas as pd

from llmsched_env.metrics import STATUS_NAMES
from llmsched_env.workload import Workload


class RejectReason(IntEnum):
    """Why a request was refused at arrival."""

    NONE = 0
    """Not rejected."""
    EXCEEDS_KV_CAPACITY = 1
    """Its prompt plus output tokens need more KV memory than one GPU has."""
    PROMPT_EXCEEDS_TOKEN_BUDGET = 2
    """Without chunked prefill, its prompt is longer than the per-iteration token budget (with
    paged KV, its prompt plus output less one token: a recomputation after a preemption)."""


class RequestRecords:
    """Mutable per-request state of a run: what happened to each request and when.

    Times are ``nan`` until the event happens. The simulator writes these arrays; metrics and
    environments read them.

    Attributes:
        workload: The requests being served.
        start_s: When the request was first scheduled on a GPU (batch dispatch or prefill start).
        first_token_s: When its first output token was produced (end of its prefill), if known.
        completion_s: When its last output token was produced.
        gpu: Index of the GPU that served it, or -1.
        batch: Index of the batch (request-level server) that served it, or -1.
        reject_reason: A :class:`RejectReason` code per request.
        completed: Whether the request has completed.
        tokens_generated: Output tokens produced so far (iteration-level server).
        max_token_gap_s: Longest time between two consecutive output tokens (iteration level).
        preemptions: How many times the request was preempted (iteration level, paged KV).
        recomputed_tokens: KV tokens of the request discarded by its preemptions, which it
            computes again when readmitted (with prefix caching, less those it then found
            cached).
        prefix_hit_tokens: Tokens its admissions skipped because their KV blocks were in the
            prefix cache (iteration level, paged KV with prefix caching).
    """

    def __init__(self, workload: Workload) -> None:
        n = len(workload)
        self.workload = workload
        self.start_s = np.full(n, np.nan)
        self.first_token_s = np.full(n, np.nan)
        self.completion_s = np.full(n, np.nan)
        self.gpu = np.full(n, -1, dtype=np.int32)
        self.batch = np.full(n, -1, dtype=np.int64)
        self.reject_reason = np.zeros(n, dtype=np.int8)
        self.completed = np.zeros(n, dtype=bool)
        self.tokens_generated = np.zeros(n, dtype=np.int64)
        self.max_token_gap_s = np.zeros(n)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.recomputed_tokens = np.zeros(n, dtype=np.int64)
        self.prefix_hit_tokens = np.zeros(n, dtype=np.int64)
        #: Whether the server resolves individual token times (iteration level) or not.
        self.tracks_token_gaps = True

    def __len__(self) -> int:
        return len(self.workload)

    def status(self, n_arrived: int) -> np.ndarray:
        """Return each request's state as an index into :data:`STATUS_NAMES`.

        Args:
            n_arrived: How many requests (a prefix of the arrival order) had arrived.
        """
        status = np.zeros(len(self), dtype=np.int8)
        status[:n_arrived] = 1
        status[self.completed] = 2
        status[self.reject_reason != RejectReason.NONE] = 3
        return status

    def columns(self, n_arrived: int) -> dict[str, np.ndarray]:
        """The columns that metrics need, as arrays (``status`` as codes into STATUS_NAMES)."""
        columns = {
            "arrival_s": self.workload.arrival_s,
            "start_s": self.start_s,
            "first_token_s": self.first_token_s,
            "completion_s": self.completion_s,
            "output_tokens": self.workload.output_tokens,
            "prompt_tokens": self.workload.prompt_tokens,
            "status": self.status(n_arrived),
        }
        if self.tracks_token_gaps:
            columns["max_token_gap_s"] = np.where(self.completed, self.max_token_gap_s, np.nan)
        return columns

    def to_frame(self, n_arrived: int) -> pd.DataFrame:
        """Return one row per request with its lengths, event times and final state.

        Args:
            n_arrived: How many requests had arrived when the run stopped.
        """
        w = self.workload
        status = self.status(n_arrived)
        reasons = np.array([r.name.lower() for r in RejectReason], dtype=object)
        return pd.DataFrame(
            {
                "arrival_s": w.arrival_s,
                "prompt_tokens": w.prompt_tokens,
                "output_tokens": w.output_tokens,
                "predicted_output_tokens": w.predicted_output_tokens,
                "start_s": self.start_s,
                "first_token_s": self.first_token_s,
                "completion_s": self.completion_s,
                "gpu": self.gpu,
                "batch": self.batch,
                "max_token_gap_s": np.where(self.completed, self.max_token_gap_s, np.nan),
                "preemptions": self.preemptions,
                "recomputed_tokens": self.recomputed_tokens,
                "prefix_hit_tokens": self.prefix_hit_tokens,
                "status": pd.Categorical.from_codes(status, categories=list(STATUS_NAMES)),
                "reject_reason": reasons[self.reject_reason],
            }
        )
