"""The green patterns, one per HPA 2021 class; each returns a map with peak ~1."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from labelaudit.synth.drawing import (
    FILAMENT_STEP,
    blobs,
    line_weight,
    splat_blur,
    splat_variance,
    walks,
)
from labelaudit.synth.geometry import Field, texture
from labelaudit.synth.stains import fibres, spindle_points

# Typical peak green intensity of each class's pattern (8-bit units, before the
# field's brightness factor): diffuse stains are dimmer than compact structures.
CLASS_PEAK: tuple[float, ...] = (
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

PatternFn = Callable[[Field, np.random.Generator], np.ndarray]


def _g_nucleoplasm(f: Field, rng: np.random.Generator) -> np.ndarray:
    return f.nuc_soft * (0.85 + 0.12 * texture(f, rng)) * (1.0 - 0.8 * f.nucleoli)


def _g_nuclear_membrane(f: Field, rng: np.random.Generator) -> np.ndarray:
    w = f.sigma(0.1, lo=0.9)
    ring = np.exp(-(((f.rho_n - 1.0) * f.unit / w) ** 2)) * (f.label > 0)
    inter = np.zeros(len(f.cells) + 1, dtype=np.float32)
    inter[1:] = [0.0 if c.mitotic else 1.0 for c in f.cells]
    return ring * inter[f.label] * (0.85 + 0.1 * texture(f, rng))


def _g_nucleoli(f: Field, rng: np.random.Generator) -> np.ndarray:
    return f.nucleoli * (0.9 + 0.1 * texture(f, rng))


def _g_fibrillar_center(f: Field, rng: np.random.Generator) -> np.ndarray:
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
    dots = blobs(f.shape, y, x, sig, rng.uniform(0.8, 1.0, len(y)))
    # Dense fibrillar component: a faint rim of the nucleolus around the dots.
    return np.minimum(dots, 1.2) + 0.2 * f.nucleoli


def _g_speckles(f: Field, rng: np.random.Generator) -> np.ndarray:
    sig = f.sigma(0.09)
    counts = [0 if c.mitotic else int(rng.integers(14, 26)) for c in f.cells]
    y, x, _ = f.points_in(counts, "nuc", rng)
    dots = blobs(f.shape, y, x, sig, rng.uniform(0.5, 1.0, len(y)))
    return (np.minimum(dots, 1.1) + 0.22 * f.nuc_soft) * (1.0 - 0.8 * f.nucleoli)


def _g_nuclear_bodies(f: Field, rng: np.random.Generator) -> np.ndarray:
    """A few round, well separated bodies (fewer and larger than speckles, no haze)."""
    sig = f.sigma(0.13, lo=0.7)
    counts = [0 if c.mitotic else int(rng.integers(3, 7)) for c in f.cells]
    y, x, _ = f.points_in(counts, "nuc", rng)
    return np.minimum(blobs(f.shape, y, x, sig, rng.uniform(0.85, 1.0, len(y))), 1.2)


def _g_er(f: Field, rng: np.random.Generator) -> np.ndarray:
    return f.yellow * (0.9 + 0.1 * texture(f, rng))


def _g_golgi(f: Field, rng: np.random.Generator) -> np.ndarray:
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
    b = blobs(f.shape, y[ok], x[ok], sig, rng.uniform(0.45, 0.85, int(ok.sum())))
    return np.minimum(b, 1.1)


def _g_intermediate_filaments(f: Field, rng: np.random.Generator) -> np.ndarray:
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
    bend = sign * FILAMENT_STEP / (r * rng.uniform(1.0, 1.6, m))
    fil = fibres(
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


def _g_actin(f: Field, rng: np.random.Generator) -> np.ndarray:
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
    fib = fibres(
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


def _g_microtubules(f: Field, rng: np.random.Generator) -> np.ndarray:
    return f.red * (0.9 + 0.1 * texture(f, rng))


def _g_mitotic_spindle(f: Field, rng: np.random.Generator) -> np.ndarray:
    sig = f.sigma(0.06)
    ys, xs, ws = [], [], []
    for i, c in enumerate(f.cells):
        if not c.mitotic:
            continue
        y, x, w = spindle_points(f, i, rng)
        ys.append(y)
        xs.append(x)
        ws.append(w * line_weight(sig))
        p = c.poles()  # bright poles
        ys.append(p[:, 0])
        xs.append(p[:, 1])
        ws.append(np.full(2, 2.0 * math.pi * splat_variance(sig)))
    if not ys:
        return np.zeros(f.shape, dtype=np.float32)
    sp = splat_blur(f.shape, np.concatenate(ys), np.concatenate(xs), np.concatenate(ws), sig)
    return np.minimum(sp / 1.2, 1.3)


def _g_centrosome(f: Field, rng: np.random.Generator) -> np.ndarray:
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
    dots = blobs(f.shape, y, x, sig, rng.uniform(1.1, 1.3, len(y)))
    return np.minimum(dots, 1.2)


def _g_plasma_membrane(f: Field, rng: np.random.Generator) -> np.ndarray:
    return f.edges * (0.85 + 0.12 * texture(f, rng)) + 0.05 * f.cyto_soft


def _g_mitochondria(f: Field, rng: np.random.Generator) -> np.ndarray:
    """Short tubules scattered through the cytoplasm, denser near the nucleus."""
    sig = f.sigma(0.065)
    counts = [int(rng.integers(22, 36) * (c.rc / 25.0) ** 2) + 6 for c in f.cells]
    y0, x0, cell = f.points_in(counts, "cyto", rng, bias=1.6)
    m = len(y0)
    y, x, idx = walks(
        y0,
        x0,
        rng.uniform(0, 2 * math.pi, m),
        rng.uniform(0.4, 0.7, m) * f.unit + 1.5,
        0.12,
        rng,
    )
    ok = f.keep(y, x, cell[idx], "cyto")
    w = rng.uniform(0.5, 1.0, m)[idx[ok]] * line_weight(sig)
    return np.minimum(splat_blur(f.shape, y[ok], x[ok], w, sig), 1.3)


def _g_aggresome(f: Field, rng: np.random.Generator) -> np.ndarray:
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
    b = blobs(f.shape, np.array(ys), np.array(xs), 0.27 * f.unit + 0.3, np.array(amps))
    return np.clip(b / 1.1, 0.0, 1.0) + 0.06 * f.cyto_soft


def _g_cytosol(f: Field, rng: np.random.Generator) -> np.ndarray:
    return f.cyto_soft * (0.85 + 0.15 * texture(f, rng)) + 0.1 * f.nuc_soft


def _g_vesicles(f: Field, rng: np.random.Generator) -> np.ndarray:
    sig = f.sigma(0.13, lo=0.6)
    counts = [int(rng.integers(18, 34) * (c.rc / 25.0) ** 2) + 5 for c in f.cells]
    y, x, _ = f.points_in(counts, "cyto", rng)
    return np.minimum(blobs(f.shape, y, x, sig, rng.uniform(0.45, 1.0, len(y))), 1.2)


def _g_negative(f: Field, rng: np.random.Generator) -> np.ndarray:
    return np.zeros(f.shape, dtype=np.float32)


GREEN_PATTERNS: tuple[PatternFn, ...] = (
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
