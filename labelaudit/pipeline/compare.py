"""Run the detectors, compare them, and write the per-image issues table.

``issues.csv`` has one row per image: the given and suggested labels (in the
dataset's notation), each detector's per-image value, who flagged the image, and a
consensus across detectors:

* ``consensus_score`` = mean over the detectors that ran of the image's rank
  percentile of suspiciousness (0 = least suspicious, 1 = most; ties share their
  mean rank), so detectors with different score scales count equally;
* ``consensus_flag`` = flagged by at least ``min_methods`` detectors;
* ``label_score``, ``image_score``, ``problem_score``: the default order, per
  problem family and over both (:func:`family_scores`); the table is sorted by
  ``problem_score``; ``evidence`` names the detectors that put the row there;
* ``suggested_labels`` = the given labels with the trusted per-label changes
  (``label_changes``) applied; ``doubtful_labels`` = flagged labels without a
  suggestion (:mod:`labelaudit.detect.suggest`);
* ``stain_evidence`` = label evidence from the pixels (quality: ``protein stain empty:
  looks Negative``, a target stain as empty as the exclusive class's with normal
  reference stains); ``exclusive_conflict`` = the given set joins an exclusive class
  with another class (:mod:`labelaudit.data.roles`);
* ``unreliable_classes`` = the classes the image's findings involve (its given
  labels and the classes of its flagged findings) whose out-of-fold probabilities
  are unreliable: classes with fewer positive images than folds, which some fold's
  model never saw (``;``-separated class names; empty for most images).

``agreement`` (``run.json["compare"]``) has, for an UpSet chart, the number of images
flagged by exactly each combination of detectors (``"none"`` included; they add
up to N), pairwise Jaccard indices of the flagged sets (1.0 for two empty sets, as
scipy's Jaccard distance 0), Spearman correlations of the per-image scores (``None``
where a score is constant), and the same flag counts and Jaccard indices per class.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelaudit.core.errors import SettingsError
from labelaudit.core.robust import robust_z
from labelaudit.detect import (
    REGISTRY,
    AuditInputs,
    DetectorResult,
    get_detector,
)
from labelaudit.detect.base import empty_findings
from labelaudit.detect.suggest import (
    IMAGE_DETECTORS,
    apply_suggestions,
    change_text,
    empty_target_rows,
    neighbour_shares,
    suggest_labels,
)
from labelaudit.rundir import FINDINGS_CSV, ISSUES_CSV, RunDir

DEFAULT_DETECTORS = (
    "confident",
    "knn",
    "combined",
    "isolation",
    "intensity",
    "quality",
    "exclusive",
)

#: The issues.csv columns before the detectors' own.
LEADING_COLUMNS = ("id", "given_labels", "suggested_labels")
#: The issues.csv columns of the comparison, after the detectors' own.
COMPARISON_COLUMNS = (
    "flagged_by",
    "n_flags",
    "consensus_score",
    "consensus_flag",
    "label_changes",
    "doubtful_labels",
    "unreliable_classes",
    "label_score",
    "image_score",
    "problem_score",
    "evidence",
)


def detector_columns() -> dict[str, str]:
    """The per-image columns the registered detectors declare for ``issues.csv``
    (``Detector.issue_columns``), in registration order, each with its kind
    (``"score"`` or ``"text"``)."""
    return {
        col: kind
        for cls in REGISTRY.values()
        if not cls.after_comparison  # their stage appends theirs
        for col, kind in cls.issue_columns.items()
    }


def issues_columns() -> list[str]:
    """The ``issues.csv`` columns every run has, in order: the leading ones, those the
    registered detectors declare (empty where a detector did not run), the comparison's."""
    return [*LEADING_COLUMNS, *detector_columns(), *COMPARISON_COLUMNS]


#: The issues.csv columns with the built-in detectors (:func:`issues_columns`).
ISSUES_COLUMNS = issues_columns()

