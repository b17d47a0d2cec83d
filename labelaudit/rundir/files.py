"""The run-directory contract: the files each stage writes and how a later stage reads
them back (:class:`RunDir`).

Besides the contract files, a scan writes ``dataset.csv`` (ids and given labels) and
``image_stats.csv`` (the cache's full-resolution channel statistics), so that later
stages (detect, report, clean) work from the run directory alone, without decoding
images again. See the run-directory contract in docs/design.md.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelaudit.core.errors import RunDirError
from labelaudit.core.io import (
    edit_run_json,
    read_json,
    update_run_json,
    write_csv,
    write_json,
    write_npy,
)
from labelaudit.core.userfiles import (
    MAX_EMBEDDING_VALUE,
    check_user_file,
    first_bad_probability,
    is_plain_entry,
    load_user_npy,
)
from labelaudit.data.cache import ImageCache
from labelaudit.data.dataset import Dataset
from labelaudit.data.labels import LabelCodec
from labelaudit.data.roles import exclusive_classes
from labelaudit.rundir.markers import OUTPUT_KINDS, check_marker

#: Run-directory files (the contract; see :class:`RunDir`), relative to the run directory.
RUN_JSON = "run.json"
DATASET_CSV = "dataset.csv"
STATS_CSV = "image_stats.csv"
OOF_CSV = "oof_probs.csv"
EMBEDDINGS_NPY = "embeddings.npy"
FINDINGS_CSV = "findings.csv"
ISSUES_CSV = "issues.csv"
CELLS_CSV = "cells.csv"
CHANGES_CSV = "changes.csv"
REPORT_HTML = "report.html"
#: Images shared with the datasets of ``scan --against`` (labelaudit.pipeline.leaks.add_leaks).
LEAKS_CSV = "leaks.csv"
DUPLICATES_CSV = "duplicates.csv"
#: Per-label loss weights of the soft cleaning policies (``id`` + one column per class).
LABEL_WEIGHTS_CSV = "label_weights.csv"
BENCH_JSON = "bench.json"
BENCH_TABLE = "bench.txt"
#: Cross-validation: ``folds.csv`` (each image's fold), one directory per fold
#: (:func:`fold_dir_name`: ``model.pt``, ``oof.npz``, ``state.json``) and the cached
#: embeddings of the linear-probe mode.
FOLDS_DIR = "folds"
FOLDS_CSV = f"{FOLDS_DIR}/folds.csv"
PROBE_DIR = f"{FOLDS_DIR}/probe"
FOLD_MODEL_PT = "model.pt"
FOLD_OOF_NPZ = "oof.npz"
FOLD_STATE_JSON = "state.json"
#: ``labelaudit retrain``'s outputs.
RETRAIN_DIR = "retrain"
RETRAIN_METRICS = f"{RETRAIN_DIR}/metrics.json"
RETRAIN_TABLE = f"{RETRAIN_DIR}/table.csv"
RETRAIN_SPLIT = f"{RETRAIN_DIR}/split.csv"
#: Cell-level outputs (``scan --level cell``): the cell models' folds and overlays.
CELLS_DIR = "cells"
CELL_OVERLAYS_DIR = f"{CELLS_DIR}/overlays"
#: How each file is produced, for "not found" messages.
PRODUCED_BY: dict[str, str] = {
    ISSUES_CSV: "run `labelaudit scan` (the detect stage writes it)",
    FINDINGS_CSV: "run `labelaudit scan` (the detect stage writes it)",
    CHANGES_CSV: "run `labelaudit clean RUN` first",
}
#: The directory a cleaning writes (:mod:`labelaudit.pipeline.clean`).
CLEANED_DIR = "cleaned"
#: Top-level entries a run directory's stages write (what ``--force`` may replace).
RUN_OUTPUTS: tuple[str, ...] = (
    RUN_JSON,
    DATASET_CSV,
    STATS_CSV,
    OOF_CSV,
    EMBEDDINGS_NPY,
    FINDINGS_CSV,
    ISSUES_CSV,
    REPORT_HTML,
    CHANGES_CSV,
    CELLS_CSV,
    BENCH_JSON,
    BENCH_TABLE,
    DUPLICATES_CSV,
    LEAKS_CSV,
    LABEL_WEIGHTS_CSV,
    CLEANED_DIR,
    FOLDS_DIR,
    CELLS_DIR,
    RETRAIN_DIR,
)


#: The largest overlay picture the report embeds (a cell overlay JPEG is ~100 kB).
MAX_OVERLAY_BYTES = 8 * 1024 * 1024


def recorded_overlay(run_dir: str | Path, entry: object) -> Path | None:
    """The picture a ``run.json["cells"]["overlays"]`` entry names, or ``None``.

    ``run.json`` is read back, so it is untrusted: only a plain ``.jpg``/``.png`` name
    directly inside ``RUN/cells/overlays`` counts, and only when neither that folder
    nor ``cells/`` is a link and the picture is a regular file (not a link) of at
    most :data:`MAX_OVERLAY_BYTES`. Anything else (another file of the machine, a
    path out of the run, a FIFO) is never read nor deleted.
    """
    name = entry.get("file") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name.lower().endswith((".jpg", ".png")):
        return None
    folder, _, leaf = name.rpartition("/")
    if folder != CELL_OVERLAYS_DIR or not is_plain_entry(leaf):
        return None
    run_dir = Path(run_dir)
    for part in (CELLS_DIR, CELL_OVERLAYS_DIR):
        if (run_dir / part).is_symlink():
            return None
    path = run_dir / CELL_OVERLAYS_DIR / leaf
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_OVERLAY_BYTES:
        return None
    return path


def fold_dir_name(k: int) -> str:
    """The directory of cross-validation fold ``k`` (0-based), relative to the run."""
    return f"{FOLDS_DIR}/fold_{k + 1}"


def _table(path: Path, dtype: Any = str, na_values: list[str] | None = None) -> pd.DataFrame:
    """Read one of the run's CSV files (empty strings kept as text by default).

    A run directory may come from elsewhere: only a regular file of bounded size is read.
    """
    check_user_file(path, f"the run file {path.name}")
    try:
        return pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=na_values)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path}: not a readable CSV table ({err})") from None


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

    def _absent(self, name: str) -> bool:
        """``True`` when nothing is at ``name``; something that is not a regular file
        there (a folder, a FIFO, a device link: forged or misplaced) is named, not
        taken for an absent file."""
        if self.has(name):
            return False
        path = self.file(name)
        if os.path.lexists(path):
            raise RunDirError(f"{path}: not a regular file; move it away and run again")
        return True

    # ------------------------------------------------------------ run.json

    def read_run(self) -> dict:
        """``run.json``; a missing, unreadable, foreign or newer one is a user error."""
        path = self.file(RUN_JSON)
        if not path.is_file():
            raise RunDirError(
                f"{self.path}: not a labelaudit run directory (no run.json); "
                "run `labelaudit scan DATASET --out RUN` first"
            )
        return check_marker(path, OUTPUT_KINDS["run"])  # labelaudit's, or refused

    def section(self, name: str) -> dict | None:
        """A ``run.json`` section (``None`` when absent, not an object, or no run.json)."""
        if not self.has(RUN_JSON):
            return None
        value = read_json(self.file(RUN_JSON)).get(name)
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
        names = info.get("class_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise RunDirError(
                f"{self.path}/run.json: the dataset section has no list of class names; "
                "re-run the scan"
            )
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

        def replace(data: dict) -> None:
            before = data.get("dataset")
            if isinstance(before, dict) and before.get("fingerprint") != info["fingerprint"]:
                # another dataset's retrain: the report and bench must not show it as this one's
                data.pop("retrain", None)
            data["dataset"] = info

        self.edit_run(replace)
        return info

    def read_dataset_table(self) -> pd.DataFrame:
        """``dataset.csv`` as text (``id``, ``labels``)."""
        frame = _table(self.file(DATASET_CSV))
        missing = [c for c in ("id", "labels") if c not in frame.columns]
        if missing:
            raise RunDirError(f"{self.file(DATASET_CSV)} has no column {missing[0]!r}")
        return frame

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
        if self._absent(OOF_CSV):
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
        _require_class_columns(frame, class_names, path)
        if aligned:
            if frame["id"].tolist() != ids:
                raise RunDirError(f"{path}: ids do not match dataset.csv")
            return _probabilities(frame, class_names, path)
        if sorted(frame["id"]) != sorted(ids):
            raise RunDirError(f"{path} does not match dataset.csv")
        rows = frame.set_index("id").index.get_indexer(ids)
        return _probabilities(frame, class_names, path)[rows]

    def read_cells(self, class_names: list[str], ids: list[str]):
        """The cell level's out-of-fold view (``None``: no cell-level scan).

        ``cells.csv`` names each cell and its image; ``cells/oof_probs.csv`` holds the
        cell model's probabilities, one row per cell of ``cells.csv``. Both may be
        forged: a cell of an image not in ``ids``, a missing or extra cell, or a value
        that is not a probability is a :class:`RunDirError` naming the file.

        Returns
        -------
        CellPredictions or None
        """
        from labelaudit.detect.base import CellPredictions

        if self._absent(CELLS_CSV):
            return None
        cells_path, probs_path = self.file(CELLS_CSV), self.file(f"{CELLS_DIR}/{OOF_CSV}")
        table = _table(cells_path, dtype={"cell_id": str, "id": str})
        if not {"cell_id", "id"} <= set(table.columns):
            raise RunDirError(f"{cells_path}: no 'cell_id' and 'id' columns")
        unknown = sorted(set(table["id"]) - set(ids))
        if unknown:
            raise RunDirError(f"{cells_path}: cells of images not in dataset.csv ({unknown[0]!r})")
        if not probs_path.is_file():
            raise RunDirError(f"{probs_path}: not found (the cell model's probabilities)")
        frame = _table(probs_path, dtype={"id": str})
        _require_class_columns(frame, class_names, probs_path)
        if frame["id"].tolist() != table["cell_id"].tolist():
            raise RunDirError(f"{probs_path}: cell ids do not match {CELLS_CSV}")
        probs = _probabilities(frame, class_names, probs_path)
        return CellPredictions(table[["cell_id", "id"]], probs)

    def write_cell_probs(self, cells, class_names: list[str]) -> None:
        """Write cell probabilities made elsewhere where a cell-level scan keeps its cell
        model's (``cells/oof_probs.csv``), so :meth:`read_cells` reads them back; a
        cell model's ``cells/embeddings.npy`` from an earlier scan is removed (the
        folds stay, for a later ``--level cell`` to reuse).

        Raises
        ------
        RunDirError
            ``cells/`` is a link or not a directory (the run directory's own, but
            forged or left by someone else).
        """
        folder = self.file(CELLS_DIR)
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise RunDirError(f"{folder}: not a directory labelaudit made; move it away")
        folder.mkdir(exist_ok=True)
        # A cell model trained here before left its embeddings: they are not these cells'.
        self.file(f"{CELLS_DIR}/{EMBEDDINGS_NPY}").unlink(missing_ok=True)
        frame = pd.DataFrame(np.asarray(cells.probs, dtype=float), columns=list(class_names))
        frame.insert(0, "id", cells.table["cell_id"].astype(str).to_numpy())
        write_csv(self.file(f"{CELLS_DIR}/{OOF_CSV}"), frame)

    def read_embeddings(self, n_rows: int | None = None) -> np.ndarray | None:
        """``embeddings.npy`` (``None`` when absent); ``n_rows`` is checked if given."""
        if self._absent(EMBEDDINGS_NPY):
            return None
        path = self.file(EMBEDDINGS_NPY)
        emb = load_user_npy(path, "the run's embeddings.npy")
        if emb.ndim != 2 or emb.shape[1] < 1:
            raise RunDirError(f"{path}: shape {emb.shape}, expected N x D with D >= 1")
        if not np.issubdtype(emb.dtype, np.number) or np.issubdtype(emb.dtype, np.complexfloating):
            raise RunDirError(f"{path}: {emb.dtype} values, expected real numbers")
        if n_rows is not None and emb.shape[0] != n_rows:
            raise RunDirError(f"{path}: {emb.shape[0]} rows, expected {n_rows}")
        # Distances square the values: beyond MAX_EMBEDDING_VALUE they overflow. The
        # extremes carry NaN and infinity too, without a copy of a large array.
        extreme = max(abs(float(emb.min(initial=0))), abs(float(emb.max(initial=0))))
        if not np.isfinite(extreme) or extreme > MAX_EMBEDDING_VALUE:
            raise RunDirError(f"{path}: values that are not finite or beyond 1e15")
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
        folder = fold_dir_name(k)
        try:
            state = self.read_json_file(f"{folder}/{FOLD_STATE_JSON}")
        except (OSError, ValueError):  # absent, or not JSON
            state = None
        arrays = self.read_arrays(f"{folder}/{FOLD_OOF_NPZ}")
        return (state if isinstance(state, dict) else None), arrays

    def fold_assignment(self) -> np.ndarray:
        """The 0-based fold of each image, as cross-validation last assigned them."""
        frame = pd.read_csv(self.file(FOLDS_CSV), dtype={"id": str})
        return frame["fold"].to_numpy() - 1

    def read_json_file(self, name: str) -> Any:
        """A JSON run file (``bench.json``, ``retrain/metrics.json``); one that is not
        JSON (cut short, forged) is a :class:`RunDirError` naming it."""
        path = self.file(name)
        try:
            return read_json(path)
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 JSON"
            raise RunDirError(f"{path}: not valid JSON ({reason}); run its command again") from None

    def write_json_file(self, name: str, data: Any) -> Path:
        """Write a JSON run file atomically; returns its path."""
        path = self.file(name)
        write_json(path, data)
        return path

    # ------------------------------------------------------------ detection inputs

    def audit_inputs(self):
        """Everything the detectors need, read back from the run directory.

        Missing artifacts (no training yet) come back as ``None`` so detectors that
        do not need them can still run; ``cells`` is the cell level's (a
        ``scan --level cell``).
        """
        info = self.dataset_info()
        ids, labels = self.read_given(info)
        probs = self.read_probs(LabelCodec.from_info(info).names, ids)
        return make_audit_inputs(
            info,
            ids,
            labels,
            probs,
            self.read_embeddings(len(ids)),
            self.read_stats(),
            cells=self.read_cells(list(LabelCodec.from_info(info).names), ids),
        )


def _require_class_columns(frame: pd.DataFrame, class_names: list[str], path: Path) -> None:
    """A probabilities table needs ``id`` and one column per class of dataset.csv."""
    missing = [c for c in ["id", *class_names] if c not in frame.columns]
    if missing:
        raise RunDirError(f"{path} does not match dataset.csv (no column {missing[0]!r})")


def _probabilities(frame: pd.DataFrame, class_names: list[str], path: Path) -> np.ndarray:
    """The class columns as floats, each a probability (the file may be forged)."""
    values = frame[class_names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = first_bad_probability(values)
    if bad is not None:
        r, c, _ = bad
        raise RunDirError(
            f"{path}, line {r + 2}: {class_names[c]!r} is {str(frame[class_names[c]].iloc[r])!r}, "
            "not a probability in [0, 1]"
        )
    return values


def make_audit_inputs(
    info: Mapping[str, Any],
    ids: list[str],
    labels: np.ndarray,
    probs: np.ndarray | None,
    embeddings: np.ndarray | None,
    stats: pd.DataFrame | None,
    cells=None,
):
    """:class:`~labelaudit.detect.base.AuditInputs` of a run's dataset section (and
    the cell level's predictions, ``cells``, where the run has them)."""
    from labelaudit.detect.base import AuditInputs

    codec = LabelCodec.from_info(info)  # lenient: the section may be forged
    return AuditInputs(
        ids=ids,
        class_names=list(codec.names),
        class_tokens=list(codec.tokens),
        label_sep=codec.sep,
        labels=labels,
        probs=probs,
        embeddings=embeddings,
        stats=stats,
        protein_channel=info.get("protein_channel", "green"),
        exclusive_classes=tuple(exclusive_classes(info)),
        cells=cells,
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
