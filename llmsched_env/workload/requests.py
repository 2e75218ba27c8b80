"""The request table a simulator consumes: :class:`Workload`.

A workload is a set of requests stored as parallel numpy arrays (one entry per request, sorted by
arrival time) rather than one Python object per request, so that sampling, windowing and rescaling
stay vectorised and a simulator can index them cheaply.

Token convention used throughout the package: the prefill of a request emits its first output
token, so a request with ``output_tokens = n`` needs ``n - 1`` decode iterations after its prefill
(``output_tokens = 1`` means prefill only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from llmsched_env.workload._checks import check_float, check_int

if TYPE_CHECKING:
    from llmsched_env.workload.arrivals import ArrivalProcess

ArrayLike = np.ndarray | Sequence[float] | Sequence[int]

#: Column names of :meth:`Workload.to_frame` / :meth:`Workload.from_frame`.
FRAME_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens", "predicted_output_tokens")

_TOKEN_FIELDS = ("prompt_tokens", "output_tokens", "predicted_output_tokens")

#: The latest arrival time a workload may have, in seconds (about 317 years). Event times are
#: float64 seconds: up to here they resolve a microsecond or better, beyond they lose the
#: resolution that service times of milliseconds need (an arrival rate of 1e-16 requests/s
#: made a batch of 0.17 s take 0.03 s).
MAX_ARRIVAL_S = 1e10
#: The largest token count a request may have: far above any model's context window, and small
#: enough that sums over millions of requests stay exact in int64 (a count near 2**63 would wrap
#: around when a prompt and an output are added, and pass the KV-memory check).
MAX_TOKENS = 2**31 - 1


def _is_frozen(array: np.ndarray) -> bool:
    """True if neither ``array`` nor any array it is a view of can be written through."""
    current: object = array
    while isinstance(current, np.ndarray):
        if current.flags.writeable:
            return False
        current = current.base
    return current is None


def _frozen_array(name: str, values: Any, dtype: type) -> np.ndarray:
    """Convert ``values`` to a 1-D read-only array of ``dtype`` without touching the caller's data.

    An input that already is a read-only array of the right dtype (and a view of nothing
    writable) is shared; anything else is copied, so freezing never changes an array the caller
    still holds and the caller cannot change the workload afterwards.
    """
    if isinstance(values, np.ndarray) and values.dtype == dtype and _is_frozen(values):
        array = values
    else:
        raw = np.asarray(values)
        if raw.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real numbers, got an array of dtype {raw.dtype}")
        if raw.ndim != 1:
            raise ValueError(f"{name} must be a 1-D array, got shape {raw.shape}")
        if dtype is np.int64 and raw.dtype.kind == "f":
            bad = ~np.isfinite(raw) | (raw != np.floor(raw))
            if bad.any():
                index = int(np.argmax(bad))
                raise ValueError(
                    f"{name} must hold whole numbers of tokens; "
                    f"{name}[{index}] = {raw[index].item()!r} is not an integer"
                )
        array = raw.astype(dtype, copy=True)
        array.flags.writeable = False
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")
    return array


def _frozen_hashes(
    hashes: Any, prompt_tokens: np.ndarray, block_tokens: int
) -> tuple[np.ndarray, ...]:
    """Check prefix block hashes against the prompts and freeze them as int64 arrays.

    Unsigned hashes (for example 64-bit digests) are reinterpreted bit for bit as int64.
    """
    if isinstance(hashes, (str, bytes, np.ndarray)) or not isinstance(hashes, Sequence):
        raise TypeError(
            "prefix_block_hashes must be a sequence of one integer array per request, got "
            f"{type(hashes).__name__}"
        )
    n = prompt_tokens.shape[0]
    if len(hashes) != n:
        raise ValueError(
            f"prefix_block_hashes must hold one array per request ({n}), got {len(hashes)}"
        )
    frozen = []
    for index, values in enumerate(hashes):
        raw = np.asarray(values)
        if raw.size == 0:
            raw = raw.astype(np.int64)
        if raw.ndim != 1 or raw.dtype.kind not in "iu":
            raise ValueError(
                f"prefix_block_hashes[{index}] must be a 1-D array of integers, got shape "
                f"{raw.shape} and dtype {raw.dtype}"
            )
        most = int(prompt_tokens[index]) // block_tokens
        if raw.shape[0] > most:
            raise ValueError(
                f"prefix_block_hashes[{index}] has {raw.shape[0]} hashes, but prompt_tokens"
                f"[{index}] = {int(prompt_tokens[index])} holds only {most} full blocks of "
                f"prefix_block_tokens = {block_tokens}"
            )
        if raw.dtype == np.int64 and _is_frozen(raw):
            frozen.append(raw)  # nobody can change it: shared, as _frozen_array shares
            continue
        # A copy the caller cannot change (uint64 digests keep their bits), made once.
        array = raw.view(np.int64).copy() if raw.dtype == np.uint64 else raw.astype(np.int64)
        ordered = np.sort(array)
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        if repeated.size:
            # Two blocks of one prompt with one key: a cache hit would hold a block twice.
            raise ValueError(
                f"prefix_block_hashes[{index}] repeats the hash {int(repeated[0])}: hash j "
                f"identifies the prompt's first (j + 1) * prefix_block_tokens tokens, so the "
                "hashes of one prompt differ (chain them, as "
                "prefix_block_hashes_from_token_ids does)"
            )
        array.flags.writeable = False
        frozen.append(array)
    return tuple(frozen)


class ArrivalSpanError(ValueError):
    """Arrival times reaching beyond :data:`MAX_ARRIVAL_S` (an arrival rate too low for them).

    A ``ValueError``; its own class lets an env say which of its settings set the rate.
    """


def _check_latest_arrival(arrival_s: np.ndarray, what: str) -> None:
    """Refuse sorted arrival times whose last is beyond :data:`MAX_ARRIVAL_S` (or not finite)."""
    last = float(arrival_s[-1])
    if not last <= MAX_ARRIVAL_S:
        raise ArrivalSpanError(
            f"{what} must end by {MAX_ARRIVAL_S:.0e} s, beyond which event times lose their "
            f"microsecond resolution; the last arrival is at {last:.6g} s (an arrival rate too "
            "low for the number of requests?)"
        )


def scaled_arrivals(arrival_s: np.ndarray, speedup: float) -> np.ndarray:
    """Sorted, non-negative arrival times divided by ``speedup`` (a new array).

    Raises:
        ValueError: If ``speedup`` is not a positive number or so small that the last arrival
            comes after :data:`MAX_ARRIVAL_S` (the last is the largest, so checking it alone
            covers every arrival; the check divides it as a Python float, which rounds as numpy
            does, before the array is).
    """
    return arrival_s / checked_speedup(float(arrival_s[-1]), speedup)


def checked_speedup(last_arrival_s: float, speedup: float) -> float:
    """``speedup`` as a float, if arrivals up to ``last_arrival_s`` divided by it stay in range.

    Raises:
        ValueError: If ``speedup`` is not a positive number or so small that ``last_arrival_s``
            comes after :data:`MAX_ARRIVAL_S` (divided as a Python float, which rounds as
            numpy does).
    """
    speedup = check_float("speedup", speedup, positive=True)
    last = last_arrival_s / speedup
    if not last <= MAX_ARRIVAL_S:
        raise ArrivalSpanError(
            f"speedup={speedup!r} is too small: the last arrival becomes {last:.6g} s, beyond "
            f"{MAX_ARRIVAL_S:.0e} s, where event times lose their microsecond resolution"
        )
    return speedup


def checked_predictions(predicted_output_tokens: ArrayLike, n_requests: int) -> np.ndarray:
    """Predicted output lengths as a read-only int64 array, checked as :class:`Workload` does.

    Raises:
        ValueError: If they are not one whole number in ``[1, MAX_TOKENS]`` per request
            (``n_requests``).
        TypeError: If they are not real numbers.
    """
    field = "predicted_output_tokens"
    predicted = _frozen_array(field, predicted_output_tokens, np.int64)
    if predicted.shape != (n_requests,):
        raise ValueError(
            f"{field} must have the same length as the workload ({n_requests} requests), "
            f"got {predicted.shape[0]}"
        )
    _check_token_counts(field, predicted)
    return predicted


def _check_token_counts(name: str, values: np.ndarray) -> None:
    """Raise ``ValueError`` naming the first entry of ``values`` outside ``[1, MAX_TOKENS]``."""
    bad = (values < 1) | (values > MAX_TOKENS)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(
            f"{name} must be a count of tokens in [1, {MAX_TOKENS}], got {name}[{index}] = "
            f"{values[index]}"
        )


@dataclass(frozen=True, eq=False)
class Workload:
    """Requests as parallel numpy arrays sorted by arrival time.

    The arrays are converted to the dtypes below, copied when needed and made read-only, so a
    workload can be shared between environments and episodes without defensive copies.

    Attributes:
        arrival_s: float64 ``(n,)`` arrival times in seconds; non-decreasing, ``>= 0``, at most
            :data:`MAX_ARRIVAL_S`.
        prompt_tokens: int64 ``(n,)`` prompt (input) lengths, in ``[1, MAX_TOKENS]``.
        output_tokens: int64 ``(n,)`` true output lengths, in ``[1, MAX_TOKENS]``. The prefill
            emits the first output token, so a request needs ``output_tokens - 1`` decode
            iterations after it.
        predicted_output_tokens: int64 ``(n,)`` output lengths as a scheduler's predictor sees
            them, in ``[1, MAX_TOKENS]``.
        name: A label for reports (for example the preset or trace name).
        prefix_block_hashes: Optional content hashes of the prompts' full blocks, for prefix
            caching (``IterationServer(prefix_caching=True)``): one int64 array per request, hash
            ``j`` identifying the prompt's first ``(j + 1) * prefix_block_tokens`` tokens (a hash
            chain, as vLLM's block hashes: equal hashes mean equal prefixes up to and including
            that block, so one prompt's hashes differ: a repeated one is refused). At most
            ``prompt_tokens // prefix_block_tokens`` hashes per request; an empty array means no
            block is shareable. ``None``: no request shares a prefix with
            another. Build them from token ids with :func:`prefix_block_hashes_from_token_ids`.
        prefix_block_tokens: Tokens per hashed block (16 for vLLM-style hashes of token ids,
            512 for Mooncake traces' ``hash_ids``).

    Raises:
        ValueError: If the arrays are empty, not 1-D, of unequal length, if the arrivals are not
            finite, negative or not sorted (use :meth:`from_unsorted` to sort), if a token
            count is not a whole number ``>= 1``, or if the prefix hashes are not one integer
            array per request with at most one hash per full prompt block.
        TypeError: If an array does not hold real numbers, ``name`` is not a string or the
            prefix hashes are not a sequence.

    Example:
        >>> w = Workload([0.0, 0.5, 2.0], [10, 20, 30], [5, 1, 7], [5, 1, 7], name="toy")
        >>> len(w), w.mean_rate_rps
        (3, 1.0)
        >>> w.window(1).arrival_s.tolist()
        [0.0, 1.5]
        >>> w.time_scaled(2.0).arrival_s.tolist()
        [0.0, 0.25, 1.0]
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    predicted_output_tokens: np.ndarray
    name: str = "custom"
    prefix_block_hashes: tuple[np.ndarray, ...] | None = None
    prefix_block_tokens: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {self.name!r} ({type(self.name).__name__})")
        arrival_s = _frozen_array("arrival_s", self.arrival_s, np.float64)
        object.__setattr__(self, "arrival_s", arrival_s)
        for field_name in _TOKEN_FIELDS:
            object.__setattr__(
                self, field_name, _frozen_array(field_name, getattr(self, field_name), np.int64)
            )
        n = arrival_s.shape[0]
        lengths = {f: getattr(self, f).shape[0] for f in ("arrival_s", *_TOKEN_FIELDS)}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"all arrays must have the same length, got lengths {lengths}")
        if n == 0:
            raise ValueError("a Workload needs at least one request, got 0 (empty arrays)")
        finite = np.isfinite(arrival_s)
        if not finite.all():
            index = int(np.argmin(finite))
            raise ValueError(
                f"arrival_s must be finite, got arrival_s[{index}] = {arrival_s[index]}"
            )
        if arrival_s[0] < 0:
            raise ValueError(f"arrival_s must be >= 0, got arrival_s[0] = {arrival_s[0]}")
        _check_latest_arrival(arrival_s, "arrival_s")
        descents = np.diff(arrival_s) < 0
        if descents.any():
            index = int(np.argmax(descents)) + 1
            raise ValueError(
                "arrival_s must be non-decreasing (requests sorted by arrival), but "
                f"arrival_s[{index}] = {arrival_s[index]} < arrival_s[{index - 1}] = "
                f"{arrival_s[index - 1]}; use Workload.from_unsorted(...) to sort the requests"
            )
        for field_name in _TOKEN_FIELDS:
            _check_token_counts(field_name, getattr(self, field_name))
        block_tokens = check_int("prefix_block_tokens", self.prefix_block_tokens, minimum=1)
        object.__setattr__(self, "prefix_block_tokens", block_tokens)
        if self.prefix_block_hashes is not None:
            hashes = _frozen_hashes(self.prefix_block_hashes, self.prompt_tokens, block_tokens)
            object.__setattr__(self, "prefix_block_hashes", hashes)

    @classmethod
    def _derived(
        cls,
        arrival_s: np.ndarray,
        prompt_tokens: np.ndarray,
        output_tokens: np.ndarray,
        predicted_output_tokens: np.ndarray,
        name: str,
        prefix_block_hashes: tuple[np.ndarray, ...] | None = None,
        prefix_block_tokens: int = 16,
    ) -> Workload:
        """A workload from arrays derived from a validated one, without checking them again.

        The arrays must come from a valid workload by slicing, a shift or a positive scaling
        that keeps arrivals sorted, finite and non-negative (and the prefix hashes, if any, are
        the validated ones of the same requests). Each episode samples its workload
        this way; the checks of the constructor would cost more than the rest of the sampling.
        Arrays that are not read-only yet (new ones, not views of a caller's data) are frozen.
        """
        workload = object.__new__(cls)
        for field_name, values in (
            ("arrival_s", arrival_s),
            ("prompt_tokens", prompt_tokens),
            ("output_tokens", output_tokens),
            ("predicted_output_tokens", predicted_output_tokens),
        ):
            values.flags.writeable = False
            object.__setattr__(workload, field_name, values)
        object.__setattr__(workload, "name", name)
        object.__setattr__(workload, "prefix_block_hashes", prefix_block_hashes)
        object.__setattr__(workload, "prefix_block_tokens", prefix_block_tokens)
        return workload

    def _prefix_kwargs(self, keep: slice | None = None) -> dict[str, Any]:
        """The prefix-hash fields of a workload derived from this one (of requests ``keep``)."""
        hashes = self.prefix_block_hashes
        if hashes is not None and keep is not None:
            hashes = hashes[keep]
        return {"prefix_block_hashes": hashes, "prefix_block_tokens": self.prefix_block_tokens}

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    def __repr__(self) -> str:
        return (
            f"Workload(name={self.name!r}, n_requests={len(self)}, "
            f"span_s={self.span_s:.6g}, mean_rate_rps={self.mean_rate_rps:.6g})"
        )

    def __reduce__(self) -> tuple[type[Workload], tuple[Any, ...]]:
        # Rebuild through the constructor so an unpickled workload is validated and read-only.
        return (
            Workload,
            (
                self.arrival_s,
                self.prompt_tokens,
                self.output_tokens,
                self.predicted_output_tokens,
                self.name,
                self.prefix_block_hashes,
                self.prefix_block_tokens,
            ),
        )

    @property
    def n_requests(self) -> int:
        """Number of requests."""
        return len(self)

    @property
    def span_s(self) -> float:
        """Seconds between the first and the last arrival (0 for a single request)."""
        return float(self.arrival_s[-1] - self.arrival_s[0])

    @property
    def mean_rate_rps(self) -> float:
        """Mean arrival rate in requests per second: ``(n - 1) / span_s``.

        ``n - 1`` gaps fit in the span, so this is the reciprocal of the mean inter-arrival gap.
        A single request has no gap and gives ``nan``; several requests that all arrive at the
        same instant give ``inf``. Neither case raises.
        """
        n = len(self)
        if n == 1:
            return float("nan")
        span = self.span_s
        return float("inf") if span == 0 else (n - 1) / span

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the requests: arrivals, true and predicted lengths, prefix hashes.

        Two workloads have the same fingerprint exactly when they hold the same requests, bit
        for bit (the ``name`` label does not count). The evaluation harness records it per
        episode, so that "every policy faced the same requests on a seed" can be checked.

        Example:
            >>> a = Workload([0.0, 1.0], [10, 20], [5, 6], [5, 6], name="a")
            >>> b = Workload([0.0, 1.0], [10, 20], [5, 6], [5, 6], name="b")
            >>> a.fingerprint() == b.fingerprint(), len(a.fingerprint())
            (True, 64)
            >>> a.fingerprint() == Workload([0.0, 1.0], [10, 20], [5, 7], [5, 6]).fingerprint()
            False
        """
        digest = hashlib.sha256()
        for name in ("arrival_s", *_TOKEN_FIELDS):
            values = getattr(self, name)
            digest.update(f"{name}:{values.dtype.str}:{values.size};".encode())
            digest.update(values.tobytes())
        if self.prefix_block_hashes is not None:
            digest.update(f"prefix_block_hashes:{self.prefix_block_tokens};".encode())
            for chain in self.prefix_block_hashes:
                digest.update(f"{chain.size};".encode())
                digest.update(np.ascontiguousarray(chain, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def window(self, start: int = 0, count: int | None = None, rebase: bool = True) -> Workload:
        """Return ``count`` consecutive requests starting at index ``start``.

        Args:
            start: Index of the first request kept, ``0 <= start < n``.
            count: Number of requests kept (``None``: all from ``start`` on); ``start + count``
                must not exceed ``n``.
            rebase: Subtract the first kept arrival time so the window starts at 0 s.

        Returns:
            A new :class:`Workload` with the same name.

        Raises:
            ValueError: If the window does not fit in the workload.
        """
        n = len(self)
        start = check_int("start", start, minimum=0)
        if start >= n:
            raise ValueError(f"start must be < n_requests = {n}, got {start}")
        count = n - start if count is None else check_int("count", count, minimum=1)
        if start + count > n:
            raise ValueError(
                f"window start={start}, count={count} needs {start + count} requests, "
                f"but the workload has only {n}"
            )
        stop = start + count
        arrival_s = self.arrival_s[start:stop]
        if rebase:
            arrival_s = arrival_s - arrival_s[0]
        return Workload._derived(
            arrival_s,
            self.prompt_tokens[start:stop],
            self.output_tokens[start:stop],
            self.predicted_output_tokens[start:stop],
            self.name,
            **self._prefix_kwargs(slice(start, stop)),
        )

    def time_scaled(self, speedup: float) -> Workload:
        """Return the workload with time compressed by ``speedup`` (arrivals / speedup).

        The order and relative spacing of arrivals (the burst structure) is kept; only the clock
        changes, so the mean rate is multiplied by ``speedup``.

        Args:
            speedup: Positive factor; 10 replays the trace ten times faster.

        Returns:
            A new :class:`Workload`.
        """
        return Workload._derived(
            scaled_arrivals(self.arrival_s, speedup),
            self.prompt_tokens,
            self.output_tokens,
            self.predicted_output_tokens,
            self.name,
            **self._prefix_kwargs(),
        )

    def retimed(self, arrivals: ArrivalProcess, rng: np.random.Generator) -> Workload:
        """Return the workload with its arrival times redrawn from ``arrivals``.

        Lengths, predictions and prefix hashes are kept; only the clock of each request
        changes (the processes of :mod:`llmsched_env.workload.arrivals` draw sorted,
        non-negative times, so only the last is checked: finite and by :data:`MAX_ARRIVAL_S`).

        Args:
            arrivals: An arrival process, e.g. ``GammaArrivals(rate_rps=2.0, cv=4.0)``.
            rng: The generator the times are drawn from.

        Returns:
            A new :class:`Workload` with the same name.
        """
        arrival_s = arrivals.sample_times(len(self), rng)
        _check_latest_arrival(arrival_s, f"the arrival times drawn from {arrivals!r}")
        return Workload._derived(
            arrival_s,
            self.prompt_tokens,
            self.output_tokens,
            self.predicted_output_tokens,
            self.name,
            **self._prefix_kwargs(),
        )

    def with_predictions(
        self, predicted_output_tokens: ArrayLike, *, name: str | None = None
    ) -> Workload:
        """Return the workload with the predicted output lengths replaced.

        Args:
            predicted_output_tokens: One whole number ``>= 1`` per request.
            name: Name of the new workload (default: this workload's name).

        Returns:
            A new :class:`Workload`.

        Raises:
            ValueError: If the predictions are not one whole number ``>= 1`` per request.
            TypeError: If they are not real numbers.
        """
        predicted = checked_predictions(predicted_output_tokens, len(self))
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r} ({type(name).__name__})")
        return Workload._derived(
            self.arrival_s,
            self.prompt_tokens,
            self.output_tokens,
            predicted,
            self.name if name is None else name,
            **self._prefix_kwargs(),
        )

    def with_prefix_hashes(
        self, prefix_block_hashes: Sequence[ArrayLike] | None, block_tokens: int = 16
    ) -> Workload:
        """Return the workload with the prompts' prefix block hashes replaced.

        Args:
            prefix_block_hashes: One integer array per request (see the class attributes), or
                ``None`` to drop them.
            block_tokens: Tokens per hashed block.

        Returns:
            A new :class:`Workload` (checked as the constructor does).
        """
        return Workload(
            self.arrival_s,
            self.prompt_tokens,
            self.output_tokens,
            self.predicted_output_tokens,
            self.name,
            prefix_block_hashes=prefix_block_hashes,
            prefix_block_tokens=block_tokens,
        )

    def to_frame(self) -> pd.DataFrame:
        """Return the requests as a ``pandas.DataFrame`` with columns :data:`FRAME_COLUMNS`."""
        return pd.DataFrame({column: np.array(getattr(self, column)) for column in FRAME_COLUMNS})

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, name: str = "custom") -> Workload:
        """Build a workload from a frame with the columns of :meth:`to_frame`.

        Args:
            frame: Columns ``arrival_s``, ``prompt_tokens``, ``output_tokens`` and optionally
                ``predicted_output_tokens`` (missing: the true output lengths are used). Rows must
                be sorted by ``arrival_s``.
            name: Name of the new workload.

        Returns:
            A new :class:`Workload`.

        Raises:
            ValueError: If a required column is missing.
        """
        required = FRAME_COLUMNS[:3]
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise ValueError(
                f"frame is missing columns {missing}; expected {list(required)} "
                f"(and optionally 'predicted_output_tokens'), got {list(frame.columns)}"
            )
        output = frame["output_tokens"].to_numpy()
        predicted = (
            frame["predicted_output_tokens"].to_numpy()
            if "predicted_output_tokens" in frame.columns
            else output
        )
        return cls(
            frame["arrival_s"].to_numpy(),
            frame["prompt_tokens"].to_numpy(),
            output,
            predicted,
            name=name,
        )

    @classmethod
    def from_unsorted(
        cls,
        arrival_s: ArrayLike,
        prompt_tokens: ArrayLike,
        output_tokens: ArrayLike,
        predicted_output_tokens: ArrayLike | None = None,
        name: str = "custom",
    ) -> Workload:
        """Build a workload from requests in any order, sorting them stably by arrival time.

        Requests with equal arrival times keep their input order.

        Args:
            arrival_s: Arrival times in seconds, any order.
            prompt_tokens: Prompt lengths.
            output_tokens: True output lengths.
            predicted_output_tokens: Predicted output lengths (``None``: the true ones).
            name: Name of the new workload.

        Returns:
            A new, sorted :class:`Workload`.

        Example:
            >>> w = Workload.from_unsorted([2.0, 1.0, 1.0], [1, 2, 3], [4, 5, 6])
            >>> w.prompt_tokens.tolist()
            [2, 3, 1]
        """
        predicted = output_tokens if predicted_output_tokens is None else predicted_output_tokens
        arrays = {
            "arrival_s": np.asarray(arrival_s, dtype=np.float64),
            "prompt_tokens": np.asarray(prompt_tokens),
            "output_tokens": np.asarray(output_tokens),
            "predicted_output_tokens": np.asarray(predicted),
        }
        shapes = {key: value.shape for key, value in arrays.items()}
        if len(set(shapes.values())) != 1 or arrays["arrival_s"].ndim != 1:
            raise ValueError(f"all arrays must be 1-D with the same length, got shapes {shapes}")
        order = np.argsort(arrays["arrival_s"], kind="stable")
        return cls(
            arrays["arrival_s"][order],
            arrays["prompt_tokens"][order],
            arrays["output_tokens"][order],
            arrays["predicted_output_tokens"][order],
            name=name,
        )
