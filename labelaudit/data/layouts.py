"""Read a dataset directory in one of the supported layouts into a :class:`Dataset`.

Layouts (registered in :data:`REGISTRY`; adding one: docs/design.md):

- ``hpa2021``: ``DIR/train.csv`` with ``ID,Label`` (``7|1|2|0``), images
  ``DIR/train/{ID}_{red,green,blue,yellow}.{png,tif,tiff,jpg,jpeg}``; 19 classes.
- ``hpa2018``: ``DIR/train.csv`` with ``Id,Target`` (``7 1 2 0``), same image names; 28 classes.
- ``generic``: ``DIR/labels.csv`` with ``image`` (path relative to DIR) and ``labels``
  (``|``-separated class names or integer ids), optional ``DIR/classes.txt``.

Any layout's files may sit elsewhere: ``labels`` names the label file, ``images`` the
image directory, ``id_column``/``label_column`` its columns and ``sep`` the separator
of labels (:class:`LoadOptions`). A label file whose class names look like joined
labels (``a;b`` where ``a`` and ``b`` are classes) is refused with the separator to
give, never read as one class named ``a;b``.

Every problem is reported as a :class:`DatasetError` naming the file and line.

Image paths are resolved (symbolic links included) and must stay inside the dataset
directory unless ``follow_symlinks`` is given: a dataset is input a user may not have
made, and a link in it must not make labelaudit read (and show in a report) files
elsewhere. A dataset written by ``labelaudit clean`` links to its source dataset's
images and says so in :data:`CLEANED_MARKER`; paths inside that source are admitted.
Only regular files are accepted as images (a FIFO would block the reader).
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from labelaudit.core import trust
from labelaudit.core.errors import DatasetError, SettingsError
from labelaudit.core.io import atomic_open
from labelaudit.core.userfiles import MAX_MARKER_BYTES, parse_json
from labelaudit.data.classes import HPA2018_CLASSES, HPA2021_CLASSES, HPA_CHANNELS
from labelaudit.data.dataset import Dataset, ImageSource
from labelaudit.data.labels import class_key, parse_class_ids, split_labels
from labelaudit.data.readers import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    file_problem,
    read_header,
)
from labelaudit.data.roles import BUILT_IN_EXCLUSIVE, EXCLUSIVE_MARKER

_HPA_COLUMNS = {"hpa2021": ("ID", "Label"), "hpa2018": ("Id", "Target")}
_HPA_CLASSES = {"hpa2021": HPA2021_CLASSES, "hpa2018": HPA2018_CLASSES}
_LABEL_SEP = {"hpa2021": "|", "hpa2018": " ", "generic": "|"}


@dataclass
class LoadReport:
    """Problems found while loading; ``check`` prints them all, ``scan`` stops on them."""

    errors: list[DatasetError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


#: Names ``--sep`` accepts for separators awkward to type.
SEP_NAMES = {"space": " ", "whitespace": " ", "tab": " ", "semicolon": ";", "comma": ",",
             "pipe": "|"}  # fmt: skip


@dataclass(frozen=True)
class LoadOptions:
    """Where a dataset's files are and how its label file is written (``None``: the
    layout's default).

    Attributes
    ----------
    labels
        The label file (default: ``train.csv`` or ``labels.csv`` in the dataset directory).
    images
        The image directory: HPA layouts read ``{ID}_{channel}`` files from it (default
        ``DIR/train``); the generic layout's image paths are relative to it (default ``DIR``).
    id_column, label_column
        The label file's columns (HPA 2021 ``ID``, ``Label``; HPA 2018 ``Id``,
        ``Target``; generic ``image``, ``labels``).
    sep
        The separator of labels in the label column (``|``; HPA 2018: whitespace).
        ``" "`` (or ``"space"``) means any whitespace.
    """

    labels: Path | None = None
    images: Path | None = None
    id_column: str | None = None
    label_column: str | None = None
    sep: str | None = None

    @classmethod
    def make(
        cls,
        labels: str | Path | None = None,
        images: str | Path | None = None,
        id_column: str | None = None,
        label_column: str | None = None,
        sep: str | None = None,
    ) -> LoadOptions:
        """Checked options; a :class:`SettingsError` names a bad one."""
        if sep is not None:
            if not isinstance(sep, str) or not sep:
                raise SettingsError(f"sep must be a non-empty string, got {sep!r}")
            sep = SEP_NAMES.get(sep.strip().lower(), sep)
            sep = " " if not sep.strip() else sep
            if sep != " " and (sep != sep.strip() or '"' in sep):
                raise SettingsError(f"sep {sep!r}: give one mark such as ';' ',' '|' or 'space'")
        for name, value in (("id_column", id_column), ("label_column", label_column)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise SettingsError(f"{name} must be a column name, got {value!r}")
        return cls(
            labels=None if labels is None else Path(labels),
            images=None if images is None else Path(images),
            id_column=None if id_column is None else id_column.strip(),
            label_column=None if label_column is None else label_column.strip(),
            sep=sep,
        )

    def recorded(self) -> dict[str, str]:
        """The options given, as ``load_dataset`` keywords (paths absolute): run.json's."""
        out: dict[str, str] = {}
        for name in ("labels", "images"):
            value = getattr(self, name)
            if value is not None:
                out[name] = os.path.realpath(value)
        for name in ("id_column", "label_column", "sep"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def _sep_flag(sep: str) -> str:
    return "--sep space" if sep == " " else f"--sep '{sep}'"


# ----------------------------------------------------------------------------- CSV


def read_label_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Read a label CSV as text: its header and ``(line number, fields)`` rows.

    Handles a UTF-8 byte-order mark and CRLF line endings; rejects binary files,
    non-UTF-8 text and empty files with a :class:`DatasetError`.
    """
    problem = file_problem(path, what="label file")
    if problem is not None:
        raise DatasetError(problem, path=path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read label file ({exc.strerror})", path=path) from None
    if b"\x00" in raw[:65536]:
        raise DatasetError("not a text CSV file (it contains binary data)", path=path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError("not UTF-8 text", path=path, row=line) from None
    if not text.strip():
        raise DatasetError("label file is empty", path=path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
        rows = []
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue  # blank lines, e.g. a trailing newline pair
            rows.append((reader.line_num, fields))
    except csv.Error as exc:
        raise DatasetError(f"malformed CSV ({exc})", path=path, row=reader.line_num) from None
    if not rows:
        raise DatasetError("label file has a header but no rows", path=path)
    return header, rows


_HEADER_FIELD = re.compile(r"[\w .()#/-]{1,64}")


def _describe_header(header: list[str]) -> str:
    """The header found, quoted only when it looks like one (never a foreign file's text).

    A user who points at ``/etc/passwd`` or a binary must not see its first line
    echoed: only a line of two or more short, name-like fields is quoted.
    """
    if 2 <= len(header) <= 50 and all(_HEADER_FIELD.fullmatch(h) for h in header):
        return f"found {','.join(header)}"
    joined = next((c for c in (";", "\t", "|") if len(header) == 1 and c in header[0]), None)
    if joined is not None:  # a table saved with another delimiter: say which, not its text
        name = {"\t": "tab", ";": "';'", "|": "'|'"}[joined]
        return (
            f"the first line is one field joined by {name}: a label file is comma-separated "
            "(--sep / sep= separates the labels within a cell, not the columns); save it as CSV"
        )
    return f"the first line is not a CSV header of this layout ({len(header)} field(s))"


def _column_index(header: list[str], name: str) -> int | None:
    for i, h in enumerate(header):
        if h == name:
            return i
    lowered = [h.lower() for h in header]
    return lowered.index(name.lower()) if name.lower() in lowered else None


# ------------------------------------------------------------------ containment

#: A regular file ``labelaudit clean`` writes into a cleaned dataset:
#: ``{"source": "<resolved original dataset root>"}``.
CLEANED_MARKER = ".labelaudit-cleaned.json"
_MARKER_MAX_BYTES = MAX_MARKER_BYTES
_MARKER_MAX_DEPTH = 8  # a cleaned dataset of a cleaned dataset of ...


def cleaned_marker(
    source: Path, entries: list[str], load_options: Mapping[str, str] | None = None
) -> dict:
    """The content of a cleaned dataset's marker: source, entries, load options, signed.

    The signature (:mod:`labelaudit.core.trust`) binds what the marker admits (links into
    ``source``, images read from ``load_options["images"]``) to this user's key, so
    only a marker this user's labelaudit wrote widens what the dataset may read.
    """
    payload: dict[str, Any] = {"source": str(source), "entries": list(entries)}
    if load_options:
        payload["load_options"] = dict(load_options)
    return {**payload, "signature": trust.sign(payload)}


def _verified_marker(root: Path) -> dict | None:
    """A cleaned dataset's marker, when it is a regular file this user's labelaudit
    signed (:func:`cleaned_marker`); ``None`` otherwise (absent, malformed, forged)."""
    marker = Path(root) / CLEANED_MARKER
    try:
        st = os.lstat(marker)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MARKER_MAX_BYTES:
            return None
        data = parse_json(marker.read_bytes().decode("utf-8"))
        payload = {k: data[k] for k in ("source", "entries", "load_options") if k in data}
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    if "source" not in payload or not trust.verify(payload, data.get("signature")):
        return None
    return payload


def marker_source(root: str | Path) -> Path | None:
    """The source directory a cleaned dataset's marker names, or None.

    The marker must be a regular file (not a link), carry this user's signature of
    what it says (:func:`cleaned_marker`), and name an existing dataset directory
    (one with a label file); anything else is ignored, so a malformed, copied or
    planted marker admits nothing.
    """
    data = _verified_marker(Path(root))
    source = data.get("source") if data is not None else None
    if not isinstance(source, str) or not os.path.isabs(source):
        return None
    source_dir = Path(os.path.realpath(source))
    if not any((source_dir / name).is_file() for name in ("train.csv", "labels.csv")):
        return None
    return source_dir


def _marker_options(root: Path) -> dict[str, str]:
    """The load options a cleaned dataset's marker records (``{}``: none or malformed).

    A cleaned copy of a dataset read with ``labels``/``images``/columns/``sep`` carries
    them, so that it loads as it is: ``labels`` is a file name inside the copy,
    ``images`` the (absolute) image directory of the source dataset, ``layout`` the
    layout it was read with (own columns can make an HPA label file look generic).
    """
    data = _verified_marker(root)  # signed: an --images path from elsewhere admits nothing
    options = (data.get("load_options") if data is not None else None) or {}
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in options.items()
    ):
        return {}
    layout = options.get("layout")
    options = {k: v for k, v in options.items() if k in LoadOptions.__dataclass_fields__}
    if layout in REGISTRY:  # the layout it was read with (other names: detect it)
        options["layout"] = layout
    labels = options.get("labels")
    if labels is not None:
        if "/" in labels or "\\" in labels or labels in (".", ".."):
            return {}
        options["labels"] = str(root / labels)
    images = options.get("images")
    if images is not None and not (os.path.isabs(images) and os.path.isdir(images)):
        return {}
    return options


def cleaned_copy_options(ds: Dataset) -> dict[str, str]:
    """The load options a cleaned copy of ``ds`` records in its marker.

    The copy holds the label file under its own name; the images stay where they are
    (an ``images`` directory given to the scan is not linked into the copy). The
    layout is recorded too: the copy loads with it, not with a guess from its header.
    """
    options = {k: v for k, v in ds.options.items() if k != "labels"}
    if "labels" in ds.options:
        options["labels"] = ds.label_file.name
    return {**options, "layout": ds.layout}


def admitted_roots(root: str | Path) -> tuple[Path, ...]:
    """The directories a dataset's image paths may resolve into.

    The dataset directory itself (resolved) and, for a dataset written by
    ``labelaudit clean``, the source dataset its marker names (followed through
    cleaned-of-cleaned chains).
    """
    roots = [Path(os.path.realpath(root))]
    while len(roots) <= _MARKER_MAX_DEPTH:
        source = marker_source(roots[-1])
        if source is None or source in roots:
            break
        roots.append(source)
    return tuple(roots)


class _Resolver:
    """Resolves image paths cheaply: one ``realpath`` per directory, one ``lstat`` per file.

    Only a file that is itself a symbolic link needs a full ``realpath``; an HPA
    image directory of 87k plain files costs 87k ``lstat`` calls.
    """

    def __init__(self, roots: tuple[Path, ...]) -> None:
        self.roots = tuple(str(r) for r in roots)
        self._dirs: dict[str, str] = {}

    def resolve(self, path: Path) -> str:
        if os.path.islink(path):
            return os.path.realpath(path)
        parent = str(path.parent)
        real_parent = self._dirs.get(parent)
        if real_parent is None:
            real_parent = self._dirs[parent] = os.path.realpath(parent)
        return os.path.join(real_parent, path.name)

    def inside(self, real: str) -> bool:
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots)


def _image_problem(path: Path, resolver: _Resolver | None) -> str | None:
    """What makes ``path`` unusable as an image file: escaping the dataset, not a file."""
    # A broken or looping link is named as such, wherever it points.
    if resolver is not None and os.path.exists(path):
        real = resolver.resolve(path)
        if not resolver.inside(real):
            return (
                f"image file {path} resolves to {real}, outside the dataset directory "
                "(symbolic links may not leave it; pass --follow-symlinks to allow)"
            )
    problem = file_problem(path)
    return None if problem is None else f"{problem}: {path}"


def _channel_files_hint(path: Path) -> str:
    """How to read ``path`` when it names a field of HPA channel files (``{path}_green.png``
    and siblings), which the generic layout, one file per image, does not look for."""
    if path.exists() or not path.parent.is_dir():
        return ""
    found = next(path.parent.glob(f"{glob.escape(path.name)}_green.*"), None)
    if found is None:
        return ""
    return (
        f" ({found.name} and its sibling stains are one field's channel files: read them "
        "with layout='hpa2021', --layout hpa2021)"
    )


# ----------------------------------------------------------------------- detection


def detect_layout(root: Path, options: LoadOptions | None = None) -> str:
    """Decide the layout from the label file's name and header (or the columns named)."""
    options = options or LoadOptions()
    if options.labels is None:
        if (root / "train.csv").is_file():
            header = _peek_header(root / "train.csv")
            target = options.label_column or ("Target" if "target" in _lowered(header) else "")
            return "hpa2018" if target.lower() == "target" else "hpa2021"
        if (root / "labels.csv").is_file():
            return "generic"
        raise DatasetError(
            "no label file found: expected train.csv (HPA layouts) or labels.csv (generic "
            "layout); give another with --labels FILE",
            path=root,
        )
    header = _lowered(_peek_header(options.labels))
    for name, (id_col, label_col) in _HPA_COLUMNS.items():
        id_col = (options.id_column or id_col).lower()
        label_col = (options.label_column or label_col).lower()
        if id_col in header and label_col in header and label_col == _HPA_COLUMNS[name][1].lower():
            return name
    return "generic"


def _lowered(header: list[str]) -> list[str]:
    return [h.lower() for h in header]


def _peek_header(path: Path) -> list[str]:
    try:
        with open(path, "rb") as fh:
            first = fh.readline(65536)
        return [h.strip() for h in first.decode("utf-8-sig", "replace").strip().split(",")]
    except OSError:
        return []


# -------------------------------------------------------------------------- HPA


def _hpa_image_index(image_dir: Path) -> dict[str, Path]:
    """Map ``{ID}_{channel}`` stems to files, listing the directory once."""
    index: dict[str, Path] = {}
    if not image_dir.is_dir():
        return index
    # Preference order: PNG before TIFF before JPEG when a stem exists twice.
    rank = {s: i for i, s in enumerate(IMAGE_SUFFIXES)}
    for entry in os.scandir(image_dir):
        stem, suffix = os.path.splitext(entry.name)
        suffix = suffix.lower()
        if suffix in rank:
            old = index.get(stem)
            if old is None or rank[suffix] < rank[old.suffix.lower()]:
                index[stem] = Path(entry.path)
    return index


def _parse_int_labels(
    value: str, sep: str, names: Sequence[str], path: Path, row: int, image: str
) -> list[int]:
    return parse_class_ids(
        value, sep, len(names), lambda m: DatasetError(m, path=path, row=row, image=image), names
    )


def _missing_image_dir(root: Path, image_dir: Path, given: bool) -> DatasetError:
    """The error for an absent HPA image directory, pointing at the folders that hold images."""
    if given:
        return DatasetError("the --images directory does not exist", path=image_dir)
    found = []
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if entry.is_dir() and _holds_images(Path(entry.path)):
                found.append(entry.name + "/")
    hint = (
        f"; images found in {', '.join(found[:3])}: give the folder with --images "
        f"{root / found[0].rstrip('/')}"
        if found
        else "; give the folder of the {ID}_{red,green,blue,yellow} files with --images DIR"
    )
    return DatasetError(f"image directory 'train/' not found{hint}", path=image_dir)


def _holds_images(folder: Path, look: int = 200) -> bool:
    """Whether one of the first ``look`` entries of ``folder`` is an image file."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for n, entry in enumerate(entries):
            if os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                return True
            if n >= look:
                break
    return False


def _hpa_int_labels(
    value: str, sep: str, names: Sequence[str], path: Path, row: int, image: str
) -> list[int]:
    """Integer class ids (a token may name its class); a value joined with another
    separator names ``--sep``."""
    try:
        return _parse_int_labels(value, sep, names, path, row, image)
    except DatasetError as exc:
        other = _joined_ids(value, sep, names)
        if other is None:
            raise
        raise DatasetError(
            f"{exc.message}: the labels look separated by {other!r}; give {_sep_flag(other)}",
            path=path,
            row=row,
            image=image,
        ) from None


def _joined_ids(value: str, sep: str, names: Sequence[str] = ()) -> str | None:
    """The separator that splits ``value`` into two or more class ids or names, if
    not ``sep``."""
    known = {class_key(n) for n in names}
    for other in (";", ",", "|", " "):
        if other == sep:
            continue
        parts = split_labels(value, other)
        if len(parts) > 1 and all(p.isdigit() or class_key(p) in known for p in parts):
            return other
    return None


def _load_hpa(
    root: Path,
    layout: str,
    report: LoadReport,
    options: LoadOptions,
    resolver: _Resolver | None,
) -> Dataset:
    label_file = options.labels or root / "train.csv"
    id_col, label_col = _HPA_COLUMNS[layout]
    id_col, label_col = options.id_column or id_col, options.label_column or label_col
    classes = _HPA_CLASSES[layout]
    header, rows = read_label_table(label_file)
    i_id, i_label = _column_index(header, id_col), _column_index(header, label_col)
    if i_id is None or i_label is None:
        raise DatasetError(
            f"expected columns {id_col},{label_col} ({layout}); {_describe_header(header)} "
            "(name the columns with --id-column and --label-column)",
            path=label_file,
            row=1,
        )
    image_dir = options.images or root / "train"
    if not image_dir.is_dir():
        raise _missing_image_dir(root, image_dir, options.images is not None)
    table = _HpaTable(
        label_file, len(header), i_id, i_label, options.sep or _LABEL_SEP[layout], tuple(classes)
    )
    index = _hpa_image_index(image_dir)
    ids: list[str] = []
    label_rows: list[list[int]] = []
    sources: list[ImageSource] = []
    line_nums: list[int] = []
    seen: dict[str, int] = {}
    for line, fields in rows:
        try:
            image_id, labels = table.row(line, fields, seen)
            paths = _hpa_channel_paths(index, image_dir, image_id, table.label_file, line)
        except DatasetError as exc:
            report.errors.append(exc)
            continue
        problem = next(filter(None, (_image_problem(p, resolver) for p in paths)), None)
        if problem is not None:
            report.errors.append(DatasetError(problem, path=label_file, row=line, image=image_id))
            continue
        ids.append(image_id)
        label_rows.append(labels)
        sources.append(ImageSource(tuple(paths)))
        line_nums.append(line)
    return Dataset(
        root=root,
        layout=layout,
        label_file=label_file,
        ids=ids,
        labels=_label_matrix(label_rows, len(classes)),
        class_names=list(classes),
        class_tokens=[str(k) for k in range(len(classes))],
        channels=HPA_CHANNELS,
        sources=sources,
        protein_channel=1,
        rows=line_nums,
        exclusive_classes=BUILT_IN_EXCLUSIVE.get(layout, ()),
        label_sep=table.sep,
        label_column=header[i_label],
        options=options.recorded(),
    )


@dataclass(frozen=True)
class _HpaTable:
    """Where an HPA label file's id and labels are, and how its labels are written."""

    label_file: Path
    n_fields: int
    i_id: int
    i_label: int
    sep: str
    class_names: tuple[str, ...]

    def row(self, line: int, fields: list[str], seen: dict[str, int]) -> tuple[str, list[int]]:
        """The id and class ids of one row; :class:`DatasetError` naming the row when it
        is short, has an empty, repeated or path-like id, or bad labels. ``seen``
        (id -> first line) gains the row's id once it is known not to be a repeat."""
        if len(fields) <= max(self.i_id, self.i_label):
            raise DatasetError(
                f"expected {self.n_fields} fields, found {len(fields)}",
                path=self.label_file,
                row=line,
            )
        image_id = fields[self.i_id].strip()
        if not image_id:
            raise DatasetError("empty image id", path=self.label_file, row=line)
        if image_id in seen:
            raise DatasetError(
                f"duplicate id (first on line {seen[image_id]})",
                path=self.label_file,
                row=line,
                image=image_id,
            )
        seen[image_id] = line
        if "/" in image_id or "\\" in image_id or image_id in (".", ".."):
            raise DatasetError(
                "id must be a plain file name stem, not a path",
                path=self.label_file,
                row=line,
                image=image_id,
            )
        labels = _hpa_int_labels(
            fields[self.i_label], self.sep, self.class_names, self.label_file, line, image_id
        )
        return image_id, labels


def _hpa_channel_paths(
    index: dict[str, Path], image_dir: Path, image_id: str, label_file: Path, line: int
) -> list[Path]:
    """The four channel files of a field, in :data:`HPA_CHANNELS` order; a
    :class:`DatasetError` naming the row lists the missing ones."""
    paths = []
    missing = []
    for channel in HPA_CHANNELS:
        p = index.get(f"{image_id}_{channel}")
        if p is None:
            missing.append(f"{image_id}_{channel}.png")
        else:
            paths.append(p)
    if missing:
        raise DatasetError(
            f"missing channel file(s) in {image_dir}: {', '.join(missing)}",
            path=label_file,
            row=line,
            image=image_id,
        )
    return paths


def _label_matrix(label_rows: list[list[int]], n_classes: int) -> np.ndarray:
    """The (N, K) boolean label matrix of each row's class ids."""
    matrix = np.zeros((len(label_rows), n_classes), dtype=bool)
    for i, labels in enumerate(label_rows):
        matrix[i, labels] = True
    return matrix


# ---------------------------------------------------------------------- generic


def _read_classes_txt(path: Path) -> tuple[list[str], list[str]]:
    """Class names of ``classes.txt`` and those marked exclusive (``Negative *exclusive``)."""
    rows: list[str] = []
    exclusive: list[str] = []
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError("not UTF-8 text", path=path) from None
    seen: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        marked = name.endswith(EXCLUSIVE_MARKER)
        if marked:
            name = name[: -len(EXCLUSIVE_MARKER)].strip()
            if not name:
                raise DatasetError(
                    f"{EXCLUSIVE_MARKER} without a class name", path=path, row=line_no
                )
        if not name:
            continue
        if name in seen:
            raise DatasetError(
                f"class {name!r} listed twice (first on line {seen[name]})", path=path, row=line_no
            )
        seen[name] = line_no
        rows.append(name)
        if marked:
            exclusive.append(name)
    if not rows:
        raise DatasetError("classes.txt is empty", path=path)
    return rows, exclusive


def _safe_relative(value: str) -> PurePosixPath | None:
    """A dataset-relative path, or None when it is absolute or escapes the directory."""
    value = value.strip().replace("\\", "/")
    p = PurePosixPath(value)
    if p.is_absolute() or (len(value) > 1 and value[1] == ":"):
        return None
    parts: list[str] = []
    for part in p.parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return PurePosixPath(*parts) if parts else None


def _generic_channels(n: int) -> tuple[tuple[str, ...], int]:
    if n == 1:
        return ("gray",), 0
    if n == 3:
        return ("red", "green", "blue"), 1
    if n == 4:
        return HPA_CHANNELS, 1
    return tuple(f"ch{i}" for i in range(n)), min(1, n - 1)


def joined_labels(
    names: list[str], sep: str, classes: list[str] | None = None
) -> tuple[str, str] | None:
    """A class name that looks like several labels joined, and the separator joining them.

    A name holding ``;`` or ``|`` (not the separator in use), or ``,`` or whitespace
    where every part is itself a class name, is taken for joined labels: a label file
    read with the wrong separator.

    ``classes`` (e.g. from ``classes.txt``) count as class names too.

    Returns
    -------
    ``(name, separator)`` of the first such name, or ``None``.
    """
    known = set(names) | set(classes or ())
    for candidate in (";", "|", ",", " "):
        if candidate == sep:
            continue
        for name in names:
            parts = split_labels(name, candidate)
            if len(parts) < 2:
                continue
            if candidate in ";|" or all(p in known for p in parts):
                return name, candidate
    return None


def _load_generic(
    root: Path,
    report: LoadReport,
    options: LoadOptions,
    resolver: _Resolver | None,
    max_pixels: int | None,
) -> Dataset:
    label_file = options.labels or root / "labels.csv"
    image_root = options.images or root
    if options.images is not None and not image_root.is_dir():
        raise DatasetError("the --images directory does not exist", path=image_root)
    sep = options.sep or _LABEL_SEP["generic"]
    image_col, labels_col = options.id_column or "image", options.label_column or "labels"
    header, rows = read_label_table(label_file)
    i_image, i_labels = _column_index(header, image_col), _column_index(header, labels_col)
    if i_image is None or i_labels is None:
        raise DatasetError(
            f"expected columns {image_col},{labels_col} (generic layout); "
            f"{_describe_header(header)} (name the columns with --id-column and --label-column)",
            path=label_file,
            row=1,
        )
    classes_file = root / "classes.txt"
    declared, exclusive = _read_classes_txt(classes_file) if classes_file.is_file() else (None, [])
    parsed = _generic_rows(
        rows, len(header), i_image, i_labels, label_file, image_root, sep, report
    )
    vocab = _GenericClasses.of(parsed, declared, label_file, sep)

    ids, sources, line_nums, label_rows = [], [], [], []
    n_channels: int | None = None
    for line, image_id, path, tokens in parsed:
        ks, bad = vocab.class_ids(tokens)
        if bad:
            report.errors.append(DatasetError(bad, path=label_file, row=line, image=image_id))
            continue
        problem = _image_problem(path, resolver)
        if problem is not None:
            if not report.errors:  # the first problem is the one shown: one glob, not N
                problem += _channel_files_hint(path)
            report.errors.append(DatasetError(problem, path=label_file, row=line, image=image_id))
            continue
        if n_channels is None:
            try:
                n_channels = read_header(path, max_pixels=max_pixels).channels
            except DatasetError as exc:
                report.errors.append(exc)
                continue
        ids.append(image_id)
        sources.append(ImageSource((path,)))
        line_nums.append(line)
        label_rows.append(ks)
    channels, protein = _generic_channels(n_channels or 1)
    return Dataset(
        root=root,
        layout="generic",
        label_file=label_file,
        ids=ids,
        labels=_label_matrix(label_rows, len(vocab.class_names)),
        class_names=list(vocab.class_names),
        class_tokens=list(vocab.tokens),
        channels=channels,
        sources=sources,
        protein_channel=protein,
        rows=line_nums,
        exclusive_classes=tuple(exclusive),
        label_sep=sep,
        label_column=header[i_labels],
        options=options.recorded(),
    )


def _generic_rows(
    rows: list[tuple[int, list[str]]],
    n_fields: int,
    i_image: int,
    i_labels: int,
    label_file: Path,
    image_root: Path,
    sep: str,
    report: LoadReport,
) -> list[tuple[int, str, Path, list[str]]]:
    """``(line, image id, image path, label tokens)`` of each usable row of a generic
    label file; short rows, unsafe paths and repeated images go to ``report``."""
    parsed: list[tuple[int, str, Path, list[str]]] = []
    seen: dict[str, int] = {}
    for line, fields in rows:
        if len(fields) <= max(i_image, i_labels):
            report.errors.append(
                DatasetError(
                    f"expected {n_fields} fields, found {len(fields)}", path=label_file, row=line
                )
            )
            continue
        value = fields[i_image].strip()
        rel = _safe_relative(value)
        if rel is None:
            report.errors.append(
                DatasetError(
                    f"image path {value!r} is absolute, empty or escapes the dataset directory",
                    path=label_file,
                    row=line,
                )
            )
            continue
        image_id = rel.as_posix()
        if image_id in seen:
            report.errors.append(
                DatasetError(
                    f"duplicate image (first on line {seen[image_id]})",
                    path=label_file,
                    row=line,
                    image=image_id,
                )
            )
            continue
        seen[image_id] = line
        tokens = split_labels(fields[i_labels], sep)
        parsed.append((line, image_id, image_root / rel, tokens))
    return parsed


@dataclass(frozen=True)
class _GenericClasses:
    """The class vocabulary of a generic dataset and how its label tokens map to it.

    Attributes
    ----------
    class_names
        From ``classes.txt``, else integer ids ``0..max``, else the sorted names.
    by_name
        Class name -> class id.
    use_ids
        Whether the label tokens are class ids (digits) rather than names.
    declared
        Whether the classes come from ``classes.txt``.
    """

    class_names: list[str]
    by_name: dict[str, int]
    use_ids: bool
    declared: bool

    @classmethod
    def of(
        cls,
        parsed: list[tuple[int, str, Path, list[str]]],
        declared: list[str] | None,
        label_file: Path,
        sep: str,
    ) -> _GenericClasses:
        """The vocabulary of the parsed rows; :class:`DatasetError` when there is no
        label at all, or a label looks like several joined by another separator."""
        all_tokens = {t for *_, toks in parsed for t in toks}
        if declared is not None:
            class_names = declared
            by_name = {n: i for i, n in enumerate(declared)}
            use_ids = all(t.isdigit() for t in all_tokens) and not (all_tokens & set(by_name))
        elif all_tokens and all(t.isdigit() for t in all_tokens):
            class_names = [str(k) for k in range(max(int(t) for t in all_tokens) + 1)]
            by_name = {n: i for i, n in enumerate(class_names)}
            use_ids = True
        else:
            class_names = sorted(all_tokens)
            by_name = {n: i for i, n in enumerate(class_names)}
            use_ids = False
        if not class_names:
            raise DatasetError("no labels in the label file, and no classes.txt", path=label_file)
        joined = joined_labels(sorted(all_tokens), sep, class_names)
        if joined is not None:
            name, other = joined
            line = next(line for line, _, _, toks in parsed if name in toks)
            raise DatasetError(
                f"the label {name!r} looks like labels joined by {other!r}, not one class: "
                f"give the separator with {_sep_flag(other)} (sep={other!r} in Python)",
                path=label_file,
                row=line,
            )
        return cls(class_names, by_name, use_ids, declared is not None)

    @property
    def tokens(self) -> list[str]:
        """How each class is written in the label file (its id or its name)."""
        return [str(k) for k in range(len(self.class_names))] if self.use_ids else self.class_names

    def class_ids(self, tokens: list[str]) -> tuple[list[int], str | None]:
        """A row's class ids, or what is wrong with its first bad token."""
        ks: list[int] = []
        for tok in tokens:
            if self.use_ids and tok.isdigit():
                k = int(tok)
                if k >= len(self.class_names):
                    n = len(self.class_names)
                    return ks, f"label {k} is out of range (class ids are 0..{n - 1})"
            elif tok in self.by_name:
                k = self.by_name[tok]
            else:
                return ks, f"unknown class {tok!r}" + (
                    " (not in classes.txt)" if self.declared else ""
                )
            ks.append(k)
        return ks, None


# ------------------------------------------------------------------------ public


def recorded_load_options(info: Mapping[str, Any]) -> dict[str, Any]:
    """The loader options a run recorded for its dataset (run.json's dataset section).

    Stages that re-read a scanned dataset (clean, retrain, the report) pass these to
    :func:`load_dataset`, so a dataset scanned with ``--follow-symlinks`` or
    ``--max-pixels`` reads back with the same rows. Runs that predate them get the
    defaults.
    """
    return {
        "follow_symlinks": bool(info.get("follow_symlinks", False)),
        "max_pixels": info.get("max_pixels", DEFAULT_MAX_PIXELS),
        **dict(info.get("load_options") or {}),
    }


def load_dataset(
    path: str | Path | None = None,
    layout: str | None = None,
    *,
    strict: bool = True,
    report: LoadReport | None = None,
    labels: str | Path | None = None,
    images: str | Path | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    sep: str | None = None,
    image_dir: str | Path | None = None,
    follow_symlinks: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Dataset:
    """Load a dataset directory, detecting its layout unless ``layout`` is given.

    Parameters
    ----------
    path
        The dataset directory. It is only read, never written. May be left out when
        ``labels`` is given (then the label file's directory).
    layout
        ``"hpa2021"``, ``"hpa2018"`` or ``"generic"``; detected when ``None`` (from the
        label file's name and header, or from the columns named).
    strict
        Raise the first row-level problem (the default). With ``strict=False`` the
        bad rows are left out and their problems collected in ``report``.
    report
        Collects row-level problems and warnings when given.
    labels
        The label file, anywhere (default: ``train.csv`` or ``labels.csv`` in ``path``).
    images
        The image directory, anywhere (a directory the caller chose: paths may resolve
        inside it). HPA layouts read ``{ID}_{channel}`` files from it (default
        ``path/train``); the generic layout's image paths are relative to it (default
        ``path``).
    id_column, label_column
        The label file's columns, when not the layout's (see :class:`LoadOptions`).
    sep
        The separator of labels in the label column: ``"|"`` (default), ``";"``,
        ``","``, ``" "`` or ``"space"`` (any whitespace), ...
    image_dir
        The former name of ``images``.
    follow_symlinks
        Admit image paths that resolve outside the dataset directory (by default
        such a row is a problem, except for paths inside the source dataset of a
        cleaned dataset, see :data:`CLEANED_MARKER`).
    max_pixels
        Pixels per channel an image may have (``None``: no limit); stored on the
        dataset for every reader, and checked here on the generic layout's first image.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        On a missing or unreadable label file, wrong columns, and (when ``strict``)
        on any bad row: unparseable or out-of-range labels, duplicate ids, missing
        channel files, paths escaping the directory, image paths that are not
        regular files (FIFOs, devices, broken or looping links).
    SettingsError
        When ``max_pixels`` is not a positive integer.
    """
    options, root, recorded = _load_options(
        path, labels, images or image_dir, id_column, label_column, sep
    )
    _check_load_args(root, options, max_pixels)
    layout = layout or recorded
    spec = get_layout(detect_layout(root, options) if layout is None else layout)
    report = report if report is not None else LoadReport()
    resolver = None
    if not follow_symlinks:
        extra = (Path(os.path.realpath(options.images)),) if options.images else ()
        resolver = _Resolver(admitted_roots(root) + extra)
    dataset = spec.load(spec.name, root, report, options, resolver, max_pixels)
    dataset.max_pixels = max_pixels
    dataset.follow_symlinks = follow_symlinks
    if strict:
        _raise_first_problem(report, dataset)
    return dataset


def _load_options(
    path: str | Path | None,
    labels: str | Path | None,
    images: str | Path | None,
    id_column: str | None,
    label_column: str | None,
    sep: str | None,
) -> tuple[LoadOptions, Path, str | None]:
    """The loader options, the dataset directory and the layout a cleaned copy records:
    a cleaned copy's own options when none are given, the label file's directory when
    no directory is."""
    options = LoadOptions.make(labels, images, id_column, label_column, sep)
    recorded = None
    if path is not None and options == LoadOptions() and Path(path).is_dir():
        own = _marker_options(Path(path))  # a cleaned copy's own
        recorded = own.pop("layout", None)
        options = LoadOptions.make(**own)
    if path is None:
        if options.labels is None:
            raise SettingsError("give a dataset directory or a label file (labels=...)")
        path = options.labels.parent
    return options, Path(path), recorded


def _check_load_args(root: Path, options: LoadOptions, max_pixels: int | None) -> None:
    """Refuse a label file that is not a file, a bad ``max_pixels``, a missing dataset
    directory or a file in its place, before the layout is looked at."""
    if options.labels is not None and not options.labels.is_file():
        problem = file_problem(options.labels, what="label file") or "not a file"
        raise DatasetError(problem, path=options.labels)
    if max_pixels is not None and (
        isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1
    ):
        raise SettingsError(f"max_pixels must be a positive number of pixels, got {max_pixels!r}")
    if not root.exists():
        raise DatasetError("dataset directory not found", path=root)
    if root.is_file():
        raise DatasetError("expected a dataset directory, got a file", path=root)


def _raise_first_problem(report: LoadReport, dataset: Dataset) -> None:
    """``load_dataset(strict=True)``: the first row problem (saying how many more
    there are), or the lack of any usable image."""
    if report.errors:
        first = report.errors[0]
        more = len(report.errors) - 1
        if more:
            first = DatasetError(
                f"{first.message} (and {more} more problem{'s' if more > 1 else ''}; "
                "run `labelaudit check` to list them all)",
                path=first.path,
                row=first.row,
                image=first.image,
            )
        raise first
    if len(dataset) == 0:
        raise DatasetError("no usable images in the label file", path=dataset.label_file)


# -------------------------------------------------------------------------- the registry


def _hpa_fields(folder: Path) -> dict[str, tuple[Path, ...]]:
    """``{ID: (red, green, blue, yellow) paths}`` of the complete fields in ``folder``."""
    rank = {s: i for i, s in enumerate(IMAGE_SUFFIXES)}
    found: dict[tuple[str, str], Path] = {}
    for entry in os.scandir(folder):
        stem, suffix = os.path.splitext(entry.name)
        if suffix.lower() not in rank or "_" not in stem:
            continue
        image_id, channel = stem.rsplit("_", 1)
        if channel not in HPA_CHANNELS:
            continue
        old = found.get((image_id, channel))
        if old is None or rank[suffix.lower()] < rank[old.suffix.lower()]:
            found[(image_id, channel)] = Path(entry.path)
    ids = sorted({image_id for image_id, _ in found})
    fields = {}
    for image_id in ids:
        missing = [c for c in HPA_CHANNELS if (image_id, c) not in found]
        if missing:
            names = ", ".join(f"{image_id}_{c}.png" for c in missing)
            raise DatasetError(f"incomplete field: missing {names}", path=folder, image=image_id)
        fields[image_id] = tuple(found[(image_id, c)] for c in HPA_CHANNELS)
    return fields


def _hpa_image_entries(ds: Dataset, ids: list[str]) -> list[str]:
    return ["train"]


def _generic_image_entries(ds: Dataset, ids: list[str]) -> list[str]:
    return sorted({PurePosixPath(i).parts[0] for i in ids})


def _load_hpa_layout(name, root, report, options, resolver, max_pixels) -> Dataset:
    return _load_hpa(root, name, report, options, resolver)


def _load_generic_layout(name, root, report, options, resolver, max_pixels) -> Dataset:
    return _load_generic(root, report, options, resolver, max_pixels)


@dataclass(frozen=True)
class Layout:
    """What labelaudit knows about one dataset layout (docs/design.md, "Adding a layout").

    Attributes
    ----------
    name
        The layout's name (``--layout``).
    label_file
        The label file's name in the dataset directory.
    label_column
        The column of the label file that holds the labels.
    separator
        Between label tokens in that column.
    load
        ``load(name, root, report, options, resolver, max_pixels)`` -> :class:`Dataset`
        (``options``: a :class:`LoadOptions`, every field ``None`` for the layout's
        defaults).
    image_entries
        ``image_entries(dataset, ids)`` -> the top-level entries of the dataset
        directory that hold the images of ``ids`` (what a cleaned copy links to).
    extra_files
        Other files of the dataset a cleaned copy carries (copied when present).
    find_fields
        ``find_fields(folder)`` -> ``{id: channel paths}`` of the complete fields in a
        folder of images named the layout's way (unlabelled images for ``predict``);
        ``None`` when the layout names no per-field files.
    channels
        The channel names of ``find_fields``' paths.
    """

    name: str
    label_file: str
    label_column: str
    separator: str
    load: Any
    image_entries: Any
    extra_files: tuple[str, ...] = ()
    find_fields: Any = None
    channels: tuple[str, ...] = ()


#: Every layout by name, in detection order; :func:`load_dataset`, ``clean`` and
#: ``predict`` read layout knowledge from here only.
REGISTRY: dict[str, Layout] = {
    "hpa2021": Layout(
        "hpa2021", "train.csv", "Label", "|", _load_hpa_layout, _hpa_image_entries,
        find_fields=_hpa_fields, channels=HPA_CHANNELS,
    ),
    "hpa2018": Layout(
        "hpa2018", "train.csv", "Target", " ", _load_hpa_layout, _hpa_image_entries,
        find_fields=_hpa_fields, channels=HPA_CHANNELS,
    ),
    "generic": Layout(
        "generic", "labels.csv", "labels", "|", _load_generic_layout, _generic_image_entries,
        extra_files=("classes.txt",),
    ),
}  # fmt: skip


def get_layout(name: str) -> Layout:
    """The registered layout ``name``; a :class:`DatasetError` naming the choices otherwise."""
    if name not in REGISTRY:
        raise DatasetError(f"unknown layout {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def write_label_file(ds: Dataset, dest: Path, rows: Mapping[int, str | None]) -> int:
    """Write a copy of ``ds``'s label file keeping some rows, some with new labels.

    Parameters
    ----------
    ds
        A loaded dataset (its label file is re-read as text, so every other column
        and the header are kept as the user wrote them).
    dest
        The new label file (written atomically).
    rows
        Label-file line number -> the new label text in the layout's notation, or
        ``None`` to keep the row's labels; lines not listed are left out.

    Returns
    -------
    int
        Rows written.
    """
    header, table = read_label_table(ds.label_file)
    i_label = _column_index(header, ds.label_column or get_layout(ds.layout).label_column)
    assert i_label is not None  # load_dataset checked the columns
    kept = []
    for line, fields in table:
        if line not in rows:
            continue
        fields = list(fields)
        new = rows[line]
        if new is not None:
            fields[i_label] = new
        kept.append(fields)
    with atomic_open(dest, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(kept)
    return len(kept)


def find_fields(folder: Path) -> tuple[tuple[str, ...], dict[str, tuple[Path, ...]]] | None:
    """The complete fields in a folder of images named as some layout names them.

    Returns
    -------
    (channels, {id: channel paths}) of the first layout that finds any, or ``None``.

    Raises
    ------
    DatasetError
        A field with some of its channel files missing.
    """
    for layout in REGISTRY.values():
        if layout.find_fields is not None:
            fields = layout.find_fields(folder)
            if fields:
                return layout.channels, fields
    return None
