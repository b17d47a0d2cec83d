"""Image readers: header reads for validation, full decodes for the cache.

PNG and JPEG go through Pillow, TIFF through tifffile (multi-channel and 16-bit
stacks). Every failure is turned into a :class:`~labelaudit.core.errors.DatasetError`
that names the file, so a broken image never surfaces as a traceback.

Image files are treated as hostile: only regular files are opened (a FIFO would
block the reader forever), the pixel count a header announces is checked against a
budget before anything is decoded (a small PNG can decode to gigabytes), and no
message quotes a file's bytes.
"""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from labelaudit.core.errors import DatasetError
from labelaudit.core.userfiles import file_kind, open_checked

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")

#: Pixels per channel an image may have (width x height) before it is refused
#: unread: 20,000 x 20,000, generous for microscope tiles (HPA fields are 9.4 Mpx)
#: and far below what would exhaust memory. ``--max-pixels`` changes it.
DEFAULT_MAX_PIXELS = 20_000 * 20_000

# Full-size HPA fields are 9.4 Mpx; Pillow's decompression-bomb guard is meant for
# untrusted web uploads and would reject legitimate large microscope tiles. Our own
# budget (above) is checked from the header instead.
Image.MAX_IMAGE_PIXELS = 1 << 31

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # an empty IEND chunk with its CRC
_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


@dataclass(frozen=True)
class ImageInfo:
    """What a header says about an image file."""

    width: int
    height: int
    channels: int
    bit_depth: int
    #: Floating-point pixels (which may be NaN or infinite: checked by decoding).
    floating: bool = False


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


# ------------------------------------------------------------- what may be opened


def _not_regular(mode: int) -> str | None:
    kind = file_kind(mode)
    return None if kind is None else f"not a regular file (it is {kind})"


def file_problem(path: str | Path, what: str = "image file") -> str | None:
    """Why ``path`` cannot be opened as an image file, or None when it can.

    Only ``os.stat`` is called (nothing is opened), so a FIFO, a device or a
    dangling or looping symbolic link is described instead of blocking or raising.

    Parameters
    ----------
    path
        The file.
    what
        How a missing file is named (``"image file not found"``).

    Returns
    -------
    str or None
        E.g. ``"image file not found"``, ``"broken symbolic link (its target ...
        does not exist)"``, ``"symbolic link loop"``, ``"not a regular file (it is a
        FIFO (named pipe))"``.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
        return f"{what} not found"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (the link points back at itself)"
        return f"cannot access the file ({exc.strerror})"
    return _not_regular(st.st_mode)


def require_regular_file(path: str | Path) -> os.stat_result:
    """``os.stat`` of ``path``, which must be a regular file (symlinks followed).

    Raises
    ------
    DatasetError
        Naming the file, when it is missing, a broken or looping link, or not a
        regular file.
    """
    problem = file_problem(path)
    if problem is not None:
        raise DatasetError(problem, path=path)
    return os.stat(path)


@contextmanager
def open_regular(path: str | Path) -> Iterator[BinaryIO]:
    """Open an image file for binary reading, refusing anything but a regular file.

    The file is opened non-blocking and checked with ``fstat`` on the descriptor,
    so a file swapped for a FIFO after an earlier ``stat`` still cannot block.
    """
    require_regular_file(path)

    def regular(st: os.stat_result) -> None:
        problem = _not_regular(st.st_mode)
        if problem is not None:
            raise DatasetError(problem, path=path)

    with open_checked(path, regular, "cannot open the file") as fh:
        yield fh


def check_pixel_budget(
    width: int, height: int, path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> None:
    """Refuse an image whose header announces more than ``max_pixels`` per channel.

    Raises
    ------
    DatasetError
        Naming the file, its size and the budget (``None`` disables the check).
    """
    if max_pixels is not None and width * height > max_pixels:
        raise DatasetError(
            f"image is {width} x {height} = {width * height:,} pixels per channel, over the "
            f"pixel budget of {max_pixels:,}; not decoded (raise it with --max-pixels if the "
            "image is genuine)",
            path=path,
        )


# --------------------------------------------------------------- cheap integrity


def _tail(fh: BinaryIO, size: int, n: int) -> bytes:
    fh.seek(max(0, size - n))
    return fh.read(n)


def _tiff_problem(fh: BinaryIO, size: int) -> str | None:
    """Every page's strips/tiles must lie inside the file (tags only, no decoding)."""
    import tifffile

    try:
        with tifffile.TiffFile(fh) as tif:
            for n, page in enumerate(tif.pages):
                offsets = getattr(page, "dataoffsets", ()) or ()
                counts = getattr(page, "databytecounts", ()) or ()
                ends = [o + c for o, c in zip(offsets, counts, strict=False) if c]
                if ends and max(ends) > size:
                    return (
                        f"truncated TIFF (page {n + 1}'s image data ends at byte {max(ends)}, "
                        f"the file has {size} bytes)"
                    )
    except Exception:  # noqa: BLE001 - tifffile raises many types; its messages quote bytes
        return "not a readable TIFF file (its header or directory is damaged)"
    return None


