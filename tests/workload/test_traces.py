from __future__ import annotations

import warnings
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from llmsched_env.workload import (
    AZURE_CONV_TRACE,
    QWEN_LATENCY_GRID,
    DataFileNotFoundError,
    LogNormalNoisePredictor,
    detect_trace_format,
    load_azure_trace,
    load_burstgpt_trace,
    load_mooncake_trace,
    shipped_data_path,
)

from .stats_helpers import FIXTURES

# The BurstGPT fixtures hold failed requests, dropped with a warning (one test checks it).
pytestmark = pytest.mark.filterwarnings("ignore:.*dropped .* failed requests:UserWarning")


def test_azure_small_fixture() -> None:
    w = load_azure_trace(FIXTURES / "azure_small.csv")
    assert w.name == "azure_small"
    assert len(w) == 8
    assert w.arrival_s[0] == 0.0
    assert w.arrival_s[1] == pytest.approx(4.3145790)  # seven fractional digits kept
    assert w.arrival_s[-1] == pytest.approx(10.0)
    assert w.prompt_tokens.tolist() == [374, 396, 879, 91, 1020, 2, 14050, 500]
    assert w.output_tokens.tolist() == [44, 109, 55, 16, 129, 7, 1000, 200]
    assert np.array_equal(w.predicted_output_tokens, w.output_tokens)
    assert w.mean_rate_rps == pytest.approx(0.7)


def test_azure_windowing() -> None:
    path = FIXTURES / "azure_small.csv"
    w = load_azure_trace(path, start=2, count=3, name="win")
    assert w.name == "win"
    assert w.prompt_tokens.tolist() == [879, 91, 1020]
    assert w.arrival_s[0] == 0.0
    assert w.arrival_s[-1] == pytest.approx(52.0 - 51.2224670)
    by_time = load_azure_trace(path, start_s=5.0)
    assert by_time.prompt_tokens.tolist() == [1020, 2, 14050, 500]
    both = load_azure_trace(path, start_s=5.0, start=1, count=2)
    assert both.prompt_tokens.tolist() == [2, 14050]
    with pytest.raises(ValueError, match="start must be < 8"):
        load_azure_trace(path, start=8)
    with pytest.raises(ValueError, match=r"no rows at or after start_s=100.0 \(the last"):
        load_azure_trace(path, start_s=100.0)


def test_azure_with_predictor() -> None:
    path = FIXTURES / "azure_small.csv"
    a = load_azure_trace(path, predictor=LogNormalNoisePredictor(1.0), rng=np.random.default_rng(0))
    b = load_azure_trace(path, predictor=LogNormalNoisePredictor(1.0), rng=np.random.default_rng(0))
    assert np.array_equal(a.predicted_output_tokens, b.predicted_output_tokens)
    assert not np.array_equal(a.predicted_output_tokens, a.output_tokens)
    with pytest.raises(ValueError, match="rng is required"):
        load_azure_trace(path, predictor=LogNormalNoisePredictor(1.0))


def test_azure_unsorted_rows_are_sorted_stably_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="2 rows have a timestamp earlier than the row before"):
        w = load_azure_trace(FIXTURES / "azure_unsorted.csv")
    # 47 (200), 47 (400) keep file order, then 50, 52, 53.
    assert w.prompt_tokens.tolist() == [200, 400, 100, 300, 500]
    assert w.arrival_s.tolist() == [0.0, 0.0, 3.0, 5.0, 6.0]


def test_sorted_file_gives_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_azure_trace(FIXTURES / "azure_small.csv")


