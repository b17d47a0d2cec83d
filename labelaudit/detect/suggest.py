"""Per-label suggestions: which flagged labels to change, and which only to doubt.

Confident learning flags (image, class) pairs whose given label disagrees with the
out-of-fold probability. With the weak models of a quick audit most of those flags
are wrong (docs/cleaning.md, "Suggestions"), so a flagged label becomes a
*suggested change* only where it is more likely right than the given label:

* the class is one the model has learned: out-of-fold average precision against
  the given labels >= ``min_class_ap`` (on unlearned classes every true label gets
  a low probability and reads as an error);
* no image-level detector (:data:`IMAGE_DETECTORS`) flagged the image (its pixels,
  hence its probabilities, are suspect);
* an *add* has probability >= ``add_min_p`` **and** at least ``add_min_neighbours``
  of the image's nearest neighbours in the embedding space carry the class (the
  ``knn`` detector's share): two different models agree; **or** the label evidence
  (``detect/combined.py``: probabilities, neighbours and image content combined by a
  rule fitted on planted noise) gives the missing label a posterior >=
  ``add_min_posterior``;
* a *remove* is trusted only in a swap, an image that also has a trusted add (the
  model sees another class instead of the given one), with probability <=
  ``swap_remove_max_p``. A lone low probability is weak evidence whatever its size:
  the model also misses many true labels (lone removals were right 50-80 % of the
  time at p <= 0.005 on the benchmark runs; ``remove_max_p`` re-enables them);
* the change would not leave the image without labels.

Every other flagged label is *doubtful*: worth a look, with no suggestion.

Each suggestion carries a ``confidence`` the user can read: the class's
out-of-fold precision at that probability, i.e. among the *other* images the model
scores at least as high (add) / at most as low (remove) for the class, the share
whose given label agrees with the suggestion.

The thresholds were chosen on six runs: ``synth --n 400`` seeds 7, 11 and 13 (demo
preset), the real-pixel set, and 2,000-field synthetic sets at 15 % and 30 % noise
scanned in probe mode (docs/cleaning.md, "Suggestions"). The probability rule alone,
chosen on seed 7, was right 80-100 % of the time on the first four and 57 % on the
probe-mode runs, whose logistic regressions are confidently wrong more often; the
neighbours' agreement holds on all six.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from labelaudit.data.roles import EMPTY_TARGET, conflicting_rows, resolve_exclusive

#: Detectors whose flag marks the pixels (not the labels) as suspect.
IMAGE_DETECTORS: tuple[str, ...] = ("intensity",)
#: The columns of :func:`suggest_labels`' table.
SUGGESTION_COLUMNS = [
    "row",
    "class",
    "action",
    "probability",
    "confidence",
    "class_ap",
    "trusted",
    "evidence",
]


@dataclass(frozen=True)
class SuggestRules:
    """The thresholds that make a flagged label a suggested change.

    Attributes
    ----------
    add_min_p
        Out-of-fold probability an added class needs.
    add_min_neighbours
        Share of the image's nearest neighbours that must carry an added class
        (``None``: not required; without neighbour evidence no add is trusted).
    remove_max_p
        Probability at or below which a given label is suggested for removal on its
        own (``None``: never; the default).
    swap_remove_max_p
        The same for an image that also has a trusted add (a swapped label).
    min_class_ap
        Out-of-fold average precision (against the given labels) a class needs.
    exclusive_min_p
        Probability at which the model calls a class present in a swap involving an
        exclusive class (:func:`exclusive_swaps`): a class needs it to replace a
        given exclusive class (with most neighbours carrying it); an empty target
        stain replaces the given labels with the exclusive class only where every
        other class stays below it.
    add_min_posterior
        The label evidence's posterior that the absent label is missing
        (``detect/combined.py``) at which an add is trusted without the probability
        and neighbour rule (``None``: never). Chosen on synth seeds 7, 11, 13 and the
        real-pixel set, where adds at 0.6 were right 91-100 % of the time
        (docs/benchmarks.md, "label evidence").
    """

    add_min_p: float = 0.85
    add_min_neighbours: float | None = 0.5
    remove_max_p: float | None = None
    swap_remove_max_p: float = 0.15
    min_class_ap: float = 0.7
    exclusive_min_p: float = 0.5
    add_min_posterior: float | None = 0.6

    @classmethod
    def from_confidence(cls, confidence: float, min_class_ap: float) -> SuggestRules:
        """Rules from the ``relabel`` policy's two parameters.

        ``confidence`` is the probability an add needs; a remove in a swap needs
        ``1 - confidence`` or less; the neighbour rule and lone removals keep their
        defaults.
        """
        return cls(
            add_min_p=float(confidence),
            swap_remove_max_p=1.0 - float(confidence),
            min_class_ap=float(min_class_ap),
        )


def class_ap(given: np.ndarray, probs: np.ndarray | None) -> np.ndarray:
    """Per-class out-of-fold average precision against the given labels.

    Parameters
    ----------
    given
        (N, K) bool given labels.
    probs
        (N, K) out-of-fold probabilities, or ``None``.

    Returns
    -------
    numpy.ndarray
        (K,) float; NaN without probabilities or for a class with no positive (or
        no negative) image.
    """
    from sklearn.metrics import average_precision_score

    k = given.shape[1]
    out = np.full(k, np.nan)
    if probs is None:
        return out
    for c in range(k):
        if 0 < given[:, c].sum() < len(given):
            out[c] = float(average_precision_score(given[:, c], probs[:, c]))
    return out


def precision_at(
    given: np.ndarray, probs: np.ndarray, row: int, col: int, add: bool, min_support: int = 10
) -> float:
    """The class's out-of-fold precision at the image's probability (image left out).

    For an add: the share of the other images with probability >= p that are
    labelled with the class; for a remove: the share of those with probability
    <= p that are not. Where fewer than ``min_support`` other images lie beyond p
    (an extreme probability), the ``min_support`` nearest to that end count. NaN
    when there is no other image.
    """
    p = probs[row, col]
    others = np.delete(probs[:, col], row)
    labelled = np.delete(given[:, col], row)
    if len(others) == 0 or not np.isfinite(p):
        return float("nan")
    m = min(min_support, len(others))
    if add:
        mask = others >= min(p, np.sort(others)[-m])
        return float(labelled[mask].mean())
    mask = others <= max(p, np.sort(others)[m - 1])
    return float((~labelled[mask]).mean())


def precision_at_many(
    given: np.ndarray,
    probs: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    add: np.ndarray,
    min_support: int = 10,
) -> np.ndarray:
    """:func:`precision_at` for many (row, class) pairs: one sort per class.

    The same numbers (each image still left out of its own precision), from
    counts on the class's sorted probabilities instead of a sort per pair: at
    100,000 images the per-pair form took 10 s for 7,000 flagged labels.
    """
    rows, cols = np.asarray(rows, dtype=int), np.asarray(cols, dtype=int)
    add = np.asarray(add, dtype=bool)
    out = np.full(len(rows), np.nan)
    n = len(probs)
    if n < 2:
        return out
    m = min(min_support, n - 1)
    for c in np.unique(cols):
        pick = np.flatnonzero(cols == c)
        column = probs[:, c]
        if not np.isfinite(column).all():  # NaN does not sort: the exact, slow form
            out[pick] = [
                precision_at(given, probs, r, c, a, min_support)
                for r, a in zip(rows[pick], add[pick], strict=True)
            ]
            continue
        order = np.argsort(column, kind="mergesort")
        values = column[order]
        labelled = np.concatenate([[0], np.cumsum(given[order, c])])  # labelled among the first i
        p, own, up = column[rows[pick]], given[rows[pick], c], add[pick]
        # The m-th most extreme of the *other* images: one copy of p is left out.
        above = n - np.searchsorted(values, p, "right")
        below = np.searchsorted(values, p, "left")
        mth_high = np.where(above >= m, values[n - m], values[n - m - 1])
        mth_low = np.where(below >= m, values[m - 1], values[m])
        lo = np.searchsorted(values, np.minimum(p, mth_high), "left")  # first >= threshold
        hi = np.searchsorted(values, np.maximum(p, mth_low), "right")  # past last <= threshold
        add_share = (labelled[n] - labelled[lo] - own) / (n - lo - 1)
        remove_share = (hi - labelled[hi] - (~own)) / (hi - 1)
        out[pick] = np.where(up, add_share, remove_share)
    return out


def suggest_labels(
    given: np.ndarray,
    probs: np.ndarray | None,
    candidates: pd.DataFrame,
    image_flagged: np.ndarray,
    rules: SuggestRules | None = None,
    class_names: list[str] | None = None,
    *,
    exclusive: Sequence[int] | np.ndarray = (),
    neighbours: np.ndarray | None = None,
    empty_target: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per flagged label: a trusted change or a doubt.

    Parameters
    ----------
    given
        (N, K) bool given labels.
    probs
        (N, K) out-of-fold probabilities (``None``: nothing is trusted).
    candidates
        Flagged findings: columns ``row`` (image index), ``class`` (class index)
        and ``add`` (bool: the flag suggests adding the class, else removing it);
        optionally ``probability`` (the finding's own probability; default
        ``probs[row, class]``) and ``neighbours`` (the share of the image's nearest
        neighbours carrying the class, :func:`neighbour_shares`; NaN: unknown).
    image_flagged
        (N,) bool: an image-level detector flagged the image.
    rules
        Thresholds (default :class:`SuggestRules`).
    class_names
        Names for the evidence text (default the class index).
    exclusive
        Indices of the exclusive classes (:mod:`labelaudit.data.roles`): swaps to
        and from them are suggested whole (:func:`exclusive_swaps`), a given label
        set joining one with another class is resolved, and no suggested set joins
        one with another class.
    neighbours
        (N, K) share of each image's nearest neighbours carrying each class
        (:func:`neighbour_shares`), for the candidates of exclusive swaps.
    empty_target
        (N,) bool: the image's target stain looks like the exclusive class's
        (quality's ``empty_target`` finding), the other support of a swap to it.

    Returns
    -------
    pandas.DataFrame
        :data:`SUGGESTION_COLUMNS`, one row per distinct candidate, sorted by row
        and class: ``action`` ``"add"``/``"remove"``, ``probability`` the
        out-of-fold probability, ``confidence`` see :func:`precision_at`,
        ``class_ap`` the class's average precision, ``trusted`` whether it is a
        suggested change, ``evidence`` why (or why not).
    """
    rules = rules or SuggestRules()
    given = np.asarray(given, dtype=bool)
    flagged = np.asarray(image_flagged, dtype=bool)
    names = class_names or [str(k) for k in range(given.shape[1])]
    cand = _candidate_table(candidates)
    excl = np.asarray(exclusive, dtype=int)
    ap = class_ap(given, probs)
    swaps = exclusive_swaps(given, probs, excl, ap, flagged, rules, neighbours, empty_target, names)
    if len(swaps):
        # A whole-set change replaces the image's single-label candidates.
        cand = cand[~cand["row"].isin(swaps["row"])]
    if cand.empty and swaps.empty:
        return _no_suggestions()
    table = _judge_candidates(given, probs, cand, ap, flagged, rules, excl, names)
    if swaps.empty:
        return table
    if table.empty:
        return swaps[SUGGESTION_COLUMNS].reset_index(drop=True)
    both = pd.concat([table, swaps[SUGGESTION_COLUMNS]], ignore_index=True)
    return both.sort_values(["row", "class"], kind="mergesort").reset_index(drop=True)


