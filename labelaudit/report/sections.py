"""The report's sections: a registry of small builders, rendered in page order.

A section is a name (its ``<section id>``, its key in the template context and its
macro in ``reports/templates/sections.html.j2``), a title for the navigation bar and
a builder that turns a :class:`ReportState` into the dict its template block reads.
Adding a section is one builder decorated with :func:`register` and one macro of
the same name; the page renders :data:`SECTIONS` in registration order.

A builder explains missing artifacts itself (``{"available": False, "why": ...}``).
Anything else it raises is a bug: :func:`build_sections` re-raises it, naming the
section, unless the lenient mode is asked for (``lenient=True`` or the environment
variable ``LABELAUDIT_REPORT_LENIENT=1``), which puts "This section could not be
built" in that section only.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from labelaudit.core.stats import NOISE_NOTE, Interval, format_change
from labelaudit.data.roles import EMPTY_TARGET, roles_from_info
from labelaudit.report import analysis as an
from labelaudit.report import figures as fg
from labelaudit.report.artifacts import RunArtifacts
from labelaudit.report.images import collect_field_images
from labelaudit.report.pagejson import Figures
from labelaudit.report.table import TableRow
from labelaudit.rundir import LABEL_WEIGHTS_CSV, LEAKS_CSV, RunDir, recorded_overlay

#: Environment variable that turns a failing section into a message on the page.
LENIENT_ENV = "LABELAUDIT_REPORT_LENIENT"


@dataclass
class ReportState:
    """What the section builders share: the run, the figures and the issue table.

    Attributes
    ----------
    art
        The run directory's artifacts.
    figs
        The page's figures (builders add theirs).
    methods
        Detector names, in the order the detect stage ran them.
    ranked
        ``issues.csv`` most suspicious first (``None`` when missing or unusable).
    cols
        The per-image score columns of ``ranked``.
    rows, row_of
        The issue table's records and each dataset image's row in it (``-1``: none).
    max_thumbnails, max_details
        How many thumbnails and detail tiles to embed.
    thumbs, details, probs
        What the issues section embeds for the table (filled by it).
    """

    art: RunArtifacts
    figs: Figures
    methods: list[str]
    ranked: pd.DataFrame | None
    cols: list[an.ScoreColumn]
    rows: list[TableRow]
    row_of: np.ndarray
    max_thumbnails: int = 300
    max_details: int = 100
    thumbs: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)


Builder = Callable[[ReportState], dict[str, Any]]


@dataclass(frozen=True)
class Section:
    """A registered report section (see the module docstring).

    Attributes
    ----------
    name
        ``<section id>``, context key and template macro name.
    title
        The navigation bar's link text.
    build
        The builder.
    defaults
        Keys the template block reads even when the section is unavailable.
    """

    name: str
    title: str
    build: Builder
    defaults: dict[str, Any] = field(default_factory=dict)


#: The registered sections, in page order.
SECTIONS: dict[str, Section] = {}


def register(name: str, title: str, **defaults: Any) -> Callable[[Builder], Builder]:
    """Register ``build`` as the section ``name`` (after those registered before it)."""

    def add(build: Builder) -> Builder:
        if name in SECTIONS:
            raise ValueError(f"report section {name!r} is registered twice")
        SECTIONS[name] = Section(name, title, build, defaults)
        return build

    return add


def lenient_default() -> bool:
    """Whether ``LABELAUDIT_REPORT_LENIENT`` asks for failing sections to become text."""
    return os.environ.get(LENIENT_ENV, "").strip().lower() in ("1", "true", "yes")


def build_sections(state: ReportState, lenient: bool | None = None) -> dict[str, dict[str, Any]]:
    """Build every registered section in order.

    Parameters
    ----------
    state
        The shared state.
    lenient
        ``True``: a section that raises shows "This section could not be built"
        instead; ``None``: read :data:`LENIENT_ENV`; ``False``: re-raise.

    Raises
    ------
    Exception
        Whatever a builder raised (not lenient), with a note naming the section.
    """
    lenient = lenient_default() if lenient is None else lenient
    out: dict[str, dict[str, Any]] = {}
    for section in SECTIONS.values():
        try:
            built = section.build(state)
        except Exception as exc:
            if not lenient:
                exc.add_note(f"while building the report section {section.name!r}")
                raise
            why = f"This section could not be built ({type(exc).__name__}: {exc})."
            built = {"available": False, "figs": [], "why": why}
        out[section.name] = {**section.defaults, **built}
    return out


# ------------------------------------------------------------------------ helpers


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


def _flatten_num(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten_num(v, f"{prefix}{k}."))
        elif _num(v):
            out[f"{prefix}{k}"] = float(v)
    return out


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


def run_versions(art: RunArtifacts) -> list[tuple[str, str]]:
    """Package versions recorded in ``run.json`` (top level, else the train section)."""
    for where in (art.run, art.section("train")):
        v = where.get("versions") or where.get("packages")
        if isinstance(v, dict):
            return [(str(k), _fmt(x)) for k, x in v.items()]
    return []


# ------------------------------------------------------------------------ summary


def _dataset_facts(art: RunArtifacts, issues: pd.DataFrame | None) -> list[tuple[str, str]]:
    ds, compare = art.section("dataset"), art.section("compare")
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
        roles = roles_from_info(ds)
        facts += [
            (
                "exclusive classes",
                (", ".join(roles.exclusive) + " (never combined with another class)")
                if roles.exclusive
                else "none declared",
            ),
            (
                "stains",
                f"target (what the labels describe): {roles.target_channel or '?'}; "
                f"references: {', '.join(roles.reference_channels) or 'none'}",
            ),
        ]
    if art.given is not None and art.n_images:
        per = an.labels_per_image(art.given)
        dist = ", ".join(f"{k}: {v:,}" for k, v in per.items())
        facts.append(("labels per image", f"mean {art.given.sum(1).mean():.2f} ({dist})"))
    detectors = _dict(art.section("detect").get("detectors"))
    health = _dict(_dict(detectors.get("confident")).get("summary")).get("health")
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
    return facts


def _skipped_images(art: RunArtifacts) -> list[tuple[str, str, str]]:
    """Unreadable images that ``scan --skip-broken`` left out."""
    return [
        (str(s.get("id", "?")), str(s.get("file", "?")), str(s.get("reason", "")))
        for s in _list(art.run.get("skipped_images"))
        if isinstance(s, dict)
    ]


def _problems(
    art: RunArtifacts, issues: pd.DataFrame | None, methods: list[str]
) -> list[tuple[str, str, str]]:
    detect, compare = art.section("detect"), art.section("compare")
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
        k = compare.get("min_methods", 2)
        problems.append(
            (f"consensus (>= {k} detectors)", "", _count(compare["n_consensus_flagged"]))
        )
    if "n_label_changes" in compare:
        problems.append(("suggested label changes", "", _count(compare["n_label_changes"])))
    counts = _dict(_dict(_dict(det.get("quality")).get("summary")).get("issue_counts"))
    for kind, n in counts.items():
        if str(kind).startswith(EMPTY_TARGET + ":") and n:
            names = ", ".join(roles_from_info(art.section("dataset")).exclusive)
            problems.append((f"protein stain empty: looks {names}", "label evidence", _count(n)))
    conflicts = _dict(_dict(det.get("exclusive")).get("summary")).get("n_conflicts")
    if conflicts:
        problems.append(
            ("exclusive class given with another class", "label problem", _count(conflicts))
        )
    unreliable = [str(c) for c in _list(compare.get("unreliable_classes"))]
    if unreliable:  # rare classes: some fold's model never saw them
        problems.append(
            (
                "findings on unreliable classes (fewer images than folds)",
                ", ".join(unreliable),
                _count(compare.get("n_unreliable")),
            )
        )
    n_skipped = len(_skipped_images(art))
    if n_skipped:  # image problems of their own
        problems.append(("unreadable images (not audited)", "skipped", _count(n_skipped)))
    return problems


@register(
    "summary",
    "Summary",
    **dict.fromkeys(
        ("facts", "problems", "timings", "settings", "weights", "versions", "warnings"), []
    ),
)
def summary_section(state: ReportState) -> dict[str, Any]:
    """Dataset facts, problems found, timings, settings, weight source and versions."""
    art = state.art
    train, detect = art.section("train"), art.section("detect")
    recorded = train.get("settings")
    settings = recorded if isinstance(recorded, dict) else {}
    setting_rows = _flatten(settings) + [
        (k, _fmt(v)) for k, v in train.items() if _scalar(v) and k not in ("key", "fingerprint")
    ]
    weights = [
        (k, v)
        for k, v in _flatten(train)
        if any(w in k.lower() for w in ("weight", "pretrained", "backbone", "checkpoint"))
    ]
    return {
        "facts": _dataset_facts(art, state.ranked),
        "problems": _problems(art, state.ranked, state.methods),
        "timings": [(k, f"{v:.1f} s") for k, v in art.section("timings").items() if _num(v)],
        "settings": setting_rows,
        "weights": weights,
        "versions": run_versions(art),
        "warnings": [str(w) for w in _list(train.get("warnings")) + _list(detect.get("warnings"))],
        "skipped_images": _skipped_images(art),
    }


# ---------------------------------------------------------------- classes, model


@register("classes", "Classes")
def classes_section(state: ReportState) -> dict[str, Any]:
    """Images per class, co-occurrence and the retraining class weights."""
    art, figs = state.art, state.figs
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


def _fold_table(train: dict[str, Any]) -> dict[str, Any]:
    folds = an.fold_metrics(train)
    keep = [c for c in folds.columns if str(c).endswith(("_f1", "_ap", "accuracy"))]
    keep = keep or list(folds.columns)
    return {
        "columns": [str(c).replace("_", " ") for c in keep],
        "rows": [(str(i), [_fmt(v) for v in r]) for i, r in folds[keep].iterrows()],
    }


@register("model", "Model", folds={"columns": [], "rows": []}, recorded=[])
def model_section(state: ReportState) -> dict[str, Any]:
    """Out-of-fold scores, learning curves, per-fold and recorded metrics."""
    art, figs = state.art, state.figs
    train = art.section("train")
    model: dict[str, Any] = {"available": art.probs is not None and bool(art.n_images)}
    model["figs"] = []
    # With images, the run has dataset.csv: given labels come with the ids.
    if art.probs is not None and art.given is not None and model["available"]:
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
    model["folds"] = _fold_table(train)
    return model


# ------------------------------------------------------------------------- issues


@register("issues", "Label issues", n=0)
def issues_section(state: ReportState) -> dict[str, Any]:
    """The issue table: embeds the top images' thumbnails and detail tiles for it."""
    art, rows = state.art, state.rows
    images_note = ""
    if rows:
        state.thumbs, state.details, images_note = collect_field_images(
            art, [row.image for row in rows], state.max_thumbnails, state.max_details
        )
        for r, row in enumerate(rows):
            row.thumb = r if r < len(state.thumbs) and state.thumbs[r] else -1
            row.detail = r if r < len(state.details) and state.details[r] else -1
    return {
        "available": state.ranked is not None and bool(rows),
        "why": art.why("dataset", "dataset.csv", "issues.csv"),
        "n": len(rows),
        "n_thumbs": sum(1 for t in state.thumbs if t),
        "n_details": sum(1 for d in state.details if d),
        "images_note": images_note,
        "score_cols": state.cols,
        "supplied": (art.run.get("predictions") or {}).get("note", ""),
        "second_round": _second_round_note(art.run.get("second_round")),
        "label_evidence": _label_evidence_words(art),
    }


