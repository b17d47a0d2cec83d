"""Comparison: issues table, consensus, agreement counts, run-directory artifacts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelaudit.core.errors import SettingsError
from labelaudit.core.io import read_json
from labelaudit.detect import (
    REGISTRY,
    AuditInputs,
    Detector,
    DetectorResult,
    make_findings,
    register,
)
from labelaudit.detect.base import empty_findings
from labelaudit.pipeline.compare import (
    ISSUES_COLUMNS,
    combination_counts,
    detect_and_compare,
    issues_columns,
    rank_percentile,
)
from labelaudit.synth.audit import make_audit

FAST = {"isolation": {"n_estimators": 30}}


@pytest.fixture(scope="module")
def synth():
    return make_audit(500, 6, 16, label_noise=0.08, image_noise=0.04, seed=3)


@pytest.fixture(scope="module")
def compared(synth, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, detect_and_compare(synth.inputs, run_dir, params=FAST)


def test_issues_columns_come_from_the_registered_detectors():
    # The built-in detectors' columns in their registration order: the order issues.csv
    # had when the list was written by hand (a demo's issues.csv stays byte-identical).
    assert ISSUES_COLUMNS == [
        "id",
        "given_labels",
        "suggested_labels",
        "label_quality",
        "outlier_score",
        "intensity_z",
        "knn_disagreement",
        "combined_score",
        "quality_score",
        "quality_issues",
        "stain_evidence",
        "exclusive_conflict",
        "flagged_by",
        "n_flags",
        "consensus_score",
        "consensus_flag",
        "label_changes",
        "doubtful_labels",
        "unreliable_classes",
        "label_score",
        "image_score",
        "problem_score",
        "evidence",
    ]


def test_a_declared_detector_column_joins_the_table_even_when_it_did_not_run(tmp_path):
    @register("flag_none")
    class FlagNone(Detector):
        requires = ("labels",)
        issue_columns = {"none_score": "score", "none_note": "text"}

        def detect(self, inputs: AuditInputs) -> DetectorResult:
            n = inputs.n_images
            zeros, flags = np.zeros(n), np.zeros(n, dtype=bool)
            f = make_findings(inputs, self.name, np.arange(n), None, zeros, flags, "")
            note = np.full(n, "fine", dtype=object)
            return DetectorResult(
                self.name, f, zeros, flags, {"none_score": zeros, "none_note": note}
            )

    try:
        assert issues_columns()[-14:-11] == ["exclusive_conflict", "none_score", "none_note"]
        ran = detect_and_compare(constant_inputs(), tmp_path, detectors=("flag_none",)).issues
        assert list(ran.columns) == issues_columns()
        assert (ran["none_score"] == 0).all() and (ran["none_note"] == "fine").all()
        left_out = detect_and_compare(constant_inputs(), tmp_path, detectors=("intensity",))
        assert left_out.issues["none_score"].isna().all()
        assert (left_out.issues["none_note"] == "").all()
    finally:
        del REGISTRY["flag_none"]
    assert "none_score" not in issues_columns()


def test_artifacts_are_written(compared, synth):
    run_dir, result = compared
    issues = pd.read_csv(run_dir / "issues.csv", dtype={"id": str}, keep_default_na=False)
    assert list(issues.columns) == ISSUES_COLUMNS
    assert len(issues) == synth.inputs.n_images
    findings = pd.read_csv(run_dir / "findings.csv", keep_default_na=False)
    assert list(findings.columns)[:6] == [
        "id",
        "class",
        "detector",
        "score",
        "flagged",
        "suggestion",
    ]
    assert set(findings["detector"]) == {
        "confident",
        "knn",
        "combined",
        "isolation",
        "intensity",
        "quality",
    }
    assert set(findings["suggestion"]) <= {"remove", "add", "review", ""}
    run = read_json(run_dir / "run.json")
    detect = run["detect"]
    assert set(detect["detectors"]) == {
        "confident",
        "knn",
        "combined",
        "isolation",
        "intensity",
        "quality",
    }
    assert 0 <= detect["detectors"]["confident"]["summary"]["health"]["overall_health_score"] <= 1
    assert detect["detectors"]["isolation"]["params"]["n_estimators"] == 30
    assert detect["warnings"] == []
    assert run["compare"]["agreement"]["n_images"] == synth.inputs.n_images


def test_issues_table(compared, synth):
    _, result = compared
    issues = result.issues
    inputs = synth.inputs
    assert issues["problem_score"].is_monotonic_decreasing  # the default order (issue 14)
    assert issues["consensus_score"].between(0, 1).all()
    assert np.isfinite(issues[["label_quality", "outlier_score", "intensity_z"]]).all().all()
    assert (issues["consensus_flag"] == (issues["n_flags"] >= 2)).all()
    flagged_by = issues["flagged_by"].str.split(";").apply(lambda s: [x for x in s if x])
    assert (flagged_by.apply(len) == issues["n_flags"]).all()
    # Labels in the dataset's notation, in the same row as their id.
    by_id = issues.set_index("id")
    i = 17
    assert by_id.loc[inputs.ids[i], "given_labels"] == "|".join(
        inputs.class_tokens[k] for k in np.flatnonzero(inputs.labels[i])
    )
    # The trusted suggestions are mostly right and undo part of the label noise;
    # the other flagged labels are doubtful, without a suggestion.
    noisy = [j for j, n in enumerate(synth.noise) if n in ("missing", "extra", "swap")]
    truth = synth.inputs.format_labels(synth.true_labels)
    given = inputs.format_labels(inputs.labels)
    sugg = [by_id.loc[image_id, "suggested_labels"] for image_id in inputs.ids]
    changed = [j for j in range(inputs.n_images) if sugg[j] != given[j]]
    right = sum(sugg[j] == truth[j] for j in changed)
    assert len(changed) >= 10 and right / len(changed) >= 0.8
    # (recall: the neighbour rule trades some for precision; 12 of 39 here)
    assert sum(sugg[j] == truth[j] for j in noisy) / len(noisy) > 0.25
    assert (issues["doubtful_labels"] != "").sum() > 0
    unchanged = issues["label_changes"] == ""
    assert (
        issues.loc[unchanged, "suggested_labels"] == issues.loc[unchanged, "given_labels"]
    ).all()


def test_combination_counts_add_up(compared, synth):
    _, result = compared
    agree = result.agreement
    combos = agree["combinations"]
    assert sum(combos.values()) == synth.inputs.n_images
    assert len(combos) == 2**6  # six default detectors (knn, quality: issue 14; combined: 27)
    assert {"none", "confident", "confident+isolation", "confident+isolation+intensity"} <= set(
        combos
    )
    # Exclusive combinations agree with the per-image flags.
    issues = result.issues
    assert combos["none"] == (issues["n_flags"] == 0).sum()
    every = "confident+knn+combined+isolation+intensity+quality"
    assert combos[every] == (issues["n_flags"] == 6).sum()
    for m, n in agree["flag_counts"].items():
        assert n == sum(v for k, v in combos.items() if m in k.split("+"))


def test_pairwise_and_per_class_agreement(compared, synth):
    _, result = compared
    agree = result.agreement
    issues = result.issues
    a = issues["flagged_by"].str.contains("confident").to_numpy()
    b = issues["flagged_by"].str.contains("isolation").to_numpy()
    assert agree["jaccard"]["confident"]["isolation"] == pytest.approx(
        (a & b).sum() / (a | b).sum()
    )
    assert agree["jaccard"]["intensity"]["intensity"] == 1.0
    rho = agree["spearman"]["confident"]["isolation"]
    assert rho is not None and -1 <= rho <= 1
    assert set(agree["per_class"]) == set(synth.inputs.class_names)
    c0 = agree["per_class"][synth.inputs.class_names[0]]
    f = result.findings
    expected = f[(f["detector"] == "confident") & f["flagged"] & (f["class"] == "class0")]
    assert c0["flags"]["confident"] == expected["id"].nunique()
    assert 0 <= c0["jaccard"]["confident"]["isolation"] <= 1


def test_rank_percentile():
    np.testing.assert_allclose(rank_percentile(np.array([3.0, 1.0, 2.0])), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(rank_percentile(np.array([1.0, 1.0, 1.0])), [0.5, 0.5, 0.5])
    assert rank_percentile(np.array([4.0]))[0] == 0.5
    out = rank_percentile(np.array([1.0, np.nan, 2.0]))
    assert out[0] == 0 and np.isnan(out[1]) and out[2] == 1


def test_combination_counts_edge_cases():
    assert combination_counts({}, 5) == {"none": 5}
    flags = {"a": np.array([1, 1, 0], bool), "b": np.array([1, 0, 0], bool)}
    assert combination_counts(flags, 3) == {"none": 1, "a": 1, "b": 0, "a+b": 1}


@pytest.fixture
def flag_all():
    @register("flag_all")
    class FlagAll(Detector):
        requires = ("labels",)

        def detect(self, inputs: AuditInputs) -> DetectorResult:
            n = inputs.n_images
            idx = np.arange(n)
            flags = np.ones(n, dtype=bool)
            f = make_findings(inputs, self.name, idx, None, np.ones(n), flags, "review")
            return DetectorResult(self.name, f, np.ones(n), flags, {"all_score": np.ones(n)})

    yield
    del REGISTRY["flag_all"]


def constant_inputs(n: int = 12) -> AuditInputs:
    labels = np.zeros((n, 2), dtype=bool)
    labels[:, 0] = True
    labels[0, 1] = True  # a class with one image
    stats = pd.DataFrame({"green_mean": np.full(n, 0.02)})
    return AuditInputs(
        [f"i{i}" for i in range(n)], ["a", "b"], ["0", "1"], " ", labels, stats=stats
    )


def test_none_flagged_and_all_flagged(tmp_path, flag_all):
    inputs = constant_inputs()
    result = detect_and_compare(inputs, tmp_path, detectors=("intensity", "flag_all"))
    agree = result.agreement
    assert agree["combinations"] == {
        "none": 0,
        "intensity": 0,
        "flag_all": 12,
        "intensity+flag_all": 0,
    }
    assert agree["jaccard"]["intensity"]["flag_all"] == 0.0
    assert agree["spearman"]["intensity"]["flag_all"] is None  # constant scores
    assert result.issues["consensus_score"].notna().all()
    assert list(result.issues.columns[-1:]) == ["all_score"]
    assert result.issues["given_labels"].iloc[0] in {"0", "0 1"}  # HPA 2018 separator
    run = read_json(tmp_path / "run.json")  # strict JSON: no NaN anywhere
    assert run["detect"]["skipped"] == {}

    result = detect_and_compare(inputs, tmp_path, detectors=("intensity",))
    assert result.agreement["combinations"] == {"none": 12, "intensity": 0}
    assert result.agreement["jaccard"]["intensity"]["intensity"] == 1.0  # two empty sets
    assert result.agreement["per_class"]["b"]["flags"] == {"intensity": 0}


def test_missing_inputs_are_skipped_with_a_warning(tmp_path):
    inputs = constant_inputs()
    result = detect_and_compare(inputs, tmp_path, detectors=None)  # None = the defaults
    assert set(result.skipped) == {"confident", "knn", "combined", "isolation"}
    run = read_json(tmp_path / "run.json")
    assert any("confident" in w and "probs" in w for w in run["detect"]["warnings"])
    assert "filter_by" in run["detect"]["skipped"]["confident"]["params"]
    issues = pd.read_csv(tmp_path / "issues.csv", keep_default_na=False)
    assert (issues["label_quality"] == "").all()  # present but empty
    assert (issues["suggested_labels"] == issues["given_labels"]).all()


def test_nothing_runnable(tmp_path):
    inputs = AuditInputs(["a", "b"], ["x"], ["0"], "|", np.array([[1], [0]], dtype=bool))
    result = detect_and_compare(inputs, tmp_path)
    assert result.results == {}
    assert (result.issues["consensus_score"] == 0).all()
    assert result.agreement["combinations"] == {"none": 2}
    assert pd.read_csv(tmp_path / "findings.csv").empty


def test_tiny_dataset_with_every_input(tmp_path):
    synth = make_audit(3, 2, 4, label_noise=0.0, image_noise=0.0)
    result = detect_and_compare(synth.inputs, tmp_path, params=FAST)
    assert sum(result.agreement["combinations"].values()) == 3
    assert np.isfinite(result.issues[["label_quality", "outlier_score", "intensity_z"]]).all().all()


def test_settings_errors(tmp_path):
    inputs = constant_inputs()
    with pytest.raises(SettingsError, match="unknown detector 'bogus'"):
        detect_and_compare(inputs, tmp_path, detectors=("bogus",))
    with pytest.raises(SettingsError, match="unknown detector 'isolatoin'"):
        detect_and_compare(inputs, tmp_path, params={"isolatoin": {}})
    with pytest.raises(SettingsError, match="no parameter"):
        detect_and_compare(inputs, tmp_path, params={"intensity": {"sigma": 2}})
    with pytest.raises(SettingsError, match="min_methods"):
        detect_and_compare(inputs, tmp_path, min_methods=0)


def test_flipped_label_gets_the_right_suggested_labels(tmp_path):
    rng = np.random.default_rng(0)
    n = 90
    labels = np.zeros((n, 3), dtype=bool)
    labels[np.arange(n), np.arange(n) % 3] = True
    probs = np.where(labels, 0.93, 0.04) + rng.uniform(-0.02, 0.02, labels.shape)
    # Embeddings follow the true class: f0 (truly "b") sits among the b images, so
    # its neighbours carry b too (the second opinion an add needs).
    emb = np.eye(3)[np.arange(n) % 3] + rng.normal(0, 0.05, (n, 3))
    labels[0] = [True, False, False]
    probs[0] = [0.02, 0.97, 0.03]
    emb[0] = np.eye(3)[1] + rng.normal(0, 0.05, 3)
    inputs = AuditInputs([f"f{i}" for i in range(n)], ["a", "b", "c"], ["5", "7", "9"], "|",
                         labels, probs=probs, embeddings=emb)  # fmt: skip
    result = detect_and_compare(inputs, tmp_path, detectors=("confident", "knn"))
    top = result.issues.set_index("id").loc["f0"]
    assert (top["given_labels"], top["suggested_labels"]) == ("5", "7")
    assert top["label_changes"] == "-5 (1.00);+7 (1.00)"  # class precision at that p
    assert top["doubtful_labels"] == ""
    assert "confident" in top["flagged_by"]
    assert (result.issues["label_changes"] != "").sum() == 1
    # Without the neighbours' opinion the same add is only doubtful.
    alone = detect_and_compare(inputs, tmp_path / "alone", detectors=("confident",))
    f0 = alone.issues.set_index("id").loc["f0"]
    assert f0["suggested_labels"] == "5" and f0["doubtful_labels"] != ""


# --- the default order (issue 14) ------------------------------------------------


def _result(name: str, score) -> DetectorResult:
    score = np.asarray(score, dtype=float)
    n = len(score)
    return DetectorResult(name, empty_findings(), score, np.zeros(n, dtype=bool))


def test_strong_evidence_sits_above_no_evidence():
    from labelaudit.pipeline.compare import family_scores

    rng = np.random.default_rng(0)
    n = 200
    confident = rng.uniform(0, 0.2, n)
    confident[0] = 0.21  # top of the confident bulk, nothing else
    intensity = rng.uniform(-1, 1, n)  # no tail: no strong evidence but image 5's
    intensity[5] = 20.0  # strong image evidence, middling confident rank
    confident[5] = 0.1
    fam = family_scores(
        {"confident": _result("confident", confident), "intensity": _result("intensity", intensity)}
    )
    others = np.delete(fam.problem, [0, 5])
    assert fam.problem[5] > fam.problem[0] > others.max()
    assert fam.problem[5] > 1 and (np.delete(fam.problem, 5) <= 1).all()
    assert "intensity z=" in fam.evidence[5]
    assert fam.evidence[0] == "confident top 1%"
    # Family separation: image evidence does not move the label order, and back.
    np.testing.assert_allclose(fam.label, rank_percentile(confident))
    assert np.argmax(fam.image) == 5


def test_evidence_just_past_its_null_does_not_outrank_the_surest_label_errors():
    """In the default order strong evidence adds its size, without the family orders'
    jump: a clean field just past its null (0.2 widths beyond STRONG_Z) stays below
    the images the label evidence is surest of, a clear fault (10 widths) tops them,
    and in its own family's order the field still leads every image without."""
    from labelaudit.pipeline.compare import STRONG_Z, family_scores

    rng = np.random.default_rng(5)
    n = 200
    combined = rng.uniform(0, 0.9, n)  # no tail: the label ranking has no strong evidence
    combined[:10] = np.linspace(0.91, 1.0, 10)  # 0-9: the surest label errors
    combined[[10, 11]] = 0.45  # middling label ranks
    intensity = rng.normal(0, 1, n)
    intensity = (intensity - np.median(intensity)) / (1.4826 * np.median(np.abs(intensity)))
    intensity = np.clip(intensity, -2.5, 2.5)  # a normal null of width 1
    intensity[10] = STRONG_Z + 0.2  # 10: a clean field just past the null
    intensity[11] = STRONG_Z + 10.0  # 11: a fault
    fam = family_scores(
        {"combined": _result("combined", combined), "intensity": _result("intensity", intensity)}
    )
    assert fam.problem[11] > fam.problem[:10].max()
    assert fam.problem[10] < fam.problem[:10].min()
    assert fam.problem[10] > np.delete(fam.problem, [*range(12)]).min()  # it still counts
    assert "intensity z=" in fam.evidence[10]
    others = np.delete(fam.image, [10, 11])
    assert fam.image[11] > fam.image[10] > 1 > others.max()


