"""Multi-label metrics at a fixed threshold: the method's F1 table, via scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_fscore_support


def multilabel_metrics(
    labels: np.ndarray, probs: np.ndarray, class_names: list[str], threshold: float = 0.5
) -> dict:
    """Micro, macro and weighted F1/precision/recall and a per-class report.

    Parameters
    ----------
    labels
        Bool (N, K) given labels.
    probs
        (N, K) probabilities; predicted positive where ``probs >= threshold``.
    class_names
        K names for the per-class report.
    threshold
        Decision threshold (the method uses 0.5).

    Returns
    -------
    dict
        ``micro_f1``, ``macro_f1``, ``weighted_f1``, ``samples_f1`` and the same
        for ``precision`` and ``recall``; ``subset_accuracy``; ``macro_ap``
        (mean average precision over classes with positives, threshold-free);
        ``threshold``; ``n_images``; ``per_class``: a list of
        ``{class, precision, recall, f1, support}`` (support = positive images).
        Undefined ratios (no positives predicted or present) count as 0, as in
        scikit-learn with ``zero_division=0``.
    """
    y = np.asarray(labels, dtype=bool)
    pred = np.asarray(probs) >= threshold
    out: dict = {"threshold": float(threshold), "n_images": int(y.shape[0])}
    for average in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = precision_recall_fscore_support(y, pred, average=average, zero_division=0)
        out[f"{average}_precision"] = float(p)
        out[f"{average}_recall"] = float(r)
        out[f"{average}_f1"] = float(f)
    out["subset_accuracy"] = float((y == pred).all(axis=1).mean()) if len(y) else 0.0
    present = np.flatnonzero(y.any(axis=0))
    if present.size:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["macro_ap"] = float(
                average_precision_score(
                    y[:, present], np.asarray(probs)[:, present], average="macro"
                )
            )
    else:
        out["macro_ap"] = float("nan")
    p, r, f, s = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    out["per_class"] = [
        {
            "class": name,
            "precision": float(p[k]),
            "recall": float(r[k]),
            "f1": float(f[k]),
            "support": int(s[k]),
        }
        for k, name in enumerate(class_names)
    ]
    return out


def summary(metrics: dict) -> dict:
    """The headline numbers only (no per-class list)."""
    return {k: v for k, v in metrics.items() if k != "per_class"}
