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

import warnings
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from llmsched_env.numba_cache import install

install()

__all__ = ["implementation", "njit"]


def njit(*args: Any, **kwargs: Any) -> Any:
    """Numba's ``njit``; with ``cache=True`` and nowhere to cache, it compiles uncached.

    numba refuses ``cache=True`` when no directory it can write is found (a read-only install
    with an unwritable home and no ``NUMBA_CACHE_DIR``), which made importing the package fail.
    Then every kernel compiles at each start instead, after one warning.
    """
    if args and callable(args[0]):  # the bare decorator: @njit
        return numba.njit(*args, **kwargs)
    decorate = numba.njit(*args, **kwargs)
    if not kwargs.get("cache"):
        return decorate

    def decorate_or_compile_uncached(function: Callable[..., Any]) -> Any:
        try:
            return decorate(function)
        except RuntimeError as error:
            if "cannot cache function" not in str(error):
                raise
            _warn_once_of_no_cache(error)
            return numba.njit(*args, **{**kwargs, "cache": False})(function)

    return decorate_or_compile_uncached


_warned_of_no_cache: list[bool] = []


def numba_cannot_cache() -> bool:
    """Whether some kernel was compiled uncached, numba having nowhere to cache it."""
    return bool(_warned_of_no_cache)


def _warn_once_of_no_cache(error: RuntimeError) -> None:
    if not _warned_of_no_cache:
        _warned_of_no_cache.append(True)
        warnings.warn(
            f"numba cannot cache the simulator's kernels ({error}); they compile at every start "
            "(about half a minute). Set NUMBA_CACHE_DIR to a writable directory to cache them.",
            RuntimeWarning,
            stacklevel=3,
        )


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
    if not hasattr(kernel, "compile"):  # run uncompiled (NUMBA_DISABLE_JIT=1)
        return kernel
    key = (kernel, _type_key(args))
    found = _IMPLEMENTATIONS.get(key)
    if found is None:
        signature = tuple(kernel.typeof_pyval(a) for a in args)
        found = _IMPLEMENTATIONS[key] = kernel.compile(signature)
    return found
