"""``llmsched/BatchScheduling-v0``: request-level static batching, one step per dispatch."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

from llmsched_env.capacity import (
    batch_capacity_rps,
    largest_fitting_batch,
    per_arrival,
    served_requests,
)
from llmsched_env.config import BatchEnvConfig
from llmsched_env.envs.base import SchedulingEnv, built_setting
from llmsched_env.envs.batch_observation import (
    BatchObservation,
    _stacked_bounds,
    feature_bounds,
    feature_names,
)
from llmsched_env.envs.batch_step import REWARD_CODES, bin_of, episode_arrays, step_one
from llmsched_env.envs.common import InvalidActionError, configured_arrival_rate, parse_action
from llmsched_env.envs.footprint import BATCH_BYTES_PER_REQUEST
from llmsched_env.envs.queue_snapshot import BinQueueSnapshot, QueueSnapshot, read_only
from llmsched_env.envs.rewards import REWARD_SHAPES
from llmsched_env.jit import implementation
from llmsched_env.latency import make_batch_latency
from llmsched_env.metrics import SLATargets
from llmsched_env.sim.batch_server import BatchServer, FinishedBatch
from llmsched_env.workload import Workload

WAIT = 0


def _dead_bins(edges: tuple[float, ...], low: float, high: float) -> list[int]:
    """The bins that lie wholly below ``low`` or above ``high`` (for lengths in that range)."""
    bounds = [-np.inf, *edges, np.inf]
    return [j for j in range(len(edges) + 1) if bounds[j + 1] <= low or bounds[j] > high]


def check_bins_reachable(owner: str, edges: tuple[float, ...], predicted: np.ndarray) -> None:
    """Refuse explicit ``bin_edges`` that leave a bin outside the workload's predicted lengths.

    Bin ``j`` holds predicted lengths in ``[edge_{j-1}, edge_j)`` (bin 0 from 0, the last bin
    without upper end). A bin lying wholly below the smallest or at or above the largest predicted
    length of the calibration data can never hold a request: the agent would see an empty queue
    forever and the action component that picks it would be dead, so this is a configuration
    error, not a warning. Bins inside the range that the calibration sample happens to leave
    empty are allowed (the episode's requests may still fall into them). A workload with fewer
    distinct predicted lengths than bins (``Fixed`` lengths, two-length demos) leaves some bins
    empty whatever the edges, so there any edges are accepted, as its default ones are.

    Args:
        owner: The environment, for the message.
        edges: The interior edges (already checked finite and strictly increasing).
        predicted: Predicted output lengths of the workload's calibration data.

    Raises:
        ValueError: Naming the edges, the unreachable bins and the workload's length range.
    """
    if np.unique(predicted).shape[0] < len(edges) + 1:
        return
    low, high = float(np.min(predicted)), float(np.max(predicted))
    dead = _dead_bins(edges, low, high)
    if dead:
        raise ValueError(
            f"{owner}: bin_edges must leave every bin reachable by the workload's predicted "
            f"output lengths (calibration data: {low:g} to {high:g} tokens), got {edges!r}: "
            f"bin(s) {dead} can never hold a request"
        )


def equal_mass_edges(predicted_tokens: np.ndarray, n_bins: int) -> tuple[float, ...]:
    """Interior edges that split predicted lengths into ``n_bins`` bins of equal probability mass.

    Bin ``j`` holds lengths in ``[edge_{j-1}, edge_j)`` (Multi-Bin batching, Lemma 4.1: equal mass
    is optimal). The edges are the ``j / n_bins`` quantiles, nudged apart by 1e-6 where heavy
    ties make them coincide. Where that would leave fewer bins holding lengths than there are
    bins or distinct lengths (a bin below or above every length), the edges are chosen among the
    distinct lengths instead, each splitting the mass above the edge before it as equally as
    leaves room for the later ones. With fewer distinct lengths than bins, each length gets its
    own bin and the bins above the longest stay empty (their actions are always masked).
    """
    predicted = np.asarray(predicted_tokens, dtype=np.float64)
    quantiles = np.quantile(predicted, np.arange(1, n_bins) / n_bins)
    edges = _distinct(np.maximum.accumulate(quantiles))
    values, counts = np.unique(predicted, return_counts=True)
    filled = np.unique(np.searchsorted(edges, values, side="right")).size
    if filled == min(n_bins, values.size):
        return tuple(float(e) for e in edges)
    # Candidate edge values[i] (i >= 1) puts the mass below values[i] in the bins under it.
    below = np.cumsum(counts)[:-1] / predicted.size
    n_edges = min(n_bins, values.size) - 1
    chosen: list[int] = []
    mass = 0.0  # below the latest edge
    for j in range(n_edges):
        target = mass + (1.0 - mass) / (n_edges + 1 - j)  # the rest, split equally
        first = chosen[-1] + 1 if chosen else 1
        last = values.size - (n_edges - j)  # leave a candidate for each later edge
        options = np.arange(first, last + 1)
        chosen.append(int(options[np.argmin(np.abs(below[options - 1] - target))]))
        mass = float(below[chosen[-1] - 1])
    above = [values[-1] + 1.0] * (n_bins - 1 - n_edges)  # empty bins above the longest
    return tuple(float(e) for e in _distinct(np.array([*values[chosen], *above])))


def _distinct(edges: np.ndarray) -> np.ndarray:
    """Non-decreasing ``edges`` made strictly increasing: a repeat becomes the one before + 1e-6."""
    edges = np.array(edges, dtype=np.float64)
    for i in range(1, len(edges)):
        if edges[i] <= edges[i - 1]:
            edges[i] = edges[i - 1] + 1e-6
    return edges


class BatchSchedulingEnv(SchedulingEnv):
    """Choose which bin of waiting LLM requests to serve as a static batch, and how large.

    ## Description

    G GPUs serve LLM requests in *static batches*: a batch starts on an idle GPU and all its
    requests complete together when the batch ends, so the longest member sets the pace. Waiting
    requests are sorted into ``n_bins`` FIFO bins by their *predicted* output length (Multi-Bin
    batching); the bin edges are equal-mass quantiles of predicted lengths in the workload's
    calibration data (what a scheduler could have seen before the episode, never the episode's
    future) unless ``bin_edges`` is given. Every request must finish within ``sla`` seconds of its
    arrival.

    The environment steps once per scheduling decision: whenever a GPU is idle and requests wait.
    Time between decisions is simulated by a discrete-event core, so an episode takes one step
    per batch started or WAIT: with the defaults (1,000 requests) 75 to 95 steps of random valid
    actions, or 35 of ``multibin-wc``, whose batches are larger. Every paper heuristic of
    ``baselines`` is a policy over this same action space.

    ## Action Space

    ``MultiDiscrete([n_bins + 1, n_sizes])``:

    | component | value | meaning |
    |-----------|-------|---------|
    | 0 | 0 | WAIT: the deciding GPU idles until the next arrival or batch end |
    | 0 | j = 1..n_bins | serve bin ``j - 1`` |
    | 1 | s | batch-size level: up to ``batch_sizes[s]`` requests |

    ``batch_sizes`` are the powers of two below ``max_batch_size``, and ``max_batch_size``
    (``env.unwrapped.batch_sizes``). A batch takes the oldest requests of the bin, up to the size
    level, and never more than fit together in one GPU's KV memory (prompt plus output tokens).
    With ``dispatch_order="oldest-in-time"`` it takes the oldest requests of the bin whose
    deadline has not passed; late ones (their miss already counted) go only when no request in
    time is left in the bin, so they never block the bin's head.

    **Masking.** ``action_masks()`` returns the concatenated per-component boolean mask that
    sb3-contrib's ``MaskablePPO`` expects: a bin is allowed when it holds requests; WAIT is allowed
    unless it would deadlock (no arrival left and no GPU working); every size level is allowed (a
    level above the bin's length takes the whole bin). ``FlattenAction`` (in
    ``llmsched_env.envs.wrappers``) exposes a ``Discrete`` action with exact joint masks
    (``joint_action_mask()``), which also remove the size levels that would start the same
    batch as a smaller one. A forbidden action is, by default, mapped to
    serving the bin whose oldest request is oldest (at the same size level) and reported in
    ``info["invalid_action"]``; ``invalid_action="raise"`` raises ``InvalidActionError``
    instead. An action outside the action space always raises ``ValueError``.

    ## Observation Space

    A float32 ``Box`` of size ``9 * n_bins + n_gpus + 4``; ``env.unwrapped.obs_names`` names each
    entry: the per-bin block for bin 0, 1, ... (``bin{j}/...``), then one entry per GPU
    (``gpu{g}/...``), then the global entries. Values are clipped to their range.

    | name | meaning | normalisation | range |
    |------|---------|---------------|-------|
    | queue_len | waiting requests in the bin | / max_batch_size | [0, 16] |
    | oldest_wait | age of its oldest request | / sla | [0, 4] |
    | slack | time to the next batch's first deadline minus full-batch service | / sla | [-4, 1] |
    | late_fraction | share of the bin already past its deadline | - | [0, 1] |
    | doomed_fraction | share that misses its deadline even if served now | - | [0, 1] |
    | next_on_time | requests of the next batch that can be on time | / max_batch_size | [0, 1] |
    | at_risk | requests doomed if served one mean batch time later | / max_batch_size | [0, 16] |
    | mean_predicted_len | mean predicted output tokens | / length scale | [0, 4] |
    | kv_fit | share of a max-size batch (predicted lengths) that fits in KV memory | - | [0, 1] |
    | busy_remaining | per GPU, time until its batch ends | / sla | [0, 4] |
    | arrival_rate | arrivals in the last ``sla`` seconds, per second | / capacity | [0, 4] |
    | violation_rate | misses / (misses + on-time), moving, time constant ``sla`` | - | [0, 1] |
    | arrived_fraction | share of the episode's requests that have arrived | - | [0, 1] |
    | waiting | all waiting requests | / max_batch_size | [0, 16] |

    The length scale is the 99th percentile of predicted lengths in the calibration data. The
    full-batch service estimate of a bin is that of a batch of the largest size that fits in KV
    memory, at the bin's upper predicted length and the mean prompt; the mean batch time is the
    mean of these estimates over the bins. ``doomed_fraction``, ``next_on_time`` and ``at_risk``
    tell a scheduler under overload which requests are already lost (serving them earns nothing)
    and which are lost unless served now. The next batch is the bin's oldest requests, up to
    ``max_batch_size`` (a batch that KV memory would cut shorter is not foreseen: the cut
    depends on true output lengths); it starts at the bin's oldest request, or with
    ``dispatch_order="oldest-in-time"`` at its oldest request in time (if it holds one). An
    empty bin shows zeros, slack 1 and kv_fit 1.

    ## Rewards

    ``reward="sla"`` (default): +1 when a request completes within its deadline and
    ``-sla_penalty`` at the moment a request's deadline passes unfinished (a request rejected at
    arrival, because it alone exceeds KV memory, counts as a miss when rejected). The return of
    a terminated episode is exactly ``on_time - sla_penalty * late``. Example with
    ``sla_penalty=1``: three requests; the first two share a batch that ends before their
    deadlines (+1 +1, paid at the step during which the batch ends); the third waits past its
    deadline (-1 when the deadline passes) and completes later (0): the return is 1 = 2 - 1.
    Other shapes (``llmsched_env.envs.rewards``): ``"goodput-tokens"`` (thousands of output
    tokens of on-time requests) and ``"queue"`` (minus request-seconds in the system / sla).

    ## Starting State

    ``reset(seed=...)`` draws the episode's requests from the workload source with the env's
    random generator (for a trace: a random window of ``n_requests`` consecutive requests, time
    scaled to the arrival rate; for a synthetic source: fresh arrivals and lengths) and advances to
    the first decision. ``reset(options={"start": i})`` replays the trace window starting at index
    ``i`` of the source's episode region, ``options={"workload": w}`` serves an explicit
    :class:`~llmsched_env.workload.Workload`, so that different policies see identical inputs.
    ``options={"load": x}`` runs this episode at ``x`` times the capacity estimate (the same
    episode, bit for bit, as an env built with ``load=x``; ``info["arrival_rate_rps"]`` reports
    the episode's rate, and the ``arrival_rate`` feature follows the actual arrivals), and
    ``options={"arrival_cv": c}`` replaces the arrival times by Gamma gaps of coefficient of
    variation ``c`` at the episode's rate (:func:`~llmsched_env.envs.common.episode_workload`);
    a training distribution over loads and burstiness draws these per episode
    (:class:`~llmsched_env.envs.mixture.BatchMixtureEnv`).

    ## Episode End

    * Termination: every request of the episode has completed or been rejected.
    * Truncation: ``max_steps`` steps were taken (when set). Requests then waiting or running are
      reported as ``in_system`` and not-yet-arrived ones as ``not_arrived``; counts still add up.
      ``gym.make(..., max_episode_steps=N)`` instead wraps Gymnasium's ``TimeLimit``, whose
      truncation the env does not see: that last step has no ``episode_metrics`` (use
      ``max_steps=N``, or ``env.unwrapped.episode_metrics()``).
    * ``EndWhenSettled`` (``llmsched_env.envs.wrappers``) also terminates, with the same return,
      once every request has arrived and every waiting one is past its deadline: under the
      ``"sla"`` and ``"goodput-tokens"`` rewards no action changes the return after that point
      (``env.unwrapped.is_settled()`` tells when it is reached).

    ## Information

    Every ``info`` holds ``time_s`` (simulated time), ``gpu`` (the deciding GPU, -1 once the
    episode is over), ``gpu_busy_until_s`` (per GPU), ``action_mask`` (the per-component masks),
    ``invalid_action`` and ``applied_action`` (the action actually carried out, an array of 2;
    ``[-1, -1]`` at ``reset``). Once the episode is over the mask allows WAIT only (a valid mask
    for the action a vector env passes to a finished episode, which it resets instead), and so
    does ``joint_action_mask()``. Arrays are fresh copies, and every ``info`` has the same keys
    and shapes whatever the queues hold. ``reset`` adds ``batch_sizes``, ``bin_edges``,
    ``sla_s``, ``kv_capacity_tokens``, ``capacity_rps`` and ``arrival_rate_rps``.

    Queue contents vary in length and are not in ``info``: ``env.unwrapped.queue_snapshot()``
    returns a :class:`~llmsched_env.envs.queue_snapshot.BinQueueSnapshot` of the current
    decision, per bin (oldest request first, read-only views whose cost does not grow with the
    queue) the request indices, arrival times, predicted output lengths and prompt lengths;
    ``env.unwrapped.finished_batches()`` gives the ``FinishedBatch`` records of the batches that
    ended during the latest step (GPU, bin, size, start, service time, longest lengths).
    At the end of an episode (termination or truncation), ``info["episode_metrics"]`` holds the
    metrics summary of :func:`llmsched_env.metrics.summarize`. ``env.unwrapped.last_info`` is
    the latest ``info`` returned (what a heuristic's SB3-style ``predict`` reads when a vector
    env hides the infos). ``env.unwrapped.request_records()`` gives one row per request of the
    episode so far: arrival, start, first token, completion, tokens, GPU and outcome
    (:meth:`~llmsched_env.envs.common.RequestRecordsMixin.request_records`).

    ## Arguments

    | argument | default | meaning |
    |----------|---------|---------|
    | workload | ``"azure-conv"`` | preset name or ``WorkloadSource`` |
    | load | 1.0 | arrival rate / estimated capacity (``llmsched_env.capacity``) |
    | arrival_rate | None | arrival rate in requests/s (instead of ``load``) |
    | n_gpus | 2 | number of GPUs |
    | latency | ``"llama3.1-8b-h100"`` | batch latency preset or model |
    | kv_memory | ``"h100-80gb-llama3.1-8b"`` | KV memory preset, tokens, or ``KVMemory`` |
    | n_requests | 1000 | requests per episode |
    | sla | 10.0 | end-to-end deadline in seconds |
    | sla_penalty | 1.0 | reward lost per late request |
    | reward | ``"sla"`` | reward shape |
    | n_bins | 4 | bins by predicted output length |
    | bin_edges | None | explicit interior edges (tokens) |
    | max_batch_size | 64 | largest batch |
    | dispatch_order | ``"oldest"`` | or ``"oldest-in-time"`` (late requests of a bin go last) |
    | invalid_action | ``"remap"`` | or ``"raise"`` |
    | max_steps | None | truncation limit |
    | render_mode | None | ``"ansi"`` (text) or ``"rgb_array"`` (bars) |

    Why these defaults: the Azure conversation trace is real production traffic; Llama-3.1-8B on
    an H100 (vLLM-calibrated iteration costs, served as static batches) is a realistic engine.
    A static batch lasts as long as its longest member (up to about 6 s for the trace's longest
    outputs), so a 10 s deadline leaves little room for queueing: at the estimated capacity on two
    GPUs, first-come-first-served batches of 64 meet it for about 70% of requests while serving
    the longest bin first meets it for almost 90%, so the choice of bin and batch size matters and
    there is something to learn (measured over seeds 10000-10003).

    ## References

    * Guldogan et al., Multi-Bin Batching for Increasing LLM Inference Throughput, arXiv 2412.04504.
    * Pang et al., Optimizing LLM Inference Throughput via Memory-aware and SLA-constrained
      Dynamic Batching, arXiv 2503.05248.
    * Patel et al., Splitwise (ISCA 2024), source of the Azure LLM inference trace.

    ## Version History

    * v0: Initial version. The queue contents of ``info`` (``queues``, ``queue_arrival_s``,
      ``queue_predicted_output_tokens``, ``queue_prompt_tokens``) moved to
      ``queue_snapshot()`` and ``finished_batches`` to ``finished_batches()``; the dynamics did
      not change.
    """

    config_class = BatchEnvConfig

    def __init__(
        self,
        workload: Any = "azure-conv",
        load: float | None = None,
        arrival_rate: float | None = None,
        n_gpus: int = 2,
        latency: Any = "llama3.1-8b-h100",
        kv_memory: Any = "h100-80gb-llama3.1-8b",
        n_requests: int = 1000,
        sla: float = 10.0,
        sla_penalty: float = 1.0,
        reward: str = "sla",
        n_bins: int = 4,
        bin_edges: tuple[float, ...] | None = None,
        max_batch_size: int = 64,
        dispatch_order: str = "oldest",
        invalid_action: str = "remap",
        max_steps: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        cfg: BatchEnvConfig = self._set_up(locals(), BATCH_BYTES_PER_REQUEST)
        self.latency = built_setting(cfg.owner, "latency", cfg.latency, make_batch_latency)
        calibration = self.source.calibration()
        predicted = calibration.predicted_output_tokens
        if cfg.bin_edges is not None:
            check_bins_reachable(cfg.owner, cfg.bin_edges, predicted)
        self.bin_edges = cfg.bin_edges or equal_mass_edges(predicted, cfg.n_bins)
        self._edges = np.asarray(self.bin_edges, dtype=np.float64)
        self.batch_sizes = cfg.batch_sizes
        #: Per calibration request, whether the env would serve it (one whose KV need exceeds a
        #: GPU's memory is rejected at arrival), and those requests: what the capacity estimate
        #: is made of.
        self.capacity_served = (
            calibration.prompt_tokens + calibration.output_tokens <= self.kv_capacity_tokens
        )
        self.capacity_calibration = served_requests(calibration, self.capacity_served)
        served_rps = batch_capacity_rps(
            self.latency,
            self.capacity_calibration,
            n_gpus=cfg.n_gpus,
            max_batch_size=cfg.max_batch_size,
            kv_capacity_tokens=self.kv_capacity_tokens,
        )
        self.capacity_rps = per_arrival(served_rps, self.capacity_served)
        self.arrival_rate_rps = configured_arrival_rate(
            cfg.owner, cfg.arrival_rate, cfg.load, self.capacity_rps, cfg.n_requests
        )
        self.length_scale_tokens = float(max(np.quantile(predicted, 0.99), 1.0))
        self.bin_service_s = self._bin_service_estimates(self.capacity_calibration)

        self.obs_names = feature_names(cfg.n_bins, cfg.n_gpus)
        low, high = feature_bounds(cfg.n_bins, cfg.n_gpus)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.MultiDiscrete([cfg.n_bins + 1, len(self.batch_sizes)])
        self._nvec = (cfg.n_bins + 1, len(self.batch_sizes))
        # Per-component mask: WAIT, then the bins (set at each decision), then the size levels,
        # which are always allowed.
        self._mask = np.ones(cfg.n_bins + 1 + len(self.batch_sizes), dtype=bool)
        self.server = None
        self._observer: BatchObservation | None = None
        self._skips_late = cfg.dispatch_order == "oldest-in-time"
        # The compiled step (batch_step.step_one) needs the latency model's compiled timing;
        # a model timed in Python steps through the server's Python path.
        compiled_timing = getattr(self.latency, "compiled_timing", None)
        self._compiled_step = compiled_timing is not None and compiled_timing() is not None
        self._bounds = _stacked_bounds(cfg.n_bins, cfg.n_gpus)
        self._batch_sizes = np.asarray(self.batch_sizes, dtype=np.int64)
        self._reward_code = REWARD_CODES[cfg.reward]
        self._episode: tuple[np.ndarray, ...] = ()
        # The compiled step's implementation for the episode's arrays: found at the episode's
        # first step (see _look_up_and_step).
        self._step_kernel: Callable[..., tuple] = self._look_up_and_step
        # Batches finished during the latest step: positions finished_from .. n_finished - 1
        # of the server's list of finished batches.
        self._finished_from = 0
        # Set by a compiled vector env that steps this env: brings the Python side (mask,
        # last_info, queue columns ...) up to date with its compiled steps before a read.
        self._refresh: Callable[[], None] | None = None

    def _bin_service_estimates(self, calibration: Workload) -> np.ndarray:
        """Estimated service time of a full batch of each bin (its upper length, mean prompt)."""
        cfg = self.config
        b = largest_fitting_batch(calibration, self.kv_capacity_tokens, cfg.max_batch_size)
        prompt = float(np.mean(calibration.prompt_tokens))
        # An explicit edge below one token bounds an empty bin: its batch is a one-token one.
        uppers = [max(float(u), 1.0) for u in (*self.bin_edges, self.length_scale_tokens)]
        return np.array([self.latency.estimate_s(b, prompt, u) for u in uppers])

    @property
    def server(self) -> BatchServer | None:
        """The episode's simulated server (``None`` before the first ``reset``)."""
        self._up_to_date()
        return self._server

    @server.setter
    def server(self, server: BatchServer | None) -> None:
        self._server = server

    @property
    def last_info(self) -> dict[str, Any] | None:
        """The latest ``info`` returned by ``reset`` or ``step`` (``None`` before any)."""
        self._up_to_date()
        return self._last_info

    @last_info.setter
    def last_info(self, info: dict[str, Any] | None) -> None:
        self._last_info = info

    def _up_to_date(self) -> None:
        """Bring the Python side up to date, if a compiled vector env steps this env."""
        refresh = getattr(self, "_refresh", None)
        if refresh is not None:
            refresh()

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; see the class docstring's Starting State."""
        workload = self._new_episode(seed, options)
        self._episode_objects(workload)
        server = self._server
        self._reward.reset(server)
        self._first_decision(workload)
        server.fill_decision_mask(self._mask)
        info = self._reset_info()
        self.last_info = info
        return self._observe(), info

    def _episode_objects(self, workload: Workload, buffers: tuple[np.ndarray, ...] = ()) -> None:
        """Make the episode's server, observation and reward, and the compiled step's arrays.

        Args:
            workload: The episode's requests.
            buffers: Empty for a new episode; else :func:`~llmsched_env.envs.batch_step.
                episode_arrays`' first six, where the episode was started in compiled code
                (:func:`~llmsched_env.envs.batch_step.start_episode`), and maybe stepped.
        """
        server, observer = self._server_and_observation(workload, buffers)
        cfg = self.config
        self._server = server
        self._observer = observer
        self._reward = self._reward_factory(cfg.sla_penalty, cfg.sla)
        self._pending_reward = 0.0
        self._queue_columns = ()
        self._episode = episode_arrays(server, observer)
        self._step_kernel = self._look_up_and_step  # these arrays' types may differ
        self._finished_from = 0

    def _server_and_observation(
        self,
        workload: Workload,
        buffers: tuple[np.ndarray, ...] = (),
        rng: np.random.Generator | None = None,
    ) -> tuple[BatchServer, BatchObservation]:
        """A server of ``workload`` and its observation, new or on ``buffers``.

        The server's generator is ``rng``, by default the env's.
        """
        cfg = self.config
        settings: dict[str, Any] = {
            "n_gpus": cfg.n_gpus,
            "latency": self.latency,
            "kv_capacity_tokens": self.kv_capacity_tokens,
            "rng": self.np_random if rng is None else rng,
            "n_queues": cfg.n_bins,
            "deadline_s": cfg.sla,
            "dispatch_order": cfg.dispatch_order,
        }
        if buffers:
            server = BatchServer.on_buffers(workload, buffers[:3], **settings)
            return server, BatchObservation.on_buffers(server, buffers[3:6])
        bins = bin_of(workload.predicted_output_tokens, self._edges)
        server = BatchServer(workload, queue_of=bins, **settings)
        observer = BatchObservation(
            server,
            sla_s=cfg.sla,
            max_batch_size=cfg.max_batch_size,
            length_scale_tokens=self.length_scale_tokens,
            bin_service_s=self.bin_service_s,
            capacity_rps=self.capacity_rps,
        )
        return server, observer

    def _reset_info(self) -> dict[str, Any]:
        """The ``info`` of ``reset``: the step's keys and the episode's settings."""
        cfg = self.config
        info = self._info(invalid=False, applied=None)
        info.update(
            batch_sizes=self.batch_sizes,
            bin_edges=self.bin_edges,
            sla_s=cfg.sla,
            kv_capacity_tokens=self.kv_capacity_tokens,
            capacity_rps=self.capacity_rps,
            arrival_rate_rps=self.episode_arrival_rate_rps,
        )
        return info

    def episode_template(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """``(server, observation)`` buffers of this configuration, for compiled episode starts.

        :func:`~llmsched_env.envs.batch_step.start_episode` takes a new episode's parameters
        (deadline, latency timing, KV capacity, the observation's units and service estimates)
        from them. They are those of a server and an observation made as ``reset`` makes them,
        on the first calibration request (the parameters do not depend on the requests), with a
        generator of their own (the env's is left unseeded).
        """
        first_request = self.source.calibration().window(0, 1)
        server, observer = self._server_and_observation(first_request, rng=np.random.default_rng(0))
        return server.buffers, observer._buffers

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Carry out one scheduling decision and advance to the next one.

        With a compiled latency model the whole decision, the advance to the next one, the
        reward and the observation are one compiled call (:func:`~llmsched_env.envs.
        batch_step.step_one`, shared with the compiled vector env); here remain the action's
        checks, the ``info`` and the episode's end.
        """
        server = self._server
        if server is None or self._episode_over or self._refresh is not None:
            server = self._running_server()  # (which brings a vector env's sub-env up to date)
        choice, level = parse_action(action, self._nvec)
        mask = self._mask
        if not mask[choice] and self.config.invalid_action == "raise":
            raise InvalidActionError(
                f"action {[choice, level]} is forbidden by the mask {mask.tolist()} "
                f"(component 0, bin choice {choice}, is masked: "
                + ("WAIT is not allowed now)" if choice == WAIT else "that bin is empty)")
            )
        if not self._compiled_step:
            return self._python_step(server, choice, level)
        obs = np.empty(self._bounds.shape[1], dtype=np.float32)
        cfg = self.config
        invalid, queue, due, moved, objective, now, gpu, self._finished_from = self._step_kernel(
            choice,
            level,
            self._episode,
            self._bounds,
            self._batch_sizes,
            mask,
            obs,
            self._reward_code,
            cfg.sla_penalty,
            cfg.sla,
            self._skips_late,
        )
        if moved:
            self._queue_columns = ()  # made anew when next asked for (queue_snapshot)
        reward_shape = self._reward
        reward = objective - reward_shape._last
        reward_shape._last = objective
        self._steps += 1
        max_steps = cfg.max_steps
        truncated = due and max_steps is not None and self._steps >= max_steps
        if truncated or not due:
            self._episode_over = True
            self._allow_wait_only()
            gpu = -1
        info = {
            "time_s": now,
            "gpu": gpu,
            "gpu_busy_until_s": server.state.gpu_until.copy(),
            "action_mask": mask.copy(),
            "invalid_action": invalid,
            "applied_action": np.array((queue + 1, level)),
        }
        if self._episode_over:
            info["episode_metrics"] = self.episode_metrics()
        self._last_info = info  # (the property's setter, without its call: the hot path)
        return obs, reward, not due, truncated, info

    def _python_step(
        self, server: BatchServer, choice: int, level: int
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """``step`` with a latency model timed in Python (the server's Python dispatch)."""
        invalid = not self._mask[choice]
        if invalid:
            choice = self._fallback_choice()
        self._finished_from = int(server.state.n_finished[0])
        decision_due = server.decide(choice - 1, self.batch_sizes[level], self._mask)
        if self._skips_late and choice != WAIT:
            lo, hi = server.last_moved
            if hi > lo:
                self._observer.positions_moved(lo, hi)
                self._queue_columns = ()
        return self._finish_step(decision_due, invalid, (choice, level))

    def action_masks(self) -> np.ndarray:
        """Per-component masks, concatenated, in the form sb3-contrib's MaskablePPO expects."""
        self._up_to_date()
        return super().action_masks()

    def queue_snapshot(self) -> BinQueueSnapshot:
        """The waiting requests of every bin now, oldest first, as read-only views.

        Its cost does not grow with the queues (see :class:`~llmsched_env.envs.queue_snapshot.
        QueueSnapshot`); this is where heuristics and agents read queue contents, which
        ``info`` does not carry. A snapshot kept from an earlier step keeps showing that step's
        queues.
        """
        self._up_to_date()
        s = self.server
        if s is None:
            raise RuntimeError("call reset() before queue_snapshot()")
        if not self._queue_columns:
            self._queue_columns = self._queue_columns_in_order()
        heads, tails = s.queue_bounds()
        ids, arrival, predicted, prompt = self._queue_columns
        return BinQueueSnapshot(
            ids=QueueSnapshot(ids, heads, tails),
            arrival_s=QueueSnapshot(arrival, heads, tails),
            predicted_output_tokens=QueueSnapshot(predicted, heads, tails),
            prompt_tokens=QueueSnapshot(prompt, heads, tails),
        )

    def finished_batches(self) -> list[FinishedBatch]:
        """The batches that finished during the latest step (none after ``reset``).

        What schedulers that learn from measured latency read (size, service time, longest
        lengths); the list is made when asked for, from the server's record of batches.
        """
        self._up_to_date()
        s = self.server
        if s is None:
            raise RuntimeError("call reset() before finished_batches()")
        return s.finished_between(self._finished_from, int(s.state.n_finished[0]))

    def _queue_columns_in_order(self) -> tuple[np.ndarray, ...]:
        """Request index, arrival, predicted output and prompt at every position (read-only).

        They are made anew (never written) when a dispatch reorders positions, so that the
        snapshots of earlier steps keep showing their step's queues.
        """
        order = self.server.order
        w = self.server.workload
        return tuple(
            read_only(values)
            for values in (
                order.copy(),
                w.arrival_s[order],
                w.predicted_output_tokens[order],
                w.prompt_tokens[order],
            )
        )

    def _fallback_choice(self) -> int:
        """The bin whose oldest waiting request is the oldest (first come, first served)."""
        return 1 + self.server.oldest_queue()

    def joint_action_mask(self) -> np.ndarray:
        """Exact validity of every action, shape ``nvec``, without duplicates.

        WAIT is listed once (size level 0); a size level is listed for a bin only if it serves
        more requests than the level below it (``BatchServer.batch_counts``: more of the bin's
        requests that its next batch chooses among, and more that fit in KV memory), so no two
        allowed actions start the same batch.
        """
        self._up_to_date()
        server = self.server
        if server is None:
            raise RuntimeError("call reset() before joint_action_mask()")
        mask = np.zeros(self._nvec, dtype=bool)
        if server.decision_gpu < 0 or self._episode_over:
            # The episode is over: WAIT only, as action_masks() (a valid action for a vector
            # env to pass to a finished episode, which it resets instead).
            mask[0, 0] = True
            return mask
        counts = server.batch_counts(self.batch_sizes)
        mask[0, 0] = server.can_wait()
        mask[1:, 0] = counts[:, 0] > 0
        mask[1:, 1:] = counts[:, 1:] > counts[:, :-1]
        return mask

    def is_settled(self) -> bool:
        """Whether no action can change the rest of the episode's return any more.

        True once every request has arrived and every waiting request is past its deadline,
        under a reward that stops changing then (``"sla"``, ``"goodput-tokens"``; never under
        ``"queue"``): the rest of the episode only decides when already-late requests complete
        (see ``BatchServer.settled_counts``). ``EndWhenSettled`` ends training episodes here,
        and a trained agent's policy hands the decisions after it to a heuristic.
        """
        self._up_to_date()
        if self.server is None:
            raise RuntimeError("call reset() before is_settled()")
        return (
            REWARD_SHAPES[self.config.reward].settles_when_all_late
            and self.server.settled_counts() is not None
        )

    def _sla_targets(self) -> SLATargets:
        return SLATargets(e2e_s=self.config.sla)

    def _bars(self) -> tuple[list[float], list[int]]:
        """One bar per bin (queue length / max_batch_size), one per GPU (busy time left / sla)."""
        s = self.server
        queues = [q / self.config.max_batch_size for q in s.queue_lengths()]
        busy = [(t - s.now) / self.config.sla for t in s.busy_until()]
        return queues + busy, [0] * len(queues) + [1] * len(busy)

    def _outcome_text(self) -> str:
        return f"late {self.server.n_late}"

    def _render_lines(self) -> list[str]:
        """One line per bin (its length range and queue), one per GPU."""
        s = self.server
        lines = []
        # A bin holds the whole predicted lengths x with lo <= x < hi: ceil(lo) <= x < ceil(hi).
        edges = [0, *(math.ceil(e) for e in self.bin_edges), float("inf")]
        for j, n in enumerate(s.queue_lengths()):
            lo, hi = edges[j], edges[j + 1]
            lines.append(
                f"  bin {j} [{lo:7.0f}, {hi:7.0f}) tokens: {n:5d} waiting " + "#" * min(n, 40)
            )
        deciding = -1 if self._episode_over else s.decision_gpu
        for g, until in enumerate(s.busy_until()):
            state = f"busy until {until:10.3f}s" if s.gpu_busy[g] else "idle"
            marker = "  <- deciding" if g == deciding else ""
            lines.append(f"  gpu {g}: {state}{marker}")
        return lines

    def __getstate__(self) -> dict[str, Any]:
        # The compiled step's arrays are the server's and the observation's: made anew from
        # them, so that a copy's step works on the copy's buffers; its implementation (which
        # does not pickle) is looked up again at the copy's next step.
        self._up_to_date()  # a sub-env kept from an earlier step is copied as it is now
        state = self.__dict__.copy()
        state["_episode"] = ()
        del state["_step_kernel"]
        state["_refresh"] = None  # a copy is nobody's sub-env (its vector env sets it again)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled or deep-copied env; copies of arrays come back writable."""
        for name in ("last_info", "server"):  # pickled when they were plain attributes
            if name in state:
                state = {**state, f"_{name}": state[name]}
                del state[name]
        self.__dict__.update(state)
        self.__dict__.setdefault("_refresh", None)  # (pickled before sub-envs refreshed)
        for values in self._queue_columns:
            read_only(values)
        self._step_kernel = self._look_up_and_step
        if self.server is not None:
            self._episode = episode_arrays(self.server, self._observer)

    # ------------------------------------------------------------------ helpers
    def _look_up_and_step(self, *args: Any) -> tuple:
        """The episode's first compiled step: find the implementation for ``args``, then step.

        Later steps call that implementation directly, sparing each the dispatcher's typing of
        a dozen arguments (:func:`~llmsched_env.jit.implementation`); the compiled vector env,
        which steps episodes itself, never looks it up.
        """
        self._step_kernel = implementation(step_one, *args)
        return self._step_kernel(*args)

    def _observe(self) -> np.ndarray:
        return self._observer.build()

    def _allow_wait_only(self) -> None:
        """The mask once the episode is over (terminated or truncated): WAIT, no bin.

        A valid mask for the action a vector env passes to a finished episode (it resets
        instead of carrying the action out); the size levels are left as they are.
        """
        self._mask[1 : self.config.n_bins + 1] = False
        self._mask[WAIT] = True

    def end_episode(self, info: dict[str, Any]) -> None:
        """End the episode now, as a wrapper that ends it early does (``EndWhenSettled``).

        ``step`` then refuses to go on until ``reset``, and ``info`` (the last step's) says so
        as a natural end's does: no deciding GPU, WAIT the only allowed bin, and the episode's
        metrics.
        """
        self._running_server()
        self._episode_over = True
        self._allow_wait_only()
        info["gpu"] = -1
        info["action_mask"] = self._mask.copy()
        info["episode_metrics"] = self.episode_metrics()
        self.last_info = info

    def _info(self, *, invalid: bool, applied: tuple[int, int] | None) -> dict[str, Any]:
        """The ``info`` of ``reset`` and of the Python step (``step`` builds its own, alike)."""
        s = self.server
        over = s.decision_gpu < 0 or self._episode_over
        if over:
            self._allow_wait_only()
        return {
            "time_s": s.now,
            "gpu": -1 if over else s.decision_gpu,
            "gpu_busy_until_s": s.busy_until(),
            "action_mask": self._mask.copy(),
            "invalid_action": invalid,
            "applied_action": np.array(applied if applied is not None else (-1, -1)),
        }
