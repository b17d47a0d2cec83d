"""Multi-label stratified folds and the rare-class policy."""

from __future__ import annotations

import numpy as np
import pytest

from labelaudit.core.errors import SettingsError
from labelaudit.train.folds import check_folds, fold_indices, make_folds


def hpa_like_labels(n: int = 200, k: int = 12, seed: int = 0) -> np.ndarray:
    """Skewed class frequencies (one common class, several rare ones), 1-3 labels each."""
    rng = np.random.default_rng(seed)
    freq = np.geomspace(0.4, 0.03, k)
    y = rng.random((n, k)) < freq
    empty = ~y.any(axis=1)
    y[empty, 0] = True
    return y


@pytest.mark.parametrize("n_folds", [2, 5])
def test_every_class_in_every_fold_where_counts_allow(n_folds):
    y = hpa_like_labels()
    fold_of = make_folds(y, n_folds, seed=3)
    assert fold_of.shape == (len(y),) and set(fold_of) == set(range(n_folds))
    counts = y.sum(axis=0)
    for k in np.flatnonzero(counts >= n_folds):
        per_fold = np.bincount(fold_of[y[:, k]], minlength=n_folds)
        assert (per_fold >= 1).all(), f"class {k} missing from a fold: {per_fold}"
        # iterative stratification: within one example of an even split
        assert per_fold.max() - per_fold.min() <= 2
    sizes = np.bincount(fold_of)
    assert sizes.max() - sizes.min() <= max(2, len(y) // 20)


def test_folds_are_deterministic_and_seeded():
    y = hpa_like_labels()
    a, b = make_folds(y, 5, seed=1), make_folds(y, 5, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, make_folds(y, 5, seed=2))


def test_fold_indices_partition():
    y = hpa_like_labels(50)
    fold_of = make_folds(y, 5, seed=0)
    seen = []
    for k in range(5):
        train, held = fold_indices(fold_of, k)
        assert np.intersect1d(train, held).size == 0 and len(train) + len(held) == 50
        seen.extend(held)
    assert sorted(seen) == list(range(50))


def test_single_class_and_unlabelled_rows():
    y = np.zeros((20, 1), dtype=bool)
    y[:6] = True
    assert set(make_folds(y, 3, 0)) == {0, 1, 2}
    y2 = np.zeros((20, 3), dtype=bool)
    y2[:10, 0] = True
    assert set(make_folds(y2, 4, 0)) == {0, 1, 2, 3}


def test_too_few_images_for_folds():
    y = hpa_like_labels(9, 3)
    with pytest.raises(SettingsError, match="9 images are too few for 5-fold"):
        check_folds(y, ["a", "b", "c"], 5)


def test_rare_class_with_strict_is_an_error_naming_the_class_and_count():
    y = np.zeros((40, 3), dtype=bool)
    y[:, 0] = True
    y[:3, 1] = True  # 3 positives < 5 folds
    with pytest.raises(SettingsError) as info:
        check_folds(y, ["common", "rare", "absent"], 5, strict=True)
    message = str(info.value)
    assert "'rare' (3 images)" in message and "--strict" in message
    assert "--folds 3" in message and "common" not in message


def test_rare_class_is_a_warning_by_default_and_absent_class_warns():
    from labelaudit.train.folds import rare_classes

    y = np.zeros((40, 3), dtype=bool)
    y[:, 0] = True
    y[:1, 1] = True
    for kwargs in ({}, {"allow_rare": True}):  # allow_rare: the deprecated no-op
        notes = check_folds(y, ["common", "rare", "absent"], 5, **kwargs)
        assert any("'rare' (1 image)" in n and "unreliable" in n for n in notes)
        assert any("absent" in n and "no positive image" in n for n in notes)
    assert rare_classes(y, ["common", "rare", "absent"], 5) == ["rare"]


def test_group_folds_never_split_a_group():
    from labelaudit.train.folds import group_labels, make_group_folds

    rng = np.random.default_rng(3)
    n_fields = 60
    field_labels = rng.random((n_fields, 5)) < [0.5, 0.3, 0.2, 0.3, 0.4]
    field_labels[np.arange(n_fields), rng.integers(0, 5, n_fields)] = True
    cells_per_field = rng.integers(1, 9, n_fields)
    groups = np.repeat(np.arange(n_fields) * 7 + 100, cells_per_field)  # arbitrary group ids
    labels = np.repeat(field_labels, cells_per_field, axis=0)
    rows, position = group_labels(labels, groups)
    np.testing.assert_array_equal(rows, field_labels)
    assert position.max() == n_fields - 1
    fold_of = make_group_folds(labels, groups, 3, seed=0)
    assert len(fold_of) == len(labels) and set(fold_of) == {0, 1, 2}
    for g in np.unique(groups):
        assert len(set(fold_of[groups == g])) == 1  # a field's cells share one fold
    # Stratified over fields: every class is in every fold.
    for k in range(3):
        assert labels[fold_of == k].any(axis=0).all()
    np.testing.assert_array_equal(fold_of, make_group_folds(labels, groups, 3, seed=0))
