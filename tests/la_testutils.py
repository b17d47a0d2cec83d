"""Helpers shared by the tests (importable as ``la_testutils``; pytest's pythonpath)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
HPA_SAMPLES = REPO.parent / "shared" / "hpa-samples"
#: Every labelled field of HPA 2021 (``ID,Label``), when ``../shared`` is there.
HPA2021_LABELS_CSV = HPA_SAMPLES / "hpa2021-all-train-labels.csv"
#: Where the report tests' fabricated label sets come from (tests/report/conftest.py),
#: said out loud: real HPA 2021 rows, or on a clone without ``../shared`` the named
#: fallback, a skewed random draw. pytest's header names it (tests/conftest.py) and
#: tests/report/test_report_fixture.py checks the labels come from it.
REPORT_LABEL_SOURCE = "hpa2021 rows" if HPA2021_LABELS_CSV.is_file() else "skewed random draw"
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


#: The scan flags of the tests: the demo preset cut to 2 folds of 1 epoch at 32 px (its
#: own backbone, EfficientNet-Lite0 with the packaged weights). One definition for
#: every test; a test about a flag adds it (``--allow-rare``, a deprecated no-op, only
#: where that is the subject).
FAST_SCAN = ["--preset", "demo", "--epochs", "1", "--folds", "2", "--image-size", "32"]
#: FAST_SCAN on the untrained test backbone in batches of 8: the fastest real scan.
TINY_SCAN = [*FAST_SCAN, "--backbone", "test_efficientnet", "--batch-size", "8"]


def run_ok(*commands: list[str]) -> None:
    """Run CLI commands in this process, each of which must succeed (exit 0)."""
    from labelaudit.cli import main

    for args in commands:
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert exc.code in (0, None), (args, exc.code)


def load_benchmark(name: str) -> ModuleType:
    """A script of ``benchmarks/`` (not a package) imported as a module, for its tests."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_bench", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_cell_model(n: int = 300, k: int = 5, seed: int = 0):
    """Given labels with 12 % planted errors, a field model's and a cell model's
    probabilities (each knowing the truth, each with noise of its own), two or three
    cells per image (none for every tenth)."""
    from labelaudit.detect.combined import plant_label_noise

    rng = np.random.default_rng(seed)
    true = rng.random((n, k)) < 0.3
    true[~true.any(axis=1), 0] = True
    given, _ = plant_label_noise(true, 0.12, rng)

    def model(rows: np.ndarray) -> np.ndarray:
        logits = np.where(true[rows], 1.5, -1.5) + rng.normal(0, 1.2, (len(rows), k))
        return 1 / (1 + np.exp(-logits))

    owners = np.array([i for i in range(n) if i % 10 for _ in range(int(rng.integers(2, 4)))])
    features = true + rng.normal(0, 0.6, true.shape)
    return given, true, model(np.arange(n)), features, model(owners), owners


def scan_refuses_file(run_cli, data: Path, out: Path, option: str, path: Path, expected: str):
    """``scan DATA --out OUT <option> PATH`` (tiny settings) ends in exit 2 and one line
    naming ``path`` and saying ``expected``, no traceback, before ``out`` is written."""
    code, _, err = run_cli("scan", data, "--out", out, *TINY_SCAN, option, path)
    assert code == 2, (path.name, err)
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, (path.name, err)
    assert str(path) in err and expected in err, (path.name, err)
    assert not out.exists(), path.name  # checked before anything is written
