"""benchmarks/label_evidence.py: truth groups, the table, and Datalab's label issue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from la_testutils import load_benchmark


@pytest.fixture(scope="module")
def label_evidence():
    return load_benchmark("label_evidence")


def test_truth_groups_split_label_noise_by_kind(label_evidence, tmp_path):
    pd.DataFrame(
        {
            "ID": ["a", "b", "c", "d", "e"],
            "true_label": ["0|1", "2", "1", "0", "2"],
            "given_label": ["0", "1", "1", "0|2", "2"],
            "noise": ["missing", "swap;blur", "dim", "extra", "none"],
        }
    ).to_csv(tmp_path / "truth.csv", index=False)
    groups, clean = label_evidence.truth_groups(["e", "d", "c", "b", "a"], tmp_path / "truth.csv")
    assert clean.tolist() == [True, False, False, False, False]
    assert groups["label"].tolist() == [False, True, False, True, True]
    assert groups["missing"].tolist() == [False, False, False, False, True]
    assert groups["extra"].tolist() == [False, True, False, False, False]
    assert groups["swap"].tolist() == [False, False, False, True, False]
    assert groups["image"].tolist() == [False, False, True, True, False]
    true = label_evidence.true_labels(["a", "e"], tmp_path / "truth.csv", ["0", "1", "2"])
    assert true.tolist() == [[True, True, False], [False, False, True]]
    # AUROC of each group against the clean images only
    score = np.array([0.0, 1.0, 0.5, 0.2, 0.9])
    assert label_evidence.auroc(groups["label"], clean, score) == 1.0
    assert np.isnan(label_evidence.auroc(np.zeros(5, bool), clean, score))


def test_the_table_marks_the_best_single_detector(label_evidence):
    groups = label_evidence.GROUPS
    scored = {
        "name": "toy",
        "auroc": {
            "confident": dict.fromkeys(groups, 0.9),
            "combined": {**dict.fromkeys(groups, 0.8), "missing": 0.95},
            "datalab label": dict.fromkeys(groups, 0.9),
        },
        "counts": {**dict.fromkeys(groups, 3), "clean": 10},
        "suggestions": {
            "n_changes": 4,
            "precision": 0.75,
            "errors_given": 10,
            "errors_accepted": 7,
        },
    }
    text = label_evidence.format_run(scored, markdown=True)
    assert "| combined | 0.800 | **0.950** |" in text
    assert "| datalab label | 0.900 | 0.900 |" in text  # a peer tool is never marked
    assert "label errors 10 -> 7 (30% removed)" in text


def test_datalab_label_issue_is_confident_learnings_ranking(label_evidence):
    pytest.importorskip("datasets")  # cleanlab[datalab]: the bench extra only
    from labelaudit.detect import AuditInputs, get_detector

    rng = np.random.default_rng(0)
    n, k = 80, 4
    labels = rng.random((n, k)) < 0.35
    labels[~labels.any(axis=1), 0] = True
    probs = np.clip(np.where(labels, 0.7, 0.2) + rng.normal(0, 0.2, (n, k)), 0.01, 0.99)
    scores = label_evidence.datalab_scores(labels, probs, None)
    inputs = AuditInputs(
        ids=[str(i) for i in range(n)],
        class_names=list("abcd"),
        class_tokens=list("0123"),
        label_sep="|",
        labels=labels,
        probs=probs,
    )
    confident = get_detector("confident", health=False).run(inputs).image_score
    np.testing.assert_allclose(scores["label"], confident, atol=1e-9)
    assert (scores["datalab max"] >= scores["label"]).all()
