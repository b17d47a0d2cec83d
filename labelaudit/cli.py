"""The ``labelaudit`` command line: parse arguments, call the library, map errors.

Known user errors (:class:`~labelaudit.core.errors.LabelAuditError`) print one line and
exit with status 2; usage errors exit 2 as well (click's convention); anything
else is an internal failure and exits 1. Ctrl-C and SIGTERM print one line and exit
with status 130 after the ``finally`` blocks on the way out have cleaned up.
Messages and paths are printed without rich's emoji codes (``:x:`` stays ``:x:``)
and with markup escaped (``[red]`` in a path prints as ``[red]``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labelaudit.core.defaults import DEFAULT_RUN
from labelaudit.core.errors import INTERRUPT_STATUS, LabelAuditError, RunDirError
from labelaudit.core.interrupts import Interrupts

if TYPE_CHECKING:
    from labelaudit.data.dataset import Dataset

app = typer.Typer(
    name="labelaudit",
    help="Audit the labels of multi-label microscope image datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(highlight=False, soft_wrap=True, emoji=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

#: click's base of usage errors: typer vendors click (``typer._click``) in recent versions,
#: so take the class from a public typer exception rather than from the click package.
ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


class _ClickError(Protocol):
    """What labelaudit reads of a :data:`ClickException` (click's API)."""

    exit_code: int

    def format_message(self) -> str: ...

    def show(self) -> None: ...


LayoutOption = Annotated[
    str | None,
    typer.Option("--layout", help="hpa2021, hpa2018 or generic (detected when omitted)."),
]
DatasetArgument = Annotated[
    Path | None,
    typer.Argument(
        help="The dataset directory (optional with --labels: then the label file's folder).",
        show_default=False,
    ),
]
LabelsOption = Annotated[
    Path | None,
    typer.Option(
        "--labels", help="The label file, anywhere (default DATASET/train.csv or labels.csv)."
    ),
]
ImagesOption = Annotated[
    Path | None,
    typer.Option(
        "--images",
        help="The image directory, anywhere (HPA: the {ID}_{channel} files, default"
        " DATASET/train; generic: image paths are relative to it, default DATASET).",
    ),
]
IdColumnOption = Annotated[
    str | None,
    typer.Option("--id-column", help="The label file's id/image column (ID, Id or image)."),
]
LabelColumnOption = Annotated[
    str | None,
    typer.Option("--label-column", help="The label file's labels column (Label, Target, labels)."),
]
SepOption = Annotated[
    str | None,
    typer.Option(
        "--sep", help="Separator of labels in the label column: '|' (default), ';', ',', space."
    ),
]
FollowSymlinksOption = Annotated[
    bool,
    typer.Option(
        "--follow-symlinks",
        help="Read images whose paths (symbolic links) lead outside the dataset directory.",
    ),
]
MaxPixelsOption = Annotated[
    int | None,
    typer.Option(
        "--max-pixels",
        min=1,
        help="Largest image accepted, in pixels per channel (default 20000 x 20000);"
        " checked from each file's header before decoding.",
    ),
]


def _show_version(value: bool) -> None:
    if value:
        from labelaudit import __version__

        console.print(f"labelaudit {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Audit the labels of multi-label microscope image datasets."""


def _print_check(summary: dict) -> None:
    console.print(f"[bold]{escape(summary['dataset'])}[/]  layout {summary['layout']}")
    console.print(
        f"{summary['images']} images, {summary['classes']} classes, "
        f"channels {', '.join(summary['channels'])}"
    )
    table = Table(title="images per class", show_edge=False)
    table.add_column("class")
    table.add_column("images", justify="right")
    for name, count in summary["images_per_class"].items():
        table.add_row(escape(name), str(count))
    console.print(table)
    per = ", ".join(f"{k}: {v}" for k, v in summary["labels_per_image"].items())
    console.print(f"labels per image  {per}")
    sizes = ", ".join(f"{k} ({v})" for k, v in summary["image_sizes"].items())
    console.print(f"image sizes       {sizes or '-'}  ")
    depths = ", ".join(f"{k}-bit ({v})" for k, v in summary["bit_depths"].items())
    console.print(f"bit depths        {depths or '-'}")
    conflicts = summary.get("exclusive_conflicts") or {}
    if conflicts.get("count"):
        console.print(
            f"[yellow]label problem:[/] {conflicts['count']} row(s) join an exclusive class"
            " with another class (a wrong label either way; scan suggests which side stays)"
        )
        for line in conflicts["first"]:
            console.print(f"  {escape(line)}")
    for w in summary["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    for e in summary["errors"]:
        console.print(f"[red]problem:[/] {escape(e)}")
    n = len(summary["errors"])
    console.print("[green]no problems found[/]" if n == 0 else f"[red]{n} problem(s) found[/]")


#: click's usage error (exit status 2), taken from typer like :data:`ClickException`.
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _dataset_given(dataset: Path | None, labels: Path | None) -> None:
    if dataset is None and labels is None:
        raise UsageError("Missing argument 'DATASET' (or give the label file with --labels FILE)")


@app.command()
def check(
    dataset: DatasetArgument = None,
    layout: LayoutOption = None,
    labels: LabelsOption = None,
    images: ImagesOption = None,
    id_column: IdColumnOption = None,
    label_column: LabelColumnOption = None,
    sep: SepOption = None,
    deep: Annotated[
        bool, typer.Option(help="Decode every image fully (finds truncated files).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    follow_symlinks: FollowSymlinksOption = False,
    max_pixels: MaxPixelsOption = None,
) -> None:
    """Validate a dataset and print a summary; exit 2 when problems are found."""
    from labelaudit.data.check import check_dataset
    from labelaudit.data.readers import DEFAULT_MAX_PIXELS

    _dataset_given(dataset, labels)
    report = check_dataset(
        dataset,
        layout,
        labels=labels,
        images=images,
        id_column=id_column,
        label_column=label_column,
        sep=sep,
        deep=deep,
        follow_symlinks=follow_symlinks,
        max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
    )
    summary = report.summary()
    if as_json:
        console.print_json(json.dumps(summary))
    else:
        _print_check(summary)
    if not report.ok:
        raise typer.Exit(2)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Directory to create (must be empty or absent).")],
    n: Annotated[int, typer.Option("--n", help="Number of fields.")] = 400,
    size: Annotated[int, typer.Option(help="Field size in pixels.")] = 128,
    noise_rate: Annotated[float, typer.Option(help="Fraction of fields with label noise.")] = 0.2,
    fault_rate: Annotated[float, typer.Option(help="Fraction of fields with image faults.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    partial_cells: Annotated[
        float,
        typer.Option(
            "--partial-cells",
            metavar="RATE",
            help="Fraction of the stained fields whose classes only some cells show"
            " (adds a cells column to truth.csv).",
        ),
    ] = 0.0,
    masks: Annotated[
        bool,
        typer.Option(
            "--masks/--no-masks",
            help="Also write the true cell masks as masks/{ID}_predictedmask.png.",
        ),
    ] = False,
    duplicates: Annotated[
        int,
        typer.Option(
            "--duplicates",
            metavar="N",
            help="Also plant N near-duplicates (shifted, re-noised, a third with changed"
            " labels; duplicate_of column in truth.csv).",
        ),
    ] = 0,
) -> None:
    """Write a synthetic HPA-layout dataset with known injected problems (truth.csv)."""
    from labelaudit.synth.simulate import synthesize

    truth = synthesize(
        out,
        n=n,
        size=size,
        noise_rate=noise_rate,
        fault_rate=fault_rate,
        seed=seed,
        partial_cells=partial_cells,
        write_masks=masks,
        duplicates=duplicates,
    )
    noisy = int((truth["noise"] != "none").sum())
    extra = f"; cell masks in {escape(str(Path(out) / 'masks'))}" if masks else ""
    console.print(
        f"wrote {len(truth)} fields to {escape(str(out))} ({noisy} with injected problems;"
        f" truth in {escape(str(Path(out) / 'truth.csv'))}{extra})"
    )


# The options of scan and sweep (typer reads each parameter's Annotated option).
PresetOption = Annotated[str, typer.Option(help="seed, cpu, demo or auto (seed on a GPU).")]
EpochsOption = Annotated[int | None, typer.Option(help="Epochs per fold.")]
ImageSizeOption = Annotated[int | None, typer.Option(help="Training image size.")]
BatchSizeOption = Annotated[int | None, typer.Option(help="Batch size.")]
SeedOption = Annotated[int | None, typer.Option(help="Random seed.")]
DeviceOption = Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N.")]
CacheDirOption = Annotated[Path | None, typer.Option(help="Image cache directory.")]
AllowRareOption = Annotated[
    bool, typer.Option(hidden=True, help="Deprecated, no effect (rare classes only warn).")
]
BackboneOption = Annotated[str | None, typer.Option(help="Any timm model name.")]
FoldsOption = Annotated[int | None, typer.Option(help="K of the K-fold cross-validation.")]
LrOption = Annotated[float | None, typer.Option(help="Adam learning rate.")]
WeightsOption = Annotated[Path | None, typer.Option(help="A weights file (state dict).")]
ModeOption = Annotated[str | None, typer.Option(help="finetune (default) or probe.")]
FoldOption = Annotated[int | None, typer.Option(help="Train only this fold (1-based).")]
DetectorsOption = Annotated[
    str | None, typer.Option(help="Comma-separated detectors (default: all registered).")
]
ScanStrictOption = Annotated[
    bool,
    typer.Option(
        help="Stop when a class has fewer images than folds (default: audit it with a"
        " warning, its findings marked unreliable)."
    ),
]
LevelOption = Annotated[
    str, typer.Option(help="field (whole fields) or cell (also segment and audit cells).")
]
MasksOption = Annotated[
    Path | None,
    typer.Option(help="--level cell: masks made elsewhere ({ID}_predictedmask.png, {ID}.npz)."),
]
CellSizeOption = Annotated[
    int | None, typer.Option(help="--level cell: cell crop size (default half the image size).")
]
ScanQuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing.")]
ForceOption = Annotated[
    bool,
    typer.Option(
        help="Write into a non-empty --out that is not a run directory, replacing its"
        " files named like outputs (they are listed)."
    ),
]
SkipBrokenOption = Annotated[
    bool,
    typer.Option(
        help="Audit the readable images when some cannot be decoded (listed in run.json"
        " and the report) instead of stopping with the list of them."
    ),
]
ProbsOption = Annotated[
    Path | None,
    typer.Option(
        help="Predictions made elsewhere (CSV: id + one column per class, or .npy in"
        " dataset order); skips training. They must be out-of-sample."
    ),
]
EmbeddingsOption = Annotated[
    Path | None,
    typer.Option(help="With --probs: embeddings (.npy, N x D, dataset order)."),
]
AgainstOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--against",
        help="Another dataset (e.g. the test set) to check for leaked copies; repeatable.",
    ),
]
SecondRoundOption = Annotated[
    Path | None,
    typer.Option(
        help="A finished scan of this dataset: train again on its labels with the ones its"
        " label evidence doubts flipped (a second round; twice the training)."
    ),
]
CellProbsOption = Annotated[
    Path | None,
    typer.Option(
        help="A cell-level model's out-of-sample predictions made elsewhere (CSV: id of"
        " the cell's image, optional cell name, one column per class; one row per cell;"
        " or an HPA single-cell challenge submission, ID + PredictionString): label"
        " evidence and cell findings without masks or cell training."
    ),
]
#: scan's options that are training settings, in the order they are passed on.
SCAN_SETTINGS = (
    "backbone",
    "epochs",
    "folds",
    "image_size",
    "batch_size",
    "lr",
    "seed",
    "weights",
    "mode",
    "device",
)


@app.command()
def scan(
    dataset: DatasetArgument = None,
    out: Annotated[Path, typer.Option("--out", help="The run directory.")] = DEFAULT_RUN,
    preset: PresetOption = "auto",
    layout: LayoutOption = None,
    labels: LabelsOption = None,
    images: ImagesOption = None,
    id_column: IdColumnOption = None,
    label_column: LabelColumnOption = None,
    sep: SepOption = None,
    backbone: BackboneOption = None,
    epochs: EpochsOption = None,
    folds: FoldsOption = None,
    image_size: ImageSizeOption = None,
    batch_size: BatchSizeOption = None,
    lr: LrOption = None,
    seed: SeedOption = None,
    weights: WeightsOption = None,
    mode: ModeOption = None,
    device: DeviceOption = None,
    fold: FoldOption = None,
    detectors: DetectorsOption = None,
    strict: ScanStrictOption = False,
    allow_rare: AllowRareOption = False,
    cache_dir: CacheDirOption = None,
    level: LevelOption = "field",
    masks: MasksOption = None,
    cell_size: CellSizeOption = None,
    quiet: ScanQuietOption = False,
    follow_symlinks: FollowSymlinksOption = False,
    max_pixels: MaxPixelsOption = None,
    force: ForceOption = False,
    skip_broken: SkipBrokenOption = False,
    probs: ProbsOption = None,
    embeddings: EmbeddingsOption = None,
    against: AgainstOption = None,
    second_round_of: SecondRoundOption = None,
    cell_probs: CellProbsOption = None,
) -> None:
    """Train cross-validated models, run the detectors, write the report."""
    options = dict(locals())  # every option by name: _run_scan sorts them
    _run_scan(options)


def _run_scan(options: dict[str, Any]) -> None:
    """:func:`labelaudit.scan` with the command line's options; print where things are."""
    from labelaudit.pipeline.scan import scan as run_scan

    overrides = {k: options.pop(k) for k in SCAN_SETTINGS}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if options.pop("strict"):
        overrides["strict"] = True
    del options["allow_rare"]  # deprecated no-op: rare classes are a warning unless --strict
    detectors = options.pop("detectors")
    names = [d.strip() for d in detectors.split(",") if d.strip()] if detectors else None
    _dataset_given(options["dataset"], options["labels"])
    quiet, fold = options.pop("quiet"), options["fold"]
    result = run_scan(
        options.pop("dataset"),
        options.pop("out"),
        detectors=names,
        console=Console(quiet=True) if quiet else console,
        against=options.pop("against") or (),
        **options,
        **overrides,
    )
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 speaks for the job
    if not result.complete:
        console.print(f"fold {fold} finished; run the scan again without --fold to merge")
    elif result.report_path is not None:
        console.print(f"report: {escape(str(result.report_path))}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for the dataset and run.")] = Path(
        "labelaudit-demo"
    ),
    n: Annotated[int, typer.Option("--n", help="Number of synthetic fields.")] = 400,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also print the full benchmark table.")
    ] = False,
) -> None:
    """Synthesise a dataset with known label errors, scan it and score the detectors."""
    from labelaudit.core.config import PRESETS
    from labelaudit.core.errors import SettingsError
    from labelaudit.core.io import write_text
    from labelaudit.pipeline.bench import bench, demo_summary, format_bench_table
    from labelaudit.pipeline.scan import scan as run_scan
    from labelaudit.rundir import BENCH_TABLE, ISSUES_CSV, RunDir, claim_demo_dir
    from labelaudit.synth.simulate import synthesize

    folds = PRESETS["demo"].folds
    if n < 2 * folds:  # checked before synthesising: demo has no --folds to lower
        raise SettingsError(f"demo: --n must be at least {2 * folds} (two per fold), got {n}")
    claim_demo_dir(out)  # the whole --out, before anything is written into it
    data = out / "dataset"
    if not (data / "train.csv").is_file():
        console.print(f"synthesising {n} fields into {escape(str(data))}")
        synthesize(data, n=n, size=128, noise_rate=0.15, fault_rate=0.05, seed=seed)
    # The report is written once, after bench, so it includes the detection scores.
    run_scan(data, out / "run", preset="demo", report=False, console=console)
    scores = bench(out / "run", data / "truth.csv")
    table = out / "run" / BENCH_TABLE
    write_text(table, format_bench_table(scores) + "\n")
    if verbose:
        console.print(format_bench_table(scores), markup=False)
    from labelaudit.report import write_report

    path = write_report(out / "run")
    issues = RunDir(out / "run").read_table(ISSUES_CSV)
    console.print("")
    console.print(demo_summary(scores, issues, path.resolve(), table.resolve()), markup=False)


