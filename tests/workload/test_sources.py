from __future__ import annotations

import pickle

import numpy as np
import pytest

from llmsched_env.workload import (
    Discrete,
    Fixed,
    GammaArrivals,
    LogNormalNoisePredictor,
    PoissonArrivals,
    SyntheticSource,
    TraceSource,
    UniformInt,
    Workload,
    WorkloadSource,
)


def synthetic(**kwargs) -> SyntheticSource:
    return SyntheticSource(
        "toy",
        GammaArrivals(2.0, 3.0),
        UniformInt(1, 100),
        Discrete((10, 20), (0.5, 0.5)),
        LogNormalNoisePredictor(0.5),
        **kwargs,
    )


def trace(n: int = 100) -> Workload:
    rng = np.random.default_rng(0)
    arrival = np.cumsum(rng.exponential(0.5, size=n))  # mean rate ~2 req/s
    return Workload(arrival, np.arange(1, n + 1), np.arange(1, n + 1) * 2, np.ones(n), "trace")


# --- SyntheticSource ------------------------------------------------------------------------


def test_synthetic_sample_is_deterministic_and_fixed_order() -> None:
    source = synthetic()
    assert isinstance(source, WorkloadSource)
    a = source.sample(200, np.random.default_rng(3))
    b = source.sample(200, np.random.default_rng(3))
    for field in ("arrival_s", "prompt_tokens", "output_tokens", "predicted_output_tokens"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    # The documented draw order: arrivals, prompts, outputs, predictions.
    rng = np.random.default_rng(3)
    arrival = source.arrivals.sample_times(200, rng)
    prompt = source.prompt.sample(200, rng)
    output = source.output.sample(200, rng)
    predicted = source.predictor.predict(prompt, output, rng)
    assert np.array_equal(a.arrival_s, arrival)
    assert np.array_equal(a.predicted_output_tokens, predicted)
    assert a.name == "toy"


def test_synthetic_rate_override() -> None:
    source = synthetic()
    assert source.natural_rate_rps == 2.0
    base = source.sample(50, np.random.default_rng(1))
    fast = source.sample(50, np.random.default_rng(1), arrival_rate_rps=20.0)
    np.testing.assert_allclose(fast.arrival_s, base.arrival_s / 10.0, rtol=1e-12)
    assert np.array_equal(fast.prompt_tokens, base.prompt_tokens)
    long = source.sample(100_000, np.random.default_rng(2), arrival_rate_rps=5.0)
    # Gamma cv 3: se of the rate estimate ~ 3 / sqrt(1e5) ~ 1%; allow 5%.
    assert long.mean_rate_rps == pytest.approx(5.0, rel=0.05)


def test_synthetic_rejects_start() -> None:
    with pytest.raises(ValueError, match="start must be None, got 3"):
        synthetic().sample(5, np.random.default_rng(0), start=3)


def test_synthetic_calibration_is_independent_of_episodes() -> None:
    source = synthetic(calibration_size=500, calibration_seed=99)
    first = source.calibration()
    source.sample(1000, np.random.default_rng(0))
    second = source.calibration()
    assert len(first) == 500
    assert np.array_equal(first.output_tokens, second.output_tokens)
    assert np.array_equal(first.arrival_s, source.sample(500, np.random.default_rng(99)).arrival_s)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"arrivals": 3}, TypeError, "arrivals must be an arrival process"),
        ({"prompt": "x"}, TypeError, "prompt must be a length distribution"),
        ({"predictor": None}, TypeError, "predictor must be a predictor"),
        ({"calibration_size": 0}, ValueError, "calibration_size must be an integer >= 1, got 0"),
    ],
)
def test_synthetic_constructor_errors(kwargs: dict, error: type, message: str) -> None:
    args = {
        "name": "x",
        "arrivals": PoissonArrivals(1.0),
        "prompt": Fixed(1),
        "output": Fixed(1),
    }
    args.update(kwargs)
    with pytest.raises(error, match=message):
        SyntheticSource(**args)


def test_synthetic_sample_errors() -> None:
    with pytest.raises(ValueError, match="n_requests must be an integer >= 1, got 0"):
        synthetic().sample(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="arrival_rate_rps must be a finite number > 0, got -1.0"):
        synthetic().sample(3, np.random.default_rng(0), arrival_rate_rps=-1.0)


# --- TraceSource ----------------------------------------------------------------------------


def test_trace_source_regions() -> None:
    source = TraceSource("t", trace(100), calibration_fraction=0.2)
    assert isinstance(source, WorkloadSource)
    assert source.calibration_size == 20
    assert source.max_episode_requests == 80
    history = source.calibration()
    assert history.prompt_tokens.tolist() == list(range(1, 21))
    assert history.arrival_s[0] == 0.0


def test_trace_source_window_with_start() -> None:
    t = trace(100)
    source = TraceSource("t", t)
    w = source.sample(10, np.random.default_rng(0), start=5)
    assert w.prompt_tokens.tolist() == list(range(26, 36))  # trace index 25..34
    np.testing.assert_allclose(w.arrival_s, t.arrival_s[25:35] - t.arrival_s[25])
    assert np.array_equal(w.predicted_output_tokens, w.output_tokens)  # oracle by default
    assert w.name == "t"
    last = source.sample(10, np.random.default_rng(0), start=70)
    assert last.prompt_tokens[-1] == 100


