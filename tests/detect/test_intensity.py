"""Intensity 3-sigma detector: fields far from their class's brightness are flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelaudit.core.errors import RunDirError, SettingsError
from labelaudit.detect import AuditInputs, get_detector


def make(labels: np.ndarray, green: np.ndarray) -> AuditInputs:
    n, k = labels.shape
    return AuditInputs(
        ids=[f"g{i}" for i in range(n)],
        class_names=[f"c{j}" for j in range(k)],
        class_tokens=[str(j) for j in range(k)],
        label_sep="|",
        labels=labels,
        stats=pd.DataFrame({"green_mean": green, "red_mean": np.full(n, 0.1)}),
    )


def bright_case(n: int = 100, seed: int = 0) -> tuple[AuditInputs, float]:
    """One class, intensities ~ N(0.02, 0.002); image 0 is 5 sigma brighter."""
    rng = np.random.default_rng(seed)
    green = rng.normal(0.0, 1.0, n)
    green = 0.02 + 0.002 * (green - green.mean()) / green.std()
    green[0] = 0.02 + 5 * 0.002
    return make(np.ones((n, 1), dtype=bool), green), green


@pytest.mark.parametrize("method", ["sigma", "robust"])
def test_field_five_sigma_brighter_is_flagged(method):
    inputs, _ = bright_case()
    result = get_detector("intensity", method=method).run(inputs)
    f = result.findings
    assert f.loc[0, "flagged"] and f.loc[0, "value"] > 3
    assert f.loc[0, "suggestion"] == "review"
    assert f["flagged"].sum() == 1
    assert result.image_score[0] == pytest.approx(f.loc[0, "score"])
    assert np.argmax(result.columns["intensity_z"]) == 0


def test_sigma_z_matches_the_definition():
    inputs, green = bright_case()
    z = get_detector("intensity", method="sigma").run(inputs).findings["value"].to_numpy()
    np.testing.assert_allclose(z, (green - green.mean()) / green.std())


def test_robust_catches_a_dim_field_that_sigma_misses_in_a_skewed_class():
    rng = np.random.default_rng(1)
    green = np.exp(rng.normal(np.log(0.02), 0.6, 400))  # right-skewed, like real fields
    green[0] = 0.0016  # empty field
    inputs = make(np.ones((400, 1), dtype=bool), green)
    sigma = get_detector("intensity", method="sigma").run(inputs)
    robust = get_detector("intensity", method="robust").run(inputs)
    assert not sigma.image_flagged[0]
    assert robust.image_flagged[0] and robust.findings.loc[0, "value"] < -3


def test_image_score_is_the_largest_abs_z_over_its_classes():
    inputs, _ = bright_case(60)
    labels = np.zeros((60, 2), dtype=bool)
    labels[:, 0] = True
    labels[:30, 1] = True
    inputs = make(labels, inputs.stats["green_mean"].to_numpy())
    result = get_detector("intensity").run(inputs)
    by_image = result.findings.groupby("id")["score"].max()
    np.testing.assert_allclose(result.image_score, by_image.loc[inputs.ids].to_numpy())


@pytest.mark.parametrize("method", ["sigma", "robust"])
def test_degenerate_classes_give_zero_not_nan(method):
    labels = np.zeros((8, 4), dtype=bool)
    labels[0, 0] = True  # class with one image
    labels[1:5, 1] = True  # constant intensities (0.1 + round-off prone values)
    labels[5:8, 2] = True  # one NaN intensity
    # class 3: no images; image 0 also has no other label
    green = np.array([0.5, 0.1, 0.1, 0.1, 0.1, 0.02, np.nan, 0.03])
    result = get_detector("intensity", method=method).run(make(labels, green))
    f = result.findings
    assert np.isfinite(f["score"]).all() and np.isfinite(f["value"]).all()
    assert (f.loc[f["class"].isin(["c0", "c1"]), "score"] == 0).all()
    assert f.loc[f["id"] == "g6", "score"].iloc[0] == 0
    assert np.isfinite(result.image_score).all()
    assert not result.image_flagged.any()


def test_constant_intensities_with_round_off():
    green = np.full(30, 0.1)  # mean(0.1 x 30) != 0.1 exactly
    result = get_detector("intensity").run(make(np.ones((30, 1), dtype=bool), green))
    assert (result.findings["score"] == 0).all()


def test_unlabelled_image_scores_zero():
    labels = np.zeros((5, 1), dtype=bool)
    labels[:4] = True
    result = get_detector("intensity").run(make(labels, np.array([0.1, 0.2, 0.3, 0.2, 0.9])))
    assert result.image_score[4] == 0 and len(result.findings) == 4


def test_options_and_errors():
    inputs, _ = bright_case()
    result = get_detector("intensity", suggestion="remove", n_sigma=2.0).run(inputs)
    assert set(result.findings.loc[result.findings["flagged"], "suggestion"]) == {"remove"}
    with pytest.raises(SettingsError, match="method"):
        get_detector("intensity", method="mad")
    with pytest.raises(RunDirError, match="blue_mean"):
        get_detector("intensity", channel="blue").run(inputs)
    inputs.stats = None
    with pytest.raises(SettingsError, match="needs stats"):
        get_detector("intensity").run(inputs)
