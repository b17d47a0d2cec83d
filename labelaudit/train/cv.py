"""K-fold cross-validation: out-of-fold probabilities and embeddings, resumable.

Layout written under the run directory (docs/design.md, "The run directory")::

    oof_probs.csv         id + one column per class, out-of-fold probabilities
    embeddings.npy        float32 N x D, rows as in oof_probs.csv
    run.json["train"]     settings, versions, weight source, metrics, timings
    folds/folds.csv       id, fold (1-based) of every image
    folds/fold_K/         model.pt, oof.npz, state.json of each finished fold
    folds/probe/          cached frozen embeddings (probe mode)

Each fold's files are written atomically, ``state.json`` last: a fold counts as
finished only when its ``state.json`` exists and carries the current key (a hash
of the settings that change results, the dataset fingerprint, the weights and
the fold assignment). A killed run therefore resumes at the first unfinished
fold, and a changed setting or dataset retrains.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.markup import escape

from labelaudit.core.config import TrainSettings
from labelaudit.core.digest import short_digest
from labelaudit.core.errors import SettingsError, TrainingDiverged
from labelaudit.core.io import atomic_path, update_run_json, write_csv, write_json, write_npy
from labelaudit.rundir import (
    FOLD_MODEL_PT,
    FOLD_OOF_NPZ,
    FOLD_STATE_JSON,
    FOLDS_CSV,
    PROBE_DIR,
    RunDir,
    fold_dir_name,
)
from labelaudit.train import ddp
from labelaudit.train.backbones import build_model, channel_mean_std
from labelaudit.train.checkpoint import FOLD_META, save_checkpoint
from labelaudit.train.ddp import DistInfo
from labelaudit.train.folds import (
    check_folds,
    fold_indices,
    group_labels,
    indices_digest,
    make_folds,
    make_group_folds,
    rare_classes,
)
from labelaudit.train.loop import FoldOutput, Runtime, make_runtime, pick_device, train_fold
from labelaudit.train.metrics import multilabel_metrics, summary
from labelaudit.train.probe import embed_all, probe_oof
from labelaudit.train.progress import fold_progress
from labelaudit.train.threads import auto_threads
from labelaudit.train.weights import ResolvedWeights, resolve_weights

#: Bump when the meaning of fold files changes, so old folds are not reused.
FOLD_FORMAT = 1


@dataclass
class CVResult:
    """The outcome of :func:`cross_validate`.

    Attributes
    ----------
    oof_probs
        (N, K) float32 out-of-fold probabilities; ``None`` until every fold is done.
    embeddings
        (N, D) float32 embeddings (predicted by the same fold models); ``None``
        until every fold is done.
    fold_of
        (N,) 0-based fold of each image.
    metrics
        Overall out-of-fold metrics (:func:`~labelaudit.train.metrics.multilabel_metrics`).
    fold_metrics
        Per fold (``None`` for unfinished folds).
    complete
        True when all folds are finished and the run-directory files are written.
    reused, trained
        1-based fold numbers reused from disk / trained in this call.
    weight_source
        One line: where the starting weights came from.
    unreliable_classes
        Classes with fewer positive images (groups) than folds: some fold's model
        never saw them, so their out-of-fold probabilities are unreliable.
    warnings
        The label warnings of :func:`~labelaudit.train.folds.check_folds` (rare or
        absent classes), as printed unless ``echo_warnings=False``.
    records
        The finished folds, in fold order (trained, reused or finished by other
        jobs): held-out rows, probabilities and state (history, best epoch, time).
    """

    fold_of: np.ndarray
    complete: bool
    oof_probs: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    metrics: dict | None = None
    fold_metrics: list[dict | None] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    trained: list[int] = field(default_factory=list)
    weight_source: str = ""
    seconds: float = 0.0
    rank: int = 0
    unreliable_classes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records: list[FoldRecord] = field(default_factory=list)


@dataclass
class FoldRecord:
    """One finished fold's predictions and where they came from."""

    fold: int  # 0-based
    train_idx: np.ndarray
    held_idx: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray
    state: dict


