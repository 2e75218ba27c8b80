"""The compiled BatchScheduling-v0 observation against a plain Python statement of it."""

import math
import random
from bisect import bisect_left, bisect_right

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401
from llmsched_env.envs.batch_observation import (
    BIN_FEATURES,
    GLOBAL_FEATURES,
    OBSERVATION_STATE,
    _bin_features,
    _prefix_sums,
    feature_bounds,
    feature_names,
)
from llmsched_env.sim.batch_state import state_view


class ReferenceObservation:
    """The observation of the env docstring, in Python, one decision at a time."""

    def __init__(self, env):
        u = env.unwrapped
        s = u.server
        self.env = u
        self.sla = u.config.sla
        self.max_batch = u.config.max_batch_size
        self.skip_late = u.config.dispatch_order == "oldest-in-time"
        self.arrival = s.workload.arrival_s.tolist()
        self.service = [float(x) for x in u.bin_service_s]
        self.next_chance = float(np.mean(u.bin_service_s))
        self.ema = [0.0, 0.0]
        self.last = (0, 0, 0.0)

    def __call__(self):
        u = self.env
        s = u.server
        now, sla, max_batch = s.now, self.sla, self.max_batch
        misses, on_time, last_t = self.last
        decay = math.exp(-(now - last_t) / sla)
        self.ema = [
            self.ema[0] * decay + (s.sla_misses - misses),
            self.ema[1] * decay + (s.n_on_time - on_time),
        ]
        self.last = (s.sla_misses, s.n_on_time, now)
        total = sum(self.ema)
        violation_rate = self.ema[0] / total if total > 0 else 0.0
        # Per position, from the current order (dispatches may reorder positions).
        w, order = s.workload, s.order
        arrival = w.arrival_s[order].tolist()
        predicted = w.predicted_output_tokens[order].astype(np.float64)
        pred = [0.0, *np.cumsum(predicted).tolist()]
        need_sums = [0.0, *np.cumsum(predicted + w.prompt_tokens[order]).tolist()]
        values = []
        for h, t, service in zip(s.head, s.tail, self.service):
            q = t - h
            if q == 0:
                values += [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
                continue
            wait = now - arrival[h]
            # Late once arrival + sla <= now (the miss test), as a key on the arrivals.
            late = bisect_right(arrival, now, h, t, key=lambda a: a + sla) - h
            doom_before = now + service - sla
            doomed = bisect_left(arrival, doom_before, h + late, t) - h
            at_risk = bisect_left(arrival, doom_before + self.next_chance, h + doomed, t)
            at_risk -= h + doomed
            need = (need_sums[t] - need_sums[h]) / q * min(q, max_batch)
            first_wait, next_batch, next_doomed = wait, min(q, max_batch), doomed
            if self.skip_late and late < q:  # the next batch starts at the oldest in time
                first_wait = now - arrival[h + late]
                next_batch, next_doomed = min(q - late, max_batch), doomed - late
            values += [
                q / max_batch,
                wait / sla,
                (sla - first_wait - service) / sla,
                late / q,
                doomed / q,
                max(next_batch - next_doomed, 0) / max_batch,
                at_risk / max_batch,
                (pred[t] - pred[h]) / q / u.length_scale_tokens,
                min(1.0, s.kv_capacity_tokens / max(need, 1.0)),
            ]
        values += [(f - now) / sla if b else 0.0 for f, b in zip(s.gpu_free_at, s.gpu_busy)]
        recent = s.n_arrived - bisect_right(self.arrival, now - sla, 0, s.n_arrived)
        values += [
            recent / sla / u.capacity_rps,
            violation_rate,
            s.n_arrived / s.n_requests,
            s.n_waiting / max_batch,
        ]
        low, high = feature_bounds(s.n_queues, s.n_gpus)
        return np.clip(np.array(values, dtype=np.float32), low, high)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"n_gpus": 4, "load": 1.5, "n_bins": 3},
        {"sla": 4.0, "max_batch_size": 16},
        {"load": 2.0, "sla": 4.0, "dispatch_order": "oldest-in-time"},
    ],
)
def test_observation_is_the_python_statement_bit_for_bit(kwargs):
    env = gym.make("llmsched/BatchScheduling-v0", n_requests=300, **kwargs)
    rng = random.Random(0)
    for seed in range(2):
        obs, _ = env.reset(seed=seed)
        reference = ReferenceObservation(env)
        np.testing.assert_array_equal(obs, reference())
        done = False
        while not done:
            mask = env.unwrapped.joint_action_mask()
            action = rng.choice(np.argwhere(mask).tolist())
            obs, _, terminated, truncated, _ = env.step(np.array(action))
            np.testing.assert_array_equal(obs, reference())
            done = terminated or truncated


def test_prefix_sums_are_cumulative_sums_along_the_positions():
    order = np.array([2, 0, 1], dtype=np.int64)
    predicted = np.array([5, 7, 11], dtype=np.int64)
    prompt = np.array([100, 200, 300], dtype=np.int64)
    predicted_cumsum, need_cumsum = np.full(4, -1.0), np.full(4, -1.0)
    _prefix_sums(predicted_cumsum, need_cumsum, order, predicted, prompt, 0, 3)
    assert predicted_cumsum.tolist() == [0.0, 11.0, 16.0, 23.0]
    assert need_cumsum.tolist() == [0.0, 311.0, 416.0, 623.0]
    # Positions 1 and 2 swap requests: only the sum that ends between them changes.
    order[1:3] = [1, 0]
    _prefix_sums(predicted_cumsum, need_cumsum, order, predicted, prompt, 1, 3)
    assert predicted_cumsum.tolist() == [0.0, 11.0, 18.0, 23.0]
    assert need_cumsum.tolist() == [0.0, 311.0, 518.0, 623.0]


def test_a_bin_has_as_many_computed_entries_as_feature_names():
    env = gym.make("llmsched/BatchScheduling-v0", n_requests=50, n_bins=2)
    env.reset(seed=0)
    u = env.unwrapped
    own = u._observer._state
    server = u.server
    for j in range(2):
        features = _bin_features(
            OBSERVATION_STATE.view(*u._observer._buffers), state_view(*server.buffers), j
        )
        assert len(features) == len(BIN_FEATURES)
    assert own.n_gpus[0] == server.n_gpus


def test_names_and_bounds_follow_the_feature_tables():
    names = feature_names(2, 3)
    low, high = feature_bounds(2, 3)
    assert len(names) == len(low) == len(high) == 2 * len(BIN_FEATURES) + 3 + len(GLOBAL_FEATURES)
    assert names[0] == "bin0/queue_len" and names[-1] == GLOBAL_FEATURES[-1][0]
    assert (low < high).all()
