"""Hostile and broken input files: refused with one line naming the file, never followed.

Symbolic links leaving the dataset, decompression bombs, FIFOs, dangling and looping
links, truncated and garbage image files, foreign label files (issue 12, cases 6-9;
issue 16, item 2). Each case asserts the exit status, the file named in the message,
no traceback, and (where it matters) that the hostile file was never opened.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from la_testutils import FAST_SCAN, HPA_SAMPLES, snapshot, write_image

from labelaudit.core.errors import DatasetError
from labelaudit.data import readers
from labelaudit.data.check import check_dataset
from labelaudit.data.layouts import CLEANED_MARKER, cleaned_marker, load_dataset

FIELD = "synth-00000"  # id prefix of the first synthetic field


# ----------------------------------------------------------------------- helpers


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def bomb_png(path: Path, width: int = 40000, height: int = 40000) -> Path:
    """A valid-looking PNG whose header announces ``width x height`` (8-bit gray).

    The IDAT holds only a few rows of zeros: decoding it fully would fail as
    truncated, so a "pixel budget" refusal proves the header was checked first.
    """
    rows = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
    data += _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


@pytest.fixture
def hpa(synth60, tmp_path) -> Path:
    """A fresh copy of the session's 60-field synthetic HPA dataset (32 px)."""
    root = tmp_path / "hpa"
    shutil.copytree(synth60, root)
    return root


