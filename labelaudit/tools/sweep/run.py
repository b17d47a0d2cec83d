"""Train every configuration of a sweep, resumably, and write its tables.

Layout of the sweep directory ``RUN``::

    sweep.json           the plan (axes, base, split), dataset, versions, status
    sweep_runs.csv       one row per configuration: every score, status, timings
    sweep_curves.csv     learning curves: configuration, fold, epoch, losses
    sweep_tables.md      the method's table per axis (Markdown)
    sweep.html           the self-contained page (tables, bars, learning curves)
    runs/<config>/       a cross-validation run directory per configuration
                         (folds/, run.json, oof_probs.csv, sweep_result.json)

Resuming: each configuration trains through
:func:`labelaudit.train.cv.cross_validate` in its own directory, which reuses
finished folds keyed by the settings and the dataset; a killed sweep therefore
redoes at most the fold that was running. The fold checkpoints (``model.pt``) are
deleted once a configuration is scored unless ``keep_models``: reuse needs only
the folds' predictions, and a sweep of large backbones would otherwise keep
gigabytes of checkpoints.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from labelaudit.core.config import TrainSettings
from labelaudit.core.digest import short_digest
from labelaudit.core.errors import SettingsError
from labelaudit.core.io import read_json, write_csv, write_json, write_text
from labelaudit.data.dataset import Dataset
from labelaudit.rundir import dataset_inputs, open_output_dir
from labelaudit.tools.sweep.plan import (
    AXES,
    AXIS_TITLES,
    RESULT_NAME,
    Config,
    EvaluationScheme,
    format_value,
    parse_values,
    plan_configs,
    resolve_split,
    varied_axes,
)
from labelaudit.tools.sweep.scores import markdown_table, method_scores, sweep_tables

if TYPE_CHECKING:
    from labelaudit.train.cv import FoldRecord

#: Default sweep directory.
DEFAULT_SWEEP = Path("labelaudit-sweep")
#: Bump when ``sweep_result.json`` changes meaning.
SWEEP_FORMAT = 1
#: Columns of ``sweep_runs.csv``, in order (the rest follow).
RUN_COLUMNS = [
    "config",
    *AXES,
    "status",
    "f1",
    "recall",
    "precision",
    "average",
    "all_classes_hit",
    "classes_hit",
    "classes_present",
    "missed_classes",
    "diverged",
    "n_scored",
    "micro_f1",
    "macro_f1",
    "weighted_f1",
    "samples_f1",
    "micro_precision",
    "micro_recall",
    "macro_precision",
    "macro_recall",
    "macro_ap",
    "subset_accuracy",
    "predicted_per_image",
    "best_epochs",
    "epochs_run",
    "train_seconds",
    "weights",
]


@dataclass
class ConfigResult:
    """One configuration's scores, learning curves and how they were obtained."""

    config: Config
    status: str  # "trained", "resumed" (some folds reused) or "reused"
    row: dict
    curves: list[dict] = field(default_factory=list)
    per_class: list[dict] = field(default_factory=list)


@dataclass
class SweepResult:
    """What :func:`sweep` produced.

    Attributes
    ----------
    run_dir
        The sweep directory.
    base
        The base configuration (the fixed values of the other axes in each table).
    configs
        Every configuration, in training order.
    split
        How each configuration was evaluated.
    runs
        One row per configuration (``sweep_runs.csv``).
    tables
        The method's table per varied axis (axis name -> DataFrame).
    markdown
        Those tables as Markdown (``sweep_tables.md``).
    html
        ``sweep.html`` when written.
    """

    run_dir: Path
    base: Config
    configs: list[Config]
    split: EvaluationScheme
    runs: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    markdown: str
    html: Path | None = None

    @property
    def trained(self) -> list[str]:
        """Configurations that trained at least one fold in this call."""
        return self.runs.loc[self.runs["status"] != "reused", "config"].tolist()

    @property
    def reused(self) -> list[str]:
        """Configurations whose every fold was reused from an earlier call."""
        return self.runs.loc[self.runs["status"] == "reused", "config"].tolist()


