from __future__ import annotations

import numpy as np
import pytest
from numba import literal_unroll, njit
from numba.core.errors import TypingError

from llmsched_env.sim.state_schema import Field, StateSchema, borrowed_slice

SCHEMA = StateSchema(
    "ToyState",
    __name__,
    ("n", "m"),
    (
        Field("now", "f", 1, "clock"),
        Field("count", "i", 1, "a counter"),
        Field("per_n", "f", "n", "one per n"),
        Field("cumsum", "i", "n + 1", "prefix sums"),
        Field("per_m", "i", "m", "one per m"),
        Field("pair", "f", 2, "two values"),
    ),
)


@pytest.mark.parametrize(("n", "m"), [(0, 0), (1, 5), (7, 3)])
def test_allocate_lays_out_every_field_at_its_length(n: int, m: int) -> None:
    floats, ints, layout = SCHEMA.allocate(n=n, m=m)
    assert floats.shape == (1 + n + 2,) and ints.shape == (1 + (n + 1) + m,)
    assert not floats.any() and not ints.any() and layout.dtype == np.int64
    # The sizes, then the offsets of the float fields, then those of the int fields.
    assert layout.tolist() == [n, m, 0, 1, 1 + n, 3 + n, 0, 1, 2 + n, 2 + n + m]
    state = SCHEMA.views(floats, ints, layout)
    lengths = {name: getattr(state, name).shape[0] for name in state._fields}
    assert lengths == {"now": 1, "count": 1, "per_n": n, "cumsum": n + 1, "per_m": m, "pair": 2}
    state.per_m[:] = 9
    state.pair[:] = 4.0
    assert ints[ints.shape[0] - m :].tolist() == [9] * m and floats[-2:].tolist() == [4.0, 4.0]


def test_allocate_names_missing_sizes_and_schemas_unknown_ones() -> None:
    with pytest.raises(ValueError, match=r"missing run sizes \['m'\]"):
        SCHEMA.allocate(n=3)
    with pytest.raises(ValueError, match="'k' is not one of the run sizes"):
        StateSchema("Bad", __name__, ("n",), (Field("x", "f", "k", "unknown size"),))


_toy_view = SCHEMA.view


@njit
def _fill_through_compiled_view(floats, ints, layout):
    """Write, through the compiled view, each field's index into every entry of the field."""
    k = 0
    for field in literal_unroll(_toy_view(floats, ints, layout)):
        for i in range(field.shape[0]):
            field[i] = k
        k += 1


@pytest.mark.parametrize(("n", "m"), [(0, 0), (1, 5), (7, 3)])
def test_compiled_view_covers_the_same_memory_as_the_python_view(n: int, m: int) -> None:
    floats, ints, layout = SCHEMA.allocate(n=n, m=m)
    _fill_through_compiled_view(floats, ints, layout)
    state = SCHEMA.views(floats, ints, layout)
    for k, name in enumerate(state._fields):
        assert getattr(state, name).tolist() == [k] * getattr(state, name).shape[0], name


@njit
def _write_through_borrowed_slice(a, lo, hi):
    borrowed = borrowed_slice(a, lo, hi)
    sliced = a[lo:hi]
    borrowed[:] = -1.0
    return sliced.sum()


def test_borrowed_slice_is_the_slice_with_the_slices_type() -> None:
    a = np.arange(10.0)
    assert _write_through_borrowed_slice(a, 2, 7) == -5.0
    assert a.tolist() == [0.0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 7.0, 8.0, 9.0]
    (signature,) = _write_through_borrowed_slice.signatures
    typemap = _write_through_borrowed_slice.overloads[signature].type_annotation.typemap
    assert typemap["borrowed"] == typemap["sliced"]  # array(float64, 1d, C): same code paths


@pytest.mark.parametrize("array", [np.zeros((2, 2)), np.zeros(6)[::2]])
def test_borrowed_slice_refuses_arrays_it_cannot_view(array: np.ndarray) -> None:
    with pytest.raises(TypingError, match="borrowed_slice"):
        njit(lambda a: borrowed_slice(a, 0, 1)[0])(array)
