"""RunDir: round-trips of the run files, one validation, scan's in-memory inputs."""

import os

import numpy as np
import pandas as pd
import pytest

from labelaudit.core.errors import RunDirError
from labelaudit.core.io import RUN_FORMAT, write_json
from labelaudit.rundir import RunDir


def _run(tmp_path, info=None):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    write_json(run.file("run.json"), {"format": dict(RUN_FORMAT)})
    if info is not None:
        run.write_section("dataset", info)
    return run


INFO = {
    "class_names": ["a", "b", "c"],
    "class_tokens": ["0", "1", "2"],
    "label_sep": " ",
    "protein_channel": "green",
}


def test_missing_dataset_section_is_one_message(tmp_path):
    from labelaudit.pipeline.clean import read_run_view

    run = _run(tmp_path)
    expected = f"{run.path}/run.json has no dataset section; re-run the scan"
    for read in (run.dataset_info, run.audit_inputs, lambda: read_run_view(run.path)):
        with pytest.raises(RunDirError) as exc:
            read()
        assert str(exc.value) == expected


def test_changed_dataset_is_one_message(tmp_path, make_hpa):
    from labelaudit.data.layouts import load_dataset

    root = make_hpa(n=6)
    ds = load_dataset(root)
    run = _run(tmp_path)
    info = {"path": str(root), "layout": ds.layout}
    with pytest.raises(RunDirError, match=r"no longer has 1 scanned image\(s\) \(e.g. 'gone'\)"):
        run.load_scanned_dataset(info, [*ds.ids, "gone"])
    _, rows = run.load_scanned_dataset(info, ds.ids[::-1])
    assert rows.tolist() == list(range(len(ds)))[::-1]


def test_round_trips(tmp_path):
    run = _run(tmp_path, INFO)
    ids = ["x", "y"]
    labels = np.array([[True, False, True], [False, True, False]])
    run.write_table("dataset.csv", pd.DataFrame({"id": ids, "labels": ["0 2", "1"]}))
    got_ids, got = run.read_given(INFO)
    assert got_ids == ids and np.array_equal(got, labels)

    probs = np.random.default_rng(0).random((2, 3)).astype(np.float32)
    emb = np.arange(8, dtype=np.float32).reshape(2, 4)
    run.write_oof(ids, INFO["class_names"], probs, emb)
    assert np.array_equal(run.read_probs(INFO["class_names"], ids), probs.astype(np.float64))
    assert np.array_equal(run.read_embeddings(2), emb)
    with pytest.raises(RunDirError, match="embeddings.npy: 2 rows, expected 3"):
        run.read_embeddings(3)
    with pytest.raises(RunDirError, match="ids do not match"):
        run.read_probs(INFO["class_names"], ids[::-1])
    flipped = run.read_probs(INFO["class_names"], ids[::-1], aligned=False)
    assert np.array_equal(flipped, probs[::-1].astype(np.float64))

    stats = pd.DataFrame({"id": ids, "green_mean": [0.5, 1.25]})
    run.write_table("image_stats.csv", stats)
    pd.testing.assert_frame_equal(run.read_stats(), stats)

    inputs = run.audit_inputs()
    assert inputs.ids == ids and np.array_equal(inputs.labels, labels)

    for name in ("findings.csv", "issues.csv", "cells.csv", "changes.csv"):
        frame = pd.DataFrame({"id": ids, "v": ["", "1"]})
        run.write_table(name, frame)
        pd.testing.assert_frame_equal(run.read_table(name), frame)
    run.write_json_file("retrain/metrics.json", {"after": {"f1": 0.5}})
    assert run.read_json_file("retrain/metrics.json") == {"after": {"f1": 0.5}}


@pytest.mark.parametrize(
    ("cell", "says"),
    [
        ("oops", "line 3: 'b' is 'oops', not a probability"),
        ("nan", "line 3: 'b' is"),
        ("1.5", "line 3: 'b' is '1.5', not a probability"),
        ("-0.1", "line 3: 'b' is"),
        ("inf", "line 3: 'b' is"),
    ],
)
def test_forged_probabilities_are_one_message(tmp_path, cell, says):
    """oof_probs.csv is read back: a forged value names the file and line, for every reader."""
    run = _run(tmp_path, INFO)
    run.file("oof_probs.csv").write_text(f"id,a,b,c\nx,0.1,0.2,0.3\ny,0.4,{cell},0.6\n")
    for aligned, ids in ((True, ["x", "y"]), (False, ["y", "x"])):
        with pytest.raises(RunDirError, match=says.replace("(", r"\(")) as err:
            run.read_probs(INFO["class_names"], ids, aligned=aligned)
        assert "oof_probs.csv" in str(err.value)
    run.file("oof_probs.csv").write_text("id,a,c\nx,0.1,0.3\ny,0.4,0.6\n")
    with pytest.raises(RunDirError, match="no column 'b'"):
        run.read_probs(INFO["class_names"], ["x", "y"])