#: The label evidence's features (``combined``'s summary) in words, in order.
EVIDENCE_WORDS = {
    "logit_p": "the probabilities",
    "logit_neighbours": "the neighbours' labels",
    "flip_gain": "the image content",
    "cell_strongest": "the cell model's view of each cell",
}


def _cells_supplied(cells: dict[str, Any]) -> bool:
    """Whether ``run.json["cells"]`` records cell probabilities made elsewhere."""
    return str(cells.get("source", "")).startswith("supplied")


def _label_evidence_words(art: Any) -> str:
    """What the combined label evidence of this run weighed, in words (from
    ``run.json["detect"]``; a forged or absent record gives the usual three)."""
    detectors = _dict(art.section("detect").get("detectors"))
    features = _dict(_dict(detectors.get("combined")).get("summary")).get("features")
    if not isinstance(features, list):
        features = ["logit_p", "logit_neighbours", "flip_gain"]
    words = [w for f, w in EVIDENCE_WORDS.items() if f in features]
    if "cell_strongest" in features and _cells_supplied(art.section("cells")):
        words[-1] += " (supplied)"
    if len(words) < 2:
        return "".join(words) or "the probabilities"
    return ", ".join(words[:-1]) + " and " + words[-1]


def _second_round_note(record: object) -> str:
    """What ``run.json["second_round"]`` says (``scan --second-round-of``), as text."""
    if not isinstance(record, dict):
        return ""
    flipped, first = record.get("flipped_labels"), record.get("of")
    if flipped is None or first is None:
        return "the models trained on corrected labels (run.json's record of them is incomplete)"
    return (
        f"the models trained on the given labels with {flipped} label(s) flipped that the "
        f"scan {first} doubted (combined posterior >= {record.get('flip_at')}); every score "
        "judges the given labels"
    )


