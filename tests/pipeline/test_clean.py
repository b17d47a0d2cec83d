"""Cleaning policies, decisions, the cleaned dataset and changes.csv on hand-made runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from la_runfixture import make_run
from la_testutils import snapshot, write_image

from labelaudit.core.errors import DatasetError, RunDirError, SettingsError
from labelaudit.core.io import read_json, update_run_json, write_csv
from labelaudit.data.check import check_dataset
from labelaudit.data.classes import HPA2021_CLASSES
from labelaudit.data.layouts import load_dataset
from labelaudit.pipeline.clean import CHANGES_COLUMNS, POLICIES, clean, read_changes

N = 10  # fields of the hpa_run fixture (tests/conftest.py)


def _labels(n: int) -> list[str]:
    # make_hpa's default: field i has class i % 19, plus 3 on every fourth field.
    return [str(i % 19) + ("|3" if i % 4 == 0 and i % 19 != 3 else "") for i in range(n)]


EXPECTED = {
    "relabel": {
        "field001": ("relabel", "2"),
        "field003": ("remove", ""),
        "field004": ("remove", ""),
        "field005": ("relabel", "5|6"),
    },
    "consensus-drop": {
        "field001": ("remove", ""),
        "field003": ("remove", ""),
        "field004": ("remove", ""),
    },
    "intensity": {
        "field003": ("remove", ""),
        "field004": ("remove", ""),
        "field006": ("remove", ""),
    },
    "soft": {},  # per-label loss weights only (label_weights.csv): no image changes
    # relabel's trusted changes, no removal (the rest is down-weighted instead)
    "relabel-soft": {"field001": ("relabel", "2"), "field005": ("relabel", "5|6")},
    "relabel-only": {"field001": ("relabel", "2"), "field005": ("relabel", "5|6")},
    "drop-labels": {},
    "none": {},
}


@pytest.mark.parametrize("policy", POLICIES)
def test_policy(hpa_run, policy):
    dataset, run = hpa_run
    before = snapshot(dataset)
    listing = sorted(p.name for p in dataset.iterdir())
    result = clean(run, policy=policy)
    assert "array(" not in repr(result) and policy in repr(result)  # a notebook's one line
    # changes.csv: exactly the expected removals and relabels, with complete rows.
    changes = read_changes(run)
    assert list(changes.columns) == CHANGES_COLUMNS
    got = {r.id: (r.action, r.new_labels) for r in changes.itertuples()}
    assert got == EXPECTED[policy]
    given = dict(zip(*pd.read_csv(run / "dataset.csv", dtype=str).T.values, strict=True))
    for r in changes.itertuples():
        assert r.old_labels == given[r.id]
        assert r.reason, f"{r.id} has no reason"
        assert (r.new_labels == "") == (r.action == "remove")
    assert result.n_removed + result.n_relabelled == len(changes)
    # The cleaned dataset: same layout, kept images, new labels, original pixels.
    cleaned = run / "cleaned"
    assert (cleaned / "train").is_symlink()
    assert (cleaned / "train").resolve() == (dataset / "train").resolve()
    ds = load_dataset(cleaned)
    assert ds.layout == "hpa2021"
    expected_ids = [f"field{i:03d}" for i in range(N)]
    removed = {i for i, (a, _) in EXPECTED[policy].items() if a == "remove"}
    assert ds.ids == [i for i in expected_ids if i not in removed]
    labels = dict(zip(ds.ids, (ds.format_labels(r) for r in ds.labels), strict=True))
    for image_id in ds.ids:
        action = EXPECTED[policy].get(image_id)
        want = action[1] if action else given[image_id]
        assert labels[image_id] == want
    report = check_dataset(cleaned)
    assert report.ok, report.errors
    assert (cleaned / "train.csv").read_text().splitlines()[0] == "ID,Label"
    assert not any(p.name.startswith(".cleaned") for p in run.iterdir())
    section = read_json(run / "run.json")["clean"]
    assert section["policy"] == policy
    assert section["n_kept"] == len(ds)
    # The input is untouched, and cleaning again (replacing cleaned/) keeps it so.
    clean(run, policy=policy)
    assert snapshot(dataset) == before
    assert sorted(p.name for p in dataset.iterdir()) == listing


def test_relabel_confidence(hpa_run):
    _, run = hpa_run
    result = clean(run, policy="relabel", confidence=0.55)
    changes = result.changes.set_index("id")
    assert changes.loc["field002", "new_labels"] == "2|5"  # p=0.6 is now confident enough
    with pytest.raises(SettingsError, match="confidence"):
        clean(run, policy="relabel", confidence=0.3)


def test_relabel_trusts_only_learned_classes(hpa_run):
    _, run = hpa_run
    got = {
        r.id: r.new_labels
        for r in clean(run, policy="relabel", min_class_ap=0.0).changes.itertuples()
    }
    # every class trusted; per label: +9 only, the given 3 and 8 stay
    assert got["field008"] == "3|8|9"
    section = read_json(run / "run.json")["clean"]["params"]
    assert section["class_ap"]["Actin filaments"] == pytest.approx(0.1)  # class 9
    # Without out-of-fold probabilities no class counts as learned: nothing relabelled.
    (run / "oof_probs.csv").unlink()
    changes = clean(run, policy="relabel").changes
    assert set(changes["action"]) == {"remove"}
    assert set(changes["id"]) == {"field001", "field003", "field004"}


def test_unknown_policy(hpa_run):
    _, run = hpa_run
    with pytest.raises(SettingsError, match="unknown cleaning policy"):
        clean(run, policy="drop-everything")


def test_decisions_override(hpa_run, tmp_path):
    _, run = hpa_run
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(
        "id,decision,labels\n"
        "field001,keep,1\n"  # the policy relabels it; the reviewer keeps the given label
        "field002,accept,2|5\n"  # the policy leaves it; the reviewer accepts the suggestion
        "field004,keep,4|3\n"  # the policy removes it; the reviewer keeps it
        "field008,reject,\n"  # the reviewer leaves it out
        "field009,edit,0|9\n"  # a reviewer's own label set
    )
    result = clean(run, policy="relabel", decisions=decisions)
    got = {r.id: (r.action, r.new_labels, r.reason, r.made_by) for r in result.changes.itertuples()}
    assert "field001" not in got and "field004" not in got
    assert got["field002"] == ("relabel", "2|5", "decision: accept", "person")
    assert got["field008"] == ("remove", "", "decision: reject", "person")
    assert got["field009"] == ("relabel", "0|9", "decision: edit", "person")
    # not named: the policy asked for decides, and changes.csv says so
    assert got["field003"][:2] == ("remove", "") and got["field003"][3] == "policy"
    assert got["field005"] == ("relabel", "5|6", "confident learning", "policy")
    assert result.n_decisions == 5
    ds = load_dataset(run / "cleaned")
    assert "field004" in ds.ids and "field008" not in ds.ids
    section = read_json(run / "run.json")["clean"]
    assert (section["policy"], section["n_by_person"], section["n_by_policy"]) == ("relabel", 3, 2)
    # Without a labels column: accept applies the suggestion, keep the given labels.
    decisions.write_text("id,decision\nfield002,accept\nfield001,keep\n")
    got = {r.id: r.new_labels for r in clean(run, decisions=decisions).changes.itertuples()}
    assert got == {"field002": "2|5"}


def test_decisions_alone_change_only_what_they_name(hpa_run, tmp_path):
    # Without --policy a decisions file changes its own rows and nothing else, whatever
    # it decides; with a policy asked for, the policy decides the others.
    dataset, run = hpa_run
    given = dict(zip(*pd.read_csv(run / "dataset.csv", dtype=str).T.values, strict=True))
    suggested = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False)
    suggested = dict(zip(suggested["id"], suggested["suggested_labels"], strict=True))
    rng = np.random.default_rng(0)
    path = tmp_path / "decisions.csv"
    for trial in range(6):
        named = rng.choice(N, size=int(rng.integers(1, 5)), replace=False)
        lines, expect = ["id,decision,labels"], {}
        for i in named:
            image_id = f"field{i:03d}"
            options = ["keep", "edit", "reject"] + (
                ["accept"] if suggested[image_id] != given[image_id] else []
            )
            what = options[int(rng.integers(len(options)))]
            stated = trial % 2 == 0  # keep and accept may leave the labels cell empty
            labels = {
                "keep": given[image_id] if stated else "",
                "accept": suggested[image_id] if stated else "",
                "edit": "|".join(sorted({str(t) for t in rng.choice(18, 2, replace=False)})),
                "reject": "",
            }[what]
            lines.append(f"{image_id},{what},{labels}")
            implied = {"keep": given[image_id], "accept": suggested[image_id]}
            expect[image_id] = None if what == "reject" else labels or implied.get(what, "")
        path.write_text("\n".join(lines) + "\n")
        result = clean(run, decisions=path)
        assert result.policy == "none"
        ds = load_dataset(run / "cleaned")
        cleaned = dict(zip(ds.ids, (ds.format_labels(r) for r in ds.labels), strict=True))
        for image_id, old in given.items():
            want = expect.get(image_id, old)
            if want is None:
                assert image_id not in cleaned, (trial, image_id)
            else:
                assert set(cleaned[image_id].split("|")) - {""} == set(want.split("|")) - {""}
        assert set(result.changes["id"]) <= set(expect), trial
        assert set(result.changes["made_by"]) <= {"person"}
        assert not (run / "label_weights.csv").exists()  # no policy, no weights
    # A policy asked for as well changes unnamed rows, marked as the policy's.
    path.write_text("id,decision,labels\nfield002,keep,2\n")
    result = clean(run, decisions=path, policy="relabel-soft")
    by = dict(zip(result.changes["id"], result.changes["made_by"], strict=True))
    assert by == {"field001": "policy", "field005": "policy"}
    weights = pd.read_csv(run / "label_weights.csv").set_index("id")
    assert (weights.loc["field002"] == 1).all()  # a person's labels get full weight


def test_exclusive_classes_are_checked(hpa_run, tmp_path):
    # HPA 2021 declares Negative (18) exclusive: an edit combining it is refused.
    _, run = hpa_run
    path = tmp_path / "decisions.csv"
    path.write_text("id,decision,labels\nfield001,edit,18\nfield002,edit,2|18\n")
    with pytest.raises(DatasetError, match="Negative is never combined") as err:
        clean(run, decisions=path)
    assert err.value.row == 3 and not (run / "cleaned").exists()
    path.write_text("id,decision,labels\nfield001,edit,18\n")
    assert clean(run, decisions=path).changes["new_labels"].tolist() == ["18"]


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("id,decision,labels\nfield001,accept,2\nnope,accept,1\n", 3, "unknown image id"),
        ("id,decision,labels\nfield001,edit,99\n", 2, "unknown label '99'"),
        ("id,decision,labels\nfield001,maybe,1\n", 2, "keep, accept, edit or reject"),
        ("id,decision\nfield001,accept\nfield001,reject\n", 3, "decided twice"),
        ("image,verdict\nfield001,accept\n", 1, "expected columns id,decision"),
        # accept only where the run suggests a change, and only that change
        ("id,decision,labels\nfield009,accept,9\n", 2, "suggests no change"),
        ("id,decision,labels\nfield001,accept,0|9\n", 2, "write edit"),
        ("id,decision,labels\nfield001,keep,2\n", 2, "given labels \\(1\\) are right"),
        # an older export's reject carried the given labels: refused, never removed
        ("id,decision,labels\nfield001,reject,1\n", 2, "labels column must be empty"),
        ("id,decision\nfield001,edit\n", 2, "edit needs the labels"),
    ],
)
def test_bad_decisions(hpa_run, tmp_path, text, line, message):
    dataset, run = hpa_run
    path = tmp_path / "decisions.csv"
    path.write_text(text)
    clean(run)  # a previous cleaning is left as it was by a failed one
    before = snapshot(run / "cleaned")
    changes = (run / "changes.csv").read_bytes()
    with pytest.raises(DatasetError, match=message) as err:
        clean(run, decisions=path)
    assert err.value.path == path and err.value.row == line
    assert f"{path}, line {line}" in str(err.value)
    assert snapshot(run / "cleaned") == before
    assert (run / "changes.csv").read_bytes() == changes


def test_missing_decisions_file(hpa_run, tmp_path):
    _, run = hpa_run
    with pytest.raises(DatasetError, match="not found"):
        clean(run, decisions=tmp_path / "none.csv")


def test_everything_removed_is_an_error(hpa_run, tmp_path):
    _, run = hpa_run
    path = tmp_path / "decisions.csv"
    path.write_text("id,decision,labels\n" + "".join(f"field{i:03d},reject,\n" for i in range(N)))
    with pytest.raises(SettingsError, match="remove all"):
        clean(run, decisions=path)


def test_missing_issues(hpa_run):
    _, run = hpa_run
    (run / "issues.csv").unlink()
    with pytest.raises(RunDirError, match="issues.csv"):
        clean(run)


def test_changed_dataset_is_refused(hpa_run):
    dataset, run = hpa_run
    text = (dataset / "train.csv").read_text().replace("field001,1", "field001,2")
    (dataset / "train.csv").write_text(text)
    with pytest.raises(RunDirError, match="changed since the scan"):
        clean(run)


def test_hpa2018_layout(tmp_path, make_hpa):
    # Space-separated labels in an Id,Target file stay in that notation.
    root = make_hpa(n=N, size=16, name="hpa18")
    labels = [x.replace("|", " ") for x in _labels(N)]
    (root / "train.csv").write_text(
        "Id,Target\n" + "".join(f"field{i:03d},{lab}\n" for i, lab in enumerate(labels))
    )
    run = make_run(tmp_path, root, layout="hpa2018")
    result = clean(run, policy="relabel")
    assert result.changes.set_index("id").loc["field005", "new_labels"] == "5 6"
    text = (run / "cleaned" / "train.csv").read_text().splitlines()
    assert text[0] == "Id,Target"
    assert "field005,5 6" in text
    ds = load_dataset(run / "cleaned")
    assert ds.layout == "hpa2018"
    assert check_dataset(run / "cleaned").ok


def test_generic_layout(tmp_path):
    # Images in sub-folders and at the top level, class names, classes.txt, extra column.
    root = tmp_path / "generic"
    rng = np.random.default_rng(0)
    names = list(HPA2021_CLASSES[:10])
    rows = []
    for i in range(N):
        rel = f"imgs/a/field{i:03d}.png" if i % 2 else f"field{i:03d}.png"
        write_image(root / rel, rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        labs = _labels(N)[i].split("|")
        rows.append(f"{rel},{'|'.join(names[int(t)] for t in labs)},batch{i % 3}")
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    (root / "labels.csv").write_text("image,labels,batch\n" + "\n".join(rows) + "\n")
    before = snapshot(root)
    ds = load_dataset(root)
    run = tmp_path / "grun"
    run.mkdir()
    update_run_json(
        run,
        "dataset",
        {
            "path": str(root),
            "layout": "generic",
            "class_names": ds.class_names,
            "class_tokens": ds.class_tokens,
            "label_sep": "|",
            "channels": list(ds.channels),
        },
    )
    given = [ds.format_labels(r) for r in ds.labels]
    write_csv(run / "dataset.csv", pd.DataFrame({"id": ds.ids, "labels": given}))
    issues = pd.DataFrame(
        {
            "id": ds.ids,
            "given_labels": given,
            "suggested_labels": given,
            "flagged_by": [""] * N,
            "consensus_flag": [False] * N,
        }
    )
    issues.loc[1, ["flagged_by", "consensus_flag"]] = ["confident;isolation", True]
    issues.loc[2, ["flagged_by", "suggested_labels"]] = ["confident", f"{names[2]}|{names[5]}"]
    write_csv(run / "issues.csv", issues)
    write_csv(
        run / "findings.csv",
        pd.DataFrame(
            [
                (ds.ids[2], names[5], "confident", 0.9, True, "add", 0.93),
                (ds.ids[2], names[5], "knn", 0.8, True, "add", 0.8),  # neighbours agree
            ],
            columns=["id", "class", "detector", "score", "flagged", "suggestion", "value"],
        ),
    )
    oof = pd.DataFrame(np.where(ds.labels, 0.9, 0.05), columns=ds.class_names)
    oof.insert(0, "id", ds.ids)
    write_csv(run / "oof_probs.csv", oof)
    result = clean(run, policy="relabel")
    assert {r.id: r.action for r in result.changes.itertuples()} == {
        ds.ids[1]: "remove",
        ds.ids[2]: "relabel",
    }
    cleaned = run / "cleaned"
    assert (cleaned / "classes.txt").read_text() == (root / "classes.txt").read_text()
    lines = (cleaned / "labels.csv").read_text().splitlines()
    assert lines[0] == "image,labels,batch"
    assert f"field002.png,{names[2]}|{names[5]},batch2" in lines
    out = load_dataset(cleaned)
    assert out.ids == [i for i in ds.ids if i != ds.ids[1]]
    for src in out.sources:
        assert src.paths[0].resolve().is_relative_to(root.resolve())
    assert check_dataset(cleaned).ok
    assert snapshot(root) == before


def test_cli_decisions(hpa_run, tmp_path, run_cli):
    # A bad decisions file: one line naming the file and row, exit 2, nothing written.
    _, run = hpa_run
    path = tmp_path / "decisions.csv"
    path.write_text("id,decision,labels\nfield002,edit,2\nfield003,edit,2|nope\n")
    code, _, err = run_cli("clean", run, "--decisions", path)
    assert code == 2 and "Traceback" not in err
    assert f"{path}, line 3" in " ".join(err.split()) and "unknown label 'nope'" in err
    assert not (run / "cleaned").exists() and not (run / "changes.csv").exists()
    # A good one: only its rows change (no --policy), and the output says so.
    path.write_text("id,decision,labels\nfield002,edit,2|4\n")
    code, out, err = run_cli("clean", run, "--decisions", path)
    assert code == 0, err
    assert "none + decisions" in out and "1 relabelled" in out
    changes = read_changes(run)
    assert changes[["id", "new_labels", "made_by"]].values.tolist() == [
        ["field002", "2|4", "person"]
    ]
