"""The method's table: F1, recall, precision and whether every class was hit.

The method reported each study as a small table of average F1, recall and
precision at a 0.5 threshold plus whether every class got at least one correct
prediction. The averages are micro averages (every image-class decision counts
once); where a micro average is undefined (a zero denominator: precision when
the model predicts no label at all, recall when no image has a label) the macro
average over the classes where it is defined is used, and where that is
undefined too the value is 0, as in scikit-learn's ``zero_division=0``. The
``average`` column says which was used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from labelaudit.tools.sweep.plan import AXES, AXIS_TITLES, Config, format_value, varied_axes

#: The three averaged scores of the method's table, in its column order.
SCORES: tuple[str, ...] = ("f1", "recall", "precision")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.full(np.shape(den), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def method_scores(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict:
    """The method's averaged scores of one configuration's held-out predictions.

    Parameters
    ----------
    labels
        Bool (N, K) given labels of the scored images.
    probs
        (N, K) predicted probabilities; non-finite values (a diverged model) count
        as "not predicted".
    threshold
        Predicted positive where ``probs >= threshold`` (the method: 0.5).

    Returns
    -------
    dict
        ``f1``, ``recall``, ``precision`` (micro, with the fallback described in
        the module docstring), ``average`` (``"micro"`` or which score fell back),
        ``all_classes_hit`` (every class with a positive image has at least one
        true positive), ``classes_hit`` and ``classes_present`` (counts),
        ``missed_classes`` (indices of present classes without a true positive),
        ``predicted_per_image`` (mean labels predicted) and ``diverged`` (any
        non-finite probability).
    """
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(probs, dtype=np.float64)
    finite = np.isfinite(p)
    pred = np.where(finite, p, -np.inf) >= threshold
    tp = (y & pred).sum(axis=0)
    fp = (~y & pred).sum(axis=0)
    fn = (y & ~pred).sum(axis=0)
    per_class = {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }
    micro = {
        "precision": _ratio(tp.sum(), tp.sum() + fp.sum()),
        "recall": _ratio(tp.sum(), tp.sum() + fn.sum()),
        "f1": _ratio(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum()),
    }
    out: dict = {}
    notes = []
    for name in SCORES:
        value = float(micro[name])
        if not np.isfinite(value):
            defined = per_class[name][np.isfinite(per_class[name])]
            if defined.size:
                value = float(defined.mean())
                notes.append(f"{name} macro")
            else:
                value = 0.0
                notes.append(f"{name} undefined (0)")
        out[name] = value
    out["average"] = "micro" if not notes else "micro; " + ", ".join(notes)
    present = y.any(axis=0)
    hit = tp > 0
    out["classes_present"] = int(present.sum())
    out["classes_hit"] = int((hit & present).sum())
    out["all_classes_hit"] = bool((hit | ~present).all())
    out["missed_classes"] = [int(k) for k in np.flatnonzero(present & ~hit)]
    out["predicted_per_image"] = float(pred.sum(axis=1).mean()) if len(y) else 0.0
    out["diverged"] = bool(not finite.all())
    return out


def hit_text(row: dict | pd.Series) -> str:
    """``yes`` or ``no (12/19)``: did every class get a correct prediction?"""
    if bool(row["all_classes_hit"]):
        return "yes"
    return f"no ({int(row['classes_hit'])}/{int(row['classes_present'])})"


def axis_table(
    runs: pd.DataFrame, axis: str, values: Sequence[object], base: Config
) -> pd.DataFrame:
    """The method's table for one axis: its values, the other axes at the base setting.

    Parameters
    ----------
    runs
        One row per configuration (``backbone``, ``lr``, ``activation`` and the
        :func:`method_scores` fields).
    axis
        The varied axis.
    values
        Its values, in table order.
    base
        The base configuration (fixes the other axes).

    Returns
    -------
    pandas.DataFrame
        Columns: the axis title, ``F1``, ``Recall``, ``Precision``, ``Average``,
        ``Every class correct``; rows whose configuration has no result yet are
        left out.
    """
    rows = []
    for value in values:
        want = {a: (value if a == axis else base.value(a)) for a in AXES}
        match = runs
        for a, v in want.items():
            match = match[match[a] == v]
        if match.empty:
            continue
        r = match.iloc[0]
        rows.append(
            {
                AXIS_TITLES[axis]: format_value(axis, value),
                "F1": float(r["f1"]),
                "Recall": float(r["recall"]),
                "Precision": float(r["precision"]),
                "Average": r["average"],
                "Every class correct": hit_text(r),
            }
        )
    columns = [AXIS_TITLES[axis], "F1", "Recall", "Precision", "Average", "Every class correct"]
    return pd.DataFrame(rows, columns=columns)


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a GitHub-flavoured Markdown table (numbers right-aligned)."""
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    align = "| " + " | ".join(
        "---:" if pd.api.types.is_numeric_dtype(table[c]) else "---" for c in table.columns
    )
    lines = [header, align + " |"]
    for _, row in table.iterrows():
        cells = []
        for c in table.columns:
            v = row[c]
            if isinstance(v, float | np.floating):
                cells.append("" if not np.isfinite(v) else f"{v:.{digits}f}")
            else:
                cells.append(str(v).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_tables(
    runs: pd.DataFrame, axes: dict[str, list[object]], base: Config
) -> dict[str, pd.DataFrame]:
    """The method's table per varied axis (all runs in one table when none varies)."""
    varied = varied_axes(axes)
    if not varied and len(runs):
        return {"backbone": axis_table(runs, "backbone", [base.backbone], base)}
    return {a: axis_table(runs, a, axes[a], base) for a in varied}
