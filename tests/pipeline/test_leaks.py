"""Images shared between two datasets (labelaudit leaks) and a run's duplicates."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
from la_copies import COPIES, two_datasets
from la_runfixture import make_run
from la_testutils import snapshot
from PIL import Image

from labelaudit.data.cache import build_cache
from labelaudit.data.classes import HPA_CHANNELS
from labelaudit.data.layouts import load_dataset
from labelaudit.pipeline.leaks import add_duplicates, find_leaks
from labelaudit.rundir import RunDir, read_run


def test_leaks_lists_copies_of_a_in_b_exact_shifted_cropped_and_reencoded(tmp_path):
    a, b, ta = two_datasets(tmp_path)
    ids_a = ta["ID"]
    before = snapshot(a), snapshot(b)
    res = find_leaks(a, b, out=tmp_path / "leaks.csv", cache_dir=tmp_path / "cache")
    assert (res.n_a, res.n_b) == (10, 11)
    got = res.pairs.set_index("id_b")
    assert sorted(got.index) == sorted(COPIES)  # each copy once; same-class is no copy
    for name, (_, row) in COPIES.items():
        assert got.loc[name, "id_a"] == ids_a[row], name
        assert got.loc[name, "correlation"] >= got.loc[name, "threshold"], name
    assert got.loc["copy-exact", "evidence"].split(";")[0] == "exact"
    assert got.loc["copy-exact", "phash_distance"] == 0
    assert got.loc["copy-near", "evidence"] == "neighbour"
    assert got.loc["copy-crop", "scale"] > 1.02  # seen as a zoomed-in view
    assert res.low_information == []
    written = pd.read_csv(tmp_path / "leaks.csv", dtype=str)
    assert sorted(written["id_b"]) == sorted(COPIES)
    assert {"correlation", "shift_y", "shift_x", "scale"} <= set(written.columns)
    assert (snapshot(a), snapshot(b)) == before  # inputs untouched


def test_leaks_cli_prints_the_pairs_and_refuses_an_output_inside_an_input(tmp_path, run_cli):
    a, b, _ = two_datasets(tmp_path)
    code, out, err = run_cli("leaks", a, b)
    assert code == 0, err
    assert "copy-exact" in out and "copy-jpeg" in out and "same-class" not in out
    assert "4 of 11 images" in " ".join(out.split())
    code, out, err = run_cli("leaks", a, b, "--out", a / "leaks.csv")
    assert code == 2
    assert len((out + err).strip().splitlines()) == 1 and "leaks file" in out + err
    assert not (a / "leaks.csv").exists()


def test_add_duplicates_writes_columns_findings_and_pairs_into_the_run(make_hpa, tmp_path):
    dataset = make_hpa(n=8, size=32, labels=["1", "2", "3", "4", "5", "6", "3", "8"])
    for c in HPA_CHANNELS:  # field006 becomes an exact copy of field002 (same label 3)
        shutil.copy(
            dataset / "train" / f"field002_{c}.png", dataset / "train" / f"field006_{c}.png"
        )
    for c in HPA_CHANNELS:  # field001 an exact copy of field000, with another label
        shutil.copy(
            dataset / "train" / f"field000_{c}.png", dataset / "train" / f"field001_{c}.png"
        )
    run = make_run(tmp_path, dataset)
    RunDir(run).write_section("detect", {"n_images": 8})
    cache = build_cache(load_dataset(dataset), 32, tmp_path / "cache")
    dups = add_duplicates(run, cache=cache)
    assert dups.summary["n_groups"] == 2 and dups.summary["n_conflict_groups"] == 1
    issues = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False).set_index("id")
    assert issues.loc["field001", "duplicate_of"] == "field000"
    assert issues.loc["field006", "duplicate_of"] == "field002"
    assert issues.loc["field000", "duplicate_group"] == issues.loc["field001", "duplicate_group"]
    assert issues.loc["field003", "duplicate_group"] == ""
    assert issues.loc["field000", "duplicate_conflict"] == "1;2"
    assert issues.loc["field006", "duplicate_conflict"] == ""
    findings = pd.read_csv(run / "findings.csv", dtype=str, keep_default_na=False)
    mine = findings[findings["detector"] == "duplicates"]
    assert sorted(mine["id"]) == ["field000", "field000", "field001", "field001"]
    assert set(mine["suggestion"]) == {"review"}
    assert (findings["detector"] != "duplicates").sum() > 0  # the others are kept
    pairs = pd.read_csv(run / "duplicates.csv", dtype=str)
    assert set(pairs["evidence"].str.split(";").str[0]) == {"exact"}
    assert read_run(run)["detect"]["duplicates"]["n_pairs"] == 2
    add_duplicates(run, cache=cache)  # again: replaced, not repeated
    again = pd.read_csv(run / "findings.csv", dtype=str, keep_default_na=False)
    assert (again["detector"] == "duplicates").sum() == 4


def test_bench_scores_planted_duplicate_pairs(tmp_path):
    from labelaudit.pipeline.bench import duplicate_bench, read_truth

    truth_csv = tmp_path / "truth.csv"
    truth_csv.write_text(
        "ID,true_label,given_label,noise,duplicate_of\n"
        "a,1,1,none,\nb,2,2,none,\nc,3,3,none,\nd,4,4,none,\n"
        "a2,1,1,duplicate,a\nb2,2,5,duplicate_conflict,b\n"
    )
    truth = read_truth(truth_csv)
    assert truth["noise"].iloc[5] == frozenset({"duplicate_conflict"})
    # found: a+a2 (right), b+b2 missed, c+d (wrong); b2's conflict not seen
    issues = pd.DataFrame(
        {
            "duplicate_group": ["0", "", "1", "1", "0", ""],
            "duplicate_conflict": ["", "", "", "", "", ""],
        }
    )
    got = duplicate_bench(truth, issues)
    assert (got["n_planted_pairs"], got["n_found_pairs"]) == (2, 2)
    assert got["recall"] == 0.5 and got["precision"] == 0.5
    assert got["conflicts_found"] == 0.0


def test_report_shows_duplicate_groups_side_by_side_with_their_labels(make_hpa, tmp_path):
    from labelaudit.report import write_report

    dataset = make_hpa(n=6, size=32, labels=["1", "2", "3", "4", "5", "6"])
    for c in HPA_CHANNELS:  # field001 an exact copy of field000, with another label
        shutil.copy(
            dataset / "train" / f"field000_{c}.png", dataset / "train" / f"field001_{c}.png"
        )
    run = make_run(tmp_path, dataset)
    RunDir(run).write_section("detect", {"n_images": 6})
    add_duplicates(run, cache=build_cache(load_dataset(dataset), 32, tmp_path / "cache"))
    page = write_report(run).read_text(encoding="utf-8")
    section = page[page.index('<section id="duplicates">') :]
    section = section[: section.index("</section>")]
    # class names, not ids (HPA 2021: 1 = Nuclear membrane, 2 = Nucleoli)
    assert "labels disagree on Nuclear membrane, Nucleoli" in section
    assert "<code>field000</code><br>given Nuclear membrane" in section
    assert "<code>field001</code><br>given Nucleoli<br>copy of <code>field000</code>" in section
    assert section.count('class="thumb"') == 2  # both images shown


def test_images_too_empty_to_verify_become_low_information_quality_findings(make_hpa, tmp_path):
    dataset = make_hpa(n=8, size=32, labels=["1", "2", "3", "4", "5", "6", "7", "8"])
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    vignette = 10 - 5 * (((yy - 16) ** 2 + (xx - 16) ** 2) / 16**2)
    for field in ("field003", "field005"):  # dark, faintly noisy, no structure
        for c in HPA_CHANNELS:
            raw = np.clip(np.rint(vignette + rng.normal(0, 0.3, (32, 32))), 0, 255)
            Image.fromarray(raw.astype(np.uint8)).save(dataset / "train" / f"{field}_{c}.png")
    run = make_run(tmp_path, dataset)
    RunDir(run).write_section("detect", {"n_images": 8})
    cache = build_cache(load_dataset(dataset), 32, tmp_path / "cache")
    dups = add_duplicates(run, cache=cache)
    assert dups.summary["n_pairs"] == 0 and dups.summary["n_low_information"] == 2
    findings = pd.read_csv(run / "findings.csv", dtype=str, keep_default_na=False)
    low = findings[findings["class"] == "low_information:pixels"]
    assert sorted(low["id"]) == ["field003", "field005"]
    assert set(low["detector"]) == {"quality"} and set(low["flagged"]) == {"True"}
    assert (low["score"].astype(float) >= 1).all()
    issues = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False).set_index("id")
    assert "low_information:pixels" in issues.loc["field003", "quality_issues"]
    assert "low_information:pixels" not in issues.loc["field000", "quality_issues"]
    add_duplicates(run, cache=cache)  # again: replaced, not repeated
    again = pd.read_csv(run / "findings.csv", dtype=str, keep_default_na=False)
    assert (again["class"] == "low_information:pixels").sum() == 2
    issues = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False).set_index("id")
    assert issues.loc["field003", "quality_issues"].count("low_information:pixels") == 1
