"""The detector interface: inputs, results, the base class and the registry.

Modelled on cleanlab's Datalab (one class per issue type, registered by name) and on
scikit-learn estimators (keyword-only constructor parameters stored under their own
names, ``get_params``/``set_params``, ``parameter_constraints`` checked in one place:
:mod:`labelaudit.core.params`). A new detector is one class, its parameters the fields
of a keyword-only dataclass::

    @register("mine")
    @dataclass(kw_only=True, eq=False, repr=False)
    class Mine(Detector):
        requires = ("probs",)
        parameter_constraints = {"alpha": [Interval(Real, 0, 1, closed="both")]}

        alpha: float = 0.5

        def detect(self, inputs: AuditInputs) -> DetectorResult: ...

Scores follow one convention everywhere: higher = more suspicious.
"""

from __future__ import annotations

import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd

from labelaudit.core.errors import RunDirError, SettingsError
from labelaudit.core.params import Constraint, validate_params
from labelaudit.data.roles import exclusive_indices

#: Columns of the tidy findings table (``findings.csv``). ``value`` is the raw,
#: detector-specific number behind ``score`` (a probability, a signed z, ...).
FINDINGS_COLUMNS = ["id", "class", "detector", "score", "flagged", "suggestion", "value"]

#: Inputs a detector may require (attribute names of :class:`AuditInputs`).
INPUT_NAMES = ("labels", "probs", "embeddings", "stats", "pixels", "cells")


@dataclass
class PixelSignatures:
    """The cached pixels of the images, for detectors that compare pixels (duplicates).

    Attributes
    ----------
    keys
        One digest per image of its cached pixels and full-resolution statistics
        (:func:`labelaudit.detect.duplicates.pixel_keys`): equal keys, identical images.
    images
        (N, C, S, S) uint8 cached pixels, in the order of the images.
    """

    keys: list[str]
    images: np.ndarray


@dataclass
class CellPredictions:
    """The cells of the fields and the cell-level model's out-of-fold view of them.

    Attributes
    ----------
    table
        One row per cell: at least ``cell_id`` and ``id`` (its field's id).
    probs
        (M, K) out-of-fold cell probabilities, rows aligned with ``table``.
    embeddings
        (M, D) cell embeddings, or ``None``.
    """

    table: pd.DataFrame
    probs: np.ndarray
    embeddings: np.ndarray | None = None