# ------------------------------------------------------------ embedding, intensity


@register("embedding", "Embedding map")
def embedding_section(state: ReportState) -> dict[str, Any]:
    """The embeddings in two dimensions, coloured by class or score."""
    art, ranked, row_of = state.art, state.ranked, state.row_of
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
    return {
        "available": True,
        "method": how,
        "figs": [state.figs.add("embedding", fig, "embedding")],
    }


@register("intensity", "Intensity")
def intensity_section(state: ReportState) -> dict[str, Any]:
    """Per-class protein intensity, bounds and flagged (image, class) pairs."""
    art = state.art
    inten = an.intensity_data(art) if art.n_images else None
    if inten is None:
        why = art.why("dataset", "dataset.csv", "image_stats.csv") or (
            f"image_stats.csv has no {art.protein_channel}_mean column; re-run the scan."
        )
        return {"available": False, "why": why}
    if len(inten.flagged):
        inten.flagged["row"] = state.row_of[inten.flagged["row"].to_numpy()]
    return {
        "available": True,
        "source": inten.source,
        "n_flagged": len(inten.flagged),
        "column": inten.column,
        "figs": [state.figs.add("intensity", fg.intensity_plot(inten), role="intensity")],
    }


# ---------------------------------------------------------------------- agreement


def _score_label(detector: str, cols: list[an.ScoreColumn]) -> str:
    for c in cols:
        if c.method == detector:
            return f"{c.label} ({c.method})"
    return detector


