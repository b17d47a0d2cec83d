"""Predicting with a saved model: round trip through a new process, inputs, thresholds."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from la_testutils import write_image

from labelaudit.core.errors import DatasetError, SettingsError
from labelaudit.data.classes import HPA2021_CLASSES
from labelaudit.tools.predict import predict
from labelaudit.train.backbones import build_model
from labelaudit.train.checkpoint import MODEL_FORMAT, load_checkpoint, save_checkpoint

NAMES = list(HPA2021_CLASSES)
TOKENS = [str(k) for k in range(len(NAMES))]


def write_model(path, in_chans: int = 4, thresholds=None, seed: int = 0) -> None:
    """A checkpoint of an untrained tiny model (random head), as retrain saves it."""
    torch.manual_seed(seed)
    stats = np.array([[0.3] * in_chans, [0.2] * in_chans], dtype=np.float32)
    model = build_model("test_efficientnet", in_chans, len(NAMES), stats)
    with torch.no_grad():  # a head that gives varied probabilities
        model.head.weight.normal_(0, 2.0)
    meta = {
        "format": MODEL_FORMAT,
        "version": 1,
        "backbone": "test_efficientnet",
        "in_chans": in_chans,
        "num_classes": len(NAMES),
        "class_names": NAMES,
        "class_tokens": TOKENS,
        "label_sep": "|",
        "layout": "hpa2021",
        "channels": ["red", "green", "blue", "yellow"][:in_chans],
        "activation": "sigmoid",
        "image_size": 32,
        "tta": True,
        "thresholds": list(thresholds) if thresholds is not None else [0.5] * len(NAMES),
    }
    save_checkpoint(path, model.state_dict(), meta)


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model.pt"
    write_model(path)
    return path


@pytest.mark.slow
def test_round_trip_in_a_new_process(model_path, make_hpa, tmp_path):
    dataset = make_hpa(n=6, size=40)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        frame = predict(model_path, dataset, tmp_path / "here.csv", device="cpu")
    finally:
        torch.set_num_threads(threads)
    code = (
        "import sys, torch; torch.set_num_threads(1); "
        "from labelaudit.tools.predict import predict; "
        "predict(sys.argv[1], sys.argv[2], sys.argv[3], device='cpu')"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(model_path), str(dataset), str(tmp_path / "there.csv")],
        check=True,
        timeout=300,
    )
    here = pd.read_csv(
        tmp_path / "here.csv", dtype={"id": str, "labels": str}, keep_default_na=False
    )
    there = pd.read_csv(
        tmp_path / "there.csv", dtype={"id": str, "labels": str}, keep_default_na=False
    )
    assert list(here.columns) == ["id", *NAMES, "labels", "label_names", "given_labels"]
    np.testing.assert_allclose(here[NAMES].to_numpy(), there[NAMES].to_numpy(), rtol=0, atol=1e-6)
    assert (here["labels"] == there["labels"]).all()
    np.testing.assert_allclose(frame[NAMES].to_numpy(), here[NAMES].to_numpy(), atol=1e-12)
    # Thresholded label sets follow the probabilities and the model's thresholds.
    probs = here[NAMES].to_numpy()
    assert probs.std() > 0.01
    neg = NAMES.index("Negative")
    for row, p in zip(here["labels"], probs, strict=True):
        passed = [k for k, q in enumerate(p) if q >= 0.5]
        if neg in passed and len(passed) > 1:  # Negative is exclusive: one side stays
            others = [k for k in passed if k != neg]
            passed = [neg] if p[neg] >= p[others].max() else others
        assert row == "|".join(TOKENS[k] for k in passed)
    assert here["given_labels"].tolist() == ["0|3", "1", "2", "3", "3|4", "5"]


@pytest.mark.slow
def test_unlabelled_hpa_folder_and_thresholds(tmp_path, make_hpa):
    dataset = make_hpa(n=4, size=40)
    everything, nothing = tmp_path / "all.pt", tmp_path / "none.pt"
    write_model(everything, thresholds=[0.0] * len(NAMES))
    write_model(nothing, thresholds=[1.01] * len(NAMES))
    labelled = predict(everything, dataset, device="cpu")
    # The image folder alone (no train.csv), and a copy of it with a stray file.
    folder = tmp_path / "fields"
    shutil.copytree(dataset / "train", folder)
    (folder / "notes.txt").write_text("not an image")
    bare = predict(everything, folder, tmp_path / "out.csv", device="cpu")
    assert "given_labels" not in bare.columns
    assert bare["id"].tolist() == labelled["id"].tolist()
    np.testing.assert_allclose(bare[NAMES].to_numpy(), labelled[NAMES].to_numpy(), atol=1e-6)
    # Every class passes its threshold, but Negative (exclusive) is never predicted with
    # another class: the side with the higher probability stays (issue 23).
    neg = NAMES.index("Negative")
    probs = bare[NAMES].to_numpy()
    others = np.delete(probs, neg, axis=1).max(axis=1)
    alone = probs[:, neg] >= others
    want = np.where(alone, TOKENS[neg], "|".join(t for t in TOKENS if t != TOKENS[neg]))
    assert bare["labels"].tolist() == want.tolist()
    assert not bare["label_names"].str.contains("Negative|", regex=False).any()
    assert (predict(nothing, folder, device="cpu")["labels"] == "").all()
    # A dataset directory whose fields sit in train/ without a label file works too.
    (dataset / "train.csv").unlink()
    assert predict(everything, dataset, device="cpu")["id"].tolist() == bare["id"].tolist()


@pytest.mark.slow
def test_plain_image_folder(tmp_path):
    folder = tmp_path / "rgb"
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(folder / f"img{i}.png", rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    rgb_model = tmp_path / "rgb.pt"
    write_model(rgb_model, in_chans=3)
    frame = predict(rgb_model, folder, device="cpu")
    assert frame["id"].tolist() == ["img0.png", "img1.png", "img2.png"]
    four = tmp_path / "four.pt"
    write_model(four, in_chans=4)
    with pytest.raises(DatasetError, match="3 channel"):
        predict(four, folder, device="cpu")


@pytest.mark.slow
def test_predictions_never_join_negative_with_another_class(tmp_path, make_hpa):
    dataset = make_hpa(n=6, size=40)
    neg = NAMES.index("Negative")
    low = [0.0] * len(NAMES)
    for seed in range(4):  # heads that favour Negative on some fields and not on others
        path = tmp_path / f"m{seed}.pt"
        write_model(path, thresholds=low, seed=seed)
        frame = predict(path, dataset, device="cpu")
        for labels in frame["labels"]:
            tokens = labels.split("|")
            assert TOKENS[neg] not in tokens or tokens == [TOKENS[neg]]


def test_bad_inputs(tmp_path, model_path):
    with pytest.raises(DatasetError, match="model file not found"):
        predict(tmp_path / "missing.pt", tmp_path, device="cpu")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(SettingsError, match="not a labelaudit model"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"meta": object()}, tmp_path / "pickle.pt")
    with pytest.raises(
        SettingsError, match="not a labelaudit model .not a checkpoint of tensors that loads safely"
    ):
        load_checkpoint(tmp_path / "pickle.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        predict(model_path, empty, device="cpu")
    partial = tmp_path / "partial"
    write_image(partial / "f1_red.png", np.zeros((8, 8), np.uint8))
    write_image(partial / "f1_green.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError, match="incomplete field"):
        predict(model_path, partial, device="cpu")


def test_forged_model_metadata_and_nan_weights_are_one_message(tmp_path, make_hpa):
    """A model file is read back: metadata that passes the first checks but cannot be
    used, a head of another shape, NaN weights: one line each, no traceback and no
    table of blanks (found by an ML engineer's test)."""
    from labelaudit.train.checkpoint import read_checkpoint

    data = make_hpa(n=3, size=32)
    good = tmp_path / "good.pt"
    write_model(good)
    ckpt = read_checkpoint(good)
    cases = {
        "label_sep": (None, "label_sep must be one character"),
        "class_tokens": ([1] * len(NAMES), "class_tokens must be 19 non-empty names"),
        "activation": ("bogus", "activation"),
        "num_classes": (5, "class_names must list the 5 classes|weights do not fit"),
    }
    for key, (value, message) in cases.items():
        path = tmp_path / f"{key}.pt"
        save_checkpoint(path, ckpt.states[0], {**ckpt.meta, key: value})
        with pytest.raises(SettingsError, match=message):
            predict(path, data, device="cpu")
    state = {k: v.clone() for k, v in ckpt.states[0].items()}
    state["head.weight"].fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.pt", state, ckpt.meta)
    with pytest.raises(SettingsError, match="outputs are not finite"):
        predict(tmp_path / "nan.pt", data, device="cpu", out_csv=tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()


def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, model_path):
    from pathlib import Path

    data = tmp_path / "data"
    write_image(data / "img.png", np.zeros((8, 8, 3), np.uint8))
    for out, message in (
        (Path("/proc/x.csv"), "not a folder labelaudit can write in"),
        (tmp_path / ("x" * 300 + ".csv"), "longer than 255 bytes"),
        (tmp_path / "file.txt" / "p.csv", "file.txt is not a directory"),
    ):
        (tmp_path / "file.txt").write_text("mine\n")
        with pytest.raises(SettingsError, match=message):
            predict(model_path, data, out_csv=out, device="cpu")  # before the images are read
    assert (tmp_path / "file.txt").read_text() == "mine\n"
