"""``labelaudit retrain``: what cleaning (and class weights) buy, on one fixed test split.

Two models are trained the same way (same settings, starting weights, seed and
train/validation/test split) and scored on the same held-out test images:

* ``before``: the original labels;
* ``after``: the cleaned labels (``RUN/changes.csv`` applied to the training and
  validation images only; the test images keep their given labels and all stay).

With ``clean=False`` both use the original labels and only the class weights
differ (``before`` none, ``after`` the chosen kind): the method's "zero weight vs
class weight" row. The split is made once, before cleaning, stratified over all
classes (iterative stratification) and fixed by the seed: ``test_fraction`` of the
images are the test set, ``val_fraction`` of the rest the validation set (early
stopping and per-class threshold tuning).

Class weights (``class_weights``) scale each class's term of the BCE loss:

* ``method``: the method's ``w_k = 1 - n_k / N`` (n_k positives of class k among the
  N training images of that model), passed as BCE ``weight``;
* ``pos``: BCE ``pos_weight = (N - n_k) / n_k`` (clipped to [1, 100]; 1 for a class
  without positives), which up-weights the positive examples of rare classes;
* ``none``: unweighted BCE.

Written under ``RUN/retrain/``: ``metrics.json`` (``{"before": {...}, "after":
{...}, "delta": {...}, ...}``; see ``docs/cleaning.md``), ``model.pt`` (the after
model) and ``before.pt`` (checkpoints: state dict + plain metadata, loadable with
``torch.load(weights_only=True)``), ``split.csv`` (``id, part``), ``table.csv`` (one
row per model configuration trained in this run directory, for the method's
tables), and ``run.json["retrain"]``. A model whose key (settings, weights, split,
labels, class weights) matches an existing checkpoint is reused, not retrained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.console import Console
from sklearn.metrics import precision_recall_fscore_support

from labelaudit.config import TrainSettings, resolve_settings, validate
from labelaudit.errors import DatasetError, RunDirError, SettingsError
from labelaudit.io import atomic_path, read_json, update_run_json, write_csv, write_json
from labelaudit.rundir import (
    DEFAULT_RUN,
    load_given_labels,
    parse_labels,
    read_run,
    with_run_lock,
)
from labelaudit.train.backbones import LabelModel, build_model, channel_stats
from labelaudit.train.folds import indices_digest, make_folds
from labelaudit.train.loop import make_runtime, train_fold
from labelaudit.train.loop import predict as predict_probs
from labelaudit.train.metrics import multilabel_metrics, summary

CLASS_WEIGHTS: tuple[str, ...] = ("method", "none", "pos")
RETRAIN_DIR = "retrain"
MODEL_FORMAT = "labelaudit-model"
MODEL_VERSION = 1
#: Bump when what a saved retrain model means changes (keys stop matching).
RETRAIN_FORMAT = 1
#: Below this many training images ``retrain`` ensembles 3 models per side by default.
SMALL_DATASET = 2000
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
TEST_NOTE = (
    "Test metrics compare predictions with the given labels of the test images, which "
    "are as noisy as the rest of the dataset: on real data they understate a model "
    "that learned the true labels. Only the *_true metrics (synthetic data with a "
    "truth file) measure against the true labels."
)
_HEADLINE = [
    f"{avg}_{m}"
    for avg in ("micro", "macro", "weighted", "samples")
    for m in ("f1", "precision", "recall")
] + ["subset_accuracy", "macro_ap"]


# ------------------------------------------------------------------ building blocks


def class_weights(labels: np.ndarray, kind: str) -> np.ndarray | None:
    """Per-class loss weights from a training label matrix.

    Parameters
    ----------
    labels
        Bool (N, K) labels of the training images.
    kind
        ``"method"``: ``w_k = 1 - n_k / N``; ``"pos"``: ``pos_weight_k = (N - n_k) / n_k``
        clipped to [1, 100] (1 where ``n_k = 0``); ``"none"``: ``None``.

    Returns
    -------
    np.ndarray or None
        float32 (K,).
    """
    if kind not in CLASS_WEIGHTS:
        raise SettingsError(
            f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}, got {kind!r}"
        )
    y = np.asarray(labels, dtype=bool)
    n = y.shape[0]
    n_k = y.sum(axis=0).astype(np.float64)
    if kind == "none":
        return None
    if n == 0:
        raise SettingsError("no training images left to compute class weights from")
    if kind == "method":
        return (1.0 - n_k / n).astype(np.float32)
    pos = np.where(n_k > 0, (n - n_k) / np.maximum(n_k, 1.0), 1.0)
    return np.clip(pos, 1.0, 100.0).astype(np.float32)


def split_parts(
    labels: np.ndarray, seed: int, test_fraction: float = 0.2, val_fraction: float = 0.2
) -> np.ndarray:
    """Assign each image to ``"train"``, ``"val"`` or ``"test"``, stratified and seeded.

    The test set is one fold of a ``round(1 / test_fraction)``-fold multi-label
    stratified split; the validation set one fold of a ``round(1 / val_fraction)``-fold
    split of the rest. Deterministic for a label matrix and seed.

    Returns
    -------
    np.ndarray
        (N,) object array of part names.
    """
    for name, frac in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 < float(frac) <= 0.5:
            raise SettingsError(f"{name} must be in (0, 0.5], got {frac}")
    y = np.asarray(labels, dtype=bool)
    n = y.shape[0]
    parts = np.full(n, "train", dtype=object)
    test = make_folds(y, max(2, round(1.0 / test_fraction)), seed) == 0
    parts[test] = "test"
    rest = np.flatnonzero(~test)
    val = make_folds(y[rest], max(2, round(1.0 / val_fraction)), seed + 1) == 0
    parts[rest[val]] = "val"
    return parts


def tune_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-class decision thresholds maximising F1 on validation data.

    Picks from :data:`THRESHOLD_GRID` (ties: the threshold closest to 0.5); a class
    without positive validation images keeps 0.5.

    Returns
    -------
    np.ndarray
        float64 (K,).
    """
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(probs, dtype=np.float64)
    out = np.full(y.shape[1], 0.5)
    order = np.argsort(np.abs(THRESHOLD_GRID - 0.5), kind="stable")
    grid = THRESHOLD_GRID[order]
    for k in range(y.shape[1]):
        pos = y[:, k]
        if not pos.any():
            continue
        pred = p[:, k][:, None] >= grid[None, :]
        tp = (pred & pos[:, None]).sum(axis=0)
        fp = (pred & ~pos[:, None]).sum(axis=0)
        fn = (~pred & pos[:, None]).sum(axis=0)
        f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        out[k] = float(grid[int(np.argmax(f1))])
    return out