def _no_suggestions() -> pd.DataFrame:
    """An empty table of :data:`SUGGESTION_COLUMNS`."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in SUGGESTION_COLUMNS})


def _candidate_table(candidates: pd.DataFrame) -> pd.DataFrame:
    """The candidates typed, one row per (row, class), sorted; absent columns NaN."""
    cand = candidates.copy()
    for col in ("probability", "neighbours", "posterior"):
        if col not in cand.columns:
            cand[col] = np.nan
    return (
        cand[["row", "class", "add", "probability", "neighbours", "posterior"]]
        .astype(
            {
                "row": int,
                "class": int,
                "add": bool,
                "probability": float,
                "neighbours": float,
                "posterior": float,
            }
        )
        .drop_duplicates(["row", "class"])
        .sort_values(["row", "class"], kind="mergesort")
        .reset_index(drop=True)
    )


def _judge_candidates(
    given: np.ndarray,
    probs: np.ndarray | None,
    cand: pd.DataFrame,
    ap: np.ndarray,
    flagged: np.ndarray,
    rules: SuggestRules,
    excl: np.ndarray,
    names: list[str],
) -> pd.DataFrame:
    """:func:`suggest_labels`' verdict on each single-label candidate (module docstring)."""
    rows, cols, add = cand["row"].to_numpy(), cand["class"].to_numpy(), cand["add"].to_numpy()
    p = cand["probability"].to_numpy()
    if probs is not None:
        p = np.where(np.isnan(p), probs[rows, cols], p)
    q = cand["neighbours"].to_numpy()
    learned = np.nan_to_num(ap[cols], nan=-1.0) >= rules.min_class_ap
    usable = learned & ~flagged[rows] & np.isfinite(p)
    agree = np.ones(len(cand), dtype=bool)
    if rules.add_min_neighbours is not None:
        agree = np.nan_to_num(q, nan=-1.0) >= rules.add_min_neighbours
    trusted_add = usable & add & (p >= rules.add_min_p) & agree
    post = cand["posterior"].to_numpy()
    by_evidence = np.zeros(len(cand), dtype=bool)
    if rules.add_min_posterior is not None:
        by_evidence = usable & add & (np.nan_to_num(post, nan=-1.0) >= rules.add_min_posterior)
        trusted_add |= by_evidence
    swap = np.isin(rows, rows[trusted_add])
    lone_max = -np.inf if rules.remove_max_p is None else rules.remove_max_p
    remove_max = np.where(swap, rules.swap_remove_max_p, lone_max)
    trusted = trusted_add | (usable & ~add & (p <= remove_max))
    trusted &= ~_would_empty(given, rows, cols, add, trusted)
    joins = _would_join_exclusive(given, rows, cols, add, trusted, excl)
    trusted &= ~joins

    conf = np.full(len(cand), np.nan)
    if probs is not None:
        conf = precision_at_many(given, probs, rows, cols, add)
    evidence = [
        _evidence(names[c], a, pi, qi, api, f, ok, t, sw, rules, po)
        for c, a, pi, qi, api, f, ok, t, sw, po in zip(
            cols, add, p, q, ap[cols], flagged[rows], learned, trusted, swap, post, strict=True
        )
    ]
    evidence = [
        e.split("; doubtful: ")[0].removesuffix("; swap")
        + "; doubtful: would join an exclusive class"
        if j
        else e
        for e, j in zip(evidence, joins, strict=True)
    ]
    return pd.DataFrame(
        {
            "row": rows,
            "class": cols,
            "action": np.where(add, "add", "remove"),
            "probability": p,
            "confidence": conf,
            "class_ap": ap[cols],
            "trusted": trusted,
            "evidence": evidence,
        }
    )[SUGGESTION_COLUMNS]


