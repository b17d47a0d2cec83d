"""Label evidence beyond one model's probabilities, combined by a rule each dataset fits.

Confident learning reads one thing: the out-of-fold probability of each label. The
run holds more evidence about whether a label is right:

* the **probability** itself, relative to its class's average self-confidence (the
  threshold of cleanlab's one-vs-rest confident joint), the rest of the image's
  probabilities (a strong class the labels lack makes a swap likely) and cleanlab's
  label quality of the whole image;
* the **neighbour labels**: the share of the image's nearest neighbours in the
  embedding space carrying the class (``knn``'s agreement);
* the **image content**: how much better the labels would explain the image's stain
  statistics with the class flipped, under ``quality``'s additive label model of each
  label-shaped measure (:func:`labelaudit.detect.quality.label_model_fit`: adding
  class k moves the image's z by ``-effect_k``; a missing label leaves "more in the
  image than its labels explain");
* the **cells** (a cell-level scan, ``scan --level cell``): the strongest and the mean
  out-of-fold probability of the class over the image's cells, relative to their
  averages over the images labelled with it (:func:`cell_support`). The cell model is
  a second model, trained on other inputs (one cell at a time), so where it agrees
  with the field model an error is likelier than either says alone.

Fixed weights for these did not generalise across the benchmark sets (the fitted
weights change sign between them; docs/benchmarks.md, default order), so each
dataset fits its own combination, without the truth:

1. **Plant** known label noise into ``copies`` copies of the user's labels
   (:func:`plant_label_noise`: a share ``plant_rate`` of the images gets one
   ``missing``, ``extra`` or ``swap`` error, the new classes drawn by prevalence).
2. Recompute the cheap evidence for each planted copy (the probabilities stay: they
   are out of fold, so a planted label is as unseen by the model of its image as a
   real one; neighbour shares, the label model and cleanlab's image quality are
   recomputed on the copy).
3. Fit a logistic regression per direction (a given label that is wrong, an absent
   label that should be there) of "planted" on the evidence, **cross-fitted**: the
   images are split into ``folds``, and each image's real labels are scored by the
   model fitted on the planted copies of the other images only. ``repeats``
   plantings and fold splits are averaged (in logits).
4. Move the posteriors from the planted prevalence to the data's own, per direction
   (a prior shift of the logit), with the noise rate confident learning estimates
   (:func:`confident_learning_rates`). The maximum-likelihood prior of Saerens et
   al. (2002, EM on the posteriors) was tried and collapsed on the real-pixel set
   (given-label noise estimated at 0).

Scores
------
* per (image, class) ``score`` = ``value`` = the posterior that the given label
  (present or absent) is wrong; rows: every given pair and every absent pair with a
  posterior of at least 0.01;
* per image ``combined_score`` = the posterior that any of its labels is wrong,
  ``1 - prod_k (1 - q_k)``: the label family's reference ranking (``label_score``'s
  bulk, replacing confident learning's);
* flagged pairs: posterior >= ``flag_at`` (``"remove"`` for a given label, ``"add"``
  for an absent one); :mod:`labelaudit.detect.suggest` trusts those above its own
  threshold.

Measured in docs/benchmarks.md, "label evidence".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelaudit.core.params import Integral, Interval, Real
from labelaudit.detect.base import (
    AuditInputs,
    CellPredictions,
    Detector,
    DetectorResult,
    make_findings,
    register,
)

#: Probabilities are clipped here before their logit (a 1e-6 and a 1e-9 are both "no").
P_CLIP = 1e-4
#: Label-model residuals are clipped here (robust sigmas) before the flip gain, so an
#: image fault (a black stain) does not read as a missing class.
Z_CLIP = 6.0
#: Planted entries per regression at most (a uniform subsample beyond).
MAX_TRAIN_ROWS = 200_000
#: Absent pairs with a posterior below this are left out of the findings.
MIN_ROW_POSTERIOR = 0.01


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), P_CLIP, 1.0 - P_CLIP)
    return np.log(p / (1.0 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def plant_label_noise(
    labels: np.ndarray,
    rate: float,
    rng: np.random.Generator,
    exclusive: np.ndarray | list[int] | tuple[int, ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``labels`` with one label error planted in a share ``rate`` of the images.

    Each chosen image gets one error among those its labels allow: ``missing`` (one
    given label dropped; needs two or more), ``extra`` (one absent class added) or
    ``swap`` (one given label replaced by an absent class). Added classes are drawn
    by prevalence (with one pseudo-count each), as a labeller's slip would pick them.

    ``exclusive``: indices of classes never combined with another (HPA's Negative;
    issue 23's class roles). No planted set joins one with another class: an image
    given an exclusive class can only have it swapped for another class, and a swap
    *to* an exclusive class (drawn like any added class) replaces the whole set.

    Returns
    -------
    noisy, flipped
        The planted copy and the N x K mask of the entries that were flipped.
    """
    labels = np.asarray(labels, dtype=bool)
    n, k = labels.shape
    noisy = labels.copy()
    weight = labels.sum(axis=0) + 1.0
    is_exclusive = np.zeros(k, dtype=bool)
    is_exclusive[np.asarray(exclusive, dtype=int)] = True
    for i in np.flatnonzero(rng.random(n) < rate):
        given = np.flatnonzero(labels[i])
        absent = np.flatnonzero(~labels[i])
        joinable = absent[~is_exclusive[absent]]
        kinds = []
        if len(given) >= 2:
            kinds.append("missing")
        if len(joinable) and not is_exclusive[given].any():
            kinds.append("extra")
        if len(absent) and len(given):
            kinds.append("swap")
        if not kinds:
            continue
        kind = kinds[rng.integers(len(kinds))]
        new = None
        if kind == "extra":
            w = weight[joinable]
            new = rng.choice(joinable, p=w / w.sum())
        elif kind == "swap":
            pool = absent if len(given) == 1 or not len(joinable) else joinable
            if is_exclusive[given].any():
                pool = absent[~is_exclusive[absent]] if len(joinable) else absent
            w = weight[pool]
            new = rng.choice(pool, p=w / w.sum())
        if kind == "missing" or (kind == "swap" and not is_exclusive[new]):
            noisy[i, rng.choice(given)] = False
        if kind == "swap" and is_exclusive[new]:
            noisy[i, :] = False  # a swap to an exclusive class replaces the whole set
        if new is not None:
            noisy[i, new] = True
    return noisy, noisy != labels


