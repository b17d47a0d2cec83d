"""The numbers behind the report's sections, computed from a :class:`RunArtifacts`.

Everything here is plain NumPy/pandas (no plotting); :mod:`labelaudit.report.figures`
turns it into charts.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from labelaudit.report.artifacts import RunArtifacts


@dataclass(frozen=True)
class ScoreColumn:
    """A per-image score column of ``issues.csv``.

    Attributes
    ----------
    key
        Column name.
    label
        Short header for the table.
    method
        The detector that writes it.
    higher_is_worse
        Orientation: ``False`` for ``label_quality`` (low = likely wrong).
    """

    key: str
    label: str
    method: str
    higher_is_worse: bool = True


#: The per-image score columns the built-in detectors write.
KNOWN_SCORES: tuple[ScoreColumn, ...] = (
    ScoreColumn("label_quality", "label quality", "confident", higher_is_worse=False),
    ScoreColumn("outlier_score", "outlier score", "isolation"),
    ScoreColumn("intensity_z", "intensity |z|", "intensity"),
)

#: What the HPA layouts' stains show (the fields' own stains; other data declares its own).
HPA_STAINS = {"red": "microtubules", "green": "protein", "blue": "nucleus", "yellow": "ER"}
#: Layouts whose four channels are the Human Protein Atlas stains.
HPA_LAYOUTS = ("hpa2021", "hpa2018")


def stain_captions(info: dict[str, Any]) -> list[str]:
    """One caption per channel for the detail view, from what the dataset says.

    The HPA layouts name their stains (``green (protein)``); a run whose dataset
    section declares ``stains`` (one name per channel) gets those; other RGB images
    get ``R``, ``G``, ``B``; anything else ``channel 1`` .. ``channel n``.
    """
    channels = [str(c) for c in info.get("channels") or []]
    declared = info.get("stains")
    if isinstance(declared, list) and len(declared) == len(channels) and declared:
        return [str(d) for d in declared]
    if info.get("layout") in HPA_LAYOUTS and all(c in HPA_STAINS for c in channels):
        return [f"{c} ({HPA_STAINS[c]})" for c in channels]
    if channels == ["red", "green", "blue"]:
        return ["R", "G", "B"]
    if len(channels) == 1:
        return ["gray"]
    return [f"channel {i + 1}" for i in range(len(channels))]


#: ``issues.csv`` columns that are not scores: the duplicate group is an id, not a number
#: to compare.
NOT_SCORES = {"duplicate_group"}
#: Scores the review list leaves out because another column shows them: the combined
#: label evidence is ``label_score``'s order (issue 27), and the list must fit a
#: 1400 px window.
REPEATED_SCORES = {"combined_score"}

#: ``issues.csv`` columns that are not per-detector scores.
BASE_ISSUE_COLUMNS = {
    "id",
    "given_labels",
    "suggested_labels",
    "flagged_by",
    "n_flags",
    "consensus_score",
    "consensus_flag",
    "label_changes",
    "doubtful_labels",
    "unreliable_classes",
}


# ------------------------------------------------------------------------ classes


def class_table(art: RunArtifacts) -> pd.DataFrame:
    """Per class: name, token, images, share and retraining weight ``w_k = 1 - n_k / N``."""
    n = max(art.n_images, 1)
    counts = art.given.sum(axis=0) if art.given is not None else np.zeros(art.n_classes, int)
    return pd.DataFrame(
        {
            "name": art.class_names,
            "token": art.class_tokens,
            "images": counts.astype(int),
            "share": counts / n,
            "weight": 1.0 - counts / n,
        }
    )


def labels_per_image(given: np.ndarray) -> dict[int, int]:
    """How many images have 0, 1, 2, ... labels."""
    per = np.bincount(given.sum(axis=1).astype(int))
    return {k: int(v) for k, v in enumerate(per) if v}


def cooccurrence(given: np.ndarray) -> np.ndarray:
    """K x K counts of images carrying both labels (diagonal = class counts)."""
    g = given.astype(np.int64)
    return g.T @ g


# -------------------------------------------------------------------------- model


def oof_threshold(train: dict[str, Any]) -> float:
    """The decision threshold training recorded (``metrics.threshold``), else 0.5."""
    for where in (train.get("metrics"), train, train.get("settings")):
        value = where.get("threshold") if isinstance(where, dict) else None
        if isinstance(value, int | float) and 0 < value < 1:
            return float(value)
    return 0.5


def fold_metrics(train: dict[str, Any]) -> pd.DataFrame:
    """Per-fold held-out scores recorded by training (fold x metric), empty when absent."""
    rows: dict[str, dict[str, Any]] = {}
    for entry in train.get("folds") or []:
        if isinstance(entry, dict) and isinstance(entry.get("metrics"), dict):
            nums = {
                k: v
                for k, v in entry["metrics"].items()
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "threshold"
            }
            rows[f"fold {entry.get('fold', len(rows) + 1)}"] = nums
    return pd.DataFrame.from_dict(rows, orient="index")


def oof_report(
    given: np.ndarray, probs: np.ndarray, names: list[str], threshold: float = 0.5
) -> dict[str, Any]:
    """Out-of-fold precision, recall and F1 (micro, macro, weighted, samples) and per class.

    Returns
    -------
    dict
        ``averages`` (average -> precision/recall/f1), ``per_class`` (DataFrame:
        class, precision, recall, f1, support) and ``text`` (scikit-learn's
        ``classification_report``, the method's own format).
    """
    from sklearn.metrics import classification_report, precision_recall_fscore_support

    pred = probs >= threshold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        averages = {}
        for avg in ("micro", "macro", "weighted", "samples"):
            p, r, f, _ = precision_recall_fscore_support(given, pred, average=avg, zero_division=0)
            averages[avg] = {"precision": float(p), "recall": float(r), "f1": float(f)}
        p, r, f, s = precision_recall_fscore_support(given, pred, average=None, zero_division=0)
        text = classification_report(given, pred, target_names=names, zero_division=0, digits=3)
    per_class = pd.DataFrame({"class": names, "precision": p, "recall": r, "f1": f, "support": s})
    return {"averages": averages, "per_class": per_class, "text": text, "threshold": threshold}


def learning_curves(train: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Per-fold training histories found anywhere in the ``train`` section.

    Any list of objects that all carry an ``epoch`` key counts as one history; it is
    named after the fold it belongs to (``fold`` key of an enclosing object, else
    the path to it).
    """
    out: dict[str, pd.DataFrame] = {}

    def walk(node: Any, path: list[str], fold: str | None) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("fold"), int | str):
                fold = f"fold {node['fold']}"
            for key, value in node.items():
                walk(value, [*path, str(key)], fold)
        elif isinstance(node, list) and node:
            if all(isinstance(x, dict) and "epoch" in x for x in node):
                name = fold or "/".join(path) or "training"
                if name in out:
                    name = f"{name} ({'/'.join(path)})"
                numeric = pd.DataFrame(node).apply(pd.to_numeric, errors="coerce")
                out[name] = numeric.dropna(axis=1, how="all")
            else:
                for i, value in enumerate(node):
                    walk(value, [*path, str(i)], fold)

    walk(train, [], None)
    return out


