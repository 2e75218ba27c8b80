"""The compiled iteration-level server plays IterationServer's episodes bit for bit."""

import copy
import dataclasses
import pickle

import numpy as np
import pytest

from llmsched_env.latency import (
    AffineIterationLatency,
    LinearIterationLatency,
    make_iteration_latency,
)
from llmsched_env.sim import IterationServer
from llmsched_env.sim.compiled_iteration_server import CompiledIterationServer
from llmsched_env.workload import PrefixSharingSource
from tests.conftest import check_iteration_accounting, make_workload, random_workload

PROFILED = make_iteration_latency("vllm0.19-rtxpro6000-llama3.1-8b")
#: Timed in Python between the two compiled halves of an iteration, drawing from the rng.
STOCHASTIC = AffineIterationLatency(c_s=0.01, a_s_per_token=0.001, b0_tokens=0, stochastic=True)
#: Timed inside the compiled iteration, as the profiled model.
AFFINE = AffineIterationLatency(c_s=0.01, a_s_per_token=0.0013, b0_tokens=64)
LINEAR = LinearIterationLatency(5752.7e-6, 17.25e-6, 6.00e-6, 3.1e-8)

SETTINGS = [
    dict(latency=PROFILED, n_gpus=1, kv_capacity_tokens=568_432, max_tokens=2048, chunk_size=512),
    dict(latency=PROFILED, n_gpus=3, kv_capacity_tokens=6_000, max_tokens=512, chunk_size=64),
    dict(latency=PROFILED, n_gpus=2, kv_capacity_tokens=60_000, max_tokens=300, chunk_size=None),
    dict(latency=STOCHASTIC, n_gpus=2, kv_capacity_tokens=20_000, max_tokens=256, chunk_size=32),
    dict(latency=STOCHASTIC, n_gpus=1, kv_capacity_tokens=3_000, max_tokens=2048, chunk_size=None),
    dict(latency=AFFINE, n_gpus=2, kv_capacity_tokens=30_000, max_tokens=512, chunk_size=100),
    dict(latency=LINEAR, n_gpus=1, kv_capacity_tokens=90_000, max_tokens=1024, chunk_size=None),
]
#: Paged KV memory, tight enough to preempt.
PAGED = dict(kv_allocation="paged")
PAGED_SETTINGS = [
    dict(latency=PROFILED, n_gpus=1, kv_capacity_tokens=4_000, max_tokens=2048, chunk_size=512,
         kv_block_tokens=16, **PAGED),
    dict(latency=AFFINE, n_gpus=2, kv_capacity_tokens=3_000, max_tokens=512, chunk_size=None,
         kv_block_tokens=64, **PAGED),
    dict(latency=STOCHASTIC, n_gpus=3, kv_capacity_tokens=2_500, max_tokens=256, chunk_size=32,
         kv_block_tokens=1, **PAGED),
]  # fmt: skip
TARGETS = [
    dict(ttft_deadline_s=1.0, tbt_target_s=0.1),
    dict(ttft_deadline_s=0.5, ttft_per_token_s=0.002, tbt_target_s=0.05),
    dict(),
]


def _pair(workload, **settings):
    settings.setdefault("max_sequences", 16)
    return (
        IterationServer(workload, rng=np.random.default_rng(3), **settings),
        CompiledIterationServer(workload, rng=np.random.default_rng(3), **settings),
    )


SCALARS = (
    "now",
    "in_system_integral",
    "n_arrived",
    "n_completed",
    "n_rejected",
    "n_on_time",
    "on_time_output_tokens",
    "n_ttft_misses",
    "n_tbt_misses",
    "sla_misses",
    "n_iterations",
    "sequences_processed",
    "prefill_tokens_processed",
    "decode_tokens_processed",
    "queue_head",
    "queue_tail",
    "decision_gpu",
    "n_waiting",
    "kv_reserved",
    "kv_used",
    "running_prompt_tokens",
    "running_predicted_tokens",
    "n_sequences",
    "last_iteration_s",
    "gpu_busy",
    "gpu_free_at",
    "busy_s",
    "blocks_used",
    "request_blocks",
    "n_preemptions",
    "recomputed_tokens",
    "capacity_blocks",
)


