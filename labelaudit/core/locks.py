"""Advisory file locks: one writer per run directory and per cache entry.

A lock is an ``flock`` on a small file that labelaudit creates and owns. The kernel
releases it when the holder exits, however it exits (SIGKILL included), so a
crashed run never leaves a stale lock behind; the file itself may stay and is
harmless. The holder writes its pid and command line into the file so that the
process that is refused can name it.

Shared locks let several cooperating processes in (``scan --fold k`` jobs of the
same run directory); an exclusive lock keeps everyone else out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from labelaudit.core.errors import SettingsError


class LockHeld(SettingsError):
    """Another process holds the lock (exit status 2, one line naming its pid)."""


def _holder(fd: int) -> str:
    """The holder's pid and command, read from the lock file (4 KiB at most: read back)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
    except OSError:
        return "another process"
    pid, _, command = text.partition(" ")
    if not pid.isdigit():
        return "another process"
    return f"process {pid}" + (f" ({command[:120]})" if command else "")


def _describe_self() -> str:
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    return f"{os.getpid()} {command}".replace("\n", " ")


def _try_lock(fd: int, shared: bool) -> bool:
    """Take the lock without waiting; True when this process should name itself.

    A shared holder first tries an exclusive lock: when that succeeds it is alone and
    names itself before converting to shared; otherwise it joins the live shared
    holders and leaves the name of the first. (Probing by converting a held shared
    lock would drop it on failure: ``flock`` removes the old lock first.)
    """
    if shared:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        _write_name(fd)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True


def _write_name(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, _describe_self().encode("utf-8", "replace"), 0)


def open_lock_file(path: Path) -> int:
    """Open (create) a lock file, never through a symbolic link, never anything but a file.

    Raises
    ------
    SettingsError
        ``path`` is a symbolic link (planted to make labelaudit truncate the file it
        points to), or not a regular file.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise SettingsError(
                f"the lock file {path} is a symbolic link; labelaudit never writes through "
                "one: remove it (labelaudit makes its own) and run again"
            ) from None
        raise SettingsError(f"cannot open the lock file {path} ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SettingsError(f"the lock file {path} is not a regular file; remove it and run again")
    os.set_blocking(fd, True)
    return fd


@contextlib.contextmanager
def hold_lock(
    path: str | Path,
    what: str,
    *,
    shared: bool = False,
    wait: bool = False,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold an advisory lock on ``path`` for the duration of the block.

    Parameters
    ----------
    path
        The lock file (created if missing; labelaudit owns it).
    what
        What the lock protects, for the message (``"the run directory R"``).
    shared
        Take a shared lock (several holders) instead of an exclusive one.
    wait
        Wait for the holder to finish instead of refusing at once.
    timeout
        With ``wait``: give up after this many seconds (``None``: wait forever).
    on_wait
        With ``wait``: called once with a line naming the holder when waiting starts.

    Raises
    ------
    LockHeld
        The lock is held by another process (and ``wait`` is false, or ``timeout``
        passed). The message names the holder's pid.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock_file(path)
    try:
        started = time.monotonic()
        told = False
        while True:
            try:
                if _try_lock(fd, shared):
                    _write_name(fd)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = _holder(fd)
                late = timeout is not None and time.monotonic() - started > timeout
                if not wait or late:
                    raise LockHeld(
                        f"{what} is in use by {holder}; wait for it to finish "
                        "(or stop it) and run again"
                    ) from None
                if on_wait is not None and not told:
                    on_wait(f"waiting for {holder}, which is using {what}")
                    told = True
                time.sleep(0.2)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock
