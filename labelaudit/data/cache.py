"""Decode every image exactly once into a memory-mapped uint8 array.

Cross-validation reads each image K x epochs times; decoding a full-size HPA
channel costs about 50-70 ms, so the cache decodes each field once, resizes it to
the training size and stores it as ``images.u8`` (N x C x S x S, uint8, raw,
opened with :func:`numpy.memmap`). While the full-resolution pixels are in memory
it also computes per-image, per-channel statistics (``stats.csv``) that the
intensity detector and the report use. Statistics and resizing run OpenCV kernels
on the integer pixels, so the build costs little more than the decode.

A cache entry is keyed by the image fingerprint (ids, resolved paths, sizes and
modification times of every file), the size and the channel list, so a changed
dataset is never served stale pixels.

Building is resumable and collects every broken file. An entry is built in a
partial directory ``.partial-<layout key>`` (keyed by ids, paths, size and
channels, not by file times) under a lock: the pixels go straight into its
``images.u8`` and each finished field is recorded in ``journal.jsonl`` (its
statistics, or why it could not be read, and its files' sizes and times) after
the pixels are flushed. A rerun after an interruption, SIGKILL included, decodes
only the fields the journal lacks or whose files changed. The finished entry is
renamed into place. When files are unreadable the partial entry stays (so fixing
them decodes only them) and :class:`BrokenImages` lists all of them; with
``skip_broken`` an entry of the readable images is published instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from labelaudit.core.digest import ShortDigest, short_digest
from labelaudit.core.errors import DatasetError, RunDirError, SettingsError
from labelaudit.core.io import write_csv, write_json
from labelaudit.core.locks import LockHeld, hold_lock
from labelaudit.core.userfiles import read_user_csv, read_user_json, remove_entry
from labelaudit.data import readers
from labelaudit.data.dataset import Dataset
from labelaudit.data.parallel import available_cores, map_fields
from labelaudit.data.readers import full_scale, read_array

_WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)

#: 2: OpenCV stats and resize; 3: + max, entropy, foreground, focus_coarse; 4: + block_max;
#: 5: resize from the coarse channel where the size divides it, sampled quality histogram;
#: 6: ``focus`` of fields >= HIST_SAMPLE_MIN pixels over every other FOCUS_BAND rows.
CACHE_VERSION = 6
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
#: Journal flushes: at most every this many fields or seconds, whichever comes first.
FLUSH_FIELDS = 16
FLUSH_SECONDS = 2.0
#: Partial entries of other builds, not touched for this long and not locked, are removed.
STALE_PARTIAL_SECONDS = 7 * 24 * 3600


def check_cache_dir(cache_dir: str | Path | None) -> Path:
    """The cache directory to use: ``cache_dir``, else :func:`default_cache_dir`.

    Raises
    ------
    SettingsError
        It exists and is not a directory (a file, a FIFO, a device, a link to one).
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if (root.exists() or root.is_symlink()) and not root.is_dir():
        raise SettingsError(
            f"the cache directory {root} is not a directory; give a directory (--cache-dir, "
            "or LABELAUDIT_CACHE_DIR) that labelaudit may create or fill"
        )
    return root


def default_cache_dir() -> Path:
    """Where cache entries live by default.

    ``$LABELAUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/labelaudit``, else
    ``~/.cache/labelaudit``.
    """
    env = os.environ.get("LABELAUDIT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "labelaudit"


class BrokenImages(DatasetError):
    """Images that cannot be read; ``str()`` lists every one, one line per file.

    Attributes
    ----------
    broken
        One dict per image: ``id``, ``file`` and ``reason``.
    """

    #: The advice of ``scan`` (the only command that can leave images out).
    SCAN_HINT = "fix or remove them, or scan with --skip-broken to audit the rest"

    def __init__(self, broken: list[dict[str, str]], hint: str = SCAN_HINT) -> None:
        self.broken = list(broken)
        lines = [f"{b['file']}: image {b['id']!r}: {b['reason']}" for b in self.broken]
        head = f"{len(self.broken)} image(s) cannot be read ({hint}):"
        super().__init__("\n".join([head, *lines]))
        if self.broken:  # for callers that expect one file: the first
            self.path, self.image = Path(self.broken[0]["file"]), self.broken[0]["id"]

    def __str__(self) -> str:
        return self.message


# ------------------------------------------------------------------ per-channel work

_FAST_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))

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
    if arr.dtype in _FAST_DTYPES and arr.ndim == 2:
        return _field_pass(_contiguous(arr), moments=False).focus()
    work: np.ndarray[Any, np.dtype[Any]]
    if np.issubdtype(arr.dtype, np.integer):
        work = arr.astype(np.int32 if arr.dtype.itemsize >= 2 else np.int16)
    else:
        work = arr.astype(np.float32, copy=False)
    lap = work[:-2, 1:-1] + work[2:, 1:-1] + work[1:-1, :-2] + work[1:-1, 2:] - 4 * work[1:-1, 1:-1]
    return float(lap.var())


