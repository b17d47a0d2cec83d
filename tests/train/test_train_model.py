"""The model, its normalisation, and the uint8 batch path."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from labelaudit.train.backbones import build_model, channel_mean_std
from labelaudit.train.batches import ArrayBatches, augment, dihedral, make_loader
from labelaudit.train.ddp import DistInfo


def test_channel_stats_match_numpy():
    x = np.random.default_rng(0).integers(0, 256, (70, 4, 8, 8), dtype=np.uint8)
    stats = channel_mean_std(x)
    f = x.astype(np.float64) / 255
    assert np.allclose(stats[0], f.mean(axis=(0, 2, 3)), atol=1e-6)
    assert np.allclose(stats[1], f.std(axis=(0, 2, 3)), atol=1e-5)


def test_model_outputs_logits_features_and_prior():
    stats = np.array([[0.2] * 4, [0.1] * 4], dtype=np.float32)
    model = build_model("test_efficientnet", 4, 19, stats).eval()
    x = torch.randint(0, 255, (3, 4, 32, 32), dtype=torch.uint8)
    logits, feats = model(x, with_features=True)
    assert logits.shape == (3, 19) and feats.shape == (3, model.num_features)
    assert torch.allclose(model.embed(x), feats)
    probs = model.to_probs(logits)
    assert ((probs >= 0) & (probs <= 1)).all()
    positives = np.zeros((10, 19), dtype=bool)
    positives[:5, 0] = True
    model.set_prior(positives)
    assert torch.sigmoid(model.head.bias[0]) > 0.4 and torch.sigmoid(model.head.bias[1]) < 0.1


def test_dihedral_group_has_eight_distinct_views():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    views = {tuple(dihedral(x, c).flatten().tolist()) for c in range(8)}
    assert len(views) == 8
    out = augment(x.repeat(32, 1, 1, 1), torch.Generator().manual_seed(0))
    assert {tuple(v.flatten().tolist()) for v in out} <= views


def test_batches_keep_images_and_labels_aligned(tmp_path):
    n = 30
    path = tmp_path / "images.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=(n, 2, 4, 4))
    mm[:] = np.arange(n, dtype=np.uint8)[:, None, None, None]
    mm.flush()
    images = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 2, 4, 4))
    labels = np.zeros((n, 2), dtype=bool)
    labels[::3, 1] = True
    indices = np.arange(0, n, 2)
    loader = make_loader(images, labels, indices, 4, train=True, seed=0, info=DistInfo())
    seen = []
    for x, y, rows in loader:
        assert x.dtype == torch.uint8 and torch.equal(x[:, 0, 0, 0].long(), rows)
        assert torch.equal(y[:, 1].bool(), torch.from_numpy(labels[rows.numpy(), 1]))
        seen.extend(rows.tolist())
    assert set(seen) <= set(indices.tolist()) and len(seen) == 12  # last partial batch dropped
    # a memmap travels to loader workers as its file name, not its contents
    clone = pickle.loads(pickle.dumps(ArrayBatches(images, labels, indices)))
    assert isinstance(clone.images, np.memmap) and np.array_equal(clone.images, images)
    assert len(pickle.dumps(ArrayBatches(images, labels, indices))) < images.nbytes
