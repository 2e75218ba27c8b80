"""Parameter checks shared by the latency models' ``__post_init__`` methods.

Each check names the class, the parameter, the bad value and what was expected, and returns the
value converted to a plain Python ``float`` or ``int``: the models are evaluated once per simulated
batch or iteration, and arithmetic on Python scalars is several times faster than on numpy scalars.
"""

from __future__ import annotations

import math
import operator
from numbers import Real


def real(owner: str, name: str, value: object, *, positive: bool = False) -> float:
    """Return ``value`` as a finite ``float`` that is ``>= 0`` (or ``> 0`` if ``positive``).

    Args:
        owner: The class being built, for the message.
        name: The parameter name, for the message.
        value: The value to check.
        positive: Require a strictly positive value instead of a non-negative one.

    Returns:
        ``float(value)``.

    Raises:
        TypeError: If ``value`` is not a real number (``bool`` is refused too).
        ValueError: If ``value`` is negative (or zero when ``positive``), infinite or nan.
    """
    expected = "a finite number > 0" if positive else "a finite number >= 0"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{owner}: expected `{name}` to be {expected}, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0.0 or (positive and number == 0.0):
        raise ValueError(f"{owner}: expected `{name}` to be {expected}, got {value!r}")
    return number


def integer(owner: str, name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` as an ``int`` that is ``>= minimum``.

    Args:
        owner: The class or function being called, for the message.
        name: The parameter name, for the message.
        value: The value to check (a Python or numpy integer; ``bool`` is refused).
        minimum: The smallest accepted value.

    Returns:
        ``int(value)``.

    Raises:
        TypeError: If ``value`` is not an integer.
        ValueError: If ``value < minimum``.
    """
    expected = f"an integer >= {minimum}"
    if isinstance(value, bool):
        raise TypeError(f"{owner}: expected `{name}` to be {expected}, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{owner}: expected `{name}` to be {expected}, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{owner}: expected `{name}` to be {expected}, got {value!r}")
    return number
