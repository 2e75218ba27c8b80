"""Latency and memory models of LLM inference, with named presets and a grid fit.

The simulator asks these models how long GPU work takes:

- :mod:`~llmsched_env.latency.batch`: a *static batch* (request level): ``batch_timing`` gives
  its service time and first-token offset (:class:`StaticBatchLatency`,
  :class:`EngineStaticBatchLatency`, :class:`MaxServiceLatency`, :class:`ExponentialBatchService`).
- :mod:`~llmsched_env.latency.iteration`: one *iteration* of continuous batching: ``iteration_s``
  from its prefill tokens, decode sequences and KV context (:class:`AffineIterationLatency`,
  :class:`LinearIterationLatency`, and :class:`ProfiledIterationLatency` in
  :mod:`~llmsched_env.latency.profiled`, built from measured per-layer GPU profiles read by
  :mod:`~llmsched_env.latency.profile_data`, for the models of
  :mod:`~llmsched_env.latency.architectures`).
- :mod:`~llmsched_env.latency.memory`: KV-cache capacity in tokens (:class:`KVMemory`).
- :mod:`~llmsched_env.latency.fit`: least-squares fit of ``T(b, L)`` to a latency grid.
- :mod:`~llmsched_env.latency.splitwise`: static-batch prefill and decode fitted to the Splitwise
  measurements of Llama2-70B and BLOOM-176B on A100 / H100 (the ``splitwise-*`` presets).
- :mod:`~llmsched_env.latency.presets`: the named models, each with its source, and the
  ``make_*`` lookups used by the environments.

Token convention: ``output_tokens`` includes the first output token, which the prefill emits; a
request therefore needs ``output_tokens - 1`` decode iterations.

Example:
    >>> import numpy as np
    >>> model = make_batch_latency("calibrated")
    >>> service_s, first_token_s = model.batch_timing(
    ...     np.array([100, 20]), np.array([28, 50]), np.random.default_rng(0)
    ... )
    >>> round(service_s, 4)  # 0.0597 + 0.005742 * 128 * (1 + 0.3157 / 2)
    0.9107
"""

from __future__ import annotations

from llmsched_env.latency.architectures import ARCHITECTURES, ModelArchitecture
from llmsched_env.latency.batch import (
    BatchLatencyModel,
    EngineStaticBatchLatency,
    ExponentialBatchService,
    MaxServiceLatency,
    StaticBatchLatency,
)
from llmsched_env.latency.fit import (
    GRID_COLUMNS,
    QWEN3_GRID_FILE,
    StaticBatchFit,
    fit_static_batch_latency,
    load_latency_grid,
)
from llmsched_env.latency.iteration import (
    AffineIterationLatency,
    IterationLatencyModel,
    LinearIterationLatency,
)
from llmsched_env.latency.memory import KVMemory, kv_bytes_per_token
from llmsched_env.latency.presets import (
    BATCH_LATENCY_PRESETS,
    ITERATION_LATENCY_PRESETS,
    KV_PRESETS,
    make_batch_latency,
    make_iteration_latency,
    make_kv_memory,
)
from llmsched_env.latency.profile_data import LayerProfile, ProfileDataError, load_layer_profile
from llmsched_env.latency.profiled import InterconnectLink, ProfiledIterationLatency
from llmsched_env.latency.splitwise import (
    SPLITWISE_FILE,
    SplitwiseFit,
    fit_splitwise,
    load_splitwise_perf,
    splitwise_batch_latency,
)

__all__ = [
    "ARCHITECTURES",
    "BATCH_LATENCY_PRESETS",
    "GRID_COLUMNS",
    "ITERATION_LATENCY_PRESETS",
    "KV_PRESETS",
    "QWEN3_GRID_FILE",
    "SPLITWISE_FILE",
    "AffineIterationLatency",
    "BatchLatencyModel",
    "EngineStaticBatchLatency",
    "ExponentialBatchService",
    "InterconnectLink",
    "IterationLatencyModel",
    "KVMemory",
    "LayerProfile",
    "LinearIterationLatency",
    "MaxServiceLatency",
    "ModelArchitecture",
    "ProfileDataError",
    "ProfiledIterationLatency",
    "StaticBatchFit",
    "SplitwiseFit",
    "StaticBatchLatency",
    "fit_splitwise",
    "fit_static_batch_latency",
    "kv_bytes_per_token",
    "load_latency_grid",
    "load_splitwise_perf",
    "load_layer_profile",
    "make_batch_latency",
    "make_iteration_latency",
    "make_kv_memory",
    "splitwise_batch_latency",
]
