"""``scan --against OTHER``: leakage between the scanned dataset and others, in the scan."""

from __future__ import annotations

import numpy as np
import pandas as pd
from la_copies import COPIES, two_datasets
from la_testutils import snapshot

from labelaudit.data.layouts import load_dataset
from labelaudit.rundir import read_run


def _probs(data, path) -> None:
    """Predictions made elsewhere (no training in this test): random, seeded."""
    ds = load_dataset(data)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((len(ds), ds.n_classes)), columns=ds.class_names)
    frame.insert(0, "id", ds.ids)
    frame.to_csv(path, index=False)


def test_scan_against_marks_copies_crops_and_reencodes_but_not_a_same_class_field(
    tmp_path, run_cli
):
    a, b, ta = two_datasets(tmp_path)
    _probs(b, tmp_path / "probs.csv")
    before = snapshot(a), snapshot(b)
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        "scan", b, "--out", out, "--preset", "demo", "--image-size", "64",
        "--probs", tmp_path / "probs.csv", "--against", a, "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert code == 0, err + stdout
    assert "leakage: 4 images also in" in " ".join(stdout.split())
    issues = pd.read_csv(out / "issues.csv", dtype=str, keep_default_na=False).set_index("id")
    for name, (how, row) in COPIES.items():
        assert issues.loc[name, "leak_of"] == f"{a}:{ta['ID'][row]}", how
        assert float(issues.loc[name, "leak_correlation"]) > 0.75, how
    assert issues.loc["same-class", "leak_of"] == ""  # same classes, other pixels
    assert issues.loc["same-class", "leak_correlation"] == ""
    assert (issues["leak_of"] != "").sum() == 4
    pairs = pd.read_csv(out / "leaks.csv", dtype=str)
    assert sorted(pairs["id"]) == sorted(COPIES)
    assert {"dataset", "other_id", "correlation", "shift_y", "scale"} <= set(pairs.columns)
    summary = read_run(out)["leaks"]
    assert summary["n_leaked"] == 4 and summary["datasets"][0]["n_images"] == 10
    page = (out / "report.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="leakage">') :]
    section = section[: section.index("</section>")]
    assert "copy-crop" in section and "same-class" not in section
    assert (snapshot(a), snapshot(b)) == before  # inputs untouched


def test_scan_against_refuses_other_channels_and_outputs_inside_it(tmp_path, run_cli):
    a, b, _ = two_datasets(tmp_path)
    _probs(b, tmp_path / "probs.csv")
    args = ["--preset", "demo", "--probs", tmp_path / "probs.csv"]
    code, out, err = run_cli("scan", b, "--out", a / "run", *args, "--against", a)
    assert code == 2 and "--against dataset" in out + err
    assert not (a / "run").exists()
    gray = tmp_path / "gray"
    (gray / "img").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(gray / "img" / "x.png")
    (gray / "labels.csv").write_text("image,labels\nimg/x.png,a\n")
    code, out, err = run_cli("scan", b, "--out", tmp_path / "r2", *args, "--against", gray)
    assert code == 2 and "1 channel(s), the dataset has 4" in out + err
