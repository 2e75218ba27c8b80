"""How much prefill a prefix cache could skip in a workload whose prompts have block hashes.

vLLM's automatic prefix caching (Kwon et al., SOSP 2023; vLLM V1's ``KVCacheManager``) keys every
*full* block of ``block_tokens`` prompt tokens by a hash chained over the blocks before it, so a
block is reused only when the whole prefix up to and including it was computed before. Given
those chains (``llmsched_env.workload.prefix_block_hashes_from_token_ids``, or the shipped
:class:`~llmsched_env.validation.prompt_hashes.PromptHashes`), this module counts the prompt
tokens whose chain an earlier prompt had: an upper bound on what the cache can skip, reached
only if no cached block is ever evicted. vLLM always computes a prompt's last token, so a prompt
that is entirely cached still computes its last block.

Used to report the effect of prefix caching on the one recorded run that had it on (the RTX 4090
run of ``llmsched validate``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


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


def prefix_sharing(
    chains: Iterable[Sequence[int]], prompt_tokens: Sequence[int], block_tokens: int = 16
) -> PrefixSharing:
    """Count the prompt tokens whose block hash chain appeared in an earlier prompt.

    Args:
        chains: Each prompt's hash chain, in arrival order: hash ``j`` covers its tokens
            ``0 .. (j + 1) * block_tokens - 1``, so equal hashes mean equal prefixes.
        prompt_tokens: Each prompt's length in tokens (at least ``len(chain) * block_tokens``).
        block_tokens: Tokens per block of the chains.

    Returns:
        The counts; a hit is capped so that each prompt computes at least its last token.

    Raises:
        ValueError: If ``block_tokens`` is not a positive integer, the two inputs differ in
            length, or a chain covers more tokens than its prompt has.

    Example:
        >>> from llmsched_env.workload import prefix_block_hashes_from_token_ids
        >>> shared = list(range(40))
        >>> prompts = [shared + [1, 2], shared + [3], [7] * 20]
        >>> chains = prefix_block_hashes_from_token_ids(prompts, block_tokens=16)
        >>> prefix_sharing(chains, [len(p) for p in prompts], block_tokens=16)
        PrefixSharing(prompts=3, prompt_tokens=103, hit_tokens=32, prompts_with_hit=1)
    """
    if isinstance(block_tokens, bool) or not isinstance(block_tokens, int) or block_tokens < 1:
        raise ValueError(f"block_tokens must be an integer >= 1, got {block_tokens!r}")
    chains = list(chains)
    lengths = [int(n) for n in prompt_tokens]
    if len(chains) != len(lengths):
        raise ValueError(
            f"{len(chains)} chains but {len(lengths)} prompt lengths; expected one each"
        )
    seen: set[int] = set()
    hits = with_hit = 0
    for index, (chain, length) in enumerate(zip(chains, lengths)):
        keys = [int(key) for key in chain]
        if len(keys) * block_tokens > length:
            raise ValueError(
                f"prompt {index}: a chain of {len(keys)} blocks of {block_tokens} tokens is longer "
                f"than its {length} tokens"
            )
        matched = 0
        for key in keys:
            if key not in seen:
                break
            matched += 1
        # vLLM computes at least the last token: whole blocks below the prompt's last token.
        hit = min(matched, (length - 1) // block_tokens) * block_tokens if length else 0
        hits += hit
        with_hit += hit > 0
        seen.update(keys)
    return PrefixSharing(len(lengths), sum(lengths), hits, with_hit)
