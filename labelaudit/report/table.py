"""The issue table's rows: one named record per image, most suspicious first.

``report.js`` reads each record by field name (``row.id``, ``row.given``, ...); the
field list is :class:`TableRow`'s (the dataset index ``image`` stays here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from labelaudit.report import analysis as an
from labelaudit.report.artifacts import RunArtifacts


@dataclass
class TableRow:
    """One image of the issue table.

    Attributes
    ----------
    id
        Image id.
    given, suggested
        Class indices of the given and the suggested labels.
    detectors
        Bitmask over the page's detector list: bit ``b`` set when detector ``b`` flagged it.
    n_flags, consensus, consensus_flag
        ``issues.csv``'s ``n_flags``, ``consensus_score`` (rounded) and ``consensus_flag``.
    scores
        The per-image scores, in the order of the page's score columns (``None``: missing).
    changes, unreliable, evidence
        ``issues.csv``'s ``label_changes``, ``unreliable_classes`` and ``evidence``
        (the detectors that put the row at its place in the default order) texts.
    duplicate
        The image's duplicate group (``issues.csv``'s ``duplicate_group``, an integer
        id shown as such) and the image it copies, ``""`` when in none.
    changed, doubtful
        Per label: the trusted suggested changes, ``[class, "+" or "-", confidence
        or None]`` (``issues.csv``'s ``label_changes``), and the flagged labels
        without a suggestion, ``[class, "+" or "-", probability or None]``: which way
        the evidence points (``doubtful_labels``).
    thumb, detail
        Index of the embedded thumbnail / detail tile, ``-1`` when none is embedded.
    image
        Row of the image in ``dataset.csv`` (``-1``: not a dataset image); not embedded.
    """

    id: str
    given: list[int]
    suggested: list[int]
    detectors: int
    n_flags: int
    consensus: float
    consensus_flag: bool
    scores: list[float | None]
    changes: str
    unreliable: str
    image: int
    evidence: str = ""
    duplicate: str = ""
    changed: list[list[Any]] = field(default_factory=list)
    doubtful: list[list[Any]] = field(default_factory=list)
    thumb: int = -1
    detail: int = -1

    def record(self) -> dict[str, Any]:
        """The record embedded in the page (every field but ``image``)."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}


#: The fields embedded in the page, in order (``image`` is only needed here).
RECORD_FIELDS = tuple(f.name for f in fields(TableRow) if f.name != "image")


#: One entry of ``label_changes`` / ``doubtful_labels``: ``+token (0.91)``,
#: ``-token (p=0.05)`` or ``+token``.
_CHANGE = re.compile(r"^([+-])(.+?)(?: \((?:p=)?([0-9.]+)\))?$")


def parse_changes(art: RunArtifacts, text: Any) -> list[list[Any]]:
    """``[class, sign, number or None]`` per entry of a ``;``-joined change list
    (entries naming an unknown class are left out)."""
    if not isinstance(text, str) or not text.strip():
        return []
    index = {t: k for k, t in enumerate(art.class_tokens)}
    out: list[list[Any]] = []
    for part in text.split(";"):
        m = _CHANGE.match(part.strip())
        if m and m.group(2) in index:
            number = float(m.group(3)) if m.group(3) else None
            out.append([index[m.group(2)], m.group(1), number])
    return out


def _column(frame: pd.DataFrame, name: str, default: Any) -> pd.Series:
    return frame[name] if name in frame else pd.Series(default, index=frame.index)


def _texts(values: pd.Series) -> list[str]:
    """A text column as strings, empty for missing (an all-empty column reads as NaN)."""
    return ["" if pd.isna(v) else str(v) for v in values]


def _detector_masks(ranked: pd.DataFrame, methods: list[str]) -> list[int]:
    flags = an.method_flags(ranked, methods)
    mask = np.zeros(len(ranked), dtype=np.int64)
    for b, m in enumerate(methods):
        mask |= flags[m].astype(np.int64) << b
    return mask.tolist()


def _score_lists(ranked: pd.DataFrame, cols: list[an.ScoreColumn]) -> list[list[float | None]]:
    scores = np.full((len(ranked), len(cols)), np.nan)
    for j, c in enumerate(cols):
        scores[:, j] = pd.to_numeric(ranked[c.key], errors="coerce").to_numpy(float)
    return [[None if v != v else v for v in row] for row in np.round(scores, 4).tolist()]


def _duplicate_texts(ranked: pd.DataFrame) -> list[str]:
    """``3`` or ``3, copy of <id>`` per row (``duplicate_group`` is read as a float)."""
    group = pd.to_numeric(_column(ranked, "duplicate_group", None), errors="coerce")
    of = _texts(_column(ranked, "duplicate_of", ""))
    return [
        "" if pd.isna(g) else f"{int(g)}" + (f", copy of {o}" if o else "")
        for g, o in zip(group, of, strict=True)
    ]


def _text_columns(ranked: pd.DataFrame) -> dict[str, list[Any]]:
    unreliable = [  # read with na_values=[""]: an all-empty column is float NaN
        "" if pd.isna(v) else str(v) for v in _column(ranked, "unreliable_classes", "")
    ]
    numbers = {
        name: pd.to_numeric(_column(ranked, name, 0), errors="coerce").fillna(0)
        for name in ("n_flags", "consensus_score")
    }
    cflag = _column(ranked, "consensus_flag", False).astype(str).str.lower().isin(["true", "1"])
    return {
        "id": ranked["id"].astype(str).tolist(),
        "n_flags": numbers["n_flags"].astype(int).tolist(),
        "consensus": np.round(numbers["consensus_score"].to_numpy(float), 4).tolist(),
        "consensus_flag": cflag.tolist(),
        "changes": _texts(_column(ranked, "label_changes", "")),
        "doubtful": _texts(_column(ranked, "doubtful_labels", "")),
        "unreliable": unreliable,
        "evidence": ["" if pd.isna(v) else str(v) for v in _column(ranked, "evidence", "")],
        "duplicate": _duplicate_texts(ranked),
        "given_text": _column(ranked, "given_labels", "").tolist(),
        "sugg_text": _column(ranked, "suggested_labels", None).tolist(),
    }


def table_rows(
    art: RunArtifacts, ranked: pd.DataFrame | None, cols: list[an.ScoreColumn], methods: list[str]
) -> tuple[list[TableRow], np.ndarray]:
    """The issue table's rows (ranked) and each dataset image's table row (``-1``: none).

    Without detector results (``ranked`` is ``None``) every dataset image is a row,
    in dataset order.
    """
    ids = art.ids or []
    index = {i: r for r, i in enumerate(ids)}
    if ranked is None:  # no detectors yet: browse the images in dataset order
        ranked = pd.DataFrame({"id": ids})
    masks = _detector_masks(ranked, methods)
    scores = _score_lists(ranked, cols)
    text = _text_columns(ranked)
    row_of = np.full(len(ids), -1, dtype=np.int64)
    rows = []
    given_labels = art.given  # with ids, always: both come from dataset.csv
    for r, image_id in enumerate(text["id"]):
        i = index.get(image_id, -1)
        if i >= 0:
            row_of[i] = r
        if i >= 0 and given_labels is not None:
            given = np.flatnonzero(given_labels[i]).tolist()
        else:
            given = art.parse_labels(text["given_text"][r])
        sugg = text["sugg_text"][r]
        rows.append(
            TableRow(
                id=image_id,
                given=given,
                suggested=given if sugg is None else art.parse_labels(sugg),
                detectors=masks[r],
                n_flags=text["n_flags"][r],
                consensus=text["consensus"][r],
                consensus_flag=bool(text["consensus_flag"][r]),
                scores=scores[r],
                changes=text["changes"][r],
                unreliable=text["unreliable"][r],
                image=i,
                evidence=text["evidence"][r],
                duplicate=text["duplicate"][r],
                changed=parse_changes(art, text["changes"][r]),
                doubtful=parse_changes(art, text["doubtful"][r]),
            )
        )
    return rows, row_of


def out_of_fold_permille(art: RunArtifacts, rows: list[TableRow]) -> list[list[int] | None] | None:
    """Each row's out-of-fold probabilities in thousandths (``None`` without ``oof_probs.csv``)."""
    if art.probs is None or not rows:
        return None
    permille = np.rint(art.probs * 1000).astype(np.int16)
    return [permille[row.image].tolist() if row.image >= 0 else None for row in rows]
