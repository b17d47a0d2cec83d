"""Isolation-forest detector: planted embedding outliers score highest."""

from __future__ import annotations

import numpy as np
import pytest

from labelaudit.detect import AuditInputs, get_detector

FAST = {"n_estimators": 100}


def blob_case(n: int = 300, d: int = 20, seed: int = 0) -> AuditInputs:
    """Class 0 = first half, class 1 = second half, in two clusters; image 7 is far out;
    image 20 is labelled class 0 but sits in class 1's cluster."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, 3), dtype=bool)
    labels[: n // 2, 0] = True
    labels[n // 2 :, 1] = True
    labels[:5, 2] = True  # a class too small for its own forest
    centres = np.zeros((n, d))
    centres[n // 2 :] = 3.0
    emb = centres + rng.normal(0, 1, (n, d))
    emb[7] += rng.normal(0, 5, d)  # far from everything, in a random direction
    emb[20] += 3.0  # inside cluster 1, labelled 0
    return AuditInputs(
        ids=[f"e{i}" for i in range(n)],
        class_names=["a", "b", "c"],
        class_tokens=["0", "1", "2"],
        label_sep="|",
        labels=labels,
        embeddings=emb.astype(np.float32),
    )


@pytest.mark.parametrize("n_components", [None, 5, 10])
def test_planted_outlier_is_top_scored_and_flagged(n_components):
    inputs = blob_case()
    result = get_detector("isolation", n_components=n_components, **FAST).run(inputs)
    f = result.findings
    glob = f[f["class"] == ""]
    assert len(glob) == inputs.n_images
    assert glob["score"].idxmax() == 7
    assert glob.loc[7, "flagged"] and glob.loc[7, "suggestion"] == "review"
    assert glob["flagged"].sum() == pytest.approx(0.05 * inputs.n_images, abs=2)
    assert ((glob["score"] > 0) & (glob["score"] <= 1)).all()
    assert np.argmax(result.columns["outlier_score"]) == 7
    np.testing.assert_array_equal(result.columns["outlier_score"], result.image_score)


def test_member_far_from_its_class_is_suggested_for_removal():
    inputs = blob_case()
    result = get_detector("isolation", n_components=None, **FAST).run(inputs)
    f = result.findings
    cls_a = f[f["class"] == "a"].set_index("id")
    assert len(cls_a) == 150
    top2 = set(cls_a["score"].nlargest(2).index)
    assert "e20" in top2  # e7 is the other
    assert cls_a.loc["e20", "flagged"] and cls_a.loc["e20", "suggestion"] == "remove"
    # The small class is skipped, not scored.
    assert (f["class"] == "c").sum() == 0
    assert result.summary["skipped_classes"] == {"c": 5}


def test_seeded_and_deterministic():
    inputs = blob_case(120)
    a = get_detector("isolation", random_state=3, **FAST).run(inputs)
    b = get_detector("isolation", random_state=3, **FAST).run(inputs)
    np.testing.assert_array_equal(a.findings["score"], b.findings["score"])


@pytest.mark.parametrize("n", [1, 3, 12])
def test_tiny_and_constant_embeddings(n):
    labels = np.ones((n, 1), dtype=bool)
    inputs = AuditInputs(
        [f"i{i}" for i in range(n)], ["a"], ["0"], "|", labels, embeddings=np.ones((n, 4))
    )
    result = get_detector("isolation", **FAST).run(inputs)
    assert np.isfinite(result.image_score).all()
    assert not result.image_flagged.any()  # identical points: nothing stands out
    assert np.isfinite(result.findings["score"]).all()


def test_pca_is_applied_when_dims_exceed_components():
    inputs = blob_case(200, d=100)
    result = get_detector("isolation", n_components=8, **FAST).run(inputs)
    assert result.summary["dims"] == 8
    assert 0 < result.summary["pca_explained_variance"] <= 1


def test_global_only():
    result = get_detector("isolation", per_class=False, **FAST).run(blob_case(100))
    assert (result.findings["class"] == "").all()