@app.command()
def segment(
    dataset: Annotated[Path, typer.Argument(help="The dataset directory (only read).")],
    out: Annotated[Path, typer.Option("--out", help="Where masks and overlays go.")],
    compare: Annotated[
        Path | None, typer.Option(help="Masks made elsewhere to compare with (IoU, cells found).")
    ] = None,
    layout: LayoutOption = None,
    overlays: Annotated[bool, typer.Option(help="Write overlay pictures.")] = True,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes (default and at most: all cores).")
    ] = None,
    max_pixels: MaxPixelsOption = None,
) -> None:
    """Segment every field into cells: OUT/masks/{ID}_predictedmask.png and overlays."""
    from labelaudit.cells.dataset import format_comparison, segment_dataset
    from labelaudit.data.readers import DEFAULT_MAX_PIXELS

    with _broken_images_hint():
        summary = segment_dataset(
            dataset,
            out,
            layout=layout,
            compare=compare,
            workers=workers,
            overlays=overlays,
            max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
        )
    console.print(
        f"{summary['cells']} cells in {summary['fields']} fields "
        f"({summary['seconds_per_field']:.2f} s per field); "
        f"masks in {escape(str(Path(out) / 'masks'))}"
    )
    if compare is not None:
        console.print(format_comparison(summary))


