"""What cleaning buys, measured: cleaning policies x class weights, many split seeds.

``retrain --clean`` trains one pair of networks on one split, and on a few hundred
test images a rare class flipping moves macro F1 by several points: one run cannot
tell a gain from noise. :func:`evaluate_cleaning` measures the same comparison many
times cheaply, in *probe mode*: the run's frozen-backbone embeddings (a ``scan
--mode probe`` run; the features do not depend on the labels, so one embedding pass
serves every policy and split) and one logistic regression per class, trained like
``retrain`` trains its networks:

* the split is ``retrain``'s (:func:`labelaudit.pipeline.evaluation.make_split`: test, validation
  and training parts, stratified, fixed by the seed), and cleaning is applied to the
  training and validation parts only (:func:`labelaudit.pipeline.evaluation.plan_cleaning`);
* a policy's decisions are :func:`labelaudit.pipeline.clean.plan_changes` of the run (the code
  ``labelaudit clean`` runs); soft policies' per-label weights and the class weights
  (:func:`labelaudit.pipeline.evaluation.class_weights`: ``method`` = ``1 - n_k / N`` scales
  class k's loss, ``pos`` the positives of class k by ``(N - n_k) / n_k``) enter the
  regression as sample weights of each class's model;
* per-class thresholds are tuned on the (cleaned) validation labels
  (:func:`labelaudit.pipeline.evaluation.tune_thresholds`), and the model is scored on the test
  images against their *true* labels (a truth file).

Every policy is compared with no cleaning on the same split and seed: the change in
true-label macro / micro F1, with a paired Student-t interval over seeds and a
bootstrap interval over test images (each seed's test set resampled, the same rows for
both sides, the mean change over seeds per resample).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from labelaudit.core.errors import RunDirError
from labelaudit.core.stats import Interval, class_f1, label_errors, micro_f1, paired_interval

if TYPE_CHECKING:  # evaluation imports the training package (torch): only when used
    from labelaudit.pipeline.evaluation import Split

#: Class-weight kinds compared (``retrain --class-weights``).
WEIGHT_KINDS: tuple[str, ...] = ("none", "method", "pos")


@dataclass(frozen=True)
class PolicyOutcome:
    """A policy applied to the whole run: new labels, removed images, label weights."""

    labels: np.ndarray
    removed: np.ndarray
    weights: np.ndarray | None


def fit_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_out: Sequence[np.ndarray],
    *,
    c: float = 0.1,
    sample_weight: np.ndarray | None = None,
    seed: int = 0,
) -> list[np.ndarray]:
    """One logistic regression per class on standardised features; probabilities.

    Parameters
    ----------
    x_train, y_train
        (n, D) features and bool (n, K) labels.
    x_out
        Feature matrices to predict.
    c
        Inverse L2 regularisation strength.
    sample_weight
        Optional (n, K): the weight of each training image in each class's model
        (per-label soft-cleaning weights times class weights).
    seed
        Solver random state.

    Returns
    -------
    list of (m, K) float32 probability arrays, one per matrix of ``x_out``.
    """
    scaler = StandardScaler().fit(x_train)
    a = scaler.transform(x_train)
    outs = [scaler.transform(x) for x in x_out]
    y = np.asarray(y_train, dtype=bool)
    probs = [np.empty((len(x), y.shape[1]), dtype=np.float32) for x in x_out]
    for k in range(y.shape[1]):
        yk = y[:, k].astype(int)
        w = None if sample_weight is None else np.asarray(sample_weight[:, k], dtype=float)
        used = yk if w is None else yk[w > 0]
        if used.size == 0 or used.min() == used.max():
            rate = (used.sum() + 0.5) / (used.size + 1.0)
            for p in probs:
                p[:, k] = rate
            continue
        clf = LogisticRegression(C=c, max_iter=1000, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(a, yk, sample_weight=w)
        for p, x in zip(probs, outs, strict=True):
            p[:, k] = clf.predict_proba(x)[:, 1]
    return probs


def training_weights(
    labels: np.ndarray, label_weight: np.ndarray | None, kind: str
) -> np.ndarray | None:
    """(n, K) sample weights: per-label weights times the class weights of ``kind``.

    ``method`` multiplies every image of class k's model by ``1 - n_k / N``; ``pos``
    its positive images by ``(N - n_k) / n_k`` (both from
    :func:`labelaudit.pipeline.evaluation.class_weights` on ``labels``).
    """
    from labelaudit.pipeline.evaluation import class_weights

    y = np.asarray(labels, dtype=bool)
    w = None if label_weight is None else np.asarray(label_weight, dtype=float).copy()
    values = class_weights(y, kind)
    if values is None:
        return w
    if w is None:
        w = np.ones(y.shape)
    if kind == "pos":
        return np.where(y, w * values[None, :], w)
    return w * values[None, :]


def policy_outcome(run_dir: str | Path, policy: str) -> PolicyOutcome:
    """:func:`labelaudit.pipeline.clean.plan_changes` of ``policy`` as arrays (nothing written)."""
    from labelaudit.pipeline.clean import plan_changes

    _, plan, _ = plan_changes(run_dir, policy=policy)
    return PolicyOutcome(plan.labels.copy(), ~plan.kept, plan.weights)


@dataclass
class _Data:
    ids: list[str]
    given: np.ndarray
    true: np.ndarray
    x: np.ndarray
    names: list[str]


def reduce_features(x: np.ndarray, components: int | None, seed: int = 0) -> np.ndarray:
    """The first ``components`` principal components of ``x`` (all of it if ``None``).

    Fitted on every image without labels, so it favours no policy; it makes the
    many logistic regressions of an evaluation several times faster.
    """
    if components is None or components >= min(x.shape):
        return x
    from sklearn.decomposition import PCA

    return PCA(components, random_state=seed).fit_transform(x).astype(np.float32)


def _read_run(run_dir: Path, truth: Path) -> _Data:
    from labelaudit.pipeline.bench import read_true_labels
    from labelaudit.rundir import RunDir

    run = RunDir(run_dir)
    info = run.dataset_info()
    ids, given = run.read_given(info)
    x = run.read_embeddings(len(ids))
    if x is None:
        raise RunDirError(f"{run_dir} has no embeddings.npy; scan it with --mode probe")
    mode = (run.section("train") or {}).get("mode")
    if mode not in (None, "probe"):
        raise RunDirError(
            f"{run_dir} was trained with mode {mode!r}: its embeddings come from models "
            "trained on the given labels; scan with --mode probe for label-free features"
        )
    true = read_true_labels(truth, ids, info)
    return _Data(ids, given, true, np.asarray(x, dtype=np.float32), list(info["class_names"]))


def _one(
    data: _Data,
    outcome: PolicyOutcome,
    split: Split,
    kind: str,
    c: float,
    seed: int,
) -> dict:
    from labelaudit.pipeline.evaluation import plan_cleaning, tune_thresholds

    plan = plan_cleaning(data.given, outcome.labels, outcome.removed, split)
    train, val, test = plan.train_idx, plan.val_idx, split.test_idx
    lw = None if outcome.weights is None else outcome.weights[train]
    sw = training_weights(plan.labels[train], lw, kind)
    val_p, test_p = fit_probe(
        data.x[train],
        plan.labels[train],
        [data.x[val], data.x[test]],
        c=c,
        sample_weight=sw,
        seed=seed,
    )
    thresholds = tune_thresholds(plan.labels[val], val_p)
    pred = test_p >= thresholds[None, :]
    rows = np.concatenate([split.train_idx, split.val_idx])
    kept = ~plan.removed[rows]
    wrong = (plan.labels[rows] != data.true[rows]) & kept[:, None]
    w = np.ones(wrong.shape) if outcome.weights is None else outcome.weights[rows]
    return {
        # The noise the model still trains on: wrong labels times their loss weight.
        "weighted_errors": float((wrong * w).sum()),
        "pred": pred,
        "n_train": int(len(train)),
        "n_removed": int(plan.removed[rows].sum()),
        "label_errors": label_errors(plan.labels[rows][kept], data.true[rows][kept]),
        "label_errors_given": label_errors(data.given[rows], data.true[rows]),
        "weighted_labels": int(0 if outcome.weights is None else (outcome.weights[rows] < 1).sum()),
    }


def evaluate_cleaning(
    run_dir: str | Path,
    truth: str | Path,
    *,
    policies: Sequence[str] = ("none", "relabel"),
    weight_kinds: Sequence[str] = ("none",),
    configs: Sequence[tuple[str, str]] | None = None,
    seeds: Sequence[int] = range(5),
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    c: float = 0.1,
    rare: int = 3,
    n_boot: int = 1000,
    components: int | None = 256,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every (policy, class weights) against no cleaning, over split seeds.

    Parameters
    ----------
    run_dir
        A ``scan --mode probe`` run (``embeddings.npy``, ``issues.csv``,
        ``findings.csv``, ``oof_probs.csv``).
    truth
        The dataset's ``truth.csv`` (``ID, true_label, ...``).
    policies, weight_kinds
        The grid compared (``configs`` replaces it with explicit pairs). The baseline
        ``("none", "none")`` is always included.
    seeds
        Split seeds (each a different train/validation/test split).
    test_fraction, val_fraction
        As in ``retrain``.
    c
        Inverse regularisation strength of the logistic regressions.
    rare
        How many of the rarest classes (by true positives in the dataset) the
        ``rare_f1`` column averages.
    n_boot
        Bootstrap resamples of each seed's test images.
    components
        Principal components of the embeddings the regressions use
        (:func:`reduce_features`; ``None``: all features).

    Returns
    -------
    (per_seed, summary)
        ``per_seed``: one row per (policy, weights, seed) with true-label macro /
        micro / rare-class F1, label-level errors of the cleaned training and
        validation labels, images removed. ``summary``: one row per (policy,
        weights) with the means and, against no cleaning with the same class
        weights (``d_*``) and against the unweighted uncleaned baseline
        (``vs_base_*``), the mean F1 change with its paired t interval over seeds
        (``*_t_low/high``) and the pooled bootstrap interval over test images
        (``*_boot_low/high``).
    """
    from labelaudit.pipeline.evaluation import make_split

    data = _read_run(Path(run_dir), Path(truth))
    data.x = reduce_features(data.x, components)
    grid = (
        list(configs) if configs is not None else [(p, w) for p in policies for w in weight_kinds]
    )
    needed = {("none", "none")} | {("none", w) for _, w in grid}
    grid = list(dict.fromkeys([("none", "none"), *sorted(needed), *grid]))
    outcomes = {p: policy_outcome(run_dir, p) for p in dict.fromkeys(p for p, _ in grid)}
    rarest = np.argsort(data.true.sum(axis=0), kind="stable")[:rare]
    splits = [(s, make_split(data.given, int(s), test_fraction, val_fraction)) for s in seeds]
    records, preds, truths = _score_seeds(data, outcomes, grid, splits, c, rarest)
    per_seed = pd.DataFrame.from_records(records)
    summary = _summarize(per_seed, preds, truths, grid, list(seeds), rarest, n_boot)
    return per_seed, summary


