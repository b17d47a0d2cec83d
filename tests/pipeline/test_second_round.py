"""``scan --second-round-of RUN``: train again on the labels RUN's evidence doubts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from la_testutils import TINY_SCAN, run_ok, snapshot

from labelaudit.pipeline.second_round import FLIP_AT, corrected_labels

TINY = [*TINY_SCAN, "--quiet"]


def test_doubted_labels_flip_and_no_image_is_left_empty():
    given = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    post = np.array(
        [
            [0.9, 0.7, 0.1],  # a swap: 0 -> 1
            [0.2, 0.6, 0.5],  # an extra label removed, a missing one (at the threshold) added
            [0.8, 0.1, 0.95],  # 2 -> 0
        ]
    )
    new = corrected_labels(given, post, 0.5)
    assert new.tolist() == [[0, 1, 0], [1, 0, 1], [1, 0, 0]]
    # Flipping the only label away with nothing added keeps the given labels.
    assert corrected_labels(given[:1], np.array([[0.9, 0.1, 0.1]]), 0.5).tolist() == [[1, 0, 0]]
    same = corrected_labels(given, post, 0.99)
    assert (same == given).all() and same is not given


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A tiny dataset with label noise and its (first-round) scan."""
    root = tmp_path_factory.mktemp("second")
    data, run = root / "data", root / "run"
    run_ok(
        ["synth", data, "--n", "40", "--size", "32", "--seed", "5", "--noise-rate", "0.3"],
        ["scan", data, "--out", run, *TINY],
    )
    return data, run


