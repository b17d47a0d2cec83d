"""Render ``RUN/report.html``: one self-contained, offline HTML file.

plotly.js is inlined once; each figure is embedded as JSON in a
``<script type="application/json">`` element and drawn by ``Plotly.newPlot``; the
issue table's data, thumbnails and detail tiles are embedded the same way and
rendered by the page's own vanilla JavaScript (``report.js``) with ``textContent``
only. JSON embedded in the page has ``<``, ``>`` and ``&`` escaped as ``\\u003c``
etc., so no string can close the script element.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import webbrowser
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from labelaudit.io import write_text
from labelaudit.report import analysis as an
from labelaudit.report import figures as fg
from labelaudit.report.artifacts import RunArtifacts, load_run
from labelaudit.report.images import collect_field_images

REPORT_NAME = "report.html"


# -------------------------------------------------------------------------- JSON


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def script_json(text_or_obj: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>``, ``&`` escaped."""
    text = (
        text_or_obj
        if isinstance(text_or_obj, str)
        else json.dumps(text_or_obj, default=_plain, separators=(",", ":"), allow_nan=False)
    )
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    return obj


class Figures:
    """Collects the page's figures as JSON, with the shared template stored once."""

    def __init__(self) -> None:
        self.template = fg.page_template()
        self.items: list[dict[str, Any]] = []

    def add(self, name: str, fig: Any, role: str = "") -> dict[str, Any]:
        spec = json.loads(fig.to_json())
        spec.setdefault("layout", {}).pop("template", None)
        item = {
            "id": f"fig-{name}",
            "json": script_json(json.dumps(_finite(spec), separators=(",", ":"))),
            "role": role,
        }
        self.items.append(item)
        return item


# ----------------------------------------------------------------------- sections


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def _flatten(d: dict[str, Any], prefix: str = "", depth: int = 2) -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth > 0 and v:
            out += _flatten(v, key + ".", depth - 1)
        elif isinstance(v, list) and len(v) > 20:
            out.append((key, f"[{len(v)} values]"))
        else:
            out.append((key, _fmt(v)))
    return out


