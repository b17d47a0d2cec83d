"""Per-channel image measures: the full-resolution statistics of the image cache.

While a field's full-resolution pixels are in memory, the cache
(:mod:`labelaudit.data.cache`) computes per-channel statistics (:data:`STAT_NAMES`)
that the intensity and quality detectors and the report use. 8- and 16-bit channels
are read in place by OpenCV kernels in one strip-wise pass (integer sums, exact);
other dtypes go through NumPy. Cell crops reuse the same measures
(:mod:`labelaudit.cells.crops`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from labelaudit.data.readers import full_scale

STAT_NAMES: tuple[str, ...] = (
    "mean",
    "std",
    "p99",
    "saturated",
    "focus",
    "max",
    "entropy",
    "foreground",
    "focus_coarse",
    "block_max",
)
#: ``focus_coarse`` is the focus after an area downscale by this factor: averaging
#: 16 pixels cuts camera noise 4x, so the measure follows the structures' sharpness.
COARSE_FACTOR = 4
HIST_BINS = 256  # entropy and the foreground threshold use a 256-level histogram
HIST_ROW_STEP = 4  # ... of every 4th row of a field with at least HIST_SAMPLE_MIN pixels
HIST_SAMPLE_MIN = 1 << 20
#: ``block_max`` is the brightest block's mean on a grid of this many blocks a side:
#: debris and bubbles fill a block, the bright dots and fibres of normal stains do not.
BLOCK_GRID = 16

#: Channel dtypes OpenCV reads in place (the others go through a float copy).
FAST_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))

#: The full-field pass reads a channel in row strips of at most this many pixels: a
#: strip's Laplacian and counts stay in the core's cache (one pass from memory instead
#: of one per statistic), and a strip's sum of squared 16-bit pixels (< 2**53) is
#: exact in the double OpenCV returns.
STRIP_PIXELS = 1 << 18
#: ``focus`` of a field of at least :data:`HIST_SAMPLE_MIN` pixels is the Laplacian's
#: variance over every other band of this many rows (rows 1-16, 33-48, ...): half the
#: cost of the largest remaining statistic; within 1% of every row's on the real HPA
#: fields (mean 0.3%). No detector reads it (``focus_coarse`` measures blur), and
#: smaller fields (cells, tests) are exact.
FOCUS_BAND = 16
#: The percentile search counts three levels in the full-field pass (see _FieldPass).
_WINDOW = 3


def laplacian_variance(arr: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the interior (a focus measure).

    8- and 16-bit channels go through OpenCV's ``Laplacian`` (kernel size 1 is the
    4-neighbour kernel, exact in int16 / float32 for these depths) strip by strip,
    reduced to the sum of squares; the sum itself telescopes to the border
    (:func:`_laplacian_sum`), so nothing of field size is allocated. Other dtypes
    go through NumPy.
    """
    if arr.shape[0] < 3 or arr.shape[1] < 3:
        return 0.0
    if arr.dtype in FAST_DTYPES and arr.ndim == 2:
        return _field_pass(contiguous(arr), moments=False).focus()
    work: np.ndarray[Any, np.dtype[Any]]
    if np.issubdtype(arr.dtype, np.integer):
        work = arr.astype(np.int32 if arr.dtype.itemsize >= 2 else np.int16)
    else:
        work = arr.astype(np.float32, copy=False)
    lap = work[:-2, 1:-1] + work[2:, 1:-1] + work[1:-1, :-2] + work[1:-1, 2:] - 4 * work[1:-1, 1:-1]
    return float(lap.var())


def contiguous(arr: np.ndarray) -> np.ndarray:
    """``arr``, or a contiguous copy when its rows are not contiguous in memory."""
    # OpenCV takes row-strided views but not a channel picked out of an RGB array.
    return arr if arr.strides[-1] == arr.itemsize else np.ascontiguousarray(arr)


def _laplacian_sum(arr: np.ndarray) -> int:
    """Sum of the 4-neighbour Laplacian over the interior, exactly, from the border.

    Per interior column the vertical second differences telescope to
    ``a[0] - a[1] - a[-2] + a[-1]``, per interior row the horizontal ones likewise.
    """
    edge_rows = arr[[0, 1, -2, -1], 1:-1].astype(np.int64)  # 4 rows and 4 columns only
    edge_cols = arr[1:-1, [0, 1, -2, -1]].astype(np.int64)
    sign = np.array([1, -1, -1, 1], np.int64)
    return int(sign @ edge_rows.sum(axis=1) + edge_cols.sum(axis=0) @ sign)


