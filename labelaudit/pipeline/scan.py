"""``labelaudit scan``: the whole pipeline, stage after stage, into a run directory.

load/validate -> cache -> cross-validate -> detect + compare -> clean (the default
policy) -> report (written last: it shows the cleaning).
Each stage writes its artifacts atomically, so a killed scan resumes where it
stopped (finished folds are reused by the training stage).

Options
-------
The parameters of :func:`scan` in full:

dataset
    The dataset directory (only read); may be left out when ``labels`` is given.
out
    The run directory (created; reused for resuming).
preset
    Training preset (``seed``, ``cpu``, ``demo``; ``auto`` picks ``seed`` on a
    GPU, else ``cpu``). Keyword ``overrides`` (``backbone``, ``epochs``,
    ``image_size``, ...) replace single settings.
layout
    Force a dataset layout.
labels, images, id_column, label_column, sep
    Where the label file and images are and how the labels are written, when
    not the layout's (:func:`~labelaudit.data.layouts.load_dataset`).
cache_dir
    Where image cache entries live.
detectors
    Detector names to run (all registered by default).
fold
    Train only this fold (1-based) and stop; a later scan merges the folds.
report
    Write ``report.html`` at the end.
level
    ``"field"`` (the method: one model over whole fields) or ``"cell"``: also
    segment the fields into cells (or read ``masks``), train cross-validated
    cell models (folds by field, each cell inheriting its field's labels) and
    add the cell findings (:mod:`labelaudit.cells.audit`).
masks
    With ``level="cell"``: a directory of cell masks made elsewhere
    (``{ID}_predictedmask.png`` or ``{ID}.npz``) instead of segmenting.
cell_size
    With ``level="cell"``: side of the cell crops (default: half the field size).
console
    Where to print progress; silent when ``None``.
force
    Write into an existing non-empty directory that is not a run directory,
    replacing its files that have an output's name (it says which).
follow_symlinks
    Read images whose paths resolve outside the dataset directory.
max_pixels
    Largest image accepted, pixels per channel (default
    :data:`~labelaudit.data.readers.DEFAULT_MAX_PIXELS`), checked from headers.
skip_broken
    Audit the readable images when some cannot be decoded (recorded in
    ``run.json["skipped_images"]``) instead of stopping with the list of them.
probs
    Predictions made elsewhere (:func:`read_supplied_probs`): no training; the
    detectors run on them. They must be out-of-sample (cross-validated), or the
    model has learnt the label errors it should reveal; ``run.json["predictions"]``
    and the report say they were supplied.
embeddings
    With ``probs``: embeddings (``.npy``, N x D, dataset order) for the
    embedding detectors (without them those are skipped).
cell_probs
    A cell-level model's out-of-sample probabilities made elsewhere (CSV, one row per
    cell: the image ``id``, an optional ``cell`` name, one column per class; or an
    HPA single-cell challenge submission;
    :func:`~labelaudit.pipeline.supplied.read_supplied_cells`): a second view of each
    label for the label evidence, and the cell findings (``cells.csv``, the cell
    columns of ``issues.csv``) without masks or cell training. Not with
    ``level="cell"``, which trains its own cell model.
against
    Other datasets (e.g. the test set; only read) to check for leakage: images
    of this dataset that also appear in one of them (identical, or verified
    copies: shifted, re-noised, re-encoded, cropped by a few percent) get
    ``leak_of`` and ``leak_correlation`` in ``issues.csv``, the pairs go to
    ``leaks.csv`` (:func:`labelaudit.pipeline.leaks.add_leaks`).
second_round_of
    A finished scan of the same dataset (only read): the models train on its given
    labels with every label its ``combined`` evidence doubts (posterior >= 0.5)
    flipped; the detectors still judge the given labels
    (:mod:`labelaudit.pipeline.second_round`; ``run.json["second_round"]``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from labelaudit.core.errors import DatasetError, SettingsError
from labelaudit.core.io import edit_run_json
from labelaudit.core.params import Constraint, Integral, Interval, Options, validate_params
from labelaudit.data.cache import ImageCache, build_cache, subset_dataset
from labelaudit.data.dataset import Dataset
from labelaudit.data.layouts import load_dataset
from labelaudit.data.readers import DEFAULT_MAX_PIXELS
from labelaudit.pipeline.clean import check_replaceable
from labelaudit.pipeline.results import AuditResult
from labelaudit.pipeline.supplied import (
    Supplied,
    read_supplied_cells,
    read_supplied_embeddings,
    read_supplied_probs,
)
from labelaudit.rundir import (
    CLEANED_DIR,
    DEFAULT_RUN,
    RunDir,
    dataset_inputs,
    ensure_outside,
    finish_lock,
    make_audit_inputs,
    open_output_dir,
    run_lock,
)

if TYPE_CHECKING:
    from labelaudit.core.config import TrainSettings
    from labelaudit.detect.base import AuditInputs, CellPredictions
    from labelaudit.pipeline.second_round import SecondRound

#: Audit levels of ``scan``.
LEVELS: tuple[str, ...] = ("field", "cell")


@dataclass(kw_only=True)
class ScanResult(AuditResult):
    """What a scan produced: the run directory, the dataset, whether every stage ran
    (``False`` after ``fold=k``), their timings, and the audit's tables
    (:class:`~labelaudit.pipeline.results.AuditResult`: ``.issues``, ``.summary``,
    ``.duplicates``, ``.report(path)``; ``report_path`` once the report is written)."""

    dataset: Dataset
    complete: bool
    timings: dict[str, float] = field(default_factory=dict)


def cache_with_progress(
    dataset: Dataset,
    size: int,
    cache_dir: str | Path | None,
    console: Console | None,
    skip_broken: bool = False,
) -> ImageCache:
    """Build (or reuse) the image cache, showing a progress bar on ``console``.

    With ``skip_broken`` unreadable images are left out (``cache.skipped``)
    instead of stopping the scan with the list of them.
    """
    if console is None or console.quiet:
        return build_cache(dataset, size, cache_dir, skip_broken=skip_broken)
    with Progress(
        TextColumn("decoding images"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("decode", total=len(dataset))
        cache = build_cache(
            dataset,
            size,
            cache_dir,
            progress=lambda done, total: bar.update(task, completed=done),
            skip_broken=skip_broken,
            on_wait=lambda line: console.print(f"image cache: {line}", markup=False),
        )
    resumed = f" ({cache.resumed} of {len(dataset)} fields decoded by an earlier, unfinished build)"
    console.print(
        f"image cache: {'reused' if cache.reused else 'built'} {cache.path}"
        + (resumed if cache.resumed else ""),
        markup=False,
    )
    for skipped in cache.skipped:
        console.print(
            f"skipped unreadable image {skipped['id']!r}: {skipped['file']}: {skipped['reason']}",
            markup=False,
        )
    return cache


_P = ParamSpec("_P")


def _one_writer(
    func: Callable[Concatenate[contextlib.ExitStack, _P], ScanResult],
) -> Callable[_P, ScanResult]:
    """Give ``func`` an ExitStack (its first argument) whose locks are released when it
    returns; the caller, ``help()`` and type checkers see the signature without it."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> ScanResult:
        with contextlib.ExitStack() as locks:
            return func(locks, *args, **kwargs)

    signature = inspect.signature(func)
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:]
    )
    return wrapper


