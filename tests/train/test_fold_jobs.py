"""The fold-job recipe of docs/scaling.md: ``scan --fold k`` jobs started at once, then a merge.

Two ``labelaudit scan --fold`` processes share one run directory and one cache
directory, as two tasks of a Slurm job array would; a last ``scan`` without
``--fold`` must reuse both folds (train nothing) and write every image's
out-of-fold probabilities.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from la_testutils import FAST_SCAN

from labelaudit.core.io import read_json


def _labelaudit(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "labelaudit", *map(str, args)]


def _env() -> dict[str, str]:
    # One thread each: two jobs share the machine, as array tasks share a node.
    return {**os.environ, "OMP_NUM_THREADS": "1", "LABELAUDIT_OFFLINE": "1"}


@pytest.mark.slow
def test_two_fold_jobs_at_once_then_merge_reuses_both(synth60, tmp_path, run_cli, monkeypatch):
    data, run, cache = synth60, tmp_path / "run", tmp_path / "shared-cache"

    common = [data, "--out", run, "--cache-dir", cache, *FAST_SCAN]
    jobs = [
        subprocess.Popen(
            _labelaudit("scan", *common, "--fold", str(k)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )  # fmt: skip
        for k in (1, 2)
    ]
    logs = [job.communicate(timeout=600)[0] for job in jobs]
    for k, (job, log) in enumerate(zip(jobs, logs, strict=True), start=1):
        assert job.returncode == 0, f"fold {k} job failed:\n{log[-3000:]}"
        assert f"fold {k}/2: trained" in log, log[-3000:]
    for k in (1, 2):
        assert (run / "folds" / f"fold_{k}" / "state.json").is_file()
    assert read_json(run / "run.json")["train"]["complete"] is True  # no update was lost
    # One cache entry, shared by both jobs (not one per job).
    entries = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(entries) == 1, sorted(p.name for p in cache.iterdir())

    # The merge, in this process (the jobs above are the separate processes).
    monkeypatch.setenv("LABELAUDIT_OFFLINE", "1")
    code, out, err = run_cli("scan", *common)
    log = out + err
    assert code == 0, log[-3000:]
    assert "fold 1/2: reused" in log and "fold 2/2: reused" in log, log[-3000:]
    assert "trained in" not in log and "image cache: reused" in log, log[-3000:]

    ids = pd.read_csv(data / "train.csv", dtype={"ID": str})["ID"].tolist()
    probs = pd.read_csv(run / "oof_probs.csv", dtype={"id": str})
    assert sorted(probs["id"]) == sorted(ids) and len(probs) == 60
    values = probs.drop(columns="id").to_numpy()
    assert values.shape == (60, 19) and np.isfinite(values).all()
    assert ((values >= 0) & (values <= 1)).all()
    train = read_json(run / "run.json")["train"]
    assert train["complete"] and train["timings"]["reused_folds"] == [1, 2]
    assert train["timings"]["trained_folds"] == []
    assert (run / "issues.csv").is_file() and (run / "report.html").is_file()
    assert (run / "cleaned" / "train.csv").is_file()
