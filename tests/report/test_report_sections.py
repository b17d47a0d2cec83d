"""The report's section registry, its named table records and where agreement comes from."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from labelaudit.io import read_json, write_json
from labelaudit.report import figures, write_report
from labelaudit.report.sections import SECTIONS, register
from labelaudit.report.table import TableRow

SCRIPT_JSON = re.compile(r'<script type="application/json" id="([^"]+)">(.*?)</script>', re.S)


def blocks(page: str) -> dict[str, object]:
    return {m.group(1): json.loads(m.group(2)) for m in SCRIPT_JSON.finditer(page)}


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of the fixture run (files at the top level and retrain/)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report.html", "*.lock"))
    return dst


@pytest.fixture(scope="module")
def page(report_run: Path) -> str:
    return write_report(report_run).read_text(encoding="utf-8")


def test_no_section_of_a_normal_run_failed(page: str) -> None:
    assert "could not be built" not in page
    for name in SECTIONS:
        assert f'<section id="{name}">' in page


def test_sections_render_in_registry_order(page: str) -> None:
    ids = re.findall(r'<section id="([a-z]+)">', page)
    assert ids == list(SECTIONS)
    nav = page[page.index('<nav aria-label="sections">') : page.index("</nav>")]
    assert re.findall(r'href="#([a-z]+)"', nav) == list(SECTIONS)
    assert ">Label issues</a>" in nav  # the registered title


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register("summary", "Again")(lambda state: {})


def test_table_rows_are_named_records(page: str) -> None:
    data = blocks(page)["report-data"]
    fields = [f.name for f in dataclasses.fields(TableRow) if f.name != "image"]
    assert all(list(row) == fields for row in data["rows"])
    first = data["rows"][0]
    assert isinstance(first["id"], str) and isinstance(first["given"], list)
    assert len(first["scores"]) == len(data["scores"])
    assert first["thumb"] == 0 and first["detail"] == 0
    # report.js reads the records by name, never by slot
    js = Path(__file__).resolve().parents[2] / "reports" / "templates" / "report.js"
    text = js.read_text()
    assert "row.suggested" in text and "row.consensus_flag" in text
    assert not re.search(r"row\[[A-Z0-9]", text) and "row.pop" not in text


def test_a_broken_section_fails_loudly(report_run: Path, tmp_path: Path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("no upset today")

    monkeypatch.setattr(figures, "upset", boom)
    monkeypatch.delenv("LABELAUDIT_REPORT_LENIENT", raising=False)
    run = copy_run(report_run, tmp_path / "run")
    with pytest.raises(RuntimeError, match="no upset today") as info:
        write_report(run, max_thumbnails=0)
    assert any("'agreement'" in note for note in info.value.__notes__)
    assert not (run / "report.html").exists()
    text = write_report(run, max_thumbnails=0, lenient=True).read_text()  # the opt-in
    assert "could not be built (RuntimeError: no upset today)" in text


def test_agreement_is_read_from_the_run(report_run: Path, tmp_path: Path) -> None:
    run = copy_run(report_run, tmp_path / "run")
    info = read_json(run / "run.json")
    agree = info["compare"]["agreement"]
    names = agree["detectors"]
    agree["combinations"]["+".join(names)] = 4321  # a count only the run knows
    agree["jaccard"][names[0]][names[1]] = 0.123
    agree["spearman"][names[0]][names[1]] = None  # constant scores: undefined
    write_json(run / "run.json", info)
    figs = blocks(write_report(run, max_thumbnails=0).read_text())
    assert 4321 in figs["fig-upset"]["data"][0]["y"] + figs["fig-upset"]["data"][0]["x"]
    assert figs["fig-jaccard"]["data"][0]["z"][0][1] == 0.123
    assert figs["fig-spearman"]["data"][0]["z"][0][1] is None

    del info["compare"]["agreement"]
    write_json(run / "run.json", info)
    text = write_report(run, max_thumbnails=0).read_text()
    assert "run.json has no compare.agreement section" in text
    assert "fig-upset" not in blocks(text)


def test_lenient_mode_renders_every_section_failing(report_run: Path, tmp_path, monkeypatch):
    def boom(state):
        raise KeyError("broken on purpose")

    for name, section in list(SECTIONS.items()):
        monkeypatch.setitem(SECTIONS, name, dataclasses.replace(section, build=boom))
    run = copy_run(report_run, tmp_path / "run")
    text = write_report(run, max_thumbnails=0, lenient=True).read_text()
    assert text.count("could not be built (KeyError: &#39;broken on purpose&#39;)") == len(SECTIONS)
    assert "</html>" in text


def test_the_summary_names_the_class_and_stain_roles(report_run: Path, page: str) -> None:
    roles = read_json(report_run / "run.json")["dataset"]["roles"]
    assert roles == {
        "exclusive_classes": ["Negative"],
        "target_channel": "green",
        "reference_channels": ["red", "blue", "yellow"],
    }
    summary = page[page.index('<section id="summary">') : page.index('<section id="classes">')]
    assert "Negative (never combined with another class)" in summary
    assert "target (what the labels describe): green; references: red, blue, yellow" in summary
