from __future__ import annotations

import numpy as np
import pytest

from llmsched_env.workload import (
    PREDICTORS,
    LogNormalNoisePredictor,
    NeighbourBinPredictor,
    OraclePredictor,
    OutputLengthPredictor,
    PromptPowerLawPredictor,
    make_predictor,
)

N = 100_000


def lengths(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 3000, size=n), rng.integers(1, 2000, size=n)


def test_oracle_returns_the_truth_and_draws_nothing() -> None:
    prompt, output = lengths(100)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    pred = OraclePredictor().predict(prompt, output, rng)
    assert pred.dtype == np.int64 and np.array_equal(pred, output)
    assert rng.bit_generator.state == state


def test_lognormal_noise_log_ratio() -> None:
    prompt, output = lengths()
    output = output * 100  # long outputs so that rounding does not distort the ratio
    pred = LogNormalNoisePredictor(0.5).predict(prompt, output, np.random.default_rng(1))
    assert pred.dtype == np.int64 and pred.min() >= 1
    log_ratio = np.log(pred / output)
    # N(0, 0.5^2): se of the mean 0.5 / sqrt(N) = 0.0016; of the std about 0.0011.
    assert abs(log_ratio.mean()) < 5 * 0.5 / np.sqrt(N)
    assert log_ratio.std() == pytest.approx(0.5, abs=0.006)


def test_lognormal_noise_sigma_zero_is_exact_and_never_below_one() -> None:
    prompt, output = lengths(1000)
    assert np.array_equal(
        LogNormalNoisePredictor(0.0).predict(prompt, output, np.random.default_rng(0)), output
    )
    tiny = LogNormalNoisePredictor(3.0).predict(
        np.ones(1000), np.ones(1000), np.random.default_rng(0)
    )
    assert tiny.min() == 1


def test_lognormal_noise_huge_draws_stay_valid_token_counts() -> None:
    # exp(N(0, 20^2)) overflows int64 in a cast: it wrapped to -9.2e18 before the clip.
    output = np.full(100_000, 500)
    rng = np.random.default_rng(0)
    predicted = LogNormalNoisePredictor(sigma=20.0).predict(output, output, rng)
    assert predicted.min() == 1 and predicted.max() == 2**31 - 1


def test_prompt_power_law_uses_only_the_prompt() -> None:
    prompt, output = lengths(1000)
    predictor = PromptPowerLawPredictor()
    a = predictor.predict(prompt, output, np.random.default_rng(3))
    b = predictor.predict(prompt, output[::-1].copy(), np.random.default_rng(3))
    assert np.array_equal(a, b)
    assert a.min() >= 1 and a.max() <= 4096


def test_prompt_power_law_formula_and_clipping() -> None:
    prompt = np.array([1, 10, 100, 1000, 10**7])
    pred = PromptPowerLawPredictor(sigma=0.0).predict(prompt, prompt, np.random.default_rng(0))
    expected = np.clip(np.rint(1.5 * prompt**0.7), 1, 4096)
    assert pred.tolist() == expected.astype(int).tolist()
    assert pred[-1] == 4096


def test_prompt_power_law_noise_median() -> None:
    prompt = np.full(N, 1000)
    pred = PromptPowerLawPredictor().predict(prompt, prompt, np.random.default_rng(4))
    # 1.5 * 1000^0.7 = 188.3; the lognormal noise has median 1.
    assert np.median(pred) == pytest.approx(1.5 * 1000**0.7, rel=0.01)


