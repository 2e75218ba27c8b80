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
        if target.parent == out:  # the staging directory inside out
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


def test_a_write_that_fails_part_way_leaves_no_cut_off_file(tmp_path):
    out = tmp_path / "out"

    def write(target):
        (target / "episodes.csv").write_text("complete\n")
        with (target / "records.csv").open("w") as handle:
            handle.write("policy,seed\nedf,100")
            if target.parent == out:
                raise OSError(27, "File too large")
            handle.write("00\n")
        return ["episodes.csv", "records.csv"]

    target, written = write_or_rescue(out, write)
    assert list(out.iterdir()) == []  # nothing moved in, the staging directory removed
    assert (target / "records.csv").read_text() == "policy,seed\nedf,10000\n"
    assert sorted(p.name for p in target.iterdir()) == written


def test_a_directory_where_a_result_goes_sends_every_result_elsewhere(tmp_path):
    out = tmp_path / "out"
    (out / "comparison.png").mkdir(parents=True)
    said = []

    def write(target):
        for name in ("episodes.csv", "comparison.png"):
            (target / name).write_text(name)
        return ["episodes.csv", "comparison.png"]

    target, _ = write_or_rescue(out, write, warn=said.append)
    assert target != out and sorted(p.name for p in out.iterdir()) == ["comparison.png"]
    assert "is a directory, where a result file goes" in said[0]


def test_a_write_that_fails_everywhere_says_so_and_leaves_nothing(tmp_path):
    def write(target):
        (target / "r.csv").write_text("cut")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=r"could not write the results to .* nor to a temporary"):
        write_or_rescue(tmp_path / "out", write)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_place_that_takes_no_files_is_refused_whatever_the_permission_bits():
    # /proc passes os.access(W_OK) for root but takes no files: the check makes one to know.
    with pytest.raises(ValueError, match=r"cannot write to the output directory '/proc/results'"):
        check_output_dir("/proc/results")


def test_an_earlier_runs_files_that_this_write_does_not_produce_are_removed(tmp_path):
    for name in ("a.csv", "b.png", "keep.txt"):
        (tmp_path / name).write_text("old")
    target, _ = write_or_rescue(
        tmp_path, lambda t: (t / "a.csv").write_text("new"), replaces=("a.csv", "b.png")
    )
    assert target == tmp_path
    assert (tmp_path / "a.csv").read_text() == "new" and not (tmp_path / "b.png").exists()
    assert (tmp_path / "keep.txt").read_text() == "old"
