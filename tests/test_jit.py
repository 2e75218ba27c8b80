import numpy as np

from llmsched_env.jit import implementation, njit


@njit(cache=False)
def _weighted_total(values, weights, scale):
    total = 0.0
    for i in range(values.shape[0]):
        total += values[i] * weights[i]
    return total * scale


def test_implementation_computes_what_the_dispatcher_computes() -> None:
    rng = np.random.default_rng(0)
    values, weights = rng.normal(size=50), rng.normal(size=50)
    compiled = implementation(_weighted_total, values, weights, 2.0)
    assert compiled(values, weights, 2.0) == _weighted_total(values, weights, 2.0)
    other = rng.normal(size=7), rng.normal(size=7)
    assert compiled(*other, 0.5) == _weighted_total(*other, 0.5)


def test_implementation_is_looked_up_once_per_set_of_argument_types() -> None:
    values = np.arange(5.0)
    first = implementation(_weighted_total, values, values, 1.0)
    assert implementation(_weighted_total, np.ones(9), np.zeros(9), 3.0) is first
    read_only = values.copy()
    read_only.flags.writeable = False
    # numba types a read-only array, an int scale or an int64 array differently: their own
    # implementations, each computing the same as the dispatcher.
    for args in (
        (read_only, values, 1.0),
        (values, values, 1),
        (np.arange(5), values, 1.0),
        (values[::2], values[::2], 1.0),
    ):
        compiled = implementation(_weighted_total, *args)
        assert compiled is not first
        assert compiled(*args) == _weighted_total(*args)
