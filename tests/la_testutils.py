"""Helpers shared by the tests (importable as ``la_testutils``; pytest's pythonpath)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
HPA_SAMPLES = REPO.parent / "shared" / "hpa-samples"
CHANNELS = ("red", "green", "blue", "yellow")


def write_image(path: Path, array: np.ndarray) -> None:
    """Write an image; 16-bit arrays become 16-bit PNG/TIFF."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, array)
    else:
        Image.fromarray(array).save(path)


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root`` with its size and content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = (
                p.stat().st_size,
                hashlib.sha256(p.read_bytes()).hexdigest(),
            )
    return out


def write_tiny_model(path: Path, **changes) -> Path:
    """Save an untrained tiny labelaudit model (HPA 2021 classes, 4 channels, 32 px);
    ``changes`` replace fields of its metadata."""
    import torch

    from labelaudit.data.classes import HPA2021_CLASSES
    from labelaudit.train.backbones import build_model
    from labelaudit.train.checkpoint import MODEL_FORMAT, save_checkpoint

    names = list(HPA2021_CLASSES)
    stats = np.array([[0.3] * 4, [0.2] * 4], dtype=np.float32)
    torch.manual_seed(0)
    model = build_model("test_efficientnet", 4, len(names), stats)
    meta = {
        "format": MODEL_FORMAT,
        "version": 1,
        "backbone": "test_efficientnet",
        "in_chans": 4,
        "num_classes": len(names),
        "class_names": names,
        "class_tokens": [str(k) for k in range(len(names))],
        "label_sep": "|",
        "layout": "hpa2021",
        "channels": list(CHANNELS),
        "activation": "sigmoid",
        "image_size": 32,
        "tta": False,
        "thresholds": [0.5] * len(names),
        **changes,
    }
    save_checkpoint(path, model.state_dict(), meta)
    return path


#: A tiny, fast scan: the test backbone, 32 px, 2 folds, 1 epoch.
TINY_SCAN = ["--backbone", "test_efficientnet", "--image-size", "32", "--folds", "2",
             "--epochs", "1", "--batch-size", "8", "--preset", "demo"]  # fmt: skip


def run_ok(*commands: list[str]) -> None:
    """Run CLI commands in this process, each of which must succeed (exit 0)."""
    from labelaudit.cli import main

    for args in commands:
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert exc.code in (0, None), (args, exc.code)