def test_a_weak_secondary_detector_does_not_blur_the_reference_order():
    from labelaudit.pipeline.compare import family_scores

    rng = np.random.default_rng(1)
    n = 300
    truth = np.zeros(n, dtype=bool)
    truth[:30] = True
    confident = np.where(truth, rng.uniform(0.5, 1, n), rng.uniform(0, 0.6, n))
    knn = rng.uniform(0, 1, n)  # no signal at all
    fam = family_scores({"confident": _result("confident", confident), "knn": _result("knn", knn)})
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(truth, fam.label) >= roc_auc_score(truth, confident) - 1e-12
    # The old consensus (mean rank percentile) loses to confident alone here.
    consensus = (rank_percentile(confident) + rank_percentile(knn)) / 2
    assert roc_auc_score(truth, consensus) < roc_auc_score(truth, confident)


def test_the_label_evidence_replaces_confident_learning_in_the_label_bulk():
    from labelaudit.pipeline.compare import family_scores

    rng = np.random.default_rng(2)
    n = 100
    confident = rng.uniform(0, 1, n)
    evidence = rng.uniform(0, 1, n)
    fam = family_scores(
        {"confident": _result("confident", confident), "combined": _result("combined", evidence)}
    )
    np.testing.assert_allclose(fam.label, rank_percentile(evidence))
    # without it, confident learning is the label family's bulk again
    fam = family_scores({"confident": _result("confident", confident)})
    np.testing.assert_allclose(fam.label, rank_percentile(confident))


