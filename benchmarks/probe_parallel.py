"""Probe mode's logistic regressions: classes on threads vs one after another.

``labelaudit.train.probe.fit_predict_fold`` fits one logistic regression per class.
This times one fold three ways in the same run, on random but structured
embeddings: the baseline (the loop before 2026-11-28: classes one after another,
BLAS with its default threads), ``n_jobs=1`` (one class at a time, single-threaded
BLAS) and the default (classes on the usable cores, single-threaded BLAS), and
checks that all three give the same probabilities.

Usage::

    python benchmarks/probe_parallel.py [--n 16000] [--d 1280] [--k 19] [--repeat 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def baseline(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """The previous loop: one class after another, BLAS threads as configured."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    a, b = scaler.transform(train_x), scaler.transform(test_x)
    out = np.empty((len(test_x), train_y.shape[1]), dtype=np.float32)
    for k in range(train_y.shape[1]):
        clf = LogisticRegression(C=1.0, max_iter=2000, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            out[:, k] = clf.fit(a, train_y[:, k].astype(int)).predict_proba(b)[:, 1]
    return out


def main(argv: list[str] | None = None) -> int:
    from labelaudit.data.parallel import available_cores
    from labelaudit.train.probe import fit_predict_fold

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16000, help="training images")
    parser.add_argument("--d", type=int, default=1280, help="embedding dimensions")
    parser.add_argument("--k", type=int, default=19, help="classes")
    parser.add_argument("--repeat", type=int, default=2, help="best of")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n + 1000, args.d)).astype(np.float32)
    y = x @ (rng.normal(size=(args.d, args.k)) / 30) + rng.normal(size=(len(x), args.k)) > 1.0
    train_x, train_y, test_x = x[: args.n], y[: args.n], x[args.n :]
    cores = available_cores()
    runs = {
        "before (serial, BLAS threads)": lambda: baseline(train_x, train_y, test_x),
        "n_jobs=1 (BLAS 1 thread)": lambda: fit_predict_fold(train_x, train_y, test_x, n_jobs=1),
        f"default ({cores} threads)": lambda: fit_predict_fold(train_x, train_y, test_x),
    }
    times, outputs = {}, {}
    for label, run in runs.items():
        best = np.inf
        for _ in range(args.repeat):
            start = time.perf_counter()
            outputs[label] = run()
            best = min(best, time.perf_counter() - start)
        times[label] = best
    first = next(iter(outputs.values()))
    same = all(np.allclose(first, o, atol=1e-5) for o in outputs.values())
    before = times[next(iter(times))]
    print(f"one fold, {args.n:,} x {args.d:,}, {args.k} classes, best of {args.repeat}:")
    for label, seconds in times.items():
        print(f"  {label:30s} {seconds:6.1f} s  ratio to before {before / seconds:.2f}")
    print(f"  same probabilities (within 1e-5): {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
