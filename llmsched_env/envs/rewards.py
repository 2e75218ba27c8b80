"""Reward shapes, selectable by name through the environments' ``reward`` argument.

Every shape is the per-step change of a cumulative objective of the run, so the return of an
episode is exactly that objective at its end (a telescoping sum), and rewards are paid at the step
during which the underlying events happened.

* ``"sla"`` (default): ``on_time - sla_penalty * misses``. Batch level: +1 per request completed
  within its deadline, ``-sla_penalty`` when a deadline passes unfinished (a rejected request
  counts as a miss when it is rejected). Iteration level: +1 per request finished meeting both its
  TTFT and TBT targets, ``-sla_penalty`` per TTFT miss and per TBT miss.
* ``"goodput-tokens"``: output tokens of on-time requests, in thousands (no penalty): rewards
  serving many tokens within the SLA, whatever happens to late requests.
* ``"queue"``: minus the time integral of the number of requests in the system, in request x
  SLA units (request-seconds divided by the latency target). By Little's law its return is minus
  the total time requests spend in the system: it rewards low mean latency, not deadlines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class SLACounters(Protocol):
    """What a server exposes for reward computation."""

    n_on_time: int
    on_time_output_tokens: int
    in_system_integral: float

    @property
    def sla_misses(self) -> int:
        """Missed targets so far (deadlines passed unfinished, TTFT and TBT misses)."""
        ...


class RewardShape:
    """Pays the per-step change of a cumulative objective of the run.

    Args:
        sla_penalty: Reward lost per missed target.
        time_scale_s: Latency target used to scale time-based objectives.
    """

    name = ""
    #: Whether a request whose deadline has passed adds nothing more to the objective once its
    #: miss is counted, so that the objective's final value is known as soon as every waiting
    #: request is late and the running work's outcome is fixed (what
    #: :class:`~llmsched_env.envs.wrappers.EndWhenSettled` needs).
    settles_when_all_late = False

    def __init__(self, sla_penalty: float, time_scale_s: float) -> None:
        self.sla_penalty = sla_penalty
        self.time_scale_s = time_scale_s
        self._last = 0.0

    def objective(self, server: SLACounters) -> float:
        """The cumulative objective of the run so far."""
        raise NotImplementedError

    def reset(self, server: SLACounters) -> None:
        """Start a new episode on ``server``."""
        self._last = self.objective(server)

    def __call__(self, server: SLACounters) -> float:
        """Reward earned since the previous call."""
        return self.take(self.objective(server))

    def take(self, value: float) -> float:
        """Reward earned since the previous call, given the objective's value now.

        For callers that compute the objective themselves (a compiled step).
        """
        reward = value - self._last
        self._last = value
        return float(reward)


class SLAReward(RewardShape):
    """``on_time - sla_penalty * misses``."""

    name = "sla"
    settles_when_all_late = True

    def objective(self, server: SLACounters) -> float:  # noqa: D102
        return server.n_on_time - self.sla_penalty * server.sla_misses


class GoodputTokensReward(RewardShape):
    """Output tokens of on-time requests, in thousands."""

    name = "goodput-tokens"
    settles_when_all_late = True

    def objective(self, server: SLACounters) -> float:  # noqa: D102
        return server.on_time_output_tokens / 1000.0


class QueueReward(RewardShape):
    """Minus the time-integrated number of requests in the system, in request x SLA units."""

    name = "queue"

    def objective(self, server: SLACounters) -> float:  # noqa: D102
        return -server.in_system_integral / self.time_scale_s


REWARD_SHAPES: dict[str, Callable[[float, float], RewardShape]] = {
    SLAReward.name: SLAReward,
    GoodputTokensReward.name: GoodputTokensReward,
    QueueReward.name: QueueReward,
}
