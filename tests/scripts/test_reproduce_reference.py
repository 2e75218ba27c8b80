"""``scripts/reproduce_reference.py``: progress at once, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reproduce_reference.py"


def test_progress_first_then_ctrl_c_stops_with_one_line(tmp_path):
    argv = [sys.executable, str(SCRIPT), "--requests", "2000", "--seeds", "2", "--jobs", "2"]
    argv += ["--out", str(tmp_path / "report.md")]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first = process.stderr.readline()
    assert first.startswith("reproduce_reference: 2 seeds x 2,000 requests per configuration")
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.splitlines()[-1] == "reproduce_reference: interrupted (Ctrl-C); nothing written"
    assert "Traceback" not in err and not (tmp_path / "report.md").exists()
