"""Predictions made elsewhere: ``scan --probs``, ``--embeddings`` and ``--cell-probs``.

Each file is the user's: it is read, never written, and checked before anything is
written; a bad one is one :class:`~labelaudit.core.errors.SettingsError` naming the
file and, for CSV files, the line.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from labelaudit.core.errors import SettingsError
from labelaudit.core.userfiles import (
    MAX_ARRAY_BYTES,
    MAX_EMBEDDING_VALUE,
    check_user_file,
    first_bad_probability,
    first_extreme,
    load_user_npy,
    parse_user_csv,
    read_user_bytes,
)

if TYPE_CHECKING:
    import pandas as pd

    from labelaudit.detect.base import CellPredictions


@dataclass
class Supplied:
    """Predictions made elsewhere, aligned with the dataset (row i = image ``ids[i]``)."""

    ids: list[str]
    probs: np.ndarray
    embeddings: np.ndarray | None
    probs_path: Path
    embeddings_path: Path | None

    def subset(self, ids: list[str]) -> Supplied:
        """The rows of ``ids`` (the readable images, with ``skip_broken``)."""
        rows = [self.ids.index(i) for i in ids] if ids != self.ids else list(range(len(ids)))
        emb = None if self.embeddings is None else self.embeddings[rows]
        return Supplied(list(ids), self.probs[rows], emb, self.probs_path, self.embeddings_path)


def _bad(path: Path, message: str, line: int | None = None) -> SettingsError:
    where = f"{path}, line {line}" if line is not None else str(path)
    return SettingsError(f"{where}: {message}")


def _listed(values: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:most])
    more = len(values) - most
    return shown + (f" and {more} more" if more > 0 else "")


def read_supplied_probs(
    path: str | Path, ids: Sequence[str], class_names: Sequence[str], class_tokens: Sequence[str]
) -> np.ndarray:
    """Read and check a ``--probs`` file; the (N, K) probabilities in dataset order.

    Parameters
    ----------
    path
        ``.npy`` (N x K, rows in dataset order) or CSV with an ``id`` column and
        one column per class (named like the classes or their tokens, any order of
        rows and columns).
    ids, class_names, class_tokens
        The dataset's image ids (in order) and classes.

    Raises
    ------
    SettingsError
        One line naming the file (and line): unreadable, wrong shape, an id column
        missing, unknown / missing / repeated ids, missing or extra class columns,
        a value that is not a number, NaN, or outside [0, 1].
    """
    path = Path(path)
    check_user_file(path, "the --probs file")
    if path.suffix.lower() == ".npy":
        probs = _read_npy(path, "probabilities")
        if probs.ndim != 2 or probs.shape != (len(ids), len(class_names)):
            raise _bad(
                path,
                f"probabilities of shape {probs.shape}; the dataset needs "
                f"{len(ids)} rows (images, in dataset order) x {len(class_names)} columns "
                "(classes)",
            )
        return _check_values(path, probs, list(ids), list(class_names), header=False)
    return _read_probs_csv(path, list(ids), list(class_names), list(class_tokens))


def _read_npy(path: Path, what: str) -> np.ndarray:
    array = load_user_npy(path, f"the {what} file")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise _bad(path, f"{what} must be numbers, the array holds {array.dtype}")
    return np.asarray(array, dtype=np.float64)


def _read_probs_csv(
    path: Path, ids: list[str], class_names: list[str], class_tokens: list[str]
) -> np.ndarray:
    import pandas as pd

    frame = _read_text_table(path, "the probabilities file (--probs)")
    id_col = _id_column(frame, path)
    columns = _class_columns(frame, (id_col,), path, class_names, class_tokens)
    given = frame[id_col].str.strip()
    dup = given[given.duplicated()]
    if len(dup):
        raise _bad(path, f"image id {dup.iloc[0]!r} appears twice", _line(frame, dup.index[0]))
    _refuse_unknown(path, given, ids, frame)
    absent = sorted(set(ids) - set(given))
    if absent:
        raise _bad(
            path,
            f"{len(frame)} rows for {len(ids)} images: no row for {_listed(absent)}",
        )
    order = pd.Index(given).get_indexer(ids)
    lines = [_line(frame, int(i)) for i in order]
    frame = frame.iloc[order].rename(columns=columns).reset_index()
    values = _numbers(frame[class_names], path, lines)
    return _check_values(path, values, ids, class_names, header=True, lines=lines)


def _read_text_table(path: Path, what: str) -> pd.DataFrame:
    """The CSV as text, as written. Some exporters end every row with a comma: pandas
    then takes the first column(s) for an index and shifts every column; empty
    trailing fields are dropped and the columns put back, and data past the header's
    columns is refused."""
    import pandas as pd

    raw = read_user_bytes(path, what)  # read once: parsed, and its lines counted
    frame = parse_user_csv(raw, path, what, dtype=str, keep_default_na=False)
    lines = _data_lines(raw)
    if isinstance(frame.index, pd.RangeIndex):
        return _with_lines(frame, lines)
    extra, header = frame.index.nlevels, list(frame.columns)
    tail = frame.iloc[:, len(header) - extra :] if extra < len(header) else None
    if tail is None or (tail.apply(lambda c: c.str.strip()) != "").to_numpy().any():
        raise _bad(path, "rows with more fields than the header line names", 2)
    data = pd.concat(
        [frame.index.to_frame(index=False), frame.reset_index(drop=True)], axis=1
    ).iloc[:, : len(header)]
    data.columns = header
    return _with_lines(data, lines)


def _data_lines(data: bytes) -> list[int] | None:
    """The line of the file each data row starts on (blank lines and fields quoted
    over several lines counted as the file has them), or ``None`` when the file is
    not plain enough to count (the row's position + 2 is used then).

    A record is skipped where pandas skips it: its lines blank or whitespace only
    (``,,`` and ``""`` are rows); the first record kept is the header.
    """
    import csv

    text = data.decode("utf-8-sig", errors="replace")
    physical = io.StringIO(text, newline="").readlines()  # split as the reader splits
    starts: list[int] = []
    previous, header = 0, False
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        for _record in reader:
            first, previous = previous + 1, reader.line_num
            if not "".join(physical[first - 1 : previous]).strip():
                continue
            if header:
                starts.append(first)
            header = True
    except csv.Error:
        return None
    return starts


def _with_lines(frame: pd.DataFrame, lines: list[int] | None) -> pd.DataFrame:
    if lines is not None and len(lines) == len(frame):
        frame.attrs["lines"] = lines
    return frame


def _line(frame: pd.DataFrame, position: int) -> int:
    """The file line of the frame's data row at ``position`` (as read, before any sort)."""
    lines = frame.attrs.get("lines")
    return int(lines[position]) if lines is not None else int(position) + 2


def _id_column(frame: pd.DataFrame, path: Path) -> str:
    """The frame's ``id`` column (any case, padded or not)."""
    id_col = next((c for c in frame.columns if str(c).strip().lower() == "id"), None)
    if id_col is None:
        raise _bad(path, "no id column (the first row must name an 'id' column)", 1)
    return id_col


def _class_columns(
    frame: pd.DataFrame,
    other: Sequence[str | None],
    path: Path,
    class_names: list[str],
    class_tokens: list[str],
) -> dict[str, str]:
    """Each column but ``other`` -> the class it holds (named like the class or its
    token); every class exactly once, nothing else."""
    by_name = dict(zip(class_names, class_names, strict=True))
    by_name.update(zip(class_tokens, class_names, strict=True))
    columns = {c: by_name.get(str(c).strip()) for c in frame.columns if c not in other}
    extra = [c for c, name in columns.items() if name is None]
    if extra:
        raise _bad(path, f"columns that are not classes of the dataset: {_listed(extra)}", 1)
    found = [name for name in columns.values() if name is not None]  # extra: refused above
    repeated = sorted({c for c in found if found.count(c) > 1})
    if repeated:
        raise _bad(path, f"class columns given twice: {_listed(repeated)}", 1)
    missing = [c for c in class_names if c not in found]
    if missing:
        raise _bad(path, f"missing class columns: {_listed(missing)}", 1)
    return {c: name for c, name in columns.items() if name is not None}


def _refuse_unknown(path: Path, given: pd.Series, ids: list[str], frame: pd.DataFrame) -> None:
    """An image id that is not in the dataset: one message naming its line."""
    unknown = given[~given.isin(set(ids))]
    if len(unknown):
        raise _bad(
            path,
            f"image id {unknown.iloc[0]!r} is not in the dataset "
            f"({len(unknown)} unknown id{'s' if len(unknown) > 1 else ''})",
            _line(frame, unknown.index[0]),
        )


def _numbers(text: pd.DataFrame, path: Path, lines: list[int]) -> np.ndarray:
    """The class columns' text as numbers (empty and ``nan`` read as NaN, which
    :func:`_check_values` refuses); anything else that is not a number: its line."""
    import pandas as pd

    values = text.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    blank = (
        np.isnan(values)
        & ~text.apply(lambda c: c.str.strip().str.lower().isin(["", "nan"])).to_numpy()
    )
    if blank.any():
        r, c = np.argwhere(blank)[0]
        raise _bad(
            path, f"column {text.columns[c]!r}: {text.iat[r, c]!r} is not a number", lines[r]
        )
    return values


def read_supplied_cells(
    path: str | Path, ids: Sequence[str], class_names: Sequence[str], class_tokens: Sequence[str]
) -> CellPredictions:
    """Read and check a ``--cell-probs`` file: a cell-level model's probabilities.

    Parameters
    ----------
    path
        CSV, one row per cell: an ``id`` column (the cell's image, as the dataset
        names it), optionally a ``cell`` column (the cell's name within its image,
        e.g. its mask label; default: its count within the image, from 1), and one
        column per class (named like the classes or their tokens). Images without
        a row have no cells. Or an HPA single-cell challenge submission: ``ID``
        and ``PredictionString`` (``class confidence mask`` triples), one row per
        image; each distinct mask string is a cell.
    ids, class_names, class_tokens
        The dataset's image ids and classes.

    Returns
    -------
    CellPredictions
        ``table``: ``cell_id`` (``{id}_{cell}``), ``id``, ``cell``; the
        probabilities in the file's row order.

    Raises
    ------
    SettingsError
        One line naming the file (and line): unreadable, no rows, an id column
        missing, an unknown image, a cell named twice in one image, an empty cell
        name, missing or extra class columns, a value that is not a number, NaN, or
        outside [0, 1].
    """
    from labelaudit.detect.base import CellPredictions

    path = Path(path)
    check_user_file(path, "the --cell-probs file")
    frame = _read_text_table(path, "the cell probabilities file (--cell-probs)")
    id_col = _id_column(frame, path)
    submission = next(
        (c for c in frame.columns if str(c).strip().lower() == "predictionstring"), None
    )
    if submission is not None:
        return _cells_from_submission(
            path, frame, id_col, submission, list(ids), list(class_names), list(class_tokens)
        )
    cell_col = next((c for c in frame.columns if str(c).strip().lower() == "cell"), None)
    names, tokens = list(class_names), list(class_tokens)
    columns = _class_columns(frame, (id_col, cell_col), path, names, tokens)
    if not len(frame):
        raise _bad(path, "no cells (no row after the header)")
    given = frame[id_col].str.strip()
    _refuse_unknown(path, given, list(ids), frame)
    lines = [_line(frame, r) for r in range(len(frame))]
    cells = None
    if cell_col is not None:
        cells = frame[cell_col].str.strip()
        empty = cells[cells == ""]
        if len(empty):
            raise _bad(path, "a cell without a name (the 'cell' column)", lines[empty.index[0]])
    table = cell_table(given.tolist(), None if cells is None else cells.tolist())
    twice = table[table.duplicated(["id", "cell"])]
    if len(twice):
        first = twice.iloc[0]
        raise _bad(
            path,
            f"cell {first['cell']!r} of image {first['id']!r} appears twice",
            lines[twice.index[0]],
        )
    same = table["cell_id"][table["cell_id"].duplicated()]
    if len(same):
        raise _bad(
            path,
            f"two cells would both be named {same.iloc[0]!r} (image id + '_' + cell): "
            "rename one cell",
            lines[same.index[0]],
        )
    values = _numbers(frame.rename(columns=columns)[names], path, lines)
    cell_ids = table["cell_id"].tolist()
    values = _check_values(path, values, cell_ids, names, header=True, lines=lines, row="cell")
    return CellPredictions(table, values)


def _cells_from_submission(
    path: Path,
    frame: pd.DataFrame,
    id_col: str,
    submission: str,
    ids: list[str],
    class_names: list[str],
    class_tokens: list[str],
) -> CellPredictions:
    """Cells from an HPA single-cell challenge submission (``ID``, ``PredictionString``
    of ``class confidence mask`` triples): a cell is a distinct mask string of its
    image (the masks are never decoded), numbered in order of appearance; a class the
    submission does not list for a cell reads as 0."""
    from labelaudit.detect.base import CellPredictions

    column = {t: k for k, t in enumerate(class_tokens)}
    column.update({n: k for k, n in enumerate(class_names)})
    given = frame[id_col].str.strip()
    _refuse_unknown(path, given, ids, frame)
    dup = given[given.duplicated()]
    if len(dup):
        raise _bad(path, f"image id {dup.iloc[0]!r} appears twice", _line(frame, dup.index[0]))
    images: list[str] = []
    cells: list[str] = []
    rows: list[np.ndarray] = []
    for r, (image, text) in enumerate(zip(given, frame[submission], strict=True)):
        line, parts = _line(frame, r), str(text).split()
        if len(parts) % 3:
            raise _bad(path, f"{len(parts)} fields in the PredictionString, not triples", line)
        masks: dict[str, int] = {}
        vectors: list[np.ndarray] = []
        for j in range(0, len(parts), 3):
            token, confidence, mask = parts[j : j + 3]
            k = column.get(token)
            if k is None:
                raise _bad(path, f"class {token!r} is not a class of the dataset", line)
            try:
                value = float(confidence)
            except ValueError:
                raise _bad(path, f"confidence {confidence!r} is not a number", line) from None
            if not 0.0 <= value <= 1.0:  # NaN fails too
                raise _bad(path, f"confidence {confidence} is outside [0, 1]", line)
            cell = masks.setdefault(mask, len(masks))
            if cell == len(vectors):
                vectors.append(np.full(len(class_names), np.nan))
            if not np.isnan(vectors[cell][k]):
                raise _bad(path, f"class {token!r} given twice for one cell of {image!r}", line)
            vectors[cell][k] = value
        images += [image] * len(vectors)
        cells += [str(c + 1) for c in range(len(vectors))]
        rows += vectors
    if not rows:
        raise _bad(path, "no cells (every PredictionString is empty)")
    probs = np.nan_to_num(np.vstack(rows), nan=0.0)  # classes not listed for a cell
    return CellPredictions(cell_table(images, cells), probs)


def cell_table(images: list[str], cells: list[str] | None = None) -> pd.DataFrame:
    """The cells' ``cell_id`` (``{image}_{cell}``), ``id`` (their image) and ``cell``
    (their name; default: their count within the image, from 1)."""
    import pandas as pd

    if cells is None:
        number = pd.Series(images, dtype=object).groupby(images, sort=False).cumcount() + 1
        cells = [str(j) for j in number]
    return pd.DataFrame(
        {
            "cell_id": [f"{i}_{c}" for i, c in zip(images, cells, strict=True)],
            "id": images,
            "cell": cells,
        }
    )


def _check_values(
    path: Path,
    values: np.ndarray,
    ids: list[str],
    class_names: list[str],
    *,
    header: bool,
    lines: list[int] | None = None,
    row: str = "image",
) -> np.ndarray:
    """NaN, infinite or outside [0, 1]: one message naming the first offending value
    (its ``row``, an image or a cell, named by ``ids``)."""
    bad = first_bad_probability(values)
    if bad is not None:
        r, c, why = bad
        what = {"nan": "is NaN (or empty) or infinite", "range": "is outside [0, 1]"}[why]
        where = f"{row} {ids[r]!r}, class {class_names[c]!r}"
        line = lines[r] if lines is not None else None
        value = float(values[r, c])  # as written, never rounded into range (1.0000001)
        message = f"{where}: {value!r} {what} (probabilities: sigmoid outputs)"
        if not header:
            message = f"row {r}, column {c} ({where}): {value!r} {what}"
        raise _bad(path, message, line)
    return values


def read_supplied_embeddings(path: str | Path, n_images: int) -> np.ndarray:
    """Read and check an ``--embeddings`` file: ``.npy``, N x D, dataset order, finite.

    Raises
    ------
    SettingsError
        One line naming the file.
    """
    path = Path(path)
    check_user_file(path, "the --embeddings file", max_bytes=MAX_ARRAY_BYTES)
    if path.suffix.lower() != ".npy":
        raise _bad(path, "embeddings must be a .npy array (N x D, rows in dataset order)")
    emb = _read_npy(path, "embeddings")
    if emb.ndim != 2 or emb.shape[0] != n_images or emb.shape[1] < 1:
        raise _bad(path, f"embeddings of shape {emb.shape}; the dataset needs {n_images} rows x D")
    extreme = first_extreme(emb)
    if extreme is not None:
        raise _bad(
            path,
            f"row {extreme[0]} holds NaN, an infinity or a value beyond {MAX_EMBEDDING_VALUE:g} "
            "(embeddings are a network's features; such values overflow its distances)",
        )
    return emb.astype(np.float32)