# ------------------------------------------------------------------ console helpers


def _nested_live() -> bool:
    """rich >= 14.1 draws a progress bar inside another (the fold bar in the sweep's)."""
    try:
        parts = importlib.metadata.version("rich").split(".")[:2]
        return tuple(int(p) for p in parts) >= (14, 1)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False


class _SweepBar:
    """The sweep's progress display: one bar over configurations (fold bars nest in it)."""

    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.bar: Progress | None = None
        if not console.quiet and console.is_terminal and _nested_live():
            self.bar = Progress(
                TextColumn("[bold]sweep[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.task = self.bar.add_task("", total=total)

    @contextlib.contextmanager
    def shown(self) -> Iterator[_SweepBar]:
        if self.bar is None:
            yield self
            return
        with self.bar:
            yield self

    def start(self, config: Config) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=escape(config.label()))

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)


# ------------------------------------------------------------------ one configuration


def _collect(
    records: list[FoldRecord],
) -> tuple[np.ndarray, np.ndarray, list[dict], list[dict]]:
    """Held-out rows, probabilities, learning curves and fold states of scored folds."""
    curves = [
        {
            "fold": rec.fold + 1,
            "epoch": h.get("epoch"),
            "train_loss": h.get("train_loss"),
            "held_out_loss": h.get("held_out_loss"),
        }
        for rec in records
        for h in rec.state.get("history", [])
    ]
    held = np.concatenate([rec.held_idx for rec in records])
    probs = np.concatenate([rec.probs for rec in records])
    return held, probs, curves, [rec.state for rec in records]


def _score(
    config: Config,
    status: str,
    labels: np.ndarray,
    class_names: list[str],
    held: np.ndarray,
    probs: np.ndarray,
    states: list[dict],
) -> tuple[dict, list[dict]]:
    from labelaudit.train.metrics import multilabel_metrics, summary

    y = labels[held]
    scores = method_scores(y, probs)
    full = multilabel_metrics(y, np.nan_to_num(probs, nan=0.0, posinf=1.0, neginf=0.0), class_names)
    row = {
        "config": config.name,
        **{a: config.value(a) for a in AXES},
        "status": status,
        **scores,
        "missed_classes": ";".join(class_names[k] for k in scores["missed_classes"]),
        "n_scored": int(len(held)),
        **{k: v for k, v in summary(full).items() if k not in ("threshold", "n_images")},
        "best_epochs": ";".join(str(s.get("best_epoch")) for s in states),
        "epochs_run": ";".join(str(s.get("epochs_run")) for s in states),
        "train_seconds": round(sum(float(s.get("seconds") or 0.0) for s in states), 3),
        "weights": states[0].get("weights", "") if states else "",
    }
    return row, full["per_class"]


def _prune(cdir: Path, split: EvaluationScheme) -> None:
    """Delete the scored folds' ``model.pt`` (cross-validation keeps the rest)."""
    from labelaudit.train.cv import fold_dir

    for k in split.evaluated_folds:
        (fold_dir(cdir, k) / "model.pt").unlink(missing_ok=True)


def config_key(
    settings: TrainSettings,
    fingerprint: str,
    split: EvaluationScheme,
    shape: tuple,
    class_names: list[str],
) -> str:
    """What a stored configuration result must match to be reused without training.

    Only consulted for a configuration that failed with non-finite outputs before
    its folds were saved; finished folds are matched by cross_validate's own key.
    """
    text = json.dumps(
        {
            "format": SWEEP_FORMAT,
            "settings": settings.result_fields(),
            "fingerprint": fingerprint,
            "split": split.to_dict(),
            "shape": list(shape),
            "classes": list(class_names),
        },
        sort_keys=True,
        default=str,
    )
    return short_digest(text.encode(), 20)


def _non_finite(exc: BaseException) -> bool:
    """Did training fail because the model's outputs became NaN or infinite?"""
    return re.search(r"non-finite|\bnan\b|infinity", str(exc), re.IGNORECASE) is not None


