"""``labelaudit.pipeline.find_issues``: audit labels held in memory, in cleanlab's habit.

``find_issues(labels, pred_probs=..., features=..., images=...)`` takes what a user
has in a script or a notebook (label lists or a binary matrix, a model's out-of-sample
probabilities and embeddings, images as files or arrays) and returns an
:class:`~labelaudit.pipeline.results.AuditResult` (``.issues``, ``.summary``, ``.duplicates``,
``.report(path)``). It runs the same stages as ``scan --probs``:

- with ``images``: they (arrays written as TIFF files) and the labels become a
  generic-layout dataset in the work directory, and :func:`labelaudit.pipeline.scan` audits it
  (with ``pred_probs``: the supplied predictions; without: cross-validated training);
- without ``images``: the detectors run on the arrays alone (the detect and compare
  stages of a scan); the evidence that needs pixels (image quality, intensity, pixel
  duplicates, thumbnails) is skipped and ``summary["notes"]`` says so.

Every array is checked first; a bad one (shape, range, NaN) is one
:class:`~labelaudit.core.errors.SettingsError` naming it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labelaudit.core.errors import SettingsError
from labelaudit.core.userfiles import (
    MAX_EMBEDDING_VALUE,
    first_bad_probability,
    first_extreme,
)
from labelaudit.pipeline.results import AuditResult

if TYPE_CHECKING:
    from labelaudit.detect.base import CellPredictions

#: ``summary["notes"]`` when no images are given.
NO_IMAGES_NOTE = (
    "no images given: the evidence that needs pixels (image quality, mean intensity, "
    "exact and perceptual-hash duplicates, thumbnails) was skipped"
)
NO_FEATURES_NOTE = (
    "no features given: the embedding detectors (knn, isolation) and embedding "
    "duplicates were skipped"
)


# ------------------------------------------------------------------------ checking


def label_matrix(labels: Any, class_names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """The (N, K) boolean label matrix and the K class names.

    Parameters
    ----------
    labels
        A binary (N, K) matrix (a NumPy array of 0/1 or bool, or lists of bools), or
        one list of labels per image: class names, or integer class ids
        (``0 <= id < K``), as cleanlab's multi-label ``labels``.
    class_names
        The K class names (default: the matrix's column numbers, the integer ids up to
        the largest, or the sorted names found).

    Raises
    ------
    SettingsError
        One line naming the image (row) and value that is wrong.
    """
    columns = _column_names(labels)
    if columns is not None:  # a table: its columns name the classes
        class_names = columns if class_names is None else class_names
        labels = np.asarray(by_class(labels, [str(n) for n in class_names], "labels"))
    if isinstance(labels, np.ndarray) or _is_matrix(labels):
        matrix = np.asarray(labels)
        if matrix.ndim != 2:
            raise SettingsError(f"labels: a binary matrix must be N x K, got shape {matrix.shape}")
        if matrix.dtype != bool:
            if not np.issubdtype(matrix.dtype, np.number):
                raise SettingsError(f"labels: a binary matrix of 0 and 1, got {matrix.dtype}")
            bad = ~np.isin(matrix, (0, 1))
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise SettingsError(
                    f"labels[{r}, {c}] = {matrix[r, c].item()!r}: a binary label matrix "
                    "holds only 0 and 1"
                )
        k = matrix.shape[1]
        names = _names(class_names, [str(i) for i in range(k)], k)
        return matrix.astype(bool), names
    rows = list(labels)
    for r, row in enumerate(rows):
        if isinstance(row, str | bytes) or not isinstance(row, Sequence | set | frozenset):
            raise SettingsError(
                f"labels[{r}] = {row!r}: give each image's labels as a list "
                "(['Nucleoli', 'Cytosol'], or [] for none); split a joined string first"
            )
    values = {v for row in rows for v in row}
    ints = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values)
    if class_names is not None:
        names = _names(class_names, [], len(class_names))
    elif ints:
        names = [str(i) for i in range(max(values) + 1)] if values else []
    else:
        names = sorted(str(v) for v in values)
    if not names:
        raise SettingsError("labels: no class names and no labels: give class_names")
    index = {n: i for i, n in enumerate(names)}
    matrix = np.zeros((len(rows), len(names)), dtype=bool)
    for r, row in enumerate(rows):
        for v in row:
            if ints and isinstance(v, int | np.integer):
                if not 0 <= int(v) < len(names):
                    raise SettingsError(
                        f"labels[{r}]: class id {v} is out of range (0..{len(names) - 1})"
                    )
                matrix[r, int(v)] = True
            elif str(v) in index:
                matrix[r, index[str(v)]] = True
            else:
                raise SettingsError(f"labels[{r}]: {v!r} is not one of the class names")
    return matrix, names


def _column_names(table: Any) -> list[str] | None:
    """A table's column names (a pandas DataFrame's), or ``None``: no names, or the
    positions 0..K-1 that pandas gives a table made from an array."""
    columns = getattr(table, "columns", None)
    if columns is None or not hasattr(table, "to_numpy"):
        return None
    names = list(columns)
    if names == list(range(len(names))):
        return None
    return [str(c) for c in names]


def by_class(values: Any, names: list[str], what: str) -> Any:
    """``values`` with its columns in the order of ``names`` when it is a table with
    named columns (matched by name, never by position); other values as they are.

    Raises
    ------
    SettingsError
        The columns are not the class names (one line naming both).
    """
    columns = _column_names(values)
    if columns is None or columns == names:
        return values
    if sorted(columns) == sorted(names) and len(set(columns)) == len(columns):
        return values.iloc[:, [columns.index(n) for n in names]]
    shown = ", ".join(columns[:6]) + (", ..." if len(columns) > 6 else "")
    classes = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    raise SettingsError(
        f"{what}: its columns ({shown}) are not the class names ({classes}); name them "
        "as the classes, or give a NumPy array with the columns in class order"
    )


def _is_matrix(labels: Any) -> bool:
    """A list of equal-length rows of 0/1 numbers (not label lists)."""
    try:
        rows = list(labels)
    except TypeError:
        raise SettingsError(
            f"labels must be a matrix or a list of label lists, got {type(labels).__name__}"
        ) from None
    return bool(rows) and all(
        isinstance(row, Sequence | np.ndarray)
        and not isinstance(row, str)
        and len(row) == len(rows[0])
        and all(isinstance(v, bool | np.bool_) for v in row)
        for row in rows
    )


def _names(class_names: Sequence[str] | None, default: list[str], k: int) -> list[str]:
    if class_names is None:
        return default
    names = [str(n) for n in class_names]
    if len(names) != k:
        raise SettingsError(f"class_names: {len(names)} names for {k} label columns")
    if len(set(names)) != len(names) or not all(n.strip() for n in names):
        raise SettingsError("class_names must be distinct, non-empty names")
    if any("|" in n for n in names):
        raise SettingsError("class_names may not contain '|' (it joins labels in the run files)")
    return names


def check_probs(
    pred_probs: Any, n: int, k: int, name: str = "pred_probs", rows: str = "images"
) -> np.ndarray:
    """``pred_probs`` as an (N, K) float array of per-class probabilities in [0, 1].

    ``name`` and ``rows`` say in the messages which array it is and what its rows are.

    Raises
    ------
    SettingsError
        Not numbers, the wrong shape, NaN or infinite values, values outside [0, 1]:
        one line naming the first bad cell.
    """
    probs = _numbers(pred_probs, name)
    if probs.shape != (n, k):
        raise SettingsError(
            f"{name} has shape {probs.shape}; expected {n} rows ({rows}) x {k} columns (classes)"
        )
    bad = first_bad_probability(probs)
    if bad is not None and bad[2] == "nan":
        r, c, _ = bad
        raise SettingsError(f"{name}[{r}, {c}] is {probs[r, c]}: NaN or infinite")
    if bad is not None:
        r, c, _ = bad
        raise SettingsError(
            f"{name}[{r}, {c}] = {probs[r, c]:g} is outside [0, 1]: give per-class "
            "probabilities (a sigmoid of the logits), out-of-sample"
        )
    return probs


def _owner_row(j: int, owner: Any, ids: list[str], position: dict[str, int]) -> int:
    """The row of the image ``cell_images[j]`` names: an integer is its row, a string
    its id; an integer that is also another image's id is refused as ambiguous (ids
    given as numbers), and one that can only be an id is taken as one."""
    if isinstance(owner, int | np.integer) and not isinstance(owner, bool | np.bool_):
        as_row = int(owner) if 0 <= int(owner) < len(ids) else None
        as_id = position.get(str(owner))
        if as_row is not None and as_id is not None and as_row != as_id:
            raise SettingsError(
                f"cell_images[{j}] = {owner} is both image row {owner} and the id of row "
                f"{as_id}: name the images by their ids as strings"
            )
        if as_id is not None:
            return as_id
        if as_row is None:
            raise SettingsError(
                f"cell_images[{j}] = {owner}: no such image row (there are {len(ids)}) "
                "and no such id"
            )
        return as_row
    if isinstance(owner, str) and owner in position:
        return position[owner]
    raise SettingsError(
        f"cell_images[{j}] = {owner!r} names no image: give its row (0 to {len(ids) - 1}) or its id"
    )


def check_cells(
    cell_probs: Any, cell_images: Any, ids: list[str], names: list[str]
) -> CellPredictions:
    """The caller's cells as :class:`~labelaudit.detect.base.CellPredictions`.

    Parameters
    ----------
    cell_probs
        (M, K) out-of-sample per-class probabilities of M cells.
    cell_images
        M entries, each cell's image: its row (an integer) or its id (a string).
    ids
        The N image ids.
    names
        The K class names (a table's named columns are matched to them).

    Returns
    -------
    CellPredictions
        ``table``: ``cell_id`` (``{image id}_{j}``, j counting the image's cells from
        1), ``id`` and ``cell`` (that j).

    Raises
    ------
    SettingsError
        One of the two without the other, no cells, a bad probability (naming it), or
        a cell whose image is not among the labels' rows (naming the cell).
    """
    from labelaudit.detect.base import CellPredictions
    from labelaudit.pipeline.supplied import cell_table

    if cell_probs is None or cell_images is None:
        raise SettingsError(
            "cell_probs and cell_images go together: each cell's probabilities and the "
            "image (row or id) it belongs to"
        )
    owners = list(np.asarray(cell_images, dtype=object).ravel())
    if not owners:
        raise SettingsError("cell_images: no cells given")
    probs = check_probs(
        by_class(cell_probs, names, "cell_probs"), len(owners), len(names), "cell_probs", "cells"
    )
    position = {image_id: row for row, image_id in enumerate(ids)}
    rows = [_owner_row(j, owner, ids, position) for j, owner in enumerate(owners)]
    return CellPredictions(cell_table([ids[r] for r in rows]), probs)


def check_features(features: Any, n: int) -> np.ndarray:
    """``features`` as an (N, D) float32 array of finite numbers (embeddings)."""
    emb = _numbers(features, "features")
    if emb.ndim != 2 or emb.shape[0] != n or emb.shape[1] < 1:
        raise SettingsError(f"features has shape {emb.shape}; the labels need {n} rows x D")
    extreme = first_extreme(emb)
    if extreme is not None:
        r, c = extreme
        raise SettingsError(
            f"features[{r}, {c}] is {float(emb[r, c])!r}: NaN, infinite or beyond "
            f"{MAX_EMBEDDING_VALUE:g} (such values overflow the embeddings' distances)"
        )
    return emb.astype(np.float32)


def _numbers(values: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(values)
    except ValueError as exc:  # ragged rows
        raise SettingsError(f"{name} is not a rectangular array ({exc})") from None
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise SettingsError(f"{name} must hold real numbers, got {array.dtype}")
    return np.asarray(array, dtype=np.float64)


def _check_ids(ids: Sequence[str] | None, n: int) -> list[str]:
    if ids is None:
        return [f"{i:06d}" for i in range(n)]
    out = [str(i) for i in ids]
    if len(out) != n:
        raise SettingsError(f"ids: {len(out)} ids for {n} images")
    if len(set(out)) != n:
        raise SettingsError("ids must be distinct")
    bad = next((i for i in out if not i.strip() or "/" in i or "\\" in i or i in (".", "..")), None)
    if bad is not None:
        raise SettingsError(f"id {bad!r}: ids are plain names (no path separators)")
    return out


# ------------------------------------------------------------------------- the API


def find_issues(
    labels: Any,
    pred_probs: Any = None,
    features: Any = None,
    images: Any = None,
    class_names: Sequence[str] | None = None,
    *,
    ids: Sequence[str] | None = None,
    cell_probs: Any = None,
    cell_images: Any = None,
    out: str | Path | None = None,
    detectors: Sequence[str] | None = None,
    preset: str = "auto",
    cache_dir: str | Path | None = None,
    console: Any = None,
    **overrides: Any,
) -> AuditResult:
    """Find label and image issues in data held in memory.

    Parameters
    ----------
    labels
        The given labels: a binary (N, K) matrix, or one list per image of class names
        or integer class ids. A pandas DataFrame's column names are the class names.
    pred_probs
        Out-of-sample (cross-validated) per-class probabilities, (N, K) in [0, 1]; a
        DataFrame's columns are matched to the class names by name (``cell_probs``'s
        too), a NumPy array's are in class order. A
        model that saw an image's labels in training has learnt their errors. Without
        them, ``images`` are needed: cross-validated models are trained on them.
    features
        Embeddings, (N, D): the neighbour (knn), unusual-image (isolation forest) and
        embedding-duplicate evidence. Skipped when absent.
    images
        N image file paths, or N arrays (H x W, or H x W x C channels last; uint8 or
        uint16), or one (N, H, W[, C]) array. Without them, the evidence that needs
        pixels is skipped (:data:`NO_IMAGES_NOTE`).
    class_names
        The K class names (see :func:`label_matrix` for the defaults).
    ids
        One distinct name per image (default ``000000``, ``000001``, ...); with image
        paths, the paths are the ids.
    cell_probs, cell_images
        A cell-level model's out-of-sample probabilities, (M, K), for M cells of the
        images, and each cell's image (its row, or its id): e.g. a single-cell
        classifier's predictions on HPA cell crops. The cell model is a second view
        of each label (the label evidence weighs its strongest and mean cell per
        class; ``label_support_score`` and the other cell columns join the issues).
        With ``images`` they reach the scan as its ``cell_probs`` file.
    out
        The run directory to write (new, empty or labelaudit's); default a temporary
        one, removed when the result is garbage-collected.
    detectors
        Detector names to run (default: all that the inputs allow).
    preset, cache_dir, console, **overrides
        As for :func:`labelaudit.pipeline.scan` (training settings are used only when
        ``pred_probs`` is absent).

    Returns
    -------
    AuditResult
        ``.issues`` (a DataFrame indexed by the input's row, in review order),
        ``.summary``, ``.duplicates`` and ``.report(path)``.

    Raises
    ------
    SettingsError
        A bad array, class name, id or option: one line naming it.
    """
    if overrides:  # a misspelt setting is an error, trained or not (as in scan)
        from labelaudit.core.config import resolve_settings

        resolve_settings(preset, **overrides)
    matrix, names, probs, emb = _checked_arrays(labels, pred_probs, features, images, class_names)
    image_ids = _check_ids(ids, len(matrix))
    cells = None
    if cell_probs is not None or cell_images is not None:
        cells = check_cells(cell_probs, cell_images, image_ids, names)
    work, run_dir, temporary = _work_dirs(out)
    try:
        if probs is not None and images is None:
            result = _audit_arrays(
                run_dir, image_ids, matrix, names, probs, emb, detectors, cells
            )  # fmt: skip
        else:
            result = _audit_images(
                work, run_dir, images, ids, matrix, names, probs, emb,
                detectors=detectors, preset=preset, cache_dir=cache_dir, console=console,
                overrides=overrides, cells=cells,
            )  # fmt: skip
    except BaseException:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
        raise
    if emb is None and probs is not None:  # trained models make their own embeddings
        result.notes.append(NO_FEATURES_NOTE)
    if temporary:  # the run lives as long as the result that reads it
        weakref.finalize(result, shutil.rmtree, str(work), True)
    return result


def _checked_arrays(
    labels: Any,
    pred_probs: Any,
    features: Any,
    images: Any,
    class_names: Sequence[str] | None,
) -> tuple[np.ndarray, list[str], np.ndarray | None, np.ndarray | None]:
    """(label matrix, class names, probabilities, features), each checked.

    Raises
    ------
    SettingsError
        Fewer than 2 images, a bad array, or neither probabilities nor images.
    """
    matrix, names = label_matrix(labels, class_names)
    n, k = matrix.shape
    columns = _column_names(pred_probs)
    if class_names is None and names == [str(i) for i in range(k)] and columns is not None:
        # Class ids (cleanlab's convention) and named probability columns: column j is
        # class j, so the columns name the classes (unless they are the ids reordered).
        names = columns if len(columns) == k and sorted(columns) != sorted(names) else names
    if n < 2:
        raise SettingsError(f"labels: {n} image(s); an audit needs at least 2")
    probs = (
        None if pred_probs is None else check_probs(by_class(pred_probs, names, "pred_probs"), n, k)
    )
    emb = None if features is None else check_features(features, n)
    if images is None and probs is None:
        raise SettingsError(
            "give pred_probs (out-of-sample probabilities) or images to train on: "
            "without either there is nothing to audit the labels against"
        )
    return matrix, names, probs, emb


#: Marks a directory of inputs find_issues wrote (the images and labels it scans).
INPUTS_MARKER = ".labelaudit-inputs"


def _work_dirs(out: str | Path | None) -> tuple[Path, Path, bool]:
    """``(work directory, run directory, temporary?)``.

    The work directory holds what find_issues writes for the scan to read (labels,
    images given as arrays, the probabilities): a temporary directory, or beside
    ``out`` as ``OUT-inputs`` (new, or one find_issues wrote).
    """
    if out is None:
        work = Path(tempfile.mkdtemp(prefix="labelaudit-"))
        (work / INPUTS_MARKER).touch()
        return work, work / "run", True
    run_dir = Path(out)
    work = run_dir.with_name(run_dir.name + "-inputs")
    if (work.exists() or work.is_symlink()) and not (
        work.is_dir() and not work.is_symlink() and (work / INPUTS_MARKER).is_file()
    ):
        raise SettingsError(
            f"{work} exists and labelaudit did not write it (find_issues keeps its inputs "
            "there): move it away or choose another out"
        )
    return work, run_dir, False


def _audit_arrays(
    run_dir: Path,
    ids: list[str],
    labels: np.ndarray,
    names: list[str],
    probs: np.ndarray,
    emb: np.ndarray | None,
    detectors: Sequence[str] | None,
    cells: CellPredictions | None = None,
) -> AuditResult:
    """Detect and compare on the arrays alone (a scan's stages after training); with
    ``cells``, the cell findings after them."""
    import pandas as pd

    from labelaudit.cells.audit import forget_cells, write_supplied_cell_findings
    from labelaudit.core.config import resolve_settings
    from labelaudit.core.io import write_csv
    from labelaudit.data.labels import LabelCodec
    from labelaudit.pipeline.compare import detect_and_compare
    from labelaudit.pipeline.leaks import add_duplicates
    from labelaudit.pipeline.preflight import preflight
    from labelaudit.pipeline.scan import SUPPLIED_NOTE
    from labelaudit.rundir import (
        DATASET_CSV,
        OOF_CSV,
        RunDir,
        make_audit_inputs,
        open_output_dir,
        run_lock,
    )

    preflight(resolve_settings("cpu"), labels, names, 1, detectors=detectors, trains=False)
    open_output_dir(run_dir)
    run = RunDir(run_dir)
    with run_lock(run_dir):
        info: dict[str, Any] = {
            "path": None,
            "layout": "arrays",
            "label_file": None,
            "n_images": len(ids),
            "n_classes": len(names),
            "class_names": names,
            "class_tokens": names,
            "label_sep": "|",
            "channels": [],
            "protein_channel": None,
            "load_options": {},
        }
        given = LabelCodec(names, "|").format_many(labels)
        write_csv(run.file(DATASET_CSV), pd.DataFrame({"id": ids, "labels": given}))
        run.write_section("dataset", info)
        run.forget_oof()
        if emb is not None:
            run.write_oof(ids, names, probs, emb)
        else:
            frame = pd.DataFrame(probs, columns=names)
            frame.insert(0, "id", ids)
            write_csv(run.file(OOF_CSV), frame)
        run.write_section(
            "predictions",
            {"supplied": True, "probs": "array", "embeddings": None, "note": SUPPLIED_NOTE},
        )
        run.edit_run(lambda data: data.pop("second_round", None))  # not trained here
        forget_cells(run_dir)  # an earlier call's cells are not this call's
        if cells is not None:
            run.write_cell_probs(cells, names)
        audit = make_audit_inputs(info, ids, labels, probs, emb, None, cells=cells)
        detect_and_compare(audit, run_dir, detectors=detectors)
        if cells is not None:
            write_supplied_cell_findings(run_dir, audit)
        if emb is not None:
            add_duplicates(run_dir, audit, None)
    return AuditResult(
        run_dir=run_dir, notes=[NO_IMAGES_NOTE], positions={i: r for r, i in enumerate(ids)}
    )


def _audit_images(
    work: Path,
    run_dir: Path,
    images: Any,
    ids: Sequence[str] | None,
    labels: np.ndarray,
    names: list[str],
    probs: np.ndarray | None,
    emb: np.ndarray | None,
    *,
    detectors: Sequence[str] | None,
    preset: str,
    cache_dir: str | Path | None,
    console: Any,
    overrides: dict[str, Any],
    cells: CellPredictions | None = None,
) -> AuditResult:
    """Write the images and labels as a generic-layout dataset and scan it (``cells``:
    written as the scan's ``cell_probs`` file, each cell named by its image's file)."""
    import pandas as pd

    from labelaudit.core.io import write_csv
    from labelaudit.pipeline.scan import scan

    n = len(labels)
    work.mkdir(parents=True, exist_ok=True)
    (work / INPUTS_MARKER).touch()
    files, image_root, input_ids = _image_files(work, images, ids, n)
    dataset = work / "dataset"
    dataset.mkdir(exist_ok=True)
    (dataset / "classes.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    rows = ["|".join(names[k] for k in np.flatnonzero(row)) for row in labels]
    write_csv(dataset / "labels.csv", pd.DataFrame({"image": files, "labels": rows}))
    probs_file = emb_file = None
    if probs is not None:
        probs_file = work / "pred_probs.npy"
        np.save(probs_file, probs)
        if emb is not None:
            emb_file = work / "features.npy"
            np.save(emb_file, emb)
    elif emb is not None:
        raise SettingsError("features need pred_probs (without them, the scan trains its own)")
    cells_file = None
    if cells is not None:
        cells_file = work / "cell_probs.csv"
        file_of = dict(zip(_check_ids(ids, n), files, strict=True))  # the cells' ids
        frame = pd.DataFrame(cells.probs, columns=names)
        frame.insert(0, "id", [file_of[i] for i in cells.table["id"]])
        frame.insert(1, "cell", cells.table["cell"].to_numpy())
        write_csv(cells_file, frame)
    result = scan(
        dataset,
        run_dir,
        images=image_root,
        preset=preset,
        cache_dir=cache_dir,
        detectors=detectors,
        probs=probs_file,
        embeddings=emb_file,
        cell_probs=cells_file,
        console=console,
        **overrides,
    )
    result.positions = {f: r for r, f in enumerate(files)}
    result.input_ids = input_ids
    return result


def _image_files(
    work: Path, images: Any, ids: Sequence[str] | None, n: int
) -> tuple[list[str], Path, list[str] | None]:
    """The images as files: ``(paths relative to the image root, image root, ids)``;
    the ids are the caller's where the files are named after them (``None``: the paths).

    Paths are used where they are (relative to their deepest common folder); arrays
    are written as TIFF files named by ``ids`` into ``work/images``.
    """
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4) or images.shape[0] != n:
            raise SettingsError(
                f"images has shape {images.shape}; expected ({n}, H, W) or ({n}, H, W, C)"
            )
        images = list(images)
    images = list(images)
    if len(images) != n:
        raise SettingsError(f"images: {len(images)} images for {n} label rows")
    if all(isinstance(x, str | os.PathLike) for x in images):
        paths = [Path(x).resolve() for x in images]
        missing = next((p for p in paths if not p.is_file()), None)
        if missing is not None:
            raise SettingsError(f"images: {missing} is not a file")
        root = Path(os.path.commonpath([str(p.parent) for p in paths]))
        files = [p.relative_to(root).as_posix() for p in paths]
        if len(set(files)) != n:
            raise SettingsError("images: a path is given twice")
        return files, root, None if ids is None else _check_ids(ids, n)
    import tifffile

    names = _check_ids(ids, n)
    root = work / "images"
    root.mkdir(parents=True, exist_ok=True)
    files = []
    channels: tuple[int, ...] | None = None
    for r, (name, image) in enumerate(zip(names, images, strict=True)):
        array = np.asarray(image)
        if array.ndim not in (2, 3) or (array.ndim == 3 and not 1 <= array.shape[2] <= 8):
            raise SettingsError(
                f"images[{r}] has shape {array.shape}; expected H x W or H x W x C (C <= 8)"
            )
        if array.dtype not in (np.uint8, np.uint16):
            raise SettingsError(
                f"images[{r}] is {array.dtype}; give uint8 or uint16 pixels "
                "(e.g. (x * 255).astype(np.uint8) for floats in [0, 1])"
            )
        if channels is None:
            channels = array.shape[2:]
        elif array.shape[2:] != channels:
            raise SettingsError(
                f"images[{r}] has {(array.shape[2:] or (1,))[0]} channel(s), images[0] "
                f"{(channels or (1,))[0]}"
            )
        # Channels last as TIFF samples (axes YXS): without planarconfig tifffile would
        # store an H x W x C array as H pages of W x C, and the scan would read that.
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        planar = "contig" if array.ndim == 3 else None
        tifffile.imwrite(
            root / f"{name}.tiff", array, photometric="minisblack", planarconfig=planar
        )
        files.append(f"{name}.tiff")
    return files, root, names
