"""Parameter checks shared by the latency models' ``__post_init__`` methods.

Each check names the class, the parameter, the bad value and what was expected, and returns the
value converted to a plain Python ``float`` or ``int``: the models are evaluated once per simulated
batch or iteration, and arithmetic on Python scalars is several times faster than on numpy scalars.
They delegate to :mod:`llmsched_env.arguments`, the library's one message format.
"""

from __future__ import annotations

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
