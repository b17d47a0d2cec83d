"""Candidate pairs of images and their check on the pixels (used by duplicates and leaks).

Candidates come from a faiss index of band-passed thumbnails (:func:`thumbnail_sets`,
:func:`build_index`, :func:`search`; the ratio test :func:`ratio_candidates`); each
candidate is verified by :class:`PixelVerifier` (normalised cross-correlation of the
band-passed channels over shifts and zooms) against a null from the images' nearest
non-candidates (:func:`match_sets`). :mod:`labelaudit.detect.duplicates` describes the
method and groups the verified pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import cv2
import numpy as np
import pandas as pd

__all__ = [
    "MatchedPairs",
    "Match",
    "PixelVerifier",
    "build_index",
    "match_sets",
    "nearest",
    "ratio_candidates",
    "reduce_dims",
    "search",
    "thumbnail_sets",
    "thumbnails",
]

#: Pixels are verified at the cached resolution, area-averaged to at most this side.
VERIFY_SIDE = 64
#: Largest shift searched, as a share of the side (synth copies move up to 1/32; a
#: crop of 8 % off one side moves the centre by 4 %).
SHIFT_FRACTION = 0.07
#: Zooms searched either way: a crop of up to ~12 % resized back to the same side.
ZOOMS = (1.0, 1.04, 1.08, 1.12)
#: A pair this well aligned at zoom 1 is not searched over zooms.
NO_ZOOM_NEEDED = 0.97
#: The largest zoom searched.
MAX_ZOOM = ZOOMS[-1]
#: A channel whose band-passed pixels vary less than this (grey levels) is empty.
MIN_STRUCTURE = 1.0
#: Default share of the gap between the pair's null correlation and 1 to close.
NULL_FRACTION = 0.5
#: Default floor of a duplicate's correlation, whatever the null.
MIN_CORRELATION = 0.75
#: Default ratio test: a neighbour this much closer than the typical neighbour.
CANDIDATE_RATIO = 0.7
#: Zoom of the second thumbnail query: crops of 2 to 6 % a side, resized back.
CROP_ZOOM = 1.08
#: Neighbours looked up per image in the thumbnail index.
NEIGHBOURS = 10
#: Nearest non-candidates whose largest correlation is an image's null.
NULL_NEIGHBOURS = 2
#: Sets up to this size compare all pairs of images.
ALL_PAIRS_MAX = 24
#: Sets up to this size search exhaustively; larger ones an inverted file on the
#: thumbnails' :data:`INDEX_DIMS` leading principal axes.
EXACT_INDEX_MAX = 5_000
#: Principal axes of the large sets' index (32 lost planted pairs at 100,000 fields).
INDEX_DIMS = 64
#: Values (per channel) of a thumbnail: about 256 in all.
THUMB_VALUES = 256
#: Band-passed thumbnails are divided by their spread, at least this (grey levels):
#: empty channels stay near zero instead of blowing their noise up.
THUMB_MIN_SPREAD = 1.0


# ----------------------------------------------------------------- candidates


def thumbnails(images: np.ndarray, zoom: float = 1.0, batch: int = 2048) -> np.ndarray:
    """Band-passed, standardised thumbnails of each field, the candidate search's features.

    Each channel is area-averaged to ``t x t`` pixels (``t^2 * C`` about
    :data:`THUMB_VALUES`), band-passed at that scale (as the pixel check does: slow
    gradients and vignetting out, each object a blob a shift of a pixel barely moves)
    and divided by its spread (at least :data:`THUMB_MIN_SPREAD` grey levels, so an
    empty channel stays near zero instead of blowing its noise up: empty images lie
    near each other and near the origin, where the pixel check finds them empty).

    Parameters
    ----------
    images
        (N, C, S, S) uint8 pixels (read in batches: a memory map is fine).
    zoom
        Thumbnail of the central ``1 / zoom`` of each field (> 1: zoomed in).
    batch
        Images read at a time.

    Returns
    -------
    numpy.ndarray
        (N, t * t * C) float32.
    """
    return thumbnail_sets(images, (zoom,), batch)[0]


def thumbnail_sets(
    images: np.ndarray, zooms: tuple[float, ...] = (1.0,), batch: int = 2048
) -> list[np.ndarray]:
    """:func:`thumbnails` at several zooms, reading the pixels once."""
    from scipy import ndimage

    n, c, s = images.shape[0], images.shape[1], images.shape[2]
    t = int(max(2, min(s, round(np.sqrt(THUMB_VALUES / max(c, 1))))))
    outs = [np.zeros((n, c * t * t), dtype=np.float32) for _ in zooms]
    # Area averaging of the central 1/zoom, then each of the band-pass's two Gaussians
    # (along one axis: they are separable), as (t, S) matrices: two products a side.
    fine = ndimage.gaussian_filter1d(np.eye(t), 1.0, axis=0)
    coarse = ndimage.gaussian_filter1d(np.eye(t), 3.0, axis=0)
    weights = []
    for zoom in zooms:
        side = s if zoom == 1.0 else max(float(t), s / zoom)
        area = _area_matrix(s, t, (s - side) / 2.0, side)
        weights.append(((fine @ area).astype(np.float32), (coarse @ area).astype(np.float32)))
    for start in range(0, n, batch):
        chunk = np.asarray(images[start : start + batch], dtype=np.float32)
        m = len(chunk)
        planes = chunk.reshape(m * c, s, s)
        band = np.stack([wf @ planes @ wf.T - wc @ planes @ wc.T for wf, wc in weights])
        band = band.reshape(len(zooms), m, c, t * t)
        band /= np.maximum(band.std(axis=3, keepdims=True), THUMB_MIN_SPREAD)
        for z in range(len(zooms)):
            outs[z][start : start + m] = band[z].reshape(m, -1)
    return outs


def _area_matrix(s: int, t: int, start: float, side: float) -> np.ndarray:
    """(t, s) weights averaging ``[start, start + side)`` of ``s`` pixels into ``t`` bins."""
    edges = start + side * np.arange(t + 1) / t
    lo, hi = np.arange(s)[None, :], np.arange(1, s + 1)[None, :]
    overlap = np.clip(np.minimum(hi, edges[1:, None]) - np.maximum(lo, edges[:-1, None]), 0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def reduce_dims(base: np.ndarray, *others: np.ndarray, dims: int = INDEX_DIMS) -> list[np.ndarray]:
    """Project features on the ``dims`` leading principal axes of ``base`` (a sample)."""
    if base.shape[1] <= dims:
        return [base, *others]
    rng = np.random.default_rng(0)
    sample = base[rng.choice(len(base), min(len(base), 5000), replace=False)]
    mean = sample.mean(axis=0)
    centred = (sample - mean).astype(np.float64)
    _, vecs = np.linalg.eigh(centred.T @ centred)  # ascending: the last are the leading
    axes = vecs[:, ::-1][:, :dims].astype(np.float32)
    return [np.ascontiguousarray((x - mean) @ axes, dtype=np.float32) for x in (base, *others)]


def build_index(base: np.ndarray) -> Any:
    """A faiss index of ``base`` (Euclidean): exact up to :data:`EXACT_INDEX_MAX` rows.

    Above, an inverted-file index (``4 sqrt(N)`` lists, 8 probed): near duplicates
    lie in the same cell or a neighbouring one, so the approximate search keeps them.
    """
    import faiss

    x = np.ascontiguousarray(base, dtype=np.float32)
    n, d = x.shape
    if n <= EXACT_INDEX_MAX:
        exact = faiss.IndexFlatL2(d)
        exact.add(x)
        return exact
    nlist = int(4 * np.sqrt(n))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    rng = np.random.default_rng(0)  # k-means on a sample: 40 points a list
    index.train(x[rng.choice(n, min(n, 40 * nlist), replace=False)])
    index.nprobe = 8
    index.add(x)
    return index


def search(
    index: Any, queries: np.ndarray, k: int = NEIGHBOURS, drop_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest indexed rows to each query: (M, k') distances and rows.

    ``drop_self``: query ``r`` is (a view of) indexed row ``r``, left out of its list.
    Index -1 where fewer rows were found.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    want = min(k + int(drop_self), int(index.ntotal))
    if want <= 0 or len(q) == 0:
        return np.zeros((len(q), 0)), np.zeros((len(q), 0), dtype=np.int64)
    dist, idx = index.search(q, want)
    dist = np.sqrt(np.maximum(dist, 0.0))
    if drop_self:  # drop each row's own entry (wherever exact copies put it)
        own = idx == np.arange(len(q))[:, None]
        own[~own.any(axis=1), -1] = True  # not found (lost among exact copies): the last
        dist = dist[~own].reshape(len(q), want - 1)
        idx = idx[~own].reshape(len(q), want - 1)
    return dist, idx.astype(np.int64)


def nearest(
    base: np.ndarray, queries: np.ndarray | None = None, k: int = NEIGHBOURS
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``base`` to each query (``None``: ``base``, self left out).

    See :func:`build_index` and :func:`search`.
    """
    index = build_index(base)
    if queries is None:
        return search(index, base, k, drop_self=True)
    return search(index, queries, k)


