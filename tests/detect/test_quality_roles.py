"""An empty protein stain is label evidence, a dark field is an image fault (issue 23).

Hand-made fields with known answers: four 64 px stains of blurred spots plus camera
noise; classes Cytosol, Nucleoplasm and the exclusive Negative, whose fields carry
camera noise only in green (as HPA's Negative fields do).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from labelaudit.data.cache import channel_stats
from labelaudit.detect import get_detector
from labelaudit.detect.base import AuditInputs

CHANNELS = ("red", "green", "blue", "yellow")
CLASSES = ["Cytosol", "Nucleoplasm", "Negative"]
N = 60
NEGATIVE = 2


def _stain(rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    spots = np.zeros((64, 64))
    ys, xs = rng.integers(4, 60, (2, 25))
    spots[ys, xs] = rng.uniform(0.6, 1.0, 25)
    return ndimage.gaussian_filter(spots, 1.2) * 800 * rng.uniform(0.8, 1.2) * scale


def _field(rng: np.random.Generator, green: str, refs: float = 1.0) -> dict[str, np.ndarray]:
    """``green``: ``"normal"``, ``"empty"`` (camera noise only) or ``"dim"`` (x 0.2,
    under-exposed but structured); ``refs`` scales the references (0.05: dim everywhere)."""
    out = {}
    for ch in CHANNELS:
        if ch == "green":
            x = {"normal": 1.0, "empty": 0.0, "dim": 0.2}[green] * _stain(rng)
        else:
            x = _stain(rng, refs)
        x = x + 3 + rng.standard_normal(x.shape)
        out[ch] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out


def _inputs(
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
        for ch, arr in _field(rng, green, refs).items():
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


def _flagged(result, i: int) -> set[str]:
    f = result.findings
    return set(f.loc[(f["id"] == f"f{i}") & f["flagged"], "class"])


CASES = {
    1: ([0], "empty", 1.0),  # empty green, normal references, given Cytosol
    3: ([0], "empty", 0.05),  # every stain dim
    7: ([1], "dim", 1.0),  # a dim but structured protein stain (under-exposed)
}


def test_empty_protein_stain_given_cytosol_is_label_evidence_not_an_image_fault():
    result = get_detector("quality").run(_inputs(CASES))
    assert _flagged(result, 1) == {"empty_target:green"}
    assert not result.image_flagged[1]
    assert result.columns["quality_issues"][1] == ""
    assert result.columns["stain_evidence"][1] == "protein stain empty: looks Negative"
    assert result.label_evidence["empty_target"][1] > 6
    assert result.image_score[1] < 6
    assert "empty_target" not in result.evidence_scores


def test_every_stain_dim_is_an_image_fault():
    result = get_detector("quality").run(_inputs(CASES))
    kinds = _flagged(result, 3)
    assert result.image_flagged[3]
    assert {"dark:red", "dark:blue", "dark:yellow"} <= kinds
    assert "empty_target:green" not in kinds
    assert result.columns["stain_evidence"][3] == ""


def test_dim_structured_protein_stain_stays_an_image_fault():
    result = get_detector("quality").run(_inputs(CASES))
    kinds = _flagged(result, 7)
    assert kinds & {"dark:green", "low_information:green", "blurry:green"}
    assert "empty_target:green" not in kinds
    assert result.image_flagged[7]
    assert result.columns["stain_evidence"][7] == ""


def test_a_real_negative_field_is_not_an_image_problem():
    result = get_detector("quality").run(_inputs(CASES))
    negatives = [i for i in range(N) if i % 5 == 0 and i not in CASES]
    assert not result.image_flagged[negatives].any()
    assert all(result.columns["stain_evidence"][i] == "" for i in negatives)


def test_without_an_exclusive_class_an_empty_stain_stays_an_image_fault():
    result = get_detector("quality").run(_inputs(CASES, exclusive=()))
    assert "dark:green" in _flagged(result, 1)
    assert result.image_flagged[1]
    assert not result.label_evidence


def test_the_default_order_counts_the_empty_stain_in_the_label_family():
    from labelaudit.compare import family_scores

    result = get_detector("quality").run(_inputs(CASES))
    fam = family_scores({"quality": result})
    assert fam.label[1] >= 1 > fam.image[1]  # strong label evidence, no image evidence
    assert fam.image[3] >= 1  # the dim field is an image problem
    assert fam.evidence[1].startswith("protein stain empty: looks Negative z=")
