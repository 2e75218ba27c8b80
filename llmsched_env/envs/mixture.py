"""A training distribution over ``BatchScheduling-v0`` workloads, loads and arrival burstiness.

:class:`BatchMixtureEnv` holds one :class:`~llmsched_env.envs.batch_env.BatchSchedulingEnv` per
component workload, each calibrated on its own history (bin edges, capacity estimate, service
estimates), and at every ``reset`` draws from its own seeded generator a component, a load and
an arrival burstiness, then runs that episode in the component. An agent trained on it sees
many traces' length mixes at loads around and above capacity, through one observation whose
entries are normalised by quantities each env knows (the deadline, the largest batch, the
calibration's length scale and capacity estimate, the KV memory), so that no entry carries a
trace's absolute scale. Evaluation on workloads held out from the components then measures how
well the agent generalises (``agents.scenarios``: ``batch-general``).

It lives in ``llmsched_env.envs`` beside the env it mixes: it needs nothing of ``agents`` and is
a plain Gymnasium env (both Gymnasium's and stable-baselines3's env checkers pass).

The per-episode load and burstiness are the batch env's ``reset`` options ``load`` (arrival
rate = load times the component's capacity estimate) and ``arrival_cv`` (Gamma inter-arrival
times of that coefficient of variation, the process of the bursty scenario workloads); with
probability ``source_arrivals`` an episode keeps the component's own arrival process instead
(a trace's recorded gaps, rescaled to the load).

**Baselines.** The heuristics of ``baselines.batch`` read one env's constants (bin edges, size
levels, service estimates) once, when they are built, so one heuristic cannot follow a switch
of component. ``make_policy(name, mixture)`` therefore builds one per component and acts with
the active component's (:class:`baselines.mixture.PerComponentPolicy`): that is how a
heuristic demonstrates the mixture for a warm start. Scores of baselines are taken on plain
``BatchScheduling-v0`` envs of the same workloads, which is what the scenarios do.
"""

from __future__ import annotations

import itertools
import math
import numbers
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from llmsched_env import arguments
from llmsched_env.envs.batch_env import BatchSchedulingEnv
from llmsched_env.envs.common import reset_options
from llmsched_env.envs.wrappers import EndWhenSettled
from llmsched_env.workload.arrivals import CV_RANGE

_OWNER = "BatchMixtureEnv"

#: Keyword arguments a component may not set: the mixture draws the load of every episode.
_DRAWN = ("load", "arrival_rate")


