"""Synthetic HPA-2021-layout datasets with known label noise and image faults.

Every field is a few generated cells: nuclei (blue), microtubules (red, filaments
radiating from the centrosome), endoplasmic reticulum (yellow, a perinuclear
reticular network) and a green channel whose pattern follows the field's TRUE classes,
one generator per HPA 2021 class. A fraction of the fields then gets label noise in
the GIVEN labels (``missing``, ``extra``, ``swap``) and a separate fraction gets an
image fault (``dim``, ``saturated``, ``blur``, ``artifact``). ``truth.csv`` records
what was injected, so detectors can be scored against it.

Everything is drawn from ``numpy.random.default_rng`` generators seeded from ``seed``:
the same arguments give byte-identical files. Each field's pixels come from their own
generator (seeded with ``[seed, field index]``) and depend only on that, the field's
true labels and its fault; true labels and IDs are drawn before any noise, so changing
``noise_rate`` changes the given labels only.

Cell-level truth
----------------
With ``partial_cells > 0`` a fraction of the fields express their true classes in only
some of their cells (for each true class, a random 1..m-1 of the m cells that would
show it; the pattern is zeroed in the other cells and in the background nearest to
them, so they carry no trace of it; a cell left with no class is as dark in green as a
Negative field). With ``partial_cells > 0`` or ``write_masks``, ``truth.csv`` gains a
``cells`` column: for every TRUE or GIVEN class of the field (class ids ascending), how
many of the field's cells show it, out of how many cells::

    0:3/8;5:0/8;16:8/8

(class 0 in 3 of 8 cells, class 5 in none: a label no cell supports, e.g. an injected
``extra``; class 16 in all). Read it with :func:`parse_cells_column`. A class that is
only a GIVEN label (``extra``, the new label of a ``swap``) is shown by 0 cells. Some
classes are never shown by every cell even in fully expressing fields: Mitotic spindle
(11) only by the 1-2 mitotic cells, nuclear membrane, nucleoli, fibrillar center,
speckles, nuclear bodies and Golgi not by mitotic cells, Aggresome by ~75 % of the
cells, and a compact pattern (a centrosome) can fall outside a cell cut by the field
border; the counts say what is visible (a cell shows a class when at least
``max(3, 0.01 * r^2)`` of its pixels reach half the pattern's peak, r the mean nucleus
radius in pixels). Negative (18) counts the cells that show no class. Partial
expression is not label noise: the ``noise`` column does not mention it, and the field's
true labels stay true (every true class is shown by at least one cell whenever it is
in the full field).

With ``write_masks`` the true cell label images are written as
``masks/{ID}_predictedmask.png`` (the HPA competition mask format: background 0, cell
``j`` has value ``j``, 8-bit, 16-bit beyond 255 cells). Every cell of the field is in
the mask, including cells cut by the field border; the cells counted in ``cells`` are
exactly the mask's cells (the denominator is the highest mask value), and cell ``j``
of the mask is entry ``j - 1`` of :attr:`FieldCells.shown` (:func:`render_field_cells`).

The cell-level draws come from their own streams (which fields are partial, and each
partial field's cell subsets), so enabling them changes neither the labels, the noise,
nor the pixels of the other fields; a partial field is its fully expressing twin with
some cells' class patterns removed.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from labelaudit.core.errors import SettingsError
from labelaudit.core.io import write_csv
from labelaudit.core.params import (
    Constraint,
    InstanceOf,
    Integral,
    Interval,
    Real,
    validate_params,
)
from labelaudit.data.classes import HPA_CHANNELS
from labelaudit.data.hpa_stats import (
    HPA2021_CLASS_COUNTS,
    HPA2021_LABELS_PER_FIELD,
    HPA2021_N_FIELDS,
    NEGATIVE,
)

__all__ = [
    "CLASS_FLOOR",
    "CONFUSIONS",
    "DUPLICATE_TYPES",
    "FAULT_TYPES",
    "FieldCells",
    "LABEL_NOISE_TYPES",
    "NOISE_TYPES",
    "class_probabilities",
    "fault_artifact",
    "fault_blur",
    "fault_dim",
    "fault_saturated",
    "format_cells_column",
    "inject_label_noise",
    "near_copy",
    "parse_cells_column",
    "plant_duplicates",
    "render_field",
    "render_field_cells",
    "sample_label_sets",
    "synthesize",
]

LABEL_NOISE_TYPES: tuple[str, ...] = ("missing", "extra", "swap")
FAULT_TYPES: tuple[str, ...] = ("dim", "saturated", "blur", "artifact")
NOISE_TYPES: tuple[str, ...] = ("none", *LABEL_NOISE_TYPES, *FAULT_TYPES)
#: Noise of a planted near-duplicate (``synthesize(duplicates=N)``): a copy with the
#: same given labels, or one whose given labels differ from its original's.
DUPLICATE_TYPES: tuple[str, ...] = ("duplicate", "duplicate_conflict")

#: Minimum share of fields carrying each class. The real data has classes at 0.2 %
#: (Mitotic spindle, Negative) and 1-4 % (Aggresome, Vesicles, ER, Microtubules); at
#: 5 % a 400-field dataset has ~20 examples of every class, ~16 per training split of
#: 5-fold cross-validation, the least a small CNN needs to learn a pattern (at 3 %,
#: rare classes were barely learned and their clean fields looked mislabelled).
#: The other classes keep their real order and roughly their real frequency.
CLASS_FLOOR: float = 0.05

#: Plausible confusions between HPA 2021 classes (similar-looking patterns), used for
#: ``swap`` (replace a label by a partner) and half of the ``extra`` labels.
#: Negative (18) is never a partner: it is never combined with another class.
CONFUSIONS: dict[int, tuple[int, ...]] = {
    0: (4, 5, 16),  # nucleoplasm <-> nuclear speckles, nuclear bodies, cytosol
    1: (0, 6),  # nuclear membrane <-> nucleoplasm, ER
    2: (3, 5),  # nucleoli <-> fibrillar center, nuclear bodies
    3: (2, 5),  # fibrillar center <-> nucleoli, nuclear bodies
    4: (0, 5),  # speckles <-> nucleoplasm, nuclear bodies
    5: (4, 0, 3),  # nuclear bodies <-> speckles, nucleoplasm, fibrillar center
    6: (14, 16, 1),  # ER <-> mitochondria, cytosol, nuclear membrane
    7: (17, 15, 12),  # Golgi <-> vesicles, aggresome, centrosome
    8: (10, 9),  # intermediate filaments <-> microtubules, actin
    9: (8, 13),  # actin <-> intermediate filaments, plasma membrane
    10: (8, 11),  # microtubules <-> intermediate filaments, mitotic spindle
    11: (10, 12),  # mitotic spindle <-> microtubules, centrosome
    12: (7, 5),  # centrosome <-> Golgi, nuclear bodies
    13: (9, 16),  # plasma membrane <-> actin, cytosol
    14: (6, 17),  # mitochondria <-> ER, vesicles
    15: (7, 17),  # aggresome <-> Golgi, vesicles
    16: (0, 17, 6),  # cytosol <-> nucleoplasm, vesicles, ER
    17: (16, 7, 14),  # vesicles <-> cytosol, Golgi, mitochondria
    18: (16, 0),  # negative (faint) <-> cytosol, nucleoplasm
}

# Typical peak green intensity of each class's pattern (8-bit units, before the
# field's brightness factor): diffuse stains are dimmer than compact structures.
_CLASS_PEAK: tuple[float, ...] = (
    130,  # 0 nucleoplasm
    190,  # 1 nuclear membrane
    200,  # 2 nucleoli
    230,  # 3 fibrillar center
    200,  # 4 speckles
    235,  # 5 nuclear bodies
    170,  # 6 ER
    210,  # 7 Golgi
    200,  # 8 intermediate filaments
    190,  # 9 actin
    190,  # 10 microtubules
    230,  # 11 mitotic spindle
    255,  # 12 centrosome
    190,  # 13 plasma membrane
    190,  # 14 mitochondria
    240,  # 15 aggresome
    110,  # 16 cytosol
    215,  # 17 vesicles
    0,  # 18 negative
)

# ---------------------------------------------------------------------------------------
# label sets


def class_probabilities(floor: float = CLASS_FLOOR) -> np.ndarray:
    """Per-label draw weights of the 18 non-negative classes, with a frequency floor.

    The real per-class share of label slots is raised to ``floor / mean labels per
    field`` (then renormalised, a few rounds) so that every class is carried by roughly
    at least ``floor`` of the fields.

    Parameters
    ----------
    floor
        Minimum share of fields per class, 0 for the raw HPA 2021 frequencies.

    Returns
    -------
    numpy.ndarray
        Probabilities of classes 0..17 (float64, sums to 1).
    """
    counts = np.asarray(HPA2021_CLASS_COUNTS[:NEGATIVE], dtype=np.float64)
    p = counts / counts.sum()
    per_field = np.asarray(HPA2021_LABELS_PER_FIELD, dtype=np.float64)
    per_field[0] -= HPA2021_CLASS_COUNTS[NEGATIVE]  # negatives are single-label
    mean_k = float((np.arange(1, len(per_field) + 1) * per_field).sum() / per_field.sum())
    w_min = floor / mean_k
    for _ in range(5):
        p = np.maximum(p, w_min)
        p = p / p.sum()
    return p


def sample_label_sets(
    n: int, rng: np.random.Generator, floor: float = CLASS_FLOOR
) -> list[tuple[int, ...]]:
    """Draw ``n`` true label sets following the HPA 2021 label statistics.

    A field is Negative (18, alone: the real data never combines it) with probability
    ``max(34 / 21806, floor)``. Otherwise its number of labels follows the real
    distribution of 1..5 labels per field, and the classes are drawn without replacement
    with :func:`class_probabilities` (real frequencies, rare classes raised to
    ``floor``).

    Parameters
    ----------
    n
        Number of fields.
    rng
        Random generator.
    floor
        Minimum share of fields per class (see :data:`CLASS_FLOOR`).

    Returns
    -------
    list of tuple of int
        Sorted class ids of each field.
    """
    p_neg = max(HPA2021_CLASS_COUNTS[NEGATIVE] / HPA2021_N_FIELDS, floor)
    per_field = np.asarray(HPA2021_LABELS_PER_FIELD, dtype=np.float64)
    per_field[0] -= HPA2021_CLASS_COUNTS[NEGATIVE]
    k_prob = per_field / per_field.sum()
    p = class_probabilities(floor)
    negative = rng.random(n) < p_neg
    ks = rng.choice(np.arange(1, len(k_prob) + 1), size=n, p=k_prob)
    out: list[tuple[int, ...]] = []
    for is_neg, k in zip(negative, ks, strict=True):
        if is_neg:
            out.append((NEGATIVE,))
        else:
            picked = rng.choice(NEGATIVE, size=int(k), replace=False, p=p)
            out.append(tuple(sorted(int(c) for c in picked)))
    return out


def inject_label_noise(
    labels: Sequence[int], rng: np.random.Generator, kind: str | None = None
) -> tuple[tuple[int, ...], str]:
    """Corrupt one field's labels.

    Parameters
    ----------
    labels
        The true class ids.
    rng
        Random generator.
    kind
        ``missing``, ``extra`` or ``swap``; ``None`` draws one among those possible.
        ``missing`` needs two or more labels and ``extra`` a non-Negative field; an
        impossible request falls back to another kind.

    Returns
    -------
    given, kind
        The sorted, never empty, corrupted labels (always different from ``labels``) and
        the kind of noise actually injected.
    """
    true = sorted(set(int(c) for c in labels))
    possible = ["swap"]
    if len(true) >= 2:
        possible.insert(0, "missing")
    if NEGATIVE not in true and len(true) < NEGATIVE:
        possible.insert(-1, "extra")
    if kind not in possible:
        kind = str(rng.choice(possible))
    given = set(true)
    if kind == "missing":
        given.remove(int(rng.choice(true)))
    elif kind == "extra":
        partners = sorted({q for c in true for q in CONFUSIONS[c]} - given)
        if partners and rng.random() < 0.5:
            given.add(int(rng.choice(partners)))
        else:
            free = np.array([c for c in range(NEGATIVE) if c not in given])
            w = class_probabilities()[free]
            given.add(int(rng.choice(free, p=w / w.sum())))
    else:  # swap
        options = [(c, q) for c in true for q in CONFUSIONS[c] if q not in given]
        if options:
            c, q = options[int(rng.integers(len(options)))]
        else:  # every partner already present: any other non-negative class
            c = int(rng.choice(true))
            others = [q for q in range(NEGATIVE) if q not in given]
            q = int(rng.choice(others))
        given.remove(c)
        given.add(q)
    return tuple(sorted(given)), kind


# ---------------------------------------------------------------------------------------
# image faults (arrays in 8-bit units, float)


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
    blob = _blobs(shape, np.concatenate(ys), np.concatenate(xs), sigma, np.concatenate(amps))
    debris = np.clip((blob - 0.2) / 0.4, 0.0, 1.0) * rng.uniform(230, 300)
    everywhere = rng.random() < 0.5
    out = dict(channels)
    for k, v in channels.items():
        if k == "green" or everywhere:
            out[k] = np.maximum(v, debris * (1.0 if k == "green" else rng.uniform(0.5, 1.0)))
    return out


# ---------------------------------------------------------------------------------------
# drawing primitives


def _blobs(
    shape: tuple[int, ...], ys: np.ndarray, xs: np.ndarray, sigma: float, amp: np.ndarray
) -> np.ndarray:
    """Gaussian spots of peak ``amp`` (an isolated spot) at sub-pixel positions."""
    return _splat_blur(shape, ys, xs, amp * (2.0 * math.pi * _var(sigma)), sigma)


def _splat_blur(
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
_STEP = 0.8


def _walks(
    y0: np.ndarray,
    x0: np.ndarray,
    angle: np.ndarray,
    length: np.ndarray,
    curl: float,
    rng: np.random.Generator,
    bend: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample filaments as smooth random walks (steps of ``_STEP`` px).

    ``curl`` is the standard deviation of the turn per half pixel of length (radians);
    0 gives straight lines. ``bend`` adds a constant turn per step to each filament (arcs of radius
    ``step / bend``). Returns the flat ``ys, xs`` of the samples and the filament index
    of each.
    """
    m = len(y0)
    if m == 0:
        e = np.zeros(0)
        return e, e, np.zeros(0, dtype=np.intp)
    ns = int(math.ceil(float(np.max(length)) / _STEP)) + 1
    steps = np.arange(ns, dtype=np.float32) * np.float32(_STEP)
    valid = steps[None, :] <= length[:, None]
    if curl > 0 or bend is not None:
        turns = np.zeros((m, ns), dtype=np.float32)
        if curl > 0:
            sd = curl * math.sqrt(_STEP / 0.5)
            turns += rng.normal(0.0, sd, (m, ns)).astype(np.float32)
        if bend is not None:
            turns += bend[:, None].astype(np.float32)
        turns[:, 0] = 0.0
        ang = angle[:, None].astype(np.float32) + np.cumsum(turns, axis=1)
        dy = np.sin(ang) * np.float32(_STEP)
        dx = np.cos(ang) * np.float32(_STEP)
        dy[:, 0] = 0.0
        dx[:, 0] = 0.0
        ys = y0[:, None] + np.cumsum(dy, axis=1)
        xs = x0[:, None] + np.cumsum(dx, axis=1)
    else:  # straight lines: no running sums needed
        ys = y0[:, None] + np.sin(angle)[:, None] * steps[None, :]
        xs = x0[:, None] + np.cos(angle)[:, None] * steps[None, :]
    idx = np.broadcast_to(np.arange(m)[:, None], (m, ns))
    return ys[valid], xs[valid], idx[valid]


