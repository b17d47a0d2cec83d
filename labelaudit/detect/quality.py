"""Image-quality problems per stain channel, relative to the class and the channel.

cleanvision's issue types (dark, light, blurry, low_information, odd size/aspect)
computed on the cache's full-resolution channel statistics (``stats.csv``) instead
of on the pixels, and judged per stain channel: one stain can fail alone.

Thresholds are relative, not global constants. For every channel and measure the
value ``x`` (log-transformed where it is a positive intensity or a focus) is
standardised, ``z = (x - centre) / (1.4826 MAD)``, against a reference:

* the image's classes (:func:`label_model_z`) for what the label shapes: ``dark``,
  ``light``, ``low_information``, and ``blurry``/``artifact`` on the protein
  channel. The centre is what an additive, robustly fitted model of the measure
  predicts from the image's classes, so a multi-label image is judged against the
  mix of its classes' patterns (its green channel mixes them); a class with fewer
  than ``min_group`` images has no effect of its own;
* per channel (all images) for ``saturated``, and ``blurry``/``artifact`` on the
  reference stains, which the label does not shape (and where classes that never
  clip would make any clipping look extreme).

Where the MAD is 0 (most fields clip nothing) the scale is the upper tail's spread
(90th percentile, as a normal's), then the standard deviation; ``z = 0``
where all are 0.

==================  ===================================================  ==========
issue type          measure (per channel, cache statistics)              suspicious
==================  ===================================================  ==========
``dark``            mean and 99th percentile (the weaker of the two)     low
``light``           mean                                                 high
``saturated``       share of the stain at full scale (saturated /        high
                    foreground)
``blurry``          ``focus_coarse``: focus after a 4x area downscale    low
                    (camera noise averaged out); plus channel ``all``,
                    the mean z over channels, re-standardised
                    (defocus hits every stain)
``low_information`` entropy of the 256-level histogram (cleanvision)     low
``artifact``        ``block_max``: brightest block of a 16 x 16 grid,    high
                    as log headroom below full scale (debris, bubbles)
``odd_size``        field area and aspect ratio (image-level)            either way
==================  ===================================================  ==========

Measures an older cache lacks fall back (``focus_coarse`` -> ``focus``) or are left
out; ``summary["missing"]`` lists them. Measured on synth seeds 7, 11, 13 (n=400):
image-fault AUROC 0.986-0.996 (``docs/benchmarks.md``, image quality; 0.963-0.971 on the
real-pixel sets).

An empty protein stain is evidence about the labels
----------------------------------------------------
Where the dataset declares an exclusive class (HPA: Negative, whose fields show no
protein; :mod:`labelaudit.data.roles`), the fields given it are not judged dark,
low-information or blurry on the target stain (that emptiness is what their label
says), and a field given other classes whose target stain is as empty as theirs
(mean, 99th percentile and brightest block within 3 MADs of the typical exclusive
field's) while its
reference stains are neither dark nor low-information gets one finding
``empty_target:<channel>`` instead of its dark/low-information/blurry target
findings: label evidence (``stain_evidence`` = "protein stain empty: looks
Negative"), counted in the default order's label family, not in ``quality_score``
or ``quality_issues``. Dark or dim references (a field dark everywhere), blur,
saturation and debris stay image faults; so does a dim but structured protein stain.

Scores and flags
----------------
One finding per (image, issue type, channel) whose ``score`` is at least
``min_score`` (the rest are normal and left out: ``findings.csv`` stays small).
Its ``class`` column holds ``"<issue type>:<channel>"`` (``dark:green``,
``blurry:all``, ``odd_size:aspect``), which names no class, so nothing reads it
as a label; ``value`` is the signed z, ``score`` = its suspicious side clipped
to [0, 50], flagged above ``n_sigma``. The per-image ``quality_score`` is the
largest score over the image's issue types and channels and ``quality_issues``
lists the flagged ``type:channel`` pairs (``;``-joined).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from labelaudit.core.errors import SettingsError
from labelaudit.core.params import Integral, Interval, Options, Real
from labelaudit.core.robust import MAD_TO_SIGMA, robust_center_scale
from labelaudit.data.roles import EMPTY_TARGET
from labelaudit.detect.base import (
    AuditInputs,
    Detector,
    DetectorResult,
    make_findings,
    register,
)

#: Upper quantiles and their distance from the median in sigmas of a normal (only
#: where a tenth of the values differ: one or two outliers must not set the scale).
UPPER_TAIL = ((0.9, 1.2816),)
#: Scores are clipped here: a measure the class never varies in gives huge z.
MAX_SCORE = 50.0

#: issue type -> (measures, direction, log-transform). Direction +1: high is bad.
CHANNEL_ISSUES: dict[str, tuple[tuple[str, ...], int, bool]] = {
    "dark": (("mean", "p99"), -1, True),
    "light": (("mean",), +1, True),
    # The clipped share on its own scale: its log (fractions under 1e-3 as none) lifted
    # quality's own image AUROC on the real-pixel sets (0.963-0.971 -> 0.981-0.989) but
    # took the strong evidence from faults that clip a little and lowered the default
    # order on the image family (docs/benchmarks.md, image quality).
    "saturated": (("saturated",), +1, False),
    "blurry": (("focus_coarse",), -1, True),
    "low_information": (("entropy",), -1, False),
    "artifact": (("block_max",), +1, False),
}
#: Issue types judged against the channel over all images, not per class: the
#: clipped share of the stain and the sharpness of the reference stains do not
#: depend on the label, and classes where nothing clips would make any clipping
#: look extreme. (The protein channel's sharpness is judged per class: a diffuse
#: cytosol is smoother than speckled nucleoli.)
CHANNEL_WIDE = ("saturated", "blurry", "artifact")
#: Of those, judged per class on the protein channel, whose patterns differ by class.
PER_CLASS_ON_PROTEIN = ("blurry", "artifact")
#: A measure an older cache lacks -> the one used instead.
FALLBACK = {"focus_coarse": "focus"}
#: Label evidence, not an image fault: a target stain that looks like the exclusive
#: class's (HPA: a protein stain as empty as the Negative fields') in a field given
#: other classes, with normal reference stains (:meth:`ImageQuality._empty_target`).
#: The target stain's issue types an empty stain raises (an empty field has no
#: structure: dark, flat, unfocused); the others (saturation, debris) stay faults.
EMPTY_TARGET_ISSUES = ("dark", "low_information", "blurry")
#: Reference-stain issue types that make a dark protein stain a fault of the whole
#: field (dark or dim everywhere) rather than evidence about the labels.
REFERENCE_FAULTS = ("dark", "low_information")
#: Measures compared with the exclusive class's fields, in robust sigmas of theirs
#: (the brightest 16 x 16 block tells a dim but structured stain from an empty one
#: when its mean and 99th percentile do not: sparse nucleoli under-exposed 10x).
EMPTY_MEASURES = ("mean", "p99", "block_max")
EMPTY_Z = 3.0
#: Floor of that scale in log units (fields alike to the grey level would give any
#: slightly brighter empty field a large z).
EMPTY_MIN_SCALE = 0.25
#: Fields given an exclusive class alone needed before any field can look like them.
MIN_EMPTY_REFERENCE = 3
EPS = 1e-6  # added before logs; statistics are fractions of full scale
HEADROOM_EPS = 0.02  # ~5 grey levels of 8 bits: closer to full scale is all "full"


def clipped_share(saturated: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """The clipped share of the stained pixels: ``saturated / max(foreground, saturated)``.

    An all-black channel (0 / 0) gives NaN (no evidence), without numpy's warning.
    """
    denom = np.maximum(foreground, saturated)
    return np.divide(saturated, denom, out=np.full_like(saturated, np.nan), where=denom > 0)


def label_model_z(
    x: np.ndarray, labels: np.ndarray, min_group: int, ridge: float = 1.0, max_iter: int = 20
) -> np.ndarray:
    """Robust z of ``x`` against what the image's classes predict.

    The z of :func:`label_model_fit` (see there).
    """
    return label_model_fit(x, labels, min_group, ridge, max_iter)[0]


def label_model_fit(
    x: np.ndarray, labels: np.ndarray, min_group: int, ridge: float = 1.0, max_iter: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Robust z of ``x`` against what the image's classes predict, and each class's effect.

    An additive model in the (log) measure, ``x ~ b0 + sum of b_k over the image's
    classes``, fitted robustly (Huber weights by iteratively reweighted least squares,
    a small ridge on the class effects); the z is the residual over its robust scale.
    A multi-label field is judged against the sum of its classes' effects: its
    protein channel mixes their patterns, so it is neither held to its brightest
    class nor let off by its dimmest one. Classes with fewer than ``min_group``
    images get no effect of their own; images without labels are judged against
    the intercept.

    Returns
    -------
    z, effects
        N z-scores (0 where ``x`` is NaN, everywhere when the residuals do not vary)
        and K class effects in the same sigmas (0 for a class without an effect of
        its own): adding class k to image i moves its z by ``-effects[k]``, removing
        it by ``+effects[k]`` (what the label evidence reads, ``detect/combined.py``).
    """
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    y = np.where(ok, x, 0.0)
    active = labels[:, labels.sum(axis=0) >= min_group].astype(float)
    design = np.hstack([np.ones((len(x), 1)), active])
    penalty = ridge * np.eye(design.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    weight = ok.astype(float)
    beta = np.zeros(design.shape[1])
    center, scale = 0.0, 0.0
    for _ in range(max_iter):
        weighted = design * weight[:, None]
        gram = design.T @ weighted + penalty
        new_beta = np.linalg.lstsq(gram, weighted.T @ y, rcond=None)[0]
        residual = y - design @ new_beta
        center, scale = robust_center_scale(residual[ok], UPPER_TAIL)
        # Converged when no fitted value moves by a thousandth of a sigma.
        converged = float(np.abs(new_beta - beta).sum()) <= 1e-3 * scale
        beta = new_beta
        if scale <= 0 or converged:
            break
        # Huber weights (c = 1.345 sigmas): outliers, the images looked for, do not
        # pull the class effects towards themselves.
        u = np.abs(residual - center) / (1.345 * scale)
        weight = np.where(ok, 1.0 / np.maximum(u, 1.0), 0.0)
    effects = np.zeros(labels.shape[1])
    if scale > 0:
        effects[labels.sum(axis=0) >= min_group] = beta[1:] / scale
    return np.where(ok, _standardise(y - design @ beta, center, scale), 0.0), effects


def _standardise(x: np.ndarray, center: float, scale: float) -> np.ndarray:
    if scale <= 0:
        return np.zeros(len(x))
    return np.nan_to_num((x - center) / scale, nan=0.0)


def restandardise(z: np.ndarray) -> np.ndarray:
    """``z`` re-expressed in robust sigmas of its own distribution (0 if it does not vary).

    A mean of several z-scores is not a z-score: averaging shrinks the spread of
    the normal images, so the mean is standardised again before it is compared.
    """
    center, scale = robust_center_scale(np.asarray(z, dtype=float), UPPER_TAIL)
    return _standardise(np.asarray(z, dtype=float), center, scale)


@register("quality")
@dataclass(kw_only=True, eq=False, repr=False)
class ImageQuality(Detector):
    """Dark, light, saturated, blurry, low-information and odd-size images, per channel.

    Parameters
    ----------
    n_sigma : float
        Flag a finding whose suspicious z exceeds this.
    min_group : int
        Classes with fewer images have no effect of their own in the label model
        (:func:`label_model_z`).
    min_score : float
        Findings scoring below this are normal and not written.
    channels : list of str or None
        Channels to judge; ``None``: every channel the statistics have.
    suggestion : {"review", "remove"}
        Suggestion written for flagged findings.
    """

    requires = ("labels", "stats")
    family = "image"
    bulk_weight = 1.0  # the image family's reference ranking (docs/benchmarks.md, default order)
    issue_columns = {
        "quality_score": "score",
        "quality_issues": "text",
        "stain_evidence": "text",
    }
    parameter_constraints = {
        "n_sigma": [Interval(Real, 0, None, closed="neither")],
        "min_group": [Interval(Integral, 2, None, closed="left")],
        "suggestion": [Options("review", "remove")],
    }

    n_sigma: float = 6.0
    min_group: int = 10
    min_score: float = 2.0
    channels: list[str] | None = None
    suggestion: str = "review"

    def stat_channels(self, stats: pd.DataFrame) -> list[str]:
        """The channels judged: those with a ``{channel}_mean`` column (or the chosen ones)."""
        have = [c[: -len("_mean")] for c in stats.columns if str(c).endswith("_mean")]
        if self.channels is None:
            return have
        unknown = [c for c in self.channels if c not in have]
        if unknown:
            raise SettingsError(
                f"quality: no statistics for channel(s) {', '.join(unknown)} "
                f"(have: {', '.join(have)})"
            )
        return list(self.channels)

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        assert inputs.stats is not None
        stats, labels = inputs.stats, inputs.labels
        target = inputs.protein_channel
        # Fields given an exclusive class (HPA: Negative) claim an empty target stain:
        # its emptiness is what their label says, not an image fault.
        given_empty = np.asarray(labels[:, inputs.exclusive_idx].any(axis=1))
        parts: list[tuple[str, str, np.ndarray]] = []  # (type, channel, signed z)
        missing: set[str] = set()
        for channel in self.stat_channels(stats):
            for issue, (measures, direction, log) in CHANNEL_ISSUES.items():
                wide = issue in CHANNEL_WIDE and not (
                    issue in PER_CLASS_ON_PROTEIN and channel == target
                )
                by = None if wide else labels
                skip = given_empty if channel == target and issue in EMPTY_TARGET_ISSUES else None
                z = self._issue_z(stats, channel, measures, direction, log, by, missing, skip)
                if z is not None:
                    parts.append((issue, channel, z))
        empty = self._empty_target(inputs, parts)
        blurs = [
            np.where(empty, 0.0, z) if c == target else z for t, c, z in parts if t == "blurry"
        ]
        if len(blurs) > 1:
            # Defocus softens every stain a little: their mean, in its own sigmas (an
            # empty target stain has no focus to lose: it does not count).
            parts.append(("blurry", "all", restandardise(np.mean(blurs, axis=0))))
        parts.extend(_odd_size(stats))
        return self._result(inputs, parts, sorted(missing), empty)

    def empty_target(self, inputs: AuditInputs) -> np.ndarray:
        """(N,) bool: :meth:`_empty_target` from the statistics alone (what the
        ``intensity`` detector asks before it calls a dark protein stain a fault)."""
        assert inputs.stats is not None
        parts: list[tuple[str, str, np.ndarray]] = []
        if inputs.exclusive_idx.size == 0:
            return np.zeros(inputs.n_images, dtype=bool)
        for channel in self.stat_channels(inputs.stats):
            if channel == inputs.protein_channel:
                continue
            for issue in REFERENCE_FAULTS:
                measures, direction, log = CHANNEL_ISSUES[issue]
                by = None if issue in CHANNEL_WIDE else inputs.labels
                z = self._issue_z(inputs.stats, channel, measures, direction, log, by, set())
                if z is not None:
                    parts.append((issue, channel, z))
        return self._empty_target(inputs, parts)

    def _empty_target(
        self, inputs: AuditInputs, parts: list[tuple[str, str, np.ndarray]]
    ) -> np.ndarray:
        """(N,) bool: fields given other classes whose target stain looks like the
        exclusive class's and whose reference stains look normal.

        "Looks like the exclusive class": the target stain's mean, 99th percentile and
        brightest block (log) are no brighter than :data:`EMPTY_Z` MADs above those of the
        fields given an exclusive class alone (at least :data:`MIN_EMPTY_REFERENCE`
        of them; fewer: nothing to compare with, no field qualifies). A dim but
        structured stain (an under-exposed field) stays brighter and stays an
        image fault. "Normal references": no reference stain is flagged dark or
        low-information, so a field dark everywhere stays an image fault. (Blur
        does not empty a stain: a blurred field's empty protein stain is still
        evidence about its labels, while the blur of its references stays a fault.)
        """
        assert inputs.stats is not None
        n, target = inputs.n_images, inputs.protein_channel
        out = np.zeros(n, dtype=bool)
        idx = inputs.exclusive_idx
        if idx.size == 0:
            return out
        labels = inputs.labels
        only_exclusive = labels[:, idx].any(axis=1) & (labels.sum(axis=1) == 1)
        if only_exclusive.sum() < MIN_EMPTY_REFERENCE:
            return out
        looks = np.ones(n, dtype=bool)
        if f"{target}_mean" not in inputs.stats.columns:
            return out
        for measure in EMPTY_MEASURES:
            col = f"{target}_{measure}"
            if col not in inputs.stats.columns:
                continue  # an older cache: judged on the measures it has
            x = np.log(np.clip(pd.to_numeric(inputs.stats[col], errors="coerce"), 0, None) + EPS)
            x = np.asarray(x, dtype=float)
            # Median and MAD of the typical exclusive field (not robust_center_scale's tail
            # fallback: a few faulted Negative fields must not widen "empty").
            ref = x[only_exclusive & np.isfinite(x)]
            center = float(np.median(ref)) if len(ref) else np.nan
            mad = MAD_TO_SIGMA * float(np.median(np.abs(ref - center))) if len(ref) else 0.0
            scale = max(mad, EMPTY_MIN_SCALE)
            looks &= np.nan_to_num(x, nan=np.inf) <= center + EMPTY_Z * scale
        refs_ok = np.ones(n, dtype=bool)
        for issue, channel, z in parts:
            if channel != target and issue in REFERENCE_FAULTS:
                d = CHANNEL_ISSUES[issue][1]
                refs_ok &= d * z <= float(self.n_sigma)
        positive = labels.any(axis=1) & ~labels[:, idx].any(axis=1)
        return looks & refs_ok & positive

    def _issue_z(
        self,
        stats: pd.DataFrame,
        channel: str,
        measures: tuple[str, ...],
        direction: int,
        log: bool,
        labels: np.ndarray | None,
        missing: set[str],
        skip: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """Signed z of one issue type on one channel: the least suspicious of its measures.

        ``labels``: judge against the label model (:func:`label_model_z`); ``None``:
        against all images. ``skip``: (N,) rows left out of the fit, with z 0.
        """
        zs = []
        for measure in measures:
            col = f"{channel}_{measure}"
            if col not in stats.columns and measure in FALLBACK:
                missing.add(measure)
                col = f"{channel}_{FALLBACK[measure]}"
            if col not in stats.columns:
                missing.add(measure)
                continue
            x = measure_values(stats, channel, measure, col, log)
            if skip is not None:
                x = np.where(skip, np.nan, x)
            if labels is None:
                zs.append(_standardise(x, *robust_center_scale(x, UPPER_TAIL)))
            else:
                zs.append(label_model_z(x, labels, int(self.min_group)))
        if not zs:
            return None
        # Several measures of one issue: it must show in each (fewer false alarms).
        return direction * np.min(direction * np.vstack(zs), axis=0)

    def _result(
        self,
        inputs: AuditInputs,
        parts: list[tuple[str, str, np.ndarray]],
        missing: list[str],
        empty: np.ndarray | None = None,
    ) -> DetectorResult:
        n = inputs.n_images
        empty = np.zeros(n, dtype=bool) if empty is None else empty
        kinds, scores, vals, empty_score = _kind_scores(inputs, parts, empty)
        flagged = scores > float(self.n_sigma)
        image_score = scores.max(axis=0) if len(scores) else np.zeros(n)
        image_flagged = flagged.any(axis=0) if len(scores) else np.zeros(n, dtype=bool)
        issues_col = np.array(
            [";".join(kinds[j] for j in np.flatnonzero(flagged[:, i])) for i in range(n)],
            dtype=object,
        )
        keep = (scores >= float(self.min_score)) | flagged
        kind_idx, img = np.nonzero(keep)
        findings = make_findings(
            inputs,
            self.name,
            img,
            None,
            scores[keep],
            flagged[keep],
            np.where(flagged[keep], self.suggestion, "").astype(object),
            vals[keep],
        )
        findings["class"] = np.asarray(kinds, dtype=object)[kind_idx]
        empty_kind = f"{EMPTY_TARGET}:{inputs.protein_channel}"
        empty_flag = empty_score > float(self.n_sigma)
        rows = np.flatnonzero((empty_score >= float(self.min_score)) | empty_flag)
        if len(rows):
            extra = make_findings(
                inputs,
                self.name,
                rows,
                None,
                empty_score[rows],
                empty_flag[rows],
                np.where(empty_flag[rows], "review", "").astype(object),
                -empty_score[rows],
            )
            extra["class"] = empty_kind
            findings = pd.concat([findings, extra], ignore_index=True)
        counts = {k: int(flagged[j].sum()) for j, k in enumerate(kinds)}
        counts[empty_kind] = int(empty_flag.sum())
        words = f"protein stain empty: looks {' or '.join(inputs.exclusive_classes) or 'empty'}"
        # One piece of evidence per issue type (its worst channel): each type's
        # scores have their own tail on clean fields (saturation is heavy-tailed,
        # the mean blur is not), so the default order judges each on its own.
        by_type: dict[str, np.ndarray] = {}
        for (issue, _, _), row in zip(parts, scores, strict=True):
            by_type[issue] = np.maximum(by_type.get(issue, row), row)
        return DetectorResult(
            detector=self.name,
            findings=findings,
            image_score=image_score,
            # A flagged empty stain is a finding too (``flagged_by`` names quality, so
            # it counts towards the consensus), but about the labels: it stays out
            # of quality_score, quality_issues and the image family's evidence.
            image_flagged=image_flagged | empty_flag,
            columns={
                "quality_score": image_score,
                "quality_issues": issues_col,
                "stain_evidence": np.where(empty_flag, words, "").astype(object),
            },
            summary={"issue_counts": counts, "missing": missing},
            evidence_scores={t: v for t, v in by_type.items() if np.ptp(v) > 0},
            label_evidence={EMPTY_TARGET: empty_score} if np.ptp(empty_score) > 0 else {},
            evidence_names={EMPTY_TARGET: words},
        )


def _kind_scores(
    inputs: AuditInputs, parts: list[tuple[str, str, np.ndarray]], empty: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Per kind (``issue:channel``): the suspicious scores and the signed z (rows), and
    the empty-target score taken out of them.

    An empty target stain with normal references is evidence about the labels
    (:meth:`ImageQuality._empty_target`): its darkness, low information and blur leave
    the image family for one label-evidence kind, EMPTY_TARGET.
    """
    n = inputs.n_images
    direction = {t: d for t, (_, d, _) in CHANNEL_ISSUES.items()}
    kinds, frames, values = [], [], []
    empty_score = np.zeros(n)
    for issue, channel, z in parts:
        d = direction.get(issue, 1)
        score = np.clip(d * z, 0.0, MAX_SCORE)
        if channel == inputs.protein_channel and issue in EMPTY_TARGET_ISSUES:
            empty_score = np.maximum(empty_score, np.where(empty, score, 0.0))
            score = np.where(empty, 0.0, score)
            z = np.where(empty, 0.0, z)
        frames.append(score)
        values.append(z)
        kinds.append(f"{issue}:{channel}")
    scores = np.vstack(frames) if frames else np.zeros((0, n))
    vals = np.vstack(values) if values else np.zeros((0, n))
    return kinds, scores, vals, empty_score


def measure_values(
    stats: pd.DataFrame, channel: str, measure: str, column: str, log: bool
) -> np.ndarray:
    """One measure of one channel on the scale it is judged on (log, clipped share, headroom).

    ``column`` is the statistics column read (``measure``'s own or its fallback).
    """
    x = pd.to_numeric(stats[column], errors="coerce").to_numpy(dtype=float)
    if measure == "saturated" and f"{channel}_foreground" in stats.columns:
        # Clipped share of the stained pixels: bright classes clip a little,
        # an over-exposed field clips most of its stain.
        fg = pd.to_numeric(stats[f"{channel}_foreground"], errors="coerce")
        x = clipped_share(x, fg.to_numpy(dtype=float))
    if measure == "block_max":
        # Debris fills a block near full scale: judge the headroom left on
        # a log scale (0.9 -> 0.99 matters, 0.4 -> 0.5 does not).
        x = -np.log(np.clip(1.0 - x, 0.0, None) + HEADROOM_EPS)
    elif log:
        x = np.log(np.clip(x, 0.0, None) + EPS)
    return x


def label_shaped_measures(stats: pd.DataFrame, protein_channel: str) -> dict[str, np.ndarray]:
    """The measures quality judges against the label model, by ``issue:channel:measure``.

    Dark, light and low information on every channel; blur and artifacts on the
    protein channel (``CHANNEL_WIDE`` / ``PER_CLASS_ON_PROTEIN``). Measures the
    statistics lack (and their fallbacks) are left out.
    """
    channels = [c[: -len("_mean")] for c in stats.columns if str(c).endswith("_mean")]
    out: dict[str, np.ndarray] = {}
    for channel in channels:
        for issue, (measures, _, log) in CHANNEL_ISSUES.items():
            wide = issue in CHANNEL_WIDE and not (
                issue in PER_CLASS_ON_PROTEIN and channel == protein_channel
            )
            if wide:
                continue
            for measure in measures:
                col = f"{channel}_{measure}"
                if col not in stats.columns and measure in FALLBACK:
                    col = f"{channel}_{FALLBACK[measure]}"
                if col in stats.columns:
                    out[f"{issue}:{channel}:{measure}"] = measure_values(
                        stats, channel, measure, col, log
                    )
    return out


def _odd_size(stats: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """Field area and aspect ratio against all images (``odd_size``, either direction)."""
    if not {"height", "width"} <= set(stats.columns):
        return []
    h = pd.to_numeric(stats["height"], errors="coerce").to_numpy(dtype=float)
    w = pd.to_numeric(stats["width"], errors="coerce").to_numpy(dtype=float)
    out = []
    for name, x in (("area", np.log(h * w + 1)), ("aspect", np.log((h + 1) / (w + 1)))):
        center, scale = robust_center_scale(x, UPPER_TAIL)
        if scale <= 0:
            # All alike but a few: any deviation is odd; a fixed large z says so.
            z = np.where(np.abs(x - center) > 1e-9, MAX_SCORE, 0.0)
        else:
            z = np.abs(_standardise(x, center, scale))
        out.append(("odd_size", name, z))
    return out
