"""``labelaudit.find_issues``: labels, probabilities, features and images held in memory."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pytest
from la_testutils import with_cell_model
from sklearn.metrics import roc_auc_score

import labelaudit
from labelaudit.core.errors import SettingsError
from labelaudit.pipeline.find_issues import NO_FEATURES_NOTE, NO_IMAGES_NOTE, label_matrix

NAMES = ["Cytosol", "Golgi apparatus", "Nucleoli", "Nucleoplasm"]


def arrays(n: int = 60, seed: int = 0):
    """Label lists, a matrix, good out-of-sample-like probabilities (row 3 wrong), features."""
    rng = np.random.default_rng(seed)
    matrix = rng.random((n, len(NAMES))) < 0.3
    matrix[~matrix.any(axis=1), 0] = True
    lists = [[NAMES[k] for k in np.flatnonzero(row)] for row in matrix]
    probs = np.clip(np.where(matrix, 0.9, 0.05) + rng.normal(0, 0.03, matrix.shape), 0, 1)
    probs[min(3, n - 1)] = 1 - probs[min(3, n - 1)]  # every label of image 3 looks wrong
    features = rng.normal(size=(n, 8)) + matrix @ rng.normal(size=(len(NAMES), 8)) * 3
    return lists, matrix, probs, features


def test_arrays_only_find_the_wrong_labels_and_say_what_was_skipped(tmp_path):
    lists, _, probs, features = arrays()
    result = labelaudit.find_issues(lists, pred_probs=probs, features=features, class_names=NAMES)
    issues = result.issues
    assert issues.index.name == "row" and sorted(issues.index) == list(range(60))
    assert issues.index[0] == 3  # review order: the image whose labels are all wrong first
    assert issues.loc[3, "given_labels"] == "|".join(lists[3])
    assert issues["label_quality"].dtype == float and issues["consensus_flag"].dtype == bool
    summary = result.summary
    assert summary["images"] == 60 and summary["classes"] == 4
    assert {"confident", "knn", "isolation"} <= set(summary["detectors"])
    assert {"quality", "intensity"} <= set(summary["skipped"])
    assert summary["notes"] == [NO_IMAGES_NOTE]
    assert list(result.duplicates.columns)[:2] == ["a", "b"]
    page = result.report(tmp_path / "audit.html")
    assert page == tmp_path / "audit.html" and "labelaudit report" in page.read_text()
    assert result.report(tmp_path / "audit.html") == page  # its own report is replaced
    (tmp_path / "mine.html").write_text("my notes")
    with pytest.raises(SettingsError, match="not a labelaudit report"):
        result.report(tmp_path / "mine.html")
    assert (tmp_path / "mine.html").read_text() == "my notes"


def test_supplied_probabilities_need_no_folds_training_does(tmp_path):
    """Three images with their probabilities are audited (nothing is cross-validated);
    the same three to train on are too few for the folds, said in one line."""
    lists, _, probs, _ = arrays(n=3)
    images = np.random.default_rng(0).integers(0, 255, (3, 16, 16), dtype=np.uint8)
    for given in ({}, {"images": images, "out": tmp_path / "run"}):
        issues = labelaudit.find_issues(lists, pred_probs=probs, class_names=NAMES, **given)
        assert sorted(issues.issues.index) == [0, 1, 2]
    with pytest.raises(SettingsError, match=r"too few for 5-fold.*folds="):
        labelaudit.find_issues(lists, images=images, class_names=NAMES, out=tmp_path / "t")


def test_features_beyond_the_embedding_range_are_refused():
    lists, _, probs, features = arrays()
    features[4, 2] = 1e300  # float32 would make it infinite
    with pytest.raises(SettingsError, match=r"features\[4, 2\] is 1e\+300: NaN, infinite or bey"):
        labelaudit.find_issues(lists, pred_probs=probs, features=features, class_names=NAMES)


def test_matrix_and_label_lists_give_the_same_issues():
    lists, matrix, probs, _ = arrays()
    a = labelaudit.find_issues(lists, pred_probs=probs, class_names=NAMES).issues
    b = labelaudit.find_issues(matrix.astype(int), pred_probs=probs, class_names=NAMES).issues
    pd.testing.assert_frame_equal(a, b)
    assert NO_FEATURES_NOTE in labelaudit.find_issues(lists, pred_probs=probs).summary["notes"]


def test_a_temporary_run_goes_with_its_result():
    lists, _, probs, _ = arrays()
    result = labelaudit.find_issues(lists, pred_probs=probs)
    run = result.run_dir
    assert (run / "issues.csv").is_file()
    del result
    gc.collect()
    assert not run.parent.exists()


def test_out_keeps_the_run(tmp_path, run_cli):
    lists, _, probs, _ = arrays()
    result = labelaudit.find_issues(lists, pred_probs=probs, out=tmp_path / "run")
    assert result.run_dir == tmp_path / "run"
    del result
    gc.collect()
    assert (tmp_path / "run" / "issues.csv").is_file()
    code, out, _ = run_cli("report", tmp_path / "run")  # the commands read it
    assert code == 0 and "report.html" in out
    for command in (["clean", tmp_path / "run"], ["retrain", "--run", tmp_path / "run"]):
        code, _, err = run_cli(*command)
        assert code == 2 and "audited from arrays without images" in err, (command, err)


def test_integer_ids_and_default_names():
    matrix, names = label_matrix([[0, 2], [1], []], None)
    assert names == ["0", "1", "2"]
    assert matrix.tolist() == [[True, False, True], [False, True, False], [False, False, False]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {"pred_probs": a["pred_probs"][:-1]}, r"pred_probs has shape \(59, 4\)"),
        (lambda a: {"pred_probs": a["pred_probs"][:, :3]}, r"x 4 columns \(classes\)"),
        (lambda a: {"pred_probs": _set(a["pred_probs"], (5, 1), np.nan)}, r"pred_probs\[5, 1\]"),
        (lambda a: {"pred_probs": _set(a["pred_probs"], (2, 0), 3.5)}, r"outside \[0, 1\]"),
        (lambda a: {"pred_probs": [["x"] * 4] * 60}, "real numbers"),
        (lambda a: {"features": _set(a["features"], (7, 2), np.inf)}, r"features\[7, 2\]"),
        (lambda a: {"features": a["features"][:10]}, "features has shape"),
        (lambda a: {"labels": ["Cytosol;Nucleoli"] * 60}, "as a list"),
        (lambda a: {"labels": [["Cytosol", "Mitochondria"]] * 60}, "'Mitochondria' is not"),
        (lambda a: {"labels": np.full((60, 4), 2)}, r"labels\[0, 0\] = 2"),
        (lambda a: {"labels": np.ones((60, 4), bool), "class_names": NAMES[:3]}, "3 names"),
        (lambda a: {"pred_probs": None}, "give pred_probs"),
        (lambda a: {"images": np.zeros((60, 8, 8), dtype=np.float32)}, "uint8 or uint16"),
        (lambda a: {"images": np.zeros((59, 8, 8), dtype=np.uint8)}, "expected \\(60, H, W\\)"),
    ],
)
def test_bad_arrays_are_one_clear_error(change, message, tmp_path):
    lists, _, probs, features = arrays()
    args = {"labels": lists, "pred_probs": probs, "features": features, "class_names": NAMES}
    args.update(change(args))
    with pytest.raises(SettingsError, match=message) as err:
        labelaudit.find_issues(**args, out=tmp_path / "run")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def _set(array, where, value):
    array = np.array(array, dtype=float)
    array[where] = value
    return array


@pytest.mark.slow
def test_images_as_arrays_add_the_pixel_evidence(tmp_path):
    lists, _, probs, features = arrays(n=24)
    rng = np.random.default_rng(1)
    images = rng.integers(20, 120, size=(24, 16, 16, 3), dtype=np.uint8)
    images[5] = 0  # a dark image
    ids = [f"cell{i}" for i in range(24)]
    owners = [r for r in range(24) for _ in range(2)]  # two cells per image, named by row
    cell_probs = np.repeat(probs[:24], 2, axis=0)
    result = labelaudit.find_issues(
        lists, pred_probs=probs, features=features, images=images, class_names=NAMES,
        ids=ids, out=tmp_path / "run", cache_dir=tmp_path / "cache",
        cell_probs=cell_probs, cell_images=owners,
    )  # fmt: skip
    summary = result.summary
    assert {"quality", "intensity", "confident", "knn"} <= set(summary["detectors"])
    assert summary["notes"] == [] and summary["predictions"] == "supplied"
    issues = result.issues
    assert issues.loc[5, "id"] == "cell5" and "dark" in issues.loc[5, "quality_issues"]
    # the cells reach the scan as its cell_probs file, each named by its image's file
    assert (issues["n_cells"] == 2).all()
    support = issues.loc[3, "label_support"].split(";")  # "class:shown/cells" per label
    assert len(support) == len(lists[3]) and all(part.endswith("/2") for part in support)
    cells_table = pd.read_csv(tmp_path / "run" / "cells.csv", dtype=str)
    assert cells_table["cell_id"].iloc[0] == "cell0.tiff_1"
    assert result.report().name == "report.html"
    written = tmp_path / "run-inputs" / "images" / "cell5.tiff"
    # channels last reach the scan as channels, not as rows of pixels
    from labelaudit.data.readers import read_array
    from labelaudit.rundir import RunDir

    assert np.array_equal(read_array(tmp_path / "run-inputs" / "images" / "cell3.tiff"), images[3])
    assert len(RunDir(tmp_path / "run").read_run()["dataset"]["channels"]) == 3
    assert written.is_file()


@pytest.mark.slow
def test_image_paths_without_probabilities_train_cross_validated_models(tmp_path):
    root = tmp_path / "data"
    labelaudit.synthesize(root, n=16, size=32, seed=2)
    ds = labelaudit.load_dataset(root)
    green = [source.paths[1] for source in ds.sources]
    result = labelaudit.find_issues(
        ds.labels, images=green, class_names=ds.class_names, ids=ds.ids, out=tmp_path / "run",
        preset="demo", epochs=1, folds=2, image_size=32, cache_dir=tmp_path / "cache",
    )  # fmt: skip
    assert result.summary["predictions"] == "cross-validated"
    assert result.summary["notes"] == []  # the models' embeddings stand in for features
    assert {"knn", "isolation"} <= set(result.summary["detectors"])
    assert (tmp_path / "run" / "folds").is_dir()
    assert sorted(result.issues["id"]) == sorted(ds.ids)
    with pytest.raises(SettingsError, match="never writes into its inputs"):
        result.report(root / "train" / "report.html")  # the images' folder: an input
    assert not (root / "train" / "report.html").exists()


def test_a_cell_models_probabilities_join_the_label_evidence(tmp_path):
    from labelaudit.cells.audit import SUPPLIED_SOURCE
    from labelaudit.rundir import RunDir

    given, true, probs, features, cell_probs, owners = with_cell_model()
    names = [f"c{j}" for j in range(5)]
    ids = [f"f{i}" for i in range(len(given))]
    wrong = (given != true).any(axis=1)
    args = {"pred_probs": probs, "features": features, "class_names": names, "ids": ids}
    plain = labelaudit.find_issues(given, **args).issues.sort_index()
    out = tmp_path / "run"
    result = labelaudit.find_issues(
        given, **args, cell_probs=cell_probs, cell_images=owners, out=out
    )
    issues = result.issues.sort_index()
    before = roc_auc_score(wrong, plain["label_score"])
    after = roc_auc_score(wrong, issues["label_score"])
    assert after > before + 0.02, (before, after)
    # the cell findings join the issues; an image without cells has none
    assert issues.loc[0, "n_cells"] == 0 and issues.loc[1, "n_cells"] >= 2
    assert issues["label_support_score"].notna().sum() == len(given) - len(given) // 10
    run = RunDir(out)
    section = run.read_run()["cells"]
    assert section["source"] == SUPPLIED_SOURCE and section["n_cells"] == len(owners)
    # the run reads back as it was audited: the same cells, the same probabilities
    back = run.audit_inputs().cells
    assert back is not None and back.table["id"].tolist() == [ids[i] for i in owners]
    np.testing.assert_allclose(back.probs, cell_probs)
    page = result.report(tmp_path / "audit.html").read_text()
    assert "view of each cell (supplied) by a rule fitted" in page  # what the evidence weighed
    # cells named by id are the same cells as cells named by row
    by_id = labelaudit.find_issues(
        given, **args, cell_probs=cell_probs, cell_images=[ids[i] for i in owners]
    )
    pd.testing.assert_frame_equal(by_id.issues.sort_index(), issues)
    # a later call into the same run without cells forgets them
    again = labelaudit.find_issues(given, **args, out=out).issues.sort_index()
    assert "n_cells" not in again and not (out / "cells.csv").exists()
    assert run.audit_inputs().cells is None
    np.testing.assert_allclose(again["label_score"], plain["label_score"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: {"cell_images": None}, "cell_probs and cell_images go together"),
        (lambda c: {"cell_probs": None}, "cell_probs and cell_images go together"),
        (lambda c: {"cell_images": c["cell_images"][:-1]}, r"cell_probs has shape \(5, 4\)"),
        (lambda c: {"cell_images": [0, 1, 2, 3, 60]}, r"cell_images\[4\] = 60: no such image"),
        (lambda c: {"cell_images": [0, 1, 2, 3, "nope"]}, r"cell_images\[4\] = 'nope' names"),
        (lambda c: {"cell_images": [0, 1, 2, 3, True]}, r"cell_images\[4\] = True names"),
        (lambda c: {"cell_probs": _set(c["cell_probs"], (1, 2), 1.5)}, r"cell_probs\[1, 2\]"),
        (lambda c: {"cell_probs": [], "cell_images": []}, "no cells given"),
    ],
)
def test_bad_cells_are_one_clear_error(change, message, tmp_path):
    lists, _, probs, _ = arrays()
    cells = {"cell_probs": probs[:5], "cell_images": [0, 1, 2, 3, 4]}
    cells.update(change(cells))
    with pytest.raises(SettingsError, match=message) as err:
        labelaudit.find_issues(
            lists, pred_probs=probs, class_names=NAMES, **cells, out=tmp_path / "r"
        )
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r").exists()


def test_cells_named_by_numeric_ids_are_never_given_to_another_image():
    given, _, probs, _, cell_probs, owners = with_cell_model(n=60)
    args = {"pred_probs": probs, "cell_probs": cell_probs}
    numeric = list(range(100, 160))  # ids that cannot be rows: taken as ids
    by_id = labelaudit.find_issues(given, **args, ids=numeric, cell_images=owners + 100)
    by_row = labelaudit.find_issues(given, **args, ids=numeric, cell_images=owners)
    pd.testing.assert_frame_equal(by_id.issues, by_row.issues)
    reversed_ids = list(range(60))[::-1]  # 3 is row 3 and the id of row 56: ambiguous
    with pytest.raises(SettingsError, match=r"cell_images\[0\] = \d+ is both image row"):
        labelaudit.find_issues(given, **args, ids=reversed_ids, cell_images=owners)
    as_text = [str(reversed_ids[o]) for o in owners]
    by_text = labelaudit.find_issues(given, **args, ids=reversed_ids, cell_images=as_text)
    assert (
        by_text.issues.sort_index()["n_cells"].tolist()
        == np.bincount(owners, minlength=60).tolist()
    )


def test_tables_are_matched_to_the_classes_by_column_name():
    """A DataFrame's columns are class names, never positions: reordered columns give the
    same audit, columns that are not the classes are refused (found by a hostile test:
    reversed columns were read by position and flagged 24 of 30 clean images)."""
    lists, matrix, probs, features = arrays()
    plain = labelaudit.find_issues(lists, pred_probs=probs, class_names=NAMES).issues
    reversed_probs = pd.DataFrame(probs[:, ::-1], columns=NAMES[::-1])
    framed = labelaudit.find_issues(lists, pred_probs=reversed_probs, class_names=NAMES)
    pd.testing.assert_frame_equal(plain, framed.issues)
    table = pd.DataFrame(matrix[:, ::-1].astype(int), columns=NAMES[::-1])
    by_table = labelaudit.find_issues(table, pred_probs=reversed_probs, class_names=NAMES)
    pd.testing.assert_frame_equal(plain, by_table.issues)
    named = labelaudit.find_issues(table, pred_probs=reversed_probs).issues  # names: columns
    assert set(named.loc[3, "given_labels"].split("|")) == set(lists[3])
    for bad, what in ((pd.DataFrame(probs, columns=list("wxyz")), "pred_probs"),):
        with pytest.raises(SettingsError, match=f"{what}: its columns \\(w, x, y, z\\) are not"):
            labelaudit.find_issues(lists, pred_probs=bad, class_names=NAMES)
    with pytest.raises(SettingsError, match="labels: its columns"):
        labelaudit.find_issues(table.rename(columns={NAMES[0]: "other"}), probs, class_names=NAMES)
    # class ids as labels (cleanlab's convention) with named columns: column j is class j
    ids_rows = [[NAMES.index(c) for c in row] for row in lists]
    by_ids = labelaudit.find_issues(ids_rows, pred_probs=pd.DataFrame(probs, columns=NAMES))
    kept = plain.columns.drop("given_labels")
    pd.testing.assert_frame_equal(plain[kept], by_ids.issues[kept], check_dtype=False)
    # the cells' table too
    given, _, cprobs, cfeatures, cell_probs, owners = with_cell_model()
    names = [f"c{j}" for j in range(5)]
    args = {"pred_probs": cprobs, "features": cfeatures, "class_names": names}
    a = labelaudit.find_issues(given, **args, cell_probs=cell_probs, cell_images=owners).issues
    frame = pd.DataFrame(cell_probs[:, ::-1], columns=names[::-1])
    b = labelaudit.find_issues(given, **args, cell_probs=frame, cell_images=owners).issues
    pd.testing.assert_frame_equal(a, b)


def test_a_misspelt_setting_and_an_array_given_to_scan_are_refused(tmp_path):
    lists, _, probs, _ = arrays()
    with pytest.raises(SettingsError, match="bogus"):
        labelaudit.find_issues(lists, pred_probs=probs, class_names=NAMES, bogus=1)
    with pytest.raises(SettingsError, match=r"probs must be a path .* labelaudit.find_issues"):
        labelaudit.scan(tmp_path, tmp_path / "run", probs=probs)
    with pytest.raises(SettingsError, match="dataset must be a path"):
        labelaudit.scan(5, tmp_path / "run")
    assert not (tmp_path / "run").exists()
