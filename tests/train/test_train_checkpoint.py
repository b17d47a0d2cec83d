"""One checkpoint format for folds, retrain and predict; earlier layouts still load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labelaudit.core.errors import SettingsError
from labelaudit.train.backbones import build_model
from labelaudit.train.checkpoint import (
    FOLD_META,
    MODEL_FORMAT,
    EnsembleModel,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)

STATS = np.array([[0.3] * 4, [0.2] * 4], dtype=np.float32)
BASE = {
    "backbone": "test_efficientnet",
    "in_chans": 4,
    "num_classes": 3,
    "class_names": ["a", "b", "c"],
    "activation": "sigmoid",
    "image_size": 32,
}


def model(seed: int):
    torch.manual_seed(seed)
    m = build_model("test_efficientnet", 4, 3, STATS)
    with torch.no_grad():
        m.head.weight.normal_(0, 2.0)
    return m.eval()


def images() -> torch.Tensor:
    return torch.randint(0, 255, (2, 4, 32, 32), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def same_outputs(a, b) -> bool:
    x = images()
    return torch.equal(a(x), b(x))


def test_fold_checkpoint_round_trip_keeps_the_flat_keys(tmp_path):
    # What cv.save_fold writes: the common format, plus the earlier fold layout's keys.
    m = model(0)
    path = tmp_path / "model.pt"
    meta = {**BASE, "fold": 1, "key": "k-1"}
    save_checkpoint(path, m.state_dict(), meta, flat_keys=(*FOLD_META, "fold", "key"))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == MODEL_FORMAT and raw["meta"]["version"] == 1
    assert raw["backbone"] == "test_efficientnet" and raw["class_names"] == ["a", "b", "c"]
    assert raw["fold"] == 1 and "extra_state_dicts" not in raw
    loaded, got = load_checkpoint(path)
    assert got["fold"] == 1 and got["key"] == "k-1" and not loaded.training
    assert same_outputs(loaded, m)


def test_cross_validation_writes_the_common_format(tmp_path):
    from labelaudit.train.cv import save_fold
    from labelaudit.train.loop import FoldOutput

    m = model(2)
    out = FoldOutput(
        train_idx=np.arange(3),
        held_idx=np.arange(3, 5),
        probs=np.zeros((2, 3), np.float32),
        embeddings=np.zeros((2, 8), np.float32),
        best_epoch=1,
        best_loss=0.5,
        history=[],
        state_dict={k: v.clone() for k, v in m.state_dict().items()},
        seconds=0.1,
    )
    save_fold(tmp_path / "fold_1", "key-1", 0, out, {}, {**BASE, "fold": 1, "key": "key-1"})
    ckpt = read_checkpoint(tmp_path / "fold_1" / "model.pt")
    assert ckpt.meta["format"] == MODEL_FORMAT and ckpt.meta["key"] == "key-1"
    assert same_outputs(load_checkpoint(tmp_path / "fold_1" / "model.pt")[0], m)


@pytest.mark.slow
def test_retrain_ensemble_round_trip(tmp_path):
    members = [model(s) for s in (0, 1, 2)]
    path = tmp_path / "model.pt"
    save_checkpoint(path, [m.state_dict() for m in members], {**BASE, "members": 3})
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "state_dict", "meta", "extra_state_dicts"}
    loaded, meta = load_checkpoint(path)
    assert isinstance(loaded, EnsembleModel) and meta["members"] == 3
    with torch.no_grad():
        x = images()
        mean = torch.stack([m(x) for m in members]).mean(0)
        assert torch.allclose(loaded(x), mean)


def test_old_fold_checkpoint_loads(tmp_path):
    # The layout cross-validation wrote before this module: torch.save of a flat dict.
    m = model(3)
    path = tmp_path / "model.pt"
    torch.save({"state_dict": m.state_dict(), **BASE, "fold": 2, "key": "old-2"}, path)
    loaded, meta = load_checkpoint(path)
    assert meta["fold"] == 2 and meta["backbone"] == "test_efficientnet"
    assert meta["format"] == MODEL_FORMAT
    assert same_outputs(loaded, m)


def test_old_retrain_checkpoint_loads(tmp_path):
    # retrain's model.pt as earlier versions wrote it (the same layout as now).
    members = [model(4), model(5)]
    path = tmp_path / "model.pt"
    meta = {**BASE, "format": MODEL_FORMAT, "version": 1, "thresholds": [0.5] * 3}
    torch.save(
        {
            "format": MODEL_FORMAT,
            "state_dict": members[0].state_dict(),
            "meta": meta,
            "extra_state_dicts": [members[1].state_dict()],
        },
        path,
    )
    loaded, got = load_checkpoint(path)
    assert isinstance(loaded, EnsembleModel) and got["thresholds"] == [0.5] * 3
    assert same_outputs(loaded.members[1], members[1])


def test_bad_checkpoints_fail_with_one_clear_message(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"format": MODEL_FORMAT, "state_dict": {}, "meta": {"in_chans": 4}}, path)
    with pytest.raises(SettingsError, match="metadata lacks backbone, num_classes"):
        load_checkpoint(path)
    torch.save({"format": MODEL_FORMAT, "state_dict": {}, "meta": {**BASE, "version": 99}}, path)
    with pytest.raises(SettingsError, match="newer labelaudit"):
        load_checkpoint(path)
    torch.save({"format": MODEL_FORMAT, "state_dict": {}, "meta": BASE}, path)
    with pytest.raises(SettingsError, match="weights do not fit"):
        load_checkpoint(path)
    torch.save({"state_dict": {}, "backbone": "x"}, path)  # not a full old fold file
    with pytest.raises(SettingsError, match="not a labelaudit model"):
        load_checkpoint(path)


def test_predict_does_not_depend_on_retrain():
    import labelaudit.tools.predict as predict

    assert predict.load_checkpoint is load_checkpoint
