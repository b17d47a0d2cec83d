"""benchmarks/find_issues_cells.py: the label AUROC without and with a cell model."""

from __future__ import annotations

import pandas as pd
from la_testutils import load_benchmark, with_cell_model

import labelaudit


def test_a_run_with_supplied_cells_is_scored_without_and_with_them(tmp_path):
    bench = load_benchmark("find_issues_cells")
    given, true, probs, features, cell_probs, owners = with_cell_model(seed=1)
    ids = [f"f{i}" for i in range(len(given))]
    labelaudit.find_issues(
        given, probs, features, ids=ids, cell_probs=cell_probs, cell_images=owners,
        out=tmp_path / "run",
    )  # fmt: skip
    kinds = []
    for g, t in zip(given, true, strict=True):
        if (g == t).all():
            kinds.append("none")
        elif g.sum() < t.sum():
            kinds.append("missing")
        else:
            kinds.append("extra" if g.sum() > t.sum() else "swap")
    pd.DataFrame({"ID": ids, "noise": kinds}).to_csv(tmp_path / "truth.csv", index=False)
    scores = bench.label_aurocs(tmp_path, tmp_path / "run")
    assert set(scores) == {"without cells", "with cells"}
    assert set(scores["with cells"]) == {"label", "missing", "extra", "swap"}
    assert scores["with cells"]["label"] > scores["without cells"]["label"] + 0.02, scores
