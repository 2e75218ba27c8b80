"""Rules of the iteration-level baselines: the exact action in given states, and valid episodes."""

import warnings

import gymnasium as gym
import numpy as np
import pytest

import llmsched_env  # noqa: F401  (registers the env ids)
from baselines import make_policy, policy_names
from baselines.continuous import (
    POLICIES,
    Hybrid,
    PrefillPrioritizingK,
    RunToCompletion,
    SarathiStyle,
)
from llmsched_env.envs.continuous_action import ContinuousActionCodec
from llmsched_env.sim import RejectReason
from llmsched_env.sim.iteration_planning import PrefillPlan

ENV_ID = "llmsched/ContinuousBatching-v0"
SMALL = dict(workload="demo2", latency="demo2", arrival_rate=4.0, n_requests=40)


def make_env(**kwargs):
    args = {**SMALL, "invalid_action": "raise", **kwargs}
    return gym.make(ENV_ID, **args)


def fake_info(
    env,
    *,
    running=0,
    waiting=(),
    prefilling=(),
    prefill_remaining=0,
    can_prefill=None,
    largest_alone=None,
):
    """A decision's info as the env documents it, for a hand-made state of the deciding GPU.

    ``waiting`` lists the prompt tokens of the waiting prompts; the env's dry run of a prefill
    level (``prefill_plan``) is replaced by the FIFO plan of whole prompts within its budget,
    and its joint rule (``action_allowed``) by the mask's, except that a prefill-only action
    above level ``largest_alone`` (when given) is forbidden, as paged KV memory can make it.
    """
    cfg = env.unwrapped.config
    d, p, c = cfg.decode_levels, cfg.prefill_levels, len(cfg.prompt_caps)
    if can_prefill is None:
        can_prefill = bool(waiting) or bool(prefilling)

    def prefill_plan(level, cap_level):
        budget, used, admitted = env.unwrapped.action_codec.prefill_budget(level, 0), 0, 0
        for tokens in waiting:
            if used + tokens > budget or running + admitted >= cfg.max_sequences:
                break
            used, admitted = used + tokens, admitted + 1
        return PrefillPlan(used, 0, admitted)

    env.unwrapped.prefill_plan = prefill_plan

    def action_allowed(action):
        decode, prefill, _ = (int(v) for v in action)
        if decode > 0:
            return running > 0 and (prefill == 0 or can_prefill)
        if prefill == 0:
            return True  # WAIT: something is in flight in these states
        return can_prefill and (largest_alone is None or prefill <= largest_alone)

    env.unwrapped.action_allowed = action_allowed
    mask = np.zeros(d + p + c, dtype=bool)
    mask[0] = True
    mask[1:d] = running > 0
    mask[d] = True
    mask[d + 1 : d + p] = can_prefill
    mask[d + p :] = True
    return {
        "gpu": 0,
        "n_running": np.array([running]),
        "prefill_remaining_tokens": prefill_remaining if prefilling else 0,
        "action_mask": mask,
    }


def act(policy, info):
    return policy.act(np.zeros(1), info).tolist()


def test_registry_names_and_lookup():
    assert policy_names("continuous") == list(POLICIES)
    assert set(POLICIES) >= {
        "run-to-completion",
        "prefill-k4",
        "decode-first",
        "prefill-first",
        "hybrid",
        "vllm",
        "sarathi",
        "random",
    }
    env = make_env()
    assert make_policy("prefill-k4", env).name == "prefill-k4"
    assert make_policy("hybrid", env, decode_share=0.25).name == "hybrid-0.25"
    with pytest.raises(ValueError, match="Did you mean 'decode-first'"):
        make_policy("decode-frist", env)


# Default levels: D = P = 5, caps (1, 2, 4, 8, 16, 0) -> cap level 0 is 1 prompt, 2 is 4, 5 none.
def test_run_to_completion_actions():
    env = make_env(chunk_size=None)
    rtc = make_policy("run-to-completion", env)
    assert act(rtc, fake_info(env, running=1, waiting=[32, 32])) == [4, 0, 1]
    assert act(rtc, fake_info(env, waiting=[32, 32])) == [0, 4, 1]


