from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from llmsched_env import metrics
from llmsched_env.numba_cache import PACKAGE_ROOT, install, source_stamp


def test_the_package_kernels_are_stamped_with_all_its_sources() -> None:
    cache_file = metrics.request_stats._cache._cache_file
    own_stamp, package_stamp = cache_file._source_stamp
    assert package_stamp == source_stamp(PACKAGE_ROOT)
    assert install() is True  # installing again keeps one set of stamped locators


def test_the_source_stamp_changes_with_any_file(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("B = 1\n")
    before = source_stamp(tmp_path)
    (tmp_path / "sub" / "b.py").write_text("B = 2\n")
    source_stamp.cache_clear()
    assert source_stamp(tmp_path) != before


_RUN = """
import sys
from pathlib import Path
root = Path(sys.argv[1])
sys.path.insert(0, str(root.parent))
if sys.argv[2] == "stamped":
    from llmsched_env.numba_cache import install
    install(root)
from toypkg import kernel
print(kernel.value())
"""


def test_a_kernel_recompiles_when_a_file_it_reads_changes(tmp_path: Path) -> None:
    """numba alone serves the stale kernel; with the package-wide stamp it compiles anew."""
    package = tmp_path / "toypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "constants.py").write_text("VALUE = 1\n")
    (package / "kernel.py").write_text(
        textwrap.dedent(
            """
            from numba import njit

            from toypkg.constants import VALUE


            @njit(cache=True)
            def value():
                return VALUE
            """
        )
    )

    def run(mode: str) -> str:
        # -B: no bytecode. Rewritten within the same second at the same size, constants.py
        # would otherwise be imported from its stale .pyc (Python checks mtime and size).
        result = subprocess.run(
            [sys.executable, "-B", "-c", _RUN, str(package), mode],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()

    assert run("numba") == "1"
    (package / "constants.py").write_text("VALUE = 2\n")
    assert run("numba") == "1"  # stale: numba checks kernel.py only
    assert run("stamped") == "2"
    (package / "constants.py").write_text("VALUE = 3\n")
    assert run("stamped") == "3"


_DIRECT_NJIT = re.compile(r"from numba import [^\n]*\b(njit|jit)\b|numba\.n?jit\b")


def test_every_kernel_module_takes_njit_from_the_package() -> None:
    """``llmsched_env.jit`` installs the stamp before numba places a kernel's cache."""
    direct = [
        path.relative_to(PACKAGE_ROOT).as_posix()
        for path in sorted(PACKAGE_ROOT.rglob("*.py"))
        if path.name != "jit.py" and _DIRECT_NJIT.search(path.read_text())
    ]
    assert direct == []
