"""HPA-style composite thumbnails and per-channel detail tiles, as data URIs.

A field's channels are percentile-stretched one by one (so a dim field is still
visible), then composed the Human Protein Atlas way: red = microtubules, green =
protein, blue = nucleus, yellow (ER) added half to red and half to green.

Two images are embedded per reviewed field:

- a small composite thumbnail for the table;
- a *detail tile*: the four stretched channels side by side as one grayscale image
  (``C * D`` wide, ``D`` high). The page cuts it into channels and recomposes the
  large composite in a canvas, so the pixels are embedded once.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from labelaudit.data.classes import CHANNEL_RGB

#: JPEG quality of the detail tiles (the largest part of a report).
DETAIL_QUALITY = 82


def stretch_limits(
    channel: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.7
) -> tuple[float, float]:
    """The intensities mapped to 0 and 255 by :func:`stretch` (percentiles ``lo_pct``, ``hi_pct``).

    A (nearly) constant channel gets a span of at least 8 levels (of 255) for uint8
    data, so noise in an empty channel is not amplified to full range.
    """
    if channel.dtype == np.uint8:  # a histogram is ~10x faster than np.percentile
        cdf = np.cumsum(np.bincount(channel.ravel(), minlength=256))
        lo, hi = (float(np.searchsorted(cdf, q / 100 * cdf[-1])) for q in (lo_pct, hi_pct))
        return lo, max(hi, lo + 8.0)
    lo, hi = (float(v) for v in np.percentile(channel, [lo_pct, hi_pct]))
    return lo, max(hi, lo + 1e-6)


def apply_stretch(channel: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``lo..hi`` linearly to ``0..255`` (clipped), as uint8."""
    out = (channel.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(out, 0, 255).astype(np.uint8)


def stretch(channel: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.7) -> np.ndarray:
    """Percentile-stretch one 2-D channel to uint8 ``0..255`` (see :func:`stretch_limits`)."""
    return apply_stretch(channel, *stretch_limits(channel, lo_pct, hi_pct))


def _weights(channels: Sequence[str], i: int) -> tuple[float, float, float]:
    fallback = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    name = channels[i] if i < len(channels) else f"ch{i}"
    return CHANNEL_RGB.get(name, fallback[i % 3])


def compose(planes: Sequence[np.ndarray], channels: Sequence[str]) -> np.ndarray:
    """Compose stretched uint8 channels (H x W each) into an H x W x 3 RGB image.

    Channels whose name is not in :data:`CHANNEL_RGB` are taken as red, green and
    blue in order (``ch0``, ``ch1``, ... of generic datasets); one channel is gray.
    """
    h, w = planes[0].shape
    rgb = np.zeros((h, w, 3), dtype=np.float32)
    for i, plane in enumerate(planes):
        weights = (1.0, 1.0, 1.0) if len(planes) == 1 else _weights(channels, i)
        for j in range(3):
            if weights[j]:
                rgb[..., j] += weights[j] * plane
    return np.clip(rgb, 0, 255).astype(np.uint8)


def composite(field: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """The HPA-style RGB composite (H x W x 3 uint8) of a C x H x W field."""
    return compose([stretch(p) for p in field], channels)


def _resized(plane: np.ndarray, size: int) -> np.ndarray:
    """One channel resized to ``size`` x ``size`` (area average when shrinking), float32."""
    if plane.shape == (size, size):
        return plane.astype(np.float32)
    img = Image.fromarray(plane.astype(np.float32), mode="F")
    shrink = img.width > size
    img = img.resize((size, size), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
    return np.asarray(img)


def _stretched(plane: np.ndarray, size: int, limits: tuple[float, float]) -> np.ndarray:
    return apply_stretch(_resized(plane, size), *limits)


def encode(img: Image.Image, fmt: str = "jpeg", quality: int = 85) -> str:
    """Encode a PIL image as a ``data:`` URI (``fmt`` is ``"jpeg"`` or ``"png"``)."""
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    else:
        img.save(buf, format="JPEG", quality=quality, optimize=True)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def field_images(
    field: np.ndarray,
    channels: Sequence[str],
    *,
    thumb_size: int = 96,
    detail_size: int = 256,
    fmt: str = "jpeg",
) -> tuple[str, str]:
    """Thumbnail and detail-tile data URIs of one C x H x W field.

    Stretch limits come from the full field; the channels are resized first and
    stretched after, so the work is done at the output size. A size of 0 skips that
    image (``""``); the detail tile is never larger than the field.
    """
    limits = [stretch_limits(p) for p in field]
    thumb = detail = ""
    if thumb_size:
        planes = [_stretched(p, thumb_size, lim) for p, lim in zip(field, limits, strict=True)]
        thumb = encode(Image.fromarray(compose(planes, channels), mode="RGB"), fmt)
    if detail_size:
        size = min(detail_size, max(field.shape[1:]))
        planes = [_stretched(p, size, lim) for p, lim in zip(field, limits, strict=True)]
        tile = Image.fromarray(np.concatenate(planes, axis=1), mode="L")
        detail = encode(tile, fmt, quality=DETAIL_QUALITY)
    return thumb, detail
