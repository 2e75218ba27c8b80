"""numba's on-disk cache of the package's kernels, renewed when any of the package's sources change.

numba keys each cached function to its own source file only. A compiled function that calls or
inlines compiled code of another file (the batch env's step inlines the observation's and the
event loop's), or bakes in a constant defined elsewhere, is served from the cache after that
other file has changed -- after a ``git pull`` or a branch switch that leaves the caller's file
alone -- and silently runs the old code. :func:`install` adds the package's whole source to
the freshness stamp of every function defined in the package, so a change to any of its files
renews every kernel (compiled again at first use, about half a minute for all of them; see
:mod:`llmsched_env.compilation`); functions of other packages keep numba's own stamp.

It works through numba's list of cache locators (``CacheImpl._locator_classes``): each
locator backed by a source file gets a variant, tried first, that answers only for files under
the package's directory and stamps them with :func:`source_stamp` as well. Without that list
(a numba that reorganised its cache), nothing changes.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

#: The directory of the package's sources.
PACKAGE_ROOT = Path(__file__).resolve().parent


@functools.cache
def source_stamp(root: Path = PACKAGE_ROOT) -> str:
    """A digest of every ``.py`` file under ``root``: their relative paths and contents."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _stamped(base: type, root: Path) -> type:
    """A variant of numba's locator ``base`` for the files under ``root``, stamped with them."""

    class Stamped(base):  # type: ignore[misc, valid-type]
        stamped_root = root

        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            if root not in Path(py_file).resolve().parents:
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self) -> Any:
            return (super().get_source_stamp(), source_stamp(root))

    Stamped.__name__ = Stamped.__qualname__ = f"Stamped{base.__name__.lstrip('_')}"
    return Stamped


def install(root: Path = PACKAGE_ROOT) -> bool:
    """Stamp numba's cache of every function defined under ``root`` with all of ``root``'s sources.

    Call it before the functions are compiled (decorated); the package does so on import.
    Calling it again for the same root does nothing.

    Returns:
        Whether the stamped locators are in place (False if this numba has no locator list).
    """
    from numba.core import caching

    # The names numba gives them (public in recent versions, private in older ones).
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    mixin = getattr(caching, "_SourceFileBackedLocatorMixin", None) or getattr(
        caching, "SourceFileBackedLocatorMixin", None
    )
    locators = getattr(impl, "_locator_classes", None)
    if mixin is None or not isinstance(locators, list):
        return False
    root = root.resolve()
    if any(getattr(c, "stamped_root", None) == root for c in locators):
        return True
    stamped = [_stamped(c, root) for c in locators if issubclass(c, mixin)]
    locators[:0] = stamped
    _tolerate_damaged_indexes(caching)
    return True


def _tolerate_damaged_indexes(caching: Any) -> None:
    """Read a damaged file of numba's cache as a missing one (the kernel compiles again).

    numba unpickles a cached kernel's index and data files; one it cannot read back (a disk
    error, a write cut short) raised at every use of the kernel (``UnpicklingError``, or
    whatever the damaged bytes unpickle into), and every command failed, naming no file. Read
    as missing, the files are written anew when the kernel is next saved.
    """
    index_file = getattr(caching, "IndexDataCacheFile", None)
    for name, missing in (("_load_index", dict), ("_load_data", lambda: None)):
        load = getattr(index_file, name, None)
        if load is None or getattr(load, "tolerant", False):
            continue
        setattr(index_file, name, _tolerant(load, missing))


def _tolerant(load: Any, missing: Any) -> Any:
    """``load``, returning ``missing()`` where reading the file fails in any way."""

    @functools.wraps(load)
    def load_tolerantly(self: Any, *args: Any) -> Any:
        try:
            return load(self, *args)
        except Exception:
            return missing()

    load_tolerantly.tolerant = True  # type: ignore[attr-defined]
    return load_tolerantly
