import pytest

from llmsched_env.validation import RUN_SETTINGS, shipped_prompt_hashes
from llmsched_env.validation.prefix_sharing import prefix_sharing
from llmsched_env.workload import prefix_block_hashes_from_token_ids


def sharing(prompts, block_tokens=16):
    chains = prefix_block_hashes_from_token_ids(prompts, block_tokens=block_tokens)
    return prefix_sharing(chains, [len(p) for p in prompts], block_tokens=block_tokens)


def test_only_a_whole_shared_block_chain_counts():
    base = list(range(64))
    other_start = [999, *base[1:]]  # same tokens after the first: no block chain is shared
    result = sharing([base, other_start, base[:40] + [5] * 10])
    # The third prompt shares base's first two blocks (32 tokens); the second shares none.
    assert result.hit_tokens == 32
    assert result.prompts_with_hit == 1
    assert result.prompt_tokens == 64 + 64 + 50


def test_a_fully_cached_prompt_still_computes_its_last_block():
    prompt = list(range(48))
    result = sharing([prompt, prompt])
    assert result.hit_tokens == 32  # 47 tokens may hit, rounded down to whole blocks
    assert result.hit_fraction == pytest.approx(32 / 96)


def test_the_rtx4090_workload_shares_7_6_percent_of_its_prompt_tokens():
    hashes = shipped_prompt_hashes(RUN_SETTINGS["RTX4090-Llama-3.1-8B"].prompt_hashes)
    result = prefix_sharing(hashes.hashes, hashes.input_toks, hashes.block_tokens)
    assert (result.prompts, result.prompt_tokens) == (300, 257_239)
    assert (result.hit_tokens, result.prompts_with_hit) == (19_520, 32)


def test_bad_inputs_are_refused():
    assert prefix_sharing([], []).hit_fraction == 0.0
    with pytest.raises(ValueError, match="block_tokens"):
        prefix_sharing([[1]], [20], block_tokens=0)
    with pytest.raises(ValueError, match="1 chains but 2 prompt lengths"):
        prefix_sharing([[1]], [20, 30])
    with pytest.raises(ValueError, match="prompt 0: a chain of 2 blocks"):
        prefix_sharing([[1, 2]], [20])