@dataclass
class _FieldPass:
    """Integer sums of one strip-wise pass over an 8/16-bit channel (:func:`_field_pass`).

    ``window`` holds, when a window start ``lo`` was given, the counts of pixels
    ``> lo``, and the sum and sum of squares of ``min(pixel - lo, 3)``: from these
    three, the counts of the levels ``lo + 1``, ``lo + 2`` and above follow exactly.
    """

    arr: np.ndarray
    total: int = 0
    total_sq: int = 0
    high: int = 0
    lap_sq: int = 0
    lo: int | None = None
    window: list[int] = field(default_factory=lambda: [0, 0, 0])
    #: Pixels above ``saturation_level`` (``None``: not counted in the pass).
    saturation_level: int | None = None
    above: int = 0
    #: Banded focus (:data:`FOCUS_BAND`): the Laplacian's sum and count over its rows.
    banded: bool = False
    lap_sum: int = 0
    lap_n: int = 0

    def focus(self) -> float:
        """Variance of the Laplacian over the interior, or its focus bands (0 below 3 x 3)."""
        h, w = self.arr.shape
        if h < 3 or w < 3:
            return 0.0
        if self.banded:
            n, s = self.lap_n, self.lap_sum
        else:
            n, s = (h - 2) * (w - 2), _laplacian_sum(self.arr)
        return max((n * self.lap_sq - s * s) / (n * n), 0.0)

    def mean_std(self) -> tuple[float, float]:
        n = self.arr.size
        var = (n * self.total_sq - self.total * self.total) / (n * n)  # integers: exact
        return self.total / n, max(var, 0.0) ** 0.5

    def at_most(self) -> dict[int, int]:
        """Exact counts ``pixels <= v`` for ``v`` in ``lo .. lo + 2`` (and ``lo - 1``)."""
        assert self.lo is not None
        above, s1, s2 = self.window
        # c1, c2, c3: pixels at lo + 1, at lo + 2, above; above = c1 + c2 + c3,
        # s1 = c1 + 2 c2 + 3 c3, s2 = c1 + 4 c2 + 9 c3.
        c3 = ((s2 - above) - 3 * (s1 - above)) // 2
        c2 = (s1 - above) - 2 * c3
        c1 = above - c2 - c3
        le = self.arr.size - above
        counts = {self.lo: le, self.lo + 1: le + c1, self.lo + 2: le + c1 + c2}
        if self.lo == 0:
            counts[-1] = 0
        return counts