#: The problem families (see :func:`family_scores`).
FAMILIES = ("label", "image")
#: Strong evidence: a piece of evidence's robust z beyond STRONG_Z widths of its
#: empirical null (:func:`null_width`); each of quality's issue types is its own piece
#: (:func:`evidence_streams`). STRONG_Z and NULL_QUANTILE were chosen on the four
#: benchmark runs (synth seeds 7, 11, 13 and the first real-pixel set) from a grid of
#: quantile 0.75-0.95 by 2.5-4 widths, where 0.85-0.9 by 3-3.5 form a plateau, and
#: checked on four held-out runs (synth seeds 17, 19, the real-pixel set with its
#: yellow crops fixed, seeds 0 and 1); docs/benchmarks.md, "default order". Per family
#: the default order still falls short of the family's best single detector in 4 of
#: the 12 chosen-on cells and 2 of the 12 held-out ones (label problems on s7, s11 and
#: the real-pixel sets; image problems on the first real-pixel set); on two of the
#: real-pixel sets no merge of the two family orders meets both, not even one chosen
#: with the truth (``benchmarks/default_order.py --bound``). STRONG_Z = 7.0 with
#: NULL_QUANTILE = None was the first rule.
STRONG_Z = 3.0
#: The upper quantile of a piece of evidence's robust z that sets its null's width:
#: the width is that quantile over the standard normal's (at least 1), so evidence
#: whose clean images have a heavy upper tail (saturation on real textures) needs a
#: larger z before it counts as strong. ``None``: width 1.
NULL_QUANTILE: float | None = 0.9
#: The family whose reference ranking orders ``problem_score`` below strong evidence:
#: label problems are the common kind; image problems rise by their strong evidence.
PROBLEM_BULK_FAMILY = "label"


@dataclass
class ComparisonResult:
    """Everything :func:`detect_and_compare` produced.

    Attributes
    ----------
    issues
        The ``issues.csv`` table, sorted by ``problem_score`` descending.
    findings
        All detectors' findings concatenated (``findings.csv``).
    agreement
        Agreement between detectors (``run.json["compare"]["agreement"]``).
    results
        Each detector's :class:`~labelaudit.detect.DetectorResult`, by name.
    skipped
        Detectors not run, with the reason.
    """

    issues: pd.DataFrame
    findings: pd.DataFrame
    agreement: dict[str, Any]
    results: dict[str, DetectorResult]
    skipped: dict[str, str] = field(default_factory=dict)


def check_detectors(detectors: Sequence[str] | str | None) -> list[str]:
    """The detector names to run, each checked against the registry (``None``: defaults).

    Raises
    ------
    SettingsError
        An unknown detector name (the message lists the available ones).
    """
    if detectors is None:
        return list(DEFAULT_DETECTORS)
    names = [detectors] if isinstance(detectors, str) else list(detectors)
    for name in names:
        if name not in REGISTRY:
            get_detector(name)  # raises the registry's one-line message
        _refuse_after_comparison(name)
    if not names:
        raise SettingsError(f"no detector given (available: {', '.join(REGISTRY)})")
    return list(dict.fromkeys(names))


def _refuse_after_comparison(name: str) -> None:
    """A detector that runs after the comparison cannot be one of the compared."""
    cls = REGISTRY.get(name)
    if cls is not None and cls.after_comparison:
        raise SettingsError(
            f"detector {name!r} runs after the comparison, on the run's image cache; "
            f"choose among {', '.join(n for n, c in REGISTRY.items() if not c.after_comparison)}"
        )


def run_detectors(
    inputs: AuditInputs,
    detectors: Sequence[str] | None = DEFAULT_DETECTORS,
    params: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, DetectorResult], dict[str, str], dict[str, dict[str, Any]]]:
    """Run the named detectors, skipping those whose inputs are missing.

    Parameters
    ----------
    inputs
        The audit inputs.
    detectors
        Registered detector names, in the order they should appear (``None``:
        :data:`DEFAULT_DETECTORS`).
    params
        Per-detector keyword parameters, e.g. ``{"intensity": {"method": "robust"}}``.

    Returns
    -------
    results, skipped, used_params
        Results by name; skipped names with the reason; parameters of every
        detector (run or skipped).

    Raises
    ------
    SettingsError
        Unknown detector, unknown parameter, or parameters for an unknown detector.
    """
    params = dict(params or {})
    if isinstance(detectors, str):
        detectors = [detectors]
    if detectors is None:
        detectors = DEFAULT_DETECTORS
    detectors = list(dict.fromkeys(detectors))  # no repeats, same order
    unknown = sorted(set(params) - set(REGISTRY))
    if unknown:
        raise SettingsError(
            f"parameters given for unknown detector {', '.join(map(repr, unknown))} "
            f"(available: {', '.join(REGISTRY)})"
        )
    for name in detectors:
        _refuse_after_comparison(name)
    instances = {name: get_detector(name, **params.get(name, {})) for name in detectors}
    results: dict[str, DetectorResult] = {}
    skipped: dict[str, str] = {}
    for name, det in instances.items():
        if not det.applies(inputs):
            continue
        missing = det.missing_inputs(inputs)
        if missing:
            skipped[name] = f"skipped: the run has no {', '.join(missing)}"
            continue
        results[name] = det.run(inputs)
    used = {name: det.get_params() for name, det in instances.items()}
    return results, skipped, used