def test_cells_are_read_back_and_forged_cell_files_are_one_message(tmp_path):
    """The cell level's files feed the label evidence when read back: each forgery
    names its file; a run without a cell level has no cells."""
    run = _run(tmp_path, INFO)
    ids = ["x", "y"]
    assert run.read_cells(INFO["class_names"], ids) is None
    cells = "cell_id,id,cell\nx_1,x,1\nx_2,x,2\ny_1,y,1\n"
    probs = "id,a,b,c\nx_1,0.1,0.2,0.3\nx_2,0.4,0.5,0.6\ny_1,0.7,0.8,0.9\n"
    run.file("cells.csv").write_text(cells)
    with pytest.raises(RunDirError, match="cells/oof_probs.csv: not found"):
        run.read_cells(INFO["class_names"], ids)
    run.file("cells").mkdir()
    run.file("cells/oof_probs.csv").write_text(probs)
    got = run.read_cells(INFO["class_names"], ids)
    assert got.table["id"].tolist() == ["x", "x", "y"]
    np.testing.assert_allclose(got.probs[2], [0.7, 0.8, 0.9])
    forgeries = [
        ("cells.csv", cells.replace("y_1,y", "y_1,z"), "cells of images not in dataset.csv"),
        ("cells.csv", cells.replace("cell_id,id", "cell,field"), "no 'cell_id' and 'id'"),
        ("cells.csv", "", "not a readable CSV"),
        ("cells/oof_probs.csv", probs.replace("0.8", "8"), "line 4: 'b' is '8.0', not a"),
        ("cells/oof_probs.csv", probs.replace("x_2,", "x_3,"), "cell ids do not match"),
        ("cells/oof_probs.csv", probs.replace(",b,", ",B,"), "no column 'b'"),
    ]
    for name, text, says in forgeries:
        original = run.file(name).read_text()
        run.file(name).write_text(text)
        with pytest.raises(RunDirError, match=says) as err:
            run.read_cells(INFO["class_names"], ids)
        assert name in str(err.value)
        run.file(name).write_text(original)


def test_add_issue_columns_keeps_rows_and_replaces(tmp_path):
    run = _run(tmp_path, INFO)
    run.write_table("issues.csv", pd.DataFrame({"id": ["b", "a"], "score": ["2", "1"]}))
    extra = pd.DataFrame({"n_cells": [3, 4]}, index=pd.Index(["a", "b"], name="id"))
    run.add_issue_columns(extra, ["n_cells"])
    run.add_issue_columns(extra * 10, ["n_cells"])  # replaced, not duplicated
    out = run.read_table("issues.csv")
    assert out.columns.tolist() == ["id", "score", "n_cells"]
    assert out["n_cells"].tolist() == ["40", "30"]


def test_missing_table_names_the_file_and_stage(tmp_path):
    run = _run(tmp_path, INFO)
    with pytest.raises(RunDirError, match=r"issues.csv: not found; run `labelaudit scan`"):
        run.read_table("issues.csv")


@pytest.mark.slow
def test_scan_hands_the_same_inputs_it_writes(tmp_path, make_hpa, monkeypatch):
    import labelaudit.pipeline.compare as compare
    from labelaudit.pipeline.scan import scan

    seen = []
    real = compare.detect_and_compare

    def spy(inputs, run_dir, **kwargs):
        seen.append(inputs)
        return real(inputs, run_dir, **kwargs)

    monkeypatch.setattr(compare, "detect_and_compare", spy)
    out = tmp_path / "run"
    scan(
        make_hpa(n=16),
        out,
        preset="demo",
        epochs=1,
        folds=2,
        image_size=32,
        report=False,
    )
    (given,) = seen
    back = RunDir(out).audit_inputs()
    assert given.ids == back.ids
    assert np.array_equal(given.labels, back.labels)
    assert given.probs.dtype == back.probs.dtype and np.array_equal(given.probs, back.probs)
    assert given.embeddings.dtype == back.embeddings.dtype
    assert np.array_equal(given.embeddings, back.embeddings)
    pd.testing.assert_frame_equal(given.stats, back.stats)


