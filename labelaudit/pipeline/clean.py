"""Cleaning: turn a run's findings into a cleaned dataset and a list of changes.

``clean(RUN, policy=...)`` reads ``issues.csv`` and ``findings.csv`` of a scanned run
and writes

* ``RUN/cleaned/``: a dataset in the input's own layout, with the images referenced,
  not copied. HPA layouts: ``cleaned/train.csv`` (same header and label notation,
  rows in the original order) and ``cleaned/train``, a symbolic link to the original
  image directory. Generic layout: ``cleaned/labels.csv`` (same columns, same image
  paths), a link per top-level entry those paths start with, and ``classes.txt``
  copied. ``labelaudit check`` and ``scan`` accept it as it is.
* ``RUN/changes.csv``: ``id, action, old_labels, new_labels, reason, detail,
  made_by``, one row per image removed (``action = remove``, empty ``new_labels``) or
  relabelled (``action = relabel``), labels in the dataset's notation; ``reason`` is a
  short category, ``detail`` the probabilities, z-scores or decisions-file line behind
  it, ``made_by`` ``person`` (a decision) or ``policy``.
* ``run.json["clean"]``: the policy, its parameters and the counts.

Policies (:data:`POLICIES`): :mod:`labelaudit.pipeline.policies`, where they
register (:func:`~labelaudit.pipeline.policies.register_policy`); ``relabel-soft`` is
the default.

A decisions file (``id, decision, labels``; exported by the report) says what a
person decided about the images it names, and :func:`clean` applies exactly that:

``keep``
    The given labels are right (``labels``, if present, must be the given ones).
``accept``
    Apply the run's suggestion; only where the run suggests a change (``labels``, if
    present, must be the suggestion).
``edit``
    Apply the label set in ``labels`` (a reviewer's own; empty: no label left).
``reject``
    Leave the image out of the cleaned dataset (``labels`` empty).

With a decisions file and no policy asked for, nothing else changes (policy
``none``); with a policy as well (``--policy relabel-soft``), the policy decides the
images the file does not name. Before anything is written the file is checked
against the run: unknown ids, an id decided twice, unknown classes, exclusive
classes combined with others (:mod:`labelaudit.data.roles`), an ``accept``
without a suggestion. ``changes.csv``'s ``made_by`` says per change whether a person
(``person``: a decision) or the policy (``policy``) made it. An image a person
decided gets full loss weight under the soft policies. An image left without labels
is removed.

The input dataset is only read. Every file is written atomically; ``cleaned/`` is
built beside the old one and swapped in when complete.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelaudit.core.errors import DatasetError, RunDirError, SettingsError
from labelaudit.core.io import write_json
from labelaudit.core.userfiles import (
    MAX_MARKER_BYTES,
    is_plain_entry,
    read_user_json,
    read_user_text,
    remove_entry,
)
from labelaudit.data.dataset import Dataset
from labelaudit.data.roles import conflicting_rows, describe_conflict, resolve_exclusive
from labelaudit.pipeline.policies import (  # POLICIES & co: re-exported (clean's API)
    DEFAULT_CONFIDENCE,
    DEFAULT_MIN_CLASS_AP,
    DEFAULT_POLICY,
    POLICIES,
    Plan,
    RunView,
    class_reliability,
    get_policy,
    read_run_view,
    soft_label_weights,
)
from labelaudit.rundir import (
    CHANGES_CSV,
    CLEANED_DIR,
    LABEL_WEIGHTS_CSV,
    RunDir,
    dataset_inputs,
    ensure_outside,
    read_run,
    run_lock,
)

#: ``reason`` is a short category (a handful of distinct values, for counting);
#: ``detail`` the specifics (probabilities, z-scores, the decisions file line).
#: ``made_by``: ``person`` (a decisions file) or ``policy``.
CHANGES_COLUMNS = ["id", "action", "old_labels", "new_labels", "reason", "detail", "made_by"]
#: The decisions a decisions file may hold (module docstring).
DECISIONS = ("keep", "accept", "edit", "reject")
#: One parsed decision: (line number, image index, decision, label row to apply).
Decision = tuple[int, int, str, np.ndarray]
#: The policy applied beside a decisions file when none is asked for: nothing else.
DECISIONS_ONLY_POLICY = "none"

#: Per-label loss weights of the ``soft``, ``relabel-soft`` and ``drop-labels``
#: policies: ``id`` and one column per class name, values in [0, 1].
#: A regular file inside ``cleaned/``: ``{"source": <resolved original dataset root>,
#: "entries": [what labelaudit wrote there]}``. It marks the directory as labelaudit's
#: (only then is an old one replaced), and the dataset loader trusts links that
#: resolve inside ``source``.
CLEANED_MARKER = ".labelaudit-cleaned.json"


@dataclass
class CleanResult:
    """What :func:`clean` wrote.

    Attributes
    ----------
    run_dir, cleaned_dir, changes_file
        The run directory, ``RUN/cleaned`` and ``RUN/changes.csv``.
    policy
        The policy applied (before decisions).
    changes
        The ``changes.csv`` table.
    ids
        Every image of the scan, in dataset order.
    labels
        (N, K) bool cleaned labels (rows of removed images keep their old labels).
    kept
        (N,) bool: the image is in the cleaned dataset.
    n_decisions
        Rows of the decisions file applied.
    weights
        (N, K) float per-label loss weights of the ``soft`` / ``drop-labels``
        policies (``RUN/label_weights.csv``), else ``None``.
    """

    run_dir: Path
    cleaned_dir: Path
    changes_file: Path
    policy: str
    # The tables and arrays stay out of the repr: a notebook prints a few lines.
    changes: pd.DataFrame = field(repr=False)
    ids: list[str] = field(repr=False)
    labels: np.ndarray = field(repr=False)
    kept: np.ndarray = field(repr=False)
    n_decisions: int = 0
    params: dict = field(default_factory=dict)
    weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_removed(self) -> int:
        return int((self.changes["action"] == "remove").sum())

    @property
    def n_relabelled(self) -> int:
        return int((self.changes["action"] == "relabel").sum())

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())


# ------------------------------------------------------------------ decisions


def read_decisions(path: str | Path, view: RunView) -> list[Decision]:
    """Parse a decisions CSV (``id, decision[, labels]``).

    Returns
    -------
    list of (line number, image index, decision, label row)

    Raises
    ------
    DatasetError
        Unreadable file, missing columns, unknown or repeated id, a decision other
        than keep/accept/edit/reject, unknown labels, exclusive classes combined,
        labels that contradict the decision, an accept without a suggestion; the
        message names the file and line.
    """
    path = Path(path)
    text = read_user_text(path, "the decisions file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        rows = [(reader.line_num, r) for r in reader if r and any(x.strip() for x in r)]
    except csv.Error as exc:
        raise DatasetError(f"malformed CSV ({exc})", path=path, row=reader.line_num) from None
    if "id" not in header or "decision" not in header:
        # Name what is missing, never the line itself: the file may be anything
        # (a password file, a key), and messages end up in logs.
        missing = " and ".join(c for c in ("id", "decision") if c not in header)
        raise DatasetError(
            f"expected columns id,decision[,labels]: no {missing} column in the first line "
            "(not a decisions file?)",
            path=path,
            row=1,
        )
    i_id, i_dec = header.index("id"), header.index("decision")
    i_lab = header.index("labels") if "labels" in header else None
    check = _DecisionCheck(view, path)
    seen: dict[str, int] = {}
    out: list[Decision] = []
    for line, fields in rows:
        if len(fields) <= max(i_id, i_dec):
            raise DatasetError(
                f"expected {len(header)} fields, found {len(fields)}", path=path, row=line
            )
        image_id = fields[i_id].strip()
        if image_id in seen:
            raise DatasetError(
                f"image decided twice (first on line {seen[image_id]})",
                path=path,
                row=line,
                image=image_id or None,
            )
        seen[image_id] = line
        cell = fields[i_lab] if i_lab is not None and len(fields) > i_lab else None
        i, labels = check.row(line, image_id, fields[i_dec].strip(), cell)
        out.append((line, i, fields[i_dec].strip().lower(), labels))
    return out


class _DecisionCheck:
    """Checks one decisions-file row against the run; returns the labels it sets."""

    def __init__(self, view: RunView, path: Path) -> None:
        self.view, self.path = view, path
        self.index = {image_id: i for i, image_id in enumerate(view.ids)}
        self.suggested = view.issues["suggested_labels"].astype(str).to_numpy()

    def row(
        self, line: int, image_id: str, decision: str, text: str | None
    ) -> tuple[int, np.ndarray]:
        """(image index, label row to apply) of one decision, or a :class:`DatasetError`.

        No decision but ``reject`` may leave an exclusive class joined with another
        (:mod:`labelaudit.data.roles`), a ``keep`` of such a given set included.
        """
        i, labels = self._decided(line, image_id, decision, text)
        view = self.view
        if decision.lower() != "reject" and conflicting_rows(labels[None, :], view.exclusive)[0]:
            source = {"edit": "written", "accept": "suggested"}.get(decision.lower(), "given")
            raise DatasetError(
                describe_conflict(view.names, labels, view.exclusive, source)
                + f"; {decision.lower()} cannot keep it: write edit with one side",
                path=self.path,
                row=line,
                image=image_id or None,
            )
        return i, labels

    def _decided(
        self, line: int, image_id: str, decision: str, text: str | None
    ) -> tuple[int, np.ndarray]:
        view = self.view

        def bad(message: str) -> DatasetError:
            return DatasetError(message, path=self.path, row=line, image=image_id or None)

        if image_id not in self.index:
            raise bad("unknown image id (not in the scanned dataset)")
        what = decision.lower()
        if what not in DECISIONS:
            raise bad(f"decision must be keep, accept, edit or reject, got {decision!r}")
        i = self.index[image_id]
        given = view.given[i]
        if what in ("keep", "accept") and text is not None and not text.strip():
            text = None  # an empty cell states nothing: keep and accept say which labels
        labels = view.parse(text, where=bad) if text is not None else None
        if what == "keep":
            if labels is not None and not np.array_equal(labels, given):
                raise bad(
                    f"keep means the given labels ({view.fmt(given) or 'none'}) are right, "
                    f"but the labels column says {view.fmt(labels) or 'none'}; write edit "
                    "to set other labels"
                )
            return i, given.copy()
        if what == "accept":
            suggestion = view.parse(self.suggested[i], where=bad)
            if np.array_equal(suggestion, given):
                raise bad(
                    "accept: the run suggests no change for this image; write keep "
                    "(the given labels are right) or edit"
                )
            if labels is not None and not np.array_equal(labels, suggestion):
                raise bad(
                    f"accept applies the run's suggestion ({view.fmt(suggestion)}), but the "
                    f"labels column says {view.fmt(labels) or 'none'}; write edit to set "
                    "other labels"
                )
            return i, suggestion
        if what == "reject":
            if labels is not None and labels.any():
                raise bad(
                    "reject leaves the image out of the cleaned dataset; its labels column "
                    "must be empty (to keep the given labels write keep, to set labels edit)"
                )
            return i, np.zeros_like(given)
        if labels is None:  # edit
            raise bad("edit needs the labels to apply in a labels column")
        return i, labels


def _apply_decisions(
    view: RunView, plan: Plan, decisions: list[Decision], path: Path | None
) -> None:
    """Set the decided images' labels; a person's labels get full loss weight."""
    name = path.name if path is not None else "decisions"
    if plan.decided is None:
        plan.decided = np.zeros(len(view.ids), dtype=bool)
    for line, i, decision, labels in decisions:
        plan.details[i] = f"{name} line {line}"
        plan.decided[i] = True
        if plan.weights is not None:
            plan.weights[i] = 1.0
        if decision == "reject" or (not labels.any() and view.given[i].any()):
            plan.kept[i] = False
            plan.labels[i] = view.given[i]
            left = "" if decision == "reject" else " (no labels left)"
            plan.reasons[i] = f"decision: {decision}{left}"
            continue
        plan.kept[i] = True
        plan.labels[i] = labels
        plan.reasons[i] = f"decision: {decision}"


# ------------------------------------------------------------------ writing the dataset


def _load_source(view: RunView) -> tuple[Dataset, np.ndarray]:
    """The scanned dataset, re-read; checks it still has the scanned ids and labels."""
    ds, rows = RunDir(view.run_dir).load_scanned_dataset(view.info, view.ids)
    if not np.array_equal(ds.labels[rows], view.given):
        raise RunDirError(f"the labels in {ds.label_file} changed since the scan; re-run the scan")
    return ds, rows


def _link(target: Path, link: Path) -> None:
    """A symbolic link to ``target`` (absolute); hard links per file where unsupported."""
    try:
        os.symlink(target, link, target_is_directory=target.is_dir())
        return
    except (OSError, NotImplementedError):
        pass
    try:
        if target.is_dir():
            for src in target.rglob("*"):
                dst = link / src.relative_to(target)
                if src.is_dir():
                    dst.mkdir(parents=True, exist_ok=True)
                else:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.link(src, dst)
        else:
            os.link(target, link)
    except OSError as exc:
        raise RunDirError(
            f"cannot reference {target} from {link} (neither symbolic nor hard links work: "
            f"{exc.strerror}); labelaudit does not copy images"
        ) from None


def _write_dataset(view: RunView, plan: Plan, out: Path, ds: Dataset, rows: np.ndarray) -> int:
    """Write the cleaned dataset into the empty directory ``out``; returns rows written.

    The marker file (:data:`CLEANED_MARKER`) lists every entry written there.
    """
    from labelaudit.data.layouts import (
        cleaned_copy_options,
        cleaned_marker,
        get_layout,
        write_label_file,
    )

    layout = get_layout(ds.layout)
    rows_out = {}  # label-file line -> new label text (None: unchanged)
    for i, r in enumerate(rows):
        if plan.kept[i]:
            changed = not np.array_equal(plan.labels[i], view.given[i])
            rows_out[ds.rows[r]] = view.fmt(plan.labels[i]) if changed else None
    n_rows = write_label_file(ds, out / ds.label_file.name, rows_out)

    root = ds.root.resolve()
    written = [ds.label_file.name]
    for name in layout.extra_files:
        if (root / name).is_file():
            shutil.copyfile(root / name, out / name)
            written.append(name)
    kept_ids = [view.ids[i] for i in np.flatnonzero(plan.kept)]
    # Images in a directory given with --images stay there: the marker names it.
    entries = [] if "images" in ds.options else layout.image_entries(ds, kept_ids)
    for top in entries:
        if top in (ds.label_file.name, *layout.extra_files, CLEANED_MARKER):
            raise RunDirError(f"an image path starts with {top!r}, the name of a label file")
        _link((root / top).resolve(), out / top)
        written.append(top)
    options = cleaned_copy_options(ds) if ds.options else None
    write_json(out / CLEANED_MARKER, cleaned_marker(_source_root(root), written, options))
    return n_rows


def _source_root(root: Path) -> Path:
    """Where the images of ``root`` really live: a cleaned dataset's own (signed) source."""
    from labelaudit.data.layouts import marker_source

    return marker_source(root) or root


