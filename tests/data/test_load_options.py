"""Datasets in any layout: --labels, --images, column names, --sep; joined labels refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from la_testutils import snapshot, write_image

from labelaudit.core.errors import DatasetError, SettingsError
from labelaudit.data.layouts import joined_labels, load_dataset

CLASSES = ["Golgi apparatus", "Nuclear membrane", "Nucleoli", "Nucleoplasm"]
ROWS = [
    ["Golgi apparatus", "Nuclear membrane", "Nucleoli", "Nucleoplasm"],
    ["Nucleoli"],
    ["Golgi apparatus"],
    ["Nuclear membrane", "Nucleoplasm"],
    ["Nucleoplasm"],
    ["Nuclear membrane"],
]


def generic(tmp_path, sep: str, header: str = "image,labels", folder: str = "imgs"):
    """A generic dataset whose labels are joined by ``sep``: its root and the rows."""
    root = tmp_path / "ds"
    lines = [header]
    for i, labels in enumerate(ROWS):
        write_image(root / folder / f"f{i}.png", np.full((8, 8, 3), 10 * i, dtype=np.uint8))
        joined = sep.join(labels)
        lines.append(f'{folder}/f{i}.png,"{joined}"')
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def expected_matrix():
    return np.array([[name in row for name in sorted(CLASSES)] for row in ROWS])


@pytest.mark.parametrize(
    ("sep", "flag"), [(";", "--sep ';'"), (",", "--sep ','"), (" ", "--sep space")]
)
def test_joined_labels_stop_check_and_scan_with_the_separator(tmp_path, run_cli, sep, flag):
    # Whitespace-joined names are seen as joined when each word is a class itself.
    root = generic(tmp_path, sep) if sep != " " else one_word_dataset(tmp_path)
    before = snapshot(root)
    for command in (["check", root], ["scan", root, "--out", tmp_path / "run"]):
        code, out, err = run_cli(*command)
        assert code == 2, (command, out, err)
        assert "looks like labels joined by" in err and flag in err, err
        assert err.strip().count("\n") == 0  # one line
        assert "no problems found" not in out
    assert not (tmp_path / "run").exists()
    assert snapshot(root) == before


def one_word_dataset(tmp_path):
    root = tmp_path / "ds"
    rows = [["Golgi", "Nucleoli"], ["Nucleoli"], ["Golgi"], ["Cytosol", "Golgi"], ["Cytosol"]]
    lines = ["image,labels"]
    for i, labels in enumerate(rows):
        write_image(root / f"f{i}.png", np.full((8, 8), i, dtype=np.uint8))
        lines.append(f"f{i}.png,{' '.join(labels)}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("sep", [";", ",", " ", "space", "semicolon"])
def test_joined_labels_load_with_sep(tmp_path, sep):
    real = {"space": " ", "semicolon": ";"}.get(sep, sep)
    if real == " ":
        root = one_word_dataset(tmp_path)
        ds = load_dataset(root, sep=sep)
        assert ds.class_names == ["Cytosol", "Golgi", "Nucleoli"]
        assert ds.labels.sum(axis=1).tolist() == [2, 1, 1, 2, 1]
        return
    root = generic(tmp_path, real)
    ds = load_dataset(root, sep=sep)
    assert ds.class_names == sorted(CLASSES)
    assert np.array_equal(ds.labels, expected_matrix())
    assert ds.label_sep == real and ds.options == {"sep": real}


def test_check_with_sep_finds_no_problem(tmp_path, run_cli):
    root = generic(tmp_path, ";")
    code, out, err = run_cli("check", root, "--sep", ";")
    assert code == 0, err
    assert "6 images, 4 classes" in out and "no problems found" in out


def test_joined_integer_ids_in_an_hpa_file_name_the_separator(make_hpa, run_cli):
    root = make_hpa(n=4, labels=["1;2", "3", "4;5", "6"])
    code, out, _ = run_cli("check", root)  # check lists every row's problem
    assert code == 2
    assert out.count("look separated by ';'; give --sep ';'") == 2
    code, _, err = run_cli("scan", root, "--out", root.parent / "run")
    assert code == 2 and "look separated by ';'; give --sep ';'" in err
    ds = load_dataset(root, sep=";")
    assert ds.labels[0].nonzero()[0].tolist() == [1, 2]


def test_joined_labels_helper():
    assert joined_labels(["a;b"], "|") == ("a;b", ";")
    assert joined_labels(["a", "b", "a,b"], "|") == ("a,b", ",")
    assert joined_labels(["a", "b", "a b"], "|") == ("a b", " ")
    assert joined_labels(["Nuclear membrane", "Golgi apparatus"], "|") is None  # words
    assert joined_labels(["x,y"], "|") is None  # parts are not classes: a name with a comma


def test_labels_and_images_anywhere_with_other_columns(tmp_path, make_hpa, run_cli):
    src = make_hpa(n=5)
    images = tmp_path / "elsewhere" / "pngs"
    shutil.copytree(src / "train", images)
    table = tmp_path / "tables" / "annotations.csv"
    table.parent.mkdir()
    text = (src / "train.csv").read_text().replace("ID,Label", "sample,targets")
    table.write_text(text.replace("|", ";"))
    ds = load_dataset(
        labels=table,
        images=images,
        id_column="sample",
        label_column="targets",
        sep=";",
        layout="hpa2021",
    )
    assert len(ds) == 5 and ds.label_file == table and ds.root == table.parent
    assert ds.labels[0].nonzero()[0].tolist() == [0, 3]
    assert ds.label_column == "targets"
    code, out, err = run_cli(
        "check",
        "--labels",
        table,
        "--images",
        images,
        "--id-column",
        "sample",
        "--label-column",
        "targets",
        "--sep",
        ";",
        "--layout",
        "hpa2021",
    )
    assert code == 0, err
    assert "no problems found" in out


def test_generic_images_directory(tmp_path, run_cli):
    root = generic(tmp_path, "|", folder="imgs")
    labels = root / "labels.csv"
    labels.write_text(labels.read_text().replace("imgs/", ""))
    with pytest.raises(DatasetError, match="f0.png"):
        load_dataset(root)
    ds = load_dataset(root, images=root / "imgs")
    assert ds.ids[0] == "f0.png" and ds.sources[0].paths[0] == root / "imgs" / "f0.png"
    code, out, _ = run_cli("check", root, "--images", root / "imgs")
    assert code == 0 and "no problems found" in out


def test_images_folder_instead_of_train_gets_a_helpful_message(make_hpa, run_cli):
    root = make_hpa(n=3)
    (root / "train").rename(root / "images")
    code, _, err = run_cli("check", root)
    assert code == 2
    assert "image directory 'train/' not found; images found in images/" in err
    assert f"--images {root / 'images'}" in err
    code, out, err = run_cli("check", root, "--images", root / "images")
    assert code == 0, err


def test_column_names_unknown_say_the_option(make_hpa):
    root = make_hpa(n=3)
    with pytest.raises(DatasetError, match="--id-column and --label-column"):
        load_dataset(root, id_column="Sample")


@pytest.mark.parametrize(("delimiter", "name"), [(";", "';'"), ("\t", "tab")])
def test_a_table_saved_with_another_delimiter_is_named(tmp_path, delimiter, name):
    root = generic(tmp_path, "|")
    text = (root / "labels.csv").read_text().replace(",", delimiter).replace('"', "")
    (root / "other.csv").write_text(text)
    with pytest.raises(DatasetError, match=f"joined by {name}: a label file is comma-sep"):
        load_dataset(labels=root / "other.csv", images=root)
    with pytest.raises(DatasetError, match="joined by"):  # with the columns named too
        load_dataset(labels=root / "other.csv", images=root, id_column="image", sep=";")


def test_bad_sep_is_a_settings_error(make_hpa):
    with pytest.raises(SettingsError, match="sep"):
        load_dataset(make_hpa(n=2), sep="")


def test_no_dataset_and_no_labels_is_a_usage_error(run_cli):
    code, _, err = run_cli("check")
    assert code == 2 and "--labels" in err


@pytest.mark.slow
def test_scan_clean_and_report_of_a_dataset_with_its_own_layout(tmp_path, make_hpa, run_cli):
    """scan --labels/--images/--sep (predictions supplied: no training) writes a run whose
    cleaned copy loads by itself, with the scan's separator and columns."""
    import json

    import pandas as pd

    src = make_hpa(n=12, size=16)
    images = tmp_path / "pngs"
    shutil.copytree(src / "train", images)
    table = tmp_path / "tables" / "annotations.csv"
    table.parent.mkdir()
    text = (src / "train.csv").read_text().replace("ID,Label", "ID,Label,note")
    table.write_text("\n".join(line + ",x" for line in text.replace("|", ";").splitlines()))
    ds = load_dataset(labels=table, images=images, sep=";")
    probs = np.where(ds.labels, 0.9, 0.05)
    probs[0] = 1 - probs[0]  # the first field's labels all look wrong
    np.save(tmp_path / "p.npy", probs)
    before = snapshot(tmp_path / "tables"), snapshot(images)
    run = tmp_path / "run"
    code, _, err = run_cli(
        "scan", "--labels", table, "--images", images, "--sep", ";", "--out", run,
        "--probs", tmp_path / "p.npy", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    info = json.loads((run / "run.json").read_text())["dataset"]
    assert info["label_sep"] == ";" and info["load_options"]["sep"] == ";"
    issues = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False)
    assert issues["given_labels"].str.contains(";").any()
    assert (run / "report.html").is_file()
    cleaned = load_dataset(run / "cleaned")  # its marker says how to read it
    assert cleaned.label_sep == ";" and cleaned.label_file == run / "cleaned" / table.name
    assert len(cleaned) == len(ds)
    assert (snapshot(tmp_path / "tables"), snapshot(images)) == before


