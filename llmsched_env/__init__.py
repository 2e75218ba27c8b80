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

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

_ENVS = {
    "llmsched/BatchScheduling-v0": "llmsched_env.envs.batch_env:BatchSchedulingEnv",
    "llmsched/ContinuousBatching-v0": "llmsched_env.envs.iteration_env:ContinuousBatchingEnv",
}

#: Vector entry points: ``gym.make_vec`` builds these unless asked for "sync" or "async".
_VECTOR_ENVS = {
    "llmsched/BatchScheduling-v0": (
        "llmsched_env.envs.batch_vector_env:BatchSchedulingVectorEnv"
    ),
}

for _env_id, _entry_point in _ENVS.items():
    if _env_id not in registry:
        register(
            id=_env_id,
            entry_point=_entry_point,
            vector_entry_point=_VECTOR_ENVS.get(_env_id),
        )

ENV_IDS = tuple(_ENVS)

__all__ = ["ENV_IDS", "__version__"]