def assert_same_state(python, compiled):
    """Every attribute and question the env and the baselines read agrees."""
    for name in SCALARS:
        assert getattr(python, name) == getattr(compiled, name), name
    for method in ("waiting_prompt_tokens", "waiting_head", "waiting_head_tokens", "can_wait"):
        assert getattr(python, method)() == getattr(compiled, method)(), method
    assert python.oldest_waiting() == compiled.oldest_waiting()
    assert python.next_event_time() == compiled.next_event_time()
    assert python.next_free_s() == compiled.next_free_s()
    assert python.waiting_ids().tolist() == compiled.waiting_ids().tolist()
    assert list(python.requeued) == list(compiled.requeued)
    for gpu in range(python.n_gpus):
        assert python.running[gpu].tolist() == compiled.running[gpu].tolist()
        assert python.prefilling[gpu] == compiled.prefilling[gpu]
        assert (
            python.running_tokens_generated(gpu).tolist()
            == compiled.running_tokens_generated(gpu).tolist()
        )
        for method in (
            "prefill_remaining_tokens",
            "running_generated_tokens",
            "oldest_token_s",
            "can_admit",
            "can_prefill",
            "smallest_prefill_budget",
            "free_blocks",
        ):
            assert getattr(python, method)(gpu) == getattr(compiled, method)(gpu), method
        for budget in (0, 1, 9, 100, 2048):
            assert python.can_admit_within(gpu, budget) == compiled.can_admit_within(gpu, budget)
            assert python.prefill_progresses(gpu, budget) == compiled.prefill_progresses(
                gpu, budget
            )
            for decodes in (False, True):
                assert python.prefill_allowed(gpu, budget, decodes) == compiled.prefill_allowed(
                    gpu, budget, decodes
                )
            for cap in (0, 1, 3, 1000):
                assert python.plan_prefill(gpu, budget, cap) == compiled.plan_prefill(
                    gpu, budget, cap
                )


def assert_same_records(python, compiled):
    a, b = python.records, compiled.records
    for field in (
        "start_s",
        "first_token_s",
        "completion_s",
        "gpu",
        "reject_reason",
        "completed",
        "tokens_generated",
        "max_token_gap_s",
        "preemptions",
        "recomputed_tokens",
    ):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype, field
        np.testing.assert_array_equal(x, y, err_msg=field)
    assert python.summary() == pytest.approx(compiled.summary(), abs=0, rel=0, nan_ok=True)
    assert str(python.summary()) == str(compiled.summary())  # the same bits, nan included


def play_side_by_side(python, compiled, rng, check_every=1, check=None):
    """Random decisions (WAIT, decodes, budgets, caps) on both servers; compare as they go.

    ``check(python, compiled)`` replaces :func:`assert_same_state` as the comparison.
    """
    check = check or assert_same_state
    step = 0
    while True:
        due = python.advance()
        assert compiled.advance() == due
        if step % check_every == 0:
            check(python, compiled)
        if not due:
            break
        if rng.random() < 0.1 and python.can_wait():
            python.wait()
            compiled.wait()
        else:
            decodes = int(rng.integers(0, 40))
            budget = int(rng.choice([0, 1, 16, 300, 2048, 10**6]))
            cap = int(rng.choice([0, 1, 2, 1000]))
            formed = python.run_iteration(decodes, budget, cap)
            assert compiled.run_iteration(decodes, budget, cap) == formed
            if not formed:
                python.run_iteration(10**6, 10**6, 10**6)
                compiled.run_iteration(10**6, 10**6, 10**6)
        step += 1
    assert_same_records(python, compiled)
    return step


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("targets", TARGETS)
def test_random_decisions_give_the_same_episode(settings, targets):
    rng = np.random.default_rng(len(str(settings)) + len(targets))
    workload = random_workload(rng, 80, rate=float(rng.choice([3.0, 12.0])))
    python, compiled = _pair(workload, **settings, **targets)
    steps = play_side_by_side(python, compiled, rng, check_every=4)
    assert steps > 50
    check_iteration_accounting(compiled)


