"""Named benchmark scenarios: the env configurations agents are trained and compared on.

A :class:`Scenario` is an env id and plain keyword arguments (numbers and names, so a run's
configuration is plain JSON). Workloads that are not workload presets but are built for a
scenario, such as the bursty Azure workload, are named in :data:`SCENARIO_WORKLOADS`;
:func:`build_env_kwargs` replaces such a name with the workload object before ``gym.make``.

==========================  ==================================================================
scenario                    what
==========================  ==================================================================
``batch-default``           ``BatchScheduling-v0`` with its defaults (Azure trace, 2 GPUs, load 1)
``batch-overload``          the default at 1.25 times the estimated capacity, late requests last
``batch-bursty``            Azure lengths, Gamma arrivals of coefficient of variation 4, load 1.25
``batch-multi-gpu``         4 GPUs (500 requests each, as the default) at 1.5 times capacity
``continuous-default``      ``ContinuousBatching-v0`` with its defaults
``continuous-bursty``       Gamma arrivals of coefficient of variation 4 at load 0.1, continuous
                            batching
``routing-prefix-sharing``  ``Routing-v0``, 4 replicas, shared prompt prefixes at load 0.6
``routing-mooncake``        ``Routing-v0``, 4 replicas, the Mooncake conversation trace at load
                            0.3, TTFT targets that grow with the prompt
``batch-general``           trained on a mixture of workloads, loads 0.6-1.5 and burstiness
``batch-heldout-*``         ShareGPT and Mooncake synthetic at loads 0.8, 1 and 1.25: never
                            seen in ``batch-general``'s training
==========================  ==================================================================

**Generalisation.** A scenario with a ``training`` mixture trains on
:class:`~llmsched_env.envs.mixture.BatchMixtureEnv` (a random component workload, load and
arrival burstiness per episode) and is validated and compared on its plain env
(``env_kwargs``). ``batch-general`` trains on the Azure conversation trace,
``burstgpt-synthetic``, the Mooncake conversation trace and the synthetic length mixes of
:mod:`agents.length_mixes` (:data:`GENERAL_TRAINING`); the ``batch-heldout-*`` scenarios
(:data:`GENERAL_HELD_OUT`) use workloads none of them holds:
LLMServingSim 2.0's ShareGPT lengths (``sharegpt``) and Mooncake's synthetic trace
(``mooncake-synthetic``). ``llmsched compare --run RUN --workload sharegpt --load 1.25`` scores a
``batch-general`` run on one of them.

**A scenario's recipe.** A scenario may set hyperparameters per algorithm
(``Scenario.hyperparams``), applied over the env's defaults and under the user's:
``routing-prefix-sharing`` and ``routing-mooncake`` warm-start MaskablePPO from ``length-split``
at the setting tuned on each one's validation seeds (:data:`ROUTING_WARM_START`,
:data:`MOONCAKE_WARM_START`), ``batch-general`` from the better of ``multibin-wc-viable`` and
``spf`` every 4 demonstration decisions of its mixture (:data:`GENERAL_WARM_START`), averages
the weights of its last snapshots (:data:`GENERAL_WEIGHT_AVERAGING`) and feeds the network the
observations as the env scales them (:data:`GENERAL_NORMALIZE_OBS`); ``--imitate none`` trains
from scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from types import MappingProxyType
from typing import Any

from agents.length_mixes import LENGTH_MIX_NAMES, N_LENGTH_MIXES, length_mix
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
    **{name: partial(length_mix, i) for i, name in enumerate(LENGTH_MIX_NAMES)},
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


#: Settings of which an env takes one: overriding either replaces the other.
RATE_SETTINGS = ("load", "arrival_rate")


def overridden(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{**base, **overrides}``, where giving ``load`` or ``arrival_rate`` replaces either.

    A scenario or a run records one of the two; an override of the other (``--arrival-rate``
    over a recorded ``load``) replaces it instead of giving the env both.

    Example:
        >>> overridden({"workload": "azure-conv", "load": 1.25}, {"arrival_rate": 20.0})
        {'workload': 'azure-conv', 'arrival_rate': 20.0}
    """
    merged = dict(base)
    if any(overrides.get(key) is not None for key in RATE_SETTINGS):
        for key in RATE_SETTINGS:
            merged.pop(key, None)
    merged.update(overrides)
    return merged


