"""labelaudit's detectors and orders side by side with cleanlab Datalab, per noise type.

For each scanned dataset (a dataset with ``truth.csv`` and a run directory holding its
out-of-fold probabilities, embeddings and image statistics), re-runs the default
detectors on the run's inputs (no training, as ``labelaudit scan D --probs
R/oof_probs.csv --embeddings R/embeddings.npy`` would), builds the issues table (the
default order and the suggestions), and gives cleanlab's Datalab
(``task="multilabel"``) the same out-of-fold probabilities and the run's embeddings as
features. Prints, per dataset, the AUROC of every detector, every order and every
Datalab issue type for label problems (all, and ``missing``, ``extra``, ``swap`` on
their own), image problems and any problem, each against the clean images (as
``labelaudit bench``), and what accepting every suggestion does to the label-level
errors.

Usage::

    labelaudit synth D7 --n 400 --seed 7 && labelaudit scan D7 --out R7 --preset demo
    pip install 'labelaudit[bench]'   # cleanlab[datalab]: never a labelaudit dependency
    python benchmarks/label_evidence.py s7=D7:R7 [NAME=DATASET:RUN ...] [--no-datalab]
        [--markdown] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

LABEL_NOISE = ("missing", "extra", "swap")
#: Rows of the table: groups of problem images, each scored against the clean images.
GROUPS = ("label", *LABEL_NOISE, "image", "any")


def truth_groups(ids: list[str], path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Problem masks per group (:data:`GROUPS`) and the clean mask, aligned to ``ids``."""
    truth = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("ID").loc[ids]
    kinds = [set(str(n).split(";")) - {"none", ""} for n in truth["noise"]]
    label = np.array([bool(k & set(LABEL_NOISE)) for k in kinds])
    image = np.array(
        [bool(k - set(LABEL_NOISE) - {"duplicate", "duplicate_conflict"}) for k in kinds]
    )
    groups = {"label": label, "image": image, "any": label | image}
    for t in LABEL_NOISE:
        groups[t] = np.array([t in k for k in kinds])
    clean = np.array([not k for k in kinds])
    return {g: groups[g] for g in GROUPS}, clean


def true_labels(ids: list[str], path: Path, tokens: list[str]) -> np.ndarray:
    """The truth file's true labels as an N x K matrix aligned to ``ids``."""
    from labelaudit.data.labels import split_any_labels

    truth = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("ID").loc[ids]
    column = {t: k for k, t in enumerate(tokens)}
    out = np.zeros((len(ids), len(tokens)), dtype=bool)
    for i, text in enumerate(truth["true_label"]):
        for token in split_any_labels(text):
            out[i, column[token]] = True
    return out


def auroc(problem: np.ndarray, clean: np.ndarray, score: np.ndarray) -> float:
    """AUROC of ``score`` for the ``problem`` images against the ``clean`` ones."""
    from sklearn.metrics import roc_auc_score

    keep = problem | clean
    if not problem.any() or not clean.any():
        return float("nan")
    return float(roc_auc_score(problem[keep], np.nan_to_num(np.asarray(score, float))[keep]))


