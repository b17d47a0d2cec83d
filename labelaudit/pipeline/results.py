"""What an audit hands back in Python: the run directory's tables as DataFrames.

:func:`labelaudit.pipeline.scan` and :func:`labelaudit.pipeline.find_issues` both return an
:class:`AuditResult` (``scan``'s is a :class:`~labelaudit.pipeline.scan.ScanResult`, which adds
the dataset and timings): ``.issues`` is ``issues.csv`` as a DataFrame, ``.summary``
the headline numbers and what was skipped, ``.duplicates`` ``duplicates.csv`` and
``.report(path)`` writes the HTML report. The files stay the contract; this is a view.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from labelaudit.core.errors import SettingsError
from labelaudit.core.io import atomic_open
from labelaudit.rundir import DUPLICATES_CSV, ISSUES_CSV, RunDir, ensure_outside

#: In the head of every report (its <title>): marks a file as one that may be replaced.
_REPORT_MARK = "<title>labelaudit report: "


@dataclass
class AuditResult:
    """The outcome of an audit, read from its run directory.

    Attributes
    ----------
    run_dir
        The run directory that holds every artifact (``issues.csv``, ``run.json``, ...).
    notes
        What the audit could not look at and why (no images: no image-quality evidence,
        ...), in words; also in ``summary["notes"]``.
    positions
        Image id -> its row in the caller's input (``find_issues``); ``None``: the
        dataset's order.
    input_ids
        The caller's ids by input row, where the run names the images otherwise
        (``find_issues`` on arrays writes ``{id}.tiff`` files).
    report_path
        The report, once written.
    inputs
        ``(description, path)`` of what the audit read: ``report(path)`` may not write
        onto or into any of them.
    """

    run_dir: Path
    notes: list[str] = field(default_factory=list)
    positions: dict[str, int] | None = field(default=None, repr=False)
    input_ids: list[str] | None = field(default=None, repr=False)
    report_path: Path | None = None
    inputs: list[tuple[str, Path]] = field(default_factory=list, repr=False)

    @property
    def issues(self) -> pd.DataFrame:
        """``issues.csv``: one row per image in review order, with its columns.

        The index is the image's row in the input (the labels' order), as cleanlab's
        ``get_issues`` has it; empty text cells are ``""``.
        """
        frame = RunDir(self.run_dir).read_table(ISSUES_CSV)  # text; typed below
        for column in frame.columns:
            frame[column] = _typed(frame[column])
        if self.positions is not None:
            frame.index = pd.Index([self.positions[str(i)] for i in frame["id"]], name="row")
            if self.input_ids is not None:
                frame["id"] = [self.input_ids[r] for r in frame.index]
        return frame

    @property
    def duplicates(self) -> pd.DataFrame:
        """``duplicates.csv``: pairs of exact and near duplicates (empty when none or not
        looked for, see :attr:`summary`)."""
        run = RunDir(self.run_dir)
        if not run.has(DUPLICATES_CSV):
            return pd.DataFrame(columns=["a", "b", "evidence", "phash_distance"])
        return run.read_report_table(DUPLICATES_CSV)

    @property
    def summary(self) -> dict[str, Any]:
        """The headline numbers: images, classes, flagged images, suggested label
        changes, doubtful labels, duplicates, the detectors that ran and those skipped
        (with the reason), and :attr:`notes`."""
        run = RunDir(self.run_dir).read_run()
        dataset, detect, compare = (run.get(k) or {} for k in ("dataset", "detect", "compare"))
        dups = detect.get("duplicates") or {}
        return {
            "images": dataset.get("n_images"),
            "classes": dataset.get("n_classes"),
            "flagged_images": compare.get("n_consensus_flagged"),
            "label_changes": compare.get("n_label_changes"),
            "doubtful_labels": compare.get("n_doubtful"),
            "duplicate_groups": dups.get("n_groups"),
            "detectors": sorted(detect.get("detectors") or {}),
            "skipped": {k: v.get("reason") for k, v in (detect.get("skipped") or {}).items()},
            "predictions": "supplied" if run.get("predictions") else "cross-validated",
            "notes": list(self.notes),
        }

    def report(self, path: str | Path | None = None) -> Path:
        """Write the HTML report and return its path.

        Parameters
        ----------
        path
            Where to put it (default ``run_dir/report.html``). An existing file there is
            replaced only when it is a labelaudit report.

        Raises
        ------
        SettingsError
            ``path`` is a directory, an existing file labelaudit did not write, or on
            or inside one of the audit's inputs (the dataset, its images).
        """
        from labelaudit.report import write_report

        target = None if path is None else Path(path)
        if target is not None:
            ensure_outside(self.inputs, target, "report")
        written = write_report(self.run_dir)
        self.report_path = written
        if target is None:
            return written
        if target.is_dir():
            raise SettingsError(f"{target} is a directory; give the report's file name")
        if (target.exists() or target.is_symlink()) and not _is_report(target):
            raise SettingsError(
                f"{target} exists and is not a labelaudit report; labelaudit does not "
                "overwrite it: choose another path"
            )
        if os.path.realpath(target) != os.path.realpath(written):
            with open(written, "rb") as src, atomic_open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return target


def _typed(values: pd.Series) -> pd.Series:
    """A text column as numbers or booleans when every non-empty cell is one (empty: NaN)."""
    if values.name == "id":
        return values
    filled = values[values != ""]
    if len(filled) and filled.isin(["True", "False"]).all():
        return values == "True"
    numbers = pd.to_numeric(filled, errors="coerce")
    if len(filled) and numbers.notna().all():
        return pd.to_numeric(values.where(values != ""), errors="coerce")
    if not len(filled) and values.name in _NUMERIC_WHEN_EMPTY:
        return pd.Series(float("nan"), index=values.index, name=values.name)
    return values


#: Score columns that stay numbers (NaN) when no image has a value.
_NUMERIC_WHEN_EMPTY = {"label_quality", "outlier_score", "intensity_z", "knn_disagreement",
                       "quality_score", "consensus_score", "label_score", "image_score",
                       "problem_score", "duplicate_group"}  # fmt: skip


def _is_report(path: Path) -> bool:
    """Whether ``path`` is a regular file that starts like a labelaudit report."""
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as fh:
        head = fh.read(8192).decode("utf-8", "replace")
    return _REPORT_MARK in head
