"""The cleaning benefit evaluation: probe retraining with weights, paired deltas, intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from la_runfixture import make_run

from labelaudit.core.errors import RunDirError
from labelaudit.pipeline.evaluation import class_weights
from labelaudit.tools.benefit import evaluate_cleaning, fit_probe, training_weights


def test_training_weights_combine_label_and_class_weights():
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 0]], dtype=bool)
    lw = np.array([[1.0, 0.5], [0.2, 1.0], [1.0, 1.0], [0.0, 1.0]])
    assert training_weights(y, None, "none") is None
    np.testing.assert_array_equal(training_weights(y, lw, "none"), lw)
    method = class_weights(y, "method")  # 1 - n_k / N = [0.5, 0.75]
    np.testing.assert_allclose(training_weights(y, lw, "method"), lw * method)
    pos = class_weights(y, "pos")  # (N - n_k) / n_k = [1, 3]
    np.testing.assert_allclose(training_weights(y, None, "pos"), np.where(y, pos, 1.0))


def test_a_zero_sample_weight_is_the_same_as_leaving_the_image_out():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = np.column_stack([x[:, 0] > 0, x[:, 1] + rng.normal(size=60) > 0])
    w = np.ones((60, 2))
    w[:15, 0] = 0.0
    (weighted,) = fit_probe(x, y, [x], c=1.0, sample_weight=w)
    # Class 0 without its first 15 images; the scaler is fitted on all of them in both.
    (full,) = fit_probe(x, y, [x], c=1.0)
    np.testing.assert_allclose(weighted[:, 1], full[:, 1], atol=1e-6)
    assert not np.allclose(weighted[:, 0], full[:, 0], atol=1e-3)
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    a = StandardScaler().fit(x).transform(x)
    ref = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(a[15:], y[15:, 0])
    np.testing.assert_allclose(weighted[:, 0], ref.predict_proba(a)[:, 1], atol=1e-4)


@pytest.fixture
def probe_run(make_hpa, tmp_path):
    """40 fields whose embeddings carry their true class; field001 is mislabelled."""
    dataset = make_hpa(n=40, size=8)
    run = make_run(tmp_path, dataset)
    given = pd.read_csv(run / "dataset.csv", dtype=str)
    rng = np.random.default_rng(1)
    true = given["labels"].copy()
    true[given["id"] == "field001"] = "2"  # the scenario's relabel makes it "2"
    first = true.str.split("|").str[0].astype(int).to_numpy()
    x = rng.normal(size=(40, 24)).astype(np.float32)
    x[np.arange(40), first] += 4.0
    np.save(run / "embeddings.npy", x)
    truth = tmp_path / "truth.csv"
    noise = np.where(given["labels"] != true, "swap", "none")
    pd.DataFrame(
        {"ID": given["id"], "true_label": true, "given_label": given["labels"], "noise": noise}
    ).to_csv(truth, index=False)
    return run, truth


def test_evaluate_cleaning_pairs_every_config_with_no_cleaning(probe_run):
    run, truth = probe_run
    per_seed, summary = evaluate_cleaning(
        run,
        truth,
        configs=[("relabel", "none"), ("soft", "method")],
        seeds=[0, 1, 2],
        n_boot=50,
    )
    configs = set(zip(summary["policy"], summary["weights"], strict=True))
    assert configs == {
        ("none", "none"),
        ("relabel", "none"),
        ("soft", "method"),
        ("none", "method"),
    }
    assert len(per_seed) == 4 * 3
    base = summary.set_index(["policy", "weights"]).loc[("none", "none")]
    # No cleaning against itself: zero change, zero-width intervals.
    for col in ("d_macro_f1", "d_macro_f1_t_low", "d_macro_f1_boot_high", "vs_base_micro_f1"):
        assert base[col] == 0.0
    assert base["label_errors"] == base["label_errors_given"]
    # relabel changes labels and removes the rest of the consensus in every split.
    relabel = per_seed[per_seed["policy"] == "relabel"]
    assert (relabel["label_errors"] != relabel["label_errors_given"]).any()
    assert (relabel["n_removed"] > 0).all()
    # The delta is the per-seed difference of F1 against the baseline of the same seed.
    by = per_seed.set_index(["policy", "weights", "seed"])["macro_f1"]
    expected = np.mean([by[("soft", "method", s)] - by[("none", "method", s)] for s in range(3)])
    row = summary.set_index(["policy", "weights"]).loc[("soft", "method")]
    assert row["d_macro_f1"] == pytest.approx(expected)
    assert row["d_macro_f1_t_low"] <= row["d_macro_f1"] <= row["d_macro_f1_t_high"]


def test_a_finetuned_run_is_refused(probe_run):
    from labelaudit.core.io import update_run_json

    run, truth = probe_run
    update_run_json(run, "train", {"mode": "finetune"})
    with pytest.raises(RunDirError, match="--mode probe"):
        evaluate_cleaning(run, truth, seeds=[0])
