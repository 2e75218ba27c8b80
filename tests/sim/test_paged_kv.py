"""Block counting and vLLM V1's preemption order (pure functions of llmsched_env.sim.paged_kv)."""

import numpy as np

from llmsched_env.sim.paged_kv import (
    allocate_in_admission_order,
    blocks_for,
    decode_rows_needing_block,
)


def test_blocks_round_up():
    assert [blocks_for(t, 16) for t in (0, 1, 16, 17, 32)] == [0, 1, 1, 2, 2]


def test_a_decode_needs_a_block_when_its_computed_tokens_fill_whole_blocks():
    prompt = np.array([4.0, 4.0, 3.0, 8.0])
    generated = np.array([1.0, 2.0, 2.0, 5.0])  # computed: 4, 5, 4, 12
    assert decode_rows_needing_block(prompt, generated, 4, 4).tolist() == [0, 2, 3]
    assert decode_rows_needing_block(prompt, generated, 2, 4).tolist() == [0]


def test_enough_free_blocks_preempt_nothing():
    held = [1, 1, 0]
    assert allocate_in_admission_order([0, 1], [1, 2], [0, 1, 2], held, 3) == (2, [], 0)
    assert held == [2, 3, 0]


def test_the_most_recent_requests_are_preempted_until_the_blocks_are_free():
    held = [2, 1, 1, 1]
    # Request 0 needs 2 blocks, none free: 3 then 2 are preempted; 1 is then served for free.
    served, victims, free = allocate_in_admission_order([0, 1], [2, 0], [0, 1, 2, 3], held, 0)
    assert (served, victims, free) == (2, [3, 2], 0)
    assert held[0] == 4


def test_a_request_that_must_preempt_itself_stops_the_scheduling():
    held = [3, 1]
    served, victims, free = allocate_in_admission_order([1], [1], [0, 1], held, 0)
    assert (served, victims, free) == (0, [1], 1)


def test_a_request_preempted_for_an_older_one_is_not_served():
    held = [1, 1, 1]
    served, victims, _ = allocate_in_admission_order([0, 2], [2, 0], [0, 1, 2], held, 0)
    assert served == 1 and victims == [2, 1]
