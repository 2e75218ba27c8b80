import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsched_env.latency import AffineIterationLatency
from llmsched_env.sim import IterationServer, RejectReason, simulate
from tests.conftest import make_workload, random_workload

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


def test_ttft_target_per_prompt_token_counts_a_miss_when_its_own_deadline_passes():
    # Both arrive at 0 and are prefilled together: first tokens at 10 + 60 = 70 ms. Targets
    # 50 ms + 1 ms per prompt token: 100 ms for request 0 (met), 60 ms for request 1 (missed),
    # so the deadlines are out of arrival order.
    w = make_workload([0.0, 0.0], [50, 10], [2, 2])
    s = server(w, ttft_deadline_s=0.05, ttft_per_token_s=0.001)
    assert s.advance()
    assert s.run_iteration(0, 100, 8)
    assert s.advance()
    assert s.now == pytest.approx(0.07)
    assert s.n_ttft_misses == 1  # request 1's deadline (60 ms) has passed, request 0's not
    simulate(s, decode_all_then_prefill)
    assert (s.n_on_time, s.n_ttft_misses) == (1, 1)
    fixed = server(w, ttft_deadline_s=0.05)
    simulate(fixed, decode_all_then_prefill)
    assert (fixed.n_on_time, fixed.n_ttft_misses) == (0, 2)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), per_token=st.sampled_from([1e-4, 1e-3, 1e-2]))
def test_ttft_misses_are_the_passed_deadlines_without_a_first_token(seed, per_token):
    """At every decision, the TTFT misses so far are the requests whose own deadline passed
    without a first token by then (or that were rejected), whatever the deadlines' order."""
    rng = np.random.default_rng(seed)
    w = random_workload(rng, 40, rate=20.0)
    s = server(w, max_tokens=256, ttft_deadline_s=0.2, ttft_per_token_s=per_token)
    deadline = w.arrival_s + 0.2 + per_token * w.prompt_tokens

    def decide(server):
        rejected = server.records.reject_reason != RejectReason.NONE
        passed = deadline <= server.now
        late = ~(server.records.first_token_s <= deadline)  # nan: no first token yet
        expected = np.count_nonzero(rejected | (passed & late & ~rejected))
        assert server.n_ttft_misses == expected
        level = int(rng.integers(0, 3))
        if level == 0 and server.can_wait():
            server.wait()
        elif not server.run_iteration(10**9, 64 * (level + 1), 4):
            server.run_iteration(10**9, 10**9, 10**9)

    simulate(s, decide)
    first = s.records.first_token_s
    missed = (s.records.reject_reason != RejectReason.NONE) | ~(first <= deadline)
    assert s.n_ttft_misses == np.count_nonzero(missed)


def test_ttft_per_token_needs_a_ttft_target_and_a_number_at_least_zero():
    w = make_workload([0.0], [10], [2])
    with pytest.raises(ValueError, match=r"ttft_per_token_s needs a TTFT target"):
        server(w, ttft_per_token_s=0.001)
    with pytest.raises(ValueError, match=r"ttft_per_token_s must be a number >= 0, got -0.001"):
        server(w, ttft_deadline_s=1.0, ttft_per_token_s=-0.001)


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


# ---------------------------------------------------------------------- paged KV allocation
def paged(w, **kw):
    return server(w, kv_allocation="paged", kv_block_tokens=4, **kw)


def test_paged_allocates_blocks_as_tokens_are_computed():
    w = make_workload([0.0], [6], [4])
    s = paged(w, kv_capacity_tokens=40)
    s.advance()
    s.run_iteration(0, 100, 1)
    assert s.request_blocks[0] == 2 and s.blocks_used == [2] and s.kv_used == [8]
    s.advance()  # first token: 6 tokens computed, 2 blocks
    s.run_iteration(1, 0, 1)  # decode computes token 7: still 2 blocks
    assert s.request_blocks[0] == 2
    s.advance()
    s.run_iteration(1, 0, 1)  # token 8
    s.advance()
    s.run_iteration(1, 0, 1)  # token 9 needs a third block
    assert s.request_blocks[0] == 3 and s.kv_reserved == s.kv_used == [12]
    simulate(s, decode_all_then_prefill)
    assert s.records.completed[0] and s.blocks_used == [0] and s.request_blocks == [0]


