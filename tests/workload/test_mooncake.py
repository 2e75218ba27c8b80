from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from llmsched_env.latency import AffineIterationLatency
from llmsched_env.sim import IterationServer, simulate
from llmsched_env.workload import (
    DataFileNotFoundError,
    LogNormalNoisePredictor,
    make_workload_source,
    shipped_data_path,
)
from llmsched_env.workload.mooncake import (
    MOONCAKE_CONVERSATION_TRACE,
    MOONCAKE_SYNTHETIC_TRACE,
    load_mooncake_trace,
)


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def row(t, n_in, n_out, ids):
    return {"timestamp": t, "input_length": n_in, "output_length": n_out, "hash_ids": ids}


def test_lengths_arrivals_and_full_block_hashes(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "t.jsonl",
        [row(1000, 1100, 5, [0, 1, 2]), row(1500, 1024, 1, [0, 1]), row(4000, 300, 9, [7])],
    )
    w = load_mooncake_trace(path)
    assert w.name == "t" and len(w) == 3
    assert w.arrival_s.tolist() == [0.0, 0.5, 3.0]  # ms -> s, rebased to the first request
    assert w.prompt_tokens.tolist() == [1100, 1024, 300]
    assert w.output_tokens.tolist() == [5, 1, 9] == w.predicted_output_tokens.tolist()
    assert w.prefix_block_tokens == 512
    chains = w.prefix_block_hashes
    # Only full 512-token blocks: 1100 // 512 = 2 (the partial third block has no hash), 2, 0.
    assert [len(c) for c in chains] == [2, 2, 0]
    assert chains[0].tolist() == chains[1].tolist()  # equal ids [0, 1]: equal prefixes


def test_hashes_are_chained_so_a_shared_id_after_a_different_block_shares_nothing(
    tmp_path: Path,
) -> None:
    path = write_lines(tmp_path / "t.jsonl", [row(0, 1024, 2, [0, 1]), row(1, 1024, 2, [5, 1])])
    a, b = load_mooncake_trace(path).prefix_block_hashes
    assert a[0] != b[0] and a[1] != b[1]


def test_unsorted_rows_are_sorted_with_a_warning_like_the_csv_readers(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "t.jsonl",
        [row(2000, 600, 2, [1]), row(1000, 1030, 3, [2, 3]), row(1000, 700, 4, [4])],
    )
    with pytest.warns(UserWarning, match="1 rows have a timestamp earlier"):
        w = load_mooncake_trace(path)
    assert w.prompt_tokens.tolist() == [1030, 700, 600]  # stable: ties keep file order
    assert [len(c) for c in w.prefix_block_hashes] == [2, 1, 1]  # hashes follow their rows


def test_windowing_keeps_each_request_with_its_hashes(tmp_path: Path) -> None:
    rows = [row(100 * i, 512 * (i + 1), 2, list(range(i + 1))) for i in range(6)]
    path = write_lines(tmp_path / "t.jsonl", rows)
    w = load_mooncake_trace(path, start_s=0.15, start=1, count=2, name="win")
    assert w.name == "win" and w.prompt_tokens.tolist() == [2048, 2560]  # rows 3 and 4
    assert w.arrival_s.tolist() == pytest.approx([0.0, 0.1])
    assert [len(c) for c in w.prefix_block_hashes] == [4, 5]