def _owned_entries(final: Path) -> set[str] | None:
    """What labelaudit wrote into an existing ``cleaned/`` (``None``: not labelaudit's)."""
    marker = final / CLEANED_MARKER
    if final.is_symlink() or not final.is_dir() or marker.is_symlink() or not marker.is_file():
        return None
    try:
        entries = read_user_json(marker, "the cleaned-dataset marker", max_bytes=MAX_MARKER_BYTES)
    except DatasetError:
        return None
    entries = entries.get("entries") if isinstance(entries, dict) else None
    # Names from a file are untrusted: one that is not a plain child of cleaned/
    # ("../x", "/x") makes the whole marker foreign, so nothing it lists is deleted.
    if not isinstance(entries, list) or not all(is_plain_entry(e) for e in entries):
        return None
    return {*entries, CLEANED_MARKER}


def check_replaceable(final: Path) -> None:
    """Refuse to replace a ``cleaned`` that labelaudit did not write, or that holds foreign files.

    ``scan`` calls it before any work, :func:`clean` before writing.

    Raises
    ------
    RunDirError
        ``final`` exists and is not labelaudit's (no marker, a file, a link), or
        holds entries labelaudit did not write there.
    """
    if not (final.exists() or final.is_symlink()):
        return
    owned = _owned_entries(final)
    if owned is None:
        raise RunDirError(f"{final} {_not_ours_reason(final)}; move it away and run again")
    foreign = sorted(set(os.listdir(final)) - owned)
    if foreign:
        raise RunDirError(
            f"{final} holds files labelaudit did not write ({', '.join(foreign[:3])}); "
            "labelaudit does not delete them: move them away and run again"
        )


