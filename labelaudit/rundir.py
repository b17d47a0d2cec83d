"""The run directory: what each stage writes and how a later stage reads it back.

See the run-directory contract in DESIGN.md. Besides the contract files, a scan
writes ``dataset.csv`` (ids and given labels) and ``image_stats.csv`` (the cache's
full-resolution channel statistics), so that later stages (detect, report, clean)
work from the run directory alone, without decoding images again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from labelaudit.data.cache import ImageCache
from labelaudit.data.dataset import Dataset
from labelaudit.data.layouts import label_separator
from labelaudit.errors import RunDirError, SettingsError
from labelaudit.io import read_json, update_run_json, write_csv

DEFAULT_RUN = Path("labelaudit-out")


def record_dataset(run_dir: Path, dataset: Dataset, cache: ImageCache) -> dict:
    """Write the run's dataset section, ``dataset.csv`` and ``image_stats.csv``."""
    info = {
        "path": str(dataset.root.resolve()),
        "layout": dataset.layout,
        "label_file": str(dataset.label_file.resolve()),
        "fingerprint": dataset.fingerprint(),
        "n_images": len(dataset),
        "n_classes": dataset.n_classes,
        "class_names": dataset.class_names,
        "class_tokens": dataset.class_tokens,
        "label_sep": label_separator(dataset.layout),
        "channels": list(dataset.channels),
        "protein_channel": dataset.channels[dataset.protein_channel],
        "cache": str(cache.path),
        "image_size": cache.size,
    }
    given = [dataset.format_labels(row) for row in dataset.labels]
    write_csv(run_dir / "dataset.csv", pd.DataFrame({"id": dataset.ids, "labels": given}))
    write_csv(run_dir / "image_stats.csv", cache.stats)
    update_run_json(run_dir, "dataset", info)
    return info


def read_run(run_dir: str | Path) -> dict:
    """Read ``run.json``; a missing run directory is a user error."""
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    if not path.is_file():
        raise RunDirError(
            f"{run_dir}: not a labelaudit run directory (no run.json); "
            "run `labelaudit scan DATASET --out RUN` first"
        )
    return read_json(path)


def parse_labels(values: pd.Series, tokens: list[str], sep: str) -> np.ndarray:
    """Turn label strings in the dataset's notation back into a boolean matrix."""
    index = {t: k for k, t in enumerate(tokens)}
    out = np.zeros((len(values), len(tokens)), dtype=bool)
    for i, value in enumerate(values.fillna("").astype(str)):
        for tok in value.split(None if sep == " " else sep):
            tok = tok.strip()
            if tok:
                out[i, index[tok]] = True
    return out


def load_given_labels(run_dir: Path, info: dict) -> tuple[list[str], np.ndarray]:
    """Ids and the given label matrix, from ``dataset.csv``."""
    frame = pd.read_csv(run_dir / "dataset.csv", dtype=str, keep_default_na=False)
    labels = parse_labels(frame["labels"], info["class_tokens"], info["label_sep"])
    return frame["id"].tolist(), labels


def load_audit_inputs(run_dir: str | Path):
    """Everything the detectors need, read back from a run directory.

    Missing artifacts (no training yet) come back as ``None`` so detectors that do
    not need them can still run.
    """
    from labelaudit.detect.base import AuditInputs

    run_dir = Path(run_dir)
    run = read_run(run_dir)
    if "dataset" not in run:
        raise RunDirError(f"{run_dir}/run.json has no dataset section; re-run the scan")
    info = run["dataset"]
    ids, labels = load_given_labels(run_dir, info)
    probs = embeddings = stats = None
    if (run_dir / "oof_probs.csv").is_file():
        frame = pd.read_csv(run_dir / "oof_probs.csv", dtype={"id": str}, keep_default_na=False)
        if frame["id"].tolist() != ids:
            raise RunDirError(f"{run_dir}/oof_probs.csv: ids do not match dataset.csv")
        probs = frame[info["class_names"]].to_numpy(dtype=np.float64)
    if (run_dir / "embeddings.npy").is_file():
        embeddings = np.load(run_dir / "embeddings.npy")
        if embeddings.shape[0] != len(ids):
            raise RunDirError(
                f"{run_dir}/embeddings.npy: {embeddings.shape[0]} rows, expected {len(ids)}"
            )
    if (run_dir / "image_stats.csv").is_file():
        stats = pd.read_csv(run_dir / "image_stats.csv", dtype={"id": str}, keep_default_na=False)
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
    )


def ensure_outside(dataset_root: Path, out_dir: Path, what: str = "run directory") -> None:
    """Refuse an output directory inside the dataset: labelaudit never writes there.

    Raises
    ------
    SettingsError
        ``out_dir`` is ``dataset_root`` or below it.
    """
    root, out = Path(dataset_root).resolve(), Path(out_dir).resolve()
    if out == root or root in out.parents:
        raise SettingsError(
            f"the {what} {out_dir} is inside the dataset directory {dataset_root}; "
            "labelaudit never writes into a dataset: choose another --out"
        )