def _diverged_before_saving(
    config: Config,
    labels: np.ndarray,
    class_names: list[str],
    cdir: Path,
    split: EvaluationScheme,
    exc: BaseException,
) -> tuple[dict, list[dict]]:
    """Score a configuration whose outputs went non-finite before a fold was saved.

    Its held-out images (the fold assignment cross-validation made) count as
    predicted with nothing, as a NaN output thresholded at 0.5 is in Keras.
    """
    from labelaudit.train.cv import fold_assignment

    held = np.flatnonzero(np.isin(fold_assignment(cdir), split.evaluated_folds))
    probs = np.full((len(held), len(class_names)), np.nan)
    row, per_class = _score(config, "trained", labels, class_names, held, probs, [])
    row["error"] = str(exc).splitlines()[0][:200]
    return row, per_class


def run_config(
    config: Config,
    settings: TrainSettings,
    split: EvaluationScheme,
    images: np.ndarray,
    labels: np.ndarray,
    ids: list[str],
    class_names: list[str],
    fingerprint: str,
    cdir: Path,
    *,
    console: Console | None = None,
    keep_models: bool = False,
) -> ConfigResult:
    """Train (or reuse) one configuration in ``cdir`` and score its held-out predictions.

    A configuration whose training diverges (non-finite outputs, e.g. at a learning
    rate of 0.1) is scored, not raised: its non-finite probabilities count as "not
    predicted" and its ``diverged`` column is true.

    Returns
    -------
    ConfigResult
        ``status`` is ``reused`` when every scored fold came from an earlier call,
        ``resumed`` when some did, ``trained`` otherwise.
    """
    key = config_key(settings, fingerprint, split, images.shape, class_names)
    stored = cdir / RESULT_NAME
    if stored.is_file():
        previous = read_json(stored)
        if previous.get("key") == key and previous.get("failed"):
            row = {**previous["row"], "status": "reused"}
            return ConfigResult(config, "reused", row, [], previous.get("per_class", []))
    record = {
        "format": SWEEP_FORMAT,
        "key": key,
        "config": {a: config.value(a) for a in AXES},
        "settings": settings.to_dict(),
        "split": split.to_dict(),
    }
    data = (images, labels, ids, class_names, fingerprint)
    status, records, error = _cross_validate(settings, split, data, cdir, console)
    if records is None:
        assert error is not None  # no records only when training diverged
        row, per_class = _diverged_before_saving(config, labels, class_names, cdir, split, error)
        write_json(stored, {**record, "failed": True, "row": row, "per_class": per_class})
        return ConfigResult(config, "trained", row, [], per_class)
    held, probs, curves, states = _collect(records)
    row, per_class = _score(config, status, labels, class_names, held, probs, states)
    write_json(stored, {**record, "row": row, "per_class": per_class, "curves": curves})
    if not keep_models:
        _prune(cdir, split)
    return ConfigResult(config, status, row, curves, per_class)


def _cross_validate(
    settings: TrainSettings,
    split: EvaluationScheme,
    data: tuple[np.ndarray, np.ndarray, list[str], list[str], str],
    cdir: Path,
    console: Console | None,
) -> tuple[str, list[FoldRecord] | None, BaseException | None]:
    """Cross-validate one configuration: its status and the scored folds' records.

    ``data`` is ``(images, labels, ids, class_names, fingerprint)``. The records are
    ``None`` (with the error) when training diverged before every scored fold was
    saved; a diverged configuration is a result of the study, not a failure of the
    sweep. The label warnings are the sweep's to print (once), and a hold-out trains
    one fold on purpose, so cross-validation prints neither.
    """
    from labelaudit.train.cv import cross_validate, finished_folds

    images, labels, ids, class_names, fingerprint = data
    scored = list(split.evaluated_folds)
    try:
        result = cross_validate(
            images,
            labels,
            ids,
            class_names,
            settings,
            cdir,
            fingerprint,
            fold=split.train_fold,
            console=console,
            echo_warnings=False,
            merge_hint=split.holdout is None,
        )
    except (RuntimeError, ValueError) as exc:
        if not _non_finite(exc):
            raise
        found = finished_folds(cdir, scored)
        records = [rec for rec in (found[k] for k in scored) if rec is not None]
        if len(records) < len(scored):
            return "trained", None, exc
        if np.isfinite(np.concatenate([rec.probs for rec in records])).all():
            raise
        return "trained", records, exc
    reused = [k for k in scored if k + 1 in result.reused]
    status = "reused" if len(reused) == len(scored) else ("resumed" if reused else "trained")
    return status, [rec for rec in result.records if rec.fold in scored], None


