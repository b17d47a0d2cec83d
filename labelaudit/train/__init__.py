"""Cross-validated training: out-of-fold probabilities and embeddings.

The entry point is :func:`cross_validate`; the pieces (model factory, weight
resolution, folds, the one-fold loop, the probe, DDP helpers, metrics) live in
the submodules and are reusable by the retrain and sweep stages.
"""

from __future__ import annotations

from labelaudit.train.cv import CVResult, check_oof_provenance, cross_validate
from labelaudit.train.folds import check_folds, make_folds
from labelaudit.train.metrics import multilabel_metrics

__all__ = [
    "CVResult",
    "check_folds",
    "check_oof_provenance",
    "cross_validate",
    "make_folds",
    "multilabel_metrics",
]
