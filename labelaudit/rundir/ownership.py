"""Output ownership: labelaudit writes only into a directory or file it created (or one
whose marker says so), never on, inside or around one of its inputs."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from labelaudit.core.errors import RunDirError, SettingsError
from labelaudit.core.io import RUN_JSON_LOCK
from labelaudit.data.dataset import Dataset
from labelaudit.rundir.files import RUN_OUTPUTS
from labelaudit.rundir.locking import FINISH_LOCK, RUN_LOCK
from labelaudit.rundir.markers import OUTPUT_KINDS, check_marker, is_ours, read_marker, write_marker


def _bookkeeping(name: str) -> bool:
    """Lock files and in-flight temporary files of labelaudit's own writers."""
    return (
        name in (RUN_LOCK, FINISH_LOCK, RUN_JSON_LOCK)
        or (name.startswith(".labelaudit-fold-") and name.endswith(".lock"))
        or (name.startswith(".") and name.endswith(".tmp"))
    )


def open_output_dir(
    out: str | Path,
    inputs: Iterable[tuple[str, str | Path]] = (),
    *,
    kind: str = "run",
    force: bool = False,
    say: Callable[[str], None] | None = None,
) -> Path:
    """Validate, create or adopt the directory a command writes into.

    A directory is labelaudit's when labelaudit creates it (absent or empty) or
    when its marker file (``run.json`` for a run) says so; a marker written by an
    older labelaudit (no ``format`` section) is accepted and upgraded.

    Parameters
    ----------
    out
        The output directory.
    inputs
        ``(description, path)`` of every input of the command: the output must not
        be on or inside any of them, nor contain any (see :func:`ensure_outside`).
    kind
        A key of :data:`OUTPUT_KINDS`.
    force
        Accept an existing non-empty directory that is not labelaudit's: the files
        there whose names labelaudit writes are replaced (``say`` lists them); a
        directory labelaudit would replace is still refused.
    say
        Where ``force`` reports what it will replace.

    Returns
    -------
    Path
        ``out``, existing and marked.

    Raises
    ------
    SettingsError
        ``out`` is a file, overlaps an input, or is a non-empty directory that is
        not labelaudit's (without ``force``).
    RunDirError
        The marker file is unreadable or invalid.
    """
    out = Path(out)
    spec = OUTPUT_KINDS[kind]
    if out.exists() and not out.is_dir():
        raise SettingsError(
            f"--out {out} is a file, not a directory; labelaudit does not replace it: "
            "choose a directory (a new one is created)"
        )
    ensure_outside(list(inputs), out, spec.what)
    if out.is_dir():
        entries = sorted(n for n in os.listdir(out) if not _bookkeeping(n))
        if spec.marker in entries:
            check_marker(out / spec.marker, spec)
        elif entries and not force:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise SettingsError(
                f"{out} is not empty ({shown}) and is not a labelaudit {spec.what} "
                f"(no {spec.marker}); labelaudit only writes into a directory it created: "
                "choose a new or empty --out"
                + (" (or pass --force to replace its files)" if kind == "run" else "")
            )
        elif entries:
            _force_into(out, entries, say)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, spec)
    return out


def claim_demo_dir(out: str | Path) -> Path:
    """Claim ``labelaudit demo``'s whole ``--out`` before anything is written into it.

    Like :func:`open_output_dir` (kind ``"demo"``): new, empty, or marked by
    ``demo.json``. A demo directory of an older labelaudit (only ``dataset/`` and a
    labelaudit ``run/``) is adopted.
    """
    out = Path(out)
    entries = set(os.listdir(out)) if out.is_dir() and not out.is_symlink() else set()
    if entries and entries <= {"dataset", "run"} and "run" in entries:
        marker = out / "run" / "run.json"
        with contextlib.suppress(RunDirError):
            if marker.is_file() and is_ours(read_marker(marker), OUTPUT_KINDS["run"]):
                write_marker(out, OUTPUT_KINDS["demo"])
    return open_output_dir(out, kind="demo")


def _force_into(out: Path, entries: list[str], say: Callable[[str], None] | None) -> None:
    """``--force``: say which files get replaced; refuse directories in the way."""
    clash = [n for n in entries if n in RUN_OUTPUTS]
    dirs = [n for n in clash if (out / n).is_dir() and not (out / n).is_symlink()]
    if dirs:
        raise SettingsError(
            f"{out / dirs[0]} is a directory labelaudit did not create; --force replaces "
            "files only: move it away or choose another --out"
        )
    if say is not None:
        listed = ", ".join(clash) if clash else "nothing (no file has an output's name)"
        say(f"--force: writing into {out}, which labelaudit did not create; replacing {listed}")


