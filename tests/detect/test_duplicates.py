"""Exact and near duplicates (labelaudit.detect.duplicates) and synth's planted copies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelaudit.data.cache import build_cache
from labelaudit.data.layouts import load_dataset
from labelaudit.detect.base import AuditInputs
from labelaudit.detect.duplicates import (
    PixelVerifier,
    find_duplicates,
    perceptual_hashes,
    phash,
    pixel_keys,
    verified_groups,
)
from labelaudit.pipeline.leaks import cache_signatures
from labelaudit.synth import simulate as synth

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


def _copy(img: np.ndarray, seed: int) -> np.ndarray:
    """A near copy (synth's: shifted a few pixels, re-noised) of a (C, S, S) field."""
    copy = synth.near_copy({str(c): img[c] for c in range(len(img))}, np.random.default_rng(seed))
    return np.stack([copy[str(c)] for c in range(len(img))])


def _cropped(img: np.ndarray, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    """The field cropped by a few pixels per side and resized back (as the cache would)."""
    import cv2

    s = img.shape[-1]
    return np.stack(
        [
            cv2.resize(ch[top : s - bottom, left : s - right], (s, s), interpolation=cv2.INTER_AREA)
            for ch in img
        ]
    )


def _jpeg(img: np.ndarray, quality: int = 75) -> np.ndarray:
    """Each channel re-encoded as JPEG and decoded."""
    import io

    from PIL import Image

    out = []
    for ch in img:
        buf = io.BytesIO()
        Image.fromarray(ch).save(buf, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue()))))
    return np.stack(out)


def test_groups_hold_only_images_that_verify_pairwise_not_chains():
    pairs = pd.DataFrame({"i": [0, 1, 3], "j": [1, 2, 4], "correlation": [0.9, 0.95, 0.9]})
    unlike = {(0, 2)}  # A~B and B~C verified, A and C do not agree

    def agrees(u: int, v: int) -> bool:
        return (min(u, v), max(u, v)) not in unlike

    group, reps = verified_groups(6, pairs, agrees)
    assert group[0] != group[2] or group[0] < 0
    assert group[1] >= 0 and group[1] == group[2]  # B's strongest partner joins it
    assert group[0] == -1  # A alone: it does not verify against C
    assert group[3] == group[4] >= 0 and group[5] == -1
    assert reps == [1, 3]  # representatives in dataset order; groups numbered by them
    assert group.tolist() == [-1, 0, 0, 1, 1, -1]


def test_a_chain_of_partial_copies_does_not_make_one_group():
    imgs = _fields(20, seed=3)
    a, c = imgs[0].copy(), imgs[1].copy()
    b = a.copy()
    b[:, :, 24:] = c[:, :, 24:]  # B: A's left half, C's right half
    imgs[0], imgs[1], imgs[2] = a, b, c
    inputs = _inputs([[0]] * 20)  # a small set: all pairs are candidates
    # A bar low enough that half a field verifies: A~B and B~C pass, A~C does not.
    dups = find_duplicates(inputs, images=imgs, min_correlation=0.3, null_fraction=0.9)
    found = {tuple(sorted(p)) for p in dups.pairs[["a", "b"]].values.tolist()}
    assert ("img0", "img1") in found and ("img1", "img2") in found
    assert ("img0", "img2") not in found
    assert not (dups.group[0] >= 0 and dups.group[0] == dups.group[2])
    assert dups.summary["largest_group"] == 2
    assert dups.pairs["same_group"].sum() == 1  # the other verified pair stays a pair


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
    with_pixels = find_duplicates(inputs, images=imgs, keys=pixel_keys(imgs))
    assert with_pixels.pairs[["a", "b", "evidence"]].values.tolist() == [
        ["img1", "img3", "exact;neighbour"]
    ]
    assert with_pixels.pairs["correlation"].tolist() == [1.0]