def exclusive_swaps(
    given: np.ndarray,
    probs: np.ndarray | None,
    exclusive: np.ndarray,
    ap: np.ndarray,
    image_flagged: np.ndarray,
    rules: SuggestRules,
    neighbours: np.ndarray | None = None,
    empty_target: np.ndarray | None = None,
    names: list[str] | None = None,
) -> pd.DataFrame:
    """Whole-set suggestions involving an exclusive class (HPA: Negative).

    An exclusive class replaces a field's labels or is replaced; it is never added
    to or removed from a set alone. Three cases, on classes the model has learned
    (out-of-fold average precision >= ``min_class_ap``) and images no image-level
    detector flagged:

    * **swap to it**: the image is not given the exclusive class and either its
      target stain looks like the exclusive class's (``empty_target``: an empty
      protein stain with normal references) while the model, on learned given
      classes, calls no other class present (every other probability below
      ``exclusive_min_p``: its thresholded reading is empty or the exclusive
      class), or the model alone supports it as an add in a swap (the exclusive
      class learned, ``add_min_p``, most neighbours carrying it, every given label
      ``swap_remove_max_p`` or less). Suggested: the exclusive class alone (a
      trusted add and a trusted remove of every given label).
    * **swap from it**: the image is given the exclusive class alone, the model gives
      it ``swap_remove_max_p`` or less and some classes ``exclusive_min_p`` or more
      with most neighbours carrying them. Suggested: those classes.
    * **conflict**: the given set joins the exclusive class with others (never
      right): the side the model supports more stays (:func:`~labelaudit.data.roles.
      resolve_exclusive`); suggested whatever the thresholds (the given set is wrong
      either way), even where the image's pixels are suspect.

    Returns
    -------
    pandas.DataFrame
        :data:`SUGGESTION_COLUMNS` rows (all trusted), possibly empty; ``confidence``
        is filled by the caller's :func:`precision_at_many` rules (here: the class's
        out-of-fold precision at the probability).
    """
    if probs is None or exclusive.size == 0:
        return _no_suggestions()
    n, k = given.shape
    names = names or [str(c) for c in range(k)]
    flagged = np.asarray(image_flagged, dtype=bool)
    share = np.full((n, k), np.nan) if neighbours is None else np.asarray(neighbours, float)
    swaps = _SwapEvidence(
        given,
        probs,
        exclusive,
        learned=np.nan_to_num(ap, nan=-1.0) >= rules.min_class_ap,
        share=share,
        agree=np.nan_to_num(share, nan=-1.0) >= (rules.add_min_neighbours or 0.0),
        empty=np.zeros(n, dtype=bool) if empty_target is None else np.asarray(empty_target, bool),
        rules=rules,
        names=names,
    )
    has_excl = np.asarray(given[:, exclusive].any(axis=1))
    conflict = conflicting_rows(given, exclusive)
    found: list[tuple[int, np.ndarray, str]] = []  # (row, new label set, why)
    for r in range(n):
        if conflict[r]:
            new = resolve_exclusive(given[r : r + 1], probs[r : r + 1], exclusive)[0]
            kept = ", ".join(names[c] for c in np.flatnonzero(new))
            found.append((r, new, f"exclusive class given with others: the model supports {kept}"))
        elif flagged[r]:
            continue
        elif not has_excl[r] and given[r].any():
            swap = swaps.to_exclusive(r)
            if swap is not None:
                found.append((r, *swap))
        elif has_excl[r]:
            swap = swaps.from_exclusive(r)
            if swap is not None:
                found.append((r, *swap))
    if not found:
        return _no_suggestions()
    return _swap_table(given, probs, ap, names, found)


