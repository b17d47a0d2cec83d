"""The wheel: built from the tree, installed into a clean place, used from elsewhere.

Offline: the wheel is built without build isolation (the environment's setuptools) and
installed with ``--no-deps --no-index`` into a target directory that comes first on
``PYTHONPATH``; the environment's site-packages give the dependencies. Every command
runs outside the source tree, so what it uses is what the wheel holds.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from la_testutils import REPO

import labelaudit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(wheel, target directory, environment)`` of the installed wheel."""
    pytest.importorskip("build")
    root = tmp_path_factory.mktemp("wheel")
    dist, target = root / "dist", root / "site"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, REPO],
        check=True,
        capture_output=True,
        cwd=root,
        timeout=300,
    )
    (wheel,) = dist.glob("labelaudit-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", target, wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(target), LABELAUDIT_CACHE_DIR=str(root / "cache"))
    return wheel, target, env


def labelaudit_cli(installed, *args, cwd) -> subprocess.CompletedProcess:
    _, target, env = installed
    return subprocess.run(
        [sys.executable, str(target / "bin" / "labelaudit"), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def test_wheel_metadata_and_files(installed):
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(whl.read(meta_name))
    assert meta["Version"] == labelaudit.__version__
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "labelaudit/templates/report.html.j2" in names
    assert "labelaudit/py.typed" in names  # mypy runs on the whole package (make lint)
    # Every package of the source tree ships (the list in pyproject.toml is explicit).
    source = Path(labelaudit.__file__).parent
    for init in source.rglob("__init__.py"):
        assert init.relative_to(source.parent).as_posix() in names, init
    assert meta.get_all("Classifier") and meta["Author"]


def test_installed_wheel_runs_version_check_and_scan(installed, tmp_path):
    _, target, env = installed
    where = subprocess.run(
        [sys.executable, "-c", "import labelaudit; print(labelaudit.__file__)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(target)  # not the source tree

    proc = labelaudit_cli(installed, "--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"labelaudit {labelaudit.__version__}"

    proc = labelaudit_cli(installed, "synth", "data", "--n", "16", "--size", "32", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = labelaudit_cli(installed, "check", "data", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "16 images, 19 classes" in proc.stdout

    proc = labelaudit_cli(
        installed, "scan", "data", "--out", "run", "--preset", "demo", "--epochs", "1",
        "--folds", "2", "--image-size", "32", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "issues.csv").is_file()
    assert "labelaudit report" in (tmp_path / "run" / "report.html").read_text()
