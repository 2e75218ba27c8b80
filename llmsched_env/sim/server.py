"""What every simulated server offers the environments, rewards, metrics and scripts.

A server stops at scheduling decisions: :meth:`Server.advance` processes events until one is
due, a decision method of the concrete server (``decide``/``dispatch`` for static batches,
``run_iteration`` for continuous batching) or :meth:`Server.wait` makes it, and read-only
attributes and questions describe the state in between. The request-level
:class:`~llmsched_env.sim.batch_server.BatchServer` (compiled state), the iteration-level
:class:`~llmsched_env.sim.iteration_server.IterationServer` (on the Python
:class:`~llmsched_env.sim.engine.Engine`) and its compiled form
:class:`~llmsched_env.sim.compiled_iteration_server.CompiledIterationServer` satisfy this
protocol; code that works with any of them is written against it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from llmsched_env.metrics import SLATargets
from llmsched_env.sim.records import RequestRecords
from llmsched_env.workload import Workload


@runtime_checkable
class Server(Protocol):
    """A discrete-event server that stops at scheduling decisions.

    Attributes:
        workload: The requests of the run, sorted by arrival.
        n_gpus: Number of identical GPUs.
        n_requests: Number of requests in the workload.
        now: Current simulated time in seconds.
        n_arrived: Requests arrived so far (a prefix of the arrival order).
        n_completed: Requests completed so far.
        n_rejected: Requests rejected at arrival so far.
        n_on_time: Requests that met their SLA targets so far.
        on_time_output_tokens: Output tokens of those requests.
        in_system_integral: Time integral of the requests in the system, in request-seconds.
        decision_gpu: The GPU that must decide now, -1 when no decision is due.
    """

    workload: Workload
    n_gpus: int
    n_requests: int

    @property
    def now(self) -> float: ...  # noqa: D102

    @property
    def n_arrived(self) -> int: ...  # noqa: D102

    @property
    def n_completed(self) -> int: ...  # noqa: D102

    @property
    def n_rejected(self) -> int: ...  # noqa: D102

    @property
    def n_on_time(self) -> int: ...  # noqa: D102

    @property
    def on_time_output_tokens(self) -> int: ...  # noqa: D102

    @property
    def in_system_integral(self) -> float: ...  # noqa: D102

    @property
    def decision_gpu(self) -> int: ...  # noqa: D102

    @property
    def sla_misses(self) -> int:
        """Missed SLA targets so far (deadlines passed unmet, rejections)."""
        ...

    @property
    def records(self) -> RequestRecords:
        """Per-request event times and states of the run so far, in request order."""
        ...

    @property
    def done(self) -> bool:
        """Whether every request has completed or been rejected."""
        ...

    def advance(self) -> bool:
        """Process events until a decision is due; ``False`` once nothing is left to happen."""
        ...

    def wait(self) -> None:
        """Let the deciding GPU idle until the next event (the WAIT decision)."""
        ...

    def can_wait(self) -> bool:
        """Whether WAIT is safe: an arrival or the end of GPU work is still ahead."""
        ...

    def summary(self, sla: SLATargets | None = None, warmup_s: float = 0.0) -> dict[str, float]:
        """The metrics of the run so far (see :func:`llmsched_env.metrics.summarize`)."""
        ...