# ------------------------------------------------------------------ outputs


def runs_frame(results: list[ConfigResult]) -> pd.DataFrame:
    """``sweep_runs.csv``: one row per configuration, :data:`RUN_COLUMNS` first."""
    frame = pd.DataFrame([r.row for r in results])
    if frame.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    first = [c for c in RUN_COLUMNS if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def curves_frame(results: list[ConfigResult]) -> pd.DataFrame:
    """``sweep_curves.csv``: one row per configuration, fold and epoch."""
    rows = [
        {"config": r.config.name, **{a: r.config.value(a) for a in AXES}, **c}
        for r in results
        for c in r.curves
    ]
    columns = ["config", *AXES, "fold", "epoch", "train_loss", "held_out_loss"]
    return pd.DataFrame(rows, columns=columns)


def tables_markdown(
    tables: dict[str, pd.DataFrame],
    base: Config,
    split: EvaluationScheme,
    n_images: int,
    n_scored: int | None = None,
) -> str:
    """The tables as Markdown, each titled with what stayed fixed and what was scored."""
    scored = (
        f"{n_scored} of {n_images} images scored"
        if n_scored is not None and n_scored != n_images
        else f"{n_images} images scored out of fold"
    )
    parts = []
    for axis, table in tables.items():
        fixed = ", ".join(
            f"{AXIS_TITLES[a].lower()} {format_value(a, base.value(a))}" for a in AXES if a != axis
        )
        parts.append(f"**{AXIS_TITLES[axis]}**: {fixed}; {split.describe()}, {scored}.")
        parts.append("")
        parts.append(markdown_table(table))
        parts.append("")
    return "\n".join(parts)


def _write_outputs(
    run_dir: Path,
    results: list[ConfigResult],
    axes: dict[str, list[object]],
    study: _Study,
    n_images: int,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], str]:
    """Write ``sweep_runs.csv``, ``sweep_curves.csv`` and ``sweep_tables.md``."""
    base, split = study.base, study.split
    runs = runs_frame(results)
    write_csv(run_dir / "sweep_runs.csv", runs)
    write_csv(run_dir / "sweep_curves.csv", curves_frame(results))
    tables = sweep_tables(runs, axes, base)
    n_scored = int(runs["n_scored"].max()) if len(runs) else None
    markdown = tables_markdown(tables, base, split, n_images, n_scored)
    write_text(run_dir / "sweep_tables.md", markdown)
    return runs, tables, markdown


# ------------------------------------------------------------------ the entry point


