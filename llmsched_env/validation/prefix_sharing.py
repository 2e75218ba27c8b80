"""How much prefill a prefix cache could skip in a workload with token ids.

vLLM's automatic prefix caching (Kwon et al., SOSP 2023; vLLM V1's ``KVCacheManager``) hashes
every *full* block of ``block_tokens`` prompt tokens together with the hash of the block before
it, so a block is reused only when the whole prefix up to and including it was computed before.
This module counts, for a sequence of prompts in arrival order, the prompt tokens whose block
chain was already seen in an earlier prompt: an upper bound on what the cache can skip, reached
only if no cached block is ever evicted. vLLM also always computes a prompt's last token, so a
prompt that is entirely cached still computes one block.

Used to report the effect of prefix caching on the one recorded run that had it on (the RTX 4090
run of ``llmsched validate``), whose workload file carries the prompts' token ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PrefixSharing:
    """Prompt tokens a never-evicting prefix cache would skip.

    Attributes:
        prompts: Prompts counted.
        prompt_tokens: Their tokens.
        hit_tokens: Tokens in blocks whose whole prefix an earlier prompt had.
        prompts_with_hit: Prompts with at least one such block.
    """

    prompts: int
    prompt_tokens: int
    hit_tokens: int
    prompts_with_hit: int

    @property
    def hit_fraction(self) -> float:
        """``hit_tokens / prompt_tokens`` (0 for no tokens)."""
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def prefix_sharing(prompts: Iterable[Sequence[int]], block_tokens: int = 16) -> PrefixSharing:
    """Count the prompt tokens whose full-block prefix chain appeared in an earlier prompt.

    Args:
        prompts: Token ids of each prompt, in arrival order.
        block_tokens: Tokens per KV block (vLLM's default 16).

    Returns:
        The counts; a hit is capped so that each prompt computes at least its last token.

    Raises:
        ValueError: If ``block_tokens`` is not a positive integer.

    Example:
        >>> shared = list(range(40))
        >>> prefix_sharing([shared + [1, 2], shared + [3], [7] * 20], block_tokens=16)
        PrefixSharing(prompts=3, prompt_tokens=103, hit_tokens=32, prompts_with_hit=1)
    """
    if isinstance(block_tokens, bool) or not isinstance(block_tokens, int) or block_tokens < 1:
        raise ValueError(f"block_tokens must be an integer >= 1, got {block_tokens!r}")
    seen: set[tuple[int, tuple[int, ...]]] = set()
    n_prompts = total = hits = with_hit = 0
    for ids in prompts:
        tokens = tuple(int(t) for t in ids)
        n_prompts += 1
        total += len(tokens)
        chain: list[tuple[int, tuple[int, ...]]] = []
        parent = 0
        for start in range(0, len(tokens) - block_tokens + 1, block_tokens):
            key = (parent, tokens[start : start + block_tokens])
            chain.append(key)
            parent = hash(key)
        matched = 0
        for key in chain:
            if key not in seen:
                break
            matched += 1
        hit = min(matched * block_tokens, len(tokens) - 1) if tokens else 0
        # vLLM computes at least the last token: a fully cached prompt recomputes its last block.
        if hit and hit % block_tokens:
            hit -= hit % block_tokens
        hits += hit
        with_hit += hit > 0
        seen.update(chain)
    return PrefixSharing(n_prompts, total, hits, with_hit)


def read_prompt_token_ids(path: str | Path) -> list[list[int]]:
    """Prompts' token ids from a workload file (one JSON object a line, key ``input_tok_ids``).

    The files are the ShareGPT workloads that LLMServingSim 2.0's vLLM runs replayed, in arrival
    order.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If a line is not JSON or has no list ``input_tok_ids`` (names file and line).
    """
    path = Path(path)
    prompts: list[list[int]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not JSON ({error.msg})") from None
            ids = record.get("input_tok_ids") if isinstance(record, dict) else None
            if not isinstance(ids, list):
                raise ValueError(f"{path}, line {number}: expected a list `input_tok_ids`")
            prompts.append(ids)
    if not prompts:
        raise ValueError(f"{path}: holds no prompt")
    return prompts
