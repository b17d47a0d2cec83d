"""A real-pixel benchmark dataset with injected label errors and image faults (issue 14).

Fields in the HPA 2021 layout (``train.csv`` + ``train/{ID}_{red,green,blue,yellow}.png``)
cut from scikit-image's bundled photographs (no download): the *green* (protein) channel
of a field is a random crop, flip, rotation and rescale of one texture per class, so the
labels are known; a fifth of the fields show two classes (left and right half). The
other stains are crops of fixed images (blue: the haematoxylin channel of
``immunohistochemistry``, red: ``hubble_deep_field``, yellow: ``retina``, inside its
disc).

With ``--sparse`` the green stain is instead a few small objects (four to seven
ellipses, about a tenth of the field) on a dark background, each filled with its class's
texture (a two-class field mixes objects of both): a sparse, low-information set where
most pixels say nothing about the labels (issue 27's second real-pixel set). Its
objects are its cells: ``masks/{ID}_predictedmask.png`` holds them (object j is label
j + 1) for ``labelaudit scan OUT --level cell --masks OUT/masks``.

``truth.csv`` is written like ``labelaudit synth``'s (``ID, true_label, given_label,
noise``) so ``labelaudit bench`` scores a run on it:

* label noise in the GIVEN labels (``swap``: another class; ``extra``: a class added;
  ``missing``: one of two classes left out), ``label_rate`` of the fields;
* image faults on other fields, ``fault_rate`` of them: ``dim`` (green x 0.15),
  ``saturated`` (green x 4, clipped), ``blur`` (all stains, Gaussian sigma 3),
  ``artifact`` (a bright disc on one stain).

Usage::

    python benchmarks/realpix.py OUT [--n 200] [--size 128] [--seed 0] [--sparse]
    labelaudit scan OUT --out RUN --preset demo
    labelaudit bench RUN --truth OUT/truth.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

#: HPA class token -> the scikit-image texture its fields show in green.
CLASSES: dict[str, str] = {
    "0": "grass",
    "1": "gravel",
    "2": "brick",
    "3": "moon",
    "4": "cell",
    "5": "coins",
}
CHANNELS = ("red", "green", "blue", "yellow")


def _sources() -> dict[str, np.ndarray]:
    """Every source image as float32 in [0, 1] (2-D)."""
    import skimage.data as d
    from skimage.color import rgb2hed

    out = {
        name: np.asarray(getattr(d, name)(), dtype=np.float32) / 255.0 for name in CLASSES.values()
    }
    hed = rgb2hed(d.immunohistochemistry())[..., 0]
    out["blue"] = ((hed - hed.min()) / (np.ptp(hed) or 1.0)).astype(np.float32)
    out["red"] = d.hubble_deep_field()[..., 0].astype(np.float32) / 255.0
    out["yellow"] = _inside_disc(d.retina()[..., 1].astype(np.float32) / 255.0)
    return out


def _inside_disc(fundus: np.ndarray) -> np.ndarray:
    """The square inscribed in a fundus photograph's disc (no black surround).

    The photograph is a bright disc on black; a crop of the corners would be an
    empty stain, which is an image fault, not a clean field (the first version of
    this benchmark cut such crops and called them clean).
    """
    lit = fundus > 0.03
    rows = np.flatnonzero(lit.mean(axis=1) > 0.01)
    cols = np.flatnonzero(lit.mean(axis=0) > 0.01)
    cy, cx = (rows[0] + rows[-1]) // 2, (cols[0] + cols[-1]) // 2
    half = int((rows[-1] - rows[0]) / 2 / np.sqrt(2))
    return fundus[cy - half : cy + half, cx - half : cx + half]


def _crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop (scale 0.6-1.4 of ``size``), flip and rotation, resized to ``size``."""
    from skimage.transform import resize

    side = int(min(min(img.shape[:2]) - 1, size * rng.uniform(0.6, 1.4)))
    y = int(rng.integers(0, img.shape[0] - side + 1))
    x = int(rng.integers(0, img.shape[1] - side + 1))
    patch = img[y : y + side, x : x + side]
    patch = np.rot90(patch, int(rng.integers(4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    patch = resize(patch, (size, size), anti_aliasing=True, preserve_range=True)
    gain = rng.uniform(0.8, 1.2)
    return np.clip(patch * gain + rng.normal(0, 0.02, patch.shape), 0, 1).astype(np.float32)


def _green(labels: list[str], src: dict[str, np.ndarray], size: int, rng) -> np.ndarray:
    if len(labels) == 1:
        return _crop(src[CLASSES[labels[0]]], size, rng)
    left = _crop(src[CLASSES[labels[0]]], size, rng)
    right = _crop(src[CLASSES[labels[1]]], size, rng)
    return np.concatenate([left[:, : size // 2], right[:, size // 2 :]], axis=1)


def _sparse_green(
    labels: list[str], src: dict[str, np.ndarray], size: int, rng
) -> tuple[np.ndarray, np.ndarray]:
    """A few textured objects on a dark, noisy background (``--sparse``), and their
    label mask (object j is ``j + 1`` where its soft edge is at least half in; a later
    object covers an earlier one, as its pixels do)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    green = np.clip(rng.normal(0.03, 0.01, (size, size)), 0, 1).astype(np.float32)
    mask = np.zeros((size, size), dtype=np.uint8)
    for j in range(int(rng.integers(4, 8))):
        texture = _crop(src[CLASSES[labels[j % len(labels)]]], size, rng)
        cy, cx = rng.uniform(0.12, 0.88, 2) * size
        ry, rx = rng.uniform(0.06, 0.11, 2) * size
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
        inside = np.clip((1.0 - (u**2 + v**2)) * 4.0, 0.0, 1.0)  # a soft edge
        green = np.maximum(green, inside * texture)
        mask[inside >= 0.5] = j + 1
    return green, mask  # green stays float64: the documented set was written from it


def _fault(kind: str, field: dict[str, np.ndarray], rng) -> dict[str, np.ndarray]:
    from scipy.ndimage import gaussian_filter

    field = dict(field)
    if kind == "dim":
        field["green"] = field["green"] * 0.15
    elif kind == "saturated":
        field["green"] = np.clip(field["green"] * 4.0, 0, 1)
    elif kind == "blur":
        field = {c: gaussian_filter(v, 3.0) for c, v in field.items()}
    elif kind == "artifact":
        c = CHANNELS[int(rng.integers(4))]
        size = field[c].shape[0]
        yy, xx = np.mgrid[:size, :size]
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 8) ** 2
        field[c] = np.where(disc, 1.0, field[c])
    return field


def _noisy_labels(true: list[str], kind: str, rng) -> list[str]:
    others = [t for t in CLASSES if t not in true]
    if kind == "swap":
        return sorted([*true[1:], str(rng.choice(others))], key=int)
    if kind == "extra":
        return sorted([*true, str(rng.choice(others))], key=int)
    return true[:1]  # missing: only possible with two classes


def make_realpix(out: str | Path, n: int = 200, size: int = 128, seed: int = 0,
                 label_rate: float = 0.2, fault_rate: float = 0.1,
                 sparse: bool = False) -> Path:  # fmt: skip
    """Write the dataset; returns ``out``. Refuses an existing non-empty ``out``."""
    from PIL import Image

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty: choose a new directory")
    (out / "train").mkdir(parents=True)
    if sparse:
        (out / "masks").mkdir()
    rng = np.random.default_rng(seed)
    src = _sources()
    tokens = list(CLASSES)
    rows, truth = [], []
    kinds = rng.random(n)
    for i in range(n):
        k = int(rng.integers(len(tokens)))
        true = [tokens[k]]
        if rng.random() < 0.2:
            true = sorted(
                [tokens[k], str(rng.choice([t for t in tokens if t != tokens[k]]))], key=int
            )
        noise, given = "none", list(true)
        if kinds[i] < label_rate:
            noise = str(
                rng.choice(["swap", "extra", "missing"] if len(true) == 2 else ["swap", "extra"])
            )
            given = _noisy_labels(true, noise, rng)
        field = {c: _crop(src[c], size, rng) * 0.6 for c in ("red", "blue", "yellow")}
        if sparse:
            field["green"], mask = _sparse_green(true, src, size, rng)
        else:
            field["green"] = _green(true, src, size, rng)
        if label_rate <= kinds[i] < label_rate + fault_rate:
            noise = str(rng.choice(["dim", "saturated", "blur", "artifact"]))
            field = _fault(noise, field, rng)
        image_id = f"{'sparse' if sparse else 'realpix'}-{i:04d}"
        if sparse:  # the objects are the cells (``scan --level cell --masks OUT/masks``)
            Image.fromarray(mask).save(out / "masks" / f"{image_id}_predictedmask.png")
        for c in CHANNELS:
            pixels = np.clip(np.round(field[c] * 255), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(out / "train" / f"{image_id}_{c}.png")
        rows.append((image_id, "|".join(given)))
        truth.append((image_id, "|".join(true), "|".join(given), noise))
    pd.DataFrame(rows, columns=["ID", "Label"]).to_csv(out / "train.csv", index=False)
    pd.DataFrame(truth, columns=["ID", "true_label", "given_label", "noise"]).to_csv(
        out / "truth.csv", index=False
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sparse", action="store_true", help="small objects on a dark field")
    args = parser.parse_args()
    out = make_realpix(args.out, args.n, args.size, args.seed, sparse=args.sparse)
    truth = pd.read_csv(out / "truth.csv")
    print(f"{out}: {len(truth)} fields; noise: {truth['noise'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
