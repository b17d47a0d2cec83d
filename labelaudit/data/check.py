"""The pre-flight check: validate a dataset and summarise it."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labelaudit.core.errors import DatasetError
from labelaudit.data.dataset import Dataset, ImageSource
from labelaudit.data.layouts import LoadReport, load_dataset
from labelaudit.data.parallel import available_cores, worker_context
from labelaudit.data.readers import (
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    quick_integrity,
    read_array,
    read_header,
)
from labelaudit.data.roles import conflicting_rows, describe_conflict, exclusive_indices

#: Rows joining an exclusive class with another that ``check`` names (it counts all).
SHOW_CONFLICTS = 5


@dataclass
class CheckReport:
    """What ``labelaudit check`` found.

    Attributes
    ----------
    dataset
        The dataset with every bad row left out.
    errors
        Problems that stop a scan (each names its file and row or image).
    warnings
        Quirks handled automatically (e.g. channel files of different sizes).
    sizes
        ``"W x H"`` -> number of images (fields) with that size.
    bit_depths
        Bits per sample -> number of images (fields).
    """

    dataset: Dataset
    errors: list[DatasetError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)
    bit_depths: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.errors

    def images_per_class(self) -> dict[str, int]:
        counts = self.dataset.labels.sum(axis=0)
        return {
            f"{tok} {name}" if tok != name else name: int(c)
            for tok, name, c in zip(
                self.dataset.class_tokens, self.dataset.class_names, counts, strict=True
            )
        }

    def labels_per_image(self) -> dict[int, int]:
        per = self.dataset.labels.sum(axis=1)
        return {int(k): int(v) for k, v in sorted(Counter(per.tolist()).items())}

    def exclusive_conflicts(self) -> list[str]:
        """Rows whose labels join an exclusive class with another class, as
        ``"train.csv line 5 (ID): Negative given with Cytosol (...)"``."""
        d = self.dataset
        idx = exclusive_indices(d.class_names, d.exclusive_classes)
        return [
            f"{d.label_file.name} line {d.rows[i]} ({d.ids[i]}): "
            + describe_conflict(d.class_names, d.labels[i], idx)
            for i in np.flatnonzero(conflicting_rows(d.labels, idx))
        ]

    def summary(self) -> dict:
        """A JSON-friendly summary (also what the CLI prints)."""
        d = self.dataset
        conflicts = self.exclusive_conflicts()
        return {
            "dataset": str(d.root),
            "layout": d.layout,
            "images": len(d),
            "classes": d.n_classes,
            "channels": list(d.channels),
            "images_per_class": self.images_per_class(),
            "labels_per_image": self.labels_per_image(),
            "image_sizes": dict(self.sizes.most_common()),
            "bit_depths": {int(k): v for k, v in sorted(self.bit_depths.items())},
            "roles": d.roles.to_info(),
            "exclusive_conflicts": {
                "count": len(conflicts),
                "first": conflicts[:SHOW_CONFLICTS],
            },
            "errors": [str(e) for e in self.errors],
            "warnings": self.warnings,
        }


def _deep_job(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> str | None:
    try:
        read_array(path, max_pixels=max_pixels)
    except DatasetError as exc:
        return exc.message
    return None


def check_dataset(
    path: str | Path | None = None,
    layout: str | None = None,
    *,
    deep: bool = False,
    workers: int | None = None,
    follow_symlinks: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    labels: str | Path | None = None,
    images: str | Path | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    sep: str | None = None,
) -> CheckReport:
    """Validate the label file and every image, collecting all problems.

    Parameters
    ----------
    path
        The dataset directory (read only).
    layout
        Force a layout instead of detecting it.
    deep
        Decode every image fully (finds any damage); otherwise read each file's
        header and its first and last bytes (:func:`quick_integrity`: truncated
        PNG, JPEG and TIFF files, empty files, garbage).
    workers
        Processes for ``deep`` decoding; all cores when ``None``.
    follow_symlinks
        Admit image paths that resolve outside the dataset directory.
    max_pixels
        Pixels per channel an image may have; a larger one is a problem, found
        from its header (``None``: no limit).
    labels, images, id_column, label_column, sep
        Where the label file and images are and how the labels are written, when
        not the layout's (see :func:`~labelaudit.data.layouts.load_dataset`).

    Raises
    ------
    DatasetError
        Only for problems that make the whole label file unusable (missing file,
        wrong columns, binary content); row and image problems are collected.
    """
    load = LoadReport()
    dataset = load_dataset(
        path,
        layout,
        strict=False,
        report=load,
        labels=labels,
        images=images,
        id_column=id_column,
        label_column=label_column,
        sep=sep,
        follow_symlinks=follow_symlinks,
        max_pixels=max_pixels,
    )
    report = CheckReport(dataset=dataset, errors=list(load.errors), warnings=list(load.warnings))
    bad = {
        i
        for i, (image_id, source) in enumerate(zip(dataset.ids, dataset.sources, strict=True))
        if not _check_field(report, dataset, image_id, source, deep)
    }
    if deep:
        _decode_all(report, dataset, bad, workers)
    if len(dataset) == 0 and not report.errors:
        report.errors.append(DatasetError("no images listed", path=dataset.label_file))
    if len(dataset):
        empty = np.flatnonzero(dataset.labels.sum(axis=0) == 0)
        if empty.size:
            names = ", ".join(dataset.class_names[k] for k in empty[:10])
            report.warnings.append(f"{empty.size} class(es) have no images: {names}")
    return report


def _check_field(
    report: CheckReport, dataset: Dataset, image_id: str, source: ImageSource, deep: bool
) -> bool:
    """Check one field's files from their headers (and a float image's pixels unless
    ``deep`` decodes every file later); count its size and bit depth. ``False`` when
    a problem was found (added to ``report``)."""
    ok = True
    infos: list[ImageInfo] = []
    for p in source.paths:
        try:
            problem = quick_integrity(p)
            if problem is not None:
                raise DatasetError(problem, path=p)
            info = read_header(p, max_pixels=dataset.max_pixels)
        except DatasetError as exc:
            report.errors.append(DatasetError(exc.message, path=p, image=image_id))
            ok = False
            continue
        if info.floating and not deep:  # NaN or infinity only show in the pixels
            message = _deep_job(p, dataset.max_pixels)
            if message is not None:
                report.errors.append(DatasetError(message, path=p, image=image_id))
                ok = False
        infos.append(info)
        if not source.one_file and info.channels != 1:
            report.errors.append(
                DatasetError(
                    f"expected a single-channel image, found {info.channels} channels",
                    path=p,
                    image=image_id,
                )
            )
            ok = False
    if source.one_file and infos and infos[0].channels != len(dataset.channels):
        report.errors.append(
            DatasetError(
                f"image has {infos[0].channels} channel(s), the dataset's first image has "
                f"{len(dataset.channels)}",
                path=source.paths[0],
                image=image_id,
            )
        )
        ok = False
    if infos:  # one count per field, from its first channel file
        report.sizes[f"{infos[0].width} x {infos[0].height}"] += 1
        report.bit_depths[infos[0].bit_depth] += 1
    shapes = {(x.width, x.height) for x in infos}
    if len(shapes) > 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sorted(shapes))
        report.warnings.append(
            f"image {image_id!r}: channel files differ in size ({listed}); "
            "each is resized to the training size separately"
        )
    return ok


def _decode_all(report: CheckReport, dataset: Dataset, bad: set[int], workers: int | None) -> None:
    """``deep``: decode every file of the fields without a problem yet, in ``workers``
    processes (all cores when ``None``); what cannot be decoded goes to ``report``."""
    files = [(i, p) for i, s in enumerate(dataset.sources) if i not in bad for p in s.paths]
    n_workers = workers or available_cores()
    if n_workers > 1 and len(files) >= 16:
        with ProcessPoolExecutor(n_workers, mp_context=worker_context(_deep_job)) as pool:
            results = list(
                pool.map(
                    _deep_job,
                    [p for _, p in files],
                    [dataset.max_pixels] * len(files),
                    chunksize=8,
                )
            )
    else:
        results = [_deep_job(p, dataset.max_pixels) for _, p in files]
    for (i, p), message in zip(files, results, strict=True):
        if message is not None:
            report.errors.append(DatasetError(message, path=p, image=dataset.ids[i]))
