"""Per-field work over worker processes, with the input errors kept intact.

The image cache, the cell cache and segmentation all do one independent job per
field (decode, segment, crop). :func:`map_fields` runs such jobs in order, in
``spawn`` processes when it pays (fork would copy the parent's torch/OpenMP
threads), and turns a :class:`~labelaudit.errors.DatasetError` raised in a worker
back into one naming the field: exceptions are returned rather than raised across
the process boundary, because pickling an exception loses its fields.

Interrupts belong to the parent. Workers are born with SIGINT blocked (so a Ctrl-C
sent to the process group in their first moments prints no traceback), then ignore
it; they die with the parent (``PR_SET_PDEATHSIG`` on Linux, a watchdog thread
elsewhere); when the parent stops early (Ctrl-C, an error, a consumer that stops
reading) the pending jobs are cancelled and the workers killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import InvalidStateError, ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from labelaudit.errors import DatasetError

_PR_SET_PDEATHSIG = 1


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity (a Slurm or cgroup allocation),
    not the whole machine that ``os.cpu_count`` reports."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


#: Signals the parent handles for its workers (one line, exit 130).
_PARENT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _die_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` does."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return

    def watch() -> None:  # elsewhere: poll; an orphan is re-parented
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _init_worker(parent: int) -> None:
    """Worker initializer: ignore SIGINT and SIGTERM (the parent handles both: a signal to
    the process group must not break the pool under it), die with the parent."""
    for sig in _PARENT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(_PARENT_SIGNALS))
    _die_with_parent(parent)
    with contextlib.suppress(ImportError):
        import cv2  # one process per core already: no thread pool inside each

        cv2.setNumThreads(1)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM while workers are started, so they inherit them blocked.

    A Ctrl-C (or SIGTERM) arriving meanwhile stays pending and is delivered to the
    parent as soon as the block ends; the workers ignore theirs.
    """
    usable = (
        hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(_PARENT_SIGNALS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the pool now: cancel pending jobs and kill the workers (no state to keep).

    The executor's manager thread then marks the pool broken and sets an exception on
    every pending future; one that ``map`` or the shutdown has already cancelled makes
    it raise ``InvalidStateError`` and print a thread traceback (CPython 3.11). That
    traceback says nothing to the user, so it is silenced while the pool goes down.
    """
    previous = threading.excepthook

    def quiet(args: threading.ExceptHookArgs) -> None:
        if not isinstance(args.exc_value, InvalidStateError):
            previous(args)

    threading.excepthook = quiet
    try:
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for proc in processes:
            with contextlib.suppress(Exception):
                proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)
    finally:
        threading.excepthook = previous


def _guarded(job: Callable[[tuple], Any], args: tuple) -> tuple[int, Any, Any]:
    try:
        return args[0], job(args), None
    except DatasetError as exc:
        return args[0], None, (exc.message, str(exc.path) if exc.path else None)


def map_fields(
    job: Callable[[tuple], Any],
    jobs: Sequence[tuple],
    ids: Sequence[str],
    workers: int,
    *,
    min_parallel: int = 2,
    max_chunk: int = 1,
    errors: str = "raise",
) -> Iterator[tuple[int, Any]]:
    """Yield ``(i, job(args))`` for each ``args`` of ``jobs``, in order.

    Parameters
    ----------
    job
        A module-level function (picklable) taking one tuple whose first item is
        the field's index ``i`` into ``ids``.
    jobs
        The argument tuples.
    ids
        Field ids, for the error message.
    workers
        Processes; 1 (or fewer than ``min_parallel`` jobs) runs them here.
    min_parallel
        Fewer jobs than this are not worth starting processes for.
    max_chunk
        Largest number of jobs sent to a worker at once.
    errors
        ``"raise"``: stop at the first field whose job raised a
        :class:`~labelaudit.errors.DatasetError`; ``"return"``: yield
        ``(i, error)`` for it, the error naming the field, and go on.

    Raises
    ------
    DatasetError
        What a job raised, naming the field (with ``errors="raise"``).
    """
    if errors not in ("raise", "return"):
        raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
    guarded = functools.partial(_guarded, job)
    if workers <= 1 or len(jobs) < min_parallel:
        results: Iterator[tuple[int, Any, Any]] = map(guarded, jobs)
        yield from _unpack(results, ids, errors == "raise")
        return
    chunk = max(1, min(max_chunk, len(jobs) // (workers * 8)))
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )
    finished = False
    try:
        with _sigint_blocked():  # the workers are started by the submissions in map()
            results = pool.map(guarded, jobs, chunksize=chunk)
        yield from _unpack(results, ids, errors == "raise")
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:  # interrupted, failed, or the consumer stopped reading
            _kill_workers(pool)


def _unpack(
    results: Iterator[tuple[int, Any, Any]], ids: Sequence[str], raise_errors: bool
) -> Iterator[tuple[int, Any]]:
    for i, result, error in results:
        if error is not None:
            message, path = error
            exc = DatasetError(message, path=path, image=ids[i])
            if raise_errors:
                raise exc
            yield i, exc
        else:
            yield i, result
