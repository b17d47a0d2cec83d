"""Class and stain roles: the one place labelaudit reads what classes and stains mean.

*Exclusive classes* are never combined with another class: HPA's "Negative" (no
protein staining in the field), in other data "background", "none", "normal". A
label set that joins an exclusive class with another class is a label problem, and
no suggestion, cleaning policy, reviewer decision or prediction may produce one.

*Stain roles*: the *target* channel carries what the labels describe (HPA: the
protein, green); the *reference* channels are counterstains that look alike in
every field whatever its labels (HPA: microtubules, nucleus, ER). An empty target
stain with normal references is evidence about the labels (the field looks like
the exclusive class), a fault of the references or of every stain is an image fault.

Built into the HPA layouts (:data:`BUILT_IN_EXCLUSIVE`); a generic dataset declares
its exclusive classes in ``classes.txt`` with :data:`EXCLUSIVE_MARKER` after the
name (``Negative *exclusive``). The roles are recorded in ``run.json["dataset"]
["roles"]`` and read back with :func:`roles_from_info` / :func:`exclusive_classes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The quality finding (``class`` column ``empty_target:<channel>``) that says a field
#: given other classes has a target stain as empty as the exclusive class's: label
#: evidence (:mod:`labelaudit.detect.quality`), read back by the suggestions.
EMPTY_TARGET = "empty_target"

#: Written after a class name in a generic dataset's ``classes.txt``.
EXCLUSIVE_MARKER = "*exclusive"

#: Exclusive classes of the layouts that know their classes (HPA 2018 has no Negative).
BUILT_IN_EXCLUSIVE: dict[str, tuple[str, ...]] = {"hpa2021": ("Negative",), "hpa2018": ()}


@dataclass(frozen=True)
class Roles:
    """What the classes and stains of a dataset mean.

    Attributes
    ----------
    exclusive
        Names of the classes never combined with another class.
    target_channel
        The channel the labels describe (``None``: unknown).
    reference_channels
        The other channels: counterstains that do not depend on the labels.
    """

    exclusive: tuple[str, ...] = ()
    target_channel: str | None = None
    reference_channels: tuple[str, ...] = ()

    def to_info(self) -> dict[str, Any]:
        """The JSON form recorded in ``run.json["dataset"]["roles"]``."""
        return {
            "exclusive_classes": list(self.exclusive),
            "target_channel": self.target_channel,
            "reference_channels": list(self.reference_channels),
        }

    def describe(self) -> str:
        """One line for the report's summary."""
        excl = ", ".join(self.exclusive) if self.exclusive else "none"
        refs = ", ".join(self.reference_channels) or "none"
        return (
            f"exclusive classes (never combined with another): {excl}; "
            f"target stain: {self.target_channel or 'unknown'}; reference stains: {refs}"
        )


def make_roles(
    class_names: Sequence[str],
    channels: Sequence[str],
    target_channel: str | None,
    exclusive: Sequence[str] = (),
) -> Roles:
    """Roles of a dataset: ``exclusive`` in class order, the other channels as references.

    Names in ``exclusive`` that are not classes are ignored (a layout's built-in
    class that this dataset's vocabulary lacks).
    """
    wanted = set(exclusive)
    excl = tuple(c for c in class_names if c in wanted)
    refs = tuple(c for c in channels if c != target_channel)
    return Roles(excl, target_channel, refs)


def roles_from_info(info: Mapping[str, Any]) -> Roles:
    """The roles of a scanned dataset, from its ``run.json["dataset"]`` section.

    Runs that predate the ``roles`` entry get their layout's built-in exclusive
    classes and the recorded protein channel as the target.
    """
    names = [str(c) for c in info.get("class_names") or []]
    channels = [str(c) for c in info.get("channels") or []]
    recorded = info.get("roles")
    if isinstance(recorded, Mapping):
        return make_roles(
            names,
            channels,
            recorded.get("target_channel") or info.get("protein_channel"),
            [str(c) for c in recorded.get("exclusive_classes") or []],
        )
    built_in = BUILT_IN_EXCLUSIVE.get(str(info.get("layout", "")), ())
    return make_roles(names, channels, info.get("protein_channel"), built_in)


def exclusive_classes(info: Mapping[str, Any]) -> list[str]:
    """Names of the exclusive classes of a scanned dataset (``run.json["dataset"]``)."""
    return list(roles_from_info(info).exclusive)


def exclusive_indices(class_names: Sequence[str], exclusive: Sequence[str]) -> np.ndarray:
    """Column indices of the ``exclusive`` classes among ``class_names`` (int array)."""
    wanted = set(exclusive)
    return np.array([k for k, c in enumerate(class_names) if c in wanted], dtype=int)


def conflicting_rows(labels: np.ndarray, exclusive_idx: Sequence[int] | np.ndarray) -> np.ndarray:
    """(N,) bool: the row joins an exclusive class with any other class."""
    labels = np.asarray(labels, dtype=bool)
    idx = np.asarray(exclusive_idx, dtype=int)
    if labels.ndim != 2 or idx.size == 0:
        return np.zeros(len(labels), dtype=bool)
    has_excl = labels[:, idx].any(axis=1)
    return has_excl & (labels.sum(axis=1) > 1)


def resolve_exclusive(
    labels: np.ndarray, scores: np.ndarray, exclusive_idx: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Labels with every exclusive conflict resolved to one side (a copy).

    Where a row joins an exclusive class with other classes, the side with the higher
    score wins: the best-scoring exclusive class alone when its score is at least the
    best score of the row's other classes, else the other classes without any
    exclusive class. ``scores`` are probabilities (or any per-label support).
    """
    out = np.asarray(labels, dtype=bool).copy()
    idx = np.asarray(exclusive_idx, dtype=int)
    scores = np.asarray(scores, dtype=float)
    for i in np.flatnonzero(conflicting_rows(out, idx)):
        row = out[i]
        mine = idx[row[idx]]
        others = np.setdiff1d(np.flatnonzero(row), idx)
        best_excl = mine[np.argmax(scores[i, mine])]
        keep_excl = others.size == 0 or scores[i, best_excl] >= scores[i, others].max()
        row[:] = False
        if keep_excl:
            row[best_excl] = True
        else:
            row[others] = True
    return out


def describe_conflict(
    class_names: Sequence[str],
    row: np.ndarray,
    exclusive_idx: Iterable[int],
    source: str = "given",
) -> str:
    """``"Negative given with Cytosol (Negative is never combined with another class)"``;
    ``source`` says where the labels come from (``"written"`` for a person's edit)."""
    idx = set(int(k) for k in exclusive_idx)
    labelled = [int(k) for k in np.flatnonzero(np.asarray(row, dtype=bool))]
    excl = [class_names[k] for k in labelled if k in idx]
    others = [class_names[k] for k in labelled if k not in idx]
    what = " and ".join(excl)
    with_ = ", ".join(others) if others else "another exclusive class"
    verb = "is" if len(excl) == 1 else "are"
    return f"{what} {source} with {with_} ({what} {verb} never combined with another class)"
