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
    if isinstance(block_tokens, bool) or not isinstance(block_tokens, (int, np.integer)):
        raise ValueError(f"block_tokens must be an integer >= 1, got {block_tokens!r}")
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be an integer >= 1, got {block_tokens!r}")
    ids = np.asarray(token_ids)
    if ids.size == 0:
        ids = ids.astype(np.int64)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(
            f"token ids must be a 1-D sequence of integers, got shape {ids.shape} and dtype "
            f"{ids.dtype}"
        )
    data = ids.astype("<i8").tobytes()
    width = 8 * int(block_tokens)
    n = ids.shape[0] // block_tokens
    out = np.empty(n, dtype=np.int64)
    parent = _ROOT
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
