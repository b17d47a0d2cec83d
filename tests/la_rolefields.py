"""Hand-made fields with known answers for the roles tests (issue 23).

Four 64 px stains of blurred spots plus camera noise; classes Cytosol, Nucleoplasm
and the exclusive Negative, whose fields carry camera noise only in green (as HPA's
Negative fields do).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from labelaudit.data.measures import channel_stats
from labelaudit.detect.base import AuditInputs

CHANNELS = ("red", "green", "blue", "yellow")
CLASSES = ["Cytosol", "Nucleoplasm", "Negative"]
N = 60
NEGATIVE = 2


def stain(rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    spots = np.zeros((64, 64))
    ys, xs = rng.integers(4, 60, (2, 25))
    spots[ys, xs] = rng.uniform(0.6, 1.0, 25)
    return ndimage.gaussian_filter(spots, 1.2) * 800 * rng.uniform(0.8, 1.2) * scale


def field(rng: np.random.Generator, green: str, refs: float = 1.0) -> dict[str, np.ndarray]:
    """``green``: ``"normal"``, ``"empty"`` (camera noise only), ``"sparse"`` (one dim
    4 x 4 spot) or ``"dim"`` (x 0.2,
    under-exposed but structured); ``refs`` scales the references (0.05: dim everywhere)."""
    out = {}
    for ch in CHANNELS:
        if ch == "green":
            x = {"normal": 1.0, "empty": 0.0, "dim": 0.2, "sparse": 0.0}[green] * stain(rng)
            if green == "sparse":  # a few dim nucleoli: p99 at the noise, one bright block
                x[20:24, 30:34] = 40.0
        else:
            x = stain(rng, refs)
        x = x + 3 + rng.standard_normal(x.shape)
        out[ch] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out


def role_inputs(
    special: dict[int, tuple[list[int], str, float]], exclusive: tuple[str, ...] = ("Negative",)
) -> AuditInputs:
    """N fields: every fifth a true Negative, the rest Cytosol or Nucleoplasm; ``special``
    overrides a field's (given labels, green, reference scale)."""
    rng = np.random.default_rng(5)
    labels = np.zeros((N, len(CLASSES)), dtype=bool)
    rows = []
    for i in range(N):
        given, green, refs = special.get(
            i, ([NEGATIVE], "empty", 1.0) if i % 5 == 0 else ([i % 2], "normal", 1.0)
        )
        labels[i, given] = True
        row: dict[str, object] = {"id": f"f{i}", "height": 64, "width": 64}
        for ch, arr in field(rng, green, refs).items():
            row.update({f"{ch}_{k}": v for k, v in channel_stats(arr).items()})
        rows.append(row)
    return AuditInputs(
        ids=[f"f{i}" for i in range(N)],
        class_names=CLASSES,
        class_tokens=["16", "0", "18"],
        label_sep="|",
        labels=labels,
        stats=pd.DataFrame(rows),
        exclusive_classes=exclusive,
    )


#: Field index -> (given labels, green, reference scale) of the known-answer cases.
CASES = {
    1: ([0], "empty", 1.0),  # empty green, normal references, given Cytosol
    3: ([0], "empty", 0.05),  # every stain dim
    7: ([1], "dim", 1.0),  # a dim but structured protein stain (under-exposed)
    9: ([1], "sparse", 1.0),  # sparse dim spots: as empty as Negative but for one block
}
