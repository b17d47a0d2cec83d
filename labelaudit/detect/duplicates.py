"""Exact and near duplicates, and duplicates whose labels disagree.

Three kinds of evidence pair two images (row indices ``i < j``):

* ``exact``: identical decoded pixels. Two fields whose cached pixels (the resized
  uint8 copy) and full-resolution statistics are identical are taken as identical
  (:func:`pixel_keys` hashes both).
* ``phash``: a DCT perceptual hash (the algorithm of imagehash's ``phash``: the
  sign of the 8 x 8 lowest frequencies of a 32 x 32 thumbnail against their median)
  of each channel, 64 bits per channel; pairs whose hashes differ in at most
  ``hash_distance`` (a fraction, 0.2) of the bits. Small shifts, fresh noise and
  re-encoding change few bits. One hash per stain, not one of their mean: on synth
  fields a 64-bit hash of the mean put planted copies (up to 16 bits apart) and
  distinct fields (from 12 bits) in overlapping ranges; per-stain hashes (256 bits)
  separate them (copies at most 48 bits apart, distinct fields at least 56).
* ``embedding``: cosine neighbours in the model's embedding space closer than
  ``embedding_factor`` times the median nearest-neighbour distance (the rule of
  cleanlab Datalab's ``near_duplicate`` issue manager, factor 0.13), confirmed by a
  looser perceptual-hash distance (``2 * hash_distance``): two fields that merely
  share their classes can sit close in a model's embedding space.

Pairs form groups (connected components). Each group's first image in dataset order
is its original; ``duplicate_of`` names it on the other members. A group whose members
carry different given labels is a label problem: every member gets a finding per
class on which the group disagrees (``suggestion="review"``; ``value`` = the share of
the group carrying the class; ``score`` = the share of the other members that
disagree with this image on it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from labelaudit.detect.base import AuditInputs, DetectorResult, empty_findings, make_findings

__all__ = [
    "DuplicateResult",
    "embedding_pairs",
    "find_duplicates",
    "group_pairs",
    "hamming_pairs",
    "perceptual_hashes",
    "phash",
    "pixel_keys",
]

#: Bits of the perceptual hash of one channel (8 x 8 DCT coefficients).
HASH_BITS = 64
#: Default largest share of differing perceptual-hash bits of a near-duplicate pair.
HASH_DISTANCE = 0.2
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
    """Perceptual hashes of the mean of each field's channels.

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


def max_bits(hashes: np.ndarray, fraction: float) -> int:
    """The largest distance in bits that ``fraction`` of the hashes' bits allows."""
    words = 1 if np.ndim(hashes) < 2 else np.shape(hashes)[1]
    return int(np.floor(float(fraction) * HASH_BITS * words))


