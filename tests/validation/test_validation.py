"""Replaying real vLLM runs: loading checks, measured statistics, replay, report and CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from llmsched_env.cli import main
from llmsched_env.validation import (
    METRICS,
    RUN_SETTINGS,
    STATS,
    VALIDATION_COLUMNS,
    RunDataError,
    RunSettings,
    latency_stats,
    load_run,
    measured_latencies_ms,
    replay,
    request_latencies_ms,
    shipped_run_names,
    validate,
    validate_run,
)

SHIPPED = [
    "RTX4090-Llama-3.1-8B",
    "RTXPRO6000-Llama-3.1-8B",
    "RTXPRO6000-Qwen3-30B-A3B-Instruct-2507",
    "RTXPRO6000-Qwen3-32B",
]
#: The fastest shipped run to replay whole (about 0.2 s).
QUICK_RUN = "RTXPRO6000-Llama-3.1-8B"

# A tiny valid run: r0 has 5 output tokens, r1 one (no TPOT), r2 three.
REQUESTS = [
    {"request_id": "r0", "input_toks": 10, "output_toks": 5, "queued_ts": 100.0,
     "first_token_ts": 100.5, "last_token_ts": 102.5},
    {"request_id": "r1", "input_toks": 20, "output_toks": 1, "queued_ts": 101.0,
     "first_token_ts": 101.2, "last_token_ts": 101.2},
    {"request_id": "r2", "input_toks": 30, "output_toks": 3, "queued_ts": 101.5,
     "first_token_ts": 102.5, "last_token_ts": 103.5},
]  # fmt: skip
TIMESERIES = "t,running,waiting,kv_cache_pct\n1.0,1,0,0.0\n2.0,2,1,0.0\n3.0,1,0,0.0\n"
SUMMARY = """Metric                           vLLM         Sim     Diff%
-----------------------------------------------------------
TTFT Mean                       566.7       600.0     +5.9%
TTFT Median                     500.0       500.0     +0.0%
TTFT P90                        900.0       900.0     +0.0%
TTFT P99                        990.0       990.0     +0.0%

TPOT Mean                       500.0       490.0     -2.0%
TPOT Median                     500.0       490.0     -2.0%
TPOT P90                        500.0       490.0     -2.0%
TPOT P99                        500.0       490.0     -2.0%