def sweep(
    dataset: str | Path | Dataset,
    out: str | Path = DEFAULT_SWEEP,
    *,
    backbones: str | Iterable[str] | None = None,
    lrs: str | Iterable[float] | None = None,
    activations: str | Iterable[str] | None = None,
    one_at_a_time: bool = False,
    folds: int | None = None,
    holdout: float | None = None,
    preset: str = "auto",
    layout: str | None = None,
    cache_dir: str | Path | None = None,
    keep_models: bool = False,
    html: bool = True,
    console: Console | None = None,
    **overrides,
) -> SweepResult:
    """Run the method's model-selection studies on a dataset: one table per axis.

    Parameters
    ----------
    dataset
        The dataset directory (only read), or a :class:`Dataset` (:func:`load_dataset`: any layout).
    out
        The sweep directory (created; reused for resuming).
    backbones, lrs, activations
        Values of each axis: a comma-separated string or a sequence. An axis that
        is not given stays at the base setting.
    one_at_a_time
        Vary one axis at a time around the base setting (the method's design), not
        the full grid. An axis's base value is the preset's (or overridden) value
        when listed, else the nearest listed learning rate (log scale) or the first
        listed backbone / activation.
    folds
        K-fold cross-validation with this K (default: the preset's).
    holdout
        Instead of K folds, one stratified hold-out of about this fraction (fold 1 of
        ``round(1 / holdout)`` stratified folds); at most one of ``folds``, ``holdout``.
    preset
        Training preset (``seed``, ``cpu``, ``demo``; ``auto`` = ``seed`` on a GPU).
    layout
        Force a dataset layout.
    cache_dir
        Where image cache entries live (one cache serves every configuration).
    keep_models
        Keep each fold's ``model.pt`` (deleted after scoring by default).
    html
        Write ``sweep.html``.
    console
        Where messages and the progress display go; silent when ``None``.
    **overrides
        Fixed settings for every configuration (``epochs``, ``image_size``,
        ``batch_size``, ``pretrained``, ``seed``, ...); ``backbone``, ``lr`` and
        ``activation`` set the base values.

    Returns
    -------
    SweepResult

    Raises
    ------
    SettingsError
        Invalid axis values or settings (checked for every configuration before
        any image is decoded), probe mode, or a bad split.
    DatasetError
        The dataset cannot be read.
    """
    console = console or Console(quiet=True)
    start, run_dir = time.perf_counter(), Path(out)
    values = {"backbone": backbones, "lr": lrs, "activation": activations}
    study = _plan_study(preset, overrides, values, folds, holdout, one_at_a_time)
    ds, cache, notes = _open_inputs(dataset, layout, run_dir, cache_dir, study, console)
    plan = _plan_record(study, ds, preset, notes)
    write_json(run_dir / "sweep.json", plan)
    results = _run_configs(study, ds, cache.images, plan, run_dir, console, keep_models)
    runs, tables, md = _write_outputs(run_dir, results, study.axes, study, len(ds))
    _finish_plan(run_dir, plan, runs, results, start)
    page = _write_page(run_dir) if html else None
    return SweepResult(run_dir, study.base, study.configs, study.split, runs, tables, md, page)


@dataclass
class _Study:
    """A sweep's plan: the validated settings of every configuration and the split."""

    base_settings: TrainSettings
    split: EvaluationScheme
    base: Config
    configs: list[Config]
    settings: dict[Config, TrainSettings]
    axes: dict[str, list[object]]  # every axis, with the base value when not swept
    mode: str


def _plan_study(
    preset: str,
    overrides: dict,
    values: Mapping[str, str | Iterable[object] | None],
    folds: int | None,
    holdout: float | None,
    one_at_a_time: bool,
) -> _Study:
    """Resolve and validate every configuration before any image is decoded."""
    from labelaudit.core.config import resolve_settings

    axes = {a: parse_values(a, v) for a, v in values.items()}
    axes = {a: v for a, v in axes.items() if v}
    base_settings = resolve_settings(preset, **overrides)
    if base_settings.mode != "finetune":
        raise SettingsError(
            "a sweep trains networks: mode must be finetune (the probe has no learning "
            "rate or output activation to compare)"
        )
    split = resolve_split(base_settings, folds, holdout)
    base_settings = base_settings.replace(folds=split.folds)
    base, configs = plan_configs(base_settings, axes, one_at_a_time)
    settings = {c: c.settings(base_settings) for c in configs}  # validates every one
    full_axes = {a: list(axes.get(a) or [base.value(a)]) for a in AXES}
    mode = "one-at-a-time" if one_at_a_time else "grid"
    return _Study(base_settings, split, base, configs, settings, full_axes, mode)


