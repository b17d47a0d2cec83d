"""Shared fixtures: offline mode, a private cache, small datasets (random fields,
``make_hpa``; the session's synthetic set, ``synth60``), a ready run directory
(``hpa_run``, from :mod:`la_runfixture`), a CLI runner."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from la_testutils import CHANNELS, REPORT_LABEL_SOURCE, snapshot, write_image


def pytest_report_header() -> str:
    """Name the report fixtures' label source in the session's header (never silent)."""
    return f"report fixtures' labels: {REPORT_LABEL_SOURCE}"


@pytest.fixture(scope="session", autouse=True)
def _private_session(tmp_path_factory):
    """The same for fixtures wider than a test (a module's scanned run): they are made
    before any test's monkeypatch, and must not use the user's cache nor marker key."""
    patch = pytest.MonkeyPatch()
    patch.setenv("LABELAUDIT_OFFLINE", "1")
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("LABELAUDIT_CACHE_DIR", str(tmp_path_factory.mktemp("session-cache")))
    patch.setenv("LABELAUDIT_CONFIG_DIR", str(_config_dir(tmp_path_factory)))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _offline_and_private_cache(monkeypatch, tmp_path_factory):
    # Tests never touch the network nor the user's cache.
    monkeypatch.setenv("LABELAUDIT_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LABELAUDIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    # ... nor the user's marker key (labelaudit.core.trust).
    monkeypatch.setenv("LABELAUDIT_CONFIG_DIR", str(_config_dir(tmp_path_factory)))


def _config_dir(tmp_path_factory) -> Path:
    """One configuration directory for the whole session (a key made once, kept)."""
    base = tmp_path_factory.getbasetemp() / "labelaudit-config"
    base.mkdir(mode=0o700, exist_ok=True)
    return base


@pytest.fixture
def make_hpa(tmp_path) -> Callable[..., Path]:
    """Factory for a small HPA-2021-layout dataset with random fields."""

    def make(
        n: int = 6,
        size: int = 32,
        dtype=np.uint8,
        ext: str = ".png",
        labels: list[str] | None = None,
        name: str = "hpa",
        seed: int = 0,
    ) -> Path:
        root = tmp_path / name
        rng = np.random.default_rng(seed)
        ids = [f"field{i:03d}" for i in range(n)]
        labels = labels or [
            str(i % 19) + ("|3" if i % 4 == 0 and i % 19 != 3 else "") for i in range(n)
        ]
        hi = np.iinfo(dtype).max
        for image_id in ids:
            for c in CHANNELS:
                arr = rng.integers(0, hi // 2, size=(size, size)).astype(dtype)
                write_image(root / "train" / f"{image_id}_{c}{ext}", arr)
        lines = ["ID,Label"] + [f"{i},{lab}" for i, lab in zip(ids, labels, strict=True)]
        (root / "train.csv").write_text("\n".join(lines) + "\n")
        return root

    return make


@pytest.fixture(scope="session")
def synth60(tmp_path_factory) -> Iterator[Path]:
    """60 synthetic HPA-2021 fields, 32 px, seed 1 (two classes have one image: fewer
    than 2 folds), made once for the session.

    Read only: every test that uses it shares it (a test that changes its dataset
    copies it first, as ``hpa`` in ``safety/test_safety_inputs.py``). The session
    fails at its end if a file of it changed.
    """
    from labelaudit.synth.simulate import synthesize

    root = tmp_path_factory.mktemp("synth60") / "data"
    synthesize(root, n=60, size=32, seed=1)
    before = snapshot(root)
    yield root
    assert snapshot(root) == before, f"a test changed the shared dataset {root}"


@pytest.fixture
def hpa_run(make_hpa, tmp_path) -> tuple[Path, Path]:
    """``(dataset, run directory)``: 10 HPA fields and a run as the scan leaves it, with
    hand-made findings (:data:`la_runfixture.SCENARIO`), no training."""
    from la_runfixture import make_run

    dataset = make_hpa(n=10, size=16)
    return dataset, make_run(tmp_path, dataset)


@pytest.fixture
def run_cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """Run the CLI in-process: returns (exit status, stdout, stderr)."""
    from labelaudit.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run