def test_run_to_completion_continues_a_chunk_without_admitting():
    env = make_env(chunk_size=64, max_tokens=256)  # level budgets 0, 64, 128, 192, 256
    rtc = make_policy("run-to-completion", env)
    info = fake_info(env, waiting=[32], prefilling=[0], prefill_remaining=448)
    assert act(rtc, info) == [0, 1, 1]  # exactly one 64-token chunk: the budget is used up
    assert rtc.n_overlaps == 0
    info = fake_info(env, waiting=[32], prefilling=[0], prefill_remaining=20)
    with pytest.warns(UserWarning, match="chunk_size=None"):
        assert act(rtc, info) == [0, 1, 1]
    assert rtc.n_overlaps == 1


def test_prefill_k_actions_and_cap_check():
    env = make_env()
    b4 = make_policy("prefill-k4", env)
    assert act(b4, fake_info(env, running=3, waiting=[32] * 6)) == [0, 4, 3]
    assert act(b4, fake_info(env, running=3)) == [4, 0, 3]
    # Prompts wait but the GPU cannot admit them (sequence limit or KV): decode.
    assert act(b4, fake_info(env, running=3, waiting=[32], can_prefill=False)) == [4, 0, 3]
    with pytest.raises(ValueError, match=r"prompt cap of 3 is not one of .*prompt_caps"):
        PrefillPrioritizingK(env, k=3)
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        PrefillPrioritizingK(env, k=0)
    with pytest.raises(ValueError, match="prompt cap of 1"):
        RunToCompletion(make_env(prompt_caps=(2, 0, None)))


def test_a_prefill_alone_the_joint_rule_forbids_takes_the_largest_allowed_level():
    """Paged KV: the mask allows the whole budget beside decodes, not always without them."""
    env = make_env()
    b4 = make_policy("prefill-k4", env)
    pf = make_policy("prefill-first", env)
    state = dict(running=3, waiting=[32] * 6)
    assert act(b4, fake_info(env, **state, largest_alone=2)) == [0, 2, 3]
    assert act(pf, fake_info(env, **state, largest_alone=1)) == [0, 1, 6]
    # No level forms an iteration without decodes: decode every running sequence, or WAIT.
    assert act(b4, fake_info(env, **state, largest_alone=0)) == [4, 0, 3]
    assert act(pf, fake_info(env, waiting=[32], largest_alone=0)) == [0, 0, 6]


def test_decode_first_and_prefill_first_actions():
    env = make_env()
    df = make_policy("decode-first", env)
    pf = make_policy("prefill-first", env)
    assert act(df, fake_info(env, running=5, waiting=[32])) == [4, 0, 6]
    assert act(df, fake_info(env, waiting=[32])) == [0, 4, 6]
    assert act(pf, fake_info(env, running=5, waiting=[32])) == [0, 4, 6]
    assert act(pf, fake_info(env, running=5)) == [4, 0, 6]


def test_hybrid_maps_the_decode_share_onto_the_nearest_level():
    env = make_env(max_sequences=256)
    hybrid = make_policy("hybrid", env)  # r = 0.5: 128 decode slots
    assert act(hybrid, fake_info(env, running=100, waiting=[32])) == [4, 4, 6]  # exact
    # 200 running: levels decode 0, 50, 100, 150, 200; 150 is nearest to 128.
    assert act(hybrid, fake_info(env, running=200, waiting=[32])) == [3, 4, 6]
    assert act(hybrid, fake_info(env, running=200)) == [3, 0, 6]
    for bad in (0.0, 1.5, 0.001, "half"):
        with pytest.raises(ValueError, match="decode_share must be"):
            Hybrid(env, decode_share=bad)


def test_vllm_gives_prefill_the_budget_first():
    env = make_env(max_tokens=2048, max_sequences=1000, chunk_size=None)
    vllm = make_policy("vllm", env)
    # 1900 prompt tokens fit (the 200-token prompt does not): 148 tokens left for 100 decodes.
    info = fake_info(env, running=100, waiting=[1000, 900, 200])
    assert act(vllm, info) == [4, 4, 6]
    # 300 running and 148 left: levels decode 75, 150, ...; 75 is the largest that fits.
    assert act(vllm, fake_info(env, running=300, waiting=[1000, 900, 200])) == [1, 4, 6]
    assert act(vllm, fake_info(env, running=300, waiting=[2000])) == [0, 4, 6]
    assert act(vllm, fake_info(env, running=300)) == [4, 0, 6]
    assert act(vllm, fake_info(env, waiting=[100])) == [0, 4, 6]
    # No free sequence slot: nothing can be admitted, so everything decodes.
    assert act(vllm, fake_info(env, running=1000, waiting=[100])) == [4, 0, 6]