@dataclass
class EvidenceContext:
    """What the evidence of any labelling of the same images needs (computed once)."""

    probs: np.ndarray
    neighbours: np.ndarray | None
    measures: dict[str, np.ndarray]
    min_group: int
    prior_weight: float = 1.0
    image_quality: bool = False
    #: N x K strongest and mean cell probabilities (NaN rows: images without cells).
    cell_strongest: np.ndarray | None = None
    cell_mean: np.ndarray | None = None


def cell_support(cells: CellPredictions, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per image and class, the strongest and the mean probability over its cells.

    Parameters
    ----------
    cells
        The cell-level model's out-of-fold probabilities; ``table["id"]`` names each
        cell's image.
    ids
        The N image ids (row order of the result).

    Returns
    -------
    strongest, mean
        N x K arrays; the rows of images without cells are NaN.

    Raises
    ------
    ValueError
        A cell names an image that is not in ``ids``.
    """
    from labelaudit.detect.cells import field_positions

    field_of = field_positions(cells.table, ids)
    probs = np.asarray(cells.probs, dtype=float)
    n, k = len(ids), probs.shape[1]
    count = np.bincount(field_of, minlength=n)
    strongest = np.zeros((n, k))
    np.maximum.at(strongest, field_of, probs)
    total = np.zeros((n, k))
    np.add.at(total, field_of, probs)
    empty = count == 0
    strongest[empty] = np.nan
    mean = np.where(empty[:, None], np.nan, total / np.maximum(count, 1)[:, None])
    return strongest, mean


def entry_features(labels: np.ndarray, ctx: EvidenceContext) -> tuple[np.ndarray, list[str]]:
    """Per (image, class) evidence that the label is wrong, as an N x K x F array.

    Features (names returned alongside): the probability's logit and its class
    threshold's; the image's most contrary other entries (the strongest absent class
    and the weakest given one, relative to their thresholds); its number of labels;
    cleanlab's label quality of the whole image (``ctx.image_quality``); the neighbour
    share's logit and the class prevalence's (with embeddings); the label model's flip
    gain and the image's unexplained residual (with statistics); the strongest and
    the mean cell probability's logits relative to their class thresholds (with
    cells). The same feature means opposite things for a given and an absent label (a
    high probability), which is why the models are fitted per direction.
    """
    y = np.asarray(labels, dtype=bool)
    n, k = y.shape
    p = ctx.probs
    lp = _logit(p)
    lt = np.broadcast_to(_logit(_class_threshold(p, y)), (n, k))
    rel = lp - lt
    feats: dict[str, np.ndarray] = {"logit_p": lp, "logit_threshold": lt}
    # The strongest absent class and weakest given label other than the entry itself.
    absent_rel = np.where(y, -np.inf, rel)
    given_rel = np.where(y, rel, np.inf)
    feats["other_absent_max"] = _other_extreme(absent_rel, np.max, -np.inf, default=-10.0)
    feats["other_given_min"] = _other_extreme(given_rel, np.min, np.inf, default=10.0)
    feats["n_labels"] = np.broadcast_to(y.sum(axis=1, keepdims=True).astype(float), (n, k))
    if ctx.image_quality:
        from cleanlab.multilabel_classification import rank

        from labelaudit.detect.base import label_lists

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quality = np.asarray(rank.get_label_quality_scores(label_lists(y), p), dtype=float)
        quality = _logit(np.nan_to_num(quality, nan=1.0))
        feats["image_quality"] = np.broadcast_to(quality[:, None], (n, k))
    if ctx.neighbours is not None and ctx.neighbours.shape[1] > 0:
        from labelaudit.detect.knn import neighbour_agreement

        q = neighbour_agreement(y, ctx.neighbours, ctx.prior_weight)
        feats["logit_neighbours"] = _logit(q)
        feats["logit_prevalence"] = np.broadcast_to(_logit(y.mean(axis=0)), (n, k))
    if ctx.measures:
        gain, residual = _flip_gain(y, ctx.measures, ctx.min_group)
        feats["flip_gain"] = gain
        feats["residual"] = np.broadcast_to(residual[:, None], (n, k))
    for name, values in (("cell_strongest", ctx.cell_strongest), ("cell_mean", ctx.cell_mean)):
        if values is not None:
            feats[name] = _relative_to_class(values, y)
    names = list(feats)
    return np.stack([np.asarray(feats[f], dtype=float) for f in names], axis=-1), names


def _class_threshold(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per class, the mean of ``values`` over the images labelled with it (confident
    learning's average self-confidence; NaN values left out; 0.5 for a class no
    image with a value is labelled with)."""
    member = labels & ~np.isnan(values)
    counts = member.sum(axis=0)
    sums = np.where(member, values, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.5)


