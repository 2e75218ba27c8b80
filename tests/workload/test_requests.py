from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from llmsched_env.workload import GammaArrivals, Workload


def make(n: int = 5, name: str = "w") -> Workload:
    arrival = np.arange(n, dtype=float) * 0.5
    prompt = np.arange(1, n + 1) * 10
    output = np.arange(1, n + 1)
    return Workload(arrival, prompt, output, output + 1, name=name)


def test_dtypes_and_read_only() -> None:
    w = Workload([0, 1, 2], [1.0, 2.0, 3.0], [4, 5, 6], [7, 8, 9])
    assert w.arrival_s.dtype == np.float64
    for field in ("prompt_tokens", "output_tokens", "predicted_output_tokens"):
        assert getattr(w, field).dtype == np.int64
    for field in ("arrival_s", "prompt_tokens", "output_tokens", "predicted_output_tokens"):
        array = getattr(w, field)
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1
    assert w.name == "custom"


def test_caller_arrays_are_not_frozen_or_shared() -> None:
    arrival = np.array([0.0, 1.0])
    prompt = np.array([3, 4], dtype=np.int64)
    w = Workload(arrival, prompt, prompt, prompt)
    assert arrival.flags.writeable and prompt.flags.writeable
    prompt[0] = 99
    assert w.prompt_tokens[0] == 3


def test_read_only_views_of_writable_arrays_are_copied() -> None:
    base = np.array([0.0, 1.0, 2.0])
    view = base[:]
    view.flags.writeable = False
    w = Workload(view, [1, 1, 1], [1, 1, 1], [1, 1, 1])
    base[0] = 5.0
    assert w.arrival_s[0] == 0.0


def test_windows_share_the_frozen_arrays() -> None:
    w = make(5)
    assert np.shares_memory(w.window(1, 2, rebase=False).arrival_s, w.arrival_s)


def test_len_rate_and_repr() -> None:
    w = make(5)
    assert len(w) == w.n_requests == 5
    assert w.span_s == 2.0
    assert w.mean_rate_rps == 2.0
    assert "n_requests=5" in repr(w)


def test_mean_rate_edge_cases() -> None:
    assert np.isnan(Workload([3.0], [1], [1], [1]).mean_rate_rps)
    assert Workload([1.0, 1.0], [1, 1], [1, 1], [1, 1]).mean_rate_rps == float("inf")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {
                "arrival_s": [],
                "prompt_tokens": [],
                "output_tokens": [],
                "predicted_output_tokens": [],
            },
            "at least one request, got 0",
        ),
        ({"arrival_s": [0.0, 1.0]}, "same length"),
        ({"arrival_s": [[0.0]]}, "1-D"),
        ({"arrival_s": [-1.0]}, r"arrival_s must be >= 0, got arrival_s\[0\] = -1.0"),
        ({"arrival_s": [np.nan]}, r"arrival_s must be finite, got arrival_s\[0\] = nan"),
        ({"arrival_s": ["a"]}, "real numbers"),
        ({"prompt_tokens": [0]}, r"prompt_tokens must be a count of tokens in \[1, 2147483647\]"),
        # A count near 2**63 would wrap around when a prompt and an output are added.
        ({"output_tokens": [2**63 - 10]}, r"output_tokens\[0\] = 9223372036854775798"),
        ({"predicted_output_tokens": [2**31]}, r"predicted_output_tokens\[0\] = 2147483648"),
        ({"output_tokens": [-3]}, r"output_tokens\[0\] = -3"),
        ({"predicted_output_tokens": [1.5]}, r"whole numbers.*predicted_output_tokens\[0\] = 1.5"),
        ({"prompt_tokens": [np.inf]}, "whole numbers"),
        ({"name": 3}, "name must be a str"),
    ],
)
def test_validation_errors(kwargs: dict, message: str) -> None:
    base = {
        "arrival_s": [0.0],
        "prompt_tokens": [1],
        "output_tokens": [1],
        "predicted_output_tokens": [1],
    }
    base.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        Workload(**base)


def test_unsorted_is_refused_and_points_at_from_unsorted() -> None:
    with pytest.raises(ValueError, match=r"non-decreasing.*arrival_s\[2\] = 1.0.*from_unsorted"):
        Workload([0.0, 2.0, 1.0], [1, 2, 3], [1, 1, 1], [1, 1, 1])


def test_from_unsorted_is_stable() -> None:
    w = Workload.from_unsorted([2.0, 1.0, 1.0, 0.5], [1, 2, 3, 4], [5, 6, 7, 8])
    assert w.arrival_s.tolist() == [0.5, 1.0, 1.0, 2.0]
    assert w.prompt_tokens.tolist() == [4, 2, 3, 1]
    assert w.predicted_output_tokens.tolist() == w.output_tokens.tolist() == [8, 6, 7, 5]
    with pytest.raises(ValueError, match="same length"):
        Workload.from_unsorted([1.0, 2.0], [1], [1])