def test_sarathi_decodes_all_and_fills_with_chunks():
    env = make_env(chunk_size=64)
    sarathi = make_policy("sarathi", env)
    assert act(sarathi, fake_info(env, running=7, waiting=[512])) == [4, 4, 6]
    assert act(sarathi, fake_info(env, running=7)) == [4, 0, 6]
    assert act(sarathi, fake_info(env, waiting=[512])) == [0, 4, 6]
    with pytest.warns(UserWarning, match="no prefill chunks"):
        SarathiStyle(make_env(chunk_size=None))


def test_level_helpers():
    codec = ContinuousActionCodec(5, 5, (1, 0), 2048)
    assert [codec.decode_count(v, 7) for v in range(5)] == [0, 2, 4, 6, 7]
    assert codec.nearest_decode_level(0, 10) == 0
    assert codec.nearest_decode_level(1000, 1) == 1  # never starves the decodes
    assert codec.largest_decode_level_within(8, 8) == 4


def test_policies_share_the_env_codec():
    env = make_env(max_tokens=1000, prefill_levels=3)
    policy = make_policy("hybrid", env)
    assert policy.codec is env.unwrapped.action_codec
    assert policy.level_budget(1) == 500 == env.unwrapped.action_codec.prefill_budget(1, 0)


def test_vllm_plans_with_the_env_dry_run_and_the_env_agrees():
    """In a real episode, the prefill the policy plans is what the iteration prefills."""
    env = make_env(chunk_size=64, max_tokens=256)
    vllm = make_policy("vllm", env)
    obs, info = env.reset(seed=0)
    server = env.unwrapped.server
    checked = 0
    done = False
    while not done:
        action = vllm.act(obs, info)
        planned = env.unwrapped.prefill_plan(int(action[1]), int(action[2])).tokens
        before = server.prefill_tokens_processed
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        if action[1] == vllm.prefill_levels - 1:
            assert server.prefill_tokens_processed - before == planned
            checked += 1
    assert checked > 10


def test_vllm_with_paged_memory_decodes_in_what_the_runnable_prefill_leaves():
    # The whole budget's prefill alone can lack blocks while a smaller level's does: vllm then
    # prefilled that smaller level and decoded nothing, with budget left for every decode.
    env = gym.make(
        "llmsched/ContinuousBatching-v0",
        n_requests=150,
        kv_allocation="paged",
        kv_memory=15_000,
        load=0.8,
        chunk_size=2048,
    )
    vllm = make_policy("vllm", env)
    obs, info = env.reset(seed=0)
    u = env.unwrapped
    smaller_levels = 0
    while True:
        action = vllm.act(obs, info)
        running = u.server.running[u.server.decision_gpu].size
        if action[1] > 0:
            planned = u.prefill_plan(int(action[1]), int(action[2])).tokens
            smaller_levels += int(action[1]) < vllm.prefill_levels - 1
            if running and planned + running <= u.config.max_tokens:
                assert action[0] == vllm.decode_levels - 1  # every running sequence decodes
        obs, _, terminated, truncated, info = env.step(action)
        assert not info["invalid_action"]
        if terminated or truncated:
            break
    assert smaller_levels > 0  # the case arose


def test_policies_need_the_continuous_env():
    env = gym.make("llmsched/BatchScheduling-v0", workload="demo2", arrival_rate=2.0)
    with pytest.raises(TypeError, match="ContinuousBatching-v0"):
        RunToCompletion(env)


def run_to_end(name, env, seed=0):
    policy = make_policy(name, env)
    obs, info = env.reset(seed=seed)
    policy.reset()
    infos = [info]
    terminated = False
    for _ in range(200_000):
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        infos.append(info)
        if terminated or truncated:
            break
    assert terminated, f"{name} did not finish the episode"
    return infos


