"""Cell-level analysis: segmentation, mask files and comparison, overlays, cell crops.

HPA labels describe a whole field, yet a field holds many cells. This package finds
the cells (:func:`segment_field`, or masks made elsewhere via :func:`load_masks`),
scores a segmentation against reference masks (:func:`compare_masks`), draws
overlays, and builds the cell cache (:func:`build_cell_cache`): one masked crop per
cell in the field cache's memory-mapped format, each cell knowing its field.
"""

from __future__ import annotations

from labelaudit.cells.crops import CellCache, build_cell_cache, cell_id, crop_cells
from labelaudit.cells.dataset import cell_table, format_comparison, read_field, segment_dataset
from labelaudit.cells.masks import (
    MaskSet,
    compare_masks,
    find_mask,
    load_masks,
    read_mask,
    summarize_comparisons,
    write_mask,
)
from labelaudit.cells.overlay import composite, overlay_image, save_image
from labelaudit.cells.segment import (
    SegmentParams,
    drop_border_cells,
    estimate_nucleus_diameter,
    segment_field,
)

__all__ = [
    "CellCache",
    "MaskSet",
    "SegmentParams",
    "build_cell_cache",
    "cell_id",
    "cell_table",
    "compare_masks",
    "composite",
    "crop_cells",
    "drop_border_cells",
    "estimate_nucleus_diameter",
    "find_mask",
    "format_comparison",
    "load_masks",
    "overlay_image",
    "read_field",
    "read_mask",
    "save_image",
    "segment_dataset",
    "segment_field",
    "summarize_comparisons",
    "write_mask",
]