def _relative_to_class(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``logit(values)`` minus the logit of its class threshold (as for the
    probabilities); 0 where ``values`` is NaN (an image without cells says nothing)."""
    known = ~np.isnan(values)
    rel = _logit(np.where(known, values, 0.5)) - _logit(_class_threshold(values, labels))[None, :]
    return np.where(known, rel, 0.0)


def _other_extreme(values: np.ndarray, fn, empty: float, default: float) -> np.ndarray:
    """Per entry, ``fn`` over the other entries of its row (``default`` if none)."""
    n, k = values.shape
    if k < 2:
        return np.full((n, k), default)
    order = np.sort(values, axis=1)
    first, second = (order[:, -1], order[:, -2]) if fn is np.max else (order[:, 0], order[:, 1])
    out = np.where(values == first[:, None], second[:, None], first[:, None])
    return np.where(np.isfinite(out) & (out != empty), out, default)


def _flip_gain(
    labels: np.ndarray, measures: dict[str, np.ndarray], min_group: int
) -> tuple[np.ndarray, np.ndarray]:
    """How much better flipping each label explains the image's label-shaped measures.

    Per measure m, quality's label model gives the image's residual ``r`` (robust z)
    and each class's effect ``e``; flipping class k changes the residual to ``r - e_k``
    (adding) or ``r + e_k`` (removing). The gain is the drop in the sum of squared
    residuals over the measures (positive: the flipped labels fit the image better),
    with residuals clipped at :data:`Z_CLIP`. Also returns each image's mean squared
    clipped residual (how much the labels leave unexplained at all).
    """
    from labelaudit.detect.quality import label_model_fit

    y = np.asarray(labels, dtype=bool)
    n, k = y.shape
    sign = np.where(y, 1.0, -1.0)  # removing adds the effect back, adding subtracts it
    gain = np.zeros((n, k))
    residual = np.zeros(n)
    for x in measures.values():
        z, effect = label_model_fit(x, y, min_group)
        r = np.clip(z, -Z_CLIP, Z_CLIP)[:, None]
        flipped = np.clip(r + sign * effect[None, :], -Z_CLIP, Z_CLIP)
        gain += r**2 - flipped**2
        residual += r[:, 0] ** 2
    m = max(len(measures), 1)
    return gain / m, residual / m


def confident_learning_rates(labels: np.ndarray, probs: np.ndarray) -> dict[bool, float]:
    """The share of wrong given labels and of missing absent ones, as cleanlab counts them.

    cleanlab's one-vs-rest confident learning (``find_multilabel_issues_per_class``,
    its default filter) flags the pairs it estimates to be label issues; their
    number per direction over the entries of that direction is the data's noise
    rate as confident learning estimates it. ``{True: given, False: absent}``,
    each at least one entry's worth and at most 0.5.
    """
    from cleanlab.multilabel_classification import filter as cl_filter

    from labelaudit.detect.base import label_lists

    y = np.asarray(labels, dtype=bool)
    usable = (y.sum(axis=0) > 0) & (y.sum(axis=0) < len(y))
    flags = np.zeros_like(y)
    if usable.sum() >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flags[:, usable] = cl_filter.find_multilabel_issues_per_class(
                labels=label_lists(y[:, usable]), pred_probs=probs[:, usable], n_jobs=1
            )
    out = {}
    for present in (True, False):
        total = max(int((y == present).sum()), 1)
        out[present] = float(np.clip((flags & (y == present)).sum() / total, 1 / total, 0.5))
    return out


@register("combined")
@dataclass(kw_only=True, eq=False, repr=False)
class CombinedEvidence(Detector):
    """Whether each label is wrong, from all the run's evidence, combined per dataset.

    Parameters
    ----------
    copies : int
        Planted copies of the labels to fit on, per repeat.
    repeats : int
        Independent plantings and fold splits whose logits are averaged.
    plant_rate : float
        Share of the images that get a planted error in each copy.
    folds : int
        Cross-fitting folds: an image is scored by the model fitted on the others.
    k : int
        Neighbours per image (as ``knn``).
    n_components : int or None
        PCA dimensions before the neighbour search (as ``knn``).
    min_group : int
        Classes with fewer images have no effect in the label model (as ``quality``).
    flag_at : float
        Posterior at which a label is flagged.
    regularisation : float
        Inverse regularisation strength ``C`` of the logistic regressions.
    adjust_prior : bool
        Move the posteriors to the noise rate confident learning estimates (else
        they stay at the planted rate).
    image_quality : bool
        Use cleanlab's label quality of the whole image as evidence.
    image_stage : bool
        Score an image by a second model of "a label of this image is wrong" fitted
        on the planted copies (else: the chance that any of its labels is wrong).
    cells : bool
        Use the cell-level model's probabilities as evidence when the inputs have
        them (a ``scan --level cell``).
    seed : int
        Seed of the planting and the folds.
    """

    family = "label"
    bulk_weight = 1.0
    #: In the label family's bulk order this replaces confident learning, whose
    #: probabilities it contains (compare.family_scores).
    supersedes = ("confident",)
    requires = ("labels", "probs")
    issue_columns = {"combined_score": "score"}
    parameter_constraints = {
        "copies": [Interval(Integral, 1, None, closed="left")],
        "plant_rate": [Interval(Real, 0, 0.5, closed="right")],
        "repeats": [Interval(Integral, 1, None, closed="left")],
        "folds": [Interval(Integral, 2, None, closed="left")],
        "k": [Interval(Integral, 1, None, closed="left")],
        "flag_at": [Interval(Real, 0, 1, closed="neither")],
        "regularisation": [Interval(Real, 0, None, closed="neither")],
    }

    copies: int = 4
    repeats: int = 3
    plant_rate: float = 0.1
    folds: int = 5
    k: int = 20
    n_components: int | None = 32
    min_group: int = 10
    flag_at: float = 0.5
    regularisation: float = 1.0
    adjust_prior: bool = True
    image_quality: bool = True
    image_stage: bool = True
    cells: bool = True
    seed: int = 0

    def context(self, inputs: AuditInputs) -> EvidenceContext:
        """The evidence that does not depend on the labels (neighbours, measures)."""
        assert inputs.probs is not None
        neighbours = None
        if inputs.embeddings is not None and inputs.n_images > 2:
            from labelaudit.detect.knn import neighbour_indices

            neighbours = neighbour_indices(inputs.embeddings, int(self.k), self.n_components)
        measures = {}
        if inputs.stats is not None:
            from labelaudit.detect.quality import label_shaped_measures

            measures = label_shaped_measures(inputs.stats, inputs.protein_channel)
            measures = {m: x for m, x in measures.items() if np.ptp(np.nan_to_num(x)) > 0}
        strongest = mean = None
        if self.cells and inputs.cells is not None and len(inputs.cells.table):
            strongest, mean = cell_support(inputs.cells, inputs.ids)
        return EvidenceContext(
            inputs.probs,
            neighbours,
            measures,
            int(self.min_group),
            image_quality=bool(self.image_quality),
            cell_strongest=strongest,
            cell_mean=mean,
        )

    def posteriors(self, inputs: AuditInputs) -> tuple[np.ndarray, dict[str, Any]]:
        """N x K posteriors that each given label (present or absent) is wrong."""
        post, _, info = self.evidence(inputs)
        return post, info

    def evidence(self, inputs: AuditInputs) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Per-label posteriors, the per-image score, and what was fitted.

        The image score is a second logistic regression, fitted on the planted
        copies too (their cross-fitted per-label logits): "planted error in the
        image" on the logit of the labels' noisy-OR and on cleanlab's label quality
        of the whole image, so each dataset also decides how much the aggregate of
        confident learning adds to the per-label evidence.
        """
        y = inputs.labels
        n, k = y.shape
        ctx = self.context(inputs)
        real, names = entry_features(y, ctx)
        # Exclusive classes (issue 23's class roles, where the inputs carry them):
        # planted sets never join one with another class.
        exclusive = np.asarray(getattr(inputs, "exclusive_idx", ()), dtype=int)
        rng = np.random.default_rng(int(self.seed))
        logit_post = np.zeros((n, k))
        image_logit = np.zeros(n)
        train_prior = {True: 0.0, False: 0.0}
        repeats = int(self.repeats)
        for _ in range(repeats):
            # Each repeat plants afresh and splits the folds afresh; the logits are
            # averaged (a bagged estimate: one planting's chance errors average out).
            logit, prior, planted = self._cross_fit(y, real, ctx, rng, exclusive)
            logit_post += logit / repeats
            image_logit += self._image_stage(real, logit, planted, names) / repeats
            for present in train_prior:
                train_prior[present] += prior[present] / repeats
        assert inputs.probs is not None  # a required input
        post, info = self._adjusted(y, inputs.probs, logit_post, train_prior, names)
        return post, _sigmoid(image_logit), info

    def _image_stage(
        self,
        real: np.ndarray,
        logit: np.ndarray,
        planted: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
        names: list[str],
    ) -> np.ndarray:
        """Logit of "a label of this image is wrong", fitted on the planted copies."""

        def image_features(feats: np.ndarray, entry_logit: np.ndarray) -> np.ndarray:
            none_wrong = np.sum(np.log1p(-np.clip(_sigmoid(entry_logit), 0, 1 - 1e-9)), axis=1)
            any_wrong = -np.expm1(none_wrong)
            columns = [_logit(any_wrong)]
            if "image_quality" in names:
                columns.append(feats[:, 0, names.index("image_quality")])
            return np.column_stack(columns)

        x = np.vstack([image_features(f, lg) for f, lg, _ in planted])
        t = np.concatenate([fl.any(axis=1) for _, _, fl in planted])
        return self._fit_predict(x, t, image_features(real, logit))[0]

    def _cross_fit(
        self,
        y: np.ndarray,
        real: np.ndarray,
        ctx: EvidenceContext,
        rng: np.random.Generator,
        exclusive: np.ndarray,
    ) -> tuple[np.ndarray, dict[bool, float], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """One planting and one cross-fit: each image's logits from the other folds' fit.

        Returns the real labels' logits, the planted prevalence per direction, and per
        planted copy its features, its per-label logits (cross-fitted the same way)
        and its flipped mask.
        """
        n, k = y.shape
        copies = []
        for _ in range(int(self.copies)):
            noisy, flipped = plant_label_noise(y, float(self.plant_rate), rng, exclusive)
            copies.append((entry_features(noisy, ctx)[0], noisy, flipped))
        n_folds = min(int(self.folds), n)
        fold = rng.permutation(n) % n_folds
        logit_post = np.zeros((n, k))
        copy_logits = [np.zeros((n, k)) for _ in copies]
        train_prior = {}
        for present in (True, False):
            # Per direction: a given label that is wrong / an absent one that is missing.
            target_all = []
            for f in range(n_folds):
                rows_x, rows_t = [], []
                for feats, noisy, flipped in copies:
                    keep = (fold != f)[:, None] & (noisy == present)
                    rows_x.append(feats[keep])
                    rows_t.append(flipped[keep])
                x_train, t_train = np.concatenate(rows_x), np.concatenate(rows_t)
                if len(t_train) > MAX_TRAIN_ROWS:
                    # A uniform subsample keeps the planted prevalence (and the prior
                    # shift) and bounds the fit's cost on an HPA-size dataset.
                    pick = rng.choice(len(t_train), MAX_TRAIN_ROWS, replace=False)
                    x_train, t_train = x_train[pick], t_train[pick]
                target_all.append(t_train)
                score = (fold == f)[:, None] & (y == present)
                held = [(fold == f)[:, None] & (noisy == present) for _, noisy, _ in copies]
                out = self._fit_predict(
                    x_train,
                    t_train,
                    real[score],
                    *(feats[h] for (feats, _, _), h in zip(copies, held, strict=True)),
                )
                logit_post[score] = out[0]
                for lg, h, values in zip(copy_logits, held, out[1:], strict=True):
                    lg[h] = values
            t = np.concatenate(target_all)
            train_prior[present] = float(np.clip(t.mean() if t.size else 0.01, 1e-4, 0.5))
        planted = [(c[0], lg, c[2]) for c, lg in zip(copies, copy_logits, strict=True)]
        return logit_post, train_prior, planted

    def _adjusted(
        self,
        y: np.ndarray,
        probs: np.ndarray,
        logit_post: np.ndarray,
        train_prior: dict[bool, float],
        names: list[str],
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Posteriors at the data's own prevalence, per direction, and what was fitted."""
        n, k = y.shape
        post = np.zeros((n, k))
        priors = {}
        counted = confident_learning_rates(y, probs)
        for present, what in ((True, "wrong_given"), (False, "missing_absent")):
            mask = y == present
            if self.adjust_prior:
                shift = _logit(counted[present]) - _logit(train_prior[present])
                post[mask], priors[what] = _sigmoid(logit_post[mask] + shift), counted[present]
            else:
                post[mask], priors[what] = _sigmoid(logit_post[mask]), train_prior[present]
        info = {
            "features": names,
            "planted_prevalence": {
                "wrong_given": train_prior[True],
                "missing_absent": train_prior[False],
            },
            "estimated_prevalence": priors,
            "estimated_label_errors": float(post.sum()),
        }
        return post, info

    def _fit_predict(self, x: np.ndarray, t: np.ndarray, *x_new: np.ndarray) -> list[np.ndarray]:
        """Logits of the planted-vs-clean logistic regression on each of ``x_new``."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if t.all() or not t.any():
            rate = float(np.clip(t.mean() if t.size else 0.0, 1e-4, 1 - 1e-4))
            return [np.full(len(xn), np.log(rate / (1 - rate))) for xn in x_new]
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=float(self.regularisation), max_iter=1000)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x, t)
            return [model.decision_function(xn) if len(xn) else np.zeros(0) for xn in x_new]

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        n = inputs.n_images
        y = inputs.labels
        post, staged, info = self.evidence(inputs)
        image_score = staged if self.image_stage else 1.0 - np.prod(1.0 - post, axis=1)
        rows = y | (post >= MIN_ROW_POSTERIOR)
        img, cls = np.nonzero(rows)
        score = post[img, cls]
        flagged = score >= float(self.flag_at)
        suggestion = np.where(flagged, np.where(y[img, cls], "remove", "add"), "").astype(object)
        findings = make_findings(inputs, self.name, img, cls, score, flagged, suggestion, score)
        return DetectorResult(
            detector=self.name,
            findings=findings,
            image_score=image_score,
            image_flagged=np.zeros(n, dtype=bool) | (post >= float(self.flag_at)).any(axis=1),
            columns={"combined_score": image_score},
            summary={**info, "n_flagged_pairs": int(flagged.sum())},
        )
