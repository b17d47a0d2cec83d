"""Planted near-duplicates: shifted, re-noised copies of written fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from labelaudit.data.classes import HPA_CHANNELS
from labelaudit.synth.faults import FAULT_TYPES
from labelaudit.synth.labelsets import format_label_set, inject_label_noise

#: Noise of a planted near-duplicate (``synthesize(duplicates=N)``): a copy with the
#: same given labels, or one whose given labels differ from its original's.
DUPLICATE_TYPES: tuple[str, ...] = ("duplicate", "duplicate_conflict")

# A non-zero tag keeps the duplicates' stream apart from the field streams ``[seed, i]``.
DUPLICATE_TAG = 0x9A29


def near_copy(channels: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A near-duplicate of a field: shifted by a few pixels and re-noised.

    The shift (up to 1/32 of the side, at least 1 px, never zero) is the same in every
    channel, with the border reflected; fresh camera noise (sigma 2 grey levels) is
    added per channel.

    Parameters
    ----------
    channels
        Channel name -> uint8 image (all the same shape).
    rng
        Random generator.

    Returns
    -------
    dict
        The copy's channels, uint8.
    """
    shape = next(iter(channels.values())).shape
    s = max(1, max(shape) // 32)
    dy, dx = 0, 0
    while dy == 0 and dx == 0:
        dy, dx = (int(v) for v in rng.integers(-s, s + 1, 2))
    out = {}
    for name, arr in channels.items():
        padded = np.pad(arr.astype(np.float32), s, mode="reflect")
        moved = padded[s + dy : s + dy + shape[0], s + dx : s + dx + shape[1]]
        noisy = moved + rng.normal(0.0, 2.0, shape)
        out[name] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out


def plant_duplicates(img_dir: Path, truth: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """Append ``count`` near-duplicates of distinct fields to a written dataset.

    Each copy (:func:`near_copy`) gets a new ID ``synth-{n + j:05d}-{hash}``, its
    original's true labels and, for ``round(count / 3)`` of them
    (``duplicate_conflict``), given labels changed by :func:`inject_label_noise`;
    the others (``duplicate``) keep the original's given labels. A copy inherits its
    original's image fault (the pixels carry it) and, when its labels are not
    changed, the original's label noise. Draws come from their own stream.

    Parameters
    ----------
    img_dir
        The dataset's image directory (originals are read from it, copies written).
    truth
        The truth table of the ``n`` fields written so far.
    count
        Copies to plant (<= n).
    seed
        The dataset's seed.

    Returns
    -------
    pandas.DataFrame
        ``truth`` with the copies appended and a ``duplicate_of`` column.
    """
    n = len(truth)
    rng = np.random.default_rng([seed, DUPLICATE_TAG])
    originals = rng.choice(n, size=count, replace=False)
    conflict = np.zeros(count, dtype=bool)
    conflict[rng.permutation(count)[: int(round(count / 3))]] = True
    hashes = rng.integers(0, 2**32, count)
    rows = []
    for j, (i, changed, h) in enumerate(zip(originals, conflict, hashes, strict=True)):
        src = truth.iloc[int(i)]
        new_id = f"synth-{n + j:05d}-{int(h):08x}"
        chans = {
            name: np.asarray(Image.open(img_dir / f"{src['ID']}_{name}.png"))
            for name in HPA_CHANNELS
        }
        for name, arr in near_copy(chans, rng).items():
            Image.fromarray(arr).save(
                img_dir / f"{new_id}_{name}.png", format="PNG", compress_level=1
            )
        kinds = [k for k in str(src["noise"]).split(";") if k != "none"]
        given = str(src["given_label"])
        if changed:
            labels = tuple(int(c) for c in given.split("|"))
            given = format_label_set(inject_label_noise(labels, rng)[0])
            kinds = [k for k in kinds if k in FAULT_TYPES] + ["duplicate_conflict"]
        else:
            kinds.append("duplicate")
        rows.append(
            {
                "ID": new_id,
                "true_label": src["true_label"],
                "given_label": given,
                "noise": ";".join(kinds),
                "duplicate_of": src["ID"],
            }
        )
    out = truth.assign(duplicate_of="")
    return pd.concat([out, pd.DataFrame(rows, columns=out.columns)], ignore_index=True)
