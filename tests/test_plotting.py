"""The figures: what they draw (read from the figure before it is written) and the PNG written."""

import struct

import numpy as np
import pandas as pd
import pytest

from llmsched_env import plotting
from llmsched_env.plotting import plot_comparison, plot_stability
from llmsched_env.stability import DriftPoint, StabilityResult, StabilitySettings

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def saved_figures(monkeypatch):
    """The figures the plotting functions write, captured just before they are saved."""
    figures = []
    save = plotting.save_figure

    def capture(fig, path):
        fig.canvas.draw()  # lay out the text so that it can be read back
        figures.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plotting, "save_figure", capture)
    return figures


def png_size(path) -> tuple[int, int]:
    """Width and height in pixels from a PNG's header (its IHDR chunk)."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def error_bar_extents(ax) -> list[tuple[float, float]]:
    """Per bar, the (low, high) ends of its horizontal error bar."""
    from matplotlib.container import ErrorbarContainer

    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    (segments,) = [c.get_segments() for c in bars.lines[2]]
    return [(float(seg[:, 0].min()), float(seg[:, 0].max())) for seg in segments]


def test_comparison_figure_draws_the_summary(tmp_path, saved_figures):
    summary = pd.DataFrame(
        {
            "policy": ["a", "b"],
            "return_mean": [10.0, 5.0],
            "return_ci95": [1.0, float("nan")],
            "sla_attainment_mean": [0.995, 0.5],
            "sla_attainment_ci95": [0.02, 0.02],
        }
    )
    path = plot_comparison(summary, tmp_path / "c.png", title="t")
    (fig,) = saved_figures
    ret, sla = fig.axes
    assert fig._suptitle.get_text() == "t"
    assert ret.get_xlabel() == "episode return" and sla.get_xlabel() == "SLA attainment"
    assert [t.get_text() for t in ret.get_yticklabels()] == ["a", "b"]
    assert [p.get_width() for p in ret.patches] == [10.0, 5.0]
    assert [p.get_width() for p in sla.patches] == [0.995, 0.5]
    # a's return CI is +/- 1; b has none (nan: a bar of zero length).
    assert error_bar_extents(ret) == [(9.0, 11.0), (5.0, 5.0)]
    # SLA attainment cannot pass 1: a's bar is cut there, and a note says so.
    np.testing.assert_allclose(error_bar_extents(sla), [(0.975, 1.0), (0.48, 0.52)])
    assert any(plotting.CLIPPED_NOTE == t.get_text() for t in fig.texts)
    assert png_size(path) == (round(2 * 4 * 120), round(3.6 * 120))


def _point(rate: float, stable: bool) -> DriftPoint:
    return DriftPoint(rate, stable, 0.0 if stable else 0.2, 0.01, rate, 0.1, 3.0, 4.0, 1.0, 3, 100)


def test_stability_figure_draws_the_estimate(tmp_path, saved_figures):
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
    (fig,) = saved_figures
    left, right = fig.axes
    assert fig._suptitle.get_text() == result.describe()
    assert left.get_ylabel() == "throughput (req/s)"
    assert right.get_ylabel() == "drift of N(t) per arrival"
    throughput, identity = left.lines[0], left.lines[-2]
    np.testing.assert_array_equal(throughput.get_xydata(), [[1.0, 1.0], [2.0, 2.0]])
    np.testing.assert_array_equal(identity.get_xydata(), [[1.0, 1.0], [2.0, 2.0]])
    drift = right.lines[0]
    np.testing.assert_array_equal(drift.get_xydata(), [[1.0, 0.0], [2.0, 0.2]])
    for ax in (left, right):  # lambda* marked on both panels
        assert ax.lines[-1].get_xdata()[0] == 1.5
    assert right.lines[1].get_ydata()[0] == result.settings.drift_threshold
    assert png_size(path) == (9 * 120, round(3.6 * 120))


def test_error_bars_are_clipped_to_what_the_quantity_can_take():
    from llmsched_env.plotting import BOUNDS, clipped_errors

    means = np.array([0.05, 0.5, 0.98])
    bars, cut = clipped_errors(means, np.array([0.1, 0.1, np.nan]), BOUNDS["sla_attainment"])
    np.testing.assert_allclose(bars, [[0.05, 0.1, 0.0], [0.1, 0.1, 0.0]])
    assert cut
    bars, cut = clipped_errors(np.array([-5.0]), np.array([3.0]), BOUNDS["return"])
    assert bars.tolist() == [[3.0], [3.0]] and not cut


def summary_of_two() -> pd.DataFrame:
    return pd.DataFrame(
        {"policy": ["a", "b"], "return_mean": [1.0, 2.0], "return_ci95": [0.1, 0.2]}
    )


def test_plotting_leaves_the_callers_backend_and_figures_alone(tmp_path):
    """Drawing switched the caller's backend to Agg (a notebook's inline plots stopped) and a
    figure whose drawing failed stayed open in pyplot."""
    import matplotlib
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    open_before = plt.get_fignums()
    plot_comparison(summary_of_two(), tmp_path / "c.png")
    with pytest.raises(FileNotFoundError):
        plot_comparison(summary_of_two(), tmp_path / "no" / "such" / "c.png")
    assert matplotlib.get_backend() == backend
    assert plt.get_fignums() == open_before


def test_a_path_without_a_suffix_gets_png_and_is_the_path_returned(tmp_path):
    path = plot_comparison(summary_of_two(), tmp_path / "figure")
    assert path == tmp_path / "figure.png" and png_size(path)[0] > 0


@pytest.mark.parametrize(
    ("columns", "missing"),
    [
        ({"policy": ["a"]}, "return_mean"),
        ({"policy": ["a"], "return_mean": [1.0]}, "return_ci95"),
        ({"return_mean": [1.0], "return_ci95": [0.1]}, "policy"),
    ],
)
def test_a_summary_without_its_columns_is_refused_by_name(tmp_path, columns, missing):
    with pytest.raises(ValueError, match=f"missing .*'{missing}'"):
        plot_comparison(pd.DataFrame(columns), tmp_path / "c.png")
