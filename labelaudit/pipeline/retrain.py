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
model) and ``before.pt`` (checkpoints of :mod:`labelaudit.train.checkpoint`, loadable
with ``torch.load(weights_only=True)``), ``split.csv`` (``id, part``), ``table.csv`` (one
row per model configuration trained in this run directory, for the method's
tables), and ``run.json["retrain"]``. A model whose key (settings, weights, split,
labels, class weights) matches an existing checkpoint is reused, not retrained.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from labelaudit.core.config import TrainSettings, resolve_settings, validate
from labelaudit.core.errors import RunDirError, SettingsError
from labelaudit.core.stats import NOISE_MARK as NOISE_MARK
from labelaudit.core.stats import NOISE_NOTE, format_change
from labelaudit.data.labels import LabelCodec
from labelaudit.data.roles import roles_from_info
from labelaudit.pipeline.bench import read_true_labels
from labelaudit.pipeline.evaluation import (
    CI_LEVEL,
    CLASS_WEIGHTS,
    DELTA_KEYS,
    CleanPlan,
    Split,
    change_intervals,
    class_weights,
    label_error_counts,
    label_error_summary,
    make_split,
    mark_noise,
    model_metrics,
    per_class_change,
    plan_cleaning,
    tune_thresholds,
)
from labelaudit.pipeline.model_store import (
    Fitted,
    Side,
    TrainContext,
    checkpoint_meta,
    model_key,
    reuse_trained,
    save_trained,
)
from labelaudit.rundir import (
    CHANGES_CSV,
    DEFAULT_RUN,
    RETRAIN_DIR,
    RETRAIN_METRICS,
    RETRAIN_SPLIT,
    RETRAIN_TABLE,
    RunDir,
    with_run_lock,
)
from labelaudit.train.backbones import LabelModel, build_model, channel_mean_std

# The checkpoint format lives in labelaudit.train.checkpoint; these names stay
# importable from here for callers of earlier versions.
from labelaudit.train.checkpoint import MODEL_FORMAT as MODEL_FORMAT
from labelaudit.train.checkpoint import MODEL_VERSION as MODEL_VERSION
from labelaudit.train.checkpoint import EnsembleModel as EnsembleModel
from labelaudit.train.checkpoint import ensemble_from_states as ensemble_from_states
from labelaudit.train.checkpoint import load_checkpoint as load_checkpoint
from labelaudit.train.folds import indices_digest
from labelaudit.train.loop import FoldOutput, Runtime, make_runtime, train_fold
from labelaudit.train.loop import predict as predict_probs
from labelaudit.train.loss import LossFn, TrainLoss, training_loss
from labelaudit.train.metrics import summary

#: Below this many training images ``retrain`` ensembles 3 models per side by default.
SMALL_DATASET = 2000
TEST_NOTE = (
    "Test metrics compare predictions with the given labels of the test images, which "
    "are as noisy as the rest of the dataset: on real data they understate a model "
    "that learned the true labels. Only the *_true metrics (synthetic data with a "
    "truth file) measure against the true labels."
)


# ------------------------------------------------------------------ building blocks


def member_seed(seed: int, member: int) -> int:
    """The training seed of ensemble member ``member`` (member 0 keeps ``seed``)."""
    return seed + 7919 * member


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


def _open_images(run_dir: Path, info: dict, ids: list[str], size: int, cache_dir):
    """The scanned dataset's images at ``size`` (the cache), rows in ``ids`` order."""
    from labelaudit.data.cache import build_cache

    ds, rows = RunDir(run_dir).load_scanned_dataset(info, ids)
    if ds.ids != ids:
        ds = dataclasses.replace(
            ds,
            ids=list(ids),
            labels=ds.labels[rows],
            sources=[ds.sources[r] for r in rows],
            rows=[ds.rows[r] for r in rows],
        )
    return ds, build_cache(ds, size, cache_dir)