def _var(sigma: float) -> float:
    """Variance of a splatted, blurred point: the bilinear tent adds 1/6 px^2 per axis."""
    return sigma * sigma + 1.0 / 6.0


def _line_weight(sigma: float) -> float:
    """Weight per filament sample that gives a blurred line a peak of 1."""
    return _STEP * math.sqrt(2.0 * math.pi * _var(sigma))


# ---------------------------------------------------------------------------------------
# field geometry


@dataclass
class _Cell:
    cy: float
    cx: float
    rn: float  # nominal nucleus radius, px
    rc: float  # nominal cell radius, px
    nuc_a: float  # nucleus half axes, px
    nuc_b: float
    nuc_angle: float
    nuc_c3: complex  # third harmonic: irregular nuclear outline
    cell_c: tuple[complex, complex, complex]  # harmonics 1..3 of the cell outline
    mitotic: bool
    mtoc_angle: float  # direction of the centrosome from the nucleus centre
    nucleoli: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # y, x, amp

    def r_nuc(self, cos_t: np.ndarray, sin_t: np.ndarray) -> np.ndarray:
        ca, sa = math.cos(self.nuc_angle), math.sin(self.nuc_angle)
        u = cos_t * ca + sin_t * sa
        v = sin_t * ca - cos_t * sa
        r = self.nuc_a * self.nuc_b / np.sqrt((self.nuc_b * u) ** 2 + (self.nuc_a * v) ** 2)
        if self.nuc_c3:
            r = r * (1.0 + _harm(self.nuc_c3, 3, cos_t, sin_t))
        return r

    def r_cell(self, cos_t: np.ndarray, sin_t: np.ndarray) -> np.ndarray:
        h = np.zeros_like(cos_t)  # the same sum as sum(...) from 0, typed as an array
        for m, c in enumerate(self.cell_c):
            h = h + _harm(c, m + 1, cos_t, sin_t)
        return self.rc * (1.0 + h)

    def mtoc(self) -> tuple[float, float]:
        c, s = math.cos(self.mtoc_angle), math.sin(self.mtoc_angle)
        r = float(self.r_nuc(np.array(c), np.array(s))) + 0.2 * self.rn
        return self.cy + r * s, self.cx + r * c

    def poles(self) -> np.ndarray:
        """Spindle poles of a mitotic cell (2 x [y, x]), along the spindle axis."""
        ax = self.nuc_angle + math.pi / 2
        d = 1.0 * self.rn
        return np.array(
            [
                [self.cy + d * math.sin(ax), self.cx + d * math.cos(ax)],
                [self.cy - d * math.sin(ax), self.cx - d * math.cos(ax)],
            ]
        )


