"""The fabricated report runs (conftest.py) take their labels from the named source."""

from __future__ import annotations

import pandas as pd
from la_testutils import HPA2021_LABELS_CSV, REPORT_LABEL_SOURCE

#: Rows make_run sets by hand (the intensity outliers, the trusted suggestion).
HAND_MADE_ROWS = {1, 2, 4}


def _label_sets(values: pd.Series) -> list[tuple[int, ...]]:
    return [tuple(sorted({int(t) for t in v.split("|")})) for v in values]


def test_the_fabricated_labels_come_from_the_named_source(report_run):
    truth = pd.read_csv(report_run.parent / "dataset" / "truth.csv", dtype=str)
    drawn = [s for i, s in enumerate(_label_sets(truth["true_label"])) if i not in HAND_MADE_ROWS]
    assert len(drawn) == len(truth) - len(HAND_MADE_ROWS)
    if REPORT_LABEL_SOURCE == "hpa2021 rows":
        real = set(_label_sets(pd.read_csv(HPA2021_LABELS_CSV, dtype=str)["Label"]))
        assert set(drawn) <= real
    else:
        assert REPORT_LABEL_SOURCE == "skewed random draw"
        assert all(1 <= len(s) <= 3 and all(0 <= k < 19 for k in s) for s in drawn)