def _claim_outputs(
    run_dir: Path,
    ds: Dataset,
    cache_dir: str | Path | None,
    masks: str | Path | None,
    weights: str | Path | None,
    force: bool,
    console: Console,
    supplied: Sequence[tuple[str, str | Path | None]] = (),
) -> None:
    """Check the scan's outputs against its inputs; create or adopt the run directory.

    The image cache is an output too; the run directory must be labelaudit's
    (new, empty or marked, see :func:`~labelaudit.rundir.open_output_dir`).
    """
    from labelaudit.data.cache import check_cache_dir

    inputs = scan_inputs(ds, masks, weights, supplied)
    cache_root = check_cache_dir(cache_dir)
    ensure_outside(inputs, cache_root, "image cache directory")
    say = functools.partial(console.print, markup=False)
    open_output_dir(run_dir, inputs, force=force, say=say)


def scan_inputs(
    ds: Dataset,
    masks: str | Path | None,
    weights: str | Path | None,
    supplied: Sequence[tuple[str, str | Path | None]] = (),
) -> list:
    """Everything a scan reads: no output may land on or inside any of it."""
    inputs = dataset_inputs(ds)
    if masks is not None:
        inputs.append(("the masks directory", Path(masks)))
    if weights is not None:
        inputs.append(("the weights file", Path(weights)))
    inputs += [(what, Path(path)) for what, path in supplied if path is not None]
    return inputs