def _field_pass(
    work: np.ndarray,
    lo: int | None = None,
    *,
    moments: bool = True,
    saturation_level: int | None = None,
    band: int | None = None,
) -> _FieldPass:
    """One pass over an 8/16-bit channel in row strips of :data:`STRIP_PIXELS`.

    Accumulates the sum of squares of the interior Laplacian and, with ``moments``,
    the pixel sum, sum of squares and maximum; with ``lo``, the window sums of
    :class:`_FieldPass`; with ``saturation_level``, the pixels above it; with
    ``band``, the Laplacian of the rows in every other band of ``band`` rows only
    (:data:`FOCUS_BAND`). Every sum
    is an integer (exact; OpenCV's double results are rounded, its ``norm`` comes back
    a hair off); each strip is read while it is in the core's cache, into strip
    buffers reused for every strip.
    """
    h, w = work.shape
    fp = _FieldPass(work, lo=lo, saturation_level=saturation_level)
    rows = max(1, STRIP_PIXELS // max(w, 1))
    lap_depth = cv2.CV_16S if work.dtype == np.uint8 else cv2.CV_32F
    lap_buf = np.empty((min(rows, h) + 2, w), np.int16 if lap_depth == cv2.CV_16S else np.float32)
    counting = lo is not None or saturation_level is not None
    win_buf = np.empty((min(rows, h), w), work.dtype) if counting else None
    laplace = h >= 3 and w >= 3
    fp.banded = bool(band)
    for y in range(0, h, rows):
        end = min(y + rows, h)
        own = work[y:end]
        if laplace:  # interior rows of this strip (of the focus bands, when banded)
            for first, last in _laplacian_runs(max(y, 1), min(end, h - 1), band):
                src = work[first - 1 : last + 1]
                out = lap_buf[: src.shape[0]]
                cv2.Laplacian(src, lap_depth, dst=out, ksize=1)
                inner = out[1:-1, 1:-1]
                fp.lap_sq += round(cv2.norm(inner, cv2.NORM_L2SQR))
                if band:  # the sum no longer telescopes to the border
                    fp.lap_sum += round(cv2.sumElems(inner)[0])
                    fp.lap_n += inner.size
        if moments:
            fp.total += round(cv2.sumElems(own)[0])
            fp.total_sq += round(cv2.norm(own, cv2.NORM_L2SQR))
            fp.high = max(fp.high, int(cv2.minMaxLoc(own)[1]))
        if saturation_level is not None and win_buf is not None:
            t = win_buf[: end - y]
            cv2.threshold(own, saturation_level, 1, cv2.THRESH_BINARY, dst=t)
            fp.above += cv2.countNonZero(t)
        if lo is not None and win_buf is not None:
            t = win_buf[: end - y]
            # saturating: 0 for pixels <= lo (OpenCV takes a scalar; its stubs say arrays)
            cv2.subtract(own, lo, dst=t)  # type: ignore[call-overload]
            cv2.min(t, _WINDOW, dst=t)
            fp.window[0] += cv2.countNonZero(t)
            fp.window[1] += round(cv2.sumElems(t)[0])
            fp.window[2] += round(cv2.norm(t, cv2.NORM_L2SQR))
    return fp


def _laplacian_runs(first: int, last: int, band: int | None) -> Iterator[tuple[int, int]]:
    """Row ranges ``[a, b)`` of ``[first, last)`` whose Laplacian is taken: all of it, or
    with ``band`` the parts in bands 0, 2, 4, ... of ``band`` rows counted from row 1."""
    if not band:
        if first < last:
            yield first, last
        return
    row = first
    while row < last:
        index = (row - 1) // band
        stop = min(1 + (index + 1) * band, last)
        if index % 2 == 0:
            yield row, stop
        row = stop


def _count_at_most(arr: np.ndarray, value: int) -> int:
    """How many pixels are <= ``value`` (a binary threshold: 2x faster than ``compare``)."""
    _, above = cv2.threshold(arr, value, 1, cv2.THRESH_BINARY)
    return arr.size - cv2.countNonZero(above)


def _sample_guess(q: float, sample: tuple[np.ndarray, int], top: int) -> tuple[int, float]:
    """The ``q`` percentile of a sample histogram, and where ``q`` falls in its level's
    share (0: at its bottom, 1: at its top)."""
    hist, n_sample = sample
    cdf = np.cumsum(hist[: top + 1], dtype=np.float64)
    want = q * n_sample
    guess = min(max(int(np.searchsorted(cdf, want)), 0), top)
    below = float(cdf[guess - 1]) if guess > 0 else 0.0
    return guess, (want - below) / max(float(hist[guess]), 1.0)


def _window_start(q: float, sample: tuple[np.ndarray, int], top: int) -> int:
    """Where the full-field pass counts levels: the sample's percentile ``g`` and its
    neighbour on the side ``q`` leans to (``g - 1`` or ``g + 1``, the usual misses of a
    row sample) are the two answers the window's counts decide."""
    guess, frac = _sample_guess(q, sample, top)
    return max(guess - 2 if frac < 0.5 else guess - 1, 0)


def _percentile_in_window(fp: _FieldPass, q: float) -> int | None:
    """The percentile from the window's exact counts, or ``None`` outside the window."""
    target = q * fp.arr.size
    le = fp.at_most()
    for v in sorted(le):
        if v - 1 in le and le[v - 1] < target <= le[v]:
            return v
    return None


def _wide_sample(work: np.ndarray, top: int) -> tuple[np.ndarray, int]:
    """A level histogram (``top + 1`` bins) of every 16th row: the 16-bit percentile guess."""
    rows = work[::16]  # a view: OpenCV reads it in place
    return cv2.calcHist([rows], [0], None, [top + 1], [0, top + 1]).ravel(), rows.size


def _percentile_uint(
    arr: np.ndarray, q: float, top: int, sample: tuple[np.ndarray, int] | None = None
) -> int:
    """The histogram percentile ``searchsorted(cdf, q * n)``, without the full histogram.

    ``top`` is the channel's maximum. A histogram of every 16th row gives a guess;
    exact counts at a few thresholds (galloping from the guess, then bisection;
    2-3 counts on real fields) find the smallest ``v`` with ``count(<= v) >= q*n``.
    ``sample`` is a level histogram of a row sample and its pixel count, when the
    caller has one (a better guess, no second histogram). :func:`channel_stats`
    tries the counts of its full-field pass first; this is its fallback.
    """
    target = q * arr.size
    if sample is None:
        sample = _wide_sample(arr, top)
    guess = _sample_guess(q, sample, top)[0]
    # Steps 1, 1, 2, 4, ...: the guess is mostly within one level of the answer.
    moves = 0
    if _count_at_most(arr, guess) >= target:  # the answer is <= guess
        hi, step = guess, 1
        while hi - step >= 0 and _count_at_most(arr, hi - step) >= target:
            hi, moves = hi - step, moves + 1
            step = 1 << max(0, moves - 1)
        lo = hi - step  # count(<= lo) < target, or lo < 0
    else:  # the answer is > guess
        lo, step = guess, 1
        while lo + step < top and _count_at_most(arr, lo + step) < target:
            lo, moves = lo + step, moves + 1
            step = 1 << max(0, moves - 1)
        hi = min(lo + step, top)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _count_at_most(arr, mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def coarse_channel(arr: np.ndarray) -> np.ndarray | None:
    """The channel area-averaged by :data:`COARSE_FACTOR` in its own depth, or ``None``
    (too small, or not 8/16-bit). Computed once per channel: the coarse focus, the block
    grid and the training-size resize all start from it instead of the full field."""
    h, w = arr.shape[:2]
    if arr.ndim != 2 or arr.dtype not in FAST_DTYPES or min(h, w) < 3 * COARSE_FACTOR:
        return None
    size = (w // COARSE_FACTOR, h // COARSE_FACTOR)
    return cv2.resize(contiguous(arr), size, interpolation=cv2.INTER_AREA)


def channel_stats(arr: np.ndarray, coarse: np.ndarray | None = None) -> dict[str, float]:
    """Full-resolution statistics of one channel, intensities as fractions of full scale.

    Returns ``mean``, ``std``, ``p99`` (99th percentile, the lowest level with at
    least 99% of the pixels at or below it), ``saturated`` (fraction of pixels at
    the dtype's maximum) and ``focus`` (variance of the Laplacian of the
    [0, 1]-scaled channel; low = blurred). 8- and 16-bit channels are read in
    place by OpenCV kernels (no float copy of the field). ``coarse`` is
    :func:`coarse_channel` of ``arr`` when the caller already has it.
    """
    scale = full_scale(arr.dtype)
    high: float | None = None
    sample: tuple[np.ndarray, int] | None = None
    if arr.dtype in FAST_DTYPES and arr.ndim == 2 and arr.size:
        work = contiguous(arr)
        top = int(scale)
        guide = _level_sample(work) if work.dtype == np.uint8 else _wide_sample(work, top)
        # One strip-wise pass: moments, maximum, Laplacian, the p99 window's counts and,
        # when the row sample has saturated pixels (most real fields), their count.
        level = top - 1 if guide[0][top] > 0 else None
        band = FOCUS_BAND if work.size >= HIST_SAMPLE_MIN else None
        fp = _field_pass(work, _window_start(0.99, guide, top), saturation_level=level, band=band)
        mean, std = fp.mean_std()
        high = fp.high
        in_window = _percentile_in_window(fp, 0.99)
        # None: the row sample missed by more than a level: search
        p99: float = (
            in_window if in_window is not None else _percentile_uint(work, 0.99, fp.high, guide)
        )
        if high < top:  # most fields
            saturated = 0.0
        elif level is not None:
            saturated = fp.above / work.size
        else:  # saturated pixels only in rows the sample skipped
            saturated = (work.size - _count_at_most(work, top - 1)) / work.size
        focus = fp.focus() / scale**2
        sample = guide if work.dtype == np.uint8 else None  # 8-bit: also the quality histogram
    else:
        flat = arr.astype(np.float64).ravel()
        mean, std = float(flat.mean()), float(flat.std())
        p99 = float(np.percentile(flat, 99))
        saturated = float(np.mean(flat >= scale))
        focus = laplacian_variance(arr) / scale**2
    return {
        "mean": mean / scale,
        "std": std / scale,
        "p99": float(p99) / scale,
        "saturated": float(saturated),
        "focus": focus,
        **_quality_stats(arr, scale, coarse, high, sample),
    }


def _level_sample(work: np.ndarray) -> tuple[np.ndarray, int]:
    """The 256-level histogram of every :data:`HIST_ROW_STEP`-th row of an 8-bit field
    (all rows below :data:`HIST_SAMPLE_MIN` pixels), and how many pixels it counts."""
    rows = work[::HIST_ROW_STEP] if work.size >= HIST_SAMPLE_MIN else work  # a view
    if rows.shape[1] % 2 or rows.strides[1] != 1:
        return cv2.calcHist([rows], [0], None, [256], [0, 256]).ravel(), rows.size
    # Counted in pairs: each two neighbouring pixels read as one 16-bit value into a
    # 256 x 256 histogram whose row and column sums are the level histogram. Half the
    # increments, and fewer of them stall on the same bin in dark areas: 1.6x faster.
    pairs = cv2.calcHist([rows.view(np.uint16)], [0], None, [65536], [0, 65536])
    grid = pairs.reshape(256, 256)
    hist = grid.sum(axis=0, dtype=np.float64) + grid.sum(axis=1, dtype=np.float64)
    return hist, rows.size


def _quality_stats(
    arr: np.ndarray,
    scale: float,
    coarse: np.ndarray | None = None,
    high: float | None = None,
    sample: tuple[np.ndarray, int] | None = None,
) -> dict[str, float]:
    """The image-quality additions: ``max``, ``entropy``, ``foreground``, ``focus_coarse``.

    ``entropy`` is the Shannon entropy of the 256-level histogram in bits / 8
    (0: one level, 1: uniform; cleanvision's low-information measure),
    ``foreground`` the fraction of pixels above the histogram's Otsu threshold,
    ``focus_coarse`` the variance of the Laplacian after an area downscale by
    :data:`COARSE_FACTOR` (0 for fields too small to downscale), ``block_max`` the
    largest block mean on a :data:`BLOCK_GRID`-a-side grid (``max`` below that size).
    The histogram reads every :data:`HIST_ROW_STEP`-th row of a large field, at a
    quarter of the cost (on the real HPA fields: entropy within 0.2%, the foreground
    fraction within 2%, relative, of the full field's). ``high`` (the channel's
    maximum) and ``sample`` (:func:`_level_sample`) are reused when the caller has them.
    """
    if arr.size == 0:
        return dict.fromkeys(("max", "entropy", "foreground", "focus_coarse", "block_max"), 0.0)
    if arr.dtype in FAST_DTYPES and arr.ndim == 2:
        work = contiguous(arr)
        high = float(cv2.minMaxLoc(work)[1]) if high is None else float(high)
        if sample is not None and HIST_BINS == 256:  # 8-bit: its levels are the bins
            hist = sample[0]
        else:
            rows = work[::HIST_ROW_STEP] if work.size >= HIST_SAMPLE_MIN else work
            hist = cv2.calcHist([rows], [0], None, [HIST_BINS], [0, float(scale) + 1.0]).ravel()
    else:
        unit = arr.astype(np.float64).ravel() / scale
        high = float(unit.max()) * scale
        hist = np.histogram(np.clip(unit, 0.0, 1.0), bins=HIST_BINS, range=(0.0, 1.0))[0]
    p = hist.astype(np.float64) / max(float(hist.sum()), 1.0)
    nz = p[p > 0]
    entropy = float(-(nz * np.log2(nz)).sum()) / np.log2(HIST_BINS)
    cut = otsu_bin(p)
    focus_coarse, block = 0.0, high
    h, w = arr.shape[:2]
    if min(h, w) >= 3 * COARSE_FACTOR:
        small = coarse_channel(arr) if coarse is None else coarse
        if small is None:  # not 8/16-bit: a float copy
            size = (w // COARSE_FACTOR, h // COARSE_FACTOR)
            small = cv2.resize(arr.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        focus_coarse = laplacian_variance(small) / scale**2
        if min(small.shape) >= BLOCK_GRID:  # block means from the coarse means: same blocks
            grid = cv2.resize(small, (BLOCK_GRID, BLOCK_GRID), interpolation=cv2.INTER_AREA)
            block = float(cv2.minMaxLoc(grid.astype(np.float32))[1])
    elif min(h, w) >= BLOCK_GRID:
        src = contiguous(arr) if arr.dtype in FAST_DTYPES else arr.astype(np.float32)
        grid = cv2.resize(src, (BLOCK_GRID, BLOCK_GRID), interpolation=cv2.INTER_AREA)
        block = float(cv2.minMaxLoc(grid.astype(np.float32))[1])
    return {
        "max": high / scale,
        "entropy": float(max(entropy, 0.0)) + 0.0,
        "foreground": float(p[cut + 1 :].sum()),
        "focus_coarse": focus_coarse,
        "block_max": block / scale,
    }


def otsu_bin(p: np.ndarray) -> int:
    """Otsu's threshold on a normalised histogram: the last bin of the background class."""
    bins = np.arange(len(p), dtype=np.float64)
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * bins)
    total = m0[-1]
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total * w0 - m0) ** 2 / (w0 * w1)
    between = np.nan_to_num(between[:-1], nan=-1.0, posinf=-1.0)
    return int(np.argmax(between)) if len(between) else 0
