"""Wrappers for the scheduling environments, named for what they change.

* :class:`FlattenAction` turns the ``MultiDiscrete`` action into one ``Discrete`` action whose
  mask is exact (joint): for DQN, and for the joint constraints that per-component masks cannot
  express (WAIT forbidden while each of its components alone is allowed; duplicate batch sizes).
* :class:`EndWhenSettled` ends a ``BatchScheduling-v0`` episode as soon as no action can change
  the rest of its return, paying that rest at once: for training, so that no samples are spent
  on decisions that cannot matter.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from llmsched_env.envs.batch_env import BatchSchedulingEnv
from llmsched_env.envs.common import one_integer
from llmsched_env.envs.rewards import REWARD_SHAPES


class FlattenAction(
    gym.ActionWrapper[np.ndarray, np.int64, np.ndarray], gym.utils.RecordConstructorArgs
):
    """Expose a ``MultiDiscrete(nvec)`` action as ``Discrete(prod(nvec))`` with exact masks.

    Flat action ``i`` is the multi-action ``np.unravel_index(i, nvec)`` (row-major, so for
    ``BatchScheduling-v0`` action 0 is WAIT and ``1 + ...`` follow bin by bin). ``action_masks()``
    returns the unwrapped env's ``joint_action_mask()`` flattened: every allowed flat action is
    valid. ``BatchScheduling-v0``'s allowed actions are also distinct; ``ContinuousBatching-v0``
    lists each prompt cap once where it does not matter, but levels that come to the same
    iteration (few sequences running, little to prefill) are separate actions.

    Example:
        >>> import gymnasium as gym
        >>> import llmsched_env
        >>> env = FlattenAction(gym.make("llmsched/BatchScheduling-v0", workload="demo2",
        ...                              arrival_rate=2.0, n_requests=20))
        >>> env.action_space
        Discrete(35)
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, spaces.MultiDiscrete):
            raise TypeError(f"FlattenAction needs a MultiDiscrete action space, got {space}")
        self.nvec = tuple(int(n) for n in space.nvec)
        self.action_space = spaces.Discrete(int(np.prod(self.nvec)))

    def action(self, action: Any) -> np.ndarray:
        """Map a flat action to the wrapped env's multi-action.

        Raises:
            ValueError: If ``action`` is not one integer (``7.0`` is 7; ``7.9``, ``"7"`` and
                ``True`` are refused, as the envs refuse them) in the flat space.
        """
        a = one_integer(action)
        if a is None:
            raise ValueError(
                f"action {action!r} must be one integer in [0, {self.action_space.n - 1}] "
                f"(Discrete({self.action_space.n}))"
            )
        if not 0 <= a < self.action_space.n:
            raise ValueError(
                f"action {action!r} is outside Discrete({self.action_space.n}): expected an "
                f"integer in [0, {self.action_space.n - 1}]"
            )
        return np.array(np.unravel_index(a, self.nvec), dtype=np.int64)

    def action_masks(self) -> np.ndarray:
        """Exact joint mask over the flat actions."""
        return self.env.unwrapped.joint_action_mask().ravel()


class EndWhenSettled(
    gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray], gym.utils.RecordConstructorArgs
):
    """End a ``BatchScheduling-v0`` episode once no action can change the rest of its return.

    Once every request has arrived and every waiting request's deadline has passed, the rest of
    an episode only serves requests that are already late: their misses are counted, a running
    batch's end is fixed when it starts, and under the ``"sla"`` and ``"goodput-tokens"`` rewards
    a late request earns nothing more, so the return can no longer change (see
    ``BatchServer.settled_counts``). This wrapper then ends the episode (``terminated=True``) and
    adds the rest of the return to that step's reward: an episode's return is exactly the
    unwrapped env's, under any policy, in fewer steps. Under overload most decisions of an
    unwrapped episode can fall in that tail; a learner would spend its samples on them.

    The step that ends a settled episode reports ``info["settled"] = True`` and, as every
    episode's last step does, ``info["episode_metrics"]``: here those of the episode so far, in
    which the late requests not yet served count as in the system. The episode is over as a
    natural end's is (``BatchSchedulingEnv.end_episode``): that info names no deciding GPU,
    its mask allows WAIT only, and ``step`` refuses to go on until ``reset``. Whole episodes
    are still what the evaluation harness runs: latency and goodput metrics need every request
    served.

    Args:
        env: A ``BatchScheduling-v0`` env (possibly wrapped) with a reward whose value settles
            when every waiting request is late.

    Raises:
        TypeError: If ``env`` is not a ``BatchScheduling-v0`` env.
        ValueError: If its reward can change after every waiting request is late (``"queue"``:
            a late request still costs time in the system).

    Example:
        >>> import gymnasium as gym
        >>> import llmsched_env
        >>> env = EndWhenSettled(gym.make("llmsched/BatchScheduling-v0", n_requests=200))
        >>> obs, info = env.reset(seed=0)
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        core = env.unwrapped
        if not isinstance(core, BatchSchedulingEnv):
            raise TypeError(
                f"EndWhenSettled needs a BatchScheduling-v0 env, got {type(core).__name__}"
            )
        shape = REWARD_SHAPES[core.config.reward]
        if not shape.settles_when_all_late:
            settling = sorted(n for n, f in REWARD_SHAPES.items() if f.settles_when_all_late)
            raise ValueError(
                f"EndWhenSettled needs a reward that settles when every waiting request is late "
                f"(one of {settling}), got reward={core.config.reward!r}"
            )
        self._core = core
        self._reward_shape = shape(core.config.sla_penalty, core.config.sla)

    @staticmethod
    def applies_to(env: gym.Env) -> bool:
        """Whether ``env`` can be wrapped: a ``BatchScheduling-v0`` env with a settling reward."""
        core = env.unwrapped
        return (
            isinstance(core, BatchSchedulingEnv)
            and REWARD_SHAPES[core.config.reward].settles_when_all_late
        )

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env; end the episode with the rest of its return if that is settled."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not (terminated or truncated):
            server = self._core.server
            final = server.settled_counts()
            if final is not None:
                shape = self._reward_shape
                reward = float(reward) + shape.objective(final) - shape.objective(server)
                terminated = True
                info["settled"] = True
                self._core.end_episode(info)
        return obs, reward, terminated, truncated, info
