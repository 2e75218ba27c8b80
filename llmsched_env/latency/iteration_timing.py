"""Iteration latency models timed inside compiled code (the iteration-level server's kernels).

A model with a compiled timing says so with ``compiled_timing()``, which returns its
:class:`CompiledTiming`: a code, a parameter array and, for the profiled model, its packed
tables. :func:`iteration_time_s` then gives the same duration as the model's ``iteration_s``,
bit for bit, by the same arithmetic. Models that draw from the run's numpy generator (the
stochastic affine model) have none and are timed in Python.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from llmsched_env.jit import njit
from llmsched_env.latency.profiled import _iteration_s

#: Codes of the compiled timings.
AFFINE_TIMING = 1
LINEAR_TIMING = 2
PROFILED_TIMING = 3
#: Entries of a timing's parameter array.
N_TIMING_PARAMS = 4

#: The tables argument of a timing without tables (typed as the profiled model's).
_NO_TABLES = (np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


class CompiledTiming(NamedTuple):
    """What :func:`iteration_time_s` needs of a model.

    Attributes:
        code: :data:`AFFINE_TIMING`, :data:`LINEAR_TIMING` or :data:`PROFILED_TIMING`.
        params: :data:`N_TIMING_PARAMS` floats: affine ``(c_s, a_s_per_token, b0_tokens)``,
            linear ``(b0_s, b1, b2, b3)``, profiled ``(iteration_overhead_s,)``, zero-padded.
        tables: The profiled model's packed tables ``(floats, ints, layout)``; empty arrays of
            the same types for the others.
    """

    code: int
    params: np.ndarray
    tables: tuple[np.ndarray, np.ndarray, np.ndarray]


def compiled_timing(code: int, *params: float, tables: tuple | None = None) -> CompiledTiming:
    """A :class:`CompiledTiming` with ``params`` zero-padded."""
    values = np.zeros(N_TIMING_PARAMS)
    values[: len(params)] = params
    return CompiledTiming(code, values, _NO_TABLES if tables is None else tables)


@njit(cache=True)
def iteration_time_s(
    code, params, tables, prefill, decode, context, prefill_kv, sequences, kv_max, kv_min
):
    """One iteration's duration in seconds by a compiled timing (``nan``: no valid time).

    The integer counts are those of the model's ``iteration_s``; each model's arithmetic is
    the same as there, in the same order.
    """
    if code == AFFINE_TIMING:
        excess = prefill + decode - params[2]
        return params[0] + params[1] * excess if excess > 0 else params[0]
    if code == LINEAR_TIMING:
        return params[0] + params[1] * prefill + params[2] * decode + params[3] * context
    us = _iteration_s(
        float(prefill),
        float(decode),
        float(context),
        float(prefill_kv),
        float(sequences),
        float(kv_max),
        float(kv_min),
        tables[0],
        tables[1],
        tables[2],
    )
    if not us >= 0.0:
        return math.nan
    return us * 1e-6 + params[0]
