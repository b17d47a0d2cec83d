"""One writer at a time: the run directory's lock (shared by ``--fold`` jobs) and the
lock a fold job takes to finish the run."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from labelaudit.core.defaults import DEFAULT_RUN
from labelaudit.core.locks import hold_lock
from labelaudit.rundir.files import read_run

#: The run lock (exclusive for a scan/clean/retrain/report; shared by ``--fold`` jobs).
RUN_LOCK = ".labelaudit.lock"
#: Taken (waiting) by a ``--fold`` job that finds every fold finished: detection,
#: cleaning and the report are written by one such job at a time.
FINISH_LOCK = ".labelaudit-finish.lock"

_HELD: set[Path] = set()  # run directories whose lock this process holds


def _secondary_rank() -> bool:
    """True in a torchrun process other than rank 0 (rank 0 holds the lock for all)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0


@contextlib.contextmanager
def run_lock(run_dir: str | Path, *, fold: int | None = None) -> Iterator[None]:
    """Hold the run directory's lock: one writer at a time.

    A scan, clean, retrain or report takes it exclusively; a ``scan --fold k`` job
    takes it shared (fold jobs of one run directory run at the same time) plus an
    exclusive lock of its fold. Re-entrant within a process (a scan's clean and
    report run under the scan's lock); under torchrun only rank 0 takes it.

    Raises
    ------
    LockHeld
        Another process holds it (the message names the holder's pid).
    """
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _HELD or _secondary_rank():
        yield
        return
    what = f"the run directory {run_dir}"
    with contextlib.ExitStack() as stack:
        stack.enter_context(hold_lock(run_dir / RUN_LOCK, what, shared=fold is not None))
        if fold is not None:
            lock = run_dir / f".labelaudit-fold-{fold}.lock"
            stack.enter_context(hold_lock(lock, f"fold {fold} of {what}"))
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


def finish_lock(run_dir: str | Path, say: Callable[[str], None] | None = None):
    """The lock a ``--fold`` job waits for before writing detection, cleaning and report."""
    run_dir = Path(run_dir)
    return hold_lock(run_dir / FINISH_LOCK, f"the run directory {run_dir}", wait=True, on_wait=say)


def with_run_lock(func: Callable) -> Callable:
    """Decorate a command whose first argument is a run directory: hold its lock.

    The run directory must exist (``run.json``) before its lock file is created.
    """

    @functools.wraps(func)
    def wrapper(run_dir: str | Path = DEFAULT_RUN, *args, **kwargs):
        read_run(run_dir)
        with run_lock(run_dir):
            return func(run_dir, *args, **kwargs)

    return wrapper
