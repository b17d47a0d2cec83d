"""Cleaning policies: what to do with each image of a scanned run, and their registry.

A policy reads a run (:class:`RunView`: the given labels, ``issues.csv``,
``findings.csv`` and the out-of-fold probabilities) and returns a :class:`Plan`: the
new labels, which images stay, a reason and detail per image, and optionally per-label
loss weights. :func:`labelaudit.pipeline.clean.clean` applies a person's decisions on
top and writes the cleaned dataset; nothing here writes a file.

Policies register by name with :func:`register_policy` (the built-in ones below do
too); :data:`POLICIES` lists the registered names. See ``docs/cleaning.md`` for why the
default is what it is:

``relabel-soft`` (default)
    Apply the trusted per-label suggestions (below), remove nothing, and give every
    label the ``soft`` weight computed on the relabelled labels.
``relabel``
    Apply the trusted per-label suggestions (:mod:`labelaudit.detect.suggest`: an added
    class has out-of-fold probability >= ``confidence`` and most of the image's
    nearest neighbours carry it; a removed one <= ``1 - confidence`` beside a trusted
    add; on a class the model has learned: out-of-fold average precision >=
    ``min_class_ap``; in an image no image-level detector (intensity) flagged); the
    rest of the consensus (images flagged by at least two detectors) is removed.
``consensus-drop``
    Remove every image the consensus flagged.
``intensity``
    The method's published filter: remove the images the per-class 3-sigma
    intensity detector flagged.
``soft``
    Keep every image and label; down-weight doubtful labels instead. Each (image,
    class) label gets a loss weight in [0, 1]: its self-confidence (the out-of-fold
    probability of the given value) relative to the mean self-confidence of that
    class's labels of the same value (confident learning's per-class thresholds), capped
    at 1. Written to ``RUN/label_weights.csv``; ``retrain`` multiplies them into the loss.
``relabel-only``
    The trusted per-label suggestions, as ``relabel`` applies them, and nothing else:
    no image removed, no label weighted.
``drop-labels``
    Per-label drop: weight 0 for each label confident learning flagged, 1 for the rest;
    the image's other labels still train.
``none``
    No change (a cleaned dataset equal to the input; a baseline for ``retrain``).
"""

from __future__ import annotations

from collections.abc import Callable, KeysView
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import pandas as pd

from labelaudit.core.errors import RunDirError, SettingsError
from labelaudit.data.labels import LabelCodec
from labelaudit.data.roles import (
    conflicting_rows,
    describe_conflict,
    exclusive_classes,
    exclusive_indices,
)
from labelaudit.detect.suggest import (
    IMAGE_DETECTORS,
    SuggestRules,
    apply_suggestions,
    class_ap,
    empty_target_rows,
    neighbour_shares,
    suggest_labels,
)
from labelaudit.rundir import FINDINGS_CSV, ISSUES_CSV, RunDir

#: The policy ``scan`` and ``clean`` apply when none is asked for.
DEFAULT_POLICY = "relabel-soft"
#: ``relabel``: the out-of-fold probability an added class needs (a removed class
#: beside a trusted add needs ``1 - confidence`` or less; see labelaudit.detect.suggest).
DEFAULT_CONFIDENCE = SuggestRules.add_min_p
#: ``relabel``: a suggestion is trusted only for classes whose out-of-fold average
#: precision (``oof_probs.csv`` against the given labels) reaches this.
DEFAULT_MIN_CLASS_AP = SuggestRules.min_class_ap


# ------------------------------------------------------------------ reading the run


@dataclass
class RunView:
    """The parts of a run the policies look at, aligned with the dataset order.

    Attributes
    ----------
    run_dir, info
        The run directory and its ``run.json`` dataset section.
    ids, given
        Image ids in dataset order and their (N, K) bool given labels.
    issues
        ``issues.csv`` indexed by id, in dataset order (``flagged_by``,
        ``consensus_flag``, ``suggested_labels``, ...).
    findings
        ``findings.csv`` (``id, class, detector, flagged, suggestion, value``).
    tokens, names, sep
        The classes in the dataset's notation, their names, the label separator.
    probs
        (N, K) out-of-fold probabilities, ``None`` if the run has none.
    """

    run_dir: Path
    info: dict
    ids: list[str]
    given: np.ndarray
    issues: pd.DataFrame  # indexed by id, dataset order
    findings: pd.DataFrame
    tokens: list[str]
    names: list[str]
    sep: str
    probs: np.ndarray | None = None  # out-of-fold probabilities (N, K), if the run has them

    @property
    def codec(self) -> LabelCodec:
        """The dataset's label notation."""
        return LabelCodec(self.tokens, self.sep, self.names)

    @property
    def exclusive(self) -> np.ndarray:
        """Column indices of the exclusive classes (:mod:`labelaudit.data.roles`)."""
        return exclusive_indices(self.names, exclusive_classes(self.info))

    def fmt(self, row: np.ndarray) -> str:
        """A bool label row in the dataset's notation."""
        return self.codec.format(row)

    def parse(self, text: str, *, where: Callable[[str], Exception]) -> np.ndarray:
        """Labels in the dataset's notation (class names accepted too) -> bool row."""
        return self.codec.parse(text, where=where)