# ------------------------------------------------------------------ keys and versions


def _hash(obj: object) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return short_digest(text.encode(), 20)


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide training results."""
    out = {"python": platform.python_version()}
    for dist in (
        "labelaudit",
        "torch",
        "timm",
        "numpy",
        "scikit-learn",
        "iterative-stratification",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def run_key(
    settings: TrainSettings,
    fingerprint: str,
    images: np.ndarray,
    class_names: list[str],
    fold_of: np.ndarray,
    weights_identity: str,
) -> str:
    """The key finished folds must carry to be reused."""
    fields = settings.result_fields()
    fields.pop("weights", None)  # the file's content hash is in weights_identity
    return _hash(
        {
            "format": FOLD_FORMAT,
            "settings": fields,
            "fingerprint": fingerprint,
            "shape": list(images.shape),
            "classes": list(class_names),
            "weights": weights_identity,
            "folds": indices_digest(fold_of),
        }
    )


# ------------------------------------------------------------------ fold files


def fold_dir(run_dir: Path, k: int) -> Path:
    """Directory of fold ``k`` (0-based) — named 1-based, as users count folds."""
    return Path(run_dir) / fold_dir_name(k)


def save_fold(
    directory: Path, key: str, k: int, out: FoldOutput, meta: dict, model_meta: dict
) -> None:
    """Write model.pt, oof.npz, then state.json (the commit marker), each atomically.

    ``model.pt`` is a :mod:`labelaudit.train.checkpoint` file (its descriptive keys
    repeated at the top level, as fold files always had them).
    """
    directory.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        directory / FOLD_MODEL_PT, out.state_dict, model_meta, flat_keys=(*FOLD_META, "fold", "key")
    )
    with atomic_path(directory / FOLD_OOF_NPZ) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                train_idx=out.train_idx,
                held_idx=out.held_idx,
                probs=out.probs,
                embeddings=out.embeddings,
            )
    write_json(directory / FOLD_STATE_JSON, {"key": key, "fold": k + 1, "status": "done", **meta})


def _fold_record(k: int, state: dict | None, arrays: dict | None) -> FoldRecord | None:
    """Fold ``k``'s record from its files; ``None`` when either is missing or incomplete."""
    names = ("train_idx", "held_idx", "probs", "embeddings")
    if state is None or arrays is None or any(n not in arrays for n in names):
        return None
    train_idx, held_idx, probs, embeddings = (arrays[n] for n in names)
    return FoldRecord(k, train_idx, held_idx, probs, embeddings, state)


def load_fold(
    directory: Path, key: str, k: int, train_idx: np.ndarray, held_idx: np.ndarray, n_classes: int
) -> tuple[FoldRecord | None, str]:
    """A finished fold's record if its key and indices match; else ``(None, why)``."""
    if not (directory / FOLD_STATE_JSON).is_file():
        return None, "not started"
    state, z = RunDir(directory.parent.parent).fold_files(k)
    if state is None:
        return None, "fold files unreadable"
    if state.get("key") != key or state.get("status") != "done":
        return None, "settings, weights or dataset changed"
    rec = _fold_record(k, state, z)
    if rec is None:
        return None, "fold files unreadable"
    if not (
        np.array_equal(rec.held_idx, held_idx)
        and np.array_equal(rec.train_idx, train_idx)
        and rec.probs.shape == (len(held_idx), n_classes)
        and rec.embeddings.shape[0] == len(held_idx)
    ):
        return None, "fold files do not match the fold assignment"
    return rec, "reused"


