"""llmsched-env: Gymnasium environments for learning to schedule LLM inference.

Importing the package registers the environments (in a process that has not imported it,
``gym.make("llmsched_env:llmsched/BatchScheduling-v0")`` imports it first):

* ``llmsched/BatchScheduling-v0``: request-level static batching (which bin, how large a batch);
* ``llmsched/ContinuousBatching-v0``: iteration-level continuous batching (how to split each
  iteration's token budget between decoding and prefilling);
* ``llmsched/Routing-v0``: request routing across continuous-batching replicas (which replica
  serves each arriving request).

Example:
    >>> import gymnasium as gym
    >>> import llmsched_env
    >>> env = gym.make("llmsched/BatchScheduling-v0", workload="demo2", arrival_rate=2.0,
    ...                n_requests=50)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape == env.observation_space.shape
    True
"""

from gymnasium.envs.registration import register
from gymnasium.envs.registration import registry as gym_registry

from llmsched_env.kinds import ENV_KINDS

__version__ = "0.1.0"


def register_envs() -> None:
    """Register every env id with Gymnasium (idempotent; importing the package calls it).

    It is also the package's ``gymnasium.envs`` plugin entry point (``pyproject.toml``).
    Gymnasium 1.x no longer loads plugins by itself, so a process that has not imported
    ``llmsched_env`` (a Ray worker, a fresh interpreter) names the module in the id instead:
    ``gym.make("llmsched_env:llmsched/BatchScheduling-v0")`` imports it, then makes the env.
    """
    for kind in ENV_KINDS.values():
        if kind.env_id not in gym_registry:
            register(
                id=kind.env_id,
                entry_point=kind.entry_point,
                vector_entry_point=kind.vector_entry_point,
            )


register_envs()

ENV_IDS = tuple(kind.env_id for kind in ENV_KINDS.values())

__all__ = ["ENV_IDS", "__version__", "register_envs"]