#: The values the scan's own parameters accept (:mod:`labelaudit.core.params`).
SCAN_CONSTRAINTS: dict[str, list[Constraint]] = {
    "level": [Options(*LEVELS)],
    "cell_size": [Interval(Integral, 16, 4096, text="between 16 and 4096 pixels"), None],
}


def _check_paths(**paths: Any) -> None:
    """Each file or folder option is a path (or ``None``): arrays and tables held in
    memory are :func:`labelaudit.find_issues`'s to take."""
    for name, value in paths.items():
        if value is not None and not isinstance(value, str | os.PathLike):
            raise SettingsError(
                f"{name} must be a path (str or pathlib.Path), got {type(value).__name__}; "
                "for arrays in memory use labelaudit.find_issues(labels, pred_probs, ...)"
            )


def check_scan_params(level: str, masks: str | Path | None, cell_size: int | None) -> None:
    """Check the scan's level options before anything is read or written.

    Raises
    ------
    SettingsError
        An unknown level, cell options without ``--level cell``, a missing masks
        directory, a cell size out of range, or the cell level under torchrun.
    """
    validate_params({"level": level}, SCAN_CONSTRAINTS)
    if level != "cell" and (masks is not None or cell_size is not None):
        raise SettingsError("--masks and --cell-size need --level cell")
    if masks is not None and not Path(masks).is_dir():
        raise SettingsError(f"the masks directory {masks} does not exist")
    validate_params({"cell_size": cell_size}, SCAN_CONSTRAINTS)
    if level == "cell" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SettingsError(
            "--level cell does not run under torchrun yet: scan at field level with torchrun, "
            "then run the same scan with --level cell in one process (the field folds are reused)"
        )


@dataclass(frozen=True)
class _ScanFiles:
    """The files and directories a scan is given besides the dataset."""

    cache_dir: str | Path | None
    masks: str | Path | None
    weights: str | Path | None
    probs: str | Path | None
    embeddings: str | Path | None
    #: Other datasets (only read) checked for leakage.
    against: Sequence[str | Path]
    #: A first scan whose doubted labels the models train on corrected.
    second_round_of: str | Path | None = None
    #: A cell-level model's probabilities made elsewhere.
    cell_probs: str | Path | None = None

    @property
    def supplied(self) -> list[tuple[str, str | Path | None]]:
        """``(description, path)`` of the ``--probs``, ``--embeddings`` and
        ``--cell-probs`` files and of the ``--second-round-of`` run."""
        return [
            ("the --probs file", self.probs),
            ("the --embeddings file", self.embeddings),
            ("the --second-round-of run", self.second_round_of),
            ("the --cell-probs file", self.cell_probs),
        ]

    def inputs(self, ds: Dataset) -> list:
        """Everything the scan reads (:func:`scan_inputs`)."""
        return scan_inputs(ds, self.masks, self.weights, self.supplied)


@dataclass
class _ScanJob:
    """What the stages of one scan share: where it writes and what it was asked."""

    run_dir: Path
    console: Console
    locks: contextlib.ExitStack
    fold: int | None
    detectors: Sequence[str] | None
    files: _ScanFiles
    #: Write into a non-empty directory that is not a run directory (``--force``).
    force: bool
    timings: dict[str, float] = field(default_factory=dict)
    #: The training labels of a second round (``None``: the given labels).
    second_round: SecondRound | None = None
    #: A cell model's predictions made elsewhere (``--cell-probs``).
    cells: CellPredictions | None = None
    #: When the scan started (``timings["load"]`` runs from here to the run's lock).
    started: float = field(default_factory=time.perf_counter)


