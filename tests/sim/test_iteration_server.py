import numpy as np
import pytest

from llmsched_env.latency import AffineIterationLatency
from llmsched_env.sim import IterationServer, RejectReason, simulate
from tests.conftest import make_workload

# Each iteration takes 10 ms plus 1 ms per token of work.
LATENCY = AffineIterationLatency(c_s=0.01, a_s_per_token=0.001)


def server(w, **kw):
    args = dict(
        n_gpus=1,
        latency=LATENCY,
        kv_capacity_tokens=10_000,
        max_tokens=100,
        max_sequences=16,
        rng=np.random.default_rng(0),
    )
    args.update(kw)
    return IterationServer(w, **args)


def decode_all_then_prefill(s: IterationServer) -> None:
    s.run_iteration(10**9, 10**9, 10**9)


def test_prefill_emits_first_token_and_decode_one_token_per_iteration():
    w = make_workload([0.0], [10], [3])
    s = server(w)
    assert s.advance()
    assert s.run_iteration(0, 100, 1)
    assert s.advance()
    assert s.now == pytest.approx(0.02)  # 10 ms + 10 prefill tokens
    assert s.records.first_token_s[0] == pytest.approx(0.02)
    assert s.records.tokens_generated[0] == 1
    simulate(s, decode_all_then_prefill)
    # Two decode iterations of 11 ms each.
    assert s.records.completion_s[0] == pytest.approx(0.02 + 2 * 0.011)
    assert s.records.max_token_gap_s[0] == pytest.approx(0.011)


def test_mixed_iteration_is_charged_on_the_sum():
    w = make_workload([0.0, 0.0], [10, 20], [5, 5])
    s = server(w)
    s.advance()
    s.run_iteration(0, 10, 1)  # prefill request 0 alone
    s.advance()
    t0 = s.now
    s.run_iteration(1, 100, 1)  # decode request 0 and prefill request 1 (20 tokens)
    s.advance()
    assert s.now - t0 == pytest.approx(0.01 + 0.001 * (20 + 1))


def test_chunked_prefill_spreads_a_long_prompt_and_continues_it_first():
    w = make_workload([0.0, 0.0], [250, 10], [2, 2])
    s = server(w, chunk_size=100, max_tokens=150)
    s.advance()
    s.run_iteration(0, 150, 8)
    # First iteration: 100 tokens of request 0 (chunk cap), then 10 of request 1 in the budget.
    assert s.prefilling[0] == [0, 1]
    s.advance()
    assert s.records.first_token_s[1] == pytest.approx(s.now)
    assert s.prefilling[0] == [0]
    s.run_iteration(0, 150, 8)
    s.advance()
    assert np.isnan(s.records.first_token_s[0])  # 200 of 250 tokens done
    simulate(s, decode_all_then_prefill)
    assert s.done and s.records.completed.all()


def test_prompt_longer_than_budget_is_rejected_without_chunking():
    w = make_workload([0.0, 0.1], [500, 10], [2, 2])
    s = server(w, max_tokens=100)
    simulate(s, decode_all_then_prefill)
    assert s.records.reject_reason[0] == RejectReason.PROMPT_EXCEEDS_TOKEN_BUDGET
    assert s.n_rejected == 1 and s.n_completed == 1 and s.done


def test_kv_reservation_blocks_admission_until_memory_frees():
    w = make_workload([0.0, 0.0], [10, 10], [20, 20])  # each needs 30 tokens
    s = server(w, kv_capacity_tokens=50)
    s.advance()
    s.run_iteration(0, 100, 8)
    assert s.n_waiting == 1 and s.kv_reserved[0] == 30  # the second does not fit
    simulate(s, decode_all_then_prefill)
    assert s.done
    assert s.records.start_s[1] >= s.records.completion_s[0]


def test_empty_iteration_is_refused_and_changes_nothing():
    w = make_workload([0.0], [10], [2])
    s = server(w)
    s.advance()
    assert not s.run_iteration(0, 0, 1)
    assert s.decision_gpu == 0 and s.n_waiting == 1


def test_ttft_and_tbt_accounting():
    # TTFT target 15 ms: request 0 gets its first token at 20 ms -> TTFT miss.
    w = make_workload([0.0], [10], [3])
    s = server(w, ttft_deadline_s=0.015, tbt_target_s=0.5)
    simulate(s, decode_all_then_prefill)
    assert (s.n_on_time, s.n_ttft_misses, s.n_tbt_misses) == (0, 1, 0)
    s = server(w, ttft_deadline_s=1.0, tbt_target_s=0.005)
    simulate(s, decode_all_then_prefill)
    assert (s.n_on_time, s.n_ttft_misses, s.n_tbt_misses) == (0, 0, 1)
    s = server(w, ttft_deadline_s=1.0, tbt_target_s=0.5)
    simulate(s, decode_all_then_prefill)
    assert (s.n_on_time, s.n_ttft_misses, s.n_tbt_misses) == (1, 0, 0)


def test_gpus_share_the_queue_and_keep_their_sequences():
    w = make_workload([0.0, 0.0, 0.0], [10, 10, 10], [3, 3, 3])
    s = server(w, n_gpus=2)
    s.advance()
    assert s.decision_gpu == 0
    s.run_iteration(0, 100, 1)
    s.advance()
    assert s.decision_gpu == 1 and s.now == 0.0
    s.run_iteration(0, 100, 2)
    simulate(s, decode_all_then_prefill)
    assert list(s.records.gpu) == [0, 1, 1]
