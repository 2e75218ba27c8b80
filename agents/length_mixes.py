"""Synthetic length mixes: workloads that widen the length distributions an agent trains on.

An agent trained on three real traces leads the heuristics on held-out traces that resemble one
of them and falls far behind on a trace unlike all three (docs/results.md, "Leave one training
workload out"). These workloads add many more length mixes to a training distribution, in the
manner of domain randomisation (Tobin et al., "Domain Randomization for Transferring Deep Neural
Networks from Simulation to the Real World", IROS 2017): each is a :class:`SyntheticSource`
whose prompt and output lengths are two-component lognormal mixtures, with parameters drawn once
from wide ranges by a fixed generator, so that the family is the same on every machine.

The ranges are broad priors on LLM serving workloads, not fitted to any trace:

* prompt: component medians log-uniform on 16-8,192 tokens, log-standard deviations uniform on
  0.3-1.2, capped at 32,768 tokens;
* output: component medians log-uniform on 4-2,048 tokens, log-standard deviations uniform on
  0.3-1.5, capped at 8,192 tokens;
* the first component's weight uniform on 0.5-0.9 (for prompts and outputs independently);
* predictions ``LogNormalNoisePredictor`` with ``sigma`` uniform on 0.25-1.0 (from a fairly
  good predictor to one that is often off by a factor of 2);
* Poisson arrivals at 1 request/s (an env rescales the rate to its load; a training mixture
  also draws Gamma arrivals).

Prompt and output lengths are drawn independently. ``length-mix-<i>`` names the ``i``-th mix;
:func:`length_mix` builds it. Mix ``i`` depends on ``i`` alone (its generator is seeded with
``(LENGTH_MIX_SEED, i)``), so a family of K mixes is the first K of a larger one. The number of
mixes in ``batch-general``'s training, 24, was chosen among 6, 12 and 24 by leaving each of its
three traces out of training in turn and scoring the runs on the trace left out
(docs/results.md, "Many more length mixes"); the held-out evaluation workloads played no part.
"""

from __future__ import annotations

import math

import numpy as np

from llmsched_env.workload import (
    LogNormal,
    LogNormalNoisePredictor,
    Mixture,
    PoissonArrivals,
    SyntheticSource,
)

#: Seed of the generator that draws the family's parameters.
LENGTH_MIX_SEED = 20261204

#: Number of mixes in the family (the training distribution of ``batch-general`` holds them all).
N_LENGTH_MIXES = 24

#: Name of the ``i``-th mix (a scenario workload name).
LENGTH_MIX_NAMES = tuple(f"length-mix-{i}" for i in range(N_LENGTH_MIXES))

#: (median range in tokens, log-standard-deviation range, cap) of prompts and of outputs.
_PROMPT = ((16.0, 8192.0), (0.3, 1.2), 32_768)
_OUTPUT = ((4.0, 2048.0), (0.3, 1.5), 8_192)
_FIRST_WEIGHT = (0.5, 0.9)
_PREDICTOR_SIGMA = (0.25, 1.0)


def _two_lognormals(
    rng: np.random.Generator, spec: tuple[tuple[float, float], tuple[float, float], int]
) -> Mixture:
    """A two-component lognormal mixture with parameters drawn from ``spec``."""
    (low, high), (sigma_low, sigma_high), cap = spec
    medians = np.exp(rng.uniform(math.log(low), math.log(high), size=2))
    sigmas = rng.uniform(sigma_low, sigma_high, size=2)
    first = float(rng.uniform(*_FIRST_WEIGHT))
    parts = tuple(
        LogNormal(math.log(float(m)), float(s), max_tokens=cap) for m, s in zip(medians, sigmas)
    )
    return Mixture(parts, (first, 1.0 - first))


def length_mix(index: int) -> SyntheticSource:
    """The ``index``-th synthetic length mix (0 to ``N_LENGTH_MIXES - 1``), the same everywhere.

    Raises:
        ValueError: If ``index`` is outside ``0..N_LENGTH_MIXES - 1``.
    """
    ok = isinstance(index, int | np.integer) and not isinstance(index, bool)
    if not ok or not 0 <= index < N_LENGTH_MIXES:
        raise ValueError(f"index must be an integer in 0..{N_LENGTH_MIXES - 1}, got {index!r}")
    index = int(index)
    rng = np.random.default_rng([LENGTH_MIX_SEED, index])
    prompt = _two_lognormals(rng, _PROMPT)
    output = _two_lognormals(rng, _OUTPUT)
    sigma = float(rng.uniform(*_PREDICTOR_SIGMA))
    return SyntheticSource(
        LENGTH_MIX_NAMES[index],
        PoissonArrivals(1.0),
        prompt,
        output,
        LogNormalNoisePredictor(sigma=sigma),
    )