@dataclass(frozen=True)
class _SwapEvidence:
    """What :func:`exclusive_swaps` weighs for one image, over a whole run."""

    given: np.ndarray
    probs: np.ndarray
    exclusive: np.ndarray
    learned: np.ndarray  # (K,) the class's average precision reaches min_class_ap
    share: np.ndarray  # (N, K) neighbours carrying the class (NaN: unknown)
    agree: np.ndarray  # (N, K) most neighbours carry it
    empty: np.ndarray  # (N,) the target stain looks like the exclusive class's
    rules: SuggestRules
    names: list[str]

    def to_exclusive(self, r: int) -> tuple[np.ndarray, str] | None:
        """The swap of image ``r``'s labels to the exclusive class, if supported."""
        given, probs, exclusive, rules = self.given, self.probs, self.exclusive, self.rules
        k = given.shape[1]
        e = exclusive[np.argmax(probs[r, exclusive])]
        mine = np.flatnonzero(given[r])
        # The stain's reading, where the model sees none of the given classes nor
        # any other (its thresholded reading is empty or the exclusive class); or
        # the model alone, on an add's and a swap's terms.
        pos = np.setdiff1d(np.arange(k), exclusive)
        by_stain = (
            self.empty[r]
            and self.learned[mine].all()
            and probs[r, pos].max() < rules.exclusive_min_p
        )
        by_model = (
            self.learned[e]
            and probs[r, e] >= rules.add_min_p
            and self.agree[r, e]
            and probs[r, mine].max() <= rules.swap_remove_max_p
        )
        if not (by_stain or by_model):
            return None
        new = np.zeros(k, dtype=bool)
        new[e] = True
        why = "protein stain empty" if by_stain else f"neighbours {self.share[r, e]:.2f}"
        return new, (
            f"swap to {self.names[e]}: p={probs[r, e]:.2f}, given labels p<="
            f"{probs[r, mine].max():.2f}, {why}"
        )

    def from_exclusive(self, r: int) -> tuple[np.ndarray, str] | None:
        """The swap of image ``r``'s exclusive class to the classes seen, if supported."""
        given, probs, rules, names = self.given, self.probs, self.rules, self.names
        k = given.shape[1]
        e = int(np.flatnonzero(given[r])[0])
        pos = np.setdiff1d(np.arange(k), self.exclusive)
        seen = pos[
            (probs[r, pos] >= rules.exclusive_min_p) & self.learned[pos] & self.agree[r, pos]
        ]
        if not (self.learned[e] and probs[r, e] <= rules.swap_remove_max_p and seen.size):
            return None
        new = np.zeros(k, dtype=bool)
        new[seen] = True
        return new, (
            f"swap from {names[e]}: p={probs[r, e]:.2f}, "
            + ", ".join(f"{names[c]} p={probs[r, c]:.2f}" for c in seen)
        )


