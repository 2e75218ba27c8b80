"""``BatchScheduling-v0`` as a compiled vector env: N episodes stepped in one compiled call.

``gym.make_vec("llmsched/BatchScheduling-v0", num_envs=N)`` builds it (its registered
``vector_entry_point``); ``vectorization_mode="sync"`` or ``"async"`` still give Gymnasium's
generic vector envs over the single env.

Each sub-env is a :class:`~llmsched_env.envs.batch_env.BatchSchedulingEnv`. Python seeds its
generator and reads the reset's options; the rest runs in :func:`_step_envs`: it draws the new
episodes' requests (a trace's window with the sub-env's own generator,
:mod:`~llmsched_env.envs.trace_window`; other workloads are drawn in Python beforehand), starts
them (the rest of ``reset``, :func:`~llmsched_env.envs.batch_step.start_episode`, in buffers
the sub-env reuses), and carries out every other sub-env's decision, advances its server to
the next decision, pays its reward and builds its observation and mask, without returning to
Python in between. The arithmetic is the single env's, so sub-env ``i`` reset with seed
``seed + i`` and given the same actions produces the single env's episode bit for bit (a test
steps both side by side). A sub-env's Python side (its server, observation, ``last_info`` ...)
is made only when it is read.

Autoreset follows Gymnasium's default, :attr:`AutoresetMode.NEXT_STEP`: the step after a
sub-env's episode ends resets it (its action is ignored) and returns the first observation of
the new episode with reward 0. Until then, :meth:`action_masks` gives an ended sub-env the mask
that allows WAIT only, so a masked agent always has a valid action to send.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from numba import prange
from numba.typed import List

from llmsched_env.envs import batch_observation as bo
from llmsched_env.envs.batch_env import WAIT, BatchSchedulingEnv
from llmsched_env.envs.batch_step import (
    REWARD_CODES,
    episode_buffers,
    start_episode,
    step_episode,
)
from llmsched_env.envs.common import InvalidActionError, holds_bools, holds_whole_numbers
from llmsched_env.envs.trace_window import (
    cuts_windows,
    draw_window,
    raise_span_error,
    window_sigma,
    window_workload,
)
from llmsched_env.jit import njit
from llmsched_env.metrics import SUMMARY_FIELDS, summary_fields, target_array
from llmsched_env.sim.batch_kernels import summary_row
from llmsched_env.sim.batch_state import state_view
from llmsched_env.workload.requests import ArrivalSpanError

#: No per-request TTFT deadlines (the request-level env sets no TTFT target).
_NO_DEADLINES = np.zeros(0)
#: What :func:`_step_envs` does with a sub-env: step it, start its new episode, or leave it.
STEP, START, LEAVE = 0, 1, 2


class BatchSchedulingVectorEnv(VectorEnv):
    """``num_envs`` independent ``BatchScheduling-v0`` episodes, stepped together compiled.

    Args:
        num_envs: Number of sub-envs.
        threads: Groups of sub-envs stepped at once by numba's threads (``1``: one after the
            other, in the calling thread). Each group's sub-envs are stepped by the same compiled
            code as with one thread, so the episodes do not depend on it; it pays on a machine
            with cores to spare (``gym.make_vec(..., threads=4)``). numba's default
            ``workqueue`` threading layer must not be entered by two Python threads at once:
            step such vector envs from one thread, or install ``tbb``.
        autoreset_mode: Gymnasium's autoreset mode: only ``NEXT_STEP`` (the default, also
            ``"NextStep"``); any other is refused (``vectorization_mode="sync"`` offers them).
        **kwargs: Arguments of :class:`~llmsched_env.envs.batch_env.BatchSchedulingEnv`, the same
            for every sub-env (``render_mode`` is not supported). ``max_episode_steps``, which
            ``gym.make_vec`` passes on, is the env's ``max_steps``: the episode is truncated
            after that many steps, and ends as the env's own truncation ends it.

    Observations, rewards, terminations and truncations are batched along the first axis;
    actions are an ``(num_envs, 2)`` integer array. ``info`` holds, per sub-env,
    ``time_s``, ``invalid_action`` and ``gpu`` (arrays of ``num_envs`` values) and, for the
    sub-envs whose episode ended in this step, ``episode_metrics`` (Gymnasium's vector info
    form: arrays with a ``_episode_metrics`` mask).

    Example:
        >>> import gymnasium as gym
        >>> envs = gym.make_vec("llmsched/BatchScheduling-v0", num_envs=4, n_requests=50)
        >>> obs, info = envs.reset(seed=0)
        >>> obs.shape
        (4, 42)
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int,
        threads: int = 1,
        autoreset_mode: AutoresetMode | str | None = None,
        **kwargs: Any,
    ) -> None:
        if autoreset_mode is not None and autoreset_mode not in (
            AutoresetMode.NEXT_STEP,
            AutoresetMode.NEXT_STEP.value,
        ):
            raise ValueError(
                f"the compiled vector env autoresets in {AutoresetMode.NEXT_STEP} mode only, got "
                f"autoreset_mode={autoreset_mode!r}; use vectorization_mode='sync' for another mode"
            )
        if not isinstance(num_envs, int | np.integer) or isinstance(num_envs, bool):
            raise TypeError(f"num_envs must be a positive integer, got {num_envs!r}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if kwargs.get("render_mode") is not None:
            raise ValueError(
                "the compiled vector env does not render; build it with "
                "vectorization_mode='sync' to render sub-envs"
            )
        if not isinstance(threads, int | np.integer) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        self.threads = min(int(threads), int(num_envs))
        self._step_all = self._stepper(int(num_envs))
        # make_vec passes the spec's (None for ours) or the caller's: a step limit, as max_steps.
        max_episode_steps = kwargs.pop("max_episode_steps", None)
        if max_episode_steps is not None:
            if kwargs.get("max_steps", max_episode_steps) != max_episode_steps:
                raise ValueError(
                    f"max_episode_steps={max_episode_steps!r} and max_steps="
                    f"{kwargs['max_steps']!r} disagree; give one step limit"
                )
            kwargs["max_steps"] = max_episode_steps
        first = BatchSchedulingEnv(**kwargs)
        compiled_timing = getattr(first.latency, "compiled_timing", None)
        if compiled_timing is None or compiled_timing() is None:
            raise ValueError(
                f"the compiled vector env needs a latency model with a compiled batch timing, "
                f"got {first.config.latency!r} (timed in Python); use "
                "vectorization_mode='sync' for this model"
            )
        # The sub-envs share the first one's calibration (capacity, bins): copies, not rebuilds.
        self._sub_envs = (first, *(copy.deepcopy(first) for _ in range(int(num_envs) - 1)))
        self._let_sub_envs_refresh()
        self.num_envs = int(num_envs)
        self.config = first.config
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(first.observation_space, self.num_envs)
        self.action_space = batch_space(first.action_space, self.num_envs)
        self._nvec = np.array(first.action_space.nvec, dtype=np.int64)
        self._batch_sizes = np.asarray(first.batch_sizes, dtype=np.int64)
        # (a writable copy: numba's dispatcher types a read-only array on its slow path)
        self._bounds = bo._stacked_bounds(self.config.n_bins, self.config.n_gpus).copy()
        n_obs = first.observation_space.shape[0]
        self._obs = np.zeros((self.num_envs, n_obs), dtype=np.float32)
        self._rewards = np.zeros(self.num_envs)
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)
        self._invalid = np.zeros(self.num_envs, dtype=bool)
        self._masks = np.ones((self.num_envs, first._mask.shape[0]), dtype=bool)
        self._ended = np.zeros(self.num_envs, dtype=bool)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        # Per sub-env, its latest step's action as carried out (bin choice after any remap,
        # size level) and the server's count of finished batches before it (what the sub-env's
        # Python side reports once brought up to date: see ``envs``).
        self._applied = np.zeros((self.num_envs, 2), dtype=np.int64)
        self._finished_before = np.zeros(self.num_envs, dtype=np.int64)
        self._last_objective = np.zeros(self.num_envs)
        # Each sub-env's time and deciding GPU after its latest step or reset (for ``info``).
        self._time_s = np.zeros(self.num_envs)
        self._gpu = np.full(self.num_envs, -1, dtype=np.int64)
        self._reward_code = REWARD_CODES[self.config.reward]
        # What an ended episode's metrics are measured against, and which of the summary's
        # values they report (as the sub-env's episode_metrics()).
        targets = first._sla_targets()
        self._metric_targets = target_array(targets)
        fields = summary_fields(targets, has_gaps=False)
        self._metric_rows = np.array([row for row, _ in fields], dtype=np.int64)
        self._metric_keys = [key for _, name in fields for key in (name, f"_{name}")]
        # Per sub-env, the summary of its latest ended episode (SUMMARY_FIELDS' values).
        self._summaries = np.zeros((self.num_envs, len(SUMMARY_FIELDS)))
        self._max_steps = self.config.max_steps or 0
        self._skip_late = self.config.dispatch_order == "oldest-in-time"
        self._raise_invalid = self.config.invalid_action == "raise"
        # What a new episode's server and observation take their parameters from, and the
        # bins' edges its requests are binned by (batch_step.start_episode).
        self._templates = first.episode_template()
        self._edges = first._edges
        # A trace source's windows are drawn and cut in the compiled step (trace_window): its
        # arrays, where windows may start, and per sub-env whether its next episode's window
        # is drawn there (else its requests are drawn whole in Python), the speedup of its
        # arrivals and the window drawn; the sub-envs' generators, in a typed list.
        source = first.source
        self._cuts_windows = cuts_windows(source)
        self._trace = (np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        self._window_sigma = np.nan
        self._first_start = self._last_start = 0
        if self._cuts_windows:
            trace = source.trace
            self._trace = (  # (writable copies: the dispatcher types read-only arrays slowly)
                trace.arrival_s.copy(),
                trace.prompt_tokens.astype(np.int64),
                trace.output_tokens.astype(np.int64),
            )
            self._window_sigma = window_sigma(source)
            self._first_start = source.calibration_size
            self._last_start = source.max_episode_requests - self.config.n_requests
        self._cut = np.zeros(self.num_envs, dtype=bool)
        self._speedups = np.ones(self.num_envs)
        self._window_start = np.zeros(self.num_envs, dtype=np.int64)
        self._generators: Any = None
        self._generator_objects: list[Any] = [None] * self.num_envs
        # Per sub-env, the arrays its episodes are started and stepped in (see
        # batch_step.episode_buffers): reused from one episode to the next, unless the
        # sub-env's Python side was made on them (it keeps them).
        self._own = [self._new_buffers(self.config.n_requests) for _ in range(self.num_envs)]
        # Per sub-env: the requests of its episode; whether its Python side (server,
        # observation ...) is that episode's; whether that Python side works on its arrays.
        self._workloads: list[Any] = [None] * self.num_envs
        self._made = np.zeros(self.num_envs, dtype=bool)
        self._exposed = np.zeros(self.num_envs, dtype=bool)
        self._episodes: Any = None
        self._list_episodes()
        self._started = False

    # ------------------------------------------------------------------ Gymnasium API
    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env; sub-env ``i`` gets ``seed + i`` (or ``seed[i]``).

        As Gymnasium's vector envs, ``options["reset_mask"]`` (a boolean array of ``num_envs``)
        resets only the sub-envs it marks, with their seeds of the same rule, and the other
        options go to each of them; the others go on with their episodes (one that has ended
        still resets at the next step).

        Raises:
            ValueError: For a bad seed, a bad option of the sub-envs' ``reset``, or a
                ``reset_mask`` that is not a boolean array of ``num_envs``, marks no sub-env,
                or marks some before every sub-env has an episode.
        """
        expected = f"an int, None or a sequence of {self.num_envs} seeds (one per sub-env)"
        if seed is None or _is_seed(seed):
            seeds: list[int | None] = [
                None if seed is None else int(seed) + i for i in range(self.num_envs)
            ]
        elif isinstance(seed, list | tuple | np.ndarray):
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed must be {expected}, got {len(seeds)} seeds")
            bad = [s for s in seeds if s is not None and not _is_seed(s)]
            if bad:
                raise ValueError(f"seed must be {expected}, each an int or None; got {bad[0]!r}")
            seeds = [None if s is None else int(s) for s in seeds]
        else:
            raise ValueError(f"seed must be {expected}, got {seed!r}")
        options, chosen = self._reset_mask(options)
        # A reset that fails part-way (a bad option) leaves nothing step may act on, as the
        # single env's does: the sub-envs reset before the failure would start new episodes.
        self._started = False
        starts = np.flatnonzero(chosen)
        for i in starts:
            self._draw_episode(int(i), seeds[i], options)
        codes = np.where(chosen, START, LEAVE)
        self._run(np.zeros((self.num_envs, 2), dtype=np.int64), codes, starts)
        self._ended[starts] = False
        self._started = True
        return self._obs.copy(), self._info(with_ended=False)

    def _reset_mask(self, options: Any) -> tuple[dict[str, Any] | None, np.ndarray]:
        """Split ``options["reset_mask"]`` (checked) from the options of the sub-envs' resets.

        Returns:
            The sub-envs' options, and which sub-envs to reset (all without a mask).
        """
        if not isinstance(options, dict) or "reset_mask" not in options:
            return options, np.ones(self.num_envs, dtype=bool)
        options = dict(options)
        mask = options.pop("reset_mask")
        if not (
            isinstance(mask, np.ndarray)
            and mask.dtype == np.bool_
            and mask.shape == (self.num_envs,)
        ):
            raise ValueError(
                f"options['reset_mask'] must be a boolean numpy array of shape ({self.num_envs},), "
                f"got {mask!r}"
            )
        if not mask.any():
            raise ValueError("options['reset_mask'] marks no sub-env to reset")
        if not mask.all() and not self._started:
            raise ValueError(
                "options['reset_mask'] resets some sub-envs only, but the others have no episode "
                "yet: reset them all first"
            )
        return options or None, mask.copy()

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Carry out one decision in every sub-env (resetting those whose episode ended)."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self._checked_actions(actions)
        resetting = self._ended.copy()
        if self._raise_invalid:
            allowed = self._masks[np.arange(self.num_envs), actions[:, 0]]
            rows = np.flatnonzero(~resetting & ~allowed)
            if rows.size:
                i = int(rows[0])
                raise InvalidActionError(
                    f"action {actions[i].tolist()} of sub-env {i} is forbidden by its mask "
                    f"{self._masks[i].tolist()} (component 0, bin choice {actions[i, 0]}, "
                    "is masked)"
                )
        starts = np.flatnonzero(resetting)
        for i in starts.tolist():
            self._draw_episode(i, None, None)
        self._run(actions, resetting.astype(np.int64), starts)  # START (1) where resetting
        np.logical_or(self._terminated, self._truncated, out=self._ended)
        info = self._info(with_ended=True)
        return (
            self._obs.copy(),
            self._rewards.copy(),
            self._terminated.copy(),
            self._truncated.copy(),
            info,
        )

    def action_masks(self) -> np.ndarray:
        """Per sub-env, its per-component mask (as the single env's ``action_masks``).

        A sub-env whose episode has ended (it resets at the next step, ignoring its action)
        allows WAIT and every size level, so a masked agent always has a valid action.
        """
        return self._masks.copy()  # (the step writes an ended sub-env's mask as such)

    @property
    def np_random_seed(self) -> tuple[int, ...]:
        """The sub-envs' seeds (as Gymnasium's ``SyncVectorEnv`` reports them)."""
        return tuple(env.np_random_seed for env in self._sub_envs)

    @property
    def np_random(self) -> tuple[np.random.Generator, ...]:
        """The sub-envs' generators (as Gymnasium's ``SyncVectorEnv`` reports them)."""
        return tuple(env.np_random for env in self._sub_envs)

    @property
    def envs(self) -> tuple[BatchSchedulingEnv, ...]:
        """The sub-envs, their Python side brought up to date with the compiled steps.

        The compiled step starts and advances each sub-env's episode in arrays, but does not
        touch what the sub-env keeps in Python (its server and observation objects, mask,
        ``last_info``, step count, the reward's last objective, the queue columns of
        ``queue_snapshot()``, the start of ``finished_batches()``); reading the sub-envs
        through this property (as :meth:`call` and :meth:`get_attr` do) first makes and sets
        those as the single env's own ``reset`` and steps would have, and so does each read of
        a sub-env's ``server``, ``last_info``, masks, ``queue_snapshot()`` or
        ``finished_batches()`` (a sub-env kept from an earlier step stays current). An ended
        sub-env is over, as the single env is after its last step; a server kept from an
        earlier episode keeps showing that episode.
        """
        if self._started:
            for i in range(self.num_envs):
                self._bring_up_to_date(i)
        return self._sub_envs

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call a method of every sub-env (``action_masks`` answers for the vector env).

        As Gymnasium's ``SyncVectorEnv.call``: returns one result per sub-env; a non-callable
        attribute is returned as it is.
        """
        if name == "action_masks":
            return tuple(self.action_masks())
        results = []
        for env in self.envs:
            attribute = getattr(env, name)
            results.append(attribute(*args, **kwargs) if callable(attribute) else attribute)
        return tuple(results)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """An attribute of every sub-env."""
        return tuple(getattr(env, name) for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        """Close the sub-envs."""
        for env in self._sub_envs:
            env.close()

    def set_attr(self, name: str, values: Any) -> None:
        """Refused: the compiled step does not read the sub-envs' attributes.

        It reads the configuration once, at construction, and each episode's arrays at its
        reset, so a changed attribute would be silently ignored.

        Raises:
            AttributeError: Always, naming the attribute.
        """
        raise AttributeError(
            f"cannot set {name!r} on the sub-envs of the compiled vector env: its compiled step "
            "reads their configuration once, at construction; build a new vector env with the "
            "setting, or use vectorization_mode='sync'"
        )

    def __getstate__(self) -> dict[str, Any]:
        # The typed lists (of episode arrays, of generators) and the compiled step do not
        # pickle: they are made again. The sub-envs' Python sides are made first, on the
        # arrays their episodes run in, so that a copy's sub-envs and arrays are one (copies
        # keep shared arrays shared).
        if self._started:
            for i in range(self.num_envs):
                self._bring_up_to_date(i)
        state = self.__dict__.copy()
        del state["_episodes"], state["_step_all"], state["_generators"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled or deep-copied vector env, which continues as the original would."""
        self.__dict__.update(state)
        self._step_all = self._stepper(self.num_envs)
        self._list_episodes()
        self._generators = None  # the copies' generators (the sub-envs' own), listed again
        for i, rng in enumerate(self._generator_objects):
            if rng is None:
                break
            self._hold_generator(i, rng)
        self._let_sub_envs_refresh()

    # ------------------------------------------------------------------ helpers
    def _let_sub_envs_refresh(self) -> None:
        """Have each sub-env bring itself up to date when read (see :attr:`envs`).

        So a sub-env kept from ``envs.envs`` (a heuristic built on it, say) reads what the
        single env would after the same steps, not what it held at its last reset.
        """
        for i, env in enumerate(self._sub_envs):
            env._refresh = partial(self._refresh_sub_env, i)

    def _refresh_sub_env(self, i: int) -> None:
        """:meth:`_bring_up_to_date` for sub-env ``i``, once the sub-envs have episodes."""
        if self._started:
            self._bring_up_to_date(i)

    def _stepper(self, num_envs: int) -> Any:
        """The call that steps every sub-env: serially, or in groups on numba's threads."""
        if self.threads == 1:
            return partial(_step_envs, 0, num_envs)
        return partial(_step_groups, self.threads)

    def _new_buffers(self, n_requests: int) -> tuple[np.ndarray, ...]:
        """Arrays that hold any episode of ``n_requests`` requests (batch_step.episode_buffers)."""
        return episode_buffers(n_requests, self.config.n_gpus, self.config.n_bins)

    def _arrays_for(self, i: int, n_requests: int) -> tuple[np.ndarray, ...]:
        """Sub-env ``i``'s arrays for its next episode, of ``n_requests`` requests.

        New ones when its Python side works on the old ones (made on them when read): it keeps
        showing the episode it was made for, as the single env's old server does.
        """
        own = self._own[i]
        if self._exposed[i] or own[8].shape[0] != n_requests:
            own = self._own[i] = self._new_buffers(n_requests)
            _store_item(self._episodes, i, own)
            self._exposed[i] = False
        return own

    def _list_episodes(self) -> None:
        """Put every sub-env's arrays in the typed list the compiled step reads.

        One typed list, because each array passed to a compiled function costs a fraction of a
        microsecond to unbox; made and filled by compiled functions, whose code numba caches (a
        typed list's own methods compile anew in every process, about 0.7 s).
        """
        self._episodes = _typed_list(self._own[0])
        for i in range(1, self.num_envs):
            _store_item(self._episodes, i, self._own[i])

    def _checked_actions(self, actions: Any) -> np.ndarray:
        """``actions`` as an ``(num_envs, 2)`` int64 array, or a ValueError naming the fault."""
        a = np.asarray(actions)
        if a.shape != (self.num_envs, 2):
            raise ValueError(
                f"actions must have shape ({self.num_envs}, 2), one (bin choice, size level) per "
                f"sub-env, got shape {a.shape}"
            )
        if not holds_whole_numbers(a):
            raise ValueError(f"actions must hold integers, got dtype {a.dtype}")
        if holds_bools(actions):
            raise ValueError(f"actions must hold integers, not booleans: got {actions!r}")
        if a.dtype == np.int64:
            first = _first_out_of_range(np.ascontiguousarray(a), self._nvec)
        else:  # checked before the cast, which would wrap huge values
            bad = np.flatnonzero((a < 0) | (a >= self._nvec))
            first = int(bad[0]) if bad.size else -1
        if first >= 0:
            i, j = divmod(first, 2)
            raise ValueError(
                f"action {a[i].tolist()} of sub-env {i} is outside the action space: component "
                f"{j} must be in [0, {self._nvec[j] - 1}], got {a[i, j]}"
            )
        return a.astype(np.int64, copy=False)

    def _draw_episode(self, i: int, seed: int | None, options: dict[str, Any] | None) -> None:
        """Start drawing sub-env ``i``'s next episode, for :func:`_step_envs` to start.

        The sub-env seeds its generator and reads ``options`` as its ``reset`` does. For a
        trace whose windows the compiled step draws, that is all (the ``load`` option changes
        only the window's speedup); else its whole ``Workload`` is drawn here, and its
        requests go to its arrays.
        """
        env = self._sub_envs[i]
        options = env._seed_episode(seed, options)
        if env.np_random is not self._generator_objects[i]:  # a new one, seeded
            self._hold_generator(i, env.np_random)
        if self._cuts_windows and set(options) <= {"load"}:
            self._arrays_for(i, self.config.n_requests)
            self._cut[i] = True
            self._speedups[i] = env.source.speedup_for(env.episode_arrival_rate_rps)
            self._workloads[i] = None  # made from the window when read
        else:
            workload = env._draw_workload(options)
            own = self._arrays_for(i, len(workload))
            own[6][:] = workload.predicted_output_tokens
            own[7][:] = workload.prompt_tokens
            own[8][:] = workload.arrival_s
            own[9][:] = workload.output_tokens
            self._cut[i] = False
            self._workloads[i] = workload
        self._made[i] = False

    def _hold_generator(self, i: int, rng: np.random.Generator) -> None:
        """Make ``rng`` sub-env ``i``'s in the typed list the compiled step draws from.

        Sub-envs are listed in order: ``i`` is at most the number listed.
        """
        self._generator_objects[i] = rng
        if self._generators is None:
            self._generators = _typed_list(rng)
        else:
            _store_item(self._generators, i, rng)

    def _run(self, actions: np.ndarray, codes: np.ndarray, starts: np.ndarray) -> None:
        """Run :func:`_step_envs` (each sub-env as ``codes`` say: STEP, START or LEAVE).

        ``starts``: the sub-envs whose code is START.

        Raises:
            ValueError: If an episode it started has no decision (every request rejected at
                arrival), or its window of a trace spans too long, as the single env's
                ``reset`` raises it.
        """
        self._step_all(
            actions,
            codes,
            self._episodes,
            self._generators,
            self._trace,
            self._cut,
            self._speedups,
            self._window_start,
            self._window_sigma,
            self._first_start,
            self._last_start,
            self._templates,
            self._edges,
            self._bounds,
            self._batch_sizes,
            self._masks,
            self._obs,
            self._rewards,
            self._terminated,
            self._truncated,
            self._invalid,
            self._steps,
            self._last_objective,
            self._time_s,
            self._gpu,
            self._applied,
            self._finished_before,
            self._summaries,
            self._metric_targets,
            self._reward_code,
            self.config.sla_penalty,
            self.config.sla,
            self._max_steps,
            self._skip_late,
        )
        if not starts.size:
            return
        failed = starts[self._terminated[starts]]
        if not failed.size:
            return
        self._started = False  # nothing to step, as after the single env's failed reset
        too_long = failed[self._cut[failed] & (self._window_start[failed] < 0)]
        if too_long.size:  # (raised as the windows are drawn, before any episode starts)
            i = int(too_long[0])
            env = self._sub_envs[i]
            try:
                raise_span_error(
                    env.source,
                    -1 - int(self._window_start[i]),
                    self.config.n_requests,
                    float(self._speedups[i]),
                )
            except ArrivalSpanError as error:
                raise env._span_error_named(error) from None
        i = int(failed[0])
        self._make_python_side(i)
        raise self._sub_envs[i]._no_decision_error(len(self._workloads[i]))

    def _make_python_side(self, i: int) -> None:
        """Make sub-env ``i``'s server, observation and reward on its arrays, as they stand."""
        env = self._sub_envs[i]
        self._made[i] = self._exposed[i] = True
        if self._workloads[i] is None:
            lo = int(self._window_start[i])
            self._workloads[i] = window_workload(env.source, lo, self._own[i][6:10])
        env._episode_objects(self._workloads[i], self._own[i][:6])
        env._episode_over = False
        env._steps = -1  # brought up to date next

    def _bring_up_to_date(self, i: int) -> None:
        """Set sub-env ``i``'s Python side as the single env's step would have (see ``envs``)."""
        env = self._sub_envs[i]
        if not self._made[i]:
            self._make_python_side(i)
        steps = int(self._steps[i])
        if env._steps == steps and env._episode_over == bool(self._ended[i]):
            return  # already brought up to date
        env._steps = steps
        env._episode_over = bool(self._ended[i])
        env._reward._last = float(self._last_objective[i])
        env._queue_columns = ()  # made anew when next asked for
        env._finished_from = int(self._finished_before[i])
        env._mask[:] = self._masks[i]
        if env._episode_over:
            env._allow_wait_only()
        if steps == 0 and not env._episode_over:
            env.last_info = env._reset_info()
            return
        info: dict[str, Any] = {
            "time_s": float(self._time_s[i]),
            "gpu": int(self._gpu[i]),
            "gpu_busy_until_s": env._server.state.gpu_until.copy(),
            "action_mask": env._mask.copy(),
            "invalid_action": bool(self._invalid[i]),
            "applied_action": self._applied[i].copy(),
        }
        if env._episode_over:
            info["episode_metrics"] = env.episode_metrics()
        env.last_info = info

    def _info(self, *, with_ended: bool) -> dict[str, Any]:
        """The vector ``info``: fixed-shape values per sub-env, and ended episodes' metrics.

        ``with_ended``: whether to report the metrics of the episodes that ended (after a step;
        a reset ends none).
        """
        info: dict[str, Any] = {
            "time_s": self._time_s.copy(),
            "gpu": self._gpu.copy(),
            "invalid_action": self._invalid.copy(),
        }
        if with_ended and self._ended.any():
            ended = np.flatnonzero(self._ended)
            info["episode_metrics"] = self._episode_metrics(ended)
            info["_episode_metrics"] = self._present(ended)
        return info

    def _episode_metrics(self, ended: np.ndarray) -> dict[str, np.ndarray]:
        """The metrics of the episodes of sub-envs ``ended``, in Gymnasium's vector info form.

        The form ``VectorEnv._add_info`` gives, built at once rather than sub-env by sub-env:
        per metric an array of ``num_envs`` values (0 where no episode ended) followed by its
        mask ``_name``. The sub-envs share their configuration, so their metrics have the same
        names. :func:`_step_envs` summarised each episode as it ended, by one compiled call on
        its server's buffers (:func:`~llmsched_env.sim.batch_kernels.summary_row`): the numbers
        of its ``episode_metrics()`` (the same compiled pieces) without the Python between them.
        """
        k = len(self._metric_rows)
        values = np.zeros((k, self.num_envs))
        values[:, ended] = self._summaries.take(ended, axis=0).take(self._metric_rows, axis=1).T
        present = np.zeros((k, self.num_envs), dtype=bool)
        present[:, ended] = True
        # name, _name, name, ...: each metric's values, then its mask (rows of two arrays).
        arrays: list[Any] = [None] * (2 * k)
        arrays[0::2] = values
        arrays[1::2] = present
        return dict(zip(self._metric_keys, arrays))

    def _present(self, indices: np.ndarray) -> np.ndarray:
        """A mask of the sub-envs: True at ``indices``."""
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[indices] = True
        return mask


def _is_seed(value: Any) -> bool:
    """Whether ``value`` is an integer seed (not a bool)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@njit(cache=True)
def _first_out_of_range(actions, nvec):
    """The first entry (``2 * sub-env + component``) of ``actions`` outside ``[0, nvec)``, or -1."""
    for i in range(actions.shape[0]):
        for j in range(2):
            if not 0 <= actions[i, j] < nvec[j]:
                return 2 * i + j
    return -1


@njit(cache=True)
def _typed_list(first):
    """A typed list that holds ``first`` (sub-env 0's arrays, or its generator)."""
    items = List()
    items.append(first)
    return items


@njit(cache=True)
def _store_item(items, i, item):
    """Make ``item`` sub-env ``i``'s (``i`` at most the list's length)."""
    if i < len(items):
        items[i] = item
    else:
        items.append(item)


@njit(cache=True, parallel=True)
def _step_groups(
    n_groups,
    actions,
    codes,
    episodes,
    generators,
    trace,
    cut,
    speedups,
    window_start,
    window_sigma,
    first_start,
    last_start,
    templates,
    edges,
    bounds,
    batch_sizes,
    masks,
    obs,
    rewards,
    terminated,
    truncated,
    invalid,
    steps,
    last_objective,
    time_s,
    gpu,
    applied,
    finished_before,
    summaries,
    metric_targets,
    reward_code,
    sla_penalty,
    time_scale_s,
    max_steps,
    skip_late,
):
    """:func:`_step_envs` over ``n_groups`` contiguous groups of the sub-envs, stepped at once.

    Each group runs :func:`_step_envs`, the serial step's compiled code, which the parallel
    passes do not transform (only this loop is theirs); sub-envs share nothing they write, so the
    episodes are those of the serial step. (The arguments are spelled out: passed on as
    ``*args``, the step ran at 0.75x of one thread instead of 1.23x. The templates' arrays
    enter the loop one by one: numba's parallel loop takes no tuple of arrays.)
    """
    (server_floats, server_ints, server_layout), (own_floats, own_ints, own_layout) = templates
    trace_arrival, trace_prompt, trace_output = trace
    n = actions.shape[0]
    for g in prange(n_groups):
        _step_envs(
            g * n // n_groups,
            (g + 1) * n // n_groups,
            actions,
            codes,
            episodes,
            generators,
            (trace_arrival, trace_prompt, trace_output),
            cut,
            speedups,
            window_start,
            window_sigma,
            first_start,
            last_start,
            ((server_floats, server_ints, server_layout), (own_floats, own_ints, own_layout)),
            edges,
            bounds,
            batch_sizes,
            masks,
            obs,
            rewards,
            terminated,
            truncated,
            invalid,
            steps,
            last_objective,
            time_s,
            gpu,
            applied,
            finished_before,
            summaries,
            metric_targets,
            reward_code,
            sla_penalty,
            time_scale_s,
            max_steps,
            skip_late,
        )


@njit(cache=True)
def _step_envs(
    lo,
    hi,
    actions,
    codes,
    episodes,
    generators,
    trace,
    cut,
    speedups,
    window_start,
    window_sigma,
    first_start,
    last_start,
    templates,
    edges,
    bounds,
    batch_sizes,
    masks,
    obs,
    rewards,
    terminated,
    truncated,
    invalid,
    steps,
    last_objective,
    time_s,
    gpu,
    applied,
    finished_before,
    summaries,
    metric_targets,
    reward_code,
    sla_penalty,
    time_scale_s,
    max_steps,
    skip_late,
):
    """Each sub-env ``lo .. hi - 1`` as ``codes`` say: one decision, a new episode, or nothing.

    ``STEP``: the single env's ``step``. Its decision is
    :func:`~llmsched_env.envs.batch_step.step_episode` (which also gives the time and deciding
    GPU after it); this adds the step count, the reward (the objective's change), the episode's
    end, the action carried out, the count of finished batches before the step and, if the
    episode ended, its summary (in ``summaries[e]``).

    ``START``: the rest of the single env's ``reset`` once its generator is seeded: where
    ``cut[e]``, the trace's window drawn and cut with the sub-env's generator
    (:func:`~llmsched_env.envs.trace_window.draw_window`; else the requests are in its arrays
    already), then :func:`~llmsched_env.envs.batch_step.start_episode`: reward 0, not ended.
    An episode that cannot start is marked terminated: its window spans too long
    (``window_start[e] < 0``), or it has no decision (every request rejected at arrival).
    """
    for e in range(lo, hi):
        code = codes[e]
        if code == LEAVE:
            continue
        episode = episodes[e]
        if code == START:
            if cut[e]:
                window_start[e] = draw_window(
                    generators[e],
                    trace[0],
                    trace[1],
                    trace[2],
                    first_start,
                    last_start,
                    speedups[e],
                    window_sigma,
                    episode[8],
                    episode[7],
                    episode[9],
                    episode[6],
                )
                if window_start[e] < 0:  # its arrivals span too long: not started
                    terminated[e] = True
                    continue
            due, objective, time_s[e], gpu[e] = start_episode(
                episode,
                templates,
                edges,
                bounds,
                masks[e],
                obs[e],
                reward_code,
                sla_penalty,
                time_scale_s,
            )
            last_objective[e] = objective
            rewards[e] = 0.0
            terminated[e] = not due
            truncated[e] = invalid[e] = False
            steps[e] = 0
            finished_before[e] = 0
            applied[e, 0] = applied[e, 1] = -1
            continue
        finished_before[e] = state_view(episode[0], episode[1], episode[2]).n_finished[0]
        invalid[e], queue, due, _, objective, time_s[e], gpu[e] = step_episode(
            actions[e, 0],
            actions[e, 1],
            episode,
            bounds,
            batch_sizes,
            masks[e],
            obs[e],
            reward_code,
            sla_penalty,
            time_scale_s,
            skip_late,
        )
        applied[e, 0] = queue + 1
        applied[e, 1] = actions[e, 1]
        steps[e] += 1
        rewards[e] = objective - last_objective[e]
        last_objective[e] = objective
        terminated[e] = not due
        truncated[e] = not terminated[e] and max_steps > 0 and steps[e] >= max_steps
        if truncated[e]:
            gpu[e] = -1  # the episode is over: no decision is due, as in the single env
        if terminated[e] or truncated[e]:  # WAIT only, as the single env's mask then
            masks[e, : masks.shape[1] - batch_sizes.shape[0]] = False
            masks[e, WAIT] = True
        if terminated[e] or truncated[e]:
            summaries[e] = summary_row(
                episode[0],
                episode[1],
                episode[2],
                episode[8],
                episode[9],
                0.0,
                metric_targets,
                _NO_DEADLINES,
            )