def thresholded_metrics(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> dict:
    """Micro/macro/weighted F1, precision and recall at per-class thresholds."""
    y = np.asarray(labels, dtype=bool)
    pred = np.asarray(probs) >= np.asarray(thresholds)[None, :]
    out: dict[str, float] = {}
    for average in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = precision_recall_fscore_support(y, pred, average=average, zero_division=0)
        out[f"{average}_f1"] = float(f)
        out[f"{average}_precision"] = float(p)
        out[f"{average}_recall"] = float(r)
    return out


def model_metrics(
    given: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    thresholds: np.ndarray,
    truth: np.ndarray | None = None,
) -> dict:
    """The metrics of one model on the test images.

    Headline keys at threshold 0.5 (the method's), against the given test labels;
    ``*_true`` keys (and ``per_class_true``) against the true labels when given;
    ``tuned`` holds the same at the per-class validation thresholds.
    """
    out = multilabel_metrics(given, probs, class_names)
    out["tuned"] = thresholded_metrics(given, probs, thresholds)
    if truth is not None:
        true = multilabel_metrics(truth, probs, class_names)
        for key in _HEADLINE:
            out[f"{key}_true"] = true[key]
        out["per_class_true"] = true["per_class"]
        for key, value in thresholded_metrics(truth, probs, thresholds).items():
            out["tuned"][f"{key}_true"] = value
    return out


# ------------------------------------------------------------------ checkpoints


class PosWeightedModel(LabelModel):
    """A :class:`LabelModel` whose training loss uses BCE ``pos_weight``.

    The training loop's loss hook only takes a per-class ``weight``; this wrapper
    applies ``pos_weight`` while the model is in training mode (validation loss,
    used for early stopping, stays the plain BCE). Its state dict is a plain
    LabelModel's.
    """

    pos_weight: torch.Tensor | None = None

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.training and self.pos_weight is not None:
            return F.binary_cross_entropy_with_logits(
                logits.float(),
                targets,
                weight=weight,
                pos_weight=self.pos_weight.to(logits.device),
            )
        return super().loss(logits, targets, weight)


def save_checkpoint(
    path: str | Path,
    state_dict: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]],
    meta: dict,
) -> None:
    """Write ``{"state_dict": tensors, "meta": plain JSON-able dict}`` atomically.

    A list of state dicts is an ensemble: the first is stored as ``state_dict``
    (so a reader that knows only single models still gets a working member) and
    the rest as ``extra_state_dicts``. ``meta`` is round-tripped through JSON
    first, so the file always loads with ``torch.load(weights_only=True)``.
    """
    plain = json.loads(json.dumps(meta, default=str))
    states = state_dict if isinstance(state_dict, list) else [state_dict]
    tensors = [{k: v.detach().cpu().contiguous() for k, v in s.items()} for s in states]
    payload = {"format": MODEL_FORMAT, "state_dict": tensors[0], "meta": plain}
    if len(tensors) > 1:
        payload["extra_state_dicts"] = tensors[1:]
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[LabelModel, dict]:
    """Load a retrained model: ``(LabelModel in eval mode, metadata)``.

    Raises
    ------
    SettingsError
        Missing file, not a labelaudit model, or weights that do not fit the metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"model file {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors come in many types
        raise SettingsError(f"model file {path}: cannot be loaded safely: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != MODEL_FORMAT or "meta" not in raw:
        raise SettingsError(
            f"model file {path} is not a labelaudit model (write one with `labelaudit retrain`)"
        )
    meta = raw["meta"]
    if int(meta.get("version", 0)) > MODEL_VERSION:
        raise SettingsError(
            f"model file {path} is from a newer labelaudit (format {meta['version']})"
        )
    states = [raw["state_dict"], *raw.get("extra_state_dicts", [])]
    try:
        model = ensemble_from_states(
            states,
            meta["backbone"],
            int(meta["in_chans"]),
            int(meta["num_classes"]),
            meta.get("activation", "sigmoid"),
        )
    except RuntimeError as exc:
        raise SettingsError(f"model file {path}: weights do not fit its metadata: {exc}") from None
    model.eval()
    return model.to(device), meta


class EnsembleModel(torch.nn.Module):
    """Several :class:`LabelModel` members that answer as one: averaged logits.

    Averaging logits (rather than probabilities) keeps one forward signature, so
    the ensemble goes everywhere a single model does (prediction with flip TTA,
    the loss); the embedding is the members' mean embedding.
    """

    def __init__(self, members: list[LabelModel]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    @property
    def head(self) -> torch.nn.Linear:
        return self.members[0].head

    @property
    def num_features(self) -> int:
        return self.members[0].num_features

    @property
    def activation(self) -> str:
        return self.members[0].activation

    def forward(
        self, x: torch.Tensor, frozen: bool = False, with_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        outs = [m(x, frozen=frozen, with_features=True) for m in self.members]
        logits = torch.stack([o[0].float() for o in outs]).mean(0)
        feats = torch.stack([o[1].float() for o in outs]).mean(0)
        return (logits, feats) if with_features else logits

    def to_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return self.members[0].to_probs(logits)

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.members[0].loss(logits, targets, weight)


def ensemble_from_states(
    states: list[dict[str, torch.Tensor]],
    backbone: str,
    in_chans: int,
    num_classes: int,
    activation: str = "sigmoid",
) -> LabelModel | EnsembleModel:
    """Rebuild a saved model (one state dict) or ensemble (several), strictly.

    Raises
    ------
    RuntimeError
        A state dict does not fit the architecture.
    """
    stats = np.zeros((2, in_chans), dtype=np.float32)
    stats[1] = 1.0  # placeholders; the real statistics are buffers in the state dict
    models = []
    for state in states:
        model = build_model(backbone, in_chans, num_classes, stats, activation=activation)
        model.load_state_dict(state, strict=True)
        models.append(model)
    return models[0] if len(models) == 1 else EnsembleModel(models)


def member_seed(seed: int, member: int) -> int:
    """The training seed of ensemble member ``member`` (member 0 keeps ``seed``)."""
    return seed + 7919 * member


def _best_epoch(value: np.ndarray) -> int | list[int]:
    flat = np.atleast_1d(value).astype(int).tolist()
    return flat[0] if len(flat) == 1 else flat


def default_members(n_train: int) -> int:
    """Ensemble size when the caller does not choose: 3 below 2,000 training images.

    On small datasets two single trainings on nearly the same images differ by
    more than cleaning changes them (sd of the macro F1 change 0.05 on 256
    images; docs/cleaning.md), so each side is an average of three; on larger
    datasets one training is stable enough and three would triple the cost.
    """
    return 3 if n_train < SMALL_DATASET else 1


# ------------------------------------------------------------------ the run's data


def _settings(run: dict, preset: str | None, overrides: dict[str, Any]) -> TrainSettings:
    """The scan's training settings (or a preset's), with overrides applied."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if preset is not None or "train" not in run:
        settings = resolve_settings(preset or "auto", **overrides)
    else:
        names = {f.name for f in dataclasses.fields(TrainSettings)}
        stored = {k: v for k, v in run["train"].get("settings", {}).items() if k in names}
        if stored.get("weights") and not Path(stored["weights"]).is_file():
            stored["weights"] = None
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(map(repr, unknown))}")
        try:
            settings = validate(dataclasses.replace(TrainSettings(**stored), **overrides))
        except TypeError as exc:
            raise SettingsError(f"invalid settings: {exc}") from None
    if settings.mode != "finetune":
        settings = settings.replace(mode="finetune")
    return settings