def hamming_pairs(
    a: np.ndarray, b: np.ndarray | None = None, max_distance: int = 51
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of hashes within ``max_distance`` bits.

    Parameters
    ----------
    a, b
        uint64 hashes, (N,) or (N, W) (W words per hash, e.g. one per channel);
        with ``b=None`` pairs within ``a`` (``i < j``).
    max_distance
        Largest Hamming distance kept.

    Returns
    -------
    i, j, distance
        Index into ``a``, index into ``b`` (or ``a``), and the distance.
    """
    a = np.asarray(a, dtype=np.uint64)
    a = a[:, None] if a.ndim == 1 else a
    same = b is None
    b = a if same else np.asarray(b, dtype=np.uint64)
    b = b[:, None] if b.ndim == 1 else b
    out_i, out_j, out_d = [], [], []
    block = max(1, 2_000_000 // max(len(b) * a.shape[1], 1))  # bounded memory per block
    for start in range(0, len(a), block):
        x = a[start : start + block, None, :] ^ b[None, :, :]
        d = np.bitwise_count(x).sum(axis=2, dtype=np.int64)
        ii, jj = np.nonzero(d <= max_distance)
        ii = ii + start
        keep = ii < jj if same else np.ones(len(ii), dtype=bool)
        out_i.append(ii[keep])
        out_j.append(jj[keep])
        out_d.append(d[ii[keep] - start, jj[keep]].astype(np.int64))
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)


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
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(embeddings, dtype=np.float64)
    n = len(x)
    if n < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0.0
    k = min(k, n - 1)
    nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x)
    dist, idx = nn.kneighbors(x)
    dist, idx = dist[:, 1:], idx[:, 1:]  # drop self (exact copies may come first: fine)
    threshold = float(factor * np.median(dist[:, 0]))
    ii, kk = np.nonzero(dist < threshold)
    jj = idx[ii, kk]
    lo, hi = np.minimum(ii, jj), np.maximum(ii, jj)
    pairs = np.unique(np.column_stack([lo, hi])[lo != hi], axis=0).reshape(-1, 2)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64), threshold


def group_pairs(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the pair graph: group id per image, -1 when alone.

    Groups are numbered 0, 1, ... in the dataset order of their first member.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(i) == 0:
        return np.full(n, -1, dtype=np.int64)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    out = np.full(n, -1, dtype=np.int64)
    next_id = 0
    seen: dict[int, int] = {}
    for r in range(n):
        c = int(comp[r])
        if sizes[c] < 2:
            continue
        if c not in seen:
            seen[c] = next_id
            next_id += 1
        out[r] = seen[c]
    return out


@dataclass
class DuplicateResult:
    """Duplicate groups of a dataset.

    Attributes
    ----------
    pairs
        One row per pair: ``a``, ``b`` (ids), ``evidence`` (``exact``, ``phash``,
        ``embedding``; ``;``-joined), ``phash_distance`` (bits; -1 unknown).
    group
        (N,) group id, -1 for images without a duplicate.
    duplicate_of
        (N,) the id of the group's first image, ``""`` for it and for loners.
    conflict
        (N,) the class tokens the image's group disagrees on (``;``-joined).
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
    summary: dict[str, Any] = field(default_factory=dict)

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
    keys: list[str] | None = None,
    hashes: np.ndarray | None = None,
    hash_distance: float = HASH_DISTANCE,
    embedding_factor: float = EMBEDDING_FACTOR,
) -> DuplicateResult:
    """Exact and near duplicate groups, and the label conflicts inside them.

    Parameters
    ----------
    inputs
        The audit inputs (ids, given labels, embeddings when present).
    keys
        :func:`pixel_keys` per image (exact duplicates), or ``None``.
    hashes
        :func:`perceptual_hashes` per image, or ``None``.
    hash_distance
        Largest share of differing perceptual-hash bits of a near pair; embedding
        neighbours need ``2 * hash_distance`` or less when hashes are given.
    embedding_factor
        See :func:`embedding_pairs`; 0 turns the embedding evidence off.

    Returns
    -------
    DuplicateResult
    """
    n = inputs.n_images
    evidence: dict[tuple[int, int], set[str]] = {}
    dist: dict[tuple[int, int], int] = {}

    def add(ii: np.ndarray, jj: np.ndarray, kind: str) -> None:
        for a, b in zip(ii.tolist(), jj.tolist(), strict=True):
            evidence.setdefault((min(a, b), max(a, b)), set()).add(kind)

    if keys is not None:
        first: dict[str, int] = {}
        for r, key in enumerate(keys):
            if key in first:
                add(np.array([first[key]]), np.array([r]), "exact")
            else:
                first[key] = r
    if hashes is not None:
        limit = max_bits(hashes, hash_distance)
        ii, jj, dd = hamming_pairs(hashes, max_distance=2 * limit)
        for a, b, d in zip(ii.tolist(), jj.tolist(), dd.tolist(), strict=True):
            dist[(a, b)] = d
        close = dd <= limit
        add(ii[close], jj[close], "phash")
    threshold = None
    if inputs.embeddings is not None and embedding_factor > 0:
        ii, jj, threshold = embedding_pairs(inputs.embeddings, embedding_factor)
        if hashes is not None:  # confirm by a looser hash distance
            ok = np.array([(a, b) in dist for a, b in zip(ii, jj, strict=True)], dtype=bool)
            ii, jj = ii[ok], jj[ok]
        add(ii, jj, "embedding")

    pair_list = sorted(evidence)
    pi = np.array([p[0] for p in pair_list], dtype=np.int64)
    pj = np.array([p[1] for p in pair_list], dtype=np.int64)
    group = group_pairs(n, pi, pj)
    ids = np.asarray(inputs.ids, dtype=object)
    duplicate_of = np.full(n, "", dtype=object)
    conflict = np.full(n, "", dtype=object)
    f_img, f_cls, f_score, f_value = [], [], [], []
    n_conflict_groups = 0
    for g in range(int(group.max()) + 1 if n else 0):
        members = np.flatnonzero(group == g)
        duplicate_of[members[1:]] = ids[members[0]]
        labels = inputs.labels[members]
        share = labels.mean(axis=0)
        disagree = np.flatnonzero((share > 0) & (share < 1))
        if len(disagree) == 0:
            continue
        n_conflict_groups += 1
        text = ";".join(inputs.class_tokens[k] for k in disagree)
        for row, lab in zip(members, labels, strict=True):
            conflict[row] = text
            for k in disagree:
                others = np.delete(labels[:, k], np.flatnonzero(members == row))
                f_img.append(row)
                f_cls.append(k)
                f_score.append(float(np.mean(others != lab[k])))
                f_value.append(float(share[k]))
    result = _detector_result(inputs, group, f_img, f_cls, f_score, f_value)
    pairs = pd.DataFrame(
        {
            "a": ids[pi] if len(pi) else np.zeros(0, dtype=object),
            "b": ids[pj] if len(pj) else np.zeros(0, dtype=object),
            "evidence": [";".join(sorted(evidence[p])) for p in pair_list],
            "phash_distance": [dist.get(p, -1) for p in pair_list],
        }
    )
    summary = {
        "n_pairs": len(pair_list),
        "n_groups": int(group.max()) + 1 if n else 0,
        "n_images_in_groups": int((group >= 0).sum()),
        "n_conflict_groups": n_conflict_groups,
        "evidence": {k: int(sum(k in e for e in evidence.values())) for k in _KINDS},
        "hash_distance": float(hash_distance),
        "embedding_factor": float(embedding_factor),
        "embedding_threshold": threshold,
        "used": [k for k, v in (("exact", keys), ("phash", hashes)) if v is not None]
        + (["embedding"] if threshold is not None else []),
    }
    result.summary = summary
    return DuplicateResult(pairs, group, duplicate_of, conflict, result, summary)


_KINDS = ("exact", "phash", "embedding")


def _detector_result(
    inputs: AuditInputs,
    group: np.ndarray,
    f_img: list[int],
    f_cls: list[int],
    f_score: list[float],
    f_value: list[float],
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
        columns={"duplicate_score": score},
    )
