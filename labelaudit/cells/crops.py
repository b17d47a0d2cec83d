"""The cell cache: one crop per cell, in the field cache's memory-mapped format.

Each cell becomes a square crop around its box (the box widened to a square,
``pad`` added on every side, outside the field zero), with the pixels of other
cells and background set to 0, resized to ``size x size`` uint8 per channel by
the field cache's :func:`~labelaudit.data.cache.resize_to_uint8`. The crops are
stored as ``images.u8`` (M x C x S x S, uint8, raw, :func:`numpy.memmap`), the
layout of :class:`~labelaudit.data.cache.ImageCache`, so the training code can read
cells as it reads fields. ``cells.csv`` holds one row per cell: its id
(``{field}_{label}``), its field, label, box, area, and the full-resolution
statistics of the field cache (:func:`~labelaudit.data.measures.channel_stats`) over
the cell's own pixels.

An entry is keyed by the images, the masks (file names, sizes and times; or the
bytes of in-memory masks; or the segmentation settings), the size and the
padding; it is built in a temporary directory and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from labelaudit.cells.dataset import cell_table, read_planes
from labelaudit.cells.masks import MaskSet, load_masks, read_mask, touches_border, write_mask
from labelaudit.cells.segment import SegmentParams, drop_border_cells, segment_field
from labelaudit.core.digest import ShortDigest, short_digest
from labelaudit.core.errors import DatasetError, SettingsError
from labelaudit.core.io import write_csv, write_json
from labelaudit.core.userfiles import read_user_json
from labelaudit.data.cache import default_cache_dir, resize_to_uint8, staged_entry
from labelaudit.data.dataset import Dataset
from labelaudit.data.measures import STAT_NAMES, channel_stats
from labelaudit.data.parallel import available_cores, map_fields
from labelaudit.data.readers import full_scale

CELL_CACHE_VERSION = 2  # 2: OpenCV statistics and resize (data.cache v2)
# Bump when segment_field's algorithm changes: cached segmentations go stale.
SEGMENT_VERSION = 1
TABLE_COLUMNS: tuple[str, ...] = (
    "id",
    "field",
    "field_index",
    "cell",
    "area",
    "y0",
    "x0",
    "y1",
    "x1",
    "border",
    "height",
    "width",
    "bit_depth",
)


def cell_id(field: str, label: int) -> str:
    """The id of a cell: ``{field}_{label}`` (unique: the label never holds ``_``)."""
    return f"{field}_{int(label)}"


# ----------------------------------------------------------------------- per cell


def interior(inside: np.ndarray) -> np.ndarray:
    """Pixels of a cell whose 4 neighbours are in the cell too (the Laplacian's footprint)."""
    core = np.zeros_like(inside)
    core[1:-1, 1:-1] = (
        inside[1:-1, 1:-1] & inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2]
        & inside[1:-1, 2:]
    )  # fmt: skip
    return core


def masked_focus(plane: np.ndarray, core: np.ndarray) -> float:
    """The field cache's focus measure restricted to a cell.

    Variance of the 4-neighbour Laplacian over ``core`` (see :func:`interior`: the
    cell minus its outline, so the outline is not mistaken for sharpness), the plane
    scaled to [0, 1] as in :func:`~labelaudit.data.measures.channel_stats`.
    """
    if not core.any():
        return 0.0
    work: np.ndarray
    if np.issubdtype(plane.dtype, np.integer):
        work = plane.astype(np.int32 if plane.dtype.itemsize >= 2 else np.int16)
    else:
        work = plane.astype(np.float32)
    lap = work[:-2, 1:-1] + work[2:, 1:-1] + work[1:-1, :-2] + work[1:-1, 2:] - 4 * work[1:-1, 1:-1]
    return float(lap[core[1:-1, 1:-1]].astype(np.float64).var()) / full_scale(plane.dtype) ** 2


def cell_stats(plane: np.ndarray, inside: np.ndarray, core: np.ndarray | None = None) -> dict:
    """:func:`~labelaudit.data.measures.channel_stats` of a cell's pixels, focus in the cell.

    ``plane`` and ``inside`` cover the cell's box; ``core`` is :func:`interior` of
    ``inside`` (computed when not given).
    """
    values = plane[inside]
    # A 1-row array: channel_stats's histogram statistics over exactly these pixels
    # (its own focus term is 0 for fewer than 3 rows and replaced below).
    stats = channel_stats(values.reshape(1, -1))
    stats["focus"] = masked_focus(plane, interior(inside) if core is None else core)
    return stats


