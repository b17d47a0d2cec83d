"""The report in a real browser: headless Chromium (Debian's) driven by Playwright.

The page is loaded from ``file://`` with every request that is not ``file:``,
``data:`` or ``blob:`` aborted and recorded; there must be none. The test renders
every plot, filters and sorts the table, opens the detail view, reviews with the
keyboard, and exports the decisions.

Set ``LABELAUDIT_SCREENSHOTS=docs/img`` to also save a screenshot of each section
there (for ``docs/report.md``).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from labelaudit.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
HOSTILE = "<img src=x onerror=alert(1)>"
SECTIONS = (
    "summary",
    "classes",
    "model",
    "issues",
    "embedding",
    "intensity",
    "agreement",
    "cleaning",
    "retrain",
)

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not shutil.which("chromium"),
    reason="Chromium is not installed (apt-get install chromium)",
)


@pytest.fixture(scope="module")
def browser():
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=ARGS)
        yield b
        b.close()


class Watched:
    """A page whose network requests, JavaScript errors and dialogs are recorded."""

    def __init__(self, browser, path: Path, width: int = 1280) -> None:
        self.context = browser.new_context(
            viewport={"width": width, "height": 900}, accept_downloads=True
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on(
            "console",
            lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None,
        )
        self.page.on("dialog", self._dialog)
        self.page.route("**/*", self._route)
        self.url = path.resolve().as_uri()

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            self.requests.append(url)
            route.abort()

    def load(self) -> None:
        self.page.goto(self.url, wait_until="load")
        self.page.wait_for_function(
            "document.querySelectorAll('.plot').length > 0 && "
            "[...document.querySelectorAll('.plot')].every(d => d.querySelector('svg.main-svg'))",
            timeout=30_000,
        )

    def js(self, expr: str, arg=None):
        return self.page.evaluate(expr, arg)

    def check_clean(self) -> None:
        assert self.requests == [], f"network requests: {self.requests}"
        assert self.errors == [], f"JavaScript errors: {self.errors}"
        assert self.dialogs == [], f"dialogs opened: {self.dialogs}"


def shoot(page, name: str, selector: str | None = None, max_height: int = 1400) -> None:
    """Save a screenshot into $LABELAUDIT_SCREENSHOTS (palette PNG, kept small)."""
    out = os.environ.get("LABELAUDIT_SCREENSHOTS")
    if not out:
        return
    from PIL import Image

    path = Path(out) / f"report-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if selector is None:
        page.screenshot(path=str(path))
    else:
        page.evaluate("document.querySelector('.topbar').style.position = 'static'")
        page.locator(selector).scroll_into_view_if_needed()
        box = page.locator(selector).bounding_box()
        scroll = page.evaluate("[window.scrollX, window.scrollY]")
        clip = {
            "x": box["x"] + scroll[0],
            "y": box["y"] + scroll[1],
            "width": box["width"],
            "height": min(box["height"], max_height),
        }
        page.screenshot(path=str(path), clip=clip, full_page=True)
        page.evaluate("document.querySelector('.topbar').style.position = ''")
    img = Image.open(path).convert("RGB")
    while True:  # docs images stay small: a dithered 256-colour palette, smaller if need be
        palette = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        img.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
        if path.stat().st_size <= 300_000:
            break
        img = img.resize((img.width * 4 // 5, img.height * 4 // 5), Image.Resampling.LANCZOS)


def visible_rows(w: Watched) -> list[str]:
    return w.js("[...document.querySelectorAll('#issue-body td.id')].map(td => td.textContent)")


@pytest.mark.slow
def test_report_in_chromium(browser, report_run: Path, tmp_path: Path) -> None:
    w = Watched(browser, write_report(report_run))
    page = w.page
    w.load()

    # Issue 14: the review list's first page says per row which evidence put it there,
    # in the default order of issues.csv; the duplicates section is on the page.
    header = w.js("[...document.querySelectorAll('#issues th')].map(th => th.textContent)")
    assert any("evidence" in h for h in header), header
    ids = visible_rows(w)
    evidence = w.js(
        "[...document.querySelectorAll('#issue-body td.evidence')].map(td => td.textContent)"
    )
    assert len(evidence) == len(ids) > 0
    assert any(("z=" in e or "top" in e) for e in evidence), evidence  # the top rows' reasons
    with open(report_run / "issues.csv", encoding="utf-8", newline="") as fh:
        order = [row["id"] for row in csv.DictReader(fh)]
    assert ids == order[: len(ids)]
    assert w.js("!!document.querySelector('section#duplicates')")

    # Every plot rendered, the acceptance numbers met.
    n_div = w.js("document.querySelectorAll('.plot').length")
    n_plotted = w.js(
        "[...document.querySelectorAll('.plot.js-plotly-plot')]"
        ".filter(d => d.querySelector('svg.main-svg')).length"
    )
    assert n_plotted == n_div >= 5
    n_thumbs = w.js(
        "[...document.querySelectorAll('img.thumb')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length"
    )
    assert n_thumbs >= 10
    assert page.locator("#count").text_content() == "60 of 60 images"
    for name in SECTIONS:
        if name != "issues":
            shoot(page, name, f"#{name}")

    # Filters: by detector, class, score, id; sorting.
    page.select_option("#f-method", label="confident")
    ids = visible_rows(w)
    assert 0 < len(ids) < 60
    flagged = w.js(
        "[...document.querySelectorAll('#issue-body tr')]"
        ".every(tr => [...tr.querySelectorAll('.chip.m')].some(c => c.textContent === 'confident'))"
    )
    assert flagged
    page.select_option("#f-method", value="")
    page.select_option("#f-class", label="Nucleoplasm")
    n_class = len(visible_rows(w))
    assert 0 < n_class < 60
    page.select_option("#f-class", value="")
    page.select_option("#f-score", label="label quality")
    page.select_option("#f-op", value="le")
    page.fill("#f-value", "0.5")
    low = w.js(
        "[...document.querySelectorAll('#issue-body tr')].map(tr => "
        "Number(tr.children[5].textContent))"
    )
    assert low and all(v <= 0.5 for v in low)
    page.fill("#f-value", "")
    page.locator("#issue-head th[data-key='s1']").click()  # outlier score, descending
    scores = w.js(
        "[...document.querySelectorAll('#issue-body tr')].map(tr => "
        "Number(tr.children[6].textContent))"
    )
    assert scores == sorted(scores, reverse=True)
    page.locator("#issue-head th[data-key='rank']").click()
    first = visible_rows(w)[0]
    page.fill("#f-id", first[:10])
    assert visible_rows(w) == [first]
    page.fill("#f-id", "")
    page.select_option("#page-size", "25")

    # Per-label suggestions (issue 15): a chip per trusted change, "+Class (0.91)",
    # and "doubtful, no suggestion" for the other flagged labels.
    with open(report_run / "issues.csv", encoding="utf-8", newline="") as fh:
        issue_rows = list(csv.DictReader(fh))
    changed_id = next(r["id"] for r in issue_rows if r["label_changes"])
    doubtful_id = next(r["id"] for r in issue_rows if r["doubtful_labels"])
    page.fill("#f-id", changed_id)
    chips = w.js(
        "[...document.querySelectorAll('#issue-body .chip.add:not(.doubt), "
        "#issue-body .chip.del:not(.doubt)')].map(c => c.textContent)"
    )
    assert chips and all(re.fullmatch(r"[+-].+ \(\d\.\d\d\)", c) for c in chips), chips
    page.fill("#f-id", doubtful_id)
    assert "doubtful, no suggestion" in w.js("document.querySelector('#issue-body tr').textContent")
    # each doubtful label says which way the evidence points, and the model's p
    doubts = w.js(
        "[...document.querySelectorAll('#issue-body .chip.doubt')].map(c => c.textContent)"
    )
    row = next(r for r in issue_rows if r["id"] == doubtful_id)
    signs = [part.strip()[0] for part in row["doubtful_labels"].split(";")]
    assert [d[0] for d in doubts] == signs, (doubts, row["doubtful_labels"])
    assert all(re.fullmatch(r"[+-].+\? \(p=\d\.\d\d\)", d) for d in doubts), doubts
    page.locator("#issue-body tr").first.click()  # the class picker marks them too
    page.wait_for_function("!document.getElementById('detail').hidden")
    marks = w.js(
        "[...document.querySelectorAll('#picker-body td.sugg.doubt')].map(c => c.textContent)"
    )
    assert sorted(m[-1] for m in marks) == ["?"] * len(signs), marks
    page.keyboard.press("Escape")
    page.fill("#f-id", "")

    # Detail view: composite, four channels and the probability chart.
    page.locator("#issue-body tr").first.click()
    page.wait_for_function("document.querySelectorAll('#detail-channels canvas').length === 4")
    page.wait_for_function("document.querySelector('#detail-probs svg.main-svg') !== null")
    assert page.locator("#detail").is_visible()
    assert page.locator("#detail-title").text_content() == first
    assert page.locator("#detail-composite").is_visible()
    bars = w.js("document.querySelectorAll('#detail-probs .point').length")
    assert bars == 19

    # Keyboard review: g keeps, r rejects (each moves on), Esc closes.
    page.keyboard.press("g")  # keeps the first row's labels and moves to the second
    second = page.locator("#detail-title").text_content()
    assert second != first
    page.keyboard.press("r")
    # The detail view's buttons do as the keys: a decision moves on; pressing the
    # decision taken undoes it and stays.
    third = page.locator("#detail-title").text_content()
    page.locator("#detail-keep").click()
    assert page.locator("#detail-title").text_content() not in (third, second, first)
    assert page.locator("#decided").text_content().startswith("reviewed 3 of 60: 2 kept")
    page.locator("#detail-prev").click()
    page.locator("#detail-keep").click()  # kept already: undone, and the view stays
    assert page.locator("#detail-title").text_content() == third
    page.keyboard.press("Escape")
    assert not page.locator("#detail").is_visible()
    reviewed = "reviewed 2 of 60: 1 kept, 0 accepted, 0 edited, 1 rejected"
    assert page.locator("#decided").text_content() == reviewed

    # Export: id, decision, labels (the labels to apply, dataset notation).
    with page.expect_download() as info:
        page.locator("#export").click()
    path = tmp_path / "decisions.csv"
    info.value.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["decision"] for r in rows] == ["keep", "reject"]
    data = w.js("JSON.parse(document.getElementById('report-data').textContent)")
    by_id = {r["id"]: r for r in data["rows"]}
    for row in data["rows"]:  # accept applies the given labels plus the trusted changes
        want = set(row["given"]) | {k for k, sign, _ in row["changed"] if sign == "+"}
        assert set(row["suggested"]) == want - {k for k, sign, _ in row["changed"] if sign == "-"}
    for r in rows:  # keep: the given labels; reject: none (the image is left out)
        expect = by_id[r["id"]]["given"] if r["decision"] == "keep" else []
        assert r["labels"] == "|".join(data["tokens"][k] for k in expect)

    # Decisions survive a reload (localStorage, keyed by run).
    w.load()
    assert page.locator("#decided").text_content() == reviewed
    page.select_option("#f-decision", value="keep")
    assert visible_rows(w) == [first]
    w.check_clean()
    w.context.close()


@pytest.mark.slow
def test_hostile_names_stay_text(browser, hostile_run: Path) -> None:
    w = Watched(browser, write_report(hostile_run))
    page = w.page
    w.load()
    assert w.js("document.querySelectorAll('img[src=\"x\"]').length") == 0

    # Table: the id cell and the class chips hold the literal string.
    page.fill("#f-id", "onerror")
    assert visible_rows(w) == [HOSTILE]
    page.fill("#f-id", "")
    options = w.js("[...document.querySelectorAll('#f-class option')].map(o => o.textContent)")
    assert HOSTILE in options
    page.select_option("#f-class", label=HOSTILE)
    chips = w.js("[...document.querySelectorAll('#issue-body .chip')].map(c => c.textContent)")
    assert HOSTILE in chips
    page.select_option("#f-class", value="")

    # Plots: axis labels and native hover text.
    ticks = w.js(
        "[...document.querySelectorAll('.xtick text, .ytick text')].map(t => t.textContent)"
    )
    assert HOSTILE in ticks
    k = w.js("JSON.parse(document.getElementById('report-data').textContent).classes")
    k, n = k.index(HOSTILE), len(k)
    drag = page.locator('[data-fig="fig-cooccurrence"] .nsewdrag').first
    drag.scroll_into_view_if_needed()
    box = drag.bounding_box()
    page.mouse.move(
        box["x"] + box["width"] * (k + 0.5) / n, box["y"] + box["height"] * (k + 0.5) / n
    )
    page.wait_for_function(
        "document.querySelector('[data-fig=\"fig-cooccurrence\"] .hoverlayer').textContent !== ''"
    )
    hover = w.js(
        "document.querySelector('[data-fig=\"fig-cooccurrence\"] .hoverlayer').textContent"
    )
    assert HOSTILE in hover

    # Embedding map: the page's hover card shows the id as text.
    emb = page.locator('[data-role="embedding"]')
    emb.scroll_into_view_if_needed()
    xy = w.js(
        """(id) => {
        const gd = document.querySelector('[data-role="embedding"]');
        const rows = JSON.parse(document.getElementById('report-data').textContent).rows;
        const r = rows.findIndex(row => row.id === id);
        const box = gd.getBoundingClientRect(), L = gd._fullLayout;
        for (const t of gd._fullData) {
            if (t.visible !== true) continue;
            const p = Array.from(t.customdata).indexOf(r);
            if (p >= 0) return [box.left + L.xaxis._offset + L.xaxis.l2p(t.x[p]),
                                box.top + L.yaxis._offset + L.yaxis.l2p(t.y[p])];
        }
        return null;
    }""",
        HOSTILE,
    )
    page.mouse.move(*xy)
    page.wait_for_function("!document.getElementById('hovercard').hidden")
    card = page.locator("#hovercard .hc-id").text_content()
    assert card == HOSTILE

    # Detail view: title and the probability chart's class axis.
    page.fill("#f-id", "onerror")
    page.locator("#issue-body tr").first.click()
    page.wait_for_function("document.querySelector('#detail-probs svg.main-svg') !== null")
    assert page.locator("#detail-title").text_content() == HOSTILE
    detail_ticks = w.js(
        "[...document.querySelectorAll('#detail-probs .xtick text')].map(t => t.textContent)"
    )
    assert HOSTILE in detail_ticks
    assert w.js("document.querySelectorAll('img[src=\"x\"]').length") == 0
    w.check_clean()
    w.context.close()


def _page_rows(w: Watched) -> tuple[dict, list[dict]]:
    data = w.js("JSON.parse(document.getElementById('report-data').textContent)")
    return data, data["rows"]


def _open(w: Watched, image_id: str) -> None:
    if w.page.locator("#detail").is_visible():
        w.page.keyboard.press("Escape")
    w.page.fill("#f-id", image_id)
    w.page.locator("#issue-body tr").first.click()
    w.page.wait_for_function("document.querySelector('#detail-probs svg.main-svg') !== null")
    assert w.page.locator("#detail-title").text_content() == image_id


def _picked(w: Watched) -> list[int]:
    return w.js(
        "[...document.querySelectorAll('#picker-body button.pick')]"
        ".flatMap((b, k) => b.getAttribute('aria-pressed') === 'true' ? [k] : [])"
    )


@pytest.mark.slow
def test_a_whole_review(browser, report_run: Path, tmp_path: Path) -> None:
    """Edit one row, accept one, keep one, reject one; export; import the export into a
    fresh browser; ``clean --decisions``: the cleaned labels are exactly the decisions."""
    from labelaudit.core.errors import DatasetError
    from labelaudit.core.io import read_json
    from labelaudit.data.layouts import load_dataset
    from labelaudit.pipeline.clean import clean

    run = tmp_path / "run"
    shutil.copytree(report_run, run, ignore=shutil.ignore_patterns("report.html", "*.lock"))
    # HPA 2021: Negative stands alone (data/roles.py)
    assert "Negative" in read_json(run / "run.json")["dataset"]["roles"]["exclusive_classes"]
    issues = list(csv.DictReader(io.StringIO((run / "issues.csv").read_text())))
    changed = [r["id"] for r in issues if r["given_labels"] != r["suggested_labels"]]
    same = [r["id"] for r in issues if r["given_labels"] == r["suggested_labels"]]
    accept_id, (edit_id, keep_id, reject_id) = changed[0], same[:3]
    # A given label the model puts at p = 0: its bar must still show.
    oof = list(csv.reader(io.StringIO((run / "oof_probs.csv").read_text())))
    given_of = {r["id"]: r["given_labels"].split("|") for r in issues}
    names = oof[0][1:]
    zero = int(given_of[edit_id][0])
    for line in oof[1:]:
        if line[0] == edit_id:
            line[1 + zero] = "0.0"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(oof)
    (run / "oof_probs.csv").write_text(buf.getvalue())

    w = Watched(browser, write_report(run), width=1400)
    page = w.page
    w.load()
    data, rows = _page_rows(w)
    by_id = {r["id"]: r for r in rows}
    assert data["exclusive"] == [names.index("Negative")]

    # At 1400 px the review list fits: the evidence and decision columns are not cut off.
    fit = w.js(
        """() => {
        const wrap = document.querySelector('#issues .table-wrap').getBoundingClientRect();
        const cells = [...document.querySelectorAll(
            '#issue-body td.evidence, #issue-body td.decision')];
        return [document.querySelector('#issue-table').scrollWidth
                <= document.querySelector('#issues .table-wrap').clientWidth,
                cells.length > 0
                && cells.every(td => td.getBoundingClientRect().right <= wrap.right)];
    }"""
    )
    assert fit == [True, True]

    # The edited row: given / suggested / decided side by side, stains named by the
    # dataset (HPA), a visible bar for the given label at p = 0.
    _open(w, edit_id)
    given = by_id[edit_id]["given"]
    ticks = w.js(
        "[...document.querySelectorAll('#picker-body tr')].map(tr => "
        "[tr.children[1].textContent, tr.children[2].textContent])"
    )
    assert [k for k, (g, _) in enumerate(ticks) if g] == given
    assert _picked(w) == given  # undecided: the given labels
    captions = w.js(
        "[...document.querySelectorAll('#detail-channels figcaption')].map(f => f.textContent)"
    )
    assert captions == ["red (microtubules)", "green (protein)", "blue (nucleus)", "yellow (ER)"]
    bar = w.js(
        "(k) => { const t = document.getElementById('detail-probs').data[0]; "
        "return [t.y[k], t.customdata[k][0]]; }",
        zero,
    )
    assert bar[1] == "0.000" and bar[0] >= 0.02
    # No suggestion here: "a" changes nothing and says so.
    page.keyboard.press("a")
    assert "no suggestion to accept" in page.locator("#detail-msg").text_content()
    assert page.locator("#decided").text_content().startswith("reviewed 0 of 60")
    # The picker by keyboard: e focuses it, arrows move, Space toggles. Negative is
    # exclusive: switching it on clears the rest, switching another class on clears it.
    negative = names.index("Negative")
    page.keyboard.press("e")
    for _ in range(negative):
        page.keyboard.press("ArrowDown")
    page.keyboard.press("Space")
    assert _picked(w) == [negative]
    extra = next(k for k in range(len(names)) if k not in given and k != negative)
    page.locator(f"#picker-body button.pick[data-k='{extra}']").click()
    assert _picked(w) == [extra]
    page.locator(f"#picker-body button.pick[data-k='{given[0]}']").click()
    edited = sorted({extra, given[0]})
    assert _picked(w) == edited
    assert page.locator("#detail-decision").text_content().startswith("edited: ")
    shoot(page, "detail")
    page.keyboard.press("Escape")

    _open(w, accept_id)
    page.keyboard.press("a")
    _open(w, keep_id)
    page.keyboard.press("g")
    _open(w, reject_id)
    page.keyboard.press("r")
    page.keyboard.press("Escape")
    page.fill("#f-id", "")
    reviewed = "reviewed 4 of 60: 1 kept, 1 accepted, 1 edited, 1 rejected"
    assert page.locator("#decided").text_content() == reviewed
    shoot(page, "issues", "#issues", max_height=1100)

    with page.expect_download() as info:
        page.locator("#export").click()
    path = tmp_path / "decisions.csv"
    info.value.save_as(path)
    exported = path.read_text()
    tok = data["tokens"]
    want = {
        edit_id: ("edit", edited),
        accept_id: ("accept", by_id[accept_id]["suggested"]),
        keep_id: ("keep", by_id[keep_id]["given"]),
        reject_id: ("reject", []),
    }
    got = {r["id"]: (r["decision"], r["labels"]) for r in csv.DictReader(io.StringIO(exported))}
    assert got == {i: (d, "|".join(tok[k] for k in labs)) for i, (d, labs) in want.items()}

    # Reload: the decisions are still there. Another browser (no stored decisions)
    # imports the export and has the same review.
    w.load()
    assert page.locator("#decided").text_content() == reviewed
    w.check_clean()
    w.context.close()
    other = Watched(browser, run / "report.html", width=1400)
    other.load()
    assert other.page.locator("#decided").text_content().startswith("reviewed 0 of 60")
    # A page from before keep/edit stored [id, accept|reject]; its reject kept the given
    # labels (keep now), and an accept without a suggestion is dropped.
    other.js(
        "([a, b]) => localStorage.setItem('labelaudit:decisions:' + JSON.parse("
        "document.getElementById('report-data').textContent).runKey, "
        "JSON.stringify([[a, 'reject'], [b, 'accept']]))",
        [keep_id, edit_id],
    )
    other.load()
    assert other.page.locator("#decided").text_content() == (
        "reviewed 1 of 60: 1 kept, 0 accepted, 0 edited, 0 rejected"
    )
    other.page.set_input_files("#import-file", str(path))
    other.page.wait_for_function(
        "document.getElementById('decided').textContent.startsWith('reviewed 4')"
    )
    assert other.page.locator("#decided").text_content() == reviewed
    assert "loaded 4 decisions" in other.page.locator("#review-msg").text_content()
    assert other.js("window.labelaudit.decisionsCsv()") == exported
    # A file that does not fit the run: its bad rows are named and skipped.
    bad = tmp_path / "bad.csv"
    bad.write_text(f"id,decision,labels\nnope,keep,\n{keep_id},accept,\n")
    other.page.set_input_files("#import-file", str(bad))
    other.page.wait_for_function(
        "document.getElementById('review-msg').textContent.includes('bad.csv')"
    )
    msg = other.page.locator("#review-msg").text_content()
    assert "loaded 0 decisions" in msg and "line 2: unknown image id" in msg
    assert "line 3: no suggestion to accept" in msg
    assert other.page.locator("#decided").text_content() == reviewed
    # keep and accept with the labels cell left empty, as clean and docs/cleaning.md take them
    short = tmp_path / "short.csv"
    short.write_text(f"id,decision,labels\n{keep_id},keep,\n{accept_id},accept,\n")
    other.page.set_input_files("#import-file", str(short))
    other.page.wait_for_function(
        "document.getElementById('review-msg').textContent.includes('short.csv')"
    )
    assert "loaded 2 decisions from short.csv" == other.page.locator("#review-msg").text_content()
    assert other.page.locator("#decided").text_content() == reviewed
    other.check_clean()
    other.context.close()

    # clean --decisions: exactly the decided labels, nothing else. Given sets that join
    # Negative with another class (the real HPA label sample has some) must be decided
    # too: without a policy, clean refuses to keep them or to change them on its own.
    conflicts = [
        r["id"]
        for r in rows
        if negative in r["given"] and len(r["given"]) > 1 and r["id"] not in want
    ]
    if conflicts:
        with pytest.raises(DatasetError, match="does not decide join an exclusive class"):
            clean(run, decisions=path)
        assert not (run / "cleaned").exists()
        with path.open("a") as fh:
            fh.writelines(f"{i},reject,\n" for i in conflicts)
        want.update({i: ("reject", []) for i in conflicts})
    result = clean(run, decisions=path)
    assert set(result.changes["made_by"]) == {"person"}
    ds = load_dataset(run / "cleaned")
    cleaned = {i: np.flatnonzero(row).tolist() for i, row in zip(ds.ids, ds.labels, strict=True)}
    expect = {r["id"]: r["given"] for r in rows}
    expect.update({i: labs for i, (d, labs) in want.items()})
    for i, (d, _) in want.items():
        if d == "reject":
            del expect[i]
    assert cleaned == expect
