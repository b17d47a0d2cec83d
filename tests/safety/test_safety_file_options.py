"""Every file option of every command, given a hostile file (issue 22, "done when").

The commands and their options are enumerated from the command line itself, so a
new command or a new path option cannot skip this test: it must be classified in
:data:`ROLES` (the test fails otherwise). Each option is given a FIFO, ``/dev/zero``,
a symbolic link to a file of the user's and (for file options) a directory; each
run must end in one line naming the hostile path, exit 2, no traceback, and leave
every file outside the run unchanged.
"""

from __future__ import annotations

import os
import shutil
import typing
from pathlib import Path

import pytest
import typer
from la_testutils import TINY_SCAN, snapshot

from labelaudit.cli import app

#: ``(command, parameter)`` -> "file" (a file is read or written) or "dir" (a directory).
ROLES: dict[tuple[str, str], str] = {
    ("check", "dataset"): "dir",
    ("check", "labels"): "file",
    ("check", "images"): "dir",
    ("synth", "out"): "dir",
    ("scan", "dataset"): "dir",
    ("scan", "labels"): "file",
    ("scan", "images"): "dir",
    ("scan", "out"): "dir",
    ("scan", "weights"): "file",
    ("scan", "cache_dir"): "dir",
    ("scan", "masks"): "dir",
    ("scan", "probs"): "file",
    ("scan", "embeddings"): "file",
    ("scan", "against"): "dir",
    ("scan", "second_round_of"): "dir",
    ("scan", "cell_probs"): "file",
    ("demo", "out"): "dir",
    ("segment", "dataset"): "dir",
    ("segment", "out"): "dir",
    ("segment", "compare"): "dir",
    ("leaks", "dataset_a"): "dir",
    ("leaks", "dataset_b"): "dir",
    ("leaks", "out"): "file",
    ("bench", "run"): "dir",
    ("bench", "truth"): "file",
    ("report", "run"): "dir",
    ("clean", "run"): "dir",
    ("clean", "decisions"): "file",
    ("retrain", "run"): "dir",
    ("retrain", "truth"): "file",
    ("retrain", "decisions"): "file",
    ("predict", "model"): "file",
    ("predict", "data"): "dir",
    ("predict", "out"): "file",
    ("sweep", "dataset"): "dir",
    ("sweep", "labels"): "file",
    ("sweep", "images"): "dir",
    ("sweep", "out"): "dir",
    ("sweep", "cache_dir"): "dir",
}
HOSTILE = ("fifo", "dev-zero", "link-to-user-file", "directory")


def _is_path(param) -> bool:
    """Whether a parameter takes a path (typer's type descriptor, or click's type)."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        return _mentions_path(descriptor.annotation)
    return type(getattr(param, "type", None)).__name__ == "Path"


def _mentions_path(annotation) -> bool:
    """``Path``, ``Path | None``, ``list[Path]``, ``list[Path] | None``, ..."""
    return annotation is Path or any(_mentions_path(a) for a in typing.get_args(annotation))


def _path_params() -> list[tuple[str, str, object]]:
    group = typer.main.get_command(app)
    found = []
    for name, command in sorted(group.commands.items()):
        for param in command.params:
            if _is_path(param):
                found.append((name, param.name, param))
    return found


def test_every_path_option_is_classified():
    found = {(c, p) for c, p, _ in _path_params()}
    assert found == set(ROLES), (
        f"classify these path options in ROLES: {sorted(found - set(ROLES))}; "
        f"stale entries: {sorted(set(ROLES) - found)}"
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset, a run directory (hand-made, no training), a model and the user's files."""
    from la_runfixture import make_run
    from la_testutils import write_tiny_model

    from labelaudit.synth.simulate import synthesize

    base = tmp_path_factory.mktemp("hostile")
    data = base / "data"
    synthesize(data, n=12, size=32, seed=3)
    run = make_run(base, data)
    model = write_tiny_model(base / "model.pt")
    user = base / "user"
    user.mkdir()
    (user / "notes.csv").write_text("id,decision\nmine,keep\n")
    fifo = base / "a-fifo"
    os.mkfifo(fifo)
    (base / "a-dir").mkdir()
    (base / "a-dir" / "kept.txt").write_text("the user's\n")
    os.symlink(user / "notes.csv", base / "a-link")
    return {"base": base, "data": data, "run": run, "model": model, "user": user}


def _hostile(world, kind: str) -> Path:
    base = world["base"]
    return {
        "fifo": base / "a-fifo",
        "dev-zero": Path("/dev/zero"),
        "link-to-user-file": base / "a-link",
        "directory": base / "a-dir",
    }[kind]