def test_preempted_requests_go_to_the_front_in_admission_order_and_resume():
    # 5 blocks of 4 tokens. Request 0 (19-token prompt) is prefilled in chunks of 8 while 1 and 2
    # (4-token prompts) are admitted and start decoding; 0's last chunk needs 2 more blocks.
    w = make_workload([0.0, 0.0, 0.0, 0.0], [19, 4, 4, 4], [1, 3, 3, 3])
    s = paged(w, kv_capacity_tokens=20, chunk_size=8)
    s.advance()
    s.run_iteration(0, 4, 1)  # 0: 4 tokens, 1 block
    s.advance()
    s.run_iteration(0, 16, 2)  # 0: 8 more (3 blocks); 1 and 2 whole (1 block each)
    s.advance()
    assert s.running[0].tolist() == [1, 2] and s.prefilling[0] == [0] and s.free_blocks(0) == 0
    first_token = s.records.first_token_s[[1, 2]].copy()
    assert s.run_iteration(0, 8, 1)  # 0's last 7 tokens need 5 blocks: 2 then 1 are preempted
    assert list(s.requeued) == [1, 2] and s.waiting_ids().tolist() == [1, 2, 3]
    assert s.running[0].size == 0 and s.blocks_used == [5]
    assert s.n_preemptions == 2 and s.recomputed_tokens == 8  # 4 computed tokens each
    assert s.waiting_prompt_tokens() == 5 + 5 + 4  # recompute prompt + 1 generated
    assert s.waiting_head() == 1 and s.waiting_head_tokens() == 5
    simulate(s, decode_all_then_prefill)
    r = s.records
    assert r.completed.all() and (r.tokens_generated == w.output_tokens).all()
    np.testing.assert_array_equal(r.first_token_s[[1, 2]], first_token)  # TTFT stays the first
    assert list(r.preemptions[:3]) == [0, 1, 1] and list(r.recomputed_tokens[:3]) == [0, 4, 4]
    summary = s.summary()
    assert summary["preemptions"] == r.preemptions.sum() == s.n_preemptions >= 2
    assert summary["recomputed_tokens"] == r.recomputed_tokens.sum() == s.recomputed_tokens
    # The resumed token's gap spans the preemption: it comes after request 0 finished.
    assert r.max_token_gap_s[1] >= r.completion_s[0] - first_token[0]


def test_a_step_that_only_preempts_changes_the_state_and_decides_again():
    # 3 blocks of 2 tokens. Request 0 prefills in chunks of 2; 1 is admitted later, decodes first.
    w = make_workload([0.0, 0.0], [5, 2], [1, 3])
    s = server(w, kv_allocation="paged", kv_block_tokens=2, kv_capacity_tokens=6, chunk_size=2)
    s.advance()
    s.run_iteration(0, 2, 1)  # 0: 2 tokens (1 block)
    s.advance()
    s.run_iteration(0, 4, 8)  # 0: 2 more (2 blocks); 1 whole (1 block)
    s.advance()
    assert s.running[0].tolist() == [1] and s.free_blocks(0) == 0
    t = s.now
    assert s.run_iteration(1, 0, 8)  # 1's decode needs a block: it preempts itself, no iteration
    assert s.decision_gpu == -1 and not s.gpu_busy[0] and s.n_iterations == 2
    assert list(s.requeued) == [1] and s.free_blocks(0) == 1
    assert s.advance() and s.decision_gpu == 0 and s.now == t  # the GPU decides again at once
    simulate(s, decode_all_then_prefill)
    assert s.done and s.records.completed.all() and s.records.preemptions.tolist() == [0, 1]


def test_prefill_only_iteration_that_could_only_preempt_itself_is_not_progress():
    w = make_workload([0.0, 0.0], [8, 12], [8, 2])
    s = paged(w, kv_capacity_tokens=20, chunk_size=4)
    s.advance()
    s.run_iteration(0, 4, 1)  # request 0: 4 tokens
    s.advance()
    s.run_iteration(0, 8, 1)  # 0 finishes its prompt, 1 starts: 2 + 1 blocks
    s.advance()
    s.run_iteration(1, 0, 1)  # 0 decodes (token 9 needs a third block)
    s.advance()
    s.run_iteration(0, 4, 1)  # 1 continues: 2 blocks, all 5 used
    s.advance()
    assert s.free_blocks(0) == 0 and s.prefilling[0] == [1]
    assert not s.prefill_progresses(0, 4)  # 1 could only preempt itself
    assert s.can_prefill(0)


