"""The default order against every single detector, per problem family (issue 14).

For each scanned dataset (a dataset with ``truth.csv`` and a run directory holding its
out-of-fold probabilities and embeddings), re-runs the five default detectors on the
run's inputs (no training, as ``labelaudit scan D --probs R/oof_probs.csv --embeddings
R/embeddings.npy`` would) and scores against the truth: AUROC of each detector, the
label and image orders and the default order, for label problems, image problems and
any problem, each against the clean images (as ``labelaudit bench``). Prints the table
and the margins of the default order over the best single detector of each family.

Usage::

    labelaudit synth D7 --n 400 --seed 7 && labelaudit scan D7 --out R7 --preset demo
    python benchmarks/default_order.py s7=D7:R7 [NAME=DATASET:RUN ...]
    python benchmarks/default_order.py s7=D7:R7 ... --grid   # also the constants' grid

``--grid`` repeats the margins for null-width quantiles 0.75-0.95 and strong-evidence
thresholds 2.5-4 (``labelaudit.compare.NULL_QUANTILE`` and ``STRONG_Z``), the grid the
defaults were chosen from (docs/benchmarks.md, "default order").
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

LABEL_NOISE = {"missing", "extra", "swap"}
DETECTORS = ("confident", "knn", "isolation", "intensity", "quality")


def _truth(ids: list[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Label-problem and image-problem masks, aligned to ``ids``."""
    truth = pd.read_csv(path, dtype=str).set_index("ID").loc[ids]
    kinds = [set(str(n).split(";")) - {"none"} for n in truth["noise"]]
    label = np.array([bool(k & LABEL_NOISE) for k in kinds])
    image = np.array([bool(k - LABEL_NOISE) for k in kinds])
    return label, image


def _auroc(problem: np.ndarray, clean: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    keep = problem | clean
    return float(roc_auc_score(problem[keep], np.nan_to_num(np.asarray(score, float))[keep]))


def score_run(name: str, dataset: Path, run: Path) -> dict:
    """Every detector's and order's AUROC (label / image / any) on one scanned dataset."""
    from labelaudit.compare import run_detectors
    from labelaudit.rundir import RunDir

    inputs = RunDir(run).audit_inputs()
    label, image = _truth(inputs.ids, dataset / "truth.csv")
    clean = ~(label | image)
    groups = (label, image, label | image)
    results, _, _ = run_detectors(inputs, list(DETECTORS))
    single = {m: [_auroc(g, clean, r.image_score) for g in groups] for m, r in results.items()}
    return {"name": name, "results": results, "groups": groups, "clean": clean, "single": single}


def orders(scored: dict) -> dict[str, list[float]]:
    """AUROC of the label, image and default orders under the current constants."""
    from labelaudit.compare import family_scores

    fam = family_scores(scored["results"])
    out = {}
    for key, values in (("label order", fam.label), ("image order", fam.image)):
        out[key] = [_auroc(g, scored["clean"], values) for g in scored["groups"]]
    out["default order"] = [_auroc(g, scored["clean"], fam.problem) for g in scored["groups"]]
    return out


def margins(scored: dict) -> list[float]:
    """Default order minus the best single detector, for label / image / any."""
    best = [max(v[i] for v in scored["single"].values()) for i in range(3)]
    return [d - b for d, b in zip(orders(scored)["default order"], best, strict=True)]


def _cells(values: list[float]) -> str:
    return " / ".join(f"{v:.3f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=DATASET:RUN (DATASET holds truth.csv)")
    parser.add_argument("--grid", action="store_true", help="also the constants' grid")
    args = parser.parse_args(argv)
    scored = []
    for spec in args.runs:
        name, _, paths = spec.partition("=")
        dataset, _, run = paths.partition(":")
        if not (name and dataset and run):
            parser.error(f"expected NAME=DATASET:RUN, got {spec!r}")
        scored.append(score_run(name, Path(dataset), Path(run)))

    names = [s["name"] for s in scored]
    print("AUROC, label / image / any problem (each against the clean images)\n")
    print("| score | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for m in DETECTORS:
        print(f"| {m} | " + " | ".join(_cells(s["single"][m]) for s in scored) + " |")
    table = [orders(s) for s in scored]
    for key in ("label order", "image order", "default order"):
        print(f"| {key} | " + " | ".join(_cells(t[key]) for t in table) + " |")
    print("\nmargin, default order - best single detector of the family:")
    for s in scored:
        print(f"  {s['name']}: " + " / ".join(f"{m:+.3f}" for m in margins(s)))

    if args.grid:
        from labelaudit import compare

        saved = compare.NULL_QUANTILE, compare.STRONG_Z
        print("\nquantile  widths  cells short  total shortfall")
        try:
            for q, z in itertools.product((0.75, 0.8, 0.85, 0.9, 0.95), (2.5, 3.0, 3.5, 4.0)):
                compare.NULL_QUANTILE, compare.STRONG_Z = q, z
                m = [x for s in scored for x in margins(s)]
                short = [x for x in m if x < -1e-9]
                print(f"{q:8.2f}  {z:6.1f}  {len(short):11d}  {-sum(short):15.3f}")
        finally:
            compare.NULL_QUANTILE, compare.STRONG_Z = saved
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
