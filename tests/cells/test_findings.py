"""Cell-level findings on hand-made cell probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelaudit.detect.cells import CellFindingParams, cell_findings, sibling_deviation

TOKENS = ["0", "1", "2", "3"]


def make_cells():
    # field a: label 0, 4 cells all show 0
    # field b: labels 0|2, 3 cells show 0, none shows 2 -> 2 unsupported
    # field c: label 1, 4 cells show 1 and 3 of them class 3 -> 3 missing; cell c3 odd
    rows, probs = [], []
    for j in range(4):
        rows.append(("a", j + 1))
        probs.append([0.9, 0.1, 0.1, 0.1])
    for j in range(3):
        rows.append(("b", j + 1))
        probs.append([0.8, 0.1, 0.3 + 0.05 * j, 0.1])
    for j in range(4):
        rows.append(("c", j + 1))
        probs.append([0.1, 0.9, 0.1, 0.9 if j < 3 else 0.05])
    cells = pd.DataFrame(rows, columns=["id", "mask_label"])
    cells.insert(0, "cell_id", [f"{f}_{m}" for f, m in rows])
    return cells, np.array(probs)


def test_label_support_missing_and_odd_cells():
    cells, probs = make_cells()
    labels = np.array([[1, 0, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=bool)
    ids = ["a", "b", "c", "d"]  # d has no cells
    fixed = CellFindingParams(per_class_thresholds=False)  # every class read at 0.5
    per_cell, per_field = cell_findings(cells, probs, ids, labels, TOKENS, params=fixed)
    assert list(per_field.index) == ids
    assert per_field.loc["a", "label_support"] == "0:4/4"
    assert per_field.loc["a", "unsupported_labels"] == ""
    assert per_field.loc["b", "label_support"] == "0:3/3;2:0/3"
    assert per_field.loc["b", "unsupported_labels"] == "2"
    # the score is the strongest cell of the weakest label over its threshold
    assert per_field.loc["b", "label_support_score"] == pytest.approx(0.4 / 0.5)
    assert per_field.loc["a", "label_support_score"] == pytest.approx(0.9 / 0.5)
    assert per_field.loc["c", "cell_missing_labels"] == "3"
    assert per_field.loc["c", "n_odd_cells"] == 1
    assert per_field.loc["d", "n_cells"] == 0 and np.isnan(
        per_field.loc["d", "label_support_score"]
    )
    assert per_field.loc["d", "unsupported_labels"] == ""  # no cells: no verdict
    odd = per_cell.loc[per_cell["odd"], "cell_id"].tolist()
    assert odd == ["c_4"]
    assert per_cell.loc[per_cell["cell_id"] == "c_1", "predicted_labels"].item() == "1|3"
    assert per_cell["outlier_score"].isna().all()  # no embeddings given


def test_missing_fraction_and_separator():
    cells, probs = make_cells()
    labels = np.array([[1, 0, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0]], dtype=bool)
    strict = CellFindingParams(missing_fraction=0.9, per_class_thresholds=False)
    _, fields = cell_findings(cells, probs, ["a", "b", "c"], labels, TOKENS, " ", params=strict)
    assert fields.loc["c", "cell_missing_labels"] == ""  # 3 of 4 cells < 90 %
    assert fields.loc["b", "label_support"] == "0:3/3;2:0/3"


def test_sibling_deviation_needs_siblings():
    probs = np.array([[0.9], [0.9], [0.1], [0.5]])
    dev = sibling_deviation(probs, np.array([0, 0, 0, 1]))
    np.testing.assert_allclose(dev[:3], [0.4, 0.4, 0.8])
    assert np.isnan(dev[3])


def test_cell_outliers_from_embeddings():
    rng = np.random.default_rng(0)
    n = 60
    cells = pd.DataFrame({"cell_id": [f"f{i // 4}_{i % 4}" for i in range(n)]})
    cells["id"] = [f"f{i // 4}" for i in range(n)]
    emb = rng.normal(size=(n, 8))
    emb[7] += 25  # one cell far from all others
    probs = rng.random((n, 4)) * 0.4
    labels = np.zeros((n // 4, 4), dtype=bool)
    labels[:, 0] = True
    per_cell, fields = cell_findings(
        cells, probs, [f"f{i}" for i in range(n // 4)], labels, TOKENS, embeddings=emb
    )
    assert per_cell["outlier_score"].idxmax() == 7
    assert per_cell.loc[7, "outlier"]
    assert fields.loc["f1", "n_outlier_cells"] >= 1


def test_unknown_field_is_an_error():
    cells = pd.DataFrame({"cell_id": ["x_1"], "id": ["x"]})
    with pytest.raises(ValueError, match="unknown fields"):
        cell_findings(cells, np.zeros((1, 4)), ["a"], np.zeros((1, 4), bool), TOKENS)


def test_per_class_thresholds_read_weakly_learned_classes():
    # Class 1 is learned weakly: its labelled cells stay well below 0.5.
    rows, probs, labels = [], [], []
    for f in range(6):
        labelled = f < 4
        labels.append([True, labelled])
        for j in range(3):
            rows.append((f"f{f}", j + 1))
            p1 = (0.35 if j == 0 else 0.15) if labelled and f != 3 else 0.02
            probs.append([0.9, p1])
    cells = pd.DataFrame(rows, columns=["id", "cell"])
    cells.insert(0, "cell_id", [f"{a}_{b}" for a, b in rows])
    probs, labels = np.array(probs), np.array(labels)
    ids = [f"f{f}" for f in range(6)]
    _, fields = cell_findings(cells, probs, ids, labels, ["0", "1"])
    t1 = fields.attrs["class_thresholds"][1]
    assert t1 == pytest.approx(np.mean([0.35, 0.15, 0.15] * 3 + [0.02] * 3))
    assert fields.attrs["class_thresholds"][0] == 0.5  # capped at the threshold
    # Fields 0-2 have a cell above class 1's threshold; field 3's label has none.
    assert fields.loc["f0", "label_support"] == "0:3/3;1:1/3"
    assert fields.loc["f3", "unsupported_labels"] == "1"
    assert fields.loc["f3", "label_support_score"] < 1 <= fields.loc["f0", "label_support_score"]
    # With the fixed 0.5 every class-1 label would look unsupported.
    fixed = CellFindingParams(per_class_thresholds=False)
    _, plain = cell_findings(cells, probs, ids, labels, ["0", "1"], params=fixed)
    assert (plain["unsupported_labels"].iloc[:4] == "1").all()
