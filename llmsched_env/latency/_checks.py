"""Parameter checks shared by the latency models' ``__post_init__`` methods.

Each check names the class, the parameter, the bad value and what was expected, and returns the
value converted to a plain Python ``float`` or ``int``: the models are evaluated once per simulated
batch or iteration, and arithmetic on Python scalars is several times faster than on numpy scalars.
They delegate to :mod:`llmsched_env.arguments`, the library's one message format.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from llmsched_env import arguments


def real(owner: str, name: str, value: object, *, positive: bool = False) -> float:
    """Return ``value`` as a finite ``float`` that is ``>= 0`` (or ``> 0`` if ``positive``).

    Args:
        owner: The class being built, for the message.
        name: The parameter name, for the message.
        value: The value to check (a Python or numpy real number; ``bool`` is refused).
        positive: Require a strictly positive value instead of a non-negative one.

    Returns:
        ``float(value)``.

    Raises:
        TypeError: If ``value`` is not a real number.
        ValueError: If ``value`` is negative (or zero when ``positive``), infinite or nan.
    """
    if positive:
        return arguments.real(owner, name, value, positive=True)
    return arguments.real(owner, name, value, minimum=0)


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
    return arguments.integer(owner, name, value, minimum=minimum)


def batch_estimate(
    owner: str, batch_size: float, prompt_tokens: float, output_tokens: float
) -> None:
    """Refuse a batch no run has: ``batch_size >= 1``, ``prompt_tokens >= 0``, output ``>= 1``.

    A cheap guard for the public ``estimate_s`` of the batch latency models (a negative count
    gave a negative time, a batch of 0 divided by zero); the simulator never passes such values.

    Raises:
        ValueError: Naming the first bad argument and its value.
    """
    if batch_size >= 1 and prompt_tokens >= 0 and output_tokens >= 1:
        return
    for name, value, least in (
        ("batch_size", batch_size, 1),
        ("prompt_tokens", prompt_tokens, 0),
        ("output_tokens", output_tokens, 1),
    ):
        if not value >= least:
            raise ValueError(f"{owner}.estimate_s: {name} must be >= {least}, got {value!r}")


def request_lengths(owner: str, prompt_tokens: float, output_tokens: float) -> None:
    """Refuse lengths no request has in ``marginal_request_s``: prompt ``>= 0``, output ``>= 1``.

    A negative length gave a negative GPU time, which capacity estimates would divide by.

    Raises:
        ValueError: Naming the first bad argument and its value (nan and infinity included).
    """
    for name, value, least in (
        ("prompt_tokens", prompt_tokens, 0),
        ("output_tokens", output_tokens, 1),
    ):
        if not (value >= least and math.isfinite(value)):
            raise ValueError(
                f"{owner}.marginal_request_s: {name} must be a finite number >= {least}, "
                f"got {value!r}"
            )


#: The counts of an iteration latency model's ``estimate_s``, in its argument order.
ITERATION_COUNTS = (
    "prefill_tokens",
    "decode_tokens",
    "context_tokens",
    "prefill_kv_tokens",
    "prefill_sequences",
    "decode_kv_max",
    "decode_kv_min",
)


def iteration_estimate(owner: str, arguments: Mapping[str, Any]) -> None:
    """Refuse a negative or nan count (:data:`ITERATION_COUNTS`) in a public ``estimate_s``.

    Args:
        owner: The model's class, for the message.
        arguments: The ``estimate_s`` call's arguments by name (its ``locals()``).

    Raises:
        ValueError: Naming the first bad argument and its value.
    """
    for name in ITERATION_COUNTS:
        value = arguments[name]
        if not value >= 0:
            raise ValueError(f"{owner}.estimate_s: {name} must be >= 0, got {value!r}")