def _swap_table(
    given: np.ndarray,
    probs: np.ndarray,
    ap: np.ndarray,
    names: list[str],
    found: list[tuple[int, np.ndarray, str]],
) -> pd.DataFrame:
    """:data:`SUGGESTION_COLUMNS` rows of the swaps found: one per changed class."""
    out: dict[str, list] = {c: [] for c in ("row", "class", "action", "probability", "evidence")}
    for r, new, why in found:
        for c in np.flatnonzero(new != given[r]):
            out["row"].append(r)
            out["class"].append(int(c))
            out["action"].append("add" if new[c] else "remove")
            out["probability"].append(float(probs[r, c]))
            out["evidence"].append(why)
    rows = np.asarray(out["row"], dtype=int)
    cols = np.asarray(out["class"], dtype=int)
    adds = np.asarray(out["action"]) == "add"
    return pd.DataFrame(
        {
            "row": rows,
            "class": cols,
            "action": out["action"],
            "probability": out["probability"],
            "confidence": precision_at_many(given, probs, rows, cols, adds),
            "class_ap": ap[cols],
            "trusted": np.ones(len(rows), dtype=bool),
            "evidence": [
                f"{'+' if a else '-'}{names[c]}: p={p:.2f}; {why}"
                for a, c, p, why in zip(
                    adds, cols, out["probability"], out["evidence"], strict=True
                )
            ],
        }
    )


