"""The geometry of one field: where its cells, nuclei and nucleoli are.

:func:`make_field` places the cells and computes the masks and maps every stain and
class pattern is drawn from (:class:`Field`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from labelaudit.synth.drawing import blobs


@dataclass
class Cell:
    """One cell of a field: its centre, nucleus and outline shapes (radii in pixels)."""

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
        """Radius of the nuclear outline in the directions ``(cos_t, sin_t)``."""
        ca, sa = math.cos(self.nuc_angle), math.sin(self.nuc_angle)
        u = cos_t * ca + sin_t * sa
        v = sin_t * ca - cos_t * sa
        r = self.nuc_a * self.nuc_b / np.sqrt((self.nuc_b * u) ** 2 + (self.nuc_a * v) ** 2)
        if self.nuc_c3:
            r = r * (1.0 + _harm(self.nuc_c3, 3, cos_t, sin_t))
        return r

    def r_cell(self, cos_t: np.ndarray, sin_t: np.ndarray) -> np.ndarray:
        """Radius of the cell outline in the directions ``(cos_t, sin_t)``."""
        h = np.zeros_like(cos_t)  # the same sum as sum(...) from 0, typed as an array
        for m, c in enumerate(self.cell_c):
            h = h + _harm(c, m + 1, cos_t, sin_t)
        return self.rc * (1.0 + h)

    def mtoc(self) -> tuple[float, float]:
        """Position ``(y, x)`` of the centrosome, just outside the nucleus."""
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
class Field:
    """A field's cells and the masks and maps its stains and patterns are drawn from."""

    size: int
    cells: list[Cell]
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
        """The field's image shape ``(size, size)``."""
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
        """Whether each point lies in a nucleus (nearest pixel, clipped to the field)."""
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


def make_field(size: int, rng: np.random.Generator, n_mitotic: int) -> Field:
    """Place a field's cells and compute the maps its stains and patterns are drawn from.

    Parameters
    ----------
    size
        Side of the square field, pixels.
    rng
        The field's generator: the cells, the texture and the nucleoli are drawn from
        it, in that order.
    n_mitotic
        Cells to make mitotic (at most all of them).

    Returns
    -------
    Field
        The geometry, its masks and maps (``red`` and ``yellow`` not drawn yet).
    """
    cells = _place_cells(size, rng, n_mitotic)
    f = _partition(size, cells)
    f.tex = ndimage.gaussian_filter(
        rng.standard_normal((size, size), dtype=np.float32), max(1.0, 0.3 * f.unit)
    )
    f.tex /= max(float(f.tex.std()), 1e-6)
    _add_nucleoli(f, rng)
    return f


def _place_cells(size: int, rng: np.random.Generator, n_mitotic: int) -> list[Cell]:
    """Draw the cells: nucleus centres placed greedily with a minimum spacing, then
    each cell's radii, outline harmonics and orientation."""
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

    cells: list[Cell] = []
    for (cy, cx), mit in zip(centres, mitotic, strict=True):
        rc = rc_mean * rng.uniform(0.85, 1.12) * (0.85 if mit else 1.0)
        rn = rc * rng.uniform(0.40, 0.48)
        amp = (0.03, 0.015, 0.01) if mit else (0.14, 0.10, 0.05)
        harmonics = [complex(*(a * np.array(unit_vector(rng)))) for a in amp]
        if mit:  # metaphase plate: a bar across the spindle axis
            nuc_a, nuc_b, c3 = 0.85 * rn, 0.26 * rn, 0j
        else:
            e = rng.uniform(0.0, 0.18)
            nuc_a, nuc_b = rn * (1 + e), rn * (1 - e)
            c3 = complex(*(0.04 * np.array(unit_vector(rng))))
        cells.append(
            Cell(
                cy=float(cy),
                cx=float(cx),
                rn=rn,
                rc=rc,
                nuc_a=nuc_a,
                nuc_b=nuc_b,
                nuc_angle=float(rng.uniform(0, math.pi)),
                nuc_c3=c3,
                cell_c=(harmonics[0], harmonics[1], harmonics[2]),
                mitotic=bool(mit),
                mtoc_angle=float(rng.uniform(0, 2 * math.pi)),
            )
        )
    return cells


def _partition(size: int, cells: list[Cell]) -> Field:
    """Split the field between its cells and compute the masks and maps (no draws).

    Each pixel belongs to the cell with the smallest normalised radius
    rho = distance / outline radius (a weighted Voronoi split of touching cells).
    Cells are evaluated in their bounding boxes only; rho2 (the runner-up) locates
    the borders between touching cells. The texture is left empty.
    """
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

    return Field(
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
        tex=np.zeros(0, dtype=np.float32),
    )


def _add_nucleoli(f: Field, rng: np.random.Generator) -> None:
    """Nucleoli: 1-3 per interphase nucleus; flat-topped soft discs (``f.nucleoli``)."""
    ys, xs, amps = [], [], []
    for c in f.cells:
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
        b = blobs(f.shape, y, x, 0.15 * f.unit + 0.3, a)
        f.nucleoli = np.clip((b - 0.3) / 0.3, 0.0, 1.0) * f.nuc_soft


def unit_vector(rng: np.random.Generator) -> tuple[float, float]:
    """A random direction ``(cos t, sin t)``, ``t`` uniform in [0, 2 pi)."""
    t = rng.uniform(0, 2 * math.pi)
    return math.cos(t), math.sin(t)


def texture(f: Field, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise (mean 0, std ~1): the field's texture, randomly shifted and flipped."""
    sy, sx = (int(v) for v in rng.integers(0, f.size, 2))
    return np.roll(f.tex, (sy, sx), axis=(0, 1)) * (1.0 if rng.random() < 0.5 else -1.0)
