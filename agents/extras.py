"""The optional dependencies of :mod:`agents`, imported in one place with a clear error.

The environments and baselines need only gymnasium, numpy and pandas; training and running
agents also needs the ``agents`` extra (stable-baselines3, sb3-contrib, torch, tqdm, rich).
Modules of :mod:`agents` import those packages through :func:`require_agents_extra`, so a
missing extra fails with one message that says how to install it instead of a bare
``ModuleNotFoundError`` from deep inside a call.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Packages of the ``agents`` extra that training and loading agents import.
REQUIRED_MODULES = ("stable_baselines3", "sb3_contrib", "torch")

INSTALL_HINT = "pip install 'llmsched-env[agents]'"


class AgentsExtraMissingError(ImportError):
    """Raised when a package of the ``agents`` extra is not installed."""


def require_agents_extra() -> dict[str, ModuleType]:
    """Import the ``agents`` extra's packages, or fail with an install hint.

    Returns:
        The imported modules by name (``stable_baselines3``, ``sb3_contrib``, ``torch``).

    Raises:
        AgentsExtraMissingError: If any of them cannot be imported; the message names the
            missing package and the command that installs the extra.
    """
    modules = {}
    for name in REQUIRED_MODULES:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError as error:
            raise AgentsExtraMissingError(
                f"training and running agents needs the {name!r} package of the 'agents' extra, "
                f"which is not installed ({error}); install it with: {INSTALL_HINT}"
            ) from error
    return modules
