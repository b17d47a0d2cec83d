"""Drawing primitives of the simulator: gaussian spots and filaments splatted at
sub-pixel positions, then blurred."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def blobs(
    shape: tuple[int, ...], ys: np.ndarray, xs: np.ndarray, sigma: float, amp: np.ndarray
) -> np.ndarray:
    """Gaussian spots of peak ``amp`` (an isolated spot) at sub-pixel positions."""
    return splat_blur(shape, ys, xs, amp * (2.0 * math.pi * splat_variance(sigma)), sigma)


def splat_blur(
    shape: tuple[int, ...], ys: np.ndarray, xs: np.ndarray, w: np.ndarray, sigma: float
) -> np.ndarray:
    """Bilinearly splat weighted points into an image and gaussian-blur it."""
    h, wd = shape[0], shape[1]
    img = np.zeros(h * wd, dtype=np.float64)
    if len(ys):
        y0 = np.floor(ys)
        x0 = np.floor(xs)
        fy = ys - y0
        fx = xs - x0
        y0 = y0.astype(np.intp)
        x0 = x0.astype(np.intp)
        yy = np.concatenate([y0, y0, y0 + 1, y0 + 1])
        xx = np.concatenate([x0, x0 + 1, x0, x0 + 1])
        ww = np.concatenate([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
        ww = ww * np.tile(np.broadcast_to(w, ys.shape), 4)
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
        img += np.bincount(yy[ok] * wd + xx[ok], weights=ww[ok], minlength=h * wd)
    field = img.reshape(h, wd).astype(np.float32)
    return ndimage.gaussian_filter(field, sigma, mode="constant", truncate=3.0)


# Sampling step of filaments, pixels: blurred with sigma >= 0.55 px (plus the bilinear
# splat), samples this close leave no visible beading.
FILAMENT_STEP = 0.8


def walks(
    y0: np.ndarray,
    x0: np.ndarray,
    angle: np.ndarray,
    length: np.ndarray,
    curl: float,
    rng: np.random.Generator,
    bend: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample filaments as smooth random walks (steps of ``FILAMENT_STEP`` px).

    ``curl`` is the standard deviation of the turn per half pixel of length (radians);
    0 gives straight lines. ``bend`` adds a constant turn per step to each filament (arcs of radius
    ``step / bend``). Returns the flat ``ys, xs`` of the samples and the filament index
    of each.
    """
    m = len(y0)
    if m == 0:
        e = np.zeros(0)
        return e, e, np.zeros(0, dtype=np.intp)
    ns = int(math.ceil(float(np.max(length)) / FILAMENT_STEP)) + 1
    steps = np.arange(ns, dtype=np.float32) * np.float32(FILAMENT_STEP)
    valid = steps[None, :] <= length[:, None]
    if curl > 0 or bend is not None:
        turns = np.zeros((m, ns), dtype=np.float32)
        if curl > 0:
            sd = curl * math.sqrt(FILAMENT_STEP / 0.5)
            turns += rng.normal(0.0, sd, (m, ns)).astype(np.float32)
        if bend is not None:
            turns += bend[:, None].astype(np.float32)
        turns[:, 0] = 0.0
        ang = angle[:, None].astype(np.float32) + np.cumsum(turns, axis=1)
        dy = np.sin(ang) * np.float32(FILAMENT_STEP)
        dx = np.cos(ang) * np.float32(FILAMENT_STEP)
        dy[:, 0] = 0.0
        dx[:, 0] = 0.0
        ys = y0[:, None] + np.cumsum(dy, axis=1)
        xs = x0[:, None] + np.cumsum(dx, axis=1)
    else:  # straight lines: no running sums needed
        ys = y0[:, None] + np.sin(angle)[:, None] * steps[None, :]
        xs = x0[:, None] + np.cos(angle)[:, None] * steps[None, :]
    idx = np.broadcast_to(np.arange(m)[:, None], (m, ns))
    return ys[valid], xs[valid], idx[valid]


def splat_variance(sigma: float) -> float:
    """Variance of a splatted, blurred point: the bilinear tent adds 1/6 px^2 per axis."""
    return sigma * sigma + 1.0 / 6.0


def line_weight(sigma: float) -> float:
    """Weight per filament sample that gives a blurred line a peak of 1."""
    return FILAMENT_STEP * math.sqrt(2.0 * math.pi * splat_variance(sigma))
