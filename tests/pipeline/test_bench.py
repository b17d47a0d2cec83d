"""Bench: metrics against ground truth equal scikit-learn's on the same arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from labelaudit.core.errors import DatasetError, RunDirError
from labelaudit.core.io import read_json
from labelaudit.pipeline.bench import bench, format_bench_table, precision_at_t, score_metrics
from labelaudit.pipeline.compare import detect_and_compare
from labelaudit.synth.audit import make_audit

NOISE = ["none", "missing", "dim", "none", "extra;blur", "swap", "none", "saturated", "none",
         "artifact", "none", "missing;dim"]  # fmt: skip


def write_run(run_dir, n=len(NOISE), seed=0):
    """A hand-made issues.csv with random scores, and the truth for it."""
    rng = np.random.default_rng(seed)
    ids = [f"{i:04d}" for i in range(n)]  # leading zeros must survive
    flagged_by = [
        ";".join(m for m in ("confident", "isolation", "intensity") if rng.random() < 0.4)
        for _ in range(n)
    ]
    issues = pd.DataFrame(
        {
            "id": ids,
            "given_labels": ["1|2"] * n,
            "suggested_labels": ["1|2"] * n,
            "label_quality": rng.random(n),
            "outlier_score": rng.random(n),
            "intensity_z": np.round(rng.random(n) * 4, 0),  # ties
            "flagged_by": flagged_by,
            "n_flags": [len([x for x in s.split(";") if x]) for s in flagged_by],
            "consensus_score": rng.random(n),
            "consensus_flag": rng.random(n) < 0.3,
        }
    ).iloc[::-1]  # a different order than the truth file
    issues.to_csv(run_dir / "issues.csv", index=False)
    truth = pd.DataFrame(
        {"ID": ids, "true_label": ["1"] * n, "given_label": ["2|1"] * n, "noise": NOISE[:n]}
    )
    truth.to_csv(run_dir / "truth.csv", index=False)
    return issues.iloc[::-1].reset_index(drop=True), truth


def test_metrics_equal_sklearn(tmp_path):
    issues, truth = write_run(tmp_path)
    result = bench(tmp_path, tmp_path / "truth.csv")
    assert (tmp_path / "bench.json").exists()
    assert read_json(tmp_path / "bench.json")["metrics"].keys() == result["metrics"].keys()
    noise = truth["noise"]
    clean = (noise == "none").to_numpy()
    groups = {
        "any": ~clean,
        "label": noise.str.contains("missing|extra|swap").to_numpy(),
        "image": noise.str.contains("dim|saturated|blur|artifact").to_numpy(),
        "dim": noise.str.contains("dim").to_numpy(),
        "missing": noise.str.contains("missing").to_numpy(),
    }
    scores = {
        "confident": 1 - issues["label_quality"].to_numpy(),
        "isolation": issues["outlier_score"].to_numpy(),
        "intensity": issues["intensity_z"].to_numpy(),
        "consensus": issues["consensus_score"].to_numpy(),
    }
    for det, score in scores.items():
        if det == "consensus":
            flags = issues["consensus_flag"].to_numpy()
        else:
            flags = issues["flagged_by"].str.contains(det).to_numpy()
        for group, pos in groups.items():
            keep = pos | clean
            m = result["metrics"][det][group]
            assert m["n_pos"] == pos.sum() and m["n_neg"] == clean.sum()
            assert m["auroc"] == pytest.approx(roc_auc_score(pos[keep], score[keep]))
            assert m["ap"] == pytest.approx(average_precision_score(pos[keep], score[keep]))
            assert m["recall_at_flag"] == pytest.approx(flags[pos].mean())
    assert result["noise_counts"] == {
        "none": 5, "missing": 2, "extra": 1, "swap": 1, "dim": 2, "saturated": 1, "blur": 1,
        "artifact": 1,
    }  # fmt: skip
    assert result["given_label_mismatches"] == 0  # "2|1" and "1|2" are the same set


def test_precision_at_t():
    y = np.array([1, 1, 0, 0, 0], bool)
    assert precision_at_t(y, np.array([0.9, 0.8, 0.7, 0.1, 0.0]), 2) == 1.0
    assert precision_at_t(y, np.array([0.9, 0.1, 0.8, 0.0, 0.0]), 2) == 0.5
    # All tied: the expected precision of a random pick is the positive rate.
    assert precision_at_t(y, np.zeros(5), 2) == pytest.approx(0.4)


def test_degenerate_groups_give_none_not_nan():
    m = score_metrics(np.zeros(4, bool), np.arange(4.0), np.zeros(4, bool))
    assert m["auroc"] is None and m["ap"] is None and m["recall_at_flag"] is None
    m = score_metrics(np.ones(3, bool), np.arange(3.0), np.ones(3, bool))
    assert m["auroc"] is None and m["ap"] == 1.0 and m["precision_at_flag"] == 1.0


def test_end_to_end_with_detectors(tmp_path):
    synth = make_audit(400, 5, 16, label_noise=0.1, image_noise=0.05, seed=4)
    detect_and_compare(synth.inputs, tmp_path, params={"isolation": {"n_estimators": 30}})
    synth.truth_frame().to_csv(tmp_path / "truth.csv", index=False)
    result = bench(tmp_path, tmp_path / "truth.csv")
    assert result["metrics"]["confident"]["label"]["auroc"] > 0.9
    assert result["metrics"]["isolation"]["image"]["auroc"] > 0.9
    table = format_bench_table(result)
    assert "AUROC" in table and "consensus" in table and "saturated" in table
    assert "nan" not in table.lower()
    # issue 27: the combined label evidence and the label order have a row per kind of
    # label noise, each scored against the clean images
    for det in ("combined", "label order"):
        for kind in ("label", "missing", "extra", "swap"):
            m = result["metrics"][det][kind]
            assert m["n_pos"] > 0 and m["auroc"] is not None
            lines = table.splitlines()
            assert any(line.startswith(det) and f" {kind} " in line for line in lines)
    assert result["metrics"]["combined"]["label"]["auroc"] > 0.9


def test_skipped_detector(tmp_path):
    write_run(tmp_path)
    issues = pd.read_csv(tmp_path / "issues.csv", dtype=str)
    issues["outlier_score"] = ""
    issues.to_csv(tmp_path / "issues.csv", index=False)
    result = bench(tmp_path, tmp_path / "truth.csv", write=False)
    assert result["skipped"] == ["isolation"] and "isolation" not in result["metrics"]
    assert "not in this run: isolation" in format_bench_table(result)


def test_bad_truth_files(tmp_path):
    write_run(tmp_path)
    truth = tmp_path / "truth.csv"
    good = truth.read_text().splitlines()

    truth.write_text("ID,noise\n0000,none\n")
    with pytest.raises(DatasetError, match=r"truth.csv, line 1: .*true_label, given_label"):
        bench(tmp_path, truth)

    truth.write_text("\n".join(good[:3] + ["9999,1,1,none"]) + "\n")
    with pytest.raises(
        DatasetError, match=r"truth.csv, line 4: image '9999': ID is not in the run"
    ):
        bench(tmp_path, truth)

    truth.write_text("\n".join(good[:2] + ["0001,1,1,missing;smudge"]) + "\n")
    with pytest.raises(DatasetError, match=r"line 3: .*unknown noise type 'smudge'"):
        bench(tmp_path, truth)

    truth.write_text("\n".join(good[:3] + [good[2]]) + "\n")
    with pytest.raises(DatasetError, match=r"line 4: .*duplicate ID"):
        bench(tmp_path, truth)

    truth.write_text("\n".join(good[:2] + ["0001,1,1,"]) + "\n")
    with pytest.raises(DatasetError, match=r"line 3: .*empty noise"):
        bench(tmp_path, truth)

    with pytest.raises(DatasetError, match="not found"):
        bench(tmp_path, tmp_path / "nope.csv")
    assert not (tmp_path / "bench.json").exists()

    # with the run's classes known (run.json), a label that is none of them is refused,
    # as retrain --truth refuses it (found by an ML engineer's test: bench scored it)
    from labelaudit.core.io import update_run_json

    update_run_json(
        tmp_path, "dataset", {"class_names": ["a", "b", "c"], "class_tokens": ["0", "1", "2"]}
    )
    for label, column in (("99", "true_label"), ("1;2", "true_label")):
        truth.write_text("\n".join(good[:2] + [f"0001,{label},1,none"]) + "\n")
        with pytest.raises(DatasetError, match=rf"line 3: image '0001': {column}: unknown label"):
            bench(tmp_path, truth)
    truth.write_text("\n".join(good[:2] + ["0001,1,7,none"]) + "\n")
    with pytest.raises(DatasetError, match=r"line 3: image '0001': given_label: unknown label"):
        bench(tmp_path, truth)
    truth.write_text("\n".join(good) + "\n")
    assert bench(tmp_path, truth)["n_images"] == len(good) - 1


def test_missing_issues(tmp_path):
    with pytest.raises(RunDirError, match="issues.csv"):
        bench(tmp_path, tmp_path / "truth.csv")


def test_suggestion_and_cleaning_bench(tmp_path):
    """Precision of suggested changes per label and per image, errors before/after."""
    ids = ["a", "b", "c", "d"]
    issues = pd.DataFrame(
        {
            "id": ids,
            "given_labels": ["1|2", "3", "4", "5"],
            "suggested_labels": ["1", "3|6", "4|7", "5"],  # a: right; b: 1 of 2; c: wrong
            "label_quality": [0.1, 0.2, 0.3, 0.9],
            "outlier_score": [0.1] * 4,
            "intensity_z": [0.0] * 4,
            "flagged_by": ["confident"] * 3 + [""],
            "n_flags": [1, 1, 1, 0],
            "consensus_score": [0.5] * 4,
            "consensus_flag": [False] * 4,
        }
    )
    issues.to_csv(tmp_path / "issues.csv", index=False)
    truth = pd.DataFrame(
        {
            "ID": ids,
            "true_label": ["1", "6", "4", "5|8"],  # b: 3 is wrong too (not suggested)
            "given_label": ["1|2", "3", "4", "5"],
            "noise": ["extra", "swap", "none", "missing"],
        }
    )
    truth.to_csv(tmp_path / "truth.csv", index=False)
    pd.DataFrame(
        {
            "id": ["b", "d"],
            "action": ["relabel", "remove"],
            "old_labels": ["3", "5"],
            "new_labels": ["6", ""],
            "reason": ["x", "y"],
            "detail": ["", ""],
        }
    ).to_csv(tmp_path / "changes.csv", index=False)
    result = bench(tmp_path, tmp_path / "truth.csv", write=False)
    s = result["suggestions"]
    # changes: a -2 (right), b +6 (right), c +7 (wrong): 2 of 3; images: a right only.
    assert (s["n_changes"], s["n_right"]) == (3, 2)
    assert s["precision"] == pytest.approx(2 / 3)
    assert (s["n_images"], s["n_images_right"]) == (3, 1)
    # every change right: a (-2) yes, b (+6, but 3 stays) yes, c (+7) no
    assert s["n_images_all_right"] == 2 and s["image_change_precision"] == pytest.approx(2 / 3)
    # errors: given a 1, b 2, c 0, d 1 = 4; accepted: a 0, b 1, c 1, d 1 = 3
    assert (s["errors_given"], s["errors_accepted"]) == (4, 3)
    c = result["cleaning"]
    # kept: a 1 (unchanged), b 0 (relabelled to the truth), c 0; d removed with 1 error
    assert c == {
        "errors_given": 4,
        "errors_after": 1,
        "n_removed": 1,
        "errors_removed": 1,
        "n_relabelled": 1,
    }
    text = format_bench_table(result)
    assert "suggested label changes: 3, right 2 (precision 0.667)" in text
    assert "after accepting every suggestion 3" in text
    assert "label errors after the run's cleaning: 1 in the kept images" in text


def test_weighted_errors_and_the_retrain_change(tmp_path):
    """Soft cleaning's weighted errors, and the last retrain's F1 change with its interval."""
    from labelaudit.pipeline.bench import cleaning_bench, retrain_bench

    truth = pd.DataFrame(
        {
            "ID": ["a", "b", "c"],
            "true_label": ["1", "6", "4"],
            "given_label": ["1|2", "3", "4"],
            "noise": ["extra", "swap", "none"],
        }
    )
    changes = tmp_path / "changes.csv"
    pd.DataFrame(columns=["id", "action", "old_labels", "new_labels", "reason", "detail"]).to_csv(
        changes, index=False
    )
    # a's wrong 2 weighs 0.25; b's wrong 3 and missing 6 weigh 0.5 and 1 (no entry).
    weights = {"a": {"1": 1.0, "2": 0.25}, "b": {"3": 0.5}}
    c = cleaning_bench(truth, changes, weights)
    assert c["errors_after"] == 3 and c["weighted_errors_after"] == pytest.approx(1.75)
    assert "weighted_errors_after" not in cleaning_bench(truth, changes)

    assert retrain_bench(tmp_path) is None
    from labelaudit.core.io import update_run_json

    update_run_json(tmp_path, "retrain", {"config": {"policy": "soft"}})  # retrained here
    (tmp_path / "retrain").mkdir()
    ci = {"mean": 0.05, "low": 0.01, "high": 0.09, "n": 80, "level": 0.95}
    metrics = {
        "before": {"macro_f1_true": 0.40, "micro_f1_true": 0.6},
        "after": {"macro_f1_true": 0.45, "micro_f1_true": 0.6},
        "delta_ci": {"macro_f1_true": ci},
        "config": {"policy": "soft"},
        "label_errors_true": {"before": 30, "after": 22},
    }
    (tmp_path / "retrain" / "metrics.json").write_text(__import__("json").dumps(metrics))
    r = retrain_bench(tmp_path)
    assert r["macro_f1_true"] == {"before": 0.40, "after": 0.45, "change": ci}
    assert r["micro_f1_true"]["change"] is None
    text = format_bench_table({"metrics": {}, "retrain": r, "noise_counts": {}})
    assert "retrain (soft): macro_f1_true 0.400 -> 0.450, change +0.050 [+0.010, +0.090]" in text
    assert "micro_f1_true 0.600 -> 0.600, change +0.000" in text
    assert "training label errors vs truth: 30 -> 22" in text
    # read back: a file cut short or forged is one message naming it, or absent parts
    from labelaudit.core.errors import RunDirError

    path = tmp_path / "retrain" / "metrics.json"
    for content in ('{"before": {"macro_f1', "[1, 2]"):
        path.write_text(content)
        with pytest.raises(RunDirError, match="metrics.json: not"):
            retrain_bench(tmp_path)
    path.write_text('{"before": [1], "after": 3, "delta_ci": "x", "config": null}')
    assert retrain_bench(tmp_path) is None


def test_negative_swaps_and_true_negative_fields(tmp_path):
    """Issue 23: a ``swap (Negative)`` group and the exclusive block, on a hand-made run."""
    from labelaudit.core.io import update_run_json

    update_run_json(
        tmp_path,
        "dataset",
        {
            "layout": "hpa2021",
            "class_names": ["Nucleoplasm", "Cytosol", "Negative"],
            "class_tokens": ["0", "16", "18"],
            "channels": ["red", "green", "blue", "yellow"],
            "protein_channel": "green",
        },
    )
    #           id, true, given, noise, suggested, quality issues, flagged_by, score
    rows = [
        ("a", "18", "16", "swap", "18", "", "confident;quality", 0.9),  # right
        ("b", "18", "0", "swap", "0", "", "confident", 0.8),  # missed
        ("c", "16", "0", "swap", "16", "", "confident", 0.7),  # not a Negative swap
        ("d", "18", "18", "none", "18", "dark:green", "quality", 0.2),  # empty stain fault
        ("e", "18", "18", "artifact", "18", "artifact:yellow", "quality", 0.6),
        ("f", "0", "0", "none", "0", "", "", 0.1),
        ("g", "16", "16", "none", "16", "", "", 0.3),
    ]
    ids, true, given, noise, sugg, quality, by, score = map(list, zip(*rows, strict=True))
    pd.DataFrame(
        {
            "id": ids,
            "given_labels": given,
            "suggested_labels": sugg,
            "label_quality": [1 - s for s in score],
            "outlier_score": score,
            "intensity_z": score,
            "quality_issues": quality,
            "flagged_by": by,
            "n_flags": [len([x for x in b.split(";") if x]) for b in by],
            "consensus_score": score,
            "consensus_flag": [s > 0.5 for s in score],
        }
    ).to_csv(tmp_path / "issues.csv", index=False)
    pd.DataFrame({"ID": ids, "true_label": true, "given_label": given, "noise": noise}).to_csv(
        tmp_path / "truth.csv", index=False
    )
    result = bench(tmp_path, tmp_path / "truth.csv")
    assert result["metrics"]["confident"]["swap (Negative)"]["n_pos"] == 2
    assert result["exclusive"] == {
        "classes": ["Negative"],
        "n_swaps": 2,
        "swaps_right": 1,
        "swap_recall": 0.5,
        "true_fields": 4,
        "true_fields_image_flagged_empty_stain": 1,
        "true_fields_image_flagged": 2,
    }
    text = format_bench_table(result)
    assert "swap (Negative)" in text
    assert "swaps to or from Negative: 2, correct suggestion 1 (0.500)" in text


def test_demo_summary_is_short_and_names_the_table_and_report(tmp_path):
    from pathlib import Path

    from labelaudit.pipeline.bench import demo_summary
    from labelaudit.rundir import RunDir

    synth = make_audit(400, 5, 16, label_noise=0.1, image_noise=0.05, seed=4)
    detect_and_compare(synth.inputs, tmp_path, params={"isolation": {"n_estimators": 30}})
    synth.truth_frame().to_csv(tmp_path / "truth.csv", index=False)
    result = bench(tmp_path, tmp_path / "truth.csv", write=False)
    issues = RunDir(tmp_path).read_table("issues.csv")
    text = demo_summary(result, issues, Path("/r/report.html"), Path("/r/bench.txt"))
    lines = text.splitlines()
    assert len(lines) <= 12 and len(lines) < len(format_bench_table(result).splitlines())
    m = result["metrics"]["label order"]["label"]
    assert lines[0].startswith("400 synthetic fields; injected:")
    assert f"label errors ranked by the review order: AUROC {m['auroc']:.3f}" in text
    first = issues.iloc[0]
    assert lines[lines.index(next(x for x in lines if x.startswith("top 5"))) + 1].startswith(
        f"  {first['id']}  labels {first['given_labels']}"
    )
    assert lines[-2] == "full benchmark table: /r/bench.txt (or run the demo with --verbose)"
    assert lines[-1] == "report: /r/report.html"


def test_true_labels_name_the_line_of_a_bad_label(tmp_path):
    """``retrain --truth`` reads the true labels here: a bad one names its line and image."""
    from labelaudit.pipeline.bench import read_true_labels

    truth = tmp_path / "truth.csv"
    truth.write_text("ID,true_label,given_label,noise\n\na,0|1,0|1,none\nb,99,1,swap\n")
    info = {"class_names": ["x", "y"], "class_tokens": ["0", "1"]}
    assert read_true_labels(truth, ["a"], info).tolist() == [[True, True]]
    with pytest.raises(DatasetError, match=r"line \d+: image 'b': true_label: unknown label '99'"):
        read_true_labels(truth, ["a", "b"], info)
