"""Heuristic scheduling policies (the paper schedulers) over the llmsched environments.

Every policy implements :class:`~baselines.base.Policy`: ``from_env(env)``, ``reset()`` and
``act(obs, info)``. ``make_policy(name, env)`` builds one by name; ``policy_names("batch")`` and
``policy_names("continuous")`` list them.
"""

from baselines.base import Policy
from baselines.registry import POLICY_TABLES, env_kind, make_policy, policy_names

__all__ = ["POLICY_TABLES", "Policy", "env_kind", "make_policy", "policy_names"]
