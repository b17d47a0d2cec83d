"""Cell-level findings: where a field's labels do not hold for its cells.

A field's labels are weak supervision for its cells: a cell-level model trained
with every cell inheriting its field's labels still learns what each class looks
like in one cell, and its out-of-fold probabilities say which cells show which
class. From them, per field:

* **label support**: for each given label, how many of the field's cells show it.
  A cell shows class k when its probability reaches the class's threshold
  ``t_k = min(threshold, mean probability of k over the cells of fields labelled
  k)``: confident learning's per-class threshold (the average self-confidence),
  capped at ``threshold``, so classes the cell model learned only weakly (every
  probability low, as weak labels make them) are still read. A label shown by no
  cell ("supported by 0 of 12 cells") is suspect. ``label_support_score`` ranks
  fields for it: the strongest cell's probability over ``t_k``, the lowest over
  the field's labels (below 1 exactly when some label has no supporting cell).
* **missing labels**: classes not given that at least ``missing_fraction`` of the
  field's cells predict at the plain ``threshold``. Lenient before doubting a given
  label, strict before suggesting a new one: on the synthetic bench the per-class
  thresholds suggested 3x as many missing labels at 0.20 precision, 0.5 gave 0.48.
* **odd cells**: cells whose predicted pattern differs from their siblings' (the
  largest change of one class probability against the median of the other cells
  of the field, >= ``odd_threshold``): heterogeneous expression, a mitotic cell,
  a mis-segmented one. Only fields with at least ``min_siblings + 1`` cells.
* **cell outliers**: the isolation forest on the cell embeddings (the image-level
  detector, applied to cells): debris, fragments, out-of-focus cells.

Confident learning and the per-class intensity rule are not run per cell: a cell
inherits its field's labels, so in a field where only some cells express a class,
every non-expressing cell would read as a label error by design.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from labelaudit.core.params import Integral, Interval, Real
from labelaudit.detect.base import (
    AuditInputs,
    Detector,
    DetectorResult,
    make_findings,
    register,
)


@dataclass(frozen=True)
class CellFindingParams:
    """Thresholds of the cell-level findings (see the module docstring)."""

    threshold: float = 0.5
    per_class_thresholds: bool = True
    missing_fraction: float = 0.5
    odd_threshold: float = 0.5
    min_siblings: int = 2
    outlier_contamination: float = 0.05


def _tokens(mask: np.ndarray, tokens: list[str], sep: str) -> str:
    return sep.join(tokens[k] for k in np.flatnonzero(mask))


def sibling_deviation(probs: np.ndarray, field_of: np.ndarray, min_siblings: int = 2) -> np.ndarray:
    """How far each cell's probabilities are from the median of its field's other cells.

    Parameters
    ----------
    probs
        (M, K) cell probabilities.
    field_of
        (M,) field position of each cell.
    min_siblings
        Cells with fewer siblings get NaN (nothing to compare with).

    Returns
    -------
    np.ndarray
        (M,) the largest absolute per-class difference, in [0, 1].
    """
    out = np.full(len(probs), np.nan)
    order = np.argsort(field_of, kind="stable")
    bounds = np.flatnonzero(np.diff(field_of[order])) + 1
    for rows in np.split(order, bounds):
        if len(rows) < min_siblings + 1:
            continue
        p = probs[rows]
        for j, row in enumerate(rows):
            others = np.delete(p, j, axis=0)
            out[row] = np.abs(p[j] - np.median(others, axis=0)).max()
    return out


def field_positions(cells: pd.DataFrame, field_ids: list[str]) -> np.ndarray:
    """Each cell's field as a row of ``field_ids`` (``cells["id"]`` names it).

    Raises
    ------
    ValueError
        A cell of a field that is not in ``field_ids``.
    """
    position = {str(fid): i for i, fid in enumerate(field_ids)}
    names = cells["id"].astype(str)
    missing = sorted(set(names) - set(position))
    if missing:
        raise ValueError(f"cells of unknown fields: {', '.join(missing[:3])}")
    return names.map(position).to_numpy(dtype=np.int64)


def cell_findings(
    cells: pd.DataFrame,
    probs: np.ndarray,
    field_ids: list[str],
    field_labels: np.ndarray,
    class_tokens: list[str],
    label_sep: str = "|",
    embeddings: np.ndarray | None = None,
    params: CellFindingParams | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-cell and per-field findings from out-of-fold cell probabilities.

    Parameters
    ----------
    cells
        One row per cell with at least ``cell_id`` and ``id`` (its field's id).
    probs
        (M, K) out-of-fold cell probabilities, rows aligned with ``cells``.
    field_ids
        The N field ids (the order of ``issues.csv``).
    field_labels
        (N, K) bool given labels of the fields.
    class_tokens
        How each class is written in the dataset (``issues.csv`` notation).
    label_sep
        Separator of labels in the dataset's notation.
    embeddings
        (M, D) cell embeddings for the cell outlier forest (skipped when ``None`` or
        too few cells).
    params
        Thresholds.
    seed
        Seeds the isolation forest.

    Returns
    -------
    (cells_frame, field_columns)
        ``cells_frame``: ``cells`` plus ``predicted_labels``, ``n_predicted``,
        ``sibling_deviation``, ``odd``, ``outlier_score``, ``outlier``.
        ``field_columns``: one row per field (index ``field_ids``): ``n_cells``,
        ``label_support`` (``token:shown/n`` for each given label),
        ``label_support_score``, ``unsupported_labels``, ``cell_missing_labels``,
        ``n_odd_cells``, ``n_outlier_cells``.
    """
    p = params or CellFindingParams()
    probs = np.asarray(probs, dtype=np.float64)
    field_labels = np.asarray(field_labels, dtype=bool)
    field_of = field_positions(cells, field_ids)
    thresholds = class_thresholds(probs, field_labels[field_of], p)
    shown = probs >= thresholds  # supports a given label
    predicted = probs >= p.threshold  # the cell model's own prediction

    out = _per_cell(cells, probs, predicted, field_of, class_tokens, label_sep, embeddings, p, seed)
    tables = (out, probs, shown, predicted, field_of)
    fields = _per_field(*tables, field_ids, field_labels, thresholds, p, class_tokens, label_sep)
    fields.attrs["class_thresholds"] = thresholds.tolist()
    return out, fields