@pytest.mark.parametrize("allocation", ["reserve", "paged"])
def test_prefill_allowed_budgets_is_the_rule_asked_budget_by_budget(allocation: str) -> None:
    # Along an episode under memory pressure, at every decision: the budget-independent part is
    # asked once, but each answer is the documented rule for that budget.
    w = random_workload(np.random.default_rng(3), 60, rate=40.0)
    kw = {"kv_block_tokens": 4} if allocation == "paged" else {}
    s = server(w, kv_allocation=allocation, kv_capacity_tokens=1_500, chunk_size=32, **kw)
    budgets = [1, 8, 32, 64, 100]
    checked = 0

    def check_then_decide(s: IterationServer) -> None:
        nonlocal checked
        g = s.decision_gpu
        for alongside in (True, False):
            if allocation == "reserve":
                expected = [s.smallest_prefill_budget(g) <= b for b in budgets]
            else:
                decodes_progress = bool(
                    alongside and s.running[g].size and (s.prefilling[g] or s.can_admit(g))
                )
                expected = [s.prefill_progresses(g, b) or decodes_progress for b in budgets]
            assert s.prefill_allowed_budgets(g, budgets, alongside) == expected
            assert [s.prefill_allowed(g, b, alongside) for b in budgets] == expected
        checked += 1
        decode_all_then_prefill(s)

    simulate(s, check_then_decide)
    assert checked > 50 and s.done


def test_paged_rejects_what_could_never_finish():
    # 10 tokens of memory are 2 blocks of 4 = 8 usable tokens.
    w = make_workload([0.0, 0.0, 0.0], [5, 5, 3], [4, 3, 4])
    s = paged(w, kv_capacity_tokens=10, chunk_size=None, max_tokens=6)
    simulate(s, decode_all_then_prefill)
    reasons = s.records.reject_reason.tolist()
    assert reasons[0] == RejectReason.EXCEEDS_KV_CAPACITY  # 9 tokens > 8
    # Without chunks a recomputation (prompt + 2 generated = 7 tokens) must fit max_tokens = 6.
    assert reasons[1] == RejectReason.PROMPT_EXCEEDS_TOKEN_BUDGET
    assert reasons[2] == RejectReason.NONE and s.records.completed[2]
    # Reserve mode accepts both: 9 tokens fit its 10, and the prompt of 5 fits the budget.
    s = server(w, kv_capacity_tokens=10, max_tokens=6)
    simulate(s, decode_all_then_prefill)
    assert s.records.completed.all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kv_allocation": "pages"}, "kv_allocation must be one of ['reserve', 'paged']"),
        ({"kv_allocation": "paged", "kv_block_tokens": 0}, "kv_block_tokens must be an integer"),
        ({"kv_allocation": "paged", "kv_capacity_tokens": 8}, "holds no whole KV block"),
    ],
)
def test_bad_paged_arguments_fail_clearly(kwargs, message):
    args = {"kv_block_tokens": 16, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        server(make_workload([0.0], [1], [1]), **args)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    n_gpus=st.integers(1, 3),
    chunk=st.sampled_from([None, 16, 200]),
    block=st.sampled_from([1, 4, 16]),
    stochastic=st.booleans(),
    choices=st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 600), st.integers(1, 5), st.booleans()),
        min_size=1,
        max_size=30,
    ),
)
def test_paged_without_memory_pressure_gives_the_reserve_schedule(
    seed, n, n_gpus, chunk, block, stochastic, choices
):
    """With KV memory that never binds, paged and reserve mode run the same iterations."""
    w = random_workload(np.random.default_rng(seed), n)
    max_tokens = 512 if chunk else int((w.prompt_tokens + w.output_tokens).max())

    def run(**kw):
        s = IterationServer(
            w,
            n_gpus=n_gpus,
            latency=AffineIterationLatency(0.01, 0.0005, stochastic=stochastic),
            kv_capacity_tokens=10**9,
            max_tokens=max_tokens,
            max_sequences=8,
            chunk_size=chunk,
            rng=np.random.default_rng(seed),
            ttft_deadline_s=0.5,
            tbt_target_s=0.05,
            **kw,
        )
        step = 0

        def decide(server):
            nonlocal step
            decode, budget, cap, wait = choices[step % len(choices)]
            step += 1
            if wait and server.can_wait():
                server.wait()
            elif not server.run_iteration(decode, budget, cap):
                if server.can_wait():
                    server.wait()
                else:
                    server.run_iteration(10**9, 10**9, 10**9)

        return simulate(s, decide)

    reserve, paged_run = run(), run(kv_allocation="paged", kv_block_tokens=block)
    assert paged_run.n_preemptions == 0
    a = reserve.records.to_frame(reserve.n_arrived)
    b = paged_run.records.to_frame(paged_run.n_arrived)
    pd.testing.assert_frame_equal(a, b)
    assert (reserve.n_on_time, reserve.n_ttft_misses, reserve.n_tbt_misses) == (
        paged_run.n_on_time,
        paged_run.n_ttft_misses,
        paged_run.n_tbt_misses,
    )
    assert reserve.n_iterations == paged_run.n_iterations


