"""State declared once, by name: buffers for numba and a named tuple of views into them.

A compiled simulator keeps its state in numpy arrays. Passing thirty arrays from Python to a
numba function costs an unboxing each, so the arrays live in two buffers (one float64, one
int64) and a call passes the two buffers and a *layout* (the run's sizes and each field's
offset). Inside compiled code a generated function slices the buffers into a named tuple, so
the code reads ``state.queue_head[q]``, never an offset.

A :class:`StateSchema` is the one place a state is declared: each :class:`Field` has a name, a
dtype, a length in terms of the run's sizes and a one-line meaning. Every field is
one-dimensional (a per-GPU or per-batch table is one array per column); a scalar is a
one-element array, so compiled code can write it. Adding a field is one line.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numba import njit


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
        self.view = self._compile_view(module)

    def sizes(self, layout: np.ndarray) -> dict[str, int]:
        """The run sizes a layout records."""
        return dict(zip(self.size_names, layout[: len(self.size_names)].tolist()))

    def allocate(self, **sizes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Zeroed buffers for a run of the given sizes: ``(floats, ints, layout)``."""
        missing = set(self.size_names) - set(sizes)
        if missing:
            raise ValueError(f"missing run sizes {sorted(missing)}")
        layout = [sizes[name] for name in self.size_names]
        totals = []
        for group in (self._floats, self._ints):
            offsets = [0, *itertools.accumulate(f.size(sizes) for f in group)]
            layout += offsets
            totals.append(offsets[-1])
        return (
            np.zeros(totals[0]),
            np.zeros(totals[1], dtype=np.int64),
            np.array(layout, dtype=np.int64),
        )

    def views(self, floats: np.ndarray, ints: np.ndarray, layout: np.ndarray) -> Any:
        """The named tuple of views into the buffers (for Python code)."""
        arrays = {}
        for group, buffer, start in (
            (self._floats, floats, self._float_start),
            (self._ints, ints, self._int_start),
        ):
            offsets = layout[start : start + len(group) + 1].tolist()
            for f, lo, hi in zip(group, offsets, offsets[1:]):
                arrays[f.name] = buffer[lo:hi]
        return self.tuple_type(**arrays)

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
                lo, hi = start + k, start + k + 1
                items.append(f"        {f.name}={buffer}[layout[{lo}] : layout[{hi}]],")
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
        namespace = {"State": self.tuple_type}
        code = compile(source, filename, "exec")
        exec(code, namespace)
        function = namespace[f"view_{self.tuple_type.__name__}"]
        function.__module__ = module
        return njit(cache=True, inline="always")(function)
