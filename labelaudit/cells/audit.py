"""The cell-level stage of ``labelaudit scan --level cell``.

cells (segmented, or ``--masks``) -> cell cache -> cell cross-validation (folds by
field, each cell inheriting its field's labels) -> cell findings -> ``cells.csv``,
extra columns in ``issues.csv``, overlays of the most suspect fields, and
``run.json["cells"]``.

Artifacts, beside the field-level ones:

``RUN/cells.csv``
    one row per cell: ``cell_id``, ``id`` (its field), ``cell`` (mask label),
    ``area``, box, ``fold``, ``predicted_labels`` (classes at p >= 0.5),
    ``sibling_deviation``, ``odd``, ``outlier_score``, ``outlier``.
``RUN/cells/``
    the cell cross-validation's own run directory (``oof_probs.csv`` per cell,
    ``embeddings.npy``, folds, checkpoints; resumable like the field level) and
    ``overlays/{ID}.jpg``.
``RUN/issues.csv``
    gains ``n_cells``, ``label_support``, ``label_support_score``,
    ``unsupported_labels``, ``cell_missing_labels``, ``n_odd_cells``,
    ``n_outlier_cells`` (see :mod:`labelaudit.detect.cells`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.console import Console

from labelaudit.core.config import TrainSettings
from labelaudit.core.errors import RunDirError, SettingsError
from labelaudit.core.userfiles import remove_entry
from labelaudit.data.dataset import Dataset
from labelaudit.data.labels import split_labels
from labelaudit.detect import AuditInputs, CellPredictions, get_detector
from labelaudit.detect.cells import CellEvidence, CellFindingParams
from labelaudit.rundir import (
    CELL_OVERLAYS_DIR,
    CELLS_CSV,
    CELLS_DIR,
    ISSUES_CSV,
    RunDir,
    recorded_overlay,
)
from labelaudit.train.metrics import summary

if TYPE_CHECKING:  # the cache and the training are imported when a cell audit runs
    from labelaudit.cells.crops import CellCache
    from labelaudit.train.cv import CVResult

#: Columns the cell stage adds to ``issues.csv``.
ISSUE_COLUMNS: tuple[str, ...] = tuple(CellEvidence.issue_columns)
#: Fields shown with overlays in the report (the most suspect first).
N_OVERLAYS = 12


def default_cell_size(field_size: int) -> int:
    """Crop side for cells: half the field training size, a multiple of 8, at least 32."""
    return max(32, (field_size // 2) // 8 * 8)


@dataclasses.dataclass
class CellStage:
    """A finished cell cross-validation: the cells and the cell model's view of them."""

    cache: CellCache
    cv: CVResult
    size: int
    masks: str | Path | None
    timings: dict[str, float]

    def predictions(self) -> CellPredictions:
        """The cells (``cell_id``, image ``id``, mask label, area, box) and their
        out-of-fold probabilities and embeddings, as the detectors take them."""
        assert self.cv.oof_probs is not None  # a complete cross-validation has them
        table = self.cache.cells.rename(columns={"id": "cell_id", "field": "id"})
        return CellPredictions(
            table[["cell_id", "id", "cell", "area", "y0", "x0", "y1", "x1"]],
            self.cv.oof_probs,
            self.cv.embeddings,
        )


def train_cells(
    run_dir: str | Path,
    dataset: Dataset,
    settings: TrainSettings,
    *,
    masks: str | Path | None = None,
    cell_size: int | None = None,
    cache_dir: str | Path | None = None,
    fold: int | None = None,
    console: Console | None = None,
) -> CellStage | None:
    """The cells (segmented, or read from ``masks``) and their cross-validation.

    ``scan --level cell`` runs this before the field detectors (so the label evidence
    can weigh the cell model's view), then :func:`write_cell_findings`.

    Parameters
    ----------
    run_dir
        The run directory (the cell folds go to ``RUN/cells/``).
    dataset
        The scanned dataset.
    settings
        The field-level training settings; the cell models use them with
        ``image_size = cell_size``.
    masks
        A directory of ``{ID}_predictedmask.png`` / ``{ID}.npz`` masks made
        elsewhere (used as given); ``None`` segments every field
        (:func:`labelaudit.cells.segment.segment_field`, border cells dropped).
    cell_size
        Side of the cell crops (:func:`default_cell_size` of the field size).
    cache_dir
        Where the cell cache lives.
    fold
        Train only this cell fold (1-based), like ``scan --fold``; the findings are
        made by the call that finds every cell fold finished.
    console
        Where progress goes.

    Returns
    -------
    CellStage or None
        ``None`` while cell folds are unfinished (``fold``) or on a non-zero
        distributed rank.

    Raises
    ------
    SettingsError
        No cells were found, or too few fields with cells for the folds.
    DatasetError
        A mask file is missing or unreadable (naming it).
    """
    console = console or Console(quiet=True)
    timings: dict[str, float] = {}
    size = int(cell_size or default_cell_size(settings.image_size))

    t = time.perf_counter()
    cache = _cell_cache(dataset, masks, size, cache_dir, console)
    timings["cells_cache"] = time.perf_counter() - t

    t = time.perf_counter()
    cell_settings = settings.replace(image_size=size)
    cv = _cross_validate_cells(cache, dataset, cell_settings, Path(run_dir), fold, console)
    timings["cells_train"] = time.perf_counter() - t
    if getattr(cv, "rank", 0) != 0 or not cv.complete:
        return None
    return CellStage(cache, cv, size, masks, timings)