class TestNeighbourBin:
    predictor = NeighbourBinPredictor(edges=(500, 1000, 1500), p_error=0.2, high=2000, low=100)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(6)
        output = rng.integers(100, 2000, size=N, endpoint=True)
        pred = self.predictor.predict(np.ones(N), output, np.random.default_rng(7))
        return output, pred

    def test_error_rate(self) -> None:
        output, pred = self.sample()
        wrong = pred != output
        # Binomial(N, 0.2): se = sqrt(0.2 * 0.8 / N) = 0.00126; 5 se.
        assert abs(wrong.mean() - 0.2) < 5 * np.sqrt(0.2 * 0.8 / N)

    def test_errors_land_in_a_neighbouring_bin(self) -> None:
        output, pred = self.sample()
        wrong = pred != output
        true_bin = self.predictor.bin_of(output[wrong])
        pred_bin = self.predictor.bin_of(pred[wrong])
        assert np.all(np.abs(pred_bin - true_bin) == 1)
        assert pred.min() >= 100 and pred.max() <= 2000
        # End bins only have one neighbour; middle bins go left or right with probability 1/2.
        assert np.all(pred_bin[true_bin == 0] == 1)
        assert np.all(pred_bin[true_bin == 3] == 2)
        middle = true_bin == 1
        left = np.mean(pred_bin[middle] == 0)
        assert abs(left - 0.5) < 5 * np.sqrt(0.25 / middle.sum())

    def test_errors_are_uniform_within_the_bin(self) -> None:
        output, pred = self.sample()
        wrong = pred != output
        into_bin_1 = pred[wrong][self.predictor.bin_of(pred[wrong]) == 1]  # lengths 500..999
        # Discrete uniform on 500..999: mean 749.5, variance (500^2 - 1) / 12.
        se = np.sqrt((500**2 - 1) / 12 / into_bin_1.size)
        assert abs(into_bin_1.mean() - 749.5) < 5 * se
        assert into_bin_1.min() >= 500 and into_bin_1.max() <= 999

    def test_bins(self) -> None:
        assert self.predictor.n_bins == 4
        assert self.predictor.bin_of(np.array([1, 100, 499, 500, 1999, 2000, 9999])).tolist() == [
            0,
            0,
            0,
            1,
            3,
            3,
            3,
        ]


def test_neighbour_bin_edge_cases() -> None:
    output = np.arange(1, 101)
    one_bin = NeighbourBinPredictor(edges=(), p_error=1.0, high=100)
    assert np.array_equal(one_bin.predict(output, output, np.random.default_rng(0)), output)
    never = NeighbourBinPredictor(edges=(50,), p_error=0.0, high=100)
    assert np.array_equal(never.predict(output, output, np.random.default_rng(0)), output)
    always = NeighbourBinPredictor(edges=(50,), p_error=1.0, high=100)
    pred = always.predict(output, output, np.random.default_rng(0))
    assert np.all((output < 50) == (pred >= 50))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"edges": (5, 5), "p_error": 0.1, "high": 10}, "strictly increasing"),
        ({"edges": (1,), "p_error": 0.1, "high": 10}, r"edges must lie in \(low, high\]"),
        ({"edges": (11,), "p_error": 0.1, "high": 10}, r"edges must lie in \(low, high\]"),
        (
            {"edges": (5,), "p_error": 1.5, "high": 10},
            r"p_error must be .* in \[0.0, 1.0\], got 1.5",
        ),
        ({"edges": (5,), "p_error": 0.1, "high": 10, "low": 20}, "high must be an integer >= 20"),
    ],
)
def test_neighbour_bin_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NeighbourBinPredictor(**kwargs)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_registry_and_determinism(name: str) -> None:
    predictor = make_predictor(name)
    assert isinstance(predictor, OutputLengthPredictor)
    prompt, output = lengths(500)
    a = predictor.predict(prompt, output, np.random.default_rng(8))
    b = predictor.predict(prompt, output, np.random.default_rng(8))
    assert np.array_equal(a, b) and a.dtype == np.int64 and a.min() >= 1


def test_make_predictor_errors_and_passthrough() -> None:
    with pytest.raises(ValueError, match="unknown predictor 'orcale'.*Did you mean 'oracle'"):
        make_predictor("orcale")
    oracle = OraclePredictor()
    assert make_predictor(oracle) is oracle
    assert make_predictor("lognormal-noise", sigma=0.25).sigma == 0.25
    with pytest.raises(TypeError, match="predict"):
        make_predictor(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="only to a predictor name"):
        make_predictor(oracle, sigma=1.0)


def test_predict_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"equal length, got shapes \(2,\) and \(3,\)"):
        OraclePredictor().predict(np.ones(2), np.ones(3), np.random.default_rng(0))


def test_neighbour_bin_edges_must_be_a_sequence() -> None:
    with pytest.raises(TypeError, match=r"edges must be a sequence of lengths in tokens, got None"):
        NeighbourBinPredictor(edges=None, p_error=0.1, high=1000)