def _cleaned_labels(
    run_dir: Path, ids: list[str], given: np.ndarray, info: dict
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Apply ``changes.csv``: (new labels, removed mask, the changes table)."""
    from labelaudit.pipeline.clean import read_changes

    changes = read_changes(run_dir)
    index = {image_id: i for i, image_id in enumerate(ids)}
    labels = given.copy()
    removed = np.zeros(len(ids), dtype=bool)
    codec = LabelCodec.from_info(info)
    path = run_dir / CHANGES_CSV
    for line, row in enumerate(changes.itertuples(index=False), start=2):
        i = index.get(row.id)
        if i is None:
            raise RunDirError(f"{path}, line {line}: image {row.id!r} is not in the run")

        def bad(message: str, line: int = line) -> RunDirError:
            return RunDirError(f"{path}, line {line}: {message}")

        old = codec.parse(row.old_labels, where=bad)
        new = codec.parse(row.new_labels, where=bad)
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


# ------------------------------------------------------------------ training one model


def side_loss(
    kind: str,
    values: np.ndarray | None,
    activation: str,
    label_weight: np.ndarray | None = None,
) -> TrainLoss:
    """The training loss of a class-weight kind (``weight``, ``pos_weight`` or neither),
    with the per-label weights of soft cleaning when given."""
    return training_loss(
        activation,
        weight=values if kind == "method" else None,
        pos_weight=values if kind == "pos" else None,
        label_weight=label_weight,
    )


def _train_member(
    side: Side, ctx: TrainContext, member: int, stats: np.ndarray, runtime: Runtime, loss: LossFn
) -> tuple[FoldOutput, LabelModel]:
    """Train ensemble member ``member``; the model comes back with its best epoch's weights."""
    from labelaudit.train.progress import fold_progress

    settings = ctx.settings
    seed = member_seed(settings.seed, member)
    torch.manual_seed(seed)
    model = build_model(
        settings.backbone,
        ctx.images.shape[1],
        side.labels.shape[1],
        stats,
        ctx.weights,
        settings.activation,
    )
    title = f"{side.name} ({len(side.train_idx)} images)"
    if ctx.members > 1:
        title = f"{side.name} {member + 1}/{ctx.members} ({len(side.train_idx)} images)"
    with fold_progress(ctx.console, title, settings.progress) as cb:
        out = train_fold(
            model,
            ctx.images,
            side.labels,
            side.train_idx,
            side.val_idx,
            settings,
            runtime,
            seed=seed,
            progress=cb,
            loss=loss,
        )
    return out, model


def _fit(side: Side, ctx: TrainContext, loss: LossFn) -> Fitted:
    """Train ``ctx.members`` models for ``side``; predict its validation and test images.

    With several members the model is an ensemble: networks trained on the same
    images from the same starting weights with different seeds (initialisation of
    the head, shuffling, augmentation), whose logits are averaged
    (:class:`~labelaudit.train.checkpoint.EnsembleModel`).
    """
    from labelaudit.train.cv import torch_threads

    settings = ctx.settings
    runtime = make_runtime(settings)
    start = time.perf_counter()
    with torch_threads(settings.threads, runtime.info, runtime.device):
        stats = channel_mean_std(ctx.images, seed=settings.seed)
        trained = [_train_member(side, ctx, m, stats, runtime, loss) for m in range(ctx.members)]
        outs = [out for out, _ in trained]
        models = [model for _, model in trained]
        final = models[0] if ctx.members == 1 else EnsembleModel(models)

        def probs_of(rows: np.ndarray) -> np.ndarray:
            # An EnsembleModel answers as a LabelModel (same forward, head, activation).
            model = cast(LabelModel, final)
            return predict_probs(
                model, ctx.images, rows, settings.batch_size, runtime, tta=settings.tta
            )[0]

        val_probs = outs[0].probs if ctx.members == 1 else probs_of(side.val_idx)
        test_probs = probs_of(ctx.test_idx)
    return Fitted(outs, val_probs, test_probs, time.perf_counter() - start)


def _train_one(side: Side, ctx: TrainContext) -> dict:
    """Train (or reuse) one model; returns its test/val probabilities and metadata."""
    w = class_weights(side.labels[side.train_idx], side.kind)
    key = model_key(side, ctx)
    reused = reuse_trained(side, ctx, key, w)
    if reused is not None:
        return reused
    fitted = _fit(side, ctx, side_loss(side.kind, w, ctx.settings.activation, side.label_weight))
    thresholds = tune_thresholds(side.labels[side.val_idx], fitted.val_probs)
    meta = checkpoint_meta(side, ctx, key, fitted, thresholds, w)
    save_trained(side, ctx, key, fitted, thresholds, meta)
    epochs = [o.best_epoch for o in fitted.outs]
    what = f"best epoch {epochs[0]}"
    if ctx.members > 1:
        what = f"{ctx.members} members, best epochs {', '.join(map(str, epochs))}"
    ctx.console.print(
        f"{side.name}: trained in {fitted.seconds:.0f} s on {len(side.train_idx)} images, {what}"
    )
    return {
        "key": key,
        "reused": False,
        "val_probs": fitted.val_probs,
        "test_probs": fitted.test_probs,
        "thresholds": thresholds,
        "class_weights": w,
        "best_epoch": fitted.best_epoch,
        "seconds": fitted.seconds,
    }


def summary_lines(m: dict) -> list[str]:
    """The before/after tables ``labelaudit retrain`` prints (plain text, no markup).

    Overall F1 before/after with the change and its 95 % interval, the label-level
    errors of the training labels (with a truth file), and per class the number of
    test images with the class, F1 before/after and the change; changes whose
    interval contains 0 carry :data:`NOISE_MARK` (explained by the last line).
    """
    b, a, ci = m["before"], m["after"], m.get("delta_ci", {})
    n_test = b.get("n_test", b.get("n_images", 0))
    lines = [
        f"before / after on {n_test} test images (threshold 0.5; change with its "
        f"{CI_LEVEL:.0%} bootstrap interval)",
        f"{'metric':<15} {'before':>7} {'after':>7}  change [95% CI]",
    ]
    for name in ("micro_f1", "macro_f1", "micro_f1_true", "macro_f1_true"):
        if name in b and name in a:
            lines.append(
                f"{name:<15} {b[name]:>7.3f} {a[name]:>7.3f}  {format_change(ci.get(name))}"
            )
    errors = m.get("label_errors_true")
    if errors:
        dropped = errors["images_before"] - errors["images_after"]
        lines.append(
            f"training label errors vs truth (label level, train+val): {errors['before']} -> "
            f"{errors['after']} ({dropped} images dropped)"
        )
    rows = m.get("per_class_change", [])
    truth = "per_class_true" in ci and all("f1_true_before" in r for r in rows)
    key = "f1_true" if truth else "f1"
    per = b.get("per_class_true" if truth else "per_class", [])
    width = max([len("class")] + [len(r["class"]) for r in rows])
    lines.append(f"per class ({'true' if truth else 'given'} test labels):")
    head = f"{'class':<{width}} {'test images':>11} {'before':>7} {'after':>7}"
    lines.append(f"{head}  change [95% CI]")
    intervals = ci.get("per_class_true" if truth else "per_class", [])
    for k, row in enumerate(rows):
        support = per[k]["support"] if k < len(per) else row["support"]
        cell = format_change(intervals[k] if k < len(intervals) else None)
        lines.append(
            f"{row['class']:<{width}} {support:>11} {row[key + '_before']:>7.3f} "
            f"{row[key + '_after']:>7.3f}  {cell}"
        )
    lines.append(NOISE_NOTE)
    return lines


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


# ------------------------------------------------------------------ the steps of retrain


@dataclass(frozen=True)
class RetrainOptions:
    """What to compare and how to split: :func:`retrain`'s parameters besides settings."""

    clean: bool = True
    class_weights: str = "method"
    truth: str | Path | None = None
    policy: str | None = None
    decisions: str | Path | None = None
    preset: str | None = None
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    members: int | None = None
    cache_dir: str | Path | None = None

    @property
    def before_kind(self) -> str:
        """``before``'s class weights: the same as ``after``'s unless only weights differ."""
        return self.class_weights if self.clean else "none"


@dataclass(frozen=True)
class RunInputs:
    """What retrain reads from the run: dataset, settings, given (and true) labels."""

    info: dict
    settings: TrainSettings
    ids: list[str]
    given: np.ndarray
    names: list[str]
    true: np.ndarray | None


def resolve_members(members: int | None, n_train: int) -> int:
    """Models per side: ``members``, or :func:`default_members` of the training size."""
    if members is None:
        members = default_members(n_train)
    if int(members) < 1:
        raise SettingsError(f"members must be at least 1, got {members}")
    return int(members)


def comparison_sides(
    given: np.ndarray,
    plan: CleanPlan,
    split: Split,
    opts: RetrainOptions,
    label_weight: np.ndarray | None = None,
) -> dict[str, Side]:
    """The two models: ``before`` (given labels) and ``after`` (saved as ``model``).

    ``label_weight`` (N, K): the soft-cleaning weights the ``after`` model trains with.
    """
    return {
        "before": Side(
            "before", given, split.train_idx, split.val_idx, opts.before_kind, "original"
        ),
        "after": Side(
            "model",
            plan.labels,
            plan.train_idx,
            plan.val_idx,
            opts.class_weights,
            "cleaned" if opts.clean else "original",
            label_weight if opts.clean else None,
        ),
    }


def side_metrics(m: dict, side: Side, members: int, names: list[str], test: tuple) -> dict:
    """One model's ``metrics.json`` entry; ``test`` is ``(test_idx, given, true or None)``."""
    test_idx, test_given, test_true = test
    metrics = model_metrics(test_given, m["test_probs"], names, m["thresholds"], test_true)
    metrics.update(
        {
            "labels": side.label_kind,
            "class_weights": side.kind,
            "class_weight_values": None if m["class_weights"] is None else m["class_weights"],
            "n_train": len(side.train_idx),
            "n_val": len(side.val_idx),
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
    return metrics


def split_summary(split: Split, seed: int, opts: RetrainOptions) -> dict:
    """``metrics.json["split"]``: how the fixed split was made and its sizes."""
    return {
        "seed": seed,
        "test_fraction": opts.test_fraction,
        "val_fraction": opts.val_fraction,
        "n_train": int(len(split.train_idx)),
        "n_val": int(len(split.val_idx)),
        "n_test": int(len(split.test_idx)),
        "test_digest": indices_digest(split.test_idx),
        "file": RETRAIN_SPLIT,
    }


def assemble_result(
    scored: dict[str, dict],
    sides: dict[str, Side],
    names: list[str],
    clean_info: dict,
    opts: RetrainOptions,
    ci: dict | None = None,
) -> dict[str, Any]:
    """``metrics.json`` (without paths, split and timing) from both models' metrics.

    ``ci``: :func:`change_intervals`, stored as ``delta_ci`` and marked on the
    per-class rows.
    """
    b, a = scored["before"], scored["after"]
    extra: dict[str, Any] = {}
    if ci is not None:
        extra["delta_ci"] = ci
    if "train_label_errors_true" in clean_info:
        extra["label_errors_true"] = label_error_summary(clean_info["train_label_errors_true"])
    return {
        "before": b,
        "after": a,
        "delta": {k: a[k] - b[k] for k in DELTA_KEYS if k in b},
        **extra,
        "per_class_change": mark_noise(per_class_change(b, a, names), ci or {}),
        "config": {
            **clean_info,
            "before": {"labels": b["labels"], "class_weights": sides["before"].kind},
            "after": {"labels": a["labels"], "class_weights": sides["after"].kind},
            "truth": str(Path(opts.truth).resolve()) if opts.truth is not None else None,
        },
    }


def _read_inputs(run_dir: Path, opts: RetrainOptions, overrides: dict[str, Any]) -> RunInputs:
    """The run's dataset, settings and labels; every option checked before any work."""
    rundir = RunDir(run_dir)
    run = rundir.read_run()
    info = rundir.dataset_info(run)
    if opts.class_weights not in CLASS_WEIGHTS:
        raise SettingsError(
            f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}, got {opts.class_weights!r}"
        )
    settings = _settings(run, opts.preset, overrides)
    if opts.class_weights == "pos" and settings.activation != "sigmoid":
        raise SettingsError(
            "class_weights 'pos' (BCE pos_weight) needs the sigmoid head, "
            f"not {settings.activation!r}; use 'method' or 'none'"
        )
    ids, given = rundir.read_given(info)
    true = read_true_labels(Path(opts.truth), ids, info) if opts.truth is not None else None
    return RunInputs(info, settings, ids, given, list(info["class_names"]), true)


def _apply_cleaning(
    run_dir: Path, opts: RetrainOptions, inputs: RunInputs
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(cleaned labels, removed mask, config) — re-running ``clean`` when asked."""
    from labelaudit.pipeline.clean import clean as run_clean

    clean_info: dict[str, Any] = {"clean": bool(opts.clean)}
    if not opts.clean:
        return inputs.given.copy(), np.zeros(len(inputs.ids), dtype=bool), clean_info
    if (
        opts.policy is not None
        or opts.decisions is not None
        or not (run_dir / CHANGES_CSV).is_file()
    ):
        # No policy asked for: the default one, or only the decisions beside a file.
        run_clean(run_dir, policy=opts.policy, decisions=opts.decisions)
    cleaned, removed, _ = _cleaned_labels(run_dir, inputs.ids, inputs.given, inputs.info)
    section = RunDir(run_dir).section("clean") or {}
    clean_info["policy"] = section.get("policy")
    clean_info["decisions"] = section.get("decisions")
    return cleaned, removed, clean_info


def model_meta(
    inputs: RunInputs, in_chans: int, channels: list[str], run_dir: Path, weights, versions: dict
) -> dict:
    """The metadata both checkpoints share (a pure function)."""
    info, settings = inputs.info, inputs.settings
    return {
        "backbone": settings.backbone,
        "in_chans": in_chans,
        "num_classes": len(inputs.names),
        "class_names": inputs.names,
        "class_tokens": list(info["class_tokens"]),
        "label_sep": info["label_sep"],
        "layout": info["layout"],
        "channels": list(info.get("channels", channels)),
        "roles": roles_from_info(info).to_info(),
        "activation": settings.activation,
        "image_size": int(settings.image_size),
        "tta": bool(settings.tta),
        "settings": settings.to_dict(),
        "weights_source": weights.detail,
        "versions": versions,
        "run_dir": str(run_dir.resolve()),
    }


def _context(
    run_dir: Path,
    inputs: RunInputs,
    opts: RetrainOptions,
    members: int,
    test_idx: np.ndarray,
    console: Console,
) -> TrainContext:
    """Open the images, resolve the starting weights, and describe the models."""
    from labelaudit.train.cv import package_versions
    from labelaudit.train.weights import resolve_weights

    settings = inputs.settings
    ds, cache = _open_images(run_dir, inputs.info, inputs.ids, settings.image_size, opts.cache_dir)
    in_chans = int(cache.images.shape[1])
    weights = resolve_weights(settings, in_chans, log=lambda m: console.print(m))
    console.print(f"weights: {weights.detail}")
    meta = model_meta(inputs, in_chans, ds.channels, run_dir, weights, package_versions())
    return TrainContext(
        out_dir=run_dir / RETRAIN_DIR,
        images=cache.images,
        test_idx=test_idx,
        settings=settings,
        weights=weights,
        meta=meta,
        fingerprint=inputs.info.get("fingerprint", ""),
        console=console,
        members=members,
    )


def _write_outputs(run_dir: Path, result: dict, policy: str | None) -> None:
    """``metrics.json``, the ``table.csv`` rows and ``run.json["retrain"]``."""
    run = RunDir(run_dir)
    metrics = run.write_json_file(RETRAIN_METRICS, result)
    seed = result["split"]["seed"]
    rows = [_table_row(result[w], policy, seed) for w in ("before", "after")]
    run.upsert_table(RETRAIN_TABLE, rows, key="key")
    b, a = result["before"], result["after"]
    run.write_section(
        "retrain",
        {
            "config": result["config"],
            "split": result["split"],
            "before": summary({k: v for k, v in b.items() if k not in ("per_class_true",)}),
            "after": summary({k: v for k, v in a.items() if k not in ("per_class_true",)}),
            "delta": result["delta"],
            "metrics": str(metrics.resolve()),
            "checkpoint": result["checkpoint"],
            "seconds": result["seconds"],
        },
    )


def _run_retrain(
    run_dir: Path, opts: RetrainOptions, console: Console, overrides: dict[str, Any]
) -> dict:
    """:func:`retrain`'s steps, in order."""
    start = time.perf_counter()
    inputs = _read_inputs(run_dir, opts, overrides)
    # Cleaning first (cheap), so a bad decisions file fails before any decoding.
    cleaned, removed, clean_info = _apply_cleaning(run_dir, opts, inputs)
    given, seed = inputs.given, inputs.settings.seed
    split = make_split(given, seed, opts.test_fraction, opts.val_fraction)
    out_dir = run_dir / RETRAIN_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    RunDir(run_dir).write_table(
        RETRAIN_SPLIT, pd.DataFrame({"id": inputs.ids, "part": split.parts})
    )
    plan = plan_cleaning(given, cleaned, removed, split)
    members = resolve_members(opts.members, len(split.train_idx))
    clean_info.update(plan.counts)
    if inputs.true is not None:
        rows = np.concatenate([split.train_idx, split.val_idx])
        errors = label_error_counts(given, plan.labels, plan.removed, inputs.true, rows)
        clean_info["train_label_errors_true"] = errors
    ctx = _context(run_dir, inputs, opts, members, split.test_idx, console)
    label_weight = None
    if opts.clean:
        from labelaudit.pipeline.clean import read_label_weights

        label_weight = read_label_weights(run_dir, inputs.ids, inputs.names)
        if label_weight is not None:
            clean_info["label_weights"] = "label_weights.csv"
    sides = comparison_sides(given, plan, split, opts, label_weight)
    trained = {which: _train_one(side, ctx) for which, side in sides.items()}
    true = inputs.true[split.test_idx] if inputs.true is not None else None
    test = (split.test_idx, given[split.test_idx], true)
    scored = {w: side_metrics(trained[w], sides[w], members, inputs.names, test) for w in sides}
    probs = [trained[w]["test_probs"] for w in ("before", "after")]
    ci = change_intervals(probs[0], probs[1], test[1], true, seed)
    result = assemble_result(scored, sides, inputs.names, clean_info, opts, ci)
    result["split"] = split_summary(split, seed, opts)
    result["settings"] = inputs.settings.to_dict()
    result["checkpoint"] = str((out_dir / "model.pt").resolve())
    result["checkpoint_before"] = str((out_dir / "before.pt").resolve())
    result["note"] = TEST_NOTE
    result["seconds"] = round(time.perf_counter() - start, 3)
    _write_outputs(run_dir, result, clean_info.get("policy"))
    b, a = result["before"], result["after"]
    headline = ", ".join(
        f"{k} {b[k]:.3f} -> {a[k]:.3f}" for k in ("micro_f1", "macro_f1", "macro_f1_true") if k in b
    )
    console.print(f"retrain: {headline}")
    return RunDir(run_dir).read_json_file(RETRAIN_METRICS)


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
        Re-run :func:`labelaudit.pipeline.clean.clean` with this policy / decisions file
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
    opts = RetrainOptions(
        clean=clean,
        class_weights=class_weights,
        truth=truth,
        policy=policy,
        decisions=decisions,
        preset=preset,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        members=members,
        cache_dir=cache_dir,
    )
    return _run_retrain(Path(run_dir), opts, console or Console(quiet=True), overrides)
