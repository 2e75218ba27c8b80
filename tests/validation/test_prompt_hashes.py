import dataclasses
import json

import numpy as np
import pytest

from llmsched_env.validation import (
    RUN_SETTINGS,
    load_prompt_hashes,
    load_run,
    prompt_hashes_from_jsonl,
    run_workload,
    save_prompt_hashes,
    shipped_prompt_hashes,
)
from llmsched_env.validation.replay import replay
from llmsched_env.workload import prefix_block_hashes

RUN = "RTX4090-Llama-3.1-8B"


def test_jsonl_round_trip_through_the_npz(tmp_path):
    lines = [
        {"input_toks": 5, "output_toks": 2, "input_tok_ids": [1, 2, 3, 4, 5]},
        {"input_toks": 3, "output_toks": 1, "input_tok_ids": [1, 2, 9]},
    ]
    source = tmp_path / "w.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    hashes = prompt_hashes_from_jsonl(source, block_tokens=2)
    assert [len(h) for h in hashes.hashes] == [2, 1] and hashes.hashes[0][0] == hashes.hashes[1][0]
    save_prompt_hashes(hashes, tmp_path / "w.prefix-hashes.npz")
    again = load_prompt_hashes(tmp_path / "w.prefix-hashes.npz")
    assert again.name == "w" and again.block_tokens == 2
    assert [h.tolist() for h in again.hashes] == [h.tolist() for h in hashes.hashes]
    assert again.input_toks.tolist() == [5, 3] and again.output_toks.tolist() == [2, 1]


def test_bad_workload_lines_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input_toks": 3, "output_toks": 1, "input_tok_ids": [1]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl, line 1: `input_tok_ids` has 1 ids"):
        prompt_hashes_from_jsonl(bad)
    broken = tmp_path / "broken.npz"
    np.savez(broken, hashes=np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="missing arrays"):
        load_prompt_hashes(broken)


def test_shipped_hashes_match_the_rtx4090_run_and_its_token_ids():
    hashes = shipped_prompt_hashes(RUN_SETTINGS[RUN].prompt_hashes)
    run = load_run(RUN)
    assert len(hashes) == len(run) == 300 and hashes.block_tokens == 16
    np.testing.assert_array_equal(hashes.input_toks, run.requests["input_toks"])
    assert sum(len(h) for h in hashes.hashes) == 15_942
    # The chains are those of the token ids: the first prompt starts with these 16 ids.
    first = [5971, 2927, 220, 1032, 97554, 23977, 35452, 198, 791, 7068, 11952, 4975, 3622, 734]
    first += [649, 387]
    assert hashes.hashes[0][0] == prefix_block_hashes(first)[0]
    workload, order = run_workload(run, hashes)
    chains = workload.prefix_block_hashes
    assert all(
        chains[i] is hashes.hashes[order[i]] or (chains[i] == hashes.hashes[order[i]]).all()
        for i in range(len(order))
    )
    with pytest.raises(FileNotFoundError, match="no shipped prompt hashes named 'nope'"):
        shipped_prompt_hashes("nope")


def test_a_run_that_does_not_match_the_hashes_is_refused():
    run = load_run(RUN)
    hashes = shipped_prompt_hashes(RUN_SETTINGS[RUN].prompt_hashes)
    cut = dataclasses.replace(run, requests=run.requests.iloc[:10])  # not a head(): no rows
    with pytest.raises(ValueError, match=r"has 10 requests, but the prompt hashes .* cover 300"):
        run_workload(cut, hashes)
    shuffled = dataclasses.replace(hashes, input_toks=hashes.input_toks[::-1])
    with pytest.raises(ValueError, match=r"request row 0 \(bench-0\) has input_toks = 2358"):
        run_workload(run, shuffled)


def test_replay_with_prefix_caching_shares_prompt_prefixes():
    run = load_run(RUN)
    settings = RUN_SETTINGS[RUN]
    assert settings.prefix_caching and settings.prompt_hashes is not None
    result = replay(run, settings)
    assert np.isfinite(result.completion_s).all()
    metrics = result.metrics
    # Beyond a preempted request's own blocks, prompts hit each other's prefixes: first
    # admissions hit only with the prompts' hashes.
    assert metrics["prefix_hit_tokens"] > 0 and metrics["prefix_queried_tokens"] > 257_239
    assert metrics["prefix_hit_tokens"] > metrics["preempted_prefix_hit_tokens"]
    assert metrics["prefix_hit_rate"] > 0
    plain = replay(run, dataclasses.replace(settings, prompt_hashes=None))
    assert plain.metrics["prefix_hit_tokens"] == plain.metrics["preempted_prefix_hit_tokens"] > 0
    assert plain.metrics["prefix_hit_rate"] == 0


def test_a_subset_of_the_run_gets_the_hashes_of_its_own_requests():
    run = load_run(RUN)
    subset = run.head(30)
    hashes = shipped_prompt_hashes(RUN_SETTINGS[RUN].prompt_hashes)
    workload, order = run_workload(subset, hashes)
    rows = subset.file_rows[order]
    assert [len(c) for c in workload.prefix_block_hashes] == [len(hashes.hashes[r]) for r in rows]
    assert all(
        (workload.prefix_block_hashes[i] == hashes.hashes[r]).all() for i, r in enumerate(rows)
    )
    assert np.isfinite(replay(subset).completion_s).all()
