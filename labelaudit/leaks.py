"""Duplicates of a run's dataset, and images shared between two datasets (leakage).

:func:`add_duplicates` runs :func:`labelaudit.detect.duplicates.find_duplicates` on a
scanned run: pixel digests and perceptual hashes from the run's image cache, embedding
neighbours from the run's ``embeddings.npy``. It adds ``duplicate_group``,
``duplicate_of`` and ``duplicate_conflict`` to ``issues.csv``, the label-conflict
findings (detector ``duplicates``) to ``findings.csv``, writes every pair with its
evidence to ``duplicates.csv`` and a summary to ``run.json["detect"]["duplicates"]``.

:func:`find_leaks` compares two datasets through their image caches (no training):
an image of B whose pixels or perceptual hash match one of A is listed with the
evidence, for example test images that are also in the training set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelaudit.data.cache import ImageCache, build_cache, default_cache_dir
from labelaudit.detect.base import AuditInputs
from labelaudit.detect.duplicates import (
    HASH_DISTANCE,
    DuplicateResult,
    find_duplicates,
    hamming_pairs,
    max_bits,
    perceptual_hashes,
    pixel_keys,
)
from labelaudit.errors import SettingsError
from labelaudit.io import write_csv
from labelaudit.rundir import (
    FINDINGS_CSV,
    RunDir,
    dataset_inputs,
    ensure_outside,
    guard_output_file,
)

__all__ = [
    "DUPLICATES_CSV",
    "DUPLICATE_COLUMNS",
    "LeakResult",
    "add_duplicates",
    "cache_signatures",
    "find_leaks",
]

#: Columns :func:`add_duplicates` adds to ``issues.csv``.
DUPLICATE_COLUMNS = ("duplicate_group", "duplicate_of", "duplicate_conflict")
#: The run file listing every duplicate pair with its evidence.
DUPLICATES_CSV = "duplicates.csv"
#: Side of the cache entries ``leaks`` builds (the perceptual hash reads 32 x 32).
LEAKS_IMAGE_SIZE = 64


def cache_signatures(
    cache: ImageCache, ids: list[str] | None = None
) -> tuple[list[str], np.ndarray] | None:
    """Pixel digests and perceptual hashes of cached images.

    Parameters
    ----------
    cache
        An image cache entry.
    ids
        The images wanted, in this order (``None``: the cache's order).

    Returns
    -------
    (keys, hashes) or None
        ``None`` when the cache lacks one of ``ids``.
    """
    rows = np.arange(len(cache.ids))
    if ids is not None:
        index = {image_id: r for r, image_id in enumerate(cache.ids)}
        if any(image_id not in index for image_id in ids):
            return None
        rows = np.array([index[image_id] for image_id in ids], dtype=np.int64)
    images = cache.images[rows] if len(rows) else cache.images[:0]
    stats = cache.stats.iloc[rows].reset_index(drop=True)
    return pixel_keys(images, stats), perceptual_hashes(images)


def _run_cache(run: RunDir) -> ImageCache | None:
    """The run's image cache entry, ``None`` when it is gone."""
    info = run.section("dataset") or {}
    path = info.get("cache")
    if not path or not (Path(path) / "meta.json").is_file():
        return None
    return ImageCache.open(path)


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
        ``hash_distance``, ``embedding_factor`` for
        :func:`~labelaudit.detect.duplicates.find_duplicates`.

    Returns
    -------
    DuplicateResult
    """
    run = RunDir(run_dir)
    inputs = run.audit_inputs() if inputs is None else inputs
    cache = _run_cache(run) if cache is None else cache
    sig = cache_signatures(cache, inputs.ids) if cache is not None else None
    keys, hashes = sig if sig is not None else (None, None)
    dups = find_duplicates(inputs, keys=keys, hashes=hashes, **params)
    if sig is None:
        dups.summary["warning"] = "image cache not found: no pixel or perceptual-hash evidence"
    run.add_issue_columns(dups.columns(inputs.ids), DUPLICATE_COLUMNS)
    findings = run.read_table(FINDINGS_CSV)
    findings = findings[findings["detector"] != "duplicates"]
    if len(dups.result.findings):
        findings = pd.concat([findings, dups.result.findings.astype(str)], ignore_index=True)
    run.write_table(FINDINGS_CSV, findings)
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
        ``id_a``, ``id_b``, ``evidence`` (``exact`` or ``phash``),
        ``phash_distance`` (bits of 64), one row per matching pair.
    n_a, n_b
        Images in A and in B.
    """

    pairs: pd.DataFrame
    n_a: int
    n_b: int

    @property
    def n_leaked(self) -> int:
        """Images of B with at least one match in A."""
        return int(self.pairs["id_b"].nunique())


def match_signatures(
    a: tuple[list[str], list[str], np.ndarray],
    b: tuple[list[str], list[str], np.ndarray],
    hash_distance: float = HASH_DISTANCE,
) -> pd.DataFrame:
    """Pairs (one image of A, one of B) with equal digests or close perceptual hashes.

    Parameters
    ----------
    a, b
        ``(ids, pixel keys, perceptual hashes)`` of each dataset.
    hash_distance
        Largest share of differing perceptual-hash bits of a near match.

    Returns
    -------
    pandas.DataFrame
        ``id_a``, ``id_b``, ``evidence``, ``phash_distance`` (bits), sorted by B then A.
    """
    ids_a, keys_a, hashes_a = a
    ids_b, keys_b, hashes_b = b
    if np.shape(hashes_a)[1:] != np.shape(hashes_b)[1:]:
        raise SettingsError(
            f"the datasets have different channels ({np.shape(hashes_a)[1]} and "
            f"{np.shape(hashes_b)[1]}): their images cannot be compared"
        )
    limit = max_bits(hashes_a, hash_distance)
    ii, jj, dd = hamming_pairs(hashes_a, hashes_b, max_distance=limit)
    found = {(int(i), int(j)): ("phash", int(d)) for i, j, d in zip(ii, jj, dd, strict=True)}
    where_a: dict[str, list[int]] = {}
    for i, key in enumerate(keys_a):
        where_a.setdefault(key, []).append(i)
    for j, key in enumerate(keys_b):
        for i in where_a.get(key, []):
            d = int(np.bitwise_count(hashes_a[i] ^ hashes_b[j]).sum())
            found[(i, j)] = ("exact", d)
    order = sorted(found, key=lambda p: (p[1], p[0]))
    return pd.DataFrame(
        {
            "id_a": [ids_a[i] for i, _ in order],
            "id_b": [ids_b[j] for _, j in order],
            "evidence": [found[p][0] for p in order],
            "phash_distance": [found[p][1] for p in order],
        },
        columns=["id_a", "id_b", "evidence", "phash_distance"],
    )


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
    hash_distance: float = HASH_DISTANCE,
    layout: str | None = None,
    on_cache: Callable[[str], None] | None = None,
) -> LeakResult:
    """List the images of dataset B that also appear in dataset A.

    Both datasets are decoded into the image cache (reused when there), nothing is
    trained. Matches: identical pixels (``exact``) or per-channel perceptual hashes
    differing in at most ``hash_distance`` of their bits (``phash``: shifted,
    re-encoded or re-noised copies).

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
    hash_distance
        Largest share of differing perceptual-hash bits of a near match (0 to 1).
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

    if isinstance(hash_distance, bool) or not 0 <= float(hash_distance) <= 1:
        raise SettingsError(f"hash distance must be a share of bits in [0, 1], got {hash_distance}")
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
        keys, hashes = cache_signatures(cache)
        sigs.append((list(cache.ids), keys, hashes))
    pairs = match_signatures(sigs[0], sigs[1], float(hash_distance))
    if out is not None:
        write_csv(Path(out), pairs)
    return LeakResult(pairs, len(sigs[0][0]), len(sigs[1][0]))
