"""Cell mask files (``{ID}_predictedmask.png`` or ``{ID}.npz``) and mask comparison.

A mask is one integer label image per field, the field's size: 0 is background,
each cell one positive label. PNG masks are 8-bit while a field has at most 255
labels, 16-bit above (the HPA competition's ``_predictedmask.png`` convention);
``.npz`` masks hold one array (key ``mask`` when written here).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy.optimize import linear_sum_assignment

from labelaudit.core.digest import ShortDigest
from labelaudit.core.errors import DatasetError, SettingsError
from labelaudit.core.io import atomic_path

PNG_SUFFIX = "_predictedmask.png"
NPZ_SUFFIX = ".npz"
MASK_KEY = "mask"
#: Image extensions dropped from generic-layout ids when looking for their masks.
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".webp")


def mask_paths(mask_dir: str | Path, image_id: str) -> tuple[Path, Path]:
    """The two file names a field's mask may have: PNG first, then NPZ."""
    root = Path(mask_dir)
    return root / f"{image_id}{PNG_SUFFIX}", root / f"{image_id}{NPZ_SUFFIX}"


def _candidates(mask_dir: str | Path, image_id: str) -> list[Path]:
    """Where a mask may be: by the id, then (generic layout ids are image paths such as
    ``plate1/A01.png``) by the id without its image extension."""
    paths = list(mask_paths(mask_dir, image_id))
    stem = Path(image_id)
    if stem.suffix.lower() in IMAGE_SUFFIXES:
        paths += mask_paths(mask_dir, str(stem.with_suffix("")))
    return paths


def find_mask(mask_dir: str | Path, image_id: str) -> Path:
    """The mask file of ``image_id`` in ``mask_dir``.

    Raises
    ------
    DatasetError
        When neither ``{ID}_predictedmask.png`` nor ``{ID}.npz`` exists.
    """
    candidates = _candidates(mask_dir, image_id)
    for path in candidates:
        if path.is_file():
            return path
    names = " or ".join(str(p.relative_to(mask_dir)) for p in candidates)
    raise DatasetError(
        f"no cell mask for this image (expected {names})",
        path=Path(mask_dir),
        image=image_id,
    )


def read_mask(path: str | Path, image_id: str | None = None) -> np.ndarray:
    """Read one mask file as a 2-D non-negative integer label image.

    The dtype is kept (uint8/uint16 PNG, any integer NPZ); cast when you need int32.

    Raises
    ------
    DatasetError
        When the file is missing, not a PNG/NPZ, unreadable, not 2-D, not integer
        or holds negative labels; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError("mask file not found", path=path, image=image_id)
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                keys = list(data.keys())
                if MASK_KEY in keys:
                    arr = data[MASK_KEY]
                elif len(keys) == 1:
                    arr = data[keys[0]]
                else:
                    raise DatasetError(
                        f"expected one array or one named {MASK_KEY!r}, found {', '.join(keys)}",
                        path=path,
                        image=image_id,
                    )
        elif path.suffix.lower() == ".png":
            with Image.open(path) as im:
                im.load()
                mode = im.mode
                if mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
                    raise DatasetError(
                        f"expected a single-channel integer label image, got PNG mode {mode}",
                        path=path,
                        image=image_id,
                    )
                arr = np.asarray(im)
                if mode == "1":
                    arr = arr.astype(np.uint8)
                elif mode.startswith("I;16"):
                    arr = arr.astype(np.uint16)
        else:
            raise DatasetError("not a mask file (expected .png or .npz)", path=path, image=image_id)
    except DatasetError:
        raise
    except (OSError, ValueError, UnidentifiedImageError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(
            f"cannot read mask ({str(exc) or type(exc).__name__})", path=path, image=image_id
        ) from None
    if arr.ndim != 2:
        raise DatasetError(
            f"expected a 2-D label image, got shape {arr.shape}", path=path, image=image_id
        )
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise DatasetError(
            f"expected integer labels, got dtype {arr.dtype}", path=path, image=image_id
        )
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.size and np.issubdtype(arr.dtype, np.signedinteger) and int(arr.min()) < 0:
        raise DatasetError("mask has negative labels", path=path, image=image_id)
    return arr


def write_mask(out_dir: str | Path, image_id: str, labels: np.ndarray, fmt: str = "png") -> Path:
    """Write a label image as ``{ID}_predictedmask.png`` or ``{ID}.npz``, atomically.

    PNG is 8-bit up to 255 labels and 16-bit up to 65535; more labels need
    ``fmt="npz"``. Returns the path written.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise SettingsError(f"a mask is a 2-D integer array, got {labels.dtype} {labels.shape}")
    top = int(labels.max()) if labels.size else 0
    if labels.size and int(labels.min()) < 0:
        raise SettingsError("mask labels must be >= 0")
    png, npz = mask_paths(out_dir, image_id)
    if fmt == "npz":
        with atomic_path(npz) as tmp, open(tmp, "wb") as fh:
            # the keyword is MASK_KEY ("mask"), spelled out for the type checker
            np.savez_compressed(fh, mask=labels.astype(_min_dtype(top)))
        return npz
    if fmt != "png":
        raise SettingsError(f"unknown mask format {fmt!r}; choose png or npz")
    if top > 65535:
        raise SettingsError(f"{top} labels do not fit a 16-bit PNG; write npz masks instead")
    dtype = np.uint8 if top <= 255 else np.uint16
    with atomic_path(png) as tmp:
        Image.fromarray(labels.astype(dtype)).save(tmp, format="PNG")
    return png