def write_cell_findings(
    run_dir: str | Path,
    dataset: Dataset,
    stage: CellStage,
    seed: int = 0,
    params: CellFindingParams | None = None,
    console: Console | None = None,
) -> dict:
    """``cells.csv``, the cell columns of ``issues.csv`` (which must exist), the
    overlays and ``run.json["cells"]``; returns that section."""
    console = console or Console(quiet=True)
    run = _after_detection(run_dir)
    t = time.perf_counter()
    inputs = AuditInputs(
        list(dataset.ids),
        list(dataset.class_names),
        list(dataset.class_tokens),
        dataset.label_sep,
        dataset.labels,
        cells=stage.predictions(),
    )
    per_cell, per_field = _write_findings(run, inputs, stage.cv.fold_of + 1, params, seed)
    source = _mask_source(stage.masks, stage.cache)
    overlays = write_overlays(run.path, dataset, source, per_cell, per_field)
    timings = {**stage.timings, "cells_findings": time.perf_counter() - t}

    section = {
        "source": _source(stage.masks),
        "masks": str(Path(stage.masks).resolve())
        if stage.masks is not None
        else str(stage.cache.masks_dir),
        "cell_size": stage.size,
        **_cells_section(inputs, per_cell, per_field, params),
    }
    section["metrics"] = summary(stage.cv.metrics) if stage.cv.metrics else {}
    section["overlays"] = overlays
    section["timings"] = {k: round(v, 3) for k, v in timings.items()}
    _record(run, section, console)
    return section


#: ``run.json["cells"]["source"]`` of cells whose probabilities the caller supplied.
SUPPLIED_SOURCE = (
    "supplied: a cell-level model's probabilities made elsewhere "
    "(scan --cell-probs, find_issues cell_probs)"
)


def write_supplied_cell_findings(
    run_dir: str | Path,
    inputs: AuditInputs,
    seed: int = 0,
    params: CellFindingParams | None = None,
    console: Console | None = None,
) -> dict:
    """The cell findings of cell probabilities a caller supplied (no masks, no training).

    Writes ``cells.csv``, the cell columns of ``issues.csv`` (which must exist) and
    ``run.json["cells"]`` as :func:`write_cell_findings` does, without overlays (there
    are no masks to draw) or a cell model's metrics.

    Parameters
    ----------
    run_dir
        The run directory, after detection.
    inputs
        The audit inputs with ``inputs.cells``.
    seed, params, console
        As for :func:`write_cell_findings`.

    Returns
    -------
    dict
        The ``run.json["cells"]`` section.
    """
    console = console or Console(quiet=True)
    run = _after_detection(run_dir)
    per_cell, per_field = _write_findings(run, inputs, None, params, seed)
    section = {
        "source": SUPPLIED_SOURCE,
        "masks": None,
        "cell_size": None,
        **_cells_section(inputs, per_cell, per_field, params),
        "metrics": {},
        "overlays": [],
    }
    _record(run, section, console)
    return section


def _after_detection(run_dir: str | Path) -> RunDir:
    """The run directory, whose ``issues.csv`` the cell findings add columns to."""
    run = RunDir(run_dir)
    if not run.file(ISSUES_CSV).is_file():
        raise RunDirError(f"{run.file(ISSUES_CSV)}: not found; the cell stage runs after detection")
    return run


def _record(run: RunDir, section: dict[str, Any], console: Console) -> None:
    """Write ``run.json["cells"]`` and say what the cells found."""
    run.write_section("cells", section)
    console.print(
        f"cells: {section['n_fields_with_unsupported_labels']} fields with a label no cell "
        f"shows, {section['n_fields_with_cell_missing_labels']} with a class most cells show "
        f"but not labelled; {section['n_odd_cells']} odd cells (in {run.file(CELLS_CSV)})"
    )


