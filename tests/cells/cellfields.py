"""Synthetic fields whose cells are known exactly (importable as ``cellfields``)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Cell centres (y, x) in a 256 px field: two touching pairs of cells, a pair whose
# nuclei touch (one blob when thresholded: the watershed must split it), a lone
# cell, and one cut by the right border.
CENTRES = [
    (60, 60), (60, 122), (170, 60), (196, 112), (70, 200), (186, 172), (196, 203), (128, 262),
]  # fmt: skip
N_INTERIOR = len(CENTRES) - 1
CELL_R, NUC_R = 36, 17


def known_field(size: int = 256, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Stains of a field and its true cell labels (Voronoi split where cells touch)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    dist = np.stack([np.hypot(yy - cy, xx - cx) for cy, cx in CENTRES])
    nearest = dist.argmin(axis=0)
    d_min = dist.min(axis=0)
    labels = np.where(d_min < CELL_R, nearest + 1, 0).astype(np.int32)
    nuclei = d_min < NUC_R
    # Cytoplasm: bright, textured, dimming towards the cell edge; a dark seam where
    # two cells meet, as between real cells.
    second = np.sort(dist, axis=0)[1]
    seam = np.clip((second - d_min) / 6.0, 0, 1)
    cyto = (labels > 0) * (0.9 - 0.4 * d_min / CELL_R) * (0.5 + 0.5 * seam)
    cyto = cyto * (1 + 0.2 * rng.standard_normal((size, size)))
    blue = nuclei * (0.8 + 0.1 * rng.standard_normal((size, size)))
    green = (labels > 0) * 0.3

    def to8(a: np.ndarray) -> np.ndarray:
        a = ndimage.gaussian_filter(a.astype(np.float32), 1.5)
        a = a + 0.02 * rng.standard_normal(a.shape)
        return np.clip(a * 255, 0, 255).astype(np.uint8)

    channels = {
        "red": to8(cyto),
        "green": to8(green),
        "blue": to8(blue),
        "yellow": to8(0.8 * cyto),
    }
    return channels, labels
