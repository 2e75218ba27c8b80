"""Name lookup for the project's named parts (presets, reward shapes, policies).

Every table of named parts is a plain ``dict`` from name to class or factory, kept beside its
family. Looking a name up goes through :func:`resolve`, so an unknown name always fails the same
way: the error lists the valid names and suggests the closest one.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def unknown_name_error(kind: str, name: object, valid: list[str] | tuple[str, ...]) -> ValueError:
    """Build the error raised for an unknown name.

    Args:
        kind: What was looked up, for the message (for example ``"workload preset"``).
        name: The name that was not found.
        valid: The names that exist.

    Returns:
        A ``ValueError`` whose message names the bad value, lists the valid names and, when one is
        close, suggests it.
    """
    message = f"unknown {kind} {name!r}; expected one of {sorted(valid)}"
    if isinstance(name, str):
        close = difflib.get_close_matches(name, list(valid), n=1)
        if close:
            message += f". Did you mean {close[0]!r}?"
    return ValueError(message)


def resolve(kind: str, name: str, table: Mapping[str, T]) -> T:
    """Return ``table[name]``, or raise a helpful error for an unknown name.

    Args:
        kind: What is looked up, for the error message.
        name: The name to look up.
        table: The table of named parts.

    Returns:
        The entry registered under ``name``.

    Raises:
        ValueError: If ``name`` is not in ``table``.

    Example:
        >>> resolve("colour", "red", {"red": 1, "green": 2})
        1
        >>> resolve("colour", "gren", {"red": 1, "green": 2})
        Traceback (most recent call last):
        ...
        ValueError: unknown colour 'gren'; expected one of ['green', 'red']. Did you mean 'green'?
    """
    try:
        return table[name]
    except (KeyError, TypeError):
        raise unknown_name_error(kind, name, list(table)) from None
