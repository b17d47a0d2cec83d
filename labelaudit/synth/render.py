"""One field: the stains, the green patterns of its true classes, a fault, camera noise."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from labelaudit.core.errors import SettingsError
from labelaudit.data.classes import HPA_CHANNELS
from labelaudit.data.hpa_stats import NEGATIVE
from labelaudit.synth.cells import FieldCells, nearest_cell, partial_subset, shown_cells
from labelaudit.synth.faults import (
    FAULT_TYPES,
    fault_artifact,
    fault_blur,
    fault_dim,
    fault_saturated,
)
from labelaudit.synth.geometry import Field, make_field
from labelaudit.synth.patterns import CLASS_PEAK, GREEN_PATTERNS
from labelaudit.synth.stains import er_stain, microtubule_stain, nucleus_stain


def render_field(
    labels: Sequence[int], size: int, rng: np.random.Generator, fault: str | None = None
) -> dict[str, np.ndarray]:
    """Generate one field showing ``labels`` in green.

    Parameters
    ----------
    labels
        True HPA 2021 class ids of the field.
    size
        Side of the square field, pixels.
    rng
        Random generator (the field's own).
    fault
        Optional image fault: one of :data:`FAULT_TYPES`.

    Returns
    -------
    dict
        ``red``, ``green``, ``blue``, ``yellow`` -> uint8 arrays of shape (size, size).

    Notes
    -----
    Intensities in 8-bit units: nuclei peak ~120-230, microtubules and ER ~80-220,
    background 0-3. The green peak of a class is its typical brightness (110 for
    cytosol .. 255 for centrosome) times a field brightness factor
    (log-uniform 0.6-1.15) times a per-class factor (0.8-1.2) times a per-cell factor
    (0.7-1.15). Negative fields carry only camera noise (mean ~0.5).
    """
    return _render(labels, size, rng, fault, None, cells=False)[0]


def render_field_cells(
    labels: Sequence[int],
    size: int,
    rng: np.random.Generator,
    fault: str | None = None,
    partial_rng: np.random.Generator | None = None,
) -> tuple[dict[str, np.ndarray], FieldCells]:
    """Generate one field like :func:`render_field`, with its true cells.

    Parameters
    ----------
    labels, size, rng, fault
        As for :func:`render_field`; with ``partial_rng=None`` the channels are
        identical to its output for the same arguments and generator state.
    partial_rng
        When given, the field expresses each true class in only some cells: of the
        ``m`` cells that would show the class, a random 1..m-1 (drawn from this
        generator) keep it and the others carry none of it (classes shown by fewer
        than two cells are left as they are). Everything else in the field is
        unchanged.

    Returns
    -------
    channels, cells
        The uint8 channels and a :class:`FieldCells` (mask and per-class cell flags).
    """
    chans, cells = _render(labels, size, rng, fault, partial_rng, cells=True)
    assert cells is not None
    return chans, cells


def _render(
    labels: Sequence[int],
    size: int,
    rng: np.random.Generator,
    fault: str | None,
    partial_rng: np.random.Generator | None,
    cells: bool,
) -> tuple[dict[str, np.ndarray], FieldCells | None]:
    labels = sorted(set(int(c) for c in labels))
    # Faults draw from their own stream: a faulted field is its clean twin plus the fault.
    fault_rng = np.random.default_rng(rng.integers(2**63))
    n_mit = 0
    if 11 in labels:
        n_mit = 1 + int(rng.random() < 0.3)
    elif rng.random() < 0.06:  # mitotic cells also occur in fields without the class
        n_mit = 1
    f = make_field(size, rng, n_mit)
    f.red = microtubule_stain(f, rng)
    f.yellow = er_stain(f, rng)
    blue = nucleus_stain(f, rng)

    n_cells = len(f.cells)
    green, shown = _green(f, labels, rng, partial_rng, cells)

    def per_cell(lo: float, hi: float) -> np.ndarray:
        g = np.ones(n_cells + 1, dtype=np.float32)
        g[1:] = rng.uniform(lo, hi, n_cells)
        return g[f.label]

    ch = {
        "red": f.red * rng.uniform(110, 200) * per_cell(0.75, 1.1),
        "green": green,
        "blue": blue * rng.uniform(150, 215),
        "yellow": f.yellow * rng.uniform(110, 200) * per_cell(0.75, 1.1),
    }
    if fault == "dim":
        ch["green"] = fault_dim(ch["green"], fault_rng)
    elif fault == "blur":
        ch = fault_blur(ch, fault_rng)
    elif fault == "artifact":
        ch = fault_artifact(ch, fault_rng)
    elif fault not in (None, "saturated"):
        raise SettingsError(f"unknown image fault {fault!r}; expected one of {FAULT_TYPES}")

    out: dict[str, np.ndarray] = {}
    for name in HPA_CHANNELS:
        x = ch[name]
        offset = 0.3 if name == "green" else 1.5
        # Camera noise: read noise plus shot noise growing with the signal.
        noise = rng.standard_normal(f.shape, dtype=np.float32)
        x = x + offset + noise * (0.6 + 0.25 * np.sqrt(np.maximum(x, 0.0)))
        if name == "green" and fault == "saturated":
            x = fault_saturated(x, fault_rng)
        out[name] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if not cells:
        return out, None
    if labels == [NEGATIVE]:
        shown[NEGATIVE] = np.ones(n_cells, dtype=bool)
    return out, FieldCells(mask=f.label.copy(), shown=shown)


def _green(
    f: Field,
    labels: list[int],
    rng: np.random.Generator,
    partial_rng: np.random.Generator | None,
    cells: bool,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The green channel (8-bit units, before noise): each true class's pattern at its
    typical brightness, times a field and a per-cell gain; with ``cells``, which cells
    show each class (a partial field's removed cells no longer do)."""
    n_cells = len(f.cells)
    shown: dict[int, np.ndarray] = {}
    nearest: np.ndarray | None = None  # per pixel, the cell it belongs or is closest to
    green = np.zeros(f.shape, dtype=np.float32)
    if labels != [NEGATIVE]:
        field_gain = math.exp(rng.uniform(math.log(0.6), math.log(1.15)))
        for c in labels:
            # Same draws in the same order with or without the cell-level bookkeeping.
            pattern = GREEN_PATTERNS[c](f, rng)
            if cells:
                s = shown_cells(pattern, f.label, n_cells, f.unit)
                if partial_rng is not None:
                    keep = partial_subset(s, partial_rng)
                    if not keep.all():
                        if nearest is None:
                            nearest = nearest_cell(f.label)
                        # Background takes its nearest cell's fate, so no halo of a
                        # removed pattern is left around its cell.
                        pattern = pattern * np.concatenate([[False], keep])[nearest]
                        s = s & keep
                shown[c] = s
            green += pattern * (CLASS_PEAK[c] * rng.uniform(0.8, 1.2))
        cell_gain = np.ones(n_cells + 1, dtype=np.float32)
        cell_gain[1:] = rng.uniform(0.7, 1.15, n_cells)
        green *= field_gain * cell_gain[f.label]
    return green, shown
