"""Render ``RUN/sweep.html``: the sweep's tables and figures, one self-contained page.

Same style and safety rules as the report (``labelaudit.report``): the report's
CSS, plotly.js inlined once, figures embedded as escaped JSON and drawn by a few
lines of the page's own JavaScript (``sweep.js``), a ``default-src 'none'``
content security policy, nothing fetched. Everything is read back from the sweep
directory, so the page can be rewritten without training.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from labelaudit.core.errors import RunDirError
from labelaudit.core.io import read_json, write_text
from labelaudit.report.render import template_environment
from labelaudit.tools.sweep.plan import (
    AXES,
    AXIS_TITLES,
    RESULT_NAME,
    Config,
    EvaluationScheme,
    format_value,
)
from labelaudit.tools.sweep.scores import SCORES, sweep_tables

PAGE_NAME = "sweep.html"

#: How each output activation is trained and thresholded (shown on the page).
ACTIVATION_NOTES: dict[str, str] = {
    "sigmoid": "binary cross-entropy on the logits; probability >= 0.5 predicts the label "
    "(the method's head).",
    "relu": "ReLU outputs trained with Keras' binary_crossentropy, as the method's Keras code "
    "did: outputs clipped to [1e-7, 1 - 1e-7], then -(y log(p + 1e-7) + (1 - y) "
    "log(1 - p + 1e-7)); output >= 0.5 predicts the label. The clip passes no gradient "
    "outside [0, 1]: an output above 1 stays 'positive' whatever the label, one below 0 "
    "stays 'negative'.",
    "tanh": "Tanh outputs trained like ReLU (Keras' clipped binary cross-entropy, threshold "
    "0.5); outputs below 0 get no gradient, so a class pushed negative cannot come back.",
}


def _source(name: str, closing: str) -> Markup:
    env = template_environment()
    assert env.loader is not None
    text = env.loader.get_source(env, name)[0]
    return Markup(text.replace(f"</{closing}", f"<\\/{closing}"))


def _read_runs(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    dtypes = {"config": str, "backbone": str, "activation": str}
    runs = pd.read_csv(run_dir / "sweep_runs.csv", dtype=dtypes)
    for col in ("average", "missed_classes", "status", "best_epochs", "epochs_run", "weights"):
        if col in runs:
            runs[col] = runs[col].fillna("").astype(str)
    curves_path = run_dir / "sweep_curves.csv"
    curves = (
        pd.read_csv(curves_path, dtype=dtypes)
        if curves_path.is_file()
        else pd.DataFrame(columns=["config", *AXES, "fold", "epoch"])
    )
    for frame in (runs, curves):
        if "lr" in frame:
            frame["lr"] = pd.to_numeric(frame["lr"], errors="coerce")
    return runs, curves


def _mean_curves(curves: pd.DataFrame, config: str) -> pd.DataFrame:
    part = curves[curves["config"] == config]
    cols = [c for c in ("train_loss", "held_out_loss") if c in part]
    return part.groupby("epoch", as_index=False)[cols].mean()


def _curve_figure(curves: pd.DataFrame, configs: list[tuple[str, str]], title: str):
    from labelaudit.report import figures as fg

    frames = {label: _mean_curves(curves, name) for name, label in configs}
    frames = {k: v for k, v in frames.items() if len(v)}
    if not frames:
        return None
    fig = fg.learning_curves(frames)
    fig.update_layout(title=fg.esc(title))
    if max(len(f) for f in frames.values()) <= 20:
        fig.update_xaxes(dtick=1)  # whole epochs
    return fig


def _per_class(run_dir: Path, runs: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    rows = {}
    for name in runs["config"]:
        path = run_dir / "runs" / name / RESULT_NAME
        if not path.is_file():
            continue
        per = {p["class"]: p["f1"] for p in read_json(path).get("per_class", [])}
        rows[name] = [per.get(c, np.nan) for c in class_names]
    return pd.DataFrame.from_dict(rows, orient="index", columns=class_names)


def _fmt(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, float | np.floating):
        return "" if not np.isfinite(v) else f"{v:.3f}"
    return str(v)


def _table(frame: pd.DataFrame) -> dict[str, Any]:
    numeric = [pd.api.types.is_float_dtype(frame[c]) for c in frame.columns]
    return {
        "columns": [(str(c), num) for c, num in zip(frame.columns, numeric, strict=True)],
        "rows": [[(_fmt(v), num) for v, num in zip(row, numeric, strict=True)] for row in
                 frame.itertuples(index=False)],
    }  # fmt: skip


def _axis_section(
    axis: str, table: pd.DataFrame, plan: dict, runs: pd.DataFrame, curves: pd.DataFrame, figs
) -> dict[str, Any]:
    """One axis: its table, bars of the scores and the learning curves of its values."""
    from labelaudit.report import figures as fg

    base = Config(**{a: plan["base"][a] for a in AXES})
    fixed = [(AXIS_TITLES[a].lower(), format_value(a, base.value(a))) for a in AXES if a != axis]
    figures = []
    if len(table):
        bars = table.set_index(AXIS_TITLES[axis])[["F1", "Recall", "Precision"]]
        figures.append(figs.add(f"bars-{axis}", fg.grouped_bars(bars, AXIS_TITLES[axis], (0, 1))))
    members = []
    for value in plan["axes"][axis]:
        c = Config(**{**{a: base.value(a) for a in AXES}, axis: value})
        if c.name in set(runs["config"]):
            members.append((c.name, format_value(axis, value)))
    curve = _curve_figure(curves, members, f"Learning curves: {AXIS_TITLES[axis].lower()}")
    if curve is not None:
        figures.append(figs.add(f"curves-{axis}", curve))
    return {
        "id": f"axis-{axis}",
        "axis": axis,
        "title": AXIS_TITLES[axis],
        "fixed": fixed,
        "table": _table(table),
        "figs": figures,
    }


def _grid_figure(plan: dict, runs: pd.DataFrame, base: Config, figs) -> Any:
    """F1 over the first two varied axes of a grid (the others at their base values)."""
    from labelaudit.report import figures as fg

    varied = plan.get("varied", [])
    if plan.get("mode") != "grid" or len(varied) < 2:
        return None
    a, b = varied[:2]
    others = {x: base.value(x) for x in AXES if x not in (a, b)}
    part = runs
    for x, v in others.items():
        part = part[part[x] == v]
    pivot = part.pivot_table(index=a, columns=b, values="f1", aggfunc="first")
    pivot.index = [format_value(a, v) for v in pivot.index]
    pivot.columns = [format_value(b, v) for v in pivot.columns]
    title = f"F1: {AXIS_TITLES[a].lower()} x {AXIS_TITLES[b].lower()}"
    return figs.add("grid", fg.score_heatmap(pivot, title))


def _facts(
    plan: dict, runs: pd.DataFrame, split: EvaluationScheme, base: Config
) -> list[tuple[str, str]]:
    """The page's header: dataset, evaluation, design and timings."""
    facts = [
        ("dataset", plan["dataset"]["path"]),
        ("images", f"{plan['dataset']['n_images']:,}"),
        ("classes", str(plan["dataset"]["n_classes"])),
        ("evaluation", split.describe()),
        ("images scored", f"{int(runs['n_scored'].max()) if len(runs) else 0:,} per configuration"),
        ("design", "one axis at a time around the base" if plan["mode"] != "grid" else "grid"),
        ("base", base.label()),
        ("configurations", f"{len(runs)} of {len(plan['configs'])} scored"),
    ]
    timings = plan.get("timings", {})
    if timings:
        facts.append(("training time", f"{timings.get('train_s', 0):.0f} s"))
        facts.append(("wall time (this call)", f"{timings.get('total_s', 0):.0f} s"))
    return facts


