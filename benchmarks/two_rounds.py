"""Two rounds of cross-validation: train again on the labels the evidence doubts (issue 27).

Round 1 is a finished scan (``RUN``). Its combined label evidence
(``detect/combined.py``) gives every label a posterior of being wrong; the labels at or
above ``--flip-at`` are flipped (an image is never left without labels) and written to
``OUT/labels/train.csv``. Round 2 scans the same images with those labels
(``OUT/round2``: new folds, new models; an image's own labels still never train the
model that predicts it), and ``OUT/detect`` re-runs the detectors on the *original*
labels with round 2's out-of-fold probabilities and embeddings (``scan --probs``).
Prints ``benchmarks/label_evidence.py``'s table for both rounds, cleanlab's Datalab
given each round's probabilities, and the out-of-fold micro F1 against the true labels.

Usage::

    python benchmarks/two_rounds.py DATASET RUN OUT [--flip-at 0.5] [--preset demo]
        [--threads 1] [--no-datalab] [--json OUT.json]

``DATASET`` is in the HPA layout (``train.csv`` + ``train/``) with a ``truth.csv``
(``labelaudit synth``, ``benchmarks/realpix.py``); ``RUN`` its scan, whose training
settings round 2 repeats (:data:`SAME_AS_ROUND_ONE`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd


def round_two_labels(labels: np.ndarray, posterior: np.ndarray, flip_at: float) -> np.ndarray:
    """The given labels with every label of posterior >= ``flip_at`` flipped.

    An image whose flips would leave it without labels keeps its given labels.
    """
    y = np.asarray(labels, dtype=bool)
    new = y ^ (np.asarray(posterior, dtype=float) >= flip_at)
    empty = ~new.any(axis=1)
    new[empty] = y[empty]
    return new


def micro_f1(probs: np.ndarray, true: np.ndarray, at: float = 0.5) -> float:
    """Micro F1 of ``probs >= at`` against the true labels."""
    pred = np.asarray(probs) >= at
    true = np.asarray(true, dtype=bool)
    return float(2 * (pred & true).sum() / max(pred.sum() + true.sum(), 1))


def _label_evidence():
    path = Path(__file__).with_name("label_evidence.py")
    spec = importlib.util.spec_from_file_location("label_evidence_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Round 1's training settings that round 2 repeats (the rest are the preset's).
SAME_AS_ROUND_ONE = (
    "backbone", "pretrained", "lr", "epochs", "batch_size", "image_size", "folds", "seed",
    "tta", "schedule", "warmup_epochs", "mode", "probe_c",
)  # fmt: skip


def round_one_settings(run: Path) -> dict:
    """The training settings ``run`` recorded (empty for a ``scan --probs`` run)."""
    record = json.loads((run / "run.json").read_text())
    settings = (record.get("train") or {}).get("settings") or {}
    return {k: settings[k] for k in SAME_AS_ROUND_ONE if k in settings}


def write_round_two(run: Path, out: Path, flip_at: float) -> tuple[Path, int]:
    """Round 2's label file from ``run``'s evidence; returns it and the flips made."""
    from labelaudit.detect.combined import CombinedEvidence
    from labelaudit.rundir import RunDir

    inputs = RunDir(run).audit_inputs()
    posterior, _ = CombinedEvidence().posteriors(inputs)
    new = round_two_labels(inputs.labels, posterior, flip_at)
    tokens = np.asarray(inputs.class_tokens)
    path = out / "labels" / "train.csv"
    path.parent.mkdir(parents=True)
    frame = pd.DataFrame({"ID": inputs.ids, "Label": ["|".join(tokens[row]) for row in new]})
    frame.to_csv(path, index=False)
    return path, int((new != inputs.labels).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path, help="a new directory")
    parser.add_argument("--flip-at", type=float, default=0.5)
    parser.add_argument("--preset", default="demo", help="round 1's settings override it")
    parser.add_argument("--threads", type=int, default=0, help="0: labelaudit's choice")
    parser.add_argument("--no-datalab", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import labelaudit
    from labelaudit.rundir import RunDir

    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose a new directory")
    labels, flips = write_round_two(args.run, args.out, args.flip_at)
    print(f"round 2 labels: {flips} labels flipped (posterior >= {args.flip_at}) -> {labels}")
    overrides = round_one_settings(args.run)
    if args.threads:
        overrides["threads"] = args.threads
    labelaudit.scan(
        labels=labels,
        images=args.dataset / "train",
        out=args.out / "round2",
        preset=args.preset,
        report=False,
        **overrides,
    )
    detect = args.out / "detect"
    labelaudit.scan(
        args.dataset,
        detect,
        probs=args.out / "round2" / "oof_probs.csv",
        embeddings=args.out / "round2" / "embeddings.npy",
        report=False,
    )
    bench = _label_evidence()
    results = []
    for name, run in (("round 1", args.run), ("round 2", detect)):
        scored = bench.score_run(name, args.dataset, run, use_datalab=not args.no_datalab)
        inputs = RunDir(run).audit_inputs()
        true = bench.true_labels(inputs.ids, args.dataset / "truth.csv", inputs.class_tokens)
        scored["oof_micro_f1"] = micro_f1(inputs.probs, true)
        print(bench.format_run(scored), f"out-of-fold micro F1 {scored['oof_micro_f1']:.3f}\n")
        results.append(scored)
    if not args.no_datalab:
        first, second = (r["auroc"] for r in results)
        print(
            "label problems: round-2 label_score {:.3f}; Datalab label on round 1's "
            "probabilities {:.3f} (cleanlab alone), on round 2's {:.3f}".format(
                second["label order"]["label"],
                first["datalab label"]["label"],
                second["datalab label"]["label"],
            )
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
