"""No cleaning policy or decision leaves Negative joined with another class (issue 23)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from la_runfixture import make_run

from labelaudit.core.errors import DatasetError
from labelaudit.core.io import write_csv
from labelaudit.data.layouts import load_dataset
from labelaudit.pipeline.clean import POLICIES, clean

N = 10
#: field000: Negative + Cytosol, the model sees Cytosol; field002: Nucleoli + Negative,
#: the model sees Negative; the rest as make_hpa draws them.
LABELS = ["16|18", "1", "2|18", "3", "4|3", "5", "6", "7", "8|3", "9"]


@pytest.fixture
def conflict_run(make_hpa, tmp_path):
    dataset = make_hpa(n=N, size=16, labels=LABELS)
    run = make_run(tmp_path, dataset)
    oof = pd.read_csv(run / "oof_probs.csv")
    oof.loc[0, ["Cytosol", "Negative"]] = [0.9, 0.2]
    oof.loc[2, ["Nucleoli", "Negative"]] = [0.1, 0.8]
    write_csv(run / "oof_probs.csv", oof)
    return dataset, run


def _has_conflict(labels: np.ndarray, names: list[str]) -> np.ndarray:
    neg = names.index("Negative")
    return labels[:, neg] & (labels.sum(axis=1) > 1)


@pytest.mark.parametrize("policy", POLICIES)
def test_no_policy_leaves_a_conflict(conflict_run, policy):
    _, run = conflict_run
    result = clean(run, policy=policy)
    ds = load_dataset(run / "cleaned")
    assert not _has_conflict(ds.labels, ds.class_names).any()
    labels = dict(zip(ds.ids, (ds.format_labels(r) for r in ds.labels), strict=True))
    assert labels["field000"] == "16"
    assert labels["field002"] == "18"
    changes = result.changes.set_index("id")
    assert changes.loc["field000", "reason"] == "exclusive class joined with another"
    assert "Negative given with Cytosol" in changes.loc["field000", "detail"]


def test_without_probabilities_a_conflict_is_removed(conflict_run):
    _, run = conflict_run
    (run / "oof_probs.csv").unlink()
    result = clean(run, policy="consensus-drop")
    changes = result.changes.set_index("id")
    assert changes.loc["field000", "action"] == "remove"
    assert "no probabilities" in changes.loc["field000", "reason"]


def test_a_decision_joining_negative_with_another_class_is_refused(conflict_run, tmp_path):
    _, run = conflict_run
    bad = tmp_path / "bad.csv"
    bad.write_text("id,decision,labels\nfield001,edit,1|18\n")
    with pytest.raises(DatasetError, match=r"bad.csv.*line 2.*Negative written with"):
        clean(run, policy="none", decisions=bad)
    ok = tmp_path / "ok.csv"
    ok.write_text("id,decision\nfield000,reject\nfield001,accept\n")
    result = clean(run, policy="none", decisions=ok)
    ds = load_dataset(run / "cleaned")
    assert not _has_conflict(ds.labels, ds.class_names).any()  # a reject is resolved too
    assert result.n_decisions == 2


def test_accepting_a_suggested_swap_to_negative_applies_it(conflict_run, tmp_path):
    _, run = conflict_run
    issues = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False)
    issues.loc[issues["id"] == "field001", "suggested_labels"] = "18"  # a swap to Negative
    write_csv(run / "issues.csv", issues)
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("id,decision\nfield001,accept\n")
    clean(run, policy="none", decisions=decisions)
    ds = load_dataset(run / "cleaned")
    assert ds.format_labels(ds.labels[ds.ids.index("field001")]) == "18"


def test_keeping_a_conflicting_given_set_is_refused(conflict_run, tmp_path):
    """A person's keep may not leave Negative joined with another class either."""
    _, run = conflict_run
    conflicted = [i for i, lab in enumerate(LABELS) if "18" in lab.split("|") and "|" in lab]
    keep = tmp_path / "keep.csv"
    keep.write_text(f"id,decision\nfield{conflicted[0]:03d},keep\n")
    with pytest.raises(DatasetError, match=r"keep.csv.*line 2.*Negative is never combined"):
        clean(run, decisions=keep)
    assert not (run / "cleaned").exists()


def test_decisions_alone_leave_no_conflict_undecided(conflict_run, tmp_path):
    """Without a policy only the file may change rows, and no output may join Negative:
    an undecided conflicting given set is refused, named; a policy resolves it."""
    _, run = conflict_run
    some = tmp_path / "some.csv"
    some.write_text("id,decision\nfield001,keep\n")  # field000 and field002 undecided
    with pytest.raises(DatasetError, match=r"some.csv: 2 image\(s\) the file does not decide"):
        clean(run, decisions=some)
    assert not (run / "cleaned").exists()
    result = clean(run, policy="none", decisions=some)  # asked for: the policy resolves
    by = dict(zip(result.changes["id"], result.changes["made_by"], strict=True))
    assert by["field000"] == "policy" and by["field002"] == "policy"
    all_decided = tmp_path / "all.csv"
    all_decided.write_text("id,decision,labels\nfield000,edit,16\nfield002,reject,\n")
    result = clean(run, decisions=all_decided)
    assert set(result.changes["made_by"]) == {"person"}
