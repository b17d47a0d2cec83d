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
    python benchmarks/default_order.py s7=D7:R7 ... --bound  # also the interleaving bound

``--bound`` adds, per dataset, the best any interleaving of the label order and the image
order can do (:func:`interleave_bound`): the highest label AUROC of an order that takes
each next image from the top of one of the two family orders and keeps the image AUROC
at least the best single image detector's, chosen with the truth known. When it is below
the best single label detector, no rule that merges the two family orders (as
``problem_score`` does) can meet both family criteria of issue 14 on that dataset.

It also prints the most a linear combination of all detectors adds to the label family
(:func:`oracle_label_score`, fitted on the truth), the bound with that label order, and
the fixed weights whose label order does best on the worst run
(:func:`fixed_label_weights`).

``--grid`` repeats the margins for null-width quantiles 0.75-0.95 and strong-evidence
thresholds 2.5-4 (``labelaudit.pipeline.compare.NULL_QUANTILE`` and ``STRONG_Z``), the grid the
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
    from labelaudit.pipeline.compare import run_detectors
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
    from labelaudit.pipeline.compare import family_scores

    fam = family_scores(scored["results"])
    out = {}
    for key, values in (("label order", fam.label), ("image order", fam.image)):
        out[key] = [_auroc(g, scored["clean"], values) for g in scored["groups"]]
    out["default order"] = [_auroc(g, scored["clean"], fam.problem) for g in scored["groups"]]
    return out


def best_single(scored: dict) -> list[float]:
    """The best single detector's AUROC, for label / image / any."""
    return [max(v[i] for v in scored["single"].values()) for i in range(3)]


def margins(scored: dict) -> list[float]:
    """Default order minus the best single detector, for label / image / any."""
    return [
        d - b for d, b in zip(orders(scored)["default order"], best_single(scored), strict=True)
    ]


def _normal_score(result) -> np.ndarray:
    """A detector's image score as a normal score: probit of its rank percentile."""
    from scipy.stats import norm

    from labelaudit.pipeline.compare import rank_percentile

    pct = np.nan_to_num(rank_percentile(result.image_score), nan=0.5)
    return norm.ppf(np.clip(pct, 1e-3, 0.999))


def interleave_bound(
    label_order: np.ndarray,
    image_order: np.ndarray,
    label: np.ndarray,
    image: np.ndarray,
    clean: np.ndarray,
    image_target: float,
) -> float:
    """The highest label AUROC of any interleaving of two orders, image AUROC held.

    An interleaving builds one order by repeatedly taking the next image from the top
    of ``label_order`` or of ``image_order`` (skipping images already taken): every
    merge of the two rankings by a monotone rule is one (``problem_score`` is). Among
    those whose AUROC for image problems against the clean images is at least
    ``image_target``, returns the highest AUROC for label problems against the clean
    images, found exactly by dynamic programming over (taken from the label order,
    taken from the image order), carrying for each count of image pairs kept the most
    label pairs. ``nan`` when no interleaving reaches ``image_target``.

    Orders are strict (no ties). O(n^2 x image problems x clean images) time.
    """
    label_order = np.asarray(label_order, dtype=int)
    image_order = np.asarray(image_order, dtype=int)
    label, image, clean = (np.asarray(a, dtype=bool) for a in (label, image, clean))
    n = len(label_order)
    rank_l = np.empty(n, dtype=int)
    rank_l[label_order] = np.arange(n)
    rank_i = np.empty(n, dtype=int)
    rank_i[image_order] = np.arange(n)

    def taken(mask: np.ndarray) -> np.ndarray:
        """[i, j]: images of ``mask`` among the first i of the label order and j of the image."""
        both = np.zeros((n + 1, n + 1))
        np.add.at(both, (rank_l[mask] + 1, rank_i[mask] + 1), 1)
        from_l = np.concatenate([[0], np.cumsum(mask[label_order])])
        from_i = np.concatenate([[0], np.cumsum(mask[image_order])])
        return (from_l[:, None] + from_i[None, :] - both.cumsum(0).cumsum(1)).astype(np.int64)

    label_above, image_above = taken(label), taken(image)
    n_pairs_l, n_pairs_i = int(label.sum() * clean.sum()), int(image.sum() * clean.sum())
    if n_pairs_l == 0 or n_pairs_i == 0:
        return float("nan")
    width = n_pairs_i + 1
    impossible = np.iinfo(np.int64).min // 4
    # best[j][c]: the most label pairs the rest of the order can keep, from state (i, j),
    # when it keeps exactly c image pairs (a pair: a problem image above a clean one).
    end = np.full(width, impossible, dtype=np.int64)
    end[0] = 0
    below: list[np.ndarray] = []  # the row for i + 1
    for i in range(n, -1, -1):
        row: list[np.ndarray] = [end] * (n + 1)
        for j in range(n, -1, -1):
            if i == n and j == n:
                continue
            options = []
            if i < n:
                options.append((label_order[i], rank_i[label_order[i]] < j, below[j]))
            if j < n:
                options.append((image_order[j], rank_l[image_order[j]] < i, row[j + 1]))
            values = []
            for image_id, already, rest in options:
                if already or not clean[image_id]:
                    values.append(rest)  # no clean image placed: no pairs decided
                    continue
                # a clean image placed now sits below every problem image taken so far
                kept_i = int(image_above[i, j])
                shifted = np.full(width, impossible, dtype=np.int64)
                shifted[kept_i:] = rest[: width - kept_i] + label_above[i, j]
                values.append(shifted)
            row[j] = values[0] if len(values) == 1 else np.maximum(values[0], values[1])
        below = row
    target = int(np.ceil(image_target * n_pairs_i - 1e-9))
    kept = below[0][target:].max() if target < width else impossible
    return float(kept) / n_pairs_l if kept > impossible // 2 else float("nan")


