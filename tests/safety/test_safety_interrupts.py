"""Interrupts at the command line (issue 12): Ctrl-C (SIGINT to the process group, as
a terminal sends it) or SIGTERM at any point prints one line, "interrupted; rerun to
resume", exits 130, and shows no traceback (not even from decoder workers); a rerun
resumes and finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from la_testutils import FAST_SCAN

from labelaudit.core.errors import INTERRUPTED
from labelaudit.core.interrupts import Interrupts

#: Three epochs (the last --epochs wins): time for the signal to land mid-training.
FLAGS = [*FAST_SCAN, "--epochs", "3"]


def _assert_interrupted(code: int, err: str) -> None:
    assert code == 130, err
    assert "Traceback" not in err
    assert err.strip() == INTERRUPTED  # exactly the one line


# ---------------------------------------------------------------- in process


@pytest.mark.parametrize("how", ["keyboard", "sigterm"])
def test_main_turns_an_interrupt_into_one_line_and_130(how, run_cli, monkeypatch, tmp_path):
    import labelaudit.pipeline.scan

    cleaned = []

    def interrupted_scan(*args, **kwargs):
        try:
            if how == "keyboard":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises KeyboardInterrupt
            time.sleep(5)
            raise AssertionError("SIGTERM did not interrupt the command")
        finally:
            cleaned.append(True)  # finally blocks run on the way out

    monkeypatch.setattr(labelaudit.pipeline.scan, "scan", interrupted_scan)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    code, _, err = run_cli("scan", tmp_path, "--out", tmp_path / "run")
    _assert_interrupted(code, err)
    assert cleaned == [True]
    assert {s: signal.getsignal(s) for s in before} == before  # a Python caller's handlers


# ---------------------------------------------------------------- real processes


@pytest.fixture(scope="module")
def slow_data(tmp_path_factory):
    """120 fields at 96 px: the cache build takes a second or two (worker start-up included)."""
    from labelaudit.synth.simulate import synthesize

    root = tmp_path_factory.mktemp("interrupts") / "ds"
    synthesize(root, n=120, size=96, seed=2)
    return root


def _scan(dataset, out, cache) -> subprocess.Popen:
    """``labelaudit scan`` in its own process group (as a shell job is)."""
    return subprocess.Popen(
        [sys.executable, "-m", "labelaudit", "scan", dataset, "--out", out, "--cache-dir", cache]
        + FLAGS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def _interrupt_after(proc: subprocess.Popen, prefix: str, sig: int, delay: float) -> tuple:
    """Signal the whole process group once stdout shows ``prefix``; (code, stdout, stderr)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            time.sleep(delay)
            os.killpg(proc.pid, sig)
            break
    else:
        proc.wait(timeout=60)
        pytest.fail(f"never printed {prefix!r}: {''.join(seen)}{proc.stderr.read()}")
    out, err = proc.communicate(timeout=120)
    return proc.returncode, "".join(seen) + out, err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_during_cache_build_and_training_then_resume(sig, slow_data, tmp_path, run_cli):
    out, cache = tmp_path / "run", tmp_path / "cache"

    # during the cache build: "dataset:" is printed just before it starts (SIGTERM during
    # the build, with workers, is test_safety_cache's)
    if sig == signal.SIGINT:
        code, stdout, err = _interrupt_after(_scan(slow_data, out, cache), "dataset:", sig, 0.1)
        _assert_interrupted(code, err)
        assert "image cache:" not in stdout, "the signal came after the cache build"

    # during training: "weights:" is printed when the folds start
    code, stdout, err = _interrupt_after(_scan(slow_data, out, cache), "weights:", sig, 0.5)
    _assert_interrupted(code, err)
    assert "fold 2/2" not in stdout and not (out / "issues.csv").exists()

    if sig == signal.SIGINT:  # a rerun resumes and finishes (in process: no import cost)
        code, stdout, err = run_cli("scan", slow_data, "--out", out, "--cache-dir", cache, *FLAGS)
        assert code == 0, err
        assert "Traceback" not in err and "image cache: reused" in stdout
        assert (out / "issues.csv").is_file() and (out / "report.html").is_file()


def test_an_interrupt_during_a_process_start_is_delivered_again_after_it(monkeypatch):
    """A signal landing inside multiprocessing's Process.start is re-sent shortly, so the
    half-started child never reads a closed pipe (its EOFError traceback)."""
    import threading

    code = compile(
        "import sys\ndef here():\n    return sys._getframe()\n",
        "/usr/lib/python3/multiprocessing/popen_spawn_posix.py",
        "exec",
    )
    space: dict = {}
    exec(code, space)
    starting = space["here"]()
    sent = threading.Event()
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.set())

    interrupts = Interrupts()
    interrupts._handle(signal.SIGINT, starting)  # deferred: no KeyboardInterrupt now
    assert not interrupts.raised and sent.wait(5)
    with pytest.raises(KeyboardInterrupt):  # elsewhere it interrupts at once
        interrupts._handle(signal.SIGINT, sys._getframe())
    assert interrupts.raised


def test_an_interrupt_while_the_command_line_is_imported_prints_one_line():
    """Ctrl-C in the first few tenths of a second, while the console script imports
    typer, rich and numpy: one line and 130, no traceback (here the interrupt is
    raised deterministically by the import of ``rich``)."""
    script = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'rich':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "sys.argv = ['labelaudit', '--help']\n"
        "from labelaudit._entry import run\n"
        "run()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    _assert_interrupted(proc.returncode, proc.stderr)


def test_import_labelaudit_loads_nothing_heavy():
    heavy = "{'numpy', 'pandas', 'torch', 'typer'}"
    script = f"import sys, labelaudit; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stderr
