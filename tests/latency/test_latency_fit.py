"""Tests of llmsched_env/latency/fit.py: least-squares fit of T(b, L) to a latency grid."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmsched_env.latency import (
    BATCH_LATENCY_PRESETS,
    QWEN3_GRID_FILE,
    fit_static_batch_latency,
    load_latency_grid,
)


def _grid(alpha_s: float, beta_s: float, gamma: float) -> pd.DataFrame:
    batch_2d, length_2d = np.meshgrid([1, 2, 4, 8, 16], [128, 256, 512, 1024])
    batch, length = batch_2d.ravel(), length_2d.ravel()
    latency = alpha_s + beta_s * length * (1 + gamma * (batch - 1) / batch)
    return pd.DataFrame({"batch_size": batch, "max_seq_len": length, "mean_latency_sec": latency})


def test_fit_reproduces_the_calibrated_preset():
    fit = fit_static_batch_latency(load_latency_grid())
    preset = BATCH_LATENCY_PRESETS["calibrated"]()
    assert fit.model.alpha_s == pytest.approx(preset.alpha_s, rel=0.01)
    assert fit.model.beta_s_per_token == pytest.approx(preset.beta_s_per_token, rel=0.01)
    assert fit.model.gamma == pytest.approx(preset.gamma, abs=0.01)
    assert fit.r_squared > 0.999
    assert fit.r_squared == pytest.approx(0.9995, abs=0.001)
    assert 0.0 < fit.rmse_s < 0.2


def test_fit_reads_csv_paths(tmp_path: Path):
    source = resources.files("llmsched_env.data") / QWEN3_GRID_FILE
    path = tmp_path / "grid.csv"
    path.write_bytes(source.read_bytes())
    from_str = fit_static_batch_latency(str(path))
    from_path = fit_static_batch_latency(path)
    assert from_str == from_path
    assert from_str.model.gamma == pytest.approx(0.3157, abs=1e-3)


def test_fit_recovers_known_parameters_exactly():
    grid = _grid(0.02, 0.001, 0.5)
    fit = fit_static_batch_latency(grid)
    assert fit.model.alpha_s == pytest.approx(0.02, rel=1e-6)
    assert fit.model.beta_s_per_token == pytest.approx(0.001, rel=1e-6)
    assert fit.model.gamma == pytest.approx(0.5, abs=1e-6)
    assert fit.r_squared == pytest.approx(1.0)
    assert fit.rmse_s == pytest.approx(0.0, abs=1e-9)


def test_fit_keeps_coefficients_nonnegative():
    # Latencies proportional to L with a negative intercept: the unconstrained alpha is < 0.
    grid = _grid(0.0, 0.001, 0.2)
    grid["mean_latency_sec"] -= 0.01
    fit = fit_static_batch_latency(grid)
    assert fit.model.alpha_s == 0.0
    assert fit.model.beta_s_per_token > 0.0


def test_fit_does_not_modify_its_input():
    grid = _grid(0.02, 0.001, 0.5)
    before = grid.copy()
    fit_static_batch_latency(grid)
    pd.testing.assert_frame_equal(grid, before)


def test_fit_names_missing_columns():
    grid = _grid(0.02, 0.001, 0.5).drop(columns=["mean_latency_sec"])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['mean_latency_sec'\]"):
        fit_static_batch_latency(grid)


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        (
            "mean_latency_sec",
            -1.0,
            r"every mean_latency_sec must be a finite number > 0, got -1\.0",
        ),
        ("mean_latency_sec", "fast", r"mean_latency_sec.*got 'fast' in row 3"),
        ("max_seq_len", np.nan, r"every max_seq_len must be a finite number > 0, got nan"),
        ("batch_size", 2.5, r"every batch_size must be an integer >= 1, got 2\.5"),
        ("batch_size", 0, r"every batch_size must be an integer >= 1, got 0"),
    ],
)
def test_fit_rejects_bad_values(column, value, match):
    grid = _grid(0.02, 0.001, 0.5).astype(object)
    grid.loc[3, column] = value
    with pytest.raises(ValueError, match=match):
        fit_static_batch_latency(grid)


def test_fit_needs_two_batch_sizes():
    grid = _grid(0.02, 0.001, 0.5)
    with pytest.raises(ValueError, match="at least two distinct `batch_size`.*1 batch sizes"):
        fit_static_batch_latency(grid[grid["batch_size"] == 4])


def test_fit_rejects_bad_search_settings_and_sources():
    grid = _grid(0.02, 0.001, 0.5)
    with pytest.raises(ValueError, match=r"gamma_bounds.*got \(1\.0, 0\.5\)"):
        fit_static_batch_latency(grid, gamma_bounds=(1.0, 0.5))
    with pytest.raises(ValueError, match="coarse_points must be >= 3, got 2"):
        fit_static_batch_latency(grid, coarse_points=2)
    with pytest.raises(TypeError, match="pandas DataFrame, a CSV path or None, got 42"):
        fit_static_batch_latency(42)  # type: ignore[arg-type]
