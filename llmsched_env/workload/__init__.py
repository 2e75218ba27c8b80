"""Workloads: the requests an LLM-serving simulator is fed.

* :mod:`~llmsched_env.workload.requests`: :class:`Workload`, requests as parallel numpy arrays.
* :mod:`~llmsched_env.workload.arrivals`: arrival processes (Poisson, Gamma, deterministic).
* :mod:`~llmsched_env.workload.lengths`: token-length distributions (parametric families).
* :mod:`~llmsched_env.workload.length_mixtures`: tables of lengths, mixtures, resampled lengths.
* :mod:`~llmsched_env.workload.predictors`: output-length predictors.
* :mod:`~llmsched_env.workload.traces`: loaders for the Azure and BurstGPT trace formats.
* :mod:`~llmsched_env.workload.mooncake`: the loader for Mooncake traces (with prefix hashes).
* :mod:`~llmsched_env.workload.trace_files`: format detection, :func:`load_trace`, trace sources.
* :mod:`~llmsched_env.workload.shared_prefixes`: synthetic prefix sharing (system prompts,
  multi-turn sessions).
* :mod:`~llmsched_env.workload.sources`: what an environment samples each episode from.
* :mod:`~llmsched_env.workload.presets`: named sources and :func:`make_workload_source`.
"""

from llmsched_env.workload.arrivals import (
    ArrivalProcess,
    DeterministicArrivals,
    GammaArrivals,
    PoissonArrivals,
)
from llmsched_env.workload.length_mixtures import Discrete, Empirical, Mixture
from llmsched_env.workload.lengths import (
    Exponential,
    Fixed,
    Geometric,
    LengthDistribution,
    LogNormal,
    UniformInt,
)
from llmsched_env.workload.mooncake import load_mooncake_trace
from llmsched_env.workload.predictors import (
    PREDICTORS,
    LogNormalNoisePredictor,
    NeighbourBinPredictor,
    OraclePredictor,
    OutputLengthPredictor,
    PromptPowerLawPredictor,
    make_predictor,
)
from llmsched_env.workload.prefix_hashes import (
    prefix_block_hashes,
    prefix_block_hashes_from_token_ids,
    reusable_prefix_fraction,
)
from llmsched_env.workload.presets import WORKLOAD_PRESETS, make_workload_source
from llmsched_env.workload.requests import MAX_ARRIVAL_S, Workload
from llmsched_env.workload.shared_prefixes import PrefixSharingSource
from llmsched_env.workload.sources import SyntheticSource, TraceSource, WorkloadSource
from llmsched_env.workload.trace_files import (
    TRACE_FORMATS,
    detect_trace_format,
    load_trace,
    trace_source,
)
from llmsched_env.workload.traces import (
    AZURE_CONV_TRACE,
    QWEN_LATENCY_GRID,
    DataFileNotFoundError,
    load_azure_trace,
    load_burstgpt_trace,
    shipped_data_path,
)

__all__ = [
    "MAX_ARRIVAL_S",
    "AZURE_CONV_TRACE",
    "PREDICTORS",
    "QWEN_LATENCY_GRID",
    "TRACE_FORMATS",
    "WORKLOAD_PRESETS",
    "ArrivalProcess",
    "DataFileNotFoundError",
    "DeterministicArrivals",
    "Discrete",
    "Empirical",
    "Exponential",
    "Fixed",
    "GammaArrivals",
    "Geometric",
    "LengthDistribution",
    "LogNormal",
    "LogNormalNoisePredictor",
    "Mixture",
    "NeighbourBinPredictor",
    "OraclePredictor",
    "OutputLengthPredictor",
    "PoissonArrivals",
    "PrefixSharingSource",
    "PromptPowerLawPredictor",
    "SyntheticSource",
    "TraceSource",
    "UniformInt",
    "Workload",
    "WorkloadSource",
    "detect_trace_format",
    "load_azure_trace",
    "load_burstgpt_trace",
    "load_mooncake_trace",
    "load_trace",
    "make_predictor",
    "make_workload_source",
    "prefix_block_hashes",
    "prefix_block_hashes_from_token_ids",
    "reusable_prefix_fraction",
    "shipped_data_path",
    "trace_source",
]
