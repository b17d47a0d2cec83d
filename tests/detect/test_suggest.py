"""Per-label suggestions on hand-made cases with a known answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelaudit.detect.suggest import (
    SUGGESTION_COLUMNS,
    SuggestRules,
    apply_suggestions,
    change_text,
    precision_at,
    precision_at_many,
    suggest_labels,
)

N = 60


def _world() -> tuple[np.ndarray, np.ndarray]:
    """Class 0 learned (probabilities follow the labels), class 1 not (noise)."""
    rng = np.random.default_rng(0)
    given = np.zeros((N, 3), dtype=bool)
    given[: N // 2, 0] = True
    given[N // 2 :, 2] = True
    given[::3, 1] = True
    probs = np.where(given, 0.9, 0.05) + rng.uniform(-0.03, 0.03, given.shape)
    probs[:, 1] = rng.uniform(0.0, 1.0, N)  # class 1: the model learned nothing
    return given, probs


def _cands(*rows: tuple) -> pd.DataFrame:
    """Candidates ``(row, class, add[, neighbours])``; adds default to neighbours 0.8."""
    full = [r if len(r) == 4 else (*r, 0.8 if r[2] else np.nan) for r in rows]
    return pd.DataFrame(full, columns=["row", "class", "add", "neighbours"])


def test_confident_add_on_learned_class_is_suggested():
    given, probs = _world()
    i = N - 1  # labelled 2 only; the model sees class 0 too
    probs[i, 0] = 0.95
    out = suggest_labels(given, probs, _cands((i, 0, True)), np.zeros(N, dtype=bool))
    assert list(out.columns) == SUGGESTION_COLUMNS
    row = out.iloc[0]
    assert row["trusted"] and row["action"] == "add"
    assert row["probability"] == pytest.approx(0.95)
    assert row["confidence"] == 1.0  # every image scored this high is labelled 0
    new = apply_suggestions(given, out)
    assert new[i].tolist() == [True, bool(given[i, 1]), True]
    assert (np.delete(new, i, axis=0) == np.delete(given, i, axis=0)).all()


def test_an_add_needs_the_neighbours_to_agree():
    given, probs = _world()
    i = N - 1
    probs[i, 0] = 0.95
    flags = np.zeros(N, dtype=bool)
    for q in (0.3, np.nan):  # few neighbours carry class 0, or unknown: doubtful
        out = suggest_labels(given, probs, _cands((i, 0, True, q)), flags)
        assert not out.iloc[0]["trusted"]
        assert "neighbours do not carry the class" in out.iloc[0]["evidence"]
    assert suggest_labels(given, probs, _cands((i, 0, True, 0.5)), flags).iloc[0]["trusted"]
    # The rule can be switched off.
    rules = SuggestRules(add_min_neighbours=None)
    assert suggest_labels(given, probs, _cands((i, 0, True, 0.3)), flags, rules).iloc[0]["trusted"]


def test_an_add_the_label_evidence_is_sure_of_needs_no_neighbours():
    given, probs = _world()
    i = N - 1
    probs[i, 0] = 0.7  # below add_min_p, and the neighbours do not carry the class
    flags = np.zeros(N, dtype=bool)
    cands = _cands((i, 0, True, 0.2)).assign(posterior=0.8)
    out = suggest_labels(given, probs, cands, flags)
    assert out.iloc[0]["trusted"] and "evidence 0.80" in out.iloc[0]["evidence"]
    out = suggest_labels(given, probs, cands.assign(posterior=0.4), flags)
    assert not out.iloc[0]["trusted"]
    assert "evidence below 0.6" in out.iloc[0]["evidence"]
    # the class and image gates still hold, and the rule can be switched off
    assert not suggest_labels(given, probs, cands, np.ones(N, dtype=bool)).iloc[0]["trusted"]
    unlearned = _cands((i, 1, True, 0.2)).assign(posterior=0.9)
    assert not suggest_labels(given, probs, unlearned, flags).iloc[0]["trusted"]
    rules = SuggestRules(add_min_posterior=None)
    assert not suggest_labels(given, probs, cands, flags, rules).iloc[0]["trusted"]


def test_same_add_on_unlearned_class_is_doubtful():
    given, probs = _world()
    i = 1  # not labelled 1
    probs[i, 1] = 0.99
    out = suggest_labels(given, probs, _cands((i, 1, True)), np.zeros(N, dtype=bool))
    assert not out.iloc[0]["trusted"]
    assert "doubtful: class AP below 0.7" in out.iloc[0]["evidence"]
    assert (apply_suggestions(given, out) == given).all()


def test_image_flagged_by_an_image_detector_gets_no_suggestion():
    given, probs = _world()
    i = N - 1
    probs[i, 0] = 0.95
    flagged = np.zeros(N, dtype=bool)
    flagged[i] = True
    out = suggest_labels(given, probs, _cands((i, 0, True)), flagged)
    assert not out.iloc[0]["trusted"]
    assert "image detector" in out.iloc[0]["evidence"]


def test_removes_only_in_a_swap_unless_lone_removals_are_enabled():
    given, probs = _world()
    probs[0, 0] = 0.10  # labelled 0, model unsure: a lone remove is doubtful
    probs[3, 0] = 0.001  # even a lone remove at 0.001 is doubtful by default
    probs[4, 0], probs[4, 2] = 0.10, 0.95  # swap 0 -> 2: the remove rides on the add
    cands = _cands((0, 0, False), (3, 0, False), (4, 0, False), (4, 2, True))
    out = suggest_labels(given, probs, cands, np.zeros(N, dtype=bool))
    trusted = {(r, c): t for r, c, t in zip(out["row"], out["class"], out["trusted"], strict=True)}
    assert trusted == {(0, 0): False, (3, 0): False, (4, 0): True, (4, 2): True}
    evidence = dict(zip(out["row"], out["evidence"], strict=False))
    assert "a low probability alone" in evidence[3]
    new = apply_suggestions(given, out)
    assert new[0, 0] and new[3, 0] and not new[4, 0] and new[4, 2]
    lone = SuggestRules(remove_max_p=0.02)  # row 3 keeps class 1, so it may lose 0
    out = suggest_labels(given, probs, cands, np.zeros(N, dtype=bool), lone)
    assert out.set_index(["row", "class"]).loc[(3, 0), "trusted"]
    assert not out.set_index(["row", "class"]).loc[(0, 0), "trusted"]


def test_a_suggestion_never_leaves_an_image_without_labels():
    given, probs = _world()
    i = N - 2  # labelled 2 only (row N-2 is not a multiple of 3)
    assert given[i].tolist() == [False, False, True]
    probs[i, 2] = 0.0
    rules = SuggestRules(remove_max_p=0.02)
    out = suggest_labels(given, probs, _cands((i, 2, False)), np.zeros(N, dtype=bool), rules)
    assert not out.iloc[0]["trusted"]
    assert "would leave no labels" in out.iloc[0]["evidence"]


def test_rules_from_relabel_parameters_and_no_probabilities():
    rules = SuggestRules.from_confidence(0.9, 0.5)
    assert (rules.add_min_p, rules.min_class_ap) == (0.9, 0.5)
    assert rules.swap_remove_max_p == pytest.approx(0.1)
    given, probs = _world()
    out = suggest_labels(given, None, _cands((N - 1, 0, True)), np.zeros(N, dtype=bool))
    assert not out["trusted"].any()  # without probabilities nothing is trusted
    empty = suggest_labels(given, probs, _cands(), np.zeros(N, dtype=bool))
    assert list(empty.columns) == SUGGESTION_COLUMNS and empty.empty


def test_neighbour_shares_from_knn_findings():
    from labelaudit.detect.suggest import neighbour_shares

    findings = pd.DataFrame(
        {
            "id": ["a", "b", "b", "zz"],
            "class": ["X", "X", "Y", "X"],
            "detector": ["knn", "knn", "confident", "knn"],
            "value": [0.7, 0.2, 0.9, 1.0],
        }
    )
    q = neighbour_shares(findings, ["a", "b"], ["X", "Y"])
    assert q[0, 0] == 0.7 and q[1, 0] == 0.2
    assert np.isnan(q[0, 1]) and np.isnan(q[1, 1])  # confident's value is not a share
    assert np.isnan(neighbour_shares(pd.DataFrame(), ["a"], ["X"])).all()


def test_precision_at_and_change_text():
    given = np.array([[True], [True], [False], [False]])
    probs = np.array([[0.9], [0.8], [0.7], [0.1]])
    # add at 0.7: others at >= 0.7 are rows 0 and 1, both labelled (min_support 2)
    assert precision_at(given, probs, 2, 0, True, min_support=2) == 1.0
    # remove at 0.8: others at <= 0.8 are rows 2, 3 (unlabelled); row 1 itself left out
    assert precision_at(given, probs, 1, 0, False, min_support=2) == 1.0
    assert change_text("14", "add", 0.914) == "+14 (0.91)"
    assert change_text("3", "remove", float("nan")) == "-3"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the one-pair form on a NaN column
def test_precision_at_many_equals_the_one_pair_form_with_ties_and_missing_values():
    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 40):
        probs = np.round(rng.random((n, 3)), 1)  # many ties
        probs[0, 2] = np.nan  # a class with a missing probability
        given = rng.random((n, 3)) < 0.4
        rows, cols = rng.integers(0, n, 50), rng.integers(0, 3, 50)
        add = rng.random(50) < 0.5
        for support in (1, 3, 10):
            many = precision_at_many(given, probs, rows, cols, add, support)
            one = [
                precision_at(given, probs, r, c, a, support)
                for r, c, a in zip(rows, cols, add, strict=True)
            ]
            np.testing.assert_allclose(many, one, equal_nan=True)


# ---------------------------------------------------------------- exclusive classes (issue 23)

NEG = 3  # an exclusive class (HPA: Negative)


def _negative_world() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes 0, 1, 2 and Negative (3), all learned; neighbour shares follow the labels."""
    rng = np.random.default_rng(1)
    given = np.zeros((N, 4), dtype=bool)
    given[np.arange(N), np.arange(N) % 4] = True
    probs = np.where(given, 0.9, 0.03) + rng.uniform(-0.02, 0.02, given.shape)
    shares = np.where(given, 0.8, np.nan)
    return given, probs, shares