@app.command("leaks")
def leaks_cmd(
    dataset_a: Annotated[Path, typer.Argument(help="The first dataset (e.g. train); only read.")],
    dataset_b: Annotated[Path, typer.Argument(help="The second dataset (e.g. test); only read.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the matching pairs to this CSV.")
    ] = None,
    layout: LayoutOption = None,
    min_correlation: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Floor of a near copy's aligned pixel correlation (the data may raise it).",
        ),
    ] = 0.75,
) -> None:
    """List images of DATASET_B that also appear in DATASET_A (identical or near copies)."""
    from labelaudit.pipeline.leaks import find_leaks

    res = find_leaks(
        dataset_a,
        dataset_b,
        out=out,
        layout=layout,
        min_correlation=min_correlation,
        on_cache=lambda line: console.print(line, markup=False),
    )
    for row in res.pairs.head(50).itertuples(index=False):
        console.print(
            f"{row.id_b} = {row.id_a} ({row.evidence}, correlation {row.correlation:.3f}, "
            f"phash distance {row.phash_distance})",
            markup=False,
        )
    if len(res.pairs) > 50:
        console.print(f"... {len(res.pairs) - 50} more pairs", markup=False)
    where = f"; pairs in {escape(str(out))}" if out is not None else ""
    console.print(
        f"{res.n_leaked} of {res.n_b} images of {escape(str(dataset_b))} also appear in "
        f"{escape(str(dataset_a))} ({len(res.pairs)} pairs){where}"
    )