def _truthy(values: pd.Series) -> np.ndarray:
    return values.astype(str).str.strip().str.lower().isin(["true", "1", "yes"]).to_numpy()


def _floats(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)


def _flagged_findings(view: RunView, detector: str) -> pd.DataFrame:
    """The rows of ``findings.csv`` that ``detector`` flagged, in file order."""
    f = view.findings
    return f[(f["detector"] == detector).to_numpy() & _truthy(f["flagged"])]


def read_run_view(run_dir: str | Path) -> RunView:
    """Read run.json, dataset.csv, issues.csv and findings.csv of a scanned run."""
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    info = run.dataset_info()
    ids, given = run.read_given(info)
    issues = run.read_table(ISSUES_CSV)
    for col in ("id", "suggested_labels", "flagged_by", "consensus_flag"):
        if col not in issues.columns:
            raise RunDirError(f"{run_dir}/issues.csv: column {col!r} missing")
    if sorted(issues["id"]) != sorted(ids) or issues["id"].duplicated().any():
        raise RunDirError(
            f"{run_dir}/issues.csv: its ids do not match dataset.csv; re-run the detect stage"
        )
    issues = issues.set_index("id").loc[ids]
    findings = run.read_table(FINDINGS_CSV) if run.has(FINDINGS_CSV) else pd.DataFrame()
    for col in ("id", "class", "detector", "flagged", "suggestion", "value"):
        if col not in findings.columns:
            findings[col] = pd.Series(dtype=str)
    probs = run.read_probs(info["class_names"], ids, aligned=False)
    return RunView(
        probs=probs,
        run_dir=run_dir,
        info=info,
        ids=ids,
        given=given,
        issues=issues,
        findings=findings,
        tokens=list(info["class_tokens"]),
        names=list(info["class_names"]),
        sep=info["label_sep"],
    )


def flagged_by(view: RunView, detector: str) -> np.ndarray:
    """(N,) images the named detector flagged (issues.csv ``flagged_by``)."""
    parts = view.issues["flagged_by"].astype(str).str.split(";")
    return parts.apply(lambda names: detector in names).to_numpy(dtype=bool)


# ------------------------------------------------------------------ the plan


@dataclass
class Plan:
    """What a policy does to every image: new labels, kept mask and reasons.

    Attributes
    ----------
    labels
        (N, K) bool labels of the cleaned dataset (a removed image keeps its given ones).
    kept
        (N,) bool: the image stays in the cleaned dataset.
    reasons, details
        Per image: a short category (``changes.csv``'s ``reason``) and the specifics
        behind it (``detail``); empty where nothing changes.
    weights
        (N, K) per-label loss weights in [0, 1] of a soft policy, else ``None``.
    decided
        (N,) bool: a person's decision set this image (set by ``clean``).
    """

    labels: np.ndarray
    kept: np.ndarray
    reasons: list[str]
    details: list[str]
    weights: np.ndarray | None = None  # per-label loss weights (N, K) of soft policies
    decided: np.ndarray | None = None  # (N,) bool: a person's decision set this image

    @classmethod
    def unchanged(cls, view: RunView) -> Plan:
        """Every image kept with its given labels: where a policy starts."""
        n = len(view.ids)
        return cls(
            view.given.copy(), np.ones(n, dtype=bool), [""] * n, [""] * n, decided=np.zeros(n, bool)
        )


# ------------------------------------------------------------------ the registry


class PolicyFunc(Protocol):
    """A cleaning policy: ``(view, *, confidence, min_class_ap) -> Plan``.

    ``confidence`` and ``min_class_ap`` are ``clean``'s parameters of the trusted
    suggestions (:func:`relabel_trusted`); a policy that does not use them accepts
    them with ``**_``.
    """

    def __call__(self, view: RunView, *, confidence: float, min_class_ap: float) -> Plan: ...


