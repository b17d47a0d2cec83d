"""The reference stains of a field: microtubules (red), endoplasmic reticulum (yellow)
and nuclei (blue), and the filament renderer they share with the class patterns."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from labelaudit.synth.drawing import line_weight, splat_blur, walks
from labelaudit.synth.geometry import Field, texture


def fibres(
    f: Field,
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
    y, x, idx = walks(start[0], start[1], angle, length, curl, rng, bend)
    ok = f.keep(y, x, cell[idx], "cell")
    y, x, idx = y[ok], x[ok], idx[ok]
    w = np.where(f.in_nucleus(y, x), over_nucleus, 1.0) * amp[idx] * line_weight(sig)
    return splat_blur(f.shape, y, x, w, sig)


def microtubule_stain(f: Field, rng: np.random.Generator) -> np.ndarray:
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
    fil = fibres(
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
    spindles = [spindle_points(f, i, rng) for i, c in enumerate(f.cells) if c.mitotic]
    if spindles:
        y, x, w = (np.concatenate(v) for v in zip(*spindles, strict=True))
        fil = fil + splat_blur(f.shape, y, x, w * line_weight(sig), sig)
    # Filaments crowd at the centrosome; a soft knee keeps the aster from dominating.
    fil = fil / (1.0 + 0.35 * fil)
    return np.clip(fil / 0.75 + 0.2 * f.cyto_soft, 0.0, 1.3)


def spindle_points(
    f: Field, i: int, rng: np.random.Generator
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
    y, x, idx = walks(st[:, 0], st[:, 1], np.concatenate(ang), np.concatenate(ln), 0.01, rng)
    ok = f.keep(y, x, np.full(len(y), i), "cell")
    return y[ok], x[ok], np.concatenate(amp)[idx[ok]]


def er_stain(f: Field, rng: np.random.Generator) -> np.ndarray:
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


def nucleus_stain(f: Field, rng: np.random.Generator) -> np.ndarray:
    """Nuclei (blue): textured, darker at the nucleoli, brighter in mitotic cells."""
    tex = texture(f, rng)
    mit = np.zeros(len(f.cells) + 1, dtype=np.float32)
    mit[1:] = [1.35 if c.mitotic else 1.0 for c in f.cells]
    out = f.nuc_soft * (0.78 + 0.12 * tex) * (1.0 - 0.45 * f.nucleoli)
    return out * mit[f.label]
