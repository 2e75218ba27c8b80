"""The discrete-event simulation core: servers that stop at every scheduling decision."""

from llmsched_env.sim.batch_server import BatchServer, FinishedBatch
from llmsched_env.sim.engine import Engine, simulate
from llmsched_env.sim.iteration_server import IterationServer
from llmsched_env.sim.records import STATUS_NAMES, RejectReason, RequestRecords
from llmsched_env.sim.server import Server

__all__ = [
    "STATUS_NAMES",
    "BatchServer",
    "Engine",
    "FinishedBatch",
    "IterationServer",
    "RejectReason",
    "RequestRecords",
    "Server",
    "simulate",
]