def _swap(given, probs, shares, **kw) -> pd.DataFrame:
    flags = np.zeros(len(given), dtype=bool)
    return suggest_labels(given, probs, _cands(), flags, exclusive=[NEG], neighbours=shares, **kw)


def test_swap_to_negative_is_the_negative_class_alone():
    given, probs, shares = _negative_world()
    i = 5  # given class 1; the model sees Negative, the protein stain is empty
    probs[i] = [0.02, 0.04, 0.03, 0.74]
    empty = np.zeros(N, dtype=bool)
    empty[i] = True
    out = _swap(given, probs, shares, empty_target=empty)
    mine = out[out["row"] == i]
    assert mine["trusted"].all()
    assert sorted(zip(mine["class"], mine["action"], strict=True)) == [(1, "remove"), (3, "add")]
    assert "swap to 3: p=0.74" in mine["evidence"].iloc[0]
    assert apply_suggestions(given, out)[i].tolist() == [False, False, False, True]
    # without the stain, the model alone needs an add's evidence (p >= 0.85, neighbours)
    assert _swap(given, probs, shares).empty
    probs[i, NEG] = 0.9
    shares[i, NEG] = 0.7
    assert apply_suggestions(given, _swap(given, probs, shares))[i].tolist() == [0, 0, 0, 1]
    shares[i, NEG] = np.nan
    # with the stain, the model must not call any other class present (p >= 0.5)
    probs[i, [1, NEG]] = [0.4, 0.2]
    assert len(_swap(given, probs, shares, empty_target=empty)) == 2
    probs[i, 1] = 0.6
    assert _swap(given, probs, shares, empty_target=empty).empty
    probs[i, [1, 2]] = [0.1, 0.7]  # the model sees another class in an "empty" stain
    assert _swap(given, probs, shares, empty_target=empty).empty


