"""``labelaudit scan``: the whole pipeline, stage after stage, into a run directory.

load/validate -> cache -> cross-validate -> detect + compare -> report -> clean.
Each stage writes its artifacts atomically, so a killed scan resumes where it
stopped (finished folds are reused by the training stage).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from labelaudit.clean import CLEANED_DIR, check_replaceable
from labelaudit.data.cache import ImageCache, build_cache, subset_dataset
from labelaudit.data.dataset import Dataset
from labelaudit.data.layouts import load_dataset
from labelaudit.data.readers import DEFAULT_MAX_PIXELS
from labelaudit.errors import SettingsError
from labelaudit.io import edit_run_json
from labelaudit.rundir import (
    DEFAULT_RUN,
    RunDir,
    dataset_inputs,
    ensure_outside,
    finish_lock,
    make_audit_inputs,
    open_output_dir,
    run_lock,
)

#: Audit levels of ``scan``.
LEVELS: tuple[str, ...] = ("field", "cell")


@dataclass
class ScanResult:
    """What a scan produced: the run directory and the stages that ran."""

    run_dir: Path
    dataset: Dataset
    complete: bool
    timings: dict[str, float] = field(default_factory=dict)
    report: Path | None = None


def cache_with_progress(
    dataset: Dataset,
    size: int,
    cache_dir: Path | None,
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


def _one_writer(func: Callable[..., ScanResult]) -> Callable[..., ScanResult]:
    """Give ``func`` an ExitStack (``_locks``) whose locks are released when it returns."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> ScanResult:
        with contextlib.ExitStack() as locks:
            return func(*args, _locks=locks, **kwargs)

    return wrapper


def _claim_outputs(
    run_dir: Path,
    ds: Dataset,
    cache_dir: str | Path | None,
    masks: str | Path | None,
    weights: str | Path | None,
    force: bool,
    console: Console,
) -> None:
    """Check the scan's outputs against its inputs; create or adopt the run directory.

    The image cache is an output too; the run directory must be labelaudit's
    (new, empty or marked, see :func:`~labelaudit.rundir.open_output_dir`).
    """
    from labelaudit.data.cache import default_cache_dir

    inputs = scan_inputs(ds, masks, weights)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ensure_outside(inputs, cache_root, "image cache directory")
    say = functools.partial(console.print, markup=False)
    open_output_dir(run_dir, inputs, force=force, say=say)


def scan_inputs(ds: Dataset, masks: str | Path | None, weights: str | Path | None) -> list:
    """Everything a scan reads: no output may land on or inside any of it."""
    inputs = dataset_inputs(ds)
    if masks is not None:
        inputs.append(("the masks directory", Path(masks)))
    if weights is not None:
        inputs.append(("the weights file", Path(weights)))
    return inputs


