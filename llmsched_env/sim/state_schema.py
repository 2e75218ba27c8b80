"""State declared once, by name: buffers for numba and a named tuple of views into them.

A compiled simulator keeps its state in numpy arrays. Passing thirty arrays from Python to a
numba function costs an unboxing each, so the arrays live in two buffers (one float64, one
int64) and a call passes the two buffers and a *layout* (the run's sizes and each field's
offset). Inside compiled code a generated function slices the buffers into a named tuple, so
the code reads ``state.queue_head[q]``, never an offset. Its slices are borrowed views
(:func:`borrowed_slice`), which cost no reference counting.

A :class:`StateSchema` is the one place a state is declared: each :class:`Field` has a name, a
dtype, a length in terms of the run's sizes and a one-line meaning. Every field is
one-dimensional (a per-GPU or per-batch table is one array per column); a scalar is a
one-element array, so compiled code can write it. Adding a field is one line.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from llmsched_env.jit import njit


@dataclass(frozen=True)
class Field:
    """One array of a state.

    Attributes:
        name: The attribute name in the state tuple.
        kind: ``"f"`` (float64) or ``"i"`` (int64; flags are 0/1).
        length: The array's length: a number, the name of a size of the run (``"n_gpus"``), or
            a size plus a number (``"n_queued + 1"``).
        meaning: What the array holds, in one line.
    """

    name: str
    kind: Literal["f", "i"]
    length: int | str
    meaning: str

    def size(self, sizes: dict[str, int]) -> int:
        """The array's length in a run of the given sizes."""
        if isinstance(self.length, int):
            return self.length
        name, _, extra = self.length.partition("+")
        return sizes[name.strip()] + (int(extra) if extra else 0)

    def terms(self) -> tuple[str | None, int]:
        """The length as ``(size name or None, constant)``; ``"n_queued + 1"`` gives both."""
        if isinstance(self.length, int):
            return None, self.length
        name, _, extra = self.length.partition("+")
        return name.strip(), int(extra) if extra else 0