def ratio_candidates(
    dist: np.ndarray, idx: np.ndarray, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbours much closer than the query's typical neighbour (the ratio test).

    The typical distance is the median of the 4th to the last neighbour's (the
    nearest few may all be copies); a neighbour is a candidate when it lies within
    ``ratio`` of it.

    Returns
    -------
    query, neighbour
        Index arrays of the candidate pairs.
    """
    if dist.shape[1] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    tail = dist[:, min(3, dist.shape[1] - 1) :]
    typical = np.median(tail, axis=1)
    ok = (dist <= ratio * typical[:, None]) & (idx >= 0)
    qi, kk = np.nonzero(ok)
    return qi.astype(np.int64), idx[qi, kk]


# ----------------------------------------------------------------- verification


@dataclass(frozen=True)
class Match:
    """The best alignment of two images' pixels.

    Attributes
    ----------
    correlation
        Pooled normalised cross-correlation of the band-passed channels (-1 to 1;
        NaN when the two share no channel with structure).
    channel_min
        The lowest per-channel correlation at that alignment.
    shift_y, shift_x
        Shift of the second image against the first, in cached pixels.
    scale
        Zoom of the second image against the first (> 1: it shows a crop).
    """

    correlation: float
    channel_min: float
    shift_y: float
    shift_x: float
    scale: float

    @property
    def verifiable(self) -> bool:
        return bool(np.isfinite(self.correlation))


NO_MATCH = Match(float("nan"), float("nan"), 0.0, 0.0, 1.0)


class PixelVerifier:
    """Aligns pairs of cached images and measures how well their pixels agree.

    Parameters
    ----------
    images
        (N, C, S, S) uint8 pixels (a memory map is fine: images are read on demand).
    other
        A second set of the same channels (leakage between two datasets), or ``None``.
        Image ``j`` of :meth:`match` indexes ``other`` when given.
    side
        Side pixels are verified at (area-averaged from the cache; never upscaled).
    """

    def __init__(
        self, images: np.ndarray, other: np.ndarray | None = None, side: int = VERIFY_SIDE
    ) -> None:
        self.sets = (images, images if other is None else other)
        self.cached_side = int(images.shape[-1])
        self.side = int(min(side, self.cached_side))
        self.radius = max(2, int(np.ceil(SHIFT_FRACTION * self.side)))
        sigma = max(0.6, self.side / 96.0)
        self._sigmas = (sigma, 4.0 * sigma)
        self._prepared: tuple[dict[int, np.ndarray], dict[int, np.ndarray]] = ({}, {})
        self._energy: tuple[dict[int, np.ndarray], dict[int, np.ndarray]] = ({}, {})
        self._memo: dict[tuple[int, int], Match] = {}
        self.n_compared = 0

    def _band(self, which: int, i: int) -> np.ndarray:
        """Band-passed channels (V, V, C) of image ``i`` of set ``which`` (memoised)."""
        which = which if self.sets[0] is not self.sets[1] else 0
        got = self._prepared[which].get(i)
        if got is not None:
            return got
        raw = np.asarray(self.sets[which][i], dtype=np.float32)
        planes = []
        for ch in raw:
            if self.side != ch.shape[0]:
                ch = cv2.resize(ch, (self.side, self.side), interpolation=cv2.INTER_AREA)
            fine = cv2.GaussianBlur(ch, (0, 0), self._sigmas[0])
            coarse = cv2.GaussianBlur(ch, (0, 0), self._sigmas[1])
            planes.append(fine - coarse)
        out = np.ascontiguousarray(np.stack(planes, axis=-1), dtype=np.float32)
        self._prepared[which][i] = out
        self._energy[which][i] = out.std(axis=(0, 1))
        return out

    def structure(self, i: int, which: int = 0) -> np.ndarray:
        """Band-passed spread per channel of image ``i`` (grey levels)."""
        self._band(which, i)
        return self._energy[which if self.sets[0] is not self.sets[1] else 0][i]

    def informative(self, i: int, which: int = 0) -> bool:
        """Whether image ``i`` has a channel with structure (:data:`MIN_STRUCTURE`)."""
        return bool((self.structure(i, which) >= MIN_STRUCTURE).any())

    def match(self, i: int, j: int, detail: bool = True) -> Match:
        """Best alignment of image ``i`` (first set) and ``j`` (second set).

        ``detail=False`` leaves ``channel_min`` NaN (a null needs the correlation only).
        """
        key = (i, j)
        known = self._memo.get(key)
        if known is not None and (
            not detail or not known.verifiable or np.isfinite(known.channel_min)
        ):
            return known
        a, b = self._band(0, i), self._band(1, j)
        ea, eb = self.structure(i, 0), self.structure(j, 1)
        use = np.flatnonzero((ea >= MIN_STRUCTURE) & (eb >= MIN_STRUCTURE))
        if len(use) == 0:
            self._memo[key] = NO_MATCH
            return NO_MATCH
        self.n_compared += 1
        if len(use) < a.shape[-1]:
            a, b = np.ascontiguousarray(a[..., use]), np.ascontiguousarray(b[..., use])
        best: tuple[float, int, int, float, float, int] | None = None

        def trial(zy: float, zx: float, sign: int) -> None:
            nonlocal best
            wide, narrow = (a, b) if sign > 0 else (b, a)
            r, dy, dx = self._align(wide, narrow, (zy, zx))
            if best is None or r > best[0]:
                best = (r, dy, dx, zy, zx, sign)

        # Isotropic zooms either way (b a crop of a, or a of b), then each axis
        # apart around the best (a crop off one side only changes the aspect). A pair
        # already near-identical at zoom 1 needs no zoom.
        trial(1.0, 1.0, 1)
        assert best is not None
        if best[0] < NO_ZOOM_NEEDED:
            for z in ZOOMS[1:]:
                trial(z, z, 1)
                trial(z, z, -1)
            z0, sign = best[3], best[5]
            for z in ZOOMS:
                if z != z0:
                    trial(z0, z, sign)
                    trial(z, z0, sign)
        r, dy, dx, zy, zx, sign = best
        wide, narrow = (a, b) if sign > 0 else (b, a)
        low = r if a.shape[-1] == 1 else float("nan")
        if detail and a.shape[-1] > 1:
            low = min(
                self._align(wide[..., c : c + 1], narrow[..., c : c + 1], (zy, zx), (dy, dx))[0]
                for c in range(a.shape[-1])
            )
        if sign < 0:  # a was zoomed: b is the wider view
            dy, dx, zy, zx = -dy, -dx, 1.0 / zy, 1.0 / zx
        to_cache = self.cached_side / self.side
        found = Match(float(r), float(low), dy * to_cache, dx * to_cache, float(np.sqrt(zy * zx)))
        self._memo[key] = found
        return found

    def _align(
        self,
        wide: np.ndarray,
        narrow: np.ndarray,
        zoom: tuple[float, float],
        at: tuple[int, int] | None = None,
    ) -> tuple[float, int, int]:
        """Pooled correlation of ``narrow``'s centre with ``wide`` zoomed in by ``zoom``.

        The channels (last axis) are pooled: their covariances summed over the product
        of their summed variances, so each weighs by its structure. Returns the best
        correlation over the shifts (or at the shift ``at``) and that shift.
        """
        v, r = self.side, self.radius
        img = wide
        if zoom != (1.0, 1.0):
            hy, wx = int(round(v * zoom[0])), int(round(v * zoom[1]))
            img = cv2.resize(wide, (wx, hy), interpolation=cv2.INTER_LINEAR)
            img = img.reshape(hy, wx, -1)
            oy, ox = (hy - v) // 2, (wx - v) // 2
            img = img[oy : oy + v, ox : ox + v]
        tpl = narrow[r : v - r, r : v - r]
        c = wide.shape[-1]
        if c <= 4:
            res = cv2.matchTemplate(
                np.ascontiguousarray(img), np.ascontiguousarray(tpl), cv2.TM_CCOEFF_NORMED
            )
        else:  # OpenCV pools up to four channels: weigh more by their structure
            maps, weights = [], []
            for k in range(c):
                t = np.ascontiguousarray(tpl[..., k])
                maps.append(
                    cv2.matchTemplate(np.ascontiguousarray(img[..., k]), t, cv2.TM_CCOEFF_NORMED)
                )
                weights.append(float(t.std()) * float(img[..., k].std()))
            res = np.tensordot(np.asarray(weights) / max(sum(weights), 1e-12), np.stack(maps), 1)
        if at is not None:
            return float(res[at[0] + r, at[1] + r]), at[0], at[1]
        y, x = np.unravel_index(int(np.argmax(res)), res.shape)
        return float(res[y, x]), int(y - r), int(x - r)


# ----------------------------------------------------------------- matching


@dataclass
class MatchedPairs:
    """Candidate pairs with their pixel evidence and the verdict.

    ``pairs`` has ``i``, ``j`` (row indices; into the second set for two sets),
    ``evidence``, ``correlation``, ``channel_min``, ``shift_y``, ``shift_x``,
    ``scale``, ``null_correlation``, ``threshold``, ``verified``; ``low_information``
    lists the rows (first set, then second) that could not be verified.
    """

    pairs: pd.DataFrame
    low_information: tuple[np.ndarray, np.ndarray]
    null: dict[tuple[int, int], float]
    verifier: PixelVerifier | None
    min_correlation: float
    null_fraction: float
    seconds: dict[str, float] = field(default_factory=dict)

    def threshold(self, null: float) -> float:
        """The correlation a pair must reach against its null."""
        base = 0.0 if not np.isfinite(null) else max(float(null), 0.0)
        return max(self.min_correlation, 1.0 - (1.0 - base) * self.null_fraction)

    def agrees(self, i: int, j: int) -> bool:
        """Whether rows ``i`` and ``j`` of one set verify as duplicates (computed on demand)."""
        if self.verifier is None:
            return False
        m = self.verifier.match(min(i, j), max(i, j))
        if not m.verifiable:
            return False
        null = _larger(self.null.get((0, i), np.nan), self.null.get((0, j), np.nan))
        return m.correlation >= self.threshold(null)


def match_sets(
    images: np.ndarray | None,
    other: np.ndarray | None = None,
    *,
    keys: tuple[list[str], list[str]] | list[str] | None = None,
    extra: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    candidate_ratio: float = CANDIDATE_RATIO,
    min_correlation: float = MIN_CORRELATION,
    null_fraction: float = NULL_FRACTION,
    verify_side: int = VERIFY_SIDE,
) -> MatchedPairs:
    """Candidate pairs within one set (or between two), verified on their pixels.

    Parameters
    ----------
    images
        (N, C, S, S) uint8 cached pixels, or ``None`` (then only ``exact`` pairs).
    other
        A second set (M, C, S', S'), or ``None`` for pairs within ``images``.
    keys
        :func:`pixel_keys` of the set (or a pair of lists, one per set): ``exact``.
    extra
        More candidates by source name (e.g. ``"embedding"``): ``(i, j)`` arrays.
    candidate_ratio, min_correlation, null_fraction
        The ratio test, the floor and the share of the gap to the null (see the
        module's docstring).
    verify_side
        Side pixels are verified at.

    Returns
    -------
    MatchedPairs
    """
    started = time.perf_counter()
    same = other is None
    sources, exact, verifier, neighbours = _candidates(
        images, other, keys, extra, candidate_ratio, verify_side
    )
    nulls: dict[tuple[int, int], float] = {}
    low: tuple[set[int], set[int]] = (set(), set())
    seconds = {"candidates": time.perf_counter() - started}

    rows = []
    for (a, b), kinds in sorted(sources.items()):
        rows.append(_judge(a, b, kinds, (a, b) in exact, verifier, low))
    table = pd.DataFrame(rows, columns=list(_PAIR_COLUMNS))
    result = MatchedPairs(
        table,
        (np.array(sorted(low[0]), dtype=np.int64), np.array(sorted(low[1]), dtype=np.int64)),
        nulls,
        verifier,
        float(min_correlation),
        float(null_fraction),
        seconds,
    )
    if verifier is None or table.empty:
        if not table.empty:
            table["verified"] = table["evidence"].str.contains("exact")
        return result

    nulls.update(_candidate_nulls(table, verifier, neighbours, same))
    nb = 1 if not same else 0
    null_pair = [
        _larger(nulls.get((0, int(a)), np.nan), nulls.get((nb, int(b)), np.nan))
        for a, b in zip(table["i"], table["j"], strict=True)
    ]
    table["null_correlation"] = np.asarray(null_pair, dtype=np.float64)
    table["threshold"] = [result.threshold(v) for v in table["null_correlation"]]
    table["verified"] = table["evidence"].str.contains("exact") | (
        table["correlation"].to_numpy() >= table["threshold"].to_numpy()
    )
    result.pairs = table
    seconds["verify"] = time.perf_counter() - started - seconds["candidates"]
    return result


def _candidates(
    images: np.ndarray | None,
    other: np.ndarray | None,
    keys: tuple[list[str], list[str]] | list[str] | None,
    extra: dict[str, tuple[np.ndarray, np.ndarray]] | None,
    candidate_ratio: float,
    verify_side: int,
) -> tuple[
    dict[tuple[int, int], set[str]],
    set[tuple[int, int]],
    PixelVerifier | None,
    tuple[dict[int, list[int]], dict[int, list[int]]],
]:
    """Candidate pairs with their sources, the ``exact`` ones, the pixel verifier (when
    there are pixels) and each image's nearest neighbours (for its null)."""
    same = other is None
    sources: dict[tuple[int, int], set[str]] = {}

    def add(ii: np.ndarray, jj: np.ndarray, kind: str) -> None:
        for a, b in zip(np.asarray(ii).tolist(), np.asarray(jj).tolist(), strict=True):
            if same:
                if a == b:
                    continue
                a, b = min(a, b), max(a, b)
            sources.setdefault((a, b), set()).add(kind)

    exact = _exact_pairs(keys, same)
    if exact:
        add(np.array([p[0] for p in exact]), np.array([p[1] for p in exact]), "exact")
    for kind, (ii, jj) in (extra or {}).items():
        add(ii, jj, kind)

    verifier = None
    neighbours: tuple[dict[int, list[int]], dict[int, list[int]]] = ({}, {})
    if images is not None and len(images) and (same or (other is not None and len(other))):
        verifier = PixelVerifier(images, other, side=verify_side)
        _neighbour_candidates(images, other, candidate_ratio, add, neighbours)
    return sources, exact, verifier, neighbours


def _exact_pairs(
    keys: tuple[list[str], list[str]] | list[str] | None, same: bool
) -> set[tuple[int, int]]:
    """Pairs with the same pixel key (``exact`` copies): ``(i, j)``, ``i < j`` in one set."""
    exact: set[tuple[int, int]] = set()
    if keys is None:
        return exact
    if same:
        keys_a = keys_b = cast(list[str], keys)
    else:
        keys_a, keys_b = cast(tuple[list[str], list[str]], keys)
    where: dict[str, list[int]] = {}
    for r, key in enumerate(keys_a):
        where.setdefault(key, []).append(r)
    for r, key in enumerate(keys_b):
        for q in where.get(key, []):
            if not same or q < r:
                exact.add((q, r))
    return exact


def _candidate_nulls(
    table: pd.DataFrame,
    verifier: PixelVerifier,
    neighbours: tuple[dict[int, list[int]], dict[int, list[int]]],
    same: bool,
) -> dict[tuple[int, int], float]:
    """Nulls: each image of a candidate pair against its nearest non-candidates, by
    ``(set, row)``."""
    nulls: dict[tuple[int, int], float] = {}
    partners: tuple[dict[int, set[int]], dict[int, set[int]]] = ({}, {})
    for a, b in zip(table["i"], table["j"], strict=True):
        partners[0].setdefault(int(a), set()).add(int(b))
        partners[1 if not same else 0].setdefault(int(b), set()).add(int(a))
    for side_idx in (0, 1) if not same else (0,):
        for row, mine in partners[side_idx].items():
            nulls[(side_idx, row)] = _null_of(
                verifier, row, side_idx, mine, neighbours[side_idx].get(row), same
            )
    return nulls


def _larger(a: float, b: float) -> float:
    """The larger of two nulls, a missing (NaN) one left out."""
    values = [v for v in (a, b) if np.isfinite(v)]
    return max(values) if values else float("nan")


_PAIR_COLUMNS = (
    "i",
    "j",
    "evidence",
    "correlation",
    "channel_min",
    "shift_y",
    "shift_x",
    "scale",
    "null_correlation",
    "threshold",
    "verified",
)


def _judge(
    a: int,
    b: int,
    kinds: set[str],
    is_exact: bool,
    verifier: PixelVerifier | None,
    low: tuple[set[int], set[int]],
) -> dict[str, Any]:
    """One candidate's row: its pixel evidence (exact copies need none)."""
    m = Match(1.0, 1.0, 0.0, 0.0, 1.0) if is_exact else NO_MATCH
    if not is_exact and verifier is not None:
        m = verifier.match(a, b)
        if not m.verifiable:
            if not verifier.informative(a, 0):
                low[0].add(a)
            if not verifier.informative(b, 1):
                low[1].add(b)
    return {
        "i": a,
        "j": b,
        "evidence": ";".join(sorted(kinds)),
        "correlation": m.correlation,
        "channel_min": m.channel_min,
        "shift_y": m.shift_y,
        "shift_x": m.shift_x,
        "scale": m.scale,
        "null_correlation": np.nan,
        "threshold": np.nan,
        "verified": False,
    }


def _neighbour_candidates(
    images: np.ndarray,
    other: np.ndarray | None,
    ratio: float,
    add: Callable[[np.ndarray, np.ndarray, str], None],
    neighbours: tuple[dict[int, list[int]], dict[int, list[int]]],
) -> None:
    """``neighbour`` candidates (ratio test on thumbnails; all pairs in small sets)."""
    n = len(images)
    m = n if other is None else len(other)
    if (n if other is None else n + m) <= ALL_PAIRS_MAX:
        ii, jj = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
        keep = (ii < jj) if other is None else np.ones_like(ii, dtype=bool)
        add(ii[keep], jj[keep], "neighbour")
        return  # the null of each image: all others (no neighbour lists)
    # Thumbnails as they are, and zoomed in (a crop of a few percent resized back
    # matches the zoomed view of its original better than the original itself);
    # large sets search an inverted file on their leading principal axes.
    thumbs, zoomed = thumbnail_sets(images, (1.0, CROP_ZOOM))
    if other is None:
        if n > EXACT_INDEX_MAX:
            thumbs, zoomed = reduce_dims(thumbs, zoomed)
        index = build_index(thumbs)
        dist, idx = search(index, thumbs, drop_self=True)
        qi, nj = ratio_candidates(dist, idx, ratio)
        add(qi, nj, "neighbour")
        qi, nj = ratio_candidates(*search(index, zoomed, drop_self=True), ratio)
        add(qi, nj, "neighbour")
        for r in range(n):
            neighbours[0][r] = idx[r].tolist()
        return
    thumbs_b, zoomed_b = thumbnail_sets(other, (1.0, CROP_ZOOM))
    if max(n, m) > EXACT_INDEX_MAX:
        thumbs, zoomed, thumbs_b, zoomed_b = reduce_dims(thumbs, zoomed, thumbs_b, zoomed_b)
    index = build_index(thumbs)  # B's neighbours in A
    dist, idx = search(index, thumbs_b)
    qi, nj = ratio_candidates(dist, idx, ratio)
    add(nj, qi, "neighbour")
    qi, nj = ratio_candidates(*search(index, zoomed_b), ratio)  # A shows a crop of B
    add(nj, qi, "neighbour")
    for r in range(m):
        neighbours[1][r] = idx[r].tolist()
    index = build_index(thumbs_b)  # A's neighbours in B
    dist, idx = search(index, thumbs)
    qi, nj = ratio_candidates(*search(index, zoomed), ratio)  # B shows a crop of A
    add(qi, nj, "neighbour")
    for r in range(n):
        neighbours[0][r] = idx[r].tolist()


def _null_of(
    verifier: PixelVerifier,
    row: int,
    which: int,
    partners: set[int],
    ranked: list[int] | None,
    same: bool,
) -> float:
    """An image's null: how well it agrees with images that are not its copies.

    The largest correlation with its :data:`NULL_NEIGHBOURS` nearest non-candidates;
    in small sets (every pair a candidate) the median over all other images (most
    of them are no copies). NaN when none could be compared.
    """
    n_other = len(verifier.sets[1 - which if not same else 0])
    small = ranked is None
    if ranked is None:  # every other image
        pick = [r for r in range(n_other) if not (same and r == row)]
    else:
        pick = [r for r in ranked if r >= 0 and r not in partners][:NULL_NEIGHBOURS]
    values = []
    for r in pick:
        if same:
            m = verifier.match(min(row, r), max(row, r), detail=False)
        else:
            m = verifier.match(*((row, r) if which == 0 else (r, row)), detail=False)
        if m.verifiable:
            values.append(m.correlation)
    if not values:
        return float("nan")
    return float(np.median(values) if small else np.max(values))
