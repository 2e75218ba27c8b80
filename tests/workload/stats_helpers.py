"""Statistical assertions with tolerances derived from standard errors.

A sample mean of n i.i.d. values has standard error ``sqrt(var / n)``; a sample variance has
standard error ``sqrt((m4 - var**2) / n)`` (m4 the fourth central moment, estimated from the
sample). The tests use fixed seeds, so each check is deterministic; ``Z`` standard errors of slack
means a correct implementation fails a fresh seed with probability below 1e-6.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Z = 5.0
FIXTURES = Path(__file__).parent / "fixtures"


def assert_mean(sample: np.ndarray, expected_mean: float, expected_var: float) -> None:
    """Check the sample mean against ``expected_mean`` within ``Z`` standard errors."""
    se = np.sqrt(expected_var / sample.size)
    assert abs(sample.mean() - expected_mean) <= Z * se + 1e-12, (
        f"mean {sample.mean()} vs expected {expected_mean} (se {se})"
    )


def assert_variance(sample: np.ndarray, expected_var: float) -> None:
    """Check the sample variance against ``expected_var`` within ``Z`` standard errors."""
    centred = sample - sample.mean()
    m4 = np.mean(centred**4)
    se = np.sqrt(max(m4 - centred.var() ** 2, 0.0) / sample.size)
    assert abs(centred.var() - expected_var) <= Z * se + 1e-12, (
        f"variance {centred.var()} vs expected {expected_var} (se {se})"
    )
