"""Argument checks shared by the baseline policies of both environments."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(owner: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an integer in ``[low, high]``, else raise ``ValueError``.

    Args:
        owner: The class whose argument is checked, for the message.
        name: The argument's name.
        value: The value given.
        low: Smallest allowed value.
        high: Largest allowed value (``None``: no upper bound).

    Returns:
        The value as an ``int``.

    Raises:
        ValueError: If the value is not an integer in range; the message names the argument,
            the value and the allowed range.
    """
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{owner}: {name} must be an integer {bound}, got {value!r}")
    return int(value)
