"""Ctrl-C and SIGTERM while a command runs: unwind once, then leave at once.

The command line (:func:`labelaudit.cli.main`) installs :class:`Interrupts` around
a command; the first signal becomes a :class:`KeyboardInterrupt`, so ``finally``
blocks clean up, and ``main`` exits with :data:`~labelaudit.core.errors.INTERRUPT_STATUS`
after one line (:data:`~labelaudit.core.errors.INTERRUPTED`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from labelaudit.core.errors import INTERRUPT_STATUS, INTERRUPTED


class Interrupts:
    """SIGINT and SIGTERM while a command runs: unwind once, then leave at once.

    The first signal raises :class:`KeyboardInterrupt` in the main thread, so the
    ``finally`` blocks and context managers on the way out (temporary files, locks,
    worker pools) clean up; :func:`main` then prints :data:`INTERRUPTED` and exits
    130. A second signal during that clean-up ends the process immediately (with
    the line, if it was not printed yet): a user pressing Ctrl-C twice wants out.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    #: Retries of a signal that arrived while a worker process was being started.
    MAX_DEFERRALS = 40
    DEFER_S = 0.025

    def __init__(self) -> None:
        self.raised = False
        self.reported = False
        self.deferred = 0
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        """Handle SIGINT and SIGTERM (from the main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Give the signals their handlers from before :meth:`install` back."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.raised:
            if _starting_a_process(frame) and self.deferred < self.MAX_DEFERRALS:
                self._defer(signum)
                return
            self.raised = True
            raise KeyboardInterrupt
        self.report()
        os._exit(INTERRUPT_STATUS)

    def _defer(self, signum: int) -> None:
        """Deliver ``signum`` again shortly, once the process start-up is done.

        Blocking the signal around worker start-up is not enough: CPython runs the
        handler in the main thread whichever thread received the signal (a progress
        bar's refresh thread, for one). Interrupting ``Process.start`` between the
        spawn and the hand-over of its start-up data leaves a child that prints an
        ``EOFError`` traceback; so the interrupt waits a few milliseconds.
        """
        self.deferred += 1
        timer = threading.Timer(self.DEFER_S, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()

    def report(self) -> None:
        """Print :data:`~labelaudit.core.errors.INTERRUPTED` on stderr, once."""
        if not self.reported:
            self.reported = True
            try:
                sys.stderr.write(INTERRUPTED + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):  # stderr closed: the status still says it
                pass


#: multiprocessing modules that start a process and hand it its start-up data.
_PROCESS_START = frozenset({"popen_spawn_posix.py", "popen_fork.py", "popen_forkserver.py"})
_PROCESS_START |= {"process.py", "spawn.py", "reduction.py"}


def _starting_a_process(frame: FrameType | None) -> bool:
    """Whether the interrupted code is inside multiprocessing's start of a process."""
    while frame is not None:
        path = frame.f_code.co_filename
        if os.path.basename(path) in _PROCESS_START and (
            os.path.basename(os.path.dirname(path)) == "multiprocessing"
        ):
            return True
        frame = frame.f_back
    return False


__all__ = ["Interrupts"]
