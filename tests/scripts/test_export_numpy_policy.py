"""``scripts/export_numpy_policy.py``: every directory it is given is tried."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "export_numpy_policy.py"


def load_script():
    spec = importlib.util.spec_from_file_location("export_numpy_policy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_directory_that_fails_does_not_stop_the_others(tmp_path, capsys):
    """A run that could not be exported ended the script with a traceback, before the next."""
    from tests.agents.conftest import tiny_train

    empty = tmp_path / "empty"
    empty.mkdir()
    run = tmp_path / "run"
    tiny_train(run)
    assert load_script().main([str(empty), str(run)]) == 2
    captured = capsys.readouterr()
    assert "holds no model.zip" in captured.err
    assert f"{run / 'model.zip'} ->" in captured.out
    assert list(run.glob("*.npz"))
