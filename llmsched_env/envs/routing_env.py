"""``llmsched/Routing-v0``: route each arriving request to one of R continuous-batching replicas."""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
from gymnasium import spaces

from llmsched_env.arguments import ArgumentTypeError
from llmsched_env.capacity import per_arrival, routed_capacity_rps, served_requests
from llmsched_env.config import RoutingEnvConfig
from llmsched_env.envs.base import SchedulingEnv
from llmsched_env.envs.common import (
    InvalidActionError,
    check_episode_size,
    configured_arrival_rate,
    one_integer,
)
from llmsched_env.envs.footprint import (
    PAGED_BYTES_PER_BLOCK,
    ROUTING_BYTES_PER_REPLICA_REQUEST,
    check_episode_fits,
    prefix_hash_bytes_per_request,
    prefix_hash_copy_bytes_per_request,
)
from llmsched_env.envs.iteration_env import ContinuousBatchingEnv
from llmsched_env.envs.rewards import REWARD_SHAPES
from llmsched_env.envs.routing_cluster import Cluster, Replica
from llmsched_env.envs.routing_compiled import COMPILED_RULES, CompiledCluster, pack_tables
from llmsched_env.envs.routing_observation import (
    ReplicaLoads,
    RoutingObservation,
    feature_bounds,
    feature_names,
)
from llmsched_env.metrics import SLATargets
from llmsched_env.registry import resolve
from llmsched_env.sim.compiled_replica_server import CompiledReplicaServer
from llmsched_env.statistics import sequential_sum
from llmsched_env.workload import make_workload_source

#: The most calibration requests whose work sets the relative cost of the capacity
#: estimate's classes of requests (see ``RoutingEnv._cluster_capacity_rps``).
WORK_SAMPLE = 4096


