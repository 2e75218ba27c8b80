"""The vllm-v1 baseline on a hand-worked schedule with a preemption, and its configuration check.

Three requests arrive at t = 0: R0, R1, R2 with prompts of 6, 5, 3 tokens and outputs of 5, 4, 2
tokens. The env is paged with blocks of B = 4 tokens and 16 tokens of memory (4 blocks),
max_tokens = chunk_size = 8, and every iteration takes ``1 + 0.25 * tokens`` seconds. vLLM V1
decodes every running request, then admits waiting ones into the rest of the 8-token budget
(chunks, first come first served). "c" is a request's computed tokens (KV); blocks are (R0, R1, R2)
after scheduling.

* t = 0: admit R0 (6 tokens, 2 blocks) and R1 (2 of its 5, 1 block); 8 tokens; blocks (2, 1, 0);
  ends at 3.
* t = 3: R0's first token. Decode R0 (c 6 -> 7, 2 blocks), R1's last 3 tokens (c 5, 2 blocks);
  no block is left for R2; 4 tokens; (2, 2, 0); ends at 5.
* t = 5: R1's first token. Decode R0 (c 7 -> 8) and R1 (c 5 -> 6): no new block; still none for
  R2; 2 tokens; (2, 2, 0); ends at 6.5.
* t = 6.5: R0 needs a third block (c 8 -> 9) and none is free: the most recently admitted, R1, is
  preempted (its 6 computed tokens discarded; it goes to the queue's front with 5 + 2 = 7 tokens
  to recompute). No admission in a step with a preemption. Decode R0; (3, 0, 0); ends at 7.75.
* t = 7.75: decode R0 (c 9 -> 10, 3 blocks). The head, R1, needs 2 blocks for its 7 tokens and
  one is free: head-of-line blocking (R2 waits too); (3, 0, 0); ends at 9.
* t = 9: R0 completes (5 tokens) and frees its blocks. Admit R1 (7 tokens, 2 blocks) and R2
  (1 of 3 tokens, 1 block); 8 tokens; (0, 2, 1); ends at 12.
* t = 12: R1's recomputation emits its third token (gap 12 - 6.5 = 5.5 s). Decode R1 (c 7 -> 8,
  2 blocks), R2's last 2 tokens (c 3, 1 block); 3 tokens; (0, 2, 1); ends at 13.75.
* t = 13.75: R1 completes (4 tokens); R2's first token. Decode R2; ends at 15: R2 completes.
"""

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401  (registers the env ids)
from baselines import make_policy
from baselines.continuous import VLLMV1
from llmsched_env.latency import AffineIterationLatency
from tests.conftest import make_workload

ENV_ID = "llmsched/ContinuousBatching-v0"


def paged_env(**kwargs):
    args = dict(
        workload="demo2",
        arrival_rate=1.0,
        latency=AffineIterationLatency(c_s=1.0, a_s_per_token=0.25),
        kv_memory=16,
        kv_allocation="paged",
        kv_block_tokens=4,
        max_tokens=8,
        chunk_size=8,
        ttft_sla=100.0,
        tbt_sla=100.0,
        invalid_action="raise",
    )
    return gym.make(ENV_ID, **{**args, **kwargs})


def test_vllm_v1_follows_the_hand_worked_schedule():
    env = paged_env()
    policy = make_policy("vllm-v1", env)
    assert isinstance(policy, VLLMV1)
    w = make_workload([0.0, 0.0, 0.0], [6, 5, 3], [5, 4, 2])
    obs, info = env.reset(seed=0, options={"workload": w})
    server = env.unwrapped.server
    times, waiting, blocks = [], [], []
    while True:
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        assert not info["invalid_action"]
        if terminated or truncated:
            break
        times.append(server.now)
        waiting.append(env.unwrapped.queue_snapshot().waiting().tolist())
        blocks.append(list(server.request_blocks))  # at the decision: before scheduling
    assert times == [3.0, 5.0, 6.5, 7.75, 9.0, 12.0, 13.75]
    assert waiting == [[2], [2], [2], [1, 2], [1, 2], [], []]
    # Blocks at each decision are those scheduled at the previous one, less what completed.
    assert blocks == [[2, 1, 0], [2, 2, 0], [2, 2, 0], [3, 0, 0], [0, 0, 0], [0, 2, 1], [0, 0, 1]]
    r = server.records
    np.testing.assert_array_equal(r.first_token_s, [3.0, 5.0, 13.75])
    np.testing.assert_array_equal(r.completion_s, [9.0, 13.75, 15.0])
    assert r.preemptions.tolist() == [0, 1, 0]
    assert r.recomputed_tokens.tolist() == [0, 6, 0]
    np.testing.assert_array_equal(r.max_token_gap_s, [2.0, 5.5, 1.25])
    metrics = info["episode_metrics"]
    assert metrics["preemptions"] == 1 and metrics["recomputed_tokens"] == 6
    assert server.blocks_used == [0]


@pytest.mark.parametrize(
    "kwargs", [{"kv_allocation": "reserve"}, {"chunk_size": 4}, {"chunk_size": None}], ids=str
)
def test_vllm_v1_warns_when_the_env_is_not_paged_with_budget_sized_chunks(kwargs):
    with pytest.warns(UserWarning, match="kv_allocation='paged' and chunk_size=max_tokens"):
        make_policy("vllm-v1", paged_env(**kwargs))
