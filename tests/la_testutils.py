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
