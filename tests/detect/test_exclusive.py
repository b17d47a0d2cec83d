"""The exclusive detector: a label set joining Negative with another class (issue 23)."""

from __future__ import annotations

import numpy as np

from labelaudit.detect import get_detector
from labelaudit.detect.base import AuditInputs
from labelaudit.pipeline.compare import DEFAULT_DETECTORS, build_issues, run_detectors

CLASSES = ["Nucleoplasm", "Cytosol", "Negative"]


def _inputs(exclusive=("Negative",)) -> AuditInputs:
    labels = np.zeros((40, 3), dtype=bool)
    labels[np.arange(40), np.arange(40) % 3] = True
    labels[7, 1] = True  # Negative + Cytosol (7 % 3 == 1: Cytosol; add Negative)
    labels[7, 2] = True
    labels[9, [0, 1]] = True  # Nucleoplasm + Cytosol: a normal pair
    return AuditInputs(
        [f"f{i}" for i in range(40)],
        CLASSES,
        ["0", "16", "18"],
        "|",
        labels,
        exclusive_classes=exclusive,
    )


def test_negative_with_cytosol_is_a_label_problem_with_its_own_evidence():
    result = get_detector("exclusive").run(_inputs())
    assert np.flatnonzero(result.image_flagged).tolist() == [7]
    f = result.findings
    assert f[["id", "class", "flagged", "suggestion"]].values.tolist() == [
        ["f7", "Negative", True, "review"]
    ]
    text = result.columns["exclusive_conflict"][7]
    assert text == "Negative given with Cytosol (Negative is never combined with another class)"
    assert result.summary["n_conflicts"] == 1


def test_issues_name_the_conflict_in_the_label_family():
    inputs = _inputs()
    results, skipped, _ = run_detectors(inputs, DEFAULT_DETECTORS)
    assert "exclusive" in results and "exclusive" not in skipped
    issues = build_issues(inputs, results).set_index("id")
    row = issues.loc["f7"]
    assert row["flagged_by"] == "exclusive"
    assert row["exclusive_conflict"].startswith("Negative given with Cytosol")
    assert "Negative joined with another class z=" in row["evidence"]
    assert row["label_score"] >= 1 > issues.drop("f7")["label_score"].max()
    assert row["image_score"] < 1


def test_a_dataset_without_exclusive_classes_does_not_run_it():
    results, skipped, _ = run_detectors(_inputs(exclusive=()), ["exclusive", "quality"])
    assert "exclusive" not in results
    assert "exclusive" not in skipped  # left out without a warning
