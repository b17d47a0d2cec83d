"""Per-field work over worker processes, with the input errors kept intact.

The image cache, the cell cache and segmentation all do one independent job per
field (decode, segment, crop). :func:`map_fields` runs such jobs in order, in
``spawn`` processes when it pays (fork would copy the parent's torch/OpenMP
threads), and turns a :class:`~labelaudit.core.errors.DatasetError` raised in a worker
back into one naming the field: exceptions are returned rather than raised across
the process boundary, because pickling an exception loses its fields.

Interrupts belong to the parent. Workers are born with SIGINT blocked (so a Ctrl-C
sent to the process group in their first moments prints no traceback), then ignore
it; they die with the parent (``PR_SET_PDEATHSIG`` on Linux, a watchdog thread
elsewhere); when the parent stops early (Ctrl-C, an error, a consumer that stops
reading) the pending jobs are cancelled and the workers killed.

Workers never run the user's main module. A plain ``spawn`` child re-runs the script
that started the parent (as ``__mp_main__``) so that functions defined there can be
unpickled; a script without an ``if __name__ == "__main__":`` guard then calls
labelaudit again inside the child, which fails (``RuntimeError ... bootstrapping
phase``, a held lock, ``BrokenProcessPool``) or hangs. Every job here is a function
of labelaudit itself, so :func:`worker_context` starts children that skip that step,
as loky's default context does for joblib: scripts and notebooks need no guard.
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
from multiprocessing.context import BaseContext, SpawnContext, SpawnProcess
from typing import Any

from labelaudit.core.errors import DatasetError

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


#: Preparation-data keys that make a spawned child import the parent's ``__main__``.
_MAIN_KEYS = ("init_main_from_name", "init_main_from_path")


@functools.cache
def _popen_without_main() -> type | None:
    """A POSIX spawn ``Popen`` whose children do not import the parent's ``__main__``.

    Its ``_launch`` is CPython's ``popen_spawn_posix.Popen._launch`` (3.10-3.13) with
    the main-module keys dropped from the preparation data; loky's ``popen_loky_posix``
    does the same. ``None`` where that class does not exist (Windows).
    """
    if sys.platform == "win32":
        return None
    import io
    from multiprocessing import popen_spawn_posix, reduction, resource_tracker, spawn, util
    from multiprocessing.context import set_spawning_popen

    class PopenWithoutMain(popen_spawn_posix.Popen):
        _fds: list[int]  # set by popen_spawn_posix.Popen.__init__ (absent from typeshed)

        def _launch(self, process_obj: Any) -> None:
            tracker_fd = resource_tracker.getfd()  # starts the tracker: an fd, never None
            if tracker_fd is None:
                raise RuntimeError("multiprocessing's resource tracker did not start")
            self._fds.append(tracker_fd)
            prep_data = spawn.get_preparation_data(process_obj._name)
            for key in _MAIN_KEYS:
                prep_data.pop(key, None)
            fp = io.BytesIO()
            set_spawning_popen(self)
            try:
                reduction.dump(prep_data, fp)
                reduction.dump(process_obj, fp)
            finally:
                set_spawning_popen(None)
            parent_r = child_w = child_r = parent_w = None
            try:
                parent_r, child_w = os.pipe()
                child_r, parent_w = os.pipe()
                cmd = spawn.get_command_line(tracker_fd=tracker_fd, pipe_handle=child_r)
                self._fds.extend([child_r, child_w])
                # typeshed types the path as bytes; CPython passes this str itself
                exe = spawn.get_executable()
                self.pid = util.spawnv_passfds(exe, cmd, self._fds)  # type: ignore[arg-type]
                self.sentinel = parent_r
                with open(parent_w, "wb", closefd=False) as f:
                    f.write(fp.getbuffer())
            finally:
                self.finalizer = util.Finalize(
                    self,
                    util.close_fds,  # type: ignore[attr-defined]  # in CPython, not in typeshed
                    [fd for fd in (parent_r, parent_w) if fd is not None],
                )
                for fd in (child_r, child_w):
                    if fd is not None:
                        os.close(fd)

    return PopenWithoutMain


class _ProcessWithoutMain(SpawnProcess):
    """A spawn process whose child skips the parent's main module."""

    _start_method = "spawn"

    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # noqa: N802 (multiprocessing's name)
        popen = _popen_without_main()
        if popen is None:
            return SpawnProcess._Popen(process_obj)
        return popen(process_obj)


class _ContextWithoutMain(SpawnContext):
    Process = _ProcessWithoutMain


def worker_context(job: Callable[..., Any] | None = None) -> BaseContext:
    """The start method for labelaudit's worker processes: ``spawn``, with children
    that do not re-run the user's script (see the module docstring).

    Parameters
    ----------
    job
        The function the workers will run. One defined in the main script itself can
        only be found by re-running that script: it gets the plain ``spawn`` context
        (and the script needs the ``__main__`` guard, as with ``multiprocessing``).

    Returns
    -------
    multiprocessing.context.BaseContext
        Pass it as ``mp_context`` to a :class:`~concurrent.futures.ProcessPoolExecutor`.
        On Windows it is the plain ``spawn`` context.
    """
    if getattr(job, "__module__", None) == "__main__" or _popen_without_main() is None:
        return get_context("spawn")
    return _ContextWithoutMain()


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
        :class:`~labelaudit.core.errors.DatasetError`; ``"return"``: yield
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
        mp_context=worker_context(job),
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
