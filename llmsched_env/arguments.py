"""Argument checks shared by the whole library, with one message format.

Every check raises with the message ``"<owner>: <name> must be <expectation>, got <value!r>"``
(``owner`` is the class, environment or function being called), so a bad argument reads the same
wherever it is given. A value of the wrong type raises :class:`ArgumentTypeError`, a value of the
right type but out of range raises ``ValueError``.

Numpy scalars are accepted wherever the matching Python type is: any ``numbers.Integral`` (``int``,
``np.int64``, ``np.uint8``, ...) is an integer and any ``numbers.Real`` (``float``,
``np.float32``, ...) is a real number, so sweeps written with ``np.arange`` or ``np.linspace``
work. ``bool`` is refused for both (``True`` is almost always a slip, not the number 1), and a
float is never an integer, even when whole (``1e8`` for ``n_requests`` is refused with a hint to
write ``int(...)``), because a float count usually comes from arithmetic that was meant to be
rounded deliberately.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type.

    It is a ``TypeError``; it is also a ``ValueError`` so that code written when the configuration
    checks raised ``ValueError`` for every bad argument keeps catching it.
    """


def message(owner: str, name: str, expectation: str, value: Any) -> str:
    """The one message format: ``"<owner>: <name> must be <expectation>, got <value!r>"``.

    Args:
        owner: The class, environment or function being called (empty: no prefix).
        name: The argument's name.
        expectation: What the argument must be, e.g. ``"an integer >= 1"``.
        value: The value given.

    Returns:
        The message.

    Example:
        >>> message("Env", "n_gpus", "an integer >= 1", 0)
        'Env: n_gpus must be an integer >= 1, got 0'
    """
    prefix = f"{owner}: " if owner else ""
    return f"{prefix}{name} must be {expectation}, got {shown(value)}"


def shown(value: Any) -> str:
    """``repr(value)``, or for a long integer its length (Python refuses beyond 4,300 digits).

    Example:
        >>> shown(2.5), shown(10**400)
        ('2.5', 'an integer of about 401 digits')
    """
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    return repr(value)


def _range_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number, Python's or numpy's (a ``bool`` is not).

    Example:
        >>> is_real(np.float32(2.5)), is_real(3), is_real(True), is_real("1")
        (True, True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def integer(
    owner: str,
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    reason: str = "",
) -> int:
    """Return ``value`` as a Python ``int`` after checking its type and range.

    Args:
        owner: The class or function being called, for the message.
        name: The argument's name.
        value: A Python or numpy integer (``bool`` and floats are refused).
        minimum: The smallest allowed value, or ``None``.
        maximum: The largest allowed value, or ``None``.
        reason: Why the range is what it is, appended to the expectation in parentheses.

    Returns:
        ``int(value)``.

    Raises:
        ArgumentTypeError: If ``value`` is not an integer.
        ValueError: If ``value`` is out of range.

    Example:
        >>> integer("Env", "n_gpus", np.int64(2), minimum=1)
        2
    """
    if type(value) is int:  # the common case, without the abstract type checks
        if (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
            return value
    expectation = "an integer" + _range_text(minimum, maximum) + (f" ({reason})" if reason else "")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        hint = ""
        if is_real(value):
            hint = " (a float; write int(...) if a whole number is meant)"
        raise ArgumentTypeError(message(owner, name, expectation, value) + hint)
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(message(owner, name, expectation, value))
    return number


def optional_integer(owner: str, name: str, value: Any, **bounds: int | None) -> int | None:
    """:func:`integer`, or ``None`` when ``value`` is ``None``."""
    return None if value is None else integer(owner, name, value, **bounds)


def real(
    owner: str,
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
) -> float:
    """Return ``value`` as a finite Python ``float`` after checking its type and range.

    Args:
        owner: The class or function being called, for the message.
        name: The argument's name.
        value: A Python or numpy real number (``bool`` is refused).
        minimum: The smallest allowed value (inclusive), or ``None``.
        maximum: The largest allowed value (inclusive), or ``None``.
        positive: Require ``value > 0``.

    Returns:
        ``float(value)``.

    Raises:
        ArgumentTypeError: If ``value`` is not a real number.
        ValueError: If ``value`` is nan, infinite or out of range.

    Example:
        >>> real("Env", "sla", np.float32(2.5), positive=True)
        2.5
    """
    if type(value) is float:  # the common case, without the abstract type checks
        number = value
    elif not is_real(value):
        expectation = _real_expectation(minimum, maximum, positive)
        raise ArgumentTypeError(message(owner, name, expectation, value))
    else:
        try:
            number = float(value)
        except OverflowError:  # a Python int beyond float's range
            number = math.inf
    if (
        not math.isfinite(number)
        or (positive and number <= 0)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        expectation = _real_expectation(minimum, maximum, positive)
        raise ValueError(message(owner, name, expectation, value))
    return number


def _real_expectation(minimum: float | None, maximum: float | None, positive: bool) -> str:
    """What :func:`real` expected, for its message."""
    if positive and maximum is not None:
        return f"a finite number in (0, {maximum}]"
    if positive:
        return "a finite number > 0" + _range_text(minimum, None)
    return "a finite number" + _range_text(minimum, maximum)


def optional_real(owner: str, name: str, value: Any, **bounds: Any) -> float | None:
    """:func:`real`, or ``None`` when ``value`` is ``None``."""
    return None if value is None else real(owner, name, value, **bounds)


def boolean(owner: str, name: str, value: Any) -> bool:
    """Return ``value`` as a ``bool`` if it is ``True``/``False`` (Python or numpy).

    Raises:
        ArgumentTypeError: For anything else (``0``/``1`` included).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(message(owner, name, "True or False", value))
    return bool(value)


def one_of(owner: str, name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``.

    Raises:
        ValueError: Otherwise (a value of another type is simply not one of the choices).
    """
    options = list(choices)
    try:
        ok = value in options
    except (TypeError, ValueError):  # e.g. an array, whose ``==`` is elementwise
        ok = False
    if not ok:
        raise ValueError(message(owner, name, f"one of {options}", value))
    return value


def sequence(owner: str, name: str, value: Any, expectation: str) -> tuple[Any, ...]:
    """Return ``value`` as a tuple if it is an iterable (not a string or a mapping).

    Args:
        owner: The class or function being called, for the message.
        name: The argument's name.
        value: The value to check.
        expectation: What the sequence must hold, for the message.

    Raises:
        ArgumentTypeError: If ``value`` is a string, a mapping, a scalar or anything not iterable.
    """
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        raise ArgumentTypeError(message(owner, name, expectation, value))
    try:
        return tuple(value)
    except TypeError:  # a 0-d array is Iterable but cannot be iterated
        raise ArgumentTypeError(message(owner, name, expectation, value)) from None
