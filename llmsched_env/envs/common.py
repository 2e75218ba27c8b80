"""Action checking shared by the environments."""

from __future__ import annotations

from typing import Any

import numpy as np


class InvalidActionError(ValueError):
    """An action inside the action space that the mask forbids (with ``invalid_action="raise"``)."""


def parse_action(action: Any, nvec: tuple[int, ...]) -> tuple[int, ...]:
    """Check a ``MultiDiscrete(nvec)`` action and return its components as Python ints.

    Args:
        action: A sequence or array of integers, one per component.
        nvec: Number of values of each component.

    Returns:
        The components.

    Raises:
        ValueError: If the action has the wrong shape, is not integer-valued, or a component is
            out of range. This is raised whatever the ``invalid_action`` setting.

    Example:
        >>> parse_action([1, 2], (3, 4))
        (1, 2)
    """
    if type(action) is np.ndarray and action.dtype.kind in "iu" and action.shape == (len(nvec),):
        values = action.tolist()  # the common case (agents, baselines): no conversion needed
    else:
        a = np.asarray(action)
        if a.shape != (len(nvec),):
            raise ValueError(
                f"action {action!r} must have shape ({len(nvec)},), one integer per component of "
                f"MultiDiscrete({list(nvec)}); got shape {a.shape}"
            )
        if a.dtype.kind not in "iu" and (a.dtype.kind != "f" or not np.all(np.mod(a, 1) == 0)):
            raise ValueError(f"action {action!r} must hold integers, got dtype {a.dtype}")
        values = [int(v) for v in a]
    for i, (v, n) in enumerate(zip(values, nvec)):
        if not 0 <= v < n:
            raise ValueError(
                f"action {action!r} is outside the action space: component {i} must be in "
                f"[0, {n - 1}], got {v}"
            )
    return tuple(values)
