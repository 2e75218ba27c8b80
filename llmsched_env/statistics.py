"""NumPy's mean and percentiles, compiled, to the last bit.

The metrics of an episode end in a mean and three percentiles of four or five quantities;
``np.mean`` and ``np.percentile`` cost about 35 us per quantity in call overhead whatever the
size, more than the rest of the episode's summary. These numba forms give the same numbers bit
for bit (a test compares them on random arrays), so a summary does not depend on which one
computed it:

* :func:`pairwise_sum` is NumPy's pairwise summation of a contiguous float64 array (the
  ``pairwise_sum`` of NumPy's ``loops_utils.h.src``: blocks of at most 128 values summed in
  eight interleaved partial sums, larger ranges split in two at a multiple of 8), which
  ``np.sum`` and ``np.mean`` use; a plain loop rounds differently.
* :func:`percentiles` is ``np.percentile``'s default ``method="linear"`` (Hyndman and Fan's
  definition 7), including NumPy's two-sided interpolation, which computes a value in the upper
  half of the interval from its upper end.

And one sum in Python: :func:`sequential_sum` adds floats left to right, as the built-in
``sum`` did before Python 3.12, which compensates rounding errors (Neumaier's algorithm) and so
can differ in the last bit; the simulator's sums of floats use it, so that an episode is the
same under every Python.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from llmsched_env.jit import njit


def sequential_sum(values: Iterable[float]) -> float:
    """The sum of ``values``, added left to right with one rounding per addition.

    What ``sum`` gives for floats up to Python 3.11. From Python 3.12 ``sum`` compensates the
    rounding errors, so ``sum([0.1] * 10)`` is ``1.0`` there and ``0.9999999999999999``
    before; summing with this instead keeps results equal across Python versions.

    Example:
        >>> sequential_sum([0.1] * 10)
        0.9999999999999999
    """
    total = 0.0
    for value in values:
        total += value
    return total


#: NumPy's block size of pairwise summation (``PW_BLOCKSIZE``).
_BLOCK = 128


@njit(cache=True)
def pairwise_sum(a, lo, n):
    """The sum of ``a[lo : lo + n]`` (float64) exactly as ``np.sum`` computes it.

    ``np.add.reduce`` adds the pairwise sum to its identity, 0.0 (so a sum is never -0.0).
    """
    return 0.0 + _pairwise(a, lo, n)


@njit(cache=True)
def _pairwise(a, lo, n):
    """NumPy's recursive ``pairwise_sum`` over ``a[lo : lo + n]``, run with explicit stacks.

    (A recursive numba function loaded from numba's cache crashes, so the recursion is
    unrolled: a task stack of ranges to sum and of "add the last two sums" steps, and a stack
    of sums; the sums are added in the recursion's pairs.)
    """
    if n <= _BLOCK:
        return _block_sum(a, lo, n)
    # A range halves at every level: 64 levels cover any array; each level leaves at most one
    # pending range and one pending addition on the task stack.
    task_lo = np.empty(130, dtype=np.int64)
    task_n = np.empty(130, dtype=np.int64)  # -1: add the last two sums
    sums = np.empty(66)
    n_tasks, n_sums = 1, 0
    task_lo[0], task_n[0] = lo, n
    while n_tasks > 0:
        n_tasks -= 1
        start, size = task_lo[n_tasks], task_n[n_tasks]
        if size < 0:
            n_sums -= 1
            sums[n_sums - 1] = sums[n_sums - 1] + sums[n_sums]
        elif size <= _BLOCK:
            sums[n_sums] = _block_sum(a, start, size)
            n_sums += 1
        else:
            half = size // 2
            half -= half % 8
            # Run in reverse: the left half, the right half, then their addition.
            task_lo[n_tasks], task_n[n_tasks] = 0, -1
            task_lo[n_tasks + 1], task_n[n_tasks + 1] = start + half, size - half
            task_lo[n_tasks + 2], task_n[n_tasks + 2] = start, half
            n_tasks += 3
    return sums[0]


@njit(cache=True)
def _block_sum(a, lo, n):
    """NumPy's ``pairwise_sum`` of a range of at most 128 values (no split)."""
    if n < 8:
        total = -0.0  # NumPy starts from -0.0, so a sum of -0.0 stays -0.0
        for i in range(lo, lo + n):
            total += a[i]
        return total
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = lo + 8
    stop = lo + n - n % 8
    while i < stop:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < lo + n:
        total += a[i]
        i += 1
    return total


@njit(cache=True)
def _select(a, lo, hi, k):
    """Reorder ``a[lo:hi]`` so that ``a[k]`` holds its value of rank ``k`` (``lo <= k < hi``).

    Quickselect with a median-of-three pivot: afterwards nothing in ``a[lo:k]`` is above
    ``a[k]`` and nothing in ``a[k + 1 : hi]`` is below it. ``a`` holds no NaN. Each round
    splits the range in three, below the pivot, equal to it and above it, by two passes of
    Lomuto's partition written without branches (an element's side decides where the next one
    goes, not whether to jump): on latencies in random order a branch would be mispredicted
    half the time, which made selection two to three times slower. The smallest value of the
    range (rank ``lo``) is found by one scan. Expected cost linear in ``hi - lo``, also when many
    values are equal.
    """
    while hi - lo > 1:
        if k == lo:  # the smallest (as for the upper end of a percentile's interval): one scan
            smallest = lo
            for j in range(lo + 1, hi):
                if a[j] < a[smallest]:
                    smallest = j
            a[lo], a[smallest] = a[smallest], a[lo]
            return
        x, y, z = a[lo], a[(lo + hi) // 2], a[hi - 1]
        pivot = max(min(x, y), min(max(x, y), z))
        below = _move_front(a, lo, hi, pivot, False)  # a[lo:below] < pivot
        if k < below:
            hi = below
            continue
        equal = _move_front(a, below, hi, pivot, True)  # a[below:equal] == pivot
        if k < equal:
            return
        lo = equal


@njit(cache=True, inline="always")
def _move_front(a, lo, hi, pivot, or_equal):
    """Lomuto's partition of ``a[lo:hi]`` without branches; returns where the front part ends.

    The front part holds the values below ``pivot`` (and equal to it if ``or_equal``), the
    back part the others: each value is swapped to the end of the front part and the end moves
    on by whether it belongs there.
    """
    front = lo
    for j in range(lo, hi):
        value = a[j]
        a[j] = a[front]
        a[front] = value
        front += (value <= pivot) if or_equal else (value < pivot)
    return front


@njit(cache=True)
def percentiles(values, fractions, out):
    """Write ``np.percentile(values, 100 * fractions)`` of non-empty ``values`` to ``out``.

    ``values`` holds no NaN; ``fractions`` are the percentiles divided by 100 as NumPy divides
    them (``np.true_divide(q, 100)``). Only the order statistics the interpolation reads are
    placed, by selection in rank order, each in the part of a copy above the previous one
    (``values`` is not changed): expected time linear in ``n``, a few passes over the values
    for the usual 50th, 95th and 99th percentiles.
    """
    n = values.shape[0]
    positions = (n - 1) * fractions
    below = np.minimum(np.floor(positions).astype(np.int64), n - 1)
    above = np.minimum(below + 1, n - 1)
    ranked = values.copy()
    start = 0
    for rank in np.unique(np.concatenate((below, above))):
        _select(ranked, start, n, rank)
        start = rank + 1
    for k in range(fractions.shape[0]):
        if positions[k] >= n - 1:
            out[k] = ranked[n - 1]
            continue
        weight = positions[k] - below[k]
        low = ranked[below[k]]
        step = ranked[above[k]] - low
        out[k] = ranked[above[k]] - step * (1 - weight) if weight >= 0.5 else low + step * weight


@njit(cache=True)
def describe_rows(values, lengths, fractions):
    """Per row ``r`` of ``values``, the mean and percentiles of ``values[r, :lengths[r]]``.

    Returns:
        An array of ``len(lengths)`` rows: the mean, then one column per fraction; ``nan`` for
        an empty row.
    """
    out = np.full((lengths.shape[0], 1 + fractions.shape[0]), np.nan)
    for r in range(lengths.shape[0]):
        n = lengths[r]
        if n == 0:
            continue
        row = values[r, :n]
        out[r, 0] = pairwise_sum(row, 0, n) / n
        percentiles(row, fractions, out[r, 1:])
    return out
