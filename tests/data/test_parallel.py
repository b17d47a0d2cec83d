"""map_fields: per-field jobs in order, here or in worker processes, errors naming the field."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from la_testutils import write_image

from labelaudit.core.errors import DatasetError
from labelaudit.data.cache import _decode_job
from labelaudit.data.parallel import map_fields


def fields(tmp_path, n, broken=None):
    jobs, ids = [], []
    for i in range(n):
        path = tmp_path / f"f{i}.png"
        if i != broken:
            write_image(path, np.full((16, 16), i * 10, dtype=np.uint8))
        jobs.append((i, (path,), 1, 8))
        ids.append(f"field{i}")
    return jobs, ids


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_order_here_and_in_processes(tmp_path, workers):
    jobs, ids = fields(tmp_path, 5)
    out = list(map_fields(_decode_job, jobs, ids, workers))
    assert [i for i, _ in out] == list(range(5))
    assert [int(pixels[0, 0, 0]) for _, (pixels, _, _) in out] == [0, 10, 20, 30, 40]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_error_names_the_field_and_file(tmp_path, workers):
    jobs, ids = fields(tmp_path, 4, broken=2)
    with pytest.raises(DatasetError) as err:
        list(map_fields(_decode_job, jobs, ids, workers))
    assert err.value.image == "field2" and "f2.png" in str(err.value.path)


@pytest.mark.parametrize("workers", [1, 2])
def test_errors_returned_for_every_field(tmp_path, workers):
    jobs, ids = fields(tmp_path, 10, broken=2)
    (tmp_path / "f7.png").write_bytes(b"not an image at all")
    out = dict(map_fields(_decode_job, jobs, ids, workers, errors="return"))
    assert sorted(out) == list(range(10))
    bad = {i: r for i, r in out.items() if isinstance(r, DatasetError)}
    assert sorted(bad) == [2, 7]
    assert bad[7].image == "field7" and bad[7].path.name == "f7.png"
    assert int(out[9][0][0, 0, 0]) == 90  # the fields after the errors were decoded


# ---------------------------------------------------------------- interrupts

SLOW_JOBS = """
import os, signal, sys, time
from labelaudit.data.parallel import map_fields

# A job started in the background by a non-interactive shell (as CI may be) inherits
# SIGINT ignored, and Python then keeps it ignored: be the terminal job Ctrl-C reaches.
signal.signal(signal.SIGINT, signal.default_int_handler)

def slow(args):
    time.sleep(0.2)
    return os.getpid()

if __name__ == "__main__":
    print("ready", flush=True)
    try:
        for i, pid in map_fields(slow, [(i,) for i in range(400)], [str(i) for i in range(400)], 2):
            print(pid, flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
"""


def _start(tmp_path):
    script = tmp_path / "slow_jobs.py"
    script.write_text(SLOW_JOBS)
    return subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's job
    )


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie has finished


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups, /proc")
@pytest.mark.parametrize("when", ["starting", "running"])
def test_ctrl_c_to_the_process_group_no_worker_tracebacks(tmp_path, when):
    proc = _start(tmp_path)
    assert proc.stdout.readline().strip() == "ready"
    if when == "starting":
        time.sleep(0.3)  # the workers are being spawned and import
    else:
        proc.stdout.readline()  # a first result: the workers run jobs
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip() == "interrupted"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG, /proc")
def test_workers_die_with_a_killed_parent(tmp_path):
    proc = _start(tmp_path)
    assert proc.stdout.readline().strip() == "ready"
    workers = set()
    while len(workers) < 2:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        workers.add(int(line))
    assert all(_alive(pid) for pid in workers)
    proc.kill()  # SIGKILL the parent alone: it cannot clean up
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "orphaned workers still run"