def square_box(y0: int, x0: int, y1: int, x1: int, pad: float) -> tuple[int, int, int, int]:
    """A square box centred on a cell's box, ``pad`` x its side added on every side."""
    side = max(y1 - y0, x1 - x0)
    side = int(np.ceil(side * (1.0 + 2.0 * pad)))
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    sy, sx = int(np.floor(cy - side / 2.0)), int(np.floor(cx - side / 2.0))
    return sy, sx, sy + side, sx + side


def crop_cells(
    planes: list[np.ndarray],
    labels: np.ndarray,
    size: int,
    pad: float = 0.0,
) -> tuple[np.ndarray, list[dict[str, object]]]:
    """Crops and statistics of every cell of one field.

    Parameters
    ----------
    planes
        The field's channels, (H, W) each, native dtype.
    labels
        Its cell label image, (H, W).
    size
        Side of the crops.
    pad
        Context around each cell's box, as a fraction of the box's side (the
        pixels stay masked: only the cell's own pixels are non-zero).

    Returns
    -------
    crops
        uint8 (M, C, size, size), one per cell in label order.
    rows
        Per cell: ``cell, area, y0, x0, y1, x1, border`` and ``c{i}_{stat}`` for
        channel index i.
    """
    border = set(touches_border(labels).tolist())
    table = cell_table(labels)
    crops = np.zeros((len(table), len(planes), size, size), dtype=np.uint8)
    rows: list[dict[str, object]] = []
    for m, rec in enumerate(table.itertuples(index=False)):
        inside = labels[rec.y0 : rec.y1, rec.x0 : rec.x1] == rec.cell
        core = interior(inside)
        sy0, sx0, sy1, sx1 = square_box(rec.y0, rec.x0, rec.y1, rec.x1, pad)
        # Where the cell's box sits inside the square canvas, and the part of the
        # canvas the field covers.
        oy, ox = rec.y0 - sy0, rec.x0 - sx0
        row: dict[str, object] = {
            "cell": int(rec.cell),
            "area": int(rec.area),
            "y0": int(rec.y0),
            "x0": int(rec.x0),
            "y1": int(rec.y1),
            "x1": int(rec.x1),
            "border": int(rec.cell) in border,
        }
        for c, plane in enumerate(planes):
            box = plane[rec.y0 : rec.y1, rec.x0 : rec.x1]
            canvas = np.zeros((sy1 - sy0, sx1 - sx0), dtype=plane.dtype)
            canvas[oy : oy + box.shape[0], ox : ox + box.shape[1]] = np.where(inside, box, 0)
            crops[m, c] = resize_to_uint8(canvas, size)
            row.update({f"c{c}_{k}": v for k, v in cell_stats(box, inside, core).items()})
        rows.append(row)
    return crops, rows


# ---------------------------------------------------------------------- the cache


@dataclass
class CellCache:
    """A built cell-cache entry.

    Attributes
    ----------
    path
        The entry's directory.
    channels
        Channel names.
    size
        Side S of the crops.
    images
        Read-only ``np.memmap`` (M, C, S, S) uint8; row i is cell i of ``cells``.
    cells
        One row per cell: ``id`` (``{field}_{label}``), ``field`` (field id),
        ``field_index`` (row in the dataset), ``cell`` (label in the mask), box
        ``y0, x0, y1, x1`` (full-resolution pixels, end exclusive), ``area``
        (pixels), ``border`` (touches the field border), ``height``, ``width`` (of
        the box), ``bit_depth`` and ``{channel}_{stat}`` for every stat in
        :data:`~labelaudit.data.measures.STAT_NAMES`, over the cell's pixels.
    reused
        True when the entry existed and was served without decoding.
    """

    path: Path
    channels: tuple[str, ...]
    size: int
    images: np.ndarray
    cells: pd.DataFrame
    reused: bool = False

    @property
    def ids(self) -> list[str]:
        """Cell ids, row order of ``images``."""
        return self.cells["id"].tolist()

    @property
    def stats(self) -> pd.DataFrame:
        """The statistics in the field cache's ``stats`` columns (``id`` = cell id)."""
        cols = ["id", "height", "width", "bit_depth"] + [
            f"{ch}_{st}" for ch in self.channels for st in STAT_NAMES
        ]
        return self.cells[cols]

    @property
    def masks_dir(self) -> Path | None:
        """The masks the entry made by segmenting, when it made them."""
        d = self.path / "masks"
        return d if d.is_dir() else None

    def __len__(self) -> int:
        return len(self.cells)

    def field_rows(self, field: str) -> np.ndarray:
        """Row indices of the cells of ``field``."""
        return np.flatnonzero(self.cells["field"].to_numpy() == field)

    @classmethod
    def open(cls, path: str | Path, reused: bool = True) -> CellCache:
        path = Path(path)
        meta = read_user_json(path / "meta.json", "the cell cache's meta.json")
        shape = tuple(meta["shape"])
        images: np.ndarray
        if shape[0]:
            images = np.memmap(path / "images.u8", dtype=np.uint8, mode="r", shape=shape)
        else:  # numpy cannot map an empty file
            images = np.zeros(shape, dtype=np.uint8)
            images.setflags(write=False)
        cells = pd.read_csv(
            path / "cells.csv", dtype={"id": str, "field": str}, keep_default_na=False
        )
        if cells.empty:
            cells = pd.DataFrame(columns=meta["columns"])
        return cls(path, tuple(meta["channels"]), int(meta["size"]), images, cells, reused)