def _agreement_figures(state: ReportState, agree: dict[str, Any]) -> list[dict[str, Any]]:
    """UpSet bars, Jaccard and Spearman heatmaps from ``run.json["compare"]["agreement"]``."""
    figs = state.figs
    names = [str(m) for m in _list(agree.get("detectors"))]
    combos = an.combinations(_dict(agree.get("combinations")), names)
    out = [figs.add("upset", fg.upset(combos, names))]
    if len(names) > 1:
        jac = an.pairwise_matrix(_dict(agree.get("jaccard")), names)
        out.append(figs.add("jaccard", fg.method_heatmap(jac, names, "Jaccard index of flags", 0)))
        sp = an.pairwise_matrix(_dict(agree.get("spearman")), names)
        labels = [_score_label(m, state.cols) for m in names]
        title = "Spearman rank correlation of scores"
        out.append(figs.add("spearman", fg.method_heatmap(sp, labels, title, -1)))
    return out


def _bench_section(result: dict[str, Any], figs: Figures) -> tuple[dict[str, Any], list[dict]]:
    """The bench table and its figures (``bench.json``, read as ``result``)."""
    table, groups = bench_tables(result)
    bench = {
        "rows": [(str(i), [_fmt(v) for v in r]) for i, r in table.iterrows()],
        "columns": [str(c) for c in table.columns],
        "raw": _flatten(result, depth=3) if table.empty else [],
        # AUROC per kind of problem: label problems, then each kind of label noise
        # on its own (missing, extra, swap), then the image faults.
        "group_rows": [(str(i), [_fmt(v) for v in r]) for i, r in groups.iterrows()],
        "group_columns": [str(c) for c in groups.columns],
    }
    out = []
    main = [c for c in table.columns if _main_metric(c)]
    if main and not table.empty:
        bars = table[main].apply(pd.to_numeric, errors="coerce")
        title = "Detection scores (any problem)"
        out.append(figs.add("bench", fg.grouped_bars(bars, title, (0, 1))))
    if not groups.empty:
        title = "AUROC per detector and kind of problem"
        out.append(figs.add("bench-groups", fg.score_heatmap(groups, title)))
    return bench, out


