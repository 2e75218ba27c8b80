"""The ``llmsched`` command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import llmsched_env
from baselines import policy_names
from llmsched_env.cli import build_parser, main
from llmsched_env.envs.common import REQUEST_RECORD_COLUMNS
from llmsched_env.workload import WORKLOAD_PRESETS

TINY = ["--workload", "demo2", "--n-requests", "60", "--seeds", "2", "--quiet"]


# ---------------------------------------------------------------- evaluate
def test_evaluate_writes_episodes_summary_and_a_table(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["evaluate", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert '"workload": "demo2"' in printed and "seeds 10000..10001" in printed
    episodes = pd.read_csv(out / "episodes.csv")
    summary = pd.read_csv(out / "summary.csv")
    names = policy_names("batch")
    assert len(episodes) == 2 * len(names)
    assert set(episodes["seed"]) == {10_000, 10_001}
    assert (episodes["invalid_actions"] == 0).all()
    assert sorted(summary["policy"]) == sorted(names)
    for column in ("policy", "return_mean", "sla_attainment", "goodput_rps", "p99_latency_s"):
        assert column in summary.columns
    assert list(summary["return_mean"]) == sorted(summary["return_mean"], reverse=True)
    table = printed.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("policy"))
    rows = [line.split()[0] for line in table[header + 2 : header + 2 + len(names)]]
    assert rows == list(summary["policy"])  # printed in the summary's order (best return first)
    assert "wrote episodes.csv, summary.csv" in printed


def test_evaluate_selected_policies_and_env_flags(tmp_path, capsys):
    argv = ["evaluate", *TINY, "--policies", "edf, random", "--gpus", "1", "--load", "0.5"]
    argv += ["--env-kwargs", '{"sla": 20, "n_bins": 2}', "--out", str(tmp_path)]
    assert main(argv) == 0
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert sorted(summary["policy"]) == ["edf", "random"]
    printed = capsys.readouterr().out
    assert '"n_gpus": 1' in printed and '"load": 0.5' in printed and '"sla": 20' in printed


def test_evaluate_rejects_unknown_policies_with_a_suggestion(capsys):
    assert main(["evaluate", *TINY, "--policies", "multibn"]) == 2
    error = capsys.readouterr().err
    assert "unknown batch policy 'multibn'" in error and "Did you mean 'multibin'?" in error
    assert main(["evaluate", *TINY, "--policies", ","]) == 2
    assert "names no policy" in capsys.readouterr().err


def test_evaluate_scores_a_baseline_setting_under_its_spelling(tmp_path, capsys):
    setting = "static-fifo(batch_size=1)"
    argv = ["evaluate", *TINY, "--policies", f"static-fifo, {setting}", "--out", str(tmp_path)]
    assert main(argv) == 0
    episodes = pd.read_csv(tmp_path / "episodes.csv")
    assert sorted(episodes["policy"].unique()) == ["static-fifo", setting]
    assert setting in capsys.readouterr().out
    assert main(["evaluate", *TINY, "--policies", "static-fifo(size=1)"]) == 2
    assert "static-fifo does not take the arguments {'size': 1}" in capsys.readouterr().err


def test_evaluate_reports_bad_configurations_without_a_traceback(capsys):
    assert main(["evaluate", *TINY, "--load", "0.5", "--arrival-rate", "3"]) == 2
    assert "exactly one of load" in capsys.readouterr().err
    assert main(["evaluate", *TINY[:-3], "--seeds", "0", "--quiet"]) == 2
    expected = "argument --seeds: expected an integer in [1, 100,000] (episodes per policy)"
    assert f"{expected}, got '0'" in capsys.readouterr().err


def test_evaluate_defaults():
    args = build_parser().parse_args(["evaluate"])
    assert (args.env, args.policies, args.seeds, args.first_seed, args.jobs) == (
        "batch",
        "all",
        10,
        10_000,
        1,
    )


def _subcommand_help(name: str) -> str:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return "".join(action.choices[name].format_help().split())  # no wrapping


# ---------------------------------------------------------------- help, version
def test_help_shows_defaults_and_the_registered_names(capsys):
    from agents.compare import pretrained_names
    from agents.scenarios import SCENARIOS

    text = _subcommand_help("evaluate")
    assert "(default:10)" in text and "(default:10000)" in text and "(default:batch)" in text
    for name in [*policy_names("batch"), *policy_names("continuous"), *WORKLOAD_PRESETS]:
        assert name in text, name
    text = _subcommand_help("train")
    assert "(default:thescenario'sbudgetwith--scenario,else300,000;" in text
    assert all(name in text for name in SCENARIOS)
    text = _subcommand_help("compare")
    assert pretrained_names() and all(name in text for name in pretrained_names())
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"llmsched {llmsched_env.__version__}"


# ---------------------------------------------------------------- bad input, before any work
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--first-seed", "-5"], "argument --first-seed: expected an integer >= 0, got '-5'"),
        (["--jobs", "0"], "argument --jobs: expected an integer in [1, 256] (worker processes"),
        (["--jobs", "1000000"], "argument --jobs: expected an integer in [1, 256]"),
        (["--out", ""], "argument --out: expected a directory path, got an empty string"),
        (["--load", "-1"], "argument --load: expected a finite number > 0"),
        (["--env-kwargs", "{sla: 3}"], "--env-kwargs is not valid JSON"),
        (["--env-kwargs", "[1]"], "--env-kwargs must be a JSON object, got '[1]'"),
        (["--env-kwargs", '{"n_gpu": 2}'], "Did you mean 'n_gpus'?"),
        (["--records"], "--records needs --out"),
        (["--policies", "edf,edf"], "--policies names edf more than once"),
        (["--policies", "static-fifo(),static-fifo"], "--policies names static-fifo more than"),
        (["--env-kwargs", '{"sla": 5, "sla": 20}'], "--env-kwargs gives the key 'sla' twice"),
        (
            ["--env-kwargs", '{"n_gpus": 3}', "--gpus", "2"],
            "--gpus 2 and --env-kwargs n_gpus=3 disagree",
        ),
        (["--env-kwargs", '{"render_mode": "human"}'], "the command does not render"),
        (["--env-kwargs", '{"latency": 0}'], "expected a batch latency preset name"),
        (["--env-kwargs", '{"kv_memory": [1, 2]}'], "expected a KV memory"),
    ],
)
def test_bad_arguments_fail_at_once_naming_the_flag(argv, message, capsys):
    assert main(["evaluate", *TINY, *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.out == ""  # nothing was evaluated


def test_stability_refuses_a_render_mode_like_every_command(tmp_path, capsys):
    argv = ["stability", "--policy", "vllm", "--env-kwargs", '{"render_mode": "human"}']
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert "render_mode='human': the command does not render" in capsys.readouterr().err


def test_stability_takes_a_policy_setting_and_refuses_it_disagreeing_with_policy_kwargs(
    tmp_path, capsys
):
    argv = ["stability", "--policy", "hybrid(decode_share=0.3)", "--out", str(tmp_path)]
    assert main([*argv, "--policy-kwargs", '{"decode_share": 0.5}']) == 2
    assert "--policy sets decode_share=0.3 and --policy-kwargs" in capsys.readouterr().err
    assert main([*argv, "--policy-kwargs", '{"decode_shar": 0.5}']) == 2
    assert "unknown --policy-kwargs key for policy 'hybrid'" in capsys.readouterr().err


def test_unknown_policy_kwargs_key_suggests_the_closest(tmp_path, capsys):
    argv = ["stability", "--policy", "hybrid", "--policy-kwargs", '{"decode_shar": 0.5}']
    assert main([*argv, "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "unknown --policy-kwargs key for policy 'hybrid' 'decode_shar'" in error
    assert "Did you mean 'decode_share'?" in error


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_output_locations_are_checked_before_any_work(tmp_path, capsys, where):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker if where == "file" else blocker / "sub"
    for command in (["evaluate", *TINY], ["stability", "--policy", "hybrid"]):
        assert main([*command, "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert str(blocker) in captured.err and "is a file" in captured.err
        assert captured.out == ""
    assert main(["compare", "--pretrained", "batch-default", "--out", str(out)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_force_leaves_no_file_of_the_run_it_replaces(tmp_path, capsys):
    """An earlier run's records.csv stayed beside the new results of a run without --records."""
    argv = ["evaluate", *TINY, "--policies", "random", "--out", str(tmp_path), "--quiet"]
    assert main([*argv, "--records"]) == 0
    assert "records.csv" in capsys.readouterr().out
    (tmp_path / "notes.txt").write_text("mine")
    assert main([*argv, "--seeds", "1", "--force"]) == 0
    assert not (tmp_path / "records.csv").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not a file evaluate writes
    assert "records.csv" not in capsys.readouterr().out


