"""Memory an episode needs, estimated before it is built, and a refusal when it cannot fit.

An episode holds, per request, the workload's arrays, the server's state and the per-request
records, so its memory grows linearly with ``n_requests``. Without a check, ``n_requests=10**8``
runs for tens of seconds and then dies with ``MemoryError`` (or the operating system kills the
process); the environments call :func:`check_episode_fits` in their constructors instead.

The bytes per request were measured, not derived: the growth of the peak resident set size
(``resource.getrusage(...).ru_maxrss``) of a process that had already run a 10-request episode,
while it built a ``burstgpt-synthetic`` episode and ran it, under the env's fallback action, to its
end (300,000 requests) or for 2,000 steps after ``reset`` (200,000 and 1,000,000 requests).
Observed: 209-381 bytes per request for ``BatchScheduling-v0`` and 479-615 for
``ContinuousBatching-v0``; the constants below round the largest up by about 5 %. A workload
whose requests carry prefix hashes needs more, in proportion to its hashes
(:func:`prefix_hash_bytes_per_request`).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

#: Peak memory per request of a ``BatchScheduling-v0`` episode, in bytes (measured: at most 381).
BATCH_BYTES_PER_REQUEST = 400
#: Peak memory per request of a ``ContinuousBatching-v0`` episode, in bytes (measured: at most 615).
CONTINUOUS_BYTES_PER_REQUEST = 640
#: Peak memory per request *and replica* of a ``Routing-v0`` episode, in bytes: every replica's
#: server keeps per-request state for the whole episode (measured: 368-379, from 8 and 64
#: replicas with 2,000 to 50,000 requests).
ROUTING_BYTES_PER_REPLICA_REQUEST = 400
#: Memory per KV block of paged KV memory (each GPU's block pool), in bytes (measured: 140-158,
#: the growth with ``n_replicas`` of ``Routing-v0``'s peak at 35,527 blocks per replica; the
#: compiled server's pool with prefix caching holds 64 bytes per block and a hash table of 2 to 4
#: slots of 24 bytes per block: at most 160).
PAGED_BYTES_PER_BLOCK = 160


#: Peak memory per byte of a workload's prefix hashes (8 per hash plus an array of 112): the
#: hashes themselves, their sampling and what the episode keeps of them (measured, whole
#: ``prefix-sharing`` episodes of 100,000-200,000 requests, 1,820 bytes of hashes per
#: request: 2.9x beside ``BatchScheduling-v0``'s own bytes, 3.2x beside
#: ``ContinuousBatching-v0``'s with paged KV and prefix caching).
PREFIX_HASH_PEAK_FACTOR = 3.5
#: Requests a source draws to estimate its prefix hashes per request.
_PROBE_REQUESTS = 256


def prefix_hash_bytes_per_request(source: Any, n_requests: int) -> int:
    """Peak memory per request that a workload's prefix hashes add to an episode, in bytes.

    Estimated from a probe of up to 256 requests drawn from ``source`` with a generator of its
    own (the env's is left alone); 0 for a workload without prefix hashes. A prompt of 3,400
    tokens in 16-token hashed blocks (``prefix-sharing``) holds 213 hashes: about 6.4 KB of
    peak memory per request, 16 times ``BatchScheduling-v0``'s own bytes.
    """
    hashes = _probe_hashes(source, n_requests)
    if hashes is None:
        return 0
    array_bytes = sum(8 * len(h) + 112 for h in hashes) / len(hashes)
    return math.ceil(PREFIX_HASH_PEAK_FACTOR * array_bytes)


def prefix_hash_copy_bytes_per_request(source: Any, n_requests: int) -> int:
    """Bytes per request of a copy of a workload's prefix hashes in a compiled prefix cache.

    The hashes as one int64 array plus each request's start in it
    (:mod:`llmsched_env.sim.prefix_cache_state`); 0 for a workload without prefix hashes.
    ``Routing-v0``'s compiled replicas hold one copy each.
    """
    hashes = _probe_hashes(source, n_requests)
    if hashes is None:
        return 0
    return math.ceil(sum(8 * len(h) + 8 for h in hashes) / len(hashes))


def _probe_hashes(source: Any, n_requests: int) -> list[np.ndarray] | None:
    """The prefix hashes of up to 256 requests of ``source`` (``None``: it has none)."""
    return source.sample(
        min(n_requests, _PROBE_REQUESTS), np.random.default_rng(0)
    ).prefix_block_hashes


def available_memory_bytes() -> int | None:
    """Memory the process can still use, in bytes, or ``None`` if it cannot be read.

    ``MemAvailable`` of ``/proc/meminfo`` on Linux (memory usable without swapping, page cache
    included); elsewhere the free physical pages (``os.sysconf("SC_AVPHYS_PAGES")``), and failing
    that all physical pages, times the page size. No dependency beyond the standard library.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            count = os.sysconf(pages)
            size = os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            continue
        if count > 0 and size > 0:
            return count * size
    return None


def _human(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n_bytes < 1024 or unit == "TB":
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{int(n_bytes)} B"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def check_episode_fits(
    owner: str,
    n_requests: int,
    bytes_per_request: int,
    available_bytes: int | None = None,
    *,
    fixed_bytes: int = 0,
    fixed_for: str = "",
) -> int:
    """Refuse an episode whose estimated memory exceeds the memory available.

    Args:
        owner: The environment, for the message.
        n_requests: Requests per episode.
        bytes_per_request: Measured peak bytes per request of this environment.
        available_bytes: Memory available (``None``: read with :func:`available_memory_bytes`;
            if that fails too, the check is skipped).
        fixed_bytes: Memory the episode needs whatever its length (e.g. paged KV blocks).
        fixed_for: What ``fixed_bytes`` is for, for the message (e.g. ``"n_replicas=64"``).

    Returns:
        The estimate in bytes.

    Raises:
        ValueError: If ``n_requests * bytes_per_request + fixed_bytes`` exceeds the memory
            available; the message gives the estimate, the memory available and the largest
            ``n_requests`` that fits (or says that the fixed part alone does not fit).
    """
    estimate = n_requests * bytes_per_request + fixed_bytes
    if available_bytes is None:
        available_bytes = available_memory_bytes()
    if available_bytes is None or estimate <= available_bytes:
        return estimate
    fixed = f" plus {_human(fixed_bytes)} for {fixed_for}" if fixed_bytes else ""
    if fixed_bytes >= available_bytes:
        raise ValueError(
            f"{owner}: the episode must fit in memory, but {fixed_for} alone needs about "
            f"{_human(fixed_bytes)} and only {_human(available_bytes)} is available"
        )
    largest = (available_bytes - fixed_bytes) // bytes_per_request
    raise ValueError(
        f"{owner}: n_requests must fit in memory, got {n_requests!r}: an episode needs about "
        f"{_human(estimate)} ({bytes_per_request} bytes per request, measured{fixed}) but only "
        f"{_human(available_bytes)} is available; the largest n_requests that fits is "
        f"{largest:,} (run several shorter episodes instead)"
    )
