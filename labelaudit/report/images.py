"""Pixels for the report: thumbnails and detail tiles of the images to review first.

The images come from the run's image cache (already decoded and resized). When the
cache entry is gone, the top fields are decoded from the dataset directory instead
(slower: a full-size HPA field takes about 0.1 s to decode).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from labelaudit.report.artifacts import RunArtifacts
from labelaudit.report.thumbnails import field_images

#: Side of the detail tiles (at most the cache's image size).
DETAIL_SIZE = 256
#: Side at which fields are decoded from the dataset when the cache is gone.
DECODE_SIZE = 256


def collect_field_images(
    art: RunArtifacts,
    dataset_rows: Sequence[int],
    max_thumbnails: int,
    max_details: int,
) -> tuple[list[str], list[str], str]:
    """Data URIs for the first table rows: thumbnails and detail tiles.

    Parameters
    ----------
    art
        The run's artifacts.
    dataset_rows
        For each table row (ranked), the image's index in the dataset (-1: unknown).
    max_thumbnails, max_details
        How many rows get a thumbnail, and a detail tile.

    Returns
    -------
    thumbs, details, note
        One URI per leading row (``""`` when unavailable), and a sentence for the page
        when images are missing or came from a fallback.
    """
    n_thumbs = min(max(max_thumbnails, 0), len(dataset_rows))
    n_details = min(max(max_details, 0), n_thumbs)
    if n_thumbs == 0:
        return [], [], ""
    ids = art.ids or []
    wanted = [ids[i] if i >= 0 else None for i in dataset_rows[:n_thumbs]]
    fetch, note = _cache_fetcher(art)
    if fetch is None:
        fetch, note2 = _dataset_fetcher(art)
        note = f"{note} {note2}".strip()
        if fetch is None:
            return [], [], note
    thumbs, details = [], []
    channels = art.channels or ["red", "green", "blue", "yellow"]
    for r, image_id in enumerate(wanted):
        field = fetch(image_id) if image_id is not None else None
        if field is None:
            thumbs.append("")
            details.append("")
            continue
        size = DETAIL_SIZE if r < n_details else 0
        thumb, detail = field_images(np.asarray(field), channels, detail_size=size)
        thumbs.append(thumb)
        details.append(detail)
    return thumbs, details[:n_details], note


def _cache_fetcher(art: RunArtifacts):
    from labelaudit.data.cache import ImageCache

    path = art.section("dataset").get("cache")
    if not path or not (Path(path) / "meta.json").is_file():
        return None, "The image cache entry of this run is gone."
    try:
        cache = ImageCache.open(path)
    except (OSError, ValueError, KeyError) as exc:
        return None, f"The image cache entry cannot be read ({exc})."
    index = {i: r for r, i in enumerate(cache.ids)}

    def fetch(image_id: str):
        r = index.get(image_id)
        return None if r is None else np.array(cache.images[r])

    return fetch, ""


def _dataset_fetcher(art: RunArtifacts):
    from labelaudit.core.errors import LabelAuditError
    from labelaudit.data.cache import decode_field
    from labelaudit.data.layouts import load_dataset, recorded_load_options

    path = art.section("dataset").get("path")
    if not path or not Path(path).is_dir():
        return None, "The dataset directory is not available either, so no images are shown."
    try:
        section = art.section("dataset")
        ds = load_dataset(path, section.get("layout"), **recorded_load_options(section))
    except LabelAuditError as exc:
        return None, f"The dataset cannot be read ({exc}), so no images are shown."
    index = {i: r for r, i in enumerate(ds.ids)}

    def fetch(image_id: str):
        r = index.get(image_id)
        if r is None:
            return None
        try:
            return decode_field(ds.sources[r].paths, len(ds.channels), DECODE_SIZE)[0]
        except (LabelAuditError, OSError):
            return None

    return fetch, "Images were decoded from the dataset directory."
