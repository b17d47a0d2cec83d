"""Image faults of a rendered field (arrays in 8-bit units, float)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from labelaudit.synth.drawing import blobs

FAULT_TYPES: tuple[str, ...] = ("dim", "saturated", "blur", "artifact")


def fault_dim(green: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Green exposure about 10x too low: scaled by 0.07..0.13."""
    return green * rng.uniform(0.07, 0.13)


def fault_saturated(green: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Green exposure far too high: scaled so at least half the stained pixels clip at 255."""
    fg = green[green > 0.1 * max(float(green.max()), 1.0)]
    ref = float(np.median(fg)) if fg.size else 1.0
    gain = max(4.0, 255.0 / max(ref, 1.0)) * rng.uniform(1.1, 1.6)
    return np.minimum(green * gain, 255.0)


def fault_blur(channels: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Out of focus: every channel gaussian-blurred with sigma 3..4.5 % of the field size."""
    size = max(next(iter(channels.values())).shape)
    sigma = size * rng.uniform(0.03, 0.045)
    return {k: ndimage.gaussian_filter(v, sigma, mode="nearest") for k, v in channels.items()}


def fault_artifact(
    channels: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Bright debris: 1-3 irregular near-saturated blobs in green (half the time in all)."""
    shape = next(iter(channels.values())).shape
    size = max(shape)
    n_blobs = int(rng.integers(1, 4))
    ys, xs, amps = [], [], []
    for _ in range(n_blobs):
        cy, cx = rng.uniform(0.1, 0.9, 2) * np.array(shape)
        radius = size * rng.uniform(0.035, 0.07)
        m = int(rng.integers(3, 7))  # lumps make the outline irregular
        ys.append(cy + rng.normal(0, 0.6 * radius, m))
        xs.append(cx + rng.normal(0, 0.6 * radius, m))
        amps.append(rng.uniform(0.8, 1.6, m))
    sigma = size * 0.03
    blob = blobs(shape, np.concatenate(ys), np.concatenate(xs), sigma, np.concatenate(amps))
    debris = np.clip((blob - 0.2) / 0.4, 0.0, 1.0) * rng.uniform(230, 300)
    everywhere = rng.random() < 0.5
    out = dict(channels)
    for k, v in channels.items():
        if k == "green" or everywhere:
            out[k] = np.maximum(v, debris * (1.0 if k == "green" else rng.uniform(0.5, 1.0)))
    return out
