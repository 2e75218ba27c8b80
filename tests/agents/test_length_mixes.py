import math

import gymnasium as gym
import numpy as np
import pytest

from agents.length_mixes import LENGTH_MIX_NAMES, N_LENGTH_MIXES, length_mix
from agents.scenarios import build_env_kwargs


def _parameters(index: int) -> list[tuple[float, float, int | None]]:
    source = length_mix(index)
    return [
        (part.mu, part.sigma, part.max_tokens)
        for dist in (source.prompt, source.output)
        for part in dist.components
    ]


def test_every_mix_is_built_the_same_every_time():
    for index in range(N_LENGTH_MIXES):
        assert _parameters(index) == _parameters(index)
        assert length_mix(index).predictor == length_mix(index).predictor


def test_mixes_differ_from_each_other():
    parameters = [tuple(_parameters(i)) for i in range(N_LENGTH_MIXES)]
    assert len(set(parameters)) == N_LENGTH_MIXES


@pytest.mark.parametrize("index", range(N_LENGTH_MIXES))
def test_parameters_lie_in_the_documented_ranges(index):
    source = length_mix(index)
    assert source.name == LENGTH_MIX_NAMES[index]
    for dist, (low, high), (sigma_low, sigma_high), cap in (
        (source.prompt, (16, 8192), (0.3, 1.2), 32_768),
        (source.output, (4, 2048), (0.3, 1.5), 8_192),
    ):
        assert 0.5 <= dist.weights[0] <= 0.9
        for part in dist.components:
            assert low <= math.exp(part.mu) <= high
            assert sigma_low <= part.sigma <= sigma_high
            assert part.max_tokens == cap
    assert 0.25 <= source.predictor.sigma <= 1.0


@pytest.mark.parametrize("index", [-1, N_LENGTH_MIXES, 1.0, True, "0"])
def test_a_bad_index_is_named(index):
    with pytest.raises(ValueError, match=rf"index must be an integer in 0\.\.{N_LENGTH_MIXES - 1}"):
        length_mix(index)


def test_a_numpy_integer_index_is_accepted():
    assert length_mix(np.int64(1)).name == length_mix(1).name == LENGTH_MIX_NAMES[1]


def test_a_mix_is_a_scenario_workload_an_env_runs():
    kwargs = build_env_kwargs({"workload": LENGTH_MIX_NAMES[0], "load": 1.0, "n_requests": 50})
    env = gym.make("llmsched/BatchScheduling-v0", **kwargs)
    env.reset(seed=0)
    workload = env.unwrapped.server.workload
    assert len(workload) == 50
    assert np.all(workload.prompt_tokens <= 32_768) and np.all(workload.output_tokens <= 8_192)
    env.close()
