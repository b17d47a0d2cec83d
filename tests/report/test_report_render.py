"""The report renders from a run directory, offline, and degrades section by section."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from labelaudit.core.errors import RunDirError
from labelaudit.core.io import read_json, write_json
from labelaudit.pipeline.compare import DEFAULT_DETECTORS
from labelaudit.report import write_report
from labelaudit.report.render import script_json

HOSTILE = "<img src=x onerror=alert(1)>"
SCRIPT_JSON = re.compile(r'<script type="application/json" id="([^"]+)">(.*?)</script>', re.S)


def scripts(page: str) -> dict[str, object]:
    """Every embedded JSON block, parsed."""
    return {m.group(1): json.loads(m.group(2)) for m in SCRIPT_JSON.finditer(page)}


def copy_run(src: Path, dst: Path, keep: set[str]) -> Path:
    """A copy of ``src`` holding only the files named in ``keep``."""
    dst.mkdir(parents=True)
    for name in keep:
        if (src / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / name, dst / name)
    return dst


@pytest.fixture(scope="module")
def page(report_run: Path) -> str:
    return write_report(report_run).read_text(encoding="utf-8")


def test_self_contained_and_offline(page: str) -> None:
    assert page.count("plotly.js v") == 1  # inlined once
    assert page.count("<script") == page.count("</script>")
    assert not re.search(r"<(script|img|link|iframe)[^>]*\s(src|href)=", page)
    assert "@import" not in page and "url(http" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_embedded_data(page: str, report_run: Path) -> None:
    blocks = scripts(page)
    data = blocks["report-data"]
    assert len(data["rows"]) == 60
    assert len(data["classes"]) == 19 and data["tokens"][7] == "7"
    assert data["methods"] == list(DEFAULT_DETECTORS)  # issue 14: knn, quality added
    assert sum(1 for t in data["thumbs"] if t.startswith("data:image/")) >= 10
    assert any(d.startswith("data:image/") for d in data["details"])
    assert len(data["probs"]) == 60 and all(0 <= v <= 1000 for v in data["probs"][0])
    figs = [k for k in blocks if k.startswith("fig-")]
    assert len(figs) >= 10
    for key in figs:
        assert "data" in blocks[key] and "template" not in blocks[key]["layout"]
    # ranked most suspicious first: the default order, issues.csv's problem_score
    # (issue 14; was consensus_score), each row with its evidence
    import pandas as pd

    issues = pd.read_csv(report_run / "issues.csv", dtype={"id": str}, keep_default_na=False)
    if "problem_score" in issues:
        ranked = issues.sort_values("problem_score", ascending=False, kind="mergesort")
        assert [row["id"] for row in data["rows"]] == ranked["id"].tolist()
        assert [row["evidence"] for row in data["rows"]] == ranked["evidence"].tolist()
    else:  # a run made before issue 14
        cons = [row["consensus"] for row in data["rows"]]
        assert cons == sorted(cons, reverse=True)


def test_sections_present(page: str) -> None:
    for section in (
        "summary",
        "classes",
        "model",
        "issues",
        "embedding",
        "intensity",
        "agreement",
        "cleaning",
        "retrain",
        "cells",
    ):
        assert f'<section id="{section}">' in page
    assert "classification_report" in page and "micro avg" in page
    assert "Field-level scan: `labelaudit scan --level cell`" in page
    assert "Not run" not in page  # cleaning and retrain artifacts exist in the fixture


def test_bench_has_a_row_per_detector_and_a_column_per_kind_of_label_noise(page: str) -> None:
    import re

    table = page.split('id="bench-groups"', 1)[1].split("</table>", 1)[0]
    header = re.findall(r'<th class="num">([^<]+)</th>', table)
    # the fixture's truth has extra and missing labels, and two image faults
    assert {"label", "missing", "extra", "image"} <= set(header)
    rows = re.findall(r"<tr><td>([^<]+)</td>", table)
    assert {"confident", "combined", "label order", "default order"} <= set(rows)


def test_limits_on_embedded_images(report_run: Path, tmp_path: Path) -> None:
    run = copy_run(
        report_run,
        tmp_path / "run",
        {"run.json", "dataset.csv", "issues.csv", "oof_probs.csv", "findings.csv"},
    )
    data = scripts(write_report(run, max_thumbnails=12, max_details=3).read_text())["report-data"]
    assert sum(1 for t in data["thumbs"] if t) == 12
    assert sum(1 for d in data["details"] if d) == 3
    assert [r["thumb"] for r in data["rows"][:13]] == [*range(12), -1]
    data = scripts(write_report(run, max_thumbnails=0).read_text())["report-data"]
    assert data["thumbs"] == [] and all(r["thumb"] == -1 for r in data["rows"])


def test_missing_artifacts_are_explained(report_run: Path, tmp_path: Path) -> None:
    run = copy_run(report_run, tmp_path / "run", {"run.json", "dataset.csv"})
    text = write_report(run).read_text()
    assert "oof_probs.csv not found" in text
    assert "issues.csv not found" in text and "until the detectors have run" in text
    assert "image_stats.csv not found" in text
    assert "Not run: changes.csv not found" in text
    assert "labelaudit retrain --clean --run RUN" in text
    assert "labelaudit bench RUN --truth" in text
    data = scripts(text)["report-data"]
    assert len(data["rows"]) == 60 and data["probs"] is None  # the images can still be browsed


def test_bare_run_json(tmp_path: Path) -> None:
    write_json(tmp_path / "run.json", {"timings": {"load": 1.0}})
    text = write_report(tmp_path).read_text()
    assert "run.json has no dataset section" in text
    assert scripts(text)["report-data"]["rows"] == []


def test_not_a_run_dir(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no run.json"):
        write_report(tmp_path / "nowhere")
    (tmp_path / "run.json").write_text("{broken")
    with pytest.raises(RunDirError, match="cannot read run.json"):
        write_report(tmp_path)


def test_inconsistent_artifacts(report_run: Path, tmp_path: Path) -> None:
    run = copy_run(
        report_run,
        tmp_path / "run",
        {"run.json", "dataset.csv", "oof_probs.csv", "embeddings.npy", "issues.csv"},
    )
    oof = (run / "oof_probs.csv").read_text().splitlines()
    (run / "oof_probs.csv").write_text("\n".join(oof[:-5]) + "\n")  # 5 images missing
    text = write_report(run).read_text()
    assert "oof_probs.csv cannot be used" in text
    assert "embeddings.npy has no oof_probs.csv to align with" in text


def test_images_decoded_from_dataset_when_cache_is_gone(report_run: Path, tmp_path: Path):
    run = copy_run(report_run, tmp_path / "run", {"run.json", "dataset.csv", "issues.csv"})
    info = read_json(run / "run.json")
    info["dataset"]["cache"] = str(tmp_path / "gone")
    write_json(run / "run.json", info)
    text = write_report(run, max_thumbnails=4).read_text()
    assert "decoded from the dataset directory" in text
    assert sum(1 for t in scripts(text)["report-data"]["thumbs"] if t) == 4


def test_hostile_strings_never_become_markup(hostile_run: Path) -> None:
    text = write_report(hostile_run).read_text()
    assert "<img src=x" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text  # autoescaped in the HTML
    data = scripts(text)["report-data"]
    assert data["rows"][[r["id"] for r in data["rows"]].index(HOSTILE)]["id"] == HOSTILE
    assert HOSTILE in data["classes"]


def test_script_json_escapes_markup() -> None:
    out = str(script_json({"a": "</script><!-- & \u2028"}))
    assert "<" not in out and ">" not in out and "&" not in out and "\u2028" not in out
    assert json.loads(out) == {"a": "</script><!-- & \u2028"}


ARTIFACTS = [
    "dataset.csv",
    "image_stats.csv",
    "oof_probs.csv",
    "embeddings.npy",
    "issues.csv",
    "findings.csv",
    "bench.json",
    "changes.csv",
    "retrain/metrics.json",
]


WRONG = b"id,x\n1,2\n"  # well-formed CSV, wrong columns and ids
GARBAGE = b"\x00\xff garbage \x89PNG"


def render_broken(run: Path, broken: dict[str, bytes]) -> str:
    for name, content in broken.items():
        (run / name).write_bytes(content)
    return write_report(run, max_thumbnails=2, max_details=1).read_text()


@pytest.mark.parametrize("name", ARTIFACTS)
def test_one_broken_artifact_never_crashes(report_run: Path, tmp_path: Path, name: str) -> None:
    run = copy_run(report_run, tmp_path / "run", {"run.json", *ARTIFACTS})
    text = render_broken(run, {name: WRONG if name.endswith(".csv") else GARBAGE})
    assert "</html>" in text


@pytest.mark.parametrize("content", [b"", b"id\n", WRONG, GARBAGE])
def test_all_broken_artifacts_never_crash(report_run: Path, tmp_path: Path, content: bytes):
    run = copy_run(report_run, tmp_path / "run", {"run.json", *ARTIFACTS})
    assert "</html>" in render_broken(run, dict.fromkeys(ARTIFACTS, content))


@pytest.mark.parametrize(
    "value", [[1, 2], "text", {}, {"folds": "x", "metrics": 3, "detectors": []}]
)
def test_odd_run_json_sections_never_crash(report_run: Path, tmp_path: Path, value) -> None:
    run = copy_run(report_run, tmp_path / "run", {"run.json", *ARTIFACTS})
    info = read_json(run / "run.json")
    for section in ("dataset", "train", "detect", "compare", "timings"):
        info[section] = value
    write_json(run / "run.json", info)
    assert "</html>" in write_report(run, max_thumbnails=2, max_details=1).read_text()


def test_a_failing_section_is_reported_in_place(report_run: Path, tmp_path: Path, monkeypatch):
    from labelaudit.report import figures

    def boom(*args, **kwargs):
        raise RuntimeError("no upset today")

    monkeypatch.setattr(figures, "upset", boom)
    monkeypatch.setenv("LABELAUDIT_REPORT_LENIENT", "1")  # the opt-in: failures become text
    run = copy_run(report_run, tmp_path / "run", {"run.json", "dataset.csv", "issues.csv"})
    text = write_report(run, max_thumbnails=0).read_text()
    assert "could not be built (RuntimeError: no upset today)" in text
    assert '<section id="retrain">' in text