class StateSchema:
    """A set of named arrays stored in a float64 and an int64 buffer.

    Args:
        type_name: Name of the state's named-tuple type.
        module: Module that defines the schema (the named-tuple type's ``__module__``, so that
            numba's on-disk cache can find it again).
        size_names: Names of the run sizes that fields' lengths refer to, in layout order.
        fields: The arrays, in buffer order.

    Attributes:
        tuple_type: The named tuple (one entry per field, in order) that :meth:`views` and the
            compiled :attr:`view` return.
        view: Compiled ``view(floats, ints, layout)``: the named tuple of buffer views, for
            numba code.
    """

    def __init__(
        self, type_name: str, module: str, size_names: tuple[str, ...], fields: tuple[Field, ...]
    ) -> None:
        names = [f.name for f in fields]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"{type_name}: duplicate field names {duplicates}")
        self.size_names = size_names
        self.fields = fields
        self.tuple_type = collections.namedtuple(type_name, names)
        self.tuple_type.__module__ = module
        self.tuple_type.__doc__ = f"The arrays of a {type_name}: " + ", ".join(names) + "."
        # Layout: the sizes, then per buffer the offsets of its fields (n + 1 of them).
        self._floats = [f for f in fields if f.kind == "f"]
        self._ints = [f for f in fields if f.kind == "i"]
        self._float_start = len(size_names)
        self._int_start = self._float_start + len(self._floats) + 1
        self._layout_constant, self._layout_matrix = self._linear_layout()
        for array in (self._layout_constant, self._layout_matrix):
            array.flags.writeable = False  # (handed to compiled code: see linear_layout)
        # Per field in declaration order: (0 for the float buffer or 1, index of its start in
        # the layout), so that views() slices without looking anything up.
        starts = {f.name: (0, self._float_start + k) for k, f in enumerate(self._floats)}
        starts.update({f.name: (1, self._int_start + k) for k, f in enumerate(self._ints)})
        self._slices = tuple(starts[f.name] for f in fields)
        self.view = self._compile_view(module)

    def start_index(self, name: str) -> int:
        """The index in a layout of where field ``name`` starts.

        Its first element is ``buffer[layout[start_index(name)]]``: compiled code reads one
        field so without making the state's view.
        """
        return self._slices[[f.name for f in self.fields].index(name)][1]

    def sizes(self, layout: np.ndarray) -> dict[str, int]:
        """The run sizes a layout records."""
        return dict(zip(self.size_names, layout[: len(self.size_names)].tolist()))

    def _linear_layout(self) -> tuple[np.ndarray, np.ndarray]:
        """The layout as a linear function of the run sizes: ``constant + matrix @ sizes``.

        Every field's length is a constant plus at most one size, so its offset (a sum of the
        lengths before it) is linear in the sizes too; :meth:`allocate` then costs one small
        matrix product instead of a loop over the fields.
        """
        n_sizes = len(self.size_names)
        rows: list[tuple[int, list[int]]] = [
            (0, [int(i == j) for j in range(n_sizes)]) for i in range(n_sizes)
        ]
        for group in (self._floats, self._ints):
            constant, coefficients = 0, [0] * n_sizes
            rows.append((constant, list(coefficients)))
            for f in group:
                name, extra = f.terms()
                if name is not None:
                    if name not in self.size_names:
                        raise ValueError(
                            f"field {f.name!r} has length {f.length!r}: {name!r} is not one of "
                            f"the run sizes {list(self.size_names)}"
                        )
                    coefficients[self.size_names.index(name)] += 1
                constant += extra
                rows.append((constant, list(coefficients)))
        constant_column = np.array([r[0] for r in rows], dtype=np.int64)
        matrix = np.array([r[1] for r in rows], dtype=np.int64).reshape(len(rows), n_sizes)
        return constant_column, matrix

    def layout(self, **sizes: int) -> np.ndarray:
        """The layout of a run of the given sizes (its buffers' lengths are its last offsets)."""
        try:
            values = [sizes[name] for name in self.size_names]
        except KeyError:
            missing = set(self.size_names) - set(sizes)
            raise ValueError(f"missing run sizes {sorted(missing)}") from None
        return self._layout_constant + self._layout_matrix @ np.array(values, dtype=np.int64)

    def allocate(self, **sizes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Zeroed buffers for a run of the given sizes: ``(floats, ints, layout)``."""
        layout = self.layout(**sizes)
        n_floats, n_ints = self.buffer_lengths(layout)
        return np.zeros(n_floats), np.zeros(n_ints, dtype=np.int64), layout

    def buffer_lengths(self, layout: np.ndarray) -> tuple[int, int]:
        """``(floats, ints)``: how long the buffers of a run of this layout are."""
        return int(layout[self.floats_end]), int(layout[-1])

    @property
    def floats_end(self) -> int:
        """The index in a layout of the float buffer's length (the int buffer's is the last)."""
        return self._int_start - 1

    @property
    def linear_layout(self) -> tuple[np.ndarray, np.ndarray]:
        """``(constant, matrix)``: a run's layout is ``constant + matrix @ sizes``.

        For compiled code that lays out a run in buffers it reuses (:func:`lay_out`); both
        arrays are read-only.
        """
        return self._layout_constant, self._layout_matrix

    def views(self, floats: np.ndarray, ints: np.ndarray, layout: np.ndarray) -> Any:
        """The named tuple of views into the buffers (for Python code)."""
        offsets = layout.tolist()
        buffers = (floats, ints)
        return tuple.__new__(
            self.tuple_type,
            [buffers[b][offsets[k] : offsets[k + 1]] for b, k in self._slices],
        )

    def describe(self) -> str:
        """One line per field: name, dtype, length and meaning."""
        kinds = {"f": "float64", "i": "int64"}
        return "\n".join(
            f"{f.name:<20} {kinds[f.kind]:<8} [{f.length}]  {f.meaning}" for f in self.fields
        )

    def _compile_view(self, module: str) -> Any:
        """Generate and compile ``view(floats, ints, layout)`` for this schema.

        The code is generated from the fields, so the offsets in it can never disagree with
        :meth:`allocate`; it is registered under the schema module's file name so numba's cache
        finds it (and drops it when that file changes).
        """
        items = []
        for group, buffer, start in (
            (self._floats, "floats", self._float_start),
            (self._ints, "ints", self._int_start),
        ):
            for k, f in enumerate(group):
                bounds = f"layout[{start + k}], layout[{start + k + 1}]"
                items.append(f"        {f.name}=borrowed_slice({buffer}, {bounds}),")
        source = "\n".join(
            [
                f"def view_{self.tuple_type.__name__}(floats, ints, layout):",
                "    return State(",
                *items,
                "    )",
                "",
            ]
        )
        filename = __import__(module, fromlist=["_"]).__file__
        # Uncompiled (NUMBA_DISABLE_JIT=1), an intrinsic cannot run: a plain slice does its job.
        sliced = _plain_slice if numba.config.DISABLE_JIT else borrowed_slice
        namespace = {"State": self.tuple_type, "borrowed_slice": sliced}
        code = compile(source, filename, "exec")
        exec(code, namespace)
        function = namespace[f"view_{self.tuple_type.__name__}"]
        function.__module__ = module
        return njit(cache=True, inline="always")(function)


@njit(cache=True)
def lay_out(layout, constant, matrix, sizes):
    """Write the layout of a run of ``sizes`` (in the schema's order) into ``layout``.

    ``constant`` and ``matrix`` are the schema's :attr:`StateSchema.linear_layout`; the result
    is :meth:`StateSchema.layout`'s, for compiled code that starts a new run in buffers it
    already has.
    """
    for row in range(constant.shape[0]):
        value = constant[row]
        for column in range(sizes.shape[0]):
            value += matrix[row, column] * sizes[column]
        layout[row] = value


def _plain_slice(buffer: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``buffer[lo:hi]``: what :func:`borrowed_slice` gives, for code run uncompiled."""
    return buffer[lo:hi]


@intrinsic
def borrowed_slice(typingctx, buffer, lo, hi):
    """``buffer[lo:hi]`` of a 1-D contiguous array, as a view that holds no reference.

    A compiled slice is a view that owns a reference to the buffer's memory, taken and released
    with an atomic count on every view made; a state of fifty fields made fifty of each per
    step, the larger part of a compiled step's time. The buffers of a state are arguments of
    the compiled call that views them, so they outlive its views, and a view needs no reference
    of its own. The view must not leave compiled code (be returned to Python): it would not keep
    the buffer alive.
    """
    if not (isinstance(buffer, types.Array) and buffer.ndim == 1 and buffer.layout == "C"):
        return None
    view_type = types.Array(buffer.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        buffer_type, lo_type, hi_type = signature.args
        source = make_array(buffer_type)(context, builder, args[0])
        lo = context.cast(builder, args[1], lo_type, types.intp)
        hi = context.cast(builder, args[2], hi_type, types.intp)
        view = make_array(view_type)(context, builder)
        populate_array(
            view,
            data=cgutils.gep_inbounds(builder, source.data, lo),
            shape=[builder.sub(hi, lo)],
            strides=[source.itemsize],
            itemsize=source.itemsize,
            meminfo=None,
        )
        return view._getvalue()

    return view_type(buffer, lo, hi), codegen


def state_counter(name: str, kind: Callable[[Any], Any]) -> property:
    """A read-only attribute: the one-element state array ``name`` of a server, as ``kind``.

    For servers whose ``state`` holds named views of their buffers (a scalar is a one-element
    array, which compiled code can write).
    """

    def read(server: Any) -> Any:
        return kind(getattr(server.state, name)[0])

    return property(read, doc=f"``state.{name}[0]``, as {kind.__name__}.")
