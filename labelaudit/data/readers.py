"""Image readers: header reads for validation, full decodes for the cache.

PNG and JPEG go through Pillow, TIFF through tifffile (multi-channel and 16-bit
stacks). Every failure is turned into a :class:`~labelaudit.errors.DatasetError`
that names the file, so a broken image never surfaces as a traceback.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from labelaudit.errors import DatasetError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")

# Full-size HPA fields are 9.4 Mpx; Pillow's decompression-bomb guard is meant for
# untrusted web uploads and would reject legitimate large microscope tiles.
Image.MAX_IMAGE_PIXELS = 1 << 31


@dataclass(frozen=True)
class ImageInfo:
    """What a header says about an image file."""

    width: int
    height: int
    channels: int
    bit_depth: int


def _pil_bit_depth(mode: str) -> int:
    if mode in ("1",):
        return 1
    if mode.startswith("I;16") or mode == "I":
        return 16
    if mode == "F":
        return 32
    return 8


def _pil_channels(mode: str) -> int:
    return {"RGB": 3, "RGBA": 4, "CMYK": 4, "LA": 2, "P": 3, "YCbCr": 3}.get(mode, 1)


def read_header(path: Path) -> ImageInfo:
    """Read size, channel count and bit depth without decoding the pixels.

    Raises
    ------
    DatasetError
        When the file is missing, empty or not an image.
    """
    if not path.is_file():
        raise DatasetError("image file not found", path=path)
    if path.stat().st_size == 0:
        raise DatasetError("image file is empty (0 bytes)", path=path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, dtype = series.shape, np.dtype(series.dtype)
                axes = series.axes
            height = shape[axes.index("Y")]
            width = shape[axes.index("X")]
            channels = int(np.prod([s for s, a in zip(shape, axes, strict=True) if a not in "YX"]))
            return ImageInfo(width, height, max(channels, 1), dtype.itemsize * 8)
        with Image.open(path) as im:
            return ImageInfo(im.width, im.height, _pil_channels(im.mode), _pil_bit_depth(im.mode))
    except DatasetError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, KeyError, IndexError) as exc:
        raise DatasetError(f"not a readable image ({exc})", path=path) from None


def read_array(path: Path) -> np.ndarray:
    """Decode an image fully, returning (H, W) or (H, W, C) in its native dtype.

    Raises
    ------
    DatasetError
        When the file cannot be decoded (truncated, corrupt, unsupported).
    """
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                arr = series.asarray()
                axes = series.axes
            # Bring channel-like axes last: (Y, X, C).
            keep = [i for i, a in enumerate(axes) if a in "YX"]
            other = [i for i, a in enumerate(axes) if a not in "YX"]
            arr = np.transpose(arr, keep + other)
            if other:
                arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
            return arr
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow warns, not raises, on some damage
            with Image.open(path) as im:
                im.load()
                if im.mode == "P":
                    im = im.convert("RGB")
                elif im.mode in ("I;16", "I;16B", "I;16L"):
                    return np.asarray(im).astype(np.uint16)
                elif im.mode == "I":
                    return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
                elif im.mode == "1":
                    im = im.convert("L")
                return np.asarray(im).copy()
    except DatasetError:
        raise
    except Exception as exc:  # decoders raise many types; all mean "unreadable"
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower():
            raise DatasetError("image file is truncated", path=path) from None
        raise DatasetError(f"cannot decode image ({msg})", path=path) from None


def to_unit_float(arr: np.ndarray) -> np.ndarray:
    """Scale an integer image to float32 in [0, 1] by its dtype's full range.

    8-bit divides by 255, 16-bit by 65535, so a 16-bit field and its 8-bit export
    give the same intensities. Floats are clipped to [0, 1].
    """
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        return np.clip(arr.astype(np.float32) / float(info.max), 0.0, 1.0)
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def full_scale(dtype: np.dtype) -> float:
    """The value a saturated pixel has in ``dtype``."""
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0
