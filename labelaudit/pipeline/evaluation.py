"""How ``retrain`` compares two models: the split, thresholds, metrics and intervals.

Pure functions of label and probability arrays (no files, no training), shared by
:mod:`labelaudit.pipeline.retrain` (networks) and :mod:`labelaudit.tools.benefit`
(logistic probes on embeddings):

* the class weights of the loss (:func:`class_weights`);
* the fixed train/validation/test split, made before cleaning (:func:`make_split`),
  and cleaning applied to its training part only (:func:`plan_cleaning`);
* per-class thresholds tuned on validation data (:func:`tune_thresholds`) and the
  test metrics (:func:`model_metrics`);
* the before/after changes with paired bootstrap intervals (:func:`change_intervals`,
  :func:`per_class_change`) and the label errors cleaning removed
  (:func:`label_error_counts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from labelaudit.core.errors import SettingsError
from labelaudit.core.stats import bootstrap_f1, label_errors
from labelaudit.train.folds import make_folds
from labelaudit.train.metrics import multilabel_metrics

CLASS_WEIGHTS: tuple[str, ...] = ("method", "none", "pos")

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)

_HEADLINE = [
    f"{avg}_{m}"
    for avg in ("micro", "macro", "weighted", "samples")
    for m in ("f1", "precision", "recall")
] + ["subset_accuracy", "macro_ap"]


# ------------------------------------------------------------------ class weights


def class_weights(labels: np.ndarray, kind: str) -> np.ndarray | None:
    """Per-class loss weights from a training label matrix.

    Parameters
    ----------
    labels
        Bool (N, K) labels of the training images.
    kind
        ``"method"``: ``w_k = 1 - n_k / N``; ``"pos"``: ``pos_weight_k = (N - n_k) / n_k``
        clipped to [1, 100] (1 where ``n_k = 0``); ``"none"``: ``None``.

    Returns
    -------
    np.ndarray or None
        float32 (K,).
    """
    if kind not in CLASS_WEIGHTS:
        raise SettingsError(
            f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}, got {kind!r}"
        )
    y = np.asarray(labels, dtype=bool)
    n = y.shape[0]
    n_k = y.sum(axis=0).astype(np.float64)
    if kind == "none":
        return None
    if n == 0:
        raise SettingsError("no training images left to compute class weights from")
    if kind == "method":
        return (1.0 - n_k / n).astype(np.float32)
    pos = np.where(n_k > 0, (n - n_k) / np.maximum(n_k, 1.0), 1.0)
    return np.clip(pos, 1.0, 100.0).astype(np.float32)


# ------------------------------------------------------------------ the split


def split_parts(
    labels: np.ndarray, seed: int, test_fraction: float = 0.2, val_fraction: float = 0.2
) -> np.ndarray:
    """Assign each image to ``"train"``, ``"val"`` or ``"test"``, stratified and seeded.

    The test set is one fold of a ``round(1 / test_fraction)``-fold multi-label
    stratified split; the validation set one fold of a ``round(1 / val_fraction)``-fold
    split of the rest. Deterministic for a label matrix and seed.

    Returns
    -------
    np.ndarray
        (N,) object array of part names.
    """
    for name, frac in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 < float(frac) <= 0.5:
            raise SettingsError(f"{name} must be in (0, 0.5], got {frac}")
    y = np.asarray(labels, dtype=bool)
    n = y.shape[0]
    parts = np.full(n, "train", dtype=object)
    test = make_folds(y, max(2, round(1.0 / test_fraction)), seed) == 0
    parts[test] = "test"
    rest = np.flatnonzero(~test)
    val = make_folds(y[rest], max(2, round(1.0 / val_fraction)), seed + 1) == 0
    parts[rest[val]] = "val"
    return parts


@dataclass(frozen=True)
class Split:
    """The fixed train/validation/test split (made before cleaning)."""

    parts: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray


@dataclass(frozen=True)
class CleanPlan:
    """The ``after`` model's labels and images: cleaning applied to train/val only."""

    labels: np.ndarray
    removed: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    counts: dict[str, int]


def make_split(labels: np.ndarray, seed: int, test_fraction: float, val_fraction: float) -> Split:
    """:func:`split_parts` and the row indices of each part (a pure function)."""
    parts = split_parts(labels, seed, test_fraction, val_fraction)
    return Split(
        parts,
        train_idx=np.flatnonzero(parts == "train"),
        val_idx=np.flatnonzero(parts == "val"),
        test_idx=np.flatnonzero(parts == "test"),
    )


