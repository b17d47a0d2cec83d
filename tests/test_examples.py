"""The example scripts run as shipped."""

from __future__ import annotations

import subprocess
import sys

import pytest
from la_testutils import REPO


@pytest.mark.slow
def test_synth_and_check_example(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "synth_and_check.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "120 images, 19 classes, problems: 0" in proc.stdout
    assert "cached (120, 4, 64, 64) uint8" in proc.stdout