def _summary(art: RunArtifacts, issues: pd.DataFrame | None, methods: list[str]) -> dict:
    ds, detect, compare, train = (
        art.section("dataset"),
        art.section("detect"),
        art.section("compare"),
        art.section("train"),
    )
    facts: list[tuple[str, str]] = []
    if ds:
        facts += [
            ("dataset", str(ds.get("path", "?"))),
            ("layout", str(ds.get("layout", "?"))),
            ("images", f"{art.n_images:,}"),
            ("classes", str(art.n_classes)),
            ("channels", ", ".join(art.channels)),
            ("fingerprint", str(ds.get("fingerprint", "?"))),
        ]
    if art.given is not None and art.n_images:
        per = an.labels_per_image(art.given)
        dist = ", ".join(f"{k}: {v:,}" for k, v in per.items())
        facts.append(("labels per image", f"mean {art.given.sum(1).mean():.2f} ({dist})"))
    health = _dict(_dict(_dict(detect.get("detectors")).get("confident")).get("summary"))
    health = health.get("health")
    if isinstance(health, int | float):
        facts.append(("label health (cleanlab)", f"{health:.3f}"))
    if issues is not None and len(issues) and "consensus_flag" in issues:
        flagged = issues["consensus_flag"].astype(str).str.lower().isin(["true", "1"])
        k = compare.get("min_methods", 2)
        facts.append(
            (
                "health score",
                f"{1 - flagged.mean():.1%} of images have no consensus problem "
                f"({int(flagged.sum()):,} flagged by at least {k} detectors)",
            )
        )
    problems = []
    det = _dict(detect.get("detectors"))
    flags = an.method_flags(issues, methods) if issues is not None else {}
    for m in methods:
        n = _dict(det.get(m)).get("n_flagged_images")
        if n is None and m in flags:
            n = int(flags[m].sum())
        problems.append((m, "ran", _count(n)))
    for m, info in _dict(detect.get("skipped")).items():
        problems.append((m, "skipped", str(_dict(info).get("reason", ""))))
    if "n_consensus_flagged" in compare:
        problems.append(
            (
                f"consensus (>= {compare.get('min_methods', 2)} detectors)",
                "",
                _count(compare["n_consensus_flagged"]),
            )
        )
    if "n_label_changes" in compare:
        problems.append(("suggested label changes", "", _count(compare["n_label_changes"])))
    unreliable = [str(c) for c in _list(compare.get("unreliable_classes"))]
    if unreliable:  # rare classes: some fold's model never saw them
        problems.append(
            (
                "findings on unreliable classes (fewer images than folds)",
                ", ".join(unreliable),
                _count(compare.get("n_unreliable")),
            )
        )
    # Unreadable images that scan --skip-broken left out: image problems of their own.
    skipped = [
        (str(s.get("id", "?")), str(s.get("file", "?")), str(s.get("reason", "")))
        for s in _list(art.run.get("skipped_images"))
        if isinstance(s, dict)
    ]
    if skipped:
        problems.append(("unreadable images (not audited)", "skipped", _count(len(skipped))))
    timings = [(k, f"{v:.1f} s") for k, v in art.section("timings").items() if _num(v)]
    settings = train.get("settings") if isinstance(train.get("settings"), dict) else {}
    setting_rows = _flatten(settings) + [
        (k, _fmt(v)) for k, v in train.items() if _scalar(v) and k not in ("key", "fingerprint")
    ]
    weights = [
        (k, v)
        for k, v in _flatten(train)
        if any(w in k.lower() for w in ("weight", "pretrained", "backbone", "checkpoint"))
    ]
    versions = run_versions(art)
    return {
        "facts": facts,
        "problems": problems,
        "timings": timings,
        "settings": setting_rows,
        "weights": weights,
        "versions": versions,
        "warnings": [str(w) for w in _list(train.get("warnings")) + _list(detect.get("warnings"))],
        "skipped_images": skipped,
    }


def run_versions(art: RunArtifacts) -> list[tuple[str, str]]:
    for where in (art.run, art.section("train")):
        v = where.get("versions") or where.get("packages")
        if isinstance(v, dict):
            return [(str(k), _fmt(x)) for k, x in v.items()]
    return []


def _count(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else "?"


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list | tuple) else []


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _scalar(v: Any) -> bool:
    return isinstance(v, str | int | float | bool) or v is None


def _column(frame: pd.DataFrame, name: str, default: Any) -> pd.Series:
    return frame[name] if name in frame else pd.Series(default, index=frame.index)


