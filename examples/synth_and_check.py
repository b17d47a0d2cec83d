"""Build a synthetic HPA-style dataset with known label errors and check it.

Run with ``python examples/synth_and_check.py [OUT_DIR]``. Uses only the Python API:
the same functions the ``labelaudit synth`` and ``labelaudit check`` commands call.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import labelaudit


def main(out: Path) -> None:
    truth = labelaudit.synthesize(out / "dataset", n=120, size=96, noise_rate=0.15, seed=7)
    print(f"synthesised {len(truth)} fields; injected problems:")
    print(truth["noise"].value_counts().to_string())

    report = labelaudit.check_dataset(out / "dataset", deep=True)
    summary = report.summary()
    print(
        f"\n{summary['images']} images, {summary['classes']} classes, "
        f"problems: {len(summary['errors'])}"
    )
    for name, count in summary["images_per_class"].items():
        print(f"  {name:45s} {count:4d}")

    dataset = labelaudit.load_dataset(out / "dataset")
    cache = labelaudit.build_cache(dataset, size=64, cache_dir=out / "cache")
    green = cache.stats["green_mean"]
    print(
        f"\ncached {cache.images.shape} uint8; mean green intensity "
        f"{green.mean():.4f} (min {green.min():.4f}, max {green.max():.4f})"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
