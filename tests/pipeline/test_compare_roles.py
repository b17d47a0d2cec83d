"""An empty protein stain given Cytosol, end to end through the detectors and the
suggestions: label evidence in words and a suggested swap to Negative (issue 23)."""

from __future__ import annotations

import dataclasses

import numpy as np
from la_rolefields import CASES, NEGATIVE, N, role_inputs

from labelaudit.pipeline.compare import build_issues, run_detectors


def _with_probs() -> object:
    inputs = role_inputs(CASES)
    probs = np.where(inputs.labels, 0.9, 0.03)
    probs[1] = [0.02, 0.05, 0.6]  # empty green given Cytosol: the model reads Negative
    probs[3] = [0.02, 0.05, 0.6]  # every stain dim: the model is fooled as well
    return dataclasses.replace(inputs, probs=probs)


def test_empty_green_given_cytosol_gets_negative_suggested_in_words():
    inputs = _with_probs()
    results, _, _ = run_detectors(inputs, ["confident", "quality", "intensity", "exclusive"])
    issues = build_issues(inputs, results).set_index("id")
    row = issues.loc["f1"]
    assert row["suggested_labels"] == "18"
    assert {c.split(" ")[0] for c in row["label_changes"].split(";")} == {"-16", "+18"}
    assert row["stain_evidence"] == "protein stain empty: looks Negative"
    assert "protein stain empty: looks Negative z=" in row["evidence"]
    assert row["label_score"] >= 1 > row["image_score"]
    assert "intensity" not in row["flagged_by"]
    assert row["flagged_by"] == "confident;quality"  # quality's finding is about the labels
    assert row["quality_issues"] == ""
    # every stain dim: an image fault, and no swap on suspect pixels
    dim = issues.loc["f3"]
    assert dim["image_score"] >= 1
    assert dim["suggested_labels"] == "16"
    # the true Negative fields are not image problems
    negatives = [f"f{i}" for i in range(N) if i % 5 == 0]
    assert (issues.loc[negatives, "image_score"] < 1).all()
    assert not issues.loc[negatives, "flagged_by"].str.contains("quality|intensity").any()
    assert inputs.labels[[0, 5], NEGATIVE].all()