def test_run_file_names_are_the_contract_the_stages_write(tmp_path):
    """The names the stages use come from the contract, and ``--force`` replaces them."""
    from labelaudit import rundir
    from labelaudit.train.cv import fold_dir

    assert rundir.RUN_OUTPUTS == (
        "run.json",
        "dataset.csv",
        "image_stats.csv",
        "oof_probs.csv",
        "embeddings.npy",
        "findings.csv",
        "issues.csv",
        "report.html",
        "changes.csv",
        "cells.csv",
        "bench.json",
        "bench.txt",
        "duplicates.csv",
        "leaks.csv",
        "label_weights.csv",
        "cleaned",
        "folds",
        "cells",
        "retrain",
    )
    assert rundir.fold_dir_name(0) == "folds/fold_1"
    assert fold_dir(tmp_path, 2) == tmp_path / "folds" / "fold_3"
    assert (rundir.RETRAIN_METRICS, rundir.RETRAIN_TABLE, rundir.RETRAIN_SPLIT) == (
        "retrain/metrics.json",
        "retrain/table.csv",
        "retrain/split.csv",
    )
    assert rundir.CELL_OVERLAYS_DIR == "cells/overlays"
    assert rundir.FOLDS_CSV == "folds/folds.csv" and rundir.PROBE_DIR == "folds/probe"
    # Every top-level entry a stage writes is one ``--force`` may replace.
    for name in (rundir.CLEANED_DIR, rundir.FOLDS_DIR, rundir.RETRAIN_DIR, rundir.CELLS_DIR):
        assert name in rundir.RUN_OUTPUTS


def test_fold_files_reads_what_cross_validation_saves(tmp_path):
    """``RunDir.fold_files`` finds the files ``save_fold`` writes, under the contract names."""
    from labelaudit.train.cv import fold_dir, save_fold
    from labelaudit.train.loop import FoldOutput

    out = FoldOutput(
        train_idx=np.array([0, 1]),
        held_idx=np.array([2]),
        probs=np.array([[0.25, 0.75]]),
        embeddings=np.zeros((1, 3), dtype=np.float32),
        best_epoch=0,
        best_loss=0.5,
        history=[],
        state_dict={},
        seconds=0.1,
    )
    save_fold(fold_dir(tmp_path, 1), "key-1", 1, out, {"epochs": 1}, {"backbone": "x"})
    state, arrays = RunDir(tmp_path).fold_files(1)
    assert state is not None and state["key"] == "key-1" and state["fold"] == 2
    assert arrays is not None and np.array_equal(arrays["probs"], out.probs)
    assert RunDir(tmp_path).fold_files(0) == (None, None)


def test_forged_tables_embeddings_and_sections_are_one_message(tmp_path):
    """What labelaudit reads back may be forged: each reader names the file."""
    run = _run(tmp_path, INFO)
    run.file("dataset.csv").write_text("")
    with pytest.raises(RunDirError, match="dataset.csv: not a readable CSV"):
        run.read_given(INFO)
    run.file("dataset.csv").write_text("id,tags\nx,0\n")
    with pytest.raises(RunDirError, match="dataset.csv has no column 'labels'"):
        run.read_given(INFO)
    for bad, says in (
        (np.zeros((2, 0), np.float32), "expected N x D"),
        (np.zeros(2, np.float32), "expected N x D"),
        (np.full((2, 3), 3e38, np.float32), "not finite or beyond"),
        (np.array([[0.0, np.inf]], np.float32), "not finite or beyond"),
        (np.array([["a", "b"]]), "<U1 values, expected real numbers"),
        (np.array([[1 + 2j]]), "complex128 values, expected real numbers"),
    ):
        np.save(run.file("embeddings.npy"), bad)
        with pytest.raises(RunDirError, match=says):
            run.read_embeddings()
    np.save(run.file("embeddings.npy"), np.ones((2, 3), np.float32))
    assert run.read_embeddings(2).shape == (2, 3)
    # a folder, a FIFO or a device link in a read-back file's place is named, not absent
    run.file("oof_probs.csv").mkdir()
    os.mkfifo(run.file("cells.csv"))
    run.file("embeddings.npy").unlink()
    run.file("embeddings.npy").symlink_to("/dev/zero")
    for read, name in (
        (run.read_oof_table, "oof_probs.csv"),
        (lambda: run.read_cells(["a"], ["x"]), "cells.csv"),
        (run.read_embeddings, "embeddings.npy"),
    ):
        with pytest.raises(RunDirError, match=f"{name}: not a regular file"):
            read()
    for name in ("oof_probs.csv", "cells.csv", "embeddings.npy"):
        path = run.file(name)
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    for section in ({"layout": 1}, {"class_names": []}, {"class_names": "abc"}):
        run.write_section("dataset", section)
        with pytest.raises(RunDirError, match="no list of class names"):
            run.dataset_info()
    # A section without tokens or separator is read leniently (the names are enough).
    run.write_section("dataset", {"class_names": ["a", "b", "c"]})
    run.file("dataset.csv").write_text("id,labels\nx,a|c\ny,b\n")
    ids, given = run.read_given(run.dataset_info())
    assert ids == ["x", "y"] and given.tolist() == [[True, False, True], [False, True, False]]
