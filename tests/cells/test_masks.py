"""Mask files (round trips, clear errors) and the comparison of two masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from labelaudit.cells.masks import (
    MASK_KEY,
    compare_masks,
    load_masks,
    read_mask,
    summarize_comparisons,
    write_mask,
)
from labelaudit.core.errors import DatasetError, SettingsError


def _labels(n: int, shape=(40, 40)) -> np.ndarray:
    rng = np.random.default_rng(n)
    return rng.integers(0, n + 1, size=shape).astype(np.int32)


def test_png_round_trip_8_and_16_bit(tmp_path):
    small = _labels(200)
    path = write_mask(tmp_path, "a", small)
    assert path.name == "a_predictedmask.png"
    with Image.open(path) as im:
        assert im.mode == "L"
    back = read_mask(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, small)

    big = _labels(300)
    path = write_mask(tmp_path, "b", big)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # 16-bit grayscale
    back = read_mask(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, big)
    with pytest.raises(SettingsError, match="npz"):
        write_mask(tmp_path, "c", np.full((2, 2), 70000, np.int32))


def test_npz_round_trip_and_foreign_npz(tmp_path):
    labels = _labels(70000, shape=(8, 8)) * 3  # more labels than a 16-bit PNG holds
    path = write_mask(tmp_path, "a", labels, fmt="npz")
    assert path.name == "a.npz"
    np.testing.assert_array_equal(read_mask(path), labels)
    with np.load(path) as data:  # written under the name read_mask looks for first
        assert list(data.keys()) == [MASK_KEY]
    # A file written elsewhere with a single array under any name.
    np.savez(tmp_path / "b.npz", seg=labels.astype(np.int64))
    np.testing.assert_array_equal(read_mask(tmp_path / "b.npz"), labels)
    np.savez(tmp_path / "c.npz", x=labels, y=labels)
    with pytest.raises(DatasetError, match="c.npz.*expected one array"):
        read_mask(tmp_path / "c.npz")


def test_load_masks_finds_png_or_npz_and_names_missing_files(tmp_path):
    write_mask(tmp_path, "a", _labels(3))
    write_mask(tmp_path, "b", _labels(4), fmt="npz")
    masks = load_masks(tmp_path, ["a", "b"])
    assert set(masks) == {"a", "b"} and len(masks) == 2
    np.testing.assert_array_equal(masks["b"], _labels(4))
    with pytest.raises(DatasetError) as err:
        load_masks(tmp_path, ["a", "zz"])
    text = str(err.value)
    assert "zz_predictedmask.png" in text and "zz.npz" in text and "'zz'" in text
    with pytest.raises(DatasetError, match="mask directory not found"):
        load_masks(tmp_path / "nope", ["a"])


@pytest.mark.parametrize(
    ("name", "writer", "message"),
    [
        ("a_predictedmask.png", lambda p: p.write_bytes(b"not a png"), "cannot read mask"),
        ("b_predictedmask.png", lambda p: p.write_bytes(b""), "cannot read mask"),
        (
            "c_predictedmask.png",
            lambda p: Image.new("RGB", (4, 4)).save(p),
            "single-channel integer label image, got PNG mode RGB",
        ),
        ("d.npz", lambda p: p.write_bytes(b"PK\x03\x04 broken"), "cannot read mask"),
        (
            "e.npz",
            lambda p: np.savez(p, mask=np.zeros((2, 2), np.float32)),
            "expected integer labels",
        ),
        ("f.npz", lambda p: np.savez(p, mask=np.zeros((2, 2, 2), int)), "2-D label image"),
        ("g.npz", lambda p: np.savez(p, mask=-np.ones((2, 2), int)), "negative labels"),
    ],
)
def test_bad_mask_files_name_the_file(tmp_path, name, writer, message):
    path = tmp_path / name
    writer(path)
    image_id = name.split("_")[0].split(".")[0]
    masks = load_masks(tmp_path, [image_id])  # located now, decoded on access
    with pytest.raises(DatasetError) as err:
        masks[image_id]
    assert message in str(err.value)
    assert name in str(err.value)


def test_compare_hand_made_masks_with_known_iou():
    ref = np.zeros((40, 40), np.int32)
    pred = np.zeros((40, 40), np.int32)
    ref[0:10, 0:10] = 1  # 100 px
    pred[0:10, 2:12] = 5  # shifted by 2: overlap 80, union 120 -> IoU 2/3
    ref[20:30, 20:30] = 2  # 100 px
    pred[20:25, 20:30] = 6  # half of it: IoU 1/2, matched at the 0.5 threshold
    ref[30:35, 0:5] = 3  # nothing finds it
    pred[12:16, 30:34] = 7  # nothing in the reference
    score = compare_masks(pred, ref)
    assert (score["n_ref"], score["n_pred"], score["n_matched"]) == (3, 3, 2)
    assert score["mean_iou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert score["recall"] == pytest.approx(2 / 3)
    assert score["precision"] == pytest.approx(2 / 3)
    assert score["mean_best_iou"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    stricter = compare_masks(pred, ref, threshold=0.6)
    assert stricter["n_matched"] == 1 and stricter["mean_iou"] == pytest.approx(2 / 3)
    # The same result through the path for large label values.
    big = compare_masks(np.where(pred > 0, pred + 40000, 0), np.where(ref > 0, ref + 50000, 0))
    assert big == score


def test_compare_is_one_to_one_and_handles_borders_and_empties():
    ref = np.zeros((20, 20), np.int32)
    ref[5:15, 5:15] = 1
    pred = np.zeros_like(ref)
    pred[5:15, 5:10] = 1  # two halves: each has IoU 0.5 with the one reference cell
    pred[5:15, 10:15] = 2
    score = compare_masks(pred, ref, threshold=0.4)
    assert score["n_matched"] == 1 and score["precision"] == 0.5

    ref[0:3, 0:3] = 2  # touches the border
    pred[0:3, 0:3] = 3
    assert compare_masks(pred, ref)["n_ref"] == 2
    inner = compare_masks(pred, ref, exclude_border=True)
    assert inner["n_ref"] == 1 and inner["n_pred"] == 2

    empty = np.zeros_like(ref)
    none = compare_masks(empty, ref)
    assert none["n_matched"] == 0 and none["recall"] == 0 and np.isnan(none["mean_iou"])
    with pytest.raises(SettingsError, match="shape"):
        compare_masks(ref, ref[:10])


def test_summarize_pools_by_cells():
    a = {"n_ref": 10, "n_pred": 8, "n_matched": 8, "mean_iou": 0.9}
    b = {"n_ref": 30, "n_pred": 20, "n_matched": 16, "mean_iou": 0.6}
    pooled = summarize_comparisons([a, b])
    assert pooled["n_matched"] == 24 and pooled["recall"] == pytest.approx(24 / 40)
    assert pooled["mean_iou"] == pytest.approx((8 * 0.9 + 16 * 0.6) / 24)
    assert pooled["precision"] == pytest.approx(24 / 28)


def test_generic_ids_find_masks_without_their_image_extension(tmp_path):
    from labelaudit.cells.masks import find_mask, write_mask

    labels = np.zeros((8, 8), dtype=np.int32)
    labels[2:5, 2:5] = 1
    (tmp_path / "plate1").mkdir()
    written = write_mask(tmp_path, "plate1/A01", labels)
    assert find_mask(tmp_path, "plate1/A01.png") == written
    with pytest.raises(DatasetError, match="A02_predictedmask.png"):
        find_mask(tmp_path, "plate1/A02.tif")
