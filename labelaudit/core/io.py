"""Atomic writes and the shared ``run.json`` of a run directory.

Every artifact is written to a temporary file in the same directory and then
renamed over the target, so a killed process never leaves a half-written file
that a later stage would trust.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates files readable by the owner only; give the result the
        # permissions a plain open() would (a run directory is often shared).
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except OSError as exc:
        if exc.filename is None:  # a write() that failed (a full disk): name the target
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` when the block succeeds."""
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` atomically (UTF-8)."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a DataFrame as CSV atomically, without its index."""
    with atomic_open(path, "w") as fh:
        frame.to_csv(fh, index=False, lineterminator="\n")


def write_npy(path: str | Path, array: np.ndarray) -> None:
    """Save a NumPy array atomically."""
    with atomic_open(path, "wb") as fh:
        np.save(fh, array)


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for NumPy values and paths (non-finite floats: ``None``)."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def finite(obj: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) by ``None``, recursively."""
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    return obj


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically; NumPy values are converted, NaN becomes ``null``."""
    text = json.dumps(finite(data), indent=2, default=json_default, allow_nan=False)
    write_text(path, text + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file (UTF-8): a regular file of bounded size only (read back, so
    untrusted: a FIFO or ``/dev/zero`` in its place is named, never read).

    Raises
    ------
    DatasetError
        ``path`` is not a regular file or is too large.
    OSError, UnicodeDecodeError, json.JSONDecodeError
        It cannot be read, is not UTF-8, or is not JSON.
    """
    from labelaudit.core.userfiles import open_user_file, parse_json

    if not os.path.lexists(path):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
    with open_user_file(path, f"the file {Path(path).name}") as fh:
        return parse_json(fh.read().decode("utf-8"))


#: The ``run.json["format"]`` section that marks a directory as a labelaudit run.
RUN_FORMAT: dict[str, Any] = {"kind": "labelaudit-run", "version": 1}
#: Lock file of the read-modify-write of ``run.json`` (separate from the run lock,
#: which ``scan --fold`` jobs hold shared while each updates ``run.json``).
RUN_JSON_LOCK = ".run.json.lock"


@contextlib.contextmanager
def _run_json_locked(run_dir: Path) -> Iterator[None]:
    from labelaudit.core.locks import hold_lock  # locks imports errors only; no cycle

    with hold_lock(run_dir / RUN_JSON_LOCK, f"{run_dir}/run.json", wait=True, timeout=120):
        yield


def edit_run_json(run_dir: str | Path, edit: Callable[[dict], None]) -> dict:
    """Apply ``edit`` to the content of ``run.json`` and write it back atomically.

    The read-modify-write holds a short exclusive lock, so processes that share a
    run directory (``scan --fold k`` jobs) never lose each other's sections. The
    ``format`` marker that makes the directory a labelaudit run is kept (or added).
    """
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    with _run_json_locked(run_dir):
        data = read_json(path) if path.exists() else {"format": dict(RUN_FORMAT)}
        edit(data)
        data.setdefault("format", dict(RUN_FORMAT))
        write_json(path, data)
    return data


def update_run_json(run_dir: str | Path, section: str, value: Any) -> dict:
    """Set ``run.json[section] = value`` atomically, keeping the other sections.

    Each stage owns one top-level section (``"dataset"``, ``"train"``,
    ``"detect"``, ``"compare"``, ...), so stages can be re-run independently.
    """
    return edit_run_json(run_dir, lambda data: data.__setitem__(section, value))