def rank_percentile(score: np.ndarray) -> np.ndarray:
    """Rank percentile in [0, 1] (ties share their mean rank; NaN -> NaN)."""
    from scipy.stats import rankdata

    score = np.asarray(score, dtype=float)
    out = np.full(score.shape, np.nan)
    ok = ~np.isnan(score)
    m = int(ok.sum())
    if m == 1:
        out[ok] = 0.5
    elif m > 1:
        out[ok] = (rankdata(score[ok], method="average") - 1) / (m - 1)
    return out


def family_of(name: str) -> str:
    """The problem family (``"label"`` or ``"image"``) of the registered detector ``name``."""
    cls = REGISTRY.get(name)
    family = cls.family if cls is not None else None
    return family or "label"


def null_width(z: np.ndarray) -> float:
    """Width of a detector's empirical null, in units of its robust z (>= 1).

    The robust z (:func:`robust_z`) has width 1 when the scores are normal about
    their median. Many are not: their clean images have a heavier upper tail. The
    width is the :data:`NULL_QUANTILE` of ``z`` over the standard normal's (an
    empirical null in the spirit of Efron's, matched on the upper part of the
    bulk, where the false alarms come from), never below 1.
    """
    from scipy.stats import norm

    z = np.asarray(z, dtype=float)
    if NULL_QUANTILE is None or z.size == 0:
        return 1.0
    return max(1.0, float(np.quantile(z, NULL_QUANTILE)) / float(norm.ppf(NULL_QUANTILE)))


@dataclass
class FamilyScores:
    """The default order's parts (see :func:`family_scores`)."""

    label: np.ndarray
    image: np.ndarray
    problem: np.ndarray
    evidence: list[str]


def evidence_streams(
    results: dict[str, DetectorResult],
) -> dict[str, tuple[str, np.ndarray]]:
    """The separate pieces of evidence, by name: ``{name: (detector, scores)}``.

    A detector's ``evidence_scores`` (one per kind of problem it looks for, e.g.
    ``quality:blurry``) when it has them, else its ``image_score`` under its name;
    then its ``label_evidence`` kinds (:func:`stream_family` puts them in the label
    family).
    """
    streams: dict[str, tuple[str, np.ndarray]] = {}
    for name, result in results.items():
        kinds = getattr(result, "evidence_scores", None) or {}
        if not kinds:
            streams[name] = (name, np.asarray(result.image_score, dtype=float))
        for kind, values in kinds.items():
            streams[f"{name}:{kind}"] = (name, np.asarray(values, dtype=float))
        for kind, values in (getattr(result, "label_evidence", None) or {}).items():
            streams[f"{name}:{kind}"] = (name, np.asarray(values, dtype=float))
    return streams


def stream_family(results: dict[str, DetectorResult], stream: str, detector: str) -> str:
    """The family a piece of evidence counts in: ``label`` for a detector's
    ``label_evidence`` kinds, else its detector's family."""
    kind = stream[len(detector) + 1 :] if stream.startswith(detector + ":") else ""
    if kind and kind in (getattr(results[detector], "label_evidence", None) or {}):
        return "label"
    return family_of(detector)


def _stream_names(results: dict[str, DetectorResult], streams) -> dict[str, str]:
    """Words for a piece of evidence in the evidence column (its name by default)."""
    out = {}
    for s, (m, _) in streams.items():
        kind = s[len(m) + 1 :] if s.startswith(m + ":") else ""
        out[s] = (getattr(results[m], "evidence_names", None) or {}).get(kind, s)
    return out