@dataclass(frozen=True)
class Scenario:
    """An environment configuration used as a benchmark.

    Attributes:
        name: Scenario name, e.g. ``"batch-bursty"``.
        env: Environment kind, a name of :data:`llmsched_env.kinds.ENV_KINDS`.
        env_kwargs: Plain keyword arguments of the env (see :func:`build_env_kwargs`).
        description: One line for tables.
        train_steps: Training budget (environment steps) of the reported agent.
        training: Keyword arguments (plain JSON) of the
            :class:`~llmsched_env.envs.mixture.BatchMixtureEnv` that training envs sample
            episodes from, or ``None`` to train on the scenario's env itself. Validation and
            comparison always use the scenario's env.
        hyperparams: Per algorithm name, hyperparameters of this scenario's recipe, applied
            over the env's defaults and under the user's (see
            :func:`agents.hyperparams.resolve_hyperparams`, ``base``).
    """

    name: str
    env: str
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    train_steps: int = 500_000
    training: Mapping[str, Any] | None = None
    hyperparams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_kind(self.env)  # an unknown kind is an error naming the kinds
        object.__setattr__(self, "env_kwargs", MappingProxyType(dict(self.env_kwargs)))
        if self.training is not None:
            if self.env != "batch":
                raise ValueError(
                    f"scenario {self.name!r}: a training mixture mixes BatchScheduling-v0 envs, "
                    f"so env must be 'batch', got {self.env!r}"
                )
            object.__setattr__(self, "training", MappingProxyType(dict(self.training)))
        object.__setattr__(self, "hyperparams", MappingProxyType(dict(self.hyperparams)))

    @property
    def env_id(self) -> str:
        """The registered env id."""
        return get_kind(self.env).env_id

    def make_env_kwargs(self) -> dict[str, Any]:
        """``gym.make`` keyword arguments of the scenario (workload objects built)."""
        return build_env_kwargs(self.env_kwargs)


#: The warm start of ``routing-prefix-sharing``'s MaskablePPO runs (an ``imitation`` setting).
ROUTING_WARM_START: Mapping[str, Any] = MappingProxyType(
    {
        "baseline": "length-split",
        "baseline_kwargs": {"threshold_tokens": 1024, "long_replicas": 2},
        "entropy_coef": 0.1,
    }
)

#: The warm start of ``routing-mooncake``'s MaskablePPO runs: ``length-split`` at the setting
#: with the best return on the validation seeds among thresholds of 3,000-20,000 tokens and 1-3
#: long replicas (docs/routing.md, "On the Mooncake conversation trace").
MOONCAKE_WARM_START: Mapping[str, Any] = MappingProxyType(
    {
        "baseline": "length-split",
        "baseline_kwargs": {"threshold_tokens": 5000, "long_replicas": 3},
        # Fewer demonstrations than routing-prefix-sharing's 50,000: this trace's long prompts
        # make a routing step about ten times as costly.
        "steps": 20_000,
        "entropy_coef": 0.1,
    }
)

#: The training distribution of ``batch-general``: keyword arguments of
#: :class:`~llmsched_env.envs.mixture.BatchMixtureEnv` (plain JSON; the scenario's own
#: ``env_kwargs`` other than the workload and load are shared by every component).
GENERAL_TRAINING: Mapping[str, Any] = MappingProxyType(
    {
        "components": [
            {"workload": "azure-conv"},
            {"workload": "burstgpt-synthetic"},
            {"workload": "mooncake-conversation"},
            # Many more length mixes, chosen by leaving one of the three traces out of
            # training (docs/results.md, "Many more length mixes").
            *({"workload": name} for name in LENGTH_MIX_NAMES),
        ],
        "load": [0.6, 1.5],
        "arrival_cv": [1.0, BURSTY_CV],
        "source_arrivals": 0.25,
    }
)

#: The warm start of ``batch-general``'s MaskablePPO runs: every 4 decisions the demonstration
#: is handed to whichever of ``multibin-wc-viable`` (the batch heuristic with the best
#: validation return on most of the training workloads and loads) and ``spf`` (the best in deep
#: overload) returns more when played from there to the episode's end on a copy of the env
#: (:func:`agents.imitation.collect_demonstrations`; docs/results.md, "Generalisation" and "A
#: teacher chosen by rollouts"). Chosen on the training traces; the held-out workloads played
#: no part in the choice.
GENERAL_WARM_START: Mapping[str, Any] = MappingProxyType(
    {"baseline": ("multibin-wc-viable", "spf"), "choose_every": 4}
)

#: ``batch-general``'s weight averaging (:mod:`agents.averaging`): the mean of the snapshots at
#: 600,000, 700,000, ..., 1,000,000 steps, the last 40% of its budget, at its checkpoints' steps.
#: Its runs are scored with ``--model averaged`` (docs/results.md, "Generalisation").
GENERAL_WEIGHT_AVERAGING: Mapping[str, Any] = MappingProxyType({"start": 600_000, "every": 100_000})