def _contiguous(arr: np.ndarray) -> np.ndarray:
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
    if arr.ndim != 2 or arr.dtype not in _FAST_DTYPES or min(h, w) < 3 * COARSE_FACTOR:
        return None
    size = (w // COARSE_FACTOR, h // COARSE_FACTOR)
    return cv2.resize(_contiguous(arr), size, interpolation=cv2.INTER_AREA)


def _divides(coarse: np.ndarray | None, size: int) -> bool:
    """Whether ``size`` divides the coarse channel's sides: then area-averaging the coarse
    means is area-averaging the field (within one grey level, the coarse rounding), at
    a sixteenth of the reads. Other factors weigh partly covered coarse pixels as if
    uniform, which moves sharp edges by many levels, so they resize the full field."""
    return coarse is not None and coarse.shape[0] % size == 0 and coarse.shape[1] % size == 0


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
    if arr.dtype in _FAST_DTYPES and arr.ndim == 2 and arr.size:
        work = _contiguous(arr)
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
    if arr.dtype in _FAST_DTYPES and arr.ndim == 2:
        work = _contiguous(arr)
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
        src = _contiguous(arr) if arr.dtype in _FAST_DTYPES else arr.astype(np.float32)
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


def resize_to_uint8(arr: np.ndarray, size: int) -> np.ndarray:
    """Area-average (downscale) or bilinear (upscale) one channel to ``size x size`` uint8.

    8- and 16-bit channels are resized in their own depth by OpenCV and then
    scaled to 8 bits; other dtypes go through a float copy.
    """
    shrinking = min(arr.shape) >= size
    if arr.dtype in _FAST_DTYPES and arr.ndim == 2:
        method = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        small = cv2.resize(_contiguous(arr), (size, size), interpolation=method)
        if small.dtype == np.uint8:
            return small
        # 16 -> 8 bits: v * 255/65535 rounded to the nearest level, no float copy kept.
        return cv2.convertScaleAbs(small, alpha=255.0 / 65535.0)
    unit = arr.astype(np.float32) * np.float32(1.0 / full_scale(arr.dtype))
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    small = np.asarray(Image.fromarray(unit, mode="F").resize((size, size), resample))
    return np.clip(np.rint(small * 255.0), 0, 255).astype(np.uint8)


def split_channels(arr: np.ndarray, n_channels: int, path: Path) -> list[np.ndarray]:
    """Split a decoded single-file image into ``n_channels`` 2-D channels."""
    if arr.ndim == 2:
        planes = [arr]
    else:
        planes = [arr[..., c] for c in range(arr.shape[-1])]
    if len(planes) != n_channels:
        raise DatasetError(
            f"image has {len(planes)} channel(s), the dataset's first image has {n_channels}",
            path=path,
        )
    return planes


#: ``max_pixels`` of a dataset that has no pixel budget attribute: read_array's default.
READER_DEFAULT = "default"


def _read(path: Path, max_pixels: int | str | None) -> np.ndarray:
    """Decode one file, with the cheap integrity test and the pixel budget when available."""
    quick = getattr(readers, "quick_integrity", None)
    if quick is not None:
        problem = quick(path)  # raises DatasetError, or returns what is wrong
        if isinstance(problem, str) and problem:
            raise DatasetError(problem, path=path)
    arr = read_array(path) if isinstance(max_pixels, str) else read_array(path, max_pixels)
    if arr.dtype.kind == "f":  # floats are intensities in [0, 1] (readers.to_unit_float)
        arr = np.clip(arr, 0.0, 1.0)
    return arr


def decode_field(
    paths: tuple[Path, ...],
    n_channels: int,
    size: int,
    max_pixels: int | str | None = READER_DEFAULT,
) -> tuple[np.ndarray, list[dict[str, float]], dict[str, int]]:
    """Decode one field: resized uint8 (C x S x S), per-channel stats, size info.

    ``max_pixels`` is the pixel budget per channel (``None``: no limit).
    """
    if len(paths) == 1:
        arr = _read(paths[0], max_pixels)
        planes = split_channels(arr, n_channels, paths[0])
    else:
        planes = [_read(p, max_pixels) for p in paths]
        for p, plane in zip(paths, planes, strict=True):
            if plane.ndim != 2:  # an RGB file where one stain was expected
                raise DatasetError(
                    f"expected a single-channel image, got shape {plane.shape}", path=p
                )
    out = np.empty((n_channels, size, size), dtype=np.uint8)
    stats = []
    for c, plane in enumerate(planes):
        coarse = coarse_channel(plane)
        stats.append(channel_stats(plane, coarse))
        small = coarse if coarse is not None and _divides(coarse, size) else plane
        out[c] = resize_to_uint8(small, size)
    info = {
        "height": int(planes[0].shape[0]),
        "width": int(planes[0].shape[1]),
        "bit_depth": int(planes[0].dtype.itemsize * 8),
    }
    return out, stats, info


def _decode_job(args: tuple):
    _, paths, n_channels, size, *rest = args
    return decode_field(paths, n_channels, size, rest[0] if rest else READER_DEFAULT)


# ------------------------------------------------------------------------- cache


@dataclass
class ImageCache:
    """A built cache entry: memory-mapped pixels plus full-resolution statistics.

    Attributes
    ----------
    path
        The entry's directory.
    ids
        Image ids, row order of ``images`` and ``stats``.
    channels
        Channel names.
    size
        Side length S of the cached images.
    images
        Read-only ``np.memmap`` of shape (N, C, S, S), uint8.
    stats
        One row per image: ``id``, ``height``, ``width``, ``bit_depth`` and
        ``{channel}_{stat}`` for every stat in :data:`STAT_NAMES`.
    reused
        True when the entry existed and was served without decoding.
    resumed
        Fields taken from an earlier, interrupted build instead of decoded again.
    skipped
        Unreadable images left out (``skip_broken``): dicts with ``id``, ``file``,
        ``reason``. ``ids`` then lists only the readable images.
    """

    path: Path
    ids: list[str]
    channels: tuple[str, ...]
    size: int
    images: np.ndarray
    stats: pd.DataFrame
    reused: bool = False
    resumed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | Path, reused: bool = True) -> ImageCache:
        path = Path(path)
        # A cache entry is read back (a shared cache directory may hold anything):
        # regular files only, bounded, and a damaged entry is named in one line.
        if not _plain_entry_files(path, ("meta.json", "images.u8", "stats.csv")):
            raise RunDirError(
                f"the cache entry {path} is damaged (a file is missing, a link "
                "or not a regular file); remove it and run again"
            )
        try:
            meta = read_user_json(path / "meta.json", "the cache entry's meta.json")
            shape = tuple(int(x) for x in meta["shape"])
            images = np.memmap(path / "images.u8", dtype=np.uint8, mode="r", shape=shape)
            stats = read_user_csv(
                path / "stats.csv",
                "the cache's stats.csv",
                dtype={"id": str},
                keep_default_na=False,
            )
            return cls(
                path,
                list(meta["ids"]),
                tuple(meta["channels"]),
                int(meta["size"]),
                images,
                stats,
                reused,
                skipped=list(meta.get("skipped", [])),
            )
        except (DatasetError, KeyError, TypeError, ValueError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
                raise
            raise RunDirError(
                f"the cache entry {path} is damaged ({type(exc).__name__}); remove it and run again"
            ) from None


def _plain_entry_files(entry: Path, names: tuple[str, ...]) -> bool:
    """True when ``entry`` is a real directory whose ``names`` are regular files or absent
    (the first two must exist): nothing in a cache entry may be a link or a device."""
    try:
        if not stat.S_ISDIR(os.lstat(entry).st_mode):
            return False
    except OSError:
        return False
    for k, name in enumerate(names):
        try:
            if not stat.S_ISREG(os.lstat(entry / name).st_mode):
                return False
        except FileNotFoundError:
            if k < 2:
                return False
        except OSError:
            return False
    return True


def _lock_path(entry: Path) -> Path:
    return entry.parent / f"{entry.name.lstrip('.')}.lock"


def _remove_if_unlocked(path: Path, entry: Path) -> bool:
    """Remove ``path`` if nobody holds ``entry``'s lock (so nobody is building it)."""
    try:
        with hold_lock(_lock_path(entry), f"cache entry {entry.name}"):
            shutil.rmtree(path, ignore_errors=True)  # under the lock: no builder can start
            return True
    except LockHeld:
        return False


def _last_touched(partial: Path) -> float:
    journal = partial / "journal.jsonl"
    try:
        return max(partial.stat().st_mtime, journal.stat().st_mtime if journal.exists() else 0)
    except OSError:
        return 0.0


def remove_stale(root: Path, *, keep: str | None = None) -> list[Path]:
    """Remove what builds that died left in ``root``; return what was removed.

    ``.tmp-<entry>-<pid>`` directories are never resumed: removed when the entry's
    lock is free (a pid alone proves nothing, pids are reused). ``.partial-*``
    entries are resumable: removed only when untouched for
    :data:`STALE_PARTIAL_SECONDS` and unlocked; ``keep`` names one to spare.
    """
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    now = time.time()
    for path in root.iterdir():
        if not path.is_dir() or path.name == keep:
            continue
        if path.name.startswith(".tmp-"):
            entry = root / path.name[len(".tmp-") :].rpartition("-")[0]
        elif path.name.startswith(".partial-"):
            if now - _last_touched(path) < STALE_PARTIAL_SECONDS:
                continue
            entry = path
        else:
            continue
        if _remove_if_unlocked(path, entry):
            removed.append(path)
    return removed


@contextlib.contextmanager
def staged_entry(final: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Build a cache entry in a temporary directory beside ``final``; rename it into place.

    The block runs holding ``final``'s lock (a second builder waits) and fills the
    yielded directory; on success it becomes ``final`` (atomic on one file
    system). If ``final`` exists by then (a builder before the lock was taken),
    it is kept. Temporary directories of dead builders of ``final`` and this
    one's are removed whatever happens.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with hold_lock(_lock_path(final), f"cache entry {final.name}", wait=True, on_wait=on_wait):
        for stale in final.parent.glob(f".tmp-{final.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # we hold the lock: nobody else builds it
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
        tmp.mkdir()
        try:
            yield tmp
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / "meta.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def cache_key(dataset: Dataset, size: int) -> str:
    """The key of a dataset's cache entry at ``size``."""
    text = f"v{CACHE_VERSION}:{dataset.image_fingerprint()}:{size}:{','.join(dataset.channels)}"
    return short_digest(text.encode(), 20)


def partial_key(dataset: Dataset, size: int) -> str:
    """The key of a partial entry: ids, resolved paths, size, channels (not file times)."""
    h = ShortDigest(20, f"v{CACHE_VERSION}:partial:{size}:{','.join(dataset.channels)}".encode())
    for image_id, source in zip(dataset.ids, dataset.sources, strict=True):
        h.update(f"\x1e{image_id}".encode())
        for p in source.paths:
            h.update(f"\x1f{p.resolve()}".encode())
    return h.hexdigest()


def _file_stamps(paths: tuple[Path, ...]) -> list[list[int]]:
    stamps = []
    for p in paths:
        try:
            st = p.stat()
            stamps.append([st.st_size, st.st_mtime_ns])
        except OSError:
            stamps.append([-1, -1])
    return stamps


def subset_dataset(dataset: Dataset, ids: list[str]) -> Dataset:
    """The dataset restricted to ``ids`` (in the dataset's order); rows stay aligned."""
    wanted = set(ids)
    keep = [i for i, image_id in enumerate(dataset.ids) if image_id in wanted]
    return dataclasses.replace(
        dataset,
        ids=[dataset.ids[i] for i in keep],
        labels=dataset.labels[keep],
        sources=[dataset.sources[i] for i in keep],
        rows=[dataset.rows[i] for i in keep],
    )


# ---------------------------------------------------------------- partial entries


@dataclass
class _Partial:
    """A partial entry: pixels written so far and the journal of finished fields."""

    path: Path
    images: np.memmap
    rows: dict[int, dict[str, object]]
    broken: dict[int, dict[str, str]]
    #: Per field, its files' [size, mtime_ns], taken before decoding: a file that
    #: changes while it is decoded is decoded again by the next build.
    stamps: list[list[list[int]]]

    @property
    def journal(self) -> Path:
        return self.path / "journal.jsonl"


def _open_partial(path: Path, dataset: Dataset, size: int) -> _Partial:
    """Open (or start) the partial entry and keep the journal's fields whose files are unchanged."""
    n, c = len(dataset), len(dataset.channels)
    shape = [n, c, size, size]
    plan = {"version": CACHE_VERSION, "shape": shape, "ids": dataset.ids}
    plan_file = path / "plan.json"
    stamps = [_file_stamps(src.paths) for src in dataset.sources]
    fresh = True
    if _plain_entry_files(path, ("plan.json", "images.u8", "journal.jsonl")):
        with contextlib.suppress(ValueError, OSError):
            fresh = json.loads(plan_file.read_text(encoding="utf-8")) != plan
        fresh = fresh or (path / "images.u8").stat().st_size != int(np.prod(shape))
    if fresh:
        remove_entry(path.parent, path.name)  # a planted link is unlinked, never followed
        path.mkdir(parents=True)
        images = np.memmap(path / "images.u8", dtype=np.uint8, mode="w+", shape=tuple(shape))
        write_json(plan_file, plan)
        return _Partial(path, images, {}, {}, stamps)
    images = np.memmap(path / "images.u8", dtype=np.uint8, mode="r+", shape=tuple(shape))
    part = _Partial(path, images, {}, {}, stamps)
    with contextlib.suppress(OSError):
        for line in part.journal.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                i = int(entry["i"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
            if not 0 <= i < n or entry.get("files") != stamps[i]:
                continue  # a file changed since: decode it again
            if "error" in entry:
                part.broken[i] = entry["error"]
                part.rows.pop(i, None)
            else:
                part.rows[i] = entry["row"]
                part.broken.pop(i, None)
    return part


class _Journal:
    """Appends finished fields to the journal, after their pixels reach the file."""

    def __init__(self, part: _Partial) -> None:
        self.part = part
        self.pending: list[str] = []
        self.last = time.monotonic()
        # O_NOFOLLOW: a link planted in a shared cache must not make us append elsewhere.
        fd = os.open(part.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        self.fh = open(fd, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)

    def add(self, entry: dict[str, object]) -> None:
        self.pending.append(json.dumps(entry))
        if len(self.pending) >= FLUSH_FIELDS or time.monotonic() - self.last > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.part.images.flush()  # pixels first: a journaled field is always on disk
        self.fh.write("\n".join(self.pending) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.pending.clear()
        self.last = time.monotonic()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.fh.close()


def _stats_row(image_id: str, channels: tuple[str, ...], stats, info) -> dict[str, object]:
    row: dict[str, object] = {"id": image_id, **info}
    for name, st in zip(channels, stats, strict=True):
        row.update({f"{name}_{k}": v for k, v in st.items()})
    return row


def _decode_missing(
    part: _Partial,
    dataset: Dataset,
    size: int,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Decode the fields the partial entry lacks, journaling them as they finish."""
    n, c = len(dataset), len(dataset.channels)
    done = len(part.rows) + len(part.broken)
    missing = [i for i in range(n) if i not in part.rows and i not in part.broken]
    if progress is not None and done:
        progress(done, n)
    if not missing:
        return
    max_pixels = getattr(dataset, "max_pixels", READER_DEFAULT)
    jobs = [(i, dataset.sources[i].paths, c, size, max_pixels) for i in missing]
    journal = _Journal(part)
    try:
        results = map_fields(
            _decode_job, jobs, dataset.ids, workers, min_parallel=8, max_chunk=16, errors="return"
        )
        for i, result in results:
            paths = dataset.sources[i].paths
            entry: dict[str, object] = {"i": i, "files": part.stamps[i]}
            if isinstance(result, DatasetError):
                bad = result.path if result.path is not None else paths[0]
                # Absolute: the journal outlives this working directory.
                file = str(Path(bad).absolute())
                entry["error"] = {"id": dataset.ids[i], "file": file, "reason": result.message}
                part.broken[i] = entry["error"]  # type: ignore[assignment]
            else:
                pixels, stats, info = result
                part.images[i] = pixels
                entry["row"] = part.rows[i] = _stats_row(
                    dataset.ids[i], dataset.channels, stats, info
                )
            journal.add(entry)
            done += 1
            if progress is not None:
                progress(done, n)
    finally:
        journal.close()


def _entry_meta(key: str, dataset: Dataset, shape: list[int], seconds: float) -> dict:
    return {
        "version": CACHE_VERSION,
        "key": key,
        "shape": shape,
        "size": shape[-1],
        "channels": list(dataset.channels),
        "ids": dataset.ids,
        "dataset": str(dataset.root.resolve()),
        "image_fingerprint": dataset.image_fingerprint(),
        "seconds": round(seconds, 3),
    }


def _publish_partial(
    part: _Partial, final: Path, key: str, dataset: Dataset, started: float
) -> None:
    """Turn a complete partial entry into ``final`` (rename: atomic)."""
    n = len(dataset)
    part.images.flush()
    shape = list(part.images.shape)
    del part.images
    write_csv(part.path / "stats.csv", pd.DataFrame([part.rows[i] for i in range(n)]))
    write_json(
        part.path / "meta.json", _entry_meta(key, dataset, shape, time.perf_counter() - started)
    )
    for name in ("journal.jsonl", "plan.json"):
        (part.path / name).unlink(missing_ok=True)
    os.rename(part.path, final)


def _publish_subset(
    part: _Partial, dataset: Dataset, size: int, root: Path, started: float
) -> Path:
    """Publish the entry of the readable images, rows copied from the partial entry."""
    keep = [i for i in range(len(dataset)) if i not in part.broken]
    sub = subset_dataset(dataset, [dataset.ids[i] for i in keep])
    key = cache_key(sub, size)
    final = root / key
    if (final / "meta.json").is_file():
        return final
    skipped = [part.broken[i] for i in sorted(part.broken)]
    with staged_entry(final) as tmp:
        shape = [len(keep), len(dataset.channels), size, size]
        images = np.memmap(tmp / "images.u8", dtype=np.uint8, mode="w+", shape=tuple(shape))
        for j, i in enumerate(keep):  # row by row: bounded memory on a large set
            images[j] = part.images[i]
        images.flush()
        del images
        write_csv(tmp / "stats.csv", pd.DataFrame([part.rows[i] for i in keep]))
        meta = _entry_meta(key, sub, shape, time.perf_counter() - started)
        write_json(tmp / "meta.json", {**meta, "skipped": skipped})
    return final


def build_cache(
    dataset: Dataset,
    size: int,
    cache_dir: str | Path | None = None,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    skip_broken: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> ImageCache:
    """Return the dataset's cache entry at ``size``, decoding the images if needed.

    Parameters
    ----------
    dataset
        The dataset to cache (its directory is only read).
    size
        Side length S of the cached images.
    cache_dir
        Where entries live; :func:`default_cache_dir` when ``None``.
    workers
        Decoding processes; all cores when ``None``.
    progress
        Called as ``progress(done, total)`` after each decoded image (and once
        with the fields resumed from an interrupted build).
    skip_broken
        Leave unreadable images out instead of raising: the entry returned then
        holds only the readable images (``cache.ids``, ``cache.skipped``; use
        :func:`subset_dataset` for the matching dataset).
    on_wait
        Called with a line when another process is building the same entry (this
        one waits for it, then reuses its work).

    Returns
    -------
    ImageCache
        ``resumed`` says how many fields an interrupted build had already done.

    Raises
    ------
    BrokenImages
        When images cannot be decoded (all of them listed), unless ``skip_broken``.
    """
    root = check_cache_dir(cache_dir)
    key = cache_key(dataset, size)
    final = root / key
    if (final / "meta.json").is_file():
        return ImageCache.open(final, reused=True)
    root.mkdir(parents=True, exist_ok=True)
    pkey = partial_key(dataset, size)
    partial = root / f".partial-{pkey}"
    remove_stale(root, keep=partial.name)
    started = time.perf_counter()
    # Locked by the partial's key (it survives file changes); named by the entry's.
    with hold_lock(_lock_path(partial), f"cache entry {key}", wait=True, on_wait=on_wait):
        if (final / "meta.json").is_file():  # built while we waited
            return ImageCache.open(final, reused=True)
        part = _open_partial(partial, dataset, size)
        resumed = len(part.rows) + len(part.broken)
        _decode_missing(part, dataset, size, workers or available_cores(), progress)
        if not part.broken:
            _publish_partial(part, final, key, dataset, started)
            cache = ImageCache.open(final, reused=False)
        elif not skip_broken:
            raise BrokenImages([part.broken[i] for i in sorted(part.broken)])
        else:
            fresh = not (root / cache_key(_readable(dataset, part), size) / "meta.json").is_file()
            cache = ImageCache.open(_publish_subset(part, dataset, size, root, started), not fresh)
    cache.resumed = resumed
    return cache


def _readable(dataset: Dataset, part: _Partial) -> Dataset:
    return subset_dataset(dataset, [d for i, d in enumerate(dataset.ids) if i not in part.broken])