def family_scores(results: dict[str, DetectorResult]) -> FamilyScores:
    """Per-image label, image and combined problem scores, and the evidence behind them.

    Each detector's image score is calibrated against its own distribution twice:

    * *bulk*: its rank percentile (0..1), for the order among images without strong
      evidence; only detectors with a ``bulk_weight`` count (confident learning for
      labels, quality for images: on the benchmarks the other rankings carry little
      signal in the bulk and an average with them is worse than the best alone); a
      family with no weighted detector averages its detectors' percentiles;
    * *strong*: how far each piece of evidence's robust z (:func:`robust_z`), in
      widths of its empirical null (:func:`null_width`), exceeds :data:`STRONG_Z`;
      0 within the null. A detector that reports several kinds of problem
      (``evidence_scores``: quality's issue types) gives one piece per kind, each
      judged against its own null (:func:`evidence_streams`).

    A family's score is ``bulk + [any strong evidence] + sum of strong evidence``:
    an image with strong evidence from any detector of the family (score >= 1)
    always sits above every image without (score < 1), whatever their bulk ranks.
    ``problem`` sums the strong evidence of all detectors onto the
    :data:`PROBLEM_BULK_FAMILY`'s bulk *without* that jump: across families, evidence
    just past its null (a clean field's clipping texture) must not outrank the images
    the label evidence is surest of, while a clear fault (several null widths past)
    still tops the list. Measured on nine runs (docs/benchmarks.md, "cells as label
    evidence"): without the jump the default order ranks any problem better on every
    one (+0.002 to +0.013), and each family's own order is unchanged.

    Returns
    -------
    FamilyScores
        ``evidence`` per image: the evidence behind its place, strongest first
        (``intensity z=6.1``, ``quality:blurry z=8.2``), then the weighted bulk
        detectors where the image is in their top 10% (``confident top 4%``);
        empty when nothing stands out.
    """
    names = list(results)
    n = len(next(iter(results.values())).image_score) if names else 0
    pct = {m: np.nan_to_num(rank_percentile(results[m].image_score), nan=0.0) for m in names}
    weight = {m: float(getattr(REGISTRY.get(m), "bulk_weight", 0.0) or 0.0) for m in names}
    streams = evidence_streams(results)
    z = {s: robust_z(values) for s, (_, values) in streams.items()}
    strong = {s: np.maximum(z[s] / null_width(z[s]) - STRONG_Z, 0.0) for s in streams}

    def bulk(members: list[str]) -> np.ndarray:
        # A detector that contains another's evidence replaces it in the bulk order
        # (``supersedes``: the combined label evidence contains confident learning's).
        gone = {o for m in members for o in getattr(REGISTRY.get(m), "supersedes", ())}
        members = [m for m in members if m not in gone]
        if not members:
            return np.zeros(n)
        w = np.array([weight[m] for m in members])
        if w.sum() <= 0:
            w = np.ones(len(members))
        return sum(wi * pct[m] for wi, m in zip(w, members, strict=True)) / w.sum()

    family = {s: stream_family(results, s, m) for s, (m, _) in streams.items()}

    def score(families: tuple[str, ...], order: np.ndarray, jump: bool = True) -> np.ndarray:
        total = sum((strong[s] for s in streams if family[s] in families), np.zeros(n))
        return order + jump * (total > 0) + total

    by_family = {f: [m for m in names if family_of(m) == f] for f in FAMILIES}
    bulks = {f: bulk(members) for f, members in by_family.items()}
    if not by_family[PROBLEM_BULK_FAMILY]:  # e.g. only image detectors ran
        bulks[PROBLEM_BULK_FAMILY] = bulk(names)
    return FamilyScores(
        label=score(("label",), bulks["label"]),
        image=score(("image",), bulks["image"]),
        problem=score(FAMILIES, bulks[PROBLEM_BULK_FAMILY], jump=False),
        evidence=_evidence(
            names,
            pct,
            z,
            strong,
            weight,
            n,
            {s: m for s, (m, _) in streams.items()},
            _stream_names(results, streams),
        ),
    )


