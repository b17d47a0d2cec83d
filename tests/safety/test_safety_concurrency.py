"""One writer at a time (issue 12 case 5): the run lock, fold jobs, run.json updates.

A second writer of a run directory is refused with one line naming the holder's
pid; ``scan --fold k`` jobs share the run directory; concurrent ``run.json``
updates lose nothing; under torchrun only rank 0 takes the lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from la_testutils import TINY_SCAN, snapshot

from labelaudit.core.locks import LockHeld
from labelaudit.rundir import open_output_dir, run_lock

TINY = [*TINY_SCAN, "--quiet"]

HOLDER = textwrap.dedent(
    """
    import sys, time
    from labelaudit.rundir import run_lock
    fold = None if sys.argv[2] == "-" else int(sys.argv[2])
    with run_lock(sys.argv[1], fold=fold):
        print("held", flush=True)
        sys.stdin.readline()  # hold until the test closes our stdin
    """
)


class Holder:
    """A separate process holding a run directory's lock until closed."""

    def __init__(self, run: Path, fold: int | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(run), "-" if fold is None else str(fold)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "held"
        self.pid = self.proc.pid

    def close(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture
def run(tmp_path) -> Path:
    return open_output_dir(tmp_path / "run")


def _files(root: Path) -> dict:
    return {k: v for k, v in snapshot(root).items() if not k.endswith(".lock")}


def test_second_scan_is_refused_naming_the_holder(make_hpa, run, run_cli):
    dataset = make_hpa(n=8)
    holder = Holder(run)  # as a first `labelaudit scan` writing the run would
    try:
        before, data_before = _files(run), snapshot(dataset)
        code, _, err = run_cli("scan", dataset, "--out", run, *TINY)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert f"process {holder.pid}" in err and "in use" in err
        for command in (["clean", run], ["report", run], ["retrain", "--run", run]):
            code, _, err = run_cli(*command)
            assert code == 2 and f"process {holder.pid}" in err, (command, err)
        code, _, err = run_cli("scan", dataset, "--out", run, *TINY, "--fold", "1")
        assert code == 2 and f"process {holder.pid}" in err, err  # a fold job too
        assert _files(run) == before and snapshot(dataset) == data_before
    finally:
        holder.close()
    with run_lock(run):  # released when the holder ends
        pass


def test_fold_jobs_share_the_run_but_not_a_fold(run):
    first = Holder(run, fold=1)
    try:
        with run_lock(run, fold=2):  # another fold of the same run: at the same time
            pass
        with pytest.raises(LockHeld, match=f"fold 1 of the run directory .* process {first.pid}"):
            with run_lock(run, fold=1):
                pass
        with pytest.raises(LockHeld, match=f"process {first.pid}"):
            with run_lock(run):  # a whole scan waits for no fold job: it refuses
                pass
    finally:
        first.close()


def test_run_lock_is_reentrant_in_one_process(run):
    with run_lock(run):
        with run_lock(run):  # a scan's clean and report run under the scan's lock
            pass
        holder = subprocess.run(
            [sys.executable, "-c", HOLDER, str(run), "-"],
            input="",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert holder.returncode != 0 and "LockHeld" in holder.stderr


def test_only_rank_zero_takes_the_lock_under_torchrun(run, monkeypatch):
    holder = Holder(run)
    try:
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "1")
        with run_lock(run):  # rank 1 relies on rank 0's lock
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(LockHeld):
            with run_lock(run):
                pass
    finally:
        holder.close()


WRITER = textwrap.dedent(
    """
    import sys
    from labelaudit.core.io import update_run_json
    for i in range(int(sys.argv[3])):
        update_run_json(sys.argv[1], f"{sys.argv[2]}{i}", {"i": i})
    """
)


@pytest.mark.slow
def test_concurrent_run_json_updates_lose_nothing(run):
    n = 40
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(run), name, str(n)])
        for name in ("a", "b", "c")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    data = json.loads((run / "run.json").read_text())
    assert {f"{x}{i}" for x in "abc" for i in range(n)} <= set(data)
    assert data["format"]["kind"] == "labelaudit-run"
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]


def test_a_refused_scan_does_not_touch_run_json(make_hpa, run, run_cli):
    dataset = make_hpa(n=8)
    holder = Holder(run)
    try:
        stamp = (run / "run.json").stat().st_mtime_ns
        code, _, err = run_cli("scan", dataset, "--out", run, *TINY)
        assert code == 2 and f"process {holder.pid}" in err, err
        assert (run / "run.json").stat().st_mtime_ns == stamp  # not even rewritten
    finally:
        holder.close()