@dataclass
class AuditInputs:
    """Everything the detectors look at, aligned by row (row i = image i).

    Parameters
    ----------
    ids
        One id per image.
    class_names
        K human-readable class names (used in ``findings.csv``).
    class_tokens
        How each class is written in the dataset (HPA: ``"0"``..``"18"``).
    label_sep
        Separator of labels in the dataset's notation (``"|"`` or ``" "``).
    labels
        Boolean N x K matrix of the given labels.
    probs
        Float N x K out-of-fold sigmoid probabilities, or ``None``.
    embeddings
        Float N x D embeddings, or ``None``.
    stats
        Per-image channel statistics (columns ``f"{channel}_{stat}"``), or ``None``.
    protein_channel
        The channel whose intensity the labels describe (HPA: ``"green"``): the
        target stain; the other channels are references.
    exclusive_classes
        Names of the classes never combined with another class (HPA: Negative;
        :mod:`labelaudit.data.roles`).
    pixels
        The cached pixels and their digests (:class:`PixelSignatures`), or ``None``.
    cells
        The fields' cells with their out-of-fold probabilities
        (:class:`CellPredictions`), or ``None``.
    """

    ids: list[str]
    class_names: list[str]
    class_tokens: list[str]
    label_sep: str
    labels: np.ndarray
    probs: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    stats: pd.DataFrame | None = None
    protein_channel: str = "green"
    exclusive_classes: tuple[str, ...] = ()
    pixels: PixelSignatures | None = None
    cells: CellPredictions | None = None

    def __post_init__(self) -> None:
        self.ids = [str(i) for i in self.ids]
        self.class_names = [str(c) for c in self.class_names]
        self.class_tokens = [str(c) for c in self.class_tokens]
        self.labels = np.asarray(self.labels).astype(bool, copy=False)
        if self.labels.ndim != 2:
            raise RunDirError(f"labels must be an N x K matrix, got shape {self.labels.shape}")
        n, k = self.labels.shape
        if len(self.ids) != n:
            raise RunDirError(f"{len(self.ids)} ids but {n} rows of labels")
        if len(set(self.ids)) != n:
            raise RunDirError("image ids are not unique")
        if len(self.class_names) != k or len(self.class_tokens) != k:
            raise RunDirError(
                f"{k} label columns but {len(self.class_names)} class names and "
                f"{len(self.class_tokens)} class tokens"
            )
        unknown = [c for c in self.exclusive_classes if c not in self.class_names]
        if unknown:
            raise RunDirError(f"exclusive class(es) not among the classes: {', '.join(unknown)}")
        self.exclusive_classes = tuple(str(c) for c in self.exclusive_classes)
        if self.probs is not None:
            self.probs = np.asarray(self.probs, dtype=np.float64)
            if self.probs.shape != (n, k):
                raise RunDirError(f"probs have shape {self.probs.shape}, expected {(n, k)}")
            if not np.all(np.isfinite(self.probs)):
                raise RunDirError("probs contain NaN or infinite values")
            if self.probs.size and (self.probs.min() < 0 or self.probs.max() > 1):
                raise RunDirError("probs must lie in [0, 1] (sigmoid outputs)")
        if self.embeddings is not None:
            self.embeddings = np.asarray(self.embeddings)
            if self.embeddings.ndim != 2 or self.embeddings.shape[0] != n:
                raise RunDirError(
                    f"embeddings have shape {self.embeddings.shape}, expected {n} rows"
                )
            if not np.all(np.isfinite(self.embeddings)):
                raise RunDirError("embeddings contain NaN or infinite values")
        if self.stats is not None:
            if len(self.stats) != n:
                raise RunDirError(f"stats have {len(self.stats)} rows, expected {n}")
            self.stats = self.stats.reset_index(drop=True)
        if self.pixels is not None:
            counts = (len(self.pixels.keys), len(self.pixels.images))
            if counts != (n, n):
                raise RunDirError(
                    f"pixels of {counts[1]} images with {counts[0]} keys, expected {n}"
                )
        if self.cells is not None:
            m = len(self.cells.table)
            if np.shape(self.cells.probs) != (m, k):
                raise RunDirError(
                    f"cell probs have shape {np.shape(self.cells.probs)}, expected {(m, k)}"
                )
            emb = self.cells.embeddings
            if emb is not None and len(emb) != m:
                raise RunDirError(f"{len(emb)} cell embeddings for {m} cells")

    @property
    def n_images(self) -> int:
        return self.labels.shape[0]

    @property
    def n_classes(self) -> int:
        return self.labels.shape[1]

    def has(self, name: str) -> bool:
        """Whether the input ``name`` (``"probs"``, ``"embeddings"``, ...) is present."""
        return getattr(self, name, None) is not None

    @property
    def exclusive_idx(self) -> np.ndarray:
        """Column indices of the exclusive classes."""
        return exclusive_indices(self.class_names, self.exclusive_classes)

    def label_lists(self) -> list[list[int]]:
        """Given labels as a list of class-index lists (cleanlab's multi-label format)."""
        return label_lists(self.labels)

    def format_labels(self, mask: np.ndarray) -> list[str]:
        """Write each row of a boolean N x K matrix in the dataset's notation."""
        mask = np.asarray(mask, dtype=bool)
        if len(mask) == 0:
            return []
        # Few distinct label sets among many images: format each set once.
        unique, inverse = np.unique(mask, axis=0, return_inverse=True)
        tokens = self.class_tokens
        text = [self.label_sep.join(tokens[k] for k in np.flatnonzero(row)) for row in unique]
        return [text[i] for i in inverse.reshape(-1)]


def label_lists(labels: np.ndarray) -> list[list[int]]:
    """A boolean N x K matrix as a list of class-index lists, one per row."""
    rows, cols = np.nonzero(labels)
    splits = np.searchsorted(rows, np.arange(1, labels.shape[0]))
    return [c.tolist() for c in np.split(cols, splits)]


@dataclass
class DetectorResult:
    """What one detector found.

    Attributes
    ----------
    detector
        The registered name of the detector.
    findings
        Tidy table with :data:`FINDINGS_COLUMNS`: one row per (image, class) the
        detector looked at; ``class == ""`` for image-level rows.
    image_score
        Float array (N,), higher = more suspicious; the detector's per-image ranking.
    image_flagged
        Bool array (N,): the image has at least one flagged finding.
    columns
        Per-image columns this detector contributes to ``issues.csv``
        (e.g. ``{"label_quality": ...}``), each an array (N,).
    summary
        JSON-serialisable facts for ``run.json`` (thresholds, counts, health).
    seconds
        Wall time of the detection.
    evidence_scores
        Optional per-kind scores (N,) by kind name, for a detector that looks for
        several kinds of problem (quality: one per issue type). The default order
        judges each kind against its own distribution (cleanlab Datalab's one
        issue type, one score); empty: ``image_score`` is the one kind.
    label_evidence
        Optional per-kind scores (N,) of evidence about the *labels* found by a
        detector of another family (quality: an empty target stain with normal
        references, which says the field looks like the exclusive class); the
        default order counts them in the label family, not in ``image_score``.
    evidence_names
        Optional words for a kind in the report's evidence column (``"protein stain
        empty: looks Negative"``); the kind's name otherwise.
    """

    detector: str
    findings: pd.DataFrame
    image_score: np.ndarray
    image_flagged: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    evidence_scores: dict[str, np.ndarray] = field(default_factory=dict)
    label_evidence: dict[str, np.ndarray] = field(default_factory=dict)
    evidence_names: dict[str, str] = field(default_factory=dict)

    @property
    def n_flagged(self) -> int:
        return int(np.count_nonzero(self.image_flagged))


