"""One epoch from the image cache against decoding the PNGs, in the same run.

A plain PyTorch-style Dataset decodes and resizes every field on every access;
labelaudit decodes each field once into a memory-mapped uint8 array. This script
times, on the real HPA fields in ``../shared/hpa-samples``:

- building the cache (decode + full-resolution statistics + resize), serially:
  the decode throughput per core;
- one epoch the plain way (decode 4 PNGs + resize per field);
- one epoch from the cache (memmap slice -> float tensor), and the ratio.

Usage: ``python benchmarks/decode_cache.py [DATASET] [--size 128] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from labelaudit.data.cache import build_cache, resize_to_uint8
from labelaudit.data.layouts import load_dataset

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent.parent / "shared" / "hpa-samples"


def plain_epoch(dataset, size: int) -> float:
    """What a Dataset class without a cache does: decode and resize every access."""
    start = time.perf_counter()
    for source in dataset.sources:
        planes = [resize_to_uint8(np.asarray(Image.open(p)), size) for p in source.paths]
        x = np.stack(planes).astype(np.float32) / 255.0
        assert x.shape[-1] == size
    return time.perf_counter() - start


def cached_epoch(cache) -> float:
    start = time.perf_counter()
    for i in range(len(cache.ids)):
        x = np.asarray(cache.images[i], dtype=np.float32) / 255.0
        assert x.shape[-1] == cache.size
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    n_channels = sum(len(s.paths) for s in dataset.sources)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache = build_cache(dataset, args.size, tmp, workers=1)
        build = time.perf_counter() - start
        plain = min(plain_epoch(dataset, args.size) for _ in range(args.repeats))
        cached = min(cached_epoch(cache) for _ in range(args.repeats))
    print(f"dataset: {args.dataset} ({len(dataset)} fields, {n_channels} channel files)")
    print("| measurement | value |\n| --- | --- |")
    print(
        f"| cache build, 1 core (decode + stats + resize) | {build:.2f} s "
        f"({len(dataset) / build:.2f} fields/s, {n_channels / build:.1f} channel files/s) |"
    )
    print(f"| plain epoch (decode + resize every field) | {plain:.3f} s |")
    print(f"| cached epoch (memmap read) | {cached * 1e3:.3f} ms |")
    print(f"| ratio plain / cached | {plain / cached:,.0f}x |")


if __name__ == "__main__":
    main()
