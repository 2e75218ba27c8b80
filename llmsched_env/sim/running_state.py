"""The running-sequence state of an iteration-level GPU and the compiled loops that update it.

Each GPU of :class:`~llmsched_env.sim.iteration_server.IterationServer` keeps its running
sequences' token state in one float array: one row per field, one column per running sequence
in ``running`` order. A decode step serves a prefix of ``running``, so it updates the state with
slices, not gathers; the loops here run once per decode iteration, so they are compiled.
"""

from __future__ import annotations

import numpy as np

from llmsched_env.jit import njit

#: Request indices of nobody (an empty decode set).
EMPTY = np.zeros(0, dtype=np.int64)

_EMPTY = np.zeros(0, dtype=np.int64)

#: Fields of a GPU's running-sequence state: one row per field, one column per running
#: sequence in ``running`` order (rows are contiguous, so a decode step's updates are fast).
#: Counts are held as floats, exactly (they stay far below 2**53).
N_FIELDS = 6
GENERATED, LAST_TOKEN_S, MAX_GAP_S, TBT_MISSED, OUTPUT, PROMPT = range(N_FIELDS)


@njit(cache=True)
def decode_tokens(state, k, t, tbt_target_s):
    """Give running sequences ``0 .. k - 1`` (columns of ``state``) a token at time ``t``.

    Updates their token counts, last-token times, longest gaps and TBT flags (a gap above
    ``tbt_target_s`` marks a miss; ``nan`` means no target). Compiled, because every decode
    iteration runs it; it does per sequence the arithmetic numpy would do on the columns.

    Returns:
        ``(new_tbt_misses, n_done)``: sequences whose first TBT miss this is, and sequences that
        have now generated all their output tokens.
    """
    new_misses = 0
    n_done = 0
    for j in range(k):
        state[GENERATED, j] += 1.0
        gap = t - state[LAST_TOKEN_S, j]
        if gap > state[MAX_GAP_S, j]:
            state[MAX_GAP_S, j] = gap
        state[LAST_TOKEN_S, j] = t
        if gap > tbt_target_s:
            if state[TBT_MISSED, j] == 0.0:
                new_misses += 1
            state[TBT_MISSED, j] = 1.0
        if state[GENERATED, j] >= state[OUTPUT, j]:
            n_done += 1
    return new_misses, n_done


@njit(cache=True)
def context_tokens(state, k):
    """Prompt plus generated tokens of running sequences ``0 .. k - 1`` (whole numbers, exact)."""
    total = 0.0
    for j in range(k):
        total += state[PROMPT, j] + state[GENERATED, j]
    return int(total)


@njit(cache=True)
def context_spread(state, k):
    """Longest and shortest KV context (prompt plus generated) of running sequences ``0 .. k-1``."""
    longest = shortest = state[PROMPT, 0] + state[GENERATED, 0]
    for j in range(1, k):
        context = state[PROMPT, j] + state[GENERATED, j]
        if context > longest:
            longest = context
        elif context < shortest:
            shortest = context
    return int(longest), int(shortest)


@njit(cache=True)
def oldest_token_time(state):
    """The smallest last-token time of the running sequences in ``state`` (at least one)."""
    oldest = state[LAST_TOKEN_S, 0]
    for j in range(1, state.shape[1]):
        if state[LAST_TOKEN_S, j] < oldest:
            oldest = state[LAST_TOKEN_S, j]
    return oldest
