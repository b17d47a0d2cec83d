"""``scan --cell-probs FILE``: a cell-level model's predictions made elsewhere."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from la_testutils import TINY_SCAN, scan_refuses_file, snapshot


def _files(data, tmp_path, seed: int = 0):
    """``--probs`` and ``--cell-probs`` files for ``data``: each model sees the truth
    with noise of its own; two or three cells per image, none for the first."""
    from labelaudit.data.layouts import load_dataset

    ds = load_dataset(data)
    rng = np.random.default_rng(seed)
    truth = ds.labels  # the given labels: good enough for files that must parse

    def model(rows):
        logits = np.where(truth[rows], 1.5, -1.5) + rng.normal(0, 1.0, (len(rows), ds.n_classes))
        return 1 / (1 + np.exp(-logits))

    probs = pd.DataFrame(model(np.arange(len(ds))), columns=ds.class_names)
    probs.insert(0, "id", ds.ids)
    owners = np.array([i for i in range(1, len(ds)) for _ in range(int(rng.integers(2, 4)))])
    cells = pd.DataFrame(model(owners), columns=ds.class_tokens)  # tokens name classes too
    cells.insert(0, "id", [ds.ids[i] for i in owners])
    cells.insert(1, "cell", [f"c{j}" for j in pd.Series(owners).groupby(owners).cumcount()])
    probs_path, cells_path = tmp_path / "probs.csv", tmp_path / "cells.csv"
    probs.to_csv(probs_path, index=False)
    cells.to_csv(cells_path, index=False)
    return probs_path, cells_path, cells


@pytest.mark.slow
def test_supplied_cells_join_the_evidence_and_read_back(tmp_path, run_cli):
    from labelaudit.cells.audit import SUPPLIED_SOURCE
    from labelaudit.cli import main
    from labelaudit.detect import get_detector
    from labelaudit.rundir import RunDir

    data, out = tmp_path / "data", tmp_path / "run"
    main(["synth", str(data), "--n", "40", "--size", "32", "--seed", "3"])
    probs, cells_file, cells = _files(data, tmp_path)
    before = snapshot(tmp_path / "data"), cells_file.read_bytes()
    args = ["scan", data, "--out", out, *TINY_SCAN, "--probs", probs, "--quiet"]
    code, _, err = run_cli(*args, "--cell-probs", cells_file)
    assert code == 0, err
    issues = pd.read_csv(out / "issues.csv", dtype={"id": str}).set_index("id")
    first = cells["id"].iloc[0]
    assert issues.loc[first, "n_cells"] >= 2
    assert (issues["n_cells"] == 0).sum() == 1  # the first image has no cells
    section = json.loads((out / "run.json").read_text())["cells"]
    assert section["source"] == SUPPLIED_SOURCE and section["n_cells"] == len(cells)
    table = pd.read_csv(out / "cells.csv", dtype=str)
    assert table["cell_id"].iloc[0] == f"{first}_c0"
    # The run reads back as it was audited: the detectors give the scan's scores again.
    inputs = RunDir(out).audit_inputs()
    assert inputs.cells is not None and len(inputs.cells.table) == len(cells)
    np.testing.assert_allclose(inputs.cells.probs, cells.drop(columns=["id", "cell"]).to_numpy())
    again = get_detector("combined").run(inputs)
    assert "cell_strongest" in again.summary["features"]
    np.testing.assert_allclose(
        again.image_score, issues.loc[inputs.ids, "combined_score"].to_numpy(), rtol=1e-6
    )
    assert "supplied" in (out / "report.html").read_text()
    assert (snapshot(tmp_path / "data"), cells_file.read_bytes()) == before
    # A scan without them forgets them.
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert "n_cells" not in pd.read_csv(out / "issues.csv").columns
    assert not (out / "cells.csv").exists()
    assert "cells" not in json.loads((out / "run.json").read_text())


def _bad_cell_files(cells: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, str]]:
    cls = cells.columns[2]
    unknown, twice, text, high, empty = (cells.copy() for _ in range(5))
    unknown.loc[3, "id"] = "nosuchimage"
    twice.loc[1, "cell"] = twice.loc[0, "cell"]
    twice.loc[1, "id"] = twice.loc[0, "id"]
    text = text.astype(object)
    text.loc[2, cls] = "high"
    high.loc[4, cls] = 1.5
    empty = empty.astype(object)
    empty.loc[5, "cell"] = " "
    return {
        "unknown image": (unknown, "line 5: image id 'nosuchimage' is not in the dataset"),
        "cell twice": (twice, "line 3: cell 'c0' of image"),
        "not a number": (text, "line 4: column"),
        "out of range": (high, "line 6: cell"),
        "empty name": (empty, "line 7: a cell without a name"),
        "missing class": (cells.drop(columns=cls), "missing class columns"),
        "no rows": (cells.iloc[:0], "no cells"),
        "no id": (cells.drop(columns="id"), "no id column"),
        "submission": (
            pd.DataFrame({"ID": [cells["id"].iloc[0]], "PredictionString": ["99 0.5 m"]}),
            "line 2: class '99' is not a class of the dataset",
        ),
    }


def test_bad_cell_probs_files_one_message_exit_2(tmp_path, run_cli):
    from labelaudit.cli import main

    data = tmp_path / "data"
    main(["synth", str(data), "--n", "12", "--size", "32", "--seed", "1"])
    probs, good, cells = _files(data, tmp_path)
    before = snapshot(data)
    for name, (content, expected) in _bad_cell_files(cells).items():
        path = tmp_path / f"{name}.csv"
        content.to_csv(path, index=False)
        written = path.read_bytes()
        out = tmp_path / f"out-{name}"
        scan_refuses_file(run_cli, data, out, "--cell-probs", path, expected)
        assert path.read_bytes() == written
    code, _, err = run_cli(
        "scan", data, "--out", tmp_path / "o", "--level", "cell", "--cell-probs", good
    )
    assert code == 2 and "--level cell trains one" in err
    assert snapshot(data) == before


def test_cells_of_images_the_scan_skipped_are_left_out(tmp_path):
    """``--skip-broken``: the audit holds the readable images only, and so its cells."""
    from types import SimpleNamespace

    from labelaudit.detect.base import CellPredictions
    from labelaudit.pipeline.scan import _use_supplied_cells
    from labelaudit.pipeline.supplied import cell_table
    from labelaudit.rundir import RunDir

    table = cell_table(["a", "b", "b", "c"])
    cells = CellPredictions(table, np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]]))
    ds = SimpleNamespace(ids=["a", "c"], class_names=["x", "y"])  # b was skipped
    (tmp_path / "cells").mkdir()
    np.save(tmp_path / "cells" / "embeddings.npy", np.zeros((3, 2)))  # an earlier cell model's
    kept = _use_supplied_cells(tmp_path, ds, cells)
    assert not (tmp_path / "cells" / "embeddings.npy").exists()  # not these cells
    assert kept.table["cell_id"].tolist() == ["a_1", "c_1"]
    np.testing.assert_allclose(kept.probs, [[0.1, 0.2], [0.7, 0.8]])
    written = pd.read_csv(tmp_path / "cells" / "oof_probs.csv")
    assert written["id"].tolist() == ["a_1", "c_1"]
    # a forged cells/ (a link) is refused, nothing written through it
    (tmp_path / "elsewhere").mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / "cells").symlink_to(tmp_path / "elsewhere")
    from labelaudit.core.errors import RunDirError

    with pytest.raises(RunDirError, match="not a directory labelaudit made"):
        RunDir(run).write_cell_probs(kept, ["x", "y"])
    assert not any((tmp_path / "elsewhere").iterdir())


def test_trailing_commas_are_read_and_extra_fields_refused(tmp_path):
    """Some exporters end each row with a comma: read as written, never shifted (pandas
    would take the ids for an index); data past the header's columns is refused."""
    from labelaudit.core.errors import SettingsError
    from labelaudit.pipeline.supplied import read_supplied_cells, read_supplied_probs

    ids, names = ["a", "b"], ["x", "y"]
    trailing = tmp_path / "trailing.csv"
    trailing.write_text("id,cell,x,y\na,1,0.1,0.2,\nb,1,0.3,0.4,\n")
    cells = read_supplied_cells(trailing, ids, names, names)
    assert cells.table["cell_id"].tolist() == ["a_1", "b_1"]
    np.testing.assert_allclose(cells.probs, [[0.1, 0.2], [0.3, 0.4]])
    probs_file = tmp_path / "probs.csv"
    probs_file.write_text("id,x,y\na,0.1,0.2,\nb,0.3,0.4,\n")
    np.testing.assert_allclose(
        read_supplied_probs(probs_file, ids, names, names), [[0.1, 0.2], [0.3, 0.4]]
    )
    extra = tmp_path / "extra.csv"
    extra.write_text("id,x,y\na,0.1,0.2,0.9\nb,0.3,0.4,0.9\n")  # one value too many
    for read in (read_supplied_probs, read_supplied_cells):
        with pytest.raises(SettingsError, match="more fields than the header") as err:
            read(extra, ids, names, names)
        assert str(extra) in str(err.value)


