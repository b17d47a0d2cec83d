"""benchmarks/realpix.py: the real-pixel sets, dense and sparse (issue 27's second set)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from la_testutils import load_benchmark
from PIL import Image


@pytest.fixture(scope="module")
def realpix():
    return load_benchmark("realpix")


def _green_cover(out: Path, ids: list[str]) -> np.ndarray:
    """Share of each field's green stain that is brighter than the dark background."""
    return np.array(
        [(np.asarray(Image.open(out / "train" / f"{i}_green.png")) > 40).mean() for i in ids]
    )


def test_sparse_fields_show_few_small_objects(realpix, tmp_path):
    dense = realpix.make_realpix(tmp_path / "dense", n=24, size=64, seed=3)
    sparse = realpix.make_realpix(tmp_path / "sparse", n=24, size=64, seed=3, sparse=True)
    d_truth = pd.read_csv(dense / "truth.csv", dtype=str, keep_default_na=False)
    s_truth = pd.read_csv(sparse / "truth.csv", dtype=str, keep_default_na=False)
    assert s_truth["ID"].str.startswith("sparse-").all()
    clean = s_truth["noise"] == "none"
    cover = _green_cover(sparse, list(s_truth["ID"][clean]))
    dense_cover = _green_cover(dense, list(d_truth["ID"][clean]))
    assert 0.02 < np.median(cover) < 0.3 < np.median(dense_cover)
    labels = pd.read_csv(sparse / "train.csv", dtype=str, keep_default_na=False)
    assert (labels["Label"] == s_truth["given_label"]).all()


def test_sparse_two_class_fields_mix_both_textures(realpix):
    rng = np.random.default_rng(0)
    src = realpix._sources()
    # Objects alternate between the labels: "coins" (5) is bright and smooth where
    # "gravel" (1) is grainy, so a two-class field holds more of both than either alone.
    both, mask = realpix._sparse_green(["1", "5"], src, 96, rng)
    assert both.shape == mask.shape == (96, 96)
    assert 0.0 <= both.min() and both.max() <= 1.0
    assert 0.02 < (both > 0.16).mean() < 0.4
    # The mask holds the objects: every one of them, where the stain is.
    n_objects = len(np.unique(mask)) - 1
    assert 4 <= n_objects <= 7 and mask.max() == n_objects
    assert both[mask > 0].mean() > 3 * both[mask == 0].mean()


def test_sparse_masks_are_the_objects_and_leave_the_pixels_as_they_were(realpix, tmp_path):
    """``--sparse`` writes each field's objects as its cells (for ``scan --level cell``);
    the images are those of a generator without masks (the documented set's md5)."""
    from labelaudit.cells.masks import read_mask

    out = realpix.make_realpix(tmp_path / "s", n=6, size=64, seed=1, sparse=True)
    ids = pd.read_csv(out / "train.csv", dtype=str)["ID"]
    for i in ids:
        mask = read_mask(out / "masks" / f"{i}_predictedmask.png")
        assert mask.shape == (64, 64) and 4 <= len(np.unique(mask)) - 1 <= 7
    # The pixels' digest as the generator wrote them before it wrote masks.
    digest = hashlib.sha256()
    for f in sorted((out / "train").iterdir()):
        digest.update(f.name.encode())
        digest.update(np.asarray(Image.open(f)).tobytes())
    assert digest.hexdigest()[:16] == "a93a3511525fb574"
    dense = realpix.make_realpix(tmp_path / "d", n=2, size=64, seed=1)
    assert not (dense / "masks").exists()  # a dense field has no objects


def test_an_existing_directory_is_refused(realpix, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        realpix.make_realpix(tmp_path / "x", n=2, sparse=True)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