class RoutingEnv(SchedulingEnv):
    """Route each arriving LLM request to one of R engine replicas.

    ## Description

    R replicas serve LLM requests, each an iteration-level continuous-batching server of one GPU
    (``llmsched_env.sim.iteration_server``, with paged KV memory as vLLM V1's, optionally with
    automatic prefix caching) run by a fixed in-replica scheduler: a ``ContinuousBatching-v0``
    baseline, vLLM V1's scheduler (``"vllm-v1"``) by default. A router in front of them picks
    the replica of every request when it arrives; the replica then queues, batches, preempts and
    caches it by its own rules. Between two arrivals every replica runs its own iterations
    (event-driven; given the routing, replicas are independent). The router trades load (queues,
    KV memory in use) against prefix-cache hits: a replica that holds a request's prompt prefix
    skips the prefill of the cached blocks. Replicas may differ (``latency``, ``kv_memory``).

    How a replica is run: each has a one-GPU ``ContinuousBatchingEnv`` as a *view* over its
    server, and the in-replica baseline decides from that view exactly as in
    ``ContinuousBatching-v0`` (:mod:`llmsched_env.envs.routing_cluster`). With one replica and
    no prefix sharing, every router reproduces ``ContinuousBatching-v0`` with that baseline, bit
    for bit (same requests, records and metrics). A replica's clock also stops at the arrivals
    routed elsewhere (nothing happens there, but its GPU, if it chose to WAIT, decides again;
    work-conserving schedulers such as vllm-v1 never wait with work at hand). With ``vllm-v1``
    or ``sarathi`` inside and latency models with a compiled timing, the replicas and the whole
    routing step run compiled instead (:mod:`llmsched_env.envs.routing_step`), with the same
    episodes bit for bit.

    ## Action Space

    ``Discrete(n_replicas)``: the replica that gets the request.

    **Masking.** ``action_masks()`` (sb3-contrib's MaskablePPO format) allows the replicas that
    can admit the request: those where it can ever fit, i.e. whose KV memory holds its prompt
    plus output tokens in whole blocks (and, with ``chunk_size=None``, whose token budget holds
    its recomputation). Load never masks a replica: a full one queues the request. A request
    that no replica can admit takes no step: it goes to replica 0 and is rejected there at
    arrival with its reason (``info["rejected_without_decision"]`` counts them as they are
    skipped; it never counts as queued work in the observation; replica 0 records the rejection,
    and pays its penalty, when its clock reaches the arrival, so an episode truncated before
    that reports the request in the system). A forbidden
    action is mapped to the first allowed replica and flagged in ``info["invalid_action"]``, or
    raises ``InvalidActionError`` with ``invalid_action="raise"``; an action outside the space
    raises ``ValueError``. After the episode's last step every replica is allowed (a valid mask
    for the action a vector env passes to a finished episode, which it resets instead).

    ## Observation Space

    A float32 ``Box`` of ``8 * n_replicas + 3`` entries; ``env.unwrapped.obs_names`` names each.
    Per replica ``r`` (``replica{r}/...``), measured when the request arrives (requests routed to
    a replica whose current iteration started before their arrival count as waiting there):

    | name | meaning | normalisation | range |
    |------|---------|---------------|-------|
    | waiting | waiting requests (incl. preempted) | / max_sequences | [0, 16] |
    | waiting_tokens | their tokens to prefill | / max_tokens | [0, 64] |
    | running | requests on its GPU (decoding or prefilling) | / max_sequences | [0, 1] |
    | outstanding_tokens | prompt + predicted output tokens of both | / its KV memory | [0, 16] |
    | kv_used | KV memory in use (allocated blocks) | / its KV memory | [0, 1] |
    | cached_prefix | longest cached prefix of the request's prompt | / prompt tokens | [0, 1] |
    | recent_ttft | moving TTFT of its requests (weight 1/8 per new one) | / ttft_sla | [0, 8] |
    | busy_remaining | time until its current iteration ends | / tbt_sla | [0, 4] |

    Then the request: ``request/prompt_tokens`` (/ max_tokens, [0, 64]),
    ``request/predicted_output`` (predicted output tokens / length scale, [0, 4]; the length
    scale is the 99th percentile of output lengths in the calibration data) and
    ``arrived_fraction`` (share of the episode's requests arrived, [0, 1]). Values are clipped.

    ## Rewards

    ``ContinuousBatching-v0``'s shapes (``llmsched_env.envs.rewards``), over all replicas:
    ``reward="sla"`` (default) pays +1 when a request finishes having met both its TTFT and TBT
    targets and ``-sla_penalty`` per TTFT miss (a rejection counts) and per TBT miss, so the
    return is ``on_time - sla_penalty * (ttft_misses + tbt_misses)``; ``"goodput-tokens"`` and
    ``"queue"`` as there. A step's reward is what happened in the replicas between this arrival
    and the next one (each replica's ``"queue"`` integral up to its own clock); the return is
    the episode's objective exactly.

    ## Starting State

    ``reset(seed=...)`` draws the episode's requests (as ``ContinuousBatching-v0`` does, at the
    rate ``load`` times the replicas' summed capacity) and runs to the first arrival that some
    replica can admit. ``options={"start": i}`` or ``{"workload": w}`` replays fixed inputs (a
    ``Workload`` with ``prefix_block_hashes`` shares prompt prefixes between requests);
    ``{"load": x}`` and ``{"arrival_cv": c}`` set this episode's load and arrival burstiness.

    ## Episode End

    * Termination: every request has been routed and every replica has finished its requests.
    * Truncation: ``max_steps`` steps were taken (when set); unfinished requests are reported as
      ``in_system`` (or ``not_arrived``). ``gym.make(..., max_episode_steps=N)`` instead
      wraps Gymnasium's ``TimeLimit``, whose truncation the env does not see: that last step
      has no ``episode_metrics`` (use ``max_steps=N``, or ``env.unwrapped.episode_metrics()``).

    ## Information

    Fixed-shape values only: ``time_s`` (the request's arrival; at the end, the latest replica
    clock), ``request`` (its index, -1 at the end), ``prompt_tokens`` and
    ``predicted_output_tokens`` (of the request; 0 at the end); per replica arrays (fresh
    copies) of the :class:`~llmsched_env.envs.routing_observation.ReplicaLoads` fields
    ``waiting``, ``waiting_tokens``, ``running``, ``prefill_remaining_tokens``,
    ``outstanding_tokens``, ``kv_used_tokens``, ``cached_prefix_tokens``, ``recent_ttft_s``,
    ``busy_remaining_s``, and ``replica_decisions`` (in-replica decisions so far);
    ``preemptions`` and ``prefix_hit_tokens`` (all replicas, so far);
    ``rejected_without_decision``; ``action_mask``, ``invalid_action`` and ``applied_action``
    (-1 at ``reset``). ``reset`` adds the constants ``n_replicas``, ``replica_policy``,
    ``max_tokens``, ``max_sequences``, ``chunk_size``, ``kv_block_tokens``, ``prefix_caching``,
    ``kv_capacity_tokens`` (per replica), ``ttft_sla_s``, ``ttft_sla_per_token_s``,
    ``tbt_sla_s``, ``capacity_rps`` and ``arrival_rate_rps``. At the end: ``episode_metrics``
    (``gpu`` is the replica). The latency models are ``env.unwrapped.replica_latencies`` (what an
    estimating router reads), and ``env.unwrapped.request_records()`` gives one row per request,
    ``gpu`` being its replica.

    ## Arguments

    | argument | default | meaning |
    |----------|---------|---------|
    | workload | ``"azure-conv"`` | preset name or ``WorkloadSource`` |
    | load | 0.4 | arrival rate / the replicas' summed capacity (``llmsched_env.capacity``) |
    | arrival_rate | None | arrival rate in requests/s (instead of ``load``) |
    | n_replicas | 4 | engine replicas (one GPU each) |
    | latency | ``"vllm0.19-rtxpro6000-llama3.1-8b"`` | latency preset or model, or per replica |
    | kv_memory | ``"vllm0.19-rtxpro6000-llama3.1-8b"`` | KV preset or tokens, or per replica |
    | replica_policy | ``"vllm-v1"`` | the ``ContinuousBatching-v0`` baseline each replica runs |
    | n_requests | 1000 | requests per episode |
    | ttft_sla | 1.0 | TTFT target (s) |
    | ttft_sla_per_token | 0.0 | seconds added to the TTFT target per prompt token |
    | tbt_sla | 0.1 | largest allowed gap between tokens (s) |
    | sla_penalty | 1.0 | reward lost per missed target |
    | reward | ``"sla"`` | reward shape |
    | max_tokens | 2048 | token budget per iteration |
    | max_sequences | 256 | requests per replica |
    | chunk_size | 2048 | chunked-prefill chunk (``max_tokens``: vLLM V1's) |
    | kv_block_tokens | 16 | tokens per KV block |
    | prefix_caching | True | keep freed KV blocks cached for reuse |
    | invalid_action | ``"remap"`` | or ``"raise"`` |
    | max_steps | None | truncation limit |
    | render_mode | None | ``"ansi"`` (text) or ``"rgb_array"`` (bars) |

    KV memory is always paged (vLLM V1's blocks and preemption).

    ## References

    * llm-d inference scheduler (llm-d/llm-d-inference-scheduler): prefix-cache and load
      scorers combined by weights.
    * Qin et al., Mooncake: a KVCache-centric architecture for serving LLM chatbots (FAST 2025):
      routing by estimated TTFT (queueing plus prefill of the uncached prefix).
    * Mitzenmacher, The power of two choices in randomized load balancing (IEEE TPDS 2001).
    * Kwon et al., vLLM / PagedAttention (SOSP 2023); vLLM V1's scheduler and prefix caching.

    ## Version History

    * v0: Initial version.
    """

    config_class = RoutingEnvConfig

    def __init__(
        self,
        workload: Any = "azure-conv",
        load: float | None = None,
        arrival_rate: float | None = None,
        n_replicas: int = 4,
        latency: Any = "vllm0.19-rtxpro6000-llama3.1-8b",
        kv_memory: Any = "vllm0.19-rtxpro6000-llama3.1-8b",
        replica_policy: str = "vllm-v1",
        n_requests: int = 1000,
        ttft_sla: float = 1.0,
        ttft_sla_per_token: float = 0.0,
        tbt_sla: float = 0.1,
        sla_penalty: float = 1.0,
        reward: str = "sla",
        max_tokens: int = 2048,
        max_sequences: int = 256,
        chunk_size: int | None = 2048,
        kv_block_tokens: int = 16,
        prefix_caching: bool = True,
        invalid_action: str = "remap",
        max_steps: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        cfg = RoutingEnvConfig.from_arguments(locals())
        # Every replica keeps per-request state for the whole episode (checked again below, with
        # the replicas' KV block pools, once their KV memory is known).
        per_request = cfg.n_replicas * ROUTING_BYTES_PER_REPLICA_REQUEST
        check_episode_fits(cfg.owner, cfg.n_requests, per_request)
        self.config = cfg
        self.render_mode = cfg.render_mode
        self.source = make_workload_source(cfg.workload)
        check_episode_size(cfg.owner, self.source, cfg.n_requests)
        # The requests' prefix hashes are the episode's, once (the Python replicas share them).
        per_request += prefix_hash_bytes_per_request(self.source, cfg.n_requests)
        check_episode_fits(cfg.owner, cfg.n_requests, per_request)
        self._reward_factory = resolve("reward shape", cfg.reward, REWARD_SHAPES)
        self.server: Cluster | None = None
        self._steps = 0
        self._episode_over = False
        self.last_info: dict[str, Any] | None = None
        self._queue_columns: tuple[np.ndarray, ...] = ()
        self._views = self._make_views(cfg)
        #: Per replica, its iteration latency model.
        self.replica_latencies = tuple(v.latency for v in self._views)
        if self._compiles_routing():
            # Each compiled replica's prefix cache holds a copy of the hashes.
            copy_bytes = prefix_hash_copy_bytes_per_request(self.source, cfg.n_requests)
            per_request += cfg.n_replicas * copy_bytes
        blocks = sum(-(-int(v.kv_capacity_tokens) // cfg.kv_block_tokens) for v in self._views)
        check_episode_fits(
            cfg.owner,
            cfg.n_requests,
            per_request,
            fixed_bytes=blocks * PAGED_BYTES_PER_BLOCK,
            fixed_for=f"the KV blocks of n_replicas={cfg.n_replicas} replicas",
        )
        from llmsched_env.kinds import get_kind  # the baselines are imported when first needed

        table = get_kind("continuous").policy_table()
        try:
            factory = resolve("ContinuousBatching-v0 baseline", cfg.replica_policy, table)
        except ValueError as error:
            raise ValueError(
                f"{cfg.owner}: replica_policy={cfg.replica_policy!r}: {error}"
            ) from None
        self._replicas = [Replica(view, factory) for view in self._views]
        #: Per replica, its KV memory in tokens.
        self.kv_capacity_tokens = tuple(int(v.kv_capacity_tokens) for v in self._views)
        self.capacity_rps = self._cluster_capacity_rps()
        self.arrival_rate_rps = configured_arrival_rate(
            cfg.owner, cfg.arrival_rate, cfg.load, self.capacity_rps, cfg.n_requests
        )
        self.length_scale_tokens = self._views[0].length_scale_tokens
        self.obs_names = feature_names(cfg.n_replicas)
        low, high = feature_bounds(cfg.n_replicas)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Discrete(cfg.n_replicas)
        self._builder = RoutingObservation(
            max_tokens=cfg.max_tokens,
            max_sequences=cfg.max_sequences,
            kv_capacity_tokens=list(self.kv_capacity_tokens),
            ttft_sla_s=cfg.ttft_sla,
            tbt_sla_s=cfg.tbt_sla,
            length_scale_tokens=self.length_scale_tokens,
        )
        self._loads: ReplicaLoads | None = None
        self._mask = np.ones(cfg.n_replicas, dtype=bool)
        self._obs_params = np.array(
            [
                cfg.ttft_sla,
                cfg.tbt_sla,
                self.length_scale_tokens,
                cfg.max_tokens,
                cfg.max_sequences,
            ],
            dtype=float,
        )

    @functools.cached_property
    def _compiled_tables(self) -> tuple[np.ndarray, ...]:
        """The replicas' latency tables packed for the compiled step (made once)."""
        return pack_tables([latency.compiled_timing() for latency in self.replica_latencies])

    def _compiles_routing(self) -> bool:
        """Whether episodes run compiled routing steps (:mod:`llmsched_env.envs.routing_step`).

        They need an in-replica policy with a compiled rule (``vllm-v1``, the default, or
        ``sarathi``) and latency models with a compiled timing (every preset but the stochastic
        ``sim-a`` and ``mm1``); other settings run the Python replicas, which give the same
        episodes.
        """
        return self.config.replica_policy in COMPILED_RULES and all(
            getattr(latency, "compiled_timing", lambda: None)() is not None
            for latency in self.replica_latencies
        )

    def _cluster_capacity_rps(self) -> float:
        """The arrival rate whose served requests fill the replicas: the capacity estimate.

        A request some replica rejects (too large for its KV memory) is served on another, so
        the requests the cluster serves are those some replica would, in classes by the
        replicas that would serve them; the estimate is the largest rate a split of each class
        over its replicas keeps every replica within its capacity
        (:func:`~llmsched_env.capacity.routed_capacity_rps`). A replica's time per request of a
        class is its time per request of the whole mix (its work bound there) times the class's
        relative cost: its mean per-request work over the mix's
        (:meth:`~llmsched_env.envs.iteration_env.ContinuousBatchingEnv.request_work_s`),
        averaged over the replicas, so the same on every replica. With every replica serving
        every request it is the sum of their rates, and serving fewer never raises it: a
        replica added that serves only requests the others serve never lowers the estimate,
        nor does more memory for one (a replica that serves requests the others reject adds
        them to the mix, which can).
        """
        views = self._views
        calibration = views[0].source.calibration()
        admits = np.array([v.capacity_served for v in views])
        served = admits.any(axis=0)
        mix = served_requests(calibration, served)
        if not served.any() or admits[:, served].all():  # one class: the sum of the rates
            rates = [v.served_capacity_rps(mix) for v in views]
            return per_arrival(sequential_sum(rates), served)
        classes, members = np.unique(admits[:, served].T, axis=0, return_inverse=True)
        members = members.reshape(-1)
        shares = np.bincount(members) / members.size
        # The per-request work of at most WORK_SAMPLE requests (evenly spaced, and the first
        # of each class): a long calibration history would cost seconds per replica.
        sample = np.unique(
            np.concatenate(
                [
                    np.linspace(0, members.size - 1, min(members.size, WORK_SAMPLE)).astype(int),
                    np.unique(members, return_index=True)[1],
                ]
            )
        )
        picked = np.zeros(members.size, dtype=bool)
        picked[sample] = True
        sampled = served_requests(mix, picked)
        # A class's cost relative to the mix, the same on every replica (the mean of the
        # replicas' own): with replica-specific costs, a split of the requests that admission
        # happens to make let the program send each class where it is relatively cheapest,
        # which the sum of rates (every replica admitting every request) does not, so a replica
        # with less memory could raise the estimate.
        in_class = [members[sample] == c for c in range(len(classes))]
        relative = np.zeros(len(classes))
        for view in views:
            work = view.request_work_s(sampled)
            relative += [work[mask].mean() / work.mean() for mask in in_class]
        relative /= float(shares @ relative)  # the mix's cost is 1
        replica_rates = np.array([view.served_capacity_rps(mix) for view in views])
        rates = np.where(classes, replica_rates[None, :] / relative[:, None], 0.0)
        return per_arrival(routed_capacity_rps(shares, rates), served)

    @staticmethod
    def _make_views(cfg: RoutingEnvConfig) -> list[ContinuousBatchingEnv]:
        """One ``ContinuousBatching-v0`` of one GPU per replica (copies for equal settings)."""
        views: list[ContinuousBatchingEnv] = []
        built: dict[tuple[str, str], ContinuousBatchingEnv] = {}
        for r in range(cfg.n_replicas):
            latency = cfg.replica_value("latency", r)
            kv_memory = cfg.replica_value("kv_memory", r)
            key = (repr(latency), repr(kv_memory))
            if key in built:
                views.append(copy.copy(built[key]))
                continue
            try:
                view = RoutingEnv._replica_view(cfg, latency, kv_memory)
            except (TypeError, ValueError) as error:
                kind = ArgumentTypeError if isinstance(error, TypeError) else ValueError
                raise kind(
                    f"{cfg.owner}: replica {r} (latency={latency!r}, kv_memory={kv_memory!r}) "
                    f"as a one-GPU ContinuousBatching-v0: {error}"
                ) from None
            built[key] = view
            views.append(view)
        return views

    @staticmethod
    def _replica_view(cfg: RoutingEnvConfig, latency: Any, kv_memory: Any) -> ContinuousBatchingEnv:
        """The ``ContinuousBatching-v0`` of one GPU whose settings a replica runs with."""
        return ContinuousBatchingEnv(
            workload=cfg.workload,
            arrival_rate=1.0,  # unused: the routing env draws the requests
            n_gpus=1,
            latency=latency,
            kv_memory=kv_memory,
            n_requests=cfg.n_requests,
            ttft_sla=cfg.ttft_sla,
            ttft_sla_per_token=cfg.ttft_sla_per_token,
            tbt_sla=cfg.tbt_sla,
            sla_penalty=cfg.sla_penalty,
            reward=cfg.reward,
            max_tokens=cfg.max_tokens,
            max_sequences=cfg.max_sequences,
            chunk_size=cfg.chunk_size,
            kv_allocation="paged",
            kv_block_tokens=cfg.kv_block_tokens,
            prefix_caching=cfg.prefix_caching,
        )

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; see the class docstring's Starting State."""
        workload = self._new_episode(seed, options)
        cfg = self.config
        n = cfg.n_replicas
        # Replica 0 uses the env's generator (as ContinuousBatching-v0's server does); the
        # others get generators seeded from it.
        rngs = [self.np_random]
        if n > 1:
            seeds = self.np_random.integers(2**63, size=n - 1)
            rngs += [np.random.default_rng(int(s)) for s in seeds]
        if self._compiles_routing():
            for r, replica in enumerate(self._replicas):
                replica.start(workload, r, None, rngs[r], server_class=CompiledReplicaServer)
            self.server = CompiledCluster(
                workload,
                self._replicas,
                self._compiled_tables,
                self._obs_params,
                self._builder.low,
                self._builder.high,
            )
        else:
            routed_to = [-1] * len(workload)
            for r, replica in enumerate(self._replicas):
                replica.start(workload, r, routed_to, rngs[r])
            self.server = Cluster(workload, self._replicas, routed_to)
        self._reward = self._reward_factory(cfg.sla_penalty, cfg.ttft_sla)
        self._reward.reset(self.server)
        self._first_decision(workload)
        info = self._info(invalid=False, applied=None)
        info.update(
            n_replicas=n,
            replica_policy=cfg.replica_policy,
            max_tokens=cfg.max_tokens,
            max_sequences=cfg.max_sequences,
            chunk_size=cfg.chunk_size,
            kv_block_tokens=cfg.kv_block_tokens,
            prefix_caching=cfg.prefix_caching,
            kv_capacity_tokens=np.array(self.kv_capacity_tokens),
            ttft_sla_s=cfg.ttft_sla,
            ttft_sla_per_token_s=cfg.ttft_sla_per_token,
            tbt_sla_s=cfg.tbt_sla,
            capacity_rps=self.capacity_rps,
            arrival_rate_rps=self.episode_arrival_rate_rps,
        )
        self.last_info = info
        return self._observe(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Send the arriving request to replica ``action`` and run to the next arrival."""
        cluster = self._running_server()
        replica = self._parse_action(action)
        invalid = not self._mask[replica]  # the decision's mask, as info gave it
        if invalid:
            if self.config.invalid_action == "raise":
                raise InvalidActionError(
                    f"replica {replica} cannot admit request {cluster.request} (its "
                    f"{self.server.workload.prompt_tokens[cluster.request]} prompt tokens plus "
                    f"output do not fit its KV memory); allowed replicas: "
                    f"{np.flatnonzero(self._mask).tolist()}"
                )
            replica = int(np.flatnonzero(self._mask)[0])
        return self._finish_step(cluster.route_and_advance(replica), invalid, (replica,))

    def _parse_action(self, action: Any) -> int:
        """The replica index of ``action`` (an integer, or an array of one integer)."""
        n = self.config.n_replicas
        replica = one_integer(action)
        if replica is None:
            raise ValueError(f"action {action!r} must be one integer, a replica index in [0, {n})")
        if not 0 <= replica < n:
            raise ValueError(f"action {action!r} is not a replica index in [0, {n})")
        return replica

    def _sla_targets(self) -> SLATargets:
        cfg = self.config
        return SLATargets(
            ttft_s=cfg.ttft_sla, tbt_s=cfg.tbt_sla, ttft_per_token_s=cfg.ttft_sla_per_token
        )

    # ------------------------------------------------------------------ helpers
    def _request(self) -> int:
        """The request to route, -1 once the episode is over (truncation leaves one due)."""
        return -1 if self._episode_over else self.server.request

    def _observe(self) -> np.ndarray:
        return self.server.observation(self._builder, self._loads, self._request())

    def _info(self, *, invalid: bool, applied: tuple[int, ...] | None) -> dict[str, Any]:
        cluster = self.server
        loads = cluster.loads()
        self._loads = loads
        i = self._request()
        w = cluster.workload
        if i >= 0:
            self._mask = np.asarray(cluster.mask, dtype=bool)  # a new array either way
        else:
            self._mask = np.ones(self.config.n_replicas, dtype=bool)
        info = {
            "time_s": cluster.now,
            "request": i,
            "prompt_tokens": int(w.prompt_tokens[i]) if i >= 0 else 0,
            "predicted_output_tokens": int(w.predicted_output_tokens[i]) if i >= 0 else 0,
        }
        info.update(vars(loads))  # new arrays each decision (render measures its own)
        info.update(
            replica_decisions=cluster.replica_decisions(),
            preemptions=cluster.n_preemptions,
            prefix_hit_tokens=cluster.prefix_hit_tokens,
            rejected_without_decision=cluster.n_rejected_undecided,
            action_mask=self._mask.copy(),
            invalid_action=invalid,
            applied_action=applied[0] if applied is not None else -1,
        )
        return info

    def _outcome_text(self) -> str:
        s = self.server
        return f"TTFT misses {s.n_ttft_misses}  TBT misses {s.n_tbt_misses}"

    def _render_lines(self) -> list[str]:
        """The request to route, then one line per replica."""
        s = self.server
        loads = s.loads()
        lines = [f"  request {self._request()}"]
        for r, server in enumerate(s.servers):
            lines.append(
                f"  replica {r}: {loads.waiting[r]} waiting, {loads.running[r]} running, KV "
                f"{loads.kv_used_tokens[r]}/{server.kv_capacity_tokens} tokens, cached prefix "
                f"{loads.cached_prefix_tokens[r]} tokens"
            )
        return lines

    def _bars(self) -> tuple[list[float], list[int]]:
        """Per replica, waiting requests (/ max_sequences) and KV memory in use."""
        loads = self.server.loads()
        fractions: list[float] = []
        groups: list[int] = []
        for r, capacity in enumerate(self.kv_capacity_tokens):
            fractions += [
                min(loads.waiting[r] / self.config.max_sequences, 1.0),
                loads.kv_used_tokens[r] / capacity,
            ]
            groups += [0, 1]
        return fractions, groups
