"""Output directories: checked before any work, never overwritten silently, never lost."""

from __future__ import annotations

import os

import pytest

from llmsched_env.outputs import check_output_dir, write_or_rescue


def test_a_new_or_empty_directory_is_accepted(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b", ["x.csv"]) == tmp_path / "a" / "b"
    assert check_output_dir(tmp_path, ["x.csv"]) == tmp_path
    assert not (tmp_path / "a").exists()  # nothing is created by the check


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: "", "must not be empty"),
        (lambda p: "   ", "must not be empty"),
        (lambda p: p / "file", "is a file; expected a directory"),
        (lambda p: p / "file" / "sub", "file is a file"),
    ],
)
def test_bad_locations_are_refused(tmp_path, make, message):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=message):
        check_output_dir(make(tmp_path), ["x.csv"])


def test_existing_results_need_overwrite(tmp_path):
    (tmp_path / "a.csv").write_text("old")
    with pytest.raises(ValueError, match=r"a.csv' exists; .* overwrite it \(--force\)"):
        check_output_dir(tmp_path, ["a.csv", "b.csv"])
    assert check_output_dir(tmp_path, ["a.csv"], overwrite=True) == tmp_path
    assert check_output_dir(tmp_path, ["b.csv"]) == tmp_path  # other files do not matter


def test_a_failed_write_goes_to_a_fresh_temporary_directory(tmp_path):
    out = tmp_path / "out"
    said = []

    def write(target):
        if target == out:
            raise PermissionError(13, "Permission denied")
        (target / "r.csv").write_text("result")
        return ["r.csv"]

    target, written = write_or_rescue(out, write, warn=said.append)
    assert target != out and (target / "r.csv").read_text() == "result" and written == ["r.csv"]
    assert said == [
        f"could not write to '{out}' (Permission denied); the results were "
        f"written to {target} instead"
    ]
    target, _ = write_or_rescue(tmp_path / "fine", lambda t: (t / "r.csv").write_text("ok"))
    assert target == tmp_path / "fine" and (target / "r.csv").read_text() == "ok"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_place_that_takes_no_files_is_refused_whatever_the_permission_bits():
    # /proc passes os.access(W_OK) for root but takes no files: the check makes one to know.
    with pytest.raises(ValueError, match=r"cannot write to the output directory '/proc/results'"):
        check_output_dir("/proc/results")