def _table_rows(
    art: RunArtifacts, ranked: pd.DataFrame | None, cols: list[an.ScoreColumn], methods: list[str]
) -> tuple[list[list[Any]], np.ndarray]:
    """The issue table's rows (ranked) and each dataset image's table row.

    A row is ``[id, given, suggested, detector bitmask, n_flags, consensus_score,
    consensus_flag, [scores], thumbnail index, detail index, label_changes,
    dataset index, unreliable classes]`` (class indices for the labels; report.js
    reads it by position).
    """
    ids = art.ids or []
    index = {i: r for r, i in enumerate(ids)}
    if ranked is None:  # no detectors yet: browse the images in dataset order
        ranked = pd.DataFrame({"id": ids})
    flags = an.method_flags(ranked, methods)
    mask = np.zeros(len(ranked), dtype=np.int64)
    for b, m in enumerate(methods):
        mask |= flags[m].astype(np.int64) << b
    scores = np.full((len(ranked), len(cols)), np.nan)
    for j, c in enumerate(cols):
        scores[:, j] = pd.to_numeric(ranked[c.key], errors="coerce").to_numpy(float)
    score_lists = [
        [None if v != v else v for v in row] for row in np.round(scores, 4).tolist()
    ]  # v != v: NaN
    numbers = {
        name: pd.to_numeric(_column(ranked, name, 0), errors="coerce").fillna(0)
        for name in ("n_flags", "consensus_score")
    }
    cflag = _column(ranked, "consensus_flag", False).astype(str).str.lower().isin(["true", "1"])
    changes = _column(ranked, "label_changes", "").fillna("").astype(str).tolist()
    unreliable = [  # read with na_values=[""]: an all-empty column is float NaN
        "" if pd.isna(v) else str(v) for v in _column(ranked, "unreliable_classes", "")
    ]
    given_text = _column(ranked, "given_labels", "").tolist()
    sugg_text = _column(ranked, "suggested_labels", None).tolist()
    row_of = np.full(len(ids), -1, dtype=np.int64)
    rows = []
    for r, (image_id, n_flags, cons, cf) in enumerate(
        zip(
            ranked["id"].astype(str).tolist(),
            numbers["n_flags"].astype(int).tolist(),
            np.round(numbers["consensus_score"].to_numpy(float), 4).tolist(),
            cflag.tolist(),
            strict=True,
        )
    ):
        i = index.get(image_id, -1)
        if i >= 0:
            row_of[i] = r
            given = np.flatnonzero(art.given[i]).tolist()
        else:
            given = art.parse_labels(given_text[r])
        sugg = given if sugg_text[r] is None else art.parse_labels(sugg_text[r])
        rows.append(
            [image_id, given, sugg, int(mask[r]), n_flags, cons, int(cf), score_lists[r]]
            + [-1, -1, changes[r], i]  # thumbnail and detail indices are filled in later
            + [unreliable[r]]
        )
    return rows, row_of


def _guarded(build: Any, *args: Any) -> dict[str, Any]:
    """Build one section; an unexpected failure becomes a message in that section only."""
    try:
        return build(*args)
    except Exception as exc:  # noqa: BLE001 - one odd artifact must not cost the whole report
        return {
            "available": False,
            "figs": [],
            "why": f"This section could not be built ({type(exc).__name__}: {exc}).",
        }


def _classes(art: RunArtifacts, figs: Figures) -> dict[str, Any]:
    if not (art.n_images and art.given is not None):
        return {"available": False, "why": art.why("dataset", "dataset.csv")}
    table = an.class_table(art)
    co = an.cooccurrence(art.given)
    return {
        "available": True,
        "table": table.to_dict("records"),
        "figs": [
            figs.add("class-counts", fg.class_counts(table)),
            figs.add("cooccurrence", fg.cooccurrence_heatmap(co, art.class_names)),
            figs.add("class-weights", fg.class_weights(table)),
        ],
    }


def _model(art: RunArtifacts, figs: Figures) -> dict[str, Any]:
    train = art.section("train")
    model: dict[str, Any] = {"available": art.probs is not None and bool(art.n_images)}
    model["figs"] = []
    if model["available"]:
        rep = an.oof_report(art.given, art.probs, art.class_names, an.oof_threshold(train))
        model.update(averages=rep["averages"], text=rep["text"], threshold=rep["threshold"])
        model["figs"].append(figs.add("per-class", fg.per_class_scores(rep["per_class"])))
    else:
        model["why"] = art.why("dataset", "dataset.csv", "oof_probs.csv")
    curves = an.learning_curves(train)
    if curves:
        model["figs"].append(figs.add("learning", fg.learning_curves(curves)))
    else:
        model["no_curves"] = "No per-fold training history in run.json's train section" + (
            "." if train else f"; {art.why('train')}"
        )
    recorded = train.get("metrics")
    model["recorded"] = (
        [(k, _fmt(v)) for k, v in recorded.items() if _scalar(v)]
        if isinstance(recorded, dict)
        else []
    )
    folds = an.fold_metrics(train)
    keep = [c for c in folds.columns if str(c).endswith(("_f1", "_ap", "accuracy"))]
    keep = keep or list(folds.columns)
    model["folds"] = {
        "columns": [str(c).replace("_", " ") for c in keep],
        "rows": [(str(i), [_fmt(v) for v in r]) for i, r in folds[keep].iterrows()],
    }
    return model


