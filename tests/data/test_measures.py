"""The image measures' strip-wise statistics against straightforward NumPy references.

``channel_stats`` reads an 8/16-bit channel in row strips (moments, maximum,
Laplacian, the p99 window's counts and the saturated count in one pass) and counts
the level histogram in pixel pairs. Every statistic below is pinned to a plain
NumPy computation on small random images, with the strips made tiny so that strip
edges, single-row strips and the last short strip are all exercised.

Tolerances: ``p99``, ``saturated``, ``max`` and the histogram identical; ``mean``,
``std`` and ``focus`` within a relative 1e-12 (the sums are exact integers, only
the final division and square root round).
"""

from __future__ import annotations

import numpy as np
import pytest

from labelaudit.data import measures
from labelaudit.data.measures import channel_stats, laplacian_variance

REL = 1e-12


def _reference(arr: np.ndarray) -> dict[str, float]:
    """The statistics' definitions in plain NumPy (float64 / int64)."""
    scale = float(np.iinfo(arr.dtype).max)
    x = arr.astype(np.int64)
    cdf = np.cumsum(np.bincount(x.ravel(), minlength=int(scale) + 1))
    out = {
        "mean": x.mean() / scale,
        "std": x.std() / scale,
        "p99": float(np.searchsorted(cdf, 0.99 * x.size)) / scale,
        "saturated": float(np.mean(x == scale)),
        "max": float(x.max()) / scale,
        "focus": 0.0,
    }
    if min(x.shape) >= 3:
        lap = x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:] - 4 * x[1:-1, 1:-1]
        out["focus"] = float(lap.astype(np.float64).var()) / scale**2
    return out


def _images():
    rng = np.random.default_rng(16)
    yield "uint8 uniform", rng.integers(0, 256, (61, 77)).astype(np.uint8)
    yield (
        "uint8 dark, saturated spots",
        np.where(rng.random((50, 64)) < 0.02, 255, rng.integers(0, 12, (50, 64))).astype(np.uint8),
    )
    yield "uint8 odd width", rng.integers(0, 256, (33, 45)).astype(np.uint8)
    yield "uint8 two rows", rng.integers(0, 256, (2, 40)).astype(np.uint8)
    yield "uint16 uniform", rng.integers(0, 65536, (47, 53)).astype(np.uint16)
    yield "uint16 gamma", rng.gamma(2.0, 900.0, (64, 48)).clip(0, 65535).astype(np.uint16)
    yield (
        "uint16 saturated",
        np.where(rng.random((40, 40)) < 0.05, 65535, rng.integers(0, 3000, (40, 40))).astype(
            np.uint16
        ),
    )


IMAGES = list(_images())


@pytest.mark.parametrize("strip_pixels", [1, 200, 1 << 18])
@pytest.mark.parametrize("name", [n for n, _ in IMAGES])
def test_channel_stats_equal_numpy(name, strip_pixels, monkeypatch):
    # 1: one row per strip; 200: a few rows, a short last strip; 1 << 18: one strip.
    monkeypatch.setattr(measures, "STRIP_PIXELS", strip_pixels)
    arr = dict(IMAGES)[name]
    got, want = channel_stats(arr), _reference(arr)
    for key in ("p99", "saturated", "max"):
        assert got[key] == want[key], key
    for key in ("mean", "std", "focus"):
        assert got[key] == pytest.approx(want[key], rel=REL, abs=1e-300), key
    assert laplacian_variance(arr) == pytest.approx(want["focus"] * np.iinfo(arr.dtype).max ** 2)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_row_sample_that_misses_the_tail_falls_back_exactly(dtype, monkeypatch):
    """Bright and saturated pixels only in rows the histogram sample skips: the p99
    window is far from the sample's guess, and the saturated count is not made in
    the pass; both fall back to exact counts."""
    monkeypatch.setattr(measures, "HIST_SAMPLE_MIN", 16)  # sample every 4th row here too
    monkeypatch.setattr(measures, "STRIP_PIXELS", 96)
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 10, (64, 48)).astype(dtype)
    arr[1::4] = rng.integers(top // 2, top, (16, 48))  # never in the every-4th/16th sample
    arr[2::4, :3] = top
    got, want = channel_stats(arr), _reference(arr)
    assert want["p99"] > 0.4 and want["saturated"] > 0  # the case is what it claims
    for key in ("p99", "saturated", "max"):
        assert got[key] == want[key], key
    assert got["mean"] == pytest.approx(want["mean"], rel=REL)


@pytest.mark.parametrize("width", [40, 41])
def test_pair_counted_histogram_equals_bincount(width, monkeypatch):
    monkeypatch.setattr(measures, "HIST_SAMPLE_MIN", 16)
    rng = np.random.default_rng(width)
    arr = rng.integers(0, 256, (30, width)).astype(np.uint8)
    arr[:, :5] = 0  # runs of one level
    hist, n = measures._level_sample(arr)
    rows = arr[:: measures.HIST_ROW_STEP]
    assert n == rows.size
    assert np.array_equal(hist, np.bincount(rows.ravel(), minlength=256))


def test_window_counts_equal_numpy():
    rng = np.random.default_rng(7)
    arr = rng.integers(0, 12, (37, 29)).astype(np.uint8)
    for lo in range(0, 12):
        fp = measures._field_pass(arr, lo)
        for v, count in fp.at_most().items():
            assert count == int((arr <= v).sum()), (lo, v)


def test_laplacian_sum_telescopes_to_the_border():
    rng = np.random.default_rng(11)
    for dtype in (np.uint8, np.uint16):
        x = rng.integers(0, np.iinfo(dtype).max + 1, (23, 31)).astype(dtype)
        y = x.astype(np.int64)
        lap = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1]
        assert measures._laplacian_sum(x) == int(lap.sum())


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_banded_focus_of_large_fields_equals_numpy(dtype, monkeypatch):
    """Fields of at least HIST_SAMPLE_MIN pixels: ``focus`` is the Laplacian's variance
    over the interior rows in bands 0, 2, 4, ... of FOCUS_BAND rows counted from row 1."""
    monkeypatch.setattr(measures, "HIST_SAMPLE_MIN", 16)
    monkeypatch.setattr(measures, "FOCUS_BAND", 4)
    monkeypatch.setattr(measures, "STRIP_PIXELS", 7 * 29)  # strips cut through the bands
    rng = np.random.default_rng(21)
    arr = rng.integers(0, np.iinfo(dtype).max + 1, (43, 29)).astype(dtype)
    x = arr.astype(np.int64)
    lap = x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:] - 4 * x[1:-1, 1:-1]
    rows = np.arange(1, arr.shape[0] - 1)  # lap[k] is image row k + 1
    kept = lap[((rows - 1) // 4) % 2 == 0]
    assert 0 < len(kept) < len(lap)
    want = float(kept.astype(np.float64).var()) / float(np.iinfo(dtype).max) ** 2
    assert channel_stats(arr)["focus"] == pytest.approx(want, rel=REL)
    # the other statistics stay whole-field and exact
    assert channel_stats(arr)["mean"] == pytest.approx(_reference(arr)["mean"], rel=REL)
