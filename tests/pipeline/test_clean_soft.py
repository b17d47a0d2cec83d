"""Soft cleaning: per-label weights from label quality, per-label drop, retrain using them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelaudit.core.errors import RunDirError
from labelaudit.pipeline.clean import (
    clean,
    plan_changes,
    read_label_weights,
    soft_label_weights,
)
from labelaudit.rundir import LABEL_WEIGHTS_CSV


def test_soft_weights_are_relative_to_the_class():
    given = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 0]], dtype=bool)
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.3], [0.3, 0.05]])
    w = soft_label_weights(given, probs)
    # Class 0 positives: self-confidence 0.9, 0.8, 0.1, mean 0.6 -> 1, 1, 0.1/0.6.
    np.testing.assert_allclose(w[:3, 0], [1.0, 1.0, 0.1 / 0.6], rtol=1e-6)
    # Class 0 negatives: 0.8, 0.7 (mean 0.75) -> 1, 0.7/0.75.
    np.testing.assert_allclose(w[3:, 0], [1.0, 0.7 / 0.75], rtol=1e-6)
    # Class 1: one positive (0.3 / 0.3 = 1); the negative with p=0.9 is a likely
    # missing label: 0.1 / mean(0.9, 0.8, 0.1, 0.95) = 0.1 / 0.6875.
    assert w[3, 1] == pytest.approx(1.0)
    assert w[2, 1] == pytest.approx(0.1 / 0.6875, rel=1e-6)
    assert w.dtype == np.float32 and (w >= 0).all() and (w <= 1).all()


def test_a_poorly_learned_class_is_not_down_weighted_as_a_whole():
    # Every positive of class 0 has a low probability (the model never learned it):
    # relative to the class's own level, they keep weight 1.
    given = np.array([[1], [1], [1], [0], [0]], dtype=bool)
    probs = np.array([[0.1], [0.1], [0.1], [0.05], [0.05]])
    np.testing.assert_allclose(soft_label_weights(given, probs)[:3, 0], 1.0)


def test_soft_policy_keeps_every_image_and_writes_weights(hpa_run):
    _, run = hpa_run
    # One given label of a class with several positives gets a low out-of-fold
    # probability: it alone is down-weighted.
    oof = pd.read_csv(run / "oof_probs.csv")
    view, _, _ = plan_changes(run, policy="none")
    k = int(np.flatnonzero(view.given.sum(axis=0) >= 2)[0])
    i = int(np.flatnonzero(view.given[:, k])[0])
    oof.loc[oof["id"] == view.ids[i], view.names[k]] = 0.02
    oof.to_csv(run / "oof_probs.csv", index=False)
    view, plan, _ = plan_changes(run, policy="soft")
    assert plan.kept.all() and np.array_equal(plan.labels, view.given)
    assert plan.weights is not None and plan.weights.shape == view.given.shape
    assert plan.weights[i, k] == plan.weights.min() < 0.1
    assert (plan.weights < 0.5).sum() == 1
    assert plan.reasons[i] == "label weights" and f"{view.tokens[k]} w=" in plan.details[i]
    result = clean(run, policy="soft")
    assert result.changes.empty
    weights = read_label_weights(run, view.ids, view.names)
    np.testing.assert_allclose(weights, plan.weights, atol=1e-4)
    # Another policy removes the stale weights file (the run's own).
    clean(run, policy="consensus-drop")
    assert not (run / LABEL_WEIGHTS_CSV).exists()


def test_drop_labels_zeroes_exactly_the_flagged_labels(hpa_run):
    _, run = hpa_run
    view, plan, _ = plan_changes(run, policy="drop-labels")
    f = pd.read_csv(run / "findings.csv", dtype=str, keep_default_na=False)
    f = f[(f["detector"] == "confident") & (f["flagged"].str.lower() == "true")]
    expected = np.ones(view.given.shape, dtype=np.float32)
    for image_id, cls in zip(f["id"], f["class"], strict=True):
        expected[view.ids.index(image_id), view.names.index(cls)] = 0.0
    assert (expected == 0).sum() >= 5
    np.testing.assert_array_equal(plan.weights, expected)
    assert plan.kept.all()


def test_bad_weights_file_is_refused(hpa_run):
    _, run = hpa_run
    view, _, _ = plan_changes(run, policy="none")
    clean(run, policy="soft")
    path = run / LABEL_WEIGHTS_CSV
    frame = pd.read_csv(path)
    frame.iloc[0, 1] = 1.5
    frame.to_csv(path, index=False)
    with pytest.raises(RunDirError, match="label_weights.csv"):
        read_label_weights(run, view.ids, view.names)
    frame.iloc[:, :-1].to_csv(path, index=False)
    with pytest.raises(RunDirError, match="missing"):
        read_label_weights(run, view.ids, view.names)


def test_retrain_trains_the_after_model_with_the_weights(hpa_run):
    from labelaudit.pipeline.evaluation import Split, plan_cleaning
    from labelaudit.pipeline.retrain import comparison_sides, side_loss

    _, run = hpa_run
    view, plan, _ = plan_changes(run, policy="soft")
    n = len(view.ids)
    split = Split(np.array(["train"] * n), np.arange(6), np.arange(6, 8), np.arange(8, n))
    cp = plan_cleaning(view.given, plan.labels, ~plan.kept, split)

    class Opts:
        clean, class_weights, before_kind = True, "none", "none"

    sides = comparison_sides(view.given, cp, split, Opts(), plan.weights)
    assert sides["before"].label_weight is None
    assert sides["after"].label_weight is plan.weights
    loss = side_loss("none", None, "sigmoid", sides["after"].label_weight)
    assert loss.per_row and np.allclose(loss.label_weight.numpy(), plan.weights)


def test_relabel_soft_relabels_trusted_labels_and_weights_the_rest(hpa_run):
    _, run = hpa_run
    view, relabel, _ = plan_changes(run, policy="relabel")
    _, plan, _ = plan_changes(run, policy="relabel-soft")
    changed = (relabel.labels != view.given).any(axis=1)
    assert changed.sum() >= 2
    np.testing.assert_array_equal(plan.labels, relabel.labels)  # the same trusted changes
    assert plan.kept.all()  # but nothing removed
    np.testing.assert_allclose(plan.weights, soft_label_weights(plan.labels, view.probs))
    for i in np.flatnonzero(changed):
        assert plan.reasons[i] == "confident learning" and "p=" in plan.details[i]


def test_the_report_says_how_many_labels_are_weighted(hpa_run):
    from labelaudit.report import write_report

    _, run = hpa_run
    result = clean(run, policy="relabel-soft")
    html = write_report(run).read_text()
    below = int((result.weights < 0.5).sum())
    assert "policy <code>relabel-soft</code>" in html
    assert f"{below} labels weigh less than 0.5" in html


@pytest.mark.parametrize("policy", ["soft", "relabel-soft"])
def test_soft_policies_need_out_of_fold_probabilities(hpa_run, policy):
    from labelaudit.core.errors import SettingsError

    _, run = hpa_run
    (run / "oof_probs.csv").unlink()
    with pytest.raises(SettingsError, match=f"policy '{policy}' needs out-of-fold"):
        plan_changes(run, policy=policy)
