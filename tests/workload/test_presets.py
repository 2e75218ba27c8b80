from __future__ import annotations

import numpy as np
import pytest

from llmsched_env.workload import (
    WORKLOAD_PRESETS,
    LogNormalNoisePredictor,
    OraclePredictor,
    PromptPowerLawPredictor,
    TraceSource,
    WorkloadSource,
    make_workload_source,
)
from llmsched_env.workload.presets import BURSTGPT_PUBLISHED_STATS

EXPECTED_RATES = {
    "azure-conv": 5.53,
    "azure-conv-oracle": 5.53,
    "mooncake-conversation": 3.40,
    "mooncake-synthetic": 3.91,
    "burstgpt-synthetic": 1 / 3.69,
    "sharegpt": 10.0,
    "demo2": 2.0,
    "demo3": 1.0,
    "sim-a": 1.0,
    "mm1": 2.0,
    "prefix-sharing": 2.0,
    "uniform": 10.0,
}


def test_every_preset_is_listed_here() -> None:
    assert set(WORKLOAD_PRESETS) == set(EXPECTED_RATES)


@pytest.mark.parametrize("name", sorted(WORKLOAD_PRESETS))
def test_preset_basics_and_determinism(name: str) -> None:
    source = make_workload_source(name)
    assert isinstance(source, WorkloadSource)
    assert source.name == name
    assert source.natural_rate_rps == pytest.approx(EXPECTED_RATES[name], rel=0.01)
    a = source.sample(300, np.random.default_rng(42))
    b = source.sample(300, np.random.default_rng(42))
    assert len(a) == 300
    for field in ("arrival_s", "prompt_tokens", "output_tokens", "predicted_output_tokens"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    c1, c2 = source.calibration(), source.calibration()
    assert np.array_equal(c1.predicted_output_tokens, c2.predicted_output_tokens)


def test_lookup_errors_suggest_a_close_name() -> None:
    with pytest.raises(ValueError, match=r"unknown workload preset 'azure_conv'.*'azure-conv'\?"):
        make_workload_source("azure_conv")
    with pytest.raises(ValueError, match="expected one of .*'demo2'"):
        make_workload_source("nothing-like-it")
    with pytest.raises(TypeError, match="workload preset name or an object"):
        make_workload_source(3)  # type: ignore[arg-type]


def test_source_objects_pass_through() -> None:
    source = make_workload_source("demo2")
    assert make_workload_source(source) is source


def test_fixed_presets() -> None:
    rng = np.random.default_rng(0)
    sim_a = make_workload_source("sim-a").sample(100, rng)
    assert set(sim_a.prompt_tokens.tolist()) == {128}
    assert set(sim_a.output_tokens.tolist()) == {65}  # prefill token + B = 64 decode steps
    mm1 = make_workload_source("mm1").sample(100, rng)
    assert set(mm1.prompt_tokens.tolist()) == set(mm1.output_tokens.tolist()) == {1}


def test_demo_presets_distributions() -> None:
    rng = np.random.default_rng(1)
    demo2 = make_workload_source("demo2").sample(100_000, rng)
    values, counts = np.unique(demo2.prompt_tokens, return_counts=True)
    assert values.tolist() == [32, 128, 512]
    # Multinomial proportions: se <= sqrt(0.25 / 1e5) = 0.0016; 5 se = 0.008.
    np.testing.assert_allclose(counts / counts.sum(), [0.6, 0.3, 0.1], atol=0.008)
    assert set(np.unique(demo2.output_tokens).tolist()) == {64, 256}
    demo3 = make_workload_source("demo3").sample(1000, rng)
    assert demo3.output_tokens.max() <= 1024
    uniform = make_workload_source("uniform").sample(10_000, rng)
    assert uniform.output_tokens.min() >= 100 and uniform.output_tokens.max() <= 2000
    assert np.array_equal(uniform.predicted_output_tokens, uniform.output_tokens)


def test_azure_presets() -> None:
    noisy = make_workload_source("azure-conv")
    oracle = make_workload_source("azure-conv-oracle")
    assert isinstance(noisy, TraceSource) and isinstance(oracle, TraceSource)
    assert len(noisy.trace) == 19_366
    assert noisy.predictor == LogNormalNoisePredictor(0.5)
    assert oracle.predictor == OraclePredictor()
    w = oracle.sample(1000, np.random.default_rng(0), arrival_rate_rps=11.06)
    assert np.array_equal(w.predicted_output_tokens, w.output_tokens)
    assert w.arrival_s[0] == 0.0


def test_burstgpt_synthetic_matches_published_statistics() -> None:
    """Sample statistics of 400k synthetic requests against the published BurstGPT numbers.

    Tolerances: means within 3% (their standard errors are under 0.4%), standard deviations
    within 5% (heavy tails make the std noisier, se about 1-2%), quartiles within 3% (+1 token
    for the small response quartiles), the mean gap within 2% (se 0.2%).
    """
    source = make_workload_source("burstgpt-synthetic")
    assert isinstance(source.predictor, PromptPowerLawPredictor)
    w = source.sample(400_000, np.random.default_rng(2024))
    gaps = np.diff(w.arrival_s, prepend=0.0)
    published = BURSTGPT_PUBLISHED_STATS
    assert gaps.mean() == pytest.approx(published["inter_arrival_s"]["mean"], rel=0.02)
    # Deliberate deviation (see the preset docstring): Gamma shape 0.5, so cv = sqrt(2).
    assert gaps.std() / gaps.mean() == pytest.approx(np.sqrt(2), rel=0.03)
    for key, values in (("request_tokens", w.prompt_tokens), ("response_tokens", w.output_tokens)):
        stats = published[key]
        assert values.mean() == pytest.approx(stats["mean"], rel=0.03)
        assert values.std() == pytest.approx(stats["std"], rel=0.05)
        for q, name in ((25, "p25"), (50, "p50"), (75, "p75")):
            assert np.percentile(values, q) == pytest.approx(stats[name], rel=0.03, abs=1)
        assert values.max() <= stats["max"]
    # The model's exact moments match the published ones closely.
    assert source.prompt.mean == pytest.approx(611, abs=0.1)
    assert source.output.mean == pytest.approx(123, abs=0.1)
    assert w.predicted_output_tokens.min() >= 1 and w.predicted_output_tokens.max() <= 4096


def test_sharegpt_resamples_the_shipped_lengths() -> None:
    from llmsched_env.workload.presets import _sharegpt_lengths

    prompt, output = _sharegpt_lengths()
    assert (prompt.min(), prompt.max(), output.min(), output.max()) == (262, 3998, 512, 1021)
    assert prompt.mean() == pytest.approx(857.46, abs=0.01)
    w = make_workload_source("sharegpt").sample(2000, np.random.default_rng(0))
    assert set(w.prompt_tokens.tolist()) <= set(prompt.tolist())
    assert set(w.output_tokens.tolist()) <= set(output.tolist())
    gaps = np.diff(w.arrival_s)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)  # Poisson
    assert w.mean_rate_rps == pytest.approx(10.0, rel=0.1)