def test_swap_from_negative_is_the_seen_classes_alone():
    given, probs, shares = _negative_world()
    i = 7  # given Negative; the model sees classes 0 and 2
    probs[i] = [0.8, 0.1, 0.6, 0.05]
    shares[i, [0, 2]] = 0.7
    out = _swap(given, probs, shares)
    assert out["trusted"].all()
    assert apply_suggestions(given, out)[i].tolist() == [True, False, True, False]
    probs[i, NEG] = 0.5  # the model still believes Negative: no suggestion
    assert _swap(given, probs, shares).empty


def test_a_given_conflict_keeps_the_side_the_model_supports():
    given, probs, shares = _negative_world()
    given[2, NEG] = True  # class 2 + Negative
    probs[2, [2, NEG]] = [0.1, 0.95]
    given[6, NEG] = True  # class 2 + Negative, model sees class 2
    probs[6, [2, NEG]] = [0.9, 0.2]
    flags = np.zeros(N, dtype=bool)
    flags[6] = True  # even on suspect pixels: the given set is wrong either way
    out = suggest_labels(given, probs, _cands(), flags, exclusive=[NEG], neighbours=shares)
    new = apply_suggestions(given, out)
    assert new[2].tolist() == [False, False, False, True]
    assert new[6].tolist() == [False, False, True, False]


