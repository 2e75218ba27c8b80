"""Moments of a lognormal length after flooring to whole tokens and clipping.

Kept apart from :mod:`llmsched_env.workload.lengths` because it is numerical machinery rather than
a distribution: :class:`~llmsched_env.workload.lengths.LogNormal` uses it for ``mean`` and
``variance``, which have no closed form after rounding.
"""

from __future__ import annotations

import math

# Above this many tokens the lognormal moments are integrated instead of summed term by term.
_LOGNORMAL_EXACT_TERMS = 4096


def _normal_sf(z: float) -> float:
    """Standard normal survival function ``P(Z > z)``."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _lognormal_partial_moment(mu: float, sigma: float, order: int, a: float, b: float) -> float:
    """``E[X**order * 1{a <= X < b}]`` for ``X = exp(N(mu, sigma**2))`` (``b`` may be inf)."""
    shift = mu + order * sigma**2
    upper = 0.0 if math.isinf(b) else _normal_sf((math.log(b) - shift) / sigma)
    lower = _normal_sf((math.log(a) - shift) / sigma)
    return math.exp(order * mu + 0.5 * order**2 * sigma**2) * (lower - upper)


def lognormal_floor_moments(mu: float, sigma: float, low: int, high: float) -> tuple[float, float]:
    """First two moments of ``V = clip(floor(X), low, high)`` for ``X = exp(N(mu, sigma**2))``.

    Uses ``E[V] = low + sum_{j=low+1}^{high} P(X >= j)`` and
    ``E[V**2] = low**2 + sum_{j=low+1}^{high} (2j - 1) P(X >= j)``: exact terms up to
    ``_LOGNORMAL_EXACT_TERMS`` tokens; above, the midpoint-rule integral of the same summands
    (closed form through lognormal partial moments) plus its first Euler-Maclaurin correction
    ``(f'(a) - f'(b)) / 24``.
    """

    def survival(j: float) -> float:
        return _normal_sf((math.log(j) - mu) / sigma)

    def density(x: float) -> float:
        if math.isinf(x):
            return 0.0
        z = (math.log(x) - mu) / sigma
        return math.exp(-0.5 * z * z) / (x * sigma * math.sqrt(2.0 * math.pi))

    last_exact = int(min(high, _LOGNORMAL_EXACT_TERMS))
    first_moment = float(low)
    second_moment = float(low) ** 2
    for j in range(low + 1, last_exact + 1):
        s = survival(j)
        first_moment += s
        second_moment += (2 * j - 1) * s
    if high > last_exact:
        # sum_{j=J+1}^{H} f(j) ~ integral of f over [J + 1/2, H + 1/2], with
        # int_a^b P(X >= x) dx = E[clip(X, a, b)] - a and
        # int_a^b 2x P(X >= x) dx = E[clip(X, a, b)**2] - a**2.
        a = last_exact + 0.5
        b = high + 0.5
        p_below = 1.0 - survival(a)
        p_above = 0.0 if math.isinf(b) else survival(b)
        tail_b = 0.0 if math.isinf(b) else b
        clipped_1 = a * p_below + _lognormal_partial_moment(mu, sigma, 1, a, b) + tail_b * p_above
        clipped_2 = (
            a * a * p_below
            + _lognormal_partial_moment(mu, sigma, 2, a, b)
            + tail_b * tail_b * p_above
        )
        int_s = clipped_1 - a
        # Euler-Maclaurin midpoint corrections with f = S (f' = -pdf) and
        # g = (2x - 1) S (g' = 2 S - (2x - 1) pdf).
        s_a, s_b = 1.0 - p_below, p_above
        d_a, d_b = density(a), density(b)
        f_corr = (-d_a + d_b) / 24.0
        g_corr = ((2 * s_a - (2 * a - 1) * d_a) - (2 * s_b - (2 * tail_b - 1) * d_b)) / 24.0
        first_moment += int_s + f_corr
        second_moment += (clipped_2 - a * a) - int_s + g_corr
    return first_moment, second_moment
