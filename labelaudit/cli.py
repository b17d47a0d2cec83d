"""The ``labelaudit`` command line: parse arguments, call the library, map errors.

Known user errors (:class:`~labelaudit.errors.LabelAuditError`) print one line and
exit with status 2; usage errors exit 2 as well (click's convention); anything
else is an internal failure and exits 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labelaudit.errors import LabelAuditError

app = typer.Typer(
    name="labelaudit",
    help="Audit the labels of multi-label microscope image datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

LayoutOption = Annotated[
    str | None,
    typer.Option("--layout", help="hpa2021, hpa2018 or generic (detected when omitted)."),
]


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
    for w in summary["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    for e in summary["errors"]:
        console.print(f"[red]problem:[/] {escape(e)}")
    n = len(summary["errors"])
    console.print("[green]no problems found[/]" if n == 0 else f"[red]{n} problem(s) found[/]")


@app.command()
def check(
    dataset: Annotated[Path, typer.Argument(help="The dataset directory.")],
    layout: LayoutOption = None,
    deep: Annotated[
        bool, typer.Option(help="Decode every image fully (finds truncated files).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Validate a dataset and print a summary; exit 2 when problems are found."""
    from labelaudit.data.check import check_dataset

    report = check_dataset(dataset, layout, deep=deep)
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
) -> None:
    """Write a synthetic HPA-layout dataset with known injected problems (truth.csv)."""
    from labelaudit.data.synth import synthesize

    truth = synthesize(out, n=n, size=size, noise_rate=noise_rate, fault_rate=fault_rate, seed=seed)
    noisy = int((truth["noise"] != "none").sum())
    console.print(
        f"wrote {len(truth)} fields to {escape(str(out))} ({noisy} with injected problems;"
        f" truth in {escape(str(Path(out) / 'truth.csv'))})"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``labelaudit`` console script."""
    try:
        app(args=argv, prog_name="labelaudit")
    except LabelAuditError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
