"""A router that keeps long prefills apart from the replicas that mostly decode.

On a replica that prefills and decodes in the same iterations (chunked prefill), a long prompt
spreads its prefill over many iterations, and every one of them is slower for the requests
decoding beside it: their time between tokens grows. Serving long prompts on a few replicas of
their own keeps the other replicas' iterations short. This is the idea behind prefill/decode
disaggregation (Patel et al., Splitwise, ISCA 2024; Zhong et al., DistServe, OSDI 2024), here
at the router: no KV transfer, only a split of the requests by the prefill they bring.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from baselines.routing._common import RoutingPolicy
from baselines.routing.cache_aware import EstimatedTTFT
from llmsched_env import arguments


class LengthSplit(RoutingPolicy):
    """Long prompts to the first ``long_replicas`` replicas, the others to the rest.

    A request is *long* when the uncached part of its prompt (its prefill work) exceeds
    ``threshold_tokens``, by default the replicas' iteration token budget (``max_tokens``): such a
    prompt needs more than one iteration of prefill. Within its pool a request goes where
    ``min-ttft`` would send it (least estimated TTFT, ties to fewer outstanding requests); if the
    mask allows no replica of its pool, to the best allowed replica of the other. With one
    replica there is nothing to split: every request goes to it.

    Args:
        env: A ``Routing-v0`` environment.
        long_replicas: Replicas reserved for long prompts, ``1 <= long_replicas < n_replicas``
            (1 with a single replica).
        threshold_tokens: Uncached prompt tokens above which a request is long (default: the
            env's ``max_tokens``).

    Raises:
        ValueError: For an out-of-range ``long_replicas`` or ``threshold_tokens``.
    """

    name = "length-split"

    def __init__(
        self, env: gym.Env, long_replicas: int = 1, threshold_tokens: int | None = None
    ) -> None:
        super().__init__(env)
        self.long_replicas = arguments.integer(
            "LengthSplit",
            "long_replicas",
            long_replicas,
            minimum=1,
            maximum=max(self.n_replicas - 1, 1),
        )
        if threshold_tokens is None:
            threshold_tokens = int(self.env.config.max_tokens)
        self.threshold_tokens = arguments.integer(
            "LengthSplit", "threshold_tokens", threshold_tokens, minimum=0
        )
        self.ttft = EstimatedTTFT(env)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.int64:
        """The least-estimated-TTFT replica of the request's pool."""
        uncached = int(info["prompt_tokens"]) - info["cached_prefix_tokens"]
        in_long_pool = np.arange(self.n_replicas) < self.long_replicas
        # A request is long if its prefill exceeds the threshold wherever it would go.
        is_long = bool(np.min(uncached) > self.threshold_tokens)
        pool = in_long_pool if is_long else ~in_long_pool
        mask = np.asarray(info["action_mask"], dtype=bool)
        if not (mask & pool).any():  # also: a single replica, whose short pool is empty
            pool = ~pool
        estimates = np.where(pool, self.ttft.estimates_s(info), np.inf)
        return self.pick_min(info, estimates, self.outstanding_requests(info))
