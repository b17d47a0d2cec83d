"""Your own weak model's predictions given to ``find_issues``: rankings and suggestions.

A hard set of a kind the synthetic fields are not: scikit-learn's
``make_multilabel_classification`` (overlapping classes, so even a good model is often
confidently wrong), a few labels flipped, and a one-vs-rest logistic regression's
5-fold out-of-fold probabilities with the raw features as embeddings, given to
:func:`labelaudit.find_issues` as a user with a model of their own would. Prints, per
seed: the model's out-of-fold micro F1 against the true labels, the AUROC of
``label_score`` and of cleanlab Datalab's ``label`` issue for the images with a
flipped label, and the suggestions (label changes, how many are right, errors before
and after accepting them all).

Usage::

    python benchmarks/weak_model.py [--seeds 0 1 2] [--n 600] [--flips 40] [--no-datalab]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import labelaudit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # Datalab as label_evidence.py runs it
from label_evidence import datalab_scores  # noqa: E402


def make_set(seed: int, n: int, flips: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, true labels, given labels): one label flipped in ``flips`` images."""
    from sklearn.datasets import make_multilabel_classification

    features, truth = make_multilabel_classification(
        n_samples=n, n_features=20, n_classes=6, n_labels=2, random_state=seed,
        allow_unlabeled=False,
    )  # fmt: skip
    truth = truth.astype(bool)
    given = truth.copy()
    rng = np.random.default_rng(seed + 1)
    for r in rng.choice(n, flips, replace=False):
        k = int(rng.integers(truth.shape[1]))
        given[r, k] = ~given[r, k]
        if not given[r].any():  # never leave an image without labels: flip another
            given[r, k] = ~given[r, k]
            given[r, (k + 1) % truth.shape[1]] = ~given[r, (k + 1) % truth.shape[1]]
    return features, truth, given


def score_seed(seed: int, n: int, flips: int, datalab: bool) -> dict:
    """One seed's numbers (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, roc_auc_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.multiclass import OneVsRestClassifier

    features, truth, given = make_set(seed, n, flips)
    model = OneVsRestClassifier(LogisticRegression(max_iter=1000))
    probs = cross_val_predict(model, features, given, cv=5, method="predict_proba")
    wrong = (given != truth).any(axis=1)
    issues = labelaudit.find_issues(given, pred_probs=probs, features=features).issues
    issues = issues.sort_index()
    out = {
        "seed": seed,
        "micro_f1": float(f1_score(truth, probs > 0.5, average="micro")),
        "label_score": float(roc_auc_score(wrong, issues["label_score"])),
    }
    if datalab:
        out["datalab_label"] = float(
            roc_auc_score(wrong, datalab_scores(given, probs, None)["label"])
        )
    changed = given.copy()
    for row, text in issues["label_changes"].fillna("").items():
        for change in filter(None, str(text).split(";")):
            k = int(change[1:].split(" (")[0])
            changed[row, k] = change[0] == "+"
    flipped = changed != given
    out["changes"] = int(flipped.sum())
    out["right"] = int((flipped & (changed == truth)).sum())
    out["errors_before"] = int((given != truth).sum())
    out["errors_after"] = int((changed != truth).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--flips", type=int, default=40)
    parser.add_argument("--no-datalab", action="store_true")
    args = parser.parse_args()
    print(
        "| seed | OOF micro F1 vs truth | `label_score` | Datalab `label` | label changes "
        "| right | label errors before -> after |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for seed in args.seeds:
        r = score_seed(seed, args.n, args.flips, not args.no_datalab)
        datalab = f"{r['datalab_label']:.3f}" if "datalab_label" in r else "-"
        print(
            f"| {seed} | {r['micro_f1']:.3f} | {r['label_score']:.3f} | {datalab} "
            f"| {r['changes']} | {r['right']} | {r['errors_before']} -> {r['errors_after']} |"
        )


if __name__ == "__main__":
    main()