@app.command("bench")
def bench_cmd(
    run: Annotated[Path, typer.Argument(help="The run directory.")],
    truth: Annotated[Path, typer.Option("--truth", help="truth.csv written by synth.")],
) -> None:
    """Score each detector against a ground-truth file; writes RUN/bench.json."""
    from labelaudit.pipeline.bench import bench, format_bench_table

    console.print(format_bench_table(bench(run, truth)), markup=False)


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="The run directory.")] = DEFAULT_RUN,
    open_: Annotated[bool, typer.Option("--open", help="Open it in the browser.")] = False,
    max_thumbnails: Annotated[int, typer.Option(min=0, help="Images with a thumbnail.")] = 300,
) -> None:
    """Write RUN/report.html from the run directory (no training)."""
    from labelaudit.report import write_report

    path = write_report(run, max_thumbnails=max_thumbnails, open_browser=open_)
    console.print(f"report: {escape(str(path))}")


@app.command("clean")
def clean_cmd(
    run: Annotated[Path, typer.Argument(help="The run directory.")] = DEFAULT_RUN,
    policy: Annotated[
        str | None,
        typer.Option(
            help="relabel-soft (default), soft, drop-labels, relabel, consensus-drop, "
            "intensity or none (docs/cleaning.md). With --decisions and no --policy, "
            "only the decisions change anything."
        ),
    ] = None,
    decisions: Annotated[
        Path | None, typer.Option(help="Decisions CSV exported from the report.")
    ] = None,
) -> None:
    """Write RUN/cleaned/ (a dataset in the input's layout) and RUN/changes.csv."""
    from labelaudit.pipeline.clean import clean
    from labelaudit.rundir import ISSUES_CSV

    result = clean(run, policy=policy, decisions=decisions)
    actions = result.changes["action"].value_counts().to_dict() if len(result.changes) else {}
    console.print(
        f"cleaned dataset: {escape(str(result.cleaned_dir))} ({result.policy}"
        f"{' + decisions' if decisions is not None else ''}; "
        f"{actions.get('remove', 0)} removed, {actions.get('relabel', 0)} relabelled; "
        f"see {escape(str(result.changes_file))})"
    )
    if (run / ISSUES_CSV).is_file():
        _refresh_report(run)