@_one_writer
def scan(
    _locks: contextlib.ExitStack,
    dataset: str | Path | None = None,
    out: str | Path = DEFAULT_RUN,
    *,
    preset: str = "auto",
    layout: str | None = None,
    labels: str | Path | None = None,
    images: str | Path | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    sep: str | None = None,
    cache_dir: str | Path | None = None,
    detectors: Sequence[str] | None = None,
    fold: int | None = None,
    report: bool = True,
    level: str = "field",
    masks: str | Path | None = None,
    cell_size: int | None = None,
    console: Console | None = None,
    force: bool = False,
    follow_symlinks: bool = False,
    max_pixels: int | None = None,
    skip_broken: bool = False,
    probs: str | Path | None = None,
    embeddings: str | Path | None = None,
    against: Sequence[str | Path] = (),
    second_round_of: str | Path | None = None,
    cell_probs: str | Path | None = None,
    **overrides,
) -> ScanResult:
    """Audit a dataset: train cross-validated models, run the detectors, clean, report.

    Each option in full is in the module docstring (*Options*).

    Parameters
    ----------
    dataset
        The dataset directory (only read); may be left out when ``labels`` is given.
    out
        The run directory (created; reused for resuming).
    preset, **overrides
        Training preset (``seed``, ``cpu``, ``demo``, ``auto``) and settings replacing its.
    layout, labels, images, id_column, label_column, sep, follow_symlinks, max_pixels
        How the dataset is read (:func:`~labelaudit.data.layouts.load_dataset`).
    cache_dir, detectors, fold, report, console, force, skip_broken
        Image cache location; detectors to run (default: all); train only this fold
        (1-based) and stop; write ``report.html``; where to print progress (``None``:
        silent); write into a foreign directory; skip images that cannot be decoded.
    level, masks, cell_size
        ``"cell"`` also audits cells, segmented or read from ``masks``.
    probs, embeddings
        Out-of-sample predictions (and embeddings) made elsewhere: no training.
    against
        Other datasets (only read) to check for leakage.
    second_round_of
        A finished scan of the same dataset: train on its labels with the doubted
        ones flipped (:mod:`labelaudit.pipeline.second_round`).
    cell_probs
        A cell-level model's out-of-sample probabilities made elsewhere (CSV).

    Returns
    -------
    ScanResult
    """
    _check_paths(
        dataset=dataset, out=out, labels=labels, images=images, cache_dir=cache_dir,
        masks=masks, probs=probs, embeddings=embeddings, second_round_of=second_round_of,
        cell_probs=cell_probs,
    )  # fmt: skip
    check_scan_params(level, masks, cell_size)
    if second_round_of is not None and level != "field":
        raise SettingsError(
            "--second-round-of trains the field models again; the cell level trains on the "
            "given labels: run it at field level"
        )
    if cell_probs is not None and level == "cell":
        raise SettingsError(
            "--cell-probs supplies a cell model's predictions; --level cell trains one: "
            "give one of them"
        )
    files = _ScanFiles(
        cache_dir,
        masks,
        overrides.get("weights"),
        probs,
        embeddings,
        against,
        second_round_of,
        cell_probs,
    )
    job = _ScanJob(Path(out), console or Console(quiet=True), _locks, fold, detectors, files, force)
    ds = load_dataset(
        dataset,
        layout,
        labels=labels,
        images=images,
        id_column=id_column,
        label_column=label_column,
        sep=sep,
        follow_symlinks=follow_symlinks,
        max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
    )
    settings, supplied, others = _open_run(
        job, ds, preset, overrides, skip_broken, max_pixels, trains=probs is None or level == "cell"
    )
    ds, cache, info = _cache_stage(job, ds, settings, skip_broken)
    result, audit = _train_stage(job, ds, cache, info, settings, supplied)
    if audit is None:  # this process stops after training (see _train)
        return result
    if _detect_stage(job, ds, cache, audit, settings, others, level, cell_size, result):
        _clean_and_report(job, result, report)
    return result


