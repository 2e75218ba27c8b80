"""Paged KV-cache allocation with preemption by recomputation, as vLLM V1's scheduler does it.

The KV cache of a GPU is split into blocks of ``block_tokens`` tokens (PagedAttention, Kwon et
al., SOSP 2023). A request holds ``ceil(computed / block_tokens)`` blocks, where ``computed`` is
the number of its tokens whose KV is in the cache; when an iteration schedules ``n`` more tokens
of it, the missing blocks for ``computed + n`` tokens are taken from the GPU's free blocks at
scheduling time. When they are not free, the scheduler preempts the most recently admitted
request on the GPU, frees all its blocks and sends it back to the front of the waiting queue,
where it will recompute its KV from scratch (vLLM V1, ``vllm/v1/core/sched/scheduler.py``, first
come first served policy). These are the pure block-counting parts; the iteration server applies
their results to its requests.
"""

from __future__ import annotations

import numpy as np

from llmsched_env.jit import njit


def blocks_for(tokens: int, block_tokens: int) -> int:
    """Blocks that hold ``tokens`` tokens of KV: ``ceil(tokens / block_tokens)``.

    Example:
        >>> [blocks_for(t, 4) for t in (0, 1, 4, 5)]
        [0, 1, 1, 2]
    """
    return -(-tokens // block_tokens)


@njit(cache=True)
def decode_rows_needing_block(prompt, generated, k, block_tokens):
    """Which of the first ``k`` decoding sequences start a new KV block in their next step.

    A sequence with prompt ``p`` and ``g`` generated tokens has ``p + g - 1`` tokens in its KV
    cache (the last sampled token is not computed yet) and holds exactly the blocks for them; its
    decode step computes one more token, so it needs a new block exactly when ``p + g - 1`` is a
    multiple of ``block_tokens``. Compiled, because every decode iteration of a paged server
    runs it.

    Args:
        prompt: Prompt tokens per sequence (floats holding whole numbers).
        generated: Generated tokens per sequence (floats holding whole numbers).
        k: The sequences ``0 .. k - 1`` that decode.
        block_tokens: Tokens per block.

    Returns:
        The positions (ascending) of the sequences that need one new block.
    """
    rows = np.empty(k, dtype=np.int64)
    n = 0
    for j in range(k):
        if (prompt[j] + generated[j] - 1.0) % block_tokens == 0.0:
            rows[n] = j
            n += 1
    return rows[:n]


def allocate_in_admission_order(
    requests: list[int], new_blocks: list[int], order: list[int], held: list[int], free: int
) -> tuple[int, list[int], int]:
    """Give ``requests`` their ``new_blocks`` in turn, preempting the most recent when short.

    ``requests`` are scheduled in ascending admission order (a subsequence of ``order``). When
    the free blocks do not cover a request's need, the most recently admitted request still on the
    GPU (the end of ``order``) is preempted and its blocks freed, again and again until the need
    is covered; if the request itself gets preempted, scheduling stops. Because the victims are
    taken from the end of ``order`` and requests are served from its start, a victim is never a
    request that already got its blocks in this call (in vLLM's words: the running queue is
    scheduled from its head and preempted from its tail).

    A lone request never needs more blocks than the GPU has (the server rejects such requests at
    arrival), so the oldest scheduled request always gets its blocks.

    Args:
        requests: Requests to schedule, in ascending admission order.
        new_blocks: Blocks each of them needs beyond what it holds.
        order: Every request on the GPU, in ascending admission order.
        held: Blocks held per request (indexed by request); updated for the requests served.
        free: Free blocks of the GPU.

    Returns:
        ``(served, victims, free)``: how many of ``requests`` (a prefix) got their blocks, the
        preempted requests in preemption order (most recent first; their blocks are still in
        ``held``, for the caller to free), and the free blocks left (the victims' blocks count
        as free).
    """
    n_left = len(order)
    victims: list[int] = []
    for served, (index, need) in enumerate(zip(requests, new_blocks)):
        if victims and index in victims:
            # Preempted for an older request; every request after it is more recent, so gone too.
            return served, victims, free
        while need > free:
            n_left -= 1
            victim = order[n_left]
            victims.append(victim)
            free += held[victim]
            if victim == index:
                return served, victims, free
        free -= need
        held[index] += need
    return len(requests), victims, free
