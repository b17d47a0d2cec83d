"""Is the image cache decode-bound? Pure decode rate against the cache build rate.

On the real HPA fields in ``../shared/hpa-samples`` (8-bit PNG stains, 2048 and
3072 px) this script measures, interleaved in rounds so that a loaded machine
slows both sides alike:

- pure decode: every channel file decoded (``read_array``), nothing else;
- the cache build, one process: :func:`labelaudit.data.cache.build_cache` with
  ``workers=1`` into a fresh directory (decode + full-resolution statistics +
  resize + the memory-mapped write and the journal);
- the ratio build rate / decode rate per round (the median is reported; the
  target is >= 0.75: statistics and resize cost at most a third of the decode);
- the speed-up of the build with 2 worker processes over 1, on the fields
  repeated 4 times (map_fields needs 8 fields to start processes; the spawn
  start-up is included);
- as before: one epoch decoding every field against one epoch from the cache;
- with ``--profile``: CPU milliseconds per channel of each part of the statistics
  and the resize (the channels decoded once, each part timed over all of them).

OpenCV runs with one thread in the single-process measurements (as in each
worker), so "one process" means one core.

Usage: ``python benchmarks/decode_cache.py [DATASET] [--size 128] [--rounds 5] [--profile]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from labelaudit.data import cache as cache_module
from labelaudit.data import measures
from labelaudit.data.cache import build_cache, resize_to_uint8
from labelaudit.data.dataset import Dataset
from labelaudit.data.layouts import load_dataset
from labelaudit.data.readers import read_array

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent.parent / "shared" / "hpa-samples"


def pure_decode(dataset: Dataset) -> float:
    """Seconds to decode every channel file once."""
    start = time.perf_counter()
    for source in dataset.sources:
        for path in source.paths:
            read_array(path)
    return time.perf_counter() - start


def cache_build(dataset: Dataset, size: int, workers: int) -> float:
    """Seconds for a fresh cache build (a new cache directory each time)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_cache(dataset, size, tmp, workers=workers)
        return time.perf_counter() - start


def repeated(dataset: Dataset, times: int) -> Dataset:
    """The dataset's fields ``times`` over, with distinct ids."""
    n = len(dataset)
    return dataclasses.replace(
        dataset,
        ids=[f"{i}-{k}" for k in range(times) for i in dataset.ids],
        labels=np.tile(dataset.labels, (times, 1)),
        sources=dataset.sources * times,
        rows=list(range(2, n * times + 2)),
    )


def plain_epoch(dataset: Dataset, size: int) -> float:
    """What a Dataset class without a cache does: decode and resize every access."""
    start = time.perf_counter()
    for source in dataset.sources:
        planes = [resize_to_uint8(read_array(p), size) for p in source.paths]
        x = np.stack(planes).astype(np.float32) / 255.0
        assert x.shape[-1] == size
    return time.perf_counter() - start


def cached_epoch(cache) -> float:
    start = time.perf_counter()
    for i in range(len(cache.ids)):
        x = np.asarray(cache.images[i], dtype=np.float32) / 255.0
        assert x.shape[-1] == cache.size
    return time.perf_counter() - start