def _evidence(
    names: list[str],
    pct: dict[str, np.ndarray],
    z: dict[str, np.ndarray],
    strong: dict[str, np.ndarray],
    weight: dict[str, float],
    n: int,
    detector_of: dict[str, str],
    words: dict[str, str] | None = None,
) -> list[str]:
    """Per image: strong evidence (``name z=...``, robust z), then top-10% bulk ranks."""
    words = words or {}
    out: list[str] = []
    for i in range(n):
        hits = sorted(((strong[s][i], s) for s in strong if strong[s][i] > 0), reverse=True)
        parts = [f"{words.get(s, s)} z={z[s][i]:.1f}" for _, s in hits]
        behind = {detector_of[s] for _, s in hits}
        for m in names:
            top = 1.0 - pct[m][i]
            if weight[m] > 0 and top < 0.1 and m not in behind:
                parts.append(f"{m} top {max(top * 100, 1):.0f}%")
        out.append("; ".join(parts))
    return out


def build_issues(
    inputs: AuditInputs,
    results: dict[str, DetectorResult],
    *,
    min_methods: int = 2,
    suggest_from: Iterable[str] = ("confident",),
    unreliable: Sequence[str] = (),
) -> pd.DataFrame:
    """The per-image issues table.

    Parameters
    ----------
    inputs
        The audit inputs.
    results
        Detector results by name (the order gives the order in ``flagged_by``).
    min_methods
        Detectors that must flag an image for ``consensus_flag``.
    suggest_from
        Detectors whose flagged ``"add"``/``"remove"`` findings are candidate label
        changes. Only ``confident`` by default: an image far from its class in
        embedding space is a reason to look, not evidence of which label is right.
        A candidate changes ``suggested_labels`` only where
        :func:`labelaudit.detect.suggest.suggest_labels` trusts it; ``label_changes`` lists
        those as ``+token (confidence)`` / ``-token (confidence)``, ``doubtful_labels``
        the other candidates with their probability (``-3 (p=0.04)``).
    unreliable
        Class names whose findings are unreliable (rare classes); listed per image
        in ``unreliable_classes`` where the image's labels or findings involve them.

    Returns
    -------
    pandas.DataFrame
        :func:`issues_columns` (plus columns a detector returns without declaring
        them), sorted by
        ``problem_score`` descending (the default order), then ``n_flags`` descending.
    """
    n = inputs.n_images
    names = list(results)
    suggestions = _suggestions(inputs, results, suggest_from)
    suggested = apply_suggestions(inputs.labels, suggestions)
    changes, doubtful = _change_columns(inputs, suggestions)

    table: dict[str, Any] = {
        "id": inputs.ids,
        "given_labels": inputs.format_labels(inputs.labels),
        "suggested_labels": inputs.format_labels(suggested),
    }
    for col, kind in detector_columns().items():  # filled below by the detectors that ran
        table[col] = np.full(n, np.nan) if kind == "score" else [""] * n
    for m in names:
        for col, values in results[m].columns.items():
            values = np.asarray(values)
            # Text columns (quality_issues) stay text; scores become floats.
            table[col] = values if values.dtype.kind in "OUS" else values.astype(float)
    table.update(_consensus_columns(results, n))
    table["consensus_flag"] = table["n_flags"] >= min_methods
    table["label_changes"] = changes
    table["doubtful_labels"] = doubtful
    table["unreliable_classes"] = _unreliable_column(inputs, results, unreliable)
    issues = pd.DataFrame(table)
    columns = issues_columns()
    extra = [c for c in issues.columns if c not in columns]
    issues = issues[columns + extra]
    return issues.sort_values(
        ["problem_score", "n_flags"], ascending=False, kind="mergesort"
    ).reset_index(drop=True)