class _SpreadRecorder:
    """An affine model that also records the decode-context spread the server passes."""

    stochastic = False
    uses_decode_spread = True

    def __init__(self):
        self.calls = []

    def iteration_s(
        self,
        prefill,
        decode,
        context,
        rng,
        prefill_kv_tokens=0,
        prefill_sequences=0,
        decode_kv_max=0,
        decode_kv_min=0,
    ):
        self.calls.append((decode, context, decode_kv_max, decode_kv_min))
        return LATENCY.iteration_s(prefill, decode, context, rng)

    def estimate_s(self, *args, **kwargs):
        return LATENCY.estimate_s(*args[:3])

    def marginal_request_s(self, p, o):
        return LATENCY.marginal_request_s(p, o)


def test_models_that_ask_get_the_longest_and_shortest_decode_context():
    w = make_workload([0.0, 0.0, 0.0], [10, 30, 20], [6, 6, 6])
    recorder = _SpreadRecorder()
    s = server(w, latency=recorder)
    simulate(s, decode_all_then_prefill)
    decodes = [c for c in recorder.calls if c[0] > 1]
    assert decodes
    # After the prefill each sequence holds prompt + 1 tokens, then one more per decode.
    first = decodes[0]
    assert first[:2] == (3, 10 + 30 + 20 + 3)
    assert (first[2], first[3]) == (31, 11)
    for decode, context, longest, shortest in decodes:
        assert shortest <= context / decode <= longest
    single = [c for c in recorder.calls if c[0] <= 1]
    assert all(c[2:] == (0, 0) for c in single)


def test_plan_prefill_changes_nothing_and_names_the_fifo_admissions():
    # Whole prompts: 1000 and 900 fit a 2048-token budget, 200 more would not, FIFO stops there.
    w = make_workload([0.0, 0.0, 0.0], [1000, 900, 200], [3, 3, 3])
    s = server(w, max_tokens=2048)
    s.advance()
    before = (s.queue_head, s.n_sequences[0], s.kv_reserved[0])
    assert tuple(s.plan_prefill(0, 2048, 10**9)) == (1900, 0, 2)
    assert tuple(s.plan_prefill(0, 2048, 1)) == (1000, 0, 1)
    assert tuple(s.plan_prefill(0, 999, 10**9)) == (0, 0, 0)
    assert (s.queue_head, s.n_sequences[0], s.kv_reserved[0]) == before
    # KV memory for the first footprint only (1003 tokens of 1905; the second needs 903).
    s = server(w, max_tokens=2048, kv_capacity_tokens=1905)
    s.advance()
    assert tuple(s.plan_prefill(0, 2048, 10**9)) == (1000, 0, 1)


@pytest.mark.parametrize(
    "kw",
    [
        dict(chunk_size=None),
        dict(chunk_size=16, max_sequences=3),
        dict(chunk_size=32, kv_capacity_tokens=300),
        dict(kv_allocation="paged", kv_block_tokens=4, kv_capacity_tokens=400, chunk_size=24),
    ],
)
def test_plan_prefill_matches_the_prefill_only_iteration_it_plans(kw):
    """A dry run and the iteration run with the same budget and cap prefill the same tokens
    (paged mode: at decisions where the continuing chunks' blocks are free)."""
    rng = np.random.default_rng(1)
    arrival = np.cumsum(rng.exponential(0.01, 200))
    w = make_workload(arrival, rng.integers(1, 90, 200), rng.integers(1, 12, 200))
    s = server(w, **kw)
    checked = 0
    while s.advance():
        gpu = s.decision_gpu
        budget, cap = int(rng.integers(1, 120)), int(rng.integers(1, 5))
        plan = s.plan_prefill(gpu, budget, cap)
        before = s.prefill_tokens_processed
        preemptions = s.n_preemptions
        if rng.random() < 0.3 and s.running[gpu].size:
            s.run_iteration(10**9, 10**9, 10**9)
            continue
        if not s.run_iteration(0, budget, cap):
            assert plan.tokens == 0
            s.run_iteration(10**9, 10**9, 10**9) or s.wait()
            continue
        if s.n_preemptions == preemptions:
            assert s.prefill_tokens_processed - before == plan.tokens
            checked += 1
    assert checked > 20