def channel(root: Path, color: str = "red", k: int = 0) -> Path:
    """The ``color`` channel file of the ``k``-th field (sorted by name)."""
    return sorted((root / "train").glob(f"*_{color}.png"))[k]


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Every path the readers open (resolved), recorded."""
    seen: list[str] = []
    original = readers.open_regular

    def spy(path):
        seen.append(os.path.realpath(path))
        return original(path)

    monkeypatch.setattr(readers, "open_regular", spy)
    return seen


def generic_with_escape(tmp_path: Path) -> tuple[Path, Path]:
    """A generic dataset whose third row is ``escape/secret.png``, ``escape`` linking outside."""
    root = tmp_path / "gen"
    for name in ("a", "b"):
        write_image(root / "img" / f"{name}.png", np.zeros((8, 8, 3), np.uint8))
    secret = tmp_path / "elsewhere" / "secret.png"
    write_image(secret, np.full((8, 8, 3), 200, np.uint8))
    os.symlink(secret.parent, root / "escape")
    (root / "labels.csv").write_text(
        "image,labels\nimg/a.png,x\nimg/b.png,y\nescape/secret.png,x\n"
    )
    return root, secret


def _one_clear_line(code: int, out: str, err: str, *fragments: str) -> str:
    text = out + err
    assert code == 2, text
    assert "Traceback" not in text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    return text


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labelaudit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ----------------------------------------------------------------- symlink escape


def test_symlink_escape_refused_by_check(tmp_path, run_cli, opened):
    root, secret = generic_with_escape(tmp_path)
    _one_clear_line(
        *run_cli("check", root),
        "labels.csv, line 4",
        "escape/secret.png",
        "outside the dataset directory",
        "--follow-symlinks",
    )
    assert str(secret.resolve()) not in opened, "the outside file was opened"
    assert opened, "the spy saw no reads at all: it does not watch the readers"


def test_symlink_escape_refused_by_scan(tmp_path, run_cli, opened):
    root, secret = generic_with_escape(tmp_path)
    run = tmp_path / "run"
    _one_clear_line(
        *run_cli("scan", root, "--out", run, *FAST_SCAN),
        "labels.csv, line 4",
        "escape/secret.png",
        "outside the dataset directory",
    )
    assert str(secret.resolve()) not in opened
    assert not run.exists(), "nothing is written before the dataset is accepted"


def test_follow_symlinks_admits_the_escape(tmp_path, run_cli):
    root, secret = generic_with_escape(tmp_path)
    code, out, err = run_cli("check", root, "--follow-symlinks")
    assert code == 0, out + err
    assert "3 images" in out and "no problems found" in out
    ds = load_dataset(root, follow_symlinks=True)
    assert "escape/secret.png" in ds.ids and ds.follow_symlinks
    with pytest.raises(DatasetError, match="outside the dataset directory"):
        load_dataset(root)


def test_hpa_channel_link_escaping(hpa, tmp_path, run_cli):
    outside = tmp_path / "outside.png"
    red = channel(hpa)
    shutil.copy(red, outside)
    red.unlink()
    os.symlink(outside, red)
    _one_clear_line(*run_cli("check", hpa), "train.csv, line 2", red.name, "outside the dataset")


def test_links_inside_the_dataset_are_fine(hpa, run_cli):
    red = channel(hpa)
    (hpa / "extra").mkdir()
    shutil.move(red, hpa / "extra" / red.name)
    os.symlink(Path("..") / "extra" / red.name, red)  # relative, stays inside
    code, out, err = run_cli("check", hpa)
    assert code == 0, out + err


# ---------------------------------------------------------------- cleaned datasets


def _cleaned_copy(source: Path, dest: Path, marker: dict | None) -> Path:
    """What ``labelaudit clean`` writes: the label file, ``train`` linking to the source."""
    dest.mkdir()
    shutil.copy(source / "train.csv", dest / "train.csv")
    os.symlink((source / "train").resolve(), dest / "train")
    if marker is not None:
        (dest / CLEANED_MARKER).write_text(json.dumps(marker))
    return dest


def test_cleaned_dataset_with_marker_loads(hpa, tmp_path):
    marker = cleaned_marker(hpa.resolve(), ["train.csv", "train"])
    cleaned = _cleaned_copy(hpa, tmp_path / "cleaned", marker)
    ds = load_dataset(cleaned)
    assert len(ds) == 60
    # A cleaned dataset of the cleaned dataset: the chain of markers is followed.
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(cleaned / "train.csv", again / "train.csv")
    os.symlink((cleaned / "train").resolve(), again / "train")
    marker = cleaned_marker(cleaned.resolve(), ["train.csv", "train"])
    (again / CLEANED_MARKER).write_text(json.dumps(marker))
    assert len(load_dataset(again)) == 60


@pytest.mark.parametrize("forgery", ["unsigned", "edited", "other key"])
def test_forged_marker_source_admits_nothing(hpa, tmp_path, forgery, monkeypatch):
    """Issue 22: a marker naming a real dataset as its source, not signed by this user's
    key, does not let the dataset's links reach that source."""
    other = tmp_path / "other-dataset"
    shutil.copytree(hpa, other)
    if forgery == "unsigned":
        marker = {"source": str(other.resolve()), "entries": ["train.csv", "train"]}
    elif forgery == "edited":  # a genuine marker of hpa, its source changed afterwards
        marker = {**cleaned_marker(hpa.resolve(), ["train.csv", "train"])}
        marker["source"] = str(other.resolve())
    else:  # signed, but with someone else's key
        with monkeypatch.context() as m:
            m.setenv("LABELAUDIT_CONFIG_DIR", str(tmp_path / "someone-else"))
            marker = cleaned_marker(other.resolve(), ["train.csv", "train"])
    victim = snapshot(other)
    cleaned = tmp_path / "received"
    cleaned.mkdir()
    shutil.copy(other / "train.csv", cleaned / "train.csv")
    os.symlink((other / "train").resolve(), cleaned / "train")
    (cleaned / CLEANED_MARKER).write_text(json.dumps(marker))
    with pytest.raises(DatasetError, match="outside the dataset directory"):
        load_dataset(cleaned)
    assert snapshot(other) == victim


@pytest.mark.parametrize(
    "marker",
    [None, {"source": "/nonexistent"}, {"source": "relative/path"}, {"other": 1}, "[1, 2"],
)
def test_cleaned_dataset_without_valid_marker_is_refused(hpa, tmp_path, marker):
    cleaned = _cleaned_copy(hpa, tmp_path / "cleaned", None)
    if marker is not None:
        text = marker if isinstance(marker, str) else json.dumps(marker)
        (cleaned / CLEANED_MARKER).write_text(text)
    with pytest.raises(DatasetError, match="outside the dataset directory"):
        load_dataset(cleaned)


def test_marker_must_name_a_dataset(tmp_path):
    # A planted marker naming / (or any non-dataset directory) admits nothing.
    root, _ = generic_with_escape(tmp_path)
    (root / CLEANED_MARKER).write_text(json.dumps({"source": "/"}))
    report = check_dataset(root)
    assert [e.row for e in report.errors] == [4]


