"""Cell evidence through the detector interface (the registered ``cells`` detector)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelaudit.core.errors import RunDirError, SettingsError
from labelaudit.detect import AuditInputs, CellEvidence, CellPredictions, get_detector
from labelaudit.detect.cells import CellFindingParams, cell_findings
from labelaudit.pipeline.compare import issues_columns, run_detectors

TOKENS = ["0", "1", "2", "3"]


def field_inputs(cells: CellPredictions | None) -> AuditInputs:
    # a: label 0, shown by its cells; b: 0|2, no cell shows 2; c: 1, most cells show 3 too
    labels = np.array([[1, 0, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0]], dtype=bool)
    return AuditInputs(["a", "b", "c"], list("wxyz"), TOKENS, "|", labels, cells=cells)


def cell_predictions() -> CellPredictions:
    rows = [("a", 0.9, 0.1, 0.1, 0.1)] * 4 + [("b", 0.8, 0.1, 0.3, 0.1)] * 3
    rows += [("c", 0.1, 0.9, 0.1, 0.9)] * 3 + [("c", 0.1, 0.9, 0.1, 0.05)]
    table = pd.DataFrame({"cell_id": [f"c{i}" for i in range(len(rows))]})
    table["id"] = [r[0] for r in rows]
    return CellPredictions(table, np.array([r[1:] for r in rows]))


def test_the_cells_detector_gives_cell_findings_tables_and_a_result():
    inputs = field_inputs(cell_predictions())
    detector = get_detector("cells", per_class_thresholds=False, random_state=3)
    assert isinstance(detector, CellEvidence)
    per_cell, per_field = detector.tables(inputs)
    fixed = CellFindingParams(per_class_thresholds=False)
    cells = inputs.cells
    assert cells is not None
    ids = ["a", "b", "c"]
    want = cell_findings(cells.table, cells.probs, ids, inputs.labels, TOKENS, params=fixed, seed=3)
    pd.testing.assert_frame_equal(per_cell, want[0])
    pd.testing.assert_frame_equal(per_field, want[1])
    assert list(per_field.columns) == list(CellEvidence.issue_columns)
    result = detector.run(inputs)
    found = set(zip(result.findings["id"], result.findings["class"], strict=True))
    assert found == {("b", "y"), ("c", "z")}  # b's 2 unsupported, c's 3 missing
    assert result.image_flagged.tolist() == [False, True, True]
    assert result.image_score[1] == pytest.approx(1 - 0.3 / 0.5)
    assert result.image_score[0] == 0.0  # every label shown


def test_bad_cell_parameters_and_inputs_are_refused():
    with pytest.raises(SettingsError, match="cells: threshold must be in"):
        get_detector("cells", threshold=0)
    with pytest.raises(SettingsError, match="'cells' needs cells"):
        get_detector("cells").run(field_inputs(None))
    bad = cell_predictions()
    with pytest.raises(RunDirError, match="cell probs have shape"):
        field_inputs(CellPredictions(bad.table, bad.probs[:, :3]))
    # It runs after the comparison, on the cell cross-validation: not one of the compared.
    assert "label_support" not in issues_columns()
    with pytest.raises(SettingsError, match="'cells' runs after the comparison"):
        run_detectors(field_inputs(cell_predictions()), ["cells"])
