"""The label evidence: planting, the label model's flip gain, and a known answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from labelaudit.core.errors import SettingsError
from labelaudit.detect import AuditInputs, get_detector
from labelaudit.detect.combined import (
    EvidenceContext,
    _relative_to_class,
    cell_support,
    confident_learning_rates,
    entry_features,
    plant_label_noise,
)
from labelaudit.detect.quality import label_model_fit, label_model_z


def multilabel(n: int = 300, k: int = 5, seed: int = 0) -> np.ndarray:
    """Random multi-hot labels, one to three classes per image."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, k), dtype=bool)
    for i in range(n):
        y[i, rng.choice(k, size=rng.integers(1, 4), replace=False)] = True
    return y


def test_planting_makes_one_error_of_a_known_kind_per_chosen_image():
    y = multilabel()
    noisy, flipped = plant_label_noise(y, 0.3, np.random.default_rng(1))
    np.testing.assert_array_equal(flipped, noisy != y)
    changed = flipped.any(axis=1)
    assert 0.2 < changed.mean() < 0.4
    removed = (flipped & y).sum(axis=1)
    added = (flipped & ~y).sum(axis=1)
    # missing (-1), extra (+1) or swap (-1 +1): never more than one of each.
    assert removed.max() == 1 and added.max() == 1
    kinds = {(int(r), int(a)) for r, a in zip(removed[changed], added[changed], strict=True)}
    assert kinds == {(1, 0), (0, 1), (1, 1)}
    # a missing label is only dropped where another one is left
    assert noisy[changed].any(axis=1).all()
    # the input is not modified
    assert (y == multilabel()).all()


def test_planting_never_joins_an_exclusive_class_with_another():
    y = multilabel(400, 5)
    y[:, 4] = False
    y[~y.any(axis=1), 0] = True
    y[:60] = False
    y[:60, 4] = True  # class 4 is exclusive (HPA's Negative): alone wherever given
    for seed in range(5):
        noisy, flipped = plant_label_noise(y, 0.5, np.random.default_rng(seed), exclusive=[4])
        with_exclusive = noisy[:, 4]
        assert (noisy[with_exclusive].sum(axis=1) == 1).all()
        # an image given the exclusive class can only have it swapped for another
        changed = flipped[:60].any(axis=1)
        assert changed.any()
        assert (noisy[:60][changed].sum(axis=1) == 1).all()
        assert not noisy[:60][changed, 4].any()
        # some single-label images were swapped to it, replacing their label
        assert (with_exclusive[60:] & ~y[60:, 4]).any()
    # without roles an exclusive-looking class is planted like any other
    noisy, _ = plant_label_noise(y, 0.5, np.random.default_rng(0))
    assert (noisy[:, 4] & (noisy.sum(axis=1) > 1)).any()


def test_label_model_fit_gives_each_class_its_effect_in_sigmas():
    rng = np.random.default_rng(0)
    y = multilabel(400, 4)
    x = 1.0 + 3.0 * y[:, 2] + rng.normal(0, 0.5, len(y))
    z, effects = label_model_fit(x, y, min_group=10)
    np.testing.assert_array_equal(z, label_model_z(x, y, min_group=10))
    assert effects[2] == pytest.approx(3.0 / 0.5, rel=0.15)
    assert np.abs(effects[[0, 1, 3]]).max() < 0.5
    # a class with too few images has no effect of its own
    y_rare = y.copy()
    y_rare[:, 3] = False
    y_rare[:3, 3] = True
    assert label_model_fit(x, y_rare, min_group=10)[1][3] == 0.0


def test_flip_gain_points_at_the_label_the_image_content_lacks():
    rng = np.random.default_rng(0)
    y = multilabel(400, 4)
    shown = y.copy()
    missing = np.flatnonzero(shown.sum(axis=1) >= 2)[:20]
    # the image shows class 2 (its stain is bright), the labels lack it
    shown[missing, 2] = True
    labels = shown.copy()
    labels[missing, 2] = False
    x = {"light:green:mean": 2.0 * shown[:, 2] + rng.normal(0, 0.2, len(y))}
    ctx = EvidenceContext(np.full(y.shape, 0.5), None, x, min_group=10)
    feats, names = entry_features(labels, ctx)
    gain = feats[..., names.index("flip_gain")]
    assert (gain[missing, 2] > 1.0).all()
    others = np.ones(len(y), dtype=bool)
    others[missing] = False
    assert np.median(gain[others, 2]) < 0