@_one_writer
def scan(
    dataset: str | Path,
    out: str | Path = DEFAULT_RUN,
    *,
    preset: str = "auto",
    layout: str | None = None,
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
    _locks: contextlib.ExitStack,
    **overrides,
) -> ScanResult:
    """Audit a dataset: train cross-validated models, run the detectors, write the report.

    Parameters
    ----------
    dataset
        The dataset directory (only read).
    out
        The run directory (created; reused for resuming).
    preset
        Training preset (``seed``, ``cpu``, ``demo``; ``auto`` picks ``seed`` on a
        GPU, else ``cpu``). Keyword ``overrides`` (``backbone``, ``epochs``,
        ``image_size``, ...) replace single settings.
    layout
        Force a dataset layout.
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

    Returns
    -------
    ScanResult
    """
    from labelaudit.config import resolve_settings
    from labelaudit.preflight import preflight
    from labelaudit.train.cv import cross_validate

    console = console or Console(quiet=True)
    run_dir = Path(out)
    timings: dict[str, float] = {}

    if level not in LEVELS:
        raise SettingsError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    if level != "cell" and (masks is not None or cell_size is not None):
        raise SettingsError("--masks and --cell-size need --level cell")
    if masks is not None and not Path(masks).is_dir():
        raise SettingsError(f"the masks directory {masks} does not exist")
    if cell_size is not None and not (isinstance(cell_size, int) and 16 <= cell_size <= 4096):
        raise SettingsError(f"cell_size must be between 16 and 4096 pixels, got {cell_size!r}")
    if level == "cell" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SettingsError(
            "--level cell does not run under torchrun yet: scan at field level with torchrun, "
            "then run the same scan with --level cell in one process (the field folds are reused)"
        )
    t = time.perf_counter()
    ds = load_dataset(
        dataset,
        layout,
        follow_symlinks=follow_symlinks,
        max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
    )
    settings = resolve_settings(preset, **overrides)
    # Every option is checked before a directory is created or an image decoded.
    preflight(settings, ds.labels, ds.class_names, len(ds.channels), fold=fold, detectors=detectors)
    _claim_outputs(run_dir, ds, cache_dir, masks, overrides.get("weights"), force, console)
    _locks.enter_context(run_lock(run_dir, fold=fold))  # one writer (fold jobs: one per fold)
    check_replaceable(run_dir / CLEANED_DIR)  # a foreign cleaned/ stops the scan now, not last
    timings["load"] = time.perf_counter() - t
    console.print(
        f"dataset: {ds.root} ({ds.layout}, {len(ds)} images, {ds.n_classes} classes)",
        markup=False,
    )

    t = time.perf_counter()
    cache = cache_with_progress(ds, settings.image_size, cache_dir, console, skip_broken)
    if cache.skipped:  # audit the readable images: the dataset's rows follow the cache's
        ds = subset_dataset(ds, cache.ids)
    edit_run_json(run_dir, lambda data: data.__setitem__("skipped_images", cache.skipped))
    info = RunDir(run_dir).write_dataset(ds, cache)
    timings["cache"] = time.perf_counter() - t

    t = time.perf_counter()
    cv = cross_validate(
        cache.images,
        ds.labels,
        ds.ids,
        ds.class_names,
        settings,
        run_dir,
        ds.fingerprint(),
        fold=fold,
        console=console,
    )
    timings["train"] = time.perf_counter() - t
    result = ScanResult(run_dir=run_dir, dataset=ds, complete=cv.complete, timings=timings)
    if getattr(cv, "rank", 0) != 0:  # under torchrun only rank 0 goes on to detection
        return result
    if not cv.complete:
        _record_timings(run_dir, timings)
        return result
    if fold is not None:  # the last fold jobs to finish write the rest one at a time
        _locks.enter_context(finish_lock(run_dir, say=console.print))

    from labelaudit.compare import detect_and_compare

    t = time.perf_counter()
    detect_and_compare(_audit_inputs(run_dir, info, ds, cache, cv), run_dir, detectors=detectors)
    timings["detect"] = time.perf_counter() - t
    _record_timings(run_dir, timings)
    console.print(f"detectors: issues in {run_dir / 'issues.csv'}", markup=False)
    if level == "field":
        from labelaudit.cells.audit import forget_cells

        forget_cells(run_dir)
    else:
        from labelaudit.cells.audit import audit_cells

        t = time.perf_counter()
        cells = audit_cells(
            run_dir,
            ds,
            settings,
            masks=masks,
            cell_size=cell_size,
            cache_dir=cache_dir,
            fold=fold,
            console=console,
        )
        timings["cells"] = time.perf_counter() - t
        _record_timings(run_dir, timings)
        if not cells:  # cell folds unfinished (--fold) or a non-zero DDP rank
            result.complete = False
            return result
    from labelaudit.clean import clean

    t = time.perf_counter()
    cleaned = clean(run_dir)  # the default policy; `labelaudit clean` re-runs it
    timings["clean"] = time.perf_counter() - t
    console.print(
        f"cleaned dataset: {cleaned.cleaned_dir} (changes in {cleaned.changes_file})",
        markup=False,
    )
    if report:
        from labelaudit.report import write_report

        t = time.perf_counter()
        result.report = write_report(run_dir)
        timings["report"] = time.perf_counter() - t
        _record_timings(run_dir, timings)
    return result


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
