"""Bad input: one clear message naming the file and row, exit status 2, input untouched."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from la_testutils import HPA_SAMPLES, snapshot, write_image

from labelaudit.data.check import check_dataset


def _expect_problem(run_cli, root, *fragments, deep=False):
    before = snapshot(root)
    code, out, err = run_cli("check", root, *(["--deep"] if deep else []))
    text = out + err
    assert code == 2, text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    assert "Traceback" not in text
    assert snapshot(root) == before, "the input directory was modified"
    return text


def test_missing_columns(make_hpa, run_cli):
    root = make_hpa(n=2)
    (root / "train.csv").write_text("Image,Labels\nfield000,1\nfield001,2\n")
    _expect_problem(run_cli, root, "train.csv, line 1", "expected columns ID,Label")


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("abc", "'abc' is neither an integer class id nor a class name"),
        ("19", "label 19 is out of range"),
        ("", "no labels given"),
        ("1|-2", "label -2 is out of range"),
    ],
)
def test_bad_labels(make_hpa, run_cli, label, message):
    root = make_hpa(n=3)
    (root / "train.csv").write_text(f"ID,Label\nfield000,1\nfield001,{label}\nfield002,2\n")
    _expect_problem(run_cli, root, "train.csv, line 3", "image 'field001'", message)


def test_duplicate_ids(make_hpa, run_cli):
    root = make_hpa(n=2)
    (root / "train.csv").write_text("ID,Label\nfield000,1\nfield001,2\nfield000,3\n")
    _expect_problem(run_cli, root, "train.csv, line 4", "duplicate id (first on line 2)")


@pytest.mark.parametrize("content", [b"", b"ID,Label\n", b"\n\n"])
def test_empty_label_file(make_hpa, run_cli, content):
    root = make_hpa(n=1)
    (root / "train.csv").write_bytes(content)
    text = _expect_problem(run_cli, root, "train.csv")
    assert "empty" in text or "no rows" in text


def test_binary_label_file(make_hpa, run_cli):
    root = make_hpa(n=1)
    (root / "train.csv").write_bytes(b"ID,Label\n\x00\x01\x02\xff\xfe")
    _expect_problem(run_cli, root, "train.csv", "not a text CSV file")


def test_non_utf8_label_file(make_hpa, run_cli):
    root = make_hpa(n=2)
    (root / "train.csv").write_bytes(b"ID,Label\nfield000,1\nfi\xe9ld001,2\n")
    _expect_problem(run_cli, root, "train.csv, line 3", "not UTF-8 text")


def test_missing_channel_file(make_hpa, run_cli):
    root = make_hpa(n=2)
    (root / "train" / "field001_yellow.png").unlink()
    _expect_problem(run_cli, root, "train.csv, line 3", "image 'field001'", "field001_yellow.png")


def test_unreadable_image(make_hpa, run_cli):
    root = make_hpa(n=2)
    (root / "train" / "field000_green.png").write_bytes(b"this is not a png")
    _expect_problem(run_cli, root, "field000_green.png", "not a readable image")


def test_empty_image(make_hpa, run_cli):
    root = make_hpa(n=2)
    (root / "train" / "field000_green.png").write_bytes(b"")
    _expect_problem(run_cli, root, "field000_green.png", "empty")


def test_truncated_image_needs_deep(make_hpa, run_cli):
    root = make_hpa(n=2, size=64)
    path = root / "train" / "field001_blue.png"
    path.write_bytes(path.read_bytes()[:200])
    _expect_problem(run_cli, root, "field001_blue.png", "image 'field001'", deep=True)


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd", "a/../../x.png"])
def test_path_escaping_dataset(tmp_path, run_cli, bad):
    root = tmp_path / "gen"
    write_image(root / "a.png", np.zeros((4, 4), np.uint8))
    write_image(tmp_path / "outside.png", np.zeros((4, 4), np.uint8))
    (root / "labels.csv").write_text(f"image,labels\na.png,x\n{bad},y\n")
    _expect_problem(run_cli, root, "labels.csv, line 3", "escapes the dataset directory")


def test_generic_unknown_class(tmp_path, run_cli):
    root = tmp_path / "gen"
    write_image(root / "a.png", np.zeros((4, 4), np.uint8))
    (root / "labels.csv").write_text("image,labels\na.png,x|zebra\n")
    (root / "classes.txt").write_text("x\ny\n")
    _expect_problem(run_cli, root, "labels.csv, line 2", "unknown class 'zebra'")


def test_generic_mixed_channel_counts(tmp_path, run_cli):
    root = tmp_path / "gen"
    write_image(root / "a.png", np.zeros((4, 4, 3), np.uint8))
    write_image(root / "b.png", np.zeros((4, 4), np.uint8))
    (root / "labels.csv").write_text("image,labels\na.png,x\nb.png,y\n")
    _expect_problem(run_cli, root, "b.png", "1 channel(s)")


def test_missing_dataset_and_file_argument(tmp_path, run_cli):
    code, out, err = run_cli("check", tmp_path / "nope")
    assert code == 2 and "dataset directory not found" in err
    (tmp_path / "f.csv").write_text("x")
    code, out, err = run_cli("check", tmp_path / "f.csv")
    assert code == 2 and "expected a dataset directory" in err


def test_all_problems_are_listed(make_hpa):
    root = make_hpa(n=4)
    (root / "train.csv").write_text("ID,Label\nfield000,x\nfield001,99\nfield002,1\nfield002,1\n")
    report = check_dataset(root)
    assert len(report.errors) == 3
    assert [e.row for e in report.errors] == [2, 3, 5]
    assert report.dataset.ids == ["field002"]


def test_channel_sizes_differ_is_a_warning(make_hpa, run_cli):
    root = make_hpa(n=2, size=32)
    write_image(root / "train" / "field000_yellow.png", np.zeros((16, 16), np.uint8))
    code, out, _ = run_cli("check", root)
    assert code == 0
    assert "channel files differ in size (16x16, 32x32)" in out


def test_sixteen_bit_is_fine(make_hpa, run_cli):
    root = make_hpa(n=3, dtype=np.uint16, ext=".tif")
    code, out, _ = run_cli("check", root, "--deep")
    assert code == 0, out
    assert "16-bit (3)" in out


@pytest.mark.slow
@pytest.mark.skipif(not HPA_SAMPLES.is_dir(), reason="shared HPA samples not present")
def test_check_real_hpa_samples_subprocess():
    # The acceptance command, as a user runs it: a real process, exit status 0.
    proc = subprocess.run(
        [sys.executable, "-m", "labelaudit", "check", str(HPA_SAMPLES), "--deep"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "5 images, 19 classes" in proc.stdout
    assert "2048 x 2048 (4)" in proc.stdout and "3072 x 3072 (1)" in proc.stdout
    assert "no problems found" in proc.stdout


def test_bad_input_subprocess_has_no_traceback(make_hpa):
    root = make_hpa(n=2)
    (root / "train.csv").write_text("Image,Labels\nfield000,1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "labelaudit", "check", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "train.csv, line 1" in proc.stderr


def test_usage_error_exits_2(run_cli):
    code, _, _ = run_cli("check")
    assert code == 2


def test_truncated_png_found_without_deep(make_hpa, run_cli):
    # The cheap tail check (IEND must be the last chunk) finds what a header read misses.
    root = make_hpa(n=2, size=64)
    path = root / "train" / "field001_blue.png"
    path.write_bytes(path.read_bytes()[:-12])  # only the IEND chunk is missing
    _expect_problem(run_cli, root, "field001_blue.png", "image 'field001'", "truncated PNG")


def test_every_broken_file_is_listed(make_hpa):
    root = make_hpa(n=4, size=32)
    broken = [root / "train" / f"field00{i}_{c}.png" for i, c in ((0, "red"), (2, "yellow"))]
    broken[0].write_bytes(b"")
    broken[1].write_bytes(broken[1].read_bytes()[:70])
    report = check_dataset(root)
    assert sorted(e.path for e in report.errors) == sorted(broken)
    assert {e.image for e in report.errors} == {"field000", "field002"}


def test_tiff_truncation_found_without_deep(make_hpa, run_cli):
    root = make_hpa(n=2, dtype=np.uint16, ext=".tif")
    path = root / "train" / "field000_green.tif"
    path.write_bytes(path.read_bytes()[:300])
    _expect_problem(run_cli, root, "field000_green.tif", "truncated TIFF")


def test_check_counts_rows_joining_negative_with_another_class(make_hpa, run_cli):
    labels = ["16|18", "1", "18", "0|18|5", "2", "18|3", "4", "18|7", "8"]
    root = make_hpa(n=len(labels), labels=labels)
    report = check_dataset(root)
    summary = report.summary()
    conflicts = summary["exclusive_conflicts"]
    assert conflicts["count"] == 4  # the lone Negative on line 4 is fine
    assert len(conflicts["first"]) == 4
    assert conflicts["first"][0] == (
        "train.csv line 2 (field000): Negative given with Cytosol "
        "(Negative is never combined with another class)"
    )
    assert summary["roles"]["exclusive_classes"] == ["Negative"]
    assert report.ok  # a label problem for the audit, not a reason to stop a scan
    code, out, _ = run_cli("check", root)
    assert code == 0
    assert "4 row(s) join an exclusive class with another class" in out
    assert "train.csv line 5 (field003): Negative given with Nucleoplasm, Nuclear bodies" in out
    many = make_hpa(n=8, labels=["0|18"] * 8, name="many")
    assert check_dataset(many).summary()["exclusive_conflicts"]["count"] == 8
    assert len(check_dataset(many).summary()["exclusive_conflicts"]["first"]) == 5
