"""Safety of the image cache stage of ``scan``: broken files, interrupts, kills.

Each case runs the real command: in-process for the broken-file cases, as a
separate process group for the signals (a terminal's Ctrl-C reaches every
process of the foreground group, the decoder workers included).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from la_testutils import FAST_SCAN

from labelaudit.data.cache import build_cache
from labelaudit.data.layouts import load_dataset


def _break_three(root: Path) -> list[str]:
    train = root / "train"
    ids = sorted({p.name.rsplit("_", 1)[0] for p in train.glob("*_green.png")})
    truncated, empty, garbage = (train / f"{ids[k]}_green.png" for k in (3, 10, 20))
    truncated.write_bytes(truncated.read_bytes()[:60])
    empty.write_bytes(b"")
    garbage.write_bytes(os.urandom(500))
    return [truncated.name, empty.name, garbage.name]


@pytest.fixture
def broken_dataset(run_cli, tmp_path) -> tuple[Path, list[str]]:
    root = tmp_path / "ds"
    code, _, err = run_cli("synth", root, "--n", "60", "--size", "32", "--seed", "1")
    assert code == 0, err
    return root, _break_three(root)


@pytest.mark.slow
def test_scan_names_every_broken_file_once_then_skip_broken_audits_the_rest(
    run_cli, broken_dataset, tmp_path
):
    root, names = broken_dataset
    code, _, err = run_cli("scan", root, "--out", tmp_path / "run", *FAST_SCAN)
    assert code == 2
    assert "Traceback" not in err
    assert err.count("cannot be read") == 1  # one error, every file in it
    for name in names:
        assert err.count(name) == 1, err

    code, out, err = run_cli("scan", root, "--out", tmp_path / "run", *FAST_SCAN, "--skip-broken")
    assert code == 0, err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    skipped = run["skipped_images"]
    assert sorted(Path(s["file"]).name for s in skipped) == sorted(names)
    assert all(s["id"] and s["reason"] for s in skipped)
    assert run["dataset"]["n_images"] == 57
    issues = (tmp_path / "run" / "issues.csv").read_text()
    assert not any(s["id"] in issues for s in skipped)
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Unreadable images (not audited)" in html
    for s in skipped:
        assert Path(s["file"]).name in html


def _scan_process(root: Path, run: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "labelaudit", "scan", str(root), "--out", str(run), *FAST_SCAN,
         "--cache-dir", str(cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "LABELAUDIT_CACHE_DIR": str(cache)},
    )  # fmt: skip


def _wait_for_build(cache: Path, proc: subprocess.Popen, fields: int = 1) -> None:
    """Until the cache build has journaled ``fields`` fields (or started, for 0)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        journals = list(cache.glob(".partial-*/journal.jsonl"))
        if journals and journals[0].read_text().count("\n") >= fields:
            return
        time.sleep(0.01)
    pytest.fail("the cache build did not start")


@pytest.fixture
def big_fields(make_hpa) -> Path:
    # Enough decoding (two workers) for a signal to land inside the cache build.
    return make_hpa(n=48, size=320)


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith((".tmp-", ".partial-")))


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups")
@pytest.mark.parametrize(
    # SIGINT mid-build is also test_safety_interrupts' (a scan interrupted after "dataset:")
    ("sig", "fields"),
    [(signal.SIGINT, 0), (signal.SIGTERM, 8)],
)
def test_ctrl_c_during_the_cache_build_one_line_no_traceback(big_fields, tmp_path, sig, fields):
    cache = tmp_path / "cache"
    proc = _scan_process(big_fields, tmp_path / "run", cache)
    _wait_for_build(cache, proc, fields)  # 0: the workers are starting
    os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C (or a job manager's SIGTERM) does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err
    # What the interrupted build left is resumed and consumed by the next build.
    ds = load_dataset(big_fields)
    again = build_cache(ds, 32, cache, workers=1)
    # (On a fast machine the build may have finished before the signal landed.)
    assert again.reused or again.resumed >= fields
    assert _leftovers(cache) == []


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups")
def test_sigkill_of_the_group_during_the_cache_build_is_resumed(big_fields, tmp_path):
    cache = tmp_path / "cache"
    proc = _scan_process(big_fields, tmp_path / "run", cache)
    _wait_for_build(cache, proc, 8)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    ds = load_dataset(big_fields)
    again = build_cache(ds, 32, cache, workers=1)
    assert again.reused or 8 <= again.resumed <= len(ds)
    clean = build_cache(ds, 32, tmp_path / "clean", workers=1)
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(clean.images))
    assert again.stats.equals(clean.stats)
    assert _leftovers(cache) == []
