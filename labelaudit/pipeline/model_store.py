"""The models ``retrain`` saves and reuses: what a model is (a side of the comparison,
its training context), the key that says when a saved one still fits, and its files.

A model is reused when its key matches: the settings, the weights, the dataset's
fingerprint, the split, the labels, the class weights (and the soft-cleaning label
weights and ensemble size when used). ``RUN/retrain/NAME.pt`` is the checkpoint,
``NAME.npz`` its key and predictions.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from labelaudit.core.config import TrainSettings
from labelaudit.core.digest import short_digest
from labelaudit.core.io import atomic_path
from labelaudit.rundir import RunDir
from labelaudit.train.checkpoint import MODEL_FORMAT, MODEL_VERSION, save_checkpoint
from labelaudit.train.folds import indices_digest
from labelaudit.train.loop import FoldOutput

#: Bump when what a saved retrain model means changes (keys stop matching).
RETRAIN_FORMAT = 1


def _best_epoch(value: np.ndarray) -> int | list[int]:
    flat = np.atleast_1d(value).astype(int).tolist()
    return flat[0] if len(flat) == 1 else flat


def _key(parts: dict) -> str:
    return short_digest(json.dumps(parts, sort_keys=True, default=str).encode(), 20)


def _label_digest(labels: np.ndarray, rows: np.ndarray) -> str:
    packed = np.packbits(np.asarray(labels[rows], dtype=bool), axis=None).tobytes()
    return short_digest(packed + str(labels.shape).encode(), 16)


def find_trained(out_dir: Path, key: str) -> tuple[Path, Path, dict] | None:
    """A saved model (``before`` or ``model``) trained with ``key``, and its arrays."""
    run = RunDir(out_dir.parent)
    for name in ("model", "before"):
        ckpt, arrays = out_dir / f"{name}.pt", out_dir / f"{name}.npz"
        stored = run.read_arrays(f"{out_dir.name}/{name}.npz") if ckpt.is_file() else None
        if stored is not None and "key" in stored and str(stored["key"]) == key:
            return ckpt, arrays, stored
    return None


@dataclass(frozen=True)
class Side:
    """One model of the comparison: its file, labels, images and class weights.

    ``name`` is the file stem under ``RUN/retrain/`` (``before`` or ``model``),
    ``label_kind`` what its labels are (``original`` or ``cleaned``),
    ``label_weight`` the per-label loss weights (N, K) of a soft cleaning policy.
    """

    name: str
    labels: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    kind: str
    label_kind: str
    label_weight: np.ndarray | None = None


@dataclass(frozen=True)
class TrainContext:
    """What both models of one retrain share: images, settings, test split, metadata."""

    out_dir: Path
    images: np.ndarray
    test_idx: np.ndarray
    settings: TrainSettings
    weights: Any
    meta: dict
    fingerprint: str
    console: Console
    members: int


@dataclass
class Fitted:
    """A freshly trained model (or ensemble): per-member outputs and its predictions."""

    outs: list[FoldOutput]
    val_probs: np.ndarray
    test_probs: np.ndarray
    seconds: float

    @property
    def best_epoch(self) -> int | list[int]:
        epochs = [o.best_epoch for o in self.outs]
        return epochs[0] if len(epochs) == 1 else epochs


def model_key(side: Side, ctx: TrainContext) -> str:
    """The key a saved model must carry to be reused for ``side`` (a pure function)."""
    settings = ctx.settings
    return _key(
        {
            "format": RETRAIN_FORMAT,
            "settings": {k: v for k, v in settings.result_fields().items() if k != "weights"},
            "weights": ctx.weights.identity,
            "fingerprint": ctx.fingerprint,
            "train": indices_digest(side.train_idx),
            "val": indices_digest(side.val_idx),
            "test": indices_digest(ctx.test_idx),
            "labels": _label_digest(side.labels, np.concatenate([side.train_idx, side.val_idx])),
            "class_weights": side.kind,
            **({"members": ctx.members} if ctx.members > 1 else {}),
            **(
                {"label_weights": _weight_digest(side.label_weight, side.train_idx)}
                if side.label_weight is not None
                else {}
            ),
        }
    )


def _weight_digest(weights: np.ndarray, rows: np.ndarray) -> str:
    data = np.ascontiguousarray(np.round(weights[np.sort(rows)], 4), dtype=np.float32)
    return short_digest(data.tobytes(), 16)


def reuse_trained(side: Side, ctx: TrainContext, key: str, w: np.ndarray | None) -> dict | None:
    """A model already trained with ``key``, copied to ``side``'s files; else ``None``."""
    found = find_trained(ctx.out_dir, key)
    if found is None:
        return None
    src_ckpt, src_arrays, z = found
    ckpt, arrays = ctx.out_dir / f"{side.name}.pt", ctx.out_dir / f"{side.name}.npz"
    for src, dst in ((src_ckpt, ckpt), (src_arrays, arrays)):
        if src != dst:
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
    ctx.console.print(f"{side.name}: reused (same settings, split, labels and class weights)")
    return {
        "key": key,
        "reused": True,
        "val_probs": z["val_probs"],
        "test_probs": z["test_probs"],
        "thresholds": z["thresholds"],
        "class_weights": w,
        "best_epoch": _best_epoch(z["best_epoch"]),
        "seconds": float(z["seconds"]),
    }


def checkpoint_meta(
    side: Side,
    ctx: TrainContext,
    key: str,
    fitted: Fitted,
    thresholds: np.ndarray,
    w: np.ndarray | None,
) -> dict:
    """The metadata saved with a trained model (a pure function)."""
    outs = fitted.outs
    return {
        **ctx.meta,
        "labels": side.label_kind,
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "name": side.name,
        "key": key,
        "thresholds": thresholds.tolist(),
        "thresholds_from": f"validation ({len(side.val_idx)} images, F1-optimal per class)",
        "class_weights": {"kind": side.kind, "values": None if w is None else w.tolist()},
        "members": ctx.members,
        "best_epoch": fitted.best_epoch,
        "history": outs[0].history if ctx.members == 1 else [o.history for o in outs],
        "n_train": len(side.train_idx),
        "n_val": len(side.val_idx),
    }


def save_trained(
    side: Side, ctx: TrainContext, key: str, fitted: Fitted, thresholds: np.ndarray, meta: dict
) -> None:
    """Write ``NAME.pt`` (the checkpoint) and ``NAME.npz`` (its key and predictions)."""
    save_checkpoint(ctx.out_dir / f"{side.name}.pt", [o.state_dict for o in fitted.outs], meta)
    with atomic_path(ctx.out_dir / f"{side.name}.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            key=np.array(key),
            val_probs=fitted.val_probs,
            test_probs=fitted.test_probs,
            thresholds=thresholds,
            best_epoch=np.array([o.best_epoch for o in fitted.outs]),
            seconds=np.array(fitted.seconds),
        )
