"""The run directory: what each stage writes and how a later stage reads it back.

See the run-directory contract in docs/design.md. Besides the contract files, a scan
writes ``dataset.csv`` (ids and given labels) and ``image_stats.csv`` (the cache's
full-resolution channel statistics), so that later stages (detect, report, clean)
work from the run directory alone, without decoding images again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelaudit.core.defaults import DEFAULT_RUN
from labelaudit.core.errors import RunDirError, SettingsError
from labelaudit.core.io import (
    RUN_FORMAT,
    RUN_JSON_LOCK,
    edit_run_json,
    read_json,
    update_run_json,
    write_csv,
    write_json,
    write_npy,
)
from labelaudit.core.locks import hold_lock
from labelaudit.core.userfiles import check_user_file, load_user_npy
from labelaudit.data.cache import ImageCache
from labelaudit.data.dataset import Dataset
from labelaudit.data.labels import LabelCodec
from labelaudit.data.roles import exclusive_classes

#: Run-directory files (the contract; see :class:`RunDir`).
DATASET_CSV = "dataset.csv"
STATS_CSV = "image_stats.csv"
OOF_CSV = "oof_probs.csv"
EMBEDDINGS_NPY = "embeddings.npy"
FINDINGS_CSV = "findings.csv"
ISSUES_CSV = "issues.csv"
CELLS_CSV = "cells.csv"
CHANGES_CSV = "changes.csv"
#: Images shared with the datasets of ``scan --against`` (labelaudit.pipeline.leaks.add_leaks).
LEAKS_CSV = "leaks.csv"
#: Per-label loss weights of the soft cleaning policies (``id`` + one column per class).
LABEL_WEIGHTS_CSV = "label_weights.csv"
BENCH_JSON = "bench.json"
RETRAIN_METRICS = "retrain/metrics.json"
RETRAIN_TABLE = "retrain/table.csv"
#: How each file is produced, for "not found" messages.
PRODUCED_BY: dict[str, str] = {
    ISSUES_CSV: "run `labelaudit scan` (the detect stage writes it)",
    FINDINGS_CSV: "run `labelaudit scan` (the detect stage writes it)",
    CHANGES_CSV: "run `labelaudit clean RUN` first",
}


def _table(path: Path, dtype: Any = str, na_values: list[str] | None = None) -> pd.DataFrame:
    """Read one of the run's CSV files (empty strings kept as text by default).

    A run directory may come from elsewhere: only a regular file of bounded size is read.
    """
    check_user_file(path, f"the run file {path.name}")
    return pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=na_values)


class RunDir:
    """A run directory: the one reader and writer of every file of the contract.

    ``run.json`` (sections, format marker, locking), ``dataset.csv``,
    ``image_stats.csv``, ``oof_probs.csv``, ``embeddings.npy``, ``findings.csv``,
    ``issues.csv``, ``cells.csv``, ``changes.csv``, ``bench.json`` and the retrain
    outputs. Strict readers raise :class:`RunDirError` naming the file; the
    ``*_or_none`` helpers return ``None`` for an absent file.

    Parameters
    ----------
    path
        The run directory.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """The path of a run file (``name`` relative to the run directory)."""
        return self.path / name

    def has(self, name: str) -> bool:
        """Whether the run file ``name`` exists."""
        return self.file(name).is_file()

    # ------------------------------------------------------------ run.json

    def read_run(self) -> dict:
        """``run.json``; a missing, unreadable, foreign or newer one is a user error."""
        path = self.file("run.json")
        if not path.is_file():
            raise RunDirError(
                f"{self.path}: not a labelaudit run directory (no run.json); "
                "run `labelaudit scan DATASET --out RUN` first"
            )
        return _check_marker(path, OUTPUT_KINDS["run"])  # labelaudit's, or refused

    def section(self, name: str) -> dict | None:
        """A ``run.json`` section (``None`` when absent, not an object, or no run.json)."""
        if not self.has("run.json"):
            return None
        value = read_json(self.file("run.json")).get(name)
        return value if isinstance(value, dict) else None

    def write_section(self, name: str, value: Any) -> dict:
        """Set ``run.json[name]`` atomically, keeping the other sections."""
        return update_run_json(self.path, name, value)

    def edit_run(self, edit: Callable[[dict], None]) -> dict:
        """Read-modify-write ``run.json`` under its lock."""
        return edit_run_json(self.path, edit)

    def dataset_info(self, run: dict | None = None) -> dict:
        """``run.json["dataset"]``, the one check that a run has been scanned."""
        run = self.read_run() if run is None else run
        info = run.get("dataset")
        if not isinstance(info, dict):
            raise RunDirError(f"{self.path}/run.json has no dataset section; re-run the scan")
        return info

    def codec(self, info: Mapping[str, Any] | None = None) -> LabelCodec:
        """The label codec of the scanned dataset."""
        return LabelCodec.from_info(self.dataset_info() if info is None else info)

    # ------------------------------------------------------------ dataset

    def write_dataset(self, dataset: Dataset, cache: ImageCache) -> dict:
        """Write the dataset section, ``dataset.csv`` and ``image_stats.csv``."""
        info = {
            "path": str(dataset.root.resolve()),
            "layout": dataset.layout,
            "label_file": str(dataset.label_file.resolve()),
            "fingerprint": dataset.fingerprint(),
            "n_images": len(dataset),
            "n_classes": dataset.n_classes,
            "class_names": dataset.class_names,
            "class_tokens": dataset.class_tokens,
            "label_sep": dataset.label_sep,
            "load_options": dict(dataset.options),
            "channels": list(dataset.channels),
            "protein_channel": dataset.channels[dataset.protein_channel],
            "cache": str(cache.path),
            "image_size": cache.size,
            "follow_symlinks": dataset.follow_symlinks,
            "max_pixels": dataset.max_pixels,
            "roles": dataset.roles.to_info(),
        }
        given = LabelCodec.from_info(info).format_many(dataset.labels)
        write_csv(self.file(DATASET_CSV), pd.DataFrame({"id": dataset.ids, "labels": given}))
        write_csv(self.file(STATS_CSV), cache.stats)
        self.write_section("dataset", info)
        return info

    def read_dataset_table(self) -> pd.DataFrame:
        """``dataset.csv`` as text (``id``, ``labels``)."""
        return _table(self.file(DATASET_CSV))

    def read_given(
        self, info: Mapping[str, Any], *, lenient: bool = False
    ) -> tuple[list[str], np.ndarray]:
        """Ids and the given (N, K) label matrix, from ``dataset.csv``."""
        frame = self.read_dataset_table()
        path = self.file(DATASET_CSV)
        labels = LabelCodec.from_info(info).parse_many(
            frame["labels"],
            lenient=lenient,
            where=lambda i, m: RunDirError(f"{path}, line {i + 2}: {m}"),
        )
        return frame["id"].tolist(), labels

    def load_scanned_dataset(self, info: Mapping[str, Any], ids: list[str]):
        """The scanned dataset, re-read, and the row of each scanned id in it.

        Raises
        ------
        RunDirError
            The dataset no longer has every scanned image, or the run has no dataset
            (``find_issues`` on arrays without images).
        """
        from labelaudit.data.layouts import LoadReport, load_dataset, recorded_load_options

        if not info.get("path"):
            raise RunDirError(
                f"{self.path} was audited from arrays without images (find_issues): it has "
                "no dataset to clean or retrain on; pass images to find_issues, or scan a dataset"
            )
        root = Path(info["path"])
        ds = load_dataset(
            root, info["layout"], strict=False, report=LoadReport(), **recorded_load_options(info)
        )
        index = {image_id: i for i, image_id in enumerate(ds.ids)}
        missing = [image_id for image_id in ids if image_id not in index]
        if missing:
            raise RunDirError(
                f"the dataset {info['path']} no longer has {len(missing)} scanned image(s) "
                f"(e.g. {missing[0]!r}); re-run the scan"
            )
        return ds, np.array([index[image_id] for image_id in ids], dtype=int)

    def read_stats(self) -> pd.DataFrame | None:
        """``image_stats.csv`` (``None`` when absent)."""
        if not self.has(STATS_CSV):
            return None
        return _table(self.file(STATS_CSV), dtype={"id": str})

    # ------------------------------------------------------------ training outputs

    def write_oof(
        self, ids: list[str], class_names: list[str], probs: np.ndarray, emb: np.ndarray
    ) -> None:
        """Write ``oof_probs.csv`` and ``embeddings.npy`` (rows in ``ids`` order)."""
        frame = pd.DataFrame(np.asarray(probs).astype(np.float64), columns=list(class_names))
        frame.insert(0, "id", list(ids))
        write_csv(self.file(OOF_CSV), frame)
        write_npy(self.file(EMBEDDINGS_NPY), np.ascontiguousarray(emb, dtype=np.float32))

    def read_oof_table(self) -> pd.DataFrame | None:
        """``oof_probs.csv`` as written (``None`` when absent)."""
        if not self.has(OOF_CSV):
            return None
        return _table(self.file(OOF_CSV), dtype={"id": str})

    def read_probs(
        self, class_names: list[str], ids: list[str], *, aligned: bool = True
    ) -> np.ndarray | None:
        """(N, K) out-of-fold probabilities in ``ids`` order (``None``: no file).

        ``aligned``: the file's rows must be ``ids`` in order; otherwise any order
        of the same ids is accepted.
        """
        frame = self.read_oof_table()
        if frame is None:
            return None
        path = self.file(OOF_CSV)
        if aligned:
            if frame["id"].tolist() != ids:
                raise RunDirError(f"{path}: ids do not match dataset.csv")
            return frame[class_names].to_numpy(dtype=np.float64)
        missing = [c for c in ["id", *class_names] if c not in frame.columns]
        if missing or sorted(frame["id"]) != sorted(ids):
            raise RunDirError(f"{path} does not match dataset.csv")
        return frame.set_index("id").loc[ids, class_names].to_numpy(dtype=float)

    def read_embeddings(self, n_rows: int | None = None) -> np.ndarray | None:
        """``embeddings.npy`` (``None`` when absent); ``n_rows`` is checked if given."""
        if not self.has(EMBEDDINGS_NPY):
            return None
        emb = load_user_npy(self.file(EMBEDDINGS_NPY), "the run's embeddings.npy")
        if n_rows is not None and emb.shape[0] != n_rows:
            raise RunDirError(
                f"{self.file(EMBEDDINGS_NPY)}: {emb.shape[0]} rows, expected {n_rows}"
            )
        return emb

    def forget_oof(self) -> None:
        """Delete ``oof_probs.csv`` and ``embeddings.npy`` (other training settings)."""
        for name in (OOF_CSV, EMBEDDINGS_NPY):
            self.file(name).unlink(missing_ok=True)

    # ------------------------------------------------------------ tables

    def read_table(self, name: str, *, hint: str | None = None) -> pd.DataFrame:
        """A run CSV as text; absent or unparsable: :class:`RunDirError` naming it."""
        path = self.file(name)
        if not path.is_file():
            raise RunDirError(f"{path}: not found; {hint or PRODUCED_BY.get(name, '')}")
        try:
            return _table(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise RunDirError(f"{path}: cannot be read ({exc})") from None

    def read_report_table(self, name: str) -> pd.DataFrame:
        """A run CSV for the report: ids as text, empty cells as NaN."""
        return _table(self.file(name), dtype={"id": str}, na_values=[""])

    def write_table(self, name: str, frame: pd.DataFrame) -> Path:
        """Write a run CSV atomically; returns its path."""
        path = self.file(name)
        write_csv(path, frame)
        return path

    def add_issue_columns(self, columns: pd.DataFrame, names: Iterable[str]) -> None:
        """Add (or replace) columns of ``issues.csv``, keeping its rows and order.

        Parameters
        ----------
        columns
            Indexed by image id; rows for ids ``issues.csv`` lacks are ignored,
            ids it has but ``columns`` lacks get empty values.
        names
            The columns to add (in order); existing ones of these names are replaced.
        """
        names = list(names)
        issues = self.read_table(ISSUES_CSV)
        issues = issues.drop(columns=[c for c in names if c in issues.columns])
        extra = columns.reindex(issues["id"]).reset_index(drop=True)
        self.write_table(ISSUES_CSV, pd.concat([issues, extra[names]], axis=1))

    def upsert_table(self, name: str, rows: list[dict], key: str) -> pd.DataFrame:
        """Insert ``rows`` into a run CSV, replacing the rows with the same ``key``."""
        new = pd.DataFrame(rows)
        path = self.file(name)
        if path.is_file():
            old = pd.read_csv(path, dtype={key: str})
            old = old[~old[key].isin(new[key])]
            new = pd.concat([old, new], ignore_index=True)
        write_csv(path, new)
        return new

    def read_arrays(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays of a run ``.npz`` file; ``None`` when absent or unreadable."""
        path = self.file(name)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):
            return None

    def read_npy(self, name: str) -> np.ndarray | None:
        """A run ``.npy`` file; ``None`` when absent or unreadable."""
        path = self.file(name)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def fold_files(self, k: int) -> tuple[dict | None, dict[str, np.ndarray] | None]:
        """Cross-validation's resume state of fold ``k`` (0-based): its ``state.json``
        and ``oof.npz`` (``None`` for each that is absent or unreadable)."""
        folder = f"folds/fold_{k + 1}"
        try:
            state = self.read_json_file(f"{folder}/state.json")
        except (OSError, ValueError):  # absent, or not JSON
            state = None
        return (state if isinstance(state, dict) else None), self.read_arrays(f"{folder}/oof.npz")

    def fold_assignment(self) -> np.ndarray:
        """The 0-based fold of each image, as cross-validation last assigned them."""
        frame = pd.read_csv(self.file("folds/folds.csv"), dtype={"id": str})
        return frame["fold"].to_numpy() - 1

    def read_json_file(self, name: str) -> Any:
        """A JSON run file (``bench.json``, ``retrain/metrics.json``)."""
        return read_json(self.file(name))

    def write_json_file(self, name: str, data: Any) -> Path:
        """Write a JSON run file atomically; returns its path."""
        path = self.file(name)
        write_json(path, data)
        return path

    # ------------------------------------------------------------ detection inputs

    def audit_inputs(self):
        """Everything the detectors need, read back from the run directory.

        Missing artifacts (no training yet) come back as ``None`` so detectors that
        do not need them can still run.
        """
        info = self.dataset_info()
        ids, labels = self.read_given(info)
        probs = self.read_probs(info["class_names"], ids)
        return make_audit_inputs(
            info, ids, labels, probs, self.read_embeddings(len(ids)), self.read_stats()
        )


def make_audit_inputs(
    info: Mapping[str, Any],
    ids: list[str],
    labels: np.ndarray,
    probs: np.ndarray | None,
    embeddings: np.ndarray | None,
    stats: pd.DataFrame | None,
):
    """:class:`~labelaudit.detect.base.AuditInputs` of a run's dataset section."""
    from labelaudit.detect.base import AuditInputs

    return AuditInputs(
        ids=ids,
        class_names=list(info["class_names"]),
        class_tokens=list(info["class_tokens"]),
        label_sep=info["label_sep"],
        labels=labels,
        probs=probs,
        embeddings=embeddings,
        stats=stats,
        protein_channel=info.get("protein_channel", "green"),
        exclusive_classes=tuple(exclusive_classes(info)),
    )


def read_run(run_dir: str | Path) -> dict:
    """Read ``run.json``; a missing, unreadable or invalid one is a user error."""
    return RunDir(run_dir).read_run()


def parse_labels(values: pd.Series, tokens: list[str], sep: str) -> np.ndarray:
    """Turn label strings in the dataset's notation back into a boolean matrix."""
    return LabelCodec(list(tokens), sep).parse_many(values.fillna("").astype(str))


def load_audit_inputs(run_dir: str | Path):
    """Everything the detectors need, read back from a run directory (see :class:`RunDir`)."""
    return RunDir(run_dir).audit_inputs()


# ------------------------------------------------------------------ output ownership


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
#: The run lock (exclusive for a scan/clean/retrain/report; shared by ``--fold`` jobs).
RUN_LOCK = ".labelaudit.lock"
#: Taken (waiting) by a ``--fold`` job that finds every fold finished: detection,
#: cleaning and the report are written by one such job at a time.
FINISH_LOCK = ".labelaudit-finish.lock"
#: Top-level entries a run directory's stages write (what ``--force`` may replace).
RUN_OUTPUTS: tuple[str, ...] = (
    "run.json",
    "dataset.csv",
    "image_stats.csv",
    "oof_probs.csv",
    "embeddings.npy",
    "findings.csv",
    "issues.csv",
    "report.html",
    "changes.csv",
    "cells.csv",
    "bench.json",
    "cleaned",
    "folds",
    "cells",
    "retrain",
)


def _bookkeeping(name: str) -> bool:
    """Lock files and in-flight temporary files of labelaudit's own writers."""
    return (
        name in (RUN_LOCK, FINISH_LOCK, RUN_JSON_LOCK)
        or (name.startswith(".labelaudit-fold-") and name.endswith(".lock"))
        or (name.startswith(".") and name.endswith(".tmp"))
    )


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


def _is_ours(data: dict, kind: OutputKind) -> bool:
    fmt = data.get("format")
    if isinstance(fmt, dict) and fmt.get("kind") == kind.format["kind"]:
        return True
    return any(key in data for key in kind.legacy)


def _check_marker(path: Path, kind: OutputKind) -> dict:
    data = read_marker(path, kind)
    if not _is_ours(data, kind):
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


def _write_marker(out: Path, kind: OutputKind) -> None:
    """Add the ``format`` section to the marker (creating it when absent)."""
    path = out / kind.marker
    if kind.marker == "run.json":
        # A marked run.json is left alone: another writer may hold the run's lock.
        if not path.exists() or read_marker(path, kind).get("format") != kind.format:
            edit_run_json(out, lambda data: data.__setitem__("format", dict(kind.format)))
        return
    if not path.exists():  # an existing one was checked; its writer keeps it current
        write_json(path, {"format": dict(kind.format)})


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
            _check_marker(out / spec.marker, spec)
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
    _write_marker(out, spec)
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
            if marker.is_file() and _is_ours(read_marker(marker), OUTPUT_KINDS["run"]):
                _write_marker(out, OUTPUT_KINDS["demo"])
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
    return out


# ------------------------------------------------------------------ one writer at a time

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