# ------------------------------------------------------------------ pixel budget


def test_bomb_header_refused_without_decoding(hpa, run_cli, monkeypatch):
    bomb = bomb_png(channel(hpa, "green"))
    assert bomb.stat().st_size < 100_000
    decoded: list[object] = []
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(im))
    _one_clear_line(
        *run_cli("check", hpa), bomb.name, "40000 x 40000", "pixel budget", "--max-pixels"
    )
    assert not decoded, "check decoded the bomb's pixels"
    with pytest.raises(DatasetError, match="pixel budget") as info:
        readers.read_array(bomb)
    assert info.value.path == bomb and not decoded


@pytest.mark.slow
def test_bomb_refused_by_scan(hpa, tmp_path, run_cli):
    bomb = bomb_png(channel(hpa, "green"))
    _one_clear_line(*run_cli("scan", hpa, "--out", tmp_path / "run", *FAST_SCAN), bomb.name)


def test_max_pixels_is_configurable(hpa, run_cli):
    bomb_png(channel(hpa, "green"))
    code, out, err = run_cli("check", hpa, "--max-pixels", str(40000 * 40000))
    assert code == 0, out + err
    # ... and it is a budget: a small one refuses the 32 x 32 fields too.
    code, out, err = run_cli("check", hpa, "--max-pixels", "1000")
    assert code == 2 and "32 x 32 = 1,024 pixels" in out
    assert load_dataset(hpa, max_pixels=1000).max_pixels == 1000
    assert load_dataset(hpa).max_pixels == readers.DEFAULT_MAX_PIXELS == 20_000 * 20_000


def test_max_pixels_must_be_positive(hpa, run_cli):
    code, out, err = run_cli("check", hpa, "--max-pixels", "0")
    assert code == 2 and "Traceback" not in out + err


# ------------------------------------------------- FIFOs, dangling and looping links


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("command", ["check", "scan"])
def test_fifo_channel_file_does_not_hang(hpa, tmp_path, command):
    red = channel(hpa)
    red.unlink()
    os.mkfifo(red)
    extra = ("--out", tmp_path / "run", *FAST_SCAN) if command == "scan" else ()
    proc = _run(command, hpa, *extra, timeout=120)  # a hang fails here, not forever
    _one_clear_line(proc.returncode, proc.stdout, proc.stderr, red.name, "FIFO")


def test_fifo_is_never_opened():
    # read_header/read_array/quick_integrity on a FIFO return at once (no writer exists).
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        fifo = Path(d) / "x.png"
        os.mkfifo(fifo)
        assert "FIFO" in readers.quick_integrity(fifo)
        for read in (readers.read_header, readers.read_array):
            with pytest.raises(DatasetError, match="not a regular file"):
                read(fifo)


@pytest.mark.parametrize(
    ("target", "message"),
    [("missing.png", "broken symbolic link"), (None, "symbolic link loop")],
)
@pytest.mark.parametrize("command", ["check", "scan"])
def test_dangling_and_looping_links(hpa, tmp_path, run_cli, command, target, message):
    red = channel(hpa)
    red.unlink()
    os.symlink(target or red.name, red)  # None: the link points at itself
    extra = ("--out", tmp_path / "run", *FAST_SCAN) if command == "scan" else ()
    _one_clear_line(*run_cli(command, hpa, *extra), red.name, message)


# ------------------------------------------------------------------ broken files


def test_three_broken_files_named_by_one_check(hpa, run_cli):
    truncated, empty, garbage = (channel(hpa, "blue", k) for k in (1, 2, 3))
    truncated.write_bytes(truncated.read_bytes()[:60])
    empty.write_bytes(b"")
    garbage.write_bytes(np.random.default_rng(0).bytes(300))
    text = _one_clear_line(
        *run_cli("check", hpa),
        f"{truncated.name}: image 'synth-00001",
        "truncated PNG",
        f"{empty.name}: image 'synth-00002",
        "empty",
        f"{garbage.name}: image 'synth-00003",
        "not a readable image",
        "3 problem(s) found",
    )
    assert "\\x" not in text  # no bytes of the garbage file quoted


