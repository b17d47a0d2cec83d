"""Output ownership: labelaudit writes only into what it created, never onto its inputs.

Issue 12, data-loss cases 1-4 and the `--out` tracebacks: each case is a real CLI run
(or an API call where the CLI adds nothing) on tiny data; every input file keeps its
checksum and every foreign file stays where it was.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from la_testutils import TINY_SCAN, run_ok, snapshot, write_tiny_model

from labelaudit.core.errors import RunDirError, SettingsError
from labelaudit.rundir import RUN_LOCK, open_output_dir

TINY = [*TINY_SCAN, "--quiet"]


def _files(root: Path) -> dict:
    """``snapshot`` without labelaudit's lock files (taking a lock writes a pid into one)."""
    return {k: v for k, v in snapshot(root).items() if not Path(k).name.endswith(".lock")}


def _one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def data(synth60) -> Path:
    """The module's dataset: the session's 60 synthetic fields (read only)."""
    return synth60


@pytest.fixture(scope="module")
def scanned(data, tmp_path_factory) -> Path:
    """A real run directory (tiny scan), shared by the slow tests of this module."""
    run = tmp_path_factory.mktemp("safety-run") / "run"
    run_ok(["scan", data, "--out", run, *TINY])
    return run


# ------------------------------------------------------------------ case 1: a dataset named cleaned


def test_dataset_named_cleaned_under_out_is_refused(data, tmp_path, run_cli):
    proj = tmp_path / "proj"
    shutil.copytree(data, proj / "cleaned")  # the user's own dataset, named cleaned
    before = snapshot(proj)
    code, _, err = run_cli("scan", proj / "cleaned", "--out", proj, *TINY)
    err = _one_line_error(code, err)
    assert "inside the run directory" in err and "cleaned" in err
    assert snapshot(proj) == before  # not one file touched, no lock file created


# ------------------------------------------------------------------ case 2: foreign files in --out


def test_foreign_files_in_out_are_kept(data, tmp_path, run_cli):
    out = tmp_path / "d"
    (out / "cleaned").mkdir(parents=True)
    (out / "cleaned" / "a").write_text("x\n")
    (out / "cells" / "overlays").mkdir(parents=True)
    (out / "cells" / "overlays" / "mine.jpg").write_bytes(b"\xff\xd8 mine")
    (out / "cells.csv").write_text("my,own\n1,2\n")
    (out / "report.html").write_text("<p>my report</p>")
    before, data_before = snapshot(out), snapshot(data)
    code, _, err = run_cli("scan", data, "--out", out, *TINY)
    err = _one_line_error(code, err)
    assert "not empty" in err and "not a labelaudit run directory" in err and "--force" in err
    assert snapshot(out) == before and snapshot(data) == data_before


def test_force_lists_what_it_replaces_and_never_a_foreign_directory(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "report.html").write_text("<p>mine</p>")
    (out / "notes.txt").write_text("keep")
    said: list[str] = []
    open_output_dir(out, force=True, say=said.append)
    assert len(said) == 1 and "replacing report.html" in said[0] and "notes.txt" not in said[0]
    assert json.loads((out / "run.json").read_text())["format"]["kind"] == "labelaudit-run"
    assert (out / "notes.txt").read_text() == "keep"
    other = tmp_path / "e"
    (other / "cleaned").mkdir(parents=True)
    (other / "cleaned" / "a").write_text("x")
    with pytest.raises(SettingsError, match="replaces files only"):
        open_output_dir(other, force=True)
    assert (other / "cleaned" / "a").read_text() == "x" and not (other / "run.json").exists()


# ------------------------------------------------------------------ case 3: predict, segment


