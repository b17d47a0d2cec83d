"""benchmarks/weak_model.py: a weak model of one's own, its rankings and suggestions."""

from __future__ import annotations

import numpy as np
import pytest
from la_testutils import load_benchmark


@pytest.mark.slow
def test_the_set_flips_one_label_per_chosen_image_and_the_scores_add_up():
    bench = load_benchmark("weak_model")
    features, truth, given = bench.make_set(seed=0, n=200, flips=10)
    assert features.shape == (200, 20) and truth.shape == given.shape == (200, 6)
    assert given.any(axis=1).all()  # no image left without labels
    flipped = (given != truth).sum(axis=1)
    assert (flipped > 0).sum() == 10 and set(flipped[flipped > 0]) <= {1, 2}
    r = bench.score_seed(0, 200, 10, datalab=False)
    assert 0.5 < r["label_score"] <= 1 and 0 < r["micro_f1"] < 1
    assert r["errors_before"] == int(np.sum(given != truth))
    # every change either fixes an error or makes one
    assert r["errors_after"] == r["errors_before"] - r["right"] + (r["changes"] - r["right"])
