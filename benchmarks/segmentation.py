"""Cell segmentation against the reference masks of the real HPA fields, and its speed.

On the fields of ``../shared/hpa-samples`` (4 at 2048 px, 1 at 3072 px) this script
segments every field with the default :class:`~labelaudit.cells.SegmentParams` and
matches the cells to ``masks/{ID}_predictedmask.png`` (one-to-one, IoU >= 0.5):

- ``all``: border cells kept on both sides (the reference keeps them), the headline;
- ``interior``: the segmentation's real output (cells cut by the border dropped)
  against the reference's cells that do not touch the border.

It prints, per field and pooled over cells, the mean IoU of matched cells and the
fraction of reference cells found, and the seconds per field of ``segment_field``
alone and of decode + segment (best of ``--repeats``, one process, one thread).

Usage: ``python benchmarks/segmentation.py [DATASET] [--masks DIR] [--repeats 3]
[--pictures DIR]``; ``--pictures`` writes the overlays used in ``docs/cells.md``.
"""

from __future__ import annotations

import os

# One core: no BLAS/OpenMP threads (scipy.ndimage and scikit-image run single-threaded).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from labelaudit.cells import (  # noqa: E402
    SegmentParams,
    compare_masks,
    drop_border_cells,
    load_masks,
    overlay_image,
    read_field,
    save_image,
    segment_field,
    summarize_comparisons,
)
from labelaudit.data.layouts import load_dataset  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent.parent / "shared" / "hpa-samples"


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--masks", type=Path, default=None, help="default: DATASET/masks")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pictures", type=Path, default=None)
    args = parser.parse_args(argv)

    dataset = load_dataset(args.dataset)
    masks = load_masks(args.masks or args.dataset / "masks", dataset.ids)
    params = SegmentParams()
    rows, all_rows, interior_rows = [], [], []
    for i, image_id in enumerate(dataset.ids):
        t_decode, channels = best_of(lambda i=i: read_field(dataset, i), args.repeats)
        t_seg, full = best_of(
            lambda ch=channels: segment_field(ch, params, drop_border=False), args.repeats
        )
        cells = drop_border_cells(full)
        ref = np.asarray(masks[image_id])
        a = compare_masks(full, ref)
        b = compare_masks(cells, ref, exclude_border=True)
        all_rows.append(a)
        interior_rows.append(b)
        side = max(ref.shape)
        rows.append((image_id, side, a, b, t_seg, t_decode))
        if args.pictures is not None:
            # Border cells kept (the headline comparison); reference in magenta.
            picture = overlay_image(channels, full, reference=ref, max_side=640)
            save_image(args.pictures / f"cells_{image_id[:8]}.jpg", picture, quality=75)

    print(f"dataset: {args.dataset} ({len(dataset)} fields), reference: {masks.root}")
    print(f"params: {params.to_dict()}\n")
    header = (
        "field      px    all: ref found  IoU   | interior: ref found  IoU   | segment s  decode s"
    )
    print(header)
    for image_id, side, a, b, t_seg, t_dec in rows:
        print(
            f"{image_id[:8]}  {side:4d}  {a['n_ref']:3d} {a['n_matched']:3d}  "
            f"{a['mean_iou']:.3f}      {b['n_ref']:3d} {b['n_matched']:3d}  "
            f"{b['mean_iou']:.3f}      {t_seg:6.3f}  {t_dec:6.3f}"
        )
    for name, pooled in (
        ("all cells (headline)", summarize_comparisons(all_rows)),
        ("interior cells", summarize_comparisons(interior_rows)),
    ):
        print(
            f"\n{name}: mean IoU of matched cells {pooled['mean_iou']:.3f}, "
            f"found {pooled['n_matched']}/{pooled['n_ref']} = {pooled['recall']:.1%} "
            f"of reference cells, {pooled['n_pred']} segmented "
            f"({pooled['precision']:.1%} matched)"
        )
    seg2048 = [r[4] for r in rows if r[1] == 2048]
    dec2048 = [r[5] for r in rows if r[1] == 2048]
    if seg2048:
        print(
            f"\nper 2048 px field, one core: segment {np.mean(seg2048):.3f} s, "
            f"decode 4 PNGs {np.mean(dec2048):.3f} s (mean of {len(seg2048)} fields, "
            f"best of {args.repeats})"
        )
    for image_id, side, _, _, t_seg, t_dec in rows:
        if side != 2048:
            print(f"{image_id[:8]} ({side} px): segment {t_seg:.3f} s, decode {t_dec:.3f} s")


if __name__ == "__main__":
    main()
