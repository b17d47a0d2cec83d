"""Marker files: how labelaudit recognises a directory it wrote (``run.json``,
``segment.json``, ``sweep.json``, ``demo.json``) and refuses one it did not."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from labelaudit.core.errors import RunDirError
from labelaudit.core.io import RUN_FORMAT, edit_run_json, read_json, write_json


@dataclass(frozen=True)
class OutputKind:
    """A kind of directory labelaudit writes, recognised by its marker file.

    Attributes
    ----------
    marker
        The JSON file inside the directory that says it is labelaudit's.
    format
        The ``"format"`` section labelaudit writes into the marker.
    legacy
        Keys of a marker written before the ``format`` section existed: a marker
        with one of them is accepted (and the section added).
    what
        The directory's name in messages.
    """

    marker: str
    format: dict
    legacy: tuple[str, ...]
    what: str


#: Sections an older labelaudit wrote into run.json (one of them marks its run.json).
RUN_SECTIONS = ("dataset", "train", "detect", "compare", "timings", "clean", "cells", "retrain")
OUTPUT_KINDS: dict[str, OutputKind] = {
    "run": OutputKind("run.json", RUN_FORMAT, RUN_SECTIONS, "run directory"),
    "segment": OutputKind(
        "segment.json",
        {"kind": "labelaudit-segment", "version": 1},
        ("fields", "params"),
        "segment output directory",
    ),
    "sweep": OutputKind(
        "sweep.json", {"kind": "labelaudit-sweep", "version": 1}, ("axes",), "sweep directory"
    ),
    "demo": OutputKind(
        "demo.json", {"kind": "labelaudit-demo", "version": 1}, (), "demo directory"
    ),
}


def read_marker(path: Path, kind: OutputKind | None = None) -> dict:
    """Read a marker file (``run.json``, ``segment.json``, ...) as a dict.

    Raises
    ------
    RunDirError
        The file cannot be read, is not JSON, or is not an object. The message
        names the file and never quotes its content.
    """
    kind = kind or OUTPUT_KINDS["run"]
    hint = f"it is not a labelaudit {kind.marker} or it is damaged: move it away"
    what = f"cannot read {kind.marker}: {path} is"
    try:
        data = read_json(path)
    except json.JSONDecodeError as exc:
        raise RunDirError(
            f"{what} not valid JSON ({exc.msg} at line {exc.lineno}); {hint}"
        ) from None
    except UnicodeDecodeError:
        raise RunDirError(f"{what} not UTF-8 text; {hint}") from None
    except OSError as exc:
        raise RunDirError(f"{what} unreadable ({exc.strerror}); {hint}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{what} not a JSON object; {hint}")
    return data


def is_ours(data: dict, kind: OutputKind) -> bool:
    """Whether a marker's content says labelaudit wrote it: its ``format`` kind, or a
    key an older labelaudit wrote (``kind.legacy``)."""
    fmt = data.get("format")
    if isinstance(fmt, dict) and fmt.get("kind") == kind.format["kind"]:
        return True
    return any(key in data for key in kind.legacy)


def check_marker(path: Path, kind: OutputKind) -> dict:
    """Read a marker and refuse one labelaudit did not write or a newer labelaudit wrote.

    Raises
    ------
    RunDirError
        Unreadable (:func:`read_marker`), foreign, or of a newer format version.
    """
    data = read_marker(path, kind)
    if not is_ours(data, kind):
        raise RunDirError(
            f"{path} was not written by labelaudit, so {path.parent} is not a labelaudit "
            f"{kind.what}: choose another --out"
        )
    fmt = data.get("format")
    version = fmt.get("version") if isinstance(fmt, dict) else None
    if isinstance(version, int) and version > kind.format["version"]:
        raise RunDirError(
            f"{path} was written by a newer labelaudit (format version {version}); "
            "upgrade labelaudit or choose another --out"
        )
    return data


def write_marker(out: Path, kind: OutputKind) -> None:
    """Add the ``format`` section to the marker (creating it when absent)."""
    path = out / kind.marker
    if kind.marker == "run.json":
        # A marked run.json is left alone: another writer may hold the run's lock.
        if not path.exists() or read_marker(path, kind).get("format") != kind.format:
            edit_run_json(out, lambda data: data.__setitem__("format", dict(kind.format)))
        return
    if not path.exists():  # an existing one was checked; its writer keeps it current
        write_json(path, {"format": dict(kind.format)})