def _embedding(
    art: RunArtifacts, figs: Figures, ranked: pd.DataFrame | None, row_of: np.ndarray
) -> dict[str, Any]:
    if art.embeddings is None or not art.n_images or art.given is None:
        why = art.why("dataset", "dataset.csv", "oof_probs.csv", "embeddings.npy")
        return {"available": False, "why": why}
    xy, how = an.project_2d(art.embeddings)
    scores: dict[str, np.ndarray] = {}
    for key, label in (("outlier_score", "outlier score"), ("consensus_score", "consensus")):
        if ranked is not None and key in ranked:
            s = pd.to_numeric(ranked[key], errors="coerce").to_numpy(float)
            scores[label] = np.full(len(row_of), np.nan)
            scores[label][row_of >= 0] = s[row_of[row_of >= 0]]
    fig = fg.embedding_map(xy, art.given, art.class_names, row_of, scores, how)
    return {"available": True, "method": how, "figs": [figs.add("embedding", fig, "embedding")]}


def _intensity(art: RunArtifacts, figs: Figures, row_of: np.ndarray) -> dict[str, Any]:
    inten = an.intensity_data(art) if art.n_images else None
    if inten is None:
        why = art.why("dataset", "dataset.csv", "image_stats.csv") or (
            f"image_stats.csv has no {art.protein_channel}_mean column; re-run the scan."
        )
        return {"available": False, "why": why}
    if len(inten.flagged):
        inten.flagged["row"] = row_of[inten.flagged["row"].to_numpy()]
    return {
        "available": True,
        "source": inten.source,
        "n_flagged": len(inten.flagged),
        "column": inten.column,
        "figs": [figs.add("intensity", fg.intensity_plot(inten), role="intensity")],
    }


def build_context(
    art: RunArtifacts, *, max_thumbnails: int = 300, max_details: int = 100
) -> dict[str, Any]:
    """Everything the template needs (figures as JSON, the table's data, section texts)."""
    figs = Figures()
    methods = an.methods_of(art)
    ranked = an.consensus_order(art.issues) if art.issues is not None else None
    if ranked is not None and ranked.empty:
        art.note_missing("issues.csv", "issues.csv has no rows")
        ranked = None
    cols = an.score_columns(ranked) if ranked is not None else []
    have_images = art.n_images > 0 and art.given is not None
    rows: list[list[Any]] = []
    row_of = np.full(art.n_images, -1, dtype=np.int64)
    if have_images:
        try:
            rows, row_of = _table_rows(art, ranked, cols, methods)
        except Exception as exc:  # noqa: BLE001 - see _guarded
            art.note_missing("issues.csv", f"issues.csv cannot be used ({exc})")
            ranked, cols = None, []
            rows, row_of = _table_rows(art, None, [], [])

    ctx: dict[str, Any] = {"missing": art.missing, "methods": methods}
    try:
        ctx["summary"] = _summary(art, ranked, methods)
    except Exception as exc:  # noqa: BLE001 - see _guarded
        ctx["summary"] = {k: [] for k in ("facts", "problems", "timings", "settings")}
        ctx["summary"].update(weights=[], versions=[], warnings=[f"summary failed: {exc}"])
    ctx["classes"] = _guarded(_classes, art, figs)
    ctx["model"] = _guarded(_model, art, figs)
    ctx["model"].setdefault("folds", {"columns": [], "rows": []})
    ctx["model"].setdefault("recorded", [])

    # Table data, thumbnails
    images_note = ""
    thumbs: list[str] = []
    details: list[str] = []
    if rows:
        thumbs, details, images_note = collect_field_images(
            art, [r[11] for r in rows], max_thumbnails, max_details
        )
        for r, row in enumerate(rows):
            row[8] = r if r < len(thumbs) and thumbs[r] else -1
            row[9] = r if r < len(details) and details[r] else -1
    probs = None
    if art.probs is not None and rows:
        permille = np.rint(art.probs * 1000).astype(np.int16)
        probs = [permille[row[11]].tolist() if row[11] >= 0 else None for row in rows]
    for row in rows:
        row.pop()  # the dataset index is only needed here
    ctx["issues"] = {
        "available": ranked is not None and bool(rows),
        "why": art.why("dataset", "dataset.csv", "issues.csv"),
        "n": len(rows),
        "n_thumbs": sum(1 for t in thumbs if t),
        "n_details": sum(1 for d in details if d),
        "images_note": images_note,
        "score_cols": cols,
    }
    ctx["embedding"] = _guarded(_embedding, art, figs, ranked, row_of)
    ctx["intensity"] = _guarded(_intensity, art, figs, row_of)
    ctx["agreement"] = _guarded(_agreement, art, ranked, methods, cols, figs)
    ctx["agreement"].setdefault("bench", None)
    ctx["agreement"].setdefault("bench_why", art.why("bench.json"))
    ctx["cleaning"] = _guarded(_cleaning, art)
    ctx["retrain"] = _guarded(_retrain, art, figs)
    ctx["cells"] = _guarded(_cells, art, figs)

    run_key = hashlib.sha256(
        f"{art.run_dir.resolve()}|{art.section('dataset').get('fingerprint', '')}".encode()
    ).hexdigest()[:16]
    ctx["data"] = script_json(
        {
            "runKey": run_key,
            "runName": art.run_dir.resolve().name,
            "classes": art.class_names,
            "tokens": art.class_tokens,
            "sep": art.label_sep,
            "channels": art.channels,
            "methods": methods,
            "scores": [
                {"key": c.key, "label": c.label, "method": c.method, "worse": c.higher_is_worse}
                for c in cols
            ],
            "threshold": ctx["model"].get("threshold", 0.5),
            "rows": rows,
            "probs": probs,
            "thumbs": thumbs,
            "details": details,
        }
    )
    ctx["template_json"] = script_json(figs.template)
    ctx["figures"] = figs.items
    return ctx