def _mask_key(
    masks: MaskSet | Mapping[str, np.ndarray] | None,
    params: SegmentParams | None,
    drop_border: bool,
) -> str:
    h = ShortDigest(16)
    h.update(f"drop_border={drop_border}".encode())
    if masks is None:
        params_text = json.dumps(params.to_dict() if params else {}, sort_keys=True)
        h.update(f"segment-v{SEGMENT_VERSION}:{params_text}".encode())
    elif isinstance(masks, MaskSet):
        h.update(f"files:{masks.fingerprint()}".encode())
    else:
        for image_id in sorted(masks):
            arr = np.ascontiguousarray(masks[image_id])
            h.update(f"{image_id}:{arr.dtype}:{arr.shape}".encode())
            h.update(hashlib.sha256(arr.tobytes()).digest())
    return h.hexdigest()


def cell_cache_key(
    dataset: Dataset,
    masks: Mapping[str, np.ndarray] | None,
    size: int,
    pad: float = 0.0,
    params: SegmentParams | None = None,
    drop_border: bool = False,
) -> str:
    """The key of a cell-cache entry (see :func:`build_cell_cache`)."""
    text = (
        f"cells-v{CELL_CACHE_VERSION}:{dataset.image_fingerprint()}:"
        f"{_mask_key(masks, params, drop_border)}:{size}:{pad}:{','.join(dataset.channels)}"
    )
    return short_digest(text.encode(), 20)


def _job(args: tuple) -> tuple[np.ndarray, list[dict], int]:
    _, image_id, paths, names, mask, size, pad, params, drop_border, masks_out = args
    channels = read_planes(paths, names)
    planes = list(channels.values())
    shape = planes[0].shape
    if mask is None:
        labels = segment_field(channels, params)
        write_mask(masks_out, image_id, labels)
    else:
        mask_path = mask if isinstance(mask, Path) else None
        labels = read_mask(mask, image_id) if mask_path else np.asarray(mask)
        if labels.shape != shape:
            raise DatasetError(
                f"mask is {labels.shape[1]} x {labels.shape[0]} px, the field "
                f"{shape[1]} x {shape[0]} px",
                path=mask_path,
                image=image_id,
            )
        if drop_border:
            labels = drop_border_cells(labels)
    crops, rows = crop_cells(planes, labels, size, pad)
    depth = int(planes[0].dtype.itemsize * 8)
    return crops, rows, depth


