"""Named baseline policies for each environment, and the one lookup every caller uses.

A baseline is named by its registry name (``"length-split"``) or by a *setting* of it, the name
followed by keyword arguments in parentheses with JSON values:
``length-split(threshold_tokens=1024,long_replicas=2)``. A setting is built by
:func:`make_policy` like a name, and shown under the spelling given, so a tuned baseline can be
scored beside its defaults (``llmsched evaluate --policies``, ``llmsched compare --policies``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from baselines.base import Policy
from baselines.mixture import PerComponentPolicy
from llmsched_env.arguments import ArgumentTypeError
from llmsched_env.envs.mixture import BatchMixtureEnv
from llmsched_env.kinds import ENV_KINDS, get_kind, kind_of_env
from llmsched_env.registry import resolve, unknown_name_error

PolicyFactory = Callable[..., Policy]

#: Policy tables by environment kind (the kinds of :data:`llmsched_env.kinds.ENV_KINDS`).
POLICY_TABLES: dict[str, dict[str, PolicyFactory]] = {
    name: kind.policy_table() for name, kind in ENV_KINDS.items()
}


def env_kind(env: gym.Env) -> str:
    """The name of ``env``'s kind (``"batch"`` for ``BatchScheduling-v0`` ...).

    Raises:
        TypeError: If ``env`` is no environment of ``llmsched_env``.
    """
    return kind_of_env(env).name


def policy_names(kind: str) -> list[str]:
    """Names of the baselines for an environment kind, in table order.

    Raises:
        ValueError: For an unknown kind (the message lists the kinds).
    """
    return list(POLICY_TABLES[get_kind(kind).name])


_SETTING = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\((.*)\))?\s*$", re.DOTALL)
_ARGUMENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$", re.DOTALL)


def parse_policy(spec: str) -> tuple[str, dict[str, Any]]:
    """Split a baseline name or setting into the registry name and its keyword arguments.

    Example:
        >>> parse_policy("length-split(threshold_tokens=1024,long_replicas=2)")
        ('length-split', {'threshold_tokens': 1024, 'long_replicas': 2})
        >>> parse_policy("vllm")
        ('vllm', {})

    Raises:
        ValueError: For a malformed setting (the message shows the expected form), or an
            argument given twice.
    """
    form = "NAME or NAME(key=value,...) with JSON values, e.g. length-split(long_replicas=2)"
    match = _SETTING.match(spec) if isinstance(spec, str) else None
    if match is None:
        raise ValueError(f"baseline {spec!r} is not of the form {form}")
    name, inside = match.group(1), match.group(2)
    kwargs: dict[str, Any] = {}
    for part in split_policies(inside or ""):
        argument = _ARGUMENT.match(part)
        if argument is None:
            raise ValueError(f"baseline {spec!r}: argument {part!r} is not key=value ({form})")
        key, text = argument.group(1), argument.group(2).strip()
        if key in kwargs:
            raise ValueError(f"baseline {spec!r} gives {key} twice; give each argument once")
        try:
            kwargs[key] = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(
                f"baseline {spec!r}: the value of {key} is {text!r}, not a JSON value (a number, "
                'true, false, null or a "quoted string")'
            ) from None
    return name, kwargs


def split_policies(text: str) -> list[str]:
    """Split a comma-separated list of baselines, keeping each setting's commas.

    Commas inside parentheses, brackets, braces or double-quoted strings do not split.

    Example:
        >>> split_policies("vllm, length-split(threshold_tokens=1024,long_replicas=2)")
        ['vllm', 'length-split(threshold_tokens=1024,long_replicas=2)']
    """
    parts, current = [], []
    depth, quoted, escaped = 0, False, False
    for char in text:
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def check_policies(kind: str, specs: list[str]) -> None:
    """Check that every name or setting in ``specs`` names a baseline of the env kind ``kind``.

    Raises:
        ValueError: For a malformed setting or an unknown name (the message lists the names).
    """
    available = policy_names(kind)
    for spec in specs:
        base, _ = parse_policy(spec)
        if base not in available:
            raise unknown_name_error(f"{kind} policy", base, available)


def make_policy(name: str, env: gym.Env, **kwargs: Any) -> Policy:
    """Build the baseline called ``name`` (a registry name or a setting) for ``env``.

    Keyword arguments given here are merged over those of the setting. For a
    :class:`~llmsched_env.envs.mixture.BatchMixtureEnv` it is built on every component
    (:class:`~baselines.mixture.PerComponentPolicy`).

    Raises:
        ValueError: If ``name`` is not a baseline of ``env``'s kind (the message lists them),
            is a malformed setting, or gives the baseline an argument it does not take.
    """
    if isinstance(getattr(env, "unwrapped", env), BatchMixtureEnv):
        return PerComponentPolicy(env, lambda component: make_policy(name, component, **kwargs))
    table = POLICY_TABLES[env_kind(env)]
    base, given = parse_policy(name)
    factory = resolve("baseline policy", base, table)
    arguments = {**given, **kwargs}
    try:
        return factory(env, **arguments)
    except ArgumentTypeError as error:  # an argument it takes, of the wrong type
        raise ValueError(f"baseline {name!r}: {error}") from None
    except TypeError as error:
        if not arguments:
            raise
        raise ValueError(
            f"baseline {name!r}: {base} does not take the arguments {arguments}: {error}"
        ) from None
