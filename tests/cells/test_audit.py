"""``scan --level cell`` end to end on a tiny synthetic dataset with true cell masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from la_testutils import TINY_SCAN, run_ok

from labelaudit.cells.audit import ISSUE_COLUMNS, default_cell_size, suspect_fields
from labelaudit.core.io import read_json

TINY = [*TINY_SCAN, "--quiet"]


@pytest.fixture(scope="module")
def cell_run(tmp_path_factory):
    """synth 40 fields (half with partial expression) + true masks, scanned at cell level."""
    from labelaudit.synth.simulate import synthesize

    tmp = tmp_path_factory.mktemp("cellscan")
    data = tmp / "data"
    synthesize(data, n=40, seed=5, size=64, partial_cells=0.5, write_masks=True)
    run = tmp / "run"
    before = sorted(p.name for p in data.rglob("*"))
    run_ok(["scan", data, "--out", run, *TINY, "--level", "cell", "--masks", data / "masks"])
    assert sorted(p.name for p in data.rglob("*")) == before  # the input is untouched
    return data, run


@pytest.mark.slow
def test_cell_artifacts(cell_run):
    data, run = cell_run
    cells = pd.read_csv(run / "cells.csv", dtype={"id": str, "cell_id": str})
    masks = sorted((data / "masks").glob("*_predictedmask.png"))
    from labelaudit.cells.masks import read_mask

    n_cells = sum(len(np.unique(read_mask(p))) - 1 for p in masks)
    assert len(cells) == n_cells  # every cell of every mask
    for col in ("cell_id", "id", "cell", "fold", "predicted_labels", "sibling_deviation", "odd"):
        assert col in cells.columns
    # Folds are by field: no field has cells on both sides of a split.
    assert (cells.groupby("id")["fold"].nunique() == 1).all()
    oof = pd.read_csv(run / "cells" / "oof_probs.csv", dtype={"id": str})
    assert list(oof["id"]) == list(cells["cell_id"]) and oof.shape[1] == 20
    issues = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False)
    assert len(issues) == 40 and set(ISSUE_COLUMNS) <= set(issues.columns)
    counts = cells.groupby("id").size()
    got = issues.set_index("id")["n_cells"].astype(int)
    assert (got.loc[counts.index] == counts).all()
    section = read_json(run / "run.json")["cells"]
    assert section["n_cells"] == n_cells and section["cell_size"] == default_cell_size(32)
    assert section["overlays"] and (run / section["overlays"][0]["file"]).is_file()
    html = (run / "report.html").read_text()
    assert '<section id="cells">' in html and "data:image/jpeg;base64," in html


@pytest.mark.slow
def test_the_label_evidence_weighs_the_cells_as_the_run_reads_them_back(cell_run):
    """At cell level the cells are trained before the field detectors, and ``combined``
    uses them; re-running the detectors on what the run directory reads back (cells
    included) gives the scan's own label scores."""
    from labelaudit.pipeline.compare import build_issues, run_detectors
    from labelaudit.rundir import RunDir

    _, run = cell_run
    features = read_json(run / "run.json")["detect"]["detectors"]["combined"]["summary"]
    assert {"cell_strongest", "cell_mean"} <= set(features["features"])
    inputs = RunDir(run).audit_inputs()
    assert inputs.cells is not None and len(inputs.cells.table) == len(
        pd.read_csv(run / "cells.csv")
    )
    results, _, _ = run_detectors(inputs, ["confident", "knn", "combined", "quality"])
    again = build_issues(inputs, results).set_index("id")["combined_score"]
    issues = pd.read_csv(run / "issues.csv", dtype={"id": str}).set_index("id")
    np.testing.assert_allclose(again.loc[issues.index], issues["combined_score"])


@pytest.mark.slow
def test_a_second_round_of_a_cell_level_scan_flips_by_the_evidence_with_cells(cell_run):
    from labelaudit.detect.combined import CombinedEvidence
    from labelaudit.pipeline.second_round import FLIP_AT, corrected_labels, read_second_round
    from labelaudit.rundir import RunDir

    _, run = cell_run
    inputs = RunDir(run).audit_inputs()
    ids, tokens = list(inputs.ids), list(inputs.class_tokens)
    record = read_second_round(run, ids, tokens, inputs.labels)
    with_cells, _ = CombinedEvidence().posteriors(inputs)
    without, _ = CombinedEvidence(cells=False).posteriors(inputs)
    expected = corrected_labels(inputs.labels, with_cells, FLIP_AT)
    np.testing.assert_array_equal(record.aligned(ids), expected)
    # On this set the cells change which labels are flipped (three of them).
    assert (corrected_labels(inputs.labels, without, FLIP_AT) != expected).any()


@pytest.mark.slow
def test_rescan_reuses_cell_folds_and_bench_scores_cells(cell_run, run_cli):
    data, run = cell_run
    code, out, err = run_cli(
        "scan", data, "--out", run, *TINY[:-1], "--level", "cell", "--masks", data / "masks"
    )
    assert code == 0, err
    assert out.count("fold 1/2: reused") == 2  # field level and cell level
    code, out, err = run_cli("bench", run, "--truth", data / "truth.csv")
    assert code == 0, err
    assert "fields with a label no cell shows" in out and "cell_support" in out
    bench = read_json(run / "bench.json")
    assert bench["cells"]["n_pos"] > 0
    assert set(bench["cells"]["metrics"]) >= {"cell_support", "field_weakest_label", "confident"}