def test_conflicting_near_duplicates_are_label_problems_on_the_classes_they_disagree_on():
    imgs = _fields(5)
    imgs[4] = _copy(imgs[0], 2)
    inputs = _inputs([[0, 1], [1], [2], [0], [0, 2]])
    dups = find_duplicates(inputs, keys=pixel_keys(imgs), images=imgs)
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
    row = dups.pairs.iloc[0]
    assert row["evidence"] == "neighbour" and row["correlation"] >= row["threshold"]
    assert 0 <= row["phash_distance"] <= 0.2 * 256  # the hash is recorded as evidence
    assert row["null_correlation"] < 0.5 < row["correlation"]
    cols = dups.columns(inputs.ids)
    assert cols.loc["img4", "duplicate_group"] == 0 and pd.isna(cols.loc["img1", "duplicate_group"])


def test_crops_and_jpeg_reencodes_verify_at_their_scale_and_shift():
    imgs = _fields(3, seed=5)
    verifier = PixelVerifier(
        np.stack([imgs[0], _cropped(imgs[0], 3, 0, 0, 2), _jpeg(_copy(imgs[0], 1)), imgs[1]])
    )
    crop = verifier.match(0, 1)
    assert crop.correlation > 0.9 and crop.scale > 1.03  # b is a zoomed-in view of a
    assert verifier.match(0, 2).correlation > 0.9
    assert verifier.match(0, 3).correlation < 0.5  # another field


@pytest.mark.parametrize("inverted_file", [False, True])
def test_index_path_finds_planted_copies_among_many_fields(monkeypatch, inverted_file):
    from labelaudit.detect import pixelmatch

    if inverted_file:  # the large-set path: principal axes and an inverted file
        monkeypatch.setattr(pixelmatch, "EXACT_INDEX_MAX", 40)
    imgs = _fields(80, seed=7)
    imgs[70] = _copy(imgs[3], 1)
    imgs[71] = _cropped(imgs[9], 2, 1, 0, 2)
    imgs[72] = _jpeg(imgs[20], 70)
    imgs[73] = _copy(imgs[3], 4)  # a second copy of field 3: a group of three
    inputs = _inputs([[0]] * 80)
    dups = find_duplicates(inputs, images=imgs, keys=pixel_keys(imgs))
    found = {tuple(sorted(p)) for p in dups.pairs[["a", "b"]].values.tolist()}
    planted = {("img3", "img70"), ("img71", "img9"), ("img20", "img72"), ("img3", "img73")}
    assert planted <= found
    assert found <= planted | {("img70", "img73")}  # the two copies of 3 match each other
    assert dups.group[3] == dups.group[70] == dups.group[73] >= 0
    assert dups.summary["largest_group"] == 3 and dups.summary["n_groups"] == 3