def _consensus_columns(results: dict[str, DetectorResult], n: int) -> dict[str, Any]:
    """``flagged_by``, ``n_flags``, ``consensus_score`` and the default order's columns
    (``label_score``, ``image_score``, ``problem_score``, ``evidence``)."""
    names = list(results)
    table: dict[str, Any] = {}
    if not names:
        table["flagged_by"] = [""] * n
        table["n_flags"] = np.zeros(n, dtype=int)
        table["consensus_score"] = np.zeros(n)
        for col in ("label_score", "image_score", "problem_score"):
            table[col] = np.zeros(n)
        table["evidence"] = [""] * n
        return table
    flags = np.column_stack([results[m].image_flagged for m in names])
    table["flagged_by"] = [
        ";".join(m for m, f in zip(names, row, strict=True) if f) for row in flags
    ]
    table["n_flags"] = flags.sum(axis=1)
    pct = np.column_stack([rank_percentile(results[m].image_score) for m in names])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN
        consensus = np.nanmean(pct, axis=1)
    table["consensus_score"] = np.nan_to_num(consensus, nan=0.0)
    fam = family_scores(results)
    table["label_score"] = fam.label
    table["image_score"] = fam.image
    table["problem_score"] = fam.problem
    table["evidence"] = fam.evidence
    return table


def _suggestions(
    inputs: AuditInputs, results: dict[str, DetectorResult], suggest_from: Iterable[str]
) -> pd.DataFrame:
    """Per-label suggestions (:func:`labelaudit.detect.suggest.suggest_labels`) from the
    flagged add/remove findings of the ``suggest_from`` detectors."""
    id_index = pd.Index(inputs.ids)
    class_index = {c: k for k, c in enumerate(inputs.class_names)}
    frames = [
        _flagged_changes(results[m].findings, id_index, class_index)
        for m in suggest_from
        if m in results
    ]
    candidates = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame({"row": [], "class": [], "add": []})
    )
    shares = None
    if "combined" in results:
        # The label evidence's posteriors (every given pair and every absent pair it
        # finds likely) for each candidate; its own flagged pairs are candidates too.
        posterior = neighbour_shares(
            results["combined"].findings.assign(detector="combined"),
            inputs.ids,
            list(inputs.class_names),
            detector="combined",
        )
        own = _flagged_changes(results["combined"].findings, id_index, class_index)
        candidates = pd.concat([candidates, own], ignore_index=True)
        rows, cols = candidates["row"].to_numpy(int), candidates["class"].to_numpy(int)
        candidates["posterior"] = posterior[rows, cols]
    if "knn" in results:
        shares = neighbour_shares(
            results["knn"].findings.assign(detector="knn"), inputs.ids, list(inputs.class_names)
        )
        rows, cols = candidates["row"].to_numpy(int), candidates["class"].to_numpy(int)
        candidates["neighbours"] = shares[rows, cols]
    image_flag = np.zeros(inputs.n_images, dtype=bool)
    for det in IMAGE_DETECTORS:
        if det in results:
            image_flag |= np.asarray(results[det].image_flagged, dtype=bool)
    empty = (
        empty_target_rows(results["quality"].findings, inputs.ids) if "quality" in results else None
    )
    return suggest_labels(
        inputs.labels,
        inputs.probs,
        candidates,
        image_flag,
        class_names=list(inputs.class_names),
        exclusive=inputs.exclusive_idx.tolist(),
        neighbours=shares,
        empty_target=empty,
    )


def _flagged_changes(
    findings: pd.DataFrame, id_index: pd.Index, class_index: dict[str, int]
) -> pd.DataFrame:
    """A detector's flagged add/remove findings as ``row``, ``class``, ``add``."""
    f = findings[
        findings["flagged"].to_numpy() & findings["suggestion"].isin(["add", "remove"]).to_numpy()
    ]
    rows = id_index.get_indexer(f["id"])
    cols = f["class"].map(class_index).fillna(-1).to_numpy(dtype=np.int64)
    ok = (rows >= 0) & (cols >= 0)  # a custom detector might name unknown ids/classes
    add = (f["suggestion"] == "add").to_numpy()
    return pd.DataFrame({"row": rows[ok], "class": cols[ok], "add": add[ok]})