def check_oof_provenance(fold_of: np.ndarray, records: list[FoldRecord]) -> np.ndarray:
    """Check that every image's prediction comes only from the model that held it out.

    Raises
    ------
    AssertionError
        A fold's model was trained on an image it predicts, an image is predicted
        by a fold other than its own, twice, or not at all.

    Returns
    -------
    np.ndarray
        (N,) the fold whose model produced each row (equal to ``fold_of``).
    """
    source = np.full(len(fold_of), -1, dtype=np.int64)
    for rec in records:
        k = rec.fold
        if np.intersect1d(rec.train_idx, rec.held_idx).size:
            raise AssertionError(f"fold {k + 1}: its model was trained on images it predicts")
        if not np.array_equal(np.sort(rec.held_idx), np.flatnonzero(fold_of == k)):
            raise AssertionError(
                f"fold {k + 1}: predicted images are not exactly its held-out fold"
            )
        if (source[rec.held_idx] >= 0).any():
            raise AssertionError(f"fold {k + 1}: images predicted by more than one fold")
        source[rec.held_idx] = k
    if (source < 0).any():
        raise AssertionError(f"{int((source < 0).sum())} images have no out-of-fold prediction")
    if not np.array_equal(source, fold_of):
        raise AssertionError("out-of-fold predictions come from the wrong folds")
    return source


# ------------------------------------------------------------------ helpers