# ---------------------------------------------------------------------- detectors


def score_columns(issues: pd.DataFrame) -> list[ScoreColumn]:
    """The score columns present in ``issues.csv`` (known ones first, then any other numbers)."""
    cols = [s for s in KNOWN_SCORES if s.key in issues.columns and issues[s.key].notna().any()]
    known = {s.key for s in KNOWN_SCORES}
    for col in issues.columns:
        if col in BASE_ISSUE_COLUMNS or col in known or col in NOT_SCORES | REPEATED_SCORES:
            continue
        if pd.api.types.is_numeric_dtype(issues[col]) and issues[col].notna().any():
            cols.append(ScoreColumn(col, col.replace("_", " "), ""))
    return cols


def methods_of(art: RunArtifacts) -> list[str]:
    """Detector names, in the order the detect stage ran them."""
    detectors = art.section("detect").get("detectors")
    names = [str(m) for m in detectors] if isinstance(detectors, dict) else []
    agreement = art.section("compare").get("agreement")
    listed = agreement.get("detectors") if isinstance(agreement, dict) else None
    names += [str(m) for m in listed] if isinstance(listed, list) else []
    if art.issues is not None and "flagged_by" in art.issues:
        for value in art.issues["flagged_by"].dropna().astype(str):
            names += [m for m in value.split(";") if m]
    return list(dict.fromkeys(names))


