"""segment_dataset: files written, comparison against masks made elsewhere, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cellfields import CENTRES, N_INTERIOR
from la_testutils import snapshot

from labelaudit.cells.dataset import format_comparison, segment_dataset
from labelaudit.cells.masks import load_masks, write_mask
from labelaudit.core.errors import DatasetError, SettingsError


def _reference(tmp_path, truth, fmt="png"):
    ref_dir = tmp_path / "ref"
    for image_id, labels in truth.items():
        write_mask(ref_dir, image_id, labels, fmt=fmt)
    return ref_dir


def test_writes_masks_overlays_tables_and_compares(make_cells_dataset, tmp_path):
    root, truth = make_cells_dataset(n=3)
    before = snapshot(root)
    ref_dir = _reference(tmp_path, truth)
    out = tmp_path / "seg"
    summary = segment_dataset(root, out, compare=ref_dir, workers=1)
    assert snapshot(root) == before  # the dataset is only read

    assert summary["fields"] == 3 and summary["cells"] == 3 * N_INTERIOR
    masks = load_masks(out / "masks", list(truth))
    assert load_masks(out, list(truth)).root == out / "masks"  # the output dir works too
    for image_id in truth:
        assert int(masks[image_id].max()) == N_INTERIOR
        assert (out / "overlays" / f"{image_id}.jpg").is_file()
    cells = pd.read_csv(out / "cells.csv", dtype={"id": str})
    assert len(cells) == 3 * N_INTERIOR
    assert list(cells.columns) == ["id", "cell", "area", "y0", "x0", "y1", "x1"]
    assert (cells["area"] > 2000).all()

    comp = summary["compare"]
    assert comp["headline"] == "all"
    assert comp["all"]["n_ref"] == 3 * len(CENTRES)
    assert comp["all"]["recall"] == 1.0 and comp["all"]["mean_iou"] > 0.8
    assert comp["interior"]["n_ref"] == 3 * N_INTERIOR
    assert comp["interior"]["recall"] == 1.0 and comp["interior"]["precision"] == 1.0
    per_field = pd.read_csv(out / "compare.csv", dtype={"id": str})
    assert sorted(per_field["cells"].unique()) == ["all", "interior"]
    assert len(per_field) == 6
    saved = json.loads((out / "segment.json").read_text())
    assert saved["compare"]["all"]["n_matched"] == comp["all"]["n_matched"]
    assert saved["params"]["drop_border"] is True
    text = format_comparison(summary)
    assert text.splitlines()[0].startswith("all cells") and "found (100.0%)" in text
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_npz_masks_and_parallel_workers(make_cells_dataset, tmp_path):
    root, truth = make_cells_dataset(n=2)
    ref_dir = _reference(tmp_path, truth, fmt="npz")
    out = tmp_path / "seg"
    summary = segment_dataset(
        root, out, compare=ref_dir, workers=2, overlays=False, mask_format="npz"
    )
    assert summary["workers"] == 2
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["f0.npz", "f1.npz"]
    assert not (out / "overlays").exists()
    assert summary["compare"]["all"]["recall"] == 1.0
    assert format_comparison({"fields": 1}) == ""


def test_missing_and_wrong_size_reference_masks(make_cells_dataset, tmp_path):
    root, truth = make_cells_dataset(n=2)
    ref_dir = _reference(tmp_path, {"f0": truth["f0"]})
    with pytest.raises(DatasetError, match="f1_predictedmask.png or f1.npz"):
        segment_dataset(root, tmp_path / "seg", compare=ref_dir, workers=1)
    write_mask(ref_dir, "f1", truth["f1"][:100])
    with pytest.raises(DatasetError, match=r"f1_predictedmask.png.*mask is 256 x 100 px"):
        segment_dataset(root, tmp_path / "seg", compare=ref_dir, workers=1)
    with pytest.raises(DatasetError, match="mask directory not found"):
        segment_dataset(root, tmp_path / "seg", compare=tmp_path / "nope", workers=1)
    with pytest.raises(SettingsError, match="inside the dataset"):
        segment_dataset(root, root / "seg", workers=1)
    with pytest.raises(SettingsError, match="mask format"):
        segment_dataset(root, tmp_path / "seg", mask_format="tif")
