"""Honest numbers: confidence intervals for before/after comparisons.

Two kinds of interval, both returned as an :class:`Interval`:

* :func:`paired_interval`: a Student-t interval of the mean of paired differences
  (e.g. one F1 change per split seed);
* :func:`bootstrap_delta`: a paired bootstrap over test images (rows) of
  ``metric(y, after) - metric(y, before)``, percentile interval. Both models are
  scored on the *same* resampled images, so the interval reflects how much the
  change depends on which images happen to be in the test set.

:func:`macro_f1`, :func:`micro_f1` and :func:`class_f1` follow scikit-learn's
``precision_recall_fscore_support(..., zero_division=0)`` (what ``retrain``'s
metrics use): a class with no true and no predicted positives has F1 0 and still
counts in the macro mean. :func:`bootstrap_f1` computes the macro, micro and
per-class intervals of one comparison at once, from per-class counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sps

Metric = Callable[[np.ndarray, np.ndarray], float]

#: Marks a printed change whose 95 % interval contains 0.
NOISE_MARK = "~"
NOISE_NOTE = (
    f"{NOISE_MARK} within noise: the change's 95% bootstrap interval over the test images "
    "contains 0"
)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval.

    Attributes
    ----------
    mean
        The point estimate (mean of paired differences, or the observed change).
    low, high
        Interval bounds; NaN when there is too little data for an interval.
    n
        Number of pairs (seeds) or of resampled rows (test images).
    level
        Confidence level of the interval.
    """

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies above or below zero (NaN bounds: False)."""
        return bool(self.low > 0 or self.high < 0)

    @property
    def width(self) -> float:
        """``high - low`` (NaN without an interval)."""
        return float(self.high - self.low)

    def format(self, digits: int = 3) -> str:
        """``"+0.031 [+0.008, +0.054]"`` (``"+0.031 [n/a]"`` without an interval)."""

        def sign(x: float) -> str:
            return f"{x:+.{digits}f}"

        if math.isnan(self.low) or math.isnan(self.high):
            return f"{sign(self.mean)} [n/a]"
        return f"{sign(self.mean)} [{sign(self.low)}, {sign(self.high)}]"

    @classmethod
    def from_dict(cls, d: dict) -> Interval:
        """The inverse of :meth:`to_dict` (``None`` bounds -> NaN)."""
        low, high = d.get("low"), d.get("high")
        return cls(
            float(d["mean"]),
            math.nan if low is None else float(low),
            math.nan if high is None else float(high),
            int(d.get("n", 0)),
            float(d.get("level", 0.95)),
        )

    def to_dict(self) -> dict:
        """JSON-ready: ``mean, low, high, n, level, excludes_zero`` (NaN -> None)."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "mean": clean(self.mean),
            "low": clean(self.low),
            "high": clean(self.high),
            "n": int(self.n),
            "level": float(self.level),
            "excludes_zero": self.excludes_zero,
        }


def format_change(d: dict | None) -> str:
    """An :meth:`Interval.to_dict` as ``"+0.031 [+0.008, +0.054]"``, with
    :data:`NOISE_MARK` appended when the interval contains 0 (``"n/a"`` for ``None``)."""
    if d is None:
        return "n/a"
    iv = Interval.from_dict(d)
    return iv.format() + ("" if iv.excludes_zero else f" {NOISE_MARK}")


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")


def paired_interval(deltas, level: float = 0.95) -> Interval:
    """Mean of paired differences with a Student-t confidence interval.

    Parameters
    ----------
    deltas
        One difference (after - before) per pair, e.g. per split seed.
    level
        Confidence level.

    Returns
    -------
    Interval
        ``mean ± t_{(1+level)/2, n-1} * sd / sqrt(n)``; with one difference the
        bounds are NaN (no spread to estimate).

    Raises
    ------
    ValueError
        No differences, a non-finite one, or ``level`` outside (0, 1).
    """
    _check_level(level)
    d = np.asarray(deltas, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("paired_interval needs at least one difference")
    if not np.isfinite(d).all():
        raise ValueError("paired_interval: differences must be finite")
    mean = float(d.mean())
    if d.size == 1:
        return Interval(mean, math.nan, math.nan, 1, level)
    half = float(_sps.t.ppf((1 + level) / 2, d.size - 1)) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return Interval(mean, mean - half, mean + half, int(d.size), level)


def _counts(y: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None):
    """Per-class (tp, fp, fn); ``weights`` (B, n) row multiplicities give (B, K) each."""
    yf, pf = y.astype(np.float64), pred.astype(np.float64)
    tp, fp, fn = yf * pf, (1 - yf) * pf, yf * (1 - pf)
    if weights is None:
        return tp.sum(axis=0), fp.sum(axis=0), fn.sum(axis=0)
    return weights @ tp, weights @ fp, weights @ fn


def _f1(tp, fp, fn):
    """F1 from counts, 0 where there is nothing to score (zero_division=0)."""
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(np.shape(denom)), where=denom > 0)


