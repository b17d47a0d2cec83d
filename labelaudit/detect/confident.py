"""Confident learning (cleanlab) on out-of-fold probabilities.

Per (image, class) the question is whether the given label (present / absent)
disagrees with what the model is confidently predicting, in cleanlab's one-vs-rest
reduction of multi-label data: for each class k, the binary problem "k or not k"
gets its own confident joint with thresholds equal to the per-class average
self-confidence, and cleanlab's filter picks the off-diagonal examples.

Scores
------
* per (image, class) ``score`` = 1 - cleanlab's per-class label quality (with
  ``rank_by="self_confidence"``: 1 - p for a given label, p for a missing one);
  ``value`` = the predicted probability p of the class.
* per image ``label_quality`` = cleanlab's aggregated label quality (0..1, low =
  likely wrong); the image score is ``1 - label_quality``.

Flags
-----
With a confident-learning ``filter_by`` (``prune_by_noise_rate``, ``prune_by_class``,
``both``, ``confident_learning``, ``predicted_neq_given``) the flagged pairs are
cleanlab's per-class issue masks (``find_multilabel_issues_per_class``); an image is
flagged when any of its classes is, which is exactly what
``cleanlab.multilabel_classification.filter.find_label_issues`` returns. With
``low_self_confidence`` / ``low_normalized_margin`` cleanlab flags images only; the
classes responsible are those where the given label differs from
``p >= threshold_k`` (falling back to the class with the lowest per-class quality).
A flagged given label is suggested for removal (``"remove"``), a flagged missing
label for addition (``"add"``).

Rows
----
All given (image, class) pairs, plus missing pairs the model predicts
(``p >= threshold_k``) or cleanlab flags; missing pairs the model agrees are absent
carry no information and are left out (they would make N x K rows).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelaudit.core.params import Interval, Options, Real
from labelaudit.detect.base import (
    AuditInputs,
    Detector,
    DetectorResult,
    label_lists,
    make_findings,
    register,
)

CL_FILTERS = (
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
)
RANK_FILTERS = ("low_self_confidence", "low_normalized_margin")
RANK_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
AGGREGATORS = ("exponential_moving_average", "softmin")


@register("confident")
@dataclass(kw_only=True, eq=False, repr=False)
class ConfidentLearning(Detector):
    """Label issues from cleanlab's multi-label confident learning.

    Parameters
    ----------
    filter_by : str
        cleanlab filter (``prune_by_noise_rate`` default; see module docstring).
    frac_noise : float
        Fraction (0, 1] of the estimated number of issues to return (cleanlab).
    rank_by : str
        Per-class label quality method: ``self_confidence``, ``normalized_margin`` or
        ``confidence_weighted_entropy`` (cleanlab's ``return_indices_ranked_by``; the
        image ranking by ``label_quality`` is the order cleanlab returns issues in).
    aggregator : str
        How per-class qualities become one per image: ``exponential_moving_average``
        or ``softmin`` (cleanlab's ``aggregator_kwargs["method"]``).
    aggregator_params : dict or None
        Extra aggregator keywords (``alpha`` for EMA, default 0.8; ``temperature``
        for softmin).
    adjust_pred_probs : bool
        cleanlab's class-imbalance adjustment of the probabilities when scoring.
    min_examples_per_class : int
        cleanlab: classes with fewer examples are never flagged.
    health : bool
        Also compute cleanlab's per-class and overall health (for ``run.json``).
    n_jobs : int or None
        cleanlab worker processes. 1 (default) never forks: forking is slow on small
        CPUs and unsafe once torch/CUDA threads exist. (cleanlab's low_* filters
        make one internal call that ignores it.)
    """

    family = "label"
    bulk_weight = 1.0  # the family's reference ranking (docs/benchmarks.md, default order)
    requires = ("labels", "probs")
    issue_columns = {"label_quality": "score"}
    parameter_constraints = {
        "filter_by": [Options(*CL_FILTERS, *RANK_FILTERS)],
        "rank_by": [Options(*RANK_METHODS)],
        "aggregator": [Options(*AGGREGATORS)],
        "frac_noise": [Interval(Real, 0, 1, closed="right")],
    }

    filter_by: str = "prune_by_noise_rate"
    frac_noise: float = 1.0
    rank_by: str = "self_confidence"
    aggregator: str = "exponential_moving_average"
    aggregator_params: dict[str, Any] | None = None
    adjust_pred_probs: bool = False
    min_examples_per_class: int = 1
    health: bool = True
    n_jobs: int | None = 1

    def _aggregator_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"method": self.aggregator}
        if self.aggregator == "exponential_moving_average":
            kwargs["alpha"] = 0.8  # cleanlab's default
        kwargs.update(self.aggregator_params or {})
        return kwargs

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        from cleanlab.multilabel_classification import rank

        y = inputs.labels
        p = inputs.probs
        assert p is not None
        n, k = y.shape
        given_lists = inputs.label_lists()

        with warnings.catch_warnings():
            # cleanlab warns about tiny classes; the summary reports them instead.
            warnings.simplefilter("ignore")
            quality = np.asarray(
                rank.get_label_quality_scores(
                    given_lists,
                    p,
                    method=self.rank_by,
                    adjust_pred_probs=self.adjust_pred_probs,
                    aggregator_kwargs=self._aggregator_kwargs(),
                ),
                dtype=float,
            )
            # N x K in cleanlab 2.9 (its docstring says a list of K arrays).
            class_quality = np.asarray(
                rank.get_label_quality_scores_per_class(
                    given_lists, p, method=self.rank_by, adjust_pred_probs=self.adjust_pred_probs
                ),
                dtype=float,
            )
            if class_quality.shape != (n, k):
                class_quality = class_quality.T
            class_quality = np.clip(np.nan_to_num(class_quality, nan=1.0), 0.0, 1.0)
            thresholds = _class_thresholds(y, p)
            # cleanlab cannot build a one-vs-rest problem for a class every image has.
            usable = y.sum(axis=0) < n if n >= 2 else np.zeros(k, dtype=bool)
            pair_flags, image_flags = self._flags(y, p, usable, thresholds, class_quality)
            health = self._health(inputs, usable, pair_flags) if self.health else None

        quality = np.clip(np.nan_to_num(quality, nan=1.0), 0.0, 1.0)
        predicted = p >= np.nan_to_num(thresholds, nan=np.inf)
        rows = y | pair_flags | predicted
        img, cls = np.nonzero(rows)
        flagged = pair_flags[img, cls]
        given = y[img, cls]
        suggestion = np.where(flagged, np.where(given, "remove", "add"), "").astype(object)
        findings = make_findings(
            inputs,
            self.name,
            img,
            cls,
            score=1.0 - class_quality[img, cls],
            flagged=flagged,
            suggestion=suggestion,
            value=p[img, cls],
        )
        summary: dict[str, Any] = {
            "thresholds": {
                name: (None if np.isnan(t) else float(t))
                for name, t in zip(inputs.class_names, thresholds, strict=True)
            },
            "n_flagged_pairs": int(pair_flags.sum()),
            "n_remove": int((pair_flags & y).sum()),
            "n_add": int((pair_flags & ~y).sum()),
            "unusable_classes": [
                name for name, ok in zip(inputs.class_names, usable, strict=True) if not ok
            ],
        }
        if health is not None:
            summary["health"] = health
        return DetectorResult(
            detector=self.name,
            findings=findings,
            image_score=1.0 - quality,
            image_flagged=image_flags,
            columns={"label_quality": quality},
            summary=summary,
        )

    def _flags(
        self,
        y: np.ndarray,
        p: np.ndarray,
        usable: np.ndarray,
        thresholds: np.ndarray,
        class_quality: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-(image, class) and per-image issue masks."""
        from cleanlab.multilabel_classification import filter as cl_filter

        n, k = y.shape
        pair = np.zeros((n, k), dtype=bool)
        cols = np.flatnonzero(usable)
        if len(cols) == 0:
            return pair, np.zeros(n, dtype=bool)
        sub_lists = label_lists(y[:, cols])
        sub_p = p[:, cols]
        if self.filter_by in CL_FILTERS:
            # The per-class masks whose row-wise OR is find_label_issues' image mask.
            pair[:, cols] = cl_filter.find_multilabel_issues_per_class(
                labels=sub_lists,
                pred_probs=sub_p,
                filter_by=self.filter_by,
                frac_noise=self.frac_noise,
                min_examples_per_class=self.min_examples_per_class,
                n_jobs=self.n_jobs,
            )
            return pair, np.asarray(pair.any(axis=1))
        image = np.asarray(
            cl_filter.find_label_issues(
                labels=sub_lists,
                pred_probs=sub_p,
                filter_by=self.filter_by,
                frac_noise=self.frac_noise,
                min_examples_per_class=self.min_examples_per_class,
                n_jobs=self.n_jobs,
            ),
            dtype=bool,
        )
        disagree = y != (p >= np.nan_to_num(thresholds, nan=np.inf))
        disagree[:, ~usable] = False
        pair = disagree & image[:, None]
        # Every flagged image names at least one class: its least trustworthy label.
        lonely = np.flatnonzero(image & ~pair.any(axis=1))
        if len(lonely):
            q = np.where(usable, class_quality[lonely], np.inf)
            pair[lonely, np.argmin(q, axis=1)] = True
        return pair, image

    def _health(
        self, inputs: AuditInputs, usable: np.ndarray, pair_flags: np.ndarray
    ) -> dict[str, Any] | None:
        """cleanlab's per-class quality ranking and overall health score.

        Same numbers as ``rank_classes_by_multilabel_quality`` and
        ``overall_multilabel_health_score`` (checked in the tests), computed from
        cleanlab's per-class issue masks with ``n_jobs=1``: those functions take no
        ``n_jobs`` and fork one process per core for each class, which is slow here
        and unsafe in a process that holds CUDA/torch threads. Like cleanlab, health
        always uses its default filter, whatever ``filter_by`` is.
        """
        from cleanlab.multilabel_classification import filter as cl_filter

        cols = np.flatnonzero(usable)
        if len(cols) == 0:
            return None
        y = inputs.labels[:, cols]
        default = (
            self.filter_by == "prune_by_noise_rate"
            and float(self.frac_noise) == 1.0
            and int(self.min_examples_per_class) == 1
        )
        if default:
            issues = pair_flags[:, cols]
        else:
            assert inputs.probs is not None  # a required input
            issues = cl_filter.find_multilabel_issues_per_class(
                labels=label_lists(y), pred_probs=inputs.probs[:, cols], n_jobs=1
            )
        return health_summary(y, issues, [inputs.class_names[c] for c in cols])


def health_summary(
    labels: np.ndarray, issues: np.ndarray, class_names: list[str]
) -> dict[str, Any]:
    """cleanlab's multi-label health numbers from a per-class issue mask.

    Mirrors ``cleanlab.multilabel_classification.dataset``: per class, *label issues*
    are flagged given labels and *inverse label issues* flagged missing ones; both
    noise rates are divided by the number of images N (as cleanlab does, although
    its docstring says "examples labelled k"); quality = 1 - label noise; the
    overall score is 1 - the fraction of images with any issue. Classes are sorted
    by quality, worst first.
    """
    n = max(len(labels), 1)
    given = (issues & labels).sum(axis=0)
    missing = (issues & ~labels).sum(axis=0)
    rows = [
        {
            "class_name": name,
            "label_issues": int(given[k]),
            "inverse_label_issues": int(missing[k]),
            "label_noise": given[k] / n,
            "inverse_label_noise": missing[k] / n,
            "label_quality_score": 1.0 - given[k] / n,
        }
        for k, name in enumerate(class_names)
    ]
    rows.sort(key=lambda r: r["label_quality_score"])
    overall = 1.0 - issues.any(axis=1).sum() / n
    return {"overall_health_score": float(overall), "classes": rows}


def _class_thresholds(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-class average self-confidence: mean p_k over the images labelled k.

    This is the threshold cleanlab's one-vs-rest confident joint uses for the
    "class present" side; NaN for a class no image has.
    """
    counts = y.sum(axis=0)
    sums = np.where(y, p, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
