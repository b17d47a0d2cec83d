"""The cell cache: shapes, field mapping, statistics, masking, keys and reuse, errors."""

from __future__ import annotations

import numpy as np
import pytest
from cellfields import CENTRES, N_INTERIOR
from PIL import Image

from labelaudit.cells.crops import build_cell_cache, cell_stats, crop_cells, square_box
from labelaudit.cells.masks import load_masks, write_mask
from labelaudit.core.errors import DatasetError, SettingsError
from labelaudit.data.cache import build_cache
from labelaudit.data.layouts import load_dataset
from labelaudit.data.measures import STAT_NAMES, channel_stats


def test_shapes_mapping_and_stats(make_cells_dataset, tmp_path):
    root, truth = make_cells_dataset(n=3)
    ds = load_dataset(root)
    cache = build_cell_cache(ds, truth, 32, tmp_path / "c", workers=1)
    m = 3 * len(CENTRES)
    assert not cache.reused and len(cache) == m
    assert cache.images.shape == (m, 4, 32, 32) and cache.images.dtype == np.uint8
    cells = cache.cells
    assert cells["field"].tolist() == [f for f in ds.ids for _ in CENTRES]
    assert cells["field_index"].tolist() == [i for i in range(3) for _ in CENTRES]
    assert cells["id"].tolist()[:2] == ["f0_1", "f0_2"]
    assert cache.ids == cells["id"].tolist()
    assert cells["border"].sum() == 3  # one cut cell per field
    np.testing.assert_array_equal(cache.field_rows("f1"), np.arange(len(CENTRES), 2 * m // 3))

    # Box, area and statistics of one cell against a direct computation.
    row = cells.iloc[len(CENTRES) + 2]
    labels = truth[row["field"]]
    inside = labels == row["cell"]
    ys, xs = np.nonzero(inside)
    assert (row["y0"], row["x0"], row["y1"], row["x1"]) == (
        ys.min(),
        xs.min(),
        ys.max() + 1,
        xs.max() + 1,
    )
    assert row["area"] == inside.sum()
    assert (row["height"], row["width"], row["bit_depth"]) == (
        row["y1"] - row["y0"],
        row["x1"] - row["x0"],
        8,
    )
    red = np.asarray(Image.open(root / "train" / f"{row['field']}_red.png"))
    assert row["red_mean"] == pytest.approx(red[inside].mean() / 255)
    assert row["red_p99"] == pytest.approx(channel_stats(red[inside].reshape(1, -1))["p99"])
    assert row["red_focus"] > 0

    # The stats view has the field cache's columns, so field-level code reads cells.
    fields = build_cache(ds, 32, tmp_path / "c", workers=1)
    assert list(cache.stats.columns) == list(fields.stats.columns)


def test_crops_are_masked_and_centred(known):
    channels, truth = known
    planes = [channels[c] for c in ("red", "green", "blue", "yellow")]
    crops, rows = crop_cells(planes, truth, 48)
    assert crops.shape == (len(CENTRES), 4, 48, 48)
    lone = [r["cell"] for r in rows].index(int(truth[70, 200]))  # a round, lone cell
    crop = crops[lone, 0]
    assert crop[0, 0] == crop[0, -1] == crop[-1, 0] == crop[-1, -1] == 0  # outside the disc
    assert crop[24, 24] > 100  # the cell fills the middle
    # Pixels of a neighbour inside the box are masked out: the touching pair.
    left = [r["cell"] for r in rows].index(int(truth[60, 60]))
    assert crops[left, 0][24, -1] == 0
    padded, _ = crop_cells(planes, truth, 48, pad=0.25)
    assert padded[lone, 0][:8].max() == 0 and padded[lone, 0][24, 24] > 100
    assert square_box(10, 20, 30, 60, 0.0) == (0, 20, 40, 60)
    # Stats equal channel_stats over the cell; focus ignores the outline.
    inside = truth == truth[70, 200]
    st = cell_stats(channels["red"], inside)
    assert st["mean"] == pytest.approx(channels["red"][inside].mean() / 255)
    assert set(st) == set(STAT_NAMES)


def test_reuse_and_keys(make_cells_dataset, tmp_path):
    root, truth = make_cells_dataset(n=2)
    ds = load_dataset(root)
    mask_dir = tmp_path / "masks"
    for image_id, labels in truth.items():
        write_mask(mask_dir, image_id, labels)
    first = build_cell_cache(ds, mask_dir, 16, tmp_path / "c", workers=1)
    again = build_cell_cache(ds, load_masks(mask_dir, ds.ids), 16, tmp_path / "c")
    assert again.reused and again.path == first.path
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(first.images))
    with pytest.raises(ValueError):
        again.images[0, 0, 0, 0] = 1  # read-only memmap
    # In-memory masks with the same pixels are another source: another key.
    mem = build_cell_cache(ds, truth, 16, tmp_path / "c", workers=1)
    assert mem.path != first.path
    np.testing.assert_array_equal(np.asarray(mem.images), np.asarray(first.images))
    assert build_cell_cache(ds, truth, 16, tmp_path / "c").reused
    # Changed masks, size, padding or border rule: new entries.
    changed = {k: np.where(v == 1, 0, v) for k, v in truth.items()}
    assert len(build_cell_cache(ds, changed, 16, tmp_path / "c", workers=1)) == len(mem) - 2
    assert build_cell_cache(ds, truth, 24, tmp_path / "c", workers=1).path != mem.path
    assert build_cell_cache(ds, truth, 16, tmp_path / "c", pad=0.1, workers=1).path != mem.path
    inner = build_cell_cache(ds, truth, 16, tmp_path / "c", drop_border=True, workers=1)
    assert len(inner) == 2 * N_INTERIOR and not inner.cells["border"].any()
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".tmp")]


def test_segments_when_no_masks_are_given(make_cells_dataset, tmp_path):
    root, _ = make_cells_dataset(n=2)
    ds = load_dataset(root)
    cache = build_cell_cache(ds, None, 16, tmp_path / "c", workers=1)
    assert len(cache) == 2 * N_INTERIOR
    assert sorted(p.name for p in cache.masks_dir.iterdir()) == [
        "f0_predictedmask.png",
        "f1_predictedmask.png",
    ]
    assert build_cell_cache(ds, None, 16, tmp_path / "c").reused


def test_errors_and_empty_masks(make_cells_dataset, tmp_path):
    root, truth = make_cells_dataset(n=2)
    ds = load_dataset(root)
    mask_dir = tmp_path / "masks"
    write_mask(mask_dir, "f0", truth["f0"])
    with pytest.raises(DatasetError, match="f1_predictedmask.png or f1.npz"):
        build_cell_cache(ds, mask_dir, 16, tmp_path / "c")
    write_mask(mask_dir, "f1", truth["f1"][:, :200])
    with pytest.raises(DatasetError, match=r"f1_predictedmask.png.*256 x 256 px"):
        build_cell_cache(ds, mask_dir, 16, tmp_path / "c", workers=1)
    with pytest.raises(DatasetError, match="'f1'"):
        build_cell_cache(ds, {"f0": truth["f0"]}, 16, tmp_path / "c")
    with pytest.raises(SettingsError):
        build_cell_cache(ds, truth, 0, tmp_path / "c")
    empty = {k: np.zeros_like(v) for k, v in truth.items()}
    cache = build_cell_cache(ds, empty, 16, tmp_path / "c", workers=1)
    assert len(cache) == 0 and cache.images.shape == (0, 4, 16, 16)
    assert "red_mean" in cache.cells.columns
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".tmp")]
