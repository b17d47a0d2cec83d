"""Read a run directory for the report, tolerating every missing or broken artifact.

Only a missing run directory (no ``run.json``, or unreadable JSON) is an error. Any
other artifact that is absent or does not fit the others is left as ``None`` and a
sentence saying what is missing and how to produce it is recorded in
:attr:`RunArtifacts.missing`, so the report shows it in place of the section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelaudit.core.errors import DatasetError, RunDirError
from labelaudit.data.labels import LabelCodec
from labelaudit.rundir import (
    BENCH_JSON,
    CHANGES_CSV,
    DATASET_CSV,
    EMBEDDINGS_NPY,
    OOF_CSV,
    RETRAIN_METRICS,
    STATS_CSV,
    RunDir,
)

#: How to produce each artifact, shown where it is missing.
HOW_TO: dict[str, str] = {
    "dataset": "run `labelaudit scan DATASET --out RUN`",
    "dataset.csv": "run `labelaudit scan DATASET --out RUN`",
    "image_stats.csv": "run `labelaudit scan DATASET --out RUN` (the cache stage writes it)",
    "train": "run `labelaudit scan DATASET --out RUN` to the end of training",
    "oof_probs.csv": "run `labelaudit scan DATASET --out RUN` to the end of training",
    "embeddings.npy": "run `labelaudit scan DATASET --out RUN` to the end of training",
    "issues.csv": "run `labelaudit scan` until the detectors have run",
    "findings.csv": "run `labelaudit scan` until the detectors have run",
    "bench.json": "run `labelaudit bench RUN --truth DATASET/truth.csv` (synthetic datasets)",
    "changes.csv": "run `labelaudit clean RUN` (optionally with `--decisions FILE`)",
    "retrain/metrics.json": "run `labelaudit retrain --clean --run RUN`",
    "cache": "re-run `labelaudit scan` to rebuild the image cache",
}


@dataclass
class RunArtifacts:
    """Everything the report reads, aligned to the ids of ``dataset.csv``.

    Attributes
    ----------
    run_dir
        The run directory.
    run
        ``run.json`` (sections ``dataset``, ``train``, ``detect``, ``compare``,
        ``timings``; each may be absent).
    ids
        Image ids in dataset order (``None`` without ``dataset.csv``).
    given
        Boolean N x K given labels.
    class_names, class_tokens, label_sep, channels, protein_channel
        From ``run.json["dataset"]``.
    probs
        Float N x K out-of-fold probabilities, rows aligned with ``ids``.
    embeddings
        Float N x D, rows aligned with ``ids``.
    stats
        ``image_stats.csv`` reindexed to ``ids``.
    issues
        ``issues.csv`` as written (ranked), ids as strings.
    findings
        ``findings.csv``.
    bench, retrain
        ``bench.json`` and ``retrain/metrics.json`` contents.
    changes
        ``changes.csv``.
    missing
        Artifact name -> a sentence saying what is missing and how to produce it.
    """

    run_dir: Path
    run: dict[str, Any]
    ids: list[str] | None = None
    given: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    class_tokens: list[str] = field(default_factory=list)
    label_sep: str = "|"
    channels: list[str] = field(default_factory=list)
    protein_channel: str = "green"
    probs: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    stats: pd.DataFrame | None = None
    issues: pd.DataFrame | None = None
    findings: pd.DataFrame | None = None
    bench: dict[str, Any] | None = None
    changes: pd.DataFrame | None = None
    retrain: dict[str, Any] | None = None
    missing: dict[str, str] = field(default_factory=dict)
    _codec: LabelCodec | None = field(default=None, repr=False)

    @property
    def n_images(self) -> int:
        return 0 if self.ids is None else len(self.ids)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def section(self, name: str) -> dict[str, Any]:
        """A ``run.json`` section, ``{}`` when absent or not an object."""
        value = self.run.get(name)
        return value if isinstance(value, dict) else {}

    def note_missing(self, name: str, why: str | None = None) -> None:
        """Record that ``name`` is unavailable (``why`` replaces "not found")."""
        what = why or f"{name} not found in {self.run_dir}"
        self.missing[name] = f"{what}; {HOW_TO.get(name, 're-run the scan')}."

    def why(self, *names: str) -> str:
        """The recorded reasons for ``names`` (for a section's placeholder)."""
        return " ".join(self.missing[n] for n in names if n in self.missing)

    def parse_labels(self, value: Any) -> list[int]:
        """Class indices of a label string in the dataset's notation (unknown tokens dropped)."""
        return self.codec.indices(value)

    @property
    def codec(self) -> LabelCodec:
        """The label codec of the run's dataset (lenient: unknown tokens are dropped)."""
        key = (tuple(self.class_tokens), self.label_sep)
        if self._codec is None or (tuple(self._codec.tokens), self._codec.sep) != key:
            self._codec = LabelCodec(list(self.class_tokens), self.label_sep)
        return self._codec


#: What a malformed artifact raises while being read (the report then skips it).
UNREADABLE = (
    ValueError, KeyError, IndexError, TypeError, OSError, EOFError, DatasetError, RunDirError
)  # fmt: skip


def load_run(run_dir: str | Path) -> RunArtifacts:
    """Read every report input of ``run_dir``.

    Raises
    ------
    RunDirError
        ``run_dir`` is not a directory with a readable ``run.json``.
    """
    run_dir = Path(run_dir)
    run = RunDir(run_dir).read_run()
    art = RunArtifacts(run_dir=run_dir, run=run)
    _load_dataset(art)
    if art.ids is not None:
        _load_per_image(art)
    _load_optional(art)
    return art


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _load_dataset(art: RunArtifacts) -> None:
    info = art.section("dataset")
    if not info:
        art.note_missing("dataset", "run.json has no dataset section")
        return
    art.class_names = [str(c) for c in _as_list(info.get("class_names"))]
    art.class_tokens = [str(c) for c in _as_list(info.get("class_tokens")) or art.class_names]
    art.label_sep = str(info.get("label_sep") or "|")
    art.channels = [str(c) for c in _as_list(info.get("channels"))]
    art.protein_channel = str(info.get("protein_channel") or "green")
    if len(art.class_tokens) != len(art.class_names):
        art.class_tokens = list(art.class_names)
    if not art.class_names:
        art.note_missing("dataset", "run.json's dataset section lists no classes")
        return
    run = RunDir(art.run_dir)
    if not run.has(DATASET_CSV):
        art.note_missing("dataset.csv")
        return
    try:
        frame = run.read_dataset_table()
        ids = frame["id"].tolist()
        given = art.codec.parse_many(frame["labels"], lenient=True)
    except UNREADABLE as exc:
        art.note_missing("dataset.csv", f"dataset.csv cannot be read ({exc})")
        return
    art.ids, art.given = ids, given


def _load_per_image(art: RunArtifacts) -> None:
    """Artifacts with one row per image, checked against ``dataset.csv``'s ids."""
    ids = art.ids or []
    run = RunDir(art.run_dir)
    oof_ids: list[str] | None = None
    if run.has(OOF_CSV):
        try:
            frame = run.read_report_table(OOF_CSV)
            probs = frame.set_index("id").reindex(ids)[art.class_names].to_numpy(dtype=float)
            if np.isnan(probs).any():
                raise ValueError("its ids or classes do not match dataset.csv")
            art.probs, oof_ids = probs, frame["id"].tolist()
        except UNREADABLE as exc:
            art.note_missing("oof_probs.csv", f"oof_probs.csv cannot be used ({exc})")
    else:
        art.note_missing("oof_probs.csv")

    if run.has(EMBEDDINGS_NPY) and oof_ids is not None:
        try:
            emb = run.read_embeddings()
            if emb is None:  # removed since run.has() saw it
                raise OSError("embeddings.npy is gone")
            if emb.ndim != 2 or emb.shape[0] != len(oof_ids):
                raise ValueError(f"shape {emb.shape}, expected {len(oof_ids)} rows")
            row = {i: r for r, i in enumerate(oof_ids)}
            art.embeddings = np.asarray(emb[[row[i] for i in ids]], dtype=np.float32)
        except UNREADABLE as exc:
            art.note_missing("embeddings.npy", f"embeddings.npy cannot be used ({exc})")
    elif run.has(EMBEDDINGS_NPY):
        art.note_missing("embeddings.npy", "embeddings.npy has no oof_probs.csv to align with")
    else:
        art.note_missing("embeddings.npy")

    if run.has(STATS_CSV):
        try:
            stats = (
                run.read_report_table(STATS_CSV).drop_duplicates("id").set_index("id").reindex(ids)
            )
            art.stats = stats.copy().reset_index()  # one block: reset_index inserts a column
        except UNREADABLE as exc:
            art.note_missing("image_stats.csv", f"image_stats.csv cannot be read ({exc})")
    else:
        art.note_missing("image_stats.csv")

    for name, attr in (("issues.csv", "issues"), ("findings.csv", "findings")):
        if not run.has(name):
            art.note_missing(name)
            continue
        try:
            frame = run.read_report_table(name)
            if "id" not in frame.columns:
                raise ValueError("no id column")
            if name == "findings.csv":
                for col in ("class", "detector", "suggestion"):
                    frame[col] = frame[col].fillna("").astype(str) if col in frame else ""
                flagged = frame["flagged"] if "flagged" in frame else pd.Series(False, frame.index)
                frame["flagged"] = flagged.astype(str).str.lower().isin(["true", "1"])
            setattr(art, attr, frame)
        except UNREADABLE as exc:
            art.note_missing(name, f"{name} cannot be read ({exc})")


def _load_optional(art: RunArtifacts) -> None:
    run = RunDir(art.run_dir)
    for name, attr in ((BENCH_JSON, "bench"), (RETRAIN_METRICS, "retrain")):
        if not run.has(name):
            art.note_missing(name, f"{name} not found (not run)")
            continue
        # run.json records the retrain; a scan of another dataset into the run drops the
        # record, and retrain/ then holds the other dataset's models and numbers
        if attr == "retrain" and not isinstance(art.run.get("retrain"), dict):
            art.note_missing(name, f"{name} is from a scan of another dataset (retrain again)")
            continue
        try:
            data = run.read_json_file(name)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            setattr(art, attr, data)
        except UNREADABLE as exc:
            art.note_missing(name, f"{name} cannot be read ({exc})")
    if run.has(CHANGES_CSV):
        try:
            art.changes = run.read_table(CHANGES_CSV)
        except (*UNREADABLE, RunDirError) as exc:
            art.note_missing("changes.csv", f"changes.csv cannot be read ({exc})")
    else:
        art.note_missing("changes.csv", "changes.csv not found (cleaning not run)")
    if not art.section("train"):
        art.note_missing("train", "run.json has no train section")
