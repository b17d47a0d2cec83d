"""Isolation forests on the embeddings: odd images, and odd members of a class.

Embeddings are standardised (StandardScaler) and, by default, projected to at most
64 principal components (PCA fitted on a random subsample): isolation forests pick
one feature per split, so in 1,280 raw dimensions most splits land on noise, and the
projection also makes the forests ~3x faster.

Scores
------
``score`` is the isolation forest anomaly score of Liu et al. (2008),
``s = 2 ** (-E[h(x)] / c(n))`` in (0, 1]: about 0.5 or below for ordinary points,
towards 1 for points isolated in few splits. It is normalised by the expected path
length c(n) of the forest's subsample size, so scores from different forests (the
global one and each class's) are on one scale. ``value`` is pyod's decision score
(``s`` minus the forest's own contamination threshold; > 0 means flagged).

Rows
----
* one image-level row per image (``class == ""``) from a forest on all images;
  flagged images (pyod's ``contamination`` quantile) get ``"review"``.
* per class k with at least ``min_class_size`` labelled images: a forest on those
  images only; one row per labelled (image, k), flagged at the class's
  ``class_contamination`` quantile, suggestion ``"remove"`` (the image looks
  unlike the other images labelled k). Smaller classes are skipped (no rows;
  listed in the summary).

The per-image ``outlier_score`` is the largest score over the image's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@register("isolation")
@dataclass(kw_only=True, eq=False, repr=False)
class IsolationOutliers(Detector):
    """Embedding outliers found with pyod's IForest.

    Parameters
    ----------
    contamination : float
        Expected fraction of outlier images; sets the global flag threshold.
    class_contamination : float or None
        Same for the per-class forests (``None``: ``contamination``).
    n_estimators : int
        Trees per forest.
    max_samples : int or "auto"
        Subsample size per tree (``"auto"`` = min(256, n)).
    n_components : int or None
        PCA dimensions before the forests (``None`` or 0: no PCA).
    pca_samples : int
        Rows the PCA is fitted on (a seeded random subsample; all rows if fewer).
    per_class : bool
        Also fit one forest per class.
    min_class_size : int
        Classes with fewer labelled images are skipped (also the global minimum).
    random_state : int
        Seed of the PCA subsample and the forests.
    n_jobs : int
        Threads for the forests.
    """

    family = "image"
    requires = ("labels", "embeddings")
    issue_columns = {"outlier_score": "score"}
    parameter_constraints = {
        "contamination": [Interval(Real, 0, 0.5, closed="right")],
        "class_contamination": [Interval(Real, 0, 0.5, closed="right"), None],
        "n_components": [Interval(Integral, 0, None, closed="left"), None],
        "min_class_size": [Interval(Integral, 2, None, closed="left")],
    }

    contamination: float = 0.05
    class_contamination: float | None = None
    n_estimators: int = 100
    max_samples: int | str = "auto"
    n_components: int | None = 64
    pca_samples: int = 20_000
    per_class: bool = True
    min_class_size: int = 10
    random_state: int = 0
    n_jobs: int = 1

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        n = inputs.n_images
        summary: dict[str, Any] = {}
        assert inputs.embeddings is not None  # a required input
        x = self._project(inputs.embeddings, summary)

        if n >= self.min_class_size:
            g_score, g_dec, g_flag = self._forest(x, self.contamination, self.random_state)
        else:
            # Too few images to say what is normal: neutral, unflagged.
            g_score, g_dec, g_flag = np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
            summary["global_skipped"] = f"fewer than {self.min_class_size} images"
        parts_img = [np.arange(n)]
        parts_cls = [np.full(n, -1)]
        parts = [(g_score, g_dec, g_flag)]
        summary["n_flagged_global"] = int(g_flag.sum())

        classes: dict[str, Any] = {}
        skipped: dict[str, int] = {}
        if self.per_class:
            contamination = self.class_contamination or self.contamination
            for k, name in enumerate(inputs.class_names):
                idx = np.flatnonzero(inputs.labels[:, k])
                if len(idx) < self.min_class_size:
                    skipped[name] = len(idx)
                    continue
                seed = int(self.random_state) + 1 + k  # distinct, reproducible per class
                s, dec, flag = self._forest(x[idx], contamination, seed)
                parts_img.append(idx)
                parts_cls.append(np.full(len(idx), k))
                parts.append((s, dec, flag))
                classes[name] = {"n": len(idx), "n_flagged": int(flag.sum())}
        summary["classes"] = classes
        summary["skipped_classes"] = skipped

        img = np.concatenate(parts_img)
        cls = np.concatenate(parts_cls)
        score = np.concatenate([p[0] for p in parts])
        value = np.concatenate([p[1] for p in parts])
        flagged = np.concatenate([p[2] for p in parts])
        suggestion = np.where(flagged, np.where(cls < 0, "review", "remove"), "").astype(object)
        findings = make_findings(
            inputs, self.name, img, cls, score, flagged, suggestion, value=value
        )
        image_score = per_image_max(n, img, score)
        return DetectorResult(
            detector=self.name,
            findings=findings,
            image_score=image_score,
            image_flagged=per_image_any(n, img, flagged),
            columns={"outlier_score": image_score},
            summary=summary,
        )

    def _project(self, emb: np.ndarray, summary: dict[str, Any]) -> np.ndarray:
        """Standardise, then PCA to ``n_components`` dimensions when that is fewer."""
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        x = StandardScaler().fit_transform(np.asarray(emb, dtype=np.float32))
        n, d = x.shape
        dims = int(self.n_components or 0)
        if 0 < dims < d and n > dims:
            rng = np.random.default_rng(self.random_state)
            fit_rows = x
            if n > self.pca_samples:
                fit_rows = x[np.sort(rng.choice(n, int(self.pca_samples), replace=False))]
            pca = PCA(dims, svd_solver="randomized", random_state=self.random_state)
            pca.fit(fit_rows)
            x = pca.transform(x).astype(np.float32, copy=False)
            summary["pca_explained_variance"] = float(pca.explained_variance_ratio_.sum())
        summary["dims"] = int(x.shape[1])
        return x

    def _forest(
        self, x: np.ndarray, contamination: float, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fit one forest; return anomaly score s, pyod decision score, flag."""
        from pyod.models.iforest import IForest

        forest = IForest(
            n_estimators=int(self.n_estimators),
            max_samples=self.max_samples,
            contamination=float(contamination),
            random_state=seed,
            n_jobs=int(self.n_jobs),
        ).fit(x)
        dec = np.asarray(forest.decision_scores_, dtype=float)
        # pyod's score is -(sklearn decision_function) = s + offset_; undo the shift.
        s = dec - float(forest.detector_.offset_)
        # A forest on identical points scores everything alike: nothing to flag.
        flag = np.asarray(forest.labels_, dtype=bool) & (np.ptp(s) > 1e-12)
        return s, dec, flag