def _number_word(n: int) -> str:
    """``five`` for 5 (``12`` beyond ten): the count as a sentence writes it."""
    words = "zero one two three four five six seven eight nine ten".split()
    return words[n] if 0 <= n < len(words) else str(n)


@register("agreement", "Agreement", bench=None, bench_why="", n_detectors="")
def agreement_section(state: ReportState) -> dict[str, Any]:
    """How the detectors agree (as the comparison recorded it) and scores against the truth."""
    art = state.art
    agree = _dict(art.section("compare").get("agreement"))
    ran = state.ranked is not None and bool(state.methods)
    out: dict[str, Any] = {"available": ran and bool(_list(agree.get("detectors"))), "figs": []}
    if out["available"]:
        out["n_detectors"] = _number_word(len(_list(agree.get("detectors"))))
        out["figs"] += _agreement_figures(state, agree)
    elif ran:
        out["why"] = "run.json has no compare.agreement section; re-run `labelaudit scan`."
    else:
        out["why"] = art.why("issues.csv") or "No detector ran."
    out["bench"] = None
    if art.bench is not None:
        out["bench"], bench_figs = _bench_section(art.bench, state.figs)
        out["figs"] += bench_figs
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


# ---------------------------------------------------------- cleaning and retrain


@register("cleaning", "Cleaning")
def cleaning_section(state: ReportState) -> dict[str, Any]:
    """What ``labelaudit clean`` changed (``changes.csv``)."""
    art = state.art
    if art.changes is None:
        return {"available": False, "why": art.why("changes.csv")}
    c = art.changes
    counts = []
    for col in ("made_by", "action", "change", "reason"):
        if col in c:
            counts.append((col, [(str(k), int(v)) for k, v in c[col].value_counts().items()]))
    limit = 1000
    section = art.section("clean") or {}
    return {
        "available": True,
        "n": len(c),
        "policy": section.get("policy"),
        "decisions": section.get("decisions"),
        "by_person": int((c["made_by"] == "person").sum()) if "made_by" in c else None,
        "weighted": _weighted_labels(art.run_dir, section.get("label_weights")),
        "counts": counts,
        "columns": [str(x) for x in c.columns],
        "rows": c.head(limit).astype(str).to_numpy().tolist(),
        "truncated": len(c) > limit,
        "limit": limit,
    }


def _weighted_labels(run_dir, recorded: str | None) -> dict[str, int] | None:
    """How many labels a soft policy down-weighted (``label_weights.csv``), if any."""
    path = run_dir / LABEL_WEIGHTS_CSV
    if not recorded or not path.is_file():
        return None
    try:
        w = pd.read_csv(path).drop(columns=["id"]).to_numpy(dtype=float)
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return None
    return {"below_half": int((w < 0.5).sum()), "below_one": int((w < 1).sum()), "n": int(w.size)}


def _retrain_figures(figs: Figures, m: dict[str, Any], b: dict, a: dict) -> list[dict]:
    keys = [k for k in b if k in a]
    out = []
    main = [k for k in keys if "." not in k and ("f1" in k or "precision" in k or "recall" in k)]
    if main:
        frame = pd.DataFrame({"before": [b[k] for k in main], "after": [a[k] for k in main]})
        frame.index = main
        out.append(figs.add("retrain", fg.grouped_bars(frame, "Before and after", (0, 1))))
    changes = _list(m.get("per_class_change"))
    if changes:
        frame = pd.DataFrame(changes).set_index("class")
        cols = {"f1_change": "F1 change (given test labels)"}
        if "f1_true_change" in frame:
            cols["f1_true_change"] = "F1 change (true test labels)"
        bars = fg.grouped_bars(
            frame[list(cols)].rename(columns=cols), "Per-class F1 change", (-1, 1)
        )
        out.append(figs.add("retrain-per-class", bars))
    return out