def quick_integrity(path: str | Path) -> str | None:
    """A cheap test for a broken image file: reads the first and last bytes only.

    Finds what a header read misses: a truncated PNG (its last 12 bytes must be the
    IEND chunk), a truncated JPEG (it must end with the end-of-image marker FFD9), a
    truncated TIFF (strip/tile offsets plus byte counts beyond the end of the file),
    plus empty files, garbage under an image suffix and non-regular files. Damage in
    the middle of a file needs a full decode (``check --deep``).

    Parameters
    ----------
    path
        The image file.

    Returns
    -------
    str or None
        What is wrong, in words (never quoting the file's bytes), or None.
    """
    problem = file_problem(path)
    if problem is not None:
        return problem
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return "image file is empty (0 bytes)"
            head = fh.read(8)
            if head.startswith(_PNG_SIGNATURE):
                if size < 8 + 12 + 12 or _tail(fh, size, 12) != _PNG_IEND:
                    return "truncated PNG (the file does not end with the IEND chunk)"
            elif head.startswith(_JPEG_SOI):
                # Some writers pad with zero bytes after the end-of-image marker.
                if not _tail(fh, size, 1024).rstrip(b"\x00").endswith(_JPEG_EOI):
                    return "truncated JPEG (the file does not end with the end-of-image marker)"
            elif head[:4] in _TIFF_MAGICS:
                fh.seek(0)
                return _tiff_problem(fh, size)
            elif Path(path).suffix.lower() in IMAGE_SUFFIXES:
                return "not a readable image (its first bytes are no PNG, JPEG or TIFF signature)"
    except DatasetError as exc:
        return exc.message
    except OSError as exc:
        return f"cannot read the file ({exc.strerror})"
    return None


# ------------------------------------------------------------------ header, decode


def _tiff_geometry(series) -> tuple[int, int, int]:
    shape, axes = series.shape, series.axes
    height = shape[axes.index("Y")]
    width = shape[axes.index("X")]
    channels = int(np.prod([s for s, a in zip(shape, axes, strict=True) if a not in "YX"]))
    return width, height, max(channels, 1)


def read_header(path: Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read size, channel count and bit depth without decoding the pixels.

    Parameters
    ----------
    path
        The image file; only a regular file is opened.
    max_pixels
        Refuse an image with more pixels per channel (``None``: no limit).

    Raises
    ------
    DatasetError
        When the file is missing, not a regular file, empty, not an image, or over
        the pixel budget.
    """
    try:
        with open_regular(path) as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise DatasetError("image file is empty (0 bytes)", path=path)
            if Path(path).suffix.lower() in TIFF_SUFFIXES:
                import tifffile

                with tifffile.TiffFile(fh) as tif:
                    series = tif.series[0]
                    width, height, channels = _tiff_geometry(series)
                    depth = np.dtype(series.dtype).itemsize * 8
                    floating = np.dtype(series.dtype).kind in "fc"
                info = ImageInfo(width, height, channels, depth, floating)
            else:
                with Image.open(fh) as im:
                    info = ImageInfo(
                        im.width,
                        im.height,
                        _pil_channels(im.mode),
                        _pil_bit_depth(im.mode),
                        im.mode == "F",
                    )
    except DatasetError:
        raise
    except UnidentifiedImageError:
        raise DatasetError("not a readable image (unknown or damaged format)", path=path) from None
    except Exception:  # noqa: BLE001 - decoders raise many types; tifffile's quote file bytes
        raise DatasetError("not a readable image (damaged header)", path=path) from None
    check_pixel_budget(info.width, info.height, path, max_pixels)
    return info


def _tiff_array(fh: BinaryIO, path: Path, max_pixels: int | None) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(fh) as tif:
        series = tif.series[0]
        width, height, _ = _tiff_geometry(series)
        check_pixel_budget(width, height, path, max_pixels)
        arr = series.asarray()
        axes = series.axes
    # Bring channel-like axes last: (Y, X, C).
    keep = [i for i, a in enumerate(axes) if a in "YX"]
    other = [i for i, a in enumerate(axes) if a not in "YX"]
    arr = np.transpose(arr, keep + other)
    if other:
        arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
    return arr


def _pil_array(fh: BinaryIO, path: Path, max_pixels: int | None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns, not raises, on some damage
        with Image.open(fh) as im:
            check_pixel_budget(im.width, im.height, path, max_pixels)  # before im.load()
            im.load()
            picture: Image.Image = im
            if im.mode == "P":
                picture = im.convert("RGB")
            elif im.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(im).astype(np.uint16)
            elif im.mode == "I":
                return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
            elif im.mode == "1":
                picture = im.convert("L")
            return np.asarray(picture).copy()


def read_array(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image fully, returning (H, W) or (H, W, C) in its native dtype.

    Parameters
    ----------
    path
        The image file; only a regular file is opened.
    max_pixels
        Pixels per channel allowed, checked from the header before decoding
        (``Dataset.max_pixels``; ``None``: no limit).

    Raises
    ------
    DatasetError
        When the file cannot be decoded (truncated, corrupt, unsupported, not a
        regular file) or is over the pixel budget.
    """
    try:
        with open_regular(path) as fh:
            if Path(path).suffix.lower() in TIFF_SUFFIXES:
                arr = _tiff_array(fh, path, max_pixels)
            else:
                arr = _pil_array(fh, path, max_pixels)
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise DatasetError(
                f"image has {bad:,} non-finite pixel value(s) (NaN or infinity); labelaudit "
                "cannot measure or train on them: fix the file, or scan with --skip-broken",
                path=path,
            )
        return arr
    except DatasetError:
        raise
    except UnidentifiedImageError:
        raise DatasetError("not a readable image (unknown or damaged format)", path=path) from None
    except Exception as exc:  # decoders raise many types; all mean "unreadable"
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower():
            raise DatasetError("image file is truncated", path=path) from None
        if type(exc).__module__.startswith("tifffile"):
            msg = type(exc).__name__  # tifffile's messages may quote the file's bytes
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
