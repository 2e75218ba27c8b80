"""Named workload sources (presets) and the lookup that environments use.

==========================  =====================================================  ============
name                        what                                                   natural rate
==========================  =====================================================  ============
``azure-conv``              real Azure conversation trace, noisy length predictor  5.53 req/s
``azure-conv-oracle``       the same trace with exact output lengths               5.53 req/s
``mooncake-conversation``   Mooncake conversation trace with prefix block hashes   3.40 req/s
``mooncake-synthetic``      Mooncake synthetic trace with prefix block hashes      3.91 req/s
``prefix-sharing``          SYNTHETIC system prompts and multi-turn sessions       2 req/s
``burstgpt-synthetic``      SYNTHETIC stream fitted to BurstGPT's statistics       0.271 req/s
``sharegpt``                ShareGPT lengths of LLMServingSim 2.0, Poisson         10 req/s
``demo2``                   Simulator B's demo2 workload                           2 req/s
``demo3``                   Simulator B's demo3 workload                           1 req/s
``sim-a``                   Simulator A: prompt 128, 64 decode steps               1 req/s
``mm1``                     one-token requests for the M/M/1 check                 2 req/s
``uniform``                 Multi-Bin theory: output lengths uniform on 100..2000  10 req/s
==========================  =====================================================  ============

Each preset is a zero-argument factory in :data:`WORKLOAD_PRESETS`; its default arrival rate is the
source's ``natural_rate_rps``, and a different load is asked for with ``arrival_rate_rps`` in
``sample``. The sources ``demo2``, ``demo3``, ``sim-a`` and ``mm1`` reproduce the workloads of the
Cornell ORIE 4580/5580 course simulators; ``uniform`` the model of the Multi-Bin Batching paper
(Guldogan et al., arXiv 2412.04504).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from llmsched_env.registry import resolve
from llmsched_env.workload.arrivals import GammaArrivals, PoissonArrivals
from llmsched_env.workload.length_mixtures import Discrete, Empirical, Mixture
from llmsched_env.workload.lengths import Fixed, Geometric, LogNormal, UniformInt
from llmsched_env.workload.mooncake import (
    MOONCAKE_CONVERSATION_TRACE,
    MOONCAKE_SYNTHETIC_TRACE,
    load_mooncake_trace,
)
from llmsched_env.workload.predictors import (
    LogNormalNoisePredictor,
    OraclePredictor,
    PromptPowerLawPredictor,
)
from llmsched_env.workload.requests import Workload
from llmsched_env.workload.shared_prefixes import PrefixSharingSource
from llmsched_env.workload.sources import SyntheticSource, TraceSource, WorkloadSource
from llmsched_env.workload.trace_files import (
    TRACE_SPEC_PREFIX,
    parse_trace_spec,
    trace_source,
)
from llmsched_env.workload.traces import AZURE_CONV_TRACE, load_azure_trace, shipped_data_path

#: Published statistics of BurstGPT_1.csv that :func:`burstgpt_synthetic` is fitted to.
BURSTGPT_PUBLISHED_STATS: dict[str, dict[str, float]] = {
    "inter_arrival_s": {"mean": 3.69, "cv": 13.28},
    "request_tokens": {"mean": 611, "std": 782, "p25": 137, "p50": 251, "p75": 758, "max": 29665},
    "response_tokens": {"mean": 123, "std": 268, "p25": 7, "p50": 34, "p75": 134, "max": 7315},
}

#: Gamma shape of the synthetic BurstGPT arrivals (cv = 1 / sqrt(shape) = 1.414).
BURSTGPT_GAMMA_SHAPE = 0.5


@lru_cache(maxsize=1)
def _azure_conv_trace() -> Workload:
    """The shipped Azure conversation trace, read once per process (workloads are read-only)."""
    return load_azure_trace(shipped_data_path(AZURE_CONV_TRACE), name="azure-conv")


def azure_conv() -> TraceSource:
    """The Azure LLM inference trace 2023, conversation service, with a noisy length predictor.

    19,366 real requests over about an hour (5.53 req/s; Patel et al., Splitwise, ISCA 2024;
    CC-BY 4.0, see ``data/README.md``). The first 20% is calibration history; episodes are windows
    of the rest.

    Predictions are ``LogNormalNoisePredictor(sigma=0.5)``: 68% of predictions within a factor
    1.65 of the true length and 83% within a factor 2. A scheduler never knows output lengths
    exactly; this error is large enough that policies cannot rely on exact lengths yet small
    enough that length-aware scheduling can still help. How much prediction quality matters is
    shown by the Multi-Bin paper: +70% throughput from 1 to 32 bins with oracle lengths, about
    +8% from 1 to 4 bins with a learned predictor. Use ``azure-conv-oracle`` for exact lengths.
    """
    return TraceSource("azure-conv", _azure_conv_trace(), LogNormalNoisePredictor(sigma=0.5))


def azure_conv_oracle() -> TraceSource:
    """The Azure conversation trace of :func:`azure_conv` with exact (oracle) output lengths."""
    return TraceSource("azure-conv-oracle", _azure_conv_trace(), OraclePredictor())


@lru_cache(maxsize=2)
def _mooncake_trace(filename: str, name: str) -> Workload:
    """A shipped Mooncake trace, read once per process (workloads are read-only)."""
    return load_mooncake_trace(shipped_data_path(filename), name=name)


def mooncake_conversation() -> TraceSource:
    """The Mooncake conversation trace, with its prefix block hashes and a noisy length predictor.

    12,031 requests sampled from one hour of Kimi's production conversation service (3.40 req/s;
    mean prompt 12,035 tokens, mean output 343; Qin et al., Mooncake, FAST 2025; Apache-2.0, see
    ``data/README.md``). Prompts carry prefix block hashes of 512-token blocks
    (:func:`~llmsched_env.workload.mooncake.load_mooncake_trace`), used by
    ``ContinuousBatching-v0`` with ``kv_allocation="paged", prefix_caching=True``. Predictions
    and the calibration split are those of :func:`azure_conv`.
    """
    trace = _mooncake_trace(MOONCAKE_CONVERSATION_TRACE, "mooncake-conversation")
    return TraceSource("mooncake-conversation", trace, LogNormalNoisePredictor(sigma=0.5))


def mooncake_synthetic() -> TraceSource:
    """The Mooncake synthetic trace: 3,993 requests built from public datasets (3.91 req/s).

    Long prompts (mean about 15,000 tokens) from long-document and multi-turn datasets with
    Poisson arrivals (Qin et al., Mooncake, FAST 2025; Apache-2.0); prefix block hashes and
    predictions as in :func:`mooncake_conversation`.
    """
    trace = _mooncake_trace(MOONCAKE_SYNTHETIC_TRACE, "mooncake-synthetic")
    return TraceSource("mooncake-synthetic", trace, LogNormalNoisePredictor(sigma=0.5))


def burstgpt_synthetic() -> SyntheticSource:
    """SYNTHETIC requests fitted to BurstGPT's published statistics (no BurstGPT data is used).

    BurstGPT (Wang et al., KDD'25) is the trace the reference request-level simulator replays; it
    is not shipped (see ``data/README.md``). This generator matches its published statistics
    (:data:`BURSTGPT_PUBLISHED_STATS`), not its sequence.

    * Arrivals: Gamma renewal with the published mean gap 3.69 s (0.271 req/s) and the BurstGPT
      paper's Gamma shape 0.5 (cv 1.41), not the published cv 13.28. That cv is measured over
      61 days and is dominated by daily and weekly cycles and idle periods; a stationary Gamma
      process with cv 13.28 (shape 0.0057) puts 89% of gaps below one microsecond and 1.5% at
      exactly 0 s, i.e. clumps of about 30 simultaneous requests between gaps of minutes, which
      no episode of a few thousand requests resembles.
    * Request tokens: a two-component lognormal mixture (76.06% ``exp(N(5.2391, 0.7113**2))``,
      23.94% ``exp(N(7.3960, 0.4243**2))``), floored to whole tokens and capped at the published
      maximum 29,665. It reproduces the published mean 611, std 782 and quartiles 137 / 251 / 758
      (exactly: mean 610.98, std 782.03). The paper describes the tail as Zipf-like; the mixture
      matches the moments and quartiles, not the shape of the far tail.
    * Response tokens: the same form (70.27% ``exp(N(2.6571, 1.7348**2))``, 29.73%
      ``exp(N(5.1578, 0.9209**2))``, capped at 7,315), bimodal like ChatGPT's responses. Exact:
      mean 123.01, std 268.01, quartiles 7 / 34 / 134 (published 123, 268, 7 / 34 / 134).
    * Predictions: :class:`PromptPowerLawPredictor`, the reference simulator's
      ``1.5 * prompt**0.7 * LogNormal(0, 0.1)`` clipped to ``[1, 4096]``. Request and response
      lengths are drawn independently (only marginal statistics are published), so here the
      predictions carry no information about the true output lengths.

    The mixture parameters were fitted by matching the mean, std and quartiles of the floored,
    capped distribution to the published values (five equations, five unknowns).
    """
    request = Mixture(
        (
            LogNormal(5.2391, 0.7113, max_tokens=29665),
            LogNormal(7.3960, 0.4243, max_tokens=29665),
        ),
        (0.7606, 0.2394),
    )
    response = Mixture(
        (
            LogNormal(2.6571, 1.7348, max_tokens=7315),
            LogNormal(5.1578, 0.9209, max_tokens=7315),
        ),
        (0.7027, 0.2973),
    )
    arrivals = GammaArrivals.from_shape(rate_rps=1.0 / 3.69, shape=BURSTGPT_GAMMA_SHAPE)
    return SyntheticSource(
        "burstgpt-synthetic", arrivals, request, response, PromptPowerLawPredictor()
    )


#: The shipped file holding the prompt and output lengths of LLMServingSim 2.0's ShareGPT workload
#: (arrays ``input_toks`` and ``output_toks``, beside the prompts' prefix hashes).
SHAREGPT_LENGTHS = "vllm_bench/workloads/sharegpt-llama-3.1-8b-300-sps10.prefix-hashes.npz"

#: Mean arrival rate of the ShareGPT workload file (300 requests at about 10 req/s).
SHAREGPT_RATE_RPS = 10.0


@lru_cache(maxsize=1)
def _sharegpt_lengths() -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output lengths of the 300 ShareGPT requests, read once per process."""
    path = shipped_data_path(SHAREGPT_LENGTHS)
    with np.load(path) as data:
        prompt, output = data["input_toks"], data["output_toks"]
    if prompt.shape != (300,) or output.shape != (300,):
        raise ValueError(
            f"{path}: expected input_toks and output_toks of 300 requests, got shapes "
            f"{prompt.shape} and {output.shape}"
        )
    return prompt, output


def sharegpt() -> SyntheticSource:
    """ShareGPT conversations as LLMServingSim 2.0 replays them, with Poisson arrivals.

    The lengths are those of the 300 ShareGPT requests of LLMServingSim 2.0's workload file
    ``sharegpt-llama-3.1-8b-300-sps10.jsonl`` (casys-kaist/LLMServingSim, MIT; Llama-3.1-8B
    tokens), which its real vLLM runs served: prompts 262 to 3,998 tokens (mean 857, median 732),
    outputs 512 to 1,021 tokens (mean 653; the file keeps only requests of at least 512 output
    tokens). The package ships them in the prompts' prefix-hash file
    (:data:`SHAREGPT_LENGTHS`, ``data/README.md``). Prompt and output lengths are resampled
    independently (their correlation in the file is 0.16), as for the bursty Azure scenario
    workload; arrivals are Poisson at the file's 10 req/s (its gaps have cv 0.94), rescaled by
    the env's ``load``; predictions are ``LogNormalNoisePredictor(sigma=0.5)`` as for the traces.
    Used as a workload held out from training (``agents.scenarios``).
    """
    prompt, output = _sharegpt_lengths()
    return SyntheticSource(
        "sharegpt",
        PoissonArrivals(SHAREGPT_RATE_RPS),
        Empirical(prompt),
        Empirical(output),
        LogNormalNoisePredictor(sigma=0.5),
    )


def demo2() -> SyntheticSource:
    """Simulator B's ``demo2``: prompts {32, 128, 512} w.p. {0.6, 0.3, 0.1}, outputs {64, 256}.

    Outputs are 64 or 256 tokens with probability 1/2 each; Poisson arrivals at 2 req/s by
    default; oracle predictions.
    """
    return SyntheticSource(
        "demo2",
        PoissonArrivals(2.0),
        Discrete((32, 128, 512), (0.6, 0.3, 0.1)),
        Discrete((64, 256), (0.5, 0.5)),
    )


def demo3() -> SyntheticSource:
    """Simulator B's ``demo3``: lognormal prompts and geometric outputs.

    Prompt ``max(1, int(exp(N(3.2764, 1.5201**2))))`` (mean 83.6 tokens); output geometric with
    ``p = 0.0056`` capped at 1024 (mean 178.0 tokens); Poisson arrivals at 1 req/s by default;
    oracle predictions.
    """
    return SyntheticSource(
        "demo3",
        PoissonArrivals(1.0),
        LogNormal(3.2764, 1.5201),
        Geometric(0.0056, cap=1024),
    )


def sim_a() -> SyntheticSource:
    """Simulator A: every job has a 128-token prompt followed by B = 64 decode steps.

    In this package the prefill emits the first output token, so B = 64 decode steps after the
    prefill is ``output_tokens = 65``. Poisson arrivals at 1 req/s by default.
    """
    return SyntheticSource("sim-a", PoissonArrivals(1.0), Fixed(128), Fixed(65))


def mm1() -> SyntheticSource:
    """One-token requests (prompt 1, output 1: prefill only) with Poisson arrivals at 2 req/s.

    With batch size 1 and an exponential per-request service time (mean 0.4 s from the latency
    model) this is an M/M/1 queue with mean response time ``1 / (mu - lambda) = 2.0`` s.
    """
    return SyntheticSource("mm1", PoissonArrivals(2.0), Fixed(1), Fixed(1))


def uniform() -> SyntheticSource:
    """The Multi-Bin Batching model: output lengths uniform on the integers 100..2000.

    Prompt 1 token; oracle predictions; Poisson arrivals at 10 req/s by default. Under a latency
    model that charges 0.01 s per output token, service times are uniform on [1, 20] s at 0.01 s
    resolution, the paper's ``U(l_min, l_max)`` example.
    """
    return SyntheticSource("uniform", PoissonArrivals(10.0), Fixed(1), UniformInt(100, 2000))


def prefix_sharing() -> PrefixSharingSource:
    """SYNTHETIC prompts sharing prefixes: 4 system prompts of 1,024 tokens, sessions of 4 turns.

    Share rate 0.75 (three quarters of the prompt tokens are a prefix an earlier prompt had),
    16-token block hashes, lognormal outputs (median 148 tokens), Poisson arrivals at 2 req/s,
    oracle predictions; see :mod:`llmsched_env.workload.shared_prefixes`.
    """
    return PrefixSharingSource()


WORKLOAD_PRESETS: dict[str, Callable[[], WorkloadSource]] = {
    "azure-conv": azure_conv,
    "azure-conv-oracle": azure_conv_oracle,
    "mooncake-conversation": mooncake_conversation,
    "mooncake-synthetic": mooncake_synthetic,
    "burstgpt-synthetic": burstgpt_synthetic,
    "sharegpt": sharegpt,
    "demo2": demo2,
    "demo3": demo3,
    "sim-a": sim_a,
    "mm1": mm1,
    "prefix-sharing": prefix_sharing,
    "uniform": uniform,
}
"""Workload presets: name -> zero-argument factory of a :class:`WorkloadSource`."""


def make_workload_source(name_or_source: str | WorkloadSource) -> WorkloadSource:
    """Return a workload source, building presets by name and trace files by ``trace:`` strings.

    Args:
        name_or_source: A name in :data:`WORKLOAD_PRESETS`, ``"trace:[FORMAT:]PATH"`` for a
            trace file (:func:`~llmsched_env.workload.trace_files.trace_source`; ``FORMAT`` is
            ``azure``, ``burstgpt`` or ``mooncake``, detected when omitted), or a source object
            (returned as is).

    Returns:
        The workload source.

    Raises:
        ValueError: For an unknown name; the message lists the presets and suggests the closest.
        TypeError: For an object that is not a workload source.

    Example:
        >>> make_workload_source("demo2").natural_rate_rps
        2.0
        >>> make_workload_source("demo-2")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown workload preset 'demo-2'; expected one of [...]. Did you mean 'demo2'?
    """
    if isinstance(name_or_source, str) and name_or_source.startswith(TRACE_SPEC_PREFIX):
        return trace_source(*parse_trace_spec(name_or_source))
    if isinstance(name_or_source, str):
        return resolve("workload preset", name_or_source, WORKLOAD_PRESETS)()
    if not isinstance(name_or_source, WorkloadSource):
        raise TypeError(
            "name_or_source must be a workload preset name or an object with name, sample(), "
            f"natural_rate_rps and calibration(), got {name_or_source!r}"
        )
    return name_or_source
