"""Segment every field of a dataset: masks, overlays, a cell table, a comparison.

``segment_dataset`` writes into ``OUT``::

    masks/{ID}_predictedmask.png   one label image per field (readable by --masks)
    overlays/{ID}.jpg              composite with cell outlines (reference in magenta)
    cells.csv                      one row per cell: id, cell, area, box
    compare.csv                    with ``compare``: per field, both conventions
    segment.json                   settings, counts, timings, pooled comparison

Every file is written atomically; the dataset directory is only read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from labelaudit.cells.masks import (
    compare_masks,
    find_mask,
    read_mask,
    summarize_comparisons,
    write_mask,
)
from labelaudit.cells.overlay import overlay_image, save_image
from labelaudit.cells.segment import SegmentParams, drop_border_cells, segment_field
from labelaudit.core.errors import DatasetError, SettingsError
from labelaudit.core.io import write_csv, write_json
from labelaudit.data.cache import split_channels
from labelaudit.data.dataset import Dataset
from labelaudit.data.layouts import load_dataset
from labelaudit.data.parallel import available_cores, map_fields
from labelaudit.data.readers import DEFAULT_MAX_PIXELS, read_array
from labelaudit.rundir import OUTPUT_KINDS, dataset_inputs, open_output_dir

# Which comparison the summary leads with: the reference masks keep the cells cut
# by the field border, so "all" compares like with like (segmentation run with the
# border cells kept); "interior" scores the segmentation's real output (border
# cells dropped) against the reference's interior cells.
HEADLINE = "all"


def read_field(dataset: Dataset, i: int) -> dict[str, np.ndarray]:
    """Decode field ``i`` of ``dataset`` at full resolution, ``channel -> (H, W)``."""
    return read_planes(dataset.sources[i].paths, dataset.channels)


def read_planes(paths: tuple[Path, ...], channels: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Decode a field's files (one per channel, or one holding all) into named planes.

    Raises
    ------
    DatasetError
        When a file cannot be decoded or has the wrong number of channels.
    """
    n = len(channels)
    if len(paths) == 1:
        planes = split_channels(read_array(paths[0]), n, paths[0])
    else:
        planes = [read_array(p) for p in paths]
        for p, plane in zip(paths, planes, strict=True):
            if plane.ndim != 2:
                raise DatasetError(
                    f"expected a single-channel image, got shape {plane.shape}", path=p
                )
    return dict(zip(channels, planes, strict=True))


def cell_table(labels: np.ndarray) -> pd.DataFrame:
    """One row per cell of a label image: ``cell, area, y0, x0, y1, x1`` (box end exclusive)."""
    labels = np.asarray(labels)
    areas = np.bincount(labels.ravel()) if labels.size else np.zeros(1, dtype=np.int64)
    rows = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        rows.append(
            {
                "cell": k,
                "area": int(areas[k]),
                "y0": sl[0].start,
                "x0": sl[1].start,
                "y1": sl[0].stop,
                "x1": sl[1].stop,
            }
        )
    return pd.DataFrame(rows, columns=["cell", "area", "y0", "x0", "y1", "x1"])


def _job(args: tuple) -> dict:
    _, image_id, paths, names, out_dir, params, ref_path, overlays, mask_format = args
    channels = read_planes(paths, names)
    started = time.perf_counter()
    full = segment_field(channels, params, drop_border=False)
    labels = drop_border_cells(full) if params.drop_border else full
    seconds = time.perf_counter() - started
    write_mask(out_dir / "masks", image_id, labels, mask_format)
    record: dict = {"id": image_id, "cells": int(labels.max()), "seconds": seconds}
    ref = None
    if ref_path is not None:
        ref = read_mask(ref_path, image_id)
        if ref.shape != labels.shape:
            raise DatasetError(
                f"mask is {ref.shape[1]} x {ref.shape[0]} px, the field "
                f"{labels.shape[1]} x {labels.shape[0]} px",
                path=ref_path,
                image=image_id,
            )
        record["all"] = compare_masks(full, ref)
        record["interior"] = compare_masks(labels, ref, exclude_border=True)
    if overlays:
        picture = overlay_image(channels, labels, reference=ref)
        save_image(out_dir / "overlays" / f"{image_id}.jpg", picture)
    table = cell_table(labels)
    table.insert(0, "id", image_id)
    record["table"] = table
    return record


def _field_jobs(
    dataset: Dataset,
    out: Path,
    params: SegmentParams,
    ref_paths: list[Path | None],
    overlays: bool,
    mask_format: str,
) -> list[tuple]:
    """One :func:`_job` argument tuple per field, in dataset order."""
    return [
        (i, image_id, src.paths, dataset.channels, out, params, ref, overlays, mask_format)
        for i, (image_id, src, ref) in enumerate(
            zip(dataset.ids, dataset.sources, ref_paths, strict=True)
        )
    ]


