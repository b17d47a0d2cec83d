"""Multi-label metrics agree with scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from labelaudit.train.metrics import multilabel_metrics


def test_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.random((60, 5)) < 0.3
    probs = np.clip(y * 0.6 + rng.random((60, 5)) * 0.5, 0, 1)
    m = multilabel_metrics(y, probs, list("abcde"))
    pred = probs >= 0.5
    for avg in ("micro", "macro", "weighted", "samples"):
        kw = {"average": avg, "zero_division": 0}
        assert m[f"{avg}_f1"] == pytest.approx(f1_score(y, pred, **kw))
        assert m[f"{avg}_precision"] == pytest.approx(precision_score(y, pred, **kw))
        assert m[f"{avg}_recall"] == pytest.approx(recall_score(y, pred, **kw))
    table = pd.DataFrame(m["per_class"])
    assert list(table.columns) == ["class", "precision", "recall", "f1", "support"]
    assert table["support"].tolist() == y.sum(axis=0).tolist()
    per = f1_score(y, pred, average=None, zero_division=0)
    assert np.allclose(table["f1"], per)
    assert 0 <= m["macro_ap"] <= 1 and m["n_images"] == 60


def test_threshold_and_absent_classes():
    y = np.array([[1, 0], [0, 0], [1, 0]], dtype=bool)
    probs = np.array([[0.7, 0.1], [0.2, 0.1], [0.4, 0.0]])
    m = multilabel_metrics(y, probs, ["a", "b"], threshold=0.3)
    assert m["micro_recall"] == 1.0 and m["threshold"] == 0.3
    assert m["per_class"][1]["support"] == 0 and m["per_class"][1]["f1"] == 0.0
