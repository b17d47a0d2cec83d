"""Multi-label stratified K-fold assignment, and the checks that make it meaningful.

Iterative stratification (Sechidis et al. 2011, the ``iterative-stratification``
package) spreads every class as evenly as possible over the folds, so each
held-out fold is judged by a model that saw the class in training.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils.multiclass import type_of_target

from labelaudit.core.digest import short_digest
from labelaudit.core.errors import SettingsError


def rare_classes(labels: np.ndarray, class_names: list[str], n_folds: int) -> list[str]:
    """Classes with at least one but fewer positive images than ``n_folds``.

    Some fold's model never sees such a class in training, so its out-of-fold
    probabilities for the class (and the findings built on them) are unreliable.
    """
    return [class_names[k] for k in _rare_indices(labels, n_folds)]


def _rare_indices(labels: np.ndarray, n_folds: int) -> np.ndarray:
    counts = np.asarray(labels, dtype=bool).sum(axis=0)
    return np.flatnonzero((counts > 0) & (counts < n_folds))


def check_folds(
    labels: np.ndarray,
    class_names: list[str],
    n_folds: int,
    allow_rare: bool = False,
    *,
    strict: bool = False,
) -> list[str]:
    """Check that K-fold cross-validation makes sense for these labels.

    Policy for rare classes: a class with at least one but fewer positive images
    than folds is a warning: the audit proceeds, and the class's findings are
    marked unreliable (:func:`rare_classes`), because some fold's model sees one or
    no example of it and its out-of-fold probabilities may read as label errors.
    With ``strict`` it is an error. A class with no positive image at all is only
    a warning (nothing to stratify; common when auditing a subset).

    Parameters
    ----------
    labels
        Bool (N, K) label matrix.
    class_names
        K names, for messages.
    n_folds
        K of K-fold.
    allow_rare
        Deprecated, no effect (rare classes are a warning unless ``strict``).
    strict
        Make rare classes an error.

    Returns
    -------
    list[str]
        Warnings to show the user.

    Raises
    ------
    SettingsError
        Too few images for the folds, or rare classes with ``strict``.
    """
    n = labels.shape[0]
    if n < 2 * n_folds:
        raise SettingsError(
            f"{n} images are too few for {n_folds}-fold cross-validation "
            f"(need at least {2 * n_folds}: two per fold); use --folds (folds=) with a smaller "
            "number"
        )
    counts = labels.sum(axis=0).astype(int)
    warnings: list[str] = []
    absent = [class_names[k] for k in np.flatnonzero(counts == 0)]
    if absent:
        warnings.append(
            f"{len(absent)} class(es) have no positive image and cannot be learned: "
            + ", ".join(absent)
        )
    rare = [(class_names[k], int(counts[k])) for k in _rare_indices(labels, n_folds)]
    if rare:
        listed = ", ".join(f"{name!r} ({c} image{'s' if c != 1 else ''})" for name, c in rare)
        message = (
            f"{len(rare)} class(es) have fewer positive images than the {n_folds} folds: {listed}"
        )
        if strict:
            smallest = min(c for _, c in rare)
            hint = f"use --folds {smallest} or fewer, or " if smallest >= 2 else ""
            raise SettingsError(
                f"{message}; some folds' models would never see them, so their "
                f"out-of-fold probabilities would be meaningless ({hint}"
                "leave out --strict to audit anyway, their findings marked unreliable)"
            )
        warnings.append(
            message + "; their out-of-fold probabilities are unreliable and their findings "
            "are marked so in issues.csv (--strict stops instead)"
        )
    return warnings


def make_folds(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Assign every image to one of ``n_folds`` folds, stratified over all classes.

    Deterministic for a given label matrix, ``n_folds`` and ``seed``.

    Parameters
    ----------
    labels
        Bool (N, K) label matrix.
    n_folds
        Number of folds.
    seed
        Random state of the shuffle and of the stratification's tie breaking.

    Returns
    -------
    np.ndarray
        Shape (N,), int64 fold index in ``0 .. n_folds - 1`` of each image.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    y = np.asarray(labels, dtype=bool)
    n = y.shape[0]
    x = np.zeros((n, 1))
    if y.ndim == 2 and y.shape[1] > 1 and type_of_target(y) == "multilabel-indicator":
        splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(x, y)
    elif y.ndim == 2 and y.shape[1] == 1 and 0 < y.sum() < n:
        splits = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, y[:, 0])
    else:
        splits = KFold(n_folds, shuffle=True, random_state=seed).split(x)
    fold_of = np.full(n, -1, dtype=np.int64)
    for k, (_, test) in enumerate(splits):
        fold_of[test] = k
    if (fold_of < 0).any() or len(np.unique(fold_of)) != n_folds:
        raise SettingsError(f"could not split {n} images into {n_folds} non-empty folds")
    return fold_of


def group_labels(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One label row per group (the OR of its rows), and each row's group position.

    Returns
    -------
    (group_rows (G, K) bool, position (N,) int64 index into ``group_rows``)
    """
    uniq, position = np.unique(np.asarray(groups), return_inverse=True)
    y = np.asarray(labels, dtype=bool)
    out = np.zeros((len(uniq), y.shape[1]), dtype=bool)
    np.logical_or.at(out, position, y)
    return out, position.astype(np.int64)


def make_group_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Folds that never split a group: each group (a field's cells) goes whole to one fold.

    The groups are stratified by their labels (the OR of their rows', see
    :func:`group_labels`) with :func:`make_folds`, and every row takes its group's
    fold, so no model is validated on cells of a field it was trained on.

    Returns
    -------
    np.ndarray
        Shape (N,), the fold of each row.
    """
    rows, position = group_labels(labels, groups)
    return make_folds(rows, n_folds, seed)[position]


def fold_indices(fold_of: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of fold ``k``, both sorted."""
    held = np.flatnonzero(fold_of == k)
    train = np.flatnonzero(fold_of != k)
    return train, held


def indices_digest(indices: np.ndarray) -> str:
    """A short hash of an index array (stored with each fold's predictions)."""
    return short_digest(np.ascontiguousarray(indices, dtype=np.int64).tobytes(), 16)