def _open_run(
    job: _ScanJob,
    ds: Dataset,
    preset: str,
    overrides: dict,
    skip_broken: bool,
    max_pixels: int | None,
    *,
    trains: bool,
) -> tuple[TrainSettings, Supplied | None, list[Dataset]]:
    """Check every option before a directory is created or an image decoded, then
    claim the run directory and take its lock (fold jobs: one per fold). ``trains``:
    models will be cross-validated (fields, or the cells of a cell-level scan)."""
    from labelaudit.core.config import resolve_settings
    from labelaudit.pipeline.preflight import preflight

    settings = resolve_settings(preset, **overrides)
    files = job.files
    if files.masks is not None:
        _check_masks(files.masks, ds.ids, skip_broken)
    fold = job.fold
    preflight(
        settings, ds.labels, ds.class_names, len(ds.channels), fold=fold,
        detectors=job.detectors, trains=trains,
    )  # fmt: skip
    supplied = _read_supplied(ds, files.probs, files.embeddings, fold)
    job.second_round = _read_second_round(ds, files.second_round_of, fold, supplied, skip_broken)
    if files.cell_probs is not None:
        ids = [str(i) for i in ds.ids]
        job.cells = read_supplied_cells(files.cell_probs, ids, ds.class_names, ds.class_tokens)
    others = _load_against(ds, files.against, max_pixels)
    _claim_outputs(
        job.run_dir,
        ds,
        files.cache_dir,
        files.masks,
        files.weights,
        job.force,
        job.console,
        supplied=files.supplied
        + [(f"the --against dataset {o.root}", p) for o in others for _, p in dataset_inputs(o)],
    )
    # One writer at a time (fold jobs: one per fold).
    job.locks.enter_context(run_lock(job.run_dir, fold=fold))
    check_replaceable(job.run_dir / CLEANED_DIR)  # a foreign cleaned/ stops the scan now, not last
    job.timings["load"] = time.perf_counter() - job.started
    return settings, supplied, others


def _cache_stage(
    job: _ScanJob, ds: Dataset, settings: TrainSettings, skip_broken: bool
) -> tuple[Dataset, ImageCache, dict]:
    """Decode the images into the cache; record the dataset (only its readable images)."""
    job.console.print(
        f"dataset: {ds.root} ({ds.layout}, {len(ds)} images, {ds.n_classes} classes)",
        markup=False,
    )
    t = time.perf_counter()
    cache = cache_with_progress(
        ds, settings.image_size, job.files.cache_dir, job.console, skip_broken
    )
    if cache.skipped:  # audit the readable images: the dataset's rows follow the cache's
        ds = subset_dataset(ds, cache.ids)
    edit_run_json(job.run_dir, lambda data: data.__setitem__("skipped_images", cache.skipped))
    info = RunDir(job.run_dir).write_dataset(ds, cache)
    job.timings["cache"] = time.perf_counter() - t
    return ds, cache, info


def _train_stage(
    job: _ScanJob,
    ds: Dataset,
    cache: ImageCache,
    info: dict,
    settings: TrainSettings,
    supplied: Supplied | None,
) -> tuple[ScanResult, AuditInputs | None]:
    """Cross-validate, or take the supplied predictions; the detectors' inputs, or
    ``None`` when this process stops here (see :func:`_train`)."""
    run_dir = job.run_dir
    audit: AuditInputs | None
    if supplied is not None:  # predictions made elsewhere: no training
        audit = _use_supplied(run_dir, info, ds, cache, supplied)
        result = ScanResult(run_dir=run_dir, dataset=ds, complete=True, timings=job.timings)
    else:
        result, audit = _train(job, info, ds, cache, settings)
    result.inputs = job.files.inputs(ds)
    return result, audit


