"""DistributedDataParallel within a fold: 2 CPU processes (gloo) under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labelaudit.core.io import read_json
from labelaudit.train import cross_validate
from labelaudit.train.ddp import DistInfo, env_info

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from test_train_cv import CLASSES, tiny_data, tiny_settings
    from labelaudit.train import cross_validate

    images, labels, ids = tiny_data()
    result = cross_validate(
        images, labels, ids, CLASSES, tiny_settings(threads=1), Path({out!r}), "fp"
    )
    assert not dist.is_initialized()  # torn down by cross_validate
    # One file per rank: lines printed by two processes interleave on the shared pipe.
    report = Path({out!r}).parent / f"rank{{result.rank}}.txt"
    report.write_text(f"oof {{result.oof_probs.shape}} emb {{result.embeddings.shape}}")
    """
)


def test_env_info_defaults_to_one_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert env_info() == DistInfo() and env_info().is_main and not env_info().enabled


@pytest.mark.slow
def test_two_process_gloo_run_matches_single_process_shapes(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_train_cv import CLASSES, tiny_data, tiny_settings

    images, labels, ids = tiny_data()
    single = cross_validate(images, labels, ids, CLASSES, tiny_settings(), tmp_path / "one", "fp")

    script = tmp_path / "ddp_script.py"
    out = tmp_path / "two"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LABELAUDIT_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", str(script)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Both ranks end with the full OOF predictions and embeddings.
    for rank in (0, 1):
        text = (tmp_path / f"rank{rank}.txt").read_text()
        assert text == f"oof (40, 3) emb {single.embeddings.shape}", text

    probs = pd.read_csv(out / "oof_probs.csv", dtype={"id": str})
    assert probs.shape == (40, 4) and probs["id"].tolist() == ids
    emb = np.load(out / "embeddings.npy")
    assert emb.shape == single.embeddings.shape and probs[CLASSES].shape == single.oof_probs.shape
    train = read_json(out / "run.json")["train"]
    assert train["world_size"] == 2 and train["complete"]
    # same folds, and every held-out image predicted exactly once
    assert np.array_equal(
        pd.read_csv(out / "folds" / "folds.csv")["fold"].to_numpy() - 1, single.fold_of
    )