def test_null_width_follows_the_upper_tail_of_the_bulk(monkeypatch):
    from labelaudit.pipeline import compare
    from labelaudit.pipeline.compare import null_width, robust_z

    rng = np.random.default_rng(2)
    normal = robust_z(rng.normal(size=4000))
    assert null_width(normal) == pytest.approx(1.0, abs=0.05)
    heavy = robust_z(np.abs(rng.standard_cauchy(4000)))  # clean images with a long tail
    assert null_width(heavy) > 1.5
    assert null_width(-normal * 0.1) == 1.0  # never narrower than the robust z
    monkeypatch.setattr(compare, "NULL_QUANTILE", None)
    assert null_width(heavy) == 1.0


def test_strong_evidence_is_relative_to_the_detectors_own_null():
    """A hand-made case with a known order: faults, label errors, then the clean bulk.

    Quality fires on 75 clean images with unusual texture (a heavy upper tail,
    as on the real-pixel benchmark); only the images far beyond that tail are
    strong evidence. Intensity has a normal null, so its z of 6 is strong.
    """
    from labelaudit.pipeline.compare import STRONG_Z, family_scores, null_width, robust_z

    rng = np.random.default_rng(3)
    n = 300
    confident = rng.uniform(0, 0.3, n)
    confident[:20] = np.linspace(0.32, 0.45, 20)  # 0-19: label errors, above the bulk
    quality = rng.normal(0, 1, n)
    quality[20:95] = rng.uniform(3, 8, 75)  # 20-94: clean, unusual texture
    quality[150:155] = [40, 45, 50, 55, 60]  # 150-154: image faults
    intensity = rng.normal(0, 1, n)
    intensity[155] = 6.0  # 155: a dim field, only intensity sees it
    results = {
        "confident": _result("confident", confident),
        "quality": _result("quality", quality),
        "intensity": _result("intensity", intensity),
    }
    zq = robust_z(quality)
    assert null_width(zq) > 1.5 and (zq[20:95] / null_width(zq) < STRONG_Z).all()
    fam = family_scores(results)
    order = np.argsort(-fam.problem, kind="stable")
    # Strong evidence first (faults by strength, then the intensity-only field),
    # then the label errors by confident, then the rest.
    assert list(order[:5]) == [154, 153, 152, 151, 150]
    assert order[5] == 155 and "intensity z=" in fam.evidence[155]
    assert set(order[6:26]) == set(range(20))
    assert not any("quality z=" in fam.evidence[i] for i in range(20, 95))
    assert fam.evidence[150].startswith("quality z=")
    assert (fam.problem[20:95] < 1).all() and (fam.problem[150:156] > 1).all()
    # With the fixed rule at the null's width 1, the textured clean images count
    # as strong and jump above the label errors.
    from labelaudit.pipeline import compare

    old = compare.NULL_QUANTILE
    try:
        compare.NULL_QUANTILE = None
        fixed = family_scores(results).problem
    finally:
        compare.NULL_QUANTILE = old
    assert (fixed[20:95] > 1).any() and fixed[20:95].max() > fixed[:20].max()


