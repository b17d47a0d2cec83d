"""Overlay pictures: a colour composite of a field with its cell outlines and tags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from skimage.segmentation import find_boundaries

from labelaudit.core.io import atomic_path
from labelaudit.data.classes import CHANNEL_RGB
from labelaudit.data.readers import to_unit_float


def _shrink(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average a [0, 1] float plane to ``size`` = (width, height)."""
    if (arr.shape[1], arr.shape[0]) == size:
        return arr
    return np.asarray(Image.fromarray(arr, mode="F").resize(size, Image.Resampling.BOX))


def composite(
    channels: Mapping[str, np.ndarray],
    size: tuple[int, int] | None = None,
    percentile: float = 99.5,
    max_gain: float = 5.0,
) -> np.ndarray:
    """An RGB uint8 composite of the stains, each stretched to its ``percentile``.

    Stains named in :data:`CHANNEL_RGB` get that colour; other channels are
    spread over red, green and blue in order. ``size`` = (width, height) downsizes.
    No stain is brightened more than ``max_gain`` times, so a nearly empty protein
    channel (an HPA "Negative" field) stays dark instead of showing amplified noise.
    """
    names = list(channels)
    first = channels[names[0]]
    size = size or (first.shape[1], first.shape[0])
    rgb = np.zeros((size[1], size[0], 3), dtype=np.float32)
    spare = iter([(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)])
    for name in names:
        colour = CHANNEL_RGB.get(name) or next(spare, None)
        if colour is None:
            continue
        plane = _shrink(to_unit_float(channels[name]), size)
        hi = max(float(np.percentile(plane, percentile)), 1.0 / max_gain)
        plane = np.clip(plane / hi, 0.0, 1.0)
        rgb += plane[..., None] * np.asarray(colour, dtype=np.float32)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def overlay_image(
    channels: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    tags: Mapping[int, str] | Sequence[str] | None = None,
    max_side: int = 768,
    min_side: int = 0,
    outline: tuple[int, int, int] = (255, 255, 255),
    reference: np.ndarray | None = None,
    reference_outline: tuple[int, int, int] = (255, 0, 255),
    show_ids: bool = False,
) -> Image.Image:
    """The field as a colour composite with every cell outlined.

    Parameters
    ----------
    channels
        ``name -> (H, W)`` stains of the field (any dtype).
    labels
        The field's cell label image (0 = background), (H, W).
    tags
        Text written at each cell's centre: a mapping ``label -> text`` (labels
        missing from it get none) or a sequence whose item ``i`` tags label ``i + 1``
        (e.g. the predicted classes of the cells).
    max_side
        The picture is downsized so its longer side is at most this.
    min_side
        A smaller field is enlarged so its longer side is this (0: never enlarged).
    outline
        Colour of the cell outlines.
    reference
        Another label image (e.g. masks made elsewhere), outlined in
        ``reference_outline`` beneath the cells.
    show_ids
        Write each cell's label number where it has no tag.

    Returns
    -------
    PIL.Image.Image
        An RGB picture.
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    scale = min(1.0, max_side / max(h, w))
    if max(h, w) * scale < min_side:  # small fields: enlarge so the tags are legible
        scale = min_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    rgb = composite(channels, size)

    def outlines(lab: np.ndarray) -> np.ndarray:
        small = np.asarray(
            Image.fromarray(np.asarray(lab, dtype=np.int32), mode="I").resize(
                size, Image.Resampling.NEAREST
            )
        )
        return find_boundaries(small, mode="inner")

    if reference is not None:
        rgb[outlines(reference)] = reference_outline
    rgb[outlines(labels)] = outline
    image = Image.fromarray(rgb)

    text: dict[int, str] = {}
    if tags is not None:
        items = tags.items() if isinstance(tags, Mapping) else enumerate(tags, start=1)
        text = {int(k): str(v) for k, v in items if v is not None and str(v) != ""}
    top = int(labels.max()) if labels.size else 0
    if show_ids:
        text = {k: text.get(k, str(k)) for k in range(1, top + 1)} | text
    if text and top:
        _draw_tags(image, labels, {k: v for k, v in text.items() if 1 <= k <= top}, scale)
    return image


def _draw_tags(image: Image.Image, labels: np.ndarray, text: dict[int, str], scale: float) -> None:
    """Write each label's text on a black box at its cell's centre (``scale``: picture/field)."""
    present = list(text)
    centres = ndimage.center_of_mass(labels > 0, labels, present)
    draw = ImageDraw.Draw(image)
    font = _font(max(10, round(image.size[0] / 64)))
    for k, (cy, cx) in zip(present, centres, strict=True):
        if not np.isfinite(cy):  # a label absent from the image
            continue
        x, y = cx * scale, cy * scale
        box = draw.textbbox((x, y), text[k], font=font, anchor="mm")
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        draw.text((x, y), text[k], fill=(255, 255, 255), font=font, anchor="mm")


def save_image(path: str | Path, image: Image.Image, quality: int = 80) -> Path:
    """Save a picture atomically; JPEG or PNG by the suffix of ``path``."""
    path = Path(path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_path(path) as tmp:
        if fmt == "JPEG":
            image.convert("RGB").save(tmp, format=fmt, quality=quality, optimize=True)
        else:
            image.save(tmp, format=fmt, optimize=True)
    return path