def _detect_stage(
    job: _ScanJob,
    ds: Dataset,
    cache: ImageCache,
    audit: AuditInputs,
    settings: TrainSettings,
    others: list[Dataset],
    level: str,
    cell_size: int | None,
    result: ScanResult,
) -> bool:
    """Run the detectors, duplicates and leakage, and the cell level (or forget a
    previous one); ``False`` (``result`` incomplete) when the cell folds are not all
    finished here: unfinished (``--fold``) or a non-zero DDP rank.

    At cell level the cells are cross-validated first, so the label evidence
    (``combined``) can weigh the cell model's view; their findings come after the
    field detectors' (they add columns to ``issues.csv``).
    """
    from labelaudit.cells.audit import forget_cells
    from labelaudit.pipeline.compare import detect_and_compare
    from labelaudit.pipeline.leaks import add_duplicates

    run_dir, console, timings, files = job.run_dir, job.console, job.timings, job.files
    forget_cells(run_dir)  # a previous scan's cells are not this scan's
    audit = dataclasses.replace(audit, cells=None)  # only this scan's cells count
    stage = None
    if level == "cell":
        from labelaudit.cells.audit import train_cells

        t = time.perf_counter()
        stage = train_cells(
            run_dir,
            ds,
            settings,
            masks=files.masks,
            cell_size=cell_size,
            cache_dir=files.cache_dir,
            fold=job.fold,
            console=console,
        )
        timings["cells"] = time.perf_counter() - t
        if stage is not None:
            audit = dataclasses.replace(audit, cells=stage.predictions())
    elif job.cells is not None:
        audit = dataclasses.replace(audit, cells=_use_supplied_cells(run_dir, ds, job.cells))
    t = time.perf_counter()
    detect_and_compare(audit, run_dir, detectors=job.detectors)
    add_duplicates(run_dir, audit, cache)  # issues.csv duplicate_* columns, duplicates.csv
    if others:
        _check_leaks(
            run_dir, audit.ids, cache, others, settings.image_size, files.cache_dir, console
        )
    timings["detect"] = time.perf_counter() - t
    _record_timings(run_dir, timings)
    console.print(f"detectors: issues in {run_dir / 'issues.csv'}", markup=False)
    if level == "field":
        if audit.cells is not None:
            from labelaudit.cells.audit import write_supplied_cell_findings

            write_supplied_cell_findings(run_dir, audit, settings.seed, console=console)
        return True
    if stage is None:
        result.complete = False
        return False
    from labelaudit.cells.audit import write_cell_findings

    t = time.perf_counter()
    write_cell_findings(run_dir, ds, stage, settings.seed, console=console)
    timings["cells"] += time.perf_counter() - t
    _record_timings(run_dir, timings)
    return True


def _clean_and_report(job: _ScanJob, result: ScanResult, report: bool) -> None:
    """Clean with the default policy (``labelaudit clean`` re-runs it), then the report."""
    from labelaudit.pipeline.clean import clean

    t = time.perf_counter()
    cleaned = clean(job.run_dir)  # the default policy; `labelaudit clean` re-runs it
    job.timings["clean"] = time.perf_counter() - t
    job.console.print(
        f"cleaned dataset: {cleaned.cleaned_dir} (changes in {cleaned.changes_file})",
        markup=False,
    )
    if report:
        from labelaudit.report import write_report

        t = time.perf_counter()
        result.report_path = write_report(job.run_dir)
        job.timings["report"] = time.perf_counter() - t
        _record_timings(job.run_dir, job.timings)


