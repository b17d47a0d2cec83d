"""The synthetic ground-truth dataset generator (labelaudit.synth.simulate)."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from labelaudit.core.errors import SettingsError
from labelaudit.data.classes import HPA2021_CLASSES, HPA_CHANNELS
from labelaudit.data.hpa_stats import (
    HPA2021_CLASS_COUNTS,
    HPA2021_LABELS_PER_FIELD,
    HPA2021_N_FIELDS,
    NEGATIVE,
)
from labelaudit.synth import simulate as synth

LABEL_KINDS = set(synth.LABEL_NOISE_TYPES)
FAULT_KINDS = set(synth.FAULT_TYPES)


def _ids(text: str) -> set[int]:
    return {int(c) for c in text.split("|")}


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """400 tiny fields with plenty of noise, shared by the statistics tests."""
    out = tmp_path_factory.mktemp("synth") / "ds"
    truth = synth.synthesize(out, n=400, size=32, noise_rate=0.3, fault_rate=0.1, seed=3)
    return out, truth


def test_embedded_stats_match_the_hpa_file():
    assert len(HPA2021_CLASS_COUNTS) == len(HPA2021_CLASSES) == 19
    assert sum(HPA2021_LABELS_PER_FIELD) == HPA2021_N_FIELDS
    total_labels = sum((k + 1) * v for k, v in enumerate(HPA2021_LABELS_PER_FIELD))
    assert sum(HPA2021_CLASS_COUNTS) == total_labels
    src = (
        Path(__file__).resolve().parents[2].parent
        / "shared/hpa-samples/hpa2021-all-train-labels.csv"
    )
    if not src.is_file():
        pytest.skip("HPA label statistics file not available")
    labels = pd.read_csv(src)["Label"].astype(str).str.split("|")
    counts = Counter(int(c) for row in labels for c in row)
    assert tuple(counts[c] for c in range(19)) == HPA2021_CLASS_COUNTS
    per = Counter(len(row) for row in labels)
    assert tuple(per[k] for k in range(1, 6)) == HPA2021_LABELS_PER_FIELD


def test_layout_headers_and_images(tmp_path):
    out = tmp_path / "ds"
    truth = synth.synthesize(out, n=40, size=64, seed=1)
    train = pd.read_csv(out / "train.csv", dtype=str)
    assert list(train.columns) == ["ID", "Label"]
    assert (out / "train.csv").read_text().splitlines()[0] == "ID,Label"
    assert (out / "truth.csv").read_text().splitlines()[0] == "ID,true_label,given_label,noise"
    assert list(truth.columns) == ["ID", "true_label", "given_label", "noise"]
    assert len(train) == len(truth) == 40
    assert train["ID"].is_unique
    assert train["ID"].str.fullmatch(r"synth-\d{5}-[0-9a-f]{8}").all()
    assert (train["Label"] == truth["given_label"]).all()
    assert train["Label"].str.fullmatch(r"\d+(\|\d+)*").all()
    files = sorted(p.name for p in (out / "train").iterdir())
    assert files == sorted(f"{i}_{c}.png" for i in train["ID"] for c in HPA_CHANNELS)
    for i in train["ID"][:10]:
        for c in HPA_CHANNELS:
            with Image.open(out / "train" / f"{i}_{c}.png") as im:
                assert im.format == "PNG" and im.mode == "L" and im.size == (64, 64)
                a = np.asarray(im)
            assert a.dtype == np.uint8 and a.shape == (64, 64)
    assert not [p for p in out.rglob("*.tmp")]  # atomic writes left no temporaries


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(n=12, size=48, noise_rate=0.5, fault_rate=0.5)
    synth.synthesize(tmp_path / "a", seed=7, **kw)
    synth.synthesize(tmp_path / "b", seed=7, **kw)
    synth.synthesize(tmp_path / "c", seed=8, **kw)
    ha, hb, hc = (_hashes(tmp_path / x) for x in "abc")
    assert ha == hb
    assert (tmp_path / "a/train.csv").read_bytes() != (tmp_path / "c/train.csv").read_bytes()
    assert set(ha.values()).isdisjoint(hc.values())


def test_fields_do_not_depend_on_noise_settings(tmp_path):
    # Labels, IDs and pixels come before (or apart from) the noise draws.
    synth.synthesize(tmp_path / "a", n=6, size=48, noise_rate=0.0, fault_rate=0.0, seed=2)
    synth.synthesize(tmp_path / "b", n=6, size=48, noise_rate=1.0, fault_rate=0.0, seed=2)
    ha, hb = _hashes(tmp_path / "a" / "train"), _hashes(tmp_path / "b" / "train")
    assert ha == hb


def test_truth_is_consistent(big):
    _, truth = big
    for row in truth.itertuples():
        true, given = _ids(row.true_label), _ids(row.given_label)
        kinds = row.noise.split(";")
        assert row.noise == "none" or set(kinds) <= LABEL_KINDS | FAULT_KINDS
        assert "none" not in kinds or len(kinds) == 1
        assert len(set(kinds) & LABEL_KINDS) <= 1 and len(set(kinds) & FAULT_KINDS) <= 1
        assert given and true <= set(range(19)) and given <= set(range(19))
        assert NEGATIVE not in true or true == {NEGATIVE}
        assert NEGATIVE not in given or given == {NEGATIVE}
        label_noise = set(kinds) & LABEL_KINDS
        assert (given != true) == bool(label_noise)
        if "missing" in kinds:
            assert given < true and len(true - given) == 1
        if "extra" in kinds:
            assert given > true and len(given - true) == 1
        if "swap" in kinds:
            assert len(given) == len(true) and len(given - true) == len(true - given) == 1
        if true == {NEGATIVE}:
            assert not set(kinds) & {"dim", "saturated"}


def test_rates_are_respected(big):
    _, truth = big
    kinds = truth["noise"].str.split(";")
    n_label = kinds.map(lambda k: bool(set(k) & LABEL_KINDS)).sum()
    n_fault = kinds.map(lambda k: bool(set(k) & FAULT_KINDS)).sum()
    assert n_label == round(0.3 * 400)
    assert n_fault == round(0.1 * 400)
    every = Counter(k for ks in kinds for k in ks)
    for kind in synth.NOISE_TYPES:  # every type occurs
        assert every[kind] > 0, kind


def test_label_statistics(big):
    _, truth = big
    true = truth["true_label"].map(_ids)
    per_class = Counter(c for s in true for c in s)
    assert set(per_class) == set(range(19))
    assert min(per_class.values()) >= 3  # the floor keeps rare classes present
    assert per_class[0] == max(per_class.values())  # nucleoplasm stays the most common
    sizes = Counter(len(s) for s in true)
    assert 0.38 < sizes[1] / 400 < 0.62
    assert max(sizes) <= 5


def test_zero_rates_give_clean_labels(tmp_path):
    truth = synth.synthesize(tmp_path / "ds", n=10, size=32, noise_rate=0, fault_rate=0)
    assert (truth["noise"] == "none").all()
    assert (truth["true_label"] == truth["given_label"]).all()


def test_progress_bar_runs(tmp_path):
    truth = synth.synthesize(tmp_path / "ds", n=3, size=32, progress=True)
    assert len(truth) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=0), "n must be"),
        (dict(n=2.5), "integer"),
        (dict(size=16), "size must be"),
        (dict(noise_rate=1.5), "noise_rate"),
        (dict(fault_rate=-0.1), "fault_rate"),
        (dict(noise_rate=float("nan")), "noise_rate"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, match):
    with pytest.raises(SettingsError, match=match):
        synth.synthesize(tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()


def test_non_empty_directory_is_refused_empty_one_accepted(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(SettingsError, match="not empty"):
        synth.synthesize(tmp_path / "full", n=2, size=32)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(SettingsError, match="not a directory"):
        synth.synthesize(tmp_path / "file", n=2, size=32)
    (tmp_path / "empty").mkdir()
    synth.synthesize(tmp_path / "empty", n=2, size=32)
    assert (tmp_path / "empty" / "train.csv").is_file()


def test_sample_label_sets_rules():
    sets = synth.sample_label_sets(3000, np.random.default_rng(0))
    assert all(s == tuple(sorted(set(s))) and 1 <= len(s) <= 5 for s in sets)
    assert all(NEGATIVE not in s or s == (NEGATIVE,) for s in sets)
    freq = Counter(c for s in sets for c in s)
    assert min(freq[c] / 3000 for c in range(19)) >= 0.6 * synth.CLASS_FLOOR
    p = synth.class_probabilities()
    assert p.shape == (18,) and np.isclose(p.sum(), 1.0)
    raw = synth.class_probabilities(floor=0.0)
    assert np.argmax(raw) == 0 and raw[11] < 0.01 and p[11] > raw[11]


def test_inject_label_noise_each_kind():
    rng = np.random.default_rng(0)
    for _ in range(300):
        true = synth.sample_label_sets(1, rng)[0]
        for kind in synth.LABEL_NOISE_TYPES:
            given, used = synth.inject_label_noise(true, rng, kind)
            assert given and set(given) != set(true)
            assert NEGATIVE not in given or given == (NEGATIVE,)
            if len(true) >= 2 and kind == "missing":
                assert used == "missing"
            if NEGATIVE not in true and kind != "missing":
                assert used == kind
            if used == "swap":
                assert len(given) == len(true)
            elif used == "extra":
                assert set(given) > set(true)
            else:
                assert set(given) < set(true)
    # A lone Negative can only be swapped for a (faint) stained class.
    given, used = synth.inject_label_noise((NEGATIVE,), rng, "extra")
    assert used == "swap" and NEGATIVE not in given


def test_confusion_table_is_valid():
    assert set(synth.CONFUSIONS) == set(range(19))
    for c, partners in synth.CONFUSIONS.items():
        assert partners and c not in partners and NEGATIVE not in partners


# ---- image faults, tested on arrays -----------------------------------------------------


def _cells_image() -> np.ndarray:
    yy, xx = np.mgrid[:64, :64]
    img = np.full((64, 64), 2.0)
    for cy, cx in ((20, 20), (44, 40)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 100] = 90.0
    img[::4, :] += 30.0  # fine structure for the blur test
    return img


def test_fault_dim_scales_green_down_about_tenfold():
    g = _cells_image()
    d = synth.fault_dim(g, np.random.default_rng(0))
    assert 0.06 < d.mean() / g.mean() < 0.14


def test_fault_saturated_clips_much_of_the_stain():
    g = _cells_image()
    s = synth.fault_saturated(g, np.random.default_rng(0))
    fg = g > 10
    assert s.max() == 255.0
    assert (s[fg] >= 255).mean() >= 0.5
    assert (g >= 255).mean() == 0


def test_fault_blur_removes_fine_structure_in_every_channel():
    chans = {c: _cells_image() for c in HPA_CHANNELS}
    out = synth.fault_blur(chans, np.random.default_rng(0))
    for c in HPA_CHANNELS:
        before = np.abs(ndimage.laplace(chans[c])).mean()
        after = np.abs(ndimage.laplace(out[c])).mean()
        assert after < 0.2 * before
        assert abs(out[c].mean() - chans[c].mean()) < 0.05 * chans[c].mean()


def test_fault_artifact_adds_bright_debris():
    chans = {c: np.full((64, 64), 3.0) for c in HPA_CHANNELS}
    out = synth.fault_artifact(chans, np.random.default_rng(0))
    bright = out["green"] >= 200
    assert 10 <= bright.sum() < 0.5 * bright.size
    for c in HPA_CHANNELS:
        assert (out[c] >= chans[c]).all()  # debris only adds light


def test_render_field_applies_faults():
    labels = [0, 16]
    clean = synth.render_field(labels, 96, np.random.default_rng(5))
    dim = synth.render_field(labels, 96, np.random.default_rng(5), "dim")
    sat = synth.render_field(labels, 96, np.random.default_rng(5), "saturated")
    assert dim["green"].mean() < 0.2 * clean["green"].mean()
    assert (sat["green"] == 255).mean() > 5 * max((clean["green"] == 255).mean(), 0.01)
    assert (dim["blue"] == clean["blue"]).all()  # dim touches green only
    with pytest.raises(SettingsError):
        synth.render_field(labels, 96, np.random.default_rng(5), "smudge")


# ---- class patterns ---------------------------------------------------------------------

NUCLEAR = (0, 2, 3, 4, 5)  # nuclear membrane straddles the border
CYTOPLASMIC = (6, 7, 8, 10, 14, 15, 16, 17)


def test_each_class_has_its_own_green_pattern():
    for c in range(19):
        ch = synth.render_field([c], 128, np.random.default_rng([11, c]))
        g = ch["green"].astype(float)
        nucleus = ch["blue"] > 25
        if c == NEGATIVE:
            assert g.mean() < 1.5
            continue
        assert np.percentile(g, 99.9) > 40, HPA2021_CLASSES[c]  # clearly stained
        share_in_nucleus = g[nucleus].sum() / g.sum()
        if c in NUCLEAR:
            assert share_in_nucleus > 0.6, HPA2021_CLASSES[c]
        if c in CYTOPLASMIC:
            assert share_in_nucleus < 0.35, HPA2021_CLASSES[c]
    # The microtubule and ER classes follow their reference stains.
    for c, ref in ((10, "red"), (6, "yellow")):
        ch = synth.render_field([c], 128, np.random.default_rng([11, c]))
        r = np.corrcoef(ch["green"].ravel(), ch[ref].ravel())[0, 1]
        assert r > 0.6, HPA2021_CLASSES[c]


def test_multi_label_fields_add_patterns():
    rng = [np.random.default_rng(4) for _ in range(3)]
    a = synth.render_field([0], 96, rng[0])["green"].astype(float)
    b = synth.render_field([13], 96, rng[1])["green"].astype(float)
    both = synth.render_field([0, 13], 96, rng[2])["green"].astype(float)
    assert both.mean() > max(a.mean(), b.mean())


# ---- cell-level truth: partial expression, the cells column, true masks -----------------


def test_cells_column_formats_and_parses():
    counts = {16: (8, 8), 0: (3, 8), 5: (0, 8)}
    text = synth.format_cells_column(counts)
    assert text == "0:3/8;5:0/8;16:8/8"
    assert synth.parse_cells_column(text) == counts
    assert synth.parse_cells_column(" 0:3/8 ; 5:0/8 ") == {0: (3, 8), 5: (0, 8)}
    assert synth.parse_cells_column("") == {}
    for bad in ("0:3", "a:1/2", "0:3/2", "0:1/0", "0:-1/2", "0:1/2;0:2/2", "0:1/2;"):
        with pytest.raises(ValueError):
            synth.parse_cells_column(bad)


@pytest.fixture(scope="module")
def cellds(tmp_path_factory) -> tuple[Path, pd.DataFrame, Path, pd.DataFrame]:
    """Half of the stained fields partial, with masks; and its fully expressing twin."""
    root = tmp_path_factory.mktemp("cells")
    kw = dict(n=40, size=64, noise_rate=0.4, fault_rate=0.0, seed=4, write_masks=True)
    part = synth.synthesize(root / "part", partial_cells=0.5, **kw)
    full = synth.synthesize(root / "full", **kw)
    return root / "part", part, root / "full", full


def _mask(root: Path, image_id: str) -> np.ndarray:
    with Image.open(root / "masks" / f"{image_id}_predictedmask.png") as im:
        return np.asarray(im)


def _green(root: Path, image_id: str) -> np.ndarray:
    with Image.open(root / "train" / f"{image_id}_green.png") as im:
        return np.asarray(im)


def test_cells_column_covers_true_and_given_labels(cellds):
    root, truth, _, _ = cellds
    assert (root / "truth.csv").read_text().splitlines()[0] == (
        "ID,true_label,given_label,noise,cells"
    )
    for row in truth.itertuples():
        counts = synth.parse_cells_column(row.cells)
        true, given = _ids(row.true_label), _ids(row.given_label)
        assert set(counts) == true | given
        n = _mask(root, row.ID).max()
        assert {tot for _, tot in counts.values()} == {n}
        for c in true:
            assert counts[c][0] >= 1  # partial, never removed altogether
        for c in given - true:  # an extra or swapped-in label: no cell shows it
            assert counts[c][0] == 0
        if true == {NEGATIVE}:
            assert counts[NEGATIVE] == (n, n)


def test_partial_fields_show_classes_in_fewer_cells(cellds):
    _, part, _, full = cellds
    assert (part.drop(columns="cells") == full.drop(columns="cells")).all().all()
    stained = int((part["true_label"] != str(NEGATIVE)).sum())
    changed = 0
    for p, f in zip(part.itertuples(), full.itertuples(), strict=True):
        cp, cf = synth.parse_cells_column(p.cells), synth.parse_cells_column(f.cells)
        if cp == cf:
            continue
        changed += 1
        assert p.true_label != str(NEGATIVE)
        for c in _ids(p.true_label):
            k, n = cf[c]
            if k >= 2:  # 1..k-1 of the k cells that show it keep it
                assert 1 <= cp[c][0] < k
            else:
                assert cp[c] == cf[c]
    # Partial fields whose classes each show in one cell at most look like full ones.
    assert 0.35 * stained <= changed <= round(0.5 * stained)


def test_partial_expression_changes_only_green(cellds):
    root_p, part, root_f, _ = cellds
    assert (root_p / "train.csv").read_bytes() == (root_f / "train.csv").read_bytes()
    hp, hf = _hashes(root_p / "train"), _hashes(root_f / "train")
    differ = {k for k in hp if hp[k] != hf[k]}
    assert differ and all(k.endswith("_green.png") for k in differ)
    assert _hashes(root_p / "masks") == _hashes(root_f / "masks")


@pytest.mark.parametrize("cls", [0, 6, 9, 13, 16, 17])
def test_cells_without_the_class_carry_no_green(cls):
    chans, cells = synth.render_field_cells(
        [cls], 160, np.random.default_rng([21, cls]), partial_rng=np.random.default_rng(cls)
    )
    twin, full = synth.render_field_cells([cls], 160, np.random.default_rng([21, cls]))
    shown, n = cells.shown[cls], cells.n_cells
    assert full.shown[cls].all() and n >= 3
    assert 1 <= shown.sum() < n
    g, g_full = chans["green"].astype(float), twin["green"].astype(float)
    for j in range(1, n + 1):
        inside = cells.mask == j
        if shown[j - 1]:
            assert (g[inside] == g_full[inside]).all()
            assert g[inside].mean() > 3
        else:  # camera noise only (mean ~0.5), as in a Negative field
            assert g[inside].mean() < 1.2 and g_full[inside].mean() > 3
    for c in ("red", "blue", "yellow"):
        assert (chans[c] == twin[c]).all()
    assert cells.counts([cls, NEGATIVE]) == {
        cls: (int(shown.sum()), n),
        NEGATIVE: (n - int(shown.sum()), n),
    }


def test_render_field_cells_matches_render_field():
    for labels, fault in (([0, 16], None), ([11, 2], "blur"), ([NEGATIVE], "artifact")):
        a = synth.render_field(labels, 96, np.random.default_rng(9), fault)
        b, cells = synth.render_field_cells(labels, 96, np.random.default_rng(9), fault)
        assert all((a[c] == b[c]).all() for c in HPA_CHANNELS)
        assert cells.mask.shape == (96, 96) and cells.n_cells >= 1
        assert set(np.unique(cells.mask)) == set(range(cells.n_cells + 1))
    # A mitotic spindle is shown by the mitotic cells only; Negative by every cell.
    _, cells = synth.render_field_cells([11], 128, np.random.default_rng(1))
    assert 1 <= cells.shown[11].sum() <= 2 < cells.n_cells
    _, cells = synth.render_field_cells([NEGATIVE], 128, np.random.default_rng(1))
    assert cells.counts([NEGATIVE, 3]) == {NEGATIVE: (cells.n_cells,) * 2, 3: (0, cells.n_cells)}


def test_masks_round_trip(cellds):
    root, truth, _, _ = cellds
    assert sorted(p.name for p in (root / "masks").iterdir()) == sorted(
        f"{i}_predictedmask.png" for i in truth["ID"]
    )
    for i, image_id in enumerate(truth["ID"][:8]):
        with Image.open(root / "masks" / f"{image_id}_predictedmask.png") as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (64, 64)
            m = np.asarray(im)
        # The same cells the generator drew, numbered 1..n like the cells column.
        _, cells = synth.render_field_cells(
            [int(c) for c in truth["true_label"][i].split("|")], 64, np.random.default_rng([4, i])
        )
        assert (m == cells.mask).all()
        n = next(iter(synth.parse_cells_column(truth["cells"][i]).values()))[1]
        assert set(np.unique(m)) == set(range(n + 1))


def test_masks_beyond_255_cells_are_16_bit(tmp_path):
    label = np.arange(300 * 4, dtype=np.int32).reshape(40, 30) // 4
    synth._save_mask(tmp_path / "m.png", label)
    with Image.open(tmp_path / "m.png") as im:
        back = np.asarray(im)
    assert back.dtype == np.uint16 and (back == label).all()


def test_cell_options_off_keep_the_default_output(tmp_path):
    kw = dict(n=8, size=48, noise_rate=0.5, fault_rate=0.5, seed=6)
    synth.synthesize(tmp_path / "a", **kw)
    synth.synthesize(tmp_path / "b", partial_cells=0.0, write_masks=False, **kw)
    truth = synth.synthesize(tmp_path / "c", write_masks=True, **kw)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")
    assert not (tmp_path / "a" / "masks").exists()
    # Masks only add files and the cells column; every other byte stays.
    ha, hc = _hashes(tmp_path / "a"), _hashes(tmp_path / "c")
    assert {k: v for k, v in hc.items() if not k.startswith("masks/")} == {
        **ha,
        "truth.csv": hc["truth.csv"],
    }
    assert sum(k.startswith("masks/") for k in hc) == 8
    a = pd.read_csv(tmp_path / "a" / "truth.csv", dtype=str)
    assert list(truth.columns) == [*a.columns, "cells"]
    assert (truth.drop(columns="cells") == a).all().all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(partial_cells=1.5), "partial_cells"),
        (dict(partial_cells="half"), "partial_cells"),
        (dict(write_masks="yes"), "write_masks"),
    ],
)
def test_bad_cell_options_are_refused(tmp_path, kwargs, match):
    with pytest.raises(SettingsError, match=match):
        synth.synthesize(tmp_path / "ds", n=2, size=32, **kwargs)
    assert not (tmp_path / "ds").exists()


def test_cli_partial_cells_and_masks(tmp_path, run_cli):
    out = tmp_path / "ds"
    code, stdout, _ = run_cli(
        "synth", out, "--n", "6", "--size", "48", "--partial-cells", "1", "--masks"
    )
    assert code == 0 and "masks" in stdout
    truth = pd.read_csv(out / "truth.csv", dtype=str)
    assert truth["cells"].map(synth.parse_cells_column).map(len).gt(0).all()
    assert len(list((out / "masks").glob("*_predictedmask.png"))) == 6
    code, _, _ = run_cli("synth", tmp_path / "plain", "--n", "2", "--size", "32", "--no-masks")
    assert code == 0 and not (tmp_path / "plain" / "masks").exists()
    assert "cells" not in pd.read_csv(tmp_path / "plain" / "truth.csv").columns
    code, out_text, err = run_cli("synth", tmp_path / "bad", "--partial-cells", "2")
    assert code == 2 and "partial_cells" in out_text + err
    assert not (tmp_path / "bad").exists()
