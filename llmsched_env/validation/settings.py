"""How each recorded vLLM run is replayed: one table of engine settings, one row per run.

Each :class:`RunSettings` maps a run's vLLM engine arguments onto ``ContinuousBatching-v0``'s:
``max_num_batched_tokens`` becomes the per-iteration token budget ``max_tokens`` (and the chunk
size: vLLM's chunked prefill gives one prompt at most the whole budget), ``max_num_seqs`` becomes
``max_sequences``, the KV cache size becomes ``kv_memory`` (tokens per engine) and the number of
engine replicas becomes ``n_gpus`` (a tensor-parallel engine on two GPUs is one replica; the MoE
run's data parallelism of 2 is two). The latency preset, the KV capacity and any extra env
arguments are what this table is for: point them at better models here, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from llmsched_env.latency import KV_PRESETS
from llmsched_env.registry import resolve

#: The environment every run is replayed on.
ENV_ID = "llmsched/ContinuousBatching-v0"

#: ``gym.make`` arguments that :class:`RunSettings` sets itself (not allowed in ``env_kwargs``).
_MANAGED_KWARGS = frozenset(
    {"latency", "kv_memory", "max_tokens", "max_sequences", "chunk_size", "n_gpus", "n_requests"}
)


@dataclass(frozen=True)
class RunSettings:
    """The simulator settings that replay one recorded run.

    Attributes:
        run: The run's directory name (a shipped run, see ``shipped_run_names``).
        latency: Iteration latency preset of the env.
        kv_capacity_tokens: KV cache tokens of one engine replica.
        max_tokens: vLLM's ``max_num_batched_tokens``: the token budget of one iteration, and
            the chunk size of chunked prefill.
        max_sequences: vLLM's ``max_num_seqs``: most requests on one replica.
        n_gpus: Engine replicas sharing the waiting queue (vLLM's data-parallel size).
        policy: Baseline policy that schedules the replay (a ``baselines`` name).
        env_kwargs: Further ``gym.make`` arguments (read-only mapping); it may not set the
            arguments above. With ``prefix_caching=True`` (and ``kv_allocation="paged"``) the
            replay gives the workload its prompts' prefix hashes, if the run has them.
        prompt_hashes: Name of the shipped prefix block hashes of the run's prompts
            (``llmsched_env.validation.prompt_hashes``), or ``None`` if its workload file has no
            token ids. Used only with ``prefix_caching``; without hashes, preempted requests
            still find their own cached blocks but prompts share none.
        llmservingsim_mean_error_pct: LLMServingSim 2.0's published errors of mean TTFT, TPOT
            and E2E on this run, in percent (from the run's summary file), for reference.

    Raises:
        ValueError: If a name is empty, a count is below 1, or ``env_kwargs`` sets a managed
            argument.
    """

    run: str
    latency: str
    kv_capacity_tokens: int
    max_tokens: int
    max_sequences: int
    n_gpus: int = 1
    policy: str = "vllm-v1"
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    prompt_hashes: str | None = None
    llmservingsim_mean_error_pct: tuple[float, float, float] = (float("nan"),) * 3

    def __post_init__(self) -> None:
        for name in ("run", "latency", "policy"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        for name in ("kv_capacity_tokens", "max_tokens", "max_sequences", "n_gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        clash = sorted(_MANAGED_KWARGS & set(self.env_kwargs))
        if clash:
            raise ValueError(
                f"env_kwargs may not set {clash}: RunSettings has its own fields for them"
            )
        if len(self.llmservingsim_mean_error_pct) != 3:
            raise ValueError(
                "llmservingsim_mean_error_pct must be (ttft, tpot, e2e), got "
                f"{self.llmservingsim_mean_error_pct!r}"
            )
        object.__setattr__(self, "env_kwargs", MappingProxyType(dict(self.env_kwargs)))
        if self.prompt_hashes is not None and (
            not isinstance(self.prompt_hashes, str) or not self.prompt_hashes
        ):
            raise ValueError(
                f"prompt_hashes must be a non-empty string or None, got {self.prompt_hashes!r}"
            )

    @property
    def prefix_caching(self) -> bool:
        """Whether the replay caches prefixes (``env_kwargs["prefix_caching"]``)."""
        return bool(self.env_kwargs.get("prefix_caching", False))

    @property
    def chunk_size(self) -> int:
        """The chunked-prefill chunk: the whole token budget, as in vLLM."""
        return self.max_tokens

    def make_kwargs(self, n_requests: int) -> dict[str, Any]:
        """The ``gym.make(ENV_ID, ...)`` arguments of a replay of ``n_requests`` requests.

        Example:
            >>> kwargs = RUN_SETTINGS["RTX4090-Llama-3.1-8B"].make_kwargs(300)
            >>> kwargs["kv_memory"], kwargs["max_sequences"], kwargs["chunk_size"]
            (41408, 256, 2048)
        """
        return {
            "latency": self.latency,
            "kv_memory": self.kv_capacity_tokens,
            "max_tokens": self.max_tokens,
            "max_sequences": self.max_sequences,
            "chunk_size": self.chunk_size,
            "n_gpus": self.n_gpus,
            "n_requests": n_requests,
            **self.env_kwargs,
        }


#: How the runs are scheduled: vLLM V1's paged KV with preemption by recomputation.
_VLLM_V1_KV = {"kv_allocation": "paged", "kv_block_tokens": 16}


def _kv_tokens(preset: str) -> int:
    return KV_PRESETS[preset].capacity_tokens


#: The settings of each shipped run, by run name. Each run is replayed with the latency and KV
#: presets of its GPU and model (``vllm0.19-*``, built from the per-layer profiles measured with
#: the same vLLM on the same GPUs) and the ``vllm-v1`` policy.
RUN_SETTINGS: dict[str, RunSettings] = {
    s.run: s
    for s in (
        RunSettings(
            run="RTX4090-Llama-3.1-8B",
            latency="vllm0.19-rtx4090-llama3.1-8b",
            kv_capacity_tokens=_kv_tokens("vllm0.19-rtx4090-llama3.1-8b"),  # 41,408 (meta.json)
            max_tokens=2048,
            max_sequences=256,
            policy="vllm-v1",
            # vLLM had prefix caching on; the hashes of the prompts it served (from the workload
            # file's token ids) let the replay find shared prefixes too.
            env_kwargs={**_VLLM_V1_KV, "prefix_caching": True},
            prompt_hashes="sharegpt-llama-3.1-8b-300-sps10",
            llmservingsim_mean_error_pct=(0.6, 0.2, 0.5),
        ),
        RunSettings(
            run="RTXPRO6000-Llama-3.1-8B",
            latency="vllm0.19-rtxpro6000-llama3.1-8b",
            kv_capacity_tokens=_kv_tokens("vllm0.19-rtxpro6000-llama3.1-8b"),
            max_tokens=2048,
            max_sequences=128,
            policy="vllm-v1",
            env_kwargs=_VLLM_V1_KV,
            llmservingsim_mean_error_pct=(-4.0, -1.0, -1.8),
        ),
        RunSettings(
            run="RTXPRO6000-Qwen3-32B",  # one engine, tensor parallel over 2 GPUs
            latency="vllm0.19-rtxpro6000-qwen3-32b-tp2",
            kv_capacity_tokens=_kv_tokens("vllm0.19-rtxpro6000-qwen3-32b-tp2"),
            max_tokens=2048,
            max_sequences=128,
            policy="vllm-v1",
            env_kwargs=_VLLM_V1_KV,
            llmservingsim_mean_error_pct=(1.3, 0.8, 1.0),
        ),
        RunSettings(
            run="RTXPRO6000-Qwen3-30B-A3B-Instruct-2507",  # MoE, data parallel 2: two replicas
            latency="vllm0.19-rtxpro6000-qwen3-30b-a3b-ep2",
            kv_capacity_tokens=_kv_tokens("vllm0.19-rtxpro6000-qwen3-30b-a3b-ep2"),
            max_tokens=2048,
            max_sequences=128,
            n_gpus=2,
            policy="vllm-v1",
            env_kwargs=_VLLM_V1_KV,
            llmservingsim_mean_error_pct=(-13.6, -1.7, -2.2),
        ),
    )
}


def run_settings(name: str) -> RunSettings:
    """The settings of a shipped run.

    Raises:
        ValueError: For an unknown run (the message lists the runs and suggests the closest).
    """
    return resolve("run in RUN_SETTINGS", name, RUN_SETTINGS)
