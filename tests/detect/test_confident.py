"""Confident-learning detector: flips with confident probabilities are found and fixed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from labelaudit.core.errors import SettingsError
from labelaudit.detect import AuditInputs, get_detector
from labelaudit.synth.audit import make_audit


def flipped_case(n: int = 120, seed: int = 0) -> AuditInputs:
    """Three classes, confident probabilities; image 0 is labelled 0 but shows class 1."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, 3), dtype=bool)
    labels[np.arange(n), np.arange(n) % 3] = True
    labels[::5, 2] = True  # some multi-label images
    probs = np.where(labels, 0.93, 0.04) + rng.uniform(-0.02, 0.02, labels.shape)
    labels[0] = [True, False, False]
    probs[0] = [0.02, 0.97, 0.03]  # the model is sure: class 1, not class 0
    return AuditInputs(
        ids=[f"f{i}" for i in range(n)],
        class_names=["nucleoplasm", "cytosol", "mitochondria"],
        class_tokens=["0", "1", "2"],
        label_sep="|",
        labels=labels,
        probs=probs,
    )


def test_flipped_label_is_flagged_with_the_right_suggestions():
    inputs = flipped_case()
    result = get_detector("confident").run(inputs)
    assert result.image_flagged[0]
    assert result.image_flagged.sum() == 1
    f = result.findings.set_index(["id", "class"])
    assert f.loc[("f0", "nucleoplasm"), "flagged"]
    assert f.loc[("f0", "nucleoplasm"), "suggestion"] == "remove"
    assert f.loc[("f0", "cytosol"), "flagged"]
    assert f.loc[("f0", "cytosol"), "suggestion"] == "add"
    assert f.loc[("f0", "cytosol"), "value"] == pytest.approx(0.97)
    assert ("f0", "mitochondria") not in f.index  # absent and predicted absent: no row
    quality = result.columns["label_quality"]
    assert np.argmin(quality) == 0
    assert ((quality >= 0) & (quality <= 1)).all()
    np.testing.assert_allclose(result.image_score, 1 - quality)
    # Every given pair has a row; absent pairs the model agrees with do not.
    given_pairs = int(inputs.labels.sum())
    assert len(result.findings) == given_pairs + 1  # + the missing "cytosol" of f0
    assert set(result.findings.columns) >= {"id", "class", "detector", "score", "flagged"}
    assert result.summary["n_remove"] == 1 and result.summary["n_add"] == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside cleanlab
def test_image_flags_match_cleanlab_find_label_issues():
    from cleanlab.multilabel_classification.filter import find_label_issues

    synth = make_audit(400, 6, 8, label_noise=0.1, seed=1)
    inputs = synth.inputs
    for filter_by in ("prune_by_noise_rate", "both", "low_self_confidence"):
        det = get_detector("confident", filter_by=filter_by, health=False)
        result = det.run(inputs)
        expected = find_label_issues(
            labels=inputs.label_lists(), pred_probs=inputs.probs, filter_by=filter_by, n_jobs=1
        )
        np.testing.assert_array_equal(result.image_flagged, expected)
        # Each flagged image names at least one responsible class, and only those.
        flagged_ids = set(result.findings.loc[result.findings["flagged"], "id"])
        assert flagged_ids == {inputs.ids[i] for i in np.flatnonzero(expected)}


def test_flags_recover_planted_label_noise():
    from sklearn.metrics import roc_auc_score

    synth = make_audit(600, 8, 8, label_noise=0.08, image_noise=0.0, seed=2)
    result = get_detector("confident").run(synth.inputs)
    noisy = np.array([n != "none" for n in synth.noise])
    recall = result.image_flagged[noisy].mean()
    precision = noisy[result.image_flagged].mean()
    assert recall > 0.8 and precision > 0.8
    assert roc_auc_score(noisy, result.image_score) > 0.95


