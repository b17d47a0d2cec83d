"""Exact and near duplicates, verified on their pixels, and duplicates whose labels disagree.

A hash or embedding match is only a candidate. Every candidate pair (row indices
``i < j``) is checked on its pixels before it is called a duplicate (the candidate
search and the pixel check live in :mod:`labelaudit.detect.pixelmatch`, also used by
:mod:`labelaudit.pipeline.leaks`; the constants named below are there):

1. **Candidates.**

   * ``exact``: identical decoded pixels. Two fields whose cached pixels (the resized
     uint8 copy) and full-resolution statistics are identical are taken as identical
     (:func:`pixel_keys` hashes both); they need no further check.
   * ``neighbour``: the nearest neighbours of each image by its thumbnail (a few
     area-averaged pixels per channel, band-passed and standardised;
     :func:`thumbnails`), found with a faiss index (:func:`build_index`: exact up to
     :data:`EXACT_INDEX_MAX` images, an inverted file above). Each image is looked up
     twice: as it is and zoomed in by :data:`CROP_ZOOM` (its crops then lie close). A
     neighbour is a candidate when it is much closer than the image's typical
     neighbours (``candidate_ratio`` of the median distance to its 4th to 10th
     neighbour), the ratio test of near-duplicate search. Small sets (at most
     :data:`ALL_PAIRS_MAX` images) compare all pairs.
   * ``embedding``: cosine neighbours in the model's embedding space closer than
     ``embedding_factor`` times the median nearest-neighbour distance (the rule of
     cleanlab Datalab's ``near_duplicate`` issue manager, factor 0.13).

2. **Verification** (:class:`PixelVerifier`). Both images are band-passed per channel
   (difference of Gaussians: smooth gradients, vignetting and camera noise out, the
   structure in) at the cached resolution, at most :data:`VERIFY_SIDE` pixels a side.
   Their normalised cross-correlation is computed per channel over shifts of up to
   :data:`SHIFT_FRACTION` of the side and over zooms of up to :data:`MAX_ZOOM` either
   way (a crop of a few percent resized to the same side is a zoom and a shift), and
   pooled over the channels weighted by their structure. The best alignment gives the
   pair's ``correlation``, ``shift`` and ``scale``.

3. **A threshold relative to the data.** Each image of a candidate pair gets a null:
   the largest correlation, computed the same way, with its nearest neighbours that
   are not its candidates (:data:`NULL_NEIGHBOURS`; in small sets the median over all
   other images). A pair is a duplicate when its correlation closes at least half of
   the gap between the larger of the two nulls and 1 (``null_fraction``), and is at
   least ``min_correlation``. Images alike in texture correlate highly with their
   non-duplicate neighbours too, so their bar rises with them.

4. **Low information.** A channel whose band-passed pixels vary by less than
   :data:`MIN_STRUCTURE` grey levels carries nothing to align; an image with no such
   channel (empty background) cannot be verified. It is never matched (except as an
   ``exact`` copy) and is reported instead (``low_information``).

Groups are built without chaining (:func:`verified_groups`): a group holds only images
that verified pairwise, around a representative (the member with the most verified
partners). ``duplicate_of`` names the representative on the other members. Verified
pairs are also listed as pairs (``duplicates.csv``), with their evidence.

A group whose members carry different given labels is a label problem: every member
gets a finding per class on which the group disagrees (``suggestion="review"``;
``value`` = the share of the group carrying the class; ``score`` = the share of the
other members that disagree with this image on it).
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from labelaudit.core.params import Interval, Real
from labelaudit.detect.base import (
    AuditInputs,
    Detector,
    DetectorResult,
    empty_findings,
    make_findings,
    register,
)
from labelaudit.detect.pixelmatch import (
    CANDIDATE_RATIO,
    MIN_CORRELATION,
    MIN_STRUCTURE,
    NULL_FRACTION,
    MatchedPairs,
    PixelVerifier,
    match_sets,
    nearest,
)

__all__ = [
    "DuplicateImages",
    "DuplicateResult",
    "PixelVerifier",
    "embedding_pairs",
    "find_duplicates",
    "pair_table",
    "perceptual_hashes",
    "phash",
    "pixel_keys",
    "verified_groups",
]

#: Bits of the perceptual hash of one channel (8 x 8 DCT coefficients).
HASH_BITS = 64
#: cleanlab Datalab's near_duplicate threshold: a fraction of the median NN distance.
EMBEDDING_FACTOR = 0.13


def phash(gray: np.ndarray, hash_size: int = 8, highfreq_factor: int = 4) -> np.ndarray:
    """Perceptual hash of one greyscale image (imagehash's ``phash`` algorithm).

    Parameters
    ----------
    gray
        2-D array (any numeric dtype).
    hash_size, highfreq_factor
        The hash has ``hash_size**2`` bits, from the lowest frequencies of the DCT
        of a ``hash_size * highfreq_factor`` square thumbnail.

    Returns
    -------
    numpy.ndarray
        Boolean array of ``hash_size**2`` bits.
    """
    from scipy.fft import dctn

    side = hash_size * highfreq_factor
    img = Image.fromarray(np.asarray(gray, dtype=np.float32), mode="F")
    small = np.asarray(img.resize((side, side), Image.Resampling.BILINEAR), dtype=np.float64)
    low = dctn(small, norm="ortho")[:hash_size, :hash_size]
    return (low > np.median(low)).reshape(-1)


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """Perceptual hashes of each field's channels.

    Parameters
    ----------
    images
        (N, C, S, S) uint8 pixels (a cache's ``images``).

    Returns
    -------
    numpy.ndarray
        (N, C) uint64: one 64-bit hash per channel.
    """
    n, c = (images.shape[0], images.shape[1]) if np.ndim(images) == 4 else (0, 0)
    out = np.zeros((n, c), dtype=np.uint64)
    weights = np.uint64(1) << np.arange(HASH_BITS, dtype=np.uint64)
    for i in range(n):
        for k in range(c):
            bits = phash(np.asarray(images[i, k], dtype=np.float32))
            out[i, k] = np.bitwise_or.reduce(weights[bits]) if bits.any() else np.uint64(0)
    return out


def pixel_keys(images: np.ndarray, stats: pd.DataFrame | None = None) -> list[str]:
    """A digest of each field's cached pixels and full-resolution statistics.

    Parameters
    ----------
    images
        (N, C, S, S) uint8 pixels.
    stats
        The cache's per-image statistics (row i = image i; the ``id`` column is
        ignored), or ``None``.

    Returns
    -------
    list of str
        Equal digests = identical fields (at the cache's resolution and in every
        full-resolution statistic).
    """
    rows = None
    if stats is not None:
        rows = stats.drop(columns=[c for c in ("id",) if c in stats.columns])
        rows = rows.astype(str).agg("|".join, axis=1).tolist()
    keys = []
    for i in range(len(images)):
        h = hashlib.sha1(np.ascontiguousarray(images[i]).tobytes())
        if rows is not None:
            h.update(rows[i].encode())
        keys.append(h.hexdigest())
    return keys


def embedding_pairs(
    embeddings: np.ndarray, factor: float = EMBEDDING_FACTOR, k: int = 10
) -> tuple[np.ndarray, np.ndarray, float]:
    """Near pairs in embedding space (cleanlab Datalab's ``near_duplicate`` rule).

    Parameters
    ----------
    embeddings
        (N, D) embeddings.
    factor
        A pair is near when its cosine distance is below ``factor`` times the median
        distance of the images to their nearest neighbour.
    k
        Neighbours looked at per image.

    Returns
    -------
    i, j, threshold
        Pairs ``i < j`` and the distance threshold used.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    n = len(x)
    if n < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0.0
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    dist, idx = nearest(x, k=min(k, n - 1))
    cosine = dist**2 / 2.0  # unit vectors: |a - b|^2 = 2 (1 - cos)
    threshold = float(factor * np.median(cosine[:, 0]))
    ii, kk = np.nonzero((cosine < threshold) & (idx >= 0))
    jj = idx[ii, kk]
    lo, hi = np.minimum(ii, jj), np.maximum(ii, jj)
    pairs = np.unique(np.column_stack([lo, hi])[lo != hi], axis=0).reshape(-1, 2)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64), threshold


def verified_groups(
    n: int, pairs: pd.DataFrame, agrees: Callable[[int, int], bool]
) -> tuple[np.ndarray, list[int]]:
    """Groups of images that verified pairwise, without chaining.

    The image with the most verified partners (then the first in dataset order)
    founds a group; its partners join, strongest first, when they also verify
    against every member already in (``agrees``, evaluated on demand). Repeated
    until no ungrouped image has an ungrouped partner.

    Parameters
    ----------
    n
        Images.
    pairs
        Verified pairs: ``i``, ``j`` and ``correlation`` (higher = stronger).
    agrees
        Whether two rows verify as duplicates.

    Returns
    -------
    group, representatives
        (n,) group id (-1 alone) and each group's representative; groups are
        numbered in the dataset order of their representatives.
    """
    partners: dict[int, list[tuple[float, int]]] = {}
    for a, b, r in zip(pairs["i"], pairs["j"], pairs["correlation"], strict=True):
        strength = float(r) if np.isfinite(r) else 1.0
        partners.setdefault(int(a), []).append((strength, int(b)))
        partners.setdefault(int(b), []).append((strength, int(a)))
    group = np.full(n, -1, dtype=np.int64)
    order = sorted(partners, key=lambda u: (-len(partners[u]), u))
    founders: list[int] = []
    for u in order:
        if group[u] >= 0:
            continue
        members = [u]
        for _, v in sorted(partners[u], key=lambda p: (-p[0], p[1])):
            if group[v] >= 0 or v in members:
                continue
            if all(agrees(v, w) for w in members[1:]):
                members.append(v)
        if len(members) < 2:
            continue
        gid = len(founders)
        founders.append(u)
        group[members] = gid
    if not founders:
        return group, []
    rank = np.argsort(np.argsort(founders))  # renumber in the representatives' order
    out = np.where(group >= 0, rank[np.maximum(group, 0)], -1)
    return out.astype(np.int64), sorted(founders)


# ----------------------------------------------------------------- result


@dataclass
class DuplicateResult:
    """Duplicate groups of a dataset.

    Attributes
    ----------
    pairs
        One row per verified pair: ``a``, ``b`` (ids), ``evidence`` (candidate
        sources: ``exact``, ``neighbour``, ``embedding``; ``;``-joined),
        ``phash_distance`` (bits of the per-channel perceptual hashes),
        ``correlation``, ``channel_min``, ``shift_y``, ``shift_x`` (cached pixels),
        ``scale``, ``null_correlation``, ``threshold``, ``same_group``.
    group
        (N,) group id, -1 for images without a duplicate.
    duplicate_of
        (N,) the id of the group's representative, ``""`` for it and for loners.
    conflict
        (N,) the class tokens the image's group disagrees on (``;``-joined).
    low_information
        (N,) images that could not be verified: no channel with structure.
    structure
        (N,) the largest band-passed spread of a channel (grey levels) of the
        ``low_information`` images, NaN for the others.
    result
        A :class:`DetectorResult` named ``duplicates`` (findings: the conflicts).
    summary
        Counts and thresholds.
    """

    pairs: pd.DataFrame
    group: np.ndarray
    duplicate_of: np.ndarray
    conflict: np.ndarray
    result: DetectorResult
    low_information: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    structure: np.ndarray = field(default_factory=lambda: np.zeros(0))
    summary: dict[str, Any] = field(default_factory=dict)

    def low_information_findings(self, ids: list[str]) -> pd.DataFrame:
        """The images too empty to verify, as image-quality findings.

        One row per image: detector ``quality``, class ``low_information:pixels``
        (quality's issue type, measured on the cached pixels), ``value`` = the
        largest band-passed spread of a channel in grey levels, ``score`` = how many
        times short of :data:`MIN_STRUCTURE` it falls (at least 1), flagged.
        """
        from labelaudit.detect.base import FINDINGS_COLUMNS

        rows = np.flatnonzero(self.low_information)
        spread = self.structure[rows] if len(self.structure) else np.zeros(len(rows))
        spread = np.nan_to_num(spread, nan=0.0)
        return pd.DataFrame(
            {
                "id": [ids[r] for r in rows],
                "class": "low_information:pixels",
                "detector": "quality",
                "score": np.minimum(MIN_STRUCTURE / np.maximum(spread, 0.02), 50.0).round(3),
                "flagged": True,
                "suggestion": "",
                "value": spread.round(3),
            },
            columns=FINDINGS_COLUMNS,
        )

    def columns(self, ids: list[str]) -> pd.DataFrame:
        """``duplicate_group``, ``duplicate_of``, ``duplicate_conflict`` indexed by id."""
        group = pd.array(np.where(self.group >= 0, self.group, -1), dtype="Int64")
        group[self.group < 0] = pd.NA
        return pd.DataFrame(
            {
                "duplicate_group": group,
                "duplicate_of": self.duplicate_of,
                "duplicate_conflict": self.conflict,
            },
            index=pd.Index(ids, name="id"),
        )


def find_duplicates(
    inputs: AuditInputs,
    *,
    images: np.ndarray | None = None,
    keys: list[str] | None = None,
    embedding_factor: float = EMBEDDING_FACTOR,
    candidate_ratio: float = CANDIDATE_RATIO,
    min_correlation: float = MIN_CORRELATION,
    null_fraction: float = NULL_FRACTION,
) -> DuplicateResult:
    """Verified duplicate groups, and the label conflicts inside them.

    Parameters
    ----------
    inputs
        The audit inputs (ids, given labels, embeddings when present).
    images
        (N, C, S, S) uint8 cached pixels in the order of ``inputs.ids``; without
        them only ``exact`` copies (``keys``) are found.
    keys
        :func:`pixel_keys` per image (exact duplicates), or ``None``.
    embedding_factor
        See :func:`embedding_pairs`; 0 turns the embedding candidates off.
    candidate_ratio, min_correlation, null_fraction
        See the module's docstring.

    Returns
    -------
    DuplicateResult
    """
    n = inputs.n_images
    extra: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    threshold = None
    if inputs.embeddings is not None and embedding_factor > 0 and images is not None:
        ii, jj, threshold = embedding_pairs(inputs.embeddings, embedding_factor)
        extra["embedding"] = (ii, jj)
    matched = match_sets(
        images,
        keys=keys,
        extra=extra,
        candidate_ratio=candidate_ratio,
        min_correlation=min_correlation,
        null_fraction=null_fraction,
    )
    table = matched.pairs
    good = table[table["verified"].astype(bool)].reset_index(drop=True)
    group, reps = verified_groups(n, good, matched.agrees)
    ids = np.asarray(inputs.ids, dtype=object)
    duplicate_of = _duplicate_of(ids, group, reps)
    conflicts = _label_conflicts(inputs, group, len(reps))
    low = np.zeros(n, dtype=bool)
    low[matched.low_information[0]] = True
    structure = np.full(n, np.nan)
    if matched.verifier is not None:
        for r in np.flatnonzero(low):
            structure[r] = float(matched.verifier.structure(int(r)).max())
    c = conflicts
    result = _detector_result(inputs, group, c.img, c.cls, c.score, c.value, low)
    pairs = pair_table(good, ids, ids, images, images, group)
    n_groups = len(reps)
    summary = {
        "n_candidates": len(table),
        "n_pairs": len(good),
        "n_groups": n_groups,
        "n_images_in_groups": int((group >= 0).sum()),
        "largest_group": int(np.bincount(group[group >= 0]).max()) if n_groups else 0,
        "n_conflict_groups": conflicts.n_groups,
        "n_low_information": int(low.sum()),
        "evidence": {k: int(table["evidence"].str.contains(k).sum()) for k in _KINDS if len(table)},
        "embedding_factor": float(embedding_factor),
        "embedding_threshold": threshold,
        "candidate_ratio": float(candidate_ratio),
        "min_correlation": float(min_correlation),
        "null_fraction": float(null_fraction),
        **_matching_facts(matched, keys, images, threshold),
    }
    result.summary = summary
    return DuplicateResult(pairs, group, duplicate_of, c.text, result, low, structure, summary)


def _duplicate_of(ids: np.ndarray, group: np.ndarray, reps: list[int]) -> np.ndarray:
    """(N,) the id of each image's group representative; ``""`` for it and for loners."""
    duplicate_of = np.full(len(ids), "", dtype=object)
    for g, rep in enumerate(reps):
        members = np.flatnonzero(group == g)
        duplicate_of[members[members != rep]] = ids[rep]
    return duplicate_of


def _matching_facts(
    matched: MatchedPairs,
    keys: list[str] | None,
    images: np.ndarray | None,
    threshold: float | None,
) -> dict[str, Any]:
    """How the pairs were matched: the verification side, comparisons, time, evidence used."""
    return {
        "verify_side": int(matched.verifier.side) if matched.verifier is not None else None,
        "n_compared": int(matched.verifier.n_compared) if matched.verifier is not None else 0,
        "seconds": {k: round(v, 3) for k, v in matched.seconds.items()},
        "used": [k for k, v in (("exact", keys), ("pixels", images)) if v is not None]
        + (["embedding"] if threshold is not None else []),
    }


_KINDS = ("exact", "neighbour", "embedding")


@dataclass
class _Conflicts:
    """Label conflicts inside duplicate groups: the classes a group disagrees on per
    image (``text``) and one finding per (member, class) as parallel lists."""

    text: np.ndarray
    img: list[int] = field(default_factory=list)
    cls: list[int] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    n_groups: int = 0


def _label_conflicts(inputs: AuditInputs, group: np.ndarray, n_groups: int) -> _Conflicts:
    """Per group whose members carry different labels: a finding per member and class
    they disagree on (``score``: the share of the other members that disagree with the
    member, ``value``: the share of the group carrying the class)."""
    out = _Conflicts(np.full(inputs.n_images, "", dtype=object))
    for g in range(n_groups):
        members = np.flatnonzero(group == g)
        labels = inputs.labels[members]
        share = labels.mean(axis=0)
        disagree = np.flatnonzero((share > 0) & (share < 1))
        if len(disagree) == 0:
            continue
        out.n_groups += 1
        text = ";".join(inputs.class_tokens[k] for k in disagree)
        for row, lab in zip(members, labels, strict=True):
            out.text[row] = text
            for k in disagree:
                others = np.delete(labels[:, k], np.flatnonzero(members == row))
                out.img.append(int(row))
                out.cls.append(int(k))
                out.score.append(float(np.mean(others != lab[k])))
                out.value.append(float(share[k]))
    return out


def pair_table(
    good: pd.DataFrame,
    ids_a: np.ndarray,
    ids_b: np.ndarray,
    images_a: np.ndarray | None,
    images_b: np.ndarray | None,
    group: np.ndarray | None,
    names: tuple[str, str] = ("a", "b"),
) -> pd.DataFrame:
    """Verified pairs with ids, the perceptual-hash distance and the pixel evidence."""
    ii = good["i"].to_numpy(dtype=np.int64)
    jj = good["j"].to_numpy(dtype=np.int64)
    dist = np.full(len(good), -1, dtype=np.int64)
    if images_a is not None and images_b is not None and len(good):
        ha = {r: perceptual_hashes(np.asarray(images_a[r : r + 1]))[0] for r in set(ii.tolist())}
        hb = {r: perceptual_hashes(np.asarray(images_b[r : r + 1]))[0] for r in set(jj.tolist())}
        dist = np.array(
            [int(np.bitwise_count(ha[a] ^ hb[b]).sum()) for a, b in zip(ii, jj, strict=True)],
            dtype=np.int64,
        )
    out = pd.DataFrame(
        {
            names[0]: ids_a[ii] if len(ii) else np.zeros(0, dtype=object),
            names[1]: ids_b[jj] if len(jj) else np.zeros(0, dtype=object),
            "evidence": good["evidence"].astype(str).to_numpy(),
            "phash_distance": dist,
        }
    )
    for col in ("correlation", "channel_min", "shift_y", "shift_x", "scale"):
        out[col] = good[col].to_numpy(dtype=np.float64).round(4)
    for col in ("null_correlation", "threshold"):
        out[col] = good[col].to_numpy(dtype=np.float64).round(4)
    if group is not None:
        out["same_group"] = (group[ii] >= 0) & (group[ii] == group[jj]) if len(ii) else []
    return out


def _detector_result(
    inputs: AuditInputs,
    group: np.ndarray,
    f_img: list[int],
    f_cls: list[int],
    f_score: list[float],
    f_value: list[float],
    low: np.ndarray,
) -> DetectorResult:
    """Conflict findings as a detector result: score 1 per conflicting class share."""
    n = inputs.n_images
    if f_img:
        findings = make_findings(
            inputs,
            "duplicates",
            np.asarray(f_img),
            np.asarray(f_cls),
            np.asarray(f_score),
            np.ones(len(f_img), dtype=bool),
            "review",
            np.asarray(f_value),
        )
    else:
        findings = empty_findings()
    score = np.where(group >= 0, 0.5, 0.0)  # in a group: worth a look
    flagged = np.zeros(n, dtype=bool)
    if f_img:
        img = np.asarray(f_img)
        np.maximum.at(score, img, 0.5 + 0.5 * np.asarray(f_score))
        flagged[img] = True
    return DetectorResult(
        "duplicates",
        findings,
        score,
        flagged,
        columns={"duplicate_score": score, "duplicate_low_information": low},
    )


@register("duplicates")
@dataclass(kw_only=True, eq=False, repr=False)
class DuplicateImages(Detector):
    """Duplicate images verified on their pixels, and label conflicts inside them.

    The registered form of :func:`find_duplicates`: it runs after the comparison, on
    the run's image cache (``inputs.pixels``; without it nothing can be verified and
    nothing is found), from :func:`labelaudit.pipeline.leaks.add_duplicates`.

    Parameters
    ----------
    embedding_factor : float
        Embedding candidates closer than this times the median nearest-neighbour
        distance (:func:`embedding_pairs`); 0 turns them off.
    candidate_ratio : float
        The ratio test of the thumbnail candidates (module docstring).
    min_correlation : float
        A duplicate's correlation is at least this, whatever its null.
    null_fraction : float
        The share of the gap between the pair's null and 1 it must close.
    """

    family = "label"
    requires = ("labels",)
    after_comparison = True
    issue_columns = {
        "duplicate_group": "score",
        "duplicate_of": "text",
        "duplicate_conflict": "text",
    }
    parameter_constraints = {
        "embedding_factor": [Interval(Real, 0, None, closed="left")],
        "candidate_ratio": [Interval(Real, 0, 1, closed="right")],
        "min_correlation": [Interval(Real, 0, 1, closed="both")],
        "null_fraction": [Interval(Real, 0, 1, closed="both")],
    }

    embedding_factor: float = EMBEDDING_FACTOR
    candidate_ratio: float = CANDIDATE_RATIO
    min_correlation: float = MIN_CORRELATION
    null_fraction: float = NULL_FRACTION

    def groups(self, inputs: AuditInputs) -> DuplicateResult:
        """The duplicate groups, verified pairs, conflicts and images too empty to verify.

        Parameters
        ----------
        inputs
            The audit inputs; ``inputs.pixels`` the cached pixels (without them only
            exact copies by key could be found, and there are no keys either).

        Returns
        -------
        DuplicateResult
            Its ``result`` is what :meth:`run` returns.
        """
        self.check_inputs(inputs)
        self.check_params()
        pixels = inputs.pixels
        return find_duplicates(
            inputs,
            images=None if pixels is None else pixels.images,
            keys=None if pixels is None else pixels.keys,
            **self.get_params(),
        )

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        return self.groups(inputs).result