@pytest.mark.parametrize(
    ("fixture", "error", "message"),
    [
        ("does_not_exist.csv", DataFileNotFoundError, "does not exist"),
        ("empty.csv", ValueError, r"is empty \(0 bytes\)"),
        ("azure_header_only.csv", ValueError, "has a header but no rows"),
        (
            "azure_missing_column.csv",
            ValueError,
            r"missing columns \['GeneratedTokens'\]; it has \['TIMESTAMP', 'ContextTokens'\]",
        ),
        ("azure_non_numeric.csv", ValueError, r"column 'ContextTokens', row 1: got 'lots'"),
        ("azure_negative.csv", ValueError, r"column 'GeneratedTokens', row 2: got -55"),
        ("azure_zero.csv", ValueError, r"'ContextTokens', row 1: got 0.*no zero counts"),
        ("azure_bad_timestamp.csv", ValueError, r"'TIMESTAMP', row 1: got 'yesterday'"),
    ],
)
def test_azure_errors(fixture: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        load_azure_trace(FIXTURES / fixture)


def test_missing_file_is_also_a_file_not_found_error() -> None:
    with pytest.raises(FileNotFoundError):
        load_azure_trace(FIXTURES / "nope.csv")
    with pytest.raises(ValueError, match="is not a file"):
        load_azure_trace(FIXTURES)
    # Path("") is the working directory: an empty path is refused as such, by every loader.
    for load in (load_azure_trace, load_burstgpt_trace, load_mooncake_trace, detect_trace_format):
        with pytest.raises(ValueError, match="got the empty path ''"):
            load("")


def test_azure_missing_and_numeric_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n,5,5\n2023-11-16 18:15:46,5,5\n")
    with pytest.raises(ValueError, match=r"'TIMESTAMP', row 0: got nan"):
        load_azure_trace(path)
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n1.5,5,5\n")
    with pytest.raises(ValueError, match="holds numbers"):
        load_azure_trace(path)


def test_real_azure_trace() -> None:
    w = load_azure_trace(shipped_data_path(AZURE_CONV_TRACE))
    assert len(w) == 19_366
    assert w.mean_rate_rps == pytest.approx(5.53, rel=0.01)
    assert w.prompt_tokens.min() >= 1 and w.output_tokens.min() >= 1
    assert w.output_tokens.max() == 1000


def test_shipped_data_path() -> None:
    assert shipped_data_path(QWEN_LATENCY_GRID).is_file()
    with pytest.raises(DataFileNotFoundError, match=r"not a shipped data file.*AzureLLM"):
        shipped_data_path("missing.csv")


# --- BurstGPT -------------------------------------------------------------------------------


def test_burstgpt_drops_failed_requests_by_default() -> None:
    with pytest.warns(UserWarning, match=r"dropped 2 failed requests \(0 response tokens"):
        w = load_burstgpt_trace(FIXTURES / "burstgpt_small.csv")
    assert len(w) == 8
    assert w.prompt_tokens.tolist() == [472, 417, 150, 20, 230, 251, 900, 611]
    assert w.output_tokens.tolist() == [18, 47, 34, 392, 121, 7, 700, 123]
    assert w.arrival_s.tolist() == [0.0, 113.0, 135.0, 155.0, 195.0, 225.0, 255.0, 295.0]


def test_burstgpt_keeps_failed_requests_as_prefill_only() -> None:
    w = load_burstgpt_trace(FIXTURES / "burstgpt_small.csv", drop_failed=False)
    assert len(w) == 10
    assert w.prompt_tokens[1] == 1087 and w.output_tokens[1] == 1
    assert w.output_tokens[3] == 1


def test_burstgpt_filters() -> None:
    path = FIXTURES / "burstgpt_small.csv"
    gpt4 = load_burstgpt_trace(path, models="GPT-4")
    assert gpt4.prompt_tokens.tolist() == [417, 20, 900]
    assert gpt4.arrival_s.tolist() == [0.0, 42.0, 142.0]
    api = load_burstgpt_trace(path, log_types=["API log"], drop_failed=False)
    assert api.prompt_tokens.tolist() == [1360, 150, 20, 611]
    both = load_burstgpt_trace(path, models=["ChatGPT"], log_types="Conversation log")
    assert both.prompt_tokens.tolist() == [472, 230, 251]
    with pytest.raises(ValueError, match=r"unknown 'Model' value.*'GPT4'.*Did you mean 'GPT-4'"):
        load_burstgpt_trace(path, models="GPT4")
    with pytest.raises(ValueError, match="no rows left after filtering"):
        load_burstgpt_trace(
            FIXTURES / "burstgpt_zero_request.csv", models="ChatGPT", log_types="API log"
        )
    with pytest.raises(ValueError, match="no rows at or after start_s=200.0"):
        load_burstgpt_trace(path, models="GPT-4", log_types="API log", start_s=200)


def test_burstgpt_windowing() -> None:
    path = FIXTURES / "burstgpt_small.csv"
    w = load_burstgpt_trace(path, start=2, count=3)
    assert w.prompt_tokens.tolist() == [150, 20, 230]
    assert w.arrival_s.tolist() == [0.0, 20.0, 60.0]
    late = load_burstgpt_trace(path, start_s=150)  # the trace's own clock
    assert late.prompt_tokens.tolist() == [20, 230, 251, 900, 611]
    late_window = load_burstgpt_trace(path, start_s=150, start=1, count=2, models="ChatGPT")
    assert late_window.prompt_tokens.tolist() == [251, 611]


def test_burstgpt_unsorted() -> None:
    with pytest.warns(UserWarning, match="1 rows have a timestamp earlier"):
        w = load_burstgpt_trace(FIXTURES / "burstgpt_unsorted.csv")
    assert w.prompt_tokens.tolist() == [200, 100, 300]
    assert w.arrival_s.tolist() == [0.0, 5.0, 15.0]


def test_burstgpt_zero_request_tokens_are_dropped_with_a_warning() -> None:
    path = FIXTURES / "burstgpt_zero_request.csv"
    with pytest.warns(UserWarning, match="dropped 1 rows with 0 request tokens"):
        w = load_burstgpt_trace(path)
    assert w.prompt_tokens.tolist() == [100, 300]
    with pytest.warns(UserWarning, match="dropped 2 rows with 0 request tokens"):
        load_burstgpt_trace(path, drop_failed=False)


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("empty.csv", "is empty"),
        ("burstgpt_bad.csv", r"column 'Response tokens', row 1: got 12.5"),
        (
            "azure_small.csv",
            r"missing columns \['Timestamp', 'Request tokens', 'Response tokens'\]",
        ),
    ],
)
def test_burstgpt_errors(fixture: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_burstgpt_trace(FIXTURES / fixture)


def test_burstgpt_more_errors(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("Timestamp,Request tokens,Response tokens\n1,5,5\nsoon,5,5\n")
    with pytest.raises(ValueError, match=r"'Timestamp', row 1: got 'soon'"):
        load_burstgpt_trace(path)
    path.write_text("Timestamp,Request tokens,Response tokens\n1,-5,5\n")
    with pytest.raises(ValueError, match=r"'Request tokens', row 0: got -5"):
        load_burstgpt_trace(path)
    path.write_text("Timestamp,Request tokens,Response tokens\n1,5,\n")
    with pytest.raises(ValueError, match=r"'Response tokens', row 0: got nan"):
        load_burstgpt_trace(path)
    path.write_text("Timestamp,Request tokens,Response tokens\n1,5,5\n")
    with pytest.raises(ValueError, match=r"missing columns \['Model'\]"):
        load_burstgpt_trace(path, models="ChatGPT")
    assert len(load_burstgpt_trace(path)) == 1  # Model / Log Type only needed for filtering


def test_burstgpt_timestamps_must_be_non_negative_and_close_together(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("Timestamp,Request tokens,Response tokens\n-100,5,5\n1,5,5\n")
    with pytest.raises(ValueError, match=r"'Timestamp', row 0: got -100, expected seconds >= 0"):
        load_burstgpt_trace(path)
    path.write_text("Timestamp,Request tokens,Response tokens\n0,5,5\n1e300,5,5\n")
    with pytest.raises(ValueError, match=r"row 1: got 1e\+300, expected a time within 1e\+10 s"):
        load_burstgpt_trace(path)


def test_burstgpt_argument_types_are_checked() -> None:
    path = FIXTURES / "burstgpt_small.csv"
    with pytest.raises(TypeError, match="drop_failed must be True or False, got 'no'"):
        load_burstgpt_trace(path, drop_failed="no")
    with pytest.raises(TypeError, match="'Model' values to keep must be a str"):
        load_burstgpt_trace(path, models=b"ChatGPT")
    with pytest.raises(TypeError, match="predictor must have predict"):
        load_burstgpt_trace(path, predictor="x", rng=np.random.default_rng(0))


def test_azure_offsets_are_compared_in_utc_and_far_timestamps_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    # A daylight-saving change mid-trace: the offset moves from +01:00 to +02:00.
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-03-26 01:59:00+01:00,5,5\n2023-03-26 03:01:00+02:00,5,5\n"
    )
    assert load_azure_trace(path).arrival_s.tolist() == [0.0, 120.0]
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "1700-01-01 00:00:00,5,5\n2023-11-16 18:03:19,5,5\n"
    )
    with pytest.raises(
        ValueError, match=r"row 1: got '2023-11-16 18:03:19', expected a time within"
    ):
        load_azure_trace(path)


def test_azure_times_are_the_correctly_rounded_seconds_whatever_the_pandas(tmp_path: Path) -> None:
    # The first rows of the Azure conversation trace. pandas 3 parses them in microseconds and
    # its total_seconds() gave 5.8926549999999995 for the last one (pandas 2: 5.892655), so the
    # trace's requests arrived at other times under other pandas versions.
    stamps = [
        "2023-11-16 18:15:46.6805900",
        "2023-11-16 18:15:50.9951690",
        "2023-11-16 18:15:51.2224670",
        "2023-11-16 18:15:51.3910170",
        "2023-11-16 18:15:52.5732450",
    ]
    path = tmp_path / "a.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{t},5,5\n" for t in stamps)
    )
    first = Decimal(stamps[0][-10:])
    expected = [float(Decimal(t[-10:]) - first) for t in stamps]  # one rounding, to nearest
    assert load_azure_trace(path).arrival_s.tolist() == expected
    assert expected[-1] == 5.892655


