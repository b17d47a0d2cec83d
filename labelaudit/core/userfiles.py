"""Files labelaudit reads from the user or reads back, and the entries it deletes.

Every file a command is given (a truth table, a decisions file, predictions, a
model, a weights file) and every file labelaudit reads back from a run, a cache or
a dataset is untrusted input:

- only a regular file is opened, non-blocking and checked on the open descriptor,
  so a FIFO, a device (``/dev/zero``), a socket or a directory is named in one line
  instead of hanging the command or filling the memory;
- its size is bounded before it is read (:data:`MAX_TABLE_BYTES` for tables and JSON);
- a name read from a marker file is a plain entry of its directory (PEP 706's data
  filter and git's ``safe.directory`` treat metadata from elsewhere the same way),
  and labelaudit deletes only through :func:`remove_entry`, which re-checks that on
  the resolved path and never follows a symbolic link.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from labelaudit.core.errors import DatasetError, RunDirError

#: Largest CSV or JSON file read (truth, decisions, predictions, markers): 1 GiB
#: holds the predictions of 2 million images of 28 classes.
MAX_TABLE_BYTES = 1 << 30
#: Largest array (``.npy``) or model file read: 32 GiB.
MAX_ARRAY_BYTES = 32 << 30
#: Largest marker file labelaudit writes (``.labelaudit-cleaned.json``) that it reads back.
MAX_MARKER_BYTES = 16 << 20

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str | None:
    """``None`` for a regular file, else what it is, in words (``"a FIFO (named pipe)"``)."""
    if stat.S_ISREG(mode):
        return None
    return next((words for test, words in _KINDS if test(mode)), "a special file")


def _size_words(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def check_user_file(path: str | Path, what: str, *, max_bytes: int = MAX_TABLE_BYTES) -> int:
    """Refuse ``path`` unless it is an existing regular file of at most ``max_bytes``.

    Symbolic links are followed (a link to a file of the user's is fine); what
    they lead to must be a regular file.

    Parameters
    ----------
    path
        The file.
    what
        Its role, for the message (``"--truth"``, ``"the decisions file"``).
    max_bytes
        The largest size accepted.

    Returns
    -------
    int
        The file's size in bytes.

    Raises
    ------
    DatasetError
        Naming the file and what is wrong: missing, a broken link, a directory, a
        FIFO or device, or too large.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        broken = os.path.islink(path)
        raise DatasetError(
            f"{what} {'is a broken symbolic link' if broken else 'not found'}", path=path
        ) from None
    except OSError as exc:
        raise DatasetError(f"{what}: cannot read it ({exc.strerror})", path=path) from None
    return _check_stat(st, path, what, max_bytes)


def _check_stat(st: os.stat_result, path: str | Path, what: str, max_bytes: int) -> int:
    kind = file_kind(st.st_mode)
    if kind is not None:
        raise DatasetError(
            f"{what} is {kind}, not a regular file; labelaudit reads only regular files",
            path=path,
        )
    if st.st_size > max_bytes:
        raise DatasetError(
            f"{what} is {_size_words(st.st_size)}, over the {_size_words(max_bytes)} "
            "labelaudit reads from such a file; is it the right file?",
            path=path,
        )
    return int(st.st_size)


@contextlib.contextmanager
def open_user_file(
    path: str | Path, what: str, *, max_bytes: int = MAX_TABLE_BYTES
) -> Iterator[io.BufferedReader[io.FileIO]]:
    """Open a user's file for binary reading: regular files only, size bounded.

    The file is opened non-blocking and checked on the descriptor (``fstat``), so a
    file swapped for a FIFO after the first check cannot block the command.

    Raises
    ------
    DatasetError
        As :func:`check_user_file`.
    """
    check_user_file(path, what, max_bytes=max_bytes)
    with open_checked(
        path, lambda st: _check_stat(st, path, what, max_bytes), f"{what}: cannot open it"
    ) as fh:
        yield fh


@contextlib.contextmanager
def open_checked(
    path: str | Path, check: Callable[[os.stat_result], object], cannot: str
) -> Iterator[io.BufferedReader[io.FileIO]]:
    """Open ``path`` for binary reading without blocking; ``check`` its ``fstat`` first.

    The descriptor is opened non-blocking (a FIFO cannot hang the open) and
    ``check`` (which raises to refuse) sees the file actually opened, so a file
    swapped after an earlier ``stat`` is still caught.

    Raises
    ------
    DatasetError
        ``cannot`` and the reason, when the file cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DatasetError(f"{cannot} ({exc.strerror})", path=path) from None
    try:
        check(os.fstat(fd))
        os.set_blocking(fd, True)
        raw = io.FileIO(fd, "rb")
        raw.name = os.fspath(path)  # tifffile wants a file name, not a descriptor number
        fh = io.BufferedReader(raw)
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def read_user_bytes(path: str | Path, what: str, *, max_bytes: int = MAX_TABLE_BYTES) -> bytes:
    """The bytes of a user's file (:func:`open_user_file`), never more than ``max_bytes``."""
    with open_user_file(path, what, max_bytes=max_bytes) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while being read
        raise DatasetError(f"{what} grew past {_size_words(max_bytes)} while read", path=path)
    return data


def read_user_text(path: str | Path, what: str, *, max_bytes: int = MAX_TABLE_BYTES) -> str:
    """A user's text file as UTF-8 (a byte-order mark is dropped).

    Raises
    ------
    DatasetError
        As :func:`check_user_file`, or the file is not UTF-8 text.
    """
    data = read_user_bytes(path, what, max_bytes=max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{what} is not UTF-8 text (byte {exc.start} cannot be decoded)", path=path
        ) from None


def parse_json(text: str) -> Any:
    """``json.loads``; nesting too deep for Python's parser is a ``JSONDecodeError`` too.

    What labelaudit reads back is untrusted: ``[[[...]]]`` a hundred thousand deep
    must be a bad file, not a ``RecursionError`` traceback.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


def read_user_json(path: str | Path, what: str, *, max_bytes: int = MAX_TABLE_BYTES) -> Any:
    """A user's (or a read-back) JSON file; one-line errors, the content never quoted."""
    text = read_user_text(path, what, max_bytes=max_bytes)
    try:
        return parse_json(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno})", path=path
        ) from None