def test_predict_out_never_lands_on_an_input_or_a_foreign_file(make_hpa, tmp_path, run_cli):
    dataset = make_hpa(n=4)
    model = tmp_path / "model.pt"
    write_tiny_model(model)
    foreign = tmp_path / "results.csv"
    foreign.write_text("sample,score\nSECRET-ROW,1\n")
    (tmp_path / "hpa-2").mkdir()
    before, model_before = snapshot(dataset), model.read_bytes()
    for out, words in [
        (dataset / "train.csv", "is the label file"),  # case 3: the dataset's own label file
        (dataset / "preds.csv", "inside the dataset directory"),
        (model, "is the model"),
        (foreign, "not a predictions table"),
        (tmp_path / "hpa-2", "is a directory"),
    ]:
        code, _, err = run_cli("predict", model, dataset, "--out", out, "--device", "cpu")
        err = _one_line_error(code, err)
        assert words in err and "SECRET" not in err
    assert snapshot(dataset) == before and model.read_bytes() == model_before
    assert foreign.read_text() == "sample,score\nSECRET-ROW,1\n"
    # Its own earlier output is replaced.
    mine = tmp_path / "preds.csv"
    for _ in range(2):
        code, _, err = run_cli("predict", model, dataset, "--out", mine, "--device", "cpu")
        assert code == 0, err
    assert mine.read_text().startswith("id,") and snapshot(dataset) == before


def test_segment_out_over_a_foreign_cells_csv_is_refused(make_hpa, tmp_path, run_cli):
    dataset = make_hpa(n=2)
    out = tmp_path / "seg"
    out.mkdir()
    (out / "cells.csv").write_text("my cells\n")
    before = snapshot(dataset)
    code, _, err = run_cli("segment", dataset, "--out", out, "--no-overlays", "--workers", "1")
    err = _one_line_error(code, err)
    assert "not a labelaudit segment output directory" in err
    assert (out / "cells.csv").read_text() == "my cells\n" and snapshot(dataset) == before
    # Into the dataset, or around it: refused too.
    code, _, err = run_cli("segment", dataset, "--out", dataset / "seg", "--workers", "1")
    assert "inside the dataset directory" in _one_line_error(code, err)
    # A segment output directory is its own: segmenting again replaces its files.
    mine = tmp_path / "mine"
    for _ in range(2):
        code, _, err = run_cli("segment", dataset, "--out", mine, "--no-overlays", "--workers", "1")
        assert code == 0, err
    assert json.loads((mine / "segment.json").read_text())["format"]["kind"] == (
        "labelaudit-segment"
    )
    assert snapshot(dataset) == before


# ------------------------------------------------------------------ --out mistakes: one line


def test_out_is_a_file(data, tmp_path, run_cli):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    code, _, err = run_cli("scan", data, "--out", target, *TINY)
    assert "is a file, not a directory" in _one_line_error(code, err)
    assert target.read_text() == "mine\n"


@pytest.mark.parametrize(
    "content, words",
    [
        ("{oops SECRET", "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON (nested too deeply"),
        ("[1, 2]", "not a JSON object"),
        (b"\xff\xfeSECRET", "not UTF-8"),
        ('{"name": "SECRET project"}', "not written by labelaudit"),
    ],
)
def test_invalid_or_foreign_run_json(data, tmp_path, run_cli, content, words):
    out = tmp_path / "d"
    out.mkdir()
    path = out / "run.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(out)
    code, _, err = run_cli("scan", data, "--out", out, *TINY)
    err = _one_line_error(code, err)
    assert words in err and "run.json" in err and "SECRET" not in err
    assert snapshot(out) == before
    code, _, err = run_cli("report", out)  # readers of run.json say the same
    assert words in _one_line_error(code, err)


def test_run_json_of_an_older_labelaudit_is_adopted(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"dataset": {"path": "/x"}}))
    (out / "issues.csv").write_text("id\n")
    open_output_dir(out)
    data = json.loads((out / "run.json").read_text())
    assert data["dataset"] == {"path": "/x"} and data["format"]["version"] == 1
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "run.json").write_text(
        json.dumps({"format": {"kind": "labelaudit-run", "version": 9}})
    )
    with pytest.raises(RunDirError, match="newer labelaudit"):
        open_output_dir(newer)


