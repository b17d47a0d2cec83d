"""The label codec: label strings in a dataset's notation <-> boolean label rows.

A label string lists an image's classes as tokens: class names or integer class
ids (the dataset's ``class_tokens``), separated by ``|`` (HPA 2021, generic) or
by spaces (HPA 2018). Every label string labelaudit reads (a label file, the
run's ``dataset.csv``/``issues.csv``/``changes.csv``, a decisions file, the
report) goes through :class:`LabelCodec`, and every one it writes comes out of
:meth:`LabelCodec.format`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labelaudit.core.errors import DatasetError

#: Builds the exception for a bad label string from a message (it names the row).
Where = Callable[[str], Exception]


def split_labels(text: str, sep: str = "|") -> list[str]:
    """The tokens of a label string, stripped, empty ones dropped.

    Parameters
    ----------
    text
        A label string (``"7|1|2"``, ``"7 1 2"``); ``None``/NaN-free text expected.
    sep
        The separator: ``" "`` splits on any whitespace.
    """
    parts = text.split() if sep == " " else text.split(sep)
    return [t for t in (p.strip() for p in parts) if t]


def class_key(name: str) -> str:
    """A class name as a person may write it, for matching: case and spacing aside."""
    return " ".join(name.lower().split())


def parse_class_ids(
    text: str,
    sep: str,
    n_classes: int,
    where: Where,
    names: Sequence[str] = (),
) -> list[int]:
    """Integer class ids of a label string (HPA layouts): ``0 <= id < n_classes``.

    A token may also be a class's name (``names``, case and spaces around it
    ignored): a label file of one's own often names the classes.

    Raises
    ------
    Exception
        ``where(message)`` when the string is empty, a token is neither an integer
        nor a class name, or out of range.
    """
    tokens = split_labels(text, sep)
    if not tokens:
        raise where("no labels given")
    by_name = {class_key(n): k for k, n in enumerate(names)}
    out = []
    for tok in tokens:
        named = by_name.get(class_key(tok))
        if named is not None:
            out.append(named)
            continue
        try:
            k = int(tok)
        except ValueError:
            what = (
                "neither an integer class id nor a class name"
                if names
                else "not an integer class id"
            )
            raise where(f"label {tok!r} is {what}") from None
        if not 0 <= k < n_classes:
            raise where(f"label {k} is out of range (class ids are 0..{n_classes - 1})")
        out.append(k)
    return out


def _default_where(row: int | None) -> Where:
    return lambda message: DatasetError(message, row=row)


@dataclass
class LabelCodec:
    """Reads and writes label strings in one dataset's notation.

    Parameters
    ----------
    tokens
        Each class's token in label strings (``class_tokens``: ids or names).
    sep
        The separator (``"|"`` or ``" "``).
    names
        Class names, also accepted when reading (a decisions file may name classes).
    """

    tokens: list[str]
    sep: str = "|"
    names: list[str] = field(default_factory=list)
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.tokens = [str(t) for t in self.tokens]
        self.names = [str(n) for n in self.names]
        index = {n: k for k, n in enumerate(self.names)}
        index.update({t: k for k, t in enumerate(self.tokens)})  # tokens win over names
        self._index = index

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> LabelCodec:
        """The codec of a run's ``run.json["dataset"]`` section (read back, so a forged
        value that is not a list of names counts as absent)."""

        def listed(value: Any) -> list[str]:
            if not isinstance(value, list | tuple):
                return []
            return [str(c) for c in value if isinstance(c, str | int)]

        names = listed(info.get("class_names"))
        tokens = listed(info.get("class_tokens")) or names
        if len(tokens) != len(names):
            tokens = list(names)
        return cls(tokens, str(info.get("label_sep") or "|"), names)

    @property
    def n_classes(self) -> int:
        return len(self.tokens)

    def format(self, row: np.ndarray) -> str:
        """A boolean label row in the dataset's notation (``7|1|2``)."""
        return self.sep.join(self.tokens[k] for k in np.flatnonzero(row))

    def format_many(self, rows: np.ndarray) -> list[str]:
        """:meth:`format` of every row of an (N, K) matrix."""
        return [self.format(row) for row in rows]

    def indices(
        self, text: Any, *, where: Where | None = None, row: int | None = None
    ) -> list[int]:
        """Sorted class indices of a label string (empty, ``None`` or NaN: none).

        Parameters
        ----------
        text
            The label string.
        where
            Builds the error for an unknown token; ``None`` with ``row`` given:
            a :class:`DatasetError` naming the row.
        row
            The row (line) the string comes from, for the default error.

        Without ``where`` and ``row``, unknown tokens are dropped (the report shows
        what it can of a damaged run).
        """
        if not isinstance(text, str):
            return []
        if where is None and row is not None:
            where = _default_where(row)
        out = set()
        for tok in split_labels(text, self.sep):
            k = self._index.get(tok)
            if k is None:
                if where is None:
                    continue
                shown = self.sep.join(self.tokens[:3])
                raise where(f"unknown label {tok!r} (labels are written as {shown}{self.sep}...)")
            out.add(k)
        return sorted(out)

    def parse(self, text: Any, *, where: Where | None = None, row: int | None = None) -> np.ndarray:
        """A label string -> (K,) bool row (see :meth:`indices` for the errors)."""
        out = np.zeros(self.n_classes, dtype=bool)
        out[self.indices(text, where=where, row=row)] = True
        return out

    def parse_many(
        self,
        values: Iterable[Any],
        *,
        where: Callable[[int, str], Exception] | None = None,
        first_row: int = 2,
        lenient: bool = False,
    ) -> np.ndarray:
        """Label strings -> (N, K) bool matrix.

        Parameters
        ----------
        values
            One label string per row.
        where
            ``where(i, message)`` builds the error of row ``i`` (0-based);
            default: a :class:`DatasetError` naming line ``first_row + i``.
        first_row
            The line of the first value (a CSV's first data line is 2).
        lenient
            Drop unknown tokens instead of raising.
        """
        values = list(values)
        out = np.zeros((len(values), self.n_classes), dtype=bool)
        for i, value in enumerate(values):
            hook: Where | None
            if lenient:
                hook = None
            elif where is not None:
                hook = lambda m, i=i: where(i, m)  # noqa: E731
            else:
                hook = _default_where(first_row + i)
            out[i, self.indices(value, where=hook)] = True
        return out


def split_any_labels(text: str) -> list[str]:
    """Tokens of a label string written with ``|``, ``;`` or spaces (a truth file's labels)."""
    return [t for t in re.split(r"[|; ]+", text.strip()) if t]