@dataclass(frozen=True)
class Policy:
    """A registered cleaning policy.

    Attributes
    ----------
    name
        What ``clean --policy`` takes.
    func
        The policy itself.
    uses_suggestions
        It applies the trusted suggestions: ``run.json["clean"]["params"]`` records
        ``confidence``, ``min_class_ap`` and the classes' average precision.
    """

    name: str
    func: PolicyFunc
    uses_suggestions: bool = False


_REGISTRY: dict[str, Policy] = {}
#: The registered policies' names in registration order (a live view of the
#: registry: a policy registered later is listed too).
POLICIES: KeysView[str] = _REGISTRY.keys()

F = TypeVar("F", bound=PolicyFunc)


def register_policy(name: str, *, uses_suggestions: bool = False) -> Callable[[F], F]:
    """Register a cleaning policy under ``name`` (a decorator).

    Parameters
    ----------
    name
        The policy's name (``clean(run, policy=name)``, ``labelaudit clean --policy``).
    uses_suggestions
        The policy applies the trusted suggestions (:func:`relabel_trusted`), so
        ``run.json`` records their parameters.

    Returns
    -------
    callable
        The decorator; it returns the function unchanged.

    Raises
    ------
    ValueError
        ``name`` is already registered.

    Examples
    --------
    >>> @register_policy("keep-all")  # doctest: +SKIP
    ... def keep_all(view: RunView, **_: float) -> Plan:
    ...     return Plan.unchanged(view)
    """

    def decorate(func: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"a cleaning policy named {name!r} is already registered")
        _REGISTRY[name] = Policy(name, func, uses_suggestions)
        return func

    return decorate


def unregister_policy(name: str) -> None:
    """Remove a registered policy (a plugin unloading, a test cleaning up); no-op if absent."""
    _REGISTRY.pop(name, None)


def get_policy(name: str) -> Policy:
    """The registered policy ``name``.

    Raises
    ------
    SettingsError
        No policy of that name is registered (the message lists those that are).
    """
    if name not in _REGISTRY:
        raise SettingsError(
            f"unknown cleaning policy {name!r}; choose one of {', '.join(POLICIES)}"
        )
    return _REGISTRY[name]


# ------------------------------------------------------------------ building blocks


def _consensus(view: RunView) -> np.ndarray:
    return _truthy(view.issues["consensus_flag"])


def drop_consensus(view: RunView, plan: Plan, skip: np.ndarray | None = None) -> None:
    """Remove the images the consensus flagged (``consensus_flag``), except ``skip``."""
    flagged = _consensus(view)
    by = view.issues["flagged_by"].astype(str).to_numpy()
    for i in np.flatnonzero(flagged):
        if skip is not None and skip[i]:
            continue
        plan.kept[i] = False
        plan.reasons[i] = f"consensus: {by[i].replace(';', '+')}"
        plan.details[i] = ""


def _confident_changes(view: RunView, rules: SuggestRules | None = None) -> pd.DataFrame:
    """Per-label suggestions (:func:`labelaudit.detect.suggest.suggest_labels`) from the flagged
    confident-learning findings, the out-of-fold probabilities and the image detectors."""
    f = _flagged_findings(view, "confident")
    f = f[f["suggestion"].isin(["add", "remove"]).to_numpy()]
    rows = pd.Index(view.ids).get_indexer(f["id"])
    cols = pd.Index(view.names).get_indexer(f["class"])
    ok = (rows >= 0) & (cols >= 0)
    candidates = pd.DataFrame(
        {
            "row": rows[ok],
            "class": cols[ok],
            "add": (f["suggestion"] == "add").to_numpy()[ok],
            "probability": _floats(f["value"])[ok],  # the finding's probability
        }
    )
    shares = neighbour_shares(view.findings, view.ids, view.names)
    candidates["neighbours"] = shares[candidates["row"], candidates["class"]]
    image_flag = np.zeros(len(view.ids), dtype=bool)
    for det in IMAGE_DETECTORS:
        image_flag |= flagged_by(view, det)
    return suggest_labels(
        view.given,
        view.probs,
        candidates,
        image_flag,
        rules,
        class_names=view.names,
        exclusive=view.exclusive,
        neighbours=shares,
        empty_target=empty_target_rows(view.findings, view.ids),
    )


def class_reliability(view: RunView) -> np.ndarray:
    """Per-class out-of-fold average precision against the given labels (NaN: unknown).

    NaN where the run has no ``oof_probs.csv`` or the class has no positive (or no
    negative) image.
    """
    return class_ap(view.given, view.probs)


