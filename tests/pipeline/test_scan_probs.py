"""``scan --probs FILE [--embeddings FILE]``: predictions made elsewhere, strictly checked."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from la_testutils import TINY_SCAN, run_ok, scan_refuses_file, snapshot

TINY = TINY_SCAN


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny dataset and a run that trained on it."""
    root = tmp_path_factory.mktemp("probs")
    data, run = root / "data", root / "run"
    run_ok(
        ["synth", data, "--n", "40", "--size", "32", "--seed", "5"],
        ["scan", data, "--out", run, *TINY, "--quiet"],
    )
    return data, run


@pytest.mark.slow
def test_probs_reproduce_the_runs_issues(trained, run_cli, tmp_path):
    data, run = trained
    out = tmp_path / "again"
    code, _, err = run_cli(
        "scan", data, "--out", out, *TINY, "--probs", run / "oof_probs.csv",
        "--embeddings", run / "embeddings.npy", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    again = pd.read_csv(out / "issues.csv", dtype=str, keep_default_na=False)
    first = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False)
    # unreliable_classes comes from the training folds (classes with fewer images than
    # folds), which supplied predictions do not tell; every other column is identical.
    pd.testing.assert_frame_equal(
        again.drop(columns="unreliable_classes"), first.drop(columns="unreliable_classes")
    )
    assert (again["unreliable_classes"] == "").all()
    assert not (out / "folds").exists()  # nothing trained
    predictions = json.loads((out / "run.json").read_text())["predictions"]
    assert predictions["supplied"] is True and "out-of-sample" in predictions["note"]
    assert "out-of-sample" in (out / "report.html").read_text()
    # The trained run says nothing about supplied predictions.
    assert "predictions" not in json.loads((run / "run.json").read_text())


@pytest.mark.slow
def test_npy_probs_without_embeddings_skip_the_embedding_detectors(trained, run_cli, tmp_path):
    data, run = trained
    probs = pd.read_csv(run / "oof_probs.csv", dtype={"id": str}).drop(columns="id").to_numpy()
    np.save(tmp_path / "p.npy", probs)
    out = tmp_path / "npy"
    code, _, err = run_cli("scan", data, "--out", out, *TINY, "--probs", tmp_path / "p.npy", "-q")
    assert code == 0, err
    issues = pd.read_csv(out / "issues.csv")
    assert issues["label_quality"].notna().all() and issues["outlier_score"].isna().all()
    detect = json.loads((out / "run.json").read_text())["detect"]
    assert {"knn", "isolation"} <= set(detect["skipped"])


def _probs_frame(data) -> pd.DataFrame:
    from labelaudit.data.layouts import load_dataset

    ds = load_dataset(data)
    frame = pd.DataFrame(np.full((len(ds), ds.n_classes), 0.5), columns=ds.class_names)
    frame.insert(0, "id", ds.ids)
    return frame


def _bad_cases(frame: pd.DataFrame) -> dict[str, tuple[pd.DataFrame | np.ndarray, str]]:
    cls = frame.columns[1]
    nan = frame.copy()
    nan.loc[3, cls] = np.nan
    high = frame.copy()
    high.loc[2, cls] = 1.5
    text = frame.astype(object)
    text.loc[1, cls] = "high"
    unknown = frame.copy()
    unknown.loc[0, "id"] = "nosuchimage"
    return {
        "wrong id": (unknown, "'nosuchimage' is not in the dataset"),
        "missing class": (frame.drop(columns=cls), f"missing class columns: '{cls}'"),
        "extra column": (frame.assign(extra=0.1), "not classes of the dataset: 'extra'"),
        "nan": (nan, "is NaN"),
        "out of range": (high, "1.5 is outside [0, 1]"),
        "not a number": (text, "'high' is not a number"),
        "too few rows": (frame.iloc[:-1], "no row for"),
        "no id column": (frame.drop(columns="id"), "no id column"),
        "npy shape": (frame.drop(columns="id").to_numpy()[:-1], "the dataset needs"),
    }


