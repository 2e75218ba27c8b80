import json

import pytest

from llmsched_env.validation.prefix_sharing import prefix_sharing, read_prompt_token_ids


def test_only_a_whole_shared_block_chain_counts():
    base = list(range(64))
    other_start = [999, *base[1:]]  # same tokens after the first: no block chain is shared
    result = prefix_sharing([base, other_start, base[:40] + [5] * 10], block_tokens=16)
    # The third prompt shares base's first two blocks (32 tokens); the second shares none.
    assert result.hit_tokens == 32
    assert result.prompts_with_hit == 1
    assert result.prompt_tokens == 64 + 64 + 50


def test_a_fully_cached_prompt_still_computes_its_last_block():
    prompt = list(range(48))
    result = prefix_sharing([prompt, prompt], block_tokens=16)
    assert result.hit_tokens == 32  # 47 tokens may hit, rounded down to whole blocks
    assert result.hit_fraction == pytest.approx(32 / 96)


def test_no_prompts_and_bad_block_size():
    assert prefix_sharing([]).hit_fraction == 0.0
    with pytest.raises(ValueError, match="block_tokens"):
        prefix_sharing([[1, 2]], block_tokens=0)


def test_reader_names_file_and_line(tmp_path):
    good = tmp_path / "w.jsonl"
    good.write_text(json.dumps({"input_tok_ids": [1, 2, 3]}) + "\n\n")
    assert read_prompt_token_ids(good) == [[1, 2, 3]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input_tok_ids": [1]}) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: not JSON"):
        read_prompt_token_ids(bad)
    missing_key = tmp_path / "k.jsonl"
    missing_key.write_text(json.dumps({"input_toks": 3}) + "\n")
    with pytest.raises(ValueError, match=r"line 1: expected a list `input_tok_ids`"):
        read_prompt_token_ids(missing_key)
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="holds no prompt"):
        read_prompt_token_ids(empty)
