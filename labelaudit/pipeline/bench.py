"""Score the detectors of a run against the ground truth of a synthetic dataset.

The truth CSV (written by ``labelaudit synth``) has ``ID, true_label, given_label,
noise``; ``noise`` is ``none`` or a ``;``-joined subset of :data:`NOISE_TYPES`.
Each detector's per-image score from ``issues.csv`` is evaluated as a ranking of
problem images:

============  =======================
detector      score (high = suspicious)
============  =======================
confident     ``1 - label_quality``
isolation     ``outlier_score``
intensity     ``intensity_z``
consensus     ``consensus_score``
quality       ``quality_score`` (when the run has it)
knn           ``knn_disagreement`` (when the run has it)
combined      ``combined_score`` (when the run has it)
label order   ``label_score`` (the default order's families and the order itself)
============  =======================

For each, and for each group of images, the result has AUROC, average precision
(both from :mod:`sklearn.metrics`), precision at T (T = the number of positives;
ties at the cut-off count fractionally, i.e. the expected precision under random
tie-breaking), and recall and precision at the detector's own flags (``flagged_by``
names it; ``consensus_flag`` for the consensus). Groups: ``any`` (noise != none),
``label`` (missing/extra/swap), ``image`` (dim/saturated/blur/artifact) and each
noise type; positives have the group's noise, negatives have none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelaudit.core.errors import DatasetError, RunDirError
from labelaudit.core.userfiles import read_user_csv
from labelaudit.data.labels import LabelCodec, split_any_labels
from labelaudit.rundir import (
    BENCH_JSON,
    CHANGES_CSV,
    ISSUES_CSV,
    LABEL_WEIGHTS_CSV,
    RETRAIN_METRICS,
    RunDir,
    load_audit_inputs,
)

LABEL_NOISE = ("missing", "extra", "swap")
IMAGE_NOISE = ("dim", "saturated", "blur", "artifact")
NOISE_TYPES = LABEL_NOISE + IMAGE_NOISE
#: Noise of planted near-duplicates (``synth --duplicates``): accepted in the truth
#: file, scored as pairs (``result["duplicates"]``), in none of the ranking groups.
DUPLICATE_NOISE = ("duplicate", "duplicate_conflict")
TRUTH_COLUMNS = ("ID", "true_label", "given_label", "noise")
#: Kept when present: ``cells`` (``synth --partial-cells``/``--masks``): per class,
#: how many of the field's cells show it (``0:3/8;16:8/8``); ``duplicate_of``
#: (``synth --duplicates``): the ID of the field a planted copy was made from.
OPTIONAL_TRUTH_COLUMNS = ("cells", "duplicate_of")

#: detector -> (issues.csv column, how it becomes "high = suspicious")
SCORES: dict[str, tuple[str, str]] = {
    "confident": ("label_quality", "1 - label_quality"),
    "isolation": ("outlier_score", "outlier_score"),
    "intensity": ("intensity_z", "intensity_z"),
    "consensus": ("consensus_score", "consensus_score"),
    "quality": ("quality_score", "quality_score"),
    "knn": ("knn_disagreement", "knn_disagreement"),
    "combined": ("combined_score", "combined_score"),
    # The default order (issue 14): per family and over both; flags: consensus_flag.
    "label order": ("label_score", "label_score"),
    "image order": ("image_score", "image_score"),
    "default order": ("problem_score", "problem_score"),
}
#: Score columns a run may lack (a detector added later): the detector is then left
#: out of the metrics (a column present but empty lists it under ``skipped``).
OPTIONAL_SCORES = ("quality", "knn", "combined", "label order", "image order", "default order")
GROUPS: dict[str, tuple[str, ...]] = {
    "any": NOISE_TYPES,
    "label": LABEL_NOISE,
    "image": IMAGE_NOISE,
    **{t: (t,) for t in NOISE_TYPES},
}


def read_truth(path: str | Path) -> pd.DataFrame:
    """Read and validate a truth CSV.

    Returns
    -------
    pandas.DataFrame
        ``ID``, ``true_label``, ``given_label``, ``noise`` (as a frozenset of types,
        empty for ``none``) and ``line`` (1-based line in the file).

    Raises
    ------
    DatasetError
        Unreadable file, missing columns, empty or duplicate ids, unknown noise.
    """
    path = Path(path)
    truth = read_user_csv(
        path, "the truth file", dtype=str, keep_default_na=False, skipinitialspace=True
    )
    truth.columns = [c.strip() for c in truth.columns]
    missing = [c for c in TRUTH_COLUMNS if c not in truth.columns]
    if missing:
        raise DatasetError(
            f"truth file lacks column(s) {', '.join(missing)} "
            f"(needs {', '.join(TRUTH_COLUMNS)}; has {', '.join(truth.columns)})",
            path=path,
            row=1,
        )
    optional = [c for c in OPTIONAL_TRUTH_COLUMNS if c in truth.columns]
    truth = truth[list(TRUTH_COLUMNS) + optional].copy()
    truth["line"] = np.arange(2, len(truth) + 2)
    noise = []
    seen: dict[str, int] = {}
    for image_id, raw, line in zip(truth["ID"], truth["noise"], truth["line"], strict=True):
        image_id = image_id.strip()
        if not image_id:
            raise DatasetError("empty ID", path=path, row=line)
        if image_id in seen:
            raise DatasetError(
                f"duplicate ID (first on line {seen[image_id]})",
                path=path,
                row=line,
                image=image_id,
            )
        seen[image_id] = line
        noise.append(_parse_noise(raw, path, line, image_id))
    truth["ID"] = truth["ID"].str.strip()
    truth["noise"] = noise
    return truth


def _parse_noise(raw: str, path: Path, line: int, image_id: str) -> frozenset[str]:
    tokens = [t.strip().lower() for t in raw.split(";") if t.strip()]
    if not tokens:
        raise DatasetError(
            "empty noise (write 'none' for a clean image)", path=path, row=line, image=image_id
        )
    if tokens == ["none"]:
        return frozenset()
    bad = [t for t in tokens if t not in NOISE_TYPES + DUPLICATE_NOISE]
    if bad:
        raise DatasetError(
            f"unknown noise type {', '.join(map(repr, bad))} "
            f"(known: none, {', '.join(NOISE_TYPES + DUPLICATE_NOISE)})",
            path=path,
            row=line,
            image=image_id,
        )
    return frozenset(tokens)


def read_true_labels(path: Path, ids: list[str], info: dict) -> np.ndarray:
    """The true labels of ``ids`` from a truth file (bool N x K, the run's classes).

    Raises
    ------
    DatasetError
        An unreadable truth file, a missing image, or an unknown label.
    """
    truth = read_truth(path)
    frame = truth.set_index("ID")
    missing = [image_id for image_id in ids if image_id not in frame.index]
    if missing:
        raise DatasetError(
            f"no true labels for {len(missing)} image(s) of the run (e.g. {missing[0]!r})",
            path=path,
        )
    values = frame.loc[ids, "true_label"].astype(str)
    lines = [int(line) for line in frame.loc[ids, "line"]]
    return LabelCodec.from_info(info).parse_many(
        values,
        where=lambda i, message: DatasetError(
            f"true_label: {message}", path=path, row=lines[i], image=ids[i]
        ),
    )


def read_issues(run_dir: str | Path) -> pd.DataFrame:
    """Read ``run_dir/issues.csv`` with ids as strings and numeric score columns."""
    run = RunDir(run_dir)
    path = run.file(ISSUES_CSV)
    issues = run.read_table(ISSUES_CSV, hint="run the detect stage first")
    needed = ["id", "given_labels", "flagged_by", "consensus_flag"] + [
        c for det, (c, _) in SCORES.items() if det not in OPTIONAL_SCORES
    ]
    missing = [c for c in needed if c not in issues.columns]
    if missing:
        raise RunDirError(f"{path}: lacks column(s) {', '.join(missing)}")
    for col, _ in SCORES.values():
        if col not in issues.columns:  # an optional score of an older run: left out
            continue
        issues[col] = pd.to_numeric(issues[col].replace("", np.nan), errors="coerce")
    issues["consensus_flag"] = issues["consensus_flag"].str.lower().isin(["true", "1"])
    return issues


def precision_at_t(y_true: np.ndarray, score: np.ndarray, t: int) -> float | None:
    """Precision among the ``t`` highest scores; ties at the cut-off count fractionally."""
    y_true = np.asarray(y_true, dtype=bool)
    score = np.asarray(score, dtype=float)
    if t <= 0 or len(score) == 0:
        return None
    t = min(t, len(score))
    cut = np.sort(score)[::-1][t - 1]
    above = score > cut
    at = score == cut
    expected = y_true[above].sum() + (t - above.sum()) * y_true[at].mean()
    return float(expected / t)


def score_metrics(y_true: np.ndarray, score: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    """AUROC, AP, precision at T, recall/precision at the flags for one ranking.

    Undefined values (no positives, or no negatives, for AUROC) are ``None``.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y_true = np.asarray(y_true, dtype=bool)
    flagged = np.asarray(flagged, dtype=bool)
    n_pos = int(y_true.sum())
    n_neg = int(len(y_true) - n_pos)
    out: dict[str, Any] = {"n_pos": n_pos, "n_neg": n_neg, "n_flagged": int(flagged.sum())}
    both = n_pos > 0 and n_neg > 0
    out["auroc"] = float(roc_auc_score(y_true, score)) if both else None
    out["ap"] = float(average_precision_score(y_true, score)) if n_pos > 0 else None
    out["precision_at_t"] = precision_at_t(y_true, score, n_pos) if n_pos > 0 else None
    out["recall_at_flag"] = float(flagged[y_true].mean()) if n_pos > 0 else None
    out["precision_at_flag"] = float(y_true[flagged].mean()) if flagged.any() else None
    return out


def _check_truth_labels(truth: pd.DataFrame, codec: LabelCodec, path: Path) -> None:
    """Every label of ``true_label`` and ``given_label`` is a class of the run (as
    ``retrain --truth`` requires): one message naming the line otherwise."""
    for column in ("true_label", "given_label"):
        for text, line, image_id in zip(truth[column], truth["line"], truth["ID"], strict=True):

            def bad(
                message: str, line: int = int(line), image_id: str = image_id, col: str = column
            ) -> DatasetError:
                return DatasetError(f"{col}: {message}", path=path, row=line, image=image_id)

            codec.indices(text, where=bad)


def _label_set(text: str) -> frozenset[str]:
    return frozenset(split_any_labels(text))


def bench(run_dir: str | Path, truth_path: str | Path, *, write: bool = True) -> dict[str, Any]:
    """Score each detector of a run against a truth file; write ``run_dir/bench.json``.

    Parameters
    ----------
    run_dir
        A run directory with ``issues.csv``.
    truth_path
        The truth CSV (``ID, true_label, given_label, noise``).
    write
        Write ``bench.json`` (atomically).

    Returns
    -------
    dict
        ``metrics[detector][group]`` = :func:`score_metrics` output, plus counts.

    Raises
    ------
    DatasetError
        Bad truth file, or a truth ID that is not in the run (naming file and line).
    RunDirError
        ``issues.csv`` missing or malformed.
    """
    truth_path = Path(truth_path)
    issues = read_issues(run_dir)
    truth = read_truth(truth_path)
    try:
        codec = RunDir(run_dir).codec()
    except RunDirError:  # issues.csv alone (no run.json): the labels are compared as text
        codec = None
    if codec is not None:
        _check_truth_labels(truth, codec, truth_path)
    n_run_images = len(issues)
    issues = _issues_of_truth(issues, run_dir, truth, truth_path)
    noise = list(truth["noise"])
    clean = np.array([len(s) == 0 for s in noise])
    mismatched = [
        i
        for i, (a, b) in enumerate(zip(truth["given_label"], issues["given_labels"], strict=True))
        if _label_set(a) != _label_set(b)
    ]

    has = np.array([[t in s for t in NOISE_TYPES] for s in noise], dtype=bool).reshape(
        -1, len(NOISE_TYPES)
    )
    positives = {
        group: np.asarray(has[:, [NOISE_TYPES.index(t) for t in types]].any(axis=1))
        for group, types in GROUPS.items()
    }
    roles = _run_roles(run_dir)
    excl_tokens = _exclusive_tokens(run_dir, roles)
    true_sets = truth["true_label"].map(_label_set).tolist()
    given_sets = truth["given_label"].map(_label_set).tolist()
    excl_swap = _exclusive_swaps(noise, true_sets, given_sets, excl_tokens)
    if excl_tokens:
        positives[f"swap ({', '.join(roles.exclusive)})"] = excl_swap
    metrics, skipped = _detector_metrics(issues, positives, clean)

    counts = {"none": int(clean.sum())}
    counts.update({t: int(has[:, j].sum()) for j, t in enumerate(NOISE_TYPES)})
    result = {
        "run_dir": str(run_dir),
        "truth": str(truth_path),
        "n_images": len(truth),
        "n_run_images": n_run_images,
        "n_problem_images": int((~clean).sum()),
        "noise_counts": counts,
        "given_label_mismatches": len(mismatched),
        "scores": {det: how for det, (_, how) in SCORES.items()},
        "skipped": skipped,
        "metrics": metrics,
    }
    if "suggested_labels" in issues.columns:
        suggested = issues["suggested_labels"].fillna("").astype(str).map(_label_set).tolist()
        result["suggestions"] = suggestion_bench(given_sets, suggested, true_sets)
        if excl_tokens:
            result["exclusive"] = exclusive_bench(
                roles, excl_tokens, excl_swap, true_sets, suggested, issues
            )
    result.update(_run_sections(run_dir, truth, truth_path, issues))
    if write:
        RunDir(run_dir).write_json_file(BENCH_JSON, result)
    return result


def _issues_of_truth(
    issues: pd.DataFrame, run_dir: str | Path, truth: pd.DataFrame, truth_path: Path
) -> pd.DataFrame:
    """The run's issues.csv rows in the truth file's order.

    Raises
    ------
    DatasetError
        A truth ID that is not in the run (naming the truth file's line).
    """
    rows = pd.Index(issues["id"]).get_indexer(truth["ID"])
    if (rows < 0).any():
        first = int(np.flatnonzero(rows < 0)[0])
        n_bad = int((rows < 0).sum())
        raise DatasetError(
            f"ID is not in the run {Path(run_dir)}"
            + (f" ({n_bad} truth IDs are not)" if n_bad > 1 else ""),
            path=truth_path,
            row=int(truth["line"].iloc[first]),
            image=str(truth["ID"].iloc[first]),
        )
    return issues.iloc[rows].reset_index(drop=True)


def _exclusive_swaps(
    noise: list[frozenset[str]],
    true_sets: list[frozenset[str]],
    given_sets: list[frozenset[str]],
    excl_tokens: frozenset[str],
) -> np.ndarray:
    """(N,) bool: a planted swap to or from an exclusive class."""
    return np.array(
        [
            "swap" in n and bool((t | g) & excl_tokens)
            for n, t, g in zip(noise, true_sets, given_sets, strict=True)
        ],
        dtype=bool,
    )


def _detector_metrics(
    issues: pd.DataFrame, positives: dict[str, np.ndarray], clean: np.ndarray
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """:func:`score_metrics` per detector and group; the detectors without a score."""
    flagged_by = [set(s.split(";")) - {""} for s in issues["flagged_by"]]
    metrics: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for det, (col, _) in SCORES.items():
        if col not in issues.columns:
            continue  # an optional score the run predates
        values = issues[col].to_numpy(dtype=float)
        if np.isnan(values).all():
            skipped.append(det)
            continue
        score = 1.0 - values if det == "confident" else values
        # A missing value ranks as least suspicious.
        finite = score[np.isfinite(score)]
        score = np.nan_to_num(score, nan=(finite.min() - 1.0) if len(finite) else 0.0)
        if det == "consensus" or det.endswith(" order"):
            flags = issues["consensus_flag"].to_numpy(dtype=bool)
        else:
            flags = np.array([det in s for s in flagged_by])
        metrics[det] = {}
        for group, pos in positives.items():
            keep = pos | clean
            metrics[det][group] = score_metrics(pos[keep], score[keep], flags[keep])
    return metrics, skipped


def _run_sections(
    run_dir: str | Path, truth: pd.DataFrame, truth_path: Path, issues: pd.DataFrame
) -> dict[str, Any]:
    """What the run adds beyond detection: cleaning, retrain, cells, duplicates."""
    out: dict[str, Any] = {}
    changes_file = RunDir(run_dir).file(CHANGES_CSV)
    if changes_file.is_file():
        out["cleaning"] = cleaning_bench(truth, changes_file, _token_weights(run_dir))
    retrained = retrain_bench(run_dir)
    if retrained is not None:
        out["retrain"] = retrained
    if "cells" in truth.columns and "label_support_score" in issues.columns:
        out["cells"] = cell_support_bench(run_dir, truth, issues, truth_path)
    if "duplicate_of" in truth.columns and "duplicate_group" in issues.columns:
        out["duplicates"] = duplicate_bench(truth, issues)
    return out


def _run_roles(run_dir: str | Path):
    """The run's class and stain roles (none for a run without a dataset section)."""
    from labelaudit.data.roles import Roles, roles_from_info

    try:
        return roles_from_info(RunDir(run_dir).dataset_info())
    except (RunDirError, OSError, ValueError):
        return Roles()


def _exclusive_tokens(run_dir: str | Path, roles) -> frozenset[str]:
    """The exclusive classes as written in the truth file (the dataset's tokens)."""
    if not roles.exclusive:
        return frozenset()
    info = RunDir(run_dir).dataset_info()
    token = dict(zip(info["class_names"], info["class_tokens"], strict=True))
    return frozenset(token[c] for c in roles.exclusive)


def exclusive_bench(
    roles,
    tokens: frozenset[str],
    swaps: np.ndarray,
    true: list[frozenset[str]],
    suggested: list[frozenset[str]],
    issues: pd.DataFrame,
) -> dict[str, Any]:
    """Swaps to or from an exclusive class, and the truly exclusive fields.

    ``swaps_right``: swaps whose suggested set equals the true set (the correct
    suggestion); ``true_fields``: fields whose true set is an exclusive class;
    ``true_fields_image_flagged_empty_stain``: those whose quality issues name the
    target stain dark, low-information or blurry (an image fault for the empty stain
    their class means); ``true_fields_image_flagged``: with any quality issue or an
    intensity flag.
    """
    right = [s == t for s, t in zip(suggested, true, strict=True)]
    is_true = np.array([bool(t) and t <= tokens for t in true], dtype=bool)
    target = roles.target_channel or "green"
    empty_kinds = tuple(f"{k}:{target}" for k in ("dark", "low_information", "blurry"))
    q = issues.get("quality_issues", pd.Series([""] * len(issues))).fillna("").astype(str)
    stain = np.array([any(k in v.split(";") for k in empty_kinds) for v in q], dtype=bool)
    flagged_by = issues["flagged_by"].fillna("").astype(str).str.split(";")
    image = np.array(
        [bool(v) or "intensity" in f for v, f in zip(q, flagged_by, strict=True)], dtype=bool
    )
    n_swaps = int(swaps.sum())
    n_right = int(np.asarray(right)[swaps].sum()) if n_swaps else 0
    return {
        "classes": list(roles.exclusive),
        "n_swaps": n_swaps,
        "swaps_right": n_right,
        "swap_recall": n_right / n_swaps if n_swaps else None,
        "true_fields": int(is_true.sum()),
        "true_fields_image_flagged_empty_stain": int((is_true & stain).sum()),
        "true_fields_image_flagged": int((is_true & image).sum()),
    }


def label_errors(labels: list[frozenset[str]], true: list[frozenset[str]]) -> int:
    """Label-level errors: the sum over images of ``|labels XOR true|``."""
    return sum(len(a ^ b) for a, b in zip(labels, true, strict=True))


def suggestion_bench(
    given: list[frozenset[str]], suggested: list[frozenset[str]], true: list[frozenset[str]]
) -> dict[str, Any]:
    """How right the suggested label changes are, per label and per image.

    A suggested change is a label in ``given XOR suggested``; it is right when the
    suggested value of that label equals the true one. Per image: among images with
    a suggestion (``suggested != given``), the share whose every suggested change is
    right (``image_change_precision``: accepting the image's suggestion makes no label
    wrong) and the share whose suggested set equals the true set (``image_precision``:
    stricter, it also counts wrong labels nothing suggested changing).
    ``errors_given`` / ``errors_accepted``: label-level errors
    (:func:`label_errors`) of the given labels and after accepting every suggestion.
    """
    n_changes = n_right = n_images = n_images_right = n_images_all_right = 0
    for g, s, t in zip(given, suggested, true, strict=True):
        changed = g ^ s
        if not changed:
            continue
        right = sum((c in s) == (c in t) for c in changed)
        n_changes += len(changed)
        n_right += right
        n_images += 1
        n_images_right += s == t
        n_images_all_right += right == len(changed)
    return {
        "n_changes": n_changes,
        "n_right": n_right,
        "precision": n_right / n_changes if n_changes else None,
        "n_images": n_images,
        "n_images_right": n_images_right,
        "image_precision": n_images_right / n_images if n_images else None,
        "n_images_all_right": n_images_all_right,
        "image_change_precision": n_images_all_right / n_images if n_images else None,
        "errors_given": label_errors(given, true),
        "errors_accepted": label_errors(suggested, true),
    }


def cleaning_bench(
    truth: pd.DataFrame, changes_file: Path, weights: dict[str, dict[str, float]] | None = None
) -> dict[str, Any]:
    """Label-level errors before and after the run's own cleaning (``changes.csv``).

    Removed images leave with their errors: ``errors_after`` counts the kept images
    only (relabelled ones with their new labels); ``errors_removed`` the given-label
    errors of the removed images. With the per-label ``weights`` of a soft policy
    (``{id: {class token: weight}}``), ``weighted_errors_after`` sums the weights of
    the wrong labels left: the noise the retrained model still learns from.
    """
    changes = pd.read_csv(changes_file, dtype=str, keep_default_na=False)
    action = dict(zip(changes["id"], changes["action"], strict=True))
    new = dict(zip(changes["id"], changes["new_labels"], strict=True))
    given = truth["given_label"].map(_label_set).tolist()
    true = truth["true_label"].map(_label_set).tolist()
    after = removed = n_removed = n_relabelled = 0
    weighted = 0.0
    for image_id, g, t in zip(truth["ID"], given, true, strict=True):
        what = action.get(image_id)
        if what == "remove":
            n_removed += 1
            removed += len(g ^ t)
            continue
        if what == "relabel":
            n_relabelled += 1
            g = _label_set(new[image_id])
        after += len(g ^ t)
        if weights is not None:
            w = weights.get(image_id, {})
            weighted += sum(w.get(token, 1.0) for token in g ^ t)
    out: dict[str, float] = {
        "errors_given": label_errors(given, true),
        "errors_after": after,
        "n_removed": n_removed,
        "errors_removed": removed,
        "n_relabelled": n_relabelled,
    }
    if weights is not None:
        out["weighted_errors_after"] = round(weighted, 2)
    return out


def _token_weights(run_dir: str | Path) -> dict[str, dict[str, float]] | None:
    """``label_weights.csv`` as ``{id: {class token: weight}}``; ``None`` if absent."""
    path = Path(run_dir) / LABEL_WEIGHTS_CSV
    if not path.is_file():
        return None
    info = RunDir(run_dir).dataset_info()
    frame = pd.read_csv(path, dtype={"id": str})
    token_of = dict(zip(info["class_names"], info["class_tokens"], strict=True))
    names = [c for c in frame.columns if c in token_of]
    return {
        image_id: {token_of[c]: float(v) for c, v in zip(names, row, strict=True)}
        for image_id, row in zip(frame["id"], frame[names].to_numpy(dtype=float), strict=True)
    }


def retrain_bench(run_dir: str | Path) -> dict[str, Any] | None:
    """The true-label F1 change of the run's last ``retrain --truth`` and its interval."""
    run = RunDir(run_dir)
    if not run.has(RETRAIN_METRICS) or not isinstance(run.read_run().get("retrain"), dict):
        return None  # none, or another dataset's (a later scan dropped its record)
    m = run.read_json_file(RETRAIN_METRICS)
    if not isinstance(m, dict):
        raise RunDirError(f"{run.file(RETRAIN_METRICS)}: not a JSON object; run retrain again")

    def part(key: str) -> dict:  # read back: a forged part that is not an object is absent
        value = m.get(key)
        return value if isinstance(value, dict) else {}

    b, a, ci = part("before"), part("after"), part("delta_ci")
    out: dict[str, Any] = {"policy": part("config").get("policy")}
    for k in ("macro_f1_true", "micro_f1_true"):
        if k in b and k in a:
            out[k] = {"before": b[k], "after": a[k], "change": ci.get(k)}
    if "label_errors_true" in m:
        out["label_errors"] = m["label_errors_true"]
    return out if len(out) > 1 else None


def unsupported_truth(truth: pd.DataFrame, truth_path: str | Path) -> np.ndarray:
    """Which fields have a given label that no cell shows (from the ``cells`` column)."""
    from labelaudit.synth.simulate import parse_cells_column

    out = np.zeros(len(truth), dtype=bool)
    for i, (text, given, line, image_id) in enumerate(
        zip(truth["cells"], truth["given_label"], truth["line"], truth["ID"], strict=True)
    ):
        try:
            counts = parse_cells_column(text) if text.strip() else {}
        except ValueError as exc:
            raise DatasetError(
                f"bad cells column: {exc}", path=Path(truth_path), row=int(line), image=image_id
            ) from None
        for token in _label_set(given):
            shown = counts.get(int(token)) if token.isdigit() else None
            if shown is not None and shown[1] > 0 and shown[0] == 0:
                out[i] = True
    return out


def cell_support_bench(
    run_dir: str | Path, truth: pd.DataFrame, issues: pd.DataFrame, truth_path: str | Path
) -> dict[str, Any]:
    """Score finding the fields with a label that no cell shows, cell level against field level.

    Positives: fields whose given labels include one that none of their cells
    expresses (the ``cells`` truth column). Scores, higher = more suspect:

    * ``cell_support``: 1 - ``label_support_score`` (the strongest cell of the
      field's weakest label; the cell-level scan), flagged where
      ``unsupported_labels`` is not empty;
    * ``field_weakest_label``: 1 - the field model's lowest out-of-fold probability
      over the field's given labels, flagged below 0.5;
    * ``confident``: 1 - cleanlab's label quality of the field, flagged where
      confident learning flagged the field.

    ``issues`` must be aligned with ``truth`` (row i = truth row i).
    """
    positives = unsupported_truth(truth, truth_path)
    out: dict[str, Any] = {"n_pos": int(positives.sum()), "n_fields": len(truth), "metrics": {}}
    support = pd.to_numeric(issues["label_support_score"].replace("", np.nan), errors="coerce")
    has_cells = support.notna().to_numpy()
    out["n_fields_without_cells"] = int((~has_cells).sum())
    score = 1.0 - support.to_numpy(dtype=float)
    score = np.nan_to_num(score, nan=-1.0)  # no cells: no evidence, least suspect
    flags = issues["unsupported_labels"].astype(str).str.len().to_numpy() > 0
    out["metrics"]["cell_support"] = score_metrics(positives, score, flags)
    inputs = load_audit_inputs(run_dir)
    if inputs.probs is not None:
        rows = pd.Index(inputs.ids).get_indexer(issues["id"])
        probs, labels = inputs.probs[rows], inputs.labels[rows]
        weakest = np.where(labels, probs, np.inf).min(axis=1)
        weakest[~labels.any(axis=1)] = 1.0  # no given label: nothing to doubt
        out["metrics"]["field_weakest_label"] = score_metrics(
            positives, 1.0 - weakest, weakest < 0.5
        )
    quality = issues["label_quality"].to_numpy(dtype=float)
    if np.isfinite(quality).any():
        flagged = np.array(["confident" in s.split(";") for s in issues["flagged_by"]])
        out["metrics"]["confident"] = score_metrics(
            positives, np.nan_to_num(1.0 - quality, nan=-1.0), flagged
        )
    return out


def _pairs_in_groups(ids: list[str], groups: list[str]) -> set[frozenset[str]]:
    """Every pair of ids that share a non-empty group label."""
    members: dict[str, list[str]] = {}
    for image_id, g in zip(ids, groups, strict=True):
        if g != "":
            members.setdefault(g, []).append(image_id)
    return {frozenset((a, b)) for m in members.values() for a in m for b in m if a < b}


def duplicate_bench(truth: pd.DataFrame, issues: pd.DataFrame) -> dict[str, Any]:
    """Precision and recall of planted duplicate pairs (``synth --duplicates``).

    A planted pair is a copy and the field it was made from (``duplicate_of``); two
    copies of one field are a true pair too. A found pair is two images in the same
    ``duplicate_group`` of ``issues.csv``. ``conflicts_found``: the share of copies
    with changed labels (``duplicate_conflict``) whose ``duplicate_conflict`` column is
    non-empty. ``issues`` must be aligned with ``truth``.
    """
    ids = truth["ID"].tolist()
    origin = [o.strip() or i for i, o in zip(ids, truth["duplicate_of"], strict=True)]
    copied = {o for o, i in zip(origin, ids, strict=True) if o != i}
    planted = _pairs_in_groups(ids, [o if o in copied else "" for o in origin])
    found = _pairs_in_groups(ids, issues["duplicate_group"].fillna("").astype(str).tolist())
    hit = len(planted & found)
    conflict = np.array(["duplicate_conflict" in s for s in truth["noise"]])
    col = issues.get("duplicate_conflict", pd.Series([""] * len(issues))).fillna("").astype(str)
    return {
        "n_planted_pairs": len(planted),
        "n_found_pairs": len(found),
        "recall": hit / len(planted) if planted else None,
        "precision": hit / len(found) if found else None,
        "n_conflict_copies": int(conflict.sum()),
        "conflicts_found": float((col.to_numpy()[conflict] != "").mean())
        if conflict.any()
        else None,
    }


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_bench_table(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`bench` results (groups without positives left out)."""
    out = _detector_lines(result)
    if "cells" in result:
        out += _cell_lines(result["cells"])
    if "duplicates" in result:
        out += _duplicate_lines(result["duplicates"])
    if "suggestions" in result:
        out += _suggestion_lines(result["suggestions"])
    if "exclusive" in result:
        out += _exclusive_lines(result["exclusive"])
    if "cleaning" in result:
        out += _cleaning_lines(result["cleaning"])
    if "retrain" in result:
        out += _retrain_lines(result["retrain"])
    if result.get("given_label_mismatches"):
        out.append(
            f"warning: {result['given_label_mismatches']} given labels in the truth file differ "
            "from the run's"
        )
    return "\n".join(out)


def _detector_lines(result: dict[str, Any]) -> list[str]:
    """The per-detector, per-group table, and the detectors the run did not have."""
    header = ["detector", "group", "n_pos", "n_neg", "AUROC", "AP", "P@T", "R@flag", "P@flag"]
    lines = [header]
    for det, groups in result["metrics"].items():
        for group, m in groups.items():
            if not m["n_pos"]:
                continue
            lines.append(
                [
                    det,
                    group,
                    str(m["n_pos"]),
                    str(m["n_neg"]),
                    _fmt(m["auroc"]),
                    _fmt(m["ap"]),
                    _fmt(m["precision_at_t"]),
                    _fmt(m["recall_at_flag"]),
                    _fmt(m["precision_at_flag"]),
                ]
            )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = []
    for j, row in enumerate(lines):
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    if result.get("skipped"):
        out.append(f"not in this run: {', '.join(result['skipped'])}")
    return out


def _cell_lines(c: dict[str, Any]) -> list[str]:
    out = [
        "",
        f"fields with a label no cell shows: {c['n_pos']} of {c['n_fields']} "
        "(cell level vs field level)",
        "score                 AUROC     AP    P@T  R@flag  P@flag",
    ]
    for name, m in c["metrics"].items():
        out.append(
            f"{name:<20}  {_fmt(m['auroc']):>5}  {_fmt(m['ap']):>5}  "
            f"{_fmt(m['precision_at_t']):>5}  {_fmt(m['recall_at_flag']):>6}  "
            f"{_fmt(m['precision_at_flag']):>6}"
        )
    return out


def _duplicate_lines(d: dict[str, Any]) -> list[str]:
    return [
        "",
        f"planted duplicate pairs: {d['n_planted_pairs']}, found pairs: {d['n_found_pairs']},"
        f" recall {_fmt(d['recall'])}, precision {_fmt(d['precision'])},"
        f" label conflicts found {_fmt(d['conflicts_found'])}",
    ]


def _suggestion_lines(g: dict[str, Any]) -> list[str]:
    return [
        "",
        f"suggested label changes: {g['n_changes']}, right {g['n_right']} "
        f"(precision {_fmt(g['precision'])}); images with a suggestion: {g['n_images']}, "
        f"every change right {g['n_images_all_right']} "
        f"(precision {_fmt(g['image_change_precision'])}), "
        f"set equal to the truth {g['n_images_right']} ({_fmt(g['image_precision'])})",
        f"label errors: given {g['errors_given']}, after accepting every suggestion "
        f"{g['errors_accepted']}",
    ]


def _exclusive_lines(e: dict[str, Any]) -> list[str]:
    names = ", ".join(e["classes"])
    return [
        f"swaps to or from {names}: {e['n_swaps']}, correct suggestion {e['swaps_right']}"
        f" ({_fmt(e['swap_recall'])}); true {names} fields: {e['true_fields']}, flagged as"
        f" an image problem for their empty stain {e['true_fields_image_flagged_empty_stain']}"
        f" (by an image detector at all: {e['true_fields_image_flagged']})"
    ]


def _cleaning_lines(c: dict[str, Any]) -> list[str]:
    return [
        f"label errors after the run's cleaning: {c['errors_after']} in the kept images "
        f"(given {c['errors_given']}; {c['n_relabelled']} relabelled, {c['n_removed']} "
        f"removed taking {c['errors_removed']} errors with them)"
        + (
            f"; weighted by the label weights: {c['weighted_errors_after']:.1f}"
            if "weighted_errors_after" in c
            else ""
        )
    ]


def _retrain_lines(r: dict[str, Any]) -> list[str]:
    from labelaudit.core.stats import Interval

    out = []
    for k in ("macro_f1_true", "micro_f1_true"):
        if k in r:
            iv = r[k]["change"]
            change = (
                Interval.from_dict(iv).format() if iv else f"{r[k]['after'] - r[k]['before']:+.3f}"
            )
            out.append(
                f"retrain ({r['policy'] or 'no cleaning'}): {k} {r[k]['before']:.3f} -> "
                f"{r[k]['after']:.3f}, change {change} (95% bootstrap over test images)"
            )
    if "label_errors" in r:
        e = r["label_errors"]
        out.append(f"retrain training label errors vs truth: {e['before']} -> {e['after']}")
    return out


#: Name of the full benchmark table the demo writes beside ``bench.json``.


def demo_summary(
    result: dict[str, Any], issues: pd.DataFrame, report: Path, table: Path, top: int = 5
) -> str:
    """The demo's short account: headline numbers, the top findings, where things are.

    Parameters
    ----------
    result
        :func:`bench` of the demo's run against its truth.
    issues
        The run's ``issues.csv`` (text), in review order.
    report, table
        The report and the full benchmark table (:func:`format_bench_table`).
    top
        Findings listed.
    """
    counts = result["noise_counts"]
    n_label = sum(counts[t] for t in LABEL_NOISE)
    n_image = sum(counts[t] for t in IMAGE_NOISE)
    lines = [
        f"{result['n_images']} synthetic fields; injected: label errors in {n_label}, "
        f"image faults in {n_image} (truth.csv)"
    ]
    metrics = result["metrics"]
    for name, group, what in (
        ("label order", "label", "label errors"),
        ("image order", "image", "image faults"),
    ):
        m = metrics.get(name, {}).get(group)
        if m and m["n_pos"]:
            lines.append(
                f"{what} ranked by the review order: AUROC {_fmt(m['auroc'])}, "
                f"precision in the top {m['n_pos']} {_fmt(m['precision_at_t'])}"
            )
    g = result.get("suggestions")
    if g:
        lines.append(
            f"suggested label changes: {g['n_changes']}, right {g['n_right']} "
            f"(precision {_fmt(g['precision'])}); wrong labels {g['errors_given']} -> "
            f"{g['errors_accepted']} if every suggestion is accepted"
        )
    lines.append(f"top {min(top, len(issues))} findings (of {len(issues)} fields, review order):")
    for _, row in issues.head(top).iterrows():
        given, suggested = row.get("given_labels", ""), row.get("suggested_labels", "")
        change = f" -> {suggested}" if suggested != given else ""
        lines.append(f"  {row['id']}  labels {given or '-'}{change}  [{row.get('evidence', '')}]")
    lines.append(f"full benchmark table: {table} (or run the demo with --verbose)")
    lines.append(f"report: {report}")
    return "\n".join(lines)