CONFIGS = {
    "whole prompts": dict(chunk_size=None),
    "chunked 64": dict(chunk_size=64, max_tokens=256),
    "2 gpus, small limits": dict(n_gpus=2, max_sequences=8, max_tokens=512, chunk_size=None),
    # The whole budget's first chunk often cannot get its blocks while a smaller one can: the
    # per-component mask allows the level, the joint rule forbids it without decodes.
    "paged, little KV": dict(kv_allocation="paged", kv_memory=1500, max_tokens=1024),
}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", list(POLICIES))
def test_every_policy_acts_within_the_mask_and_finishes(name, config):
    """With invalid_action="raise" any masked action fails; every request ends completed or
    rejected with a reason (here none: every prompt fits)."""
    env = make_env(**CONFIGS[config])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        infos = run_to_end(name, env)
    assert all(not i["invalid_action"] for i in infos)
    metrics = infos[-1]["episode_metrics"]
    assert metrics["completed"] == SMALL["n_requests"]


def test_run_to_completion_holds_one_job_per_gpu():
    for config in ("whole prompts", "chunked 64", "2 gpus, small limits"):
        env = make_env(**CONFIGS[config])
        policy = make_policy("run-to-completion", env)
        obs, info = env.reset(seed=0)
        done = False
        while not done:
            snapshot = env.unwrapped.queue_snapshot()
            assert snapshot.running.size + len(snapshot.prefilling) <= 1, config
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
            done = terminated or truncated


@pytest.mark.parametrize("name", list(POLICIES))
def test_prompts_longer_than_the_budget_are_chunked_or_rejected_never_deadlock(name):
    """demo2 has 512-token prompts; with a 256-token budget they are rejected with a reason when
    prompts are prefilled whole, and served in chunks otherwise (decode-first included: the
    reference simulator deadlocks there)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        whole = run_to_end(name, make_env(max_tokens=256, chunk_size=None), seed=3)
        chunked = run_to_end(name, make_env(max_tokens=256, chunk_size=64), seed=3)
    m_whole, m_chunked = whole[-1]["episode_metrics"], chunked[-1]["episode_metrics"]
    assert m_whole["rejected"] > 0
    assert m_whole["completed"] + m_whole["rejected"] == SMALL["n_requests"]
    assert m_chunked["completed"] == SMALL["n_requests"]


def test_rejections_name_their_reason():
    env = make_env(max_tokens=256, chunk_size=None)
    run_to_end("decode-first", env, seed=3)
    s = env.unwrapped.server
    rejected = s.records.reject_reason != RejectReason.NONE
    assert np.all(s.workload.prompt_tokens[rejected] > 256)
    assert np.all(s.records.reject_reason[rejected] == RejectReason.PROMPT_EXCEEDS_TOKEN_BUDGET)


def test_random_is_reproducible_and_uniform_over_the_joint_mask():
    env = make_env()
    first = [i["applied_action"].tolist() for i in run_to_end("random", env, seed=1)[1:]]
    second = [i["applied_action"].tolist() for i in run_to_end("random", env, seed=1)[1:]]
    assert first == second
    env.reset(seed=2)
    policy = make_policy("random", env, seed=5)
    mask = env.unwrapped.joint_action_mask()
    draws = [tuple(policy.act(np.zeros(1), {})) for _ in range(2000)]
    assert all(mask[d] for d in draws)
    counts = np.array([draws.count(tuple(a)) for a in np.argwhere(mask)])
    assert counts.min() > 0.5 * counts.mean()  # every allowed action is drawn about equally


@pytest.mark.parametrize(
    ("kwargs", "named", "not_named"),
    [
        ({"kv_allocation": "paged", "chunk_size": None}, "chunk_size=None", "kv_allocation"),
        ({"chunk_size": 2048}, "kv_allocation='reserve'", "chunk_size="),
    ],
)
def test_vllm_v1_warns_only_of_the_settings_that_differ(kwargs, named, not_named):
    env = gym.make("llmsched/ContinuousBatching-v0", n_requests=20, **kwargs)
    with pytest.warns(UserWarning, match="differs from vLLM V1") as caught:
        make_policy("vllm-v1", env)
    message = str(caught[0].message).split(";")[0]
    assert named in message and not_named not in message
