"""Render ``RUN/report.html``: one self-contained, offline HTML file.

plotly.js is inlined once; each figure is embedded as JSON in a
``<script type="application/json">`` element and drawn by ``Plotly.newPlot``; the
issue table's data, thumbnails and detail tiles are embedded the same way and
rendered by the page's own vanilla JavaScript (``report.js``) with ``textContent``
only. JSON embedded in the page has ``<``, ``>`` and ``&`` escaped as ``\\u003c``
etc., so no string can close the script element (:mod:`labelaudit.report.pagejson`).

The page is the registered sections in order (:mod:`labelaudit.report.sections`);
the issue table's rows are named records (:mod:`labelaudit.report.table`).
"""

from __future__ import annotations

import functools
import webbrowser
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from labelaudit.core.digest import short_digest
from labelaudit.core.io import write_text
from labelaudit.data.roles import exclusive_classes, exclusive_indices
from labelaudit.report import analysis as an
from labelaudit.report.artifacts import RunArtifacts, load_run
from labelaudit.report.pagejson import Figures, script_json
from labelaudit.report.sections import (
    SECTIONS,
    ReportState,
    bench_table,
    bench_tables,
    build_sections,
    run_versions,
)
from labelaudit.report.table import TableRow, out_of_fold_permille, table_rows

REPORT_NAME = "report.html"


# ----------------------------------------------------------------------- context


def _issue_table(
    art: RunArtifacts, methods: list[str]
) -> tuple[Any, list[an.ScoreColumn], list[TableRow], np.ndarray]:
    """``issues.csv`` ranked, its score columns, the table's rows and each image's row.

    An ``issues.csv`` the rows cannot be built from is noted as unusable and the
    images are listed without detector results.
    """
    ranked = an.consensus_order(art.issues) if art.issues is not None else None
    if ranked is not None and ranked.empty:
        art.note_missing("issues.csv", "issues.csv has no rows")
        ranked = None
    cols = an.score_columns(ranked) if ranked is not None else []
    if not (art.n_images > 0 and art.given is not None):
        return ranked, cols, [], np.full(art.n_images, -1, dtype=np.int64)
    try:
        rows, row_of = table_rows(art, ranked, cols, methods)
    except (ValueError, TypeError, KeyError, IndexError) as exc:  # a malformed issues.csv
        art.note_missing("issues.csv", f"issues.csv cannot be used ({exc})")
        ranked, cols = None, []
        rows, row_of = table_rows(art, None, [], [])
    return ranked, cols, rows, row_of


def _page_data(state: ReportState, threshold: float) -> dict[str, Any]:
    """The table's data for ``report.js``: rows as named records, images, probabilities."""
    art = state.art
    run_key = short_digest(
        f"{art.run_dir.resolve()}|{art.section('dataset').get('fingerprint', '')}".encode(), 16
    )
    return {
        "runKey": run_key,
        "runName": art.run_dir.resolve().name,
        "classes": art.class_names,
        "tokens": art.class_tokens,
        "sep": art.label_sep,
        "channels": art.channels,
        "stains": an.stain_captions(art.section("dataset")),
        "exclusive": exclusive_indices(
            art.class_names, exclusive_classes(art.section("dataset"))
        ).tolist(),
        "methods": state.methods,
        "scores": [
            {"key": c.key, "label": c.label, "method": c.method, "worse": c.higher_is_worse}
            for c in state.cols
        ],
        "threshold": threshold,
        "rows": [row.record() for row in state.rows],
        "probs": out_of_fold_permille(art, state.rows),
        "thumbs": state.thumbs,
        "details": state.details,
    }


def build_context(
    art: RunArtifacts,
    *,
    max_thumbnails: int = 300,
    max_details: int = 100,
    lenient: bool | None = None,
) -> dict[str, Any]:
    """Everything the template needs (figures as JSON, the table's data, section texts).

    Each registered section (:data:`labelaudit.report.sections.SECTIONS`) is built in
    order; a section that raises fails the report unless ``lenient`` (``None``: the
    ``LABELAUDIT_REPORT_LENIENT`` environment variable) turns it into a message.
    """
    methods = an.methods_of(art)
    ranked, cols, rows, row_of = _issue_table(art, methods)
    state = ReportState(
        art, Figures(), methods, ranked, cols, rows, row_of, max_thumbnails, max_details
    )
    built = build_sections(state, lenient)
    ctx: dict[str, Any] = {"missing": art.missing, "methods": methods, **built}
    ctx["sections"] = list(SECTIONS.values())
    ctx["section_data"] = built
    ctx["data"] = script_json(_page_data(state, built["model"].get("threshold", 0.5)))
    ctx["template_json"] = script_json(state.figs.template)
    ctx["figures"] = state.figs.items
    return ctx


# ------------------------------------------------------------------------ render


@functools.lru_cache(maxsize=1)
def template_environment():
    """The jinja2 environment of the packaged templates (autoescaping, strict)."""
    import jinja2

    from labelaudit.report.loader import template_loader

    return jinja2.Environment(
        loader=template_loader(),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(art: RunArtifacts, **kwargs: Any) -> str:
    """The report page of ``art`` as a string (see :func:`write_report_unlocked` for arguments)."""
    from plotly.offline import get_plotlyjs

    ctx = build_context(art, **kwargs)
    plotly_js = get_plotlyjs().replace("</script", "<\\/script")
    env = template_environment()
    assert env.loader is not None
    page_css = env.loader.get_source(env, "report.css")[0].replace("</style", "<\\/style")
    page_js = env.loader.get_source(env, "report.js")[0].replace("</script", "<\\/script")
    return env.get_template("report.html.j2").render(
        **ctx,
        plotly_js=Markup(plotly_js),
        page_css=Markup(page_css),
        page_js=Markup(page_js),
        run_dir=str(art.run_dir),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        title=f"labelaudit report: {art.run_dir.resolve().name}",
    )


def write_report_unlocked(
    run_dir: str | Path,
    *,
    max_thumbnails: int = 300,
    max_details: int = 100,
    open_browser: bool = False,
    lenient: bool | None = None,
) -> Path:
    """Write ``RUN/report.html`` from the artifacts in ``run_dir``, without the run's lock.

    :func:`labelaudit.report.write_report` is the same holding the lock (the public one).

    Parameters
    ----------
    run_dir
        A run directory (needs ``run.json``; every other artifact is optional and
        its section says how to produce it when missing).
    max_thumbnails
        Composite thumbnails are embedded for this many images, the most suspicious
        first by consensus; the rest are table rows without a picture.
    max_details
        Of those, this many also embed the per-channel detail tile (the large view).
    open_browser
        Open the written report in the default browser.
    lenient
        ``True``: a section that fails shows "This section could not be built"
        instead of failing the report; ``None`` reads ``LABELAUDIT_REPORT_LENIENT``.

    Returns
    -------
    Path
        The report's path.

    Raises
    ------
    RunDirError
        ``run_dir`` has no readable ``run.json``.
    Exception
        A section failed (not lenient); the error names the section.
    """
    run_dir = Path(run_dir)
    art = load_run(run_dir)
    page = render_html(art, max_thumbnails=max_thumbnails, max_details=max_details, lenient=lenient)
    out = run_dir / REPORT_NAME
    write_text(out, page)
    if open_browser:
        webbrowser.open(out.resolve().as_uri())
    return out


__all__ = [
    "Figures",
    "bench_table",
    "bench_tables",
    "build_context",
    "render_html",
    "run_versions",
    "script_json",
    "template_environment",
    "write_report_unlocked",
]