def plan_cleaning(
    given: np.ndarray, cleaned: np.ndarray, removed: np.ndarray, split: Split
) -> CleanPlan:
    """Apply cleaning to the training part only: test images keep their given labels.

    Raises
    ------
    SettingsError
        Cleaning left fewer than 2 training or no validation images.
    """
    changed = removed | (cleaned != given).any(axis=1)
    test = split.test_idx
    labels = cleaned.copy()
    labels[test] = given[test]
    removed = removed.copy()
    removed[test] = False
    relabelled = (labels != given).any(axis=1)
    train = split.train_idx[~removed[split.train_idx]]
    val = split.val_idx[~removed[split.val_idx]]
    if len(train) < 2 or len(val) < 1:
        raise SettingsError("cleaning left too few training or validation images to retrain")
    counts = {
        "n_removed_train": int(removed[split.train_idx].sum()),
        "n_removed_val": int(removed[split.val_idx].sum()),
        "n_relabelled_train": int(relabelled[split.train_idx].sum()),
        "n_relabelled_val": int(relabelled[split.val_idx].sum()),
        "n_changes_ignored_in_test": int(changed[test].sum()),
    }
    return CleanPlan(labels, removed, train, val, counts)


# ------------------------------------------------------------------ thresholds and metrics


def tune_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-class decision thresholds maximising F1 on validation data.

    Picks from :data:`THRESHOLD_GRID` (ties: the threshold closest to 0.5); a class
    without positive validation images keeps 0.5.

    Returns
    -------
    np.ndarray
        float64 (K,).
    """
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(probs, dtype=np.float64)
    out = np.full(y.shape[1], 0.5)
    order = np.argsort(np.abs(THRESHOLD_GRID - 0.5), kind="stable")
    grid = THRESHOLD_GRID[order]
    for k in range(y.shape[1]):
        pos = y[:, k]
        if not pos.any():
            continue
        pred = p[:, k][:, None] >= grid[None, :]
        tp = (pred & pos[:, None]).sum(axis=0)
        fp = (pred & ~pos[:, None]).sum(axis=0)
        fn = (~pred & pos[:, None]).sum(axis=0)
        f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        out[k] = float(grid[int(np.argmax(f1))])
    return out


def thresholded_metrics(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> dict:
    """Micro/macro/weighted F1, precision and recall at per-class thresholds."""
    y = np.asarray(labels, dtype=bool)
    pred = np.asarray(probs) >= np.asarray(thresholds)[None, :]
    out: dict[str, float] = {}
    for average in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = precision_recall_fscore_support(y, pred, average=average, zero_division=0)
        out[f"{average}_f1"] = float(f)
        out[f"{average}_precision"] = float(p)
        out[f"{average}_recall"] = float(r)
    return out


def model_metrics(
    given: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    thresholds: np.ndarray,
    truth: np.ndarray | None = None,
) -> dict:
    """The metrics of one model on the test images.

    Headline keys at threshold 0.5 (the method's), against the given test labels;
    ``*_true`` keys (and ``per_class_true``) against the true labels when given;
    ``tuned`` holds the same at the per-class validation thresholds.
    """
    out = multilabel_metrics(given, probs, class_names)
    out["tuned"] = thresholded_metrics(given, probs, thresholds)
    if truth is not None:
        true = multilabel_metrics(truth, probs, class_names)
        for key in _HEADLINE:
            out[f"{key}_true"] = true[key]
        out["per_class_true"] = true["per_class"]
        for key, value in thresholded_metrics(truth, probs, thresholds).items():
            out["tuned"][f"{key}_true"] = value
    return out


# ------------------------------------------------------------------ before / after


DELTA_KEYS = (
    "micro_f1",
    "macro_f1",
    "weighted_f1",
    "micro_f1_true",
    "macro_f1_true",
    "weighted_f1_true",
)


def per_class_change(before: dict, after: dict, names: list[str]) -> list[dict]:
    """Per class: support and F1 of both models and the change (``_true`` too if present)."""
    rows = []
    for k, cname in enumerate(names):
        b, a = before["per_class"][k], after["per_class"][k]
        row = {
            "class": cname,
            "support": b["support"],
            "f1_before": b["f1"],
            "f1_after": a["f1"],
            "f1_change": a["f1"] - b["f1"],
        }
        if "per_class_true" in before and "per_class_true" in after:
            bt, at = before["per_class_true"][k]["f1"], after["per_class_true"][k]["f1"]
            row.update({"f1_true_before": bt, "f1_true_after": at, "f1_true_change": at - bt})
        rows.append(row)
    return rows


#: The F1 changes' confidence intervals: bootstrap resamples of the test images, level.
CI_BOOT = 2000

CI_LEVEL = 0.95


def change_intervals(
    probs_before: np.ndarray,
    probs_after: np.ndarray,
    given: np.ndarray,
    true: np.ndarray | None,
    seed: int,
    threshold: float = 0.5,
) -> dict:
    """``metrics.json["delta_ci"]``: 95 % intervals of the test F1 changes.

    A paired bootstrap over the test images (:func:`labelaudit.core.stats.bootstrap_f1`):
    both models are scored on the same resampled images, at the headline threshold.

    Parameters
    ----------
    probs_before, probs_after
        (n_test, K) test probabilities of both models.
    given, true
        The test images' given labels, and their true labels (or ``None``).
    seed
        Seed of the resampling.
    threshold
        Decision threshold (the headline metrics' 0.5).

    Returns
    -------
    dict
        ``micro_f1``, ``macro_f1``, ``per_class`` (against the given labels; with
        ``true`` also ``*_true``), each an :meth:`Interval.to_dict`, and how they
        were made (``method, level, n_boot, seed, threshold, n_test``).
    """
    pb = np.asarray(probs_before) >= threshold
    pa = np.asarray(probs_after) >= threshold
    out: dict[str, Any] = {
        "method": "paired bootstrap over the test images, percentile interval",
        "level": CI_LEVEL,
        "n_boot": CI_BOOT,
        "seed": int(seed),
        "threshold": float(threshold),
        "n_test": int(len(given)),
    }
    for suffix, y in (("", given), ("_true", true)):
        if y is None:
            continue
        d = bootstrap_f1(y, pb, pa, n_boot=CI_BOOT, seed=seed, level=CI_LEVEL)
        out[f"micro_f1{suffix}"] = d.micro.to_dict()
        out[f"macro_f1{suffix}"] = d.macro.to_dict()
        out[f"per_class{suffix}"] = [c.to_dict() for c in d.per_class]
    return out


def mark_noise(rows: list[dict], ci: dict) -> list[dict]:
    """Add each class's change interval and ``*_within_noise`` to :func:`per_class_change` rows."""
    for suffix, key in (("", "f1_change"), ("_true", "f1_true_change")):
        for row, iv in zip(rows, ci.get(f"per_class{suffix}", []), strict=False):
            row[f"{key}_low"], row[f"{key}_high"] = iv["low"], iv["high"]
            row[f"{key}_within_noise"] = not iv["excludes_zero"]
    return rows


def label_error_counts(
    given: np.ndarray, cleaned: np.ndarray, removed: np.ndarray, true: np.ndarray, rows: np.ndarray
) -> dict[str, int]:
    """How cleaning changed the number of wrongly labelled training/validation images."""
    wrong_before = (given[rows] != true[rows]).any(axis=1)
    wrong_after = (cleaned[rows] != true[rows]).any(axis=1)
    gone = removed[rows]
    relabelled = ~gone & (cleaned[rows] != given[rows]).any(axis=1)
    return {
        "n_before": int(len(rows)),
        "wrong_before": int(wrong_before.sum()),
        "n_after": int((~gone).sum()),
        "wrong_after": int((wrong_after & ~gone).sum()),
        "removed_wrong": int((gone & wrong_before).sum()),
        "removed_right": int((gone & ~wrong_before).sum()),
        "relabel_fixed": int((relabelled & wrong_before & ~wrong_after).sum()),
        "relabel_still_wrong": int((relabelled & wrong_before & wrong_after).sum()),
        "relabel_broke": int((relabelled & ~wrong_before).sum()),
        # Label level (image, class): what issue 15's tables count.
        "labels_wrong_before": label_errors(given[rows], true[rows]),
        "labels_wrong_after": label_errors(cleaned[rows][~gone], true[rows][~gone]),
    }


def label_error_summary(errors: dict) -> dict:
    """``metrics.json["label_errors_true"]``: label-level errors of the training labels."""
    return {
        "before": errors["labels_wrong_before"],
        "after": errors["labels_wrong_after"],
        "images_before": errors["n_before"],
        "images_after": errors["n_after"],
        "scope": "training and validation images; label level (image, class) vs the truth",
    }


__all__ = [
    "CI_BOOT",
    "CI_LEVEL",
    "CLASS_WEIGHTS",
    "DELTA_KEYS",
    "THRESHOLD_GRID",
    "CleanPlan",
    "Split",
    "change_intervals",
    "class_weights",
    "label_error_counts",
    "label_error_summary",
    "make_split",
    "mark_noise",
    "model_metrics",
    "per_class_change",
    "plan_cleaning",
    "split_parts",
    "thresholded_metrics",
    "tune_thresholds",
]