def _retrain_intervals(m: dict[str, Any]) -> dict[str, Any] | None:
    """The F1 changes with their 95 % intervals (``delta_ci``), as ``retrain`` prints them.

    ``overall`` and ``per_class`` rows end with (change text, within noise); per class
    on the true test labels when the run had a truth file, else on the given ones.
    """
    ci, b, a = _dict(m.get("delta_ci")), _dict(m.get("before")), _dict(m.get("after"))
    if not ci:
        return None

    def cell(d: Any) -> tuple[str, bool]:
        d = _dict(d)
        return format_change(d), not Interval.from_dict(d).excludes_zero

    keys = ("micro_f1", "macro_f1", "micro_f1_true", "macro_f1_true")
    overall = [(k, b[k], a[k], *cell(ci[k])) for k in keys if k in ci and k in b and k in a]
    rows = [_dict(r) for r in _list(m.get("per_class_change"))]
    truth = "per_class_true" in ci and all("f1_true_before" in r for r in rows)
    key, per = ("f1_true", "per_class_true") if truth else ("f1", "per_class")
    support = [_dict(c).get("support") for c in _list(b.get(per))]
    intervals = _list(ci.get(per))
    per_class = [
        (r.get("class"), support[i] if i < len(support) else r.get("support"))
        + (r.get(f"{key}_before"), r.get(f"{key}_after"))
        + cell(intervals[i])
        for i, r in enumerate(rows)
        if i < len(intervals)
    ]
    errors = _dict(m.get("label_errors_true"))
    return {
        "n_test": ci.get("n_test"),
        "overall": overall,
        "truth": truth,
        "per_class": per_class,
        "label_errors": errors or None,
        "dropped": errors.get("images_before", 0) - errors.get("images_after", 0),
        "note": NOISE_NOTE,
    }


@register("retrain", "Retrain")
def retrain_section(state: ReportState) -> dict[str, Any]:
    """Scores before and after retraining on the cleaned labels (``retrain/metrics.json``)."""
    art = state.art
    m = art.retrain
    if m is None:
        return {"available": False, "why": art.why("retrain/metrics.json")}
    out: dict[str, Any] = {"available": True, "figs": [], "table": [], "raw": []}
    before, after = m.get("before"), m.get("after")
    if not (isinstance(before, dict) and isinstance(after, dict)):
        out["raw"] = _flatten(m)
        return out
    b, a = _flatten_num(before), _flatten_num(after)
    out["table"] = [(k, b[k], a[k], a[k] - b[k]) for k in b if k in a]
    out["figs"] = _retrain_figures(state.figs, m, b, a)
    out["ci"] = _retrain_intervals(m)
    out["raw"] = [
        (k, v)
        for k, v in _flatten(m)
        if not k.startswith(("before.", "after.", "per_class_change", "delta_ci"))
    ]
    return out


# -------------------------------------------------------------------------- cells


def _cell_facts(sec: dict[str, Any]) -> list[tuple[str, str]]:
    metrics = _dict(sec.get("metrics"))
    per_field = _dict(sec.get("cells_per_field"))
    model = ", ".join(f"{k} {_fmt(metrics[k])}" for k in ("micro_f1", "macro_f1") if k in metrics)
    return [
        (
            "cells",
            f"{_count(sec.get('n_cells'))} in {_count(sec.get('n_fields_with_cells'))} fields",
        ),
        ("cells per field", " / ".join(_fmt(per_field.get(k)) for k in ("min", "median", "max"))),
        ("cells from", str(sec.get("source", "-"))),
        ("crop size", f"{sec['cell_size']} px" if sec.get("cell_size") else "-"),
        (
            ("cell model (made elsewhere, its probabilities supplied)", "-")
            if _cells_supplied(sec)
            else ("cell model (out-of-fold, cells inherit their field's labels)", model or "-")
        ),
        ("fields with a label no cell shows", _count(sec.get("n_fields_with_unsupported_labels"))),
        (
            "fields with a class most cells show, not labelled",
            _count(sec.get("n_fields_with_cell_missing_labels")),
        ),
        ("cells unlike their siblings", _count(sec.get("n_odd_cells"))),
        ("cell outliers (isolation forest)", _count(sec.get("n_outlier_cells"))),
    ]


