"""Replay a recorded vLLM run's requests through ``ContinuousBatching-v0``.

The run's requests become a fixed :class:`~llmsched_env.workload.Workload` (arrival =
``queued_ts`` minus the first ``queued_ts``, prompt = ``input_toks``, output and predicted output
= ``output_toks``), served through ``env.reset(options={"workload": ...})`` by a baseline policy
until every request has finished. The simulated first-token and completion times come from the
server's request records; the number of running and waiting requests is sampled at every
decision and read at the run's tick, like the engine's own ``timeseries.csv``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pandas as pd

from llmsched_env.validation.latencies import request_latencies_ms
from llmsched_env.validation.prompt_hashes import (
    PromptHashes,
    attach_prompt_hashes,
    shipped_prompt_hashes,
)
from llmsched_env.validation.runs import VllmRun
from llmsched_env.validation.settings import ENV_ID, RunSettings, run_settings
from llmsched_env.workload import Workload


@dataclass(frozen=True, eq=False)
class ReplayResult:
    """What a replay of one run produced.

    Per-request arrays are in the run's request order (``run.requests`` rows); times are seconds
    from the run's first arrival.

    Attributes:
        run: The run's name.
        settings: The settings it was replayed with.
        request_id: The requests' ids.
        arrival_s: Arrival times.
        first_token_s: Simulated first-token times.
        completion_s: Simulated last-token times.
        output_tokens: Output tokens per request.
        timeseries: Simulated state at each tick: ``t`` (s), ``running`` (requests decoding or
            prefilling, all replicas) and ``waiting`` (requests not yet admitted).
        n_decisions: Scheduling decisions (env steps) taken.
        wall_time_s: Wall-clock time of the replay (env reset and every step, not building the
            env), from ``time.perf_counter``.
        metrics: The episode's ``episode_metrics`` (preemptions, prefix cache hits, ...).
    """

    run: str
    settings: RunSettings
    request_id: np.ndarray
    arrival_s: np.ndarray
    first_token_s: np.ndarray
    completion_s: np.ndarray
    output_tokens: np.ndarray
    timeseries: pd.DataFrame
    n_decisions: int
    wall_time_s: float
    metrics: Mapping[str, float] = field(default_factory=dict)

    def latencies_ms(self) -> pd.DataFrame:
        """Simulated TTFT, TPOT and E2E per request (see ``request_latencies_ms``)."""
        return request_latencies_ms(
            self.arrival_s, self.first_token_s, self.completion_s, self.output_tokens
        )


def run_workload(
    run: VllmRun, prompt_hashes: PromptHashes | None = None
) -> tuple[Workload, np.ndarray]:
    """The run's requests as a workload sorted by arrival.

    Requests with equal ``queued_ts`` keep their file order (stable sort).

    Args:
        run: The run.
        prompt_hashes: The prefix block hashes of the run's prompts (for prefix caching), from
            ``shipped_prompt_hashes``; ``None`` for none.

    Returns:
        The workload, and ``order``: workload request ``i`` is ``run.requests`` row ``order[i]``.

    Raises:
        ValueError: If ``prompt_hashes`` do not match the run's requests (count or lengths).
    """
    requests = run.requests
    queued = requests["queued_ts"].to_numpy()
    order = np.argsort(queued, kind="stable")
    output = requests["output_toks"].to_numpy()[order]
    workload = Workload(
        arrival_s=queued[order] - queued[order[0]],
        prompt_tokens=requests["input_toks"].to_numpy()[order],
        output_tokens=output,
        predicted_output_tokens=output,
        name=run.name,
    )
    if prompt_hashes is not None:
        workload = attach_prompt_hashes(workload, order, run, prompt_hashes)
    return workload, order


def replay(run: VllmRun, settings: RunSettings | None = None, *, seed: int = 0) -> ReplayResult:
    """Serve the run's requests in ``ContinuousBatching-v0`` with its settings, to the end.

    Args:
        run: A run from ``load_run`` (or ``run.head(n)`` for a quick subset).
        settings: How to replay it; by default ``run_settings(run.name)``. With
            ``prefix_caching`` in its ``env_kwargs``, the workload gets the run's shipped prompt
            hashes (``settings.prompt_hashes``), so prompts share cached prefixes.
        seed: The env's seed (matters only for stochastic latency models).

    Returns:
        Per-request simulated times, the simulated time series and the wall time.

    Raises:
        ValueError: If ``settings`` belongs to another run, or a request of the run does not get
            both simulated times (for example rejected because its prompt and output exceed
            the KV capacity): the message names the requests.
        RuntimeError: If the replayed workload does not match the run's requests.
    """
    from baselines import make_policy

    if settings is None:
        settings = run_settings(run.name)
    if settings.run != run.name:
        raise ValueError(f"settings are for run {settings.run!r}, not for run {run.name!r}")
    hashes = None
    if settings.prefix_caching and settings.prompt_hashes is not None:
        hashes = shipped_prompt_hashes(settings.prompt_hashes)
    workload, order = run_workload(run, hashes)
    env = gym.make(ENV_ID, **settings.make_kwargs(len(workload)))
    start = time.perf_counter()
    try:
        obs, info = env.reset(seed=seed, options={"workload": workload})
        policy = make_policy(settings.policy, env)
        policy.reset()
        # The harness reads the server's state and records to measure it; the policy sees only
        # observations and info, like any other.
        server = env.unwrapped.server
        times, busy, waiting = [], [], []
        terminated = truncated = False
        while not (terminated or truncated):
            times.append(server.now)
            busy.append(
                sum(r.size for r in server.running) + sum(len(p) for p in server.prefilling)
            )
            waiting.append(server.n_waiting)
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        records = server.records
    finally:
        env.close()
    wall_time_s = time.perf_counter() - start
    if records.workload is not workload or len(records) != len(run):
        raise RuntimeError(
            f"the replay served {len(records)} requests, the run {run.name!r} has {len(run)}"
        )
    _check_every_request_finished(run, order, records.first_token_s, records.completion_s)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    end_s = float(np.max(records.completion_s))
    # The simulated state ends empty after the last completion.
    times.append(end_s)
    busy.append(0)
    waiting.append(0)
    return ReplayResult(
        run=run.name,
        settings=settings,
        request_id=run.requests["request_id"].to_numpy(),
        arrival_s=workload.arrival_s[inverse],
        first_token_s=records.first_token_s[inverse].copy(),
        completion_s=records.completion_s[inverse].copy(),
        output_tokens=workload.output_tokens[inverse],
        timeseries=sample_at_ticks(
            np.array(times), np.array(busy), np.array(waiting), run.tick_s, end_s, run
        ),
        n_decisions=len(times) - 1,
        wall_time_s=wall_time_s,
        metrics=info["episode_metrics"],
    )


def _check_every_request_finished(
    run: VllmRun, order: np.ndarray, first_token_s: np.ndarray, completion_s: np.ndarray
) -> None:
    unfinished = ~(np.isfinite(first_token_s) & np.isfinite(completion_s))
    if unfinished.any():
        ids = run.requests["request_id"].to_numpy()[order[unfinished]]
        raise ValueError(
            f"run {run.name!r}: {int(unfinished.sum())} of {len(run)} requests got no simulated "
            f"first token or completion (rejected at arrival, e.g. prompt + output above the KV "
            f"capacity): {ids[:10].tolist()}"
        )


def sample_at_ticks(
    times_s: np.ndarray,
    running: np.ndarray,
    waiting: np.ndarray,
    tick_s: float,
    end_s: float,
    run: VllmRun | None = None,
) -> pd.DataFrame:
    """Read a step function of (running, waiting) at every tick.

    The value at tick ``t`` is the latest sample taken at a time ``<= t`` (0 before the first).
    Ticks run ``tick_s, 2 tick_s, ...`` up to the later of ``end_s`` and the last tick of the
    run's own time series, so both series cover the same span.

    Args:
        times_s: Sample times, non-decreasing.
        running: Running requests at each sample.
        waiting: Waiting requests at each sample.
        tick_s: Sampling period (s).
        end_s: When the simulated run ended.
        run: The recorded run, whose ``timeseries`` sets the last tick when it is longer.

    Returns:
        Columns ``t, running, waiting``.

    Example:
        >>> sample_at_ticks([0.5, 1.5, 2.0], [1, 3, 0], [2, 0, 0], 1.0, 2.0).values.tolist()
        [[1.0, 1.0, 2.0], [2.0, 0.0, 0.0]]
    """
    last = end_s
    if run is not None and len(run.timeseries):
        last = max(last, float(run.timeseries["t"].iloc[-1]))
    ticks = tick_s * np.arange(1, math.ceil(last / tick_s - 1e-9) + 1)
    index = np.searchsorted(np.asarray(times_s), ticks, side="right") - 1
    taken = index >= 0
    pick = np.where(taken, index, 0)
    return pd.DataFrame(
        {
            "t": ticks,
            "running": np.where(taken, np.asarray(running)[pick], 0),
            "waiting": np.where(taken, np.asarray(waiting)[pick], 0),
        }
    )
