"""Shared fixtures: small hand-made workloads."""

from __future__ import annotations

import numpy as np
import pytest

from llmsched_env.workload import Workload


def make_workload(arrival_s, prompt_tokens, output_tokens, predicted=None) -> Workload:
    """A workload from plain lists (predicted lengths default to the true ones)."""
    output = np.asarray(output_tokens)
    return Workload(
        arrival_s=np.asarray(arrival_s, dtype=float),
        prompt_tokens=np.asarray(prompt_tokens),
        output_tokens=output,
        predicted_output_tokens=output if predicted is None else np.asarray(predicted),
    )


def random_workload(rng: np.random.Generator, n: int, rate: float = 5.0) -> Workload:
    """Poisson arrivals with lognormal-ish prompt and output lengths."""
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    prompt = np.maximum(1, rng.lognormal(5.0, 1.0, n).astype(int))
    output = np.maximum(1, rng.lognormal(4.0, 1.0, n).astype(int))
    return make_workload(arrival, prompt, output)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