def datalab_scores(labels: np.ndarray, probs: np.ndarray, features: np.ndarray | None) -> dict:
    """Per-image suspicion (1 - Datalab's score) of every issue type Datalab finds.

    ``label`` is Datalab's label issue (multi-label: cleanlab's label quality of the
    given labels); ``datalab max`` is the most suspicious of all its issue types per
    image, Datalab's answer for "any problem".
    """
    from cleanlab import Datalab

    lists = [list(np.flatnonzero(row)) for row in labels]
    lab = Datalab(data={"labels": lists}, label_name="labels", task="multilabel", verbosity=0)
    kwargs = {"pred_probs": probs}
    if features is not None:
        kwargs["features"] = np.asarray(features, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab.find_issues(**kwargs)
    out = {}
    for issue_type in lab.get_issue_summary()["issue_type"]:
        frame = lab.get_issues(issue_type)
        column = f"{issue_type}_score"
        if column in frame.columns and frame[column].notna().any():
            out[str(issue_type)] = 1.0 - frame[column].to_numpy(dtype=float)
    if out:
        out["datalab max"] = np.max(np.vstack(list(out.values())), axis=0)
    return out


def score_run(
    name: str, dataset: Path, run: Path, use_datalab: bool = True, before: bool = False
) -> dict:
    """Every score's AUROC per group and the suggestions' effect on one scanned dataset.

    ``before``: without the label evidence (the detectors, orders and suggestions as
    they were before it).
    """
    from labelaudit.data.labels import split_any_labels
    from labelaudit.pipeline.bench import suggestion_bench
    from labelaudit.pipeline.compare import DEFAULT_DETECTORS, build_issues, run_detectors
    from labelaudit.rundir import RunDir

    inputs = RunDir(run).audit_inputs()
    groups, clean = truth_groups(inputs.ids, dataset / "truth.csv")
    start = time.perf_counter()
    detectors = [m for m in DEFAULT_DETECTORS if not (before and m == "combined")]
    results, _, _ = run_detectors(inputs, detectors)
    issues = build_issues(inputs, results).set_index("id").loc[inputs.ids]
    seconds = time.perf_counter() - start
    scores = {m: np.asarray(r.image_score, dtype=float) for m, r in results.items()}
    for column, label in (
        ("label_score", "label order"),
        ("image_score", "image order"),
        ("problem_score", "default order"),
    ):
        scores[label] = issues[column].to_numpy(dtype=float)
    datalab_seconds = None
    if use_datalab:
        start = time.perf_counter()
        for key, values in datalab_scores(inputs.labels, inputs.probs, inputs.embeddings).items():
            scores[f"datalab {key}" if key != "datalab max" else key] = values
        datalab_seconds = time.perf_counter() - start
    table = {m: {g: auroc(groups[g], clean, s) for g in GROUPS} for m, s in scores.items()}
    true = true_labels(inputs.ids, dataset / "truth.csv", inputs.class_tokens)
    token_sets = [frozenset(np.asarray(inputs.class_tokens)[row]) for row in true]
    suggestions = suggestion_bench(
        [frozenset(np.asarray(inputs.class_tokens)[row]) for row in inputs.labels],
        [frozenset(split_any_labels(str(s))) for s in issues["suggested_labels"].fillna("")],
        token_sets,
    )
    counts = {g: int(m.sum()) for g, m in groups.items()}
    counts["clean"] = int(clean.sum())
    return {
        "name": name,
        "auroc": table,
        "counts": counts,
        "suggestions": suggestions,
        "evidence": results["combined"].summary if "combined" in results else None,
        "seconds": {"labelaudit": round(seconds, 1), "datalab": datalab_seconds},
    }


def format_run(scored: dict, markdown: bool = False) -> str:
    """One dataset's table: score x group, the best single detector per group marked."""
    from labelaudit.pipeline.compare import DEFAULT_DETECTORS

    table = scored["auroc"]
    best = {
        g: max((table[m][g] for m in DEFAULT_DETECTORS if m in table), default=float("nan"))
        for g in GROUPS
    }
    counts = scored["counts"]
    header = ["score"] + [f"{g} ({counts[g]})" for g in GROUPS]
    rows = []
    for m, by_group in table.items():
        cells = []
        for g in GROUPS:
            v = by_group[g]
            text = "-" if np.isnan(v) else f"{v:.3f}"
            if markdown and m in DEFAULT_DETECTORS and v == best[g]:
                text = f"**{text}**"
            cells.append(text)
        rows.append([m, *cells])
    s = scored["suggestions"]
    tail = (
        f"suggestions: {s['n_changes']} label changes, precision "
        f"{(s['precision'] or 0):.3f}; label errors {s['errors_given']} -> "
        f"{s['errors_accepted']} ({1 - s['errors_accepted'] / max(s['errors_given'], 1):.0%}"
        f" removed); clean {counts['clean']}"
    )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return f"{scored['name']}\n\n" + "\n".join(lines) + f"\n\n{tail}\n"
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return f"== {scored['name']}\n" + "\n".join(lines) + f"\n{tail}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=DATASET:RUN")
    parser.add_argument("--no-datalab", action="store_true", help="leave cleanlab Datalab out")
    parser.add_argument("--markdown", action="store_true", help="markdown tables")
    parser.add_argument(
        "--before", action="store_true", help="without the label evidence (the old orders)"
    )
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    out = []
    for spec in args.runs:
        name, _, paths = spec.partition("=")
        dataset, _, run = paths.partition(":")
        scored = score_run(
            name, Path(dataset), Path(run), use_datalab=not args.no_datalab, before=args.before
        )
        print(format_run(scored, markdown=args.markdown), flush=True)
        out.append(scored)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
