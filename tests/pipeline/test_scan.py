"""End to end: synth -> scan (tiny model) -> run directory contract -> bench, via the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from la_testutils import TINY_SCAN, run_ok, snapshot


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data, run = root / "data", root / "run"
    run_ok(
        ["synth", data, "--n", "48", "--size", "64", "--seed", "3"],
        ["scan", data, "--out", run, *TINY_SCAN, "--quiet"],
    )
    return data, run


@pytest.mark.slow
def test_scan_writes_the_run_directory_contract(scanned):
    data, run = scanned
    n = len(pd.read_csv(data / "train.csv"))
    probs = pd.read_csv(run / "oof_probs.csv", dtype={"id": str})
    assert probs.shape == (n, 20) and probs.columns[0] == "id"
    values = probs.iloc[:, 1:].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    emb = np.load(run / "embeddings.npy")
    assert emb.shape[0] == n and emb.dtype == np.float32
    findings = pd.read_csv(run / "findings.csv")
    for col in ("id", "class", "detector", "score", "flagged", "suggestion"):
        assert col in findings.columns
    # issue 14: knn and quality joined the default detectors
    assert set(findings["detector"]) == {
        "confident",
        "knn",
        "combined",
        "isolation",
        "intensity",
        "quality",
    }
    issues = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False)
    for col in (
        "id",
        "given_labels",
        "suggested_labels",
        "label_quality",
        "outlier_score",
        "intensity_z",
        "flagged_by",
        "n_flags",
        "label_score",
        "image_score",
        "problem_score",
        "evidence",
    ):
        assert col in issues.columns
    assert sorted(issues["id"]) == sorted(probs["id"])
    given = pd.read_csv(data / "train.csv", dtype=str).set_index("ID")["Label"]
    for _, row in issues.head(10).iterrows():  # labels in the dataset's own notation
        assert set(row["given_labels"].split("|")) == set(given[row["id"]].split("|"))
    run_json = json.loads((run / "run.json").read_text())
    for section in ("dataset", "train", "detect", "compare", "timings"):
        assert section in run_json
    assert (run / "changes.csv").is_file() and (run / "cleaned" / "train.csv").is_file()
    html = (run / "report.html").read_text()
    assert "plotly" in html.lower() and '<script src="http' not in html


@pytest.mark.slow
def test_bench_and_rerun_reuses_folds(scanned, run_cli):
    data, run = scanned
    code, out, err = run_cli("bench", run, "--truth", data / "truth.csv")
    assert code == 0, err
    assert "consensus" in out
    assert (run / "bench.json").is_file()
    before = snapshot(data)
    code, out, err = run_cli("scan", data, "--out", run, *TINY_SCAN)
    assert code == 0, err
    assert "fold 1/2: reused" in out and "fold 2/2: reused" in out
    assert snapshot(data) == before


@pytest.mark.slow
def test_report_command_rewrites_report(scanned, run_cli):
    _, run = scanned
    (run / "report.html").unlink()
    code, out, _ = run_cli("report", run)
    assert code == 0 and (run / "report.html").is_file()


def test_scan_refuses_to_write_inside_the_dataset(make_hpa, run_cli):
    root = make_hpa(n=4)
    before = snapshot(root)
    code, _, err = run_cli("scan", root, "--out", root / "run", *TINY_SCAN)
    assert code == 2 and "inside the dataset directory" in err
    assert snapshot(root) == before


def test_scan_bad_settings_exit_2(make_hpa, run_cli, tmp_path):
    root = make_hpa(n=4)
    code, _, err = run_cli("scan", root, "--out", tmp_path / "r", "--backbone", "no_such_net")
    assert code == 2 and "no_such_net" in err
    code, _, err = run_cli("scan", root, "--out", tmp_path / "r", "--preset", "huge")
    assert code == 2 and "unknown preset" in err


def test_report_on_missing_run_exits_2(tmp_path, run_cli):
    code, _, err = run_cli("report", tmp_path / "nothing")
    assert code == 2 and "run.json" in err


@pytest.mark.slow
def test_clean_command_writes_a_scannable_dataset(scanned, run_cli):
    data, run = scanned
    before = snapshot(data)
    code, out, err = run_cli("clean", run, "--policy", "consensus-drop")
    assert code == 0, err
    assert "cleaned dataset" in out
    assert (run / "changes.csv").is_file()
    code, out, err = run_cli("check", run / "cleaned")
    assert code == 0, out + err
    assert snapshot(data) == before
    code, _, err = run_cli("clean", run, "--policy", "bogus")
    assert code == 2, err