def _mask_source(masks: str | Path | None, cache: CellCache) -> str | Path:
    """The masks the cells were cut with: the given ones, or those the cache segmented."""
    source = masks if masks is not None else cache.masks_dir
    if source is None:
        raise RunDirError(f"the cell cache {cache.path} lacks the masks it segmented")
    return source


def _source(masks: str | Path | None) -> str:
    """Where the cells come from, in words."""
    return f"masks from {masks}" if masks is not None else "segmented (scikit-image)"


def _n_fields_with_cells(cache: CellCache) -> int:
    return int(cache.cells["field"].nunique()) if len(cache) else 0


def _cell_cache(
    dataset: Dataset,
    masks: str | Path | None,
    size: int,
    cache_dir: str | Path | None,
    console: Console,
) -> CellCache:
    """The cell cache (segmenting or reading ``masks``); refuses a dataset without cells."""
    from labelaudit.cells.crops import build_cell_cache

    cache = build_cell_cache(dataset, masks, size, cache_dir)
    console.print(
        f"cells: {len(cache)} cells in {_n_fields_with_cells(cache)} of {len(dataset)} fields "
        f"({_source(masks)}); cell cache {'reused' if cache.reused else 'built'} {cache.path}"
    )
    if len(cache) == 0:
        raise SettingsError(
            "no cells found in any field" + ("" if masks else "; check the stains or pass --masks")
        )
    return cache


def _cross_validate_cells(
    cache: CellCache,
    dataset: Dataset,
    cell_settings: TrainSettings,
    run_dir: Path,
    fold: int | None,
    console: Console,
) -> CVResult:
    """Cell cross-validation: folds by field, each cell inheriting its field's labels."""
    from labelaudit.train.cv import cross_validate

    field_index = cache.cells["field_index"].to_numpy(dtype=np.int64)
    return cross_validate(
        cache.images,
        dataset.labels[field_index],
        cache.ids,
        dataset.class_names,
        cell_settings,
        run_dir / CELLS_DIR,
        f"{dataset.fingerprint()}:{cache.path.name}",
        groups=field_index,
        fold=fold,
        console=console,
    )