def test_without_force_no_file_is_removed(tmp_path):
    """The stale-file removal of --force ran without it, deleting a records.csv of the user's."""
    (tmp_path / "records.csv").write_text("my own data")
    argv = ["evaluate", *TINY, "--policies", "random", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    assert (tmp_path / "records.csv").read_text() == "my own data"


def test_results_are_not_overwritten_without_force(tmp_path, capsys):
    argv = ["evaluate", *TINY, "--policies", "random", "--out", str(tmp_path)]
    assert main(argv) == 0
    before = (tmp_path / "episodes.csv").read_bytes()
    capsys.readouterr()
    assert main([*argv, "--seeds", "1"]) == 2
    captured = capsys.readouterr()
    assert "exist; choose another output directory or overwrite them (--force)" in captured.err
    assert captured.out == "" and (tmp_path / "episodes.csv").read_bytes() == before
    assert main([*argv, "--seeds", "1", "--force"]) == 0
    assert len(pd.read_csv(tmp_path / "episodes.csv")) == 1


def test_results_go_to_a_temporary_directory_when_writing_fails(tmp_path, capsys, monkeypatch):
    import llmsched_env.plotting

    real = llmsched_env.plotting.plot_comparison
    out = tmp_path / "results"

    def failing(summary, path, title=""):
        if str(path).startswith(str(out)):
            raise OSError(28, "No space left on device")
        return real(summary, path, title)

    monkeypatch.setattr(llmsched_env.plotting, "plot_comparison", failing)
    assert main(["evaluate", *TINY, "--policies", "random", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"could not write to '{out}' (No space left on device)" in captured.err
    rescue = captured.out.strip().splitlines()[-1].rsplit(" to ", 1)[1]
    assert rescue != str(out) and "llmsched-results-" in rescue
    assert len(pd.read_csv(os.path.join(rescue, "episodes.csv"))) == 2


# ---------------------------------------------------------------- output
def test_one_seed_prints_no_interval_instead_of_nan(capsys):
    assert main(["evaluate", *TINY[:-3], "--seeds", "1", "--policies", "edf", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "nan" not in printed
    row = next(line for line in printed.splitlines() if line.startswith("edf"))
    assert row.split()[2] == "n/a"
    assert "n/a (1 seed)" in printed


def test_warnings_are_one_line_without_source():
    argv = [sys.executable, "-m", "llmsched_env.cli", "evaluate", "--env", "continuous"]
    argv += ["--policies", "run-to-completion", "--n-requests", "20", "--seeds", "1", "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    error = done.stderr
    warning = [line for line in error.splitlines() if "RunToCompletion" in line]
    assert len(warning) == 1 and warning[0].startswith("llmsched: warning: RunToCompletion:")
    assert "UserWarning" not in error and "env.step(" not in error


def test_a_trace_warning_is_shown_once_with_worker_processes(tmp_path):
    # Rows out of order: loading the trace warns. The workers inherit the parent's reading.
    rng = np.random.default_rng(0)
    seconds = np.sort(rng.uniform(0, 3600, 300))
    seconds[[0, 1]] = seconds[[1, 0]]
    stamps = pd.Timestamp("2023-11-16 18:00:00") + pd.to_timedelta(seconds, unit="s")
    trace = tmp_path / "unsorted.csv"
    pd.DataFrame(
        {
            "TIMESTAMP": stamps.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "ContextTokens": rng.integers(10, 2000, 300),
            "GeneratedTokens": rng.integers(10, 500, 300),
        }
    ).to_csv(trace, index=False)
    argv = [sys.executable, "-m", "llmsched_env.cli", "evaluate", "--env", "batch"]
    argv += ["--trace", str(trace), "--policies", "edf,spf", "--n-requests", "50"]
    argv += ["--seeds", "2", "--jobs", "2", "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "sorted stably" in line]
    assert len(warnings) == 1, done.stderr


def test_records_csv_has_one_row_per_request_policy_and_seed(tmp_path, capsys):
    argv = ["evaluate", *TINY, "--policies", "edf,random", "--records", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "records.csv" in capsys.readouterr().out
    records = pd.read_csv(tmp_path / "records.csv")
    assert list(records.columns) == ["policy", "seed", *REQUEST_RECORD_COLUMNS]
    assert len(records) == 2 * 2 * 60
    per_episode = records.groupby(["policy", "seed"])["request"].apply(list)
    assert all(v == list(range(60)) for v in per_episode)
    assert set(records["status"]) <= {"completed", "rejected", "in_system", "not_arrived"}
    episodes = pd.read_csv(tmp_path / "episodes.csv").set_index(["policy", "seed"])
    done = records[records["status"] == "completed"].groupby(["policy", "seed"]).size()
    assert (done == episodes.loc[done.index, "completed"]).all()


# ---------------------------------------------------------------- progress and Ctrl-C
def test_progress_starts_with_a_line_and_announces_a_cold_compilation(capsys, monkeypatch):
    import llmsched_env.compilation

    monkeypatch.setattr(llmsched_env.compilation, "kernels_cached", lambda *a: False)
    assert main(["evaluate", *TINY, "--policies", "random"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "llmsched evaluate: 1 policies x 2 seeds on llmsched/BatchScheduling-v0"
    assert lines[1].startswith("llmsched evaluate: compiling the simulator's kernels (first run")


def test_keyboard_interrupt_is_one_line_and_exit_130(capsys, monkeypatch):
    import llmsched_env.evaluation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(llmsched_env.evaluation, "evaluate", interrupted)
    assert main(["evaluate", *TINY]) == 130
    error = capsys.readouterr().err
    assert error.splitlines()[-1] == "llmsched evaluate: interrupted (Ctrl-C); nothing written"
    assert "Traceback" not in error


def test_ctrl_c_stops_parallel_workers_cleanly(tmp_path):
    argv = [sys.executable, "-m", "llmsched_env.cli", "evaluate", "--workload", "demo2"]
    argv += ["--n-requests", "400", "--seeds", "500", "--jobs", "2", "--out", str(tmp_path)]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first = process.stderr.readline()  # the first progress line: the work has started
    assert first.startswith("llmsched evaluate: 11 policies x 500 seeds")
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err and "interrupted (Ctrl-C)" in err
    assert not (tmp_path / "episodes.csv").exists()


# ---------------------------------------------------------------- bring your own trace
def _tiny_traces(tmp_path):
    """One tiny trace per format (40 requests each); returns {format: path}."""
    import json

    azure = tmp_path / "azure.csv"
    azure.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        + "".join(f"2023-11-16 18:00:{i:02d}.5000000,{100 + 9 * i},{20 + i}\n" for i in range(40))
    )
    burst = tmp_path / "burst.log"  # the extension does not matter
    burst.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        + "".join(f"{2 * i},ChatGPT,{50 + i},{30 + i},{80 + 2 * i},API log\n" for i in range(40))
    )
    mooncake = tmp_path / "mc.jsonl"
    rows = [
        {"timestamp": 400 * i, "input_length": 600 + i, "output_length": 25, "hash_ids": [0, i]}
        for i in range(40)
    ]
    mooncake.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"azure": azure, "burstgpt": burst, "mooncake": mooncake}


BYO = ["--n-requests", "15", "--seeds", "1", "--quiet", "--policies", "edf"]


@pytest.mark.parametrize("trace_format", ["azure", "burstgpt", "mooncake"])
def test_evaluate_on_a_trace_file_detects_its_format(tmp_path, capsys, trace_format):
    path = _tiny_traces(tmp_path)[trace_format]
    assert main(["evaluate", "--trace", str(path), *BYO]) == 0
    printed = capsys.readouterr().out
    assert f'"workload": "trace:{trace_format}:{path}"' in printed
    assert "edf" in printed


def test_evaluate_on_a_trace_with_a_named_format_and_the_continuous_env(tmp_path, capsys):
    path = _tiny_traces(tmp_path)["mooncake"]
    argv = ["evaluate", "--env", "continuous", "--trace", str(path), "--trace-format", "mooncake"]
    argv += ["--n-requests", "15", "--seeds", "1", "--quiet", "--policies", "vllm"]
    argv += ["--env-kwargs", '{"kv_allocation": "paged", "prefix_caching": true}']
    assert main(argv) == 0
    assert "vllm" in capsys.readouterr().out


def test_trace_flags_fail_clearly(tmp_path, capsys):
    paths = _tiny_traces(tmp_path)
    assert main(["evaluate", "--trace", str(paths["azure"]), "--workload", "demo2", *BYO]) == 2
    assert "argument --workload: not allowed with argument --trace" in capsys.readouterr().err
    assert main(["evaluate", "--trace-format", "azure", *BYO]) == 2
    assert "--trace-format needs --trace" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("t,prompt,output\n1,2,3\n")
    assert main(["evaluate", "--trace", str(other), *BYO]) == 2
    err = capsys.readouterr().err
    assert "no known trace format" in err and "mooncake: JSON lines with keys" in err
    assert main(["evaluate", "--trace", str(tmp_path / "nope.csv"), *BYO]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["evaluate", "--trace", "", "--trace-format", "azure", *BYO]) == 2
    assert "got the empty path ''" in capsys.readouterr().err
    # A named format the file does not hold: its first line names the format it is in.
    argv = ["evaluate", "--trace", str(paths["azure"]), "--trace-format", "burstgpt", *BYO]
    assert main(argv) == 2
    assert "is in the 'azure' format by its first line" in capsys.readouterr().err


def test_compare_on_a_trace_with_overrides(tmp_path, capsys):
    path = _tiny_traces(tmp_path)["azure"]
    out = tmp_path / "cmp"
    argv = ["compare", "--pretrained", "batch-default", "--trace", str(path), "--load", "0.8"]
    argv += ["--n-requests", "15", "--seeds", "1", "--quiet", "--policies", "edf"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f'"workload": "trace:azure:{path}"' in printed and '"load": 0.8' in printed
    assert set(pd.read_csv(out / "summary.csv")["policy"]) == {"agent", "edf"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gpus", "3"], "n_gpus=3 (trained with 2) change the observation space"),
        (
            ["--env-kwargs", '{"n_bins": 3}'],
            "n_bins=3 (trained with 4) change the observation space and action space",
        ),
        (["--env-kwargs", '{"n_binz": 3}'], "Did you mean 'n_bins'?"),
    ],
)
def test_compare_refuses_overrides_that_change_the_agent_s_spaces(tmp_path, capsys, flags, message):
    argv = ["compare", "--pretrained", "batch-default", *flags, "--seeds", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "cmp")]) == 2
    assert message in capsys.readouterr().err


def test_train_takes_a_trace_too(tmp_path, monkeypatch):
    from llmsched_env.cli import env_kwargs_from_args

    path = _tiny_traces(tmp_path)["burstgpt"]
    args = build_parser().parse_args(["train", "--trace", str(path), "--out", str(tmp_path / "r")])
    assert env_kwargs_from_args(args) == {"workload": f"trace:burstgpt:{path}"}
    # A relative path is kept absolute, so the run can be compared or resumed from anywhere.
    monkeypatch.chdir(path.parent)
    args = build_parser().parse_args(["train", "--trace", path.name, "--out", "r"])
    absolute = os.path.join(os.getcwd(), path.name)
    assert env_kwargs_from_args(args) == {"workload": f"trace:burstgpt:{absolute}"}


def train_arguments(monkeypatch) -> dict:
    """The keyword arguments ``llmsched train`` passes to ``agents.training.train``.

    The stand-in records them and stops before any training (``main`` returns 130).
    """
    import agents.training

    seen: dict = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(agents.training, "train", record)
    return seen


@pytest.mark.parametrize(
    ("flags", "expected_steps"),
    [
        (["--scenario", "batch-general"], 1_000_000),
        (["--scenario", "batch-general", "--steps", "1000"], 1000),
        (["--env", "continuous"], 300_000),
    ],
)
def test_train_steps_default_to_the_scenario_s_budget(tmp_path, monkeypatch, flags, expected_steps):
    pytest.importorskip("stable_baselines3")
    from agents.scenarios import get_scenario

    assert get_scenario("batch-general").train_steps == 1_000_000
    seen = train_arguments(monkeypatch)
    assert main(["train", *flags, "--out", str(tmp_path / "run"), "--quiet"]) == 130
    assert seen["steps"] == expected_steps


def test_a_scenario_names_the_env_its_flags_apply_to(tmp_path, monkeypatch, capsys):
    pytest.importorskip("stable_baselines3")
    seen = train_arguments(monkeypatch)
    out = str(tmp_path / "run")
    # --gpus of a routing scenario counts its replicas (it was passed on as n_gpus).
    argv = ["train", "--scenario", "routing-prefix-sharing", "--gpus", "2", "--out", out]
    assert main([*argv, "--quiet"]) == 130
    assert seen["env_kwargs"] == {"n_replicas": 2}
    # An --env that contradicts the scenario's is refused (it was ignored).
    argv = ["train", "--scenario", "batch-default", "--env", "continuous", "--out", out]
    assert main([*argv, "--quiet"]) == 2
    assert "--env continuous contradicts --scenario batch-default" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], {}),
        (["--imitate", "sarathi"], {"imitation": "sarathi"}),
        (["--imitate", "sarathi", "vllm"], {"imitation": ["sarathi", "vllm"]}),
        (
            ["--imitate", "none", "--hyperparams", '{"n_envs": 2}'],
            {"n_envs": 2, "imitation": "none"},
        ),
    ],
)
def test_train_imitate_sets_the_warm_start(tmp_path, monkeypatch, flags, expected):
    pytest.importorskip("stable_baselines3")
    seen = train_arguments(monkeypatch)
    argv = ["train", "--env", "continuous", *flags, "--out", str(tmp_path / "run"), "--quiet"]
    assert main(argv) == 130
    assert seen["hyperparams"] == expected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--resume", "RUN"], "--imitate warm-starts a new run"),
        (
            ["--framework", "rllib", "--out", "OUT"],
            "drop --resume, --scenario, --algo and --imitate",
        ),
        (
            ["--hyperparams", '{"imitation": "spf"}', "--out", "OUT"],
            "--imitate hybrid and --hyperparams' imitation 'spf' both set the warm start",
        ),
    ],
)
def test_train_imitate_is_refused_where_it_cannot_apply(tmp_path, capsys, flags, message):
    pytest.importorskip("stable_baselines3")
    (tmp_path / "RUN").mkdir()
    flags = [str(tmp_path / f) if f in ("RUN", "OUT") else f for f in flags]
    assert main(["train", "--imitate", "hybrid", *flags, "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_train_refuses_two_different_numbers_of_envs(tmp_path, capsys):
    pytest.importorskip("stable_baselines3")
    argv = ["train", "--env", "batch", "--n-envs", "2", "--hyperparams", '{"n_envs": 4}']
    assert main([*argv, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "n_envs=2 (--n-envs) and hyperparams n_envs=4 disagree" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--seeds", "99999999999999999999"], "--seeds: expected an integer in [1,"),
        (["compare", "--seeds", "1000000"], "--seeds: expected an integer in [1, 100,000]"),
        (["stability", "--grid", "9999999"], "--grid: expected an integer in [0, 1,000]"),
        (["stability", "--replications", "5000"], "--replications: expected an integer in"),
        (["train", "--threads", "100000"], "--threads: expected an integer in [1, 1,024]"),
        (["train", "--n-envs", "100000"], "--n-envs: expected an integer in [1, 9,000]"),
        (["compare", "--bootstrap-reps", "10000000000"], "--bootstrap-reps: expected an"),
    ],
)
def test_counts_beyond_any_use_are_refused_by_name(capsys, argv, message):
    # They ran out of memory, stalled or crashed before saying anything.
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_wrong_type_in_env_kwargs_is_one_line_without_gyms_suffix(tmp_path, capsys):
    argv = ["evaluate", "--policies", "edf", "--seeds", "1", "--n-requests", "50"]
    argv += ["--env-kwargs", '{"sla": "abc"}', "--out", str(tmp_path / "ev")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "sla must be a finite number >= 1e-09, got 'abc'" in err
    assert "environment creator" not in err


def test_resume_refuses_the_settings_it_would_ignore(tmp_path, capsys):
    pytest.importorskip("stable_baselines3")
    argv = ["train", "--resume", str(tmp_path), "--steps", "64", "--load", "2", "--hyper", "{}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "would be ignored" in err and "--load" in err and "--hyperparams" in err
    assert "--steps" not in err.split("ignored")[0]  # the session's length may be given


def test_validate_checks_its_figures_and_names_each_run_once(tmp_path, capsys):
    run = "RTX4090-Llama-3.1-8B"
    (tmp_path / f"{run}.png").write_bytes(b"")
    assert main(["validate", "--runs", run, "--out", str(tmp_path)]) == 2
    assert f"{run}.png' exists" in capsys.readouterr().err
    assert main(["validate", "--runs", run, run, "--out", str(tmp_path / "v")]) == 2
    assert "more than once" in capsys.readouterr().err
    (tmp_path / "broken").symlink_to(tmp_path / "missing" / "dir")
    assert main(["validate", "--runs", run, "--out", str(tmp_path / "broken")]) == 2
    assert "broken symbolic link" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["compare", "--pretrained", "batch-default", "--first-seed", "5"],
            "argument --first-seed: expected an integer >= 10000, got '5'",
        ),
        (
            ["stability", "--policy", "hybrid", "--replications", "1"],
            "argument --replications: expected an integer in [2, 1,000] (runs per arrival rate), "
            "got '1'",
        ),
    ],
)
def test_flags_with_their_own_lower_bound_name_it(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_compare_takes_absolute_and_relative_run_directories_together(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert main(["compare", "--runs", str(tmp_path / "a"), "b", "--seeds", "2"]) == 2
    err = capsys.readouterr().err
    assert "Can't mix" not in err and "holds no config.json" in err  # past the output check


def test_a_closed_output_pipe_ends_the_command_quietly(monkeypatch, capsys):
    """``llmsched evaluate ... | head -1``: the reader goes away; no error, the shell's status."""
    import os

    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w", buffering=1) as closed:  # line-buffered, as a terminal is
        monkeypatch.setattr("sys.stdout", closed)
        assert main(["evaluate", *TINY, "--policies", "edf"]) == 141
    assert "error" not in capsys.readouterr().err


def test_validate_refuses_an_empty_run_name(tmp_path, capsys):
    assert main(["validate", "--runs", "", "--out", str(tmp_path)]) == 2
    assert "--runs names an empty run" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["stability", "--policy", "hybrid(foo=1)", "--workload", "demo2"],
            "unknown --policy key for policy 'hybrid' 'foo'",
        ),
        (
            ["stability", "--policy", "prefill-first", "--policy-kwargs", '{"foo": 1}'],
            "policy 'prefill-first' takes no keyword arguments, but --policy-kwargs gives 'foo'",
        ),
        (
            ["stability", "--policy", "hybrid", "--workload", "demo2", "--horizon", "1e12"],
            "requests per run, more than fit in memory: give a shorter --horizon",
        ),
    ],
)
def test_stability_names_the_flag_behind_a_bad_setting(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "s")]) == 2
    assert message in capsys.readouterr().err


