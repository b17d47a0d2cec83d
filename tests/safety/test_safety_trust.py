"""Issue 22: trust nothing a file says. One test per case of the adversarial review.

Each test runs the command as a user would (in-process CLI), asserts the exit
status and the one-line message, and that the victim's files are byte-identical
(checksums, ``snapshot``).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from la_runfixture import make_run
from la_testutils import snapshot, write_image

from labelaudit.core.errors import RunDirError, SettingsError
from labelaudit.core.locks import hold_lock
from labelaudit.core.userfiles import is_plain_entry, remove_entry
from labelaudit.pipeline.clean import CLEANED_DIR, CLEANED_MARKER, check_replaceable


def _one_line(code: int, err: str, status: int = 2) -> str:
    assert code == status, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def victim(tmp_path) -> Path:
    """A directory of the user's that no command may touch."""
    root = tmp_path / "victim"
    (root / "sub").mkdir(parents=True)
    (root / "thesis.tex").write_text("years of work\n")
    (root / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return root


@pytest.fixture
def run(make_hpa, tmp_path) -> Path:
    return make_run(tmp_path, make_hpa(n=10, size=16))


# ------------------------------------------------------------------ data loss 1: forged entries


def _forge_cleaned(run: Path, entries: list[str]) -> None:
    cleaned = run / CLEANED_DIR
    cleaned.mkdir(exist_ok=True)
    (cleaned / CLEANED_MARKER).write_text(json.dumps({"source": "/", "entries": entries}))


@pytest.mark.parametrize("how", ["relative", "absolute"])
def test_forged_cleaned_marker_deletes_nothing(run, victim, run_cli, how):
    entry = os.path.relpath(victim, run / CLEANED_DIR) if how == "relative" else str(victim)
    _forge_cleaned(run, [entry])
    before = snapshot(victim)
    code, _, err = run_cli("clean", run)
    err = _one_line(code, err)
    assert "forged" in err and "deletes nothing" in err
    assert snapshot(victim) == before
    # scan checks the same before any work (a rescan of this run directory)
    with pytest.raises(RunDirError, match="forged"):
        check_replaceable(run / CLEANED_DIR)
    assert snapshot(victim) == before


def test_plain_entry_names():
    assert is_plain_entry("train") and is_plain_entry("train.csv") and is_plain_entry("..x")
    for bad in ("", ".", "..", "../x", "a/b", "/abs", "a\0b", 3, None):
        assert not is_plain_entry(bad)


def test_remove_entry_never_leaves_its_directory(tmp_path, victim):
    before = snapshot(victim)
    d = tmp_path / "d"
    d.mkdir()
    os.symlink(victim, d / "link-to-dir")
    os.symlink(victim / "thesis.tex", d / "link-to-file")
    for name in ("../victim", str(victim), ".."):
        with pytest.raises(RunDirError, match="not a plain entry"):
            remove_entry(d, name)
    remove_entry(d, "link-to-dir")  # the link goes, never what it points to
    remove_entry(d, "link-to-file")
    remove_entry(d, "absent")  # no error
    assert not os.listdir(d) and snapshot(victim) == before
    os.symlink(victim, tmp_path / "linked-parent")
    with pytest.raises(RunDirError, match="symbolic link"):
        remove_entry(tmp_path / "linked-parent", "sub")
    assert snapshot(victim) == before


def test_cleaned_as_a_symlink_gives_the_right_reason(run, victim, run_cli):
    os.symlink(victim, run / CLEANED_DIR)
    before = snapshot(victim)
    code, _, err = run_cli("clean", run)
    err = _one_line(code, err)
    assert "is a symbolic link" in err
    assert snapshot(victim) == before


# ------------------------------------------------------------------ data loss 2: symlinked locks


@pytest.mark.parametrize("lock", [".labelaudit.lock", ".run.json.lock"])
def test_symlinked_lock_file_is_never_written_through(run, victim, run_cli, lock):
    (run / lock).unlink(missing_ok=True)
    os.symlink(victim / "thesis.tex", run / lock)
    before = snapshot(victim)
    code, _, err = run_cli("clean", run)
    err = _one_line(code, err)
    assert "symbolic link" in err and lock in err
    assert snapshot(victim) == before


def test_symlinked_cache_lock_is_refused(tmp_path, victim):
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    os.symlink(victim / "thesis.tex", cache / "partial-abc.lock")
    before = snapshot(victim)
    with pytest.raises(SettingsError, match="symbolic link"):
        with hold_lock(cache / "partial-abc.lock", "cache entry abc"):
            pass
    assert snapshot(victim) == before


def test_planted_link_in_a_cache_entry_is_not_written_through(make_hpa, tmp_path, victim):
    """A partial cache entry whose images.u8 is a link to the victim: rebuilt, not followed."""
    from labelaudit.data.cache import build_cache, partial_key
    from labelaudit.data.layouts import load_dataset

    ds = load_dataset(make_hpa(n=4, size=16))
    cache = tmp_path / "cache"
    partial = cache / f".partial-{partial_key(ds, 16)}"
    partial.mkdir(parents=True)
    os.symlink(victim / "thesis.tex", partial / "images.u8")
    os.symlink(victim / "sub" / "data.csv", partial / "plan.json")
    before = snapshot(victim)
    built = build_cache(ds, 16, cache)
    assert built.images.shape[0] == 4
    assert snapshot(victim) == before


# ------------------------------------------------------------------ data loss 3: leaks --out


def test_leaks_out_never_overwrites_a_users_file(make_hpa, tmp_path, run_cli):
    data = make_hpa(n=4, size=16)
    for name, text in (("mine.csv", "my,own\n1,2\n"), ("notes.txt", "notes\n")):
        target = tmp_path / name
        target.write_text(text)
        code, _, err = run_cli("leaks", data, data, "--out", target)
        err = _one_line(code, err)
        assert "not a leaks file labelaudit wrote" in err
        assert target.read_text() == text
    (tmp_path / "a-dir").mkdir()
    code, _, err = run_cli("leaks", data, data, "--out", tmp_path / "a-dir")
    assert "is a directory" in _one_line(code, err)
    # the shared output guard: an --out that cannot be written is refused before the work
    for out, words in (
        (Path("/proc/pairs.csv"), "not a folder labelaudit can write in"),
        (tmp_path / ("x" * 300 + ".csv"), "longer than 255 bytes"),
    ):
        code, _, err = run_cli("leaks", data, data, "--out", out)
        assert words in _one_line(code, err)
    # its own table may be replaced
    own = tmp_path / "pairs.csv"
    assert run_cli("leaks", data, data, "--out", own)[0] == 0
    assert run_cli("leaks", data, data, "--out", own)[0] == 0


# ------------------------------------------------------------------ hangs and runaway memory


def test_truth_from_dev_zero_and_a_fifo(run, tmp_path, run_cli):
    fifo = tmp_path / "truth.fifo"
    os.mkfifo(fifo)
    code, _, err = run_cli("retrain", "--run", run, "--truth", "/dev/zero", "--epochs", "1")
    assert "character device" in _one_line(code, err)
    code, _, err = run_cli("bench", run, "--truth", fifo)
    assert "FIFO" in _one_line(code, err)


def test_oversized_table_is_refused_before_it_is_read(run, tmp_path, monkeypatch, run_cli):
    from labelaudit.core import userfiles

    monkeypatch.setattr(userfiles, "MAX_TABLE_BYTES", 64)
    monkeypatch.setattr(userfiles.read_user_csv, "__kwdefaults__", {"max_bytes": 64})
    big = tmp_path / "truth.csv"
    big.write_text("ID,true_label,given_label,noise\n" + "x,1,1,none\n" * 50)
    code, _, err = run_cli("bench", run, "--truth", big)
    assert "over the" in _one_line(code, err)


# ------------------------------------------------------------------ non-finite pixels


def _float_dataset(root: Path, bad: float) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        image = rng.random((16, 16)).astype(np.float32)
        if i == 2:
            image[3, 4] = bad
        write_image(root / "img" / f"f{i}.tif", image)
        rows.append({"image": f"img/f{i}.tif", "labels": "a" if i % 2 else "b"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels_are_a_check_finding_without_deep(tmp_path, bad, run_cli):
    data = _float_dataset(tmp_path / "d", bad)
    code, out, _ = run_cli("check", data)
    assert code == 2
    assert "non-finite pixel" in out and "f2.tif" in out


def test_scan_stops_on_non_finite_pixels_in_one_message(tmp_path, run_cli):
    data = _float_dataset(tmp_path / "d", float("nan"))
    fast = ["--backbone", "test_efficientnet", "--image-size", "16", "--folds", "2"]
    code, _, err = run_cli("scan", data, "--out", tmp_path / "run", "--quiet", *fast)
    assert code == 2 and "Traceback" not in err
    assert "non-finite pixel" in err and "f2.tif" in err


def test_huge_float_pixels_are_clipped_in_the_cache(tmp_path):
    from labelaudit.data.cache import build_cache
    from labelaudit.data.layouts import load_dataset

    data = _float_dataset(tmp_path / "d", -1e30)
    cache = build_cache(load_dataset(data), 16, tmp_path / "cache")
    stats = cache.stats.select_dtypes("number").to_numpy(dtype=float)
    assert np.isfinite(stats).all()


def test_report_json_is_finite_whatever_it_is_given():
    from labelaudit.report.pagejson import script_json

    text = str(script_json({"a": float("inf"), "b": [float("-inf"), np.float32("nan"), 1.5]}))
    assert json.loads(text) == {"a": None, "b": [None, None, 1.5]}


def test_all_black_channel_warns_nothing():
    from labelaudit.detect.quality import clipped_share

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = clipped_share(np.array([0.0, 0.1, 0.3]), np.array([0.0, 0.5, 0.2]))
    assert np.isnan(out[0]) and out[1] == pytest.approx(0.2) and out[2] == 1.0


# ------------------------------------------------------------------ read-only and full disks


def _full_disk_at(monkeypatch, name: str) -> None:
    """The disk fills up when labelaudit's atomic write puts ``name`` in place."""
    import labelaudit.core.io as lio

    real = lio.os.replace

    def full(src, dst, *a, **k):
        if str(dst).endswith(name):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(lio.os, "replace", full)


def test_full_disk_is_one_line_naming_the_file(run, monkeypatch, run_cli):
    _full_disk_at(monkeypatch, "changes.csv")
    code, _, err = run_cli("clean", run)
    err = _one_line(code, err)
    assert "no space left" in err and "changes.csv" in err
    run_json = json.loads((run / "run.json").read_text())
    assert "clean" not in run_json  # the record is written last: nothing claims a clean


def test_report_that_cannot_be_refreshed_is_not_left_stale(run, monkeypatch, run_cli):
    import labelaudit.report as report

    assert run_cli("report", run)[0] == 0 and (run / "report.html").is_file()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "report.html"))

    monkeypatch.setattr(report, "write_report", full)
    code, _, err = run_cli("clean", run, "--policy", "none")
    err = _one_line(code, err)
    assert "out-of-date report.html was removed" in err
    assert not (run / "report.html").exists()
    assert json.loads((run / "run.json").read_text())["clean"]["policy"] == "none"


def _read_only_mount(path: Path):
    """A read-only tmpfs at ``path`` (root only); skip where it cannot be made."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip("cannot mount a read-only file system here")
    return path


@pytest.fixture
def read_only(tmp_path):
    path = _read_only_mount(tmp_path / "ro")
    yield path
    subprocess.run(["umount", str(path)], check=False)


def test_read_only_out_and_cache(make_hpa, read_only, tmp_path, run_cli):
    data = make_hpa(n=6, size=16)
    fast = ["--backbone", "test_efficientnet", "--image-size", "16", "--folds", "2", "--quiet"]
    code, _, err = run_cli("scan", data, "--out", read_only / "run", *fast)
    assert "read-only" in _one_line(code, err).lower()
    code, _, err = run_cli(
        "scan", data, "--out", tmp_path / "run", "--cache-dir", read_only / "c", *fast
    )
    assert "read-only" in _one_line(code, err).lower()
    code, _, err = run_cli("leaks", data, data, "--out", read_only / "pairs.csv")
    assert "read-only" in _one_line(code, err).lower()


def test_read_only_run_directory(run, tmp_path, run_cli):
    ro = _read_only_mount(tmp_path / "ro-run")
    try:
        subprocess.run(["umount", str(ro)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(ro)], check=True)
        subprocess.run(["cp", "-a", f"{run}/.", str(ro)], check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        before = snapshot(ro)
        for command in (["clean", ro], ["report", ro]):
            code, _, err = run_cli(*command)
            assert "read-only" in _one_line(code, err).lower()
        assert snapshot(ro) == before
    finally:
        subprocess.run(["umount", str(ro)], check=False)


# ------------------------------------------------------------------ broken promises, messages


def test_demo_claims_its_whole_out_before_writing(tmp_path, run_cli):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "paper.md").write_text("draft\n")
    before = snapshot(out)
    code, _, err = run_cli("demo", "--out", out, "--n", "10")
    err = _one_line(code, err)
    assert "not empty" in err and "--force" not in err
    assert snapshot(out) == before and sorted(os.listdir(out)) == ["paper.md"]


def test_empty_masks_directory_is_refused_before_any_work(make_hpa, tmp_path, run_cli):
    data = make_hpa(n=6, size=16)
    masks = tmp_path / "masks"
    masks.mkdir()
    out = tmp_path / "run"
    code, _, err = run_cli("scan", data, "--out", out, "--level", "cell", "--masks", masks)
    assert "no cell mask" in _one_line(code, err)
    assert not out.exists()  # no partial run left behind


def test_predict_and_segment_have_the_options_their_messages_name(run_cli):
    for command in ("predict", "segment"):
        code, out, _ = run_cli(command, "--help")
        assert code == 0 and "--max-pixels" in out


def test_broken_images_advice_fits_the_command():
    from labelaudit.data.cache import BrokenImages

    scan_advice = str(BrokenImages([{"id": "a", "file": "a.png", "reason": "x"}]))
    other = str(BrokenImages([{"id": "a", "file": "a.png", "reason": "x"}], hint="fix them"))
    assert "--skip-broken" in scan_advice and "--skip-broken" not in other


def test_model_file_error_never_advises_unsafe_loading(tmp_path, make_hpa, run_cli):
    import torch

    bad = tmp_path / "model.pt"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    code, _, err = run_cli("predict", bad, make_hpa(n=2, size=16), "--out", tmp_path / "p.csv")
    err = _one_line(code, err)
    assert "not a labelaudit model" in err and "weights_only" not in err
    pickled = tmp_path / "pickled.pt"
    torch.save({"obj": Path("x")}, pickled)  # needs weights_only=False to load
    code, _, err = run_cli("predict", pickled, make_hpa(n=2, size=16), "--out", tmp_path / "q.csv")
    assert "weights_only" not in _one_line(code, err)


def test_text_file_given_as_npy(run, make_hpa, tmp_path, run_cli):
    fake = tmp_path / "probs.npy"
    fake.write_text("hello")
    data = run.parent / "hpa"
    code, _, err = run_cli("scan", data, "--out", tmp_path / "r", "--probs", fake)
    err = _one_line(code, err)
    assert "not a NumPy .npy file" in err and "allow_pickle" not in err


def test_sweep_with_an_empty_list_is_refused(make_hpa, tmp_path, run_cli):
    data = make_hpa(n=6, size=16)
    code, _, err = run_cli("sweep", data, "--out", tmp_path / "s", "--lrs", ",")
    assert "--lrs lists no value" in _one_line(code, err)
    assert not (tmp_path / "s").exists()


def test_segment_workers_are_capped_at_the_cores(make_hpa, tmp_path):
    from labelaudit.cells.dataset import segment_dataset
    from labelaudit.data.parallel import available_cores

    summary = segment_dataset(make_hpa(n=2, size=32), tmp_path / "seg", workers=1000)
    assert summary["workers"] <= available_cores()


# ------------------------------------------- rescans (scan --probs: no training)


def _rescan_args(run: Path, tmp_path: Path) -> list:
    probs = tmp_path / "probs.csv"
    probs.write_bytes((run / "oof_probs.csv").read_bytes())
    return ["scan", run.parent / "hpa", "--out", run, "--probs", probs, "--quiet"]


def test_rescan_with_a_forged_absolute_entry_deletes_nothing(run, victim, tmp_path, run_cli):
    args = _rescan_args(run, tmp_path)
    assert run_cli(*args)[0] == 0  # a genuine rescan works
    _forge_cleaned(run, [str(victim)])
    before = snapshot(victim)
    code, _, err = run_cli(*args)
    assert "forged" in _one_line(code, err)
    assert snapshot(victim) == before


def test_scan_on_a_full_disk_is_one_line(run, tmp_path, monkeypatch, run_cli):
    args = _rescan_args(run, tmp_path)
    _full_disk_at(monkeypatch, "issues.csv")
    code, _, err = run_cli(*args)
    err = _one_line(code, err)
    assert "no space left" in err and "issues.csv" in err


def test_a_report_held_by_another_process_is_left_alone(run, monkeypatch, run_cli):
    """Only a failing file system makes the stale report go: another writer's is kept."""
    import labelaudit.report as report
    from labelaudit.core.locks import LockHeld

    assert run_cli("report", run)[0] == 0
    before = (run / "report.html").read_bytes()

    def held(*args, **kwargs):
        raise LockHeld("the run directory is in use by process 1")

    monkeypatch.setattr(report, "write_report", held)
    code, _, err = run_cli("clean", run, "--policy", "none")
    assert "in use by process 1" in _one_line(code, err)
    assert (run / "report.html").read_bytes() == before