def segment_dataset(
    dataset_dir: str | Path | Dataset,
    out_dir: str | Path,
    *,
    layout: str | None = None,
    compare: str | Path | None = None,
    params: SegmentParams | None = None,
    workers: int | None = None,
    overlays: bool = True,
    mask_format: str = "png",
    progress: Callable[[int, int], None] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict:
    """Segment every field of a dataset and write masks, overlays and tables.

    Parameters
    ----------
    dataset_dir
        The dataset directory (only read), or a loaded :class:`Dataset`.
    out_dir
        Where to write (see the module docstring for the files).
    layout
        The dataset layout; detected when ``None``.
    compare
        A directory of masks made elsewhere (``{ID}_predictedmask.png`` or
        ``{ID}.npz``, one per field) to compare against.
    params
        Segmentation settings (:class:`SegmentParams`).
    workers
        Processes; all cores when ``None``.
    overlays
        Write the overlay pictures.
    mask_format
        ``"png"`` or ``"npz"``.
    progress
        Called as ``progress(done, total)`` after each field.

    Returns
    -------
    dict
        What ``segment.json`` holds: ``fields``, ``cells``, ``seconds``,
        ``seconds_per_field`` (segmentation alone, decoding excluded), ``params``
        and, with ``compare``, ``compare`` = ``{"headline": ..., "all": ...,
        "interior": ...}`` (pooled :func:`compare_masks` results; see
        :data:`HEADLINE`).

    Raises
    ------
    DatasetError
        On an unreadable field, or a missing, unreadable or wrongly sized mask in
        ``compare`` (the message names the file).
    SettingsError
        On a bad setting, an output directory on, inside or around an input, or
        an existing non-empty directory that is not a segment output.
    """
    dataset = (
        dataset_dir
        if isinstance(dataset_dir, Dataset)
        else load_dataset(dataset_dir, layout, max_pixels=max_pixels)
    )
    params = params or SegmentParams()
    if mask_format not in ("png", "npz"):
        raise SettingsError(f"unknown mask format {mask_format!r}; choose png or npz")
    out = Path(out_dir)
    reference = Path(compare) if compare is not None else None
    inputs = dataset_inputs(dataset)
    ref_paths = _reference_masks(dataset, reference, inputs)
    # New, empty, or an earlier segment output (segment.json): never a directory
    # holding someone else's cells.csv or masks, never on or around an input.
    open_output_dir(out, inputs, kind="segment")

    jobs = _field_jobs(dataset, out, params, ref_paths, overlays, mask_format)
    records, elapsed, workers = _segment_fields(jobs, dataset.ids, workers, progress)
    write_csv(out / "cells.csv", pd.concat([r.pop("table") for r in records], ignore_index=True))
    summary = _summary(dataset, records, elapsed, workers, params, mask_format)
    if reference is not None:
        summary["compare"] = _write_comparison(out, records, reference)
    write_json(out / "segment.json", summary)
    return summary


def _summary(
    dataset: Dataset,
    records: list[dict],
    elapsed: float,
    workers: int,
    params: SegmentParams,
    mask_format: str,
) -> dict:
    """``segment.json`` without the comparison: counts, timings and settings."""
    return {
        "dataset": str(dataset.root),
        "fields": len(records),
        "cells": int(sum(r["cells"] for r in records)),
        "seconds": round(elapsed, 3),
        "seconds_per_field": float(np.mean([r["seconds"] for r in records])) if records else 0.0,
        "workers": workers,
        "params": params.to_dict(),
        "mask_format": mask_format,
        "format": dict(OUTPUT_KINDS["segment"].format),
    }


def _reference_masks(
    dataset: Dataset, compare: Path | None, inputs: list[tuple[str, Path]]
) -> list[Path | None]:
    """Each field's mask in ``compare`` (all ``None`` without one); ``compare`` joins ``inputs``."""
    if compare is None:
        return [None] * len(dataset)
    if not compare.is_dir():
        raise DatasetError("mask directory not found", path=compare)
    inputs.append(("the reference masks directory", compare))
    return [find_mask(compare, image_id) for image_id in dataset.ids]


def _segment_fields(
    jobs: list[tuple],
    ids: list[str],
    workers: int | None,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[dict], float, int]:
    """Run :func:`_job` on every field: records in field order, seconds, processes used."""
    records: list[dict] = [{} for _ in jobs]
    started = time.perf_counter()
    # More processes than cores only add start-up time (1000 workers: 54 s for 2 s of work).
    workers = max(1, min(workers or available_cores(), available_cores(), len(jobs)))
    for done, (i, record) in enumerate(map_fields(_job, jobs, ids, workers), start=1):
        records[i] = record
        if progress is not None:
            progress(done, len(jobs))
    return records, time.perf_counter() - started, workers


def _write_comparison(out: Path, records: list[dict], reference: Path) -> dict:
    """Write ``compare.csv`` (per field, both conventions); the pooled comparison."""
    rows = []
    for r in records:
        for mode in ("all", "interior"):
            rows.append({"id": r["id"], "cells": mode, **r[mode]})
    write_csv(out / "compare.csv", pd.DataFrame(rows))
    return {
        "reference": str(reference),
        "headline": HEADLINE,
        "all": summarize_comparisons(r["all"] for r in records),
        "interior": summarize_comparisons(r["interior"] for r in records),
    }


def format_comparison(summary: dict) -> str:
    """Lines for a terminal: the pooled comparison of :func:`segment_dataset`."""
    comp = summary.get("compare")
    if not comp:
        return ""
    lines = []
    labels = {
        "all": "all cells (border cells kept, as in the reference)",
        "interior": "interior cells (border cells dropped from both)",
    }
    for mode in (comp["headline"], *[m for m in ("all", "interior") if m != comp["headline"]]):
        c = comp[mode]
        lines.append(
            f"{labels[mode]}: mean IoU of matched cells {c['mean_iou']:.3f}, "
            f"{c['n_matched']}/{c['n_ref']} reference cells found ({c['recall']:.1%}), "
            f"{c['n_pred']} cells segmented ({c['precision']:.1%} matched)"
        )
    return "\n".join(lines)