def _agreement(
    art: RunArtifacts,
    ranked: pd.DataFrame | None,
    methods: list[str],
    cols: list[an.ScoreColumn],
    figs: Figures,
) -> dict[str, Any]:
    out: dict[str, Any] = {"available": ranked is not None and bool(methods), "figs": []}
    if out["available"]:
        flags = an.method_flags(ranked, methods)
        out["figs"].append(figs.add("upset", fg.upset(an.combinations(flags), methods)))
        if len(methods) > 1:
            jac = an.jaccard_matrix(flags)
            out["figs"].append(
                figs.add("jaccard", fg.method_heatmap(jac, methods, "Jaccard index of flags", 0))
            )
        if len(cols) > 1:
            sp = an.spearman_matrix(an.suspicion(ranked, cols))
            names = [f"{c.label} ({c.method})" if c.method else c.label for c in cols]
            out["figs"].append(
                figs.add(
                    "spearman",
                    fg.method_heatmap(sp, names, "Spearman rank correlation of scores", -1),
                )
            )
    else:
        out["why"] = art.why("issues.csv") or "No detector ran."
    out["bench"] = None
    if art.bench is not None:
        table, groups = bench_tables(art.bench)
        out["bench"] = {
            "rows": [(str(i), [_fmt(v) for v in r]) for i, r in table.iterrows()],
            "columns": [str(c) for c in table.columns],
            "raw": _flatten(art.bench, depth=3) if table.empty else [],
        }
        main = [c for c in table.columns if _main_metric(c)]
        if main and not table.empty:
            bars = table[main].apply(pd.to_numeric, errors="coerce")
            out["figs"].append(
                figs.add("bench", fg.grouped_bars(bars, "Detection scores (any problem)", (0, 1)))
            )
        if not groups.empty:
            out["figs"].append(
                figs.add(
                    "bench-groups",
                    fg.score_heatmap(groups, "AUROC per detector and kind of problem"),
                )
            )
    else:
        out["bench_why"] = art.why("bench.json")
    return out


def _main_metric(name: Any) -> bool:
    n = str(name).lower()
    return "." not in n and n in ("auroc", "ap", "average_precision", "precision_at_t")