def _change_columns(inputs: AuditInputs, suggestions: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Per image: the trusted changes (``+token (confidence)``) and the doubtful flagged
    labels (``-token (p=0.05)``), ``;``-joined."""
    changes: list[list[str]] = [[] for _ in range(inputs.n_images)]
    doubtful: list[list[str]] = [[] for _ in range(inputs.n_images)]
    for r, c, action, p, conf, trusted in zip(
        suggestions["row"],
        suggestions["class"],
        suggestions["action"],
        suggestions["probability"],
        suggestions["confidence"],
        suggestions["trusted"],
        strict=True,
    ):
        token = inputs.class_tokens[int(c)]
        if trusted:
            changes[int(r)].append(change_text(token, action, float(conf)))
        else:
            why = "" if not np.isfinite(p) else f" (p={p:.2f})"
            doubtful[int(r)].append(f"{'+' if action == 'add' else '-'}{token}{why}")
    return [";".join(c) for c in changes], [";".join(d) for d in doubtful]


def _unreliable_column(
    inputs: AuditInputs, results: dict[str, DetectorResult], unreliable: Sequence[str]
) -> list[str]:
    """Per image, the unreliable classes among its given labels and flagged findings."""
    cols = [k for k, c in enumerate(inputs.class_names) if c in set(unreliable)]
    if not cols:
        return [""] * inputs.n_images
    involved = inputs.labels.copy()
    for result in results.values():
        involved |= _class_flag_matrix(inputs, result)
    names = [inputs.class_names[k] for k in cols]
    return [
        ";".join(name for name, hit in zip(names, row, strict=True) if hit)
        for row in involved[:, cols]
    ]


def unreliable_from_run(run_dir: str | Path) -> list[str]:
    """The unreliable classes the training stage recorded in ``run.json`` (or none)."""
    train = RunDir(run_dir).section("train") or {}
    return [str(c) for c in train.get("unreliable_classes") or []]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None  # undefined for a constant score
    return float(spearmanr(a, b).statistic)


def _pairwise(names: list[str], fn, values: dict[str, np.ndarray]) -> dict[str, dict]:
    return {a: {b: fn(values[a], values[b]) for b in names} for a in names}


def combination_counts(flags: dict[str, np.ndarray], n: int) -> dict[str, int]:
    """Images flagged by exactly each combination of detectors (UpSet counts).

    Keys join detector names with ``"+"`` in the given order; ``"none"`` counts
    images no detector flagged. Every combination appears (zero counts included)
    and the counts add up to ``n``.
    """
    names = list(flags)
    if not names:
        return {"none": n}
    matrix = np.column_stack([np.asarray(flags[m], dtype=bool) for m in names])
    codes = matrix.astype(np.int64) @ (1 << np.arange(len(names), dtype=np.int64))
    counts = np.bincount(codes, minlength=1 << len(names))
    out = {}
    for size in range(len(names) + 1):
        for combo in itertools.combinations(range(len(names)), size):
            code = sum(1 << i for i in combo)
            key = "+".join(names[i] for i in combo) or "none"
            out[key] = int(counts[code])
    return out


def agreement(inputs: AuditInputs, results: dict[str, DetectorResult]) -> dict[str, Any]:
    """How the detectors agree, overall and per class (see module docstring)."""
    n = inputs.n_images
    names = list(results)
    flags = {m: results[m].image_flagged for m in names}
    scores = {m: np.asarray(results[m].image_score, dtype=float) for m in names}

    per_class: dict[str, Any] = {}
    class_flags = {m: _class_flag_matrix(inputs, results[m]) for m in names}
    for k, cname in enumerate(inputs.class_names):
        sets = {m: class_flags[m][:, k] for m in names}
        per_class[cname] = {
            "n_labelled": int(inputs.labels[:, k].sum()),
            "flags": {m: int(sets[m].sum()) for m in names},
            "jaccard": _pairwise(names, _jaccard, sets),
        }
    return {
        "detectors": names,
        "n_images": n,
        "flag_counts": {m: int(flags[m].sum()) for m in names},
        "combinations": combination_counts(flags, n),
        "jaccard": _pairwise(names, _jaccard, flags),
        "spearman": _pairwise(names, _spearman, scores),
        "per_class": per_class,
    }


def _class_flag_matrix(inputs: AuditInputs, result: DetectorResult) -> np.ndarray:
    """N x K: image i has a flagged finding for class k."""
    out = np.zeros(inputs.labels.shape, dtype=bool)
    f = result.findings
    f = f[f["flagged"].to_numpy() & (f["class"] != "").to_numpy()]
    if len(f):
        rows = pd.Index(inputs.ids).get_indexer(f["id"])
        cols = pd.Index(inputs.class_names).get_indexer(f["class"])
        ok = (rows >= 0) & (cols >= 0)
        out[rows[ok], cols[ok]] = True
    return out


def detect_and_compare(
    inputs: AuditInputs,
    run_dir: str | Path,
    detectors: Sequence[str] | None = DEFAULT_DETECTORS,
    params: dict[str, dict[str, Any]] | None = None,
    *,
    min_methods: int = 2,
    suggest_from: Iterable[str] = ("confident",),
    unreliable: Sequence[str] | None = None,
) -> ComparisonResult:
    """The detect and compare stages: run detectors, write findings, issues, run.json.

    Parameters
    ----------
    inputs
        The audit inputs; detectors whose required inputs are absent are skipped
        with a warning in ``run.json["detect"]["warnings"]``.
    run_dir
        The run directory; writes ``findings.csv``, ``issues.csv`` and the
        ``"detect"`` and ``"compare"`` sections of ``run.json`` (all atomically).
    detectors
        Registered detector names (``None``: :data:`DEFAULT_DETECTORS`).
    params
        Per-detector parameters, e.g. ``{"isolation": {"contamination": 0.02}}``.
    min_methods
        Detectors that must agree for ``consensus_flag``.
    suggest_from
        Detectors whose add/remove suggestions change ``suggested_labels``.
    unreliable
        Classes whose findings are unreliable; ``None`` reads the ones the training
        stage recorded (``run.json["train"]["unreliable_classes"]``).

    Returns
    -------
    ComparisonResult
    """
    if int(min_methods) < 1:
        raise SettingsError(f"min_methods must be >= 1, got {min_methods}")
    run_dir = Path(run_dir)
    start = time.perf_counter()
    results, skipped, used = run_detectors(inputs, detectors, params)
    t_detect = time.perf_counter() - start

    frames = [r.findings for r in results.values() if len(r.findings)]
    findings = pd.concat(frames, ignore_index=True) if frames else empty_findings()
    RunDir(run_dir).write_table(FINDINGS_CSV, findings)

    start = time.perf_counter()
    if unreliable is None:
        unreliable = unreliable_from_run(run_dir)
    issues = build_issues(
        inputs,
        results,
        min_methods=min_methods,
        suggest_from=suggest_from,
        unreliable=unreliable,
    )
    agree = agreement(inputs, results)
    t_compare = time.perf_counter() - start
    RunDir(run_dir).write_table(ISSUES_CSV, issues)

    detect_section = _detect_section(inputs, results, skipped, used)
    detect_section["seconds"] = round(t_detect, 3)
    RunDir(run_dir).write_section("detect", detect_section)
    RunDir(run_dir).write_section(
        "compare",
        {
            "min_methods": int(min_methods),
            "suggest_from": [m for m in suggest_from],
            "n_consensus_flagged": int(issues["consensus_flag"].sum()),
            "n_label_changes": int((issues["label_changes"] != "").sum()),
            "n_doubtful": int((issues["doubtful_labels"] != "").sum()),
            "unreliable_classes": list(unreliable),
            "n_unreliable": int((issues["unreliable_classes"] != "").sum()),
            "agreement": agree,
            "seconds": round(t_compare, 3),
        },
    )
    return ComparisonResult(issues, findings, agree, results, skipped)


def _detect_section(
    inputs: AuditInputs,
    results: dict[str, DetectorResult],
    skipped: dict[str, str],
    used: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """``run.json["detect"]`` (but its ``seconds``): per detector its parameters,
    flag counts, suggestions, time and summary; the skipped ones with the reason."""
    return {
        "n_images": inputs.n_images,
        "detectors": {
            name: {
                "params": used[name],
                "n_flagged_images": r.n_flagged,
                "n_flagged_findings": int(r.findings["flagged"].sum()),
                "suggestions": {
                    s: int(c)
                    for s, c in r.findings.loc[r.findings["flagged"], "suggestion"]
                    .value_counts()
                    .items()
                },
                "seconds": round(r.seconds, 3),
                "summary": r.summary,
            }
            for name, r in results.items()
        },
        "skipped": {name: {"params": used[name], "reason": why} for name, why in skipped.items()},
        "warnings": [f"detector {name!r} {why}" for name, why in skipped.items()],
    }
