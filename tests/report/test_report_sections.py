"""The report's section registry, its named table records and where agreement comes from."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from labelaudit.core.io import read_json, write_json
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


def test_duplicate_groups_are_ids_and_show_class_names(report_run: Path, tmp_path: Path) -> None:
    # issue 26: a duplicate group is an id ("3", never a "3.000" score column) and the
    # Duplicates section names classes as the table does, not by their tokens.
    import pandas as pd

    from labelaudit.data.classes import HPA2021_CLASSES

    run = copy_run(report_run, tmp_path / "run")
    issues = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False)
    members = issues.index[:3]
    issues["duplicate_group"] = ""
    issues["duplicate_of"] = ""
    issues["duplicate_conflict"] = ""
    issues.loc[members, "duplicate_group"] = "3"
    issues.loc[members[1:], "duplicate_of"] = issues.loc[members[0], "id"]
    issues.loc[members, "duplicate_given"] = issues.loc[members, "given_labels"]
    issues.loc[members, "duplicate_conflict"] = "0;16"
    issues.loc[members[0], "given_labels"] = "0|16"
    issues.drop(columns="duplicate_given").to_csv(run / "issues.csv", index=False)
    page = write_report(run, max_thumbnails=0).read_text()
    data = blocks(page)["report-data"]
    assert all("duplicate" not in s["key"] for s in data["scores"])
    first, second = data["rows"][0], data["rows"][1]
    assert first["id"] == issues.loc[members[0], "id"] and first["duplicate"] == "3"
    assert second["duplicate"] == f"3, copy of {first['id']}"
    section = page[page.index('<section id="duplicates">') :]
    names = f"{HPA2021_CLASSES[0]}, {HPA2021_CLASSES[16]}"
    assert f"labels disagree on {names}" in section
    assert f"given {names}" in section
    assert "given 0|16" not in section and "disagree on 0;16" not in section


def test_agreement_text_counts_the_detectors(page: str, report_run: Path) -> None:
    n = len(read_json(report_run / "run.json")["compare"]["agreement"]["detectors"])
    word = "zero one two three four five six seven eight nine ten".split()[n]
    assert f"Do the {word} detectors find the same images?" in page
    assert "three ways" not in page


def test_stain_captions_come_from_the_dataset() -> None:
    from labelaudit.report.analysis import stain_captions

    hpa = ["red", "green", "blue", "yellow"]
    assert stain_captions({"layout": "hpa2021", "channels": hpa}) == [
        "red (microtubules)",
        "green (protein)",
        "blue (nucleus)",
        "yellow (ER)",
    ]
    assert stain_captions({"layout": "generic", "channels": ["red", "green", "blue"]}) == [
        "R",
        "G",
        "B",
    ]
    # a generic 4-channel set is not assumed to be HPA stains
    assert stain_captions({"layout": "generic", "channels": hpa}) == [
        f"channel {i}" for i in (1, 2, 3, 4)
    ]
    assert stain_captions({"layout": "generic", "channels": ["gray"]}) == ["gray"]
    declared = {
        "layout": "generic",
        "channels": ["red", "green", "blue"],
        "stains": ["a", "b", "c"],
    }
    assert stain_captions(declared) == ["a", "b", "c"]


def test_page_data_carries_stains_and_exclusive_classes(report_run: Path, tmp_path: Path) -> None:
    run = copy_run(report_run, tmp_path / "run")
    data = blocks(write_report(run, max_thumbnails=0).read_text())["report-data"]
    # HPA 2021: Negative stands alone (data/roles.py), read from the run's roles
    assert data["exclusive"] == [data["classes"].index("Negative")]
    assert data["stains"][1] == "green (protein)"
    info = read_json(run / "run.json")
    info["dataset"]["roles"]["exclusive_classes"] = []  # a dataset that declares none
    info["dataset"]["layout"] = "generic"
    write_json(run / "run.json", info)
    data = blocks(write_report(run, max_thumbnails=0).read_text())["report-data"]
    assert data["exclusive"] == []
    assert data["stains"] == ["channel 1", "channel 2", "channel 3", "channel 4"]


def test_cleaning_section_says_who_made_each_change(report_run: Path, tmp_path: Path) -> None:
    import pandas as pd

    from labelaudit.pipeline.clean import clean

    run = copy_run(report_run, tmp_path / "run")
    issues = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False)
    same = issues[issues["given_labels"] == issues["suggested_labels"]]
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(f"id,decision,labels\n{same['id'].iloc[0]},reject,\n")
    result = clean(run, policy="relabel-soft", decisions=decisions)
    by = result.changes["made_by"].value_counts().to_dict()
    assert by["person"] == 1 and by.get("policy", 0) >= 1
    page = write_report(run, max_thumbnails=0).read_text()
    section = page[page.index('<section id="cleaning">') :]
    section = " ".join(section[: section.index("</section>")].split())
    assert f"1 by a person's decision, {by['policy']} by the policy" in section
    assert "by made_by" in section


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


class _Run:
    """The part of the report's artifacts ``_label_evidence_words`` reads."""

    def __init__(self, run: dict):
        self.run = run

    def section(self, name: str) -> dict:
        value = self.run.get(name)
        return value if isinstance(value, dict) else {}