@pytest.mark.parametrize(
    "rank_by", ["self_confidence", "normalized_margin", "confidence_weighted_entropy"]
)
@pytest.mark.parametrize("aggregator", ["exponential_moving_average", "softmin"])
def test_ranking_and_aggregation_options(rank_by, aggregator):
    inputs = flipped_case(60)
    result = get_detector("confident", rank_by=rank_by, aggregator=aggregator, health=False).run(
        inputs
    )
    q = result.columns["label_quality"]
    assert np.isfinite(q).all() and ((q >= 0) & (q <= 1)).all()
    assert np.argmin(q) == 0
    assert np.isfinite(result.findings["score"]).all()


def test_health_goes_to_the_summary():
    result = get_detector("confident").run(flipped_case())
    health = result.summary["health"]
    assert 0 <= health["overall_health_score"] <= 1
    assert {c["class_name"] for c in health["classes"]} == {
        "nucleoplasm",
        "cytosol",
        "mitochondria",
    }
    assert set(result.summary["thresholds"]) == {"nucleoplasm", "cytosol", "mitochondria"}


def test_class_that_every_image_has_is_left_alone():
    inputs = flipped_case(30)
    inputs.labels[:, 2] = True  # cleanlab cannot do one-vs-rest on this class
    result = get_detector("confident").run(inputs)
    assert result.summary["unusable_classes"] == ["mitochondria"]
    assert not result.findings.loc[result.findings["class"] == "mitochondria", "flagged"].any()
    assert np.isfinite(result.image_score).all()


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_datasets(n):
    labels = np.zeros((n, 2), dtype=bool)
    labels[:, 0] = True
    probs = np.full((n, 2), 0.5)
    inputs = AuditInputs([f"i{i}" for i in range(n)], ["a", "b"], ["0", "1"], "|", labels, probs)
    result = get_detector("confident").run(inputs)
    assert result.image_score.shape == (n,)
    assert np.isfinite(result.image_score).all()
    assert np.isfinite(result.findings["score"]).all()


def test_no_labels_at_all_and_unlabelled_images():
    labels = np.zeros((20, 2), dtype=bool)
    labels[:10, 0] = True  # images 10..19 have no label
    probs = np.where(labels, 0.9, 0.1)
    inputs = AuditInputs([f"i{i}" for i in range(20)], ["a", "b"], ["0", "1"], "|", labels, probs)
    result = get_detector("confident").run(inputs)
    assert np.isfinite(result.columns["label_quality"]).all()


def test_bad_parameters_and_missing_probs():
    with pytest.raises(SettingsError, match="filter_by"):
        get_detector("confident", filter_by="nonsense")
    with pytest.raises(SettingsError, match="rank_by"):
        get_detector("confident", rank_by="entropy")
    with pytest.raises(SettingsError, match="no parameter 'alpha'"):
        get_detector("confident", alpha=0.5)
    inputs = flipped_case(10)
    inputs.probs = None
    with pytest.raises(SettingsError, match="needs probs"):
        get_detector("confident").run(inputs)


@pytest.mark.parametrize("filter_by", ["prune_by_noise_rate", "prune_by_class"])
def test_health_equals_cleanlabs_functions(filter_by):
    from cleanlab.multilabel_classification import dataset

    synth = make_audit(300, 5, 4, label_noise=0.1, seed=5)
    inputs = synth.inputs
    health = get_detector("confident", filter_by=filter_by).run(inputs).summary["health"]
    lists = inputs.label_lists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = dataset.rank_classes_by_multilabel_quality(
            labels=lists, pred_probs=inputs.probs, class_names=inputs.class_names
        )
        overall = dataset.overall_multilabel_health_score(labels=lists, pred_probs=inputs.probs)
    assert health["overall_health_score"] == pytest.approx(overall)
    ours = {r["class_name"]: r for r in health["classes"]}
    for _, row in expected.iterrows():
        mine = ours[row["Class Name"]]
        assert mine["label_issues"] == row["Label Issues"]
        assert mine["inverse_label_issues"] == row["Inverse Label Issues"]
        assert mine["label_noise"] == pytest.approx(row["Label Noise"])
        assert mine["label_quality_score"] == pytest.approx(row["Label Quality Score"])
