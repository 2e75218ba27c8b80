from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from llmsched_env.workload import (
    DataFileNotFoundError,
    TraceSource,
    detect_trace_format,
    load_azure_trace,
    load_trace,
    make_workload_source,
    trace_source,
)
from llmsched_env.workload.trace_files import parse_trace_spec, trace_spec

from .stats_helpers import FIXTURES


def mooncake_file(path: Path, n: int = 10) -> Path:
    rows = [
        {"timestamp": 250 * i, "input_length": 600 + i, "output_length": 3, "hash_ids": [0, i]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_formats_are_detected_from_the_content_not_the_name(tmp_path: Path) -> None:
    assert detect_trace_format(FIXTURES / "azure_small.csv") == "azure"
    assert detect_trace_format(FIXTURES / "burstgpt_small.csv") == "burstgpt"
    assert detect_trace_format(mooncake_file(tmp_path / "m.jsonl")) == "mooncake"
    renamed = tmp_path / "trace.txt"  # a misleading extension does not matter
    renamed.write_text((FIXTURES / "burstgpt_small.csv").read_text())
    assert detect_trace_format(renamed) == "burstgpt"
    quoted = tmp_path / "q.csv"
    quoted.write_text('"TIMESTAMP","ContextTokens","GeneratedTokens"\n')
    assert detect_trace_format(quoted) == "azure"


def test_an_unknown_format_lists_the_formats_and_their_columns(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("time,prompt,output\n1,2,3\n")
    with pytest.raises(
        ValueError,
        match=r"no known trace format: its first line has columns "
        r"\['time', 'prompt', 'output'\]",
    ) as info:
        detect_trace_format(other)
    message = str(info.value)
    for expected in (
        "azure: CSV with columns ['TIMESTAMP'",
        "burstgpt: CSV with columns",
        "'Request tokens'",
        "mooncake: JSON lines with keys ['timestamp'",
    ):
        assert expected in message
    json_other = tmp_path / "o.jsonl"
    json_other.write_text('{"ts": 1, "input_length": 5}\n')
    with pytest.raises(ValueError, match=r"JSON keys \['input_length', 'ts'\]"):
        detect_trace_format(json_other)
    with pytest.raises(ValueError, match="is empty"):
        detect_trace_format(FIXTURES / "empty.csv")
    with pytest.raises(DataFileNotFoundError):
        detect_trace_format(tmp_path / "missing.csv")


def test_load_trace_detects_or_takes_the_format(tmp_path: Path) -> None:
    path = FIXTURES / "azure_small.csv"
    direct = load_azure_trace(path, count=4)
    detected = load_trace(path, count=4)
    named = load_trace(path, "azure", count=4)
    assert direct.fingerprint() == detected.fingerprint() == named.fingerprint()
    assert load_trace(mooncake_file(tmp_path / "m.jsonl")).prefix_block_tokens == 512
    with pytest.raises(ValueError, match=r"unknown trace format 'mooncak'.*'mooncake'\?"):
        load_trace(path, "mooncak")


def test_a_named_format_the_file_is_not_in_is_named_as_such(tmp_path: Path) -> None:
    # A Mooncake file named azure was said to have rows wider than its header.
    path = mooncake_file(tmp_path / "m.jsonl")
    with pytest.raises(
        ValueError, match=r"is in the 'mooncake' format .* the format named is 'azure'"
    ):
        load_trace(path, "azure")
    assert len(load_trace(path, "mooncake")) == len(load_trace(path))


def test_trace_specs_round_trip() -> None:
    assert parse_trace_spec(trace_spec("a/b.csv", "burstgpt")) == ("a/b.csv", "burstgpt")
    assert parse_trace_spec("trace:C:/x.csv") == ("C:/x.csv", None)  # not a format name
    # A file whose name starts like a format (in any case) comes back as that file.
    for name in ("azure:x.csv", "Azure:x.csv", "mooncake:"):
        path, trace_format = parse_trace_spec(trace_spec(name))
        assert trace_format is None and os.path.normpath(path) == name
    with pytest.raises(ValueError, match="names no file"):
        parse_trace_spec("trace:")
    # A capitalised format was read as part of the path ("trace file 'Azure:x.csv' does not
    # exist").
    with pytest.raises(ValueError, match=r"format 'Azure'.*did you mean 'azure'\?"):
        parse_trace_spec("trace:Azure:x.csv")


def test_a_trace_file_is_a_workload_source_by_its_spec(tmp_path: Path) -> None:
    path = mooncake_file(tmp_path / "mine.jsonl", n=20)
    source = make_workload_source(f"trace:{path}")
    assert isinstance(source, TraceSource) and source.name == "mine"
    assert source.calibration_size == 4 and source.natural_rate_rps == pytest.approx(4.0)
    a = source.sample(5, np.random.default_rng(3))
    b = make_workload_source(f"trace:mooncake:{path}").sample(5, np.random.default_rng(3))
    assert a.fingerprint() == b.fingerprint()  # same seed, same episode
    assert a.prefix_block_hashes is not None


def test_a_trace_too_short_to_split_names_the_file(tmp_path: Path) -> None:
    path = mooncake_file(tmp_path / "tiny.jsonl", n=3)
    with pytest.raises(
        ValueError, match=r"tiny.jsonl.*gives 0 calibration requests.*needs at least 5 requests"
    ):
        trace_source(path)


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zip"])
def test_compressed_traces_are_detected_and_read_by_their_extension(
    tmp_path: Path, suffix: str
) -> None:
    import bz2
    import gzip
    import lzma
    import zipfile

    for name, text in (
        ("a.csv", (FIXTURES / "azure_small.csv").read_text()),
        ("m.jsonl", mooncake_file(tmp_path / "plain.jsonl").read_text()),
    ):
        path = tmp_path / (name + suffix)
        if suffix == ".zip":
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr(name, text)
        else:
            opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[suffix]
            with opener(path, "wt", encoding="utf-8") as handle:
                handle.write(text)
        expected = load_trace(tmp_path / "plain.jsonl") if name == "m.jsonl" else None
        if expected is None:
            plain = tmp_path / name
            plain.write_text(text)
            expected = load_trace(plain)
        np.testing.assert_array_equal(load_trace(path).arrival_s, expected.arrival_s)
        np.testing.assert_array_equal(load_trace(path).prompt_tokens, expected.prompt_tokens)


def test_a_file_not_compressed_as_its_extension_says_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "a.csv.gz"
    fake.write_text((FIXTURES / "azure_small.csv").read_text())
    with pytest.raises(ValueError, match=r"a.csv.gz' cannot be read as a .gz file"):
        detect_trace_format(fake)


def test_detection_refuses_ambiguous_deeply_nested_and_abridges_long_headers(
    tmp_path: Path,
) -> None:
    both = tmp_path / "both.csv"
    both.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens,Timestamp,Request tokens,Response tokens\n"
    )
    with pytest.raises(
        ValueError, match=r"columns of several trace formats \['azure', 'burstgpt'\]"
    ):
        detect_trace_format(both)
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(ValueError, match=r"not valid JSON \(nested too deeply\)"):
        detect_trace_format(deep)
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"column_{i}_" + "x" * 60 for i in range(40)) + "\n")
    with pytest.raises(ValueError, match=r"x\.\.\.'\] and 28 more; expected") as info:
        detect_trace_format(wide)
    assert len(str(info.value)) < 1500


def test_a_json_line_longer_than_64_kib_is_still_detected(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    rows = [
        {"timestamp": i, "input_length": 600, "output_length": 6, "hash_ids": [i, i + 100]}
        | {"prompt": "x" * 70_000}
        for i in range(6)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert detect_trace_format(path) == "mooncake"
    assert len(load_trace(path)) == 6