def _check_range(name: str, value: Any) -> tuple[float, float]:
    """``value`` as ``(low, high)`` with ``0 < low <= high < inf``, or a ``ValueError``."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        pair = tuple(value)
        if not all(arguments.is_real(v) for v in pair):
            raise TypeError  # float() would also read "0.5" and True
        low, high = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    if not (0 < low <= high < math.inf):
        raise ValueError(f"{name} must satisfy 0 < low <= high < inf, got {value!r}")
    return low, high


#: The largest weight of a component: relative frequencies whose sum a draw of int64 holds.
MAX_WEIGHT = 2**31 - 1


def _check_weights(weights: Any, n_components: int) -> tuple[int, ...]:
    """``weights`` as one positive integer per component (``None``: all 1), or a ValueError."""
    if weights is None:
        return (1,) * n_components
    expectation = f"one positive integer per component ({n_components})"
    values = arguments.sequence(_OWNER, "weights", weights, expectation)
    if len(values) != n_components:
        raise ValueError(arguments.message(_OWNER, "weights", expectation, list(values)))
    return tuple(
        arguments.integer(
            _OWNER, "weights", w, minimum=1, maximum=MAX_WEIGHT, reason="one per component"
        )
        for w in values
    )


class BatchMixtureEnv(gym.Env[np.ndarray, np.ndarray]):
    """Each episode: a random component workload, load and burstiness of ``BatchScheduling-v0``.

    ## Episodes

    ``reset(seed=...)`` seeds the mixture's generator (as any Gymnasium env); every ``reset``
    then draws, always in this order, the component ``k`` (with probability proportional to its
    weight; uniform by default), the load (uniform on
    ``load``), a uniform number that decides whether the episode keeps the component's own
    arrivals (probability ``source_arrivals``), the gap coefficient of variation (log-uniform on
    ``arrival_cv``) and the seed of the component's ``reset``. The same seed therefore gives the
    same sequence of episodes, bit for bit. ``reset(options=...)`` may pin ``"component"`` (an
    index or a workload name), ``"load"`` and ``"arrival_cv"`` (``None``: the component's own
    arrivals); the draws are made anyway, so pinning one leaves the others unchanged.

    ``step`` and every query (``action_masks``, ``joint_action_mask``, ``is_settled``,
    ``queue_snapshot``, ``finished_batches``, ``request_records``, ``episode_metrics``,
    ``last_info``, ``render``) go to the active component. The reset ``info`` is the
    component's, plus ``component`` (its workload name), ``component_index``, ``load`` and
    ``arrival_cv`` (``None`` for the component's own arrivals).

    ## Spaces

    Every component has the same ``n_bins``, ``n_gpus`` and ``max_batch_size`` (shared keyword
    arguments), hence the same observation and action spaces and observation names; this is
    checked when the mixture is built.

    Args:
        components: One mapping of ``BatchScheduling-v0`` keyword arguments per component,
            e.g. ``[{"workload": "azure-conv"}, {"workload": "burstgpt-synthetic"}]``; at least
            one. ``load`` and ``arrival_rate`` are drawn per episode and may not be set.
        weights: One positive integer per component: an episode is drawn from component ``k``
            with probability ``weights[k] / sum(weights)`` (one draw of an integer below the
            sum, so that weights ``w`` draw exactly as a list holding component ``k``
            ``w[k]`` times would). ``None``: every component weighs 1.
        load: ``(low, high)``: each episode's load is uniform on this range (arrival rate =
            load times the component's capacity estimate).
        arrival_cv: ``(low, high)``: the gap coefficient of variation of an episode with
            Gamma arrivals, log-uniform on this range; ``None``: every episode keeps the
            component's own arrivals.
        source_arrivals: Probability, in ``[0, 1]``, that an episode keeps the component's own
            arrivals (ignored when ``arrival_cv`` is ``None``).
        end_when_settled: Wrap each component whose reward settles (see
            :meth:`~llmsched_env.envs.wrappers.EndWhenSettled.applies_to`) in ``EndWhenSettled``
            (for training; the mixture itself is not a ``BatchSchedulingEnv``, so the wrapper
            cannot go around it).
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``, passed to the components.
        **shared: ``BatchScheduling-v0`` keyword arguments of every component (a component's
            own entry wins).

    Raises:
        ValueError: For a bad argument, named in the message, or components whose spaces
            differ.

    Example:
        >>> env = BatchMixtureEnv([{"workload": "azure-conv"}, {"workload": "demo2"}],
        ...                       n_requests=100)
        >>> obs, info = env.reset(seed=0)
        >>> info["component"] in env.component_names
        True
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        components: Sequence[Mapping[str, Any]],
        *,
        weights: Sequence[int] | None = None,
        load: Sequence[float] = (0.6, 1.5),
        arrival_cv: Sequence[float] | None = (1.0, 4.0),
        source_arrivals: float = 0.25,
        end_when_settled: bool = False,
        render_mode: str | None = None,
        **shared: Any,
    ) -> None:
        if isinstance(components, (str, bytes, Mapping)) or not isinstance(components, Sequence):
            raise ValueError(
                f"components must be a sequence of env keyword mappings, got {components!r}"
            )
        if not components:
            raise ValueError("components must hold at least one component, got none")
        for name in _DRAWN:
            if name in shared:
                raise ValueError(
                    f"BatchMixtureEnv draws the load of every episode; {name}={shared[name]!r} "
                    "may not be given (set the range with load=(low, high))"
                )
        #: The components' weights (probabilities proportional to them).
        self.weights = _check_weights(weights, len(components))
        self._weight_ends = tuple(itertools.accumulate(self.weights))
        self.load_range = _check_range("load", load)
        self.arrival_cv_range = (
            None if arrival_cv is None else _check_range("arrival_cv", arrival_cv)
        )
        if self.arrival_cv_range is not None:
            low, high = CV_RANGE
            if not low <= self.arrival_cv_range[0] <= self.arrival_cv_range[1] <= high:
                raise ValueError(f"arrival_cv must lie in [{low:g}, {high:g}], got {arrival_cv!r}")
        ok = isinstance(source_arrivals, numbers.Real) and not isinstance(source_arrivals, bool)
        if not ok or not 0.0 <= source_arrivals <= 1.0:
            raise ValueError(
                f"source_arrivals must be a probability in [0, 1], got {source_arrivals!r}"
            )
        self.source_arrivals = float(source_arrivals)
        end_when_settled = arguments.boolean(_OWNER, "end_when_settled", end_when_settled)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"{_OWNER}: render_mode must be one of {self.metadata['render_modes']} or None, "
                f"got {render_mode!r}"
            )
        self.render_mode = render_mode
        self._steppers: list[gym.Env] = []
        for index, component in enumerate(components):
            if not isinstance(component, Mapping):
                raise ValueError(
                    f"components[{index}] must be a mapping of env keyword arguments, got "
                    f"{component!r}"
                )
            for name in _DRAWN:
                if name in component:
                    raise ValueError(
                        f"components[{index}] sets {name}={component[name]!r}; the mixture draws "
                        "the load of every episode (set the range with load=(low, high))"
                    )
            env: gym.Env = BatchSchedulingEnv(**{**shared, **component, "render_mode": render_mode})
            if end_when_settled and EndWhenSettled.applies_to(env):
                env = EndWhenSettled(env)
            self._steppers.append(env)
        #: The component envs (unwrapped), in order: baselines are evaluated on these.
        self.components: tuple[BatchSchedulingEnv, ...] = tuple(e.unwrapped for e in self._steppers)
        #: Each component's workload name.
        self.component_names: tuple[str, ...] = tuple(c.source.name for c in self.components)
        first = self.components[0]
        for index, c in enumerate(self.components[1:], start=1):
            if (
                c.observation_space != first.observation_space
                or c.action_space != first.action_space
                or c.obs_names != first.obs_names
            ):
                raise ValueError(
                    f"every component must have the same spaces (same n_bins, n_gpus and "
                    f"max_batch_size): component 0 ({self.component_names[0]}) has observation "
                    f"{first.observation_space.shape} and action {first.action_space}, component "
                    f"{index} ({self.component_names[index]}) has "
                    f"{c.observation_space.shape} and {c.action_space}"
                )
        self.observation_space = first.observation_space
        self.action_space = first.action_space
        #: Names of the observation entries (those of every component).
        self.obs_names = first.obs_names
        self._index: int | None = None

    # ------------------------------------------------------------------ episode
    def _draw(self, options: Mapping[str, Any]) -> tuple[int, float, float | None, int]:
        """Draw (and apply the pinned options to) the next episode's component and settings."""
        rng = self.np_random
        index = bisect_right(self._weight_ends, int(rng.integers(self._weight_ends[-1])))
        load = float(rng.uniform(*self.load_range))
        keep_source = bool(rng.random() < self.source_arrivals)
        low, high = self.arrival_cv_range or (1.0, 1.0)
        cv: float | None = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        seed = int(rng.integers(2**63 - 1))
        if self.arrival_cv_range is None or keep_source:
            cv = None
        unknown = set(options) - {"component", "load", "arrival_cv"}
        if unknown:
            raise ValueError(
                f"unknown reset options {sorted(unknown)}; expected some of "
                "['component', 'load', 'arrival_cv']"
            )
        if "component" in options:
            index = self._component_index(options["component"])
        if "load" in options:
            load = options["load"]  # checked by the component's reset
        if "arrival_cv" in options:
            cv = options["arrival_cv"]
        return index, load, cv, seed

    def _component_index(self, component: Any) -> int:
        """The index of a component given by index or workload name."""
        if isinstance(component, str) and component in self.component_names:
            return self.component_names.index(component)
        if isinstance(component, (int, np.integer)) and not isinstance(component, bool):
            if 0 <= component < len(self.components):
                return int(component)
        raise ValueError(
            f"options['component'] must be an index in [0, {len(self.components) - 1}] or one "
            f"of {list(self.component_names)}, got {component!r}"
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw the next episode's component, load and burstiness and start it there.

        A reset that fails (a bad option) leaves no episode to step and the generator as it
        was before the draws, as the registered envs' do: the next episodes are those of a run
        without the failed call.
        """
        self._index = None
        super().reset(seed=seed)
        before = self.np_random.bit_generator.state
        try:
            index, load, cv, component_seed = self._draw(reset_options(options))
            episode_options: dict[str, Any] = {"load": load}
            if cv is not None:
                episode_options["arrival_cv"] = cv
            obs, info = self._steppers[index].reset(seed=component_seed, options=episode_options)
        except Exception:
            self.np_random.bit_generator.state = before
            raise
        self._index = index
        info = {
            **info,
            "component": self.component_names[index],
            "component_index": index,
            "load": load,
            "arrival_cv": cv,
        }
        self.active.last_info = info
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step the active component (see ``BatchScheduling-v0``)."""
        if self._index is None:
            raise RuntimeError("call reset() before step()")
        return self._steppers[self._index].step(action)

    # ------------------------------------------------------------------ the active component
    @property
    def active_index(self) -> int:
        """The index in :attr:`components` of the current episode's component.

        Raises:
            RuntimeError: Before the first ``reset``.
        """
        if self._index is None:
            raise RuntimeError("call reset() first: no component is active yet")
        return self._index

    @property
    def active(self) -> BatchSchedulingEnv:
        """The component env of the current episode (unwrapped).

        Raises:
            RuntimeError: Before the first ``reset``.
        """
        return self.components[self.active_index]

    @property
    def last_info(self) -> dict[str, Any] | None:
        """The latest ``info`` of the active component (``None`` before ``reset``)."""
        return None if self._index is None else self.active.last_info

    def action_masks(self) -> np.ndarray:
        """The active component's per-component masks (for MaskablePPO)."""
        return self.active.action_masks()

    def joint_action_mask(self) -> np.ndarray:
        """The active component's exact joint mask (for ``FlattenAction``)."""
        return self.active.joint_action_mask()

    def is_settled(self) -> bool:
        """Whether the active episode's return can no longer change."""
        return self.active.is_settled()

    def queue_snapshot(self) -> Any:
        """The active component's waiting requests per bin."""
        return self.active.queue_snapshot()

    def finished_batches(self) -> list[Any]:
        """The batches the active component finished during the latest step."""
        return self.active.finished_batches()

    def request_records(self) -> Any:
        """One row per request of the active episode."""
        return self.active.request_records()

    def episode_metrics(self) -> dict[str, float]:
        """Metrics of the active episode so far."""
        return self.active.episode_metrics()

    def render(self) -> str | np.ndarray | None:
        """The active component's render (``None`` before ``reset`` or without a mode)."""
        return None if self._index is None else self.active.render()

    def close(self) -> None:
        """Close every component."""
        for env in self._steppers:
            env.close()