@app.command("retrain")
def retrain_cmd(
    run: Annotated[Path, typer.Option("--run", help="The run directory.")] = DEFAULT_RUN,
    clean: Annotated[bool, typer.Option("--clean/--no-clean", help="Train on RUN/cleaned.")] = True,
    class_weights: Annotated[str, typer.Option(help="none, method (1 - n_k/N) or pos.")] = (
        "method"
    ),
    truth: Annotated[Path | None, typer.Option(help="truth.csv of a synthetic dataset.")] = None,
    policy: Annotated[str | None, typer.Option(help="Cleaning policy.")] = None,
    decisions: Annotated[Path | None, typer.Option(help="Decisions CSV.")] = None,
    preset: Annotated[str | None, typer.Option(help="Training preset (default: the scan's).")] = (
        None
    ),
    epochs: Annotated[int | None, typer.Option(help="Epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    members: Annotated[
        int | None,
        typer.Option(help="Models per side, averaged (default: 3 below 2,000 training images)."),
    ] = None,
) -> None:
    """Retrain on the cleaned labels with class weights; compare with the original labels."""
    from labelaudit.pipeline.retrain import retrain, summary_lines

    overrides = {k: v for k, v in dict(epochs=epochs, seed=seed).items() if v is not None}
    metrics = retrain(
        run,
        clean=clean,
        members=members,
        class_weights=class_weights,
        truth=truth,
        policy=policy,
        decisions=decisions,
        preset=preset,
        console=console,
        **overrides,
    )
    for line in summary_lines(metrics):
        console.print(line, markup=False)
    _refresh_report(run)


@contextlib.contextmanager
def _broken_images_hint() -> Iterator[None]:
    """Unreadable images, with advice for a command that cannot skip them (not scan's)."""
    from labelaudit.data.cache import BrokenImages

    try:
        yield
    except BrokenImages as exc:
        raise BrokenImages(exc.broken, hint="fix or remove them and run again") from None


def _refresh_report(run: Path) -> None:
    """Re-render RUN/report.html so it shows what a command just added.

    When the file system fails it (a full disk), the old report would contradict
    ``run.json``, which already records the command: it is removed, and the message
    says how to write it again. A user error (another process holding the run) is
    left as it is: that process may be writing the report.
    """
    from labelaudit.core.userfiles import remove_entry
    from labelaudit.report import write_report
    from labelaudit.rundir import REPORT_HTML

    try:
        path = write_report(run)
    except OSError as exc:
        reason = _file_system_message(exc)
        if reason is None:
            raise
        with contextlib.suppress(OSError, LabelAuditError):
            remove_entry(run, REPORT_HTML)  # stale now: run.json records the change
        raise RunDirError(
            f"the report could not be updated ({reason}); the out-of-date report.html was "
            f"removed: run `labelaudit report {run}` once the cause is fixed"
        ) from None
    console.print(f"report: {escape(str(path))}")


@app.command("predict")
def predict_cmd(
    model: Annotated[Path, typer.Argument(help="RUN/retrain/model.pt.")],
    data: Annotated[Path, typer.Argument(help="A dataset or a folder of fields.")],
    out: Annotated[Path, typer.Option("--out", help="Output CSV.")] = Path("predictions.csv"),
    layout: LayoutOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    max_pixels: MaxPixelsOption = None,
) -> None:
    """Label new images with a retrained model; writes probabilities and label sets."""
    from labelaudit.data.readers import DEFAULT_MAX_PIXELS
    from labelaudit.tools.predict import predict

    with _broken_images_hint():
        frame = predict(
            model,
            data,
            out,
            layout=layout,
            device=device,
            max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
        )
    console.print(f"predicted {len(frame)} images into {escape(str(out))}")


SweepOutOption = Annotated[Path, typer.Option("--out", help="The sweep directory.")]
BackbonesOption = Annotated[
    str | None,
    typer.Option(help="Comma-separated timm backbones, e.g. resnet50,efficientnet_b0."),
]
LrsOption = Annotated[
    str | None, typer.Option(help="Comma-separated learning rates, e.g. 0.01,0.001.")
]
ActivationsOption = Annotated[
    str | None, typer.Option(help="Comma-separated output activations: sigmoid,relu,tanh.")
]
OneAtATimeOption = Annotated[
    bool, typer.Option(help="Vary one setting at a time around the base (the method's design).")
]
SweepFoldsOption = Annotated[int | None, typer.Option(help="K-fold cross-validation with this K.")]
HoldoutOption = Annotated[
    float | None, typer.Option(help="One stratified hold-out of this fraction instead.")
]
PretrainedOption = Annotated[
    bool | None, typer.Option("--pretrained/--no-pretrained", help="ImageNet weights.")
]
SweepStrictOption = Annotated[
    bool,
    typer.Option(help="Stop when a class has fewer images than folds (default: a warning)."),
]
KeepModelsOption = Annotated[bool, typer.Option(help="Keep every fold's model.pt.")]
SweepQuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only the tables and the page's path.")
]


