"""``labelaudit predict``: label new images with a retrained model.

Input: a dataset in any supported layout (its labels are carried along as
``given_labels``), or a folder of images without labels:

* HPA fields ``{ID}_{red,green,blue,yellow}.{png,tif,tiff,jpg,jpeg}`` in the folder
  or in its ``train/`` subfolder;
* otherwise every image file in the folder (one image per file: RGB, grayscale or a
  multi-channel TIFF), the id being the file name.

Output (CSV, written atomically, and returned as a DataFrame): ``id``, one column per
class with the sigmoid probability, ``labels`` (the classes at or above the model's
per-class threshold, in the training dataset's notation), ``label_names`` (the same
as ``|``-joined class names) and, for a labelled dataset with the model's classes,
``given_labels``. An image with no class above its threshold gets empty labels; an
exclusive class (HPA: Negative) is never predicted with another class (where both pass
their thresholds, the side with the higher probability stays).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from labelaudit.core.errors import DatasetError, SettingsError
from labelaudit.core.io import write_csv
from labelaudit.data.dataset import Dataset, ImageSource
from labelaudit.data.layouts import find_fields
from labelaudit.data.readers import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, read_header
from labelaudit.data.roles import exclusive_classes, exclusive_indices, resolve_exclusive
from labelaudit.rundir import dataset_inputs, guard_output_file
from labelaudit.train.checkpoint import load_checkpoint
from labelaudit.train.loop import Runtime, pick_device
from labelaudit.train.loop import predict as predict_probs

RESERVED = ("id", "labels", "label_names", "given_labels")


def _unlabelled(folder: Path, meta: dict) -> Dataset:
    """A Dataset (all-false labels) over a folder of HPA fields or single image files."""
    names, tokens = list(meta["class_names"]), list(meta["class_tokens"])
    for where in (folder, folder / "train"):
        if where.is_dir():
            found = find_fields(where)  # fields named as a dataset layout names them
            if found:
                channels, fields = found
                ids = list(fields)
                sources = [ImageSource(fields[i]) for i in ids]
                break
    else:
        files = sorted(
            Path(e.path)
            for e in os.scandir(folder)
            if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DatasetError(
                "no images found: expected a dataset (train.csv or labels.csv), HPA fields "
                "{ID}_{red,green,blue,yellow}.png, or image files",
                path=folder,
            )
        ids = [p.name for p in files]
        sources = [ImageSource((p,)) for p in files]
        n = read_header(files[0]).channels
        model_channels = list(meta.get("channels") or [])
        channels = (
            tuple(model_channels) if len(model_channels) == n else tuple(f"ch{i}" for i in range(n))
        )
    return Dataset(
        root=folder,
        layout="unlabelled",
        label_file=folder,
        ids=ids,
        labels=np.zeros((len(ids), len(names)), dtype=bool),
        class_names=names,
        class_tokens=tokens,
        channels=channels,
        sources=sources,
    )


def open_input(
    path: str | Path,
    meta: dict,
    layout: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[Dataset, bool]:
    """The images to label: ``(dataset, has labels)``; ``max_pixels`` per channel at most."""
    from labelaudit.data.layouts import load_dataset

    path = Path(path)
    if not path.exists():
        raise DatasetError("not found", path=path)
    if not path.is_dir():
        raise DatasetError(
            "expected a dataset or image directory, got a file (or a FIFO or device)", path=path
        )
    if layout is not None or (path / "train.csv").is_file() or (path / "labels.csv").is_file():
        return load_dataset(path, layout, max_pixels=max_pixels), True
    dataset = _unlabelled(path, meta)
    dataset.max_pixels = max_pixels
    return dataset, False


def _own_output(header: list[str]) -> bool:
    """True when ``header`` is the header :func:`predict` writes (its exact shape)."""
    if header[:1] != ["id"] or "labels" not in header:
        return False
    i = header.index("labels")
    return header[i + 1 : i + 2] == ["label_names"] and header[i + 2 :] in ([], ["given_labels"])


def check_output(out_csv: str | Path, inputs: list[tuple[str, Path]]) -> None:
    """Refuse an output table that would land on an input or on a file predict did not write.

    Raises
    ------
    SettingsError
        As :func:`~labelaudit.rundir.guard_output_file`.
    """
    guard_output_file(out_csv, inputs, what="predictions table", ours=_own_output)


def predict(
    model_path: str | Path,
    dataset_or_dir: str | Path,
    out_csv: str | Path | None = None,
    *,
    layout: str | None = None,
    device: str = "auto",
    batch_size: int = 32,
    tta: bool | None = None,
    cache_dir: str | Path | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> pd.DataFrame:
    """Label images with a model saved by :func:`labelaudit.pipeline.retrain.retrain`.

    Parameters
    ----------
    model_path
        ``RUN/retrain/model.pt`` (or ``before.pt``).
    dataset_or_dir
        A dataset directory (any layout) or a folder of unlabelled images.
    out_csv
        Where to write the table (atomically); not written when ``None``. It may
        replace only an earlier predictions table, never an input or another file.
    layout
        Force a dataset layout.
    device
        ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
    batch_size
        Inference batch size.
    tta
        Average over flips; the model's training setting when ``None``.
    cache_dir
        Image cache location (the input directory is only read).
    max_pixels
        Largest image accepted, in pixels per channel (checked from the header).

    Returns
    -------
    pandas.DataFrame
        The table described in the module docstring.

    Raises
    ------
    SettingsError
        The model file is missing or not a labelaudit model, or ``out_csv`` is not
        a place predict may write (see :func:`check_output`).
    DatasetError
        The images cannot be read, or their channel count differs from the model's.
    """
    from labelaudit.core.config import check_device, check_model_meta
    from labelaudit.data.cache import build_cache

    check_device(device)  # before any work: one clear line when the GPU is absent
    dev = pick_device(device)
    model, meta = load_checkpoint(model_path, dev)
    check_model_meta(meta, model_path)
    ds, labelled = open_input(dataset_or_dir, meta, layout, max_pixels)
    if out_csv is not None:  # before any work: no output on an input or a foreign file
        check_output(out_csv, [*dataset_inputs(ds), ("the model", Path(model_path))])
    in_chans = int(meta["in_chans"])
    if len(ds.channels) != in_chans:
        raise DatasetError(
            f"the images have {len(ds.channels)} channel(s), the model was trained on {in_chans}",
            path=ds.root,
        )
    cache = build_cache(ds, int(meta["image_size"]), cache_dir)
    runtime = Runtime(device=dev)
    use_tta = bool(meta.get("tta", False)) if tta is None else bool(tta)
    probs, _, _ = predict_probs(
        model, cache.images, np.arange(len(ds)), batch_size, runtime, tta=use_tta
    )
    if not np.isfinite(probs).all():  # NaN weights (a damaged or forged file): no table of blanks
        raise SettingsError(
            f"model file {model_path}: its outputs are not finite (NaN or infinite weights?)"
        )
    frame = _prediction_table(ds, labelled, probs, meta)
    if out_csv is not None:
        write_csv(out_csv, frame)
    return frame


def _prediction_table(ds: Dataset, labelled: bool, probs: np.ndarray, meta: dict) -> pd.DataFrame:
    """The table of the module docstring from the model's probabilities and thresholds."""
    names, tokens = list(meta["class_names"]), list(meta["class_tokens"])
    sep = meta.get("label_sep", "|")
    thresholds = np.asarray(meta.get("thresholds") or [0.5] * len(names), dtype=np.float64)
    # An exclusive class (HPA: Negative) is never predicted with another class: where
    # both pass their thresholds, the side with the higher probability stays.
    exclusive = exclusive_indices(names, exclusive_classes(meta))
    predicted = resolve_exclusive(probs >= thresholds[None, :], probs, exclusive)

    clash = any(n in RESERVED for n in names)
    columns = [f"p:{n}" if clash else n for n in names]
    frame = pd.DataFrame(probs.astype(np.float64), columns=columns)
    frame.insert(0, "id", list(ds.ids))
    frame["labels"] = [sep.join(tokens[k] for k in np.flatnonzero(r)) for r in predicted]
    frame["label_names"] = ["|".join(names[k] for k in np.flatnonzero(r)) for r in predicted]
    if labelled and ds.class_names == names:
        frame["given_labels"] = [sep.join(tokens[k] for k in np.flatnonzero(r)) for r in ds.labels]
    return frame