#: Whether ``batch-general`` normalises its observations with ``VecNormalize``'s running
#: statistics: no. Its entries are already scaled by quantities the env knows, and an entry that
#: hardly varies in training (``kv_fit``, almost always 1 there) gets a running standard
#: deviation near 0, so that a value never seen in training (KV memory that binds, on long
#: prompts) reaches the network hundreds of standard deviations out, clipped at 10; raw entries
#: reach it as they are (docs/results.md, "Observations as the env scales them").
GENERAL_NORMALIZE_OBS = False

#: Workloads and loads held out from ``batch-general``'s training.
HELD_OUT_WORKLOADS = ("sharegpt", "mooncake-synthetic")
HELD_OUT_LOADS = (0.8, 1.0, 1.25)


def _held_out_scenarios() -> list[Scenario]:
    """One ``batch-heldout-<workload>-<load>`` scenario per held-out workload and load."""
    return [
        Scenario(
            f"batch-heldout-{workload}-{load:g}",
            "batch",
            {"workload": workload, "load": load},
            f"held out from batch-general's training: {workload} at {load:g}x estimated capacity",
        )
        for workload in HELD_OUT_WORKLOADS
        for load in HELD_OUT_LOADS
    ]


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
        Scenario(
            "continuous-default",
            "continuous",
            {},
            "ContinuousBatching-v0 defaults",
            train_steps=300_000,
        ),
        Scenario(
            "continuous-bursty",
            "continuous",
            # At the env's default load (0.4) bursts overwhelm every baseline (the best attains
            # 0.26 of the SLA); at 0.1 the best attains about 0.76 (docs/results.md).
            {"workload": "azure-conv-bursty", "load": 0.1},
            f"Azure lengths, Gamma arrivals cv {BURSTY_CV:g}, load 0.1",
            train_steps=300_000,
        ),
        Scenario(
            "routing-prefix-sharing",
            "routing",
            {"workload": "prefix-sharing", "load": 0.6, "n_requests": 400},
            "4 replicas with prefix caching, shared system prompts and multi-turn sessions, "
            "load 0.6",
            train_steps=60_000,
            # A warm start from length-split at the setting tuned on the validation seeds, the
            # best router here; a small entropy bonus, since a routing action has 4 values
            # (docs/routing.md, "Starting from the tuned rule").
            hyperparams={"maskable-ppo": {"imitation": ROUTING_WARM_START}},
        ),
        Scenario(
            "routing-mooncake",
            "routing",
            # Mooncake's long prompts miss a fixed 1 s TTFT whatever the routing; a target of
            # 1 s + 0.1 ms per prompt token (2.5x the unloaded prefill time per token) leaves
            # the routing to decide it. At load 0.3 the best router attains about 0.5 of the SLA.
            {
                "workload": "mooncake-conversation",
                "load": 0.3,
                "n_requests": 400,
                "ttft_sla_per_token": 1e-4,
            },
            "4 replicas with prefix caching, the Mooncake conversation trace at load 0.3, "
            "TTFT target 1 s + 0.1 ms per prompt token",
            train_steps=100_000,
            hyperparams={"maskable-ppo": {"imitation": MOONCAKE_WARM_START}},
        ),
        Scenario(
            "batch-general",
            "batch",
            {},
            "trained on Azure, burstgpt-synthetic, Mooncake conversation and "
            f"{N_LENGTH_MIXES} synthetic length mixes at loads 0.6-1.5, "
            f"Gamma arrivals cv 1-{BURSTY_CV:g}; validated on the defaults; scored with the "
            "weights averaged over its last 400,000 steps (--model averaged)",
            training=GENERAL_TRAINING,
            # Warm-started runs kept improving on the held-out workloads from 500,000 to
            # 1,000,000 steps (docs/results.md, "Generalisation").
            train_steps=1_000_000,
            hyperparams={
                "maskable-ppo": {
                    "imitation": GENERAL_WARM_START,
                    "weight_averaging": GENERAL_WEIGHT_AVERAGING,
                    "normalize_obs": GENERAL_NORMALIZE_OBS,
                }
            },
        ),
        *_held_out_scenarios(),
    )
}

#: The scenarios whose workloads ``batch-general`` never trains on.
GENERAL_HELD_OUT = tuple(s for s in SCENARIOS if s.startswith("batch-heldout-"))


def get_scenario(name: str) -> Scenario:
    """Return the scenario called ``name``.

    Raises:
        ValueError: For an unknown name; the message lists the scenarios and suggests the closest.
    """
    return resolve("scenario", name, SCENARIOS)
