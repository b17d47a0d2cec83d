"""Decode every image exactly once into a memory-mapped uint8 array.

Cross-validation reads each image K x epochs times; decoding a full-size HPA
channel costs about 50-70 ms, so the cache decodes each field once, resizes it to
the training size and stores it as ``images.u8`` (N x C x S x S, uint8, raw,
opened with :func:`numpy.memmap`). While the full-resolution pixels are in memory
it also computes per-image, per-channel statistics (``stats.csv``) that the
intensity detector and the report use. Statistics and resizing run OpenCV kernels
on the integer pixels, so the build costs little more than the decode.

A cache entry is keyed by the image fingerprint (ids, resolved paths, sizes and
modification times of every file), the size and the channel list, so a changed
dataset is never served stale pixels.

Building is resumable and collects every broken file. An entry is built in a
partial directory ``.partial-<layout key>`` (keyed by ids, paths, size and
channels, not by file times) under a lock: the pixels go straight into its
``images.u8`` and each finished field is recorded in ``journal.jsonl`` (its
statistics, or why it could not be read, and its files' sizes and times) after
the pixels are flushed. A rerun after an interruption, SIGKILL included, decodes
only the fields the journal lacks or whose files changed. The finished entry is
renamed into place. When files are unreadable the partial entry stays (so fixing
them decodes only them) and :class:`BrokenImages` lists all of them; with
``skip_broken`` an entry of the readable images is published instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from labelaudit.core.digest import ShortDigest, short_digest
from labelaudit.core.errors import DatasetError, RunDirError, SettingsError
from labelaudit.core.io import write_csv, write_json
from labelaudit.core.locks import LockHeld, hold_lock
from labelaudit.core.userfiles import parse_json, read_user_csv, read_user_json, remove_entry
from labelaudit.data import readers
from labelaudit.data.dataset import Dataset
from labelaudit.data.measures import FAST_DTYPES, channel_stats, coarse_channel, contiguous
from labelaudit.data.parallel import available_cores, map_fields
from labelaudit.data.readers import full_scale, read_array

_WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)

#: 2: OpenCV stats and resize; 3: + max, entropy, foreground, focus_coarse; 4: + block_max;
#: 5: resize from the coarse channel where the size divides it, sampled quality histogram;
#: 6: ``focus`` of fields >= HIST_SAMPLE_MIN pixels over every other FOCUS_BAND rows.
CACHE_VERSION = 6
#: Journal flushes: at most every this many fields or seconds, whichever comes first.
FLUSH_FIELDS = 16
FLUSH_SECONDS = 2.0
#: Partial entries of other builds, not touched for this long and not locked, are removed.
STALE_PARTIAL_SECONDS = 7 * 24 * 3600


def check_cache_dir(cache_dir: str | Path | None) -> Path:
    """The cache directory to use: ``cache_dir``, else :func:`default_cache_dir`.

    Raises
    ------
    SettingsError
        It exists and is not a directory (a file, a FIFO, a device, a link to one).
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if (root.exists() or root.is_symlink()) and not root.is_dir():
        raise SettingsError(
            f"the cache directory {root} is not a directory; give a directory (--cache-dir, "
            "or LABELAUDIT_CACHE_DIR) that labelaudit may create or fill"
        )
    return root


