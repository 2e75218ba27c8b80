"""The Gymnasium environments and their wrappers."""

from llmsched_env.envs.batch_env import BatchSchedulingEnv
from llmsched_env.envs.common import InvalidActionError
from llmsched_env.envs.iteration_env import ContinuousBatchingEnv
from llmsched_env.envs.mixture import BatchMixtureEnv
from llmsched_env.envs.routing_env import RoutingEnv
from llmsched_env.envs.wrappers import EndWhenSettled, FlattenAction

__all__ = [
    "BatchMixtureEnv",
    "BatchSchedulingEnv",
    "ContinuousBatchingEnv",
    "EndWhenSettled",
    "FlattenAction",
    "InvalidActionError",
    "RoutingEnv",
]
