"""Two small HPA-layout datasets where B holds copies of A's fields, made four ways."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from labelaudit.data.classes import HPA_CHANNELS
from labelaudit.synth.simulate import near_copy, synthesize

#: B's copies of A: id in B -> (how it was made, the row of A it copies).
COPIES = {
    "copy-exact": ("exact", 2),
    "copy-near": ("shifted and re-noised", 5),
    "copy-crop": ("cropped 5 % off two sides, resized back", 7),
    "copy-jpeg": ("re-encoded as JPEG (quality 75)", 8),
}


def _read(folder: Path, field: str) -> dict[str, np.ndarray]:
    return {c: np.asarray(Image.open(folder / f"{field}_{c}.png")) for c in HPA_CHANNELS}


def _write(folder: Path, field: str, chans: dict[str, np.ndarray]) -> None:
    for c, arr in chans.items():
        Image.fromarray(arr).save(folder / f"{field}_{c}.png")


def _crop(chans: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for c, arr in chans.items():
        s = arr.shape[0]
        cut = max(1, round(0.05 * s))
        part = Image.fromarray(arr[cut:, : s - cut])
        out[c] = np.asarray(part.resize((s, s), Image.Resampling.BILINEAR))
    return out


def _jpeg(chans: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for c, arr in chans.items():
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=75)
        out[c] = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    return out


def two_datasets(tmp_path: Path, size: int = 64) -> tuple[Path, Path, pd.DataFrame]:
    """A (10 synth fields) and B (6 others, plus :data:`COPIES` of A's fields).

    B's copies carry their original's given label; B also holds ``same-class``, a
    field with the true classes of one of A's fields that is not a copy of any.

    Returns
    -------
    a, b, truth_a
        The two dataset folders and A's truth table.
    """
    a, b = tmp_path / "A", tmp_path / "B"
    ta = synthesize(a, n=10, size=size, seed=1)
    tb = synthesize(b, n=6, size=size, seed=2)
    ids_a = ta["ID"].tolist()
    rng = np.random.default_rng(0)
    labels = []
    for name, (how, row) in COPIES.items():
        src = ids_a[row]
        if how == "exact":
            for c in HPA_CHANNELS:
                shutil.copy(a / "train" / f"{src}_{c}.png", b / "train" / f"{name}_{c}.png")
        else:
            chans = _read(a / "train", src)
            made = {"shifted": near_copy(chans, rng), "cropped": _crop(chans)}.get(
                how.split()[0], _jpeg(chans)
            )
            _write(b / "train", name, made)
        labels.append(ta["given_label"][row])
    # Not a copy: a fresh field whose true classes are those of a field of A.
    fresh = synthesize(tmp_path / "fresh", n=20, size=size, seed=9)
    shared = fresh[fresh["true_label"].isin(set(ta["true_label"]))]
    assert len(shared), "no fresh field shares a field of A's classes"
    same = shared.iloc[0]
    for c in HPA_CHANNELS:
        shutil.copy(
            tmp_path / "fresh" / "train" / f"{same['ID']}_{c}.png",
            b / "train" / f"same-class_{c}.png",
        )
    rows = pd.DataFrame({"ID": [*tb["ID"], *COPIES, "same-class"]})
    rows["Label"] = [*tb["given_label"], *labels, same["true_label"]]
    rows.to_csv(b / "train.csv", index=False)
    return a, b, ta
