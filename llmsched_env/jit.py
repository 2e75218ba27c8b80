"""The package's ``njit``: numba's, after the package-wide cache stamp is in place.

Every compiled function of the package is decorated with this ``njit``, so that
:func:`llmsched_env.numba_cache.install` has run before numba picks where to cache it (see that
module: a change to any of the package's sources renews every kernel).

:func:`implementation` serves callers that call one kernel many times with arguments of the same
types (an episode's steps): a call through numba's dispatcher first works out the type of every
argument, about 0.1 us an argument, which for a kernel of a dozen arguments and a few
microseconds of work is a large share of the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

from llmsched_env.numba_cache import install

install()

__all__ = ["implementation", "njit"]

#: Compiled implementations already looked up: (kernel, type key of the arguments) -> callable.
_IMPLEMENTATIONS: dict[tuple[Any, tuple], Callable[..., Any]] = {}


def _type_key(value: Any) -> Any:
    """A key equal for two values only if numba gives them the same type as arguments.

    An array's numba type is its dtype, number of dimensions, layout (from the contiguity
    flags), read-only flag and alignment; a tuple's, its elements'. Other values are keyed by
    their Python type (numba types a Python ``int`` as int64, a ``float`` as float64).
    """
    if isinstance(value, np.ndarray):
        flags = value.flags
        return (
            value.dtype,
            value.ndim,
            flags.c_contiguous,
            flags.f_contiguous,
            flags.writeable,
            flags.aligned,
        )
    if isinstance(value, tuple):
        return tuple(_type_key(v) for v in value)
    return type(value)


def implementation(kernel: Any, *args: Any) -> Callable[..., Any]:
    """``kernel``'s compiled implementation for arguments of the types of ``args``.

    Calling it skips the dispatcher's typing of every argument; it must then be called with
    arguments of exactly those types (it unboxes them as such), which is what callers ensure by
    keeping the implementation only as long as the arrays it was looked up for (an episode)
    and passing scalars of fixed Python types. The first lookup for a set of types compiles the
    kernel for them or loads it from numba's cache, as a first call would; later ones are a
    dictionary lookup.

    Args:
        kernel: A function decorated with :func:`njit`.
        *args: Arguments of the types the calls will pass.

    Example:
        >>> @njit
        ... def add(a, b):
        ...     return a + b
        >>> implementation(add, 1, 2)(3, 4)
        7
    """
    key = (kernel, _type_key(args))
    found = _IMPLEMENTATIONS.get(key)
    if found is None:
        signature = tuple(kernel.typeof_pyval(a) for a in args)
        found = _IMPLEMENTATIONS[key] = kernel.compile(signature)
    return found
