"""The in-memory description of a labelled image dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labelaudit.core.digest import ShortDigest
from labelaudit.data.readers import DEFAULT_MAX_PIXELS
from labelaudit.data.roles import Roles, make_roles


@dataclass(frozen=True)
class ImageSource:
    """Where the pixels of one image (field) come from.

    Parameters
    ----------
    paths
        One file per channel (HPA layouts: red, green, blue, yellow), or a single
        file holding every channel (generic layout: RGB, grayscale, multi-page TIFF).
    """

    paths: tuple[Path, ...]

    @property
    def one_file(self) -> bool:
        return len(self.paths) == 1


@dataclass
class Dataset:
    """A multi-label image dataset: ids, labels, class names and image sources.

    Attributes
    ----------
    root
        The dataset directory (never written to).
    layout
        ``"hpa2021"``, ``"hpa2018"`` or ``"generic"``.
    label_file
        The label table the dataset was read from.
    ids
        One id per image, unique, in label-file order.
    labels
        Boolean label matrix, N x K.
    class_names
        K human-readable class names.
    class_tokens
        How each class is written in the label file (HPA: ``"0"``..``"18"``; generic:
        the class name or its integer id, as the file used).
    channels
        Names of the image channels, e.g. ``("red", "green", "blue", "yellow")``.
    sources
        For each image, where its pixels are.
    protein_channel
        Index into ``channels`` of the channel whose intensity the labels describe
        (HPA: green).
    rows
        For each image, its line in the label file.
    max_pixels
        Pixels per channel an image may have; every reader (``check``, the cache)
        refuses a larger one from its header, before decoding (``None``: no limit).
    follow_symlinks
        Whether image paths were allowed to resolve outside the dataset directory.
    exclusive_classes
        Names of the classes never combined with another class (HPA 2021: Negative;
        a generic dataset's ``classes.txt`` marks them): :mod:`labelaudit.data.roles`.
    label_sep
        The separator of labels in the label file (default: the layout's, ``|``;
        HPA 2018: a space, meaning any whitespace).
    label_column
        The label file's column of labels ("" for the layout's).
    options
        The loader options this dataset was read with that are not the layout's
        defaults (``labels``, ``images``, ``id_column``, ``label_column``, ``sep``),
        as :func:`~labelaudit.data.layouts.load_dataset` takes them: what a later
        stage needs to read it again.
    """

    root: Path
    layout: str
    label_file: Path
    ids: list[str]
    labels: np.ndarray
    class_names: list[str]
    class_tokens: list[str]
    channels: tuple[str, ...]
    sources: list[ImageSource]
    protein_channel: int = 1
    rows: list[int] = field(default_factory=list)
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    follow_symlinks: bool = False
    exclusive_classes: tuple[str, ...] = ()
    label_sep: str = ""
    label_column: str = ""
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=bool)
        n, k = self.labels.shape
        assert len(self.ids) == n == len(self.sources), "ids, labels and sources must align"
        assert len(self.class_names) == k == len(self.class_tokens)
        if not self.rows:
            self.rows = list(range(2, n + 2))
        if not self.label_sep:
            self.label_sep = " " if self.layout == "hpa2018" else "|"

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_classes(self) -> int:
        return self.labels.shape[1]

    @property
    def roles(self) -> Roles:
        """The dataset's class and stain roles (:mod:`labelaudit.data.roles`)."""
        return make_roles(
            self.class_names,
            self.channels,
            self.channels[self.protein_channel] if self.channels else None,
            self.exclusive_classes,
        )

    def label_tokens(self, i: int) -> list[str]:
        """The labels of image ``i`` in the dataset's own notation."""
        return [self.class_tokens[k] for k in np.flatnonzero(self.labels[i])]

    def format_labels(self, row: np.ndarray) -> str:
        """Write a boolean label row in the dataset's own notation (``7|1|2``)."""
        return self.label_sep.join(self.class_tokens[k] for k in np.flatnonzero(row))

    def fingerprint(self) -> str:
        """A hash of ids, labels, class names and image files (path, size, mtime).

        Anything that changes what the cache or a trained fold would see changes
        the fingerprint, so stale artifacts are never reused.
        """
        h = ShortDigest(16)
        h.update(self.layout.encode())
        h.update("\x1f".join(self.class_names).encode())
        h.update("\x1f".join(self.channels).encode())
        for image_id, source in zip(self.ids, self.sources, strict=True):
            h.update(image_id.encode())
            for p in source.paths:
                st = p.stat()
                h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        h.update(np.packbits(self.labels, axis=None).tobytes())
        h.update(str(self.labels.shape).encode())
        return h.hexdigest()

    def image_fingerprint(self) -> str:
        """Like :meth:`fingerprint` but ignoring labels: keys the image cache."""
        h = ShortDigest(16)
        h.update("\x1f".join(self.channels).encode())
        for image_id, source in zip(self.ids, self.sources, strict=True):
            h.update(image_id.encode())
            for p in source.paths:
                st = p.stat()
                h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()
