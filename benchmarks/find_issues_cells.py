"""A cell model's probabilities given to ``find_issues``: the label AUROC without and with.

For each cell-level run (``scan D --level cell --masks D/masks``), reads back the field
model's out-of-fold probabilities and embeddings and the cell model's out-of-fold cell
probabilities, and gives them to :func:`labelaudit.find_issues` as a user would give
their own models' predictions (arrays, no images): once without the cells, once with
``cell_probs`` and ``cell_images``. Prints the AUROC of ``label_score`` for label
problems (all, and ``missing``, ``extra``, ``swap``) against the clean images, as
``benchmarks/label_evidence.py`` scores them.

Usage::

    labelaudit synth D7 --n 400 --seed 7 --masks
    labelaudit scan D7 --out R7 --preset demo --level cell --masks D7/masks
    python benchmarks/find_issues_cells.py s7=D7:R7 [NAME=DATASET:RUN ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import labelaudit
from labelaudit.rundir import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scoring of label_evidence.py
from label_evidence import LABEL_NOISE, auroc, truth_groups  # noqa: E402


def label_aurocs(data: Path, run: Path) -> dict[str, dict[str, float]]:
    """``{"without cells": {group: AUROC}, "with cells": {...}}`` for one run."""
    inputs = RunDir(run).audit_inputs()
    if inputs.cells is None:
        raise SystemExit(f"{run}: not a cell-level run (no cells.csv)")
    groups, clean = truth_groups(inputs.ids, data / "truth.csv")
    cells = {
        "cell_probs": inputs.cells.probs,
        "cell_images": inputs.cells.table["id"].tolist(),
    }
    out = {}
    for name, extra in (("without cells", {}), ("with cells", cells)):
        result = labelaudit.find_issues(
            inputs.labels,
            inputs.probs,
            inputs.embeddings,
            class_names=inputs.class_names,
            ids=inputs.ids,
            **extra,
        )
        score = result.issues.set_index("id").loc[inputs.ids, "label_score"].to_numpy(float)
        out[name] = {g: auroc(groups[g], clean, score) for g in ("label", *LABEL_NOISE)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=DATASET:RUN")
    args = parser.parse_args()
    print("| set | cells | label | missing | extra | swap |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for spec in args.runs:
        name, _, paths = spec.partition("=")
        data, _, run = paths.partition(":")
        for kind, scores in label_aurocs(Path(data), Path(run)).items():
            row = " | ".join(f"{scores[g]:.3f}" for g in ("label", *LABEL_NOISE))
            print(f"| {name} | {kind} | {row} |", flush=True)


if __name__ == "__main__":
    main()