def test_predictor_is_deterministic_per_generator(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [row(i, 600, 100 + i, [i]) for i in range(5)])
    kw = {"predictor": LogNormalNoisePredictor(1.0)}
    a = load_mooncake_trace(path, rng=np.random.default_rng(0), **kw)
    b = load_mooncake_trace(path, rng=np.random.default_rng(0), **kw)
    assert np.array_equal(a.predicted_output_tokens, b.predicted_output_tokens)
    with pytest.raises(ValueError, match="rng is required"):
        load_mooncake_trace(path, **kw)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", r"line 2: not valid JSON"),
        ("[1, 2]", r"line 2: got a JSON list"),
        (
            '{"timestamp": 1, "input_length": 5, "output_length": 1}',
            r"line 2: missing keys \['hash_ids'\]",
        ),
        (row(1, -5, 1, []), r"line 2, field 'input_length': got -5, expected a whole number"),
        (row(1, 5.5, 1, []), r"line 2, field 'input_length': got 5.5"),
        (row(1, "12", 1, []), r"line 2, field 'input_length': got '12'"),
        (row(1, 5, 0, []), r"line 2, field 'output_length': got 0"),
        (row(1, 5, True, []), r"line 2, field 'output_length': got True"),
        (row(-1, 5, 1, []), r"line 2, field 'timestamp': got -1, expected a finite number"),
        (row("x", 5, 1, []), r"line 2, field 'timestamp': got 'x'"),
        (row(1, 5, 1, "0,1"), r"line 2, field 'hash_ids': got '0,1', expected a list"),
        (row(1, 5, 1, [1.5]), r"line 2, field 'hash_ids': got 1.5, expected an integer"),
        (row(1, 600, 1, [1, 2, 3]), r"'hash_ids': got '3 ids', expected one id per .* = 2 ids"),
        # A full block without its id would drop prefix sharing without a word.
        (row(1, 1100, 1, [7]), r"got '1 ids', expected .* floor\(input_length / 512\) = 2 and"),
        (row(10**400, 5, 1, []), r"line 2, field 'timestamp': got 1000.*, expected a finite"),
        (row(1e308, 5, 1, []), r"line 2, field 'timestamp': got 1e\+308, expected milliseconds"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", r"line 2: JSON nested too deeply"),
    ],
)
def test_malformed_lines_name_file_line_and_field(tmp_path: Path, line, match) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [row(0, 600, 2, [0]), line])
    with pytest.raises(ValueError, match=match) as info:
        load_mooncake_trace(path)
    assert "bad.jsonl" in str(info.value)


def test_empty_missing_and_binary_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no requests"):
        load_mooncake_trace(empty)
    with pytest.raises(DataFileNotFoundError, match="does not exist"):
        load_mooncake_trace(tmp_path / "nope.jsonl")
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        load_mooncake_trace(binary)


def test_a_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bom.jsonl", [row(0, 600, 2, [0]), row(5, 600, 2, [0])])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(load_mooncake_trace(path)) == 2


def test_shipped_traces_match_their_readme() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped files are sorted
        conv = load_mooncake_trace(shipped_data_path(MOONCAKE_CONVERSATION_TRACE))
        synth = load_mooncake_trace(shipped_data_path(MOONCAKE_SYNTHETIC_TRACE))
    assert len(conv) == 12_031 and len(synth) == 3_993
    assert round(float(conv.prompt_tokens.mean())) == 12_035
    assert round(float(conv.output_tokens.mean())) == 343
    assert all(len(c) == p // 512 for c, p in zip(conv.prefix_block_hashes, conv.prompt_tokens))


@pytest.mark.parametrize("name", ["mooncake-conversation", "mooncake-synthetic"])
def test_presets_carry_the_hashes_into_episodes(name: str) -> None:
    source = make_workload_source(name)
    w = source.sample(50, np.random.default_rng(0))
    assert w.name == name and w.prefix_block_tokens == 512
    assert len(w.prefix_block_hashes) == 50


def test_a_shared_512_token_block_is_32_cached_kv_blocks_of_16(tmp_path: Path) -> None:
    """Mooncake blocks (512 tokens) map onto the server's KV blocks (16): one hit reuses 32."""
    path = write_lines(
        tmp_path / "t.jsonl", [row(0, 1100, 40, [0, 1, 2]), row(500, 700, 2, [0, 9])]
    )
    w = load_mooncake_trace(path)
    server = IterationServer(
        w,
        n_gpus=1,
        latency=AffineIterationLatency(c_s=0.01, a_s_per_token=0.0001),
        kv_capacity_tokens=16 * 400,
        max_tokens=4096,
        max_sequences=8,
        rng=np.random.default_rng(0),
        kv_allocation="paged",
        kv_block_tokens=16,
        prefix_caching=True,
    )
    simulate(server, lambda s: s.run_iteration(10**9, 10**9, 10**9))
    assert server.records.completed.all()
    assert server.records.prefix_hit_tokens.tolist() == [0, 512]
