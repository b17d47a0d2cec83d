"""Does cleaning pay? Policies x class weights on synthetic sets large enough to tell.

For each noise rate: ``labelaudit synth`` (N fields with known true labels), one
``labelaudit scan --mode probe`` (frozen pretrained EfficientNet-Lite0 embeddings,
5-fold logistic regressions for the out-of-fold probabilities), then ``labelaudit scan
--probs`` of those predictions (every detector and the comparison with the current
code, no training), then :func:`labelaudit.tools.benefit.evaluate_cleaning`: for each split seed,
each cleaning policy (``labelaudit clean``'s code) and class-weight kind, a
logistic-regression probe retrained on the cleaned training labels and scored on the
test images against their true labels; each configuration against no cleaning on the
same split. Writes ``OUT/per_seed.csv``, ``OUT/summary.csv`` and ``OUT/table.md``.

Usage::

    python benchmarks/cleaning_benefit.py OUT [--n 2000] [--noise 0.15 0.30] [--seeds 10]

Reuses ``OUT/d<rate>`` (dataset) and ``OUT/r<rate>`` (probe scan) when they are
complete; the detection run ``OUT/a<rate>`` is redone every time, so a rerun after a
detector or policy change measures the current code (the probe scan is the expensive
part and does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from labelaudit.pipeline.clean import DEFAULT_POLICY, POLICIES
from labelaudit.tools.benefit import evaluate_cleaning

WEIGHTED_POLICIES = tuple(dict.fromkeys(("none", DEFAULT_POLICY, "soft", "relabel-soft")))


def _cli(*args: str) -> None:
    env = {**os.environ, "LABELAUDIT_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "labelaudit", *args], check=True, env=env)


def prepare(out: Path, rate: float, n: int, size: int, image_size: int, data_seed: int) -> Path:
    """Synthesize and scan (probe mode) one noise rate; returns the run directory."""
    tag = f"{round(rate * 100):02d}"
    data, probe, run = out / f"d{tag}", out / f"r{tag}", out / f"a{tag}"
    if not (data / "truth.csv").is_file():
        _cli(
            "synth", str(data), "--n", str(n), "--size", str(size),
            "--noise-rate", str(rate), "--seed", str(data_seed),
        )  # fmt: skip
    if not (probe / "issues.csv").is_file():
        _cli(
            "scan", str(data), "--out", str(probe), "--preset", "demo", "--mode", "probe",
            "--image-size", str(image_size),
        )  # fmt: skip
    _cli(
        "scan", str(data), "--out", str(run), "--preset", "demo", "--image-size",
        str(image_size), "--probs", str(probe / "oof_probs.csv"),
        "--embeddings", str(probe / "embeddings.npy"),
    )  # fmt: skip
    return run


def configs() -> list[tuple[str, str]]:
    grid = [(p, "none") for p in POLICIES]
    grid += [(p, w) for p in WEIGHTED_POLICIES for w in ("method", "pos")]
    return grid


def fmt_ci(row: pd.Series, name: str) -> str:
    return (
        f"{row[name]:+.3f} [{row[name + '_t_low']:+.3f}, {row[name + '_t_high']:+.3f}] "
        f"[{row[name + '_boot_low']:+.3f}, {row[name + '_boot_high']:+.3f}]"
    )


def table(summary: pd.DataFrame) -> str:
    head = (
        "| noise | policy | class weights | label errors (train+val) | weighted errors | "
        "removed | macro F1 | macro F1 change vs no cleaning [t CI] [bootstrap CI] | "
        "micro F1 change | rarest-3 F1 | rarest-3 change | vs unweighted, uncleaned: macro |\n"
        "| --- | --- | --- | --- | ---: | ---: | ---: | --- | --- | ---: | --- | --- |\n"
    )
    lines = []
    for _, r in summary.iterrows():
        lines.append(
            f"| {r['noise']:.0%} | {r['policy']} | {r['weights']} | "
            f"{r['label_errors_given']:.0f} -> {r['label_errors']:.0f} | "
            f"{r['weighted_errors']:.0f} | {r['n_removed']:.0f} | "
            f"{r['macro_f1']:.3f} | {fmt_ci(r, 'd_macro_f1')} | {fmt_ci(r, 'd_micro_f1')} | "
            f"{r['rare_f1']:.3f} | {fmt_ci(r, 'd_rare_f1')} | {fmt_ci(r, 'vs_base_macro_f1')} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=128, help="synthetic field size (px)")
    ap.add_argument("--image-size", type=int, default=128, help="scan input size (px)")
    ap.add_argument("--noise", type=float, nargs="+", default=[0.15, 0.30])
    ap.add_argument("--seeds", type=int, default=10, help="split seeds 0..S-1")
    ap.add_argument("--data-seed", type=int, default=21)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    frames, sums = [], []
    for rate in args.noise:
        start = time.perf_counter()
        run = prepare(args.out, rate, args.n, args.size, args.image_size, args.data_seed)
        prepared = time.perf_counter() - start
        per_seed, summary = evaluate_cleaning(
            run,
            run.parent / f"d{run.name[1:]}" / "truth.csv",
            configs=configs(),
            seeds=range(args.seeds),
            n_boot=args.n_boot,
        )
        took = time.perf_counter() - start
        print(f"noise {rate:.0%}: synth+scan {prepared:.0f} s, evaluation {took - prepared:.0f} s")
        frames.append(per_seed.assign(noise=rate))
        sums.append(summary.assign(noise=rate))
    per_seed, summary = pd.concat(frames), pd.concat(sums)
    per_seed.to_csv(args.out / "per_seed.csv", index=False)
    summary.to_csv(args.out / "summary.csv", index=False)
    text = table(summary)
    (args.out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
