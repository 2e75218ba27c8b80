"""Heuristic scheduling policies (the paper schedulers) over the llmsched environments.

Every policy implements :class:`~baselines.base.Policy`: ``from_env(env)``, ``reset()`` and
``act(obs, info)``. ``make_policy(name, env)`` builds one by name, or by a setting such as
``"length-split(threshold_tokens=1024,long_replicas=2)"``; ``policy_names("batch")`` and
``policy_names("continuous")`` list them.
"""

from baselines.base import Policy
from baselines.registry import (
    POLICY_TABLES,
    check_policies,
    env_kind,
    make_policy,
    parse_policy,
    policy_names,
    split_policies,
)

__all__ = [
    "POLICY_TABLES",
    "Policy",
    "check_policies",
    "env_kind",
    "make_policy",
    "parse_policy",
    "policy_names",
    "split_policies",
]
