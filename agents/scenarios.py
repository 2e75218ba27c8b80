"""Named benchmark scenarios: the env configurations agents are trained and compared on.

A :class:`Scenario` is an env id and plain keyword arguments (numbers and names, so a run's
configuration is plain JSON). Workloads that are not workload presets but are built for a
scenario, such as the bursty Azure workload, are named in :data:`SCENARIO_WORKLOADS`;
:func:`build_env_kwargs` replaces such a name with the workload object before ``gym.make``.

=======================  ==================================================================
scenario                 what
=======================  ==================================================================
``batch-default``        ``BatchScheduling-v0`` with its defaults (Azure trace, 2 GPUs, load 1)
``batch-overload``       the default at 1.25 times the estimated capacity, late requests last
``batch-bursty``         Azure lengths, Gamma arrivals of coefficient of variation 4, load 1.25
``batch-multi-gpu``      4 GPUs (500 requests each, as the default) at 1.5 times capacity
``continuous-default``   ``ContinuousBatching-v0`` with its defaults
``continuous-bursty``    Gamma arrivals of coefficient of variation 4, continuous batching
=======================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import Any

from llmsched_env.kinds import get_kind
from llmsched_env.registry import resolve
from llmsched_env.workload import (
    Empirical,
    GammaArrivals,
    LogNormalNoisePredictor,
    SyntheticSource,
    WorkloadSource,
)
from llmsched_env.workload.presets import azure_conv

#: Coefficient of variation of the gaps between arrivals of the bursty workload.
BURSTY_CV = 4.0


def azure_conv_bursty() -> SyntheticSource:
    """Azure conversation lengths with Gamma arrivals of coefficient of variation 4.

    Prompt and output lengths are resampled independently from the whole shipped Azure
    conversation trace (:func:`~llmsched_env.workload.presets.azure_conv`), predictions use the
    same noisy predictor (``LogNormalNoisePredictor(sigma=0.5)``), and arrivals are a Gamma
    renewal process with gap cv :data:`BURSTY_CV` (shape 1/16) at the trace's mean rate; envs
    rescale the rate to their ``load``. With cv 4, most gaps are tiny and a few are very long:
    about 18 requests arrive almost at once between gaps longer than five mean gaps, and those
    long gaps make up three quarters of the time, so each burst overloads the GPUs for a while
    and the queue drains in between.
    """
    trace = azure_conv().trace
    return SyntheticSource(
        "azure-conv-bursty",
        GammaArrivals(rate_rps=trace.mean_rate_rps, cv=BURSTY_CV),
        Empirical(trace.prompt_tokens),
        Empirical(trace.output_tokens),
        LogNormalNoisePredictor(sigma=0.5),
    )


#: Workloads built for scenarios (names that are not workload presets).
SCENARIO_WORKLOADS: dict[str, Callable[[], WorkloadSource]] = {
    "azure-conv-bursty": azure_conv_bursty,
}


@cache
def scenario_workload(name: str) -> WorkloadSource:
    """The workload source called ``name`` in :data:`SCENARIO_WORKLOADS` (built once)."""
    return resolve("scenario workload", name, SCENARIO_WORKLOADS)()


def build_env_kwargs(env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Turn plain env keyword arguments into ``gym.make`` keyword arguments.

    A ``workload`` named in :data:`SCENARIO_WORKLOADS` is replaced by its source object; every
    other value (including workload preset names) is passed through unchanged.

    Example:
        >>> kwargs = build_env_kwargs({"workload": "azure-conv-bursty", "load": 1.0})
        >>> type(kwargs["workload"]).__name__, kwargs["load"]
        ('SyntheticSource', 1.0)
    """
    kwargs = dict(env_kwargs)
    workload = kwargs.get("workload")
    if isinstance(workload, str) and workload in SCENARIO_WORKLOADS:
        kwargs["workload"] = scenario_workload(workload)
    return kwargs


@dataclass(frozen=True)
class Scenario:
    """An environment configuration used as a benchmark.

    Attributes:
        name: Scenario name, e.g. ``"batch-bursty"``.
        env: Environment kind, a name of :data:`llmsched_env.kinds.ENV_KINDS`.
        env_kwargs: Plain keyword arguments of the env (see :func:`build_env_kwargs`).
        description: One line for tables.
        train_steps: Training budget (environment steps) of the reported agent.
    """

    name: str
    env: str
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    train_steps: int = 500_000

    def __post_init__(self) -> None:
        get_kind(self.env)  # an unknown kind is an error naming the kinds
        object.__setattr__(self, "env_kwargs", MappingProxyType(dict(self.env_kwargs)))

    @property
    def env_id(self) -> str:
        """The registered env id."""
        return get_kind(self.env).env_id

    def make_env_kwargs(self) -> dict[str, Any]:
        """``gym.make`` keyword arguments of the scenario (workload objects built)."""
        return build_env_kwargs(self.env_kwargs)


#: Benchmark scenarios by name.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("batch-default", "batch", {}, "BatchScheduling-v0 defaults"),
        Scenario(
            "batch-overload",
            "batch",
            # Under overload, requests already past their deadline would otherwise block the
            # in-time ones queued behind them (docs/results.md, batch-overload).
            {"load": 1.25, "dispatch_order": "oldest-in-time"},
            "defaults at 1.25x estimated capacity; a batch takes its bin's requests in time first",
        ),
        Scenario(
            "batch-bursty",
            "batch",
            {"workload": "azure-conv-bursty", "load": 1.25},
            f"Azure lengths, Gamma arrivals cv {BURSTY_CV:g}, 1.25x estimated capacity",
        ),
        Scenario(
            "batch-multi-gpu",
            "batch",
            {"n_gpus": 4, "load": 1.5, "n_requests": 2000},
            "4 GPUs, 2,000 requests, 1.5x estimated capacity",
        ),
        Scenario("continuous-default", "continuous", {}, "ContinuousBatching-v0 defaults"),
        Scenario(
            "continuous-bursty",
            "continuous",
            {"workload": "azure-conv-bursty"},
            f"Azure lengths, Gamma arrivals cv {BURSTY_CV:g}",
        ),
    )
}


def get_scenario(name: str) -> Scenario:
    """Return the scenario called ``name``.

    Raises:
        ValueError: For an unknown name; the message lists the scenarios and suggests the closest.
    """
    return resolve("scenario", name, SCENARIOS)
