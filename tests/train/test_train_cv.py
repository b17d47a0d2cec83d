"""Cross-validation: artifacts, out-of-fold provenance, resume, invalidation, --fold, probe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from labelaudit.core.config import resolve_settings
from labelaudit.core.errors import SettingsError
from labelaudit.core.io import read_json
from labelaudit.train.cv import check_oof_provenance, cross_validate, fold_dir, load_fold

CLASSES = ["Nucleoplasm", "Cytosol", "Mitochondria"]


def tiny_data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """32 px 4-channel images whose green channel carries the first class."""
    rng = np.random.default_rng(seed)
    labels = rng.random((n, 3)) < 0.35
    labels[np.arange(n), rng.integers(0, 3, n)] = True
    images = rng.integers(0, 100, (n, 4, 32, 32), dtype=np.uint8)
    images[:, 1] += (labels[:, 0] * 120).astype(np.uint8)[:, None, None]
    return images, labels, [f"f{i:03d}" for i in range(n)]


def tiny_settings(**kw):
    base = dict(
        backbone="test_efficientnet",
        pretrained=False,
        image_size=32,
        folds=2,
        epochs=1,
        batch_size=8,
        warmup_epochs=0,
        patience=0,
        tta=False,
        progress=False,
        threads=1,
    )
    base.update(kw)
    return resolve_settings("demo", **base)


def recording_console() -> Console:
    return Console(record=True, width=200, file=open(os.devnull, "w"))  # noqa: SIM115


def test_writes_the_run_directory_contract(tmp_path):
    images, labels, ids = tiny_data()
    readonly = images.copy()
    readonly.flags.writeable = False  # the cache is read-only; training must not write it
    result = cross_validate(
        readonly, labels, ids, CLASSES, tiny_settings(tta=True), tmp_path / "run", "fp-1"
    )
    out = tmp_path / "run"
    probs = pd.read_csv(out / "oof_probs.csv", dtype={"id": str})
    assert list(probs.columns) == ["id", *CLASSES] and probs["id"].tolist() == ids
    values = probs[CLASSES].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    emb = np.load(out / "embeddings.npy")
    assert emb.dtype == np.float32 and emb.shape == (40, 256)
    assert np.allclose(emb, result.embeddings) and np.allclose(values, result.oof_probs, atol=1e-6)
    train = read_json(out / "run.json")["train"]
    assert train["complete"] and train["weights"]["source"] == "random"
    assert train["weights"]["identity"] == "random"
    assert {"torch", "timm", "scikit-learn"} <= set(train["versions"])
    assert len(train["folds"]) == 2 and train["folds"][0]["best_epoch"] == 1
    assert {"micro_f1", "macro_f1", "weighted_f1", "per_class"} <= set(train["metrics"])
    assert len(train["metrics"]["per_class"]) == 3
    for k in (1, 2):
        files = {p.name for p in (out / "folds" / f"fold_{k}").iterdir()}
        assert {"model.pt", "oof.npz", "state.json"} <= files
    ckpt = torch.load(out / "folds" / "fold_1" / "model.pt", weights_only=True)
    assert ckpt["backbone"] == "test_efficientnet" and ckpt["class_names"] == CLASSES
    folds = pd.read_csv(out / "folds" / "folds.csv", dtype={"id": str})
    assert np.array_equal(folds["fold"].to_numpy() - 1, result.fold_of)


def test_oof_predictions_come_only_from_the_held_out_model(tmp_path):
    images, labels, ids = tiny_data()
    result = cross_validate(images, labels, ids, CLASSES, tiny_settings(), tmp_path / "r", "fp")
    records = []
    for k in range(2):
        train_idx = np.flatnonzero(result.fold_of != k)
        held_idx = np.flatnonzero(result.fold_of == k)
        rec, why = load_fold(
            fold_dir(tmp_path / "r", k),
            f"{_key(tmp_path / 'r')}-{k + 1}",
            k,
            train_idx,
            held_idx,
            3,
        )
        assert rec is not None, why
        # each fold's predictions equal the merged OOF rows of exactly its held-out images
        assert np.allclose(result.oof_probs[held_idx], rec.probs)
        records.append(rec)
    assert np.array_equal(check_oof_provenance(result.fold_of, records), result.fold_of)
    # a model that saw an image it predicts is caught
    leaky = records[0]
    leaky.train_idx = np.concatenate([leaky.train_idx, leaky.held_idx[:1]])
    with pytest.raises(AssertionError, match="trained on images it predicts"):
        check_oof_provenance(result.fold_of, records)
    leaky.train_idx = leaky.train_idx[:-1]
    swapped = [records[1], records[0]]
    swapped[0].fold, swapped[1].fold = 0, 1
    with pytest.raises(AssertionError, match="not exactly its held-out fold"):
        check_oof_provenance(result.fold_of, swapped)


def _key(run_dir: Path) -> str:
    return read_json(run_dir / "run.json")["train"]["key"]


def test_resume_reuses_and_changes_invalidate(tmp_path):
    images, labels, ids = tiny_data()
    out = tmp_path / "run"
    first = cross_validate(images, labels, ids, CLASSES, tiny_settings(), out, "fp-1")
    assert first.trained == [1, 2] and first.reused == []
    console = recording_console()
    again = cross_validate(
        images, labels, ids, CLASSES, tiny_settings(threads=2), out, "fp-1", console=console
    )
    text = console.export_text()
    assert "fold 1/2: reused" in text and "fold 2/2: reused" in text
    assert again.reused == [1, 2] and np.array_equal(again.oof_probs, first.oof_probs)
    changed = cross_validate(images, labels, ids, CLASSES, tiny_settings(lr=3e-3), out, "fp-1")
    assert changed.trained == [1, 2]
    console = recording_console()
    other = cross_validate(
        images, labels, ids, CLASSES, tiny_settings(lr=3e-3), out, "fp-2", console=console
    )
    assert other.trained == [1, 2]
    assert "settings, weights or dataset changed, retraining" in console.export_text()


def test_single_fold_then_merge(tmp_path):
    images, labels, ids = tiny_data()
    out = tmp_path / "run"
    one = cross_validate(images, labels, ids, CLASSES, tiny_settings(), out, "fp", fold=2)
    assert not one.complete and one.trained == [2] and one.oof_probs is None
    assert not (out / "oof_probs.csv").exists()
    assert read_json(out / "run.json")["train"]["folds_done"] == [2]
    console = recording_console()
    merged = cross_validate(
        images, labels, ids, CLASSES, tiny_settings(), out, "fp", console=console
    )
    assert merged.complete and merged.reused == [2] and merged.trained == [1]
    assert "fold 2/2: reused" in console.export_text()
    assert (out / "oof_probs.csv").is_file()
    with pytest.raises(SettingsError, match="--fold must be between 1 and 2"):
        cross_validate(images, labels, ids, CLASSES, tiny_settings(), out, "fp", fold=3)


def test_half_written_fold_is_retrained(tmp_path):
    images, labels, ids = tiny_data()
    out = tmp_path / "run"
    cross_validate(images, labels, ids, CLASSES, tiny_settings(), out, "fp", fold=1)
    broken = fold_dir(out, 1)
    broken.mkdir(parents=True)
    (broken / "model.pt").write_bytes(b"partial")  # killed before state.json was written
    result = cross_validate(images, labels, ids, CLASSES, tiny_settings(), out, "fp")
    assert result.reused == [1] and result.trained == [2] and result.complete


def test_probe_mode_shapes(tmp_path):
    images, labels, ids = tiny_data()
    result = cross_validate(
        images, labels, ids, CLASSES, tiny_settings(mode="probe"), tmp_path / "p", "fp"
    )
    assert result.oof_probs.shape == (40, 3) and result.embeddings.shape == (40, 256)
    assert result.embeddings.dtype == np.float32
    assert ((result.oof_probs >= 0) & (result.oof_probs <= 1)).all()
    assert read_json(tmp_path / "p" / "run.json")["train"]["mode"] == "probe"
    assert (tmp_path / "p" / "oof_probs.csv").is_file()


def test_bad_inputs_are_settings_errors(tmp_path):
    images, labels, ids = tiny_data()
    with pytest.raises(SettingsError, match="cache is 32 x 32 px but image_size is 64"):
        cross_validate(images, labels, ids, CLASSES, tiny_settings(image_size=64), tmp_path, "f")
    with pytest.raises(SettingsError, match="too few for 5-fold"):
        cross_validate(
            images[:8], labels[:8], ids[:8], CLASSES, tiny_settings(folds=5), tmp_path, "f"
        )
    rare = labels.copy()
    rare[:, 2] = False
    rare[0, 2] = True
    with pytest.raises(SettingsError, match="'Mitochondria' \\(1 image\\)"):
        cross_validate(images, rare, ids, CLASSES, tiny_settings(strict=True), tmp_path, "f")


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_train_cv import tiny_data, tiny_settings, CLASSES
    from labelaudit.train import cv, loop

    real = loop.train_fold
    def killing(*args, **kwargs):
        if kwargs["seed"] % 1009 == 1:  # fold 2: die mid-training, like SIGKILL from a user
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    cv.train_fold = killing
    images, labels, ids = tiny_data()
    cv.cross_validate(images, labels, ids, CLASSES, tiny_settings(), {out!r}, "fp")
    """
)