@app.command("sweep")
def sweep_cmd(
    dataset: DatasetArgument = None,
    out: SweepOutOption = Path("labelaudit-sweep"),
    backbones: BackbonesOption = None,
    lrs: LrsOption = None,
    activations: ActivationsOption = None,
    one_at_a_time: OneAtATimeOption = False,
    folds: SweepFoldsOption = None,
    holdout: HoldoutOption = None,
    preset: PresetOption = "auto",
    layout: LayoutOption = None,
    labels: LabelsOption = None,
    images: ImagesOption = None,
    id_column: IdColumnOption = None,
    label_column: LabelColumnOption = None,
    sep: SepOption = None,
    epochs: EpochsOption = None,
    image_size: ImageSizeOption = None,
    batch_size: BatchSizeOption = None,
    seed: SeedOption = None,
    pretrained: PretrainedOption = None,
    device: DeviceOption = None,
    strict: SweepStrictOption = False,
    allow_rare: AllowRareOption = False,
    keep_models: KeepModelsOption = False,
    cache_dir: CacheDirOption = None,
    quiet: SweepQuietOption = False,
) -> None:
    """Compare backbones, learning rates and output activations: the method's tables."""
    from labelaudit.tools.sweep import sweep

    overrides: dict[str, Any] = dict(
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        seed=seed,
        pretrained=pretrained,
        device=device,
        strict=True if strict else None,
    )
    del allow_rare  # deprecated no-op
    _dataset_given(dataset, labels)
    source: Path | Dataset
    if sep is not None or any(v is not None for v in (labels, images, id_column, label_column)):
        from labelaudit.data.layouts import load_dataset

        source = load_dataset(  # any layout
            dataset,
            layout,
            sep=sep,
            labels=labels,
            images=images,
            id_column=id_column,
            label_column=label_column,
        )
    else:
        assert dataset is not None  # no --labels, so _dataset_given saw a DATASET
        source = dataset
    result = sweep(
        source,
        out,
        backbones=backbones,
        lrs=lrs,
        activations=activations,
        one_at_a_time=one_at_a_time,
        folds=folds,
        holdout=holdout,
        preset=preset,
        layout=layout,
        cache_dir=cache_dir,
        keep_models=keep_models,
        console=Console(quiet=True) if quiet else console,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    console.print(result.markdown, markup=False)
    if result.html is not None:
        console.print(f"sweep page: {escape(str(result.html))}")


#: Failures of the file system a user can fix (a read-only or full disk, permissions).
_FILE_SYSTEM_ERRORS = {
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "a directory stands where this file goes",
    errno.ENOTEMPTY: "a directory stands where this file goes",
}


def _file_system_message(exc: OSError) -> str | None:
    """One line for a file-system failure the user can fix (``None``: not one of those)."""
    reason = _FILE_SYSTEM_ERRORS.get(exc.errno) if exc.errno is not None else None
    if reason is None:
        return None
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some space and run again (finished work is reused)"
    elif exc.errno in (errno.EISDIR, errno.ENOTEMPTY):  # not labelaudit's: never removed
        advice = "move it away (labelaudit writes files there, it does not delete folders)"
    else:
        advice = "choose a writable --out (or --cache-dir) and run again"
    return f"cannot write{where}: {reason}; {advice}"


def _print_error(exc: LabelAuditError) -> None:
    """``error: message`` on stderr: markup escaped, no emoji codes, not wrapped."""
    err_console.print(f"[red]error:[/] {escape(str(exc))}")


def _print_usage_error(exc: _ClickError) -> None:
    """A bad command line in one line (``error: ... (see `labelaudit scan --help`)``)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `labelaudit` alone: show the help
        exc.show()
        return
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    err_console.print(f"[red]error:[/] {escape(message + hint)}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``labelaudit`` console script.

    Exit status: 0 success, 2 a user error (one line), 130 interrupted (Ctrl-C or
    SIGTERM; one line), 1 an internal failure.
    """
    interrupts = Interrupts()
    interrupts.install()
    try:
        try:
            # Not standalone: click's usage errors come back here, to print in one line.
            code = app(args=argv, prog_name="labelaudit", standalone_mode=False)
        except ClickException as exc:
            if interrupts.raised:
                raise KeyboardInterrupt from None
            usage = cast(_ClickError, exc)  # typer's vendored click: no type to import
            _print_usage_error(usage)
            sys.exit(usage.exit_code)
        except typer.Abort:  # end of input at a prompt
            err_console.print("error: aborted", markup=False)
            sys.exit(1)
        except LabelAuditError as exc:
            if interrupts.raised:  # an error caused by the interrupt's unwinding
                raise KeyboardInterrupt from None
            _print_error(exc)
            sys.exit(exc.exit_code)
        except OSError as exc:
            if interrupts.raised:
                raise KeyboardInterrupt from None
            message = _file_system_message(exc)
            if message is None:
                raise
            err_console.print(f"[red]error:[/] {escape(message)}")
            sys.exit(2)
        # typer turns a KeyboardInterrupt inside the command into Exit(130), returned here
        if code == INTERRUPT_STATUS or interrupts.raised:
            raise KeyboardInterrupt
        if isinstance(code, int) and not isinstance(code, bool) and code:
            sys.exit(code)  # typer.Exit(2) from a command (e.g. check finding problems)
    except KeyboardInterrupt:
        interrupts.report()
        sys.exit(INTERRUPT_STATUS)
    finally:
        # A Python caller (argv given) gets its handlers back; the console script keeps
        # them while the interpreter exits, so a late signal cannot print a traceback.
        if argv is not None:
            interrupts.restore()
