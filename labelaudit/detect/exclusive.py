"""Given label sets that join an exclusive class with another class.

An exclusive class (HPA's Negative: no protein staining in the field;
:mod:`labelaudit.data.roles`) is never combined with another class, so a field given
"Negative + Cytosol" has a wrong label whatever its pixels show: one side must go.
Which one is for the model to say (:func:`labelaudit.detect.suggest.suggest_labels`
resolves it with the out-of-fold probabilities); this detector names the conflict.

Scores and flags
----------------
One finding per (image, exclusive class) in a conflict, flagged, suggestion
``"review"``, ``value`` = the number of other classes given with it. The per-image
score is 1 for a conflicting label set, 0 otherwise; ``exclusive_conflict`` says
it in words (``Negative given with Cytosol (Negative is never combined with another
class)``). A dataset without exclusive classes gives no findings.
"""

from __future__ import annotations

import numpy as np

from labelaudit.data.roles import conflicting_rows, describe_conflict
from labelaudit.detect.base import (
    AuditInputs,
    Detector,
    DetectorResult,
    make_findings,
    register,
)

#: The kind of evidence, for the default order's evidence column.
CONFLICT = "conflict"


@register("exclusive")
class ExclusiveConflict(Detector):
    """Label sets joining an exclusive class with another class (no parameters)."""

    requires = ("labels",)
    family = "label"
    issue_columns = {"exclusive_conflict": "text"}

    def applies(self, inputs: AuditInputs) -> bool:
        return bool(inputs.exclusive_classes)

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        idx = inputs.exclusive_idx
        labels = inputs.labels
        conflict = conflicting_rows(labels, idx)
        rows, cols = np.nonzero(labels[:, idx] & conflict[:, None]) if idx.size else ([], [])
        rows = np.asarray(rows, dtype=int)
        classes = idx[np.asarray(cols, dtype=int)] if idx.size else np.zeros(0, dtype=int)
        others = labels.sum(axis=1) - 1
        findings = make_findings(
            inputs,
            self.name,
            rows,
            classes,
            np.ones(len(rows)),
            np.ones(len(rows), dtype=bool),
            "review",
            others[rows].astype(float),
        )
        score = conflict.astype(float)
        text = np.array(
            [
                describe_conflict(inputs.class_names, labels[i], idx) if conflict[i] else ""
                for i in range(inputs.n_images)
            ],
            dtype=object,
        )
        names = ", ".join(inputs.exclusive_classes)
        return DetectorResult(
            detector=self.name,
            findings=findings,
            image_score=score,
            image_flagged=conflict,
            columns={"exclusive_conflict": text},
            summary={
                "exclusive_classes": list(inputs.exclusive_classes),
                "n_conflicts": int(conflict.sum()),
            },
            evidence_scores={CONFLICT: score} if conflict.any() else {},
            evidence_names={CONFLICT: f"{names} joined with another class"},
        )