def build_context(run_dir: Path) -> dict[str, Any]:
    """Everything the template shows, read from the sweep directory."""
    from labelaudit.report import figures as fg
    from labelaudit.report.render import Figures, script_json

    plan = read_json(run_dir / "sweep.json")
    runs, curves = _read_runs(run_dir)
    base = Config(**{a: plan["base"][a] for a in AXES})
    axes = {a: list(plan["axes"][a]) for a in AXES}
    split = EvaluationScheme(folds=plan["split"]["folds"], holdout=plan["split"]["holdout"])
    figs = Figures()
    sections = [
        _axis_section(axis, table, plan, runs, curves, figs)
        for axis, table in sweep_tables(runs, axes, base).items()
    ]
    grid_fig = _grid_figure(plan, runs, base, figs)
    per_class = _per_class(run_dir, runs, plan["dataset"]["class_names"])
    class_fig = None
    if len(per_class):
        class_fig = figs.add(
            "per-class", fg.score_heatmap(per_class, "Per-class F1 of every configuration")
        )
    shown = [
        "config", *AXES, "status", *SCORES, "average", "all_classes_hit", "classes_hit",
        "macro_f1", "macro_ap", "diverged", "epochs_run", "train_seconds",
    ]  # fmt: skip
    all_runs = runs[[c for c in shown if c in runs.columns]].copy()
    all_runs["lr"] = [format_value("lr", v) for v in all_runs["lr"]]
    activations = [a for a in axes["activation"] if a in ACTIVATION_NOTES]
    settings = [(k, _fmt(v)) for k, v in plan.get("settings", {}).items() if k not in AXES]
    return {
        "facts": _facts(plan, runs, split, base),
        "sections": sections,
        "grid_fig": grid_fig,
        "class_fig": class_fig,
        "all_runs": _table(all_runs),
        "activation_notes": [(a, ACTIVATION_NOTES[a]) for a in activations],
        "settings": settings,
        "versions": [(k, str(v)) for k, v in plan.get("versions", {}).items()],
        "template_json": script_json(figs.template),
        "figures": figs.items,
        "complete": bool(plan.get("complete")),
    }


def render_sweep_html(run_dir: str | Path) -> str:
    """The sweep page of ``run_dir`` as a string."""
    from plotly.offline import get_plotlyjs

    run_dir = Path(run_dir)
    ctx = build_context(run_dir)
    return (
        template_environment()
        .get_template("sweep.html.j2")
        .render(
            **ctx,
            plotly_js=Markup(get_plotlyjs().replace("</script", "<\\/script")),
            page_css=_source("report.css", "style") + _source("sweep.css", "style"),
            page_js=_source("sweep.js", "script"),
            run_dir=str(run_dir),
            generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            title=f"labelaudit sweep: {run_dir.resolve().name}",
        )
    )


def write_sweep_html(run_dir: str | Path) -> Path:
    """Write ``RUN/sweep.html`` from the files of a sweep directory.

    Raises
    ------
    RunDirError
        ``run_dir`` has no ``sweep.json`` or ``sweep_runs.csv``.
    """
    run_dir = Path(run_dir)
    for name in ("sweep.json", "sweep_runs.csv"):
        if not (run_dir / name).is_file():
            raise RunDirError(
                f"{run_dir}: not a sweep directory (no {name}); run `labelaudit sweep` first"
            )
    out = run_dir / PAGE_NAME
    write_text(out, render_sweep_html(run_dir))
    return out