def test_two_cells_that_would_share_a_name_are_refused(tmp_path):
    from labelaudit.core.errors import SettingsError
    from labelaudit.pipeline.supplied import read_supplied_cells

    path = tmp_path / "cells.csv"
    path.write_text("id,cell,x\na_1,2,0.1\na,1_2,0.2\n")
    with pytest.raises(SettingsError, match="line 3: two cells would both be named 'a_1_2'"):
        read_supplied_cells(path, ["a", "a_1"], ["x"], ["x"])


def test_an_hpa_single_cell_submission_is_read_as_cells(tmp_path):
    """``ID, ImageWidth, ImageHeight, PredictionString`` (``class confidence mask``
    triples): each distinct mask of an image is a cell, unlisted classes read as 0."""
    from labelaudit.core.errors import SettingsError
    from labelaudit.pipeline.supplied import read_supplied_cells

    ids, names, tokens = ["a", "b", "c"], ["Nucleoplasm", "Cytosol"], ["0", "1"]
    path = tmp_path / "submission.csv"
    rows = [
        "ID,ImageWidth,ImageHeight,PredictionString",
        "a,2048,2048,0 0.9 eNoLmask1 1 0.2 eNoLmask1 0 0.1 eNoLmask2",
        "b,2048,2048,",
        "c,1728,1728,1 0.7 eNoLmask1",
    ]
    path.write_text("\n".join(rows) + "\n")
    cells = read_supplied_cells(path, ids, names, tokens)
    assert cells.table["cell_id"].tolist() == ["a_1", "a_2", "c_1"]
    np.testing.assert_allclose(cells.probs, [[0.9, 0.2], [0.1, 0.0], [0.0, 0.7]])
    bad = {
        "0 0.9": "2 fields in the PredictionString, not triples",
        "7 0.9 m": "class '7' is not a class of the dataset",
        "0 high m": "confidence 'high' is not a number",
        "0 1.5 m": "confidence 1.5 is outside [0, 1]",
        "0 nan m": "confidence nan is outside [0, 1]",
        "0 0.5 m 0 0.6 m": "class '0' given twice for one cell of 'a'",
    }
    for text, message in bad.items():
        path.write_text(f"ID,PredictionString\nb,\na,{text}\n")
        with pytest.raises(SettingsError, match=re.escape(f"line 3: {message}")):
            read_supplied_cells(path, ids, names, tokens)
    path.write_text("ID,PredictionString\na,\nb,\n")
    with pytest.raises(SettingsError, match="no cells"):
        read_supplied_cells(path, ids, names, tokens)