def _score_seeds(
    data: _Data,
    outcomes: dict[str, PolicyOutcome],
    grid: list[tuple[str, str]],
    splits: list[tuple[int, Split]],
    c: float,
    rarest: np.ndarray,
) -> tuple[list[dict], dict[tuple[str, str, int], np.ndarray], dict[int, np.ndarray]]:
    """Every (policy, weights) on every seed's split: the per-seed rows, the test
    predictions and the test images' true labels."""
    records: list[dict] = []
    preds: dict[tuple[str, str, int], np.ndarray] = {}
    truths: dict[int, np.ndarray] = {}
    for seed, split in splits:
        truths[seed] = data.true[split.test_idx]
        for policy, kind in grid:
            r = _one(data, outcomes[policy], split, kind, c, int(seed))
            preds[(policy, kind, seed)] = r.pop("pred")
            f1 = class_f1(truths[seed], preds[(policy, kind, seed)])
            records.append(
                {
                    "policy": policy,
                    "weights": kind,
                    "seed": int(seed),
                    "n_test": len(split.test_idx),
                    **r,
                    "macro_f1": float(f1.mean()),
                    "micro_f1": float(micro_f1(truths[seed], preds[(policy, kind, seed)])),
                    "rare_f1": float(f1[rarest].mean()),
                }
            )
    return records, preds, truths


