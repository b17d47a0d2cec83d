"""Wall time of ``labelaudit.pipeline.find_issues`` on arrays alone (no images).

N images x 19 classes: random multi-label labels (15 % per class, at least one), noisy
probabilities that mostly agree with them, 64-d features with a class signal. Prints
the wall time of ``find_issues`` plus reading ``.issues`` (the detectors run for real:
confident learning, knn, isolation forest, the comparison, embedding duplicates), and
the load average before and after (the development machine is shared).

Usage: ``python benchmarks/find_issues_arrays.py [--n 10000] [--seed 0]``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import labelaudit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    labels = rng.random((args.n, 19)) < 0.15
    labels[~labels.any(axis=1), 0] = True
    probs = np.clip(np.where(labels, 0.8, 0.1) + rng.normal(0, 0.1, labels.shape), 0, 1)
    features = rng.normal(size=(args.n, 64)) + labels @ rng.normal(size=(19, 64))
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = labelaudit.find_issues(labels, pred_probs=probs, features=features)
    rows = len(result.issues)
    seconds = time.perf_counter() - start
    print(
        f"find_issues: {args.n} images x 19 classes, 64-d features: {seconds:.1f} s "
        f"({rows} rows; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after)"
    )


if __name__ == "__main__":
    main()
