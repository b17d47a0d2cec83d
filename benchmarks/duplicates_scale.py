"""Time the duplicate search at HPA scale: 100,000 cached fields, planted copies.

    .venv/bin/python benchmarks/duplicates_scale.py              # N=100,000, 64 px, 4 stains
    .venv/bin/python benchmarks/duplicates_scale.py --n 20000    # quicker

Fields are written to a memory-mapped array like the image cache's (``--dir``; N x 4 x
S x S uint8): smooth random structure (16 x 16 random values per stain, upsampled and
blurred) with camera noise; ``--copies`` of them are planted as copies shifted by 1-2
px with fresh noise. Times :func:`labelaudit.detect.duplicates.find_duplicates` (the
thumbnail index, the pixel checks, the nulls and the groups; wall and CPU seconds, the
latter less sensitive to a shared machine's load) against the brute-force
all-pairs comparison of the same thumbnails (numpy, on a sample of queries, scaled
up to N queries: the reference the index replaces), and scores the planted pairs.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def make_fields(path: Path, n: int, size: int, copies: int, seed: int) -> list[tuple[int, int]]:
    """Write the fields; returns the planted (original, copy) rows."""
    import cv2

    rng = np.random.default_rng(seed)
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 4, size, size))
    block = 2000
    for start in range(0, n, block):
        m = min(block, n - start)
        low = rng.random((m * 4, 16, 16), dtype=np.float32)
        out = np.empty((m * 4, size, size), dtype=np.float32)
        for p in range(0, m * 4, 4):
            up = cv2.resize(low[p : p + 4].transpose(1, 2, 0), (size, size), cv2.INTER_CUBIC)
            out[p : p + 4] = cv2.GaussianBlur(up, (0, 0), 1.0).transpose(2, 0, 1)
        out = 40 + 150 * out + rng.normal(0, 2, out.shape).astype(np.float32)
        images[start : start + m] = np.clip(out, 0, 255).astype(np.uint8).reshape(m, 4, size, size)
    planted = []
    originals = rng.choice(n - copies, copies, replace=False)
    for k, src in enumerate(originals):
        dst = n - copies + k
        dy, dx = (int(v) for v in rng.choice([-2, -1, 1, 2], 2))
        moved = np.roll(np.asarray(images[src], dtype=np.float32), (dy, dx), axis=(1, 2))
        moved += rng.normal(0, 2, moved.shape)
        images[dst] = np.clip(np.rint(moved), 0, 255).astype(np.uint8)
        planted.append((int(src), int(dst)))
    images.flush()
    return planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--copies", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="where the array goes")
    args = parser.parse_args()

    from labelaudit.detect.base import AuditInputs
    from labelaudit.detect.duplicates import find_duplicates
    from labelaudit.detect.pixelmatch import thumbnails

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "images.npy"
        t = time.perf_counter()
        planted = make_fields(path, args.n, args.size, args.copies, args.seed)
        print(f"generated {args.n:,} fields in {time.perf_counter() - t:.1f} s", flush=True)
        images = np.load(path, mmap_mode="r")
        ids = [f"f{i:06d}" for i in range(args.n)]
        inputs = AuditInputs(ids, ["a"], ["0"], "|", np.zeros((args.n, 1), dtype=bool))

        t, cpu = time.perf_counter(), time.process_time()
        dups = find_duplicates(inputs, images=images)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu

        # The reference: every query against every field (brute force on the same
        # thumbnails), timed on a sample of queries and scaled to all of them.
        thumbs = thumbnails(images)
        sample = thumbs[:: max(1, args.n // 500)]
        norms = (thumbs**2).sum(axis=1)
        t, brute_cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(sample), 100):
            q = sample[start : start + 100]
            d = norms[None, :] - 2 * q @ thumbs.T
            np.argpartition(d, 10, axis=1)[:, :11]
        brute = (time.perf_counter() - t) * args.n / len(sample)
        brute_cpu = (time.process_time() - brute_cpu) * args.n / len(sample)

    truth = {(ids[a], ids[b]) for a, b in planted}
    found = {tuple(sorted(p)) for p in dups.pairs[["a", "b"]].values.tolist()}
    hit = len(found & truth)
    print(
        f"N={args.n:,}, {args.size} px, 4 stains; {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| step | seconds | CPU seconds | notes |")
    print("| --- | ---: | ---: | --- |")
    s = dups.summary
    print(
        f"| find_duplicates (index, pixel checks, nulls, groups) | {seconds:.1f} | {cpu:.1f} | "
        f"{s['n_candidates']:,} candidates, {s['n_pairs']:,} verified pairs; planted "
        f"{len(truth):,}: recall {hit / len(truth):.3f}, precision "
        f"{hit / max(len(found), 1):.3f} |"
    )
    for part, value in s["seconds"].items():
        print(f"| of which: {part} | {value:.1f} | | {s['n_compared']:,} pixel checks in all |")
    print(
        f"| all-pairs thumbnail search (reference, extrapolated) | {brute:.1f} | "
        f"{brute_cpu:.1f} | numpy, k=10, the search alone |"
    )


if __name__ == "__main__":
    main()
