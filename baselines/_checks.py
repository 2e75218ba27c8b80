"""Argument checks shared by the baseline policies of both environments.

They delegate to :mod:`llmsched_env.arguments`, the library's one message format.
"""

from __future__ import annotations

from typing import Any

from llmsched_env import arguments


def check_int(owner: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an integer (Python or numpy) in ``[low, high]``, else raise.

    Args:
        owner: The class whose argument is checked, for the message.
        name: The argument's name.
        value: The value given.
        low: Smallest allowed value.
        high: Largest allowed value (``None``: no upper bound).

    Returns:
        The value as an ``int``.

    Raises:
        TypeError: If the value is not an integer (an ``ArgumentTypeError``, also a
            ``ValueError``).
        ValueError: If it is out of range; the message names the argument, the value and the
            allowed range.
    """
    return arguments.integer(owner, name, value, minimum=low, maximum=high)
