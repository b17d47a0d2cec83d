"""Settings, presets and their validation."""

from __future__ import annotations

import pytest

from labelaudit.core.config import PRESETS, TrainSettings, resolve_settings
from labelaudit.core.errors import SettingsError


def test_seed_preset_names_a_backbone_with_imagenet_weights():
    import timm

    from labelaudit.train.weights import _has_pretrained

    cfg = timm.models.get_pretrained_cfg(resolve_settings("seed").backbone)
    assert cfg.hf_hub_id == "timm/tf_efficientnet_b7.aa_in1k"
    assert _has_pretrained(resolve_settings("seed").backbone)
    assert not _has_pretrained("efficientnet_b7")  # timm ships it untrained


def test_presets_resolve_and_validate():
    seed = resolve_settings("seed")
    assert seed.backbone == "tf_efficientnet_b7.aa_in1k" and seed.pretrained and seed.lr == 1e-3
    assert seed.folds == 5 and seed.epochs == 20 and seed.image_size == 512 and seed.amp
    cpu = resolve_settings("cpu")
    assert cpu.backbone == "tf_efficientnet_lite0" and cpu.pretrained
    assert 128 <= cpu.image_size <= 224
    demo = resolve_settings("demo")
    assert demo.offline and demo.folds == 5
    assert set(PRESETS) == {"seed", "cpu", "demo"}


def test_overrides_replace_fields_and_none_is_ignored():
    s = resolve_settings("demo", epochs=3, lr=None, backbone="resnet18")
    assert s.epochs == 3 and s.lr == PRESETS["demo"].lr and s.backbone == "resnet18"


def test_strings_are_coerced():
    s = resolve_settings("cpu", epochs="4", lr="0.01", tta="false", weights=None)
    assert s.epochs == 4 and s.lr == 0.01 and s.tta is False


def test_auto_preset_picks_cpu_without_gpu():
    import torch

    expected = "seed" if torch.cuda.is_available() else "cpu"
    assert resolve_settings("auto") == PRESETS[expected]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"backbone": "efficientnet_b77"}, "unknown backbone 'efficientnet_b77'"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"folds": 1}, "folds must be at least 2"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"mode": "linear"}, "mode must be one of finetune, probe"),
        ({"activation": "softmax"}, "activation must be one of sigmoid"),
        ({"device": "tpu"}, "device must be"),
        ({"weights": "/nonexistent/w.pt"}, "does not exist"),
        ({"epochs": "many"}, "not a valid int"),
        ({"epoch": 3}, "did you mean epochs"),
    ],
)
def test_bad_settings_are_settings_errors(kwargs, fragment):
    with pytest.raises(SettingsError, match=fragment.replace("(", r"\(")):
        resolve_settings("demo", **kwargs)


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(SettingsError, match="did you mean .*efficientnet_b7"):
        resolve_settings("cpu", backbone="efficientnet_b77")


def test_unknown_preset():
    with pytest.raises(SettingsError, match="unknown preset 'fast'"):
        resolve_settings("fast")


def test_result_fields_exclude_runtime_only_settings():
    s = TrainSettings()
    fields = s.result_fields()
    assert "num_workers" not in fields and "threads" not in fields and "device" not in fields
    assert "lr" in fields and "backbone" in fields
    assert s.replace(threads=1).result_fields() == fields
    assert s.replace(lr=0.01).result_fields() != fields


def test_config_imports_neither_torch_nor_the_training_code():
    """Settings are checked without the model code: ``import labelaudit.core.config`` loads
    no torch, and validating does not reach into ``labelaudit.train`` (no cycle)."""
    import subprocess
    import sys

    code = (
        "import sys, labelaudit.core.config as c\n"
        "assert 'torch' not in sys.modules, 'torch imported by labelaudit.core.config'\n"
        "c._check_backbone = lambda name: None  # the timm lookup (it imports torch)\n"
        "c.resolve_settings('demo', activation='tanh')\n"
        "assert 'torch' not in sys.modules, 'torch imported by validation'\n"
        "loaded = [m for m in sys.modules if m.startswith('labelaudit.train')]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_activation_names_match_the_heads_registry():
    from labelaudit.core.config import ACTIVATIONS
    from labelaudit.train.backbones import OUTPUTS

    assert tuple(OUTPUTS) == ACTIVATIONS
    with pytest.raises(SettingsError, match="activation must be one of sigmoid, relu, tanh"):
        resolve_settings("demo", activation="softmax")