def _args(command: str, param: str, value: Path, world, tmp: Path) -> list[str]:
    """A command line that would run, with ``param`` set to ``value``."""
    data, run, model = world["data"], world["run"], world["model"]
    fast = [*TINY_SCAN, "--quiet"]
    defaults = {
        "check": {"dataset": data},
        "synth": {"out": tmp / "synth", "__": ["--n", "8", "--size", "32"]},
        "scan": {"dataset": data, "out": tmp / "run", "__": fast},
        "demo": {"out": tmp / "demo", "__": ["--n", "10"]},
        "segment": {"dataset": data, "out": tmp / "seg"},
        "leaks": {"dataset_a": data, "dataset_b": data},
        "bench": {"run": run, "truth": data / "truth.csv"},
        "report": {"run": run},
        "clean": {"run": run},
        "retrain": {"run": run, "__": ["--epochs", "1"]},
        "predict": {"model": model, "data": data, "out": tmp / "p.csv"},
        "sweep": {"dataset": data, "out": tmp / "sweep", "__": ["--lrs", "0.01", "--epochs", "1"]},
    }[command]
    values = {k: v for k, v in defaults.items() if k != "__"}
    values[param] = value
    if param == "embeddings":  # --embeddings goes with --probs
        values.setdefault("probs", run / "oof_probs.csv")
    if param == "masks":
        values["__level"] = ["--level", "cell"]
    group = typer.main.get_command(app)
    line = [command]
    for p in group.commands[command].params:
        if p.name not in values:
            continue
        if p.param_type_name == "argument":
            line.append(str(values[p.name]))
        else:
            line += [p.opts[0], str(values[p.name])]
    return line + list(defaults.get("__", [])) + list(values.get("__level", []))


CASES = [
    (c, p, kind)
    for (c, p), role in sorted(ROLES.items())
    for kind in HOSTILE
    if role == "file" or kind != "directory"
]


@pytest.mark.parametrize(("command", "param", "kind"), CASES)
def test_hostile_file_option(world, tmp_path, run_cli, command, param, kind):
    value = _hostile(world, kind)
    args = _args(command, param, value, world, tmp_path)
    watched = {k: snapshot(world[k]) for k in ("data", "user")}
    watched_dir = snapshot(world["base"] / "a-dir")
    code, out, err = run_cli(*args)
    assert code == 2, (args, code, out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, (args, err)
    assert value.name in err, (args, err)
    assert {k: snapshot(world[k]) for k in ("data", "user")} == watched
    assert snapshot(world["base"] / "a-dir") == watched_dir
    assert (world["base"] / "a-fifo").exists() and not (world["base"] / "a-fifo").is_file()
    shutil.rmtree(tmp_path, ignore_errors=True)


# ------------------------------------------------------------------ one output guard per command

#: How each command is pointed at a directory or file of the user's as its output.
#: ``"run"``: the run directory argument (bench, report, clean, retrain write into it);
#: ``"out-dir"`` / ``"out-file"``: ``--out``; ``"reads-only"``: writes nothing.
OUTPUTS: dict[str, str] = {
    "check": "reads-only",
    "synth": "out-dir",
    "scan": "out-dir",
    "demo": "out-dir",
    "segment": "out-dir",
    "leaks": "out-file",
    "bench": "run",
    "report": "run",
    "clean": "run",
    "retrain": "run",
    "predict": "out-file",
    "sweep": "out-dir",
}


def test_every_command_is_in_the_output_guard_table():
    commands = set(typer.main.get_command(app).commands)
    assert commands == set(OUTPUTS), f"add {sorted(commands - set(OUTPUTS))} to OUTPUTS"


@pytest.mark.parametrize("command", sorted(OUTPUTS))
def test_no_command_writes_into_a_users_directory(world, tmp_path, run_cli, command):
    """A directory of the user's, holding a run.json that labelaudit did not write."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "run.json").write_text('{"mine": true}\n')
    (mine / "notes.csv").write_text("id,decision\nx,keep\n")
    role = OUTPUTS[command]
    if role == "reads-only":
        args = _args(command, "dataset", mine, world, tmp_path)
    elif role == "run":
        args = _args(command, "run", mine, world, tmp_path)
    elif role == "out-dir":
        args = _args(command, "out", mine, world, tmp_path)
    else:
        args = _args(command, "out", mine / "notes.csv", world, tmp_path)
    before = snapshot(mine)
    code, out, err = run_cli(*args)
    assert code == 2 and "Traceback" not in out + err, (args, out, err)
    assert snapshot(mine) == before and sorted(os.listdir(mine)) == ["notes.csv", "run.json"]