def test_each_kind_of_evidence_is_judged_against_its_own_null():
    """Quality reports two kinds: saturation with a heavy tail on clean fields and
    a light-tailed blur measure. A blur fault at 6 is strong evidence against
    blur's own null, above most clean fields that clip a little; judged as one
    score (the maximum of the two), it is not strong evidence at all.
    """
    from labelaudit.pipeline.compare import evidence_streams, family_scores

    rng = np.random.default_rng(4)
    n = 400
    confident = rng.uniform(0, 0.3, n)
    saturated = rng.lognormal(0, 1, n)  # clean fields clip a little, some more
    saturated[50] = 200.0  # an over-exposed field
    blurry = np.abs(rng.normal(0, 1, n))
    blurry[60] = 6.0  # an out-of-focus field
    quality = _result("quality", np.maximum(saturated, blurry))
    quality.evidence_scores = {"saturated": saturated, "blurry": blurry}
    results = {"confident": _result("confident", confident), "quality": quality}
    assert set(evidence_streams(results)) == {"confident", "quality:saturated", "quality:blurry"}
    fam = family_scores(results)
    assert int(np.argmax(fam.problem)) == 50
    assert fam.problem[60] > 1 and fam.evidence[60].startswith("quality:blurry z=")
    assert (fam.problem[60] > fam.problem).mean() > 0.95
    quality.evidence_scores = {}  # one score: the blur fault drowns in the saturation tail
    assert family_scores(results).problem[60] < 1


