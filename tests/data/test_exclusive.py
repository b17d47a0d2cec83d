"""Exclusive classes: read from the run, and a label set that combines one with another."""

from __future__ import annotations

import numpy as np

from labelaudit.data.exclusive import exclusive_classes, exclusive_conflict


def test_exclusive_classes_read_names_or_tokens() -> None:
    info = {"class_names": ["A", "B", "Negative"], "class_tokens": ["0", "1", "2"]}
    assert exclusive_classes(info) == []  # the run declares none
    assert exclusive_classes({**info, "exclusive_classes": ["Negative"]}) == [2]
    assert exclusive_classes({**info, "exclusive_classes": ["2", "A", "unknown"]}) == [0, 2]
    assert exclusive_classes({**info, "exclusive_classes": "Negative"}) == []  # not a list


def test_exclusive_conflict() -> None:
    row = np.array([True, False, True])
    assert exclusive_conflict(row, [2]) == 2
    assert exclusive_conflict(np.array([False, False, True]), [2]) is None  # alone: fine
    assert exclusive_conflict(np.array([True, True, False]), [2]) is None
    assert exclusive_conflict(row, []) is None
