"""The checks an audit makes before it decodes an image or creates a directory.

They need more than the settings (the dataset's labels and channels, the detector
names), so they live above :mod:`labelaudit.core.config`, the training code and the
detectors; see the layers in docs/design.md.
"""

from __future__ import annotations

from typing import Any

from labelaudit.core.config import TrainSettings, check_fold
from labelaudit.pipeline.compare import check_detectors
from labelaudit.train.folds import check_folds


def preflight(
    settings: TrainSettings,
    labels: Any,
    class_names: list[str],
    in_chans: int,
    *,
    fold: int | None = None,
    detectors: Any = None,
    trains: bool = True,
) -> list[str]:
    """Every check an audit can make before decoding an image or creating a directory.

    ``settings`` are already validated (:func:`labelaudit.core.config.validate`, which
    includes the device); this adds what needs the dataset's labels and channels or
    the other options: the ``fold`` number, the detector names, rare classes (an
    error only with ``settings.strict``) and an explicit weights file.

    Parameters
    ----------
    settings
        The training settings.
    labels
        Bool (N, K) label matrix of the dataset (or of the groups folds are made of).
    class_names
        K class names.
    in_chans
        Channels per image.
    fold
        ``--fold`` (1-based) or ``None``.
    detectors
        Detector names, or ``None`` for the defaults.
    trains
        ``False`` when the probabilities are supplied: no folds to fill, so neither
        their size nor the classes rarer than them is checked.

    Returns
    -------
    list[str]
        Warnings (rare or absent classes); cross-validation repeats them when it runs.

    Raises
    ------
    SettingsError
        The first problem found, in one line.
    """
    check_fold(fold, settings)
    check_detectors(detectors)
    notes = (
        check_folds(labels, class_names, settings.folds, strict=settings.strict) if trains else []
    )
    if settings.weights:
        # torch and timm load only when there is a file to check: the other
        # refusals stay instant.
        from labelaudit.train.weights import check_weights

        check_weights(settings, in_chans)
    return notes