def build_cell_cache(
    dataset: Dataset,
    masks: str | Path | Mapping[str, np.ndarray] | None,
    size: int,
    cache_dir: str | Path | None = None,
    *,
    pad: float = 0.0,
    params: SegmentParams | None = None,
    drop_border: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CellCache:
    """Return the dataset's cell-cache entry, cropping the cells if needed.

    Parameters
    ----------
    dataset
        The dataset (only read).
    masks
        Where the cells are: a directory of ``{ID}_predictedmask.png`` /
        ``{ID}.npz`` files, a mapping ``id -> label image`` (e.g. from
        :func:`~labelaudit.cells.masks.load_masks`), or ``None`` to segment each
        field with :func:`~labelaudit.cells.segment.segment_field` (the masks are
        kept in the entry's ``masks/``, :attr:`CellCache.masks_dir`).
    size
        Side S of the crops.
    cache_dir
        Where entries live; :func:`~labelaudit.data.cache.default_cache_dir` when
        ``None`` (cell entries sit beside the field entries, keyed differently).
    pad
        Context around each cell's box, fraction of its side.
    params
        Segmentation settings when ``masks`` is ``None``.
    drop_border
        Drop the cells of given masks that touch the field border (segmentation
        drops them already, per ``params.drop_border``).
    workers
        Processes; all cores when ``None``.
    progress
        Called as ``progress(done, total)`` after each field.

    Raises
    ------
    DatasetError
        When an image cannot be decoded, or a mask is missing, unreadable or not
        the field's size; the message names the file.
    SettingsError
        On a bad ``size`` or ``pad``.
    """
    if size < 1:
        raise SettingsError(f"size must be >= 1, got {size}")
    if not 0.0 <= pad <= 1.0:
        raise SettingsError(f"pad must be in [0, 1], got {pad}")
    found = _find_masks(dataset, masks)
    params = (params or SegmentParams()) if found is None else None

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cell_cache_key(dataset, found, size, pad, params, drop_border)
    final = root / f"cells-{key}"
    if (final / "meta.json").is_file():
        return CellCache.open(final, reused=True)

    started = time.perf_counter()
    with staged_entry(final) as tmp:
        if (final / "meta.json").is_file():  # built by the process we waited for
            return CellCache.open(final, reused=True)
        jobs = [
            (i, image_id, src.paths, dataset.channels, _field_mask(found, image_id), size, pad,
             params, drop_border, tmp / "masks")
            for i, (image_id, src) in enumerate(zip(dataset.ids, dataset.sources, strict=True))
        ]  # fmt: skip
        rows, n_cells = _write_crops(tmp, dataset, jobs, workers, progress)
        columns = list(TABLE_COLUMNS) + [
            f"{ch}_{st}" for ch in dataset.channels for st in STAT_NAMES
        ]
        write_csv(tmp / "cells.csv", pd.DataFrame(rows, columns=columns))
        meta = _entry_meta(dataset, found, params, key, n_cells, size, pad, columns, drop_border)
        meta["seconds"] = round(time.perf_counter() - started, 3)
        write_json(tmp / "meta.json", meta)
    return CellCache.open(final, reused=False)


def _entry_meta(
    dataset: Dataset,
    masks: MaskSet | Mapping[str, np.ndarray] | None,
    params: SegmentParams | None,
    key: str,
    n_cells: int,
    size: int,
    pad: float,
    columns: list[str],
    drop_border: bool,
) -> dict[str, object]:
    """An entry's ``meta.json`` (its build time is added by the caller)."""
    return {
        "version": CELL_CACHE_VERSION,
        "key": key,
        "shape": [n_cells, len(dataset.channels), size, size],
        "size": size,
        "pad": pad,
        "channels": list(dataset.channels),
        "columns": columns,
        "fields": len(dataset),
        "dataset": str(dataset.root.resolve()),
        "image_fingerprint": dataset.image_fingerprint(),
        "masks": (
            "segmented"
            if masks is None
            else str(masks.root)
            if isinstance(masks, MaskSet)
            else "in memory"
        ),
        "segment_params": params.to_dict() if params else None,
        "drop_border": drop_border,
    }


def _find_masks(
    dataset: Dataset, masks: str | Path | Mapping[str, np.ndarray] | None
) -> MaskSet | Mapping[str, np.ndarray] | None:
    """The mask files of a directory, or the given mapping once it covers every field."""
    if isinstance(masks, str | Path):
        return load_masks(masks, dataset.ids)
    if masks is not None:
        missing = [i for i in dataset.ids if i not in masks]
        if missing:
            raise DatasetError("no cell mask for this image", image=missing[0])
    return masks


def _field_mask(masks: MaskSet | Mapping[str, np.ndarray] | None, image_id: str) -> object:
    """What a worker gets for one field: ``None`` (segment it), a file path or the array."""
    if masks is None:
        return None
    if isinstance(masks, MaskSet):
        return masks.paths[image_id]  # the worker decodes it
    return np.asarray(masks[image_id])


def _write_crops(
    tmp: Path,
    dataset: Dataset,
    jobs: list[tuple],
    workers: int | None,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[dict[str, object]], int]:
    """Crop every field into ``tmp/images.u8``: the cells' table rows and their count."""
    rows: list[dict[str, object]] = []
    n_cells = 0
    workers = workers or available_cores()
    # Crops are appended field by field (the cell count is known only at the end),
    # then the file is mapped with its final shape.
    with open(tmp / "images.u8", "wb") as fh:
        fields = map_fields(_job, jobs, dataset.ids, workers, min_parallel=4, max_chunk=8)
        for done, (i, (crops, field_rows, depth)) in enumerate(fields, start=1):
            fh.write(np.ascontiguousarray(crops).tobytes())
            n_cells += len(crops)
            for r in field_rows:
                row = {
                    "id": cell_id(dataset.ids[i], r["cell"]),
                    "field": dataset.ids[i],
                    "field_index": i,
                    **{k: r[k] for k in ("cell", "area", "y0", "x0", "y1", "x1", "border")},
                    "height": int(r["y1"]) - int(r["y0"]),
                    "width": int(r["x1"]) - int(r["x0"]),
                    "bit_depth": depth,
                }
                for c, name in enumerate(dataset.channels):
                    row.update({f"{name}_{st}": r[f"c{c}_{st}"] for st in STAT_NAMES})
                rows.append(row)
            if progress is not None:
                progress(done, len(jobs))
    return rows, n_cells
