"""An empty protein stain is label evidence, a dark field is an image fault (issue 23).

Hand-made fields with known answers (``la_rolefields``): classes Cytosol, Nucleoplasm
and the exclusive Negative, whose fields carry camera noise only in green.
"""

from __future__ import annotations

from la_rolefields import CASES, N, role_inputs

from labelaudit.detect import get_detector


def _flagged(result, i: int) -> set[str]:
    f = result.findings
    return set(f.loc[(f["id"] == f"f{i}") & f["flagged"], "class"])


def test_empty_protein_stain_given_cytosol_is_label_evidence_not_an_image_fault():
    result = get_detector("quality").run(role_inputs(CASES))
    assert _flagged(result, 1) == {"empty_target:green"}
    assert result.image_flagged[1]  # flagged (it counts towards the consensus) ...
    assert result.columns["quality_issues"][1] == ""  # ... but for its labels
    assert result.columns["quality_score"][1] < 6
    assert result.columns["stain_evidence"][1] == "protein stain empty: looks Negative"
    assert result.label_evidence["empty_target"][1] > 6
    assert result.image_score[1] < 6
    assert "empty_target" not in result.evidence_scores


def test_every_stain_dim_is_an_image_fault():
    result = get_detector("quality").run(role_inputs(CASES))
    kinds = _flagged(result, 3)
    assert result.image_flagged[3]
    assert {"dark:red", "dark:blue", "dark:yellow"} <= kinds
    assert "empty_target:green" not in kinds
    assert result.columns["stain_evidence"][3] == ""


def test_dim_structured_protein_stain_stays_an_image_fault():
    result = get_detector("quality").run(role_inputs(CASES))
    kinds = _flagged(result, 7)
    assert kinds & {"dark:green", "low_information:green", "blurry:green"}
    assert "empty_target:green" not in kinds
    assert result.image_flagged[7]
    assert result.columns["stain_evidence"][7] == ""


def test_sparse_dim_spots_are_not_an_empty_stain():
    result = get_detector("quality").run(role_inputs(CASES))
    assert "empty_target:green" not in _flagged(result, 9)
    assert result.columns["stain_evidence"][9] == ""


def test_a_real_negative_field_is_not_an_image_problem():
    result = get_detector("quality").run(role_inputs(CASES))
    negatives = [i for i in range(N) if i % 5 == 0 and i not in CASES]
    assert not result.image_flagged[negatives].any()
    assert all(result.columns["stain_evidence"][i] == "" for i in negatives)


def test_without_an_exclusive_class_an_empty_stain_stays_an_image_fault():
    result = get_detector("quality").run(role_inputs(CASES, exclusive=()))
    assert "dark:green" in _flagged(result, 1)
    assert result.image_flagged[1]
    assert not result.label_evidence


def test_the_default_order_counts_the_empty_stain_in_the_label_family():
    from labelaudit.pipeline.compare import family_scores

    result = get_detector("quality").run(role_inputs(CASES))
    fam = family_scores({"quality": result})
    assert fam.label[1] >= 1 > fam.image[1]  # strong label evidence, no image evidence
    assert fam.image[3] >= 1  # the dim field is an image problem
    assert fam.evidence[1].startswith("protein stain empty: looks Negative z=")