def bench_tables(bench: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-detector scores from ``bench.json``.

    Returns
    -------
    table, groups
        ``table``: detector x metric for the ``any`` group (or, for another layout,
        whatever numbers each detector has, nested keys dotted). ``groups``:
        detector x problem group of AUROC (empty when not available).
    """
    metrics = bench.get("metrics")
    if isinstance(metrics, dict) and all(isinstance(v, dict) for v in metrics.values()):
        rows, auroc = {}, {}
        for det, by_group in metrics.items():
            main = by_group.get("any") if isinstance(by_group.get("any"), dict) else None
            if main is None:
                continue
            rows[str(det)] = {k: v for k, v in main.items() if _num(v) or v is None}
            auroc[str(det)] = {
                g: m.get("auroc")
                for g, m in by_group.items()
                if isinstance(m, dict) and m.get("n_pos")
            }
        if rows:
            table = pd.DataFrame.from_dict(rows, orient="index")
            groups = pd.DataFrame.from_dict(auroc, orient="index").astype(float)
            return table, groups
    return bench_table(bench), pd.DataFrame()


def bench_table(bench: dict[str, Any]) -> pd.DataFrame:
    """Per-detector numbers from a ``bench.json`` of unknown layout: detector x metric.

    Looks for a mapping of detector name -> metrics (under ``detectors``/``methods``/
    ``results`` or at the top level); nested metric objects become dotted columns.
    """
    node: Any = bench
    for key in ("detectors", "methods", "results"):
        if isinstance(bench.get(key), dict):
            node = bench[key]
            break
    rows = {}
    for name, metrics in node.items():
        if isinstance(metrics, dict):
            flat = _flatten_num(metrics)
            if flat:
                rows[str(name)] = flat
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if not frame.empty:
        first = [c for c in frame.columns if "." not in str(c)]
        frame = frame[first + [c for c in frame.columns if c not in first]]
    return frame


def _flatten_num(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten_num(v, f"{prefix}{k}."))
        elif _num(v):
            out[f"{prefix}{k}"] = float(v)
    return out


def _cleaning(art: RunArtifacts) -> dict[str, Any]:
    if art.changes is None:
        return {"available": False, "why": art.why("changes.csv")}
    c = art.changes
    counts = []
    for col in ("action", "change", "reason"):
        if col in c:
            counts.append((col, [(str(k), int(v)) for k, v in c[col].value_counts().items()]))
    limit = 1000
    return {
        "available": True,
        "n": len(c),
        "counts": counts,
        "columns": [str(x) for x in c.columns],
        "rows": c.head(limit).astype(str).to_numpy().tolist(),
        "truncated": len(c) > limit,
        "limit": limit,
    }


def _retrain(art: RunArtifacts, figs: Figures) -> dict[str, Any]:
    m = art.retrain
    if m is None:
        return {"available": False, "why": art.why("retrain/metrics.json")}
    out: dict[str, Any] = {"available": True, "figs": [], "table": [], "raw": []}
    before, after = m.get("before"), m.get("after")
    if isinstance(before, dict) and isinstance(after, dict):
        b, a = _flatten_num(before), _flatten_num(after)
        keys = [k for k in b if k in a]
        out["table"] = [(k, b[k], a[k], a[k] - b[k]) for k in keys]
        main = [
            k for k in keys if "." not in k and ("f1" in k or "precision" in k or "recall" in k)
        ]
        if main:
            frame = pd.DataFrame({"before": [b[k] for k in main], "after": [a[k] for k in main]})
            frame.index = main
            out["figs"].append(
                figs.add("retrain", fg.grouped_bars(frame, "Before and after", (0, 1)))
            )
        changes = _list(m.get("per_class_change"))
        if changes:
            frame = pd.DataFrame(changes).set_index("class")
            true = "f1_true_change" in frame
            cols = {"f1_change": "F1 change (given test labels)"}
            if true:
                cols["f1_true_change"] = "F1 change (true test labels)"
            out["figs"].append(
                figs.add(
                    "retrain-per-class",
                    fg.grouped_bars(
                        frame[list(cols)].rename(columns=cols), "Per-class F1 change", (-1, 1)
                    ),
                )
            )
        out["raw"] = [
            (k, v)
            for k, v in _flatten(m)
            if not k.startswith(("before.", "after.", "per_class_change"))
        ]
    else:
        out["raw"] = _flatten(m)
    return out


def _cells(art: RunArtifacts, figs: Figures) -> dict[str, Any]:
    """The cell-level section: facts, support of the given labels, overlays of suspect fields."""
    sec = art.section("cells")
    if not sec:
        return {
            "available": False,
            "why": "Field-level scan: `labelaudit scan --level cell` adds the cell audit here.",
        }
    metrics = _dict(sec.get("metrics"))
    per_field = _dict(sec.get("cells_per_field"))
    facts = [
        (
            "cells",
            f"{_count(sec.get('n_cells'))} in {_count(sec.get('n_fields_with_cells'))} fields",
        ),
        ("cells per field", " / ".join(_fmt(per_field.get(k)) for k in ("min", "median", "max"))),
        ("masks", str(sec.get("source", "-"))),
        ("crop size", f"{sec.get('cell_size', '-')} px"),
        (
            "cell model (out-of-fold, cells inherit their field's labels)",
            ", ".join(f"{k} {_fmt(metrics[k])}" for k in ("micro_f1", "macro_f1") if k in metrics)
            or "-",
        ),
        ("fields with a label no cell shows", _count(sec.get("n_fields_with_unsupported_labels"))),
        (
            "fields with a class most cells show, not labelled",
            _count(sec.get("n_fields_with_cell_missing_labels")),
        ),
        ("cells unlike their siblings", _count(sec.get("n_odd_cells"))),
        ("cell outliers (isolation forest)", _count(sec.get("n_outlier_cells"))),
    ]
    out: dict[str, Any] = {"available": True, "facts": facts, "figs": [], "overlays": []}
    if art.issues is not None and "label_support" in art.issues:
        shares = []
        for text in art.issues["label_support"].astype(str):
            for part in filter(None, text.split(";")):
                shown, _, total = part.rpartition(":")[2].partition("/")
                if total.isdigit() and int(total) > 0:
                    shares.append(int(shown) / int(total))
        if shares:
            s = np.asarray(shares)
            groups = {
                "no cell": int((s == 0).sum()),
                "under half": int(((s > 0) & (s < 0.5)).sum()),
                "half or more": int(((s >= 0.5) & (s < 1)).sum()),
                "every cell": int((s == 1).sum()),
            }
            frame = pd.DataFrame({"given labels": list(groups.values())}, index=list(groups))
            out["figs"].append(
                figs.add(
                    "cells",
                    fg.grouped_bars(frame, "Given labels by the cells that show them", None),
                )
            )
    for pic in _list(sec.get("overlays")):
        path = art.run_dir / str(pic.get("file", ""))
        if not path.is_file():
            continue
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        out["overlays"].append({**pic, "src": f"data:image/jpeg;base64,{data}"})
    return out


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
    """The report page of ``art`` as a string (see :func:`write_report` for arguments)."""
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


def write_report(
    run_dir: str | Path,
    *,
    max_thumbnails: int = 300,
    max_details: int = 100,
    open_browser: bool = False,
) -> Path:
    """Write ``RUN/report.html`` from the artifacts in ``run_dir``.

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

    Returns
    -------
    Path
        The report's path.

    Raises
    ------
    RunDirError
        ``run_dir`` has no readable ``run.json``.
    """
    run_dir = Path(run_dir)
    art = load_run(run_dir)
    page = render_html(art, max_thumbnails=max_thumbnails, max_details=max_details)
    out = run_dir / REPORT_NAME
    write_text(out, page)
    if open_browser:
        webbrowser.open(out.resolve().as_uri())
    return out


__all__ = ["build_context", "render_html", "script_json", "write_report"]
