"""benchmarks/default_order.py: the interleaving bound against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from la_testutils import load_benchmark


@pytest.fixture(scope="module")
def default_order():
    return load_benchmark("default_order")


def _pairs_above(order: list[int], problem: np.ndarray, clean: np.ndarray) -> int:
    seen = kept = 0
    for image_id in order:
        if problem[image_id]:
            seen += 1
        elif clean[image_id]:
            kept += seen
    return kept


def _brute_force(label_order, image_order, label, image, clean, image_target) -> float:
    """Every interleaving, enumerated: the best label AUROC with the image AUROC held."""
    n = len(label_order)
    n_l, n_i = label.sum() * clean.sum(), image.sum() * clean.sum()
    best = float("nan")
    for from_label in itertools.product((True, False), repeat=2 * n):
        i = j = 0
        order: list[int] = []
        for take_l in from_label:
            if (take_l and i == n) or (not take_l and j == n):
                break
            image_id = label_order[i] if take_l else image_order[j]
            i, j = (i + 1, j) if take_l else (i, j + 1)
            if image_id not in order:
                order.append(image_id)
        if len(order) < n:
            continue
        if _pairs_above(order, image, clean) / n_i >= image_target - 1e-12:
            auroc = _pairs_above(order, label, clean) / n_l
            best = auroc if np.isnan(best) else max(best, auroc)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_interleave_bound_is_the_best_interleaving(default_order, seed):
    rng = np.random.default_rng(seed)
    n = 7
    kind = rng.permutation([0, 0, 0, 1, 1, 2, 2])  # 0 clean, 1 label problem, 2 image problem
    label, image, clean = kind == 1, kind == 2, kind == 0
    label_order, image_order = rng.permutation(n), rng.permutation(n)
    for target in (0.0, 0.5, 5 / 6, 1.0):
        expected = _brute_force(list(label_order), list(image_order), label, image, clean, target)
        got = default_order.interleave_bound(label_order, image_order, label, image, clean, target)
        assert got == pytest.approx(expected, nan_ok=True), (seed, target)


def test_interleave_bound_by_hand(default_order):
    # 0: label problem, 1: image problem, 2 and 3: clean. The label order ranks the label
    # problem first; the image order ranks a clean image above the image problem.
    label = np.array([True, False, False, False])
    image = np.array([False, True, False, False])
    clean = ~(label | image)
    label_order, image_order = [0, 2, 3, 1], [2, 1, 0, 3]
    # Without a constraint on images the label order itself is best: label AUROC 1.
    assert default_order.interleave_bound(label_order, image_order, label, image, clean, 0) == 1
    # Image AUROC 1 needs the image problem above both clean images, but each order puts
    # a clean image above it: no interleaving reaches it.
    assert np.isnan(
        default_order.interleave_bound(label_order, image_order, label, image, clean, 1.0)
    )
    # Image AUROC 1/2: 0, 2 from the label order, then 1 from the image order, then 3.
    assert default_order.interleave_bound(label_order, image_order, label, image, clean, 0.5) == 1
