"""benchmarks/two_rounds.py: round 2's labels and the F1 it reports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "two_rounds.py"


@pytest.fixture(scope="module")
def two_rounds():
    spec = importlib.util.spec_from_file_location("two_rounds_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_doubted_labels_flip_and_no_image_is_left_empty(two_rounds):
    given = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    post = np.array(
        [
            [0.9, 0.7, 0.1],  # swap 0 -> 1
            [0.2, 0.6, 0.5],  # extra label 1 removed; 2 added (at the threshold)
            [0.8, 0.1, 0.95],  # remove 2, add 0
        ]
    )
    new = two_rounds.round_two_labels(given, post, 0.5)
    assert new.tolist() == [[0, 1, 0], [1, 0, 1], [1, 0, 0]]
    # Flipping the only label away, with nothing added, keeps the given labels.
    lone = two_rounds.round_two_labels(given[:1], np.array([[0.9, 0.1, 0.1]]), 0.5)
    assert lone.tolist() == [[1, 0, 0]]
    # Nothing at or above the threshold: the labels are unchanged (and not aliased).
    same = two_rounds.round_two_labels(given, post, 0.99)
    assert (same == given).all() and same is not given


def test_micro_f1_against_the_truth(two_rounds):
    true = np.array([[1, 0], [0, 1]], dtype=bool)
    assert two_rounds.micro_f1(np.array([[0.9, 0.1], [0.2, 0.8]]), true) == 1.0
    # one right, one wrong positive, one missed: 2 * 1 / (2 + 2)
    assert two_rounds.micro_f1(np.array([[0.9, 0.6], [0.2, 0.3]]), true) == 0.5
    assert two_rounds.micro_f1(np.zeros((2, 2)), np.zeros((2, 2), bool)) == 0.0