def bound_margin(scored: dict, label_score: np.ndarray | None = None) -> float:
    """Label margin of the best interleaving that holds the image family (see --bound).

    ``label_score``: the label order to interleave (default: the label family's).
    """
    from labelaudit.pipeline.compare import family_scores

    fam = family_scores(scored["results"])
    label, image, _ = scored["groups"]
    best = best_single(scored)
    bound = interleave_bound(
        np.argsort(-(fam.label if label_score is None else label_score), kind="stable"),
        np.argsort(-fam.image, kind="stable"),
        label,
        image,
        scored["clean"],
        best[1],
    )
    return bound - best[0]


def oracle_label_score(scored: dict) -> np.ndarray:
    """The best linear label order: fitted on the truth, in sample (see --bound).

    A logistic regression of "label problem" against the clean images on every
    detector's normal score (probit of its rank percentile); an upper bound on what a
    weighted combination of the detectors gives the label family.
    """
    from sklearn.linear_model import LogisticRegression

    label, _, _ = scored["groups"]
    features = np.column_stack([_normal_score(r) for r in scored["results"].values()])
    keep = label | scored["clean"]
    model = LogisticRegression(C=10.0, max_iter=1000).fit(features[keep], label[keep])
    return features @ model.coef_[0]


def label_gain(scored: dict, label_score: np.ndarray) -> float:
    """Label AUROC of ``label_score`` minus the best single detector's."""
    label, _, _ = scored["groups"]
    return _auroc(label, scored["clean"], label_score) - best_single(scored)[0]


def fixed_label_weights(scored: list[dict]) -> tuple[tuple[float, ...], list[float]]:
    """The fixed weights on knn, quality and intensity (each 0-0.3, not all 0; confident
    1) whose label order has the best worst-case margin over the best single label
    detector on all ``scored`` runs; (weights, margins per run). See --bound.

    All 0 is left out: it is confident learning's own order, margin 0 everywhere."""
    parts = [
        {m: _normal_score(s["results"][m]) for m in ("confident", "knn", "quality", "intensity")}
        for s in scored
    ]
    best_w, best_m = (0.0, 0.0, 0.0), [0.0] * len(scored)
    best_worst = -np.inf
    for w in itertools.product((0.0, 0.1, 0.2, 0.3), repeat=3):
        if not any(w):
            continue
        m = []
        for s, f in zip(scored, parts, strict=True):
            order = f["confident"] + w[0] * f["knn"] + w[1] * f["quality"] + w[2] * f["intensity"]
            m.append(label_gain(s, order))
        if min(m) > best_worst:
            best_worst, best_w, best_m = min(m), w, m
    return best_w, best_m


def _cells(values: list[float]) -> str:
    return " / ".join(f"{v:.3f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=DATASET:RUN (DATASET holds truth.csv)")
    parser.add_argument("--grid", action="store_true", help="also the constants' grid")
    parser.add_argument(
        "--bound", action="store_true", help="also the best interleaving of the family orders"
    )
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

    if args.bound:
        print(
            "\nbest interleaving of the label and image orders that holds the image family"
            " (chosen with the truth), label margin over the best single label detector:"
        )
        for s in scored:
            print(f"  {s['name']}: {bound_margin(s):+.4f}")
        print(
            "\nlinear label order on all detectors, fitted on the truth (in sample),"
            " label margin over the best single label detector:"
        )
        oracle = [oracle_label_score(s) for s in scored]
        for s, score in zip(scored, oracle, strict=True):
            print(f"  {s['name']}: {label_gain(s, score):+.4f}")
        print("\nboth: that label order interleaved with the image order, label margin:")
        for s, score in zip(scored, oracle, strict=True):
            print(f"  {s['name']}: {bound_margin(s, score):+.4f}")
        weights, best = fixed_label_weights(scored)
        print(
            "\nfixed weights (knn, quality, intensity; confident 1) with the best worst case,"
            f" {weights}, label order's margin:"
        )
        for s, m in zip(scored, best, strict=True):
            print(f"  {s['name']}: {m:+.4f}")

    if args.grid:
        from labelaudit.pipeline import compare

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