@pytest.mark.parametrize("settings", PAGED_SETTINGS)
@pytest.mark.parametrize("targets", TARGETS[:2])
def test_paged_memory_preempts_and_resumes_as_the_python_server(settings, targets):
    rng = np.random.default_rng(len(str(settings)) + len(targets))
    workload = random_workload(rng, 80, rate=30.0)
    python, compiled = _pair(workload, **settings, **targets)
    play_side_by_side(python, compiled, rng, check_every=3)
    assert compiled.n_preemptions > 0
    check_iteration_accounting(compiled)


PREFIX_COUNTERS = (
    "prefix_hit_tokens",
    "prefix_queried_tokens",
    "preempted_prefix_hit_tokens",
    "preempted_prefix_queried_tokens",
)


def prefix_sharing_workload(rng, n, hash_tokens, speed_up):
    """Requests sharing system prompts and earlier turns, arriving ``speed_up`` times faster."""
    source = PrefixSharingSource(
        share_rate=0.8, n_system_prompts=3, system_prompt_tokens=256, max_prompt_tokens=2048,
        block_tokens=hash_tokens,
    )  # fmt: skip
    workload = source.sample(n, rng)
    return dataclasses.replace(workload, arrival_s=workload.arrival_s / speed_up)


@pytest.mark.parametrize(
    ("settings", "hash_tokens", "speed_up"),
    [
        (dict(latency=PROFILED, n_gpus=1, kv_capacity_tokens=3_000, max_tokens=512,
              chunk_size=512, kv_block_tokens=32), 16, 20.0),
        (dict(latency=AFFINE, n_gpus=3, kv_capacity_tokens=3_000, max_tokens=512,
              chunk_size=64, kv_block_tokens=16, max_sequences=4), 16, 100.0),
        (dict(latency=STOCHASTIC, n_gpus=2, kv_capacity_tokens=3_000, max_tokens=2048,
              chunk_size=None, kv_block_tokens=4), 16, 20.0),
        (dict(latency=LINEAR, n_gpus=2, kv_capacity_tokens=4_000, max_tokens=2048,
              chunk_size=64, kv_block_tokens=2), 4, 5.0),
    ],
)  # fmt: skip
def test_prefix_caching_hits_evicts_and_preempts_as_the_python_server(
    settings, hash_tokens, speed_up
):
    """Shared prompts, blocks held by several keys' owners, evictions and preemptions."""
    rng = np.random.default_rng(hash_tokens + int(speed_up))
    workload = prefix_sharing_workload(rng, 120, hash_tokens, speed_up)
    python, compiled = _pair(
        workload, kv_allocation="paged", prefix_caching=True, **settings, **TARGETS[0]
    )
    seen_duplicates = 0

    def check(python, compiled):
        nonlocal seen_duplicates
        assert_same_state(python, compiled)
        for name in PREFIX_COUNTERS:
            assert getattr(python, name) == getattr(compiled, name), name
        check_iteration_accounting(compiled)  # the pool's arrays, links and table included
        seen_duplicates += int((compiled.prefix_cache.dup_next != -1).sum())

    play_side_by_side(python, compiled, rng, check_every=5, check=check)
    np.testing.assert_array_equal(
        python.records.prefix_hit_tokens, compiled.records.prefix_hit_tokens
    )
    assert 0 < compiled.prefix_hit_tokens < compiled.prefix_queried_tokens
    assert compiled.n_preemptions > 0 and compiled.preempted_prefix_hit_tokens > 0
    assert seen_duplicates > 0  # some key was held by two blocks at once