def test_trace_source_random_windows_stay_in_the_episode_region() -> None:
    source = TraceSource("t", trace(100))
    firsts = {
        int(source.sample(10, np.random.default_rng(seed)).prompt_tokens[0]) for seed in range(300)
    }
    # Valid starts are trace indices 20..90, i.e. first prompts 21..91, drawn uniformly.
    assert min(firsts) == 21 and max(firsts) == 91 and len(firsts) > 60
    a = source.sample(10, np.random.default_rng(4))
    b = source.sample(10, np.random.default_rng(4))
    assert np.array_equal(a.prompt_tokens, b.prompt_tokens)


def test_trace_source_time_scaling_keeps_burst_structure() -> None:
    t = trace(100)
    source = TraceSource("t", t)
    natural = source.natural_rate_rps
    assert natural == pytest.approx(t.mean_rate_rps)
    w = source.sample(50, np.random.default_rng(0), start=10)
    scaled = source.sample(50, np.random.default_rng(0), start=10, arrival_rate_rps=4 * natural)
    np.testing.assert_allclose(scaled.arrival_s, w.arrival_s / 4, rtol=1e-12)


def test_trace_source_predictions_from_the_episode_rng() -> None:
    source = TraceSource("t", trace(100), predictor=LogNormalNoisePredictor(1.0))
    a = source.sample(30, np.random.default_rng(1), start=0)
    b = source.sample(30, np.random.default_rng(1), start=0)
    c = source.sample(30, np.random.default_rng(2), start=0)
    assert np.array_equal(a.predicted_output_tokens, b.predicted_output_tokens)
    assert not np.array_equal(a.predicted_output_tokens, c.predicted_output_tokens)
    calibration = source.calibration()
    assert np.array_equal(
        calibration.predicted_output_tokens, source.calibration().predicted_output_tokens
    )


def test_trace_source_sample_equals_window_scaling_and_predictions() -> None:
    # sample() builds the window itself; it must equal the public methods' result bit for bit.
    t = trace(100)
    source = TraceSource("named", t, predictor=LogNormalNoisePredictor(0.7))
    rate = 3.7 * source.natural_rate_rps
    w = source.sample(40, np.random.default_rng(8), start=13, arrival_rate_rps=rate)
    rng = np.random.default_rng(8)
    window = t.window(source.calibration_size + 13, 40).time_scaled(rate / source.natural_rate_rps)
    predicted = source.predictor.predict(window.prompt_tokens, window.output_tokens, rng)
    expected = window.with_predictions(predicted, name="named")
    assert w.fingerprint() == expected.fingerprint() and w.name == "named"
    for field in ("arrival_s", "prompt_tokens", "output_tokens", "predicted_output_tokens"):
        assert not getattr(w, field).flags.writeable


class _BadPredictor:
    def __init__(self, value: int) -> None:
        self.value = value

    def predict(self, prompt_tokens, output_tokens, rng) -> np.ndarray:
        return np.full(len(output_tokens), self.value)


def test_trace_source_checks_and_copies_a_custom_predictors_output() -> None:
    source = TraceSource("t", trace(100), predictor=_BadPredictor(0))
    with pytest.raises(ValueError, match=r"predicted_output_tokens\[0\] = 0"):
        source.sample(10, np.random.default_rng(0))
    w = TraceSource("t", trace(100), predictor=_BadPredictor(3)).sample(
        10, np.random.default_rng(0)
    )
    assert w.predicted_output_tokens.tolist() == [3] * 10
    assert not w.predicted_output_tokens.flags.writeable


def test_trace_source_refuses_a_rate_that_overflows_the_arrivals() -> None:
    source = TraceSource("t", trace(100))
    with pytest.raises(ValueError, match="too small: the last arrival becomes inf"):
        source.sample(10, np.random.default_rng(0), start=5, arrival_rate_rps=1e-310)


def test_trace_source_errors() -> None:
    source = TraceSource("t", trace(100))
    with pytest.raises(ValueError, match="n_requests=81 is more than the 80 requests"):
        source.sample(81, np.random.default_rng(0))
    with pytest.raises(ValueError, match="start must be <= 70 .* got 71"):
        source.sample(10, np.random.default_rng(0), start=71)
    for fraction in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match=r"calibration_fraction must be in \(0, 1\)"):
            TraceSource("t", trace(100), calibration_fraction=fraction)
    with pytest.raises(ValueError, match="gives 0 calibration requests and leaves"):
        TraceSource("t", trace(3), calibration_fraction=0.2)
    with pytest.raises(TypeError, match="trace must be a Workload"):
        TraceSource("t", [1, 2, 3])  # type: ignore[arg-type]
    same_time = Workload(np.zeros(10), np.ones(10), np.ones(10), np.ones(10))
    with pytest.raises(ValueError, match="positive time"):
        TraceSource("t", same_time)


def test_sources_pickle() -> None:
    for source in (synthetic(), TraceSource("t", trace(50))):
        back = pickle.loads(pickle.dumps(source))
        a = back.sample(10, np.random.default_rng(0))
        b = source.sample(10, np.random.default_rng(0))
        assert np.array_equal(a.arrival_s, b.arrival_s)