def _per_cell(
    cells: pd.DataFrame,
    probs: np.ndarray,
    predicted: np.ndarray,
    field_of: np.ndarray,
    class_tokens: list[str],
    label_sep: str,
    embeddings: np.ndarray | None,
    p: CellFindingParams,
    seed: int,
) -> pd.DataFrame:
    """``cells`` with each cell's predicted labels, sibling deviation and outlier score."""
    out = cells.copy().reset_index(drop=True)
    out["predicted_labels"] = [_tokens(s, class_tokens, label_sep) for s in predicted]
    out["n_predicted"] = predicted.sum(axis=1)
    deviation = sibling_deviation(probs, field_of, p.min_siblings)
    out["sibling_deviation"] = deviation
    out["odd"] = np.nan_to_num(deviation, nan=0.0) >= p.odd_threshold
    out["outlier_score"] = _outlier_scores(embeddings, p, seed)
    finite = out["outlier_score"].notna()
    cut = (
        out.loc[finite, "outlier_score"].quantile(1 - p.outlier_contamination)
        if finite.any()
        else 1
    )
    out["outlier"] = finite & (out["outlier_score"] >= cut)
    return out


def _per_field(
    out: pd.DataFrame,
    probs: np.ndarray,
    shown: np.ndarray,
    predicted: np.ndarray,
    field_of: np.ndarray,
    field_ids: list[str],
    field_labels: np.ndarray,
    thresholds: np.ndarray,
    p: CellFindingParams,
    class_tokens: list[str],
    label_sep: str,
) -> pd.DataFrame:
    """One row per field: its cells' support of each given label, missing labels, odd
    and outlier cells (the columns :func:`cell_findings` returns)."""
    n_fields, k = field_labels.shape
    n_cells = np.bincount(field_of, minlength=n_fields)
    shown_count = np.zeros((n_fields, k), dtype=np.int64)
    np.add.at(shown_count, field_of, shown.astype(np.int64))
    predicted_count = np.zeros((n_fields, k), dtype=np.int64)
    np.add.at(predicted_count, field_of, predicted.astype(np.int64))
    strongest = np.zeros((n_fields, k))
    np.maximum.at(strongest, field_of, probs)
    odd_count = np.bincount(field_of, weights=out["odd"].to_numpy(float), minlength=n_fields)
    outlier_count = np.bincount(
        field_of, weights=out["outlier"].to_numpy(float), minlength=n_fields
    )
    rows = []
    for i in range(n_fields):
        given = np.flatnonzero(field_labels[i])
        has_cells = n_cells[i] > 0
        support = ";".join(f"{class_tokens[c]}:{shown_count[i, c]}/{n_cells[i]}" for c in given)
        unsupported = [c for c in given if has_cells and shown_count[i, c] == 0]
        share = predicted_count[i] / max(n_cells[i], 1)
        extra = has_cells & ~field_labels[i] & (share >= p.missing_fraction)
        rows.append(
            {
                "n_cells": int(n_cells[i]),
                "label_support": support if has_cells else "",
                # < 1: some given label has no cell at its class threshold;
                # NaN without cells or labels
                "label_support_score": float((strongest[i, given] / thresholds[given]).min())
                if has_cells and len(given)
                else np.nan,
                "unsupported_labels": label_sep.join(class_tokens[c] for c in unsupported),
                "cell_missing_labels": _tokens(extra, class_tokens, label_sep),
                "n_odd_cells": int(odd_count[i]),
                "n_outlier_cells": int(outlier_count[i]),
            }
        )
    return pd.DataFrame(rows, index=pd.Index(field_ids, name="id"))


