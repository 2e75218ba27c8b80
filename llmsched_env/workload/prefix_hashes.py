"""Prefix block hashes of prompts, for simulating automatic prefix caching.

vLLM's automatic prefix caching (Kwon et al., SOSP 2023; vLLM V1's ``kv_cache_utils``) identifies
each *full* block of a request's tokens by a hash of the block's token ids together with the
hash of the block before it. Two requests' blocks ``j`` then have equal hashes exactly when their
first ``(j + 1) * block_tokens`` tokens are equal (up to hash collisions), so a cache keyed by
these hashes can reuse a prefix computed for another request. A partial last block gets no hash.

The hashes here are 64-bit BLAKE2b digests of the parent hash and the block's token ids
(little-endian int64s), so they are the same in every process and on every platform, unlike
Python's salted ``hash()``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

#: The parent "hash" of a prompt's first block.
_ROOT = (0).to_bytes(8, "little", signed=True)


def _check_block_tokens(block_tokens: object) -> None:
    """Refuse a block size that is not an integer >= 1 (naming the value)."""
    if (
        isinstance(block_tokens, bool)
        or not isinstance(block_tokens, (int, np.integer))
        or block_tokens < 1
    ):
        raise ValueError(f"block_tokens must be an integer >= 1, got {block_tokens!r}")


def prefix_block_hashes(
    token_ids: Sequence[int] | np.ndarray, block_tokens: int = 16
) -> np.ndarray:
    """The hash chain of one prompt's full blocks.

    Args:
        token_ids: The prompt's token ids (integers that fit in int64).
        block_tokens: Tokens per block.

    Returns:
        int64 array of ``len(token_ids) // block_tokens`` hashes; hash ``j`` covers tokens
        ``0 .. (j + 1) * block_tokens - 1``.

    Raises:
        ValueError: If ``block_tokens`` is not an integer >= 1 or the ids are not 1-D integers.

    Example:
        >>> a = prefix_block_hashes([1, 2, 3, 4, 5], block_tokens=2)
        >>> b = prefix_block_hashes([1, 2, 3, 9], block_tokens=2)
        >>> len(a), bool(a[0] == b[0]), bool(a[1] == b[1])
        (2, True, False)
    """
    _check_block_tokens(block_tokens)
    ids = np.asarray(token_ids)
    if ids.size == 0:
        ids = ids.astype(np.int64)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(
            f"token ids must be a 1-D sequence of integers, got shape {ids.shape} and dtype "
            f"{ids.dtype}"
        )
    return chain_block_hashes(ids, int(block_tokens))


def chain_block_hashes(ids: np.ndarray, block_tokens: int, after: int | None = None) -> np.ndarray:
    """The hashes of the full blocks of ``ids``, chained after the block hashed ``after``.

    The chaining of :func:`prefix_block_hashes` (which starts a prompt: ``after`` is ``None``);
    continuing a prompt's chain with the ids after its full blocks gives the longer prompt's.

    Args:
        ids: 1-D integer token ids (checked by the caller).
        block_tokens: Tokens per block (checked by the caller).
        after: The hash of the block before ``ids``, or ``None`` at a prompt's start.
    """
    data = ids.astype("<i8").tobytes()
    width = 8 * block_tokens
    n = ids.shape[0] // block_tokens
    out = np.empty(n, dtype=np.int64)
    parent = _ROOT if after is None else int(after).to_bytes(8, "little", signed=True)
    for j in range(n):
        parent = hashlib.blake2b(parent + data[j * width : (j + 1) * width], digest_size=8).digest()
        out[j] = int.from_bytes(parent, "little", signed=True)
    return out


def prefix_block_hashes_from_token_ids(
    token_ids_per_request: Iterable[Sequence[int] | np.ndarray], block_tokens: int = 16
) -> tuple[np.ndarray, ...]:
    """The hash chains of many prompts, ready for ``Workload(prefix_block_hashes=...)``.

    Args:
        token_ids_per_request: Each request's prompt token ids, in the workload's order.
        block_tokens: Tokens per block (pass it on as ``prefix_block_tokens``).

    Returns:
        One read-only int64 array per request (see :func:`prefix_block_hashes`).

    Example:
        >>> shared = list(range(32))
        >>> a, b = prefix_block_hashes_from_token_ids([shared + [7], shared + [8] * 16])
        >>> a.tolist() == b[:2].tolist(), len(b)
        (True, 3)
    """
    chains = []
    for index, ids in enumerate(token_ids_per_request):
        try:
            chain = prefix_block_hashes(ids, block_tokens)
        except ValueError as error:
            raise ValueError(f"request {index}: {error}") from None
        chain.flags.writeable = False
        chains.append(chain)
    return tuple(chains)


def reusable_prefix_fraction(
    prompt_tokens: Sequence[int] | np.ndarray,
    prefix_block_hashes: Sequence[np.ndarray] | None,
    block_tokens: int,
) -> float:
    """The prefix hit rate an unbounded cache shared by every request would reach.

    Requests are taken in order (arrival order, for a workload); each one's hit is the longest
    prefix of its hashed blocks that some earlier request's prompt held, in whole blocks that
    leave at least its last token to compute (``(tokens - 1) // block_tokens`` blocks at most),
    as the simulator's cache lookup counts a hit. The result, hit tokens over
    prompt tokens, bounds what prefix-aware routing can gain from prompts shared between
    requests: a real cache is split across replicas and evicts under memory pressure. (The
    simulator's ``prefix_hit_tokens`` can exceed it through preempted requests finding their
    own blocks again; its ``prefix_hit_rate`` leaves those out, as this does.)

    Args:
        prompt_tokens: Each request's prompt length in tokens.
        prefix_block_hashes: Each request's hash chain (:func:`prefix_block_hashes`), or
            ``None`` for a workload without hashes (nothing is shared: 0).
        block_tokens: Tokens per hashed block.

    Returns:
        Hit tokens over prompt tokens, 0 when there are no prompt tokens.

    Raises:
        ValueError: If the two sequences differ in length or ``block_tokens`` is not >= 1.

    Example:
        >>> shared = list(range(32))
        >>> chains = prefix_block_hashes_from_token_ids([shared + [7], shared + [8] * 16])
        >>> reusable_prefix_fraction([33, 48], chains, 16)  # the second reuses 32 of 48 tokens
        0.3950617283950617
    """
    _check_block_tokens(block_tokens)
    prompts = np.asarray(prompt_tokens, dtype=np.int64)
    total = int(prompts.sum())
    if prefix_block_hashes is None or total == 0:
        return 0.0
    if len(prefix_block_hashes) != len(prompts):
        raise ValueError(
            f"{len(prefix_block_hashes)} hash chains for {len(prompts)} prompts; expected one "
            f"chain per prompt"
        )
    seen: set[int] = set()
    hit = 0
    for tokens, chain in zip(prompts.tolist(), prefix_block_hashes, strict=True):
        hashes = np.asarray(chain).tolist()
        k = 0
        while k < len(hashes) and hashes[k] in seen:
            k += 1
        hit += min(k, max(tokens - 1, 0) // block_tokens) * block_tokens
        seen.update(hashes)
    return hit / total
