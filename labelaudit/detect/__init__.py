"""Label-problem detectors: the interface, the registry and the built-in detectors.

Importing this package registers ``confident`` (cleanlab confident learning),
``isolation`` (isolation forests on embeddings) and ``intensity`` (per-class
3-sigma rule on the protein channel's intensity) and ``knn`` (label agreement of
an image's neighbours in the embedding space) and ``quality`` (dark, light, saturated,
blurry, low-information, artifact and odd-size images per stain channel) and
``exclusive`` (label sets joining an exclusive class, HPA's Negative, with another) and
``combined`` (the label evidence of the others combined by a rule fitted on planted
noise) and ``duplicates`` (copies verified on their pixels, and label conflicts among
them; run after the comparison, on the run's image cache) and ``cells`` (a field's
labels its cells do not show; run after the comparison, on the cell-level
cross-validation). Add a detector by
subclassing :class:`Detector` and decorating it with :func:`register`.
"""

from __future__ import annotations

from labelaudit.detect.base import (
    FINDINGS_COLUMNS,
    REGISTRY,
    AuditInputs,
    CellPredictions,
    Detector,
    DetectorResult,
    PixelSignatures,
    available_detectors,
    get_detector,
    make_findings,
    register,
)

# The import order is the registration order, which orders the detectors' columns in
# issues.csv (labelaudit.pipeline.compare.issues_columns).
# isort: off
from labelaudit.detect.confident import ConfidentLearning
from labelaudit.detect.isolation import IsolationOutliers
from labelaudit.detect.intensity import IntensityOutliers
from labelaudit.detect.knn import KnnLabelAgreement
from labelaudit.detect.combined import CombinedEvidence
from labelaudit.detect.quality import ImageQuality
from labelaudit.detect.exclusive import ExclusiveConflict
from labelaudit.detect.duplicates import DuplicateImages
from labelaudit.detect.cells import CellEvidence

# isort: on

__all__ = [
    "FINDINGS_COLUMNS",
    "REGISTRY",
    "AuditInputs",
    "CellEvidence",
    "CellPredictions",
    "CombinedEvidence",
    "ConfidentLearning",
    "DuplicateImages",
    "Detector",
    "DetectorResult",
    "ExclusiveConflict",
    "IntensityOutliers",
    "ImageQuality",
    "IsolationOutliers",
    "KnnLabelAgreement",
    "PixelSignatures",
    "available_detectors",
    "get_detector",
    "make_findings",
    "register",
]