def synthetic_inputs(seed: int = 0) -> tuple[AuditInputs, np.ndarray]:
    """Probabilities, embeddings and a stain statistic that know the truth; 12% wrong."""
    rng = np.random.default_rng(seed)
    n, k = 300, 5
    true = multilabel(n, k, seed)
    given, _ = plant_label_noise(true, 0.12, rng)
    logits = np.where(true, 1.5, -1.5) + rng.normal(0, 1.2, true.shape)
    probs = 1 / (1 + np.exp(-logits))
    emb = true.astype(float) + rng.normal(0, 0.6, true.shape)
    stats = pd.DataFrame(
        {
            "green_mean": np.exp(0.3 + 0.4 * true[:, 1] + rng.normal(0, 0.05, n)) / 10,
            "green_p99": np.exp(0.8 + 0.4 * true[:, 1] + rng.normal(0, 0.05, n)) / 10,
        }
    )
    inputs = AuditInputs(
        ids=[f"i{i}" for i in range(n)],
        class_names=[f"c{j}" for j in range(k)],
        class_tokens=[str(j) for j in range(k)],
        label_sep="|",
        labels=given,
        probs=probs,
        embeddings=emb,
        stats=stats,
    )
    return inputs, true


def test_evidence_ranks_wrong_labels_and_suggests_the_right_changes():
    inputs, true = synthetic_inputs()
    wrong_image = (true != inputs.labels).any(axis=1)
    result = get_detector("combined").run(inputs)
    score = result.image_score
    assert ((score >= 0) & (score <= 1)).all()
    assert roc_auc_score(wrong_image, score) > 0.85
    np.testing.assert_array_equal(result.columns["combined_score"], score)
    f = result.findings
    assert set(f["detector"]) == {"combined"}
    flagged = f[f["flagged"]]
    assert len(flagged) > 0
    rows = pd.Index(inputs.ids).get_indexer(flagged["id"])
    cols = pd.Index(inputs.class_names).get_indexer(flagged["class"])
    given = inputs.labels[rows, cols]
    assert (flagged["suggestion"].to_numpy() == np.where(given, "remove", "add")).all()
    # most flagged labels are really wrong
    assert (true[rows, cols] != given).mean() > 0.7
    assert result.summary["features"][:2] == ["logit_p", "logit_threshold"]
    assert {"flip_gain", "logit_neighbours", "image_quality"} <= set(result.summary["features"])


def test_evidence_is_deterministic_and_runs_without_embeddings_or_statistics():
    inputs, _ = synthetic_inputs(1)
    a = get_detector("combined").run(inputs).image_score
    b = get_detector("combined").run(inputs).image_score
    np.testing.assert_array_equal(a, b)
    inputs.embeddings = None
    inputs.stats = None
    result = get_detector("combined").run(inputs)
    assert "flip_gain" not in result.summary["features"]
    assert "logit_neighbours" not in result.summary["features"]
    assert np.isfinite(result.image_score).all()


def with_cells(inputs: AuditInputs, true: np.ndarray, seed: int = 0) -> AuditInputs:
    """Two or three cells per image (none for every tenth), from a second model that
    knows the truth as well as the field model, with noise of its own."""
    from labelaudit.detect import CellPredictions

    rng = np.random.default_rng(seed)
    rows, probs = [], []
    for i, image_id in enumerate(inputs.ids):
        if i % 10 == 0:
            continue
        for c in range(int(rng.integers(2, 4))):
            rows.append({"cell_id": f"{image_id}_{c}", "id": image_id})
            logit = np.where(true[i], 1.5, -1.5) + rng.normal(0, 1.2, true.shape[1])
            probs.append(1 / (1 + np.exp(-logit)))
    inputs.cells = CellPredictions(pd.DataFrame(rows), np.array(probs))
    return inputs