def test_a_preemption_on_one_gpu_lets_another_hit_one_more_block():
    """A request's hits stop before its last token; a preemption raises its tokens to compute.

    GPU 1 caches W's four hashed blocks. X, with the same 64-token prompt, can hit at most
    three of them ((64 - 1) // 16), and GPU 1 looks them up before X goes to GPU 0. There X
    decodes and is preempted: it must now compute its prompt and its tokens, so all four blocks
    count. GPU 1's pool has not changed since its lookup, which must not be reused (the Python
    server once memoised it by the pool alone and readmitted X with three hits).
    """
    w, x = 1, 2  # request 0 is a long one that keeps GPU 0 busy
    workload = make_workload([0.0, 0.0, 0.3], [16, 64, 64], [110, 2, 60])
    hashes = np.array([11, 12, 13, 14])
    workload = workload.with_prefix_hashes([np.zeros(0, dtype=np.int64), hashes, hashes], 16)
    servers = _pair(workload, latency=AFFINE, n_gpus=2, kv_capacity_tokens=128, max_tokens=2048,
                    kv_block_tokens=16, kv_allocation="paged", prefix_caching=True,
                    max_sequences=4)  # fmt: skip
    python, compiled = servers
    readmitted = False
    for step in range(2000):
        due = python.advance()
        assert compiled.advance() == due
        assert_same_state(python, compiled)
        if not due:
            break
        gpu, waiting = python.decision_gpu, python.waiting_ids().tolist()
        if step == 0:
            decision = (0, 16, 1)  # request 0 on GPU 0
        elif gpu == 1 and w in waiting:
            decision = (0, 10**6, 1)  # w on GPU 1, which caches its blocks
        elif x in waiting and not python.n_preemptions:
            if gpu == 1:  # GPU 1 looks x's hits up, then waits: x goes to GPU 0
                assert python.plan_prefill(1, 2048, 1) == compiled.plan_prefill(1, 2048, 1)
                for server in servers:
                    server.wait()
                continue
            decision = (10**6, 10**6, 1)
        elif x in waiting and gpu == 1:
            hits_before = python.prefix_hit_tokens
            decision = (0, 10**6, 1)  # x comes back on GPU 1
            readmitted = True
        else:
            decision = (10**6, 10**6, 0)
        for server in servers:
            server.run_iteration(*decision)
        if readmitted and python.prefix_hit_tokens > hits_before:
            assert python.prefix_hit_tokens - hits_before == 64  # all four blocks
            readmitted = False
    assert python.n_preemptions > 0 and python.records.prefix_hit_tokens[x] >= 64
    assert_same_records(python, compiled)


def test_few_slots_one_token_outputs_and_rejections():
    """Sequence slots run out, some outputs are one token, some requests never fit."""
    rng = np.random.default_rng(7)
    w = random_workload(rng, 80, rate=20.0)
    output = w.output_tokens.copy()
    output[::5] = 1
    w = make_workload(w.arrival_s, w.prompt_tokens, output)
    python, compiled = _pair(
        w, latency=PROFILED, n_gpus=2, kv_capacity_tokens=900, max_tokens=128, chunk_size=None,
        max_sequences=2, ttft_deadline_s=0.3, tbt_target_s=0.02,
    )  # fmt: skip
    play_side_by_side(python, compiled, rng)
    assert compiled.n_rejected > 0
    assert compiled.n_completed > 0


@pytest.mark.parametrize("caching", [False, True])
def test_copies_and_pickles_continue_the_same_episode(caching):
    rng = np.random.default_rng(1)
    if caching:  # the prefix cache's buffer is part of the state
        w = prefix_sharing_workload(rng, 60, 16, 20.0)
        memory = dict(kv_capacity_tokens=4_000, kv_allocation="paged", prefix_caching=True)
    else:
        w = random_workload(rng, 60, rate=8.0)
        memory = dict(kv_capacity_tokens=50_000)
    python, compiled = _pair(w, latency=PROFILED, n_gpus=2, max_tokens=512, chunk_size=128,
                             **memory)  # fmt: skip
    for _ in range(40):
        assert python.advance() and compiled.advance()
        python.run_iteration(5, 300, 2)
        compiled.run_iteration(5, 300, 2)
    for copied in (copy.deepcopy(compiled), pickle.loads(pickle.dumps(compiled))):
        python_copy = copy.deepcopy(python)
        play_side_by_side(python_copy, copied, np.random.default_rng(5), check_every=5)
    # The copies did not touch the original.
    assert_same_state(python, compiled)
    assert compiled.prefix_hit_tokens == python.prefix_hit_tokens
    if caching:
        assert compiled.prefix_hit_tokens > 0
        play_side_by_side(python, compiled, rng)