def _support_figure(figs: Figures, issues: pd.DataFrame) -> list[dict[str, Any]]:
    """Given labels grouped by the share of the field's cells that show them."""
    shares = []
    for text in issues["label_support"].fillna("").astype(str):
        for part in filter(None, text.split(";")):
            shown, _, total = part.rpartition(":")[2].partition("/")
            if total.isdigit() and int(total) > 0:
                shares.append(int(shown) / int(total))
    if not shares:
        return []
    s = np.asarray(shares)
    groups = {
        "no cell": int((s == 0).sum()),
        "under half": int(((s > 0) & (s < 0.5)).sum()),
        "half or more": int(((s >= 0.5) & (s < 1)).sum()),
        "every cell": int((s == 1).sum()),
    }
    frame = pd.DataFrame({"given labels": list(groups.values())}, index=list(groups))
    title = "Given labels by the cells that show them"
    return [figs.add("cells", fg.grouped_bars(frame, title, None))]


@register("cells", "Cells")
def cells_section(state: ReportState) -> dict[str, Any]:
    """The cell-level section: facts, support of the given labels, overlays of suspect fields."""
    art = state.art
    sec = art.section("cells")
    if not sec:
        return {
            "available": False,
            "why": "Field-level scan: `labelaudit scan --level cell` adds the cell audit here.",
        }
    out: dict[str, Any] = {"available": True, "facts": _cell_facts(sec), "figs": []}
    if art.issues is not None and "label_support" in art.issues:
        out["figs"] = _support_figure(state.figs, art.issues)
    out["overlays"] = []
    for pic in _list(sec.get("overlays")):
        path = recorded_overlay(art.run_dir, pic)  # run.json is untrusted: ours only
        if path is None:
            continue
        try:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
        except OSError:
            continue
        text = {key: _words(pic.get(key)) for key in OVERLAY_TEXT}
        mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
        out["overlays"].append({**text, "src": f"data:{mime};base64,{data}"})
    return out


#: The words an overlay picture is shown with (``run.json["cells"]["overlays"]``).
OVERLAY_TEXT = ("id", "given", "support", "unsupported", "missing")


