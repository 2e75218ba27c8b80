from __future__ import annotations

import numpy as np
import pytest

from llmsched_env.sim.state_schema import Field, StateSchema

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