def _as_bool(y_true, pred) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(pred, dtype=bool)
    if y.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"expected two (n, K) arrays of the same shape, got {y.shape}, {p.shape}")
    return y, p


def class_f1(y_true, pred) -> np.ndarray:
    """Per-class F1 of bool (n, K) arrays (zero_division=0), shape (K,)."""
    y, p = _as_bool(y_true, pred)
    return _f1(*_counts(y, p))


def macro_f1(y_true, pred) -> float:
    """Unweighted mean of per-class F1 over all K classes (zero_division=0)."""
    return float(class_f1(y_true, pred).mean())


def micro_f1(y_true, pred) -> float:
    """F1 of the pooled counts of all classes (zero_division=0)."""
    y, p = _as_bool(y_true, pred)
    tp, fp, fn = (c.sum() for c in _counts(y, p))
    return float(_f1(tp, fp, fn))


def label_errors(labels, truth) -> int:
    """Label-level errors: how many (image, class) labels differ from the truth.

    Parameters
    ----------
    labels, truth
        Bool (n, K) label sets.

    Returns
    -------
    int
        ``sum(labels XOR truth)``.
    """
    a, b = _as_bool(labels, truth)
    return int(np.logical_xor(a, b).sum())


def _resample(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) row indices drawn with replacement, fixed by ``seed``."""
    if n < 1:
        raise ValueError("bootstrap needs at least one row")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _percentile(observed: float, samples: np.ndarray, n: int, level: float) -> Interval:
    alpha = (1 - level) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return Interval(float(observed), float(low), float(high), int(n), level)


def bootstrap_delta(
    y_true,
    pred_before,
    pred_after,
    metric: Metric,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Paired bootstrap interval of ``metric(y, after) - metric(y, before)``.

    Parameters
    ----------
    y_true, pred_before, pred_after
        (n, K) arrays over the same n test images (rows).
    metric
        ``metric(y_true, pred) -> float``, e.g. :func:`macro_f1` or :func:`micro_f1`.
    n_boot
        Bootstrap resamples of the rows (each scores both models on the same rows).
    seed
        Seed of the resampling (same seed, same interval).
    level
        Confidence level of the percentile interval.

    Returns
    -------
    Interval
        ``mean``: the observed change on all rows; ``low``/``high``: percentiles of
        the resampled changes; ``n``: number of rows.
    """
    _check_level(level)
    y, before, after = (np.asarray(a) for a in (y_true, pred_before, pred_after))
    if not (len(y) == len(before) == len(after)):
        raise ValueError("y_true, pred_before and pred_after need the same number of rows")
    idx = _resample(len(y), n_boot, seed)
    deltas = np.array([metric(y[i], after[i]) - metric(y[i], before[i]) for i in idx])
    observed = metric(y, after) - metric(y, before)
    return _percentile(observed, deltas, len(y), level)


@dataclass(frozen=True)
class F1Deltas:
    """:func:`bootstrap_f1`'s answer: the F1 changes of one before/after comparison."""

    macro: Interval
    micro: Interval
    per_class: list[Interval]


def bootstrap_f1(
    y_true,
    pred_before,
    pred_after,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> F1Deltas:
    """Macro, micro and per-class F1 changes with paired bootstrap intervals.

    The same as :func:`bootstrap_delta` with :func:`macro_f1`, :func:`micro_f1` and
    each class's F1 (same resamples for all of them, for a given ``seed``), computed
    from per-class counts in one matrix product per model.

    Parameters
    ----------
    y_true, pred_before, pred_after
        Bool (n, K) arrays over the same n test images.
    n_boot, seed, level
        As in :func:`bootstrap_delta`.

    Returns
    -------
    F1Deltas
    """
    _check_level(level)
    y, before = _as_bool(y_true, pred_before)
    _, after = _as_bool(y_true, pred_after)
    idx = _resample(len(y), n_boot, seed)
    # Multiplicity of each row in each resample: (n_boot, n).
    flat = (idx + len(y) * np.arange(n_boot)[:, None]).ravel()
    weights = np.bincount(flat, minlength=n_boot * len(y)).reshape(n_boot, len(y)).astype(float)

    def scores(pred: np.ndarray, w: np.ndarray | None):
        tp, fp, fn = _counts(y, pred, w)
        per = _f1(tp, fp, fn)
        micro = _f1(tp.sum(axis=-1), fp.sum(axis=-1), fn.sum(axis=-1))
        return per, per.mean(axis=-1), micro

    (pb, mab, mib), (pa, maa, mia) = scores(before, weights), scores(after, weights)
    (ob, omab, omib), (oa, omaa, omia) = scores(before, None), scores(after, None)
    n = len(y)
    return F1Deltas(
        macro=_percentile(float(omaa - omab), maa - mab, n, level),
        micro=_percentile(float(omia - omib), mia - mib, n, level),
        per_class=[
            _percentile(float(oa[k] - ob[k]), pa[:, k] - pb[:, k], n, level)
            for k in range(y.shape[1])
        ],
    )
