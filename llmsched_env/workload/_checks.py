"""Argument checks shared by the workload modules.

Each helper raises ``ValueError`` (or ``TypeError`` for a wrong type) with a message that names the
argument, shows the bad value and says what was expected, so every public constructor fails the same
way. The number checks delegate to :mod:`llmsched_env.arguments`, the library's one message format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llmsched_env import arguments


def check_rng(rng: object, name: str = "rng") -> np.random.Generator:
    """Return ``rng`` if it is a ``numpy.random.Generator``.

    Args:
        rng: The object to check.
        name: The argument name, for the message.

    Returns:
        ``rng`` unchanged.

    Raises:
        TypeError: If ``rng`` is not a ``numpy.random.Generator`` (legacy ``RandomState`` and the
            ``random`` module are refused so that every draw comes from one seeded generator).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{name} must be a numpy.random.Generator (for example np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return rng


def check_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Return ``value`` as an ``int`` after checking its type and range.

    Args:
        name: The argument name, for the message.
        value: The value to check; Python and numpy integers are accepted, ``bool`` is not.
        minimum: The smallest allowed value, or ``None`` for no bound.
        maximum: The largest allowed value, or ``None`` for no bound.

    Returns:
        ``value`` as a Python ``int``.

    Raises:
        TypeError: If ``value`` is not an integer.
        ValueError: If ``value`` is out of range.
    """
    return arguments.integer("", name, value, minimum=minimum, maximum=maximum)


def check_sequence(name: str, value: object, items: str) -> tuple[Any, ...]:
    """Return ``value`` as a tuple if it is an iterable of items (not text, not a mapping).

    Args:
        name: The argument name, for the message.
        value: The value to check (a list, tuple, array, pandas Series or Index, generator...).
        items: What its items must be, for the message (``"lengths in tokens"``).

    Raises:
        ArgumentTypeError: If ``value`` is not such an iterable (a ``TypeError`` and a
            ``ValueError``).
    """
    return arguments.sequence("", name, value, f"a sequence of {items}")


def check_float(
    name: str,
    value: object,
    *,
    positive: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """Return ``value`` as a finite ``float`` after checking its range.

    Args:
        name: The argument name, for the message.
        value: The value to check; any real number except ``bool``.
        positive: Require ``value > 0``.
        minimum: Smallest allowed value (inclusive), or ``None``.
        maximum: Largest allowed value (inclusive), or ``None``.

    Returns:
        ``value`` as a Python ``float``.

    Raises:
        TypeError: If ``value`` is not a real number.
        ValueError: If ``value`` is not finite or is out of range.
    """
    return arguments.real("", name, value, minimum=minimum, maximum=maximum, positive=positive)


def check_count(n: object, name: str = "n") -> int:
    """Return a sample size ``n >= 0`` as an ``int``.

    Args:
        n: The number of values to draw.
        name: The argument name, for the message.

    Returns:
        ``n`` as a Python ``int``.
    """
    return check_int(name, n, minimum=0)


def check_probabilities(name: str, probs: Sequence[float], size: int) -> tuple[float, ...]:
    """Return ``probs`` as a tuple of floats after checking it is a probability vector.

    Args:
        name: The argument name, for the message.
        probs: The probabilities.
        size: The number of entries expected.

    Returns:
        The probabilities, renormalised to sum to exactly 1.

    Raises:
        ValueError: If there are not ``size`` entries, an entry is negative or not finite, or
            the sum differs from 1 by more than 1e-6.
    """
    values = check_sequence(name, probs, f"{size} probabilities")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        what = "a number" if size == 1 else f"{size} numbers"
        raise ValueError(f"{name} must hold {what}, got {probs!r}") from None
    if array.shape != (size,):
        raise ValueError(f"{name} must have {size} entries, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {array.tolist()}")
    total = float(array.sum())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, got {array.tolist()} (sum {total})")
    return tuple(float(x) for x in array / total)
