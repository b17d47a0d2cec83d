"""Exact and near duplicates (labelaudit.detect.duplicates) and synth's planted copies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelaudit.data import synth
from labelaudit.data.cache import build_cache
from labelaudit.data.layouts import load_dataset
from labelaudit.detect.base import AuditInputs
from labelaudit.detect.duplicates import (
    find_duplicates,
    group_pairs,
    hamming_pairs,
    perceptual_hashes,
    phash,
    pixel_keys,
)
from labelaudit.leaks import cache_signatures

CLASSES = ["a", "b", "c"]


def _inputs(labels: list[list[int]], embeddings: np.ndarray | None = None) -> AuditInputs:
    mat = np.zeros((len(labels), len(CLASSES)), dtype=bool)
    for r, row in enumerate(labels):
        mat[r, row] = True
    return AuditInputs(
        ids=[f"img{r}" for r in range(len(labels))],
        class_names=CLASSES,
        class_tokens=["0", "1", "2"],
        label_sep="|",
        labels=mat,
        embeddings=embeddings,
    )


def _fields(n: int, seed: int = 0) -> np.ndarray:
    """n distinct smooth 4-channel fields (N, 4, 48, 48) uint8."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    raw = rng.random((n, 4, 48, 48)) * 255
    smooth = ndimage.gaussian_filter(raw, sigma=(0, 0, 3, 3)) - 127
    return np.clip(127 + smooth * 8, 0, 255).astype(np.uint8)


def test_phash_survives_a_shift_and_noise_but_not_another_image():
    imgs = _fields(2)
    copy = synth.near_copy({str(c): imgs[0, c] for c in range(4)}, np.random.default_rng(1))
    moved = np.stack([copy[str(c)] for c in range(4)])
    assert not np.array_equal(moved, imgs[0])
    h = perceptual_hashes(np.stack([imgs[0], moved, imgs[1]]))
    assert h.shape == (3, 4)  # one 64-bit hash per channel
    assert np.bitwise_count(h[0] ^ h[1]).sum() <= 0.2 * 256
    assert np.bitwise_count(h[0] ^ h[2]).sum() >= 0.35 * 256
    assert phash(imgs[0, 0]).shape == (64,)


def test_hamming_pairs_within_and_across():
    a = np.array([0, 0b111, 0xFFFF], dtype=np.uint64)
    i, j, d = hamming_pairs(a, max_distance=3)
    assert list(zip(i, j, d, strict=True)) == [(0, 1, 3)]
    i, j, d = hamming_pairs(a, np.array([0b1], dtype=np.uint64), max_distance=1)
    assert list(zip(i, j, d, strict=True)) == [(0, 0, 1)]


def test_groups_are_connected_components_numbered_in_dataset_order():
    group = group_pairs(6, np.array([3, 0, 4]), np.array([5, 2, 5]))
    assert group.tolist() == [0, -1, 0, 1, 1, 1]


def test_exact_duplicates_with_the_same_labels_form_a_group_without_conflict():
    imgs = _fields(4)
    imgs[3] = imgs[1]  # an identical copy
    inputs = _inputs([[0], [1], [2], [1]])
    dups = find_duplicates(inputs, keys=pixel_keys(imgs))
    assert dups.group.tolist() == [-1, 0, -1, 0]
    assert dups.duplicate_of.tolist() == ["", "", "", "img1"]
    assert dups.conflict.tolist() == ["", "", "", ""]
    assert dups.result.findings.empty and not dups.result.image_flagged.any()
    assert dups.pairs[["a", "b", "evidence"]].values.tolist() == [["img1", "img3", "exact"]]