def test_an_add_the_combined_evidence_flags_reaches_the_issues_table():
    """The combined detector's flagged adds are candidates with their posterior, even
    where confident learning flagged nothing: the missing label is suggested back."""
    from labelaudit.detect.base import make_findings
    from labelaudit.pipeline.compare import build_issues

    rng = np.random.default_rng(0)
    n = 40
    labels = np.zeros((n, 3), dtype=bool)
    labels[:, 0] = True
    labels[::2, 1] = True
    probs = np.where(labels, 0.8, 0.1) + rng.uniform(-0.05, 0.05, labels.shape)
    probs[5, 1] = 0.7  # image 5 lacks class 1; the model half believes it
    inputs = AuditInputs(
        ids=[f"i{k}" for k in range(n)],
        class_names=["a", "b", "c"],
        class_tokens=["0", "1", "2"],
        label_sep="|",
        labels=labels,
        probs=probs,
    )
    rows, cols = np.nonzero(labels | (np.arange(n)[:, None] == 5) & (np.arange(3) == 1))
    post = np.where((rows == 5) & (cols == 1), 0.8, 0.02)
    flagged = post >= 0.5
    findings = make_findings(
        inputs,
        "combined",
        rows,
        cols,
        post,
        flagged,
        np.where(flagged, "add", "").astype(object),
        post,
    )
    score = np.zeros(n)
    score[5] = 0.8
    result = DetectorResult("combined", findings, score, score > 0.5)
    issues = build_issues(inputs, {"combined": result}).set_index("id")
    assert issues.loc["i5", "suggested_labels"] == "0|1"
    assert issues.loc["i5", "label_changes"].startswith("+1")
    assert (issues.drop(index="i5")["label_changes"] == "").all()
    assert issues["label_score"].idxmax() == "i5"