def test_cell_support_is_the_strongest_and_mean_cell_per_image():
    from labelaudit.detect import CellPredictions

    table = pd.DataFrame({"cell_id": ["a1", "a2", "c1"], "id": ["a", "a", "c"]})
    probs = np.array([[0.2, 0.9], [0.6, 0.1], [0.3, 0.4]])
    strongest, mean = cell_support(CellPredictions(table, probs), ["a", "b", "c"])
    np.testing.assert_allclose(strongest[[0, 2]], [[0.6, 0.9], [0.3, 0.4]])
    np.testing.assert_allclose(mean[[0, 2]], [[0.4, 0.5], [0.3, 0.4]])
    assert np.isnan(strongest[1]).all() and np.isnan(mean[1]).all()  # b has no cells
    with pytest.raises(ValueError, match="unknown fields: x"):
        cell_support(CellPredictions(table.assign(id=["a", "x", "c"]), probs), ["a", "b", "c"])


def test_a_second_models_cells_add_to_the_evidence():
    """The cell model's errors are its own: with it the label ranking improves; without
    cells (or ``cells=False``) the features are as before."""
    inputs, true = synthetic_inputs(3)
    wrong_image = (true != inputs.labels).any(axis=1)
    plain = get_detector("combined").run(inputs)
    with_cells(inputs, true)
    both = get_detector("combined").run(inputs)
    ignored = get_detector("combined", cells=False).run(inputs)
    assert {"cell_strongest", "cell_mean"} <= set(both.summary["features"])
    assert "cell_strongest" not in plain.summary["features"]
    np.testing.assert_array_equal(ignored.image_score, plain.image_score)
    before = roc_auc_score(wrong_image, plain.image_score)
    after = roc_auc_score(wrong_image, both.image_score)
    assert after > before + 0.02, (before, after)


def test_images_without_cells_read_as_at_their_class_threshold():
    y = np.array([[True, False], [True, False], [False, True], [False, True]])
    values = np.array([[0.8, 0.1], [np.nan, np.nan], [0.2, 0.7], [0.1, 0.5]])
    rel = _relative_to_class(values, y)
    assert (rel[1] == 0).all()  # no cells: no evidence either way
    assert rel[0, 0] == pytest.approx(0.0)  # the only labelled image with cells sets it
    assert rel[2, 1] > 0 > rel[3, 1]


def test_each_fold_is_scored_by_a_model_fitted_on_the_other_folds_only():
    """Cross-fitting: per direction and fold one fit, on about (folds - 1) / folds of the
    planted entries, scoring the fold's real entries of that direction."""
    inputs, _ = synthetic_inputs(2)
    det = get_detector("combined", repeats=1, copies=2)
    calls = []
    original = det._fit_predict

    def spy(x, t, *x_new):
        calls.append((len(x), len(x_new[0]), x.shape[1]))
        return original(x, t, *x_new)

    det._fit_predict = spy
    det.posteriors(inputs)
    n, k = inputs.labels.shape
    folds = int(det.folds)
    entry_calls = [c for c in calls if c[2] > 2]
    assert len(entry_calls) == 2 * folds
    n_given = int(inputs.labels.sum())
    scored_given = sum(new for _, new, _ in entry_calls[:folds])
    scored_absent = sum(new for _, new, _ in entry_calls[folds:])
    assert scored_given == n_given and scored_absent == n * k - n_given
    for n_train, _, _ in entry_calls:
        assert n_train < det.copies * n * k * (folds - 1) / folds * 1.2
    # then one image-level fit on the planted copies (noisy-OR and image quality)
    assert calls[-1] == (det.copies * n, n, 2)


def test_noise_rate_as_confident_learning_counts_it():
    inputs, true = synthetic_inputs()
    rates = confident_learning_rates(inputs.labels, inputs.probs)
    given_wrong = (inputs.labels & ~true).sum() / inputs.labels.sum()
    assert 0 < rates[True] <= 0.5 and 0 < rates[False] <= 0.5
    assert rates[True] == pytest.approx(given_wrong, abs=0.15)


@pytest.mark.parametrize(
    "params",
    [{"copies": 0}, {"plant_rate": 0.0}, {"plant_rate": 0.9}, {"folds": 1}, {"flag_at": 1.0}],
)
def test_bad_parameters_are_refused(params):
    with pytest.raises(SettingsError, match="combined"):
        get_detector("combined", **params)