def dataset_inputs(dataset: Dataset) -> list[tuple[str, Path]]:
    """A dataset's inputs for :func:`ensure_outside`: root, label file, image folders."""
    found = [("the dataset directory", dataset.root), ("the label file", dataset.label_file)]
    folders = {os.path.dirname(p) for src in dataset.sources for p in src.paths}
    real = sorted({os.path.realpath(f) for f in folders})
    found += [("the image directory", Path(f)) for f in real]
    return found


def ensure_outside(
    inputs: str | Path | Iterable[tuple[str, str | Path]],
    out_dir: str | Path,
    what: str = "run directory",
) -> None:
    """Refuse an output that is on, inside, or around one of the inputs.

    Paths are compared with symbolic links resolved, in both directions: the
    output may not be an input or lie inside one (labelaudit never writes into its
    inputs), and may not contain one (its outputs could land on it).

    Parameters
    ----------
    inputs
        A dataset directory, or ``(description, path)`` pairs (a label file, an
        image folder, a masks folder, a checkpoint, a decisions file, ...).
    out_dir
        The output (directory or file).
    what
        The output's name in the message.

    Raises
    ------
    SettingsError
        The output and an input overlap.
    """
    if isinstance(inputs, str | Path):
        inputs = [("the dataset directory", inputs)]
    out = Path(out_dir).resolve()
    pairs = [(d, p, Path(p).resolve()) for d, p in inputs]
    for description, path, inp in pairs:  # the output is an input: the plainest message
        if out == inp:
            raise SettingsError(
                f"the {what} {out_dir} is {description} {path}; labelaudit never "
                "overwrites its inputs: choose another --out"
            )
    for description, path, inp in pairs:
        if inp in out.parents:
            raise SettingsError(
                f"the {what} {out_dir} is inside {description} {path}; labelaudit never "
                "writes into its inputs: choose another --out"
            )
        if out in inp.parents:
            raise SettingsError(
                f"{description} {path} is inside the {what} {out_dir}; labelaudit would "
                "write over its own input: choose an --out that does not contain it"
            )


def _header(path: Path) -> list[str] | None:
    """The first line of a CSV file, split at commas (``None``: not readable text)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.read(fd, 1 << 16).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
    return head.splitlines()[0].split(",") if head else []


def guard_output_file(
    out: str | Path,
    inputs: Iterable[tuple[str, str | Path]],
    *,
    what: str,
    ours: Callable[[list[str]], bool],
) -> Path:
    """Refuse an output file that could destroy something labelaudit did not write.

    The output-file counterpart of :func:`open_output_dir` (``predict --out``,
    ``leaks --out``): the file may not be on, inside or around an input, may not be
    a directory, a link or anything but a regular file, and an existing file is
    replaced only when its header says labelaudit wrote it (``ours``).

    Parameters
    ----------
    out
        The output file.
    inputs
        ``(description, path)`` of the command's inputs (:func:`ensure_outside`).
    what
        The output's name in the messages (``"predictions table"``).
    ours
        Given the existing file's header fields, whether it is such a table.

    Raises
    ------
    SettingsError
        One line naming ``out`` and why it is refused. The file is never quoted.
    """
    out = Path(out)
    if len(out.name.encode()) > 255:  # before any stat of it (ENAMETOOLONG)
        raise SettingsError(f"--out {out}: the file name is longer than 255 bytes")
    ensure_outside(list(inputs), out, f"{what} --out")
    if out.is_dir():
        raise SettingsError(f"--out {out} is a directory; give the path of a CSV file")
    if out.is_symlink():
        raise SettingsError(
            f"--out {out} is a symbolic link; labelaudit does not write through one: "
            "choose another --out"
        )
    if out.exists():
        header = _header(out)
        if header is None or not ours(header):
            raise SettingsError(
                f"--out {out} exists and is not a {what} labelaudit wrote; labelaudit does "
                "not overwrite it: choose another --out or move the file away"
            )
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise SettingsError(f"--out {out}: {parent} is not a directory")
    # writable now, not after the command's work (a predict over every image)
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    problem = "nothing of it exists" if existing is None else _write_problem(existing)
    if problem is not None:
        where = (
            f"{parent} is not a folder labelaudit can write in"
            if existing == parent
            else (f"{parent} cannot be created")
        )
        raise SettingsError(f"--out {out}: {where} ({problem})")
    return out


def _write_problem(folder: Path) -> str | None:
    """Why no file can be made in ``folder`` (``None``: one can): a probe file of our own,
    made and removed; permissions alone do not tell (root may write almost anywhere,
    /proc takes nothing)."""
    import tempfile

    if not folder.is_dir():
        return "not a directory"
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".labelaudit-probe-"):
            return None
    except OSError as exc:
        return (exc.strerror or type(exc).__name__).lower()