def method_flags(issues: pd.DataFrame, methods: list[str]) -> dict[str, np.ndarray]:
    """Per detector, which rows of ``issues`` it flagged (from ``flagged_by``)."""
    sets = [
        set(str(v).split(";")) if isinstance(v, str) else set()
        for v in issues.get("flagged_by", pd.Series([""] * len(issues)))
    ]
    return {m: np.array([m in s for s in sets], dtype=bool) for m in methods}


def consensus_order(issues: pd.DataFrame) -> pd.DataFrame:
    """``issues`` ranked most suspicious first: the default order (``problem_score``,
    issue 14; ``consensus_score`` in runs made before it), then ``n_flags``."""
    frame = issues.copy()
    key = "problem_score" if "problem_score" in frame else "consensus_score"
    if key not in frame:
        frame[key] = 0.0
    if "n_flags" not in frame:
        frame["n_flags"] = 0
    frame[key] = pd.to_numeric(frame[key], errors="coerce").fillna(0)
    frame["n_flags"] = pd.to_numeric(frame["n_flags"], errors="coerce").fillna(0).astype(int)
    return frame.sort_values([key, "n_flags"], ascending=False, kind="mergesort").reset_index(
        drop=True
    )


def combinations(counts: dict[str, Any], names: list[str]) -> list[tuple[tuple[str, ...], int]]:
    """UpSet bars from the comparison's counts, largest first (``"none"`` left out).

    ``counts`` is ``run.json["compare"]["agreement"]["combinations"]``: detector names
    joined with ``"+"`` (in the order of ``names``) -> images flagged by exactly them.
    """
    out = []
    for size in range(1, len(names) + 1):
        for combo in itertools.combinations(names, size):
            n = counts.get("+".join(combo), 0)
            out.append((combo, int(n) if isinstance(n, int | float) else 0))
    return sorted(out, key=lambda c: (-c[1], len(c[0])))


def pairwise_matrix(pairs: dict[str, Any], names: list[str]) -> np.ndarray:
    """A names x names matrix from the comparison's ``{a: {b: value}}`` (NaN: missing/None)."""
    out = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        entry = pairs.get(a)
        row = entry if isinstance(entry, dict) else {}
        for j, b in enumerate(names):
            value = row.get(b)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[i, j] = float(value)
    return out


# ---------------------------------------------------------------------- intensity


@dataclass
class IntensityData:
    """Per-class distribution of the protein channel's mean intensity.

    Attributes
    ----------
    column
        The ``image_stats.csv`` column used.
    classes
        DataFrame per class: name, n, q1, median, q3, lo, hi (whiskers), mean,
        std, lower, upper (the 3-sigma bounds, or the detector's own).
    flagged
        DataFrame of flagged (image, class) pairs: row (index into ids), id, class,
        value, z.
    source
        Where the bounds and flags come from (a sentence).
    """

    column: str
    classes: pd.DataFrame
    flagged: pd.DataFrame
    source: str


