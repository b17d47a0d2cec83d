"""labelaudit.core.stats: intervals checked against hand-computed and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from labelaudit.core.stats import (
    Interval,
    bootstrap_delta,
    bootstrap_f1,
    class_f1,
    label_errors,
    macro_f1,
    micro_f1,
    paired_interval,
)


def test_paired_interval_hand_computed():
    # mean 2.5, sd sqrt(5/3) = 1.291, se 0.6455, t_{0.975,3} = 3.182 -> half 2.054
    iv = paired_interval([1, 2, 3, 4])
    assert iv.mean == pytest.approx(2.5)
    assert iv.low == pytest.approx(0.446, abs=1e-3)
    assert iv.high == pytest.approx(4.554, abs=1e-3)
    assert iv.n == 4 and iv.excludes_zero
    # 90%: t_{0.95,3} = 2.353 -> half 1.519
    iv90 = paired_interval([1, 2, 3, 4], level=0.90)
    assert iv90.high - iv90.mean == pytest.approx(1.519, abs=1e-3)


def test_paired_interval_seed_deltas_of_the_issue_contain_zero():
    # The five split seeds of issue 15: mean +0.001, sd 0.075 -> noise.
    iv = paired_interval([0.006, 0.003, -0.117, 0.025, 0.090])
    assert iv.mean == pytest.approx(0.0014)
    assert iv.low < 0 < iv.high and not iv.excludes_zero


def test_paired_interval_single_and_bad_input():
    iv = paired_interval([0.2])
    assert iv.mean == 0.2 and math.isnan(iv.low) and math.isnan(iv.high)
    assert not iv.excludes_zero
    assert iv.format() == "+0.200 [n/a]"
    assert iv.to_dict()["low"] is None
    with pytest.raises(ValueError):
        paired_interval([])
    with pytest.raises(ValueError):
        paired_interval([1.0, float("nan")])
    with pytest.raises(ValueError):
        paired_interval([1.0, 2.0], level=1.5)


def test_interval_format_and_excludes_zero():
    assert Interval(0.031, 0.008, 0.054, 80).format() == "+0.031 [+0.008, +0.054]"
    assert Interval(-0.02, -0.05, 0.01, 80).format() == "-0.020 [-0.050, +0.010]"
    assert Interval(-0.02, -0.05, -0.01, 80).excludes_zero
    assert not Interval(0.0, 0.0, 0.0, 80).excludes_zero
    d = Interval(0.1, 0.05, 0.2, 10).to_dict()
    assert d == {
        "mean": 0.1,
        "low": 0.05,
        "high": 0.2,
        "n": 10,
        "level": 0.95,
        "excludes_zero": True,
    }


def _random_case(seed: int = 0, n: int = 60, k: int = 6):
    rng = np.random.default_rng(seed)
    y = rng.random((n, k)) < 0.3
    y[:, -1] = False  # a class absent from the test set: F1 0 either way
    before = rng.random((n, k)) < 0.3
    after = y ^ (rng.random((n, k)) < 0.1)
    return y, before, after


def test_f1_helpers_match_sklearn_zero_division_0():
    y, pred, _ = _random_case()
    assert macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert micro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="micro", zero_division=0))
    np.testing.assert_allclose(class_f1(y, pred), f1_score(y, pred, average=None, zero_division=0))
    empty = np.zeros((3, 2), dtype=bool)
    assert macro_f1(empty, empty) == 0.0 and micro_f1(empty, empty) == 0.0


def test_bootstrap_identical_predictions_has_zero_width():
    y, before, _ = _random_case()
    iv = bootstrap_delta(y, before, before, macro_f1, n_boot=200)
    assert (iv.mean, iv.low, iv.high) == (0.0, 0.0, 0.0)
    assert iv.n == len(y) and not iv.excludes_zero
    f1 = bootstrap_f1(y, before, before, n_boot=200)
    assert f1.macro.width == 0.0 and f1.micro.width == 0.0
    assert all(c.width == 0.0 for c in f1.per_class)


def test_bootstrap_strictly_better_after_is_above_zero():
    y, _, _ = _random_case()
    y[:, 0] = True  # every resample has a positive
    before = ~y  # wrong on every label
    iv = bootstrap_delta(y, before, y, micro_f1, n_boot=300)
    assert iv.low > 0 and iv.excludes_zero
    assert iv.mean == pytest.approx(1.0)
    worse = bootstrap_delta(y, y, before, micro_f1, n_boot=300)
    assert worse.high < 0


def test_bootstrap_f1_matches_bootstrap_delta_and_is_reproducible():
    y, before, after = _random_case(seed=3)
    fast = bootstrap_f1(y, before, after, n_boot=300, seed=5)
    assert fast.macro == bootstrap_delta(y, before, after, macro_f1, n_boot=300, seed=5)
    assert fast.micro == bootstrap_delta(y, before, after, micro_f1, n_boot=300, seed=5)
    k0 = bootstrap_delta(
        y, before, after, lambda t, p: float(class_f1(t, p)[0]), n_boot=300, seed=5
    )
    assert fast.per_class[0].low == pytest.approx(k0.low)
    assert fast.per_class[0].high == pytest.approx(k0.high)
    assert fast.macro.mean == pytest.approx(macro_f1(y, after) - macro_f1(y, before))
    assert fast.macro.low <= fast.macro.mean <= fast.macro.high
    # the absent class never changes
    assert fast.per_class[-1].width == 0.0


def test_label_errors_counts_labels_not_images():
    truth = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=bool)
    labels = np.array([[1, 1, 1], [0, 1, 1], [1, 0, 0]], dtype=bool)
    assert label_errors(labels, truth) == 3  # two wrong labels on image 0, one on image 2
    assert label_errors(truth, truth) == 0
    with pytest.raises(ValueError):
        label_errors(labels[:2], truth)