def test_window() -> None:
    w = make(5)
    sub = w.window(1, 3)
    assert sub.arrival_s.tolist() == [0.0, 0.5, 1.0]
    assert sub.prompt_tokens.tolist() == [20, 30, 40]
    assert sub.name == "w"
    assert w.window(2, rebase=False).arrival_s.tolist() == [1.0, 1.5, 2.0]
    assert len(w.window()) == 5


@pytest.mark.parametrize(
    ("start", "count", "message"),
    [
        (5, None, "start must be < n_requests = 5, got 5"),
        (-1, None, "start must be an integer >= 0, got -1"),
        (3, 3, "needs 6 requests, but the workload has only 5"),
        (0, 0, "count must be an integer >= 1, got 0"),
    ],
)
def test_window_errors(start: int, count: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(5).window(start, count)


def test_retimed_redraws_only_the_clock() -> None:
    w = make(50)
    process = GammaArrivals(rate_rps=2.0, cv=4.0)
    again = w.retimed(process, np.random.default_rng(7))
    np.testing.assert_array_equal(
        again.arrival_s, process.sample_times(50, np.random.default_rng(7))
    )
    for field in ("prompt_tokens", "output_tokens", "predicted_output_tokens"):
        np.testing.assert_array_equal(getattr(again, field), getattr(w, field))
    assert again.name == w.name and not again.arrival_s.flags.writeable


def test_time_scaled() -> None:
    w = make(5)
    fast = w.time_scaled(4.0)
    np.testing.assert_array_equal(fast.arrival_s, w.arrival_s / 4.0)
    assert fast.mean_rate_rps == pytest.approx(4.0 * w.mean_rate_rps)
    for bad in (0.0, -2.0, float("inf")):
        with pytest.raises(ValueError, match="speedup must be"):
            w.time_scaled(bad)
    with pytest.raises(ValueError, match="too small"):
        w.time_scaled(1e-320)
    assert not fast.arrival_s.flags.writeable


def test_with_predictions() -> None:
    w = make(3)
    p = w.with_predictions([9, 9, 9])
    assert p.predicted_output_tokens.tolist() == [9, 9, 9]
    np.testing.assert_array_equal(p.output_tokens, w.output_tokens)
    with pytest.raises(ValueError, match="same length"):
        w.with_predictions([1, 2])
    with pytest.raises(ValueError, match=r"predicted_output_tokens\[1\] = 0"):
        w.with_predictions([3, 0, 3])
    with pytest.raises(ValueError, match="whole numbers"):
        w.with_predictions([1.5, 2.0, 3.0])
    assert w.with_predictions([1, 2, 3], name="renamed").name == "renamed"
    with pytest.raises(TypeError, match="name must be a str"):
        w.with_predictions([1, 2, 3], name=7)
    # The new workload cannot be changed through the caller's array.
    mine = np.array([4, 5, 6])
    q = w.with_predictions(mine)
    mine[0] = 99
    assert q.predicted_output_tokens.tolist() == [4, 5, 6]
    assert not q.predicted_output_tokens.flags.writeable


def test_frame_round_trip() -> None:
    w = make(4)
    frame = w.to_frame()
    assert list(frame.columns) == [
        "arrival_s",
        "prompt_tokens",
        "output_tokens",
        "predicted_output_tokens",
    ]
    back = Workload.from_frame(frame, name="back")
    for field in ("arrival_s", "prompt_tokens", "output_tokens", "predicted_output_tokens"):
        assert np.array_equal(getattr(back, field), getattr(w, field))
    frame.loc[0, "prompt_tokens"] = 777  # the frame owns its data
    assert w.prompt_tokens[0] == 10


def test_from_frame_defaults_predictions_and_reports_missing_columns() -> None:
    frame = pd.DataFrame(
        {"arrival_s": [0.0, 1.0], "prompt_tokens": [1, 2], "output_tokens": [3, 4]}
    )
    w = Workload.from_frame(frame)
    assert w.predicted_output_tokens.tolist() == [3, 4]
    with pytest.raises(ValueError, match=r"missing columns \['output_tokens'\]"):
        Workload.from_frame(frame.drop(columns="output_tokens"))


def test_pickle_round_trip_keeps_arrays_read_only() -> None:
    w = make(4)
    back = pickle.loads(pickle.dumps(w))
    assert back.name == w.name
    assert np.array_equal(back.arrival_s, w.arrival_s)
    assert not back.arrival_s.flags.writeable