def test_resuming_a_directory_that_does_not_exist_says_so(tmp_path, capsys):
    pytest.importorskip("stable_baselines3")
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert f"run directory '{tmp_path / 'nowhere'}' does not exist" in capsys.readouterr().err


def test_evaluate_warns_of_requests_rejected_at_arrival(tmp_path, capsys):
    # Without chunked prefill, prompts longer than max_tokens are rejected: the table has no
    # column for them, and they went unmentioned.
    argv = ["evaluate", "--env", "continuous", "--policies", "vllm", "--seeds", "2"]
    argv += ["--n-requests", "60", "--env-kwargs", '{"chunk_size": null, "max_tokens": 512}']
    assert main([*argv, "--out", str(tmp_path / "cut")]) == 0
    err = capsys.readouterr().err
    assert "were rejected at arrival" in err and "(--records gives each one's reason)" in err
    argv[-1] = "{}"  # chunked prefill: every request fits
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    assert "rejected at arrival" not in capsys.readouterr().err


def test_evaluate_takes_the_scenario_workloads_that_train_and_compare_take(capsys):
    # The docs score baselines on azure-conv-bursty, which evaluate refused as no preset.
    argv = ["evaluate", "--workload", "azure-conv-bursty", "--policies", "edf", "--seeds", "1"]
    assert main([*argv, "--n-requests", "60", "--quiet"]) == 0
    assert '{"workload": "azure-conv-bursty", "n_requests": 60}' in capsys.readouterr().out
    assert main(["evaluate", "--help"]) == 0
    assert "azure-conv-bursty, length-mix-0 to length-mix-23" in " ".join(
        capsys.readouterr().out.split()
    )


def test_help_shows_defaults_of_zero(capsys):
    """0 compared equal to False, the default the help leaves out, so seeds showed none."""
    assert main(["stability", "--help"]) == 0
    assert "first seed (default: 0)" in " ".join(capsys.readouterr().out.split())


def test_evaluate_warns_of_episodes_cut_off_by_max_steps(capsys):
    # The table read as if the episodes were whole (SLA attainment 0 over the arrived requests).
    argv = ["evaluate", "--env", "batch", "--policies", "static-fifo", "--seeds", "2"]
    argv += ["--n-requests", "30", "--quiet", "--env-kwargs", '{"max_steps": 1}']
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: 2 of the 2 episodes stopped before every request was served" in err
    assert "max_steps cut them off" in err
    argv[-1] = "{}"
    assert main(argv) == 0
    assert "stopped before" not in capsys.readouterr().err


def test_ctrl_c_while_the_package_loads_is_one_line(monkeypatch, capsys):
    """Ctrl-C in the first second (building the parser imports the baselines) was a traceback."""
    import llmsched_env.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["evaluate"]) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "llmsched: interrupted (Ctrl-C); nothing written\n"