def _open_images(info: dict, ids: list[str], size: int, cache_dir):
    """The scanned dataset's images at ``size`` (the cache), rows in ``ids`` order."""
    from labelaudit.data.cache import build_cache
    from labelaudit.data.layouts import LoadReport, load_dataset, recorded_load_options

    ds = load_dataset(
        info["path"],
        info["layout"],
        strict=False,
        report=LoadReport(),
        **recorded_load_options(info),
    )
    index = {image_id: i for i, image_id in enumerate(ds.ids)}
    missing = [image_id for image_id in ids if image_id not in index]
    if missing:
        raise RunDirError(
            f"the dataset {info['path']} no longer has {len(missing)} scanned image(s) "
            f"(e.g. {missing[0]!r}); re-run the scan"
        )
    if ds.ids != ids:
        rows = [index[image_id] for image_id in ids]
        ds = dataclasses.replace(
            ds,
            ids=list(ids),
            labels=ds.labels[rows],
            sources=[ds.sources[r] for r in rows],
            rows=[ds.rows[r] for r in rows],
        )
    return ds, build_cache(ds, size, cache_dir)


def _read_truth(path: Path, ids: list[str], info: dict) -> np.ndarray:
    from labelaudit.bench import read_truth

    truth = read_truth(path)
    frame = truth.set_index("ID")
    missing = [image_id for image_id in ids if image_id not in frame.index]
    if missing:
        raise DatasetError(
            f"no true labels for {len(missing)} image(s) of the run (e.g. {missing[0]!r})",
            path=path,
        )
    values = frame.loc[ids, "true_label"].astype(str)
    try:
        return parse_labels(values.reset_index(drop=True), info["class_tokens"], info["label_sep"])
    except KeyError as exc:
        raise DatasetError(
            f"unknown class token {exc.args[0]!r} in true_label", path=path
        ) from None


