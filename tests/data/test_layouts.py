"""Loading the three layouts, and the real HPA fields."""

from __future__ import annotations

import numpy as np
import pytest
from la_testutils import CHANNELS, HPA_SAMPLES, write_image

from labelaudit.core.errors import DatasetError
from labelaudit.data.layouts import detect_layout, load_dataset


def test_hpa2021_layout(make_hpa):
    root = make_hpa(n=5, labels=["7|1|2|0", "18", "17", "11", "15"])
    ds = load_dataset(root)
    assert ds.layout == "hpa2021"
    assert ds.labels.shape == (5, 19)
    assert ds.channels == CHANNELS
    assert ds.label_tokens(0) == ["0", "1", "2", "7"]
    assert ds.format_labels(ds.labels[0]) == "0|1|2|7"
    assert ds.class_names[18] == "Negative"
    assert [p.name for p in ds.sources[0].paths] == [f"field000_{c}.png" for c in CHANNELS]


def test_hpa2018_layout(tmp_path):
    root = tmp_path / "hpa18"
    for c in CHANNELS:
        write_image(root / "train" / f"a_{c}.png", np.zeros((8, 8), np.uint8))
        write_image(root / "train" / f"b_{c}.png", np.zeros((8, 8), np.uint8))
    (root / "train.csv").write_text("Id,Target\na,25 0 27\nb,7\n")
    ds = load_dataset(root)
    assert ds.layout == "hpa2018"
    assert ds.n_classes == 28
    assert ds.label_tokens(0) == ["0", "25", "27"]
    assert ds.format_labels(ds.labels[0]) == "0 25 27"


@pytest.mark.parametrize("use_classes_txt", [False, True])
def test_generic_names(tmp_path, use_classes_txt):
    root = tmp_path / "gen"
    write_image(root / "img" / "a.png", np.zeros((10, 12, 3), np.uint8))
    write_image(root / "img" / "b.png", np.zeros((10, 12, 3), np.uint8))
    (root / "labels.csv").write_text("image,labels\nimg/a.png,cat|dog\nimg/b.png,dog\n")
    if use_classes_txt:
        (root / "classes.txt").write_text("dog\ncat\nbird\n")
    ds = load_dataset(root)
    assert ds.layout == "generic"
    assert ds.channels == ("red", "green", "blue")
    if use_classes_txt:
        assert ds.class_names == ["dog", "cat", "bird"]
        assert ds.labels.tolist() == [[True, True, False], [True, False, False]]
    else:
        assert ds.class_names == ["cat", "dog"]
    assert ds.format_labels(ds.labels[1]) == "dog"


def test_generic_integer_ids_and_multichannel_tiff(tmp_path):
    root = tmp_path / "gen"
    write_image(root / "a.tif", np.zeros((5, 16, 16), np.uint16))
    write_image(root / "b.tif", np.zeros((5, 16, 16), np.uint16))
    (root / "labels.csv").write_text("image,labels\na.tif,0|2\nb.tif,1\n")
    (root / "classes.txt").write_text("x\ny\nz\n")
    ds = load_dataset(root)
    assert ds.class_names == ["x", "y", "z"]
    assert ds.class_tokens == ["0", "1", "2"]
    assert len(ds.channels) == 5


def test_bom_and_crlf_are_fine(make_hpa):
    root = make_hpa(n=2, labels=["1", "2"])
    (root / "train.csv").write_bytes(b"\xef\xbb\xbfID,Label\r\nfield000,1|2\r\nfield001,3\r\n")
    ds = load_dataset(root)
    assert ds.ids == ["field000", "field001"]
    assert ds.label_tokens(0) == ["1", "2"]


def test_layout_override(make_hpa):
    root = make_hpa(n=2, labels=["1", "2"])
    with pytest.raises(DatasetError, match="labels.csv: label file not found"):
        load_dataset(root, layout="generic")
    with pytest.raises(DatasetError, match=r"train.csv, line 1: expected columns Id,Target"):
        load_dataset(root, layout="hpa2018")
    with pytest.raises(DatasetError, match="no label file found"):
        detect_layout(root / "train")


def test_fingerprint_changes_with_labels_and_files(make_hpa):
    root = make_hpa(n=3, labels=["1", "2", "3"])
    a = load_dataset(root)
    (root / "train.csv").write_text("ID,Label\nfield000,1\nfield001,2\nfield002,4\n")
    b = load_dataset(root)
    assert a.fingerprint() != b.fingerprint()
    assert a.image_fingerprint() == b.image_fingerprint()


@pytest.mark.skipif(not HPA_SAMPLES.is_dir(), reason="shared HPA samples not present")
def test_real_hpa_samples():
    ds = load_dataset(HPA_SAMPLES)
    assert ds.layout == "hpa2021"
    assert len(ds) == 5
    row = ds.ids.index("000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0")
    assert ds.label_tokens(row) == ["0", "1", "2", "7"]
    assert ds.labels.sum() == 8


def test_symlinked_image_directory_is_refused_unless_followed(make_hpa, tmp_path):
    import os
    import shutil

    root = make_hpa(n=3)
    shutil.move(root / "train", tmp_path / "images")
    os.symlink(tmp_path / "images", root / "train")
    with pytest.raises(DatasetError, match="outside the dataset directory") as info:
        load_dataset(root)
    assert info.value.row == 2 and info.value.path == root / "train.csv"
    ds = load_dataset(root, follow_symlinks=True)
    assert len(ds) == 3 and ds.follow_symlinks


def test_image_dir_argument_is_admitted(make_hpa, tmp_path):
    import shutil

    root = make_hpa(n=2)
    shutil.move(root / "train", tmp_path / "images")
    (root / "train").mkdir()
    ds = load_dataset(root, image_dir=tmp_path / "images")
    assert len(ds) == 2


def test_recorded_load_options_round_trip(make_hpa):
    from labelaudit.data.layouts import recorded_load_options
    from labelaudit.data.readers import DEFAULT_MAX_PIXELS

    assert recorded_load_options({}) == {
        "follow_symlinks": False,
        "max_pixels": DEFAULT_MAX_PIXELS,
    }
    ds = load_dataset(make_hpa(n=2), max_pixels=5000, follow_symlinks=True)
    options = recorded_load_options({"follow_symlinks": True, "max_pixels": 5000})
    assert options == {"follow_symlinks": ds.follow_symlinks, "max_pixels": ds.max_pixels}


@pytest.mark.parametrize("bad", [0, -1, 2.5, "many"])
def test_max_pixels_must_be_a_positive_integer(make_hpa, bad):
    from labelaudit.core.errors import SettingsError

    with pytest.raises(SettingsError, match="max_pixels"):
        load_dataset(make_hpa(n=1), max_pixels=bad)
