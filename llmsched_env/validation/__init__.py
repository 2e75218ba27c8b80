"""Replay real vLLM serving runs through ``ContinuousBatching-v0`` and measure the error.

* :mod:`~llmsched_env.validation.runs`: load and check a recorded run (:func:`load_run`).
* :mod:`~llmsched_env.validation.latencies`: per-request TTFT, TPOT, E2E and their statistics.
* :mod:`~llmsched_env.validation.settings`: how each run is replayed (:data:`RUN_SETTINGS`).
* :mod:`~llmsched_env.validation.replay`: the replay itself (:func:`replay`).
* :mod:`~llmsched_env.validation.report`: the comparison table and figures (:func:`validate`).
* :mod:`~llmsched_env.validation.prefix_sharing`: how much prefill a prefix cache could skip in a
  workload whose prompts have block hashes (:func:`prefix_sharing`).
* :mod:`~llmsched_env.validation.prompt_hashes`: the shipped prefix block hashes of a run's
  prompts, for replays with prefix caching (:func:`shipped_prompt_hashes`).

The shipped runs are LLMServingSim 2.0's vLLM 0.19.0 runs (casys-kaist/LLMServingSim, MIT).
``llmsched validate`` runs :func:`validate` from the shell.
"""

from llmsched_env.validation.latencies import (
    METRICS,
    STATS,
    latency_stats,
    request_latencies_ms,
)
from llmsched_env.validation.prefix_sharing import (
    PrefixSharing,
    prefix_sharing,
)
from llmsched_env.validation.prompt_hashes import (
    PromptHashes,
    attach_prompt_hashes,
    load_prompt_hashes,
    prompt_hashes_from_jsonl,
    save_prompt_hashes,
    shipped_prompt_hashes,
)
from llmsched_env.validation.replay import ReplayResult, replay, run_workload
from llmsched_env.validation.report import (
    VALIDATION_COLUMNS,
    RunValidation,
    measured_latencies_ms,
    validate,
    validate_run,
)
from llmsched_env.validation.runs import (
    RunDataError,
    VllmRun,
    load_run,
    shipped_run_names,
)
from llmsched_env.validation.settings import RUN_SETTINGS, RunSettings, run_settings

__all__ = [
    "METRICS",
    "PrefixSharing",
    "PromptHashes",
    "RUN_SETTINGS",
    "STATS",
    "VALIDATION_COLUMNS",
    "ReplayResult",
    "RunDataError",
    "RunSettings",
    "RunValidation",
    "VllmRun",
    "attach_prompt_hashes",
    "latency_stats",
    "load_prompt_hashes",
    "load_run",
    "measured_latencies_ms",
    "prefix_sharing",
    "prompt_hashes_from_jsonl",
    "replay",
    "request_latencies_ms",
    "run_settings",
    "run_workload",
    "save_prompt_hashes",
    "shipped_prompt_hashes",
    "shipped_run_names",
    "validate",
    "validate_run",
]