@contextlib.contextmanager
def torch_threads(threads: int, info: DistInfo, device: torch.device) -> Iterator[int]:
    """Set PyTorch's CPU threads for the run (restored afterwards).

    ``threads=0`` keeps PyTorch's default (one per physical core) here; under DDP on
    CPU the cores are split between the local processes. Single-process CPU runs
    with ``threads=0`` are further adapted per fold by :func:`_adapt_threads`.
    """
    previous = torch.get_num_threads()
    want = threads
    if not want and info.enabled and device.type == "cpu":
        want = max(1, (os.cpu_count() or 1) // max(info.local_world, 1))
    if want:
        torch.set_num_threads(want)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _adapt_threads(settings: TrainSettings, runtime: Runtime, default: int, say, what: str) -> int:
    """With ``threads=0`` on one CPU process, use no more threads than idle cores."""
    if settings.threads or runtime.device.type != "cpu" or runtime.info.enabled:
        return torch.get_num_threads()
    n = auto_threads(default)
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    if n < default:
        say(f"{what}: {n} of {default} CPU threads (the other cores are busy)")
    return n


def _check_inputs(
    images: np.ndarray,
    labels: np.ndarray,
    ids: list[str],
    class_names: list[str],
    settings: TrainSettings,
    fold: int | None,
    groups: np.ndarray | None,
) -> np.ndarray:
    """The labels as a bool array, once the inputs agree with each other and the settings."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be a uint8 (N, C, S, S) array, got {images.dtype} {images.shape}"
        )
    labels = np.asarray(labels, dtype=bool)
    n = images.shape[0]
    if labels.shape != (n, len(class_names)) or len(ids) != n:
        raise ValueError(
            f"{n} images, labels {labels.shape}, {len(ids)} ids and "
            f"{len(class_names)} classes disagree"
        )
    if len(set(ids)) != n:
        raise ValueError("image ids are not unique")
    if images.shape[2] != settings.image_size or images.shape[3] != settings.image_size:
        raise SettingsError(
            f"the image cache is {images.shape[3]} x {images.shape[2]} px but image_size is "
            f"{settings.image_size}; rebuild the cache at the training size"
        )
    if fold is not None and not (isinstance(fold, int) and 1 <= fold <= settings.folds):
        raise SettingsError(f"--fold must be between 1 and {settings.folds}, got {fold}")
    if groups is not None and len(groups) != len(labels):
        raise SettingsError(f"groups has {len(groups)} entries for {len(labels)} images")
    return labels


def _write_outputs(
    run_dir: Path, ids: list[str], class_names: list[str], probs: np.ndarray, emb: np.ndarray
) -> None:
    RunDir(run_dir).write_oof(ids, class_names, probs, emb)


def _forget_stale_outputs(run_dir: Path, key: str) -> None:
    """Delete run-level outputs that an earlier run with other settings wrote."""
    run = RunDir(run_dir)
    old = run.section("train") or {}
    if old.get("key") not in (None, key):
        run.forget_oof()


# ------------------------------------------------------------------ the entry point


@dataclass
class _CVContext:
    """What every fold of one :func:`cross_validate` call shares, built once per call."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    class_names: list[str]
    settings: TrainSettings
    run_dir: Path
    fingerprint: str
    key: str
    fold_of: np.ndarray
    weights: ResolvedWeights
    runtime: Runtime
    say: Callable[[str], None]
    console: Console | None  # None on the processes other than rank 0, or silent


def cross_validate(
    images: np.ndarray,
    labels: np.ndarray,
    ids: list[str],
    class_names: list[str],
    settings: TrainSettings,
    run_dir: str | Path,
    fingerprint: str,
    *,
    fold: int | None = None,
    groups: np.ndarray | None = None,
    console: Console | None = None,
    echo_warnings: bool = True,
    merge_hint: bool = True,
) -> CVResult:
    """Train K cross-validated models; write out-of-fold probabilities and embeddings.

    Parameters
    ----------
    images
        uint8 (N, C, S, S) array, usually the cache's read-only memmap (never written).
    labels
        Bool (N, K) label matrix.
    ids
        N image ids (the ``id`` column of ``oof_probs.csv``).
    class_names
        K class names (the other columns of ``oof_probs.csv``).
    settings
        From :func:`labelaudit.core.config.resolve_settings`; ``image_size`` must equal S.
    run_dir
        The run directory (created).
    fingerprint
        The dataset fingerprint; a different one invalidates finished folds.
    fold
        Run only this fold (1-based), reusing it if finished. The run-directory
        outputs are written as soon as all folds are finished, by whichever call
        finishes last, so folds can run as separate scheduler jobs.
    groups
        Optional (N,) group of each image (e.g. the field of each cell): folds are
        made over groups (:func:`~labelaudit.train.folds.make_group_folds`), so no
        group has rows on both sides of a split.
    console
        Where messages and progress bars go; silent when ``None`` or quiet.
    echo_warnings
        Print the label warnings (always returned in :attr:`CVResult.warnings`); a
        caller that cross-validates the same labels many times prints them once.
    merge_hint
        Print the "re-run without --fold to merge" line when folds remain (a
        hold-out trains one fold on purpose).

    Returns
    -------
    CVResult

    Raises
    ------
    SettingsError
        Invalid fold number, image size mismatch, too few images for the folds,
        rare classes with ``settings.strict`` (:func:`~labelaudit.train.folds.check_folds`),
        or weights that do not fit the backbone.
    """
    start = time.perf_counter()
    labels = _check_inputs(images, labels, ids, class_names, settings, fold, groups)
    notes, unreliable = _label_notes(labels, groups, class_names, settings)
    info, created = ddp.setup(pick_device(settings.device).type)
    out = console if console is not None and info.is_main else None
    try:
        runtime = make_runtime(settings, info)
        with torch_threads(settings.threads, info, runtime.device):
            shown = notes if echo_warnings else []
            data = (images, labels, ids, class_names)
            ctx = _open_run(data, settings, Path(run_dir), fingerprint, groups, runtime, out, shown)
            result = _train(ctx, fold)
            result.seconds = time.perf_counter() - start
            result.rank, result.unreliable_classes = info.rank, unreliable
            result.warnings = list(notes)
            _finish(ctx, result, notes, merge_hint)
            return result
    finally:
        ddp.teardown(created)


def _label_notes(
    labels: np.ndarray, groups: np.ndarray | None, class_names: list[str], settings: TrainSettings
) -> tuple[list[str], list[str]]:
    """The label warnings of the folds' rows (images, or groups) and the unreliable classes."""
    fold_rows = labels if groups is None else group_labels(labels, groups)[0]
    notes = check_folds(fold_rows, class_names, settings.folds, strict=settings.strict)
    return notes, rare_classes(fold_rows, class_names, settings.folds)


def _open_run(
    data: tuple[np.ndarray, np.ndarray, list[str], list[str]],
    settings: TrainSettings,
    run_dir: Path,
    fingerprint: str,
    groups: np.ndarray | None,
    runtime: Runtime,
    console: Console | None,
    warnings: list[str],
) -> _CVContext:
    """Assign the folds, resolve the weights, key the run and write ``folds/folds.csv``.

    ``data`` is ``(images, labels, ids, class_names)``; ``warnings`` are printed first.
    """
    images, labels, ids, class_names = data
    info = runtime.info

    def say(message: str) -> None:
        if console is not None:
            console.print(message, highlight=False)

    for note in warnings:
        say(f"[yellow]warning:[/] {escape(note)}")
    if groups is None:
        fold_of = make_folds(labels, settings.folds, settings.seed)
    else:
        fold_of = make_group_folds(labels, groups, settings.folds, settings.seed)
    weights = resolve_weights(settings, images.shape[1], log=lambda m: say(escape(m)))
    colour = "yellow" if weights.source == "random" and settings.pretrained else "default"
    say(f"[{colour}]weights: {escape(weights.detail)}[/]")
    key = run_key(settings, fingerprint, images, class_names, fold_of, weights.identity)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _forget_stale_outputs(run_dir, key)
        frame = pd.DataFrame({"id": list(ids), "fold": fold_of + 1})
        write_csv(run_dir / FOLDS_CSV, frame)
    ddp.barrier(info)
    return _CVContext(
        *data, settings, run_dir, fingerprint, key, fold_of, weights, runtime, say, console
    )


def _train(ctx: _CVContext, fold: int | None) -> CVResult:
    """The mode's cross-validation: a linear probe on frozen embeddings, or fine-tuning."""
    if ctx.settings.mode == "probe":
        if fold is not None:
            ctx.say("probe mode fits all folds at once (seconds); --fold is ignored")
        return _run_probe(ctx)
    return _run_finetune(ctx, fold)


def _finish(ctx: _CVContext, result: CVResult, notes: list[str], merge_hint: bool) -> None:
    """Record the outcome in ``run.json`` (rank 0): complete, or the folds done so far."""
    info, settings = ctx.runtime.info, ctx.settings
    if result.complete and info.is_main:
        _record(ctx, result, notes)
    elif info.is_main:
        done = [k + 1 for k, m in enumerate(result.fold_metrics) if m is not None]
        update_run_json(
            ctx.run_dir,
            "train",
            {
                "complete": False,
                "key": ctx.key,
                "folds_done": done,
                "n_folds": settings.folds,
                "settings": settings.to_dict(),
            },
        )
        if merge_hint:
            ctx.say(
                f"folds finished: {done or 'none'} of {settings.folds}; "
                "re-run without --fold (or the remaining folds) to merge"
            )
    ddp.barrier(info)


def _fold_message(k: int, n: int, rec: FoldRecord, reused: bool) -> str:
    if reused:
        return f"fold {k + 1}/{n}: reused"
    st = rec.state
    return (
        f"fold {k + 1}/{n}: trained in {st['seconds']:.0f} s, best epoch {st['best_epoch']}, "
        f"held-out loss {st['held_out_loss']:.4f}, micro F1 {st['metrics']['micro_f1']:.3f}"
    )


def finished_folds(run_dir: Path, folds: list[int]) -> dict[int, FoldRecord | None]:
    """The records of folds (0-based) whose files are complete, ``None`` for the others.

    For a caller that needs what a failed :func:`cross_validate` left behind (the
    sweep scores a diverged configuration); keys are not checked.
    """
    run = RunDir(run_dir)
    return {k: _fold_record(k, *run.fold_files(k)) for k in folds}


def fold_assignment(run_dir: Path) -> np.ndarray:
    """The 0-based fold of each image, as the last :func:`cross_validate` assigned them."""
    return RunDir(run_dir).fold_assignment()


def _run_finetune(ctx: _CVContext, fold: int | None) -> CVResult:
    """Reuse or train each fold asked for; merge when every fold is finished."""
    n_folds = ctx.settings.folds
    todo = range(n_folds) if fold is None else [fold - 1]
    stats = channel_mean_std(ctx.images, seed=ctx.settings.seed)
    default_threads = torch.get_num_threads()
    records: dict[int, FoldRecord] = {}
    reused: list[int] = []
    trained: list[int] = []
    for k in todo:
        train_idx, held_idx = fold_indices(ctx.fold_of, k)
        fkey = f"{ctx.key}-{k + 1}"
        n_classes = len(ctx.class_names)
        rec, why = load_fold(fold_dir(ctx.run_dir, k), fkey, k, train_idx, held_idx, n_classes)
        if rec is not None:
            reused.append(k + 1)
        else:
            if why != "not started":
                ctx.say(f"fold {k + 1}/{n_folds}: {why}, retraining")
            rec = _train_one_fold(ctx, k, train_idx, held_idx, stats, default_threads)
            trained.append(k + 1)
        records[k] = rec
        ctx.say(_fold_message(k, n_folds, rec, reused=(k + 1) in reused))
    if fold is not None:  # the other folds may have been finished by other jobs
        _add_finished_elsewhere(ctx, records)
    fold_metrics: list[dict | None] = [
        records[k].state.get("metrics") if k in records else None for k in range(n_folds)
    ]
    result = CVResult(
        fold_of=ctx.fold_of,
        complete=len(records) == n_folds,
        fold_metrics=fold_metrics,
        reused=reused,
        trained=trained,
        weight_source=ctx.weights.detail,
        records=[records[k] for k in sorted(records)],
    )
    if result.complete:
        _complete(ctx, result, [records[k] for k in range(n_folds)])
    return result


def _train_one_fold(
    ctx: _CVContext,
    k: int,
    train_idx: np.ndarray,
    held_idx: np.ndarray,
    stats: np.ndarray,
    default_threads: int,
) -> FoldRecord:
    """Train fold ``k`` (0-based), save its files (rank 0) and return its record.

    Raises
    ------
    TrainingDiverged
        The fold's held-out outputs are not finite.
    """
    settings, n_folds = ctx.settings, ctx.settings.folds
    fkey = f"{ctx.key}-{k + 1}"
    threads = _adapt_threads(settings, ctx.runtime, default_threads, ctx.say, f"fold {k + 1}")
    torch.manual_seed(settings.seed * 1009 + k)
    model = build_model(
        settings.backbone,
        ctx.images.shape[1],
        len(ctx.class_names),
        stats,
        ctx.weights,
        settings.activation,
    )
    model.set_prior(ctx.labels[train_idx])
    with fold_progress(ctx.console, f"fold {k + 1}/{n_folds}", settings.progress) as progress:
        output = train_fold(
            model,
            ctx.images,
            ctx.labels,
            train_idx,
            held_idx,
            settings,
            ctx.runtime,
            seed=settings.seed * 1009 + k,
            progress=progress,
        )
    if not np.isfinite(output.probs).all():
        raise TrainingDiverged(
            f"fold {k + 1}/{n_folds}: training diverged (non-finite outputs at learning "
            f"rate {settings.lr:g}); lower it with --lr"
        )
    meta = _fold_state(ctx, output, threads)
    if ctx.runtime.info.is_main:
        save_fold(fold_dir(ctx.run_dir, k), fkey, k, output, meta, _model_meta(ctx, k, fkey))
    ddp.barrier(ctx.runtime.info)
    return FoldRecord(
        k,
        output.train_idx,
        output.held_idx,
        output.probs,
        output.embeddings,
        {"key": fkey, **meta},
    )


def _fold_state(ctx: _CVContext, output: FoldOutput, threads: int) -> dict:
    """A trained fold's ``state.json`` content (without its key)."""
    train_idx, held_idx = output.train_idx, output.held_idx
    metrics = multilabel_metrics(ctx.labels[held_idx], output.probs, ctx.class_names)
    return {
        "n_folds": ctx.settings.folds,
        "best_epoch": output.best_epoch,
        "held_out_loss": output.best_loss,
        "epochs_run": len(output.history),
        "history": output.history,
        "seconds": round(output.seconds, 3),
        "threads": threads,
        "n_train": int(len(train_idx)),
        "n_held_out": int(len(held_idx)),
        "train_digest": indices_digest(train_idx),
        "held_digest": indices_digest(held_idx),
        "weights": ctx.weights.detail,
        "metrics": summary(metrics),
    }


def _model_meta(ctx: _CVContext, k: int, fkey: str) -> dict:
    """The descriptive keys of fold ``k``'s ``model.pt``."""
    return {
        "backbone": ctx.settings.backbone,
        "in_chans": int(ctx.images.shape[1]),
        "num_classes": len(ctx.class_names),
        "class_names": list(ctx.class_names),
        "activation": ctx.settings.activation,
        "image_size": int(ctx.images.shape[-1]),
        "fold": k + 1,
        "key": fkey,
    }


def _add_finished_elsewhere(ctx: _CVContext, records: dict[int, FoldRecord]) -> None:
    """Add the folds that other jobs finished with the current key (``--fold`` runs)."""
    for k in range(ctx.settings.folds):
        if k not in records:
            train_idx, held_idx = fold_indices(ctx.fold_of, k)
            rec, _ = load_fold(
                fold_dir(ctx.run_dir, k),
                f"{ctx.key}-{k + 1}",
                k,
                train_idx,
                held_idx,
                len(ctx.class_names),
            )
            if rec is not None:
                records[k] = rec


def _complete(ctx: _CVContext, result: CVResult, records: list[FoldRecord]) -> dict:
    """Merge every fold into ``result``; rank 0 writes the run's outputs.

    Returns
    -------
    dict
        The overall out-of-fold metrics (also ``result.metrics``).
    """
    probs, emb, metrics = _merge(result.fold_of, records, ctx.labels, ctx.class_names)
    result.oof_probs, result.embeddings, result.metrics = probs, emb, metrics
    if ctx.runtime.info.is_main:
        _write_outputs(ctx.run_dir, ctx.ids, ctx.class_names, probs, emb)
    return metrics


def _merge(
    fold_of: np.ndarray, records: list[FoldRecord], labels: np.ndarray, class_names: list[str]
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Out-of-fold probabilities, embeddings and metrics from every fold's record."""
    n = len(fold_of)
    check_oof_provenance(fold_of, records)
    k_classes = len(class_names)
    dim = records[0].embeddings.shape[1]
    probs = np.full((n, k_classes), np.nan, dtype=np.float32)
    emb = np.zeros((n, dim), dtype=np.float32)
    for rec in records:
        probs[rec.held_idx] = rec.probs
        emb[rec.held_idx] = rec.embeddings
    if not np.isfinite(probs).all():
        raise RuntimeError("non-finite out-of-fold probabilities (training diverged; lower lr)")
    return probs, emb, multilabel_metrics(labels, probs, class_names)


def _probe_embeddings(ctx: _CVContext) -> np.ndarray:
    """The frozen backbone's embeddings of every image, from ``folds/probe`` when keyed alike."""
    settings, images, run_dir = ctx.settings, ctx.images, ctx.run_dir
    embed_key = _hash({"key": ctx.key, "part": "probe-embeddings"})
    cache = run_dir / PROBE_DIR / "embeddings.npy"
    state_path = run_dir / PROBE_DIR / "state.json"
    emb = None
    if state_path.is_file() and cache.is_file():
        run = RunDir(run_dir)
        with contextlib.suppress(OSError, ValueError):
            if run.read_json_file(f"{PROBE_DIR}/state.json").get("key") == embed_key:
                emb = run.read_npy(f"{PROBE_DIR}/embeddings.npy")
                if emb is not None and emb.shape[0] != images.shape[0]:
                    emb = None
    reused = emb is not None
    t = time.perf_counter()
    if emb is None:
        if not ctx.weights.pretrained:
            ctx.say(
                "[yellow]warning: probe mode with random weights gives near-useless embeddings[/]"
            )
        _adapt_threads(settings, ctx.runtime, torch.get_num_threads(), ctx.say, "probe")
        torch.manual_seed(settings.seed)
        stats = channel_mean_std(images, seed=settings.seed)
        n_classes = len(ctx.class_names)
        model = build_model(settings.backbone, images.shape[1], n_classes, stats, ctx.weights)
        emb = embed_all(model, images, settings.batch_size, ctx.runtime, tta=settings.tta)
        if ctx.runtime.info.is_main:
            write_npy(cache, emb)
            write_json(state_path, {"key": embed_key, "seconds": time.perf_counter() - t})
    how = "reused" if reused else f"computed in {time.perf_counter() - t:.1f} s"
    ctx.say(f"probe: embeddings {how} ({emb.shape[1]} features)")
    return emb


def _run_probe(ctx: _CVContext) -> CVResult:
    """A logistic regression per fold on the frozen backbone's embeddings."""
    settings, labels = ctx.settings, ctx.labels
    emb = _probe_embeddings(ctx)
    probs, provenance = probe_oof(emb, labels, ctx.fold_of, settings.probe_c, settings.seed)
    records = [
        FoldRecord(
            p["fold"], p["train_idx"], p["held_idx"], probs[p["held_idx"]], emb[p["held_idx"]], {}
        )
        for p in provenance
    ]
    fold_metrics: list[dict | None] = [
        summary(multilabel_metrics(labels[r.held_idx], r.probs, ctx.class_names)) for r in records
    ]
    result = CVResult(
        fold_of=ctx.fold_of,
        complete=True,
        fold_metrics=fold_metrics,
        reused=[],
        trained=list(range(1, settings.folds + 1)),
        weight_source=ctx.weights.detail,
    )
    metrics = _complete(ctx, result, records)
    ctx.say(f"probe: {settings.folds}-fold logistic regression, micro F1 {metrics['micro_f1']:.3f}")
    return result


def _record(ctx: _CVContext, result: CVResult, notes: list[str]) -> None:
    """Write the complete run's ``run.json["train"]``: settings, versions, folds, metrics."""
    settings, runtime, weights = ctx.settings, ctx.runtime, ctx.weights
    # a complete result carries the merged arrays (set by _complete)
    assert result.oof_probs is not None and result.embeddings is not None
    folds = []
    for k in range(settings.folds):
        entry: dict = {"fold": k + 1, "reused": (k + 1) in result.reused}
        if settings.mode == "finetune":
            state = RunDir(ctx.run_dir).fold_files(k)[0] or {}
            for name in (
                "best_epoch",
                "held_out_loss",
                "epochs_run",
                "seconds",
                "threads",
                "n_train",
                "n_held_out",
                "history",
            ):
                entry[name] = state.get(name)
        entry["metrics"] = result.fold_metrics[k]
        folds.append(entry)
    update_run_json(
        ctx.run_dir,
        "train",
        {
            "complete": True,
            "key": ctx.key,
            "mode": settings.mode,
            "settings": settings.to_dict(),
            "fingerprint": ctx.fingerprint,
            "versions": package_versions(),
            "weights": {
                "source": weights.source,
                "detail": weights.detail,
                "identity": weights.identity,
            },
            "device": str(runtime.device),
            "world_size": runtime.info.world,
            "threads": torch.get_num_threads(),
            "n_images": int(len(result.fold_of)),
            "n_classes": int(result.oof_probs.shape[1]),
            "embedding_dim": int(result.embeddings.shape[1]),
            "folds": folds,
            "metrics": result.metrics,
            "warnings": notes,
            "unreliable_classes": list(result.unreliable_classes),
            "timings": {
                "total_s": round(result.seconds, 3),
                "trained_folds": result.trained,
                "reused_folds": result.reused,
            },
        },
    )
