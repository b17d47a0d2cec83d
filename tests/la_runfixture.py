"""A run directory as the scan would leave it, without training: shared by test files.

``make_run(tmp_path, dataset)`` writes ``run.json``'s dataset section,
``dataset.csv``, ``issues.csv``, ``findings.csv`` and ``oof_probs.csv`` for a small
dataset (``make_hpa``'s fields), with the hand-made findings of :data:`SCENARIO`, so
``clean``, ``retrain`` and the report can be tested in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from labelaudit.core.io import update_run_json, write_csv
from labelaudit.data.layouts import load_dataset

ISSUE_COLUMNS = [
    "id",
    "given_labels",
    "suggested_labels",
    "label_quality",
    "outlier_score",
    "intensity_z",
    "flagged_by",
    "n_flags",
    "consensus_score",
    "consensus_flag",
    "label_changes",
]


# What the detectors "found", per image: flagged_by, suggested labels and the
# confident-learning changes (class token, add?, probability), intensity z.
SCENARIO: dict[str, dict] = {
    # consensus; confident changes all confident -> relabel keeps it as "2"
    "field001": {
        "by": "confident;isolation",
        "sugg": "2",
        "cl": [("1", False, 0.05), ("2", True, 0.95)],
    },
    # confident alone, unsure change -> relabel leaves it
    "field002": {"by": "confident", "sugg": "2|5", "cl": [("5", True, 0.6)]},
    # consensus with an intensity flag: pixels suspect -> relabel removes it
    "field003": {
        "by": "confident;intensity",
        "sugg": "7",
        "cl": [("3", False, 0.02), ("7", True, 0.97)],
        "z": 4.2,
    },
    # consensus without confident-learning changes -> removed by relabel and consensus-drop
    "field004": {"by": "isolation;intensity", "sugg": "4|3", "z": -3.5},
    # confident alone, sure -> relabel adds 6
    "field005": {"by": "confident", "sugg": "5|6", "cl": [("6", True, 0.9)]},
    # intensity alone -> only the intensity policy removes it
    "field006": {"by": "intensity", "sugg": "6", "z": 3.3},
    # confident would remove the only label -> never relabelled to nothing
    "field007": {"by": "confident", "sugg": "", "cl": [("7", False, 0.01)]},
    # sure, but class 9 is one the model has not learned (low out-of-fold AP) -> left
    "field008": {"by": "confident", "sugg": "8|9", "cl": [("9", True, 0.95)]},
}
#: Out-of-fold probabilities: 0.9 for given labels, 0.05 otherwise, except these.
OOF_OVERRIDES = {("field009", "9"): 0.01}


def make_run(tmp_path: Path, dataset: Path, layout: str = "hpa2021") -> Path:
    """A run directory as the scan would leave it, with SCENARIO's findings."""
    ds = load_dataset(dataset, layout)
    run = tmp_path / "run"
    run.mkdir()
    sep = ds.label_sep
    update_run_json(
        run,
        "dataset",
        {
            "path": str(ds.root.resolve()),
            "layout": ds.layout,
            "label_file": str(ds.label_file.resolve()),
            "fingerprint": ds.fingerprint(),
            "n_images": len(ds),
            "n_classes": ds.n_classes,
            "class_names": ds.class_names,
            "class_tokens": ds.class_tokens,
            "label_sep": sep,
            "channels": list(ds.channels),
            "protein_channel": ds.channels[ds.protein_channel],
        },
    )
    given = [ds.format_labels(r) for r in ds.labels]
    write_csv(run / "dataset.csv", pd.DataFrame({"id": ds.ids, "labels": given}))
    token_name = dict(zip(ds.class_tokens, ds.class_names, strict=True))
    rows, findings = [], []
    for image_id, labels in zip(ds.ids, given, strict=True):
        s = SCENARIO.get(image_id, {"by": "", "sugg": labels})
        s = {**s, "sugg": s["sugg"].replace("|", sep)}
        by = s["by"]
        n_flags = len([b for b in by.split(";") if b])
        rows.append(
            {
                "id": image_id,
                "given_labels": labels,
                "suggested_labels": s["sugg"],
                "label_quality": 0.1 if "confident" in by else 0.9,
                "outlier_score": 0.7 if "isolation" in by else 0.1,
                "intensity_z": abs(s.get("z", 0.5)),
                "flagged_by": by,
                "n_flags": n_flags,
                "consensus_score": 0.2 * n_flags,
                "consensus_flag": n_flags >= 2,
                "label_changes": ";".join(
                    f"{'+' if a else '-'}{t} (p={p:.2f})" for t, a, p in s.get("cl", [])
                ),
            }
        )
        for token, add, p in s.get("cl", []):
            findings.append(
                (image_id, token_name[token], "confident", 0.9, True, "add" if add else "remove", p)
            )
            if add:  # most of the image's neighbours carry the class (knn's share)
                findings.append((image_id, token_name[token], "knn", 0.8, True, "add", 0.8))
        if "z" in s:
            first = labels.split(sep)[0]
            findings.append(
                (image_id, token_name[first], "intensity", abs(s["z"]), True, "review", s["z"])
            )
        findings.append(
            (
                image_id,
                "",
                "isolation",
                0.7 if "isolation" in by else 0.1,
                "isolation" in by,
                "",
                np.nan,
            )
        )
    write_csv(run / "issues.csv", pd.DataFrame(rows, columns=ISSUE_COLUMNS))
    probs = np.where(ds.labels, 0.9, 0.05)
    for (image_id, token), p in OOF_OVERRIDES.items():
        if image_id in ds.ids:
            probs[ds.ids.index(image_id), ds.class_tokens.index(token)] = p
    oof = pd.DataFrame(probs, columns=ds.class_names)
    oof.insert(0, "id", ds.ids)
    write_csv(run / "oof_probs.csv", oof)
    write_csv(
        run / "findings.csv",
        pd.DataFrame(
            findings, columns=["id", "class", "detector", "score", "flagged", "suggestion", "value"]
        ),
    )
    return run
