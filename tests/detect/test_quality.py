"""The image-quality detector on hand-made fields with a known answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from labelaudit.core.errors import SettingsError
from labelaudit.data.measures import STAT_NAMES, channel_stats
from labelaudit.detect import get_detector
from labelaudit.detect.base import AuditInputs

CHANNELS = ("red", "green", "blue", "yellow")
N = 40


def _field(rng: np.random.Generator, fault: str | None) -> dict[str, np.ndarray]:
    """Four 64 px stains: blurred random spots plus camera noise (uint8)."""
    out = {}
    for ch in CHANNELS:
        spots = np.zeros((64, 64))
        ys, xs = rng.integers(4, 60, (2, 25))
        spots[ys, xs] = rng.uniform(0.6, 1.0, 25)
        x = ndimage.gaussian_filter(spots, 1.2) * 800 * rng.uniform(0.8, 1.2)
        if fault == "blur":
            x = ndimage.gaussian_filter(x, 3.0)
        if fault == "dark" and ch == "green":
            x = x * 0.08
        if fault == "empty" and ch == "blue":
            x = x * 0.0
        x = x + 3 + rng.standard_normal(x.shape) * 1.0
        if fault == "saturated" and ch == "green":
            x = x * 12
        out[ch] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out


def _inputs(faults: dict[int, str]) -> AuditInputs:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(N):
        field = _field(rng, faults.get(i))
        row: dict[str, object] = {"id": f"f{i}", "height": 64, "width": 64}
        for ch, arr in field.items():
            row.update({f"{ch}_{k}": v for k, v in channel_stats(arr).items()})
        rows.append(row)
    labels = np.zeros((N, 2), dtype=bool)
    labels[np.arange(N), np.arange(N) % 2] = True
    return AuditInputs(
        ids=[f"f{i}" for i in range(N)],
        class_names=["a", "b"],
        class_tokens=["0", "1"],
        label_sep="|",
        labels=labels,
        stats=pd.DataFrame(rows),
    )


def _flagged_kinds(result, image_id: str) -> set[str]:
    f = result.findings
    return set(f.loc[(f["id"] == image_id) & f["flagged"], "class"])


def test_cache_has_the_quality_statistics():
    stats = channel_stats(np.full((32, 32), 7, dtype=np.uint8))
    assert set(STAT_NAMES) == set(stats)
    assert stats["entropy"] == 0.0  # one grey level: no information
    assert stats["max"] == pytest.approx(7 / 255)


def test_normal_fields_flag_nothing():
    result = get_detector("quality").run(_inputs({}))
    assert result.n_flagged == 0
    assert not result.findings["flagged"].any()
    assert (result.columns["quality_issues"] == "").all()


def test_each_fault_is_flagged_with_its_issue_type():
    faults = {0: "dark", 1: "saturated", 2: "blur", 3: "empty"}
    result = get_detector("quality").run(_inputs(faults))
    assert "dark:green" in _flagged_kinds(result, "f0")
    assert "saturated:green" in _flagged_kinds(result, "f1")
    assert {"blurry:all", "blurry:red", "blurry:blue"} <= _flagged_kinds(result, "f2")
    empty = _flagged_kinds(result, "f3")
    assert {"dark:blue", "low_information:blue"} <= empty
    assert not any(k.endswith(":green") for k in empty)  # one stain failed alone
    # The faulty fields lead the ranking, and the normal ones are not flagged.
    assert set(np.argsort(-result.image_score)[:4]) == {0, 1, 2, 3}
    assert result.image_flagged.tolist() == [True] * 4 + [False] * (N - 4)
    f = result.findings
    dark = f[(f["id"] == "f0") & (f["class"] == "dark:green")]
    assert dark["value"].iloc[0] < -4  # value: the signed z


def test_odd_size_is_flagged():
    inputs = _inputs({})
    inputs.stats.loc[5, "width"] = 128
    result = get_detector("quality").run(inputs)
    assert _flagged_kinds(result, "f5") == {"odd_size:area", "odd_size:aspect"}


def test_bad_parameters_and_unknown_channels_raise():
    with pytest.raises(SettingsError, match="n_sigma"):
        get_detector("quality", n_sigma=0)
    with pytest.raises(SettingsError, match="no statistics for channel"):
        get_detector("quality", channels=["purple"]).run(_inputs({}))


def test_bench_scores_quality_per_fault_type(tmp_path):
    from labelaudit.pipeline.bench import IMAGE_NOISE, bench

    noise = ["none"] * 8 + ["dim", "saturated", "blur", "artifact"]
    ids = [f"{i:03d}" for i in range(len(noise))]
    score = [0.0, 1, 2, 0.5, 1.5, 0.2, 0.1, 0.3, 9, 8, 7, 6]  # faults on top
    issues = pd.DataFrame(
        {
            "id": ids,
            "given_labels": "1",
            "label_quality": 0.5,
            "outlier_score": 0.5,
            "intensity_z": 0.0,
            "flagged_by": ["quality" if s > 5 else "" for s in score],
            "consensus_score": 0.5,
            "consensus_flag": False,
            "quality_score": score,
        }
    )
    issues.to_csv(tmp_path / "issues.csv", index=False)
    truth = pd.DataFrame({"ID": ids, "true_label": "1", "given_label": "1", "noise": noise})
    truth.to_csv(tmp_path / "truth.csv", index=False)
    result = bench(tmp_path, tmp_path / "truth.csv", write=False)
    for group in ("image", *IMAGE_NOISE):
        assert result["metrics"]["quality"][group]["auroc"] == 1.0
        assert result["metrics"]["intensity"][group]["auroc"] == 0.5  # every detector scored
    assert result["metrics"]["quality"]["image"]["recall_at_flag"] == 1.0
    # A run without the column (older runs): quality is left out, not an error.
    issues.drop(columns="quality_score").to_csv(tmp_path / "issues.csv", index=False)
    assert "quality" not in bench(tmp_path, tmp_path / "truth.csv", write=False)["metrics"]


def test_label_model_judges_a_multi_label_field_against_the_mix_of_its_classes():
    from labelaudit.detect.quality import label_model_z

    rng = np.random.default_rng(0)
    n = 300
    labels = np.zeros((n, 3), dtype=bool)
    labels[np.arange(n), rng.integers(0, 3, n)] = True
    labels[:60, 1] = True  # 60 fields carry class 1 as well
    effect = np.array([0.0, 2.0, -1.0])  # class 1 bright, class 2 dim (log scale)
    x = 1.0 + labels @ effect + rng.normal(0, 0.1, n)
    # Field 0 carries classes {0 or 2, 1} but is as dim as class 2 alone: a
    # best-fitting single class would excuse it, the sum of its classes does not.
    labels[0] = [False, True, True]
    x[0] = 1.0 - 1.0
    z = label_model_z(x, labels, min_group=10)
    assert z[0] < -10
    assert np.abs(z[1:]).max() < 4.5  # the normal fields stay normal


def test_label_model_gives_small_classes_no_effect_and_handles_missing_values():
    from labelaudit.detect.quality import label_model_z

    rng = np.random.default_rng(1)
    n = 200
    labels = np.zeros((n, 2), dtype=bool)
    labels[:, 0] = True
    labels[:3, 1] = True  # three images: below min_group
    x = rng.normal(0, 0.1, n)
    x[:3] += 2.0
    z = label_model_z(x, labels, min_group=10)
    assert (z[:3] > 10).all()  # judged against the other images, not their own class
    x[5] = np.nan
    z = label_model_z(x, labels, min_group=10)
    assert z[5] == 0.0 and np.isfinite(z).all()
    assert (label_model_z(np.ones(n), labels, min_group=10) == 0).all()


def test_the_mean_blur_z_is_restandardised():
    from labelaudit.core.robust import robust_center_scale
    from labelaudit.detect.quality import restandardise

    rng = np.random.default_rng(2)
    mean_z = rng.standard_normal((4, 4000)).mean(axis=0)  # four stains' z, averaged
    assert robust_center_scale(mean_z)[1] == pytest.approx(0.5, abs=0.05)
    assert robust_center_scale(restandardise(mean_z))[1] == pytest.approx(1.0, abs=0.02)


def test_quality_reports_one_piece_of_evidence_per_issue_type():
    result = get_detector("quality").run(_inputs({0: "dark", 2: "blur"}))
    kinds = result.evidence_scores
    assert {"dark", "blurry"} <= set(kinds)
    assert int(np.argmax(kinds["dark"])) == 0 and int(np.argmax(kinds["blurry"])) == 2
    for values in kinds.values():
        assert values.shape == (len(result.image_score),)
        assert (values <= result.image_score + 1e-12).all()  # each kind <= the maximum
