"""Retraining: class weights, the fixed split, before/after metrics and checkpoints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from la_runfixture import make_run

from labelaudit.core.errors import DatasetError, SettingsError
from labelaudit.core.io import read_json, update_run_json
from labelaudit.pipeline.evaluation import (
    change_intervals,
    class_weights,
    split_parts,
    thresholded_metrics,
    tune_thresholds,
)
from labelaudit.pipeline.retrain import (
    NOISE_MARK,
    SMALL_DATASET,
    EnsembleModel,
    default_members,
    load_checkpoint,
    retrain,
    summary_lines,
)

TINY = {
    "backbone": "test_efficientnet",
    "pretrained": False,
    "epochs": 1,
    "batch_size": 8,
    "image_size": 32,
    "folds": 2,
    "patience": 0,
    "warmup_epochs": 0,
    "tta": False,
    "device": "cpu",
    "progress": False,
    "num_workers": 0,
    "seed": 0,
}


def test_class_weight_formula():
    y = np.zeros((10, 4), dtype=bool)
    y[:7, 0] = True  # n_0 = 7
    y[:1, 1] = True  # n_1 = 1
    y[:, 2] = True  # n_2 = N
    w = class_weights(y, "method")
    np.testing.assert_allclose(w, [1 - 7 / 10, 1 - 1 / 10, 0.0, 1.0], rtol=1e-6)
    assert w.dtype == np.float32
    pos = class_weights(y, "pos")
    np.testing.assert_allclose(pos, [1.0, 9.0, 1.0, 1.0])  # (N - n)/n clipped to >= 1
    assert class_weights(y, "none") is None
    with pytest.raises(SettingsError, match="class_weights"):
        class_weights(y, "inverse")


def test_split_is_fixed_by_seed_and_stratified():
    rng = np.random.default_rng(1)
    y = rng.random((200, 6)) < [0.5, 0.3, 0.2, 0.1, 0.05, 0.5]
    a, b = split_parts(y, 7), split_parts(y, 7)
    assert (a == b).all()
    assert not (split_parts(y, 8) == a).all()
    assert (a == "test").sum() == pytest.approx(40, abs=2)
    assert (a == "val").sum() == pytest.approx(32, abs=2)
    for k in range(y.shape[1]):  # every class in the test split, in proportion
        share = y[a == "test", k].mean()
        assert share == pytest.approx(y[:, k].mean(), abs=0.05)
    with pytest.raises(SettingsError):
        split_parts(y, 7, test_fraction=0.9)


def test_thresholds_tuned_per_class():
    y = np.array([[1, 0], [1, 0], [0, 0], [0, 1]], dtype=bool)
    p = np.array([[0.3, 0.1], [0.35, 0.2], [0.1, 0.9], [0.05, 0.8]])
    t = tune_thresholds(y, p)
    assert 0.1 < t[0] <= 0.3  # separates 0.3/0.35 from 0.1
    assert t[1] <= 0.8  # the positive at 0.8 is kept
    assert tune_thresholds(np.zeros((3, 1), bool), np.ones((3, 1)))[0] == 0.5
    m = thresholded_metrics(y, p, t)
    assert m["macro_recall"] == 1.0


@pytest.fixture(scope="module")
def run40(tmp_path_factory):
    """A hand-made run over 40 tiny HPA fields, with scan-like train settings and truth."""
    from la_testutils import CHANNELS, write_image

    tmp = tmp_path_factory.mktemp("retrain")
    root = tmp / "hpa"
    rng = np.random.default_rng(0)
    n = 40
    ids = [f"field{i:03d}" for i in range(n)]
    labels = [str(i % 19) + ("|3" if i % 4 == 0 and i % 19 != 3 else "") for i in range(n)]
    for i, image_id in enumerate(ids):
        for c, channel in enumerate(CHANNELS):
            arr = rng.integers(0, 60, size=(32, 32)).astype(np.uint8)
            if c == 1:  # the green channel carries a weak class signal
                arr[: 2 + (i % 19)] += 120
            write_image(root / "train" / f"{image_id}_{channel}.png", arr)
    (root / "train.csv").write_text(
        "ID,Label\n" + "".join(f"{a},{b}\n" for a, b in zip(ids, labels, strict=True))
    )
    run = make_run(tmp, root)
    update_run_json(run, "train", {"settings": TINY})
    truth = tmp / "truth.csv"
    true = list(labels)
    true[1] = "2"  # what the hand-made confident-learning finding suggests
    pd.DataFrame(
        {"ID": ids, "true_label": true, "given_label": labels, "noise": ["none"] * n}
    ).assign(noise=lambda f: np.where(f.true_label != f.given_label, "swap", "none")).to_csv(
        truth, index=False
    )
    return run, root, truth


@pytest.fixture(scope="module")
def retrained(run40):
    run, _, truth = run40
    # Two members: the ensemble path at two thirds of the default's cost (3 below
    # SMALL_DATASET, test_default_members).
    return retrain(run, truth=truth, policy="consensus-drop", members=2)


@pytest.mark.slow
def test_retrain_metrics(run40, retrained):
    run, _, _ = run40
    m = retrained
    for which in ("before", "after"):
        for key in ("micro_f1", "macro_f1", "weighted_f1", "micro_precision", "macro_recall"):
            assert 0.0 <= m[which][key] <= 1.0
        for key in ("micro_f1_true", "macro_f1_true"):
            assert key in m[which]
        assert len(m[which]["per_class"]) == 19
        assert len(m[which]["thresholds"]) == 19
        assert "macro_f1" in m[which]["tuned"]
    # Both models are scored on the same test images; cleaning only shrank training.
    assert m["before"]["test_digest"] == m["after"]["test_digest"]
    assert m["before"]["n_test"] == m["after"]["n_test"] == m["split"]["n_test"]
    cfg = m["config"]
    assert m["after"]["n_train"] == m["before"]["n_train"] - cfg["n_removed_train"]
    assert m["after"]["n_val"] == m["before"]["n_val"] - cfg["n_removed_val"]
    n_removed = (pd.read_csv(run / "changes.csv")["action"] == "remove").sum()
    assert cfg["n_removed_train"] + cfg["n_removed_val"] + cfg["n_changes_ignored_in_test"] == (
        n_removed
    )
    assert m["before"]["class_weights"] == m["after"]["class_weights"] == "method"
    assert m["delta"]["macro_f1"] == pytest.approx(m["after"]["macro_f1"] - m["before"]["macro_f1"])
    assert len(m["per_class_change"]) == 19
    split = pd.read_csv(run / "retrain" / "split.csv", dtype=str)
    assert set(split["part"]) == {"train", "val", "test"}
    assert (split["part"] == "test").sum() == m["split"]["n_test"]
    # The method's class weights, computed on each model's own training labels.
    w = np.asarray(m["after"]["class_weight_values"])
    assert ((w >= 0) & (w <= 1)).all()
    section = read_json(run / "run.json")["retrain"]
    assert section["after"]["macro_f1"] == m["after"]["macro_f1"]
    table = pd.read_csv(run / "retrain" / "table.csv")
    assert set(table["labels"]) == {"original", "cleaned (consensus-drop)"}


@pytest.mark.slow
def test_retrain_honest_numbers(run40, retrained):
    from labelaudit.core.stats import label_errors

    m = retrained
    ci = m["delta_ci"]
    assert ci["n_test"] == m["split"]["n_test"] and ci["level"] == 0.95
    for k in ("micro_f1", "macro_f1", "micro_f1_true", "macro_f1_true"):
        iv = ci[k]
        # The interval is around the recorded change (same 0.5 threshold, same images).
        assert iv["mean"] == pytest.approx(m["delta"][k], abs=1e-9)
        assert iv["low"] <= iv["mean"] <= iv["high"]
        assert iv["excludes_zero"] == (iv["low"] > 0 or iv["high"] < 0)
    assert len(ci["per_class"]) == len(ci["per_class_true"]) == 19
    for row, iv in zip(m["per_class_change"], ci["per_class"], strict=True):
        assert row["f1_change"] == pytest.approx(iv["mean"], abs=1e-9)
        assert row["f1_change_within_noise"] == (not iv["excludes_zero"])
        assert "f1_true_change_within_noise" in row
    # A class absent from the test images (support 0) cannot show a real change.
    for row in m["per_class_change"]:
        if row["support"] == 0:
            assert row["f1_change_within_noise"]
    # Label-level errors of the training labels against the truth.
    errors = m["label_errors_true"]
    split = pd.read_csv(run40[0] / "retrain" / "split.csv", dtype=str)
    assert errors["images_before"] == (split["part"] != "test").sum()
    assert errors["images_after"] == errors["images_before"] - (
        m["config"]["n_removed_train"] + m["config"]["n_removed_val"]
    )
    detail = m["config"]["train_label_errors_true"]
    assert errors["before"] == detail["labels_wrong_before"]
    assert errors["before"] >= detail["wrong_before"]  # labels >= images with a wrong label
    assert label_errors(np.eye(3, dtype=bool), np.zeros((3, 3), bool)) == 3
    lines = summary_lines(m)
    assert any(line.startswith("macro_f1_true") for line in lines)
    assert any("training label errors" in line for line in lines)
    assert lines[-1].startswith(NOISE_MARK)


def test_change_intervals_and_noise_marks():
    rng = np.random.default_rng(0)
    given = rng.random((30, 3)) < 0.4
    given[:, 0] = True
    probs = rng.random((30, 3))
    same = change_intervals(probs, probs, given, None, seed=0)
    assert same["macro_f1"]["low"] == same["macro_f1"]["high"] == 0.0
    assert "macro_f1_true" not in same
    better = change_intervals(1.0 - given, given.astype(float), given, given, seed=0)
    assert better["macro_f1"]["excludes_zero"] and better["macro_f1"]["low"] > 0
    assert better["micro_f1_true"]["low"] > 0
    names = ["a", "bb", "c"]
    per_class = [{"class": n, "f1": 0.5, "support": 3} for n in names]
    side = {"n_test": 30, "micro_f1": 0.5, "macro_f1": 0.4, "per_class": per_class}
    rows = [
        {"class": n, "support": 3, "f1_before": 0.5, "f1_after": 0.5, "f1_change": 0.0}
        for n in names
    ]
    m = {"before": side, "after": side, "delta_ci": same, "per_class_change": rows}
    lines = summary_lines(m)
    assert "30 test images" in lines[0]
    macro = next(line for line in lines if line.startswith("macro_f1"))
    assert macro.endswith(f"+0.000 [+0.000, +0.000] {NOISE_MARK}")
    row = next(line for line in lines if line.startswith("bb "))
    assert row.split()[1] == "3" and row.endswith(NOISE_MARK)
    m["delta_ci"] = better
    lines = summary_lines(m)
    macro = next(line for line in lines if line.startswith("macro_f1 "))
    assert not macro.endswith(NOISE_MARK)
    # The report's retrain section shows the same cells and marks.
    from labelaudit.report.sections import _retrain_intervals

    m["delta_ci"] = same
    section = _retrain_intervals(m)
    assert section["n_test"] == 30 and not section["truth"]
    assert section["overall"][1] == ("macro_f1", 0.4, 0.4, "+0.000 [+0.000, +0.000] ~", True)
    assert section["per_class"][1][:2] == ("bb", 3) and section["per_class"][1][-1] is True
    assert _retrain_intervals({"before": side, "after": side}) is None  # older metrics.json


@pytest.mark.slow
def test_test_split_is_made_before_cleaning(run40, retrained):
    run, _, truth = run40
    # Another policy removes other images: the split, hence the test set, is unchanged.
    again = retrain(run, truth=truth, policy="intensity", members=2)
    assert again["split"]["test_digest"] == retrained["split"]["test_digest"]
    assert again["before"]["reused"]  # same original labels and weights: not retrained
    assert again["before"]["micro_f1"] == retrained["before"]["micro_f1"]


@pytest.mark.slow
def test_checkpoint(run40, retrained):
    run, root, _ = run40
    path = run / "retrain" / "model.pt"
    raw = torch.load(path, map_location="cpu", weights_only=True)
    # A 2-member ensemble (the fixture's members=2).
    assert set(raw) == {"format", "state_dict", "meta", "extra_state_dicts"}
    assert len(raw["extra_state_dicts"]) == 1
    model, meta = load_checkpoint(path)
    assert isinstance(model, EnsembleModel) and len(model.members) == 2
    assert meta["members"] == 2 and len(meta["best_epoch"]) == 2
    # Members differ (different seeds), so the ensemble is not one model three times.
    heads = [m.head.weight for m in model.members]
    assert not torch.equal(heads[0], heads[1])
    assert meta["class_names"][0] == "Nucleoplasm" and meta["num_classes"] == 19
    assert meta["settings"]["backbone"] == "test_efficientnet"
    assert len(meta["thresholds"]) == 19 and meta["labels"] == "cleaned"
    assert meta["class_weights"]["kind"] == "method"
    assert not model.training
    # The saved model reproduces the test probabilities computed during retraining.
    from labelaudit.tools.predict import predict

    frame = predict(path, root, device="cpu").set_index("id")
    split = pd.read_csv(run / "retrain" / "split.csv", dtype=str)
    test_ids = split.loc[split["part"] == "test", "id"].tolist()
    with np.load(run / "retrain" / "model.npz") as z:
        stored = z["test_probs"]
    got = frame.loc[test_ids, meta["class_names"]].to_numpy()
    np.testing.assert_allclose(got, stored, atol=1e-5)


def test_default_members():
    assert default_members(SMALL_DATASET - 1) == 3
    assert default_members(SMALL_DATASET) == 1


@pytest.mark.slow
def test_no_clean_compares_class_weights(run40):
    run, _, _ = run40
    m = retrain(run, clean=False, class_weights="pos", members=1)
    assert m["before"]["members"] == m["after"]["members"] == 1
    raw = torch.load(run / "retrain" / "model.pt", map_location="cpu", weights_only=True)
    assert "extra_state_dicts" not in raw  # a single model is saved as before
    model, _ = load_checkpoint(run / "retrain" / "model.pt")
    assert not isinstance(model, EnsembleModel)
    assert m["before"]["class_weights"] == "none" and m["after"]["class_weights"] == "pos"
    assert m["before"]["labels"] == m["after"]["labels"] == "original"
    assert m["before"]["n_train"] == m["after"]["n_train"]
    assert "macro_f1_true" not in m["before"]
    # Without truth: intervals on the given test labels only, no label-error counts.
    assert set(m["delta_ci"]) >= {"micro_f1", "macro_f1", "per_class"}
    assert "macro_f1_true" not in m["delta_ci"] and "label_errors_true" not in m
    assert "f1_change_within_noise" in m["per_class_change"][0]
    lines = summary_lines(m)
    assert "per class (given test labels):" in lines
    assert not any("label errors" in line for line in lines)


def test_bad_inputs(run40, tmp_path):
    run, _, _ = run40
    with pytest.raises(SettingsError, match="class_weights"):
        retrain(run, class_weights="inverse")
    bad = tmp_path / "truth.csv"
    bad.write_text("ID,true_label,given_label,noise\nfield000,0,0,none\n")
    with pytest.raises(DatasetError, match="no true labels"):
        retrain(run, truth=bad)
    with pytest.raises(SettingsError, match="unknown setting"):
        retrain(run, epoch=3)
    with pytest.raises(SettingsError, match="members"):
        retrain(run, members=0)
    with pytest.raises(SettingsError, match="sigmoid"):
        retrain(run, class_weights="pos", activation="relu")


@pytest.mark.slow
def test_cli_retrain_adds_the_section_to_the_report(run40, retrained, run_cli):
    run, _, truth = run40
    code, out, err = run_cli(
        "retrain", "--run", run, "--truth", truth, "--policy", "consensus-drop", "--members", "2"
    )  # the fixture's models, reused
    assert code == 0, err
    assert "macro_f1_true" in out and "report:" in out
    assert "change [95% CI]" in out and "test images" in out
    assert "training label errors vs truth" in out
    assert f"{NOISE_MARK} within noise" in out
    page = (run / "report.html").read_text()
    section = page[page.index('<section id="retrain">') :]
    section = section[: section.index("</section>")]
    assert "Not run" not in section and "macro_f1_true" in section
    assert "change [95% CI]" in section and "test images" in section
    assert "within noise" in section and "Training label errors against the truth" in section
    assert "Per-class F1 change" in page