def _open_inputs(
    dataset: str | Path | Dataset,
    layout: str | None,
    run_dir: Path,
    cache_dir: str | Path | None,
    study: _Study,
    console: Console,
):
    """Load the dataset, check its labels, claim the sweep directory, build the cache."""
    from labelaudit.data.layouts import load_dataset
    from labelaudit.pipeline.scan import cache_with_progress
    from labelaudit.train.folds import check_folds

    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, layout)
    strict = study.base_settings.strict
    notes = check_folds(ds.labels, ds.class_names, study.split.folds, strict=strict)
    open_output_dir(run_dir, dataset_inputs(ds), kind="sweep")  # new, empty or a sweep's
    console.print(
        f"dataset: {escape(str(ds.root))} ({ds.layout}, {len(ds)} images, {ds.n_classes} classes)",
        highlight=False,
    )
    console.print(
        f"sweep: {len(study.configs)} configurations ({study.mode}; base "
        f"{escape(study.base.label())}); {study.split.describe()}",
        highlight=False,
    )
    cache = cache_with_progress(ds, study.base_settings.image_size, cache_dir, console)
    return ds, cache, notes


def _plan_record(study: _Study, ds, preset: str, notes: list[str]) -> dict:
    """``sweep.json`` as written before the first configuration trains."""
    from labelaudit.train.cv import package_versions

    return {
        "format": SWEEP_FORMAT,
        "dataset": {
            "path": str(ds.root.resolve()),
            "layout": ds.layout,
            "n_images": len(ds),
            "n_classes": ds.n_classes,
            "class_names": ds.class_names,
            "fingerprint": ds.fingerprint(),
        },
        "mode": study.mode,
        "axes": study.axes,
        "varied": varied_axes(study.axes),
        "base": {a: study.base.value(a) for a in AXES},
        "settings": study.base_settings.to_dict(),
        "split": study.split.to_dict(),
        "preset": preset,
        "configs": [{"name": c.name, **{a: c.value(a) for a in AXES}} for c in study.configs],
        "versions": package_versions(),
        "warnings": notes,
        "complete": False,
    }


def _run_configs(
    study: _Study,
    ds,
    images: np.ndarray,
    plan: dict,
    run_dir: Path,
    console: Console,
    keep_models: bool,
) -> list[ConfigResult]:
    """Train and score every configuration in order, rewriting the tables after each."""
    fingerprint = plan["dataset"]["fingerprint"]
    for note in plan["warnings"]:  # once: cross-validation does not repeat them per configuration
        console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)
    results: list[ConfigResult] = []
    configs = study.configs
    bar = _SweepBar(console, len(configs))
    with bar.shown():
        for i, config in enumerate(configs, start=1):
            bar.start(config)
            console.print(
                f"[bold][{i}/{len(configs)}] {escape(config.label())}[/]", highlight=False
            )
            result = run_config(
                config,
                study.settings[config],
                study.split,
                images,
                ds.labels,
                ds.ids,
                ds.class_names,
                fingerprint,
                run_dir / "runs" / config.name,
                console=console,
                keep_models=keep_models,
            )
            results.append(result)
            r = result.row
            console.print(
                f"  {result.status}: F1 {r['f1']:.3f}, recall {r['recall']:.3f}, "
                f"precision {r['precision']:.3f}"
                + ("  [yellow](diverged)[/]" if r["diverged"] else ""),
                highlight=False,
            )
            _write_outputs(run_dir, results, study.axes, study, len(ds))
            bar.advance()
    return results


def _finish_plan(
    run_dir: Path, plan: dict, runs: pd.DataFrame, results: list[ConfigResult], start: float
) -> None:
    """Mark ``sweep.json`` complete, with the timings and each configuration's status."""
    plan["complete"] = True
    total_s, train_s = time.perf_counter() - start, float(runs["train_seconds"].sum())
    plan["timings"] = {"total_s": round(total_s, 3), "train_s": round(train_s, 3)}
    plan["status"] = {r.config.name: r.status for r in results}
    write_json(run_dir / "sweep.json", plan)


def _write_page(run_dir: Path) -> Path:
    from labelaudit.tools.sweep.page import write_sweep_html

    return write_sweep_html(run_dir)
