"""Time the detectors and the comparison on HPA-scale structured random inputs.

    .venv/bin/python benchmarks/detectors.py               # N=100,000, K=19, D=1,280
    .venv/bin/python benchmarks/detectors.py --n 20000     # quicker

Inputs come from :func:`labelaudit.synth.audit.make_audit` (labels from class
priors with 5 % corrupted, probabilities a noisy function of the true labels,
embeddings = class centroids + noise, lognormal per-class intensities, 2 % image
faults). Prints a markdown table of wall times, then the detectors' AUROC against
the planted problems (a sanity check that the fast path still finds them).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _describe(name: str, params: dict) -> str:
    if name == "confident":
        return f"filter_by={params['filter_by']}, with class health"
    if name == "isolation":
        return f"PCA to {params['n_components']}, global + per-class forests"
    if name == "intensity":
        return f"method={params['method']}"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="images")
    parser.add_argument("--k", type=int, default=19, help="classes")
    parser.add_argument("--d", type=int, default=1280, help="embedding dimensions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip-variants", action="store_true", help="skip the no-PCA and robust variants"
    )
    args = parser.parse_args()

    from labelaudit.core.io import read_json
    from labelaudit.detect import get_detector
    from labelaudit.pipeline.bench import bench, format_bench_table
    from labelaudit.pipeline.compare import detect_and_compare
    from labelaudit.synth.audit import make_audit

    rows: list[tuple[str, float, str]] = []

    t = time.perf_counter()
    synth = make_audit(args.n, args.k, args.d, seed=args.seed)
    inputs = synth.inputs
    print(f"generated N={args.n:,} K={args.k} D={args.d:,} in {time.perf_counter() - t:.1f} s")

    # cleanlab alone, as the reference the confident detector builds on.
    from cleanlab.multilabel_classification.filter import find_label_issues

    lists = inputs.label_lists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        mask = find_label_issues(labels=lists, pred_probs=inputs.probs, n_jobs=1)
        rows.append(
            (
                "cleanlab `find_label_issues` alone",
                time.perf_counter() - t,
                f"{mask.sum():,} issues",
            )
        )

    with tempfile.TemporaryDirectory() as run_dir:
        t = time.perf_counter()
        result = detect_and_compare(inputs, run_dir)
        total = time.perf_counter() - t
        run = read_json(Path(run_dir) / "run.json")
        for name, info in run["detect"]["detectors"].items():
            note = f"{_describe(name, info['params'])}; {info['n_flagged_images']:,} flagged"
            rows.append((f"detector: {name}", info["seconds"], note))
        compare_s = total - run["detect"]["seconds"]
        n_findings = len(result.findings)
        rows.append(
            (
                "comparison + writing findings/issues/run.json",
                compare_s,
                f"{n_findings:,} findings rows",
            )
        )
        rows.append(("**all detectors + comparison**", total, "`detect_and_compare`"))

        synth.truth_frame().to_csv(Path(run_dir) / "truth.csv", index=False)
        t = time.perf_counter()
        scores = bench(run_dir, Path(run_dir) / "truth.csv")
        rows.append(("bench (scoring against truth)", time.perf_counter() - t, ""))

    if not args.skip_variants:
        from sklearn.metrics import roc_auc_score

        clean = np.array([n == "none" for n in synth.noise])
        label = np.array([any(t in n for t in ("missing", "extra", "swap")) for n in synth.noise])
        image = ~clean & ~label

        def auroc(score: np.ndarray, pos: np.ndarray) -> str:
            keep = pos | clean
            return f"{roc_auc_score(pos[keep], score[keep]):.3f}"

        for label_text, name, params in [
            ("confident, health off", "confident", {"health": False}),
            ("isolation without PCA (all D dims)", "isolation", {"n_components": None}),
            ("isolation, global forest only", "isolation", {"per_class": False}),
            ("intensity, method=sigma (default)", "intensity", {"method": "sigma"}),
            ("intensity, robust (median/MAD of log)", "intensity", {"method": "robust"}),
        ]:
            det = get_detector(name, **params)
            t = time.perf_counter()
            res = det.run(inputs)
            seconds = time.perf_counter() - t
            note = (
                f"AUROC label noise {auroc(res.image_score, label)}, "
                f"image faults {auroc(res.image_score, image)}; "
                f"{res.n_flagged:,} flagged"
            )
            rows.append((f"variant: {label_text}", seconds, note))

    print()
    print(
        f"N={args.n:,}, K={args.k}, D={args.d:,}; {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| step | seconds | notes |")
    print("| --- | ---: | --- |")
    for text, seconds, note in rows:
        print(f"| {text} | {seconds:.1f} | {note} |")
    print()
    print(format_bench_table(scores))


if __name__ == "__main__":
    main()