def _would_join_exclusive(
    given: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    add: np.ndarray,
    trusted: np.ndarray,
    exclusive: np.ndarray,
) -> np.ndarray:
    """Candidates of images whose trusted changes would join an exclusive class with
    another class (all the image's trusted changes are dropped)."""
    from labelaudit.data.roles import conflicting_rows

    out = np.zeros(len(rows), dtype=bool)
    if exclusive.size == 0:
        return out
    for r in np.unique(rows[trusted]):
        mine = trusted & (rows == r)
        new = given[r].copy()
        new[cols[mine & add]] = True
        new[cols[mine & ~add]] = False
        if conflicting_rows(new[None, :], exclusive)[0]:
            out |= mine
    return out


def _would_empty(
    given: np.ndarray, rows: np.ndarray, cols: np.ndarray, add: np.ndarray, trusted: np.ndarray
) -> np.ndarray:
    """Candidates whose image would be left without labels by its trusted changes."""
    out = np.zeros(len(rows), dtype=bool)
    for r in np.unique(rows[trusted]):
        mine = trusted & (rows == r)
        new = given[r].copy()
        new[cols[mine & add]] = True
        new[cols[mine & ~add]] = False
        if given[r].any() and not new.any():
            out |= mine
    return out


def _evidence(
    name: str,
    add: bool,
    p: float,
    q: float,
    ap: float,
    image_flag: bool,
    learned: bool,
    trusted: bool,
    swap: bool,
    rules: SuggestRules,
    posterior: float = np.nan,
) -> str:
    """A short reason for the row's verdict."""
    what = f"{'+' if add else '-'}{name}: p={p:.2f}, class AP {ap:.2f}"
    if np.isfinite(q):
        what += f", neighbours {q:.2f}"
    if np.isfinite(posterior):
        what += f", evidence {posterior:.2f}"
    if trusted:
        return what + ("; swap" if swap and not add else "")
    remove_max = rules.swap_remove_max_p if swap else rules.remove_max_p
    if image_flag:
        why = "image flagged by an image detector"
    elif not learned:
        why = f"class AP below {rules.min_class_ap:g} (not learned)"
    elif not np.isfinite(p):
        why = "no probability"
    elif add and p < rules.add_min_p:
        why = f"p below {rules.add_min_p:g}" + (
            f" and evidence below {rules.add_min_posterior:g}"
            if rules.add_min_posterior is not None
            else ""
        )
    elif add:
        why = "the image's neighbours do not carry the class"
    elif not swap and rules.remove_max_p is None:
        why = "a low probability alone (no trusted add in the image)"
    elif remove_max is not None and p > remove_max:  # None: ruled out just above
        why = "p not low enough"
    else:
        why = "would leave no labels"
    return f"{what}; doubtful: {why}"