@pytest.mark.parametrize(
    ("run", "words"),
    [
        (
            {"detect": {"detectors": {"combined": {"summary": {"features": [
                "logit_p", "logit_threshold", "logit_neighbours", "flip_gain",
                "cell_strongest", "cell_mean",
            ]}}}}, "cells": {"source": "segmented (scikit-image)"}},
            "the probabilities, the neighbours' labels, the image content and the cell "
            "model's view of each cell",
        ),
        (
            {"detect": {"detectors": {"combined": {"summary": {"features": [
                "logit_p", "cell_strongest",
            ]}}}}, "cells": {"source": "supplied: ..."}},
            "the probabilities and the cell model's view of each cell (supplied)",
        ),
        (
            {"detect": {"detectors": {"combined": {"summary": {"features": ["logit_p"]}}}}},
            "the probabilities",
        ),
        # a forged or absent record: the usual three
        ({"detect": {"detectors": {"combined": {"summary": {"features": "x"}}}}},
         "the probabilities, the neighbours' labels and the image content"),
        ({"detect": []}, "the probabilities, the neighbours' labels and the image content"),
    ],
)  # fmt: skip
def test_the_issue_table_says_what_the_label_evidence_weighed(run, words):
    from labelaudit.report.sections import _label_evidence_words

    assert _label_evidence_words(_Run(run)) == words


def test_forged_overlay_entries_embed_nothing_outside_the_runs_pictures(
    report_run: Path, tmp_path: Path
) -> None:
    """``run.json["cells"]["overlays"]`` is read back: an entry naming a file elsewhere
    (absolute, ``..``, a link out of the run) is neither read nor embedded, malformed
    entries are skipped, and the run's own picture is shown (found by a hostile test:
    the report embedded ``/etc/hostname``)."""
    import base64

    run = copy_run(report_run, tmp_path / "run")
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 SECRET-BYTES-NOT-FOR-THE-REPORT")
    pictures = run / "cells" / "overlays"
    pictures.mkdir(parents=True)
    (pictures / "f1.jpg").write_bytes(b"\xff\xd8 the run's own picture")
    (pictures / "link.jpg").symlink_to(secret)
    own = {"file": "cells/overlays/f1.jpg", "id": "f1", "given": "Nucleoli", "support": 3}
    forged = [
        own,
        {"file": str(secret), "id": "abs"},
        {"file": "cells/overlays/../../../secret.jpg", "id": "up"},
        {"file": "cells/overlays/link.jpg", "id": "link"},
        {"file": "cells/overlays/f1.jpg"},  # no caption: shown with empty words
        1,
        "cells/overlays/f1.jpg",
        {"file": ["x"], "given": {"a": 1}},
        {"file": "cells/overlays/f1.jpg", "id": "big", "support": 10**400, "given": 1e999},
    ]
    data = read_json(run / "run.json")
    data["cells"] = {"source": "masks", "n_cells": 3, "overlays": forged}
    write_json(run / "run.json", data)
    page = write_report(run).read_text(encoding="utf-8")
    assert "could not be built" not in page
    assert base64.b64encode(secret.read_bytes()).decode() not in page
    assert page.count(base64.b64encode(b"\xff\xd8 the run's own picture").decode()) == 3
    assert "<code>f1</code> given Nucleoli; cells showing each label 3" in page
    for overlays in (5, "x", {"file": str(secret)}):  # not a list: no picture, no crash
        data["cells"]["overlays"] = overlays
        write_json(run / "run.json", data)
        assert "could not be built" not in write_report(run).read_text(encoding="utf-8")