def test_decisions_are_refused_as_by_the_python_server():
    w = make_workload([0.0, 10.0], [10, 10], [2, 2])
    s = CompiledIterationServer(
        w, n_gpus=1, latency=PROFILED, kv_capacity_tokens=1000, max_tokens=64, max_sequences=4,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="no scheduling decision is due"):
        s.run_iteration(1, 1, 1)
    with pytest.raises(RuntimeError, match="no scheduling decision is due"):
        s.wait()
    assert s.advance()
    s.run_iteration(0, 64, 1)
    while s.advance():
        s.run_iteration(10, 64, 1)
    assert s.done and not s.can_wait()


def test_wait_that_would_deadlock_is_refused():
    w = make_workload([0.0], [10], [3])
    s = CompiledIterationServer(
        w, n_gpus=1, latency=PROFILED, kv_capacity_tokens=1000, max_tokens=64, max_sequences=4,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    assert s.advance()
    with pytest.raises(RuntimeError, match="WAIT would deadlock"):
        s.wait()


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (dict(prefix_caching=True), "prefix_caching=True needs kv_allocation='paged'"),
        (dict(max_sequences=0), "max_sequences must be >= 1"),
        (dict(chunk_size=0), "chunk_size must be >= 1 or None"),
        (dict(n_gpus=0), "n_gpus must be a positive integer"),
        (dict(tbt_target_s=-1.0), "tbt_target_s must be positive or None"),
    ],
)
def test_bad_settings_are_named(settings, match):
    args = dict(
        n_gpus=1, latency=PROFILED, kv_capacity_tokens=1000, max_tokens=64, max_sequences=4,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    args.update(settings)
    with pytest.raises(ValueError, match=match):
        CompiledIterationServer(make_workload([0.0], [10], [3]), **args)


def test_a_latency_without_a_valid_time_raises_its_own_error():
    class Broken(AffineIterationLatency):
        def compiled_timing(self):
            return None  # timed in Python

        def iteration_s(self, *args, **kwargs):
            raise ValueError("Broken: no valid time for this iteration")

    s = CompiledIterationServer(
        make_workload([0.0], [10], [3]), n_gpus=1, latency=Broken(c_s=0.01, a_s_per_token=0.0),
        kv_capacity_tokens=1000, max_tokens=64, max_sequences=4, rng=np.random.default_rng(0),
    )  # fmt: skip
    assert s.advance()
    with pytest.raises(ValueError, match="Broken: no valid time"):
        s.run_iteration(0, 64, 1)


def test_questions_refuse_a_gpu_out_of_range_and_take_no_limit():
    """The kernels check no bounds: a GPU out of range is refused before, as a list would."""
    w = make_workload([0.0, 0.0, 0.0], [10, 20, 30], [2, 2, 2])
    python, compiled = _pair(w, latency=PROFILED, n_gpus=2, kv_capacity_tokens=1000,
                             max_tokens=64, chunk_size=8)  # fmt: skip
    assert python.advance() and compiled.advance()
    for server in (python, compiled):
        with pytest.raises(IndexError):
            server.can_admit(7)
    assert compiled.can_admit(-1) == python.can_admit(-1)
    inf = float("inf")
    assert compiled.plan_prefill(0, inf, inf) == python.plan_prefill(0, inf, inf)
    assert compiled.prefill_allowed(0, inf, False) == python.prefill_allowed(0, inf, False)
    assert compiled.prefill_progresses(0, inf) == python.prefill_progresses(0, inf)