def test_sweep_reads_the_same_options(tmp_path, run_cli):
    root = generic(tmp_path, ";")
    code, _, err = run_cli("sweep", "--labels", root / "labels.csv", "--out", tmp_path / "sw")
    assert code == 2 and "--sep ';'" in err  # the joined labels are seen
    code, _, err = run_cli(
        "sweep", "--labels", root / "labels.csv", "--sep", ";", "--out", tmp_path / "sw",
        "--lrs", "0.01", "--folds", "9",
    )  # fmt: skip
    assert code == 2 and "too few for 9-fold cross-validation" in err  # loaded, then checked


def test_a_cleaned_copy_of_channel_files_with_own_columns_loads_with_their_layout(
    tmp_path, make_hpa
):
    """HPA channel files and a label file with columns of one's own: such a header
    reads as generic, so the layout is given; the cleaned copy records it and loads by
    itself (found by a newcomer's test: it was read as generic and no image was found)."""
    import labelaudit

    src = make_hpa(n=12, size=16)
    table = tmp_path / "tables" / "annotations.csv"
    table.parent.mkdir()
    from labelaudit.data.classes import HPA2021_CLASSES

    lines = (src / "train.csv").read_text().splitlines()[1:]
    named = [  # the classes by name, as a person writes them
        f"{i},{'|'.join(HPA2021_CLASSES[int(k)] for k in labels.split('|'))}"
        for i, labels in (line.split(",") for line in lines)
    ]
    table.write_text("\n".join(["field,locations", *named]) + "\n")
    options = {"labels": table, "images": src / "train", "id_column": "field"}
    options["label_column"] = "locations"
    with pytest.raises(DatasetError, match="image file not found.*layout='hpa2021'"):
        load_dataset(**options)  # the header alone says generic; the message says what to do
    from labelaudit.data.layouts import LoadReport

    report = LoadReport()
    load_dataset(**options, strict=False, report=report)
    hinted = ["layout='hpa2021'" in e.message for e in report.errors]
    assert hinted == [True] + [False] * 11  # the one shown: a folder listing, not one a row
    ds = load_dataset(**options, layout="hpa2021")
    probs = np.where(ds.labels, 0.9, 0.05)
    probs[0] = 1 - probs[0]
    np.save(tmp_path / "p.npy", probs)
    run = tmp_path / "run"
    labelaudit.scan(out=run, layout="hpa2021", probs=tmp_path / "p.npy", report=False, **options)
    cleaned = load_dataset(run / "cleaned")  # its marker says how to read it
    assert cleaned.layout == "hpa2021" and len(cleaned) == len(ds)
    assert np.array_equal(cleaned.labels, load_dataset(src).labels)  # names read as ids
    assert cleaned.label_file == run / "cleaned" / table.name