def _verify(out: Path, view: RunView, plan: Plan) -> None:
    """The cleaned dataset must load, with exactly the kept images and new labels."""
    from labelaudit.data.layouts import load_dataset, recorded_load_options

    # The cleaned dataset links to the scanned one's images: read them as the scan did
    # (its marker gives its own label file and image directory).
    options = recorded_load_options(view.info)
    options = {k: options[k] for k in ("follow_symlinks", "max_pixels")}
    ds = load_dataset(out, view.info["layout"], **options)
    kept = [view.ids[i] for i in np.flatnonzero(plan.kept)]
    if ds.ids != kept or not np.array_equal(ds.labels, plan.labels[plan.kept]):
        raise AssertionError("the cleaned dataset does not read back as written")


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace ``final`` (labelaudit's, see :func:`_check_replaceable`) by ``tmp``.

    The old directory is renamed aside, the new one renamed into place, then the
    old one's entries that labelaudit wrote are removed (links unlinked, never
    followed) and the directory itself if nothing else is left.
    """
    check_replaceable(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}-old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        _remove_owned(old, _owned_entries(old) or set())


def _not_ours_reason(final: Path) -> str:
    """Why ``final`` is not a cleaned dataset labelaudit may replace, in words."""
    marker = final / CLEANED_MARKER
    if final.is_symlink():
        return "is a symbolic link, not a directory labelaudit wrote; labelaudit does not follow it"
    if not final.is_dir():
        return "is a file, not a directory labelaudit wrote; labelaudit does not replace it"
    if marker.is_symlink() or not (marker.exists() and marker.is_file()):
        return (
            f"was not written by labelaudit (no {CLEANED_MARKER} in it); labelaudit does "
            "not replace it"
        )
    return (
        f"has a damaged or forged {CLEANED_MARKER} (its entries must be plain names inside "
        f"{final.name}/); labelaudit deletes nothing it lists"
    )


def _remove_owned(directory: Path, owned: set[str]) -> None:
    """Remove the named entries of ``directory`` (labelaudit's), then the directory if empty."""
    for name in sorted(owned):
        remove_entry(directory, name)  # links unlinked, never followed; containment checked
    with contextlib.suppress(OSError):
        directory.rmdir()


# ------------------------------------------------------------------ entry point


def resolve_policy(policy: str | None, decisions: str | Path | None) -> str:
    """The policy to apply: the one asked for; else ``none`` beside a decisions file
    (only what was decided changes), else :data:`DEFAULT_POLICY`."""
    if policy is not None:
        return policy
    return DECISIONS_ONLY_POLICY if decisions is not None else DEFAULT_POLICY


def plan_changes(
    run_dir: str | Path,
    *,
    policy: str | None = None,
    decisions: str | Path | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    min_class_ap: float = DEFAULT_MIN_CLASS_AP,
) -> tuple[RunView, Plan, int]:
    """Apply a policy (and decisions) to a run without writing anything.

    ``policy=None``: :func:`resolve_policy` (with a decisions file, only its
    decisions change anything).

    Returns
    -------
    (view of the run, plan: new labels / kept / reasons per image, decisions applied)
    """
    asked = policy  # None: not asked for (only a decisions file may change rows)
    policy = resolve_policy(policy, decisions)
    chosen = get_policy(policy)
    if not 0.5 < float(confidence) <= 1.0:
        raise SettingsError(f"confidence must be in (0.5, 1], got {confidence}")
    if not 0.0 <= float(min_class_ap) <= 1.0:
        raise SettingsError(f"min_class_ap must be in [0, 1], got {min_class_ap}")
    view = read_run_view(run_dir)
    plan = chosen.func(view, confidence=float(confidence), min_class_ap=float(min_class_ap))
    parsed = read_decisions(decisions, view) if decisions is not None else []
    _apply_decisions(view, plan, parsed, Path(decisions) if decisions else None)
    if asked is None and decisions is not None:
        _refuse_undecided_conflicts(view, plan, Path(decisions))
    _resolve_exclusive(view, plan)
    return view, plan, len(parsed)


def _refuse_undecided_conflicts(view: RunView, plan: Plan, path: Path) -> None:
    """With decisions alone, a given set joining an exclusive class stays a person's call.

    Only what the file decides may change without a policy, and no output ever joins
    an exclusive class with another: so such images must be decided in the file
    (``edit`` one side, or ``reject``), or a policy asked for, which resolves them by
    the probabilities (:func:`_resolve_exclusive`).

    Raises
    ------
    DatasetError
        Naming the decisions file, how many images are undecided and the first few.
    """
    decided = plan.decided if plan.decided is not None else np.zeros(len(view.ids), bool)
    open_rows = plan.kept & ~decided & conflicting_rows(plan.labels, view.exclusive)
    if not open_rows.any():
        return
    first = [
        f"{view.ids[i]} ({describe_conflict(view.names, plan.labels[i], view.exclusive)})"
        for i in np.flatnonzero(open_rows)[:3]
    ]
    n = int(open_rows.sum())
    raise DatasetError(
        f"{n} image(s) the file does not decide join an exclusive class with another, "
        f"which no cleaned dataset may keep: {'; '.join(first)}{'; ...' if n > 3 else ''}; "
        "decide them (edit one side, or reject) or ask for a policy (--policy none "
        "resolves them by the probabilities)",
        path=path,
    )


def _resolve_exclusive(view: RunView, plan: Plan) -> None:
    """No kept image leaves with an exclusive class joined to another class.

    Whatever the policy (the soft ones keep the given labels) or a reviewer's
    ``reject`` (which keeps them too), such a set is never right: the side the
    out-of-fold probabilities support stays (:func:`labelaudit.data.roles.
    resolve_exclusive`); without probabilities the image is removed (nothing says
    which side is wrong).
    """
    conflict = plan.kept & conflicting_rows(plan.labels, view.exclusive)
    for i in np.flatnonzero(conflict):
        what = describe_conflict(view.names, plan.labels[i], view.exclusive)
        if view.probs is None:
            plan.kept[i] = False
            plan.labels[i] = view.given[i]
            plan.reasons[i] = "exclusive class joined with another (no probabilities)"
        else:
            plan.labels[i] = resolve_exclusive(
                plan.labels[i : i + 1], view.probs[i : i + 1], view.exclusive
            )[0]
            plan.reasons[i] = "exclusive class joined with another"
        plan.details[i] = "; ".join(d for d in (what, plan.details[i]) if d)


def changes_table(view: RunView, plan: Plan) -> pd.DataFrame:
    """The ``changes.csv`` rows: every removed or relabelled image, dataset order."""
    records = []
    decided = plan.decided if plan.decided is not None else np.zeros(len(view.ids), bool)
    for i, image_id in enumerate(view.ids):
        old = view.fmt(view.given[i])
        by = "person" if decided[i] else "policy"
        if not plan.kept[i]:
            records.append((image_id, "remove", old, "", plan.reasons[i], plan.details[i], by))
        elif not np.array_equal(plan.labels[i], view.given[i]):
            new = view.fmt(plan.labels[i])
            records.append((image_id, "relabel", old, new, plan.reasons[i], plan.details[i], by))
    return pd.DataFrame.from_records(records, columns=CHANGES_COLUMNS)


def clean(
    run_dir: str | Path,
    *,
    policy: str | None = None,
    decisions: str | Path | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    min_class_ap: float = DEFAULT_MIN_CLASS_AP,
) -> CleanResult:
    """Write ``RUN/cleaned/`` and ``RUN/changes.csv`` for a scanned run.

    Parameters
    ----------
    run_dir
        A run directory with ``run.json``, ``dataset.csv``, ``issues.csv`` (and
        ``findings.csv`` for the ``relabel`` and ``intensity`` policies).
    policy
        One of :data:`POLICIES` (:mod:`~labelaudit.pipeline.policies`); ``None``: ``none`` beside a
        decisions file (only the decisions change anything), else
        :data:`DEFAULT_POLICY`.
    decisions
        A decisions CSV (``id, decision, labels``, as exported by the report); checked
        against the run before anything is written. It overrides the policy for the
        images it names.
    confidence
        ``relabel``: the probability a suggested class needs (``1 - confidence``
        for a class to remove).
    min_class_ap
        ``relabel``: the out-of-fold average precision a class needs before its
        suggestions are trusted (0 trusts every class).

    Returns
    -------
    CleanResult

    Raises
    ------
    SettingsError
        Unknown policy, bad ``confidence``, or a result with no image left.
    DatasetError
        A bad decisions file (naming the file and line).
    RunDirError
        Missing run artifacts, or a dataset that changed since the scan.
    """
    run_dir = Path(run_dir)
    read_run(run_dir)  # a run directory (before the lock file is created in it)
    with run_lock(run_dir):
        return _clean(
            run_dir,
            policy=policy,
            decisions=decisions,
            confidence=confidence,
            min_class_ap=min_class_ap,
        )


def _clean(
    run_dir: Path,
    *,
    policy: str | None,
    decisions: str | Path | None,
    confidence: float,
    min_class_ap: float,
) -> CleanResult:
    start = time.perf_counter()
    view, plan, n_decisions = plan_changes(
        run_dir,
        policy=policy,  # None with decisions: only they may change anything
        decisions=decisions,
        confidence=confidence,
        min_class_ap=min_class_ap,
    )
    policy = resolve_policy(policy, decisions)
    if not plan.kept.any():
        raise SettingsError(
            f"cleaning policy {policy!r} would remove all {len(view.ids)} images; "
            "nothing would be left to train on"
        )
    changes = changes_table(view, plan)

    final = run_dir / CLEANED_DIR
    changes_file = run_dir / CHANGES_CSV
    weights_file = run_dir / LABEL_WEIGHTS_CSV
    n_rows = _write_cleaned(view, plan, decisions, final, changes_file, weights_file)
    RunDir(run_dir).write_table(CHANGES_CSV, changes)
    if plan.weights is not None:
        RunDir(run_dir).write_table(LABEL_WEIGHTS_CSV, label_weights_table(view, plan.weights))
    elif weights_file.is_file():
        weights_file.unlink()  # an earlier soft policy's (run directory files are ours)
    params = _policy_params(view, policy, confidence, min_class_ap)
    RunDir(run_dir).write_section(
        "clean",
        {
            "policy": policy,
            "params": params,
            "decisions": str(Path(decisions).resolve()) if decisions is not None else None,
            "n_decisions": n_decisions,
            "n_images": len(view.ids),
            "n_kept": int(plan.kept.sum()),
            "n_removed": int((changes["action"] == "remove").sum()),
            "n_relabelled": int((changes["action"] == "relabel").sum()),
            "n_by_person": int((changes["made_by"] == "person").sum()),
            "n_by_policy": int((changes["made_by"] == "policy").sum()),
            "label_weights": str(weights_file.resolve()) if plan.weights is not None else None,
            "n_rows_written": n_rows,
            "cleaned": str(final.resolve()),
            "changes": str(changes_file.resolve()),
            "source": view.info.get("path"),
            "seconds": round(time.perf_counter() - start, 3),
        },
    )
    return CleanResult(
        run_dir=run_dir,
        cleaned_dir=final,
        changes_file=changes_file,
        policy=policy,
        changes=changes,
        ids=view.ids,
        labels=plan.labels,
        kept=plan.kept,
        n_decisions=n_decisions,
        params=params,
        weights=plan.weights,
    )


def _write_cleaned(
    view: RunView,
    plan: Plan,
    decisions: str | Path | None,
    final: Path,
    changes_file: Path,
    weights_file: Path,
) -> int:
    """Build ``cleaned/`` beside the old one, verify it, swap it in; rows written.

    Every output is checked first: none may land on, inside or around an input.
    """
    ds, rows = _load_source(view)
    # No output on, inside or around an input (the scanned dataset may be this
    # run's own cleaned/ when an older labelaudit scanned it; a decisions file
    # may sit in the run directory).
    inputs = dataset_inputs(ds)
    if decisions is not None:
        inputs.append(("the decisions file", Path(decisions)))
    for output, what in (
        (final, "cleaned dataset"),
        (changes_file, "changes file"),
        (weights_file, "label weights file"),
    ):
        ensure_outside(inputs, output, what)
    check_replaceable(final)
    run_dir = view.run_dir
    tmp = run_dir / f".{CLEANED_DIR}-tmp-{os.getpid()}"
    remove_entry(run_dir, tmp.name)  # our own leftover (same pid, hidden name of our pattern)
    tmp.mkdir()
    try:
        n_rows = _write_dataset(view, plan, tmp, ds, rows)
        _verify(tmp, view, plan)
        _swap_in(tmp, final)
    finally:
        remove_entry(run_dir, tmp.name)
    return n_rows


def _policy_params(
    view: RunView, policy: str, confidence: float, min_class_ap: float
) -> dict[str, Any]:
    """``run.json["clean"]["params"]``: a suggestion policy's parameters and class APs."""
    params: dict[str, Any] = {}
    if get_policy(policy).uses_suggestions:
        params = {"confidence": float(confidence), "min_class_ap": float(min_class_ap)}
        ap = class_reliability(view)
        params["class_ap"] = {
            n: (None if np.isnan(a) else round(float(a), 4))
            for n, a in zip(view.names, ap, strict=True)
        }
    return params


def label_weights_table(view: RunView, weights: np.ndarray) -> pd.DataFrame:
    """``label_weights.csv``: ``id`` and one column of weights per class name."""
    frame = pd.DataFrame(np.round(weights.astype(float), 4), columns=view.names)
    frame.insert(0, "id", view.ids)
    return frame


def read_label_weights(run_dir: str | Path, ids: list[str], names: list[str]) -> np.ndarray | None:
    """``RUN/label_weights.csv`` aligned to ``ids`` and ``names``; ``None`` if absent.

    Raises
    ------
    RunDirError
        Missing ids or classes, or weights that are not finite numbers in [0, 1].
    """
    path = Path(run_dir) / LABEL_WEIGHTS_CSV
    if not path.is_file():
        return None
    frame = RunDir(run_dir).read_table(LABEL_WEIGHTS_CSV)
    missing = [c for c in ["id", *names] if c not in frame.columns]
    if missing:
        raise RunDirError(f"{path}: column(s) {', '.join(missing)} missing")
    frame = frame.drop_duplicates("id").set_index("id")
    absent = [i for i in ids if i not in frame.index]
    if absent:
        raise RunDirError(f"{path}: no weights for {len(absent)} image(s), e.g. {absent[0]!r}")
    values = frame.loc[ids, names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise RunDirError(f"{path}: weights must be numbers in [0, 1]")
    return values.astype(np.float32)


def read_changes(run_dir: str | Path) -> pd.DataFrame:
    """Read ``RUN/changes.csv`` (every column as text, empty strings kept)."""
    path = Path(run_dir) / CHANGES_CSV
    frame = RunDir(run_dir).read_table(CHANGES_CSV)
    missing = [c for c in CHANGES_COLUMNS[:5] if c not in frame.columns]
    if missing:
        raise RunDirError(f"{path}: column(s) {', '.join(missing)} missing")
    bad = sorted(set(frame["action"]) - {"remove", "relabel"})
    if bad:
        raise RunDirError(f"{path}: unknown action(s) {', '.join(map(repr, bad))}")
    return frame


__all__ = [
    "CHANGES_COLUMNS",
    "DECISIONS",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MIN_CLASS_AP",
    "DEFAULT_POLICY",
    "POLICIES",
    "CleanResult",
    "changes_table",
    "check_replaceable",
    "class_reliability",
    "clean",
    "plan_changes",
    "read_changes",
    "read_decisions",
    "read_label_weights",
    "resolve_policy",
    "soft_label_weights",
]