def _empty_fields(n: int, seed: int) -> np.ndarray:
    """Dark fields with a shared vignetting and faint camera noise: no structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    vignette = 12 - 6 * (((yy - 24) ** 2 + (xx - 24) ** 2) / 24**2)
    raw = vignette + rng.normal(0, 0.3, (n, 4, 48, 48))
    return np.clip(np.rint(raw), 0, 255).astype(np.uint8)


def test_an_empty_background_pair_is_not_a_duplicate_but_low_information():
    imgs = np.concatenate([_empty_fields(2, seed=1), _fields(8, seed=2)])
    inputs = _inputs([[0], [1]] + [[2]] * 8)
    dups = find_duplicates(inputs, images=imgs, keys=pixel_keys(imgs))
    assert dups.pairs.empty and (dups.group < 0).all()
    assert dups.low_information.tolist() == [True, True] + [False] * 8
    assert dups.summary["n_low_information"] == 2
    assert dups.result.columns["duplicate_low_information"][:2].all()


def test_alike_texture_is_not_a_duplicate():
    rng = np.random.default_rng(0)
    from scipy import ndimage

    # 40 fields of one texture (independent blobs of one size and brightness).
    raw = ndimage.gaussian_filter(rng.random((40, 2, 48, 48)), sigma=(0, 0, 1.5, 1.5))
    imgs = np.clip(127 + (raw - raw.mean()) * 900, 0, 255).astype(np.uint8)
    imgs[39] = _copy(imgs[5], 3)
    dups = find_duplicates(_inputs([[0]] * 40), images=imgs)
    assert dups.pairs[["a", "b"]].values.tolist() == [["img5", "img39"]]


def test_embedding_neighbours_are_only_candidates_checked_on_the_pixels():
    rng = np.random.default_rng(0)
    imgs = _fields(40, seed=11)
    emb = rng.normal(size=(40, 16))
    emb[7] = emb[3] + 1e-4  # an embedding near-duplicate whose pixels differ
    emb[9] = emb[4] + 1e-4
    imgs[9] = _copy(imgs[4], 2)  # ... and one whose pixels agree
    inputs = _inputs([[0]] * 40, embeddings=emb)
    dups = find_duplicates(inputs, images=imgs)
    assert dups.pairs[["a", "b"]].values.tolist() == [["img4", "img9"]]
    assert dups.pairs["evidence"].tolist() == ["embedding;neighbour"]
    assert dups.summary["evidence"]["embedding"] == 2  # both were candidates
    assert find_duplicates(inputs).pairs.empty  # without pixels: nothing is verified


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
    keys, images = cache_signatures(cache, ds.ids)
    mat = np.zeros((len(ds.ids), 19), dtype=bool)
    dups = find_duplicates(
        AuditInputs(ds.ids, [str(c) for c in range(19)], [str(c) for c in range(19)], "|", mat),
        keys=keys,
        images=images,
    )
    found = {tuple(sorted(p)) for p in dups.pairs[["a", "b"]].values.tolist()}
    planted = {tuple(sorted(p)) for p in copies[["ID", "duplicate_of"]].values.tolist()}
    assert planted <= found and len(found) == len(planted)


def test_synth_duplicates_are_checked(tmp_path):
    with pytest.raises(Exception, match="duplicates must be from 0 to n"):
        synth.synthesize(tmp_path / "a", n=4, size=32, duplicates=5)
    with pytest.raises(Exception, match="cannot be combined"):
        synth.synthesize(tmp_path / "b", n=4, size=32, duplicates=1, write_masks=True)


def test_duplicates_come_in_through_the_registry_with_their_parameters():
    import dataclasses

    from labelaudit.core.errors import RunDirError, SettingsError
    from labelaudit.detect import DuplicateImages, PixelSignatures, get_detector
    from labelaudit.pipeline.compare import check_detectors, issues_columns, run_detectors

    imgs = _fields(5)
    imgs[4] = _copy(imgs[0], 2)
    inputs = _inputs([[0, 1], [1], [2], [0], [0, 2]])
    with_pixels = dataclasses.replace(inputs, pixels=PixelSignatures(pixel_keys(imgs), imgs))
    detector = get_detector("duplicates", min_correlation=0.8)
    assert isinstance(detector, DuplicateImages) and detector.min_correlation == 0.8
    direct = find_duplicates(with_pixels, keys=pixel_keys(imgs), images=imgs, min_correlation=0.8)
    result = detector.run(with_pixels)
    pd.testing.assert_frame_equal(result.findings, direct.result.findings)
    assert result.image_flagged.tolist() == [True, False, False, False, True]
    assert detector.groups(with_pixels).conflict[0] == "1;2"
    assert detector.run(inputs).findings.empty  # no pixels: nothing can be verified
    with pytest.raises(SettingsError, match="duplicates: null_fraction must be in"):
        get_detector("duplicates", null_fraction=1.5)
    with pytest.raises(SettingsError, match="no parameter 'ratio'"):
        get_detector("duplicates", ratio=0.5)
    with pytest.raises(RunDirError, match="pixels of 5 images with 4 keys"):
        dataclasses.replace(inputs, pixels=PixelSignatures(pixel_keys(imgs)[:4], imgs))
    # It runs after the comparison, on the run's image cache: not one of the compared.
    assert not {"duplicate_group", "duplicate_of"} & set(issues_columns())
    with pytest.raises(SettingsError, match="'duplicates' runs after the comparison"):
        check_detectors(["confident", "duplicates"])
    with pytest.raises(SettingsError, match="'duplicates' runs after the comparison"):
        run_detectors(with_pixels, ["duplicates"])
