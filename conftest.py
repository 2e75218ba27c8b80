"""Collection of the docstring examples outside ``tests/`` (``baselines/``, ``agents/``).

The agent example loads the shipped model, which needs the optional ``agents`` extra
(stable-baselines3, sb3-contrib, torch); without it that module's examples are not collected,
as ``tests/agents`` is skipped then.
"""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("sb3_contrib") else ["agents/policy.py"]
