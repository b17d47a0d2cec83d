"""kNN label agreement on a hand-made embedding with a known answer."""

from __future__ import annotations

import numpy as np

from labelaudit.detect import AuditInputs, get_detector
from labelaudit.detect.knn import neighbour_agreement, neighbour_indices


def two_clusters() -> AuditInputs:
    """Two tight clusters (class 0 / class 1); image 3 sits in cluster A but says class 1."""
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.01, (10, 4)) + [1, 0, 0, 0]
    b = rng.normal(0, 0.01, (10, 4)) + [0, 1, 0, 0]
    labels = np.zeros((20, 2), dtype=bool)
    labels[:10, 0] = True
    labels[10:, 1] = True
    labels[3] = [False, True]  # swapped label
    return AuditInputs(
        ids=[f"i{k}" for k in range(20)],
        class_names=["A", "B"],
        class_tokens=["0", "1"],
        label_sep="|",
        labels=labels,
        embeddings=np.vstack([a, b]),
    )


def test_neighbours_exclude_self_and_stay_in_cluster():
    inputs = two_clusters()
    nbrs = neighbour_indices(inputs.embeddings, 5, n_components=None)
    assert nbrs.shape == (20, 5)
    assert not (nbrs == np.arange(20)[:, None]).any()
    assert (nbrs[:10] < 10).all() and (nbrs[10:] >= 10).all()


def test_agreement_is_the_fraction_of_neighbours():
    labels = np.array([[1], [1], [0], [0]], dtype=bool)
    nbrs = np.array([[1, 2], [0, 2], [3, 0], [2, 1]])
    q = neighbour_agreement(labels, nbrs, prior_weight=0.0)
    np.testing.assert_allclose(q[:, 0], [0.5, 0.5, 0.5, 0.5])
    q = neighbour_agreement(labels, np.array([[1, 1], [0, 0], [3, 3], [2, 2]]), 0.0)
    np.testing.assert_allclose(q[:, 0], [1, 1, 0, 0])
    q = neighbour_agreement(labels, np.array([[1, 1], [0, 0], [3, 3], [2, 2]]), 2.0)
    np.testing.assert_allclose(q[:, 0], [0.75, 0.75, 0.25, 0.25])  # towards prevalence 0.5


def test_swapped_label_is_flagged_with_the_right_suggestions():
    inputs = two_clusters()
    result = get_detector("knn", k=5, n_components=None).run(inputs)
    assert np.argmax(result.image_score) == 3
    assert result.image_flagged[3] and result.image_flagged.sum() == 1
    f = result.findings[result.findings["flagged"]]
    assert set(zip(f["class"], f["suggestion"], strict=True)) == {("B", "remove"), ("A", "add")}
    assert (f["id"] == "i3").all()
    assert "knn_disagreement" in result.columns


def test_family_is_label():
    from labelaudit.pipeline.compare import family_of

    assert family_of("knn") == "label"
    assert family_of("confident") == "label"
    assert family_of("intensity") == "image" and family_of("isolation") == "image"