# ------------------------------------------------------------------ cells outputs


def test_forget_cells_removes_only_what_the_cell_audit_recorded(tmp_path):
    from labelaudit.cells.audit import forget_cells
    from labelaudit.core.io import update_run_json

    run = tmp_path / "run"
    open_output_dir(run)
    (run / "cells.csv").write_text("someone's table\n")
    forget_cells(run)  # no cell audit recorded: nothing is labelaudit's to delete
    assert (run / "cells.csv").read_text() == "someone's table\n"
    overlays = run / "cells" / "overlays"
    overlays.mkdir(parents=True)
    (overlays / "f1.jpg").write_bytes(b"ours")
    (overlays / "mine.jpg").write_bytes(b"theirs")
    update_run_json(run, "cells", {"overlays": [{"id": "f1", "file": "cells/overlays/f1.jpg"}]})
    forget_cells(run)
    assert not (run / "cells.csv").exists() and not (overlays / "f1.jpg").exists()
    assert (overlays / "mine.jpg").read_bytes() == b"theirs"
    assert "cells" not in json.loads((run / "run.json").read_text())
    # a forged record: not a list, or entries that are not ours, delete nothing
    (overlays / "f1.jpg").write_bytes(b"ours")
    for forged in (5, "cells/overlays/f1.jpg", [1, {"file": 3}], {"file": "x"}):
        update_run_json(run, "cells", {"overlays": forged})
        forget_cells(run)
        assert "cells" not in json.loads((run / "run.json").read_text())
    assert (overlays / "f1.jpg").exists() and (overlays / "mine.jpg").exists()


# ------------------------------------------------------------------ with a real run


@pytest.mark.slow
def test_scan_of_the_runs_own_cleaned_into_the_run_is_refused(scanned, run_cli):
    before = _files(scanned)
    code, _, err = run_cli("scan", scanned / "cleaned", "--out", scanned, *TINY)  # case 4
    err = _one_line_error(code, err)
    assert "inside the run directory" in err
    assert _files(scanned) == before


@pytest.mark.slow
def test_decisions_file_content_is_never_echoed(scanned, tmp_path, run_cli):
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:SECRET-LINE:/root:/bin/bash\ndaemon:x:1:1::/:/bin/sh\n")
    before = _files(scanned)
    code, _, err = run_cli("clean", scanned, "--decisions", secret)
    err = _one_line_error(code, err)
    assert str(secret) in err and "no id and decision column" in err
    assert "SECRET" not in err and "/bin/bash" not in err
    assert _files(scanned) == before
    # A decisions file where clean writes its output is refused before anything is written.
    first = (scanned / "dataset.csv").read_text().splitlines()[1].split(",")[0]
    own = scanned / "changes.csv"
    own.write_text(f"id,decision\n{first},reject\n")
    before = _files(scanned)
    code, _, err = run_cli("clean", scanned, "--decisions", own)
    assert "is the decisions file" in _one_line_error(code, err)
    assert _files(scanned) == before