def _min_dtype(top: int) -> type:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return dtype
    return np.int64


class MaskSet(Mapping):
    """Masks of a set of fields, read lazily from a directory.

    Behaves like a read-only ``dict`` ``id -> label image``: every file is located
    when the set is made (a missing one fails at once), decoded on access.

    Attributes
    ----------
    root
        The mask directory.
    paths
        ``id -> mask file``.
    """

    def __init__(self, root: str | Path, paths: Mapping[str, Path]) -> None:
        self.root = Path(root)
        self.paths = dict(paths)

    def __getitem__(self, image_id: str) -> np.ndarray:
        return read_mask(self.paths[image_id], image_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def fingerprint(self) -> str:
        """Names, sizes and modification times of the mask files (keys caches)."""
        h = ShortDigest(16)
        for image_id, path in self.paths.items():
            st = path.stat()
            h.update(f"{image_id}:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()


def load_masks(mask_dir: str | Path, ids: Iterable[str]) -> MaskSet:
    """The masks of ``ids`` in ``mask_dir``, as a lazily decoding mapping.

    Parameters
    ----------
    mask_dir
        A directory of ``{ID}_predictedmask.png`` or ``{ID}.npz`` files, or one
        whose ``masks/`` subdirectory holds them (the output of
        :func:`~labelaudit.cells.dataset.segment_dataset`).
    ids
        The fields that need a mask.

    Raises
    ------
    DatasetError
        When the directory is missing or a field has no mask file (the message
        names the expected files). Unreadable files fail when read, naming the file.
    """
    root = Path(mask_dir)
    if not root.is_dir():
        raise DatasetError("mask directory not found", path=root)
    ids = list(ids)
    # The output directory of segment_dataset works too: its masks are in masks/.
    if ids and (root / "masks").is_dir() and not any(p.is_file() for p in mask_paths(root, ids[0])):
        root = root / "masks"
    return MaskSet(root, {image_id: find_mask(root, image_id) for image_id in ids})


# ------------------------------------------------------------------------ compare


def touches_border(labels: np.ndarray) -> np.ndarray:
    """Sorted labels of the cells that touch the image border (0 excluded)."""
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    found = np.unique(edge)
    return found[found > 0]


def drop_labels(labels: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """A copy of ``labels`` with the labels in ``drop`` set to background."""
    out = np.asarray(labels).copy()
    if len(drop):
        out[np.isin(out, drop)] = 0
    return out


def overlap_matrix(
    pred: np.ndarray, ref: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """IoU between every predicted and reference cell.

    Returns
    -------
    iou
        (P, R) float array over the present labels.
    pred_ids, ref_ids
        The labels of the rows and columns.
    ref_areas
        Pixel count of each reference cell.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise SettingsError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    p_flat, r_flat = pred.ravel().astype(np.int64), ref.ravel().astype(np.int64)
    p_top = int(p_flat.max()) + 1 if p_flat.size else 1
    r_top = int(r_flat.max()) + 1 if r_flat.size else 1
    if p_top * r_top <= 1 << 24:
        # Labels are small integers: index the joint histogram by the labels
        # themselves (no sort), then keep the labels that occur.
        joint = np.bincount(p_flat * r_top + r_flat, minlength=p_top * r_top)
        joint = joint.reshape(p_top, r_top)
        p_ids = np.flatnonzero(joint.sum(axis=1))
        r_ids = np.flatnonzero(joint.sum(axis=0))
        joint = joint[np.ix_(p_ids, r_ids)]
    else:
        p_ids, p_inv = np.unique(p_flat, return_inverse=True)
        r_ids, r_inv = np.unique(r_flat, return_inverse=True)
        joint = np.bincount(p_inv * len(r_ids) + r_inv, minlength=len(p_ids) * len(r_ids))
        joint = joint.reshape(len(p_ids), len(r_ids))
    # joint[i, j]: pixels of predicted label p_ids[i] inside reference label r_ids[j].
    joint = joint.astype(np.float64)
    p_area, r_area = joint.sum(axis=1), joint.sum(axis=0)
    pi = np.flatnonzero(p_ids > 0)
    ri = np.flatnonzero(r_ids > 0)
    inter = joint[np.ix_(pi, ri)]
    union = p_area[pi, None] + r_area[None, ri] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou, p_ids[pi], r_ids[ri], r_area[ri]


def compare_masks(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    threshold: float = 0.5,
    exclude_border: bool = False,
) -> dict[str, float | int]:
    """Match predicted cells to reference cells one-to-one and score the match.

    Pairs are chosen by maximum total IoU (Hungarian assignment) and kept when
    their IoU is at least ``threshold``; at 0.5 or above a cell can overlap only
    one partner that much, so the matching is unambiguous.

    Parameters
    ----------
    pred, ref
        Label images of the same shape (0 = background).
    threshold
        Least IoU of a match.
    exclude_border
        Drop the cells touching the image border from both masks first (for a
        segmentation that drops them by design).

    Returns
    -------
    dict
        ``n_ref``, ``n_pred``, ``n_matched``; ``mean_iou`` (mean IoU of the matched
        pairs, NaN without any), ``recall`` (fraction of reference cells matched),
        ``precision`` (fraction of predicted cells matched), ``f1``, and
        ``mean_best_iou`` (each reference cell's best IoU with any predicted cell,
        averaged; 0 for a cell nothing overlaps).
    """
    if not 0.0 < threshold <= 1.0:
        raise SettingsError(f"threshold must be in (0, 1], got {threshold}")
    if exclude_border:
        pred = drop_labels(pred, touches_border(pred))
        ref = drop_labels(ref, touches_border(ref))
    iou, p_ids, r_ids, _ = overlap_matrix(pred, ref)
    n_pred, n_ref = len(p_ids), len(r_ids)
    matched: list[float] = []
    if n_pred and n_ref:
        rows, cols = linear_sum_assignment(iou, maximize=True)
        matched = [float(v) for v in iou[rows, cols] if v >= threshold]
    n_matched = len(matched)
    recall = n_matched / n_ref if n_ref else float("nan")
    precision = n_matched / n_pred if n_pred else float("nan")
    f1 = 2 * n_matched / (n_pred + n_ref) if n_pred + n_ref else float("nan")
    return {
        "n_ref": n_ref,
        "n_pred": n_pred,
        "n_matched": n_matched,
        "mean_iou": float(np.mean(matched)) if matched else float("nan"),
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "mean_best_iou": float(iou.max(axis=0).mean()) if n_ref and n_pred else 0.0,
    }


def summarize_comparisons(rows: Iterable[Mapping[str, float | int]]) -> dict[str, float | int]:
    """Pool per-field comparisons: cell-weighted mean IoU, recall and precision."""
    rows = list(rows)
    n_ref = sum(int(r["n_ref"]) for r in rows)
    n_pred = sum(int(r["n_pred"]) for r in rows)
    n_matched = sum(int(r["n_matched"]) for r in rows)
    iou_sum = sum(float(r["mean_iou"]) * int(r["n_matched"]) for r in rows if r["n_matched"])
    return {
        "fields": len(rows),
        "n_ref": n_ref,
        "n_pred": n_pred,
        "n_matched": n_matched,
        "mean_iou": iou_sum / n_matched if n_matched else float("nan"),
        "recall": n_matched / n_ref if n_ref else float("nan"),
        "precision": n_matched / n_pred if n_pred else float("nan"),
    }
