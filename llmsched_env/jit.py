"""The package's ``njit``: numba's, after the package-wide cache stamp is in place.

Every compiled function of the package is decorated with this ``njit``, so that
:func:`llmsched_env.numba_cache.install` has run before numba picks where to cache it (see that
module: a change to any of the package's sources renews every kernel).
"""

from numba import njit

from llmsched_env.numba_cache import install

install()

__all__ = ["njit"]