@pytest.mark.slow
def test_field_level_rescan_forgets_the_cell_results(cell_run, run_cli, tmp_path):
    import shutil

    data, run = cell_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    code, _, err = run_cli("scan", data, "--out", copy, *TINY)
    assert code == 0, err
    assert "cells" not in read_json(copy / "run.json")
    assert not (copy / "cells.csv").exists() and not (copy / "cells" / "overlays").exists()
    from labelaudit.rundir import RunDir

    assert RunDir(copy).audit_inputs().cells is None  # nor does the label evidence use them
    summary = read_json(copy / "run.json")["detect"]["detectors"]["combined"]["summary"]
    assert "cell_strongest" not in summary["features"]
    assert (copy / "cells" / "oof_probs.csv").is_file()  # the cell folds stay for reuse
    issues = pd.read_csv(copy / "issues.csv", dtype=str)
    assert "label_support" not in issues.columns
    assert 'id="cells"' in (copy / "report.html").read_text()
    assert "Field-level scan" in (copy / "report.html").read_text()


def test_overlay_file_names_are_unique():
    from labelaudit.cells.audit import _file_name

    assert _file_name("synth-00001-abc") == "synth-00001-abc"
    names = {_file_name(i) for i in ("a/b.png", "a_b.png", "a b.png")}
    assert len(names) == 3 and all("/" not in n for n in names)


def test_suspect_fields_order():
    frame = pd.DataFrame(
        {
            "n_cells": [3, 2, 4, 0, 5],
            "unsupported_labels": ["", "2", "", "", "1"],
            "cell_missing_labels": ["", "", "5", "", ""],
            "n_odd_cells": [1, 0, 0, 0, 0],
            "label_support_score": [0.9, 0.3, 0.8, np.nan, 0.1],
        },
        index=["a", "b", "c", "d", "e"],
    )
    assert suspect_fields(frame, 10) == ["e", "b", "c", "a"]  # d has no cells


@pytest.mark.slow
def test_bad_cell_options(make_hpa, run_cli, tmp_path):
    root = make_hpa(n=12)
    code, _, err = run_cli("scan", root, "--out", tmp_path / "r", "--masks", tmp_path)
    assert code == 2 and "--level cell" in err
    code, _, err = run_cli("scan", root, "--out", tmp_path / "r", "--level", "nuclei")
    assert code == 2 and "level" in err
    code, _, err = run_cli(
        "scan", root, "--out", tmp_path / "r", "--level", "cell", "--masks", tmp_path / "nope"
    )
    assert code == 2 and "nope" in err
    code, _, err = run_cli("scan", root, "--out", tmp_path / "r", "--level", "cell",
                           "--cell-size", "8")  # fmt: skip
    assert code == 2 and "cell_size" in err
    empty = tmp_path / "masks"
    empty.mkdir()
    code, _, err = run_cli(
        "scan", root, "--out", tmp_path / "r2", *TINY, "--level", "cell", "--masks", empty
    )
    assert code == 2 and "mask" in err.lower() and "Traceback" not in err


def test_supplied_field_probabilities_still_check_the_cell_folds_first(tmp_path, run_cli):
    """``--probs`` skips the field training, not the cell one: too few fields for the
    cell folds is refused before the run directory is made."""
    from labelaudit.synth.simulate import synthesize

    data = tmp_path / "data"
    synthesize(data, n=6, seed=1, size=32, write_masks=True)
    np.save(tmp_path / "p.npy", np.full((6, 19), 0.5))
    out = tmp_path / "run"
    code, _, err = run_cli(
        "scan", data, "--out", out, "--probs", tmp_path / "p.npy", "--level", "cell",
        "--masks", data / "masks",
    )  # fmt: skip
    assert code == 2 and "too few for 5-fold" in err
    assert not out.exists()


def test_cell_level_refuses_torchrun(make_hpa, monkeypatch, tmp_path):
    from labelaudit.core.errors import SettingsError
    from labelaudit.pipeline.scan import scan

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SettingsError, match="torchrun"):
        scan(make_hpa(n=12), tmp_path / "r", level="cell")


@pytest.mark.slow
def test_a_fold_job_with_cell_folds_unfinished_forgets_the_previous_cells(
    cell_run, run_cli, tmp_path
):
    """``--level cell --fold 1`` while another cell fold is unfinished: the field
    detectors run without cells, and the previous scan's cells are not left standing
    beside them (they would read as this scan's)."""
    import shutil

    data, run = cell_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert "cells" in read_json(copy / "run.json") and (copy / "cells.csv").is_file()
    shutil.rmtree(copy / "cells" / "folds" / "fold_2")  # cell fold 2 is unfinished
    masks = data / "masks"
    code, out, err = run_cli(
        "scan", data, "--out", copy, *TINY[:-1], "--level", "cell", "--masks", masks, "--fold", "1"
    )
    assert code == 0, err
    assert "cells" not in read_json(copy / "run.json")
    assert not (copy / "cells.csv").exists()
    from labelaudit.rundir import RunDir

    assert RunDir(copy).audit_inputs().cells is None
    assert "n_cells" not in pd.read_csv(copy / "issues.csv").columns
    # The job that finishes the last cell fold makes the cell findings again.
    code, out, err = run_cli(
        "scan", data, "--out", copy, *TINY[:-1], "--level", "cell", "--masks", masks, "--fold", "2"
    )
    assert code == 0, err
    assert read_json(copy / "run.json")["cells"]["n_cells"] == len(pd.read_csv(run / "cells.csv"))
    assert (copy / "cells.csv").is_file()