def neighbour_shares(
    findings: pd.DataFrame, ids: list[str], class_names: list[str], detector: str = "knn"
) -> np.ndarray:
    """(N, K) share of each image's nearest neighbours carrying each class; NaN unknown.

    Read from the ``knn`` detector's findings (``value`` = the share, for every given
    pair and every missing pair that most neighbours carry); NaN elsewhere, e.g. a
    missing class that fewer than half of the neighbours carry, or a run without
    embeddings.
    """
    out = np.full((len(ids), len(class_names)), np.nan)
    if findings.empty or "detector" not in findings.columns:
        return out
    f = findings[findings["detector"] == detector]
    rows = pd.Index(ids).get_indexer(f["id"])
    cols = pd.Index(class_names).get_indexer(f["class"])
    values = pd.to_numeric(f["value"], errors="coerce").to_numpy(dtype=float)
    ok = (rows >= 0) & (cols >= 0)
    out[rows[ok], cols[ok]] = values[ok]
    return out


def empty_target_rows(findings: pd.DataFrame, ids: list[str]) -> np.ndarray:
    """(N,) bool: the image has a flagged ``empty_target`` finding (quality's label
    evidence: its target stain looks like the exclusive class's)."""
    out = np.zeros(len(ids), dtype=bool)
    if findings.empty or not {"id", "class", "flagged"} <= set(findings.columns):
        return out
    kind = findings["class"].astype(str).str.startswith(EMPTY_TARGET + ":").to_numpy()
    flag = findings["flagged"].astype(str).str.strip().str.lower().isin(["true", "1"])
    rows = pd.Index(ids).get_indexer(findings.loc[kind & flag.to_numpy(), "id"])
    out[rows[rows >= 0]] = True
    return out


def apply_suggestions(given: np.ndarray, suggestions: pd.DataFrame) -> np.ndarray:
    """The given labels with the trusted changes applied (a copy).

    Parameters
    ----------
    given
        (N, K) bool given labels.
    suggestions
        The table of :func:`suggest_labels`.
    """
    out = np.asarray(given, dtype=bool).copy()
    t = suggestions[suggestions["trusted"].astype(bool)]
    if len(t):
        rows = t["row"].to_numpy(dtype=int)
        cols = t["class"].to_numpy(dtype=int)
        out[rows, cols] = (t["action"] == "add").to_numpy()
    return out


def change_text(token: str, action: str, confidence: float) -> str:
    """``+token (0.91)`` / ``-token (0.86)``; no number when the confidence is unknown."""
    sign = "+" if action == "add" else "-"
    return f"{sign}{token}" + ("" if not np.isfinite(confidence) else f" ({confidence:.2f})")
