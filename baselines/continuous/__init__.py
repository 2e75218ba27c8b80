"""Baselines for ContinuousBatching-v0 (iteration-level continuous batching).

Every entry of :data:`POLICIES` is a factory ``(env, **kwargs) -> Policy``;
``baselines.make_policy(name, env)`` resolves a name and builds the policy. Keyword arguments
given to a factory override its defaults, e.g. ``make_policy("hybrid", env, decode_share=0.25)``.
``D`` and ``P`` are the env's decode and prefill levels; "decode all" is level ``D-1``, "the
whole budget" is prefill level ``P-1`` (``max_tokens`` minus the decoded sequences).

| name | rule (action ``[decode, prefill, cap]``) |
|------|-------------------------------------------|
| ``run-to-completion`` | Scheduler A: one job per GPU. Running: ``[D-1, 0, 1]``, else |
| | ``[0, P-1, 1]`` |
| ``prefill-k1``, ``-k4``, ``-k16`` | Scheduler B(K). Prefill possible: ``[0, P-1, K]``, else |
| | ``[D-1, 0, K]`` |
| ``decode-first`` | Running: ``[D-1, 0, -]``, else ``[0, P-1, -]`` |
| ``prefill-first`` | Prefill possible: ``[0, P-1, -]``, else ``[D-1, 0, -]`` |
| ``hybrid`` | Hybrid(0.5): ``[level nearest to 0.5 * max_sequences decoded, P-1, -]`` |
| ``vllm`` | Prefill first: ``[largest level fitting beside the prefill, P-1, -]`` |
| ``sarathi`` | Decode all, prefill chunks in the rest: ``[D-1, P-1, -]`` |
| ``vllm-v1`` | vLLM V1 (0.19) default: ``[D-1, P-1, -]``, for paged KV and ``chunk_size = |
| | max_tokens`` (the env allocates blocks and preempts) |
| ``random`` | Uniform over the exact joint mask |

(``-`` is the level with the largest cap: no cap by default.)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from baselines.base import Policy
from baselines.continuous.budgeted import DecodePrioritizing, Hybrid, PrefillPrioritizing
from baselines.continuous.engines import VLLMV1, SarathiStyle, VLLMStyle
from baselines.continuous.prefill_or_decode import PrefillPrioritizingK, RunToCompletion
from baselines.continuous.random_valid import RandomJointAction

POLICIES: dict[str, Callable[..., Policy]] = {
    "run-to-completion": RunToCompletion.from_env,
    "prefill-k1": partial(PrefillPrioritizingK.from_env, k=1),
    "prefill-k4": partial(PrefillPrioritizingK.from_env, k=4),
    "prefill-k16": partial(PrefillPrioritizingK.from_env, k=16),
    "decode-first": DecodePrioritizing.from_env,
    "prefill-first": PrefillPrioritizing.from_env,
    "hybrid": Hybrid.from_env,
    "vllm": VLLMStyle.from_env,
    "sarathi": SarathiStyle.from_env,
    "vllm-v1": VLLMV1.from_env,
    "random": RandomJointAction.from_env,
}
"""Iteration-level baselines by the name users type (``llmsched evaluate --policies``)."""

__all__ = [
    "POLICIES",
    "DecodePrioritizing",
    "Hybrid",
    "PrefillPrioritizing",
    "PrefillPrioritizingK",
    "RandomJointAction",
    "RunToCompletion",
    "SarathiStyle",
    "VLLMV1",
    "VLLMStyle",
]