def default_cache_dir() -> Path:
    """Where cache entries live by default.

    ``$LABELAUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/labelaudit``, else
    ``~/.cache/labelaudit``.
    """
    env = os.environ.get("LABELAUDIT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "labelaudit"


class BrokenImages(DatasetError):
    """Images that cannot be read; ``str()`` lists every one, one line per file.

    Attributes
    ----------
    broken
        One dict per image: ``id``, ``file`` and ``reason``.
    """

    #: The advice of ``scan`` (the only command that can leave images out).
    SCAN_HINT = "fix or remove them, or scan with --skip-broken to audit the rest"

    def __init__(self, broken: list[dict[str, str]], hint: str = SCAN_HINT) -> None:
        self.broken = list(broken)
        lines = [f"{b['file']}: image {b['id']!r}: {b['reason']}" for b in self.broken]
        head = f"{len(self.broken)} image(s) cannot be read ({hint}):"
        super().__init__("\n".join([head, *lines]))
        if self.broken:  # for callers that expect one file: the first
            self.path, self.image = Path(self.broken[0]["file"]), self.broken[0]["id"]

    def __str__(self) -> str:
        return self.message


# ------------------------------------------------------------------ decoding


def _divides(coarse: np.ndarray | None, size: int) -> bool:
    """Whether ``size`` divides the coarse channel's sides: then area-averaging the coarse
    means is area-averaging the field (within one grey level, the coarse rounding), at
    a sixteenth of the reads. Other factors weigh partly covered coarse pixels as if
    uniform, which moves sharp edges by many levels, so they resize the full field."""
    return coarse is not None and coarse.shape[0] % size == 0 and coarse.shape[1] % size == 0


def resize_to_uint8(arr: np.ndarray, size: int) -> np.ndarray:
    """Area-average (downscale) or bilinear (upscale) one channel to ``size x size`` uint8.

    8- and 16-bit channels are resized in their own depth by OpenCV and then
    scaled to 8 bits; other dtypes go through a float copy.
    """
    shrinking = min(arr.shape) >= size
    if arr.dtype in FAST_DTYPES and arr.ndim == 2:
        method = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        small = cv2.resize(contiguous(arr), (size, size), interpolation=method)
        if small.dtype == np.uint8:
            return small
        # 16 -> 8 bits: v * 255/65535 rounded to the nearest level, no float copy kept.
        return cv2.convertScaleAbs(small, alpha=255.0 / 65535.0)
    unit = arr.astype(np.float32) * np.float32(1.0 / full_scale(arr.dtype))
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    small = np.asarray(Image.fromarray(unit, mode="F").resize((size, size), resample))
    return np.clip(np.rint(small * 255.0), 0, 255).astype(np.uint8)


def split_channels(arr: np.ndarray, n_channels: int, path: Path) -> list[np.ndarray]:
    """Split a decoded single-file image into ``n_channels`` 2-D channels."""
    if arr.ndim == 2:
        planes = [arr]
    else:
        planes = [arr[..., c] for c in range(arr.shape[-1])]
    if len(planes) != n_channels:
        raise DatasetError(
            f"image has {len(planes)} channel(s), the dataset's first image has {n_channels}",
            path=path,
        )
    return planes


#: ``max_pixels`` of a dataset that has no pixel budget attribute: read_array's default.
READER_DEFAULT = "default"


def _read(path: Path, max_pixels: int | str | None) -> np.ndarray:
    """Decode one file, with the cheap integrity test and the pixel budget when available."""
    quick = getattr(readers, "quick_integrity", None)
    if quick is not None:
        problem = quick(path)  # raises DatasetError, or returns what is wrong
        if isinstance(problem, str) and problem:
            raise DatasetError(problem, path=path)
    arr = read_array(path) if isinstance(max_pixels, str) else read_array(path, max_pixels)
    if arr.dtype.kind == "f":  # floats are intensities in [0, 1] (readers.to_unit_float)
        arr = np.clip(arr, 0.0, 1.0)
    return arr


def decode_field(
    paths: tuple[Path, ...],
    n_channels: int,
    size: int,
    max_pixels: int | str | None = READER_DEFAULT,
) -> tuple[np.ndarray, list[dict[str, float]], dict[str, int]]:
    """Decode one field: resized uint8 (C x S x S), per-channel stats, size info.

    ``max_pixels`` is the pixel budget per channel (``None``: no limit).
    """
    if len(paths) == 1:
        arr = _read(paths[0], max_pixels)
        planes = split_channels(arr, n_channels, paths[0])
    else:
        planes = [_read(p, max_pixels) for p in paths]
        for p, plane in zip(paths, planes, strict=True):
            if plane.ndim != 2:  # an RGB file where one stain was expected
                raise DatasetError(
                    f"expected a single-channel image, got shape {plane.shape}", path=p
                )
    out = np.empty((n_channels, size, size), dtype=np.uint8)
    stats = []
    for c, plane in enumerate(planes):
        coarse = coarse_channel(plane)
        stats.append(channel_stats(plane, coarse))
        small = coarse if coarse is not None and _divides(coarse, size) else plane
        out[c] = resize_to_uint8(small, size)
    info = {
        "height": int(planes[0].shape[0]),
        "width": int(planes[0].shape[1]),
        "bit_depth": int(planes[0].dtype.itemsize * 8),
    }
    return out, stats, info


def _decode_job(args: tuple):
    _, paths, n_channels, size, *rest = args
    return decode_field(paths, n_channels, size, rest[0] if rest else READER_DEFAULT)


# ------------------------------------------------------------------------- cache


@dataclass
class ImageCache:
    """A built cache entry: memory-mapped pixels plus full-resolution statistics.

    Attributes
    ----------
    path
        The entry's directory.
    ids
        Image ids, row order of ``images`` and ``stats``.
    channels
        Channel names.
    size
        Side length S of the cached images.
    images
        Read-only ``np.memmap`` of shape (N, C, S, S), uint8.
    stats
        One row per image: ``id``, ``height``, ``width``, ``bit_depth`` and
        ``{channel}_{stat}`` for every stat in :data:`~labelaudit.data.measures.STAT_NAMES`.
    reused
        True when the entry existed and was served without decoding.
    resumed
        Fields taken from an earlier, interrupted build instead of decoded again.
    skipped
        Unreadable images left out (``skip_broken``): dicts with ``id``, ``file``,
        ``reason``. ``ids`` then lists only the readable images.
    """

    path: Path
    ids: list[str]
    channels: tuple[str, ...]
    size: int
    images: np.ndarray
    stats: pd.DataFrame
    reused: bool = False
    resumed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | Path, reused: bool = True) -> ImageCache:
        path = Path(path)
        # A cache entry is read back (a shared cache directory may hold anything):
        # regular files only, bounded, and a damaged entry is named in one line.
        if not _plain_entry_files(path, ("meta.json", "images.u8", "stats.csv")):
            raise RunDirError(
                f"the cache entry {path} is damaged (a file is missing, a link "
                "or not a regular file); remove it and run again"
            )
        try:
            meta = read_user_json(path / "meta.json", "the cache entry's meta.json")
            shape = tuple(int(x) for x in meta["shape"])
            images = np.memmap(path / "images.u8", dtype=np.uint8, mode="r", shape=shape)
            stats = read_user_csv(
                path / "stats.csv",
                "the cache's stats.csv",
                dtype={"id": str},
                keep_default_na=False,
            )
            return cls(
                path,
                list(meta["ids"]),
                tuple(meta["channels"]),
                int(meta["size"]),
                images,
                stats,
                reused,
                skipped=list(meta.get("skipped", [])),
            )
        except (DatasetError, KeyError, TypeError, ValueError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
                raise
            raise RunDirError(
                f"the cache entry {path} is damaged ({type(exc).__name__}); remove it and run again"
            ) from None


def _plain_entry_files(entry: Path, names: tuple[str, ...]) -> bool:
    """True when ``entry`` is a real directory whose ``names`` are regular files or absent
    (the first two must exist): nothing in a cache entry may be a link or a device."""
    try:
        if not stat.S_ISDIR(os.lstat(entry).st_mode):
            return False
    except OSError:
        return False
    for k, name in enumerate(names):
        try:
            if not stat.S_ISREG(os.lstat(entry / name).st_mode):
                return False
        except FileNotFoundError:
            if k < 2:
                return False
        except OSError:
            return False
    return True


def _lock_path(entry: Path) -> Path:
    return entry.parent / f"{entry.name.lstrip('.')}.lock"


def _remove_if_unlocked(path: Path, entry: Path) -> bool:
    """Remove ``path`` if nobody holds ``entry``'s lock (so nobody is building it)."""
    try:
        with hold_lock(_lock_path(entry), f"cache entry {entry.name}"):
            shutil.rmtree(path, ignore_errors=True)  # under the lock: no builder can start
            return True
    except LockHeld:
        return False


def _last_touched(partial: Path) -> float:
    journal = partial / "journal.jsonl"
    try:
        return max(partial.stat().st_mtime, journal.stat().st_mtime if journal.exists() else 0)
    except OSError:
        return 0.0


def remove_stale(root: Path, *, keep: str | None = None) -> list[Path]:
    """Remove what builds that died left in ``root``; return what was removed.

    ``.tmp-<entry>-<pid>`` directories are never resumed: removed when the entry's
    lock is free (a pid alone proves nothing, pids are reused). ``.partial-*``
    entries are resumable: removed only when untouched for
    :data:`STALE_PARTIAL_SECONDS` and unlocked; ``keep`` names one to spare.
    """
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    now = time.time()
    for path in root.iterdir():
        if not path.is_dir() or path.name == keep:
            continue
        if path.name.startswith(".tmp-"):
            entry = root / path.name[len(".tmp-") :].rpartition("-")[0]
        elif path.name.startswith(".partial-"):
            if now - _last_touched(path) < STALE_PARTIAL_SECONDS:
                continue
            entry = path
        else:
            continue
        if _remove_if_unlocked(path, entry):
            removed.append(path)
    return removed


@contextlib.contextmanager
def staged_entry(final: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Build a cache entry in a temporary directory beside ``final``; rename it into place.

    The block runs holding ``final``'s lock (a second builder waits) and fills the
    yielded directory; on success it becomes ``final`` (atomic on one file
    system). If ``final`` exists by then (a builder before the lock was taken),
    it is kept. Temporary directories of dead builders of ``final`` and this
    one's are removed whatever happens.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with hold_lock(_lock_path(final), f"cache entry {final.name}", wait=True, on_wait=on_wait):
        for stale in final.parent.glob(f".tmp-{final.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # we hold the lock: nobody else builds it
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
        tmp.mkdir()
        try:
            yield tmp
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / "meta.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def cache_key(dataset: Dataset, size: int) -> str:
    """The key of a dataset's cache entry at ``size``."""
    text = f"v{CACHE_VERSION}:{dataset.image_fingerprint()}:{size}:{','.join(dataset.channels)}"
    return short_digest(text.encode(), 20)


def partial_key(dataset: Dataset, size: int) -> str:
    """The key of a partial entry: ids, resolved paths, size, channels (not file times)."""
    h = ShortDigest(20, f"v{CACHE_VERSION}:partial:{size}:{','.join(dataset.channels)}".encode())
    for image_id, source in zip(dataset.ids, dataset.sources, strict=True):
        h.update(f"\x1e{image_id}".encode())
        for p in source.paths:
            h.update(f"\x1f{p.resolve()}".encode())
    return h.hexdigest()


def _file_stamps(paths: tuple[Path, ...]) -> list[list[int]]:
    stamps = []
    for p in paths:
        try:
            st = p.stat()
            stamps.append([st.st_size, st.st_mtime_ns])
        except OSError:
            stamps.append([-1, -1])
    return stamps


def subset_dataset(dataset: Dataset, ids: list[str]) -> Dataset:
    """The dataset restricted to ``ids`` (in the dataset's order); rows stay aligned."""
    wanted = set(ids)
    keep = [i for i, image_id in enumerate(dataset.ids) if image_id in wanted]
    return dataclasses.replace(
        dataset,
        ids=[dataset.ids[i] for i in keep],
        labels=dataset.labels[keep],
        sources=[dataset.sources[i] for i in keep],
        rows=[dataset.rows[i] for i in keep],
    )


# ---------------------------------------------------------------- partial entries


@dataclass
class _Partial:
    """A partial entry: pixels written so far and the journal of finished fields."""

    path: Path
    images: np.memmap
    rows: dict[int, dict[str, object]]
    broken: dict[int, dict[str, str]]
    #: Per field, its files' [size, mtime_ns], taken before decoding: a file that
    #: changes while it is decoded is decoded again by the next build.
    stamps: list[list[list[int]]]

    @property
    def journal(self) -> Path:
        return self.path / "journal.jsonl"


def _open_partial(path: Path, dataset: Dataset, size: int) -> _Partial:
    """Open (or start) the partial entry and keep the journal's fields whose files are unchanged."""
    n, c = len(dataset), len(dataset.channels)
    shape = [n, c, size, size]
    plan = {"version": CACHE_VERSION, "shape": shape, "ids": dataset.ids}
    plan_file = path / "plan.json"
    stamps = [_file_stamps(src.paths) for src in dataset.sources]
    fresh = True
    if _plain_entry_files(path, ("plan.json", "images.u8", "journal.jsonl")):
        with contextlib.suppress(ValueError, OSError):
            fresh = parse_json(plan_file.read_text(encoding="utf-8")) != plan
        fresh = fresh or (path / "images.u8").stat().st_size != int(np.prod(shape))
    if fresh:
        remove_entry(path.parent, path.name)  # a planted link is unlinked, never followed
        path.mkdir(parents=True)
        images = np.memmap(path / "images.u8", dtype=np.uint8, mode="w+", shape=tuple(shape))
        write_json(plan_file, plan)
        return _Partial(path, images, {}, {}, stamps)
    images = np.memmap(path / "images.u8", dtype=np.uint8, mode="r+", shape=tuple(shape))
    part = _Partial(path, images, {}, {}, stamps)
    with contextlib.suppress(OSError):
        for line in part.journal.read_text(encoding="utf-8").splitlines():
            try:
                entry = parse_json(line)
                i = int(entry["i"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
            if not 0 <= i < n or entry.get("files") != stamps[i]:
                continue  # a file changed since: decode it again
            if "error" in entry:
                part.broken[i] = entry["error"]
                part.rows.pop(i, None)
            else:
                part.rows[i] = entry["row"]
                part.broken.pop(i, None)
    return part


class _Journal:
    """Appends finished fields to the journal, after their pixels reach the file."""

    def __init__(self, part: _Partial) -> None:
        self.part = part
        self.pending: list[str] = []
        self.last = time.monotonic()
        # O_NOFOLLOW: a link planted in a shared cache must not make us append elsewhere.
        fd = os.open(part.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        self.fh = open(fd, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)

    def add(self, entry: dict[str, object]) -> None:
        self.pending.append(json.dumps(entry))
        if len(self.pending) >= FLUSH_FIELDS or time.monotonic() - self.last > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.part.images.flush()  # pixels first: a journaled field is always on disk
        self.fh.write("\n".join(self.pending) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.pending.clear()
        self.last = time.monotonic()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.fh.close()


def _stats_row(image_id: str, channels: tuple[str, ...], stats, info) -> dict[str, object]:
    row: dict[str, object] = {"id": image_id, **info}
    for name, st in zip(channels, stats, strict=True):
        row.update({f"{name}_{k}": v for k, v in st.items()})
    return row


def _decode_missing(
    part: _Partial,
    dataset: Dataset,
    size: int,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Decode the fields the partial entry lacks, journaling them as they finish."""
    n, c = len(dataset), len(dataset.channels)
    done = len(part.rows) + len(part.broken)
    missing = [i for i in range(n) if i not in part.rows and i not in part.broken]
    if progress is not None and done:
        progress(done, n)
    if not missing:
        return
    max_pixels = getattr(dataset, "max_pixels", READER_DEFAULT)
    jobs = [(i, dataset.sources[i].paths, c, size, max_pixels) for i in missing]
    journal = _Journal(part)
    try:
        results = map_fields(
            _decode_job, jobs, dataset.ids, workers, min_parallel=8, max_chunk=16, errors="return"
        )
        for i, result in results:
            paths = dataset.sources[i].paths
            entry: dict[str, object] = {"i": i, "files": part.stamps[i]}
            if isinstance(result, DatasetError):
                bad = result.path if result.path is not None else paths[0]
                # Absolute: the journal outlives this working directory.
                file = str(Path(bad).absolute())
                entry["error"] = {"id": dataset.ids[i], "file": file, "reason": result.message}
                part.broken[i] = entry["error"]  # type: ignore[assignment]
            else:
                pixels, stats, info = result
                part.images[i] = pixels
                entry["row"] = part.rows[i] = _stats_row(
                    dataset.ids[i], dataset.channels, stats, info
                )
            journal.add(entry)
            done += 1
            if progress is not None:
                progress(done, n)
    finally:
        journal.close()


def _entry_meta(key: str, dataset: Dataset, shape: list[int], seconds: float) -> dict:
    return {
        "version": CACHE_VERSION,
        "key": key,
        "shape": shape,
        "size": shape[-1],
        "channels": list(dataset.channels),
        "ids": dataset.ids,
        "dataset": str(dataset.root.resolve()),
        "image_fingerprint": dataset.image_fingerprint(),
        "seconds": round(seconds, 3),
    }


def _publish_partial(
    part: _Partial, final: Path, key: str, dataset: Dataset, started: float
) -> None:
    """Turn a complete partial entry into ``final`` (rename: atomic)."""
    n = len(dataset)
    part.images.flush()
    shape = list(part.images.shape)
    del part.images
    write_csv(part.path / "stats.csv", pd.DataFrame([part.rows[i] for i in range(n)]))
    write_json(
        part.path / "meta.json", _entry_meta(key, dataset, shape, time.perf_counter() - started)
    )
    for name in ("journal.jsonl", "plan.json"):
        (part.path / name).unlink(missing_ok=True)
    os.rename(part.path, final)


def _publish_subset(
    part: _Partial, dataset: Dataset, size: int, root: Path, started: float
) -> Path:
    """Publish the entry of the readable images, rows copied from the partial entry."""
    keep = [i for i in range(len(dataset)) if i not in part.broken]
    sub = subset_dataset(dataset, [dataset.ids[i] for i in keep])
    key = cache_key(sub, size)
    final = root / key
    if (final / "meta.json").is_file():
        return final
    skipped = [part.broken[i] for i in sorted(part.broken)]
    with staged_entry(final) as tmp:
        shape = [len(keep), len(dataset.channels), size, size]
        images = np.memmap(tmp / "images.u8", dtype=np.uint8, mode="w+", shape=tuple(shape))
        for j, i in enumerate(keep):  # row by row: bounded memory on a large set
            images[j] = part.images[i]
        images.flush()
        del images
        write_csv(tmp / "stats.csv", pd.DataFrame([part.rows[i] for i in keep]))
        meta = _entry_meta(key, sub, shape, time.perf_counter() - started)
        write_json(tmp / "meta.json", {**meta, "skipped": skipped})
    return final


def build_cache(
    dataset: Dataset,
    size: int,
    cache_dir: str | Path | None = None,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    skip_broken: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> ImageCache:
    """Return the dataset's cache entry at ``size``, decoding the images if needed.

    Parameters
    ----------
    dataset
        The dataset to cache (its directory is only read).
    size
        Side length S of the cached images.
    cache_dir
        Where entries live; :func:`default_cache_dir` when ``None``.
    workers
        Decoding processes; all cores when ``None``.
    progress
        Called as ``progress(done, total)`` after each decoded image (and once
        with the fields resumed from an interrupted build).
    skip_broken
        Leave unreadable images out instead of raising: the entry returned then
        holds only the readable images (``cache.ids``, ``cache.skipped``; use
        :func:`subset_dataset` for the matching dataset).
    on_wait
        Called with a line when another process is building the same entry (this
        one waits for it, then reuses its work).

    Returns
    -------
    ImageCache
        ``resumed`` says how many fields an interrupted build had already done.

    Raises
    ------
    BrokenImages
        When images cannot be decoded (all of them listed), unless ``skip_broken``.
    """
    root = check_cache_dir(cache_dir)
    key = cache_key(dataset, size)
    final = root / key
    if (final / "meta.json").is_file():
        return ImageCache.open(final, reused=True)
    root.mkdir(parents=True, exist_ok=True)
    pkey = partial_key(dataset, size)
    partial = root / f".partial-{pkey}"
    remove_stale(root, keep=partial.name)
    started = time.perf_counter()
    # Locked by the partial's key (it survives file changes); named by the entry's.
    with hold_lock(_lock_path(partial), f"cache entry {key}", wait=True, on_wait=on_wait):
        if (final / "meta.json").is_file():  # built while we waited
            return ImageCache.open(final, reused=True)
        part = _open_partial(partial, dataset, size)
        resumed = len(part.rows) + len(part.broken)
        _decode_missing(part, dataset, size, workers or available_cores(), progress)
        if not part.broken:
            _publish_partial(part, final, key, dataset, started)
            cache = ImageCache.open(final, reused=False)
        elif not skip_broken:
            raise BrokenImages([part.broken[i] for i in sorted(part.broken)])
        else:
            fresh = not (root / cache_key(_readable(dataset, part), size) / "meta.json").is_file()
            cache = ImageCache.open(_publish_subset(part, dataset, size, root, started), not fresh)
    cache.resumed = resumed
    return cache


def _readable(dataset: Dataset, part: _Partial) -> Dataset:
    return subset_dataset(dataset, [d for i, d in enumerate(dataset.ids) if i not in part.broken])