def _expected_training_labels(run) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Ids, tokens, given labels and the corrected labels, computed here independently."""
    from labelaudit.detect.combined import CombinedEvidence
    from labelaudit.rundir import RunDir

    inputs = RunDir(run).audit_inputs()
    posterior, _ = CombinedEvidence().posteriors(inputs)
    corrected = corrected_labels(inputs.labels, posterior, FLIP_AT)
    return list(inputs.ids), list(inputs.class_tokens), inputs.labels, corrected


@pytest.mark.slow
def test_the_models_train_on_the_corrected_labels_and_judge_the_given(first, tmp_path):
    data, run = first
    before = snapshot(run)
    ids, tokens, given, corrected = _expected_training_labels(run)
    assert (corrected != given).any()  # the evidence doubts some labels of this set
    second = tmp_path / "second"
    run_ok(["scan", data, "--out", second, "--second-round-of", run, *TINY])
    record = json.loads((second / "run.json").read_text())["second_round"]
    assert record["flipped_labels"] == int((corrected != given).sum())
    assert record["of"] == str(run) and record["flip_at"] == FLIP_AT
    # The same training as a scan of a label file holding the corrected labels.
    labels = tmp_path / "corrected" / "train.csv"
    labels.parent.mkdir()
    table = pd.DataFrame(
        {"ID": ids, "Label": ["|".join(np.asarray(tokens)[row]) for row in corrected]}
    )
    table.to_csv(labels, index=False)
    plain = tmp_path / "plain"
    run_ok(["scan", "--labels", labels, "--images", data / "train", "--out", plain, *TINY])
    pd.testing.assert_frame_equal(
        pd.read_csv(second / "oof_probs.csv"), pd.read_csv(plain / "oof_probs.csv")
    )
    # The detectors judged the given labels, not the corrected ones.
    pd.testing.assert_frame_equal(
        pd.read_csv(second / "dataset.csv", dtype=str), pd.read_csv(run / "dataset.csv", dtype=str)
    )
    judged = pd.read_csv(second / "issues.csv", dtype=str, keep_default_na=False)
    judged = judged.set_index("id")["given_labels"].sort_index()
    given_text = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False)
    assert judged.equals(given_text.set_index("id")["given_labels"].sort_index())
    assert snapshot(run) == before  # the first run is only read
    page = (second / "report.html").read_text()
    assert 'id="second-round"' in page and f"{record['flipped_labels']} label(s) flipped" in page
    assert 'id="second-round"' not in (run / "report.html").read_text()
    # Predictions handed over as arrays into that directory were not trained here.
    import labelaudit

    arrays = tmp_path / "arrays"
    shutil.copytree(second, arrays)
    probs = pd.read_csv(second / "oof_probs.csv", dtype={"id": str}).set_index("id")
    labelaudit.find_issues(given, probs.loc[ids].to_numpy(), ids=ids, out=arrays)
    assert "second_round" not in json.loads((arrays / "run.json").read_text())
    # A second round into a copy of the plain run retrains (no plain fold is reused).
    over_plain = tmp_path / "over-plain"
    shutil.copytree(run, over_plain)
    run_ok(["scan", data, "--out", over_plain, "--second-round-of", run, *TINY])
    pd.testing.assert_frame_equal(
        pd.read_csv(over_plain / "oof_probs.csv"), pd.read_csv(plain / "oof_probs.csv")
    )
    # A plain scan into the same directory trains afresh and forgets the second round.
    run_ok(["scan", data, "--out", second, *TINY])
    again = json.loads((second / "run.json").read_text())
    assert "second_round" not in again
    pd.testing.assert_frame_equal(
        pd.read_csv(second / "oof_probs.csv"), pd.read_csv(run / "oof_probs.csv")
    )


@pytest.mark.slow
def test_a_first_round_that_does_not_fit_is_refused(first, tmp_path, run_cli):
    data, run = first
    before = snapshot(run), snapshot(data)

    def refused(*args, says: str) -> None:
        code, out, err = run_cli("scan", *args, *TINY)
        assert code == 2 and "Traceback" not in out + err, (args, out, err)
        assert says in err, err
        assert len(err.strip().splitlines()) == 1, err

    out = tmp_path / "out"
    refused(data, "--out", out, "--second-round-of", data, says="not a labelaudit run directory")
    refused(data, "--out", out, "--second-round-of", tmp_path / "nowhere", says="nowhere")
    refused(data, "--out", run / "inside", "--second-round-of", run, says="inside")
    refused(data, "--out", run, "--second-round-of", run, says=str(run))
    refused(
        data, "--out", out, "--second-round-of", run, "--probs", run / "oof_probs.csv",
        says="--probs skips training",
    )  # fmt: skip
    refused(data, "--out", out, "--second-round-of", run, "--fold", "1", says="--fold")
    refused(data, "--out", out, "--second-round-of", run, "--level", "cell", says="field level")
    # Another dataset (other images), and this dataset with its labels edited since.
    other = tmp_path / "other"
    run_ok(["synth", other, "--n", "40", "--size", "32", "--seed", "6"])
    refused(other, "--out", out, "--second-round-of", run, says="images are not the dataset's")
    edited = tmp_path / "edited"
    shutil.copytree(data, edited)
    table = pd.read_csv(edited / "train.csv", dtype=str, keep_default_na=False)
    table.loc[0, "Label"] = "0" if table.loc[0, "Label"] != "0" else "1"
    table.to_csv(edited / "train.csv", index=False)
    refused(edited, "--out", out, "--second-round-of", run, says="labels changed")
    assert not out.exists()
    assert (snapshot(run), snapshot(data)) == before


def _forge_probs_cell(run) -> None:
    lines = (run / "oof_probs.csv").read_text().splitlines()
    cells = lines[1].split(",")
    lines[1] = ",".join([cells[0], "not-a-number", *cells[2:]])
    (run / "oof_probs.csv").write_text("\n".join(lines) + "\n")


def _forge_dataset_columns(run) -> None:
    table = pd.read_csv(run / "dataset.csv", dtype=str, keep_default_na=False)
    table.rename(columns={"labels": "tags"}).to_csv(run / "dataset.csv", index=False)


FORGERIES = {
    "oof_probs.csv": _forge_probs_cell,
    "empty oof_probs.csv": lambda run: (run / "oof_probs.csv").write_text(""),
    "dataset.csv": _forge_dataset_columns,
    "embeddings.npy": lambda run: np.save(run / "embeddings.npy", np.zeros((40, 0), np.float32)),
    "huge embeddings.npy": lambda run: np.save(
        run / "embeddings.npy", np.full((40, 8), 3e38, np.float32)
    ),
    "run.json": lambda run: (run / "run.json").write_text(
        json.dumps({**json.loads((run / "run.json").read_text()), "dataset": {"layout": 1}})
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("what", sorted(FORGERIES))
def test_a_forged_first_round_is_one_message(first, tmp_path, run_cli, what):
    data, run = first
    forged = tmp_path / "forged"
    shutil.copytree(run, forged)
    FORGERIES[what](forged)
    code, out, err = run_cli(
        "scan", data, "--out", tmp_path / "o", "--second-round-of", forged, *TINY
    )
    assert code == 2 and "Traceback" not in out + err, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert what.split()[-1] in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_forged_second_round_record_stays_text_in_the_report(first, tmp_path):
    from labelaudit.report import write_report
    from labelaudit.rundir import RunDir

    _, run = first
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    forged = {"of": "<script>alert(1)</script>", "flipped_labels": "<b>9</b>", "flip_at": 0.5}
    RunDir(copy).edit_run(lambda data: data.__setitem__("second_round", forged))
    page = write_report(copy).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "&lt;b&gt;9&lt;/b&gt; label(s) flipped" in page
    RunDir(copy).edit_run(lambda data: data.__setitem__("second_round", ["not", "a", "record"]))
    assert 'id="second-round"' not in write_report(copy).read_text()
