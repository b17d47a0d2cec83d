"""The self-contained HTML report of a run directory (``RUN/report.html``).

>>> from labelaudit.report import write_report
>>> write_report("labelaudit-out")  # doctest: +SKIP
PosixPath('labelaudit-out/report.html')
"""

from __future__ import annotations

from pathlib import Path

from labelaudit.report import render
from labelaudit.report.render import REPORT_NAME, build_context, render_html


def write_report(run_dir: str | Path, **kwargs) -> Path:
    """Write ``RUN/report.html`` holding the run directory's lock (one writer at a time).

    The page is written atomically over an earlier report; see
    :func:`labelaudit.report.render.write_report_unlocked` for the arguments.

    Raises
    ------
    RunDirError
        ``run_dir`` has no readable ``run.json``.
    LockHeld
        Another process is writing the run directory.
    """
    from labelaudit.rundir import read_run, run_lock

    read_run(run_dir)  # a run directory, before the lock file is created in it
    with run_lock(run_dir):
        return render.write_report_unlocked(run_dir, **kwargs)


__all__ = ["REPORT_NAME", "build_context", "render_html", "write_report"]
