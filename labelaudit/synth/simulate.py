"""Synthetic HPA-2021-layout datasets with known label noise and image faults.

Every field is a few generated cells: nuclei (blue), microtubules (red, filaments
radiating from the centrosome), endoplasmic reticulum (yellow, a perinuclear
reticular network) and a green channel whose pattern follows the field's TRUE classes,
one generator per HPA 2021 class. A fraction of the fields then gets label noise in
the GIVEN labels (``missing``, ``extra``, ``swap``) and a separate fraction gets an
image fault (``dim``, ``saturated``, ``blur``, ``artifact``). ``truth.csv`` records
what was injected, so detectors can be scored against it.

Everything is drawn from ``numpy.random.default_rng`` generators seeded from ``seed``:
the same arguments give byte-identical files. Each field's pixels come from their own
generator (seeded with ``[seed, field index]``) and depend only on that, the field's
true labels and its fault; true labels and IDs are drawn before any noise, so changing
``noise_rate`` changes the given labels only.

Label sets and noise
--------------------
True label sets follow the HPA 2021 class frequencies and labels-per-field counts,
with every class raised to at least :data:`CLASS_FLOOR` (5 %) of the fields and
Negative never combined with other classes (see :func:`sample_label_sets`).
Exactly ``round(noise_rate * n)`` fields get label noise (``missing``: one true
label dropped, only with two or more labels; ``extra``: one false label added;
``swap``: one label replaced by a plausible confusion from :data:`CONFUSIONS`) and,
drawn independently, exactly ``round(fault_rate * n)`` fields get an image fault
(``dim``, ``saturated``, ``blur``, ``artifact``; Negative fields only ``blur`` or
``artifact``, the others would not show). A field with both has ``noise`` like
``swap;blur``.

Cell-level truth
----------------
With ``partial_cells > 0`` a fraction of the fields express their true classes in only
some of their cells (for each true class, a random 1..m-1 of the m cells that would
show it; the pattern is zeroed in the other cells and in the background nearest to
them, so they carry no trace of it; a cell left with no class is as dark in green as a
Negative field). With ``partial_cells > 0`` or ``write_masks``, ``truth.csv`` gains a
``cells`` column: for every TRUE or GIVEN class of the field (class ids ascending), how
many of the field's cells show it, out of how many cells::

    0:3/8;5:0/8;16:8/8

(class 0 in 3 of 8 cells, class 5 in none: a label no cell supports, e.g. an injected
``extra``; class 16 in all). Read it with :func:`parse_cells_column`. A class that is
only a GIVEN label (``extra``, the new label of a ``swap``) is shown by 0 cells. Some
classes are never shown by every cell even in fully expressing fields: Mitotic spindle
(11) only by the 1-2 mitotic cells, nuclear membrane, nucleoli, fibrillar center,
speckles, nuclear bodies and Golgi not by mitotic cells, Aggresome by ~75 % of the
cells, and a compact pattern (a centrosome) can fall outside a cell cut by the field
border; the counts say what is visible (a cell shows a class when at least
``max(3, 0.01 * r^2)`` of its pixels reach half the pattern's peak, r the mean nucleus
radius in pixels). Negative (18) counts the cells that show no class. Partial
expression is not label noise: the ``noise`` column does not mention it, and the field's
true labels stay true (every true class is shown by at least one cell whenever it is
in the full field).

With ``write_masks`` the true cell label images are written as
``masks/{ID}_predictedmask.png`` (the HPA competition mask format: background 0, cell
``j`` has value ``j``, 8-bit, 16-bit beyond 255 cells). Every cell of the field is in
the mask, including cells cut by the field border; the cells counted in ``cells`` are
exactly the mask's cells (the denominator is the highest mask value), and cell ``j``
of the mask is entry ``j - 1`` of :attr:`FieldCells.shown` (:func:`render_field_cells`).

The cell-level draws come from their own streams (which fields are partial, and each
partial field's cell subsets), so enabling them changes neither the labels, the noise,
nor the pixels of the other fields; a partial field is its fully expressing twin with
some cells' class patterns removed. Negative fields have no pattern to split; a class
shown by one cell at most (a lone mitotic spindle, or any class in a one-cell field)
stays as it is. With the defaults the output is byte-identical to what it was before
these options existed.

Near-duplicates
---------------
``synthesize(duplicates=m)`` plants copies of ``m`` distinct fields, shifted by a few
pixels and re-noised, after the ``n`` fields (:func:`plant_duplicates`). ``truth.csv``
then gains a ``duplicate_of`` column (the original's ID, empty elsewhere); a copy's
``noise`` is ``duplicate`` (same given labels as its original) or, for a third of
them, ``duplicate_conflict`` (given labels changed).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from labelaudit.core.errors import SettingsError
from labelaudit.core.io import write_csv
from labelaudit.core.params import (
    Constraint,
    InstanceOf,
    Integral,
    Interval,
    Real,
    validate_params,
)
from labelaudit.data.hpa_stats import NEGATIVE
from labelaudit.synth.cells import FieldCells, format_cells_column, parse_cells_column
from labelaudit.synth.duplicates import DUPLICATE_TYPES, near_copy, plant_duplicates
from labelaudit.synth.faults import (
    FAULT_TYPES,
    fault_artifact,
    fault_blur,
    fault_dim,
    fault_saturated,
)
from labelaudit.synth.labelsets import (
    CLASS_FLOOR,
    CONFUSIONS,
    LABEL_NOISE_TYPES,
    class_probabilities,
    format_label_set,
    inject_label_noise,
    sample_label_sets,
)
from labelaudit.synth.render import render_field, render_field_cells

__all__ = [
    "CLASS_FLOOR",
    "CONFUSIONS",
    "DUPLICATE_TYPES",
    "FAULT_TYPES",
    "FieldCells",
    "LABEL_NOISE_TYPES",
    "NOISE_TYPES",
    "class_probabilities",
    "fault_artifact",
    "fault_blur",
    "fault_dim",
    "fault_saturated",
    "format_cells_column",
    "inject_label_noise",
    "near_copy",
    "parse_cells_column",
    "plant_duplicates",
    "render_field",
    "render_field_cells",
    "sample_label_sets",
    "synthesize",
]

NOISE_TYPES: tuple[str, ...] = ("none", *LABEL_NOISE_TYPES, *FAULT_TYPES)

# Tags that keep the cell-level streams apart from the field streams ``[seed, i]``
# (SeedSequence pads with zeros, so a tag must be non-zero to make a distinct stream).
_PARTIAL_FIELD_TAG = 0x9A27
_PARTIAL_PICK_TAG = 0x9A28


# ---------------------------------------------------------------------------------------
# dataset


#: Largest field side and field count ``synthesize`` accepts: checked before anything
#: is written (a 100,000 px field would need 37 GiB per float32 channel).
MAX_SIZE = 4096
MAX_FIELDS = 1_000_000


def _check_args(
    out_dir: Path,
    n: int,
    size: int,
    noise_rate: float,
    fault_rate: float,
    seed: int,
    partial_cells: float = 0.0,
    write_masks: bool = False,
) -> None:
    values = {
        "n": n,
        "size": size,
        "seed": seed,
        "noise_rate": noise_rate,
        "fault_rate": fault_rate,
        "partial_cells": partial_cells,
        "write_masks": write_masks,
    }
    rate: list[Constraint] = [Interval(Real, 0, 1, closed="both")]
    constraints: dict[str, list[Constraint]] = {
        "n": [Interval(Integral, 1, MAX_FIELDS, text=f"from 1 to {MAX_FIELDS:,} fields")],
        "size": [Interval(Integral, 32, MAX_SIZE, text=f"from 32 to {MAX_SIZE} pixels")],
        "seed": [Interval(Integral, 0, None, closed="left", text="a non-negative integer")],
        "noise_rate": rate,
        "fault_rate": rate,
        "partial_cells": rate,
        "write_masks": [InstanceOf((bool, np.bool_), "true or false")],
    }
    validate_params(values, constraints, owner="synth")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise SettingsError(f"synth: {out_dir} exists and is not a directory")
        if any(out_dir.iterdir()):
            raise SettingsError(
                f"synth: {out_dir} exists and is not empty; choose a new or empty directory"
            )


def synthesize(
    out_dir: str | Path,
    n: int = 400,
    size: int = 128,
    noise_rate: float = 0.2,
    fault_rate: float = 0.05,
    seed: int = 0,
    progress: bool = False,
    *,
    partial_cells: float = 0.0,
    write_masks: bool = False,
    duplicates: int = 0,
) -> pd.DataFrame:
    """Write a synthetic HPA-2021-layout dataset with known label noise and image faults.

    Writes ``out_dir/train/{ID}_{red,green,blue,yellow}.png`` (8-bit grayscale,
    ``size`` x ``size``), ``out_dir/truth.csv`` (``ID,true_label,given_label,noise``)
    and, last, ``out_dir/train.csv`` (``ID,Label`` with the GIVEN labels), so an
    interrupted run leaves no loadable dataset behind. The label statistics, the noise,
    the cell-level truth and the near-duplicates are described in the module docstring.

    Parameters
    ----------
    out_dir
        Directory to create; it must not exist or be empty.
    n
        Number of fields (>= 1).
    size
        Field side in pixels (>= 32). Cells per field: 1-2 below 48 px, 2-3 below 96 px,
        3-4 up to 159 px (large cells, so the patterns survive downscaling to 64 px),
        then up to 8 (at 384 px and more).
    noise_rate, fault_rate
        Fraction of fields with label noise, and with an image fault, in [0, 1].
    seed
        Random seed (>= 0); the same arguments give byte-identical files.
    progress
        Show a progress bar on stderr.
    partial_cells
        Fraction of the non-Negative fields in which each true class is shown by only
        some of the cells that would show it (1..m-1 of m), in [0, 1].
    write_masks
        Also write the true cell label images ``masks/{ID}_predictedmask.png``.
    duplicates
        Near-duplicates to plant (0..n), appended after the ``n`` fields; not combined
        with ``partial_cells``/``write_masks``. With 0 the output is unchanged.

    Returns
    -------
    pandas.DataFrame
        The truth table: ``ID``, ``true_label``, ``given_label`` (``|``-separated ids),
        ``noise`` (``none`` or ``;``-joined noise types), ``cells`` when
        ``partial_cells > 0`` or ``write_masks``, ``duplicate_of`` with ``duplicates``.

    Raises
    ------
    SettingsError
        Bad arguments, or ``out_dir`` exists and is not empty.
    """
    out_dir = Path(out_dir)
    _check_args(out_dir, n, size, noise_rate, fault_rate, seed, partial_cells, write_masks)
    _check_duplicates(duplicates, n, partial_cells, write_masks)
    n, size, seed = int(n), int(size), int(seed)
    plan = _plan_fields(n, noise_rate, fault_rate, seed)
    with_cells = float(partial_cells) > 0 or bool(write_masks)
    partial = _partial_fields(plan.true, float(partial_cells), seed)
    cells_col = _write_fields(out_dir, plan, size, seed, partial, with_cells, write_masks, progress)

    truth = plan.truth_table()
    if with_cells:
        truth["cells"] = cells_col
    if duplicates:
        truth = plant_duplicates(out_dir / "train", truth, int(duplicates), seed)
    write_csv(out_dir / "truth.csv", truth)
    write_csv(
        out_dir / "train.csv", pd.DataFrame({"ID": truth["ID"], "Label": truth["given_label"]})
    )
    return truth


@dataclass
class _FieldPlan:
    """What every field of a dataset shows, drawn before any pixel.

    Attributes
    ----------
    true, given
        Sorted true and given class ids of each field.
    ids
        Field ids (``synth-{i:05d}-{hash}``).
    kinds
        The noise injected into each field (label noise, then the fault), maybe empty.
    faults
        Each field's image fault, or ``None``.
    """

    true: list[tuple[int, ...]]
    ids: list[str]
    given: list[tuple[int, ...]]
    kinds: list[list[str]]
    faults: list[str | None]

    def truth_table(self) -> pd.DataFrame:
        """``ID``, ``true_label``, ``given_label`` and ``noise`` of ``truth.csv``."""
        return pd.DataFrame(
            {
                "ID": self.ids,
                "true_label": [format_label_set(t) for t in self.true],
                "given_label": [format_label_set(g) for g in self.given],
                "noise": [";".join(k) if k else "none" for k in self.kinds],
            }
        )


def _plan_fields(n: int, noise_rate: float, fault_rate: float, seed: int) -> _FieldPlan:
    """Draw the fields' true labels, ids, label noise and faults from the ``seed`` stream.

    Exactly ``round(noise_rate * n)`` fields get label noise and, drawn independently,
    ``round(fault_rate * n)`` an image fault (Negative fields only ``blur`` or
    ``artifact``, the others would not show).
    """
    rng = np.random.default_rng(seed)
    true = sample_label_sets(n, rng)
    ids = [f"synth-{i:05d}-{h:08x}" for i, h in enumerate(rng.integers(0, 2**32, n))]
    noisy = np.zeros(n, dtype=bool)
    noisy[rng.permutation(n)[: int(round(noise_rate * n))]] = True
    faulty = np.zeros(n, dtype=bool)
    faulty[rng.permutation(n)[: int(round(fault_rate * n))]] = True

    plan = _FieldPlan(true=true, ids=ids, given=[], kinds=[], faults=[])
    for i in range(n):
        k: list[str] = []
        if noisy[i]:
            g, kind = inject_label_noise(true[i], rng)
            k.append(kind)
        else:
            g = true[i]
        fault = None
        if faulty[i]:
            options = ("blur", "artifact") if true[i] == (NEGATIVE,) else FAULT_TYPES
            fault = str(rng.choice(options))
            k.append(fault)
        plan.given.append(g)
        plan.kinds.append(k)
        plan.faults.append(fault)
    return plan


def _partial_fields(true: list[tuple[int, ...]], partial_cells: float, seed: int) -> np.ndarray:
    """Which fields express their classes in only some cells (bool per field).

    ``round(partial_cells * m)`` of the ``m`` non-Negative fields, drawn from their own
    stream: the labels, noise and other fields do not depend on it.
    """
    partial = np.zeros(len(true), dtype=bool)
    if partial_cells > 0:
        stained = np.flatnonzero([t != (NEGATIVE,) for t in true])
        pick = np.random.default_rng([seed, _PARTIAL_PICK_TAG, _PARTIAL_PICK_TAG])
        n_partial = int(round(partial_cells * len(stained)))
        partial[pick.permutation(stained)[:n_partial]] = True
    return partial


def _write_fields(
    out_dir: Path,
    plan: _FieldPlan,
    size: int,
    seed: int,
    partial: np.ndarray,
    with_cells: bool,
    write_masks: bool,
    progress: bool,
) -> list[str]:
    """Render and write every field's channels (and masks); returns the ``cells`` column.

    Field ``i``'s pixels come from its own generator ``[seed, i]`` (a partial field's
    cell subsets from ``[seed, i, tag]``); the column is empty without ``with_cells``.
    """
    cells_col: list[str] = []
    img_dir = out_dir / "train"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir = out_dir / "masks"
    if write_masks:
        mask_dir.mkdir()
    true, given, ids = plan.true, plan.given, plan.ids
    bar = _progress(len(ids)) if progress else None
    try:
        for i in range(len(ids)):
            field_rng = np.random.default_rng([int(seed), i])
            if with_cells:
                part_rng = (
                    np.random.default_rng([seed, i, _PARTIAL_FIELD_TAG]) if partial[i] else None
                )
                chans, fc = render_field_cells(true[i], size, field_rng, plan.faults[i], part_rng)
                cells_col.append(format_cells_column(fc.counts((*true[i], *given[i]))))
                if write_masks:
                    _save_mask(mask_dir / f"{ids[i]}_predictedmask.png", fc.mask)
            else:
                chans = render_field(true[i], size, field_rng, plan.faults[i])
            for name, arr in chans.items():
                Image.fromarray(arr).save(
                    img_dir / f"{ids[i]}_{name}.png", format="PNG", compress_level=1
                )
            if bar is not None:
                bar[0].update(bar[1], advance=1)
    finally:
        if bar is not None:
            bar[0].stop()
    return cells_col


def _check_duplicates(duplicates: int, n: int, partial_cells: float, write_masks: bool) -> None:
    count = [Interval(Integral, 0, n, closed="both", text=f"from 0 to n ({n})")]
    validate_params({"duplicates": duplicates}, {"duplicates": count}, owner="synth")
    if duplicates and (float(partial_cells) > 0 or write_masks):
        raise SettingsError("synth: duplicates cannot be combined with partial_cells or masks")


def _save_mask(path: Path, label: np.ndarray) -> None:
    """Write a cell label image as an 8-bit PNG (16-bit beyond 255 cells)."""
    dtype = np.uint8 if int(label.max()) <= 255 else np.uint16
    Image.fromarray(label.astype(dtype)).save(path, format="PNG", compress_level=1)


def _progress(n: int):  # -> (Progress, task id)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("generating fields"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
    bar.start()
    return bar, bar.add_task("synth", total=n)
