"""Cleaning: turn a run's findings into a cleaned dataset and a list of changes.

``clean(RUN, policy=...)`` reads ``issues.csv`` and ``findings.csv`` of a scanned run
and writes

* ``RUN/cleaned/``: a dataset in the input's own layout, with the images referenced,
  not copied. HPA layouts: ``cleaned/train.csv`` (same header and label notation,
  rows in the original order) and ``cleaned/train``, a symbolic link to the original
  image directory. Generic layout: ``cleaned/labels.csv`` (same columns, same image
  paths), a link per top-level entry those paths start with, and ``classes.txt``
  copied. ``labelaudit check`` and ``scan`` accept it as it is.
* ``RUN/changes.csv``: ``id, action, old_labels, new_labels, reason, detail,
  made_by``, one row per image removed (``action = remove``, empty ``new_labels``) or
  relabelled (``action = relabel``), labels in the dataset's notation; ``reason`` is a
  short category, ``detail`` the probabilities, z-scores or decisions-file line behind
  it, ``made_by`` ``person`` (a decision) or ``policy``.
* ``run.json["clean"]``: the policy, its parameters and the counts.

Policies (:data:`POLICIES`; see ``docs/cleaning.md`` for why the default is what it is):

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

A decisions file (``id, decision, labels``; exported by the report) says what a
person decided about the images it names, and :func:`clean` applies exactly that:

``keep``
    The given labels are right (``labels``, if present, must be the given ones).
``accept``
    Apply the run's suggestion; only where the run suggests a change (``labels``, if
    present, must be the suggestion).
``edit``
    Apply the label set in ``labels`` (a reviewer's own; empty: no label left).
``reject``
    Leave the image out of the cleaned dataset (``labels`` empty).

With a decisions file and no policy asked for, nothing else changes (policy
``none``); with a policy as well (``--policy relabel-soft``), the policy decides the
images the file does not name. Before anything is written the file is checked
against the run: unknown ids, an id decided twice, unknown classes, exclusive
classes combined with others (:mod:`labelaudit.data.roles`), an ``accept``
without a suggestion. ``changes.csv``'s ``made_by`` says per change whether a person
(``person``: a decision) or the policy (``policy``) made it. An image a person
decided gets full loss weight under the soft policies. An image left without labels
is removed.

The input dataset is only read. Every file is written atomically; ``cleaned/`` is
built beside the old one and swapped in when complete.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from labelaudit.core.errors import DatasetError, RunDirError, SettingsError
from labelaudit.core.io import write_json
from labelaudit.core.userfiles import (
    MAX_MARKER_BYTES,
    is_plain_entry,
    read_user_json,
    read_user_text,
    remove_entry,
)
from labelaudit.data.labels import LabelCodec
from labelaudit.data.roles import (
    conflicting_rows,
    describe_conflict,
    exclusive_classes,
    exclusive_indices,
    resolve_exclusive,
)
from labelaudit.detect.suggest import (  # IMAGE_DETECTORS: re-exported
    IMAGE_DETECTORS,
    SuggestRules,
    apply_suggestions,
    class_ap,
    empty_target_rows,
    neighbour_shares,
    suggest_labels,
)
from labelaudit.rundir import (
    CHANGES_CSV,
    FINDINGS_CSV,
    ISSUES_CSV,
    LABEL_WEIGHTS_CSV,
    RunDir,
    dataset_inputs,
    ensure_outside,
    read_run,
    run_lock,
)

#: The cleaning policies; ``DEFAULT_POLICY`` is used by ``scan`` and ``clean``.
POLICIES: tuple[str, ...] = (
    "relabel",
    "consensus-drop",
    "intensity",
    "soft",
    "relabel-soft",
    "relabel-only",
    "drop-labels",
    "none",
)
DEFAULT_POLICY = "relabel-soft"
#: ``relabel``: the out-of-fold probability an added class needs (a removed class
#: beside a trusted add needs ``1 - confidence`` or less; see labelaudit.detect.suggest).
DEFAULT_CONFIDENCE = SuggestRules.add_min_p
#: ``relabel``: a suggestion is trusted only for classes whose out-of-fold average
#: precision (``oof_probs.csv`` against the given labels) reaches this.
DEFAULT_MIN_CLASS_AP = SuggestRules.min_class_ap

#: ``reason`` is a short category (a handful of distinct values, for counting);
#: ``detail`` the specifics (probabilities, z-scores, the decisions file line).
#: ``made_by``: ``person`` (a decisions file) or ``policy``.
CHANGES_COLUMNS = ["id", "action", "old_labels", "new_labels", "reason", "detail", "made_by"]
#: The decisions a decisions file may hold (module docstring).
DECISIONS = ("keep", "accept", "edit", "reject")
#: The policy applied beside a decisions file when none is asked for: nothing else.
DECISIONS_ONLY_POLICY = "none"
CLEANED_DIR = "cleaned"
#: Per-label loss weights of the ``soft``, ``relabel-soft`` and ``drop-labels``
#: policies: ``id`` and one column per class name, values in [0, 1].
LABEL_WEIGHTS_FILE = LABEL_WEIGHTS_CSV
#: A regular file inside ``cleaned/``: ``{"source": <resolved original dataset root>,
#: "entries": [what labelaudit wrote there]}``. It marks the directory as labelaudit's
#: (only then is an old one replaced), and the dataset loader trusts links that
#: resolve inside ``source``.
CLEANED_MARKER = ".labelaudit-cleaned.json"


@dataclass
class CleanResult:
    """What :func:`clean` wrote.

    Attributes
    ----------
    run_dir, cleaned_dir, changes_file
        The run directory, ``RUN/cleaned`` and ``RUN/changes.csv``.
    policy
        The policy applied (before decisions).
    changes
        The ``changes.csv`` table.
    ids
        Every image of the scan, in dataset order.
    labels
        (N, K) bool cleaned labels (rows of removed images keep their old labels).
    kept
        (N,) bool: the image is in the cleaned dataset.
    n_decisions
        Rows of the decisions file applied.
    weights
        (N, K) float per-label loss weights of the ``soft`` / ``drop-labels``
        policies (``RUN/label_weights.csv``), else ``None``.
    """

    run_dir: Path
    cleaned_dir: Path
    changes_file: Path
    policy: str
    changes: pd.DataFrame
    ids: list[str]
    labels: np.ndarray
    kept: np.ndarray
    n_decisions: int = 0
    params: dict = field(default_factory=dict)
    weights: np.ndarray | None = None

    @property
    def n_removed(self) -> int:
        return int((self.changes["action"] == "remove").sum())

    @property
    def n_relabelled(self) -> int:
        return int((self.changes["action"] == "relabel").sum())

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())


# ------------------------------------------------------------------ reading the run


@dataclass
class _RunView:
    """The parts of a run the policies look at, aligned with the dataset order."""

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
        return LabelCodec(self.tokens, self.sep, self.names)

    @property
    def exclusive(self) -> np.ndarray:
        """Column indices of the exclusive classes (:mod:`labelaudit.data.roles`)."""
        return exclusive_indices(self.names, exclusive_classes(self.info))

    def fmt(self, row: np.ndarray) -> str:
        return self.codec.format(row)

    def parse(self, text: str, *, where: Callable[[str], Exception]) -> np.ndarray:
        """Labels in the dataset's notation (class names accepted too) -> bool row."""
        return self.codec.parse(text, where=where)


