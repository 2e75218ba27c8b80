"""Correction of decode attention for batches whose decode contexts are uneven.

The attention profile (:mod:`llmsched_env.latency.profile_data`) measures batches whose decode
sequences all hold the same KV length, and the iteration model looks a real batch up at its
*mean* length, which reads the same total KV. A real batch with uneven lengths is slower than
that uniform one: FlashAttention's variable-length kernel pads tiles and leaves streaming
multiprocessors idle behind the longest sequences. LLMServingSim 2.0's profiler measures this
(skewed batches against uniform ones) and fits, per bucket of batch shape, a weight ``alpha``::

    t_skewed = t_mean + alpha * (t_max - t_mean)

where ``t_mean`` and ``t_max`` are the profiled attention times at the mean and at the longest
decode context. This module reads that fit (``skew_fit.csv``: one ``alpha`` per bucket) and
resolves ``alpha`` for a batch. A batch is bucketed by its prefill chunk (only exact grid points
have buckets), its decode count, its *skew rate* ``(mean - min) / (max - min)``, its longest
context and the prefill's earlier KV; a batch without a bucket gets the profile's pooled
``alpha_default``. The bucket edges below are those of the profiler's fit (its ``meta.yaml``);
an edge ``e[i + 1]`` closes bucket ``i`` on the right.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmsched_env.jit import njit
from llmsched_env.latency import _checks

#: Bucket edges and labels of the profiler's skew fit, per axis: ``(edges, labels)``.
SKEW_BUCKET_AXES: dict[str, tuple[tuple[float, ...], tuple[str, ...]]] = {
    "n_label": (
        (0, 2, 4, 8, 16, 32, 64, 128, 256, 1_000_000),
        ("n<=2", "n<=4", "n<=8", "n<=16", "n<=32", "n<=64", "n<=128", "n<=256", "n>256"),
    ),
    "skew_rate_label": (
        (-0.01, 0.05, 0.15, 0.4, 0.7, 1.01),
        ("sr<=5%", "sr<=15%", "sr<=40%", "sr<=70%", "sr>70%"),
    ),
    "kv_big_label": (
        (0, 1024, 4096, 16384, 1_000_000_000),
        ("kvB<=1k", "kvB<=4k", "kvB<=16k", "kvB>16k"),
    ),
    "kp_label": (
        (-1, 0, 512, 1024, 2048, 4096, 8192, 1_000_000_000),
        ("kp=0", "kp<=512", "kp<=1k", "kp<=2k", "kp<=4k", "kp<=8k", "kp>8k"),
    ),
}

_LABEL_COLUMNS = tuple(SKEW_BUCKET_AXES)
_COLUMNS = ("pc", *_LABEL_COLUMNS, "alpha")


#: The bucket edges of each axis as arrays, in key order, for compiled code.
_N_EDGES, _SKEW_EDGES, _KV_EDGES, _KP_EDGES = (
    np.array(SKEW_BUCKET_AXES[axis][0], dtype=np.float64) for axis in _LABEL_COLUMNS
)
#: Radix of each bucket index in a bucket's integer key (every axis has fewer buckets).
_KEY_RADIX = 16


@njit(cache=True)
def bucket_key(chunk: int, n: int, skew_rate: int, kv_big: int, kp: int) -> int:
    """One integer for a bucket ``(prefill chunk, decode count, skew rate, longest, prefill KV)``.

    The four bucket indices are digits in base :data:`_KEY_RADIX` below the chunk, so keys of
    different buckets differ and sort by chunk first.
    """
    return (((chunk * _KEY_RADIX + n) * _KEY_RADIX + skew_rate) * _KEY_RADIX + kv_big) * (
        _KEY_RADIX
    ) + kp


@njit(cache=True)
def _bucket(edges: np.ndarray, value: float) -> int:  # pragma: no cover - numba
    """Index of the bucket of ``value`` on an axis (right-closed; the last one is open)."""
    return min(np.searchsorted(edges[1:], value), edges.shape[0] - 2)


@njit(cache=True)
def skew_alpha(
    keys: np.ndarray,
    alphas: np.ndarray,
    alpha_default: float,
    prefill_chunk: float,
    n_decode: float,
    kv_mean: float,
    kv_max: float,
    kv_min: float,
    prefill_kv: float,
) -> float:  # pragma: no cover - numba
    """``alpha`` of one batch (:meth:`DecodeSkewCorrection.alpha`), callable from compiled code.

    ``keys`` and ``alphas`` are the correction's :meth:`~DecodeSkewCorrection.bucket_table`.
    """
    if prefill_chunk != math.floor(prefill_chunk) or keys.shape[0] == 0:
        return alpha_default
    gap = kv_max - kv_min
    skew_rate = (kv_mean - kv_min) / gap if gap > 0 else 0.5
    key = bucket_key(
        int(prefill_chunk),
        _bucket(_N_EDGES, n_decode),
        _bucket(_SKEW_EDGES, min(max(skew_rate, 0.0), 1.0)),
        _bucket(_KV_EDGES, kv_max),
        _bucket(_KP_EDGES, prefill_kv),
    )
    i = np.searchsorted(keys, key)
    if i < keys.shape[0] and keys[i] == key:
        return alphas[i]
    return alpha_default


class SkewFitError(ValueError):
    """A skew-fit file is malformed; the message names the file, the column and the value."""


@dataclass(frozen=True)
class DecodeSkewCorrection:
    """``alpha`` per batch-shape bucket, and the pooled default for batches without one.

    Attributes:
        alpha_default: ``alpha`` of a batch whose bucket was not fitted (the profiler's pooled
            fit).
        alpha_by_bucket: ``alpha`` by ``(prefill chunk, decode-count bucket, skew-rate bucket,
            longest-context bucket, prefill-KV bucket)``, bucket indices as in
            :data:`SKEW_BUCKET_AXES`.

    Example:
        >>> fit = DecodeSkewCorrection(0.05, {(0, 5, 3, 1, 0): 0.02})
        >>> fit.alpha(prefill_chunk=0, n_decode=40, kv_mean=1500, kv_max=3000, kv_min=200,
        ...           prefill_kv=0)
        0.02
        >>> fit.alpha(512, 40, 1500, 3000, 200, 0)  # no bucket for this chunk: the default
        0.05
    """

    alpha_default: float
    alpha_by_bucket: Mapping[tuple[int, int, int, int, int], float] = field(
        default_factory=dict, repr=False
    )
    _table: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner = type(self).__name__
        value = _checks.real(owner, "alpha_default", self.alpha_default)
        object.__setattr__(self, "alpha_default", value)
        # A private copy (a plain dict, so the model pickles for subprocess vector envs).
        object.__setattr__(self, "alpha_by_bucket", dict(self.alpha_by_bucket))
        object.__setattr__(self, "_table", self.bucket_table())

    def alpha(
        self,
        prefill_chunk: float,
        n_decode: float,
        kv_mean: float,
        kv_max: float,
        kv_min: float,
        prefill_kv: float,
    ) -> float:
        """``alpha`` of one batch.

        Args:
            prefill_chunk: Prefill tokens of the iteration.
            n_decode: Decode sequences.
            kv_mean: Their mean KV context.
            kv_max: Their longest KV context.
            kv_min: Their shortest KV context.
            prefill_kv: KV tokens the prefill chunks' sequences held before their chunks.

        Returns:
            The bucket's ``alpha``, or :attr:`alpha_default` for a batch without a bucket.
        """
        keys, alphas = self._table
        return skew_alpha(
            keys,
            alphas,
            self.alpha_default,
            float(prefill_chunk),
            float(n_decode),
            float(kv_mean),
            float(kv_max),
            float(kv_min),
            float(prefill_kv),
        )

    def bucket_table(self) -> tuple[np.ndarray, np.ndarray]:
        """The fitted buckets for :func:`skew_alpha`: sorted :func:`bucket_key` keys, ``alpha``."""
        keyed = sorted(
            (bucket_key(*bucket), alpha) for bucket, alpha in self.alpha_by_bucket.items()
        )
        keys = np.array([key for key, _ in keyed], dtype=np.int64)
        alphas = np.array([alpha for _, alpha in keyed], dtype=np.float64)
        return keys, alphas


def load_skew_fit(path: str | Path, alpha_default: float) -> DecodeSkewCorrection:
    """Read a profiler's ``skew_fit.csv``.

    Columns ``pc, n_label, skew_rate_label, kv_big_label, kp_label, alpha``; others are ignored.
    Per-bucket fits on few samples can lie outside ``[0, 1]`` (the shipped ones span about -20
    to 5; their medians are 0.09 to 0.12); they are used as fitted, as LLMServingSim does.

    Args:
        path: The file.
        alpha_default: The profiler's pooled ``alpha`` (its ``meta.yaml``), for batches without a
            bucket.

    Returns:
        The correction; files are parsed once per process.

    Raises:
        FileNotFoundError: If the file does not exist.
        SkewFitError: If a column is missing, a label is not one of the profiler's, ``pc`` is not
            an integer >= 0, ``alpha`` is not a finite number, or a bucket repeats (names the line).
    """
    return _load_cached(Path(path).resolve(), float(alpha_default))


@functools.cache
def _load_cached(path: Path, alpha_default: float) -> DecodeSkewCorrection:
    if not path.is_file():
        raise FileNotFoundError(f"skew fit file {str(path)!r} does not exist")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [name for name in _COLUMNS if name not in table.columns]
    if missing:
        raise SkewFitError(
            f"{path}: missing column(s) {missing}; expected {list(_COLUMNS)}, "
            f"found {list(table.columns)}"
        )
    alphas: dict[tuple[int, int, int, int, int], float] = {}
    for row, record in enumerate(table[list(_COLUMNS)].itertuples(index=False), start=2):
        values = dict(zip(_COLUMNS, record))
        chunk = pd.to_numeric(values["pc"], errors="coerce")
        if not (np.isfinite(chunk) and chunk >= 0 and chunk == int(chunk)):
            raise SkewFitError(
                f"{path}: column 'pc' has value {values['pc']!r} on line {row}; "
                "expected an integer >= 0"
            )
        indices = []
        for column in _LABEL_COLUMNS:
            labels = SKEW_BUCKET_AXES[column][1]
            label = values[column].strip()
            if label not in labels:
                raise SkewFitError(
                    f"{path}: column {column!r} has value {values[column]!r} on line {row}; "
                    f"expected one of {list(labels)}"
                )
            indices.append(labels.index(label))
        alpha = pd.to_numeric(values["alpha"], errors="coerce")
        if not np.isfinite(alpha):
            raise SkewFitError(
                f"{path}: column 'alpha' has value {values['alpha']!r} on line {row}; "
                "expected a finite number"
            )
        key = (int(chunk), *indices)
        if key in alphas:
            raise SkewFitError(f"{path}: the bucket on line {row} appears twice")
        alphas[key] = float(alpha)
    if not alphas:
        raise SkewFitError(f"{path}: no rows")
    return DecodeSkewCorrection(alpha_default, alphas)
