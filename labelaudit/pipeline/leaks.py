"""Duplicates of a run's dataset, and images shared between two datasets (leakage).

:func:`add_duplicates` runs the registered ``duplicates`` detector
(:class:`labelaudit.detect.duplicates.DuplicateImages`) on a scanned run: pixel digests
and the cached pixels (candidates from a thumbnail index, verified by aligned
correlation) from the run's image cache, embedding neighbours from the run's
``embeddings.npy``. It adds ``duplicate_group``, ``duplicate_of`` and
``duplicate_conflict`` to ``issues.csv`` (after the comparison's columns), the label-conflict
findings (detector ``duplicates``) to ``findings.csv``, writes every pair with its
evidence to ``duplicates.csv`` and a summary to ``run.json["detect"]["duplicates"]``.

:func:`find_leaks` compares two datasets through their image caches (no training):
an image of B whose pixels match one of A (identical, or verified after alignment:
shifted, re-noised, re-encoded or cropped by a few percent) is listed with the
evidence, for example test images that are also in the training set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import pandas as pd

from labelaudit.core.errors import SettingsError
from labelaudit.core.io import write_csv
from labelaudit.data.cache import ImageCache, build_cache, default_cache_dir
from labelaudit.detect import get_detector
from labelaudit.detect.base import AuditInputs, PixelSignatures
from labelaudit.detect.duplicates import DuplicateImages, DuplicateResult, pair_table, pixel_keys
from labelaudit.detect.pixelmatch import CANDIDATE_RATIO, MIN_CORRELATION, NULL_FRACTION, match_sets
from labelaudit.rundir import (
    DUPLICATES_CSV,
    FINDINGS_CSV,
    ISSUES_CSV,
    LEAKS_CSV,
    RunDir,
    dataset_inputs,
    ensure_outside,
    guard_output_file,
)

__all__ = [
    "DUPLICATES_CSV",
    "DUPLICATE_COLUMNS",
    "LEAKS_CSV",
    "LEAK_COLUMNS",
    "LeakResult",
    "add_duplicates",
    "add_leaks",
    "cache_signatures",
    "find_leaks",
]

#: Columns :func:`add_duplicates` adds to ``issues.csv``.
DUPLICATE_COLUMNS = tuple(DuplicateImages.issue_columns)
#: The run file listing every duplicate pair with its evidence.
#: Columns :func:`add_leaks` adds to ``issues.csv``.
LEAK_COLUMNS = ("leak_of", "leak_correlation")
#: Side of the cache entries ``leaks`` builds (pixels are verified at 64 x 64).
LEAKS_IMAGE_SIZE = 64


@overload
def cache_signatures(cache: ImageCache, ids: None = None) -> tuple[list[str], np.ndarray]: ...


@overload
def cache_signatures(
    cache: ImageCache, ids: list[str] | None
) -> tuple[list[str], np.ndarray] | None: ...


def cache_signatures(
    cache: ImageCache, ids: list[str] | None = None
) -> tuple[list[str], np.ndarray] | None:
    """Pixel digests and cached pixels of images, in the order of ``ids``.

    Parameters
    ----------
    cache
        An image cache entry.
    ids
        The images wanted, in this order (``None``: the cache's order).

    Returns
    -------
    (keys, images) or None
        :func:`~labelaudit.detect.duplicates.pixel_keys` and the (N, C, S, S) uint8
        pixels (the cache's memory map itself when in its order); ``None`` when the
        cache lacks one of ``ids``.
    """
    rows = np.arange(len(cache.ids))
    images = cache.images
    if ids is not None and list(ids) != list(cache.ids):
        index = {image_id: r for r, image_id in enumerate(cache.ids)}
        if any(image_id not in index for image_id in ids):
            return None
        rows = np.array([index[image_id] for image_id in ids], dtype=np.int64)
        images = cache.images[rows] if len(rows) else cache.images[:0]
    stats = cache.stats.iloc[rows].reset_index(drop=True)
    return pixel_keys(images, stats), images


def _run_cache(run: RunDir) -> ImageCache | None:
    """The run's image cache entry, ``None`` when it is gone."""
    info = run.section("dataset") or {}
    path = info.get("cache")
    if not path or not (Path(path) / "meta.json").is_file():
        return None
    return ImageCache.open(path)


#: Quality's issue type for images the duplicate check found too empty to verify.
LOW_INFORMATION_CLASS = "low_information:pixels"


def _mark_low_information(run: RunDir, ids: set[str]) -> None:
    """Add (or remove) ``low_information:pixels`` in ``issues.csv``'s ``quality_issues``."""
    issues = run.read_table(ISSUES_CSV)
    if "quality_issues" not in issues.columns:
        if not ids:
            return
        issues["quality_issues"] = ""
    old = issues["quality_issues"].fillna("").astype(str)
    kept = [[t for t in text.split(";") if t and t != LOW_INFORMATION_CLASS] for text in old]
    new = [
        ";".join([*tokens, LOW_INFORMATION_CLASS] if i in ids else tokens)
        for i, tokens in zip(issues["id"].astype(str), kept, strict=True)
    ]
    if new != old.tolist():
        run.add_issue_columns(
            pd.DataFrame({"quality_issues": new}, index=pd.Index(issues["id"], name="id")),
            ["quality_issues"],
        )


def add_duplicates(
    run_dir: str | Path,
    inputs: AuditInputs | None = None,
    cache: ImageCache | None = None,
    **params: Any,
) -> DuplicateResult:
    """Find a run's duplicates and write them into the run directory.

    Parameters
    ----------
    run_dir
        A scanned run (``issues.csv`` written by the detect stage).
    inputs
        The audit inputs (read from the run when ``None``).
    cache
        The run's image cache (opened from ``run.json`` when ``None``; without it,
        only embedding neighbours are looked for, and the summary says so).
    **params
        Parameters of the registered ``duplicates`` detector
        (:class:`~labelaudit.detect.duplicates.DuplicateImages`): ``embedding_factor``,
        ``candidate_ratio``, ``min_correlation``, ``null_fraction``.

    Returns
    -------
    DuplicateResult

    Raises
    ------
    SettingsError
        An unknown parameter or a bad value.
    """
    detector = get_detector("duplicates", **params)
    assert isinstance(detector, DuplicateImages)
    run = RunDir(run_dir)
    inputs = run.audit_inputs() if inputs is None else inputs
    cache = _run_cache(run) if cache is None else cache
    sig = cache_signatures(cache, inputs.ids) if cache is not None else None
    pixels = PixelSignatures(*sig) if sig is not None else None
    dups = detector.groups(dataclasses.replace(inputs, pixels=pixels))
    if sig is None:
        dups.summary["warning"] = "image cache not found: no pixel evidence, no duplicates"
    run.add_issue_columns(dups.columns(inputs.ids), DUPLICATE_COLUMNS)
    findings = run.read_table(FINDINGS_CSV)
    mine = (findings["detector"] == "duplicates") | (findings["class"] == LOW_INFORMATION_CLASS)
    findings = findings[~mine]
    low = dups.low_information_findings(inputs.ids)
    extra = [f.astype(str) for f in (dups.result.findings, low) if len(f)]
    if extra:
        findings = pd.concat([findings, *extra], ignore_index=True)
    run.write_table(FINDINGS_CSV, findings)
    _mark_low_information(run, set(low["id"]))
    run.write_table(DUPLICATES_CSV, dups.pairs)

    def record(data: dict) -> None:
        if isinstance(data.get("detect"), dict):
            data["detect"]["duplicates"] = dups.summary

    run.edit_run(record)
    return dups


@dataclass
class LeakResult:
    """Images of dataset B that also appear in dataset A.

    Attributes
    ----------
    pairs
        ``id_a``, ``id_b``, ``evidence`` (``exact`` or ``neighbour``),
        ``phash_distance`` (bits), ``correlation``, ``channel_min``, ``shift_y``,
        ``shift_x``, ``scale``, ``null_correlation``, ``threshold``: one row per
        verified pair.
    n_a, n_b
        Images in A and in B.
    low_information
        Ids of B's images that had candidates but too little structure to verify.
    """

    pairs: pd.DataFrame
    n_a: int
    n_b: int
    low_information: list[str] = field(default_factory=list)

    @property
    def n_leaked(self) -> int:
        """Images of B with at least one match in A."""
        return int(self.pairs["id_b"].nunique())


def match_signatures(
    a: tuple[list[str], list[str], np.ndarray],
    b: tuple[list[str], list[str], np.ndarray],
    *,
    candidate_ratio: float = CANDIDATE_RATIO,
    min_correlation: float = MIN_CORRELATION,
    null_fraction: float = NULL_FRACTION,
) -> tuple[pd.DataFrame, list[str]]:
    """Pairs (one image of A, one of B) with identical or verified-alike pixels.

    Parameters
    ----------
    a, b
        ``(ids, pixel keys, cached pixels)`` of each dataset.
    candidate_ratio, min_correlation, null_fraction
        See :mod:`labelaudit.detect.duplicates`.

    Returns
    -------
    pairs, low_information
        ``id_a``, ``id_b``, ``evidence``, ``phash_distance`` and the pixel evidence,
        sorted by B then A; and the ids of B's images too empty to verify.
    """
    ids_a, keys_a, images_a = a
    ids_b, keys_b, images_b = b
    if np.shape(images_a)[1:2] != np.shape(images_b)[1:2]:
        raise SettingsError(
            f"the datasets have different channels ({np.shape(images_a)[1]} and "
            f"{np.shape(images_b)[1]}): their images cannot be compared"
        )
    matched = match_sets(
        images_a,
        images_b,
        keys=(keys_a, keys_b),
        candidate_ratio=candidate_ratio,
        min_correlation=min_correlation,
        null_fraction=null_fraction,
    )
    table = matched.pairs
    good = table[table["verified"].astype(bool)].sort_values(["j", "i"]).reset_index(drop=True)
    pairs = pair_table(
        good,
        np.asarray(ids_a, dtype=object),
        np.asarray(ids_b, dtype=object),
        images_a,
        images_b,
        None,
        names=("id_a", "id_b"),
    )
    return pairs, [ids_b[r] for r in matched.low_information[1].tolist()]


def _own_table(header: list[str]) -> bool:
    """True for the header of a table :func:`find_leaks` wrote."""
    return header[:2] == ["id_a", "id_b"]


def find_leaks(
    dataset_a: str | Path,
    dataset_b: str | Path,
    *,
    out: str | Path | None = None,
    image_size: int = LEAKS_IMAGE_SIZE,
    cache_dir: str | Path | None = None,
    min_correlation: float = MIN_CORRELATION,
    layout: str | None = None,
    on_cache: Callable[[str], None] | None = None,
) -> LeakResult:
    """List the images of dataset B that also appear in dataset A.

    Both datasets are decoded into the image cache (reused when there), nothing is
    trained. Matches: identical pixels (``exact``), or thumbnail neighbours whose
    pixels verify after alignment (``neighbour``: shifted, re-noised, re-encoded or
    slightly cropped copies; see :mod:`labelaudit.detect.duplicates`).

    Parameters
    ----------
    dataset_a, dataset_b
        Dataset directories (e.g. train and test). Only read.
    out
        Write the pairs to this CSV (it may not lie in or around either dataset).
    image_size
        Side of the cache entries used.
    cache_dir
        Where cache entries live (:func:`~labelaudit.data.cache.default_cache_dir`).
    min_correlation
        Floor of a near match's aligned correlation (0 to 1; the data's null may
        raise the bar above it).
    layout
        The datasets' layout (detected when ``None``).
    on_cache
        Called with a line per cache entry used.

    Returns
    -------
    LeakResult

    Raises
    ------
    SettingsError
        ``out`` overlaps an input, or a bad parameter.
    DatasetError
        A dataset cannot be loaded.
    """
    from labelaudit.data.layouts import load_dataset

    if isinstance(min_correlation, bool) or not 0 <= float(min_correlation) <= 1:
        raise SettingsError(f"min correlation must be in [0, 1], got {min_correlation}")
    sets = [load_dataset(Path(p), layout) for p in (dataset_a, dataset_b)]
    inputs = [item for ds in sets for item in dataset_inputs(ds)]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ensure_outside(inputs, root, "image cache directory")
    if out is not None:
        guard_output_file(out, inputs, what="leaks file", ours=_own_table)
    sigs = []
    for ds in sets:
        cache = build_cache(ds, int(image_size), root)
        if on_cache is not None:
            on_cache(f"image cache: {'reused' if cache.reused else 'built'} {cache.path}")
        keys, images = cache_signatures(cache)
        sigs.append((list(cache.ids), keys, images))
    pairs, low = match_signatures(sigs[0], sigs[1], min_correlation=float(min_correlation))
    if out is not None:
        write_csv(Path(out), pairs)
    return LeakResult(pairs, len(sigs[0][0]), len(sigs[1][0]), low)


def add_leaks(
    run_dir: str | Path,
    ids: list[str],
    cache: ImageCache,
    others: list[tuple[str, ImageCache]],
    *,
    min_correlation: float = MIN_CORRELATION,
) -> dict[str, Any]:
    """Check a scanned run's images against other datasets and write what they share.

    Adds ``leak_of`` (``;``-joined ``NAME:ID`` of the matching images of the other
    datasets, strongest first) and ``leak_correlation`` (the strongest match's aligned
    correlation; 1 for identical pixels) to ``issues.csv``, every pair to
    ``leaks.csv`` (``dataset``, ``id``, ``other_id`` and the evidence of
    :func:`match_signatures`) and a summary to ``run.json["leaks"]``.

    Parameters
    ----------
    run_dir
        A scanned run (``issues.csv`` written).
    ids
        The run's image ids, in the order of ``issues.csv``'s dataset.
    cache
        The run's image cache.
    others
        ``(name, cache)`` of each other dataset, cached at the run's image size.
    min_correlation
        Floor of a near match's aligned correlation.

    Returns
    -------
    dict
        The summary written to ``run.json``.
    """
    run = RunDir(run_dir)
    sig = cache_signatures(cache, ids)
    if sig is None:
        raise SettingsError(f"the image cache {cache.path} lacks images of the run")
    mine = (list(ids), sig[0], sig[1])
    frames: list[pd.DataFrame] = []
    summary: dict[str, Any] = {"datasets": []}
    for name, other in others:
        keys, images = cache_signatures(other)
        pairs, low = match_signatures(
            (list(other.ids), keys, images), mine, min_correlation=float(min_correlation)
        )
        pairs = pairs.rename(columns={"id_a": "other_id", "id_b": "id"})
        pairs.insert(0, "dataset", name)
        frames.append(pairs)
        summary["datasets"].append(
            {
                "dataset": name,
                "n_images": len(other.ids),
                "n_pairs": len(pairs),
                "n_leaked": int(pairs["id"].nunique()),
                "n_low_information": len(low),
            }
        )
    columns = ["dataset", "id", "other_id"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    table = table[columns + [c for c in table.columns if c not in columns]]
    strongest = table.sort_values("correlation", ascending=False, kind="stable")
    leak_of: dict[str, list[str]] = {}
    best: dict[str, float] = {}
    for row in strongest.itertuples(index=False):
        leak_of.setdefault(row.id, []).append(f"{row.dataset}:{row.other_id}")
        best.setdefault(row.id, float(row.correlation))
    cols = pd.DataFrame(
        {
            "leak_of": [";".join(leak_of.get(i, [])) for i in ids],
            "leak_correlation": [best.get(i, np.nan) for i in ids],
        },
        index=pd.Index(ids, name="id"),
    )
    run.add_issue_columns(cols, LEAK_COLUMNS)
    run.write_table(LEAKS_CSV, table)
    summary["n_leaked"] = int(table["id"].nunique()) if len(table) else 0
    summary["min_correlation"] = float(min_correlation)
    run.edit_run(lambda data: data.__setitem__("leaks", summary))
    return summary