def test_hpa_labels_may_name_their_classes(tmp_path, make_hpa):
    """HPA channel files under a label file that names the classes (as a person writes
    it): names and ids mix, case and spacing aside; a name joined with another
    separator names it; an unknown name is one message naming the row."""
    from labelaudit.data.classes import HPA2021_CLASSES

    src = make_hpa(n=6, size=16, labels=["0", "2|3", "8", "16", "18", "7"])
    by_ids = load_dataset(src)
    table = tmp_path / "named.csv"
    rows = ["ID,Label", "field000,nucleoplasm", "field001,Nucleoli|3",
            "field002,  Intermediate   filaments", "field003,16", "field004,Negative",
            f"field005,{HPA2021_CLASSES[7]}"]  # fmt: skip
    table.write_text("\n".join(rows) + "\n")
    named = load_dataset(labels=table, images=src / "train", layout="hpa2021")
    assert np.array_equal(named.labels, by_ids.labels)
    assert HPA2021_CLASSES[18] == "Negative" and HPA2021_CLASSES[2] == "Nucleoli"
    table.write_text("ID,Label\nfield000,Nucleoli;Cytosol\n")
    with pytest.raises(DatasetError, match="look separated by ';'"):
        load_dataset(labels=table, images=src / "train", layout="hpa2021")
    table.write_text("ID,Label\nfield000,Nucleolus\n")
    with pytest.raises(DatasetError, match="line 2.*'Nucleolus' is neither an integer class id"):
        load_dataset(labels=table, images=src / "train", layout="hpa2021")