def test_conflicting_near_duplicates_are_label_problems_on_the_classes_they_disagree_on():
    imgs = _fields(5)
    copy = synth.near_copy({str(c): imgs[0, c] for c in range(4)}, np.random.default_rng(2))
    imgs[4] = np.stack([copy[str(c)] for c in range(4)])
    inputs = _inputs([[0, 1], [1], [2], [0], [0, 2]])
    dups = find_duplicates(inputs, keys=pixel_keys(imgs), hashes=perceptual_hashes(imgs))
    assert dups.group.tolist() == [0, -1, -1, -1, 0]
    assert dups.duplicate_of[4] == "img0"
    assert dups.conflict[0] == dups.conflict[4] == "1;2"  # 0 agrees; 1 and 2 do not
    f = dups.result.findings
    assert set(zip(f["id"], f["class"], strict=True)) == {
        ("img0", "b"),
        ("img0", "c"),
        ("img4", "b"),
        ("img4", "c"),
    }
    assert f["flagged"].all() and set(f["suggestion"]) == {"review"}
    assert f["value"].tolist() == [0.5] * 4  # half of the group carries each class
    assert dups.result.image_flagged.tolist() == [True, False, False, False, True]
    assert "phash" in dups.pairs["evidence"].iloc[0]
    cols = dups.columns(inputs.ids)
    assert cols.loc["img4", "duplicate_group"] == 0 and pd.isna(cols.loc["img1", "duplicate_group"])


def test_embedding_neighbours_need_a_close_hash_when_hashes_are_given():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 16))
    emb[7] = emb[3] + 1e-4  # an embedding near-duplicate
    inputs = _inputs([[0]] * 40, embeddings=emb)
    alone = find_duplicates(inputs)
    assert alone.group[3] == alone.group[7] == 0 and (alone.group >= 0).sum() == 2
    assert alone.pairs["evidence"].tolist() == ["embedding"]
    hashes = rng.integers(0, 2**63, size=(40, 4), dtype=np.uint64)
    near = hashes.copy()
    near[7] = near[3] ^ np.uint64(0b111)  # 3 bits of 256 apart
    both = find_duplicates(inputs, hashes=near)
    assert both.group[3] == both.group[7] == 0 and (both.group >= 0).sum() == 2
    assert both.pairs["evidence"].tolist() == ["embedding;phash"]
    hashes[7] = ~hashes[3]  # the pixels say otherwise
    assert (find_duplicates(inputs, hashes=hashes).group < 0).all()


def test_synth_plants_recorded_near_duplicates_that_the_detector_finds(tmp_path):
    out = tmp_path / "ds"
    truth = synth.synthesize(out, n=16, size=64, seed=4, duplicates=6)
    assert len(truth) == 22 and list(truth.columns)[-1] == "duplicate_of"
    copies = truth[truth["duplicate_of"] != ""]
    assert len(copies) == 6 and copies["duplicate_of"].isin(truth["ID"][:16]).all()
    assert copies["duplicate_of"].is_unique
    conflict = copies["noise"].str.contains("duplicate_conflict")
    assert conflict.sum() == 2
    src = truth.set_index("ID").loc[copies["duplicate_of"]]
    same = copies["given_label"].to_numpy() == src["given_label"].to_numpy()
    assert (same == ~conflict.to_numpy()).all()
    train = pd.read_csv(out / "train.csv", dtype=str)
    assert train["ID"].tolist() == truth["ID"].tolist()

    ds = load_dataset(out)
    cache = build_cache(ds, 64, tmp_path / "cache")
    keys, hashes = cache_signatures(cache, ds.ids)
    mat = np.zeros((len(ds.ids), 19), dtype=bool)
    dups = find_duplicates(
        AuditInputs(ds.ids, [str(c) for c in range(19)], [str(c) for c in range(19)], "|", mat),
        keys=keys,
        hashes=hashes,
    )
    found = {tuple(sorted(p)) for p in dups.pairs[["a", "b"]].values.tolist()}
    planted = {tuple(sorted(p)) for p in copies[["ID", "duplicate_of"]].values.tolist()}
    assert planted <= found and len(found) == len(planted)


def test_synth_duplicates_are_checked(tmp_path):
    with pytest.raises(Exception, match="duplicates must be from 0 to n"):
        synth.synthesize(tmp_path / "a", n=4, size=32, duplicates=5)
    with pytest.raises(Exception, match="cannot be combined"):
        synth.synthesize(tmp_path / "b", n=4, size=32, duplicates=1, write_masks=True)