def test_no_suggestion_ever_joins_an_exclusive_class_with_another():
    rng = np.random.default_rng(4)
    for _ in range(30):
        given, probs, shares = _negative_world()
        probs = rng.uniform(0, 1, probs.shape)
        extra = rng.random(given.shape) < 0.1
        given |= extra  # some conflicts and multi-label sets
        shares = np.where(rng.random(given.shape) < 0.5, rng.uniform(0, 1, given.shape), np.nan)
        rows = rng.integers(0, N, 40)
        cols = rng.integers(0, 4, 40)
        cands = pd.DataFrame(
            {"row": rows, "class": cols, "add": ~given[rows, cols], "neighbours": 0.9}
        )
        rules = SuggestRules(add_min_p=0.5, swap_remove_max_p=0.5, min_class_ap=0.0)
        out = suggest_labels(
            given,
            probs,
            cands,
            np.zeros(N, dtype=bool),
            rules,
            exclusive=[NEG],
            neighbours=shares,
            empty_target=rng.random(N) < 0.3,
        )
        new = apply_suggestions(given, out)
        assert not (new[:, NEG] & (new.sum(axis=1) > 1)).any()
        assert (new.sum(axis=1) > 0).all()


def test_without_exclusive_classes_the_suggestions_are_unchanged():
    given, probs = _world()
    i = N - 1
    probs[i, 0] = 0.95
    cands = _cands((i, 0, True), (3, 0, False))
    flags = np.zeros(N, dtype=bool)
    a = suggest_labels(given, probs, cands, flags)
    b = suggest_labels(given, probs, cands, flags, exclusive=[], neighbours=None)
    pd.testing.assert_frame_equal(a, b)


def test_an_add_that_would_join_negative_is_doubtful_and_says_why():
    given, probs, shares = _negative_world()
    i = 3  # given Negative alone; the model also sees class 0 but keeps Negative high
    probs[i, 0] = 0.95
    out = suggest_labels(
        given,
        probs,
        _cands((i, 0, True)),
        np.zeros(N, dtype=bool),
        exclusive=[NEG],
        neighbours=shares,
    )
    row = out[out["row"] == i].iloc[0]
    assert not row["trusted"]
    assert row["evidence"].endswith("doubtful: would join an exclusive class")