def _write_findings(
    run: RunDir,
    inputs: AuditInputs,
    folds: np.ndarray | None,
    params: CellFindingParams | None,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cell findings: ``cells.csv`` and the cell columns of ``issues.csv``.

    ``folds``: each cell's 1-based cell fold (a column of ``cells.csv``), where the
    cells were cross-validated here."""
    thresholds = dataclasses.asdict(params or CellFindingParams())
    detector = get_detector("cells", **thresholds, random_state=seed)
    assert isinstance(detector, CellEvidence)
    per_cell, per_field = detector.tables(inputs)
    if folds is not None:
        per_cell.insert(per_cell.columns.get_loc("area") + 1, "fold", folds)
    run.write_table(CELLS_CSV, per_cell)
    run.add_issue_columns(per_field, ISSUE_COLUMNS)  # the field stage's rows, our columns
    return per_cell, per_field


def _cells_section(
    inputs: AuditInputs,
    per_cell: pd.DataFrame,
    per_field: pd.DataFrame,
    params: CellFindingParams | None,
) -> dict[str, Any]:
    """The findings of ``run.json["cells"]`` (without the source, metrics, overlays)."""
    with_cells = per_field["n_cells"] > 0
    return {
        "n_cells": int(len(per_cell)),
        "n_fields_with_cells": int(with_cells.sum()),
        "cells_per_field": _describe(per_field["n_cells"]),
        "n_unsupported_labels": int(
            sum(len(split_labels(s, inputs.label_sep)) for s in per_field["unsupported_labels"])
        ),
        "n_fields_with_unsupported_labels": int((per_field["unsupported_labels"] != "").sum()),
        "n_fields_with_cell_missing_labels": int((per_field["cell_missing_labels"] != "").sum()),
        "n_odd_cells": int(per_cell["odd"].sum()),
        "n_outlier_cells": int(per_cell["outlier"].sum()),
        "params": (params or CellFindingParams()).__dict__,
        "class_thresholds": dict(
            zip(inputs.class_tokens, per_field.attrs["class_thresholds"], strict=True)
        ),
    }


def _describe(values: pd.Series) -> dict[str, float]:
    v = values.to_numpy(dtype=float)
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}


def suspect_fields(per_field: pd.DataFrame, n: int = N_OVERLAYS) -> list[str]:
    """Fields to show first: unsupported labels, then missing labels, then odd cells.

    Within each group, the lowest label support score first.
    """
    frame = per_field[per_field["n_cells"] > 0].copy()
    frame["_u"] = frame["unsupported_labels"] != ""
    frame["_m"] = frame["cell_missing_labels"] != ""
    frame = frame.sort_values(
        ["_u", "_m", "n_odd_cells", "label_support_score"],
        ascending=[False, False, False, True],
        na_position="last",
        kind="stable",
    )
    return [str(i) for i in frame.index[:n]]


def write_overlays(
    run_dir: Path,
    dataset: Dataset,
    masks_dir: str | Path,
    per_cell: pd.DataFrame,
    per_field: pd.DataFrame,
    n: int = N_OVERLAYS,
) -> list[dict]:
    """Overlays of the most suspect fields: cell outlines, each cell tagged with its classes.

    Returns one ``{"id", "file", "given", "support", "unsupported", "missing"}`` per
    picture (``file`` relative to the run directory).
    """
    from labelaudit.cells.dataset import read_field
    from labelaudit.cells.masks import load_masks
    from labelaudit.cells.overlay import overlay_image, save_image

    chosen = suspect_fields(per_field, n)
    if not chosen:
        return []
    masks = load_masks(masks_dir, chosen)
    out_dir = run_dir / CELL_OVERLAYS_DIR
    _remove_recorded_overlays(run_dir)  # pictures of an earlier selection (ours only)
    out_dir.mkdir(parents=True, exist_ok=True)
    position = {fid: i for i, fid in enumerate(dataset.ids)}
    names = dict(zip(dataset.class_tokens, dataset.class_names, strict=True))
    pictures = []
    for fid in chosen:
        rows = per_cell[per_cell["id"] == fid]
        tags = {
            int(c): ", ".join(_short(names[t]) for t in split_labels(p, dataset.label_sep)) or "-"
            for c, p in zip(rows["cell"], rows["predicted_labels"], strict=True)
        }
        picture = overlay_image(
            read_field(dataset, position[fid]), masks[fid], tags=tags, min_side=384
        )
        target = save_image(out_dir / f"{_file_name(fid)}.jpg", picture)
        info = per_field.loc[fid]
        pictures.append(
            {
                "id": fid,
                "file": str(target.relative_to(run_dir)),
                "given": dataset.format_labels(dataset.labels[position[fid]]),
                "support": info["label_support"],
                "unsupported": info["unsupported_labels"],
                "missing": info["cell_missing_labels"],
            }
        )
    return pictures


def _short(name: str) -> str:
    """A class name short enough to tag a cell (first word, at most 12 characters)."""
    return name.split()[0][:12]


def _file_name(image_id: str) -> str:
    """A file name for ``image_id``: readable, and unique (ids may hold ``/``)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in image_id)
    if safe == image_id:
        return safe
    return f"{safe[-60:]}-{hashlib.sha1(image_id.encode()).hexdigest()[:8]}"


def _recorded_cells(run_dir: Path) -> dict | None:
    """``run.json["cells"]``: what the last cell-level audit wrote (``None``: none)."""
    return RunDir(run_dir).section("cells")


def _remove_recorded_overlays(run_dir: Path) -> None:
    """Delete the overlay pictures ``run.json["cells"]`` records, and nothing else.

    Files someone else put into ``RUN/cells/overlays`` stay (and so does the
    folder then).
    """
    section = _recorded_cells(run_dir) or {}
    overlays = run_dir / CELL_OVERLAYS_DIR
    entries = section.get("overlays")
    for entry in entries if isinstance(entries, list) else []:
        # run.json is read back (untrusted): only a plain picture of overlays/ goes.
        picture = recorded_overlay(run_dir, entry)
        if picture is not None:
            remove_entry(overlays, picture.name)
    with contextlib.suppress(OSError):  # only when empty
        (run_dir / CELL_OVERLAYS_DIR).rmdir()


def forget_cells(run_dir: str | Path) -> None:
    """Drop a previous cell-level audit's results from a run directory.

    A field-level scan rewrites ``issues.csv`` without the cell columns; the old
    ``cells.csv``, overlays and ``run.json["cells"]`` would otherwise describe
    another scan. Only what that audit recorded in ``run.json["cells"]`` is
    removed (``cells.csv`` and its overlay pictures); without that section nothing
    is deleted. The cell cross-validation (``RUN/cells/`` folds) is kept, so a
    later ``--level cell`` scan reuses it.
    """
    run_dir = Path(run_dir)
    if _recorded_cells(run_dir) is None:
        return
    (run_dir / CELLS_CSV).unlink(missing_ok=True)
    _remove_recorded_overlays(run_dir)
    RunDir(run_dir).edit_run(lambda data: data.pop("cells", None))
