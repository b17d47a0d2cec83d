"""Label agreement of an image's neighbours in the embedding space (kNN).

An image whose given labels differ from those of its nearest neighbours is a
label-problem candidate: the idea behind cleanlab's kNN-based label quality
(``cleanlab.internal.neighbor``, Datalab's ``label`` issue with ``features``),
here in the one-vs-rest form used for multi-label data.

Scores
------
* per (image, class) ``value`` = q, the fraction of the image's ``k`` nearest
  neighbours (cosine distance, the image itself excluded) that carry the class,
  smoothed towards the class's prevalence with ``prior_weight`` pseudo-neighbours;
  ``score`` = 1 - q for a given label, q for a missing one (disagreement);
* per image ``knn_disagreement`` = the largest disagreement over its classes.

Rows and flags
--------------
All given (image, class) pairs, plus missing pairs where q >= 0.5. A pair is
flagged when its disagreement is at least ``threshold``: a given label that few
neighbours share (suggestion ``"remove"``) or a missing one that most neighbours
carry (``"add"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelaudit.core.params import Integral, Interval, Real
from labelaudit.detect.base import (
    AuditInputs,
    Detector,
    DetectorResult,
    make_findings,
    per_image_any,
    per_image_max,
    register,
)


def neighbour_indices(embeddings: np.ndarray, k: int, n_components: int | None = 32) -> np.ndarray:
    """The ``k`` nearest other rows of each row by cosine distance.

    Parameters
    ----------
    embeddings
        N x D array.
    k
        Neighbours per row (capped at N - 1).
    n_components
        PCA dimensions before the search (fewer than D; ``None``/0: none). Keeps
        the search fast on 1280-wide embeddings.

    Returns
    -------
    numpy.ndarray
        N x k int array of row indices, nearest first.
    """
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(embeddings, dtype=np.float32)
    n, d = x.shape
    k = min(int(k), n - 1)
    if k < 1:
        return np.zeros((n, 0), dtype=np.int64)
    x = x - x.mean(axis=0)
    dims = int(n_components or 0)
    if 0 < dims < min(n, d):
        from sklearn.decomposition import PCA

        x = PCA(dims, svd_solver="randomized", random_state=0).fit_transform(x)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm > 0, norm, 1.0)  # unit rows: euclidean order = cosine order
    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
    idx = nn.kneighbors(x, return_distance=False)
    # Drop the row itself (usually column 0; not always when there are exact copies).
    out = np.empty((n, k), dtype=np.int64)
    for i, row in enumerate(idx):
        others = row[row != i]
        out[i] = others[:k]
    return out


def neighbour_agreement(
    labels: np.ndarray, neighbours: np.ndarray, prior_weight: float = 1.0
) -> np.ndarray:
    """N x K: the smoothed fraction of each image's neighbours that carry each class."""
    labels = np.asarray(labels, dtype=float)
    k = neighbours.shape[1]
    counts = labels[neighbours].sum(axis=1) if k else np.zeros_like(labels)
    prior = labels.mean(axis=0, keepdims=True)
    return (counts + prior_weight * prior) / (k + prior_weight)


@register("knn")
@dataclass(kw_only=True, eq=False, repr=False)
class KnnLabelAgreement(Detector):
    """Given labels that the image's nearest neighbours do not share.

    Parameters
    ----------
    k : int
        Neighbours per image.
    threshold : float
        Disagreement (0..1) at which a pair is flagged.
    prior_weight : float
        Pseudo-neighbours carrying the class prevalence (smoothing for small k).
    n_components : int or None
        PCA dimensions before the neighbour search (``None``/0: none).
    """

    family = "label"
    requires = ("labels", "embeddings")
    issue_columns = {"knn_disagreement": "score"}
    parameter_constraints = {
        "k": [Interval(Integral, 1, None, closed="left")],
        "threshold": [Interval(Real, 0, 1, closed="right")],
        "prior_weight": [Interval(Real, 0, None, closed="left")],
    }

    k: int = 20
    threshold: float = 0.9
    prior_weight: float = 1.0
    n_components: int | None = 32

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        n = inputs.n_images
        assert inputs.embeddings is not None  # a required input
        nbrs = neighbour_indices(inputs.embeddings, self.k, self.n_components)
        q = neighbour_agreement(inputs.labels, nbrs, float(self.prior_weight))
        given = inputs.labels
        disagreement = np.where(given, 1.0 - q, q)
        rows, cols = np.nonzero(given | (q >= 0.5))
        score = disagreement[rows, cols]
        flagged = score >= float(self.threshold)
        add = ~given[rows, cols]
        suggestion = np.where(flagged, np.where(add, "add", "remove"), "").astype(object)
        findings = make_findings(
            inputs, self.name, rows, cols, score, flagged, suggestion, value=q[rows, cols]
        )
        image_score = per_image_max(n, rows, score)
        return DetectorResult(
            detector=self.name,
            findings=findings,
            image_score=image_score,
            image_flagged=per_image_any(n, rows, flagged),
            columns={"knn_disagreement": image_score},
            summary={"k": int(nbrs.shape[1]), "n_flagged_pairs": int(flagged.sum())},
        )