def _cleaned_labels(
    run_dir: Path, ids: list[str], given: np.ndarray, info: dict
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Apply ``changes.csv``: (new labels, removed mask, the changes table)."""
    from labelaudit.clean import read_changes

    changes = read_changes(run_dir)
    index = {image_id: i for i, image_id in enumerate(ids)}
    labels = given.copy()
    removed = np.zeros(len(ids), dtype=bool)
    tokens, sep = info["class_tokens"], info["label_sep"]
    path = run_dir / "changes.csv"
    for line, row in enumerate(changes.itertuples(index=False), start=2):
        i = index.get(row.id)
        if i is None:
            raise RunDirError(f"{path}, line {line}: image {row.id!r} is not in the run")
        try:
            old = parse_labels(pd.Series([row.old_labels]), tokens, sep)[0]
            new = parse_labels(pd.Series([row.new_labels]), tokens, sep)[0]
        except KeyError as exc:
            raise RunDirError(f"{path}, line {line}: unknown label {exc.args[0]!r}") from None
        if not np.array_equal(old, given[i]):
            raise RunDirError(
                f"{path}, line {line}: old labels of {row.id!r} differ from the scan's; "
                "changes.csv is out of date, re-run `labelaudit clean`"
            )
        if row.action == "remove":
            removed[i] = True
        else:
            labels[i] = new
    return labels, removed, changes


def _label_errors(
    given: np.ndarray, cleaned: np.ndarray, removed: np.ndarray, true: np.ndarray, rows: np.ndarray
) -> dict[str, int]:
    """How cleaning changed the number of wrongly labelled training/validation images."""
    wrong_before = (given[rows] != true[rows]).any(axis=1)
    wrong_after = (cleaned[rows] != true[rows]).any(axis=1)
    gone = removed[rows]
    relabelled = ~gone & (cleaned[rows] != given[rows]).any(axis=1)
    return {
        "n_before": int(len(rows)),
        "wrong_before": int(wrong_before.sum()),
        "n_after": int((~gone).sum()),
        "wrong_after": int((wrong_after & ~gone).sum()),
        "removed_wrong": int((gone & wrong_before).sum()),
        "removed_right": int((gone & ~wrong_before).sum()),
        "relabel_fixed": int((relabelled & wrong_before & ~wrong_after).sum()),
        "relabel_still_wrong": int((relabelled & wrong_before & wrong_after).sum()),
        "relabel_broke": int((relabelled & ~wrong_before).sum()),
    }


# ------------------------------------------------------------------ training one model


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _label_digest(labels: np.ndarray, rows: np.ndarray) -> str:
    packed = np.packbits(np.asarray(labels[rows], dtype=bool), axis=None).tobytes()
    return hashlib.sha256(packed + str(labels.shape).encode()).hexdigest()[:16]


def _find_trained(out_dir: Path, key: str) -> tuple[Path, Path, dict] | None:
    """A saved model (``before`` or ``model``) trained with ``key``, and its arrays."""
    for name in ("model", "before"):
        ckpt, arrays = out_dir / f"{name}.pt", out_dir / f"{name}.npz"
        if not (ckpt.is_file() and arrays.is_file()):
            continue
        try:
            with np.load(arrays) as z:
                if str(z["key"]) == key:
                    return ckpt, arrays, {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError):
            continue
    return None


def _train_one(
    name: str,
    *,
    out_dir: Path,
    images: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    test_idx: np.ndarray,
    kind: str,
    settings: TrainSettings,
    weights,
    meta: dict,
    fingerprint: str,
    console: Console,
    members: int = 1,
) -> dict:
    """Train (or reuse) one model; returns its test/val probabilities and metadata.

    With ``members > 1`` the model is an ensemble: that many networks trained on the
    same images from the same starting weights with different seeds (initialisation
    of the head, shuffling, augmentation), whose logits are averaged
    (:class:`EnsembleModel`).
    """
    from labelaudit.train.cv import torch_threads
    from labelaudit.train.progress import fold_progress

    w = class_weights(labels[train_idx], kind)
    key = _key(
        {
            "format": RETRAIN_FORMAT,
            "settings": {k: v for k, v in settings.result_fields().items() if k != "weights"},
            "weights": weights.identity,
            "fingerprint": fingerprint,
            "train": indices_digest(train_idx),
            "val": indices_digest(val_idx),
            "test": indices_digest(test_idx),
            "labels": _label_digest(labels, np.concatenate([train_idx, val_idx])),
            "class_weights": kind,
            **({"members": members} if members > 1 else {}),
        }
    )
    ckpt, arrays = out_dir / f"{name}.pt", out_dir / f"{name}.npz"
    found = _find_trained(out_dir, key)
    if found is not None:
        src_ckpt, src_arrays, z = found
        for src, dst in ((src_ckpt, ckpt), (src_arrays, arrays)):
            if src != dst:
                with atomic_path(dst) as tmp:
                    shutil.copyfile(src, tmp)
        console.print(f"{name}: reused (same settings, split, labels and class weights)")
        return {
            "key": key,
            "reused": True,
            "val_probs": z["val_probs"],
            "test_probs": z["test_probs"],
            "thresholds": z["thresholds"],
            "class_weights": w,
            "best_epoch": _best_epoch(z["best_epoch"]),
            "seconds": float(z["seconds"]),
        }

    runtime = make_runtime(settings)
    start = time.perf_counter()
    outs, trained = [], []
    weight = torch.as_tensor(w) if kind == "method" else None
    with torch_threads(settings.threads, runtime.info, runtime.device):
        stats = channel_stats(images, seed=settings.seed)
        for member in range(members):
            seed = member_seed(settings.seed, member)
            torch.manual_seed(seed)
            model = build_model(
                settings.backbone,
                images.shape[1],
                labels.shape[1],
                stats,
                weights,
                settings.activation,
            )
            if kind == "pos":
                wrapped = PosWeightedModel(
                    model.backbone, labels.shape[1], stats, settings.activation
                )
                wrapped.head.load_state_dict(model.head.state_dict())
                wrapped.pos_weight = torch.as_tensor(w)
                model = wrapped
            title = f"{name} ({len(train_idx)} images)"
            if members > 1:
                title = f"{name} {member + 1}/{members} ({len(train_idx)} images)"
            with fold_progress(console, title, settings.progress) as cb:
                outs.append(
                    train_fold(
                        model,
                        images,
                        labels,
                        train_idx,
                        val_idx,
                        settings,
                        runtime,
                        seed=seed,
                        progress=cb,
                        class_weight=weight,
                    )
                )
            trained.append(model)  # train_fold left its best epoch's weights in it
        if members == 1:
            final: torch.nn.Module = model
            val_probs = outs[0].probs
        else:
            final = EnsembleModel(trained)
            val_probs, _, _ = predict_probs(
                final, images, val_idx, settings.batch_size, runtime, tta=settings.tta
            )
        test_probs, _, _ = predict_probs(
            final, images, test_idx, settings.batch_size, runtime, tta=settings.tta
        )
    seconds = time.perf_counter() - start
    thresholds = tune_thresholds(labels[val_idx], val_probs)
    best_epochs = [o.best_epoch for o in outs]
    save_checkpoint(
        ckpt,
        [o.state_dict for o in outs],
        {
            **meta,
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "name": name,
            "key": key,
            "thresholds": thresholds.tolist(),
            "thresholds_from": f"validation ({len(val_idx)} images, F1-optimal per class)",
            "class_weights": {"kind": kind, "values": None if w is None else w.tolist()},
            "members": members,
            "best_epoch": best_epochs[0] if members == 1 else best_epochs,
            "history": outs[0].history if members == 1 else [o.history for o in outs],
            "n_train": len(train_idx),
            "n_val": len(val_idx),
        },
    )
    with atomic_path(arrays) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            key=np.array(key),
            val_probs=val_probs,
            test_probs=test_probs,
            thresholds=thresholds,
            best_epoch=np.array(best_epochs),
            seconds=np.array(seconds),
        )
    what = f"best epoch {best_epochs[0]}"
    if members > 1:
        what = f"{members} members, best epochs {', '.join(map(str, best_epochs))}"
    console.print(f"{name}: trained in {seconds:.0f} s on {len(train_idx)} images, {what}")
    return {
        "key": key,
        "reused": False,
        "val_probs": val_probs,
        "test_probs": test_probs,
        "thresholds": thresholds,
        "class_weights": w,
        "best_epoch": best_epochs[0] if members == 1 else best_epochs,
        "seconds": seconds,
    }


DELTA_KEYS = (
    "micro_f1",
    "macro_f1",
    "weighted_f1",
    "micro_f1_true",
    "macro_f1_true",
    "weighted_f1_true",
)


def per_class_change(before: dict, after: dict, names: list[str]) -> list[dict]:
    """Per class: support and F1 of both models and the change (``_true`` too if present)."""
    rows = []
    for k, cname in enumerate(names):
        b, a = before["per_class"][k], after["per_class"][k]
        row = {
            "class": cname,
            "support": b["support"],
            "f1_before": b["f1"],
            "f1_after": a["f1"],
            "f1_change": a["f1"] - b["f1"],
        }
        if "per_class_true" in before and "per_class_true" in after:
            bt, at = before["per_class_true"][k]["f1"], after["per_class_true"][k]["f1"]
            row.update({"f1_true_before": bt, "f1_true_after": at, "f1_true_change": at - bt})
        rows.append(row)
    return rows


def _table_row(m: dict, policy: str | None, seed: int) -> dict:
    """One ``table.csv`` row: a model configuration and its headline metrics."""
    labels = m["labels"] + (f" ({policy})" if m["labels"] == "cleaned" else "")
    row = {
        "labels": labels,
        "class_weights": m["class_weights"],
        "micro_f1": m["micro_f1"],
        "macro_f1": m["macro_f1"],
        "weighted_f1": m["weighted_f1"],
        "tuned_macro_f1": m["tuned"]["macro_f1"],
    }
    if "macro_f1_true" in m:
        row["micro_f1_true"] = m["micro_f1_true"]
        row["macro_f1_true"] = m["macro_f1_true"]
        row["tuned_macro_f1_true"] = m["tuned"]["macro_f1_true"]
    row.update(
        {"n_train": m["n_train"], "members": m.get("members", 1), "seed": seed, "key": m["key"]}
    )
    return row


def _update_table(path: Path, rows: list[dict]) -> pd.DataFrame:
    """Upsert the rows (by ``key``) into ``table.csv``."""
    new = pd.DataFrame(rows)
    if path.is_file():
        old = pd.read_csv(path, dtype={"key": str})
        old = old[~old["key"].isin(new["key"])]
        new = pd.concat([old, new], ignore_index=True)
    write_csv(path, new)
    return new


# ------------------------------------------------------------------ entry point


@with_run_lock  # one writer at a time: retrain/, clean, run.json
def retrain(
    run_dir: str | Path = DEFAULT_RUN,
    *,
    clean: bool = True,
    class_weights: str = "method",
    truth: str | Path | None = None,
    policy: str | None = None,
    decisions: str | Path | None = None,
    preset: str | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    members: int | None = None,
    cache_dir: str | Path | None = None,
    console: Console | None = None,
    **overrides: Any,
) -> dict:
    """Train before/after models on one fixed split and write ``RUN/retrain/``.

    Parameters
    ----------
    run_dir
        A scanned run directory.
    clean
        ``True``: ``after`` trains on the cleaned labels (``changes.csv``). ``False``:
        both train on the original labels, ``before`` without and ``after`` with
        ``class_weights`` (the method's class-weight comparison).
    class_weights
        ``"method"`` (w_k = 1 - n_k/N), ``"pos"`` (BCE pos_weight) or ``"none"``.
    truth
        A truth CSV (``labelaudit synth``): adds ``*_true`` metrics.
    policy, decisions
        Re-run :func:`labelaudit.clean.clean` with this policy / decisions file
        first; by default the existing ``changes.csv`` is used (cleaning with the
        default policy when there is none).
    preset
        Train with this preset instead of the scan's settings.
    test_fraction, val_fraction
        Size of the test split, and of the validation split of the rest.
    members
        Models per side, trained with different seeds and averaged (an ensemble);
        ``None``: :func:`default_members` (3 below 2,000 training images, else 1),
        so the comparison is not drowned by the noise of single trainings.
    cache_dir
        Image cache location.
    console
        Where progress goes; silent when ``None``.
    **overrides
        Settings replacing the scan's (``epochs``, ``seed``, ``backbone``, ...).

    Returns
    -------
    dict
        The contents of ``metrics.json``.
    """
    from labelaudit.clean import DEFAULT_POLICY
    from labelaudit.clean import clean as run_clean
    from labelaudit.train.cv import package_versions
    from labelaudit.train.weights import resolve_weights

    start = time.perf_counter()
    console = console or Console(quiet=True)
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    if "dataset" not in run:
        raise RunDirError(f"{run_dir}/run.json has no dataset section; re-run the scan")
    info = run["dataset"]
    if class_weights not in CLASS_WEIGHTS:
        raise SettingsError(
            f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}, got {class_weights!r}"
        )
    settings = _settings(run, preset, overrides)
    if class_weights == "pos" and settings.activation != "sigmoid":
        raise SettingsError(
            "class_weights 'pos' (BCE pos_weight) needs the sigmoid head, "
            f"not {settings.activation!r}; use 'method' or 'none'"
        )
    ids, given = load_given_labels(run_dir, info)
    names = list(info["class_names"])
    true = _read_truth(Path(truth), ids, info) if truth is not None else None

    # Cleaning first (cheap), so a bad decisions file fails before any decoding.
    clean_info: dict[str, Any] = {"clean": bool(clean)}
    if clean:
        if policy is not None or decisions is not None or not (run_dir / "changes.csv").is_file():
            run_clean(run_dir, policy=policy or DEFAULT_POLICY, decisions=decisions)
        cleaned, removed, _ = _cleaned_labels(run_dir, ids, given, info)
        section = read_run(run_dir).get("clean", {})
        clean_info["policy"] = section.get("policy")
        clean_info["decisions"] = section.get("decisions")
    else:
        cleaned, removed = given.copy(), np.zeros(len(ids), dtype=bool)
    changed = removed | (cleaned != given).any(axis=1)

    parts = split_parts(given, settings.seed, test_fraction, val_fraction)
    test_idx = np.flatnonzero(parts == "test")
    train_idx = np.flatnonzero(parts == "train")
    val_idx = np.flatnonzero(parts == "val")
    out_dir = run_dir / RETRAIN_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "split.csv", pd.DataFrame({"id": ids, "part": parts}))

    # Cleaning touches only the training part: test images keep their given labels.
    after_labels = cleaned.copy()
    after_labels[test_idx] = given[test_idx]
    removed[test_idx] = False
    relabelled = (after_labels != given).any(axis=1)
    after_train = train_idx[~removed[train_idx]]
    after_val = val_idx[~removed[val_idx]]
    if len(after_train) < 2 or len(after_val) < 1:
        raise SettingsError("cleaning left too few training or validation images to retrain")
    if members is None:
        members = default_members(len(train_idx))
    if int(members) < 1:
        raise SettingsError(f"members must be at least 1, got {members}")
    members = int(members)
    clean_info.update(
        {
            "n_removed_train": int(removed[train_idx].sum()),
            "n_removed_val": int(removed[val_idx].sum()),
            "n_relabelled_train": int(relabelled[train_idx].sum()),
            "n_relabelled_val": int(relabelled[val_idx].sum()),
            "n_changes_ignored_in_test": int(changed[test_idx].sum()),
        }
    )
    if true is not None:
        clean_info["train_label_errors_true"] = _label_errors(
            given, after_labels, removed, true, np.concatenate([train_idx, val_idx])
        )

    ds, cache = _open_images(info, ids, settings.image_size, cache_dir)
    weights = resolve_weights(settings, cache.images.shape[1], log=lambda m: console.print(m))
    console.print(f"weights: {weights.detail}")
    meta = {
        "backbone": settings.backbone,
        "in_chans": int(cache.images.shape[1]),
        "num_classes": len(names),
        "class_names": names,
        "class_tokens": list(info["class_tokens"]),
        "label_sep": info["label_sep"],
        "layout": info["layout"],
        "channels": list(info.get("channels", ds.channels)),
        "activation": settings.activation,
        "image_size": int(settings.image_size),
        "tta": bool(settings.tta),
        "settings": settings.to_dict(),
        "weights_source": weights.detail,
        "versions": package_versions(),
        "run_dir": str(run_dir.resolve()),
    }
    before_kind = class_weights if clean else "none"
    common = dict(
        out_dir=out_dir,
        images=cache.images,
        test_idx=test_idx,
        settings=settings,
        weights=weights,
        fingerprint=info.get("fingerprint", ""),
        console=console,
        members=members,
    )
    models = {
        "before": _train_one(
            "before",
            labels=given,
            train_idx=train_idx,
            val_idx=val_idx,
            kind=before_kind,
            meta={**meta, "labels": "original"},
            **common,
        ),
        "after": _train_one(
            "model",
            labels=after_labels,
            train_idx=after_train,
            val_idx=after_val,
            kind=class_weights,
            meta={**meta, "labels": "cleaned" if clean else "original"},
            **common,
        ),
    }
    sizes = {
        "before": (len(train_idx), len(val_idx)),
        "after": (len(after_train), len(after_val)),
    }
    kinds = {"before": before_kind, "after": class_weights}
    result: dict[str, Any] = {}
    test_given = given[test_idx]
    test_true = true[test_idx] if true is not None else None
    for which, m in models.items():
        metrics = model_metrics(test_given, m["test_probs"], names, m["thresholds"], test_true)
        metrics.update(
            {
                "labels": "cleaned" if which == "after" and clean else "original",
                "class_weights": kinds[which],
                "class_weight_values": None if m["class_weights"] is None else m["class_weights"],
                "n_train": sizes[which][0],
                "n_val": sizes[which][1],
                "n_test": int(len(test_idx)),
                "test_digest": indices_digest(test_idx),
                "thresholds": m["thresholds"],
                "best_epoch": m["best_epoch"],
                "members": members,
                "seconds": round(m["seconds"], 3),
                "reused": m["reused"],
                "key": m["key"],
            }
        )
        result[which] = metrics
    b, a = result["before"], result["after"]
    result["delta"] = {k: a[k] - b[k] for k in DELTA_KEYS if k in b}
    result["per_class_change"] = per_class_change(b, a, names)
    result["config"] = {
        **clean_info,
        "before": {"labels": b["labels"], "class_weights": kinds["before"]},
        "after": {"labels": a["labels"], "class_weights": kinds["after"]},
        "truth": str(Path(truth).resolve()) if truth is not None else None,
    }
    result["split"] = {
        "seed": settings.seed,
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "n_test": int(len(test_idx)),
        "test_digest": indices_digest(test_idx),
        "file": "retrain/split.csv",
    }
    result["settings"] = settings.to_dict()
    result["checkpoint"] = str((out_dir / "model.pt").resolve())
    result["checkpoint_before"] = str((out_dir / "before.pt").resolve())
    result["note"] = TEST_NOTE
    result["seconds"] = round(time.perf_counter() - start, 3)
    write_json(out_dir / "metrics.json", result)

    table_rows = [
        _table_row(result[which], clean_info.get("policy"), settings.seed)
        for which in ("before", "after")
    ]
    _update_table(out_dir / "table.csv", table_rows)

    update_run_json(
        run_dir,
        "retrain",
        {
            "config": result["config"],
            "split": result["split"],
            "before": summary({k: v for k, v in b.items() if k not in ("per_class_true",)}),
            "after": summary({k: v for k, v in a.items() if k not in ("per_class_true",)}),
            "delta": result["delta"],
            "metrics": str((out_dir / "metrics.json").resolve()),
            "checkpoint": result["checkpoint"],
            "seconds": result["seconds"],
        },
    )
    headline = ", ".join(
        f"{k} {b[k]:.3f} -> {a[k]:.3f}" for k in ("micro_f1", "macro_f1", "macro_f1_true") if k in b
    )
    console.print(f"retrain: {headline}")
    return read_json(out_dir / "metrics.json")