def _cpu_ms(fn, planes: list[np.ndarray], repeats: int = 7) -> float:
    """CPU ms per channel of ``fn`` (the least of ``repeats`` passes over ``planes``)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for plane in planes:
            fn(plane)
        best = min(best, time.process_time() - start)
    return best / len(planes) * 1e3


def profile_stats(dataset: Dataset, size: int) -> None:
    """Print the CPU cost per channel of each part of the statistics and the resize."""
    c = measures
    planes = [read_array(p) for s in dataset.sources for p in s.paths]
    planes = [p for p in planes if p.ndim == 2 and p.dtype == np.uint8]
    coarse = {id(p): c.coarse_channel(p) for p in planes}
    guide = {id(p): c._level_sample(p) for p in planes}

    def strip_pass(p: np.ndarray) -> None:
        g = guide[id(p)]
        level = 254 if g[0][255] > 0 else None
        band = c.FOCUS_BAND if p.size >= c.HIST_SAMPLE_MIN else None
        c._field_pass(p, c._window_start(0.99, g, 255), saturation_level=level, band=band)

    def whole(p: np.ndarray) -> None:
        small = c.coarse_channel(p)
        c.channel_stats(p, small)
        resize_to_uint8(small if cache_module._divides(small, size) else p, size)

    parts = {
        "coarse channel (INTER_AREA by 4)": c.coarse_channel,
        "level histogram of every 4th row (pixel pairs)": c._level_sample,
        "strip pass: mean, std, max, p99 counts, saturated, focus": strip_pass,
        "quality rest (entropy, Otsu, coarse focus, blocks)": lambda p: c._quality_stats(
            p, 255.0, coarse[id(p)], 200, guide[id(p)]
        ),
        f"resize to {size} px": lambda p: resize_to_uint8(
            coarse[id(p)] if cache_module._divides(coarse[id(p)], size) else p, size
        ),
        "**coarse + channel_stats + resize**": whole,
    }
    print(f"\n| per 8-bit channel ({len(planes)} channels), CPU ms | value |\n| --- | ---: |")
    for name, fn in parts.items():
        print(f"| {name} | {_cpu_ms(fn, planes):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="also time each statistic")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    dataset = load_dataset(args.dataset)
    files = sum(len(s.paths) for s in dataset.sources)
    load_before = os.getloadavg()[0]

    pure_decode(dataset)  # warm the page cache: both sides read the same bytes
    decode_t, build_t, ratios = [], [], []
    for r in range(args.rounds):
        if r % 2:  # alternate the order: neither side always runs second
            b = cache_build(dataset, args.size, 1)
            d = pure_decode(dataset)
        else:
            d = pure_decode(dataset)
            b = cache_build(dataset, args.size, 1)
        decode_t.append(d)
        build_t.append(b)
        ratios.append(d / b)  # build rate / decode rate

    many = repeated(dataset, 4)
    one_t, two_t = [], []
    for r in range(max(3, args.rounds // 2)):
        if r % 2:
            two_t.append(cache_build(many, args.size, 2))
            one_t.append(cache_build(many, args.size, 1))
        else:
            one_t.append(cache_build(many, args.size, 1))
            two_t.append(cache_build(many, args.size, 2))
    speedups = [a / b for a, b in zip(one_t, two_t, strict=True)]

    with tempfile.TemporaryDirectory() as tmp:
        cache = build_cache(dataset, args.size, tmp, workers=1)
        plain = min(plain_epoch(dataset, args.size) for _ in range(3))
        cached = min(cached_epoch(cache) for _ in range(3))
    load_after = os.getloadavg()[0]

    med = statistics.median
    print(f"dataset: {args.dataset} ({len(dataset)} fields, {files} channel files), {args.size} px")
    print(
        f"machine: {os.cpu_count()} cores, load average {load_before:.1f} before, "
        f"{load_after:.1f} after; {args.rounds} interleaved rounds (median)"
    )
    print("| measurement | value |\n| --- | --- |")
    print(f"| pure decode, 1 process | {med(decode_t) / files * 1e3:.0f} ms per channel file |")
    print(
        f"| cache build, 1 process (decode + stats + resize + write) | "
        f"{med(build_t) / files * 1e3:.0f} ms per channel file "
        f"({len(dataset) / med(build_t):.2f} fields/s) |"
    )
    print(
        f"| **build rate / pure decode rate** | **{med(ratios):.2f}** "
        f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)}; target >= 0.75) |"
    )
    print(
        f"| cache build of {len(many)} fields, 1 process / 2 processes | "
        f"{med(one_t):.2f} s / {med(two_t):.2f} s: **{med(speedups):.2f}x** "
        f"(rounds: {', '.join(f'{x:.2f}' for x in speedups)}) |"
    )
    print(f"| plain epoch (decode + resize every field) | {plain:.3f} s |")
    print(f"| cached epoch (memmap read) | {cached * 1e3:.3f} ms |")
    print(f"| ratio plain / cached | {plain / cached:,.0f}x |")
    if args.profile:
        profile_stats(dataset, args.size)


if __name__ == "__main__":
    main()
