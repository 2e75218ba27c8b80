"""Argument types and checks of the ``llmsched`` command, so bad input fails before any work.

Numbers are checked by the argument parser (``--seeds 0``, ``--jobs 0`` and ``--first-seed -5``
are refused with the flag's name); JSON flags must hold an object and a syntax error names the
flag; ``--env-kwargs`` and ``--policy-kwargs`` keys are checked against the env's and the
policy's constructor, with the closest valid key suggested
(:func:`llmsched_env.registry.unknown_name_error`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from llmsched_env.registry import unknown_name_error


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, when it has a meaningful one (0 is one; False is not)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or any(default is hidden for hidden in (None, False, argparse.SUPPRESS))
        ):
            return text
        return f"{text} (default: %(default)s)"


def _integer(text: str, minimum: int, maximum: int | None = None, reason: str = "") -> int:
    bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum:,}]"
    expected = f"expected an integer {bounds}{f' ({reason})' if reason else ''}, got {text!r}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None
    if value < minimum or (maximum is not None and value > maximum):
        raise argparse.ArgumentTypeError(expected)
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts: seeds, jobs, steps, replications)."""
    return _integer(text, 1)


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (seeds, frequencies where 0 disables)."""
    return _integer(text, 0)


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """The argument type of an integer >= ``minimum`` (a flag with its own lower bound)."""
    return partial(_integer, minimum=minimum)


def bounded_int(minimum: int, maximum: int, reason: str = "") -> Callable[[str], int]:
    """The argument type of an integer in ``[minimum, maximum]``, ``reason`` saying why.

    For counts whose work or memory grows with them (seeds, replications, threads): a value
    far beyond any use would otherwise run out of memory, or stall, before saying anything.
    """
    return partial(_integer, minimum=minimum, maximum=maximum, reason=reason)


def positive_float(text: str) -> float:
    """A finite number > 0 (rates, horizons)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def directory(text: str) -> str:
    """A non-empty path (whether it can be written is checked before the command's work)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory path, got an empty string")
    return text


def json_object(flag: str, text: str | None) -> dict[str, Any]:
    """Parse the JSON object given to ``flag`` (an empty dict when the flag is absent).

    Raises:
        ValueError: Naming the flag, for malformed JSON, JSON that is not an object, or a key
            given twice.
    """
    if text is None:
        return {}
    try:
        value = json.loads(text, object_pairs_hook=partial(_unique_keys, flag))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{flag} is not valid JSON ({error.msg} at character {error.pos}): {text!r}; expected "
            "an object such as '{\"sla\": 20}'"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object, got {text!r}")
    return value


def _unique_keys(flag: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict, refusing a key given twice (JSON would keep the last)."""
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise ValueError(f"{flag} gives the key {key!r} twice ({value[key]!r} and {item!r})")
        value[key] = item
    return value


def accepted_keywords(function: Callable[..., Any]) -> list[str] | None:
    """Keyword arguments ``function`` accepts, or ``None`` when it takes any (``**kwargs``).

    Looks through ``functools.partial`` (minus the keywords it fixes) and through a classmethod
    such as ``Policy.from_env`` to its class's ``__init__``; the first positional parameter (the
    env) is not a keyword a user gives.
    """
    fixed: set[str] = set()
    while isinstance(function, partial):
        fixed |= set(function.keywords)
        function = function.func
    owner = getattr(function, "__self__", None)
    targets = [function] if not isinstance(owner, type) else [function, owner.__init__]
    names: list[str] | None = None
    for target in targets:
        params = list(inspect.signature(target).parameters.values())
        if params and params[0].name in ("self", "cls"):
            params = params[1:]
        params = params[1:] if params and params[0].name == "env" else params
        if any(p.kind is p.VAR_KEYWORD for p in params):
            continue  # passes its keywords on: look at the next target
        names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        break
    return None if names is None else [n for n in names if n not in fixed]


def check_keys(flag: str, owner: str, given: Iterable[str], valid: list[str] | None) -> None:
    """Refuse keys of ``flag`` that ``owner`` does not accept, suggesting the closest one.

    Raises:
        ValueError: For the first unknown key.
    """
    if valid is None:
        return
    for key in given:
        if not valid:
            raise ValueError(f"{owner} takes no keyword arguments, but {flag} gives {key!r}")
        if key not in valid:
            raise unknown_name_error(f"{flag} key for {owner}", key, valid)


def env_keywords(env_id: str) -> list[str] | None:
    """Keyword arguments of the registered env ``env_id``'s constructor."""
    import gymnasium as gym

    import llmsched_env  # noqa: F401  (registers the env ids)

    entry_point = gym.spec(env_id).entry_point
    if isinstance(entry_point, str):
        module, name = entry_point.split(":")
        entry_point = getattr(importlib.import_module(module), name)
    return accepted_keywords(entry_point.__init__)  # type: ignore[union-attr]


def check_env_kwargs(env_id: str, kwargs: dict[str, Any], flag: str = "--env-kwargs") -> None:
    """Refuse keys the env's constructor does not take, before any env is built.

    Raises:
        ValueError: Naming the key, the env and the closest valid key.
    """
    check_keys(flag, env_id, kwargs, env_keywords(env_id))


def check_policy_kwargs(
    kind: str, policy: str, kwargs: Iterable[str], flag: str = "--policy-kwargs"
) -> None:
    """Refuse keys the baseline ``policy`` of env kind ``kind`` does not take.

    Args:
        kind: The env kind.
        policy: The baseline's name.
        kwargs: The keyword arguments given (their names are checked).
        flag: Where they were given, for the message.

    Raises:
        ValueError: Naming the key, the policy and the closest valid key.
    """
    from llmsched_env.kinds import get_kind

    factory = get_kind(kind).policy_table().get(policy)
    if factory is not None:
        check_keys(flag, f"policy {policy!r}", kwargs, accepted_keywords(factory))


def listing(names: Iterable[str]) -> str:
    """Names as a comma-separated list for help texts."""
    return ", ".join(names)