def test_bad_probs_files_one_message_exit_2(tmp_path, run_cli):
    from labelaudit.cli import main

    data = tmp_path / "data"
    main(["synth", str(data), "--n", "12", "--size", "32", "--seed", "1"])
    before = snapshot(data)
    for name, (content, expected) in _bad_cases(_probs_frame(data)).items():
        if isinstance(content, np.ndarray):
            path = tmp_path / f"{name}.npy"
            np.save(path, content)
        else:
            path = tmp_path / f"{name}.csv"
            content.to_csv(path, index=False)
        scan_refuses_file(run_cli, data, tmp_path / f"out-{name}", "--probs", path, expected)
    assert snapshot(data) == before


def test_embeddings_checked_and_need_probs(tmp_path, run_cli):
    from labelaudit.cli import main

    data = tmp_path / "data"
    main(["synth", str(data), "--n", "12", "--size", "32", "--seed", "1"])
    probs = tmp_path / "p.csv"
    _probs_frame(data).to_csv(probs, index=False)
    emb = tmp_path / "e.npy"
    np.save(emb, np.zeros((11, 4)))
    code, _, err = run_cli(
        "scan", data, "--out", tmp_path / "o", "--probs", probs, "--embeddings", emb
    )
    assert code == 2 and str(emb) in err and "12 rows" in err
    for huge in (np.full((12, 4), 1e300), np.full((12, 4), 1e30)):  # float32: inf / overflow
        np.save(emb, huge)
        args = ["scan", data, "--out", tmp_path / "o", "--probs", probs, "--embeddings", emb]
        code, _, err = run_cli(*args)
        assert code == 2 and str(emb) in err and "row 0 holds NaN, an infinity or a value" in err
    code, _, err = run_cli("scan", data, "--out", tmp_path / "o", "--embeddings", emb)
    assert code == 2 and "--embeddings needs --probs" in err
    # The run directory may not be where the supplied file lies.
    (tmp_path / "mine").mkdir()
    inside = tmp_path / "mine" / "p.csv"
    inside.write_bytes(probs.read_bytes())
    code, _, err = run_cli("scan", data, "--out", tmp_path / "mine", "--probs", inside)
    assert code == 2 and "--probs file" in err
    assert inside.read_bytes() == probs.read_bytes()


def test_a_scan_of_another_dataset_drops_the_runs_retrain_record(tmp_path, run_cli):
    """The retrain in ``retrain/`` is the other dataset's: neither the report nor bench
    may show it as this one's (found by an ML engineer's test: the report showed the
    old dataset's test images and F1 change)."""
    import json

    from labelaudit.cli import main
    from labelaudit.pipeline.bench import retrain_bench

    run = tmp_path / "run"
    for seed, name in ((1, "a"), (2, "b")):
        data = tmp_path / name
        main(["synth", str(data), "--n", "12", "--size", "32", "--seed", str(seed)])
        probs = tmp_path / f"{name}.csv"
        _probs_frame(data).to_csv(probs, index=False)
        code, _, err = run_cli("scan", data, "--out", run, "--probs", probs, "--quiet")
        assert code == 0, err
        if name == "a":  # a retrain of dataset a, as `labelaudit retrain` records it
            record = json.loads((run / "run.json").read_text())
            record["retrain"] = {"config": {"policy": "soft"}, "split": {"n_test": 3}}
            (run / "run.json").write_text(json.dumps(record))
            (run / "retrain").mkdir()
            metrics = {"before": {"macro_f1_true": 0.4}, "after": {"macro_f1_true": 0.5}}
            (run / "retrain" / "metrics.json").write_text(json.dumps(metrics))
            assert retrain_bench(run) is not None
    assert "retrain" not in json.loads((run / "run.json").read_text())
    assert retrain_bench(run) is None
    page = (run / "report.html").read_text()
    assert "is from a scan of another dataset" in page
    assert (run / "retrain" / "metrics.json").is_file()  # nothing is deleted