def _truthy(values: pd.Series) -> np.ndarray:
    return values.astype(str).str.strip().str.lower().isin(["true", "1", "yes"]).to_numpy()


def _floats(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)


def read_run_view(run_dir: str | Path) -> _RunView:
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
    return _RunView(
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


def _flagged_by(view: _RunView, detector: str) -> np.ndarray:
    """(N,) images the named detector flagged (issues.csv ``flagged_by``)."""
    parts = view.issues["flagged_by"].astype(str).str.split(";")
    return parts.apply(lambda names: detector in names).to_numpy(dtype=bool)


# ------------------------------------------------------------------ policies


@dataclass
class _Plan:
    """New labels, kept mask and reasons for every image."""

    labels: np.ndarray
    kept: np.ndarray
    reasons: list[str]
    details: list[str]
    weights: np.ndarray | None = None  # per-label loss weights (N, K) of soft policies
    decided: np.ndarray | None = None  # (N,) bool: a person's decision set this image


def _start(view: _RunView) -> _Plan:
    n = len(view.ids)
    return _Plan(
        view.given.copy(), np.ones(n, dtype=bool), [""] * n, [""] * n, decided=np.zeros(n, bool)
    )


def _consensus(view: _RunView) -> np.ndarray:
    return _truthy(view.issues["consensus_flag"])


def _drop_consensus(view: _RunView, plan: _Plan, skip: np.ndarray | None = None) -> None:
    flagged = _consensus(view)
    by = view.issues["flagged_by"].astype(str).to_numpy()
    for i in np.flatnonzero(flagged):
        if skip is not None and skip[i]:
            continue
        plan.kept[i] = False
        plan.reasons[i] = f"consensus: {by[i].replace(';', '+')}"
        plan.details[i] = ""


def policy_consensus_drop(view: _RunView, **_: float) -> _Plan:
    """Remove every image flagged by the consensus (``consensus_flag``)."""
    plan = _start(view)
    _drop_consensus(view, plan)
    return plan


def policy_intensity(view: _RunView, **_: float) -> _Plan:
    """Remove the images the intensity detector flagged (the method's 3-sigma filter)."""
    plan = _start(view)
    f = view.findings
    f = f[(f["detector"] == "intensity").to_numpy() & _truthy(f["flagged"])]
    detail: dict[str, list[str]] = {}
    for image_id, cls, value in zip(f["id"], f["class"], _floats(f["value"]), strict=True):
        z = "" if np.isnan(value) else f" z={value:+.1f}"
        detail.setdefault(image_id, []).append(f"{cls}{z}" if cls else z.strip())
    flagged = _flagged_by(view, "intensity")
    for i in np.flatnonzero(flagged | np.isin(view.ids, list(detail))):
        plan.kept[i] = False
        what = "; ".join(detail.get(view.ids[i], []))
        plan.reasons[i] = "intensity outlier"
        plan.details[i] = what
    return plan


def _confident_changes(view: _RunView, rules: SuggestRules | None = None) -> pd.DataFrame:
    """Per-label suggestions (:func:`labelaudit.detect.suggest.suggest_labels`) from the flagged
    confident-learning findings, the out-of-fold probabilities and the image detectors."""
    f = view.findings
    f = f[
        (f["detector"] == "confident").to_numpy()
        & _truthy(f["flagged"])
        & f["suggestion"].isin(["add", "remove"]).to_numpy()
    ]
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
        image_flag |= _flagged_by(view, det)
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


def class_reliability(view: _RunView) -> np.ndarray:
    """Per-class out-of-fold average precision against the given labels (NaN: unknown).

    NaN where the run has no ``oof_probs.csv`` or the class has no positive (or no
    negative) image.
    """
    return class_ap(view.given, view.probs)


def policy_relabel(
    view: _RunView,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    min_class_ap: float = DEFAULT_MIN_CLASS_AP,
    **_: float,
) -> _Plan:
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
    plan = _start(view)
    relabelled = _relabel_trusted(view, plan, confidence, min_class_ap)
    _drop_consensus(view, plan, skip=relabelled)
    return plan


def _relabel_trusted(
    view: _RunView, plan: _Plan, confidence: float, min_class_ap: float
) -> np.ndarray:
    """Apply the trusted per-label suggestions to ``plan``; (N,) images relabelled."""
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


def policy_none(view: _RunView, **_: float) -> _Plan:
    """No change."""
    return _start(view)


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


def _needs_probs(view: _RunView, policy: str) -> np.ndarray:
    """The run's out-of-fold probabilities, which soft policies weight labels by."""
    if view.probs is None:
        raise SettingsError(
            f"policy {policy!r} needs out-of-fold probabilities; "
            f"{view.run_dir} has no oof_probs.csv"
        )
    return view.probs


def _weight_details(view: _RunView, plan: _Plan, below: float) -> None:
    """``reason``/``detail`` of images with a label weighted below ``below``."""
    assert plan.weights is not None
    for i in np.flatnonzero((plan.weights < below).any(axis=1)):
        low = np.flatnonzero(plan.weights[i] < below)
        plan.reasons[i] = "label weights"
        plan.details[i] = "; ".join(
            f"{'' if plan.labels[i, k] else '+'}{view.tokens[k]} w={plan.weights[i, k]:.2f}"
            for k in low
        )


def policy_soft(view: _RunView, **_: float) -> _Plan:
    """Keep every label; weight each by its quality within its class (see soft_label_weights)."""
    plan = _start(view)
    plan.weights = soft_label_weights(view.given, _needs_probs(view, "soft"))
    _weight_details(view, plan, below=0.5)
    return plan


def policy_relabel_only(
    view: _RunView,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    min_class_ap: float = DEFAULT_MIN_CLASS_AP,
    **_: float,
) -> _Plan:
    """Apply the trusted per-label suggestions; nothing removed, nothing weighted."""
    plan = _start(view)
    _relabel_trusted(view, plan, confidence, min_class_ap)
    return plan


def policy_relabel_soft(
    view: _RunView,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    min_class_ap: float = DEFAULT_MIN_CLASS_AP,
    **_: float,
) -> _Plan:
    """Apply the trusted per-label suggestions, keep every image, weight the rest.

    The labels change as in ``relabel`` (only trusted suggestions); no image is
    removed; every label of the result gets :func:`soft_label_weights` (computed on
    the new labels, so a trusted change keeps full weight).
    """
    plan = _start(view)
    probs = _needs_probs(view, "relabel-soft")
    relabelled = _relabel_trusted(view, plan, confidence, min_class_ap)
    plan.weights = soft_label_weights(plan.labels, probs)
    reasons, details = list(plan.reasons), list(plan.details)
    _weight_details(view, plan, below=0.5)
    for i in np.flatnonzero(relabelled):  # a relabelled image's reason is its relabel
        weighted = plan.details[i] if plan.details[i] != details[i] else ""
        plan.reasons[i] = reasons[i]
        plan.details[i] = "; ".join(d for d in (details[i], weighted) if d)
    return plan


def policy_drop_labels(view: _RunView, **_: float) -> _Plan:
    """Weight 0 for every label confident learning flagged (per-label drop), 1 elsewhere."""
    plan = _start(view)
    weights = np.ones(view.given.shape, dtype=np.float32)
    row_of = {image_id: i for i, image_id in enumerate(view.ids)}
    for image_id, classes in _flagged_labels(view).items():
        if image_id in row_of:
            weights[row_of[image_id], classes] = 0.0
    plan.weights = weights
    _weight_details(view, plan, below=0.5)
    return plan


def _flagged_labels(view: _RunView) -> dict[str, list[int]]:
    """Classes confident learning flagged, by image id."""
    f = view.findings
    f = f[(f["detector"] == "confident").to_numpy() & _truthy(f["flagged"])]
    index = {name: k for k, name in enumerate(view.names)}
    out: dict[str, list[int]] = {}
    for image_id, cls in zip(f["id"], f["class"], strict=True):
        if cls in index:
            out.setdefault(image_id, []).append(index[cls])
    return out


_POLICY_FUNCS: dict[str, Callable[..., _Plan]] = {
    "relabel": policy_relabel,
    "consensus-drop": policy_consensus_drop,
    "intensity": policy_intensity,
    "soft": policy_soft,
    "relabel-soft": policy_relabel_soft,
    "relabel-only": policy_relabel_only,
    "drop-labels": policy_drop_labels,
    "none": policy_none,
}


# ------------------------------------------------------------------ decisions


def read_decisions(path: str | Path, view: _RunView) -> list[tuple[int, int, str, np.ndarray]]:
    """Parse a decisions CSV (``id, decision[, labels]``).

    Returns
    -------
    list of (line number, image index, decision, label row)

    Raises
    ------
    DatasetError
        Unreadable file, missing columns, unknown or repeated id, a decision other
        than keep/accept/edit/reject, unknown labels, exclusive classes combined,
        labels that contradict the decision, an accept without a suggestion; the
        message names the file and line.
    """
    path = Path(path)
    text = read_user_text(path, "the decisions file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        rows = [(reader.line_num, r) for r in reader if r and any(x.strip() for x in r)]
    except csv.Error as exc:
        raise DatasetError(f"malformed CSV ({exc})", path=path, row=reader.line_num) from None
    if "id" not in header or "decision" not in header:
        # Name what is missing, never the line itself: the file may be anything
        # (a password file, a key), and messages end up in logs.
        missing = " and ".join(c for c in ("id", "decision") if c not in header)
        raise DatasetError(
            f"expected columns id,decision[,labels]: no {missing} column in the first line "
            "(not a decisions file?)",
            path=path,
            row=1,
        )
    i_id, i_dec = header.index("id"), header.index("decision")
    i_lab = header.index("labels") if "labels" in header else None
    check = _DecisionCheck(view, path)
    seen: dict[str, int] = {}
    out = []
    for line, fields in rows:
        if len(fields) <= max(i_id, i_dec):
            raise DatasetError(
                f"expected {len(header)} fields, found {len(fields)}", path=path, row=line
            )
        image_id = fields[i_id].strip()
        if image_id in seen:
            raise DatasetError(
                f"image decided twice (first on line {seen[image_id]})",
                path=path,
                row=line,
                image=image_id or None,
            )
        seen[image_id] = line
        text = fields[i_lab] if i_lab is not None and len(fields) > i_lab else None
        i, labels = check.row(line, image_id, fields[i_dec].strip(), text)
        out.append((line, i, fields[i_dec].strip().lower(), labels))
    return out


class _DecisionCheck:
    """Checks one decisions-file row against the run; returns the labels it sets."""

    def __init__(self, view: _RunView, path: Path) -> None:
        self.view, self.path = view, path
        self.index = {image_id: i for i, image_id in enumerate(view.ids)}
        self.suggested = view.issues["suggested_labels"].astype(str).to_numpy()

    def row(
        self, line: int, image_id: str, decision: str, text: str | None
    ) -> tuple[int, np.ndarray]:
        """(image index, label row to apply) of one decision, or a :class:`DatasetError`.

        No decision but ``reject`` may leave an exclusive class joined with another
        (:mod:`labelaudit.data.roles`), a ``keep`` of such a given set included.
        """
        i, labels = self._decided(line, image_id, decision, text)
        view = self.view
        if decision.lower() != "reject" and conflicting_rows(labels[None, :], view.exclusive)[0]:
            raise DatasetError(
                describe_conflict(view.names, labels, view.exclusive)
                + f"; {decision.lower()} cannot keep it: write edit with one side",
                path=self.path,
                row=line,
                image=image_id or None,
            )
        return i, labels

    def _decided(
        self, line: int, image_id: str, decision: str, text: str | None
    ) -> tuple[int, np.ndarray]:
        view = self.view

        def bad(message: str) -> DatasetError:
            return DatasetError(message, path=self.path, row=line, image=image_id or None)

        if image_id not in self.index:
            raise bad("unknown image id (not in the scanned dataset)")
        what = decision.lower()
        if what not in DECISIONS:
            raise bad(f"decision must be keep, accept, edit or reject, got {decision!r}")
        i = self.index[image_id]
        given = view.given[i]
        labels = view.parse(text, where=bad) if text is not None else None
        if what == "keep":
            if labels is not None and not np.array_equal(labels, given):
                raise bad(
                    f"keep means the given labels ({view.fmt(given) or 'none'}) are right, "
                    f"but the labels column says {view.fmt(labels) or 'none'}; write edit "
                    "to set other labels"
                )
            return i, given.copy()
        if what == "accept":
            suggestion = view.parse(self.suggested[i], where=bad)
            if np.array_equal(suggestion, given):
                raise bad(
                    "accept: the run suggests no change for this image; write keep "
                    "(the given labels are right) or edit"
                )
            if labels is not None and not np.array_equal(labels, suggestion):
                raise bad(
                    f"accept applies the run's suggestion ({view.fmt(suggestion)}), but the "
                    f"labels column says {view.fmt(labels) or 'none'}; write edit to set "
                    "other labels"
                )
            return i, suggestion
        if what == "reject":
            if labels is not None and labels.any():
                raise bad(
                    "reject leaves the image out of the cleaned dataset; its labels column "
                    "must be empty (to keep the given labels write keep, to set labels edit)"
                )
            return i, np.zeros_like(given)
        if labels is None:  # edit
            raise bad("edit needs the labels to apply in a labels column")
        return i, labels


def _apply_decisions(view: _RunView, plan: _Plan, decisions, path: Path | None) -> None:
    """Set the decided images' labels; a person's labels get full loss weight."""
    name = path.name if path is not None else "decisions"
    if plan.decided is None:
        plan.decided = np.zeros(len(view.ids), dtype=bool)
    for line, i, decision, labels in decisions:
        plan.details[i] = f"{name} line {line}"
        plan.decided[i] = True
        if plan.weights is not None:
            plan.weights[i] = 1.0
        if decision == "reject" or (not labels.any() and view.given[i].any()):
            plan.kept[i] = False
            plan.labels[i] = view.given[i]
            left = "" if decision == "reject" else " (no labels left)"
            plan.reasons[i] = f"decision: {decision}{left}"
            continue
        plan.kept[i] = True
        plan.labels[i] = labels
        plan.reasons[i] = f"decision: {decision}"


# ------------------------------------------------------------------ writing the dataset


def _load_source(view: _RunView):
    """The scanned dataset, re-read; checks it still has the scanned ids and labels."""
    ds, rows = RunDir(view.run_dir).load_scanned_dataset(view.info, view.ids)
    if not np.array_equal(ds.labels[rows], view.given):
        raise RunDirError(f"the labels in {ds.label_file} changed since the scan; re-run the scan")
    return ds, rows


def _link(target: Path, link: Path) -> None:
    """A symbolic link to ``target`` (absolute); hard links per file where unsupported."""
    try:
        os.symlink(target, link, target_is_directory=target.is_dir())
        return
    except (OSError, NotImplementedError):
        pass
    try:
        if target.is_dir():
            for src in target.rglob("*"):
                dst = link / src.relative_to(target)
                if src.is_dir():
                    dst.mkdir(parents=True, exist_ok=True)
                else:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.link(src, dst)
        else:
            os.link(target, link)
    except OSError as exc:
        raise RunDirError(
            f"cannot reference {target} from {link} (neither symbolic nor hard links work: "
            f"{exc.strerror}); labelaudit does not copy images"
        ) from None


def _write_dataset(view: _RunView, plan: _Plan, out: Path, ds, rows: np.ndarray) -> int:
    """Write the cleaned dataset into the empty directory ``out``; returns rows written.

    The marker file (:data:`CLEANED_MARKER`) lists every entry written there.
    """
    from labelaudit.data.layouts import (
        cleaned_copy_options,
        cleaned_marker,
        get_layout,
        write_label_file,
    )

    layout = get_layout(ds.layout)
    rows_out = {}  # label-file line -> new label text (None: unchanged)
    for i, r in enumerate(rows):
        if plan.kept[i]:
            changed = not np.array_equal(plan.labels[i], view.given[i])
            rows_out[ds.rows[r]] = view.fmt(plan.labels[i]) if changed else None
    n_rows = write_label_file(ds, out / ds.label_file.name, rows_out)

    root = ds.root.resolve()
    written = [ds.label_file.name]
    for name in layout.extra_files:
        if (root / name).is_file():
            shutil.copyfile(root / name, out / name)
            written.append(name)
    kept_ids = [view.ids[i] for i in np.flatnonzero(plan.kept)]
    # Images in a directory given with --images stay there: the marker names it.
    entries = [] if "images" in ds.options else layout.image_entries(ds, kept_ids)
    for top in entries:
        if top in (ds.label_file.name, *layout.extra_files, CLEANED_MARKER):
            raise RunDirError(f"an image path starts with {top!r}, the name of a label file")
        _link((root / top).resolve(), out / top)
        written.append(top)
    options = cleaned_copy_options(ds) if ds.options else None
    write_json(out / CLEANED_MARKER, cleaned_marker(_source_root(root), written, options))
    return n_rows


def _source_root(root: Path) -> Path:
    """Where the images of ``root`` really live: a cleaned dataset's own (signed) source."""
    from labelaudit.data.layouts import marker_source

    return marker_source(root) or root


def _owned_entries(final: Path) -> set[str] | None:
    """What labelaudit wrote into an existing ``cleaned/`` (``None``: not labelaudit's)."""
    marker = final / CLEANED_MARKER
    if final.is_symlink() or not final.is_dir() or marker.is_symlink() or not marker.is_file():
        return None
    try:
        entries = read_user_json(marker, "the cleaned-dataset marker", max_bytes=MAX_MARKER_BYTES)
    except DatasetError:
        return None
    entries = entries.get("entries") if isinstance(entries, dict) else None
    # Names from a file are untrusted: one that is not a plain child of cleaned/
    # ("../x", "/x") makes the whole marker foreign, so nothing it lists is deleted.
    if not isinstance(entries, list) or not all(is_plain_entry(e) for e in entries):
        return None
    return {*entries, CLEANED_MARKER}


def check_replaceable(final: Path) -> None:
    """Refuse to replace a ``cleaned`` that labelaudit did not write, or that holds foreign files.

    ``scan`` calls it before any work, :func:`clean` before writing.

    Raises
    ------
    RunDirError
        ``final`` exists and is not labelaudit's (no marker, a file, a link), or
        holds entries labelaudit did not write there.
    """
    if not (final.exists() or final.is_symlink()):
        return
    owned = _owned_entries(final)
    if owned is None:
        raise RunDirError(f"{final} {_not_ours_reason(final)}; move it away and run again")
    foreign = sorted(set(os.listdir(final)) - owned)
    if foreign:
        raise RunDirError(
            f"{final} holds files labelaudit did not write ({', '.join(foreign[:3])}); "
            "labelaudit does not delete them: move them away and run again"
        )


def _verify(out: Path, view: _RunView, plan: _Plan) -> None:
    """The cleaned dataset must load, with exactly the kept images and new labels."""
    from labelaudit.data.layouts import load_dataset, recorded_load_options

    # The cleaned dataset links to the scanned one's images: read them as the scan did
    # (its marker gives its own label file and image directory).
    options = recorded_load_options(view.info)
    options = {k: options[k] for k in ("follow_symlinks", "max_pixels")}
    ds = load_dataset(out, view.info["layout"], **options)
    kept = [view.ids[i] for i in np.flatnonzero(plan.kept)]
    if ds.ids != kept or not np.array_equal(ds.labels, plan.labels[plan.kept]):
        raise AssertionError("the cleaned dataset does not read back as written")


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace ``final`` (labelaudit's, see :func:`_check_replaceable`) by ``tmp``.

    The old directory is renamed aside, the new one renamed into place, then the
    old one's entries that labelaudit wrote are removed (links unlinked, never
    followed) and the directory itself if nothing else is left.
    """
    check_replaceable(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}-old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        _remove_owned(old, _owned_entries(old) or set())


def _not_ours_reason(final: Path) -> str:
    """Why ``final`` is not a cleaned dataset labelaudit may replace, in words."""
    marker = final / CLEANED_MARKER
    if final.is_symlink():
        return "is a symbolic link, not a directory labelaudit wrote; labelaudit does not follow it"
    if not final.is_dir():
        return "is a file, not a directory labelaudit wrote; labelaudit does not replace it"
    if marker.is_symlink() or not (marker.exists() and marker.is_file()):
        return (
            f"was not written by labelaudit (no {CLEANED_MARKER} in it); labelaudit does "
            "not replace it"
        )
    return (
        f"has a damaged or forged {CLEANED_MARKER} (its entries must be plain names inside "
        f"{final.name}/); labelaudit deletes nothing it lists"
    )


def _remove_owned(directory: Path, owned: set[str]) -> None:
    """Remove the named entries of ``directory`` (labelaudit's), then the directory if empty."""
    for name in sorted(owned):
        remove_entry(directory, name)  # links unlinked, never followed; containment checked
    with contextlib.suppress(OSError):
        directory.rmdir()


# ------------------------------------------------------------------ entry point


def resolve_policy(policy: str | None, decisions: str | Path | None) -> str:
    """The policy to apply: the one asked for; else ``none`` beside a decisions file
    (only what was decided changes), else :data:`DEFAULT_POLICY`."""
    if policy is not None:
        return policy
    return DECISIONS_ONLY_POLICY if decisions is not None else DEFAULT_POLICY


def plan_changes(
    run_dir: str | Path,
    *,
    policy: str | None = None,
    decisions: str | Path | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    min_class_ap: float = DEFAULT_MIN_CLASS_AP,
) -> tuple[_RunView, _Plan, int]:
    """Apply a policy (and decisions) to a run without writing anything.

    ``policy=None``: :func:`resolve_policy` (with a decisions file, only its
    decisions change anything).

    Returns
    -------
    (view of the run, plan: new labels / kept / reasons per image, decisions applied)
    """
    asked = policy  # None: not asked for (only a decisions file may change rows)
    policy = resolve_policy(policy, decisions)
    if policy not in _POLICY_FUNCS:
        raise SettingsError(
            f"unknown cleaning policy {policy!r}; choose one of {', '.join(POLICIES)}"
        )
    if not 0.5 < float(confidence) <= 1.0:
        raise SettingsError(f"confidence must be in (0.5, 1], got {confidence}")
    if not 0.0 <= float(min_class_ap) <= 1.0:
        raise SettingsError(f"min_class_ap must be in [0, 1], got {min_class_ap}")
    view = read_run_view(run_dir)
    plan = _POLICY_FUNCS[policy](
        view, confidence=float(confidence), min_class_ap=float(min_class_ap)
    )
    parsed = read_decisions(decisions, view) if decisions is not None else []
    _apply_decisions(view, plan, parsed, Path(decisions) if decisions else None)
    if asked is None and decisions is not None:
        _refuse_undecided_conflicts(view, plan, Path(decisions))
    _resolve_exclusive(view, plan)
    return view, plan, len(parsed)


def _refuse_undecided_conflicts(view: _RunView, plan: _Plan, path: Path) -> None:
    """With decisions alone, a given set joining an exclusive class stays a person's call.

    Only what the file decides may change without a policy, and no output ever joins
    an exclusive class with another: so such images must be decided in the file
    (``edit`` one side, or ``reject``), or a policy asked for, which resolves them by
    the probabilities (:func:`_resolve_exclusive`).

    Raises
    ------
    DatasetError
        Naming the decisions file, how many images are undecided and the first few.
    """
    decided = plan.decided if plan.decided is not None else np.zeros(len(view.ids), bool)
    open_rows = plan.kept & ~decided & conflicting_rows(plan.labels, view.exclusive)
    if not open_rows.any():
        return
    first = [
        f"{view.ids[i]} ({describe_conflict(view.names, plan.labels[i], view.exclusive)})"
        for i in np.flatnonzero(open_rows)[:3]
    ]
    n = int(open_rows.sum())
    raise DatasetError(
        f"{n} image(s) the file does not decide join an exclusive class with another, "
        f"which no cleaned dataset may keep: {'; '.join(first)}{'; ...' if n > 3 else ''}; "
        "decide them (edit one side, or reject) or ask for a policy (--policy none "
        "resolves them by the probabilities)",
        path=path,
    )


def _resolve_exclusive(view: _RunView, plan: _Plan) -> None:
    """No kept image leaves with an exclusive class joined to another class.

    Whatever the policy (the soft ones keep the given labels) or a reviewer's
    ``reject`` (which keeps them too), such a set is never right: the side the
    out-of-fold probabilities support stays (:func:`labelaudit.data.roles.
    resolve_exclusive`); without probabilities the image is removed (nothing says
    which side is wrong).
    """
    conflict = plan.kept & conflicting_rows(plan.labels, view.exclusive)
    for i in np.flatnonzero(conflict):
        what = describe_conflict(view.names, plan.labels[i], view.exclusive)
        if view.probs is None:
            plan.kept[i] = False
            plan.labels[i] = view.given[i]
            plan.reasons[i] = "exclusive class joined with another (no probabilities)"
        else:
            plan.labels[i] = resolve_exclusive(
                plan.labels[i : i + 1], view.probs[i : i + 1], view.exclusive
            )[0]
            plan.reasons[i] = "exclusive class joined with another"
        plan.details[i] = "; ".join(d for d in (what, plan.details[i]) if d)


def changes_table(view: _RunView, plan: _Plan) -> pd.DataFrame:
    """The ``changes.csv`` rows: every removed or relabelled image, dataset order."""
    records = []
    decided = plan.decided if plan.decided is not None else np.zeros(len(view.ids), bool)
    for i, image_id in enumerate(view.ids):
        old = view.fmt(view.given[i])
        by = "person" if decided[i] else "policy"
        if not plan.kept[i]:
            records.append((image_id, "remove", old, "", plan.reasons[i], plan.details[i], by))
        elif not np.array_equal(plan.labels[i], view.given[i]):
            new = view.fmt(plan.labels[i])
            records.append((image_id, "relabel", old, new, plan.reasons[i], plan.details[i], by))
    return pd.DataFrame.from_records(records, columns=CHANGES_COLUMNS)


def clean(
    run_dir: str | Path,
    *,
    policy: str | None = None,
    decisions: str | Path | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    min_class_ap: float = DEFAULT_MIN_CLASS_AP,
) -> CleanResult:
    """Write ``RUN/cleaned/`` and ``RUN/changes.csv`` for a scanned run.

    Parameters
    ----------
    run_dir
        A run directory with ``run.json``, ``dataset.csv``, ``issues.csv`` (and
        ``findings.csv`` for the ``relabel`` and ``intensity`` policies).
    policy
        One of :data:`POLICIES` (module docstring); ``None``: ``none`` beside a
        decisions file (only the decisions change anything), else
        :data:`DEFAULT_POLICY`.
    decisions
        A decisions CSV (``id, decision, labels``, as exported by the report); checked
        against the run before anything is written. It overrides the policy for the
        images it names.
    confidence
        ``relabel``: the probability a suggested class needs (``1 - confidence``
        for a class to remove).
    min_class_ap
        ``relabel``: the out-of-fold average precision a class needs before its
        suggestions are trusted (0 trusts every class).

    Returns
    -------
    CleanResult

    Raises
    ------
    SettingsError
        Unknown policy, bad ``confidence``, or a result with no image left.
    DatasetError
        A bad decisions file (naming the file and line).
    RunDirError
        Missing run artifacts, or a dataset that changed since the scan.
    """
    run_dir = Path(run_dir)
    read_run(run_dir)  # a run directory (before the lock file is created in it)
    with run_lock(run_dir):
        return _clean(
            run_dir,
            policy=policy,
            decisions=decisions,
            confidence=confidence,
            min_class_ap=min_class_ap,
        )


def _clean(
    run_dir: Path,
    *,
    policy: str | None,
    decisions: str | Path | None,
    confidence: float,
    min_class_ap: float,
) -> CleanResult:
    start = time.perf_counter()
    view, plan, n_decisions = plan_changes(
        run_dir,
        policy=policy,  # None with decisions: only they may change anything
        decisions=decisions,
        confidence=confidence,
        min_class_ap=min_class_ap,
    )
    policy = resolve_policy(policy, decisions)
    if not plan.kept.any():
        raise SettingsError(
            f"cleaning policy {policy!r} would remove all {len(view.ids)} images; "
            "nothing would be left to train on"
        )
    changes = changes_table(view, plan)

    final = run_dir / CLEANED_DIR
    changes_file = run_dir / CHANGES_CSV
    ds, rows = _load_source(view)
    # No output on, inside or around an input (the scanned dataset may be this
    # run's own cleaned/ when an older labelaudit scanned it; a decisions file
    # may sit in the run directory).
    inputs = dataset_inputs(ds)
    if decisions is not None:
        inputs.append(("the decisions file", Path(decisions)))
    weights_file = run_dir / LABEL_WEIGHTS_FILE
    for output, what in (
        (final, "cleaned dataset"),
        (changes_file, "changes file"),
        (weights_file, "label weights file"),
    ):
        ensure_outside(inputs, output, what)
    check_replaceable(final)
    tmp = run_dir / f".{CLEANED_DIR}-tmp-{os.getpid()}"
    remove_entry(run_dir, tmp.name)  # our own leftover (same pid, hidden name of our pattern)
    tmp.mkdir()
    try:
        n_rows = _write_dataset(view, plan, tmp, ds, rows)
        _verify(tmp, view, plan)
        _swap_in(tmp, final)
    finally:
        remove_entry(run_dir, tmp.name)
    RunDir(run_dir).write_table(CHANGES_CSV, changes)
    if plan.weights is not None:
        RunDir(run_dir).write_table(LABEL_WEIGHTS_FILE, label_weights_table(view, plan.weights))
    elif weights_file.is_file():
        weights_file.unlink()  # an earlier soft policy's (run directory files are ours)
    params = {}
    if policy in ("relabel", "relabel-soft", "relabel-only"):
        params = {"confidence": float(confidence), "min_class_ap": float(min_class_ap)}
        ap = class_reliability(view)
        params["class_ap"] = {
            n: (None if np.isnan(a) else round(float(a), 4))
            for n, a in zip(view.names, ap, strict=True)
        }
    RunDir(run_dir).write_section(
        "clean",
        {
            "policy": policy,
            "params": params,
            "decisions": str(Path(decisions).resolve()) if decisions is not None else None,
            "n_decisions": n_decisions,
            "n_images": len(view.ids),
            "n_kept": int(plan.kept.sum()),
            "n_removed": int((changes["action"] == "remove").sum()),
            "n_relabelled": int((changes["action"] == "relabel").sum()),
            "n_by_person": int((changes["made_by"] == "person").sum()),
            "n_by_policy": int((changes["made_by"] == "policy").sum()),
            "label_weights": str(weights_file.resolve()) if plan.weights is not None else None,
            "n_rows_written": n_rows,
            "cleaned": str(final.resolve()),
            "changes": str(changes_file.resolve()),
            "source": view.info.get("path"),
            "seconds": round(time.perf_counter() - start, 3),
        },
    )
    return CleanResult(
        run_dir=run_dir,
        cleaned_dir=final,
        changes_file=changes_file,
        policy=policy,
        changes=changes,
        ids=view.ids,
        labels=plan.labels,
        kept=plan.kept,
        n_decisions=n_decisions,
        params=params,
        weights=plan.weights,
    )


def label_weights_table(view: _RunView, weights: np.ndarray) -> pd.DataFrame:
    """``label_weights.csv``: ``id`` and one column of weights per class name."""
    frame = pd.DataFrame(np.round(weights.astype(float), 4), columns=view.names)
    frame.insert(0, "id", view.ids)
    return frame


def read_label_weights(run_dir: str | Path, ids: list[str], names: list[str]) -> np.ndarray | None:
    """``RUN/label_weights.csv`` aligned to ``ids`` and ``names``; ``None`` if absent.

    Raises
    ------
    RunDirError
        Missing ids or classes, or weights that are not finite numbers in [0, 1].
    """
    path = Path(run_dir) / LABEL_WEIGHTS_FILE
    if not path.is_file():
        return None
    frame = RunDir(run_dir).read_table(LABEL_WEIGHTS_FILE)
    missing = [c for c in ["id", *names] if c not in frame.columns]
    if missing:
        raise RunDirError(f"{path}: column(s) {', '.join(missing)} missing")
    frame = frame.drop_duplicates("id").set_index("id")
    absent = [i for i in ids if i not in frame.index]
    if absent:
        raise RunDirError(f"{path}: no weights for {len(absent)} image(s), e.g. {absent[0]!r}")
    values = frame.loc[ids, names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise RunDirError(f"{path}: weights must be numbers in [0, 1]")
    return values.astype(np.float32)


def read_changes(run_dir: str | Path) -> pd.DataFrame:
    """Read ``RUN/changes.csv`` (every column as text, empty strings kept)."""
    path = Path(run_dir) / CHANGES_CSV
    frame = RunDir(run_dir).read_table(CHANGES_CSV)
    missing = [c for c in CHANGES_COLUMNS[:5] if c not in frame.columns]
    if missing:
        raise RunDirError(f"{path}: column(s) {', '.join(missing)} missing")
    bad = sorted(set(frame["action"]) - {"remove", "relabel"})
    if bad:
        raise RunDirError(f"{path}: unknown action(s) {', '.join(map(repr, bad))}")
    return frame


__all__ = [
    "CHANGES_COLUMNS",
    "DECISIONS",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MIN_CLASS_AP",
    "DEFAULT_POLICY",
    "LABEL_WEIGHTS_FILE",
    "POLICIES",
    "CleanResult",
    "changes_table",
    "check_replaceable",
    "class_reliability",
    "clean",
    "plan_changes",
    "read_changes",
    "read_decisions",
    "read_label_weights",
    "resolve_policy",
    "soft_label_weights",
]