def _boot_scores(y: np.ndarray, pred: np.ndarray, idx: np.ndarray, rarest: np.ndarray):
    """(macro, micro, rare) F1 of each bootstrap resample ``idx`` (n_boot, n)."""
    yb, pb = y[idx], pred[idx]  # (n_boot, n, K)
    tp = (yb & pb).sum(axis=1).astype(float)
    fp = (~yb & pb).sum(axis=1).astype(float)
    fn = (yb & ~pb).sum(axis=1).astype(float)
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    s_tp, s_fp, s_fn = tp.sum(axis=1), fp.sum(axis=1), fn.sum(axis=1)
    d = 2 * s_tp + s_fp + s_fn
    micro = np.divide(2 * s_tp, d, out=np.zeros_like(s_tp), where=d > 0)
    return f1.mean(axis=1), micro, f1[:, rarest].mean(axis=1)


def _summarize(per_seed, preds, truths, grid, seeds, rarest, n_boot) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    idx = {s: rng.integers(0, len(truths[s]), size=(n_boot, len(truths[s]))) for s in seeds}
    boot = {
        (p, w, s): _boot_scores(truths[s], preds[(p, w, s)], idx[s], rarest)
        for p, w in grid
        for s in seeds
    }
    metrics = ("macro_f1", "micro_f1", "rare_f1")
    rows = []
    by = per_seed.set_index(["policy", "weights", "seed"]).sort_index()
    for policy, kind in grid:
        mine = by.loc[(policy, kind)].loc[seeds]
        row = {
            "policy": policy,
            "weights": kind,
            "seeds": len(seeds),
            "n_test": int(mine["n_test"].iloc[0]),
            "label_errors_given": float(mine["label_errors_given"].mean()),
            "label_errors": float(mine["label_errors"].mean()),
            "weighted_errors": float(mine["weighted_errors"].mean()),
            "n_removed": float(mine["n_removed"].mean()),
            **{m: float(mine[m].mean()) for m in metrics},
        }
        for prefix, (bp, bw) in (("d", ("none", kind)), ("vs_base", ("none", "none"))):
            base = by.loc[(bp, bw)].loc[seeds]
            for j, m in enumerate(metrics):
                t = paired_interval(mine[m].to_numpy() - base[m].to_numpy())
                pooled = np.mean(
                    [boot[(policy, kind, s)][j] - boot[(bp, bw, s)][j] for s in seeds], axis=0
                )
                lo, hi = np.quantile(pooled, [0.025, 0.975])
                row.update(_interval_cols(f"{prefix}_{m}", t, float(lo), float(hi)))
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def _interval_cols(name: str, t: Interval, lo: float, hi: float) -> dict:
    return {
        name: t.mean,
        f"{name}_t_low": t.low,
        f"{name}_t_high": t.high,
        f"{name}_boot_low": lo,
        f"{name}_boot_high": hi,
    }


__all__ = [
    "WEIGHT_KINDS",
    "PolicyOutcome",
    "evaluate_cleaning",
    "fit_probe",
    "policy_outcome",
    "reduce_features",
    "training_weights",
]
