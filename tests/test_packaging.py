"""What ``pip install .`` ships: every package and every data file of the source tree.

An editable install (the tests' own) finds modules from the source tree, so a package or data
file missing from ``pyproject.toml`` only shows in a regular install; these checks catch it here.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="the standard library reads TOML from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _package_dir(package: str) -> Path:
    mapped = SETUPTOOLS.get("package-dir", {})
    return ROOT / (mapped[package] if package in mapped else package.replace(".", "/"))


def test_every_package_of_the_source_tree_is_installed():
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("llmsched_env", "baselines", "agents")
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    listed = set(SETUPTOOLS["packages"])
    assert on_disk - listed == set(), "packages missing from [tool.setuptools] packages"
    assert all(_package_dir(p).is_dir() for p in listed)


def test_every_data_file_is_installed():
    data_dir = _package_dir("llmsched_env.data")
    patterns = SETUPTOOLS["package-data"]["llmsched_env.data"]
    shipped = {path for pattern in patterns for path in data_dir.glob(pattern)}
    on_disk = {
        path
        for path in data_dir.rglob("*")
        if path.is_file() and path.suffix != ".py" and "__pycache__" not in path.parts
    }
    missing = sorted(str(p.relative_to(data_dir)) for p in on_disk - shipped)
    assert missing == [], f"data files not matched by package-data: {missing}"


def _made_not_kept(name: str, is_dir: bool) -> bool:
    """Whether a top-level entry is one that runs, installs and builds make (never committed).

    Those are the names ``.gitignore`` lists (results, virtual environments, caches), plus
    ``__pycache__`` (always made by importing the root ``conftest.py``) and what a source
    distribution adds at its top (``PKG-INFO``, ``setup.cfg``, ``*.egg-info``).
    """
    ignore = ROOT / ".gitignore"
    patterns = ignore.read_text().split() if ignore.is_file() else []
    patterns += ["__pycache__/", "*.egg-info/", "PKG-INFO", "setup.cfg"]
    path = f"{name}/" if is_dir else name
    return any(
        fnmatch.fnmatch(path, pattern)
        for pattern in patterns
        if not pattern.startswith("!") and "/" not in pattern.rstrip("/")
    )


def test_the_source_distribution_names_every_top_level_file_and_directory():
    """The sdist had only the top-level tests (no test folders, fixtures or docs)."""
    named = set()
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        words = line.split("#")[0].split()
        if words and words[0] in ("include", "graft"):
            named.update(words[1:])
    # Found without MANIFEST.in: the packages and their data (pyproject.toml), the build file.
    found = {"llmsched_env", "baselines", "agents", "data", "pyproject.toml", "MANIFEST.in"}
    on_disk = {
        path.name
        for path in ROOT.iterdir()
        if not path.name.startswith(".")  # version control, CI and tool caches stay out
        and not _made_not_kept(path.name, path.is_dir())
    }
    assert on_disk - found - named == set()
