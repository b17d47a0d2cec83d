"""Two rounds of cross-validation: train again on the labels the evidence doubts (issue 27).

Round 1 is a finished scan (``RUN``). Round 2 is ``labelaudit scan DATASET --out OUT
--second-round-of RUN`` (:mod:`labelaudit.pipeline.second_round`): its models train on
the given labels with every label of ``combined`` posterior >= 0.5 in ``RUN`` flipped
(new folds, new models; an image is still held out of the model that predicts it,
though its neighbours' corrections drew on its given label), and its detectors judge
the *given* labels with round 2's out-of-fold probabilities and embeddings.
Prints ``benchmarks/label_evidence.py``'s table for both rounds, cleanlab's Datalab
given each round's probabilities, and the out-of-fold micro F1 against the true labels.

Usage::

    python benchmarks/two_rounds.py DATASET RUN OUT [--preset demo]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path, help="a new directory")
    parser.add_argument("--preset", default="demo", help="round 1's settings override it")
    parser.add_argument("--threads", type=int, default=0, help="0: labelaudit's choice")
    parser.add_argument("--no-datalab", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import labelaudit
    from labelaudit.rundir import RunDir

    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose a new directory")
    overrides = round_one_settings(args.run)
    if args.threads:
        overrides["threads"] = args.threads
    labelaudit.scan(
        args.dataset,
        args.out,
        second_round_of=args.run,
        preset=args.preset,
        report=False,
        **overrides,
    )
    flipped = RunDir(args.out).read_run()["second_round"]["flipped_labels"]
    print(f"round 2: trained with {flipped} labels flipped (combined posterior >= 0.5)")
    bench = _label_evidence()
    results = []
    for name, run in (("round 1", args.run), ("round 2", args.out)):
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