def make_findings(
    inputs: AuditInputs,
    detector: str,
    image_idx: np.ndarray,
    class_idx: np.ndarray | None,
    score: np.ndarray,
    flagged: np.ndarray,
    suggestion: np.ndarray | str,
    value: np.ndarray | None = None,
) -> pd.DataFrame:
    """Build a findings table from parallel arrays.

    Parameters
    ----------
    inputs
        The audit inputs (for ids and class names).
    detector
        Detector name written in every row.
    image_idx
        Row index of the image of each finding.
    class_idx
        Class index of each finding, ``-1`` for image-level rows; ``None`` = all image-level.
    score, flagged, suggestion, value
        Per-finding arrays (``suggestion`` may be one string for all rows).
    """
    image_idx = np.asarray(image_idx, dtype=np.int64)
    n = len(image_idx)
    names = np.asarray([*inputs.class_names, ""], dtype=object)  # index -1 -> ""
    cls = names[np.full(n, -1) if class_idx is None else np.asarray(class_idx, dtype=np.int64)]
    sugg = np.full(n, suggestion, dtype=object) if isinstance(suggestion, str) else suggestion
    return pd.DataFrame(
        {
            "id": np.asarray(inputs.ids, dtype=object)[image_idx],
            "class": cls,
            "detector": np.full(n, detector, dtype=object),
            "score": np.asarray(score, dtype=np.float64),
            "flagged": np.asarray(flagged, dtype=bool),
            "suggestion": np.asarray(sugg, dtype=object),
            "value": np.full(n, np.nan) if value is None else np.asarray(value, dtype=np.float64),
        },
        columns=FINDINGS_COLUMNS,
    )


def empty_findings() -> pd.DataFrame:
    """A findings table with no rows and the right columns and dtypes."""
    return pd.DataFrame(
        {
            "id": pd.Series(dtype=object),
            "class": pd.Series(dtype=object),
            "detector": pd.Series(dtype=object),
            "score": pd.Series(dtype=np.float64),
            "flagged": pd.Series(dtype=bool),
            "suggestion": pd.Series(dtype=object),
            "value": pd.Series(dtype=np.float64),
        }
    )