def test_azure_times_spanning_centuries_in_nanoseconds_do_not_overflow(tmp_path: Path) -> None:
    # 309 years, within the span check's 317, but past int64's 292 years of nanoseconds.
    stamps = ["1700-01-01 00:00:00.000000001", "2000-01-01 00:00:00", "2009-01-01 00:00:00"]
    path = tmp_path / "a.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{t},5,5\n" for t in stamps)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rows are sorted: no warning of a reordering
        arrival = load_azure_trace(path).arrival_s
    ticks = [int(np.datetime64(t, "ns").astype(np.int64)) for t in stamps]
    assert arrival.tolist() == [float(t - ticks[0]) / 1e9 for t in ticks]  # Python's exact ints
    assert arrival[2] > 9.7e9  # seconds: the 309 years


@pytest.mark.parametrize(
    "header",
    [
        "TIMESTAMP,ContextTokens,GeneratedTokens,GeneratedTokens",
        # Named again with other spaces around it: repeated only once stripped.
        "TIMESTAMP,ContextTokens,GeneratedTokens, GeneratedTokens",
    ],
)
def test_a_column_named_twice_is_refused(tmp_path: Path, header: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text(f"{header}\n2023-11-16 18:15:46,5,5,6\n")
    with pytest.raises(ValueError, match=r"names the column 'GeneratedTokens' more than once"):
        load_azure_trace(path)


_AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


@pytest.mark.parametrize("loader", [load_azure_trace, load_burstgpt_trace])
def test_unreadable_files_name_the_file_and_the_expected_format(tmp_path: Path, loader) -> None:
    binary = tmp_path / "trace.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=r"trace\.csv' is not UTF-8 text.*header line"):
        loader(binary)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n1,2,3,4\n")
    with pytest.raises(ValueError, match=r"ragged\.csv', line 3: 4 fields, but the header names 2"):
        loader(ragged)
    blank = tmp_path / "blank.csv"
    blank.write_text("  \n\n \t\n")
    with pytest.raises(ValueError, match=r"blank\.csv' holds only whitespace \(7 bytes\)"):
        loader(blank)


def test_a_huge_token_count_names_file_row_column_and_value(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(_AZURE_HEADER + "2023-11-16 18:15:46,5,5\n2023-11-16 18:15:47,7,1e30\n")
    with pytest.raises(ValueError, match=r"t\.csv', column 'GeneratedTokens', row 1: got 1e\+30"):
        load_azure_trace(path)


def test_rows_wider_than_the_header_are_refused_not_shifted(tmp_path: Path) -> None:
    # pandas would take the first field of such rows as an index and shift every column left.
    path = tmp_path / "wide.csv"
    path.write_text("Timestamp,Request tokens,Response tokens\n0,100,10,7\n1,200,20,7\n")
    with pytest.raises(ValueError, match=r"wide\.csv': its rows have more fields than its header"):
        load_burstgpt_trace(path)
    # A trailing comma on every row is an empty last field, not data: read as written.
    path.write_text(_AZURE_HEADER + "2023-11-16 18:15:46,10,5,\n2023-11-16 18:15:47,12,6,\n")
    trace = load_azure_trace(path)
    assert trace.prompt_tokens.tolist() == [10, 12]
    assert trace.output_tokens.tolist() == [5, 6]


@pytest.mark.parametrize("value", ["today", "now", "2023-11-16 18:1", "16/11/2023 18:15:46"])
def test_azure_timestamps_must_be_iso_8601_date_times(tmp_path: Path, value: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text(_AZURE_HEADER + f"2023-11-16 18:15:46,10,5\n{value},12,6\n")
    with pytest.raises(ValueError, match=rf"row 1: got '{value}', expected an ISO 8601 date-time"):
        load_azure_trace(path)


def test_azure_hour_only_offsets_are_compared_in_utc(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        _AZURE_HEADER + "2023-11-16 18:15:46+01,10,5\n2023-11-16 18:15:47+00,12,6\n"
        "2023-11-16 19:15:50,12,6\n"
    )
    # 17:15:46, 18:15:47 and 19:15:50 in UTC (a time without an offset is taken as UTC).
    assert load_azure_trace(path).arrival_s.tolist() == [0.0, 3601.0, 7204.0]


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zip"])
def test_a_damaged_compressed_csv_names_the_file_and_the_compression(
    tmp_path: Path, suffix: str
) -> None:
    import gzip

    whole = gzip.compress(((FIXTURES / "azure_small.csv").read_text() * 50).encode())
    path = tmp_path / ("t.csv" + suffix)
    # A gzip stream cut in half, or plain text under a compressed file's name.
    path.write_bytes(whole[: len(whole) // 2] if suffix == ".gz" else b"TIMESTAMP,a\n1,2\n")
    with pytest.raises(ValueError, match=rf"t\.csv\{suffix}' cannot be read as a \{suffix} file"):
        load_azure_trace(path)


def test_azure_timestamps_in_iso_8601_basic_format_are_read(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(_AZURE_HEADER + "20231116T181500,10,5\n20231116T181502.5,12,6\n")
    assert load_azure_trace(path).arrival_s.tolist() == [0.0, 2.5]