def relabel_trusted(
    view: RunView, plan: Plan, confidence: float, min_class_ap: float
) -> np.ndarray:
    """Apply the trusted per-label suggestions to ``plan``; (N,) images relabelled.

    The suggestions are :func:`labelaudit.detect.suggest.suggest_labels`' with
    :meth:`~labelaudit.detect.suggest.SuggestRules.from_confidence` rules, the same the
    report's accept button applies.
    """
    rules = SuggestRules.from_confidence(confidence, min_class_ap)
    sugg = _confident_changes(view, rules)
    new = apply_suggestions(view.given, sugg)
    relabelled = (new != view.given).any(axis=1)
    trusted = sugg[sugg["trusted"].astype(bool)]
    for i in np.flatnonzero(relabelled):
        mine = trusted[trusted["row"] == i]
        plan.labels[i] = new[i]
        plan.reasons[i] = "confident learning"
        plan.details[i] = "; ".join(
            f"{'+' if a == 'add' else '-'}{view.tokens[int(k)]} (p={p:.2f})"
            for k, a, p in zip(mine["class"], mine["action"], mine["probability"], strict=True)
        )
        if conflicting_rows(view.given[i : i + 1], view.exclusive)[0]:
            plan.reasons[i] = "exclusive class joined with another"
            what = describe_conflict(view.names, view.given[i], view.exclusive)
            plan.details[i] = f"{what}; {plan.details[i]}"
    return relabelled


