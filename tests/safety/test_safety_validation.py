"""Every mistake one line, early (issue 12): each bad option value gives exit 2, one
line on stderr naming the value, no traceback, and nothing created (no run
directory, no cache entry); paths print literally (no emoji codes, no markup); rare
classes are a warning (issue 16 item 4), ``--strict`` restores the stop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from la_testutils import FAST_SCAN, write_tiny_model

from labelaudit.core.errors import SettingsError
from labelaudit.data.classes import HPA2021_CLASSES
from labelaudit.train.folds import rare_classes

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.fixture
def checkpoint(tmp_path):
    """Write a labelaudit model file (untrained tiny model) with ``meta`` changes."""

    def write(**changes) -> str:
        return str(write_tiny_model(tmp_path / "model.pt", **changes))

    return write


def _one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _nothing_created(tmp_path) -> None:
    assert not (tmp_path / "run").exists(), "a run directory was created before the check"
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir()), "the image cache was built"


SCAN_CASES = {
    "seed": (["--seed", "-1"], ["seed", "-1"]),
    "detector typo": (["--detectors", "confident,isolaton"], ["'isolaton'", "isolation"]),
    "fold out of range": (["--fold", "3"], ["--fold", "between 1 and 2", "3"]),
    "fold zero": (["--fold", "0"], ["--fold", "0"]),
    "epochs": (["--epochs", "0"], ["epochs", "0"]),
    "folds": (["--folds", "1"], ["folds", "1"]),
    "batch size": (["--batch-size", "0"], ["batch_size", "0"]),
    "image size": (["--image-size", "8"], ["image_size", "8"]),
    "learning rate": (["--lr", "-1"], ["lr", "-1"]),
    "device name": (["--device", "gpu"], ["device", "'gpu'"]),
    "missing weights": (["--weights", "nowhere.pt"], ["nowhere.pt", "does not exist"]),
    "cell size": (["--level", "cell", "--cell-size", "5"], ["cell_size", "5"]),
    "rare classes with --strict": (["--strict"], ["fewer positive images", "--strict"]),
}


@pytest.mark.parametrize("case", list(SCAN_CASES))
def test_scan_option_refused_in_one_line_before_any_work(case, synth60, run_cli, tmp_path):
    args, needles = SCAN_CASES[case]
    out, cache = tmp_path / "run", tmp_path / "cache"
    code, _, err = run_cli("scan", synth60, "--out", out, "--cache-dir", cache, *FAST_SCAN, *args)
    _one_line_error(code, err, *needles)
    _nothing_created(tmp_path)


@NO_GPU
@pytest.mark.parametrize("command", ["scan", "sweep"])
def test_cuda_without_a_gpu_is_one_line_before_the_cache(command, synth60, run_cli, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    code, _, err = run_cli(
        command, synth60, "--out", out, "--cache-dir", cache, *FAST_SCAN, "--device", "cuda"
    )
    _one_line_error(code, err, "--device cuda", "no CUDA GPU")
    _nothing_created(tmp_path)


@NO_GPU
def test_predict_cuda_without_a_gpu(synth60, run_cli, checkpoint, tmp_path):
    code, _, err = run_cli(
        "predict", checkpoint(), synth60, "--out", tmp_path / "p.csv", "--device", "cuda"
    )
    _one_line_error(code, err, "--device cuda")
    assert not (tmp_path / "p.csv").exists()


def test_predict_checkpoint_with_a_negative_image_size(synth60, run_cli, checkpoint, tmp_path):
    model = checkpoint(image_size=-5)
    code, _, err = run_cli("predict", model, synth60, "--out", tmp_path / "p.csv")
    _one_line_error(code, err, "model.pt", "image_size", "-5")
    assert not (tmp_path / "p.csv").exists()


def test_weights_file_not_loadable_or_not_fitting(synth60, run_cli, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint\n")
    alien = tmp_path / "alien.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, alien)
    for path, needle in ((garbage, "loads safely"), (alien, "does not match the backbone")):
        out, cache = tmp_path / "run", tmp_path / "cache"
        code, _, err = run_cli(
            "scan", synth60, "--out", out, "--cache-dir", cache, *FAST_SCAN, "--weights", path
        )
        _one_line_error(code, err, str(path), needle)
        _nothing_created(tmp_path)


def test_sweep_negative_or_zero_learning_rate(synth60, run_cli, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    code, _, err = run_cli(
        "sweep", synth60, "--out", out, "--cache-dir", cache, *FAST_SCAN, "--lrs", "-1,0"
    )
    _one_line_error(code, err, "--lrs", "'-1'")
    _nothing_created(tmp_path)


def test_synth_huge_size_leaves_no_directory(run_cli, tmp_path):
    code, _, err = run_cli("synth", tmp_path / "big", "--size", "100000", "--n", "2")
    _one_line_error(code, err, "size", "100000")
    assert not (tmp_path / "big").exists()


def test_python_callers_get_the_same_settings_errors(synth60, tmp_path):
    from labelaudit.core.config import check_fold, resolve_settings
    from labelaudit.pipeline.scan import scan

    with pytest.raises(SettingsError, match="seed"):
        resolve_settings("demo", seed=-1)
    with pytest.raises(SettingsError, match="--fold"):
        check_fold(3, resolve_settings("demo", folds=2))
    with pytest.raises(SettingsError, match="unknown detector 'bogus'"):
        scan(synth60, tmp_path / "run", preset="demo", folds=2, detectors=["bogus"])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", [":x:[red]data", "[bold]a[/bold]:thumbs_up:"])
def test_paths_print_literally_without_emoji_or_markup(name, run_cli, tmp_path):
    missing = tmp_path / name
    code, _, err = run_cli("scan", missing, "--out", tmp_path / "run", *FAST_SCAN)
    line = _one_line_error(code, err)
    assert name in line  # not an emoji, not a style
    code, out, _ = run_cli("synth", tmp_path / name, "--n", "20", "--size", "32")
    assert code == 0 and f"{tmp_path / name}" in out


@pytest.mark.slow
def test_rare_classes_warn_and_are_marked_unreliable(synth60, run_cli, tmp_path):
    """A scan proceeds past a class with fewer images than folds; --allow-rare is a no-op."""
    labels = pd.read_csv(synth60 / "train.csv", dtype=str)["Label"]
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        "scan",
        synth60,
        "--out",
        out,
        "--cache-dir",
        tmp_path / "cache",
        *FAST_SCAN,
        "--allow-rare",
    )
    assert code == 0, err
    assert "warning:" in stdout and "fewer positive images than the 2 folds" in stdout
    issues = pd.read_csv(out / "issues.csv", dtype=str, keep_default_na=False)
    marked = issues[issues["unreliable_classes"] != ""]
    assert len(marked) >= 1
    names = list(HPA2021_CLASSES)
    y = [[str(k) in set(lab.split("|")) for k in range(len(names))] for lab in labels]
    rare = rare_classes(np.array(y), names, 2)
    assert rare and set(";".join(marked["unreliable_classes"]).split(";")) <= set(rare)
    assert "unreliable classes" in (out / "report.html").read_text()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["scan", "DS", "--epochs", "abc"], "'--epochs'"),
        (["scan", "DS", "--bogus"], "--bogus"),
        (["scan"], "Missing argument"),
        (["bogus"], "No such command 'bogus'"),
        (["report", "DS", "--max-thumbnails", "-1"], "'--max-thumbnails'"),
        (["segment", "DS", "--out", "OUT", "--workers", "0"], "'--workers'"),
    ],
)
def test_usage_errors_are_one_line(args, needle, run_cli, tmp_path):
    args = [str(tmp_path / a) if a in ("DS", "OUT") else a for a in args]
    code, _, err = run_cli(*args)
    line = _one_line_error(code, err, needle)
    assert "--help" in line  # says where to look
    assert not (tmp_path / "OUT").exists()


def test_demo_too_few_fields_is_refused_before_synthesising(run_cli, tmp_path):
    code, _, err = run_cli("demo", "--n", "5", "--out", tmp_path / "demo")
    _one_line_error(code, err, "--n", "5")
    assert not (tmp_path / "demo").exists()


def test_sweep_strict_stops_on_rare_classes_before_any_work(synth60, run_cli, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    code, _, err = run_cli(
        "sweep", synth60, "--out", out, "--cache-dir", cache, *FAST_SCAN, "--strict"
    )
    _one_line_error(code, err, "fewer positive images than the 2 folds", "--strict")
    _nothing_created(tmp_path)