def _jpeg_and_tiff(tmp_path: Path) -> dict[str, Path]:
    """A good 8-bit JPEG, 16-bit TIFF and 16-bit PNG (64 x 64, not constant)."""
    ramp = np.arange(64 * 64).reshape(64, 64) % 251
    files = {}
    for name, dtype in (("a.jpg", np.uint8), ("a.tif", np.uint16), ("a.png", np.uint16)):
        files[name] = tmp_path / name
        write_image(files[name], (ramp * (1 if dtype == np.uint8 else 97)).astype(dtype))
    return files


def test_quick_integrity_formats(tmp_path):
    files = _jpeg_and_tiff(tmp_path)
    for path in files.values():
        assert readers.quick_integrity(path) is None, path
    cut = {}
    for name, path in files.items():
        data = path.read_bytes()
        cut[name] = tmp_path / f"cut-{name}"
        cut[name].write_bytes(data[: len(data) // 2])
    assert "truncated JPEG" in readers.quick_integrity(cut["a.jpg"])
    assert "truncated TIFF" in readers.quick_integrity(cut["a.tif"])
    assert "truncated PNG" in readers.quick_integrity(cut["a.png"])
    # Zero padding after a JPEG's end-of-image marker is tolerated.
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(files["a.jpg"].read_bytes() + b"\x00" * 16)
    assert readers.quick_integrity(padded) is None


def test_broken_tiff_does_not_echo_bytes(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"SECRETDATA" * 10)
    message = readers.quick_integrity(bad)
    assert message and "SECRET" not in message
    with pytest.raises(DatasetError) as info:
        readers.read_header(bad)
    assert "SECRET" not in str(info.value)
    with pytest.raises(DatasetError) as info:
        readers.read_array(bad)
    assert "SECRET" not in str(info.value)


@pytest.mark.slow
@pytest.mark.skipif(not HPA_SAMPLES.is_dir(), reason="shared HPA samples not present")
def test_real_hpa_samples_pass_the_cheap_check():
    files = sorted((HPA_SAMPLES / "train").glob("*.png"))
    assert len(files) >= 20
    assert [readers.quick_integrity(p) for p in files] == [None] * len(files)
    proc = _run("check", HPA_SAMPLES, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no problems found" in proc.stdout


# ------------------------------------------------------------- foreign label files


@pytest.mark.parametrize("name", ["labels.csv", "train.csv"])
def test_foreign_label_file_is_not_echoed(tmp_path, run_cli, name):
    root = tmp_path / "ds"
    root.mkdir()
    (root / name).write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/bin/sh\n")
    text = _one_clear_line(*run_cli("check", root), name, "line 1", "not a CSV header")
    assert "root:" not in text and "/bin/bash" not in text


def test_plausible_header_is_still_shown(tmp_path, run_cli):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "labels.csv").write_text("Picture,Tags\na.png,x\n")
    _one_clear_line(*run_cli("check", root), "found Picture,Tags")


def test_fifo_label_file_does_not_hang(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    os.mkfifo(root / "train.csv")
    proc = _run("check", root, "--layout", "hpa2021", timeout=60)
    _one_clear_line(proc.returncode, proc.stdout, proc.stderr, "train.csv", "FIFO")


# ------------------------------------------------------- a whole scan through a link


@pytest.mark.slow
def test_scan_follow_symlinks_end_to_end(hpa, tmp_path, run_cli):
    # The image directory lives elsewhere, linked in: refused, then admitted by the flag
    # through every stage that re-reads the dataset (clean, report).
    elsewhere = tmp_path / "elsewhere"
    shutil.move(hpa / "train", elsewhere)
    os.symlink(elsewhere, hpa / "train")
    run = tmp_path / "run"
    _one_clear_line(*run_cli("check", hpa), "train.csv, line 2", "outside the dataset directory")
    _one_clear_line(*run_cli("scan", hpa, "--out", run, *FAST_SCAN), "--follow-symlinks")
    code, out, err = run_cli("scan", hpa, "--out", run, *FAST_SCAN, "--follow-symlinks")
    assert code == 0, out + err
    info = json.loads((run / "run.json").read_text())["dataset"]
    assert info["follow_symlinks"] is True and info["n_images"] == 60
    assert (run / "cleaned" / "train.csv").is_file() and (run / "report.html").is_file()
