import numpy as np
import pandas as pd
import pytest

from llmsched_env.plotting import plot_comparison, plot_stability
from llmsched_env.stability import DriftPoint, StabilityResult, StabilitySettings

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG"


def test_comparison_figure_is_a_png(tmp_path):
    summary = pd.DataFrame(
        {
            "policy": ["a", "b"],
            "return_mean": [10.0, 5.0],
            "return_ci95": [1.0, float("nan")],
            "sla_attainment_mean": [0.9, 0.5],
            "sla_attainment_ci95": [0.01, 0.02],
        }
    )
    path = plot_comparison(summary, tmp_path / "c.png", title="t")
    assert path.read_bytes()[:4] == PNG_MAGIC


def _point(rate: float, stable: bool) -> DriftPoint:
    return DriftPoint(rate, stable, 0.0 if stable else 0.2, 0.01, rate, 0.1, 3.0, 4.0, 1.0, 3, 100)


def test_stability_figure_is_a_png(tmp_path):
    result = StabilityResult(
        policy="p",
        lambda_star_rps=1.5,
        lambda_low_rps=1.0,
        lambda_high_rps=2.0,
        capacity_estimate_rps=2.5,
        points=(_point(1.0, True), _point(2.0, False)),
        settings=StabilitySettings(),
    )
    path = plot_stability(result, tmp_path / "s.png")
    assert path.read_bytes()[:4] == PNG_MAGIC


def test_error_bars_are_clipped_to_what_the_quantity_can_take():
    from llmsched_env.plotting import BOUNDS, clipped_errors

    means = np.array([0.05, 0.5, 0.98])
    bars, cut = clipped_errors(means, np.array([0.1, 0.1, np.nan]), BOUNDS["sla_attainment"])
    np.testing.assert_allclose(bars, [[0.05, 0.1, 0.0], [0.1, 0.1, 0.0]])
    assert cut
    bars, cut = clipped_errors(np.array([-5.0]), np.array([3.0]), BOUNDS["return"])
    assert bars.tolist() == [[3.0], [3.0]] and not cut