def _harm(c: complex, m: int, cos_t: np.ndarray, sin_t: np.ndarray) -> np.ndarray:
    """Re(c * exp(-i m theta)) = |c| cos(m theta - arg c), via cos/sin of theta."""
    if m == 1:
        cm, sm = cos_t, sin_t
    elif m == 2:
        cm, sm = cos_t * cos_t - sin_t * sin_t, 2 * sin_t * cos_t
    else:
        cm = cos_t * (4 * cos_t * cos_t - 3)
        sm = sin_t * (3 - 4 * sin_t * sin_t)
    return c.real * cm + c.imag * sm


@dataclass
class _Field:
    size: int
    cells: list[_Cell]
    label: np.ndarray  # int, 0 background, i + 1 = cell i
    nuc: np.ndarray  # bool
    cyto: np.ndarray  # bool
    u: np.ndarray  # 0 at the nuclear border .. 1 at the cell border (cytoplasm)
    rho_n: np.ndarray  # distance / nucleus radius of the own cell
    nuc_soft: np.ndarray
    cyto_soft: np.ndarray
    nucleoli: np.ndarray  # soft nucleolus mask
    edges: np.ndarray  # soft cell-outline map, peak ~1
    unit: float  # mean nucleus radius, px
    tex: np.ndarray  # smooth noise, std 1
    red: np.ndarray = field(default_factory=lambda: np.zeros(0))
    yellow: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    def sigma(self, rel: float, lo: float = 0.55) -> float:
        """A blur width relative to the nucleus radius, at least ``lo`` pixels."""
        return max(lo, rel * self.unit)

    def keep(self, ys: np.ndarray, xs: np.ndarray, cell: np.ndarray, where: str) -> np.ndarray:
        """Which points lie in their own cell (``cell``/``cyto``/``nuc`` part)."""
        yi = np.rint(ys).astype(np.intp)
        xi = np.rint(xs).astype(np.intp)
        ok = (yi >= 0) & (yi < self.size) & (xi >= 0) & (xi < self.size)
        yi = np.clip(yi, 0, self.size - 1)
        xi = np.clip(xi, 0, self.size - 1)
        ok &= self.label[yi, xi] == cell + 1
        if where == "cyto":
            ok &= ~self.nuc[yi, xi]
        elif where == "nuc":
            ok &= self.nuc[yi, xi]
        return ok

    def in_nucleus(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        yi = np.clip(np.rint(ys).astype(np.intp), 0, self.size - 1)
        xi = np.clip(np.rint(xs).astype(np.intp), 0, self.size - 1)
        return self.nuc[yi, xi]

    def points_in(
        self, counts: Sequence[int], region: str, rng: np.random.Generator, bias: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Random points in each cell's nucleus (``nuc``) or cytoplasm (``cyto``).

        ``counts[i]`` points for cell i, by polar sampling in the cell's outline; points
        cut off by a neighbour are dropped. ``bias`` > 1 packs cytoplasm points towards
        the nucleus.
        """
        ys, xs, cs = [], [], []
        for i, (c, k) in enumerate(zip(self.cells, counts, strict=True)):
            if k <= 0:
                continue
            t = rng.uniform(0, 2 * math.pi, k)
            ct, st = np.cos(t), np.sin(t)
            rn = c.r_nuc(ct, st)
            if region == "nuc":
                r = np.sqrt(rng.random(k)) * 0.85 * rn
            else:
                rc = c.r_cell(ct, st)
                r = rn + (0.08 + 0.84 * rng.random(k) ** bias) * (rc - rn)
            ys.append(c.cy + r * st)
            xs.append(c.cx + r * ct)
            cs.append(np.full(k, i))
        if not ys:
            e = np.zeros(0)
            return e, e, np.zeros(0, dtype=np.intp)
        y, x, cell = np.concatenate(ys), np.concatenate(xs), np.concatenate(cs)
        ok = self.keep(y, x, cell, region)
        return y[ok], x[ok], cell[ok]


def _cell_count_range(size: int) -> tuple[int, int]:
    if size < 48:
        return 1, 2
    if size < 96:
        return 2, 3
    if size < 160:  # few, large cells keep the patterns resolvable when downscaled to 64 px
        return 3, 4
    return 3, min(8, 2 + size // 64)


def _make_field(size: int, rng: np.random.Generator, n_mitotic: int) -> _Field:
    lo, hi = _cell_count_range(size)
    k = int(rng.integers(lo, hi + 1))
    rc_mean = math.sqrt(0.66 * size * size / (k * math.pi))
    # Greedy placement of nucleus centres with a minimum spacing.
    cand = rng.uniform(0.12 * size, 0.88 * size, (64, 2))
    dist = np.hypot(*(cand[:, None, :] - cand[None, :, :]).transpose(2, 0, 1))
    chosen: list[int] = []
    for j in range(len(cand)):
        if all(dist[j, q] >= 1.45 * rc_mean for q in chosen):
            chosen.append(j)
            if len(chosen) == k:
                break
    centres = cand[chosen]
    k = len(centres)
    mitotic = np.zeros(k, dtype=bool)
    mitotic[rng.permutation(k)[: min(n_mitotic, k)]] = True

    cells: list[_Cell] = []
    for (cy, cx), mit in zip(centres, mitotic, strict=True):
        rc = rc_mean * rng.uniform(0.85, 1.12) * (0.85 if mit else 1.0)
        rn = rc * rng.uniform(0.40, 0.48)
        amp = (0.03, 0.015, 0.01) if mit else (0.14, 0.10, 0.05)
        cell_c = tuple(complex(*(a * np.array(_unit(rng)))) for a in amp)
        if mit:  # metaphase plate: a bar across the spindle axis
            nuc_a, nuc_b, c3 = 0.85 * rn, 0.26 * rn, 0j
        else:
            e = rng.uniform(0.0, 0.18)
            nuc_a, nuc_b = rn * (1 + e), rn * (1 - e)
            c3 = complex(*(0.04 * np.array(_unit(rng))))
        cells.append(
            _Cell(
                cy=float(cy),
                cx=float(cx),
                rn=rn,
                rc=rc,
                nuc_a=nuc_a,
                nuc_b=nuc_b,
                nuc_angle=float(rng.uniform(0, math.pi)),
                nuc_c3=c3,
                cell_c=cell_c,  # type: ignore[arg-type]
                mitotic=bool(mit),
                mtoc_angle=float(rng.uniform(0, 2 * math.pi)),
            )
        )

    # Each pixel belongs to the cell with the smallest normalised radius
    # rho = distance / outline radius (a weighted Voronoi split of touching cells).
    # Cells are evaluated in their bounding boxes only; rho2 (the runner-up) locates
    # the borders between touching cells.
    far = np.float32(1e6)
    rho1 = np.full((size, size), 1e3, dtype=np.float32)
    rho2 = np.full((size, size), 1e3, dtype=np.float32)
    own = np.zeros((size, size), dtype=np.int32)
    d_own = np.full((size, size), far, dtype=np.float32)
    rn_own = np.ones((size, size), dtype=np.float32)
    rc_own = np.full((size, size), 2.0, dtype=np.float32)
    grid = np.arange(size, dtype=np.float32)
    for i, c in enumerate(cells):
        reach = c.rc * (1.0 + sum(abs(z) for z in c.cell_c)) + 4.0
        y0, y1 = max(0, int(c.cy - reach)), min(size, int(c.cy + reach) + 2)
        x0, x1 = max(0, int(c.cx - reach)), min(size, int(c.cx + reach) + 2)
        dy = grid[y0:y1, None] - np.float32(c.cy)
        dx = grid[None, x0:x1] - np.float32(c.cx)
        d = np.maximum(np.hypot(dy, dx), np.float32(1e-3))
        cos_t, sin_t = dx / d, dy / d
        r_edge = c.r_cell(cos_t, sin_t).astype(np.float32)
        rho = d / r_edge
        box = (slice(y0, y1), slice(x0, x1))
        b1, b2 = rho1[box], rho2[box]
        better = rho < b1
        b2[...] = np.where(better, b1, np.minimum(b2, rho))
        b1[better] = rho[better]
        own[box][better] = i
        d_own[box][better] = d[better]
        rc_own[box][better] = r_edge[better]
        rn_own[box][better] = c.r_nuc(cos_t[better], sin_t[better])
    inside = rho1 < 1.0
    label = np.where(inside, own + 1, 0).astype(np.int32)
    rho_n = d_own / rn_own
    nuc = inside & (rho_n < 1.0)
    cyto = inside & ~nuc
    u = np.clip((d_own - rn_own) / np.maximum(rc_own - rn_own, 1e-3), 0.0, 1.0)
    unit = float(np.mean([c.rn for c in cells]))

    # Soft masks: linear ramps ~1 px wide across the outlines (anti-aliased, no filtering).
    ramp = max(1.0, 0.06 * unit)
    cell_soft = np.clip(0.5 + (1.0 - rho1) * rc_own / ramp, 0.0, 1.0)
    nuc_soft = np.clip(0.5 + (rn_own - d_own) / ramp, 0.0, 1.0) * (rho1 < 1.05)
    cyto_soft = np.clip(cell_soft - nuc_soft, 0.0, 1.0)
    # Cell outlines: distance to the own outline, or to the border with the runner-up cell.
    dist = np.abs(1.0 - rho1) * rc_own
    dist = np.where(rho2 < 1.0, np.minimum(dist, 0.5 * (rho2 - rho1) * rc_own), dist)
    w = max(0.9, 0.08 * unit)
    edges = np.exp(-((dist / w) ** 2))

    f = _Field(
        size=size,
        cells=cells,
        label=label,
        nuc=nuc,
        cyto=cyto,
        u=u,
        rho_n=rho_n,
        nuc_soft=nuc_soft,
        cyto_soft=cyto_soft,
        nucleoli=np.zeros_like(nuc_soft),
        edges=edges,
        unit=unit,
        tex=ndimage.gaussian_filter(
            rng.standard_normal((size, size), dtype=np.float32), max(1.0, 0.3 * unit)
        ),
    )
    f.tex /= max(float(f.tex.std()), 1e-6)
    # Nucleoli: 1-3 per interphase nucleus; flat-topped soft discs.
    ys, xs, amps = [], [], []
    for c in cells:
        if c.mitotic:
            continue
        n = int(rng.integers(1, 4))
        t = rng.uniform(0, 2 * math.pi, n)
        r = np.sqrt(rng.random(n)) * 0.5 * c.rn
        a = rng.uniform(0.9, 2.2, n)
        y, x = c.cy + r * np.sin(t), c.cx + r * np.cos(t)
        c.nucleoli = np.stack([y, x, a], axis=1)
        ys.append(y)
        xs.append(x)
        amps.append(a)
    if ys:
        y, x, a = np.concatenate(ys), np.concatenate(xs), np.concatenate(amps)
        b = _blobs(f.shape, y, x, 0.15 * unit + 0.3, a)
        f.nucleoli = np.clip((b - 0.3) / 0.3, 0.0, 1.0) * nuc_soft
    return f


def _unit(rng: np.random.Generator) -> tuple[float, float]:
    t = rng.uniform(0, 2 * math.pi)
    return math.cos(t), math.sin(t)


def _texture(f: _Field, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise (mean 0, std ~1): the field's texture, randomly shifted and flipped."""
    sy, sx = (int(v) for v in rng.integers(0, f.size, 2))
    return np.roll(f.tex, (sy, sx), axis=(0, 1)) * (1.0 if rng.random() < 0.5 else -1.0)


# ---------------------------------------------------------------------------------------
# reference stains


def _fibres(
    f: _Field,
    rng: np.random.Generator,
    sig: float,
    start: tuple[np.ndarray, np.ndarray],
    angle: np.ndarray,
    length: np.ndarray,
    cell: np.ndarray,
    curl: float,
    amp: np.ndarray,
    over_nucleus: float,
    bend: np.ndarray | None = None,
) -> np.ndarray:
    """Render filaments (one batch for all cells), clipped to their own cell.

    Samples over the nucleus are weighted by ``over_nucleus`` (filaments above or below
    the nucleus look fainter); a line of amplitude 1 peaks at ~1.
    """
    y, x, idx = _walks(start[0], start[1], angle, length, curl, rng, bend)
    ok = f.keep(y, x, cell[idx], "cell")
    y, x, idx = y[ok], x[ok], idx[ok]
    w = np.where(f.in_nucleus(y, x), over_nucleus, 1.0) * amp[idx] * _line_weight(sig)
    return _splat_blur(f.shape, y, x, w, sig)


def _microtubules(f: _Field, rng: np.random.Generator) -> np.ndarray:
    """Filaments radiating from the centrosome to the cell border; spindles in mitosis."""
    sig = f.sigma(0.06)
    y0, x0, ln, cell = [], [], [], []
    for i, c in enumerate(f.cells):
        if c.mitotic:
            continue
        m = int(20 + 14 * c.rc / 25)
        my, mx = c.mtoc()
        y0 += [my] * m
        x0 += [mx] * m
        ln += [2.2 * c.rc] * m
        cell += [i] * m
    m = len(y0)
    fil = _fibres(
        f,
        rng,
        sig,
        (np.array(y0), np.array(x0)),
        rng.uniform(0, 2 * math.pi, m),
        np.array(ln),
        np.array(cell, dtype=np.intp),
        0.03,
        rng.uniform(0.35, 0.9, m),
        0.3,
    )
    spindles = [_spindle_points(f, i, rng) for i, c in enumerate(f.cells) if c.mitotic]
    if spindles:
        y, x, w = (np.concatenate(v) for v in zip(*spindles, strict=True))
        fil = fil + _splat_blur(f.shape, y, x, w * _line_weight(sig), sig)
    # Filaments crowd at the centrosome; a soft knee keeps the aster from dominating.
    fil = fil / (1.0 + 0.35 * fil)
    return np.clip(fil / 0.75 + 0.2 * f.cyto_soft, 0.0, 1.3)


def _spindle_points(
    f: _Field, i: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bipolar spindle of mitotic cell ``i``: fibres fanning from both poles to the
    metaphase plate, plus short astral rays. Returns sample ``ys, xs`` and weights."""
    c = f.cells[i]
    poles = c.poles()
    plate = np.array([math.sin(c.nuc_angle), math.cos(c.nuc_angle)])
    m, a = 12, 6  # fibres to the plate and astral rays, per pole
    tgt = np.array([c.cy, c.cx]) + np.linspace(-0.75, 0.75, m)[:, None] * c.nuc_a * plate
    starts, ang, ln, amp = [], [], [], []
    for p in poles:
        vec = tgt + rng.normal(0, 0.05 * c.rn, tgt.shape) - p
        starts.append(np.repeat(p[None, :], m + a, axis=0))
        ang.append(
            np.concatenate([np.arctan2(vec[:, 0], vec[:, 1]), rng.uniform(0, 2 * math.pi, a)])
        )
        ln.append(np.concatenate([np.hypot(vec[:, 0], vec[:, 1]), np.full(a, 0.6 * c.rn)]))
        amp.append(np.concatenate([np.full(m, 0.8), np.full(a, 0.5)]))
    st = np.concatenate(starts)
    y, x, idx = _walks(st[:, 0], st[:, 1], np.concatenate(ang), np.concatenate(ln), 0.01, rng)
    ok = f.keep(y, x, np.full(len(y), i), "cell")
    return y[ok], x[ok], np.concatenate(amp)[idx[ok]]


def _er(f: _Field, rng: np.random.Generator) -> np.ndarray:
    """Reticular network (zero crossings of band-passed noise), densest around the nucleus."""
    s1 = f.sigma(0.07, lo=0.7)
    noise = rng.standard_normal(f.shape).astype(np.float32)
    a = ndimage.gaussian_filter(noise, s1)
    bp = a - ndimage.gaussian_filter(a, 2.0 * s1)
    net = np.exp(-((bp / (0.45 * float(bp.std()) + 1e-6)) ** 2))
    weight = 0.3 + 0.7 * np.exp(-f.u / 0.35)
    envelope = np.exp(-(((f.rho_n - 1.0) * f.unit / f.sigma(0.08, lo=0.8)) ** 2))
    out = f.cyto_soft * net * weight + 0.3 * envelope * (f.label > 0)
    return np.clip(out, 0.0, 1.0)


def _nuclei(f: _Field, rng: np.random.Generator) -> np.ndarray:
    tex = _texture(f, rng)
    mit = np.zeros(len(f.cells) + 1, dtype=np.float32)
    mit[1:] = [1.35 if c.mitotic else 1.0 for c in f.cells]
    out = f.nuc_soft * (0.78 + 0.12 * tex) * (1.0 - 0.45 * f.nucleoli)
    return out * mit[f.label]


# ---------------------------------------------------------------------------------------
# green patterns, one per HPA 2021 class; each returns a map with peak ~1

_Gen = Callable[[_Field, np.random.Generator], np.ndarray]


def _g_nucleoplasm(f: _Field, rng: np.random.Generator) -> np.ndarray:
    return f.nuc_soft * (0.85 + 0.12 * _texture(f, rng)) * (1.0 - 0.8 * f.nucleoli)


def _g_nuclear_membrane(f: _Field, rng: np.random.Generator) -> np.ndarray:
    w = f.sigma(0.1, lo=0.9)
    ring = np.exp(-(((f.rho_n - 1.0) * f.unit / w) ** 2)) * (f.label > 0)
    inter = np.zeros(len(f.cells) + 1, dtype=np.float32)
    inter[1:] = [0.0 if c.mitotic else 1.0 for c in f.cells]
    return ring * inter[f.label] * (0.85 + 0.1 * _texture(f, rng))


def _g_nucleoli(f: _Field, rng: np.random.Generator) -> np.ndarray:
    return f.nucleoli * (0.9 + 0.1 * _texture(f, rng))


def _g_fibrillar_center(f: _Field, rng: np.random.Generator) -> np.ndarray:
    sig = f.sigma(0.06)
    ys, xs = [], []
    for c in f.cells:
        for y, x, a in c.nucleoli:
            k = int(rng.integers(3, 6))
            r = 0.18 * c.rn * math.sqrt(a) * np.sqrt(rng.random(k))
            t = rng.uniform(0, 2 * math.pi, k)
            ys.append(y + r * np.sin(t))
            xs.append(x + r * np.cos(t))
    if not ys:
        return np.zeros(f.shape, dtype=np.float32)
    y, x = np.concatenate(ys), np.concatenate(xs)
    dots = _blobs(f.shape, y, x, sig, rng.uniform(0.8, 1.0, len(y)))
    # Dense fibrillar component: a faint rim of the nucleolus around the dots.
    return np.minimum(dots, 1.2) + 0.2 * f.nucleoli


def _g_speckles(f: _Field, rng: np.random.Generator) -> np.ndarray:
    sig = f.sigma(0.09)
    counts = [0 if c.mitotic else int(rng.integers(14, 26)) for c in f.cells]
    y, x, _ = f.points_in(counts, "nuc", rng)
    dots = _blobs(f.shape, y, x, sig, rng.uniform(0.5, 1.0, len(y)))
    return (np.minimum(dots, 1.1) + 0.22 * f.nuc_soft) * (1.0 - 0.8 * f.nucleoli)


def _g_nuclear_bodies(f: _Field, rng: np.random.Generator) -> np.ndarray:
    """A few round, well separated bodies (fewer and larger than speckles, no haze)."""
    sig = f.sigma(0.13, lo=0.7)
    counts = [0 if c.mitotic else int(rng.integers(3, 7)) for c in f.cells]
    y, x, _ = f.points_in(counts, "nuc", rng)
    return np.minimum(_blobs(f.shape, y, x, sig, rng.uniform(0.85, 1.0, len(y))), 1.2)


def _g_er(f: _Field, rng: np.random.Generator) -> np.ndarray:
    return f.yellow * (0.9 + 0.1 * _texture(f, rng))


def _g_golgi(f: _Field, rng: np.random.Generator) -> np.ndarray:
    """A crescent of fragments hugging the nucleus on the centrosome side."""
    sig = f.sigma(0.12)
    ys, xs, cs = [], [], []
    for i, c in enumerate(f.cells):
        if c.mitotic:
            continue
        k = int(rng.integers(12, 19))
        t = c.mtoc_angle + rng.uniform(-1.0, 1.0, k)
        ct, st = np.cos(t), np.sin(t)
        r = c.r_nuc(ct, st) + rng.uniform(0.12, 0.32, k) * c.rn
        ys.append(c.cy + r * st)
        xs.append(c.cx + r * ct)
        cs.append(np.full(k, i))
    if not ys:
        return np.zeros(f.shape, dtype=np.float32)
    y, x, cell = np.concatenate(ys), np.concatenate(xs), np.concatenate(cs)
    ok = f.keep(y, x, cell, "cyto")
    b = _blobs(f.shape, y[ok], x[ok], sig, rng.uniform(0.45, 0.85, int(ok.sum())))
    return np.minimum(b, 1.1)


def _g_intermediate_filaments(f: _Field, rng: np.random.Generator) -> np.ndarray:
    """Long wavy fibres curving around the nucleus (a perinuclear cage), not radial."""
    counts = rng.integers(5, 9, len(f.cells))
    cell = np.repeat(np.arange(len(f.cells)), counts)
    m = len(cell)
    t = rng.uniform(0, 2 * math.pi, m)
    ct, st = np.cos(t), np.sin(t)
    cy, cx, rn, rc = (np.zeros(m) for _ in range(4))
    for i, c in enumerate(f.cells):
        s = cell == i
        cy[s], cx[s] = c.cy, c.cx
        rn[s], rc[s] = c.r_nuc(ct[s], st[s]), c.r_cell(ct[s], st[s])
    r = rn + rng.uniform(0.1, 0.7, m) * (rc - rn)
    sign = np.where(rng.random(m) < 0.5, 1.0, -1.0)
    ang = t + sign * math.pi / 2 + rng.normal(0, 0.2, m)
    length = rng.uniform(1.5, 3.0, m) * rc
    start = (cy + r * st, cx + r * ct)
    # Turning at ~1/r keeps a fibre on a loose arc around the nucleus.
    bend = sign * _STEP / (r * rng.uniform(1.0, 1.6, m))
    fil = _fibres(
        f,
        rng,
        f.sigma(0.08),
        start,
        ang,
        length,
        cell,
        0.03,
        rng.uniform(0.7, 1.0, m),
        0.4,
        bend,
    )
    return np.minimum(fil, 1.3)


def _g_actin(f: _Field, rng: np.random.Generator) -> np.ndarray:
    """Parallel stress fibres across each cell plus a cortical rim at the cell border."""
    y0, x0, ang, ln, cell = [], [], [], [], []
    for i, c in enumerate(f.cells):
        phi = rng.uniform(0, math.pi)
        spacing = max(4.0, 0.55 * c.rn)
        offs = np.arange(-1.1 * c.rc, 1.1 * c.rc, spacing) + rng.uniform(0, spacing)
        half = 1.3 * c.rc
        # Start each fibre outside the cell on one side; it runs across along phi.
        y0.append(c.cy + offs * math.cos(phi) - half * math.sin(phi))
        x0.append(c.cx - offs * math.sin(phi) - half * math.cos(phi))
        ang.append(np.full(len(offs), phi))
        ln.append(np.full(len(offs), 2 * half))
        cell.append(np.full(len(offs), i))
    m = sum(len(v) for v in cell)
    fib = _fibres(
        f,
        rng,
        f.sigma(0.07),
        (np.concatenate(y0), np.concatenate(x0)),
        np.concatenate(ang),
        np.concatenate(ln),
        np.concatenate(cell),
        0.004,
        rng.uniform(0.4, 1.0, m),
        0.5,
    )
    return np.minimum(fib + 0.65 * f.edges * (f.label > 0), 1.3)


def _g_microtubules(f: _Field, rng: np.random.Generator) -> np.ndarray:
    return f.red * (0.9 + 0.1 * _texture(f, rng))


def _g_mitotic_spindle(f: _Field, rng: np.random.Generator) -> np.ndarray:
    sig = f.sigma(0.06)
    ys, xs, ws = [], [], []
    for i, c in enumerate(f.cells):
        if not c.mitotic:
            continue
        y, x, w = _spindle_points(f, i, rng)
        ys.append(y)
        xs.append(x)
        ws.append(w * _line_weight(sig))
        p = c.poles()  # bright poles
        ys.append(p[:, 0])
        xs.append(p[:, 1])
        ws.append(np.full(2, 2.0 * math.pi * _var(sig)))
    if not ys:
        return np.zeros(f.shape, dtype=np.float32)
    sp = _splat_blur(f.shape, np.concatenate(ys), np.concatenate(xs), np.concatenate(ws), sig)
    return np.minimum(sp / 1.2, 1.3)


def _g_centrosome(f: _Field, rng: np.random.Generator) -> np.ndarray:
    """One or two bright dots beside the nucleus (at both spindle poles in mitosis)."""
    sig = f.sigma(0.13, lo=0.7)
    ys: list[float] = []
    xs: list[float] = []
    for c in f.cells:
        if c.mitotic:
            p = c.poles()
            ys.extend(p[:, 0])
            xs.extend(p[:, 1])
            continue
        my, mx = c.mtoc()
        ys.append(my)
        xs.append(mx)
        if rng.random() < 0.6:  # duplicated centrosome
            t = rng.uniform(0, 2 * math.pi)
            ys.append(my + 0.22 * c.rn * math.sin(t))
            xs.append(mx + 0.22 * c.rn * math.cos(t))
    y, x = np.array(ys), np.array(xs)
    # Compact and saturating: unlike the wider, fragmented Golgi crescent at the same spot.
    dots = _blobs(f.shape, y, x, sig, rng.uniform(1.1, 1.3, len(y)))
    return np.minimum(dots, 1.2)


def _g_plasma_membrane(f: _Field, rng: np.random.Generator) -> np.ndarray:
    return f.edges * (0.85 + 0.12 * _texture(f, rng)) + 0.05 * f.cyto_soft


def _g_mitochondria(f: _Field, rng: np.random.Generator) -> np.ndarray:
    """Short tubules scattered through the cytoplasm, denser near the nucleus."""
    sig = f.sigma(0.065)
    counts = [int(rng.integers(22, 36) * (c.rc / 25.0) ** 2) + 6 for c in f.cells]
    y0, x0, cell = f.points_in(counts, "cyto", rng, bias=1.6)
    m = len(y0)
    y, x, idx = _walks(
        y0,
        x0,
        rng.uniform(0, 2 * math.pi, m),
        rng.uniform(0.4, 0.7, m) * f.unit + 1.5,
        0.12,
        rng,
    )
    ok = f.keep(y, x, cell[idx], "cyto")
    w = rng.uniform(0.5, 1.0, m)[idx[ok]] * _line_weight(sig)
    return np.minimum(_splat_blur(f.shape, y[ok], x[ok], w, sig), 1.3)


def _g_aggresome(f: _Field, rng: np.random.Generator) -> np.ndarray:
    """One large, bright, round perinuclear inclusion in most cells (any side)."""
    has = rng.random(len(f.cells)) < 0.75
    has[int(rng.integers(len(f.cells)))] = True
    ys, xs, amps = [], [], []
    for c, h in zip(f.cells, has, strict=True):
        if not h:
            continue
        t = rng.uniform(0, 2 * math.pi)
        r = float(c.r_nuc(np.array(math.cos(t)), np.array(math.sin(t)))) + 0.32 * c.rn
        ys.append(c.cy + r * math.sin(t))
        xs.append(c.cx + r * math.cos(t))
        amps.append(rng.uniform(1.6, 2.4))
    b = _blobs(f.shape, np.array(ys), np.array(xs), 0.27 * f.unit + 0.3, np.array(amps))
    return np.clip(b / 1.1, 0.0, 1.0) + 0.06 * f.cyto_soft


def _g_cytosol(f: _Field, rng: np.random.Generator) -> np.ndarray:
    return f.cyto_soft * (0.85 + 0.15 * _texture(f, rng)) + 0.1 * f.nuc_soft


def _g_vesicles(f: _Field, rng: np.random.Generator) -> np.ndarray:
    sig = f.sigma(0.13, lo=0.6)
    counts = [int(rng.integers(18, 34) * (c.rc / 25.0) ** 2) + 5 for c in f.cells]
    y, x, _ = f.points_in(counts, "cyto", rng)
    return np.minimum(_blobs(f.shape, y, x, sig, rng.uniform(0.45, 1.0, len(y))), 1.2)


def _g_negative(f: _Field, rng: np.random.Generator) -> np.ndarray:
    return np.zeros(f.shape, dtype=np.float32)


_GREEN: tuple[_Gen, ...] = (
    _g_nucleoplasm,
    _g_nuclear_membrane,
    _g_nucleoli,
    _g_fibrillar_center,
    _g_speckles,
    _g_nuclear_bodies,
    _g_er,
    _g_golgi,
    _g_intermediate_filaments,
    _g_actin,
    _g_microtubules,
    _g_mitotic_spindle,
    _g_centrosome,
    _g_plasma_membrane,
    _g_mitochondria,
    _g_aggresome,
    _g_cytosol,
    _g_vesicles,
    _g_negative,
)


# ---------------------------------------------------------------------------------------
# one field


# Half the peak of a class pattern (patterns peak at ~1): a cell shows the class when
# enough of its pixels reach it. Faint hazes some patterns add (speckles 0.22 over the
# whole nucleus, aggresome 0.06 over the cytoplasm) stay below it.
_SHOWN_LEVEL: float = 0.5

# Tags that keep the cell-level streams apart from the field streams ``[seed, i]``
# (SeedSequence pads with zeros, so a tag must be non-zero to make a distinct stream).
_PARTIAL_FIELD_TAG = 0x9A27
_PARTIAL_PICK_TAG = 0x9A28
_DUPLICATE_TAG = 0x9A29


@dataclass(frozen=True)
class FieldCells:
    """The true cells of a rendered field and which of them show each class.

    Attributes
    ----------
    mask
        int32 label image: 0 background, ``j`` = cell ``j`` (1-based), every cell of
        the field included, also those cut by the field border.
    shown
        True class id -> bool array over the cells (index ``j - 1`` for mask value
        ``j``): whether the cell visibly shows the class.
    """

    mask: np.ndarray
    shown: dict[int, np.ndarray]

    @property
    def n_cells(self) -> int:
        """Number of cells in the field (the highest mask value)."""
        return int(self.mask.max())

    def counts(self, classes: Sequence[int]) -> dict[int, tuple[int, int]]:
        """``class -> (cells showing it, cells in the field)`` for ``classes``.

        A class the field does not carry is shown by 0 cells; Negative (18) is shown by
        the cells that show no class.
        """
        n = self.n_cells
        out: dict[int, tuple[int, int]] = {}
        for c in sorted(set(int(k) for k in classes)):
            if c == NEGATIVE:
                some = np.zeros(n, dtype=bool)
                for k, s in self.shown.items():
                    if k != NEGATIVE:
                        some |= s
                out[c] = (int((~some).sum()), n)
            elif c in self.shown:
                out[c] = (int(self.shown[c].sum()), n)
            else:
                out[c] = (0, n)
        return out


def _shown_cells(pattern: np.ndarray, label: np.ndarray, n_cells: int, unit: float) -> np.ndarray:
    """Which cells show a class pattern (bool per cell), see :data:`_SHOWN_LEVEL`."""
    hits = np.bincount(label[pattern >= _SHOWN_LEVEL], minlength=n_cells + 1)[1:]
    # Enough pixels that a stray edge of a neighbour's structure does not count; scales
    # with the cell size like the patterns do (a centrosome dot covers ~0.3 r^2).
    return hits >= max(3.0, 0.01 * unit * unit)


def _partial_subset(shown: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cells that keep a class in a partial field: 1..m-1 of the m cells showing it.

    With fewer than two such cells the class is left as it is (already shown by at most
    one cell); otherwise every other cell loses it.
    """
    idx = np.flatnonzero(shown)
    if len(idx) < 2:
        return np.ones(len(shown), dtype=bool)
    k = int(rng.integers(1, len(idx)))
    keep = np.zeros(len(shown), dtype=bool)
    keep[rng.choice(idx, size=k, replace=False)] = True
    return keep


def _nearest_cell(label: np.ndarray) -> np.ndarray:
    """The label image with every background pixel given its nearest cell's value."""
    if not (label == 0).any():
        return label
    iy, ix = ndimage.distance_transform_edt(label == 0, return_distances=False, return_indices=True)
    return label[iy, ix]


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
    f = _make_field(size, rng, n_mit)
    f.red = _microtubules(f, rng)
    f.yellow = _er(f, rng)
    blue = _nuclei(f, rng)

    n_cells = len(f.cells)
    shown: dict[int, np.ndarray] = {}
    nearest: np.ndarray | None = None  # per pixel, the cell it belongs or is closest to
    green = np.zeros(f.shape, dtype=np.float32)
    if labels != [NEGATIVE]:
        field_gain = math.exp(rng.uniform(math.log(0.6), math.log(1.15)))
        for c in labels:
            # Same draws in the same order with or without the cell-level bookkeeping.
            pattern = _GREEN[c](f, rng)
            if cells:
                s = _shown_cells(pattern, f.label, n_cells, f.unit)
                if partial_rng is not None:
                    keep = _partial_subset(s, partial_rng)
                    if not keep.all():
                        if nearest is None:
                            nearest = _nearest_cell(f.label)
                        # Background takes its nearest cell's fate, so no halo of a
                        # removed pattern is left around its cell.
                        pattern = pattern * np.concatenate([[False], keep])[nearest]
                        s = s & keep
                shown[c] = s
            green += pattern * (_CLASS_PEAK[c] * rng.uniform(0.8, 1.2))
        cell_gain = np.ones(n_cells + 1, dtype=np.float32)
        cell_gain[1:] = rng.uniform(0.7, 1.15, n_cells)
        green *= field_gain * cell_gain[f.label]

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


# ---------------------------------------------------------------------------------------
# the cells column of truth.csv


def format_cells_column(counts: dict[int, tuple[int, int]]) -> str:
    """Write per-class cell counts as ``class:shown/total`` joined by ``;`` (ids ascending).

    Parameters
    ----------
    counts
        ``class id -> (cells showing it, cells in the field)``.

    Returns
    -------
    str
        E.g. ``0:3/8;5:0/8;16:8/8``.
    """
    return ";".join(f"{c}:{k}/{n}" for c, (k, n) in sorted(counts.items()))


def parse_cells_column(text: str) -> dict[int, tuple[int, int]]:
    """Read a ``cells`` value of ``truth.csv`` (see the module docstring).

    Parameters
    ----------
    text
        E.g. ``0:3/8;5:0/8;16:8/8``; surrounding spaces are ignored, an empty string
        gives an empty dict.

    Returns
    -------
    dict
        ``class id -> (cells showing it, cells in the field)``.

    Raises
    ------
    ValueError
        A malformed entry, a repeated class, or counts outside ``0 <= shown <= total``,
        ``total >= 1``.
    """
    out: dict[int, tuple[int, int]] = {}
    text = str(text).strip()
    if not text:
        return out
    for part in text.split(";"):
        item = part.strip()
        try:
            cls, frac = item.split(":")
            k, n = frac.split("/")
            c, k_i, n_i = int(cls), int(k), int(n)
        except ValueError:
            raise ValueError(
                f"bad cells entry {item!r}; expected class:shown/total like '0:3/8'"
            ) from None
        if c < 0 or n_i < 1 or not 0 <= k_i <= n_i:
            raise ValueError(f"bad cells entry {item!r}; needs 0 <= shown <= total, total >= 1")
        if c in out:
            raise ValueError(f"class {c} appears twice in cells {text!r}")
        out[c] = (k_i, n_i)
    return out


# ---------------------------------------------------------------------------------------
# dataset


#: Largest field side and field count ``synthesize`` accepts: checked before anything
#: is written (a 100,000 px field would need 37 GiB per float32 channel).
MAX_SIZE = 4096
MAX_FIELDS = 1_000_000


def _check_args(
    out_dir: Path,
    n: int,
    size: int,
    noise_rate: float,
    fault_rate: float,
    seed: int,
    partial_cells: float = 0.0,
    write_masks: bool = False,
) -> None:
    values = {
        "n": n,
        "size": size,
        "seed": seed,
        "noise_rate": noise_rate,
        "fault_rate": fault_rate,
        "partial_cells": partial_cells,
        "write_masks": write_masks,
    }
    rate: list[Constraint] = [Interval(Real, 0, 1, closed="both")]
    constraints: dict[str, list[Constraint]] = {
        "n": [Interval(Integral, 1, MAX_FIELDS, text=f"from 1 to {MAX_FIELDS:,} fields")],
        "size": [Interval(Integral, 32, MAX_SIZE, text=f"from 32 to {MAX_SIZE} pixels")],
        "seed": [Interval(Integral, 0, None, closed="left", text="a non-negative integer")],
        "noise_rate": rate,
        "fault_rate": rate,
        "partial_cells": rate,
        "write_masks": [InstanceOf((bool, np.bool_), "true or false")],
    }
    validate_params(values, constraints, owner="synth")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise SettingsError(f"synth: {out_dir} exists and is not a directory")
        if any(out_dir.iterdir()):
            raise SettingsError(
                f"synth: {out_dir} exists and is not empty; choose a new or empty directory"
            )


def _fmt(labels: Sequence[int]) -> str:
    return "|".join(str(c) for c in labels)


def synthesize(
    out_dir: str | Path,
    n: int = 400,
    size: int = 128,
    noise_rate: float = 0.2,
    fault_rate: float = 0.05,
    seed: int = 0,
    progress: bool = False,
    *,
    partial_cells: float = 0.0,
    write_masks: bool = False,
    duplicates: int = 0,
) -> pd.DataFrame:
    """Write a synthetic HPA-2021-layout dataset with known label noise and image faults.

    Writes ``out_dir/train/{ID}_{red,green,blue,yellow}.png`` (8-bit grayscale,
    ``size`` x ``size``), ``out_dir/truth.csv`` (``ID,true_label,given_label,noise``)
    and, last, ``out_dir/train.csv`` (``ID,Label`` with the GIVEN labels), so an
    interrupted run leaves no loadable dataset behind.

    True label sets follow the HPA 2021 class frequencies and labels-per-field counts,
    with every class raised to at least :data:`CLASS_FLOOR` (5 %) of the fields and
    Negative never combined with other classes (see :func:`sample_label_sets`).
    Exactly ``round(noise_rate * n)`` fields get label noise (``missing``: one true
    label dropped, only with two or more labels; ``extra``: one false label added;
    ``swap``: one label replaced by a plausible confusion from :data:`CONFUSIONS`) and,
    drawn independently, exactly ``round(fault_rate * n)`` fields get an image fault
    (``dim``, ``saturated``, ``blur``, ``artifact``; Negative fields only ``blur`` or
    ``artifact``, the others would not show). A field with both has ``noise`` like
    ``swap;blur``.

    Cell-level truth (see the module docstring for the details): ``partial_cells``
    makes exactly ``round(partial_cells * m)`` of the ``m`` non-Negative fields express
    each true class in only some of their cells, and with ``partial_cells > 0`` or
    ``write_masks`` ``truth.csv`` gains a ``cells`` column (``0:3/8;5:0/8``: for each
    true or given class, the cells showing it out of the field's cells; read it with
    :func:`parse_cells_column`). ``write_masks`` writes the true cell label images as
    ``out_dir/masks/{ID}_predictedmask.png``. With the defaults the output is
    byte-identical to what it was before these options existed.

    Parameters
    ----------
    out_dir
        Directory to create; it must not exist or be empty.
    n
        Number of fields (>= 1).
    size
        Field side in pixels (>= 32). Cells per field: 1-2 below 48 px, 2-3 below 96 px,
        3-4 up to 159 px (large cells, so the patterns survive downscaling to 64 px),
        then up to 8 (at 384 px and more).
    noise_rate
        Fraction of fields with label noise, in [0, 1].
    fault_rate
        Fraction of fields with an image fault, in [0, 1].
    seed
        Random seed (>= 0); the same arguments give byte-identical files.
    progress
        Show a progress bar on stderr.
    partial_cells
        Fraction of the non-Negative fields in which each true class is shown by only
        some of the cells that would show it (1..m-1 of m), in [0, 1]. Negative fields
        have no pattern to split; a class shown by one cell at most (a lone mitotic
        spindle, or any class in a one-cell field) stays as it is.
    write_masks
        Also write ``masks/{ID}_predictedmask.png``: the true cell label image (uint8,
        uint16 beyond 255 cells; background 0, cell ``j`` = ``j``; cells cut by the
        field border included), numbered like the cells counted in ``cells``.
    duplicates
        Near-duplicates to plant (0..n): copies of ``duplicates`` distinct fields,
        shifted by a few pixels and re-noised, appended after the ``n`` fields (see
        :func:`plant_duplicates`). ``truth.csv`` then gains a ``duplicate_of`` column
        (the original's ID, empty elsewhere); a copy's ``noise`` is ``duplicate``
        (same given labels as its original) or, for a third of them,
        ``duplicate_conflict`` (given labels changed). Not combined with
        ``partial_cells``/``write_masks``. With 0 the output is unchanged.

    Returns
    -------
    pandas.DataFrame
        The truth table: ``ID``, ``true_label``, ``given_label`` (``|``-separated ids),
        ``noise`` (``none`` or ``;``-joined noise types), and ``cells`` when
        ``partial_cells > 0`` or ``write_masks``.

    Raises
    ------
    SettingsError
        Bad arguments, or ``out_dir`` exists and is not empty.
    """
    out_dir = Path(out_dir)
    _check_args(out_dir, n, size, noise_rate, fault_rate, seed, partial_cells, write_masks)
    _check_duplicates(duplicates, n, partial_cells, write_masks)
    n, size, seed = int(n), int(size), int(seed)
    rng = np.random.default_rng(seed)

    true = sample_label_sets(n, rng)
    ids = [f"synth-{i:05d}-{h:08x}" for i, h in enumerate(rng.integers(0, 2**32, n))]
    noisy = np.zeros(n, dtype=bool)
    noisy[rng.permutation(n)[: int(round(noise_rate * n))]] = True
    faulty = np.zeros(n, dtype=bool)
    faulty[rng.permutation(n)[: int(round(fault_rate * n))]] = True

    given: list[tuple[int, ...]] = []
    kinds: list[list[str]] = []
    faults: list[str | None] = []
    for i in range(n):
        k: list[str] = []
        if noisy[i]:
            g, kind = inject_label_noise(true[i], rng)
            k.append(kind)
        else:
            g = true[i]
        fault = None
        if faulty[i]:
            options = ("blur", "artifact") if true[i] == (NEGATIVE,) else FAULT_TYPES
            fault = str(rng.choice(options))
            k.append(fault)
        given.append(g)
        kinds.append(k)
        faults.append(fault)

    # Cell-level draws use their own streams: the labels, noise and other fields above
    # do not depend on them.
    with_cells = float(partial_cells) > 0 or bool(write_masks)
    partial = np.zeros(n, dtype=bool)
    if float(partial_cells) > 0:
        stained = np.flatnonzero([t != (NEGATIVE,) for t in true])
        pick = np.random.default_rng([seed, _PARTIAL_PICK_TAG, _PARTIAL_PICK_TAG])
        n_partial = int(round(float(partial_cells) * len(stained)))
        partial[pick.permutation(stained)[:n_partial]] = True
    cells_col: list[str] = []

    img_dir = out_dir / "train"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir = out_dir / "masks"
    if write_masks:
        mask_dir.mkdir()
    bar = _progress(n) if progress else None
    try:
        for i in range(n):
            field_rng = np.random.default_rng([int(seed), i])
            if with_cells:
                part_rng = (
                    np.random.default_rng([seed, i, _PARTIAL_FIELD_TAG]) if partial[i] else None
                )
                chans, fc = render_field_cells(true[i], size, field_rng, faults[i], part_rng)
                cells_col.append(format_cells_column(fc.counts((*true[i], *given[i]))))
                if write_masks:
                    _save_mask(mask_dir / f"{ids[i]}_predictedmask.png", fc.mask)
            else:
                chans = render_field(true[i], size, field_rng, faults[i])
            for name, arr in chans.items():
                Image.fromarray(arr).save(
                    img_dir / f"{ids[i]}_{name}.png", format="PNG", compress_level=1
                )
            if bar is not None:
                bar[0].update(bar[1], advance=1)
    finally:
        if bar is not None:
            bar[0].stop()

    truth = pd.DataFrame(
        {
            "ID": ids,
            "true_label": [_fmt(t) for t in true],
            "given_label": [_fmt(g) for g in given],
            "noise": [";".join(k) if k else "none" for k in kinds],
        }
    )
    if with_cells:
        truth["cells"] = cells_col
    if duplicates:
        truth = plant_duplicates(img_dir, truth, int(duplicates), seed)
    write_csv(out_dir / "truth.csv", truth)
    write_csv(
        out_dir / "train.csv", pd.DataFrame({"ID": truth["ID"], "Label": truth["given_label"]})
    )
    return truth


def _check_duplicates(duplicates: int, n: int, partial_cells: float, write_masks: bool) -> None:
    count = [Interval(Integral, 0, n, closed="both", text=f"from 0 to n ({n})")]
    validate_params({"duplicates": duplicates}, {"duplicates": count}, owner="synth")
    if duplicates and (float(partial_cells) > 0 or write_masks):
        raise SettingsError("synth: duplicates cannot be combined with partial_cells or masks")


def near_copy(channels: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A near-duplicate of a field: shifted by a few pixels and re-noised.

    The shift (up to 1/32 of the side, at least 1 px, never zero) is the same in every
    channel, with the border reflected; fresh camera noise (sigma 2 grey levels) is
    added per channel.

    Parameters
    ----------
    channels
        Channel name -> uint8 image (all the same shape).
    rng
        Random generator.

    Returns
    -------
    dict
        The copy's channels, uint8.
    """
    shape = next(iter(channels.values())).shape
    s = max(1, max(shape) // 32)
    dy, dx = 0, 0
    while dy == 0 and dx == 0:
        dy, dx = (int(v) for v in rng.integers(-s, s + 1, 2))
    out = {}
    for name, arr in channels.items():
        padded = np.pad(arr.astype(np.float32), s, mode="reflect")
        moved = padded[s + dy : s + dy + shape[0], s + dx : s + dx + shape[1]]
        noisy = moved + rng.normal(0.0, 2.0, shape)
        out[name] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out


def plant_duplicates(img_dir: Path, truth: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """Append ``count`` near-duplicates of distinct fields to a written dataset.

    Each copy (:func:`near_copy`) gets a new ID ``synth-{n + j:05d}-{hash}``, its
    original's true labels and, for ``round(count / 3)`` of them
    (``duplicate_conflict``), given labels changed by :func:`inject_label_noise`;
    the others (``duplicate``) keep the original's given labels. A copy inherits its
    original's image fault (the pixels carry it) and, when its labels are not
    changed, the original's label noise. Draws come from their own stream.

    Parameters
    ----------
    img_dir
        The dataset's image directory (originals are read from it, copies written).
    truth
        The truth table of the ``n`` fields written so far.
    count
        Copies to plant (<= n).
    seed
        The dataset's seed.

    Returns
    -------
    pandas.DataFrame
        ``truth`` with the copies appended and a ``duplicate_of`` column.
    """
    n = len(truth)
    rng = np.random.default_rng([seed, _DUPLICATE_TAG])
    originals = rng.choice(n, size=count, replace=False)
    conflict = np.zeros(count, dtype=bool)
    conflict[rng.permutation(count)[: int(round(count / 3))]] = True
    hashes = rng.integers(0, 2**32, count)
    rows = []
    for j, (i, changed, h) in enumerate(zip(originals, conflict, hashes, strict=True)):
        src = truth.iloc[int(i)]
        new_id = f"synth-{n + j:05d}-{int(h):08x}"
        chans = {
            name: np.asarray(Image.open(img_dir / f"{src['ID']}_{name}.png"))
            for name in HPA_CHANNELS
        }
        for name, arr in near_copy(chans, rng).items():
            Image.fromarray(arr).save(
                img_dir / f"{new_id}_{name}.png", format="PNG", compress_level=1
            )
        kinds = [k for k in str(src["noise"]).split(";") if k != "none"]
        given = str(src["given_label"])
        if changed:
            labels = tuple(int(c) for c in given.split("|"))
            given = _fmt(inject_label_noise(labels, rng)[0])
            kinds = [k for k in kinds if k in FAULT_TYPES] + ["duplicate_conflict"]
        else:
            kinds.append("duplicate")
        rows.append(
            {
                "ID": new_id,
                "true_label": src["true_label"],
                "given_label": given,
                "noise": ";".join(kinds),
                "duplicate_of": src["ID"],
            }
        )
    out = truth.assign(duplicate_of="")
    return pd.concat([out, pd.DataFrame(rows, columns=out.columns)], ignore_index=True)


def _save_mask(path: Path, label: np.ndarray) -> None:
    """Write a cell label image as an 8-bit PNG (16-bit beyond 255 cells)."""
    dtype = np.uint8 if int(label.max()) <= 255 else np.uint16
    Image.fromarray(label.astype(dtype)).save(path, format="PNG", compress_level=1)


def _progress(n: int):  # -> (Progress, task id)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("generating fields"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
    bar.start()
    return bar, bar.add_task("synth", total=n)