def intensity_data(art: RunArtifacts) -> IntensityData | None:
    """Per-class intensity distribution, bounds and flagged fields; ``None`` without stats."""
    if art.stats is None or art.given is None:
        return None
    summary = ((art.section("detect").get("detectors") or {}).get("intensity") or {}).get(
        "summary"
    ) or {}
    params = ((art.section("detect").get("detectors") or {}).get("intensity") or {}).get(
        "params"
    ) or {}
    column = summary.get("column") or f"{art.protein_channel}_mean"
    if column not in art.stats.columns:
        return None
    x = pd.to_numeric(art.stats[column], errors="coerce").to_numpy(dtype=float)
    n_sigma = float(params.get("n_sigma") or 3.0)
    use_log = bool(summary.get("log"))
    eps = float(params.get("eps") or 1e-4)
    det_classes = summary.get("classes") or {}
    rows = []
    for k, name in enumerate(art.class_names):
        v = x[art.given[:, k]]
        v = v[np.isfinite(v)]
        row: dict[str, Any] = {"name": name, "n": len(v)}
        if len(v):
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            iqr = q3 - q1
            lo = float(v[v >= q1 - 1.5 * iqr].min())
            hi = float(v[v <= q3 + 1.5 * iqr].max())
            mean, std = float(v.mean()), float(v.std())
            row.update(q1=q1, median=med, q3=q3, lo=lo, hi=hi, mean=mean, std=std)
            center, scale = mean, std
            dc = det_classes.get(name) or {}
            if dc.get("center") is not None and dc.get("scale"):
                center, scale = float(dc["center"]), float(dc["scale"])
            lower, upper = center - n_sigma * scale, center + n_sigma * scale
            if use_log and dc.get("center") is not None:
                lower, upper = np.exp(lower) - eps, np.exp(upper) - eps
            row.update(lower=max(float(lower), 0.0), upper=float(upper))
        rows.append(row)
    classes = pd.DataFrame(rows)
    if "q1" not in classes:  # no class has a finite intensity
        return None

    flagged = _intensity_flags(art, art.given, x, classes)
    if art.findings is not None and (art.findings["detector"] == "intensity").any():
        how = "robust (median/MAD of log intensity)" if use_log else "mean +/- sigma"
        source = f"bounds and flags from the intensity detector ({how}, {n_sigma:g} sigma)"
    else:
        source = f"intensity detector did not run: bounds computed here (mean +/- {n_sigma:g} sd)"
    return IntensityData(column, classes, flagged, source)


def _intensity_flags(
    art: RunArtifacts, given: np.ndarray, x: np.ndarray, classes: pd.DataFrame
) -> pd.DataFrame:
    ids = art.ids or []
    index = {i: r for r, i in enumerate(ids)}
    cls_index = {c: k for k, c in enumerate(art.class_names)}
    f = art.findings
    if f is not None and (f["detector"] == "intensity").any():
        f = f[(f["detector"] == "intensity") & f["flagged"]]
        rows = [index.get(i, -1) for i in f["id"]]
        ks = [cls_index.get(c, -1) for c in f["class"]]
        z = pd.to_numeric(f.get("value", pd.Series(np.nan, f.index)), errors="coerce")
        pairs = [(r, k, zz) for r, k, zz in zip(rows, ks, z, strict=True) if r >= 0 and k >= 0]
    else:
        pairs = []
        for k in range(art.n_classes):
            lower, upper = classes.loc[k].get("lower"), classes.loc[k].get("upper")
            if lower is None or pd.isna(lower):
                continue
            sd = classes.loc[k, "std"] or 1.0
            for r in np.flatnonzero(given[:, k] & ((x < lower) | (x > upper))):
                pairs.append((int(r), k, (x[r] - classes.loc[k, "mean"]) / sd))
    return pd.DataFrame(
        {
            "row": [p[0] for p in pairs],
            "id": [ids[p[0]] for p in pairs],
            "class": [art.class_names[p[1]] for p in pairs],
            "value": [float(x[p[0]]) for p in pairs],
            "z": [float(p[2]) for p in pairs],
        }
    )


# ---------------------------------------------------------------------- embedding


def project_2d(emb: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """A 2-D projection of the embeddings: UMAP when importable, else PCA.

    Returns
    -------
    xy, method
        N x 2 float32 coordinates and the method's name.
    """
    emb = np.nan_to_num(np.asarray(emb, dtype=np.float32))
    n = emb.shape[0]
    if n < 3 or emb.shape[1] < 2:
        xy = np.zeros((n, 2), np.float32)
        xy[:, : min(2, emb.shape[1])] = emb[:, :2]
        return xy, "raw"
    try:
        import umap  # type: ignore[import-not-found]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, n - 1))
            return reducer.fit_transform(emb).astype(np.float32), "UMAP"
    except ImportError:
        pass
    from sklearn.decomposition import PCA

    x = (emb - emb.mean(axis=0)) / (emb.std(axis=0) + 1e-8)
    return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32), "PCA"