def read_user_csv(
    path: str | Path, what: str, *, max_bytes: int = MAX_TABLE_BYTES, **read_csv: Any
):
    """A user's CSV file as a DataFrame (``pandas.read_csv`` keywords pass through).

    Raises
    ------
    DatasetError
        As :func:`check_user_file`, or pandas cannot parse it (its reason, one line).
    """
    return parse_user_csv(read_user_bytes(path, what, max_bytes=max_bytes), path, what, **read_csv)


def parse_user_csv(data: bytes, path: str | Path, what: str, **read_csv: Any):
    """:func:`read_user_csv` of bytes already read (``path`` names them in messages)."""
    import pandas as pd

    try:
        return pd.read_csv(io.BytesIO(data), **read_csv)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{what} is empty (no header line)", path=path) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DatasetError(f"{what} is not a readable CSV table ({reason})", path=path) from None


def load_user_npy(path: str | Path, what: str, *, max_bytes: int = MAX_ARRAY_BYTES):
    """A user's ``.npy`` array (no pickles), with one-line errors.

    Raises
    ------
    DatasetError
        As :func:`check_user_file`, or the file is not a NumPy ``.npy`` array (numpy's
        own advice to load it unsafely is never shown).
    """
    import numpy as np

    with open_user_file(path, what, max_bytes=max_bytes) as fh:
        if fh.peek(6)[:6] != b"\x93NUMPY":
            raise DatasetError(f"{what} is not a NumPy .npy file (no .npy header)", path=path)
        try:
            return np.load(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            reason = " ".join(str(exc).split())[:120]
            if "allow_pickle" in reason or "pickle" in reason.lower():
                reason = "it holds Python objects, which labelaudit does not load"
            raise DatasetError(
                f"{what} is not a readable .npy array ({reason})", path=path
            ) from None


# ------------------------------------------------------------------ names read back


def first_bad_probability(values: Any) -> tuple[int, int, str] | None:
    """The first cell of an (N, K) float array that is not a probability, and why.

    Returns ``(row, column, why)`` with ``why`` ``"nan"`` (NaN or infinite; such cells
    are reported first) or ``"range"`` (outside [0, 1]), or ``None`` when every cell is
    a probability. Each reader (``--probs``, ``find_issues``, a run's ``oof_probs.csv``)
    words its own message around it.
    """
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    for mask, why in ((~finite, "nan"), (finite & ((values < 0) | (values > 1)), "range")):
        if mask.any():
            r, c = np.argwhere(mask)[0]
            return int(r), int(c), why
    return None


#: Largest embedding value accepted (a network's features are many orders smaller;
#: distances square the values, so beyond this they overflow).
MAX_EMBEDDING_VALUE = 1e15


def first_extreme(values: Any, limit: float = MAX_EMBEDDING_VALUE) -> tuple[int, int] | None:
    """(row, column) of the first NaN, infinity or value beyond ``limit`` of a 2-d
    array (``None``: none)."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values) | (np.abs(np.nan_to_num(values, nan=0.0)) > limit)
    where = np.argwhere(bad.reshape(len(values), -1))
    return (int(where[0][0]), int(where[0][1])) if len(where) else None


def is_plain_entry(name: object) -> bool:
    """True when ``name`` names an entry directly inside a directory.

    Not empty, not ``.`` or ``..``, no path separator, no NUL, not absolute: a
    name read from a marker file can then only ever mean a child of its directory.
    """
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\0" not in name
        and (os.sep == "/" or os.sep not in name)
        and not os.path.isabs(name)
    )


def remove_entry(directory: str | Path, name: str) -> None:
    """Delete the entry ``name`` of ``directory``: the one way labelaudit deletes.

    A symbolic link is unlinked (never followed); a file is unlinked; a directory is
    removed with its content only when its resolved path is a child of the resolved
    ``directory`` (``shutil.rmtree`` never follows links inside it). A missing entry
    is no error.

    Raises
    ------
    RunDirError
        ``name`` is not a plain entry name, ``directory`` is a symbolic link, or the
        entry resolves outside ``directory``. Nothing is deleted.
    """
    directory = Path(directory)
    if not is_plain_entry(name):
        raise RunDirError(
            f"refusing to delete {name!r} from {directory}: not a plain entry of that "
            "directory (a damaged or forged marker?)"
        )
    if directory.is_symlink():
        raise RunDirError(f"refusing to delete inside {directory}: it is a symbolic link")
    path = directory / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        real_parent = os.path.realpath(directory)
        if os.path.dirname(os.path.realpath(path)) != real_parent:
            raise RunDirError(f"refusing to delete {path}: it resolves outside {directory}")
        shutil.rmtree(path)
    else:
        os.unlink(path)
