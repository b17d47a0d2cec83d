"""Cell-level truth of a field: which cells show each class, and the ``cells`` column
of ``truth.csv`` that records it (see :mod:`labelaudit.synth.simulate`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from labelaudit.data.hpa_stats import NEGATIVE

# Half the peak of a class pattern (patterns peak at ~1): a cell shows the class when
# enough of its pixels reach it. Faint hazes some patterns add (speckles 0.22 over the
# whole nucleus, aggresome 0.06 over the cytoplasm) stay below it.
SHOWN_LEVEL: float = 0.5


@dataclass(frozen=True)
class FieldCells:
    """The true cells of a rendered field and which of them show each class.

    Attributes
    ----------
    mask
        int32 label image: 0 background, ``j`` = cell ``j`` (1-based), every cell of
        the field included, also those cut by the field border.
    shown
        True class id -> bool array over the cells (index ``j - 1`` for mask value
        ``j``): whether the cell visibly shows the class.
    """

    mask: np.ndarray
    shown: dict[int, np.ndarray]

    @property
    def n_cells(self) -> int:
        """Number of cells in the field (the highest mask value)."""
        return int(self.mask.max())

    def counts(self, classes: Sequence[int]) -> dict[int, tuple[int, int]]:
        """``class -> (cells showing it, cells in the field)`` for ``classes``.

        A class the field does not carry is shown by 0 cells; Negative (18) is shown by
        the cells that show no class.
        """
        n = self.n_cells
        out: dict[int, tuple[int, int]] = {}
        for c in sorted(set(int(k) for k in classes)):
            if c == NEGATIVE:
                some = np.zeros(n, dtype=bool)
                for k, s in self.shown.items():
                    if k != NEGATIVE:
                        some |= s
                out[c] = (int((~some).sum()), n)
            elif c in self.shown:
                out[c] = (int(self.shown[c].sum()), n)
            else:
                out[c] = (0, n)
        return out


def shown_cells(pattern: np.ndarray, label: np.ndarray, n_cells: int, unit: float) -> np.ndarray:
    """Which cells show a class pattern (bool per cell), see :data:`SHOWN_LEVEL`."""
    hits = np.bincount(label[pattern >= SHOWN_LEVEL], minlength=n_cells + 1)[1:]
    # Enough pixels that a stray edge of a neighbour's structure does not count; scales
    # with the cell size like the patterns do (a centrosome dot covers ~0.3 r^2).
    return hits >= max(3.0, 0.01 * unit * unit)


def partial_subset(shown: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cells that keep a class in a partial field: 1..m-1 of the m cells showing it.

    With fewer than two such cells the class is left as it is (already shown by at most
    one cell); otherwise every other cell loses it.
    """
    idx = np.flatnonzero(shown)
    if len(idx) < 2:
        return np.ones(len(shown), dtype=bool)
    k = int(rng.integers(1, len(idx)))
    keep = np.zeros(len(shown), dtype=bool)
    keep[rng.choice(idx, size=k, replace=False)] = True
    return keep


def nearest_cell(label: np.ndarray) -> np.ndarray:
    """The label image with every background pixel given its nearest cell's value."""
    if not (label == 0).any():
        return label
    iy, ix = ndimage.distance_transform_edt(label == 0, return_distances=False, return_indices=True)
    return label[iy, ix]


def format_cells_column(counts: dict[int, tuple[int, int]]) -> str:
    """Write per-class cell counts as ``class:shown/total`` joined by ``;`` (ids ascending).

    Parameters
    ----------
    counts
        ``class id -> (cells showing it, cells in the field)``.

    Returns
    -------
    str
        E.g. ``0:3/8;5:0/8;16:8/8``.
    """
    return ";".join(f"{c}:{k}/{n}" for c, (k, n) in sorted(counts.items()))


def parse_cells_column(text: str) -> dict[int, tuple[int, int]]:
    """Read a ``cells`` value of ``truth.csv`` (see the module docstring).

    Parameters
    ----------
    text
        E.g. ``0:3/8;5:0/8;16:8/8``; surrounding spaces are ignored, an empty string
        gives an empty dict.

    Returns
    -------
    dict
        ``class id -> (cells showing it, cells in the field)``.

    Raises
    ------
    ValueError
        A malformed entry, a repeated class, or counts outside ``0 <= shown <= total``,
        ``total >= 1``.
    """
    out: dict[int, tuple[int, int]] = {}
    text = str(text).strip()
    if not text:
        return out
    for part in text.split(";"):
        item = part.strip()
        try:
            cls, frac = item.split(":")
            k, n = frac.split("/")
            c, k_i, n_i = int(cls), int(k), int(n)
        except ValueError:
            raise ValueError(
                f"bad cells entry {item!r}; expected class:shown/total like '0:3/8'"
            ) from None
        if c < 0 or n_i < 1 or not 0 <= k_i <= n_i:
            raise ValueError(f"bad cells entry {item!r}; needs 0 <= shown <= total, total >= 1")
        if c in out:
            raise ValueError(f"class {c} appears twice in cells {text!r}")
        out[c] = (k_i, n_i)
    return out