def _words(value: Any) -> str:
    """A recorded caption value as text: ``""`` for none, never a container's repr."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if abs(value) < 10**18 else ""
    return str(value) if isinstance(value, float) and math.isfinite(value) else ""


# --------------------------------------------------------------------- duplicates

#: Duplicate groups shown side by side (label-conflicting groups first).
MAX_DUPLICATE_GROUPS = 40


def _duplicate_groups(issues: pd.DataFrame) -> list[pd.DataFrame]:
    """``issues.csv`` rows per duplicate group: conflicting groups first, then by id."""
    group = pd.to_numeric(issues["duplicate_group"], errors="coerce")
    rows = issues.assign(_g=group)[group.notna().to_numpy()]
    conflict = rows.get("duplicate_conflict", pd.Series("", index=rows.index)).fillna("")
    rows = rows.assign(_c=conflict.astype(str) != "")
    groups = [g for _, g in rows.groupby("_g", sort=True)]
    return sorted(groups, key=lambda g: (not bool(g["_c"].any()), float(g["_g"].iloc[0])))


def _class_names(art: RunArtifacts, text: Any, sep: str) -> str:
    """Class names of a label string of tokens (``26`` -> ``Nucleoplasm``), comma-joined;
    tokens the run does not know are shown as they are."""
    if isinstance(text, int | float | np.integer | np.floating):  # a CSV column read as numbers
        text = "" if not np.isfinite(text) else str(int(text)) if float(text).is_integer() else ""
    if not isinstance(text, str) or not text.strip():
        return ""
    index = {t: k for k, t in enumerate(art.class_tokens)}
    parts = [t.strip() for t in (text.split() if sep == " " else text.split(sep))]
    return ", ".join(art.class_names[index[t]] if t in index else t for t in parts if t)


@register("duplicates", "Duplicates", groups=[], facts=[])
def duplicates_section(state: ReportState) -> dict[str, Any]:
    """Exact and near-duplicate groups, side by side with their given labels."""
    art = state.art
    issues = art.issues
    if issues is None or "duplicate_group" not in issues.columns:
        why = art.why("issues.csv") or "This run predates duplicate detection; re-run the scan."
        return {"available": False, "why": why}
    summary = _dict(_dict(art.section("detect")).get("duplicates"))
    groups = _duplicate_groups(issues)
    facts = [
        ("groups", _count(len(groups))),
        ("images in groups", _count(int(sum(len(g) for g in groups)))),
        ("groups whose labels disagree", _count(int(sum(g["_c"].any() for g in groups)))),
        ("evidence (pairs)", _fmt(_dict(summary.get("evidence")))),
    ]
    if summary.get("warning"):
        facts.append(("note", str(summary["warning"])))
    shown = groups[:MAX_DUPLICATE_GROUPS]
    index = {image_id: r for r, image_id in enumerate(art.ids or [])}
    members = [row for g in shown for row in g.itertuples(index=False)]
    thumbs, _, note = collect_field_images(
        art, [index.get(str(m.id), -1) for m in members], len(members), 0
    )
    k = 0
    out_groups = []
    for g in shown:
        items = []
        for m in g.itertuples(index=False):
            of = getattr(m, "duplicate_of", "")
            items.append(
                {
                    "id": str(m.id),
                    "labels": _class_names(art, m.given_labels, art.label_sep),
                    "of": "" if pd.isna(of) else str(of),
                    "thumb": thumbs[k] if k < len(thumbs) else "",
                }
            )
            k += 1
        conflict = g["duplicate_conflict"].fillna("").astype(str)
        text = next((c for c in conflict if c), "")
        out_groups.append({"conflict": _class_names(art, text, ";"), "members": items})
    return {
        "available": True,
        "facts": facts,
        "groups": out_groups,
        "n_hidden": len(groups) - len(shown),
        "images_note": note,
    }


# --------------------------------------------------------------------- leakage

#: Leaked pairs listed in the report (strongest first); all are in leaks.csv.
MAX_LEAK_ROWS = 100


@register("leakage", "Leakage", rows=[], facts=[])
def leakage_section(state: ReportState) -> dict[str, Any]:
    """Images of this dataset that also appear in the datasets of ``scan --against``."""
    art = state.art
    summary = art.section("leaks")
    if not summary:
        return {
            "available": False,
            "why": "Not checked: scan with --against OTHER (e.g. the test set) to list the "
            "images this dataset shares with it.",
        }
    run = RunDir(art.run_dir)
    table = run.read_table(LEAKS_CSV) if run.file(LEAKS_CSV).is_file() else pd.DataFrame()
    facts = [
        (str(d.get("dataset", "")), f"{_count(d.get('n_leaked', 0))} images shared "
         f"({_count(d.get('n_pairs', 0))} pairs) with its {_count(d.get('n_images', 0))} images")
        for d in _list(summary.get("datasets"))
        if isinstance(d, dict)
    ]  # fmt: skip
    rows = []
    if len(table):
        order = pd.to_numeric(table["correlation"], errors="coerce").fillna(1.0)
        table = table.assign(strength=order).sort_values("strength", ascending=False, kind="stable")
        for r in table.head(MAX_LEAK_ROWS).itertuples(index=False):
            rows.append(
                {
                    "id": str(r.id),
                    "dataset": str(r.dataset),
                    "other_id": str(r.other_id),
                    "evidence": str(r.evidence),
                    "correlation": f"{float(r.strength):.3f}",
                    "scale": str(getattr(r, "scale", "")),
                    "shift": f"{getattr(r, 'shift_y', '')}, {getattr(r, 'shift_x', '')}",
                }
            )
    return {
        "available": True,
        "facts": facts,
        "rows": rows,
        "n_hidden": max(0, len(table) - len(rows)),
    }