@pytest.mark.slow
def test_rescan_and_clean_replace_their_own_outputs_and_keep_foreign_files(data, scanned, run_cli):
    data_before = snapshot(data)
    (scanned / "notes.txt").write_text("my notes\n")
    marker = json.loads((scanned / "cleaned" / ".labelaudit-cleaned.json").read_text())
    assert marker["source"] == str(data.resolve()) and "train.csv" in marker["entries"]
    (scanned / "report.html").write_text("stale")
    code, _, err = run_cli("scan", data, "--out", scanned, *TINY)
    assert code == 0, err
    assert "plotly" in (scanned / "report.html").read_text().lower()
    assert (scanned / "notes.txt").read_text() == "my notes\n"
    code, out, err = run_cli("clean", scanned, "--policy", "consensus-drop")
    assert code == 0, err
    assert (scanned / "cleaned" / "train").is_symlink()
    code, _, err = run_cli("check", scanned / "cleaned")
    assert code == 0, err
    # Someone's file inside cleaned/: clean refuses to replace the folder, keeps the file.
    (scanned / "cleaned" / "mine.txt").write_text("keep me")
    cleaned_before = snapshot(scanned / "cleaned")
    code, _, err = run_cli("clean", scanned, "--policy", "none")
    assert "mine.txt" in _one_line_error(code, err)
    assert snapshot(scanned / "cleaned") == cleaned_before
    (scanned / "cleaned" / "mine.txt").unlink()
    # A cleaned/ labelaudit did not write at all (no marker) is not replaced either.
    (scanned / "cleaned" / ".labelaudit-cleaned.json").unlink()
    code, _, err = run_cli("clean", scanned, "--policy", "none")
    assert "not written by labelaudit" in _one_line_error(code, err)
    before = _files(scanned)
    code, _, err = run_cli("scan", data, "--out", scanned, *TINY)  # refused before any work
    assert "not written by labelaudit" in _one_line_error(code, err)
    assert _files(scanned) == before and (scanned / "cleaned" / "train.csv").is_file()
    assert snapshot(data) == data_before
    assert not [p for p in scanned.iterdir() if p.name.startswith((".cleaned-", ".cleaned"))]
    assert RUN_LOCK in {p.name for p in scanned.iterdir()}


@pytest.mark.slow
def test_scan_force_says_what_it_replaces_and_keeps_other_files(data, tmp_path, run_cli):
    out = tmp_path / "d"
    out.mkdir()
    (out / "report.html").write_text("<p>my report</p>")
    (out / "notes.txt").write_text("keep")
    # Every top-level file a scan (or a later stage) may write: a user's file of that
    # name is replaced only when the --force line lists it.
    mine = ["duplicates.csv", "leaks.csv", "label_weights.csv", "bench.txt", "bench.json"]
    for name in mine:
        (out / name).write_text("user's own\n")
    code, stdout, err = run_cli("scan", data, "--out", out, *TINY[:-1], "--force")
    assert code == 0, err
    assert f"--force: writing into {out}" in stdout
    listed = stdout.split("replacing", 1)[1].split("\n", 1)[0]
    assert "report.html" in listed
    assert (out / "notes.txt").read_text() == "keep"
    assert "plotly" in (out / "report.html").read_text().lower()
    for name in mine:
        assert name in listed or (out / name).read_text() == "user's own\n", name


def test_image_cache_inside_the_dataset_is_refused(make_hpa, tmp_path, run_cli):
    dataset = make_hpa(n=4)
    before = snapshot(dataset)
    code, _, err = run_cli(
        "scan", dataset, "--out", tmp_path / "run", "--cache-dir", dataset / "cache", *TINY
    )
    assert "image cache directory" in _one_line_error(code, err)
    assert snapshot(dataset) == before and not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["issues.csv", "report.html", "oof_probs.csv"])
def test_a_directory_where_an_output_goes_is_one_line_and_kept(
    scanned, data, tmp_path, run_cli, name
):
    """Someone's folder where the scan writes (or replaces) a file: one line naming it,
    exit 2, and the folder and its contents stay (found by a hostile-user test: an
    IsADirectoryError traceback)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(scanned, run, symlinks=True)
    shutil.rmtree(run / "cleaned")  # the module's other tests leave it in other states
    target = run / name
    target.unlink()
    target.mkdir()
    (target / "mine.txt").write_text("mine\n")
    code, _, err = run_cli("scan", data, "--out", run, *TINY)
    err = _one_line_error(code, err)
    assert name in err and "a directory stands where this file goes" in err
    assert (target / "mine.txt").read_text() == "mine\n"