def class_thresholds(
    probs: np.ndarray, cell_labels: np.ndarray, params: CellFindingParams
) -> np.ndarray:
    """Per class: ``min(threshold, mean probability over the cells labelled k)``.

    ``cell_labels`` are the labels the cells inherit from their fields. Classes no
    cell is labelled with keep ``threshold``; so do all with
    ``per_class_thresholds=False``.
    """
    k = probs.shape[1]
    out = np.full(k, float(params.threshold))
    if not params.per_class_thresholds:
        return out
    counts = cell_labels.sum(axis=0)
    sums = (probs * cell_labels).sum(axis=0)
    seen = counts > 0
    out[seen] = np.minimum(params.threshold, sums[seen] / counts[seen])
    return np.maximum(out, 1e-6)


def _outlier_scores(
    embeddings: np.ndarray | None, p: CellFindingParams, seed: int
) -> np.ndarray | float:
    """Isolation forest anomaly scores of the cells (NaN when it cannot run)."""
    if embeddings is None:
        return np.nan  # broadcast over the cells
    if len(embeddings) < 10:  # below the forest's minimum
        return np.full(len(embeddings), np.nan)
    from labelaudit.detect.isolation import IsolationOutliers

    n = len(embeddings)
    inputs = AuditInputs(
        ids=[str(i) for i in range(n)],
        class_names=["cell"],
        class_tokens=["0"],
        label_sep="|",
        labels=np.ones((n, 1), dtype=bool),
        embeddings=embeddings,
    )
    detector = IsolationOutliers(
        contamination=p.outlier_contamination, per_class=False, random_state=seed
    )
    return np.asarray(detector.run(inputs).image_score, dtype=np.float64)


@register("cells")
@dataclass(kw_only=True, eq=False, repr=False)
class CellEvidence(Detector):
    """Where a field's labels do not hold for its cells (the module docstring).

    The registered form of :func:`cell_findings`: it runs after the comparison, on
    the cell-level cross-validation (``inputs.cells``), from
    :func:`labelaudit.cells.audit.write_cell_findings`. Its parameters are the fields of
    :class:`CellFindingParams`, and ``random_state`` seeds the cell outlier forest.

    Findings: per field, each given label no cell shows (``value`` = the field's
    ``label_support_score``) and each class most cells show but the field is not given,
    flagged, ``"review"``. The image score is how far the label support falls short
    of 1 (0 for a field whose every label is shown).
    """

    family = "label"
    requires = ("labels", "cells")
    after_comparison = True
    issue_columns = {
        "n_cells": "score",
        "label_support": "text",
        "label_support_score": "score",
        "unsupported_labels": "text",
        "cell_missing_labels": "text",
        "n_odd_cells": "score",
        "n_outlier_cells": "score",
    }
    parameter_constraints = {
        "threshold": [Interval(Real, 0, 1, closed="right")],
        "missing_fraction": [Interval(Real, 0, 1, closed="right")],
        "odd_threshold": [Interval(Real, 0, 1, closed="both")],
        "min_siblings": [Interval(Integral, 1, None, closed="left")],
        "outlier_contamination": [Interval(Real, 0, 0.5, closed="right")],
    }

    threshold: float = 0.5
    per_class_thresholds: bool = True
    missing_fraction: float = 0.5
    odd_threshold: float = 0.5
    min_siblings: int = 2
    outlier_contamination: float = 0.05
    random_state: int = 0

    def finding_params(self) -> CellFindingParams:
        """The thresholds as :class:`CellFindingParams`."""
        return CellFindingParams(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(CellFindingParams)}
        )

    def tables(self, inputs: AuditInputs) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The per-cell and per-field tables of :func:`cell_findings`.

        Parameters
        ----------
        inputs
            The field-level audit inputs with ``inputs.cells``.

        Returns
        -------
        (cells_frame, field_columns)
            As :func:`cell_findings`; ``field_columns`` holds :attr:`issue_columns`.
        """
        self.check_inputs(inputs)
        self.check_params()
        cells = inputs.cells
        assert cells is not None  # a required input
        return cell_findings(
            cells.table,
            cells.probs,
            inputs.ids,
            inputs.labels,
            inputs.class_tokens,
            inputs.label_sep,
            embeddings=cells.embeddings,
            params=self.finding_params(),
            seed=int(self.random_state),
        )

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        _, per_field = self.tables(inputs)
        n = inputs.n_images
        token_index = {t: k for k, t in enumerate(inputs.class_tokens)}
        rows: list[int] = []
        classes: list[int] = []
        for column in ("unsupported_labels", "cell_missing_labels"):
            for i, text in enumerate(per_field[column].tolist()):
                for token in text.split(inputs.label_sep) if text else []:
                    rows.append(i)
                    classes.append(token_index[token])
        support = per_field["label_support_score"].to_numpy(dtype=float)
        img = np.asarray(rows, dtype=np.int64)
        findings = make_findings(
            inputs,
            self.name,
            img,
            np.asarray(classes, dtype=np.int64),
            np.ones(len(img)),
            np.ones(len(img), dtype=bool),
            "review",
            support[img],
        )
        score = np.clip(1.0 - np.nan_to_num(support, nan=1.0), 0.0, 1.0)
        flagged = np.zeros(n, dtype=bool)
        flagged[img] = True
        columns = {c: per_field[c].to_numpy() for c in self.issue_columns}
        return DetectorResult(self.name, findings, score, flagged, columns)
