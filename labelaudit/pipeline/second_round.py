"""A second round of cross-validation on the labels a first scan's evidence doubts.

``scan(dataset, out, second_round_of=first)``: the models of the new run train on the
given labels with every label whose ``combined`` posterior (``detect/combined.py``) in
the finished scan ``first`` is at least :data:`FLIP_AT` flipped; the detectors still
judge the *given* labels, with the new out-of-fold probabilities. An image is still
held out of the model that predicts it, though its neighbours' corrections drew on its
given label through the first round's evidence (a second-order influence).

Measured (docs/benchmarks.md, "a second round"): confident learning's label AUROC
rose by 0.015-0.018 on four sets (out-of-fold F1 by up to 0.036) for twice the
training; the suggestions did not improve consistently. So it is an option, not the
default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelaudit.core.errors import SettingsError

#: Posterior at which a label of the first round is flipped for the second.
FLIP_AT = 0.5


def corrected_labels(labels: np.ndarray, posterior: np.ndarray, flip_at: float) -> np.ndarray:
    """The labels with every label of posterior >= ``flip_at`` flipped.

    Parameters
    ----------
    labels
        (N, K) bool given labels.
    posterior
        (N, K) posterior that each label (present or absent) is wrong.
    flip_at
        The posterior at which a label flips.

    Returns
    -------
    numpy.ndarray
        A new (N, K) bool matrix. An image whose flips would leave it without labels
        keeps its given labels.
    """
    y = np.asarray(labels, dtype=bool)
    new = y ^ (np.asarray(posterior, dtype=float) >= flip_at)
    empty = ~new.any(axis=1)
    new[empty] = y[empty]
    return new


@dataclass(frozen=True)
class SecondRound:
    """The training labels of a second round, keyed by image id, and their origin."""

    first: Path
    labels: dict[str, np.ndarray]
    flipped: int

    def aligned(self, ids: list[str]) -> np.ndarray:
        """The training labels in ``ids`` order.

        Raises
        ------
        SettingsError
            An image the first scan did not audit (it skipped it as unreadable).
        """
        missing = [str(i) for i in ids if str(i) not in self.labels]
        if missing:
            raise SettingsError(
                f"--second-round-of {self.first}: {len(missing)} image(s) were not audited "
                f"there (e.g. {missing[0]!r}); scan it again with the same images"
            )
        return np.stack([self.labels[str(i)] for i in ids])

    def record(self) -> dict[str, Any]:
        """``run.json["second_round"]``."""
        return {"of": str(self.first), "flip_at": FLIP_AT, "flipped_labels": self.flipped}


def read_second_round(
    first: str | Path,
    ids: list[str],
    class_tokens: list[str],
    labels: np.ndarray,
    *,
    same_images: bool = True,
) -> SecondRound:
    """The second round's training labels from a finished scan of the same dataset.

    Parameters
    ----------
    first
        The first scan's run directory (only read; untrusted like any run directory).
    ids, class_tokens, labels
        The dataset being scanned: the first run must hold the same images, classes
        and given labels.
    same_images
        The first run must hold exactly these images (else: a subset of them, for a
        scan that may skip unreadable images; :meth:`SecondRound.aligned` checks the
        images that were read).

    Raises
    ------
    SettingsError
        ``first`` is not a finished scan of this dataset's images and classes.
    """
    from labelaudit.core.errors import RunDirError
    from labelaudit.detect.combined import CombinedEvidence
    from labelaudit.rundir import RunDir

    path = Path(first)
    if not path.is_dir():
        raise SettingsError(f"--second-round-of {path}: not a run directory")
    try:
        inputs = RunDir(path).audit_inputs()
    except RunDirError as err:
        raise SettingsError(f"--second-round-of {path}: {err}") from None
    if inputs.probs is None:
        raise SettingsError(f"--second-round-of {path}: the run has no out-of-fold probabilities")
    if list(inputs.class_tokens) != list(class_tokens):
        raise SettingsError(f"--second-round-of {path}: the run's classes are not the dataset's")
    row = {str(i): r for r, i in enumerate(ids)}
    scanned = set(map(str, inputs.ids))
    if (scanned != set(row)) if same_images else not scanned <= set(row):
        raise SettingsError(
            f"--second-round-of {path}: the run's images are not the dataset's "
            f"({len(inputs.ids)} scanned there, {len(ids)} here)"
        )
    given = np.asarray(labels, dtype=bool)[[row[str(i)] for i in inputs.ids]]
    if not np.array_equal(given, inputs.labels):
        raise SettingsError(
            f"--second-round-of {path}: the dataset's labels changed since that scan; "
            "scan it again first"
        )
    try:
        posterior, _ = CombinedEvidence().posteriors(inputs)
    except (ValueError, np.linalg.LinAlgError) as err:  # forged values that pass the readers
        raise SettingsError(
            f"--second-round-of {path}: its evidence cannot be computed ({err})"
        ) from None
    new = corrected_labels(inputs.labels, posterior, FLIP_AT)
    flipped = int((new != inputs.labels).sum())
    return SecondRound(path, dict(zip(map(str, inputs.ids), new, strict=True)), flipped)