def _load_against(
    ds: Dataset, against: Sequence[str | Path], max_pixels: int | None
) -> list[Dataset]:
    """The ``--against`` datasets, loaded and checked against the scanned one."""
    others = []
    for path in against:
        other = load_dataset(path, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
        if len(other.channels) != len(ds.channels):
            raise SettingsError(
                f"--against {path}: {len(other.channels)} channel(s), the dataset has "
                f"{len(ds.channels)}: their images cannot be compared"
            )
        if Path(other.root).resolve() == Path(ds.root).resolve():
            raise SettingsError(f"--against {path} is the scanned dataset itself")
        others.append(other)
    return others


def _check_leaks(
    run_dir: Path,
    ids: list[str],
    cache: ImageCache,
    others: list[Dataset],
    image_size: int,
    cache_dir: str | Path | None,
    console: Console,
) -> None:
    """Cache each ``--against`` dataset at the run's size and record what they share."""
    from labelaudit.pipeline.leaks import add_leaks

    pairs = []
    for other in others:
        other_cache = cache_with_progress(other, image_size, cache_dir, console)
        pairs.append((str(other.root), other_cache))
    summary = add_leaks(run_dir, ids, cache, pairs)
    for entry in summary["datasets"]:
        console.print(
            f"leakage: {entry['n_leaked']} images also in {entry['dataset']} "
            f"({entry['n_pairs']} pairs, {run_dir / 'leaks.csv'})",
            markup=False,
        )


def _train(job: _ScanJob, info: dict, ds: Dataset, cache: ImageCache, settings: TrainSettings):
    """Cross-validate; return the result so far and the detectors' inputs (``None``: stop).

    ``None`` when this process does not go on to detection: a non-zero torchrun
    rank, or unfinished folds (``--fold``). A second round trains on its corrected
    labels (and keys its folds by them); the detectors judge the given labels.
    """
    from labelaudit.core.digest import short_digest
    from labelaudit.train.cv import cross_validate

    run_dir, fold, console, timings = job.run_dir, job.fold, job.console, job.timings
    second = job.second_round
    labels, fingerprint = ds.labels, ds.fingerprint()
    if second is not None:
        labels = second.aligned([str(i) for i in ds.ids])
        packed = np.packbits(labels, axis=None).tobytes()
        fingerprint = f"{fingerprint}+second-round:{short_digest(packed, 16)}"

    def record(data: dict) -> None:
        data.pop("predictions", None)  # trained here, not supplied
        data.pop("second_round", None)
        if second is not None:
            data["second_round"] = second.record()

    if os.environ.get("RANK", "0") == "0":
        RunDir(run_dir).edit_run(record)
    t = time.perf_counter()
    cv = cross_validate(
        cache.images,
        labels,
        ds.ids,
        ds.class_names,
        settings,
        run_dir,
        fingerprint,
        fold=fold,
        console=console,
    )
    timings["train"] = time.perf_counter() - t
    result = ScanResult(run_dir=run_dir, dataset=ds, complete=cv.complete, timings=timings)
    if getattr(cv, "rank", 0) != 0:  # under torchrun only rank 0 goes on to detection
        return result, None
    if not cv.complete:
        _record_timings(run_dir, timings)
        return result, None
    if fold is not None:  # the last fold jobs to finish write the rest one at a time
        job.locks.enter_context(finish_lock(run_dir, say=console.print))
    return result, _audit_inputs(run_dir, info, ds, cache, cv)


def _audit_inputs(run_dir: Path, info: dict, ds: Dataset, cache: ImageCache, cv):
    """The detectors' inputs from what the scan holds in memory (the files are written).

    The same values the run directory's files read back to: labels and ids of
    ``dataset.csv``, the cache's statistics, the out-of-fold probabilities and
    embeddings of the cross-validation.
    """
    if cv.oof_probs is None or cv.embeddings is None:  # not this process's: read them
        return RunDir(run_dir).audit_inputs()
    emb = np.ascontiguousarray(cv.embeddings, dtype=np.float32)
    probs = np.asarray(cv.oof_probs).astype(np.float64)
    return make_audit_inputs(info, list(ds.ids), ds.labels, probs, emb, cache.stats)


def _record_timings(run_dir: Path, timings: dict[str, float]) -> None:
    def merge(data: dict) -> None:  # one read-modify-write: fold jobs record concurrently
        previous = data.get("timings") or {}
        previous.update({k: round(v, 3) for k, v in timings.items()})
        data["timings"] = previous

    edit_run_json(run_dir, merge)


# ------------------------------------------------------------ supplied predictions

#: What ``run.json["predictions"]`` and the report say about supplied predictions.
SUPPLIED_NOTE = (
    "predictions supplied with --probs, not trained by this scan: they must be "
    "out-of-sample (cross-validated); a model that saw an image's label in training "
    "has learnt its errors and hides them"
)


def _check_masks(masks: str | Path, ids: list[str], skip_broken: bool) -> None:
    """``--masks`` holds a mask for every field (with ``--skip-broken``: for some field).

    Raises
    ------
    DatasetError
        The directory is missing, not a directory, or lacks the masks (named).
    """
    from labelaudit.cells.masks import load_masks

    try:
        load_masks(masks, ids)
    except DatasetError:
        if not skip_broken or not any(_has_mask(masks, i) for i in ids):
            raise


def _has_mask(masks: str | Path, image_id: str) -> bool:
    from labelaudit.cells.masks import load_masks

    try:
        load_masks(masks, [image_id])
    except DatasetError:
        return False
    return True


def _read_supplied(
    ds: Dataset, probs: str | Path | None, embeddings: str | Path | None, fold: int | None
) -> Supplied | None:
    """Check ``--probs``/``--embeddings`` before anything is written (``None``: train)."""
    if probs is None:
        if embeddings is not None:
            raise SettingsError("--embeddings needs --probs (predictions made elsewhere)")
        return None
    if fold is not None:
        raise SettingsError("--fold trains one fold; --probs skips training: give one of them")
    ids = [str(i) for i in ds.ids]
    values = read_supplied_probs(probs, ids, ds.class_names, ds.class_tokens)
    emb = None if embeddings is None else read_supplied_embeddings(embeddings, len(ids))
    return Supplied(ids, values, emb, Path(probs), None if embeddings is None else Path(embeddings))


def _read_second_round(
    ds: Dataset,
    first: str | Path | None,
    fold: int | None,
    supplied: Supplied | None,
    skip_broken: bool,
) -> SecondRound | None:
    """Check ``--second-round-of`` and read its training labels before anything is
    written (with ``skip_broken``, which images are read is known after the cache)."""
    if first is None:
        return None
    if supplied is not None:
        raise SettingsError("--second-round-of trains again; --probs skips training: give one")
    if fold is not None or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SettingsError(
            "--second-round-of runs in one process (not with --fold or torchrun): each "
            "process would recompute the corrected labels"
        )
    from labelaudit.pipeline.second_round import read_second_round

    ids = [str(i) for i in ds.ids]
    return read_second_round(first, ids, ds.class_tokens, ds.labels, same_images=not skip_broken)


def _use_supplied_cells(run_dir: Path, ds: Dataset, cells: CellPredictions) -> CellPredictions:
    """The supplied cells of the audited images, written where a cell-level scan keeps
    its cell model's probabilities (``RUN/cells/oof_probs.csv``), so the run reads
    back as it was audited."""
    from labelaudit.detect.base import CellPredictions

    keep = cells.table["id"].isin(set(map(str, ds.ids))).to_numpy()  # --skip-broken
    cells = CellPredictions(cells.table[keep].reset_index(drop=True), cells.probs[keep])
    RunDir(run_dir).write_cell_probs(cells, list(ds.class_names))
    return cells


def _use_supplied(run_dir: Path, info: dict, ds: Dataset, cache: ImageCache, supplied: Supplied):
    """Write the supplied predictions as the run's and record that they were supplied."""
    from labelaudit.core.io import write_csv
    from labelaudit.rundir import OOF_CSV

    supplied = supplied.subset([str(i) for i in ds.ids])
    run = RunDir(run_dir)
    run.forget_oof()  # a previous run's embeddings must not stay beside new predictions
    run.edit_run(lambda data: data.pop("second_round", None))  # not trained here
    if supplied.embeddings is not None:
        run.write_oof(supplied.ids, ds.class_names, supplied.probs, supplied.embeddings)
    else:
        import pandas as pd

        frame = pd.DataFrame(supplied.probs, columns=list(ds.class_names))
        frame.insert(0, "id", supplied.ids)
        write_csv(run.file(OOF_CSV), frame)
    run.write_section(
        "predictions",
        {
            "supplied": True,
            "probs": str(supplied.probs_path),
            "embeddings": None
            if supplied.embeddings_path is None
            else str(supplied.embeddings_path),
            "note": SUPPLIED_NOTE,
        },
    )
    return make_audit_inputs(
        info, supplied.ids, ds.labels, supplied.probs, supplied.embeddings, cache.stats
    )