Latency Mean                   1566.7      1524.4     -2.7%
Latency Median                 2000.0      1920.0     -4.0%
Latency P90                    2400.0      2342.4     -2.4%
Latency P99                    2490.0      2435.2     -2.2%
"""


def write_run(path, requests=None, timeseries=TIMESERIES, meta=None, summary=SUMMARY):
    """A run directory from small hand-written files (a file is left out when given None)."""
    path.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in requests or REQUESTS]
    (path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    if timeseries is not None:
        (path / "timeseries.csv").write_text(timeseries)
    (path / "meta.json").write_text(json.dumps(meta or {"tick_seconds": 1.0}))
    if summary is not None:
        (path / "llmservingsim_validation_summary.txt").write_text(summary)
    return path


def with_field(index, **changes):
    rows = [dict(r) for r in REQUESTS]
    rows[index].update(changes)
    return rows


# ---------------------------------------------------------------- loading
def test_a_hand_written_run_loads(tmp_path):
    run = load_run(write_run(tmp_path / "tiny"))
    assert run.name == "tiny" and len(run) == 3 and run.tick_s == 1.0
    assert run.requests["request_id"].tolist() == ["r0", "r1", "r2"]
    assert run.requests["output_toks"].dtype == np.int64
    assert run.timeseries["running"].tolist() == [1, 2, 1]
    assert run.published_error_pct("ttft", "mean") == 5.9
    assert run.published_error_pct("e2e", "p50") == -4.0
    assert math.isnan(run.published_error_pct("e2e", "p95"))


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        (with_field(1, last_token_ts=101.0), "line 2: last_token_ts = 101.0 is before"),
        (with_field(2, first_token_ts=101.0), "line 3: first_token_ts = 101.0 is before queued"),
        (with_field(0, output_toks=0), "line 1: output_toks must be >= 1 token, got 0"),
        (with_field(0, input_toks=2.5), "input_toks must be a whole number of tokens, got 2.5"),
        (with_field(1, queued_ts="soon"), "line 2: queued_ts must be a finite number of seconds, "),
        (with_field(1, queued_ts=-1.0), "line 2: queued_ts must be >= 0 s, got -1.0"),
        (with_field(2, request_id="r0"), "line 3: duplicate request_id 'r0' (first on line 1)"),
        (with_field(0, request_id=7), "request_id must be a non-empty string, got 7"),
        ([*REQUESTS[:2], {"request_id": "r9"}], "line 3: missing field(s) ['input_toks'"),
        ([REQUESTS[0], "{not json"], "line 2: not valid JSON"),
        ([REQUESTS[0], "[1, 2]"], "line 2: expected a JSON object"),
    ],
)
def test_bad_requests_are_reported_with_file_line_and_value(tmp_path, requests, message):
    path = write_run(tmp_path / "bad", requests=requests)
    with pytest.raises(RunDataError, match="requests.jsonl, line") as error:
        load_run(path)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("timeseries", "message"),
    [
        ("t,running\n1.0,1\n", "missing column(s) ['waiting']"),
        ("t,running,waiting\n1.0,1,0\n2.0,abc,0\n", "line 3, column 'running': expected a number"),
        ("t,running,waiting\n1.0,1,0\n2.0,1,-3\n", "line 3, column 'waiting'"),
        ("t,running,waiting\n1.0,1,0\n2.0,,0\n", "line 3, column 'running'"),
        ("t,running,waiting\n2.0,1,0\n1.0,1,0\n", "times must increase, got 1.0 after 2.0"),
        ("", "empty file"),
    ],
)
def test_bad_timeseries_are_reported_with_line_column_and_value(tmp_path, timeseries, message):
    with pytest.raises(RunDataError, match="timeseries.csv") as error:
        load_run(write_run(tmp_path / "bad", timeseries=timeseries))
    assert message in str(error.value)
    if "abc" in timeseries:
        assert "'abc'" in str(error.value)


@pytest.mark.parametrize(
    ("summary", "message"),
    [
        (SUMMARY.replace("TTFT P90 ", "TTFT P42 "), "unknown row TTFT P42"),
        (SUMMARY.replace("+5.9%", "about five"), "line 3: expected '<metric> <stat>"),
        ("\n".join(SUMMARY.splitlines()[:-1]), "missing rows for (metric, stat) [('e2e', 'p99')]"),
        (SUMMARY + "TTFT Mean 1.0 1.0 +0.0%\n", "row TTFT Mean appears twice"),
        (SUMMARY.replace("566.7", "nan"), "measured value must be a number >= 0 (ms), got 'nan'"),
    ],
)
def test_bad_summaries_are_reported(tmp_path, summary, message):
    with pytest.raises(RunDataError, match="llmservingsim_validation_summary.txt") as error:
        load_run(write_run(tmp_path / "bad", summary=summary))
    assert message in str(error.value)


def test_timestamps_in_milliseconds_are_refused(tmp_path):
    times = ("queued_ts", "first_token_ts", "last_token_ts")
    rows = [{**r, **{f: r[f] * 1e3 for f in times}} for r in REQUESTS]
    with pytest.raises(RunDataError, match="requests.jsonl") as error:
        load_run(write_run(tmp_path / "ms", requests=rows))
    message = str(error.value)
    assert "span 3,500 s" in message and "covers 2 s" in message and "in seconds" in message


def test_missing_files_bad_meta_and_bad_paths(tmp_path):
    path = write_run(tmp_path / "a", timeseries=None, summary=None)
    with pytest.raises(RunDataError, match="lacks") as error:
        load_run(path)
    assert "'timeseries.csv'" in str(error.value)
    assert "'llmservingsim_validation_summary.txt'" in str(error.value)
    for meta in ({"tick_seconds": 0}, {"other": 1}):
        with pytest.raises(RunDataError, match="tick_seconds must be a positive number"):
            load_run(write_run(tmp_path / "b", meta=meta))
    (tmp_path / "c").write_text("x")
    with pytest.raises(RunDataError, match="is a file; expected a run directory"):
        load_run(tmp_path / "c")
    with pytest.raises(ValueError, match="Did you mean 'RTX4090-Llama-3.1-8B'"):
        load_run("RTX4090-Llama3.1-8B")
    with pytest.raises(RunDataError, match="no requests"):
        load_run(write_run(tmp_path / "d", requests=["", ""]))


def test_the_four_runs_are_shipped_with_their_settings():
    assert shipped_run_names() == SHIPPED
    assert sorted(RUN_SETTINGS) == SHIPPED
    for name in SHIPPED:
        run = load_run(name)
        assert len(run) == 300 and run.tick_s == 1.0
        published = [run.published_error_pct(m, "mean") for m in METRICS]
        assert list(RUN_SETTINGS[name].llmservingsim_mean_error_pct) == published


# ---------------------------------------------------------------- measured statistics
def test_measured_statistics_equal_hand_computed_values(tmp_path):
    run = load_run(write_run(tmp_path / "tiny"))
    frame = measured_latencies_ms(run)
    assert frame["ttft_ms"].tolist() == pytest.approx([500.0, 200.0, 1000.0])
    assert frame["e2e_ms"].tolist() == pytest.approx([2500.0, 200.0, 2000.0])
    tpot = frame["tpot_ms"].tolist()
    assert tpot[0] == pytest.approx(500.0) and math.isnan(tpot[1]) and tpot[2] == pytest.approx(500)
    stats = latency_stats(frame).set_index(["metric", "stat"])["value_ms"]
    assert list(stats.index) == [(m, s) for m in METRICS for s in STATS]
    # TTFT over all three requests, sorted 200, 500, 1000 (linear percentiles).
    assert stats["ttft", "mean"] == pytest.approx(1700 / 3)
    assert stats["ttft", "p50"] == pytest.approx(500.0)
    assert stats["ttft", "p90"] == pytest.approx(500 + 0.8 * 500)
    assert stats["ttft", "p99"] == pytest.approx(500 + 0.98 * 500)
    # TPOT leaves out r1 (one output token): two requests of 500 ms.
    assert stats["tpot", "mean"] == pytest.approx(500.0)
    assert stats["tpot", "p99"] == pytest.approx(500.0)
    # E2E sorted 200, 2000, 2500.
    assert stats["e2e", "mean"] == pytest.approx(4700 / 3)
    assert stats["e2e", "p50"] == pytest.approx(2000.0)
    assert stats["e2e", "p90"] == pytest.approx(2000 + 0.8 * 500)


def test_tpot_is_undefined_when_every_output_is_one_token(tmp_path):
    rows = [with_field(1, request_id=f"x{i}")[1] for i in range(2)]
    stats = latency_stats(measured_latencies_ms(load_run(write_run(tmp_path / "t", rows))))
    tpot = stats[stats["metric"] == "tpot"]["value_ms"]
    assert tpot.isna().all() and stats[stats["metric"] != "tpot"]["value_ms"].notna().all()


@pytest.mark.parametrize("name", SHIPPED)
def test_measured_statistics_match_llmservingsim_measured_column(name):
    run = load_run(name)
    ours = latency_stats(measured_latencies_ms(run)).set_index(["metric", "stat"])["value_ms"]
    theirs = run.llmservingsim.set_index(["metric", "stat"])["measured_ms"]
    for key in ours.index:
        assert abs(ours[key] - theirs[key]) <= 0.05 + 1e-6, key  # printed to 0.1 ms


# ---------------------------------------------------------------- replay
def test_a_shipped_run_replays_to_the_end():
    run = load_run(QUICK_RUN)
    result = replay(run)
    assert result.request_id.tolist() == run.requests["request_id"].tolist()
    assert np.isfinite(result.first_token_s).all() and np.isfinite(result.completion_s).all()
    assert (result.first_token_s >= result.arrival_s).all()
    assert (result.completion_s >= result.first_token_s).all()
    queued = run.requests["queued_ts"].to_numpy()
    assert result.arrival_s == pytest.approx(queued - queued.min(), abs=1e-9)
    assert result.wall_time_s > 0 and result.n_decisions > len(run)
    series = result.timeseries
    assert series["t"].tolist() == pytest.approx(np.arange(1, len(series) + 1) * run.tick_s)
    assert series["t"].iloc[-1] >= max(result.completion_s.max(), run.timeseries["t"].iloc[-1])
    assert (series["running"] <= RUN_SETTINGS[QUICK_RUN].max_sequences).all()
    assert series["running"].max() > 0 and series["running"].iloc[-1] == 0
    assert series["waiting"].iloc[-1] == 0
    again = replay(run)  # deterministic
    assert np.array_equal(again.completion_s, result.completion_s)
    assert again.timeseries.equals(result.timeseries)


def test_replay_maps_unsorted_requests_back_to_the_run_order():
    run = load_run("RTXPRO6000-Qwen3-30B-A3B-Instruct-2507").head(40)
    queued = run.requests["queued_ts"].to_numpy()
    assert (np.diff(queued) < 0).any()  # the MoE run's lines are not sorted by arrival
    result = replay(run)
    assert result.arrival_s == pytest.approx(queued - queued.min(), abs=1e-9)
    assert result.output_tokens.tolist() == run.requests["output_toks"].tolist()
    assert (result.first_token_s >= result.arrival_s).all()


def test_replay_reports_requests_that_cannot_be_served():
    run = load_run(QUICK_RUN).head(20)
    tiny_kv = dataclasses.replace(RUN_SETTINGS[QUICK_RUN], kv_capacity_tokens=2500)
    with pytest.raises(ValueError, match="got no simulated first token") as error:
        replay(run, tiny_kv)
    assert "'bench-0'" in str(error.value)  # 2,358 + 531 tokens exceed 2,500
    with pytest.raises(ValueError, match="settings are for run 'RTX4090-Llama-3.1-8B'"):
        replay(run, RUN_SETTINGS["RTX4090-Llama-3.1-8B"])


def test_run_settings_are_checked():
    base = RUN_SETTINGS[QUICK_RUN]
    with pytest.raises(ValueError, match="env_kwargs may not set \\['max_tokens'\\]"):
        dataclasses.replace(base, env_kwargs={"max_tokens": 1})
    with pytest.raises(ValueError, match="max_sequences must be an integer >= 1, got 0"):
        dataclasses.replace(base, max_sequences=0)
    with pytest.raises(ValueError, match="policy must be a non-empty string"):
        dataclasses.replace(base, policy="")
    settings = RunSettings("r", "llama3.1-8b-h100", 1000, 512, 8, env_kwargs={"ttft_sla": 2.0})
    kwargs = settings.make_kwargs(5)
    assert kwargs["chunk_size"] == 512 and kwargs["ttft_sla"] == 2.0 and kwargs["n_requests"] == 5
    with pytest.raises(TypeError):
        settings.env_kwargs["ttft_sla"] = 3.0  # read-only


# ---------------------------------------------------------------- report and CLI
def test_validate_writes_a_table_of_every_run_metric_and_stat(tmp_path):
    table = validate(out=tmp_path, max_requests=30)
    assert tuple(table.columns) == VALIDATION_COLUMNS
    assert len(table) == len(SHIPPED) * len(METRICS) * len(STATS)
    keys = set(zip(table["run"], table["metric"], table["stat"]))
    assert keys == {(r, m, s) for r in SHIPPED for m in METRICS for s in STATS}
    expected = 100 * (table["simulated_ms"] - table["measured_ms"]) / table["measured_ms"]
    assert np.allclose(table["error_pct"], expected)
    assert table[["measured_ms", "simulated_ms", "error_pct"]].notna().all().all()
    written = pd.read_csv(tmp_path / "validation.csv")
    assert tuple(written.columns) == VALIDATION_COLUMNS and len(written) == len(table)
    with pytest.raises(ValueError, match="exists; choose another output directory"):
        validate([QUICK_RUN], out=tmp_path, max_requests=5)


def test_cli_validate_writes_csv_and_figure_and_guards_its_output(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "v"
    argv = ["validate", "--runs", QUICK_RUN, "--max-requests", "25", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{QUICK_RUN}: 25 requests, policy vllm" in printed and "s wall" in printed
    assert "LLMServingSim %" in printed
    row = next(line for line in printed.splitlines() if line.startswith("ttft    mean"))
    assert row.split()[-1] == "-4.0"  # LLMServingSim's published mean TTFT error
    table = pd.read_csv(out / "validation.csv")
    assert tuple(table.columns) == VALIDATION_COLUMNS and len(table) == 12
    assert (out / f"{QUICK_RUN}.png").read_bytes()[:4] == b"\x89PNG"
    assert f"wrote validation.csv, {QUICK_RUN}.png to {out}" in printed

    before = (out / "validation.csv").read_bytes()
    assert main(argv) == 2  # no silent overwrite, of the table or of the figure
    err = capsys.readouterr().err
    assert "validation.csv'" in err and f"{QUICK_RUN}.png' exist;" in err
    assert (out / "validation.csv").read_bytes() == before
    assert main([*argv, "--force"]) == 0
    captured = capsys.readouterr()
    assert f"replaying only the first 25 requests of {QUICK_RUN}" in captured.err
    # A limit above the run's length leaves nothing out, and says nothing of it.
    assert main([*argv[:-2], "--max-requests", "999999999", "--out", str(out), "--force"]) == 0
    assert "replaying only the first" not in capsys.readouterr().err

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["validate", "--runs", QUICK_RUN, "--out", str(blocker)]) == 2
    captured = capsys.readouterr()
    assert "is a file; expected a directory" in captured.err and "requests" not in captured.out
    nested = tmp_path / "new"
    assert main(["validate", "--runs", "nope", "--out", str(nested)]) == 2
    assert "unknown vLLM run 'nope'" in capsys.readouterr().err
    assert not nested.exists()  # nothing created when a run cannot load


@pytest.mark.parametrize(
    ("times", "outputs", "message"),
    [
        (
            ([0], [1], [2]),
            [1.5],
            r"a whole number in \[1, 2147483647\], got output_tokens\[0\] = 1.5",
        ),
        (([0], [1], [2]), [1e20], r"got output_tokens\[0\] = 1e\+20"),  # wrapped to -2**63
        (([0], [1], [2]), [float("nan")], r"output_tokens must be finite"),
        (
            ([0, 5], [1, 1], [2, 6]),
            [3, 3],
            r"first_token_s must not be before arrival_s, got first_token_s\[1\] = 1.0 and "
            r"arrival_s\[1\] = 5.0",
        ),
        (([0], [1], [0.5]), [3], r"last_token_s must not be before first_token_s"),
    ],
)
def test_request_latencies_refuse_impossible_requests(times, outputs, message):
    # A 1.5-token output was truncated to 1 (no TPOT), a late arrival gave a negative TTFT.
    with pytest.raises(ValueError, match=message):
        request_latencies_ms(*times, outputs)


def test_latency_stats_and_validate_name_what_they_expected():
    with pytest.raises(ValueError, match=r"latencies lacks column\(s\) \['output_tokens'"):
        latency_stats(pd.DataFrame())
    with pytest.raises(TypeError, match="runs must be a run name, .* got 123"):
        validate(runs=123)


def test_validate_checks_its_arguments_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="max_requests must be an integer >= 1 or None, got 0"):
        validate([QUICK_RUN], out=tmp_path / "a", max_requests=0)
    with pytest.raises(ValueError, match="runs names no run"):
        validate([], out=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    one = validate(QUICK_RUN, max_requests=5)  # a single name, no output
    assert set(one["run"]) == {QUICK_RUN} and len(one) == 12


def test_replay_maps_a_permuted_run_back_to_file_order(tmp_path):
    # Queued order r1, r2, r0: a 3-cycle, so a mapping mixed up with its inverse shows.
    rows = [
        with_field(0, queued_ts=101.8, first_token_ts=102.0, last_token_ts=103.0)[0],
        *REQUESTS[1:],
    ]
    run = load_run(write_run(tmp_path / "cycle", requests=rows))
    settings = RunSettings(
        "cycle", "llama3.1-8b-h100", 10_000, 2048, 8, env_kwargs={"kv_allocation": "paged"}
    )
    result = replay(run, settings)
    assert result.arrival_s == pytest.approx([0.8, 0.0, 0.5])
    assert result.output_tokens.tolist() == [5, 1, 3]
    assert result.first_token_s[1] == result.completion_s[1]  # r1: one token, prefill only
    assert (result.completion_s > result.first_token_s)[[0, 2]].all()
    assert (result.first_token_s > result.arrival_s).all()


#: The fidelity goals on the dense-model runs: |error| of mean TPOT, mean E2E, p99 E2E and mean
#: TTFT, in percent (docs/fidelity.md reports the measured errors).
GOAL_BOUNDS_PCT = {
    ("tpot", "mean"): 3.0,
    ("e2e", "mean"): 5.0,
    ("e2e", "p99"): 10.0,
    ("ttft", "mean"): 10.0,
}


@pytest.mark.parametrize(
    "name", ["RTX4090-Llama-3.1-8B", "RTXPRO6000-Llama-3.1-8B", "RTXPRO6000-Qwen3-32B"]
)
def test_replays_of_dense_runs_stay_within_the_fidelity_goals(name):
    table = validate_run(load_run(name)).table.set_index(["metric", "stat"])
    for key, bound in GOAL_BOUNDS_PCT.items():
        error = table.loc[key, "error_pct"]
        assert abs(error) <= bound, f"{name} {key}: error {error:+.1f}% beyond {bound}%"