def soft_label_weights(given: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-label loss weights from label quality, relative to the label's class.

    The weight of label (i, k) is its self-confidence ``s`` (``p`` where class k is
    given, ``1 - p`` where it is not) divided by the mean self-confidence of the
    labels of class k with the same given value, capped at 1: confident learning's
    per-class threshold, so a class the model learned poorly (low ``p`` for all its
    positives) is not down-weighted as a whole, only its labels that sit below the
    class's own level are.

    Parameters
    ----------
    given
        Bool (N, K) given labels.
    probs
        (N, K) out-of-fold probabilities.

    Returns
    -------
    numpy.ndarray
        Float32 (N, K) weights in [0, 1]; 1 where a probability is missing.
    """
    given = np.asarray(given, dtype=bool)
    p = np.asarray(probs, dtype=np.float64)
    s = np.where(given, p, 1.0 - p)
    weights = np.ones(given.shape, dtype=np.float64)
    for k in range(given.shape[1]):
        for value in (True, False):
            rows = (given[:, k] == value) & np.isfinite(s[:, k])
            if not rows.any():
                continue
            threshold = float(s[rows, k].mean())
            if threshold > 0:
                weights[rows, k] = np.minimum(1.0, s[rows, k] / threshold)
    return weights.astype(np.float32)


def _needs_probs(view: RunView, policy: str) -> np.ndarray:
    """The run's out-of-fold probabilities, which soft policies weight labels by."""
    if view.probs is None:
        raise SettingsError(
            f"policy {policy!r} needs out-of-fold probabilities; "
            f"{view.run_dir} has no oof_probs.csv"
        )
    return view.probs


def _weight_details(view: RunView, plan: Plan, below: float) -> None:
    """``reason``/``detail`` of images with a label weighted below ``below``."""
    assert plan.weights is not None
    for i in np.flatnonzero((plan.weights < below).any(axis=1)):
        low = np.flatnonzero(plan.weights[i] < below)
        plan.reasons[i] = "label weights"
        plan.details[i] = "; ".join(
            f"{'' if plan.labels[i, k] else '+'}{view.tokens[k]} w={plan.weights[i, k]:.2f}"
            for k in low
        )


def _flagged_labels(view: RunView) -> dict[str, list[int]]:
    """Classes confident learning flagged, by image id."""
    f = _flagged_findings(view, "confident")
    index = {name: k for k, name in enumerate(view.names)}
    out: dict[str, list[int]] = {}
    for image_id, cls in zip(f["id"], f["class"], strict=True):
        if cls in index:
            out.setdefault(image_id, []).append(index[cls])
    return out


# ------------------------------------------------------------------ built-in policies
# Registered in this order, which is the order of POLICIES.


@register_policy("relabel", uses_suggestions=True)
def policy_relabel(
    view: RunView,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    min_class_ap: float = DEFAULT_MIN_CLASS_AP,
    **_: float,
) -> Plan:
    """Apply the trusted per-label suggestions; remove the rest of the consensus.

    The suggestions are :func:`labelaudit.detect.suggest.suggest_labels`' with
    :meth:`~labelaudit.detect.suggest.SuggestRules.from_confidence` rules: an added class
    needs probability >= ``confidence`` and most of the image's nearest neighbours
    carrying it, a removed one <= ``1 - confidence`` in an image that also gets a
    trusted add (lone removals stay doubtful), on a class the model has
    learned (out-of-fold average precision >= ``min_class_ap``), in an image no
    image-level detector (:data:`IMAGE_DETECTORS`) flagged. Only those labels change
    (the image's doubtful flagged labels stay as given). Consensus images without a
    trusted change are removed.
    """
    plan = Plan.unchanged(view)
    relabelled = relabel_trusted(view, plan, confidence, min_class_ap)
    drop_consensus(view, plan, skip=relabelled)
    return plan


@register_policy("consensus-drop")
def policy_consensus_drop(view: RunView, **_: float) -> Plan:
    """Remove every image flagged by the consensus (``consensus_flag``)."""
    plan = Plan.unchanged(view)
    drop_consensus(view, plan)
    return plan


@register_policy("intensity")
def policy_intensity(view: RunView, **_: float) -> Plan:
    """Remove the images the intensity detector flagged (the method's 3-sigma filter)."""
    plan = Plan.unchanged(view)
    f = _flagged_findings(view, "intensity")
    detail: dict[str, list[str]] = {}
    for image_id, cls, value in zip(f["id"], f["class"], _floats(f["value"]), strict=True):
        z = "" if np.isnan(value) else f" z={value:+.1f}"
        detail.setdefault(image_id, []).append(f"{cls}{z}" if cls else z.strip())
    flagged = flagged_by(view, "intensity")
    for i in np.flatnonzero(flagged | np.isin(view.ids, list(detail))):
        plan.kept[i] = False
        what = "; ".join(detail.get(view.ids[i], []))
        plan.reasons[i] = "intensity outlier"
        plan.details[i] = what
    return plan


@register_policy("soft")
def policy_soft(view: RunView, **_: float) -> Plan:
    """Keep every label; weight each by its quality within its class (see soft_label_weights)."""
    plan = Plan.unchanged(view)
    plan.weights = soft_label_weights(view.given, _needs_probs(view, "soft"))
    _weight_details(view, plan, below=0.5)
    return plan


@register_policy("relabel-soft", uses_suggestions=True)
def policy_relabel_soft(
    view: RunView,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    min_class_ap: float = DEFAULT_MIN_CLASS_AP,
    **_: float,
) -> Plan:
    """Apply the trusted per-label suggestions, keep every image, weight the rest.

    The labels change as in ``relabel`` (only trusted suggestions); no image is
    removed; every label of the result gets :func:`soft_label_weights` (computed on
    the new labels, so a trusted change keeps full weight).
    """
    plan = Plan.unchanged(view)
    probs = _needs_probs(view, "relabel-soft")
    relabelled = relabel_trusted(view, plan, confidence, min_class_ap)
    plan.weights = soft_label_weights(plan.labels, probs)
    reasons, details = list(plan.reasons), list(plan.details)
    _weight_details(view, plan, below=0.5)
    for i in np.flatnonzero(relabelled):  # a relabelled image's reason is its relabel
        weighted = plan.details[i] if plan.details[i] != details[i] else ""
        plan.reasons[i] = reasons[i]
        plan.details[i] = "; ".join(d for d in (details[i], weighted) if d)
    return plan


@register_policy("relabel-only", uses_suggestions=True)
def policy_relabel_only(
    view: RunView,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    min_class_ap: float = DEFAULT_MIN_CLASS_AP,
    **_: float,
) -> Plan:
    """Apply the trusted per-label suggestions; nothing removed, nothing weighted."""
    plan = Plan.unchanged(view)
    relabel_trusted(view, plan, confidence, min_class_ap)
    return plan


@register_policy("drop-labels")
def policy_drop_labels(view: RunView, **_: float) -> Plan:
    """Weight 0 for every label confident learning flagged (per-label drop), 1 elsewhere."""
    plan = Plan.unchanged(view)
    weights = np.ones(view.given.shape, dtype=np.float32)
    row_of = {image_id: i for i, image_id in enumerate(view.ids)}
    for image_id, classes in _flagged_labels(view).items():
        if image_id in row_of:
            weights[row_of[image_id], classes] = 0.0
    plan.weights = weights
    _weight_details(view, plan, below=0.5)
    return plan


@register_policy("none")
def policy_none(view: RunView, **_: float) -> Plan:
    """No change."""
    return Plan.unchanged(view)


__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MIN_CLASS_AP",
    "DEFAULT_POLICY",
    "POLICIES",
    "Plan",
    "Policy",
    "PolicyFunc",
    "RunView",
    "class_reliability",
    "drop_consensus",
    "flagged_by",
    "get_policy",
    "read_run_view",
    "register_policy",
    "relabel_trusted",
    "soft_label_weights",
    "unregister_policy",
]
