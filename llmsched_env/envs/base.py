"""The skeleton every scheduling env shares: set-up, reset preamble, step tail, masks, metrics.

An env of this package is a Gymnasium env over a discrete-event server (``self.server``, built by
``reset``) that stops at each scheduling decision. What differs between envs (the server, the
observation, the action and its mask, the ``info`` contents) is written in the env; what is the
same is written here once:

* construction from a validated config (:meth:`SchedulingEnv._set_up`): memory check, workload
  source, KV capacity, reward shape, empty episode state;
* the reset preamble (:meth:`SchedulingEnv._new_episode`) and the first decision
  (:meth:`SchedulingEnv._first_decision`);
* the step tail (:meth:`SchedulingEnv._finish_step`): reward, termination, truncation at
  ``max_steps``, the final ``episode_metrics``, ``last_info``;
* ``action_masks``, ``episode_metrics``, ``request_records`` and the ``render`` frame.

A subclass sets ``config_class`` and implements ``_observe``, ``_info``, ``_sla_targets``,
``_outcome_text``, ``_render_lines`` and ``_bars``, and keeps ``self._mask`` (the per-component
action mask) current.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np

from llmsched_env.arguments import ArgumentTypeError
from llmsched_env.envs.common import (
    RequestRecordsMixin,
    check_episode_size,
    episode_arrival_rate,
    episode_workload,
    reset_options,
)
from llmsched_env.envs.footprint import check_episode_fits, prefix_hash_bytes_per_request
from llmsched_env.envs.rendering import bars_image
from llmsched_env.envs.rewards import REWARD_SHAPES
from llmsched_env.latency import make_kv_memory
from llmsched_env.metrics import SLATargets
from llmsched_env.registry import resolve
from llmsched_env.sim.records import RejectReason
from llmsched_env.workload import MAX_ARRIVAL_S, Workload, make_workload_source
from llmsched_env.workload.requests import ArrivalSpanError

T = TypeVar("T")

#: Per reason a request is rejected at arrival, what in the env's settings causes it.
_REJECTION_CAUSES: dict[RejectReason, Callable[[Any], str]] = {
    RejectReason.EXCEEDS_KV_CAPACITY: lambda env: (
        f"its prompt and output need more KV memory than a GPU has "
        f"({_token_counts(env.kv_capacity_tokens)} tokens, kv_memory={env.config.kv_memory!r})"
    ),
    RejectReason.PROMPT_EXCEEDS_TOKEN_BUDGET: lambda env: (
        (
            "its prompt plus output tokens less one (a recomputation after a preemption of "
            "paged KV memory) exceed"
            if getattr(env.config, "kv_allocation", "paged") == "paged"
            else "its prompt exceeds"
        )
        + f" an iteration's token budget (max_tokens={env.config.max_tokens}) and chunked "
        "prefill is off (chunk_size=None)"
    ),
}


def _token_counts(capacity: int | tuple[int, ...]) -> str:
    """A KV capacity for a message: one count, or one per replica."""
    if isinstance(capacity, tuple):
        return "per replica " + ", ".join(f"{c:,}" for c in capacity)
    return f"{capacity:,}"


def built_setting(owner: str, name: str, value: Any, build: Callable[[Any], T]) -> T:
    """``build(value)``: the object a setting names, its errors naming the env and the setting.

    The builders (``make_kv_memory``, ``make_batch_latency``, ...) know nothing of the env that
    calls them, so ``kv_memory=0`` would otherwise be reported as ``KVMemory``'s
    ``capacity_tokens``.

    Raises:
        ArgumentTypeError: If ``build`` raises a ``TypeError``.
        ValueError: If it raises a ``ValueError``.
    """
    try:
        return build(value)
    except TypeError as error:
        raise ArgumentTypeError(f"{owner}: {name}={value!r}: {error}") from None
    except ValueError as error:
        raise ValueError(f"{owner}: {name}={value!r}: {error}") from None


class SchedulingEnv(RequestRecordsMixin, gym.Env[np.ndarray, np.ndarray]):
    """Base class of the scheduling envs (see the module docstring for what it provides).

    Attributes:
        config_class: The frozen config dataclass whose fields are the env's keyword arguments.
        config: The env's validated configuration.
        server: The episode's simulated server (``None`` before the first ``reset``).
        last_info: The latest ``info`` returned by ``reset`` or ``step`` (``None`` before
            ``reset``).
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    config_class: ClassVar[type]

    server: Any
    _mask: np.ndarray

    def _set_up(self, arguments: dict[str, Any], bytes_per_request: int) -> Any:
        """Validate the constructor's arguments and build what every env needs from them.

        Args:
            arguments: The constructor's keyword arguments by name (``locals()`` of
                ``__init__``); every field of ``config_class`` must be among them.
            bytes_per_request: Peak memory of one request of an episode
                (:mod:`llmsched_env.envs.footprint`).

        Returns:
            The validated config (also stored as ``self.config``).
        """
        cfg = self.config_class.from_arguments(arguments)
        check_episode_fits(cfg.owner, cfg.n_requests, bytes_per_request)
        self.config = cfg
        self.render_mode = cfg.render_mode
        self.source = make_workload_source(cfg.workload)
        check_episode_size(cfg.owner, self.source, cfg.n_requests)
        #: Peak bytes per request the workload's prefix hashes add (0 without hashes).
        self._hash_bytes_per_request = prefix_hash_bytes_per_request(self.source, cfg.n_requests)
        if self._hash_bytes_per_request:
            per_request = bytes_per_request + self._hash_bytes_per_request
            check_episode_fits(cfg.owner, cfg.n_requests, per_request)
        kv_memory = built_setting(cfg.owner, "kv_memory", cfg.kv_memory, make_kv_memory)
        self.kv_capacity_tokens = kv_memory.capacity_tokens
        self._reward_factory = resolve("reward shape", cfg.reward, REWARD_SHAPES)
        self.server = None
        self._observer: Any = None
        self._steps = 0
        self._episode_over = False
        self.last_info: dict[str, Any] | None = None
        self._queue_columns: tuple[np.ndarray, ...] = ()
        return cfg

    # ------------------------------------------------------------------ episode skeleton
    def _new_episode(self, seed: int | None, options: dict[str, Any] | None) -> Workload:
        """Seed the env's generator and draw the episode's requests (``reset``'s preamble).

        No episode runs until the new one reaches its first decision: a ``reset`` that fails
        (bad options, an episode without a decision) leaves nothing ``step`` may act on.
        """
        return self._draw_workload(self._seed_episode(seed, options))

    def _draw_workload(self, options: dict[str, Any]) -> Workload:
        """The new episode's requests, drawn as ``options`` ask (after :meth:`_seed_episode`)."""
        try:
            return episode_workload(
                self.source,
                self.config.n_requests,
                self.np_random,
                self.episode_arrival_rate_rps,
                options,
            )
        except ArrivalSpanError as error:
            raise self._span_error_named(error) from None

    def _seed_episode(self, seed: int | None, options: dict[str, Any] | None) -> dict[str, Any]:
        """``reset``'s preamble before the requests are drawn: seed, options, arrival rate.

        Ends the running episode, seeds the generator, checks the options and sets
        :attr:`episode_arrival_rate_rps`; returns the options as a dict.
        """
        self._episode_over = True
        gym.Env.reset(self, seed=seed)
        options = reset_options(options)
        # The configured rate, or options["load"] times the capacity estimate.
        self.episode_arrival_rate_rps = episode_arrival_rate(
            options,
            self.arrival_rate_rps,
            self.capacity_rps,
            self.config.owner,
            self.config.n_requests,
        )
        return options

    def _span_error_named(self, error: ArrivalSpanError) -> ArrivalSpanError:
        """``error`` of the requests' draw, naming the episode's rate and what to change.

        The rate passed the constructor's check on the average span; a window or draw can
        still arrive over longer.
        """
        return ArrivalSpanError(
            f"{self.config.owner}: at {self.episode_arrival_rate_rps:.4g} requests/s (from "
            f"arrival_rate, load or the load option) this episode's "
            f"{self.config.n_requests} requests arrive over more than {MAX_ARRIVAL_S:.0e} s, "
            f"where event times lose their resolution; raise the rate or lower n_requests "
            f"({error})"
        )

    def _first_decision(self, workload: Workload) -> None:
        """Advance the new episode to its first decision.

        Raises:
            ValueError: If the episode has none (every request rejected at arrival); the
                message counts the reasons and names the settings behind them.
        """
        self._steps = 0
        if not self.server.advance():
            raise self._no_decision_error(len(workload))
        self._episode_over = False

    def _no_decision_error(self, n_requests: int) -> ValueError:
        """The error of an episode without a decision: its ``n_requests`` requests rejected.

        The message counts the rejections by reason and names the settings behind them.
        """
        reasons = np.bincount(self.server.records.reject_reason, minlength=len(RejectReason))
        why = "; ".join(
            f"{int(count)} because {_REJECTION_CAUSES[RejectReason(code)](self)}"
            for code, count in enumerate(reasons)
            if count and code != RejectReason.NONE
        )
        return ValueError(
            f"{self.config.owner}: the episode has no scheduling decision: every one of its "
            f"{n_requests} requests was rejected at arrival ({why})"
        )

    def _running_server(self) -> Any:
        """The server of the running episode (what ``step`` acts on).

        Raises:
            RuntimeError: Before ``reset`` or after the episode ended.
        """
        server = self.server
        if server is None or self._episode_over:
            raise RuntimeError("call reset() before step() (the episode is over or not started)")
        return server

    def _finish_step(
        self, decision_due: bool, invalid: bool, applied: tuple[int, ...]
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """The tail of ``step``: count the step, collect the reward, end or truncate the episode.

        Args:
            decision_due: Whether the server stopped at a next decision (else the episode is
                over: termination).
            invalid: Whether the agent's action was forbidden by the mask.
            applied: The action carried out.

        Returns:
            ``step``'s result: observation, reward, terminated, truncated, info.
        """
        reward = self._reward(self.server)
        terminated, truncated = self._count_step(decision_due)
        info = self._info(invalid=invalid, applied=applied)
        if self._episode_over:
            info["episode_metrics"] = self.episode_metrics()
        self.last_info = info
        return self._observe(), float(reward), terminated, truncated, info

    def _count_step(self, decision_due: bool) -> tuple[bool, bool]:
        """Count a step and say whether it ended the episode: ``(terminated, truncated)``.

        Sets ``_episode_over`` before the step's ``info`` is made: once the episode is over
        (truncated too) no decision is due.
        """
        self._steps += 1
        terminated = not decision_due
        max_steps = self.config.max_steps
        truncated = not terminated and max_steps is not None and (self._steps >= max_steps)
        self._episode_over = terminated or truncated
        return terminated, truncated

    # ------------------------------------------------------------------ shared public API
    def action_masks(self) -> np.ndarray:
        """Per-component masks, concatenated, in the form sb3-contrib's MaskablePPO expects."""
        if self.server is None:
            raise RuntimeError("call reset() before action_masks()")
        return self._mask.copy()

    def episode_metrics(self) -> dict[str, float]:
        """Metrics of the episode so far (see :func:`llmsched_env.metrics.summarize`)."""
        if self.server is None:
            raise RuntimeError("call reset() first")
        return self.server.summary(self._sla_targets())

    def render(self) -> str | np.ndarray | None:
        """Snapshot of the server: text (``"ansi"``) or bars in an RGB array (``"rgb_array"``).

        The text starts with the time and the request counts, then the env's own lines; the
        image's bars are the env's (see its ``_bars``).
        """
        if self.render_mode is None or self.server is None:
            return None
        if self.render_mode == "rgb_array":
            return bars_image(*self._bars())
        s = self.server
        header = (
            f"t={s.now:10.3f}s  arrived {s.n_arrived}/{s.n_requests}  completed {s.n_completed}  "
            f"rejected {s.n_rejected}  on-time {s.n_on_time}  {self._outcome_text()}"
        )
        return "\n".join([header, *self._render_lines()]) + "\n"

    # ------------------------------------------------------------------ subclass hooks
    def _observe(self) -> np.ndarray:
        raise NotImplementedError

    def _info(self, *, invalid: bool, applied: tuple[int, ...] | None) -> dict[str, Any]:
        raise NotImplementedError

    def _sla_targets(self) -> SLATargets:
        """The targets the episode's metrics are measured against."""
        raise NotImplementedError

    def _outcome_text(self) -> str:
        """The end of the render header: the counts of missed targets."""
        raise NotImplementedError

    def _render_lines(self) -> list[str]:
        """The text render's lines after the header."""
        raise NotImplementedError

    def _bars(self) -> tuple[list[float], list[int]]:
        """The image render's bar heights (fractions) and colour groups."""
        raise NotImplementedError
