from __future__ import annotations

import numpy as np
import pytest

from llmsched_env.validation.prefix_sharing import prefix_sharing
from llmsched_env.workload import Fixed, PoissonArrivals, prefix_block_hashes
from llmsched_env.workload.shared_prefixes import PrefixSharingSource


@pytest.mark.parametrize("share_rate", [0.3, 0.6, 0.8])
def test_measured_share_rate_is_close_to_the_parameter(share_rate: float) -> None:
    source = PrefixSharingSource(share_rate=share_rate, output=Fixed(64))
    w = source.sample(600, np.random.default_rng(7))
    measured = prefix_sharing(w.prefix_block_hashes, w.prompt_tokens, w.prefix_block_tokens)
    assert measured.hit_fraction == pytest.approx(share_rate, abs=0.02)


def test_share_rate_orders_the_measured_sharing() -> None:
    rates = []
    for share_rate in (0.2, 0.5, 0.9):
        w = PrefixSharingSource(share_rate=share_rate).sample(300, np.random.default_rng(0))
        rates.append(prefix_sharing(w.prefix_block_hashes, w.prompt_tokens, 16).hit_fraction)
    assert rates == sorted(rates) and rates[0] < 0.3 < 0.8 < rates[2]


def test_a_turn_s_hashes_extend_the_previous_turn_s() -> None:
    """Beyond the system prompt, a prompt shares only a whole earlier prompt, extended."""
    source = PrefixSharingSource(
        share_rate=0.8, output=Fixed(40), mean_turns=5.0, system_prompt_tokens=256
    )
    w = source.sample(200, np.random.default_rng(3))
    chains = [c.tolist() for c in w.prefix_block_hashes]
    system_blocks = 256 // 16
    later_turns = 0
    for j, chain in enumerate(chains):
        common = [
            (
                next(
                    (k for k, (a, b) in enumerate(zip(chain, c)) if a != b), min(len(chain), len(c))
                ),
                i,
            )
            for i, c in enumerate(chains[:j])
        ]
        longest, i = max(common, default=(0, -1))
        if longest <= system_blocks:
            continue
        later_turns += 1
        # The earlier prompt is shared whole (its every block), then come its output and more.
        assert longest == len(chains[i]) == w.prompt_tokens[i] // 16
        assert w.prompt_tokens[j] > w.prompt_tokens[i] + w.output_tokens[i]
    assert later_turns > 100  # about 1 - 1 / mean_turns of the requests


def test_first_turns_share_only_a_system_prompt() -> None:
    source = PrefixSharingSource(share_rate=0.5, n_system_prompts=2, system_prompt_tokens=64)
    w = source.sample(300, np.random.default_rng(1))
    firsts = {tuple(c[:4]) for c in w.prefix_block_hashes}  # 64 tokens: 4 blocks
    assert len(firsts) == 2  # every prompt starts with one of the two system prompts
    assert all(len(c) == p // 16 for c, p in zip(w.prefix_block_hashes, w.prompt_tokens))
    assert w.prompt_tokens.max() <= source.max_prompt_tokens


def test_hashes_are_those_of_the_token_ids() -> None:
    """The incremental chains equal prefix_block_hashes of the prompt's token ids."""
    source = PrefixSharingSource(
        share_rate=0.5, n_system_prompts=1, system_prompt_tokens=40, mean_turns=1.0
    )
    w = source.sample(3, np.random.default_rng(0))  # three first turns: system prompt + message
    # Ids: the system prompt is 0..39; user messages get the next ids, 32 tokens each
    # (32 shared system tokens -> round(32 * 0.5 / 0.5) = 32).
    for k, chain in enumerate(w.prefix_block_hashes):
        ids = np.concatenate([np.arange(40), 40 + 32 * k + np.arange(32)])
        assert w.prompt_tokens[k] == 72
        assert chain.tolist() == prefix_block_hashes(ids, 16).tolist()


def test_same_seed_same_workload_and_rate_rescaling() -> None:
    source = PrefixSharingSource(arrivals=PoissonArrivals(1.0))
    a = source.sample(100, np.random.default_rng(5))
    b = source.sample(100, np.random.default_rng(5))
    c = source.sample(100, np.random.default_rng(6))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    fast = source.sample(100, np.random.default_rng(5), arrival_rate_rps=4.0)
    assert np.allclose(fast.arrival_s * 4.0, a.arrival_s)
    assert source.calibration().fingerprint() == source.calibration().fingerprint()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"share_rate": 1.0}, r"share_rate must be in \(0, 1\)"),
        ({"share_rate": 0.0}, "share_rate"),
        ({"mean_turns": 0.5}, "mean_turns must be >= 1, got 0.5"),
        ({"n_system_prompts": 0}, "n_system_prompts"),
        ({"max_prompt_tokens": 100}, r"max_prompt_tokens must be >= 1365"),
        # The user message would be infinite (round() of it overflowed).
        ({"share_rate": 5e-324}, r"share_rate=5e-324 is too small .* would be inf tokens"),
    ],
)
def test_bad_parameters_are_refused(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        PrefixSharingSource(**kwargs)


def test_start_is_refused() -> None:
    with pytest.raises(ValueError, match="start must be None"):
        PrefixSharingSource().sample(5, np.random.default_rng(0), start=1)


def test_the_server_s_prefix_cache_hits_the_shared_prefixes() -> None:
    from llmsched_env.latency import AffineIterationLatency
    from llmsched_env.sim import IterationServer, simulate

    w = PrefixSharingSource(share_rate=0.75).sample(40, np.random.default_rng(0))
    server = IterationServer(
        w,
        n_gpus=1,
        latency=AffineIterationLatency(c_s=0.01, a_s_per_token=0.0001),
        kv_capacity_tokens=10**6,
        max_tokens=16384,
        max_sequences=64,
        rng=np.random.default_rng(0),
        kv_allocation="paged",
        kv_block_tokens=16,
        prefix_caching=True,
    )
    simulate(server, lambda s: s.run_iteration(10**9, 10**9, 10**9))
    measured = prefix_sharing(w.prefix_block_hashes, w.prompt_tokens, 16)
    hits = int(server.records.prefix_hit_tokens.sum())
    # A cache large enough never evicts: every shareable token of a prompt admitted after its
    # predecessor's prefill is a hit, so the hits approach the measured sharing from below.
    assert 0.5 * measured.hit_tokens < hits <= measured.hit_tokens
