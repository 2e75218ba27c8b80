"""The policy interface shared by every heuristic and, through an adapter, by trained agents.

A policy is built from an environment (``from_env``), is told when an episode starts
(``reset``), and maps each observation and ``info`` to an action in the env's own action space
(``act``). Heuristics read what they need from the documented ``info`` fields and the env's public
configuration (``env.unwrapped.config`` and the attributes its docstring lists), never from private
attributes, so a heuristic and a learned agent go through exactly the same code path.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np


class Policy(ABC):
    """A scheduling policy over ``BatchScheduling-v0`` or ``ContinuousBatching-v0``.

    Subclasses set :attr:`name` and implement :meth:`act`; stateful ones also override
    :meth:`reset`.
    """

    #: Short name used in tables and on the command line.
    name: str = "policy"
    #: Whether :meth:`act` reads its ``obs`` argument. The heuristics decide from ``info`` and
    #: the env's queries (``queue_snapshot()`` ...), so a caller that only drives a policy may
    #: pass ``None`` instead of building an observation (``Routing-v0``'s replicas do).
    reads_observation: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Guard every subclass's ``act`` so a missing ``info`` fails clearly."""
        super().__init_subclass__(**kwargs)
        if "act" in cls.__dict__ and not getattr(cls.__dict__["act"], "_checks_arguments", False):
            cls.act = _checked_act(cls.__dict__["act"])  # type: ignore[method-assign]

    def __init__(self, env: gym.Env) -> None:
        self.env = env.unwrapped
        #: The observations of ``env`` as given (a wrapper may stack or extend the env's own):
        #: what :meth:`predict` tells one observation from a batch of them by.
        self.observation_space = env.observation_space

    @classmethod
    def from_env(cls, env: gym.Env, **kwargs: Any) -> Policy:
        """Build the policy for ``env`` (a ``gym.make`` result or the bare env)."""
        return cls(env, **kwargs)

    def reset(self) -> None:  # noqa: B027 (an optional hook, empty by default)
        """Forget per-episode state; called after every ``env.reset``."""

    @abstractmethod
    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Return the action for the current decision.

        Args:
            obs: The observation returned by the env.
            info: The ``info`` returned with it.
        """

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Stable-baselines3's ``predict``, so SB3 tools (``evaluate_policy``) can run a heuristic.

        A heuristic needs the env's ``info``, which SB3's vector envs do not pass to
        ``predict``; it reads the env's :attr:`last_info` instead, so the policy must be driven by
        the env it was built from, one env at a time.

        Args:
            observation: One observation of the env the policy was built from (as its wrappers
                give it: stacked, extended or a dict), or a batch of one (from a vector env of
                one env).
            state: Recurrent state; heuristics keep none and return it unchanged.
            episode_start: Whether each env starts an episode; when true the policy is reset.
            deterministic: Ignored (a randomised heuristic draws from its own seeded generator).
            action_masks: Ignored: a heuristic acts within the env's own mask (sb3-contrib's
                masked ``evaluate_policy`` passes it).

        Returns:
            The action (batched like ``observation``) and ``state``.

        Raises:
            ValueError: If the batch holds more than one observation, or ``observation`` is
                neither one observation nor a batch of them.
            RuntimeError: If the env has not been reset.
        """
        size = _batch_size(observation, self.observation_space)
        if size is not None and size != 1:
            raise ValueError(
                f"a heuristic acts for one env at a time, got a batch of {size} "
                "observations; build one policy per env"
            )
        if self.env.last_info is None:
            raise RuntimeError("call env.reset() before predict()")
        if episode_start is not None and np.asarray(episode_start).reshape(-1)[0]:
            self.reset()
        one = observation if size is None else _first(observation)
        if self.reads_observation and np.shape(one) != self.env.observation_space.shape:
            raise ValueError(
                f"{type(self).__name__} acts on the env's own observations (shape "
                f"{self.env.observation_space.shape}), got one of shape {np.shape(one)}: give "
                "predict the observation of the env it was built from, not a wrapper's"
            )
        action = self.act(np.asarray(one) if isinstance(one, list) else one, self.env.last_info)
        return (action if size is None else action[None]), state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _checked_act(act: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Wrap ``act`` to refuse an ``info`` that is not a dict with a clear TypeError.

    Heuristics read ``info`` (queues, GPU states), so ``act(None, None)`` would otherwise fail
    deep inside with an unrelated ``NoneType`` error. The observation is not checked: the
    heuristics do not read it (unit tests pass ``None``).
    """

    @functools.wraps(act)
    def checked(self: Policy, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        if not isinstance(info, dict):
            raise TypeError(
                f"{type(self).__name__}.act: act(obs, info) needs the observation and the info "
                "dict that env.reset() or env.step() returned, got "
                f"obs={type(obs).__name__}, info={type(info).__name__}"
            )
        return act(self, obs, info)

    checked._checks_arguments = True  # type: ignore[attr-defined]
    return checked


def _batch_size(observation: Any, space: gym.Space) -> int | None:
    """``None`` if ``observation`` is one observation of ``space``, else the size of its batch.

    A dict or tuple observation is judged by its first entry.

    Raises:
        ValueError: If it is neither one observation nor a batch of them.
    """
    leaf, leaf_space = observation, space
    while isinstance(leaf_space, gym.spaces.Dict | gym.spaces.Tuple):
        key = next(iter(leaf_space.spaces)) if isinstance(leaf_space, gym.spaces.Dict) else 0
        try:
            leaf, leaf_space = leaf[key], leaf_space[key]
        except (KeyError, IndexError, TypeError):
            raise ValueError(
                f"observation {type(observation).__name__} does not match the observation "
                f"space {space}"
            ) from None
    shape, expected = np.shape(leaf), leaf_space.shape
    if shape == expected:
        return None
    if expected is not None and len(shape) == len(expected) + 1 and shape[1:] == expected:
        return int(shape[0])
    raise ValueError(
        f"observation of shape {shape} is neither one observation of the policy's env (shape "
        f"{expected}) nor a batch of them"
    )


def _first(batch: Any) -> Any:
    """The first observation of a batch (of arrays, or of dicts or tuples of arrays)."""
    if isinstance(batch, dict):
        return {key: _first(value) for key, value in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_first(value) for value in batch)
    return np.asarray(batch)[0]
