"""Output directories of the command-line tools: checked before any work, never lost after it.

Every command that writes results (``llmsched evaluate``, ``compare``, ``stability``, ``train``,
``validate``) follows the same three rules:

1. :func:`check_output_dir` runs before any computation. A path naming a file, lying under a
   file, empty or not writable fails at once with a message naming the path.
2. Results are never overwritten silently: when one of the files a command writes already
   exists, :func:`check_output_dir` refuses unless ``overwrite`` is true (the ``--force`` flag).
3. :func:`write_or_rescue` writes the results whole (into a staging directory, then moved into
   place); if that still fails (the disk filled up, the directory was removed or made
   read-only meanwhile), it writes them to a fresh temporary directory instead and says where,
   so a finished computation is never thrown away and no cut-off file is left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def check_output_dir(
    out: str | Path,
    files: Iterable[str] = (),
    *,
    overwrite: bool = False,
    flag: str = "--force",
) -> Path:
    """Check, without leaving anything behind, that ``files`` can be written into ``out``.

    ``out`` must be a writable directory, or not exist yet below a writable directory.

    Args:
        out: The output directory.
        files: Names of the files the command will write there.
        overwrite: Allow replacing those files when they exist.
        flag: The option that allows overwriting, for the message.

    Returns:
        ``out`` as a path.

    Raises:
        ValueError: If ``out`` is empty, is a file or a broken symbolic link, lies under a file
            or in a place that is not writable, or already holds one of ``files`` and
            ``overwrite`` is false.

    Example:
        >>> check_output_dir("")
        Traceback (most recent call last):
        ...
        ValueError: the output directory must not be empty; expected a directory path
    """
    if not str(out).strip():
        raise ValueError("the output directory must not be empty; expected a directory path")
    path = Path(out)
    if path.is_symlink() and not path.exists():
        raise ValueError(f"output {str(path)!r} is a broken symbolic link; expected a directory")
    if path.exists() and not path.is_dir():
        raise ValueError(f"output {str(path)!r} is a file; expected a directory")
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot create the output directory {str(path)!r}: {existing} is a file")
    # A file made and removed at once: permission bits do not say it all (root passes
    # ``os.access`` in /proc, which takes no files).
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(
            f"cannot write to the output directory {str(path)!r} ({existing}: "
            f"{error.strerror or error})"
        ) from None
    present = [name for name in files if (path / name).exists()]
    if present and not overwrite:
        listed = ", ".join(repr(str(path / name)) for name in present)
        raise ValueError(
            f"{listed} {'exists' if len(present) == 1 else 'exist'}; choose another output "
            f"directory or overwrite {'it' if len(present) == 1 else 'them'} ({flag})"
        )
    return path


def write_or_rescue(
    out: str | Path,
    write: Callable[[Path], T],
    *,
    warn: Callable[[str], None] | None = None,
    replaces: Iterable[str] = (),
) -> tuple[Path, T]:
    """Create ``out`` and write the results there whole; on failure, to a new temporary directory.

    ``write`` writes into a staging directory inside the destination, and its files are moved
    into place only once it has returned, so a write that fails part-way (a full disk, a file
    size limit) leaves no cut-off file that a later run would take for results.

    Args:
        out: The output directory (created with its parents).
        write: Writes the results into the directory it is given and returns anything.
        warn: Told, in one line, why ``out`` failed and where the results went instead.
        replaces: Every file the command can write (some only with an option, or with
            matplotlib). Those of them in ``out`` that this write did not produce are an
            earlier run's, and are removed once the new files are in place, so that the
            directory never holds two runs' results side by side.

    Returns:
        ``(directory actually written, write's return value)``.

    Raises:
        OSError: If writing to the temporary directory fails as well (nothing is left there).
    """
    target = Path(out)
    try:
        target.mkdir(parents=True, exist_ok=True)
        return target, _write_whole(target, write, replaces)
    except OSError as error:
        rescue = Path(tempfile.mkdtemp(prefix="llmsched-results-"))
        try:
            result = _write_whole(rescue, write, ())
        except OSError as second:
            shutil.rmtree(rescue, ignore_errors=True)
            raise OSError(
                f"could not write the results to {str(target)!r} ({error.strerror or error}) "
                f"nor to a temporary directory ({second.strerror or second})"
            ) from None
        if warn is not None:
            warn(
                f"could not write to {str(target)!r} ({error.strerror or error}); "
                f"the results were written to {rescue} instead"
            )
        return rescue, result


def _write_whole(directory: Path, write: Callable[[Path], T], replaces: Iterable[str]) -> T:
    """``write`` into a staging directory in ``directory``, then move its files into place.

    Files named in ``replaces`` that ``write`` did not produce are then removed from
    ``directory`` (an earlier run's; see :func:`write_or_rescue`).

    Raises:
        OSError: If writing fails (the staged files are removed), or a file to be replaced is
            a directory (checked before any file is moved).
    """
    staging = Path(tempfile.mkdtemp(prefix=".llmsched-partial-", dir=directory))
    try:
        result = write(staging)
        written = sorted(staging.iterdir())
        blocked = [item.name for item in written if (directory / item.name).is_dir()]
        if blocked:
            raise IsADirectoryError(
                f"{str(directory / blocked[0])!r} is a directory, where a result file goes"
            )
        for item in written:
            os.replace(item, directory / item.name)
        produced = {item.name for item in written}
        for name in replaces:
            stale = directory / name
            if name not in produced and (stale.is_file() or stale.is_symlink()):
                stale.unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result
