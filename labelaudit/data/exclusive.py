"""Exclusive classes: a class that cannot be combined with any other (HPA's Negative).

One function reads them from a run (:func:`exclusive_classes`); the report's class
picker and the decisions check both ask it, so the class-roles work can change
where the list comes from in this one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: ``run.json["dataset"]`` key: the names (or tokens) of the exclusive classes.
EXCLUSIVE_KEY = "exclusive_classes"


def exclusive_classes(info: Mapping[str, Any]) -> list[int]:
    """Indices of the classes that may not be combined with another, for a run.

    Parameters
    ----------
    info
        ``run.json["dataset"]``: ``class_names``, ``class_tokens`` and, when the run
        says so, ``exclusive_classes`` (class names or tokens).

    Returns
    -------
    list of int
        Sorted class indices; empty when the run declares none (names it does not
        know are ignored).
    """
    declared = info.get(EXCLUSIVE_KEY)
    if not isinstance(declared, Sequence) or isinstance(declared, str):
        return []
    names = [str(c) for c in info.get("class_names") or []]
    tokens = [str(c) for c in info.get("class_tokens") or []]
    out = set()
    for item in declared:
        for table in (tokens, names):
            if str(item) in table:
                out.add(table.index(str(item)))
                break
    return sorted(out)


def exclusive_conflict(row: np.ndarray, exclusive: Sequence[int]) -> int | None:
    """The exclusive class that ``row`` combines with another label, else ``None``.

    Parameters
    ----------
    row
        (K,) bool labels of one image.
    exclusive
        Indices of the exclusive classes (:func:`exclusive_classes`).
    """
    row = np.asarray(row, dtype=bool)
    if row.sum() < 2:
        return None
    for k in exclusive:
        if row[k]:
            return int(k)
    return None
