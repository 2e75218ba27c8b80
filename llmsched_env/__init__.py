"""llmsched-env: Gymnasium environments for learning to schedule LLM inference.

Importing the package registers the environments:

* ``llmsched/BatchScheduling-v0``: request-level static batching (which bin, how large a batch);
* ``llmsched/ContinuousBatching-v0``: iteration-level continuous batching (how to split each
  iteration's token budget between decoding and prefilling).

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

for _kind in ENV_KINDS.values():
    if _kind.env_id not in gym_registry:
        register(id=_kind.env_id, entry_point=_kind.entry_point)

ENV_IDS = tuple(kind.env_id for kind in ENV_KINDS.values())

__all__ = ["ENV_IDS", "__version__"]