@pytest.mark.slow
def test_sigkill_during_fold_2_leaves_fold_1_reusable(tmp_path):
    out = tmp_path / "run"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (fold_dir(out, 0) / "state.json").is_file()
    assert not (fold_dir(out, 1) / "state.json").exists()
    images, labels, ids = tiny_data()
    result = cross_validate(images, labels, ids, CLASSES, tiny_settings(), out, "fp")
    assert result.reused == [1] and result.trained == [2]
    state = json.loads((fold_dir(out, 1) / "state.json").read_text())
    assert state["status"] == "done"


def test_diverged_fold_is_a_clear_settings_error(tmp_path, monkeypatch):
    from labelaudit.core.errors import TrainingDiverged
    from labelaudit.train import cv, loop

    real = loop.train_fold

    def diverging(*args, **kwargs):
        out = real(*args, **kwargs)
        out.probs[:] = np.nan
        return out

    monkeypatch.setattr(cv, "train_fold", diverging)
    images, labels, ids = tiny_data()
    with pytest.raises(TrainingDiverged, match="fold 1/2: training diverged.*--lr"):
        cross_validate(images, labels, ids, CLASSES, tiny_settings(), tmp_path / "r", "fp")
    assert issubclass(TrainingDiverged, SettingsError)  # exit status 2 on the command line
    assert not (fold_dir(tmp_path / "r", 0) / "state.json").exists()  # nothing saved


def test_probe_classes_fitted_on_threads_match_the_serial_fit():
    from labelaudit.train.probe import fit_predict_fold

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 16))
    y = x[:, :5] + rng.normal(size=(120, 5)) > 0.5
    y[:, 4] = False  # a class without positives: the smoothed constant rate
    serial = fit_predict_fold(x[:100], y[:100], x[100:], n_jobs=1)
    threaded = fit_predict_fold(x[:100], y[:100], x[100:], n_jobs=3)
    np.testing.assert_array_equal(serial, threaded)
    assert np.allclose(serial[:, 4], 0.5 / 101)