class Detector(ABC):
    """Base class of the label-problem detectors.

    Subclasses set ``name`` (via :func:`register`), ``requires`` (input names), declare
    their parameters as keyword-only constructor arguments stored under their own
    names (the fields of a ``@dataclass(kw_only=True, eq=False, repr=False)``, as
    the built-in detectors do), their accepted values in ``parameter_constraints``,
    and implement ``detect``. :meth:`get_params` and :meth:`set_params` work as in
    scikit-learn; bad values raise :class:`SettingsError` at construction, on
    :meth:`set_params` and before :meth:`run`.
    """

    name: ClassVar[str] = ""
    #: ``"label"`` (a given label is wrong, missing or extra) or ``"image"`` (the image
    #: itself is bad); ``None``: the label family (:func:`labelaudit.pipeline.compare.family_of`).
    family: ClassVar[str | None] = None
    #: Weight of the detector's whole ranking (rank percentile) in its family's score;
    #: 0 = only its strong evidence (beyond 3 robust sigmas of its own scores) counts.
    bulk_weight: ClassVar[float] = 0.0
    #: Detectors whose evidence this one contains: it replaces them in its family's
    #: bulk order (:func:`labelaudit.pipeline.compare.family_scores`).
    supersedes: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    #: The per-image columns the detector writes into ``issues.csv``
    #: (:attr:`DetectorResult.columns`), each with its kind: ``"score"`` (a number,
    #: NaN where the detector did not run) or ``"text"`` (empty where it did not run).
    issue_columns: ClassVar[dict[str, str]] = {}
    #: Runs after the comparison, on inputs it takes from the run (the image cache's
    #: pixels): its stage appends its columns to ``issues.csv`` and it has no part in
    #: the consensus (duplicates: :func:`labelaudit.pipeline.leaks.add_duplicates`).
    after_comparison: ClassVar[bool] = False
    #: Accepted values per parameter (:func:`labelaudit.core.params.validate_params`).
    parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {}

    def __post_init__(self) -> None:
        self.check_params()

    @classmethod
    def param_names(cls) -> list[str]:
        """The parameter names: the constructor's keyword arguments, in order."""
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return [p.name for p in inspect.signature(cls).parameters.values() if p.kind in kinds]

    @classmethod
    def check_param_names(cls, names: Sequence[str]) -> None:
        """Raise :class:`SettingsError` when a name in ``names`` is no parameter."""
        valid = cls.param_names()
        unknown = sorted(set(names) - set(valid))
        if unknown:
            raise SettingsError(
                f"detector {cls.name!r} has no parameter {', '.join(map(repr, unknown))} "
                f"(valid: {', '.join(sorted(valid)) or 'none'})"
            )

    def get_params(self) -> dict[str, Any]:
        """The detector's parameters (name -> value)."""
        return {key: getattr(self, key) for key in self.param_names()}

    def set_params(self, **params: Any) -> Detector:
        """Set parameters; unknown names and bad values raise :class:`SettingsError`."""
        self.check_param_names(list(params))
        for key, value in params.items():
            setattr(self, key, value)
        self.check_params()
        return self

    def check_params(self) -> None:
        """Check parameter values against ``parameter_constraints``; raise
        :class:`SettingsError` on a bad one (a detector with further rules extends it)."""
        validate_params(self.get_params(), self.parameter_constraints, owner=self.name)

    def applies(self, inputs: AuditInputs) -> bool:
        """Whether the detector has anything to look at in this dataset (``False``:
        it is left out without a warning, e.g. ``exclusive`` on a dataset that
        declares no exclusive class)."""
        return True

    def missing_inputs(self, inputs: AuditInputs) -> list[str]:
        """The required inputs that ``inputs`` lacks."""
        return [r for r in self.requires if not inputs.has(r)]

    def check_inputs(self, inputs: AuditInputs) -> None:
        """Raise :class:`SettingsError` when a required input is missing."""
        missing = self.missing_inputs(inputs)
        if missing:
            raise SettingsError(
                f"detector {self.name!r} needs {', '.join(missing)}, which the inputs lack"
            )

    def run(self, inputs: AuditInputs) -> DetectorResult:
        """Detect label problems.

        Parameters
        ----------
        inputs
            The audit inputs; those in ``requires`` must be present.

        Returns
        -------
        DetectorResult
            Findings, per-image scores and flags, issues.csv columns and a summary.
        """
        self.check_inputs(inputs)
        self.check_params()
        start = time.perf_counter()
        result = self.detect(inputs)
        result.seconds = time.perf_counter() - start
        n = inputs.n_images
        assert result.image_score.shape == (n,) and result.image_flagged.shape == (n,)
        return result

    def find(self, inputs: AuditInputs) -> pd.DataFrame:
        """The findings table only (see :meth:`run`)."""
        return self.run(inputs).findings

    @abstractmethod
    def detect(self, inputs: AuditInputs) -> DetectorResult:
        """Do the detection (the hook a detector implements; call :meth:`run`, which
        checks the inputs and parameters first and times it)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


REGISTRY: dict[str, type[Detector]] = {}


DetectorClass = TypeVar("DetectorClass", bound=type[Detector])


def register(name: str) -> Callable[[DetectorClass], DetectorClass]:
    """Class decorator: register a :class:`Detector` subclass under ``name``.

    Registering a name again replaces the earlier class (handy for experiments).
    """

    def decorator(cls: DetectorClass) -> DetectorClass:
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise TypeError(f"@register({name!r}) needs a Detector subclass, got {cls!r}")
        for r in cls.requires:
            if r not in INPUT_NAMES:
                raise TypeError(f"{cls.__name__}.requires names unknown input {r!r}")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return decorator


def available_detectors() -> list[str]:
    """Names of the registered detectors, in registration order."""
    return list(REGISTRY)


def get_detector(name: str, **params: Any) -> Detector:
    """Instantiate the detector registered as ``name`` with ``params``.

    Raises
    ------
    SettingsError
        Unknown name or parameter.
    """
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise SettingsError(
            f"unknown detector {name!r} (available: {', '.join(available_detectors())})"
        ) from None
    cls.check_param_names(list(params))
    return cls(**params)


def per_image_max(
    n: int, image_idx: np.ndarray, values: np.ndarray, fill: float = 0.0
) -> np.ndarray:
    """Largest ``values`` per image (``fill`` where an image has none)."""
    out = np.full(n, -np.inf)
    np.maximum.at(out, np.asarray(image_idx, dtype=np.int64), np.asarray(values, dtype=float))
    out[np.isneginf(out)] = fill
    return out


def per_image_any(n: int, image_idx: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Whether each image has at least one ``True`` in ``mask``."""
    out = np.zeros(n, dtype=bool)
    out[np.asarray(image_idx, dtype=np.int64)[np.asarray(mask, dtype=bool)]] = True
    return out
