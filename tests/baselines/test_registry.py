"""Baseline names and settings (a name with keyword arguments) and how they are built."""

from __future__ import annotations

import gymnasium as gym
import pytest

import llmsched_env  # noqa: F401  (registers the env ids)
from baselines import check_policies, make_policy, parse_policy, split_policies

ROUTING = "llmsched/Routing-v0"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("vllm", ("vllm", {})),
        (" length-split ", ("length-split", {})),
        ("length-split()", ("length-split", {})),
        (
            "length-split( threshold_tokens = 1024 , long_replicas=2 )",
            ("length-split", {"threshold_tokens": 1024, "long_replicas": 2}),
        ),
        (
            'x(a=1.5,b=true,c=null,d="w, v",e=[1,2])',
            ("x", {"a": 1.5, "b": True, "c": None, "d": "w, v", "e": [1, 2]}),
        ),
    ],
)
def test_a_setting_is_a_name_and_json_keyword_arguments(spec, expected):
    assert parse_policy(spec) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("length-split(long_replicas=2", "is not of the form NAME or NAME"),
        ("", "is not of the form"),
        ("length-split(2)", "argument '2' is not key=value"),
        ("length-split(long_replicas=two)", "the value of long_replicas is 'two', not a JSON"),
    ],
)
def test_a_malformed_setting_is_named(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_policy(spec)


def test_a_list_of_baselines_keeps_the_commas_of_settings():
    assert split_policies(" vllm, length-split(threshold_tokens=1024,long_replicas=2),,x ") == [
        "vllm",
        "length-split(threshold_tokens=1024,long_replicas=2)",
        "x",
    ]
    assert split_policies('a(d="p,q\\",r"),b, c(e=[1,2])') == ['a(d="p,q\\",r")', "b", "c(e=[1,2])"]


def test_a_setting_builds_the_baseline_with_its_arguments():
    env = gym.make(ROUTING, n_replicas=4)
    setting = "length-split(threshold_tokens=1024,long_replicas=2)"
    tuned = make_policy(setting, env)
    default = make_policy("length-split", env)
    assert (tuned.threshold_tokens, tuned.long_replicas) == (1024, 2)
    assert (default.threshold_tokens, default.long_replicas) == (2048, 1)
    # Keyword arguments of the call are merged over the setting's.
    merged = make_policy(setting, env, long_replicas=3)
    assert (merged.threshold_tokens, merged.long_replicas) == (1024, 3)


def test_a_setting_the_baseline_refuses_is_named():
    env = gym.make(ROUTING, n_replicas=4)
    with pytest.raises(ValueError, match=r"length-split does not take the arguments \{'x': 1\}"):
        make_policy("length-split(x=1)", env)
    with pytest.raises(ValueError, match=r"long_replicas must be an integer in \[1, 3\], got 9"):
        make_policy("length-split(long_replicas=9)", env)
    # An argument the baseline takes, of the wrong type: named as such (it crashed mid-episode).
    with pytest.raises(ValueError, match=r"d must be an integer >= 1, got True") as refused:
        make_policy("power-of-two(d=true)", env)
    assert "does not take" not in str(refused.value)
    with pytest.raises(ValueError, match="gives threshold_tokens twice"):
        make_policy("length-split(threshold_tokens=1024,threshold_tokens=5)", env)
    with pytest.raises(ValueError, match="Did you mean 'length-split'"):
        make_policy("lenght-split(long_replicas=2)", env)


def test_check_policies_names_the_unknown_baseline():
    check_policies("routing", ["length-split(long_replicas=2)", "random"])
    with pytest.raises(ValueError, match="unknown routing policy 'edf'"):
        check_policies("routing", ["random", "edf(x=1)"])
