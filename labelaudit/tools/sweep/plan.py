"""What a sweep trains: the axes, the configurations and the evaluation split.

Three axes, as in the method's studies: the backbone, the learning rate and the
output activation. A *grid* trains every combination; *one at a time* (what the
method did) varies one axis while the others stay at the base setting. The base
value of an axis is the preset's (or the overridden) value when it is among the
listed values; otherwise the listed learning rate nearest to it on a log scale, or
the first listed backbone or activation. The per-axis tables hold the other axes
at the base values in both designs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import SupportsFloat, SupportsIndex

from labelaudit.core.config import TrainSettings
from labelaudit.core.errors import SettingsError

#: Each configuration's stored result (scores, per-class F1, curves), in ``runs/NAME/``.
RESULT_NAME = "sweep_result.json"

#: The swept settings, in table order.
AXES: tuple[str, ...] = ("backbone", "lr", "activation")

#: Column titles of the axes in tables.
AXIS_TITLES: dict[str, str] = {
    "backbone": "Backbone",
    "lr": "Learning rate",
    "activation": "Output activation",
}


def format_value(axis: str, value: object) -> str:
    """An axis value as it appears in tables and directory names (``0.001``, ``1e-05``)."""
    if axis == "lr" and isinstance(value, str | SupportsFloat | SupportsIndex):
        return f"{float(value):g}"
    return str(value)


@dataclass(frozen=True)
class Config:
    """One point of the sweep: a backbone, a learning rate and an output activation."""

    backbone: str
    lr: float
    activation: str

    @property
    def name(self) -> str:
        """Directory name under ``RUN/runs/`` (unique within a sweep)."""
        return f"{self.backbone}_lr{format_value('lr', self.lr)}_{self.activation}"

    def value(self, axis: str) -> str | float:
        """The configuration's value on ``axis`` (one of :data:`AXES`)."""
        return getattr(self, axis)

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> Config:
        """The configuration of one value per axis (strings, and a number for ``lr``).

        Raises
        ------
        SettingsError
            A value of the wrong kind (a backbone that is not a string, ...).
        """
        backbone, lr, activation = (values[a] for a in AXES)
        if not (
            isinstance(backbone, str)
            and isinstance(lr, int | float)
            and not isinstance(lr, bool)
            and isinstance(activation, str)
        ):
            raise SettingsError(f"not a sweep configuration: {dict(values)!r}")
        return cls(backbone, lr, activation)

    def label(self) -> str:
        """``backbone / lr / activation`` for messages and legends."""
        return " / ".join(format_value(a, self.value(a)) for a in AXES)

    def settings(self, base: TrainSettings, **extra: object) -> TrainSettings:
        """``base`` with this configuration's values (validated)."""
        return base.replace(backbone=self.backbone, lr=self.lr, activation=self.activation, **extra)


@dataclass(frozen=True)
class EvaluationScheme:
    """How each configuration is evaluated.

    Attributes
    ----------
    folds
        K of the stratified K-fold assignment (the same for every configuration).
    holdout
        The requested held-out fraction, or ``None`` for K-fold cross-validation.
        A hold-out trains only fold 1 of ``K = round(1 / holdout)`` stratified
        folds and evaluates on that fold (the actual fraction is ``1 / K`` up to
        rounding of the fold sizes).
    """

    folds: int
    holdout: float | None = None

    @property
    def evaluated_folds(self) -> list[int]:
        """0-based folds whose held-out predictions are scored."""
        return [0] if self.holdout is not None else list(range(self.folds))

    @property
    def train_fold(self) -> int | None:
        """The ``fold`` argument of ``cross_validate`` (1-based), ``None`` = all folds."""
        return 1 if self.holdout is not None else None

    def describe(self) -> str:
        if self.holdout is None:
            return f"{self.folds}-fold cross-validation"
        return f"stratified hold-out: fold 1 of {self.folds} (--holdout {self.holdout:g})"

    def to_dict(self) -> dict[str, object]:
        return {"folds": self.folds, "holdout": self.holdout, "description": self.describe()}


def resolve_split(
    base: TrainSettings, folds: int | None, holdout: float | None
) -> EvaluationScheme:
    """The evaluation split from ``--folds`` / ``--holdout`` (at most one of them).

    Raises
    ------
    SettingsError
        Both given, a hold-out fraction outside (0, 0.5], or fewer than 2 folds.
    """
    if folds is not None and holdout is not None:
        raise SettingsError("give either --folds or --holdout, not both")
    if holdout is not None:
        if not (isinstance(holdout, int | float) and 0 < holdout <= 0.5):
            raise SettingsError(f"--holdout must be a fraction in (0, 0.5], got {holdout!r}")
        return EvaluationScheme(folds=max(2, round(1 / holdout)), holdout=float(holdout))
    k = base.folds if folds is None else folds
    if not (isinstance(k, int) and not isinstance(k, bool) and k >= 2):
        raise SettingsError(f"--folds must be at least 2, got {k!r}")
    return EvaluationScheme(folds=k)


def parse_values(axis: str, values: str | Iterable[object] | None) -> list[object] | None:
    """Axis values from a comma-separated string or a sequence; duplicates dropped.

    Learning rates become floats; backbones and activations stay strings (they are
    validated with the settings). ``None`` or an empty list means "not swept".

    Raises
    ------
    SettingsError
        A learning rate that is not a positive number below 10, or a string that
        lists no value (``","``, ``""``).
    """
    if values is None:
        return None
    items = values.split(",") if isinstance(values, str) else list(values)
    out: list[object] = []
    for item in items:
        text = item.strip() if isinstance(item, str) else item
        if text == "":
            continue
        if axis == "lr":
            text = _learning_rate(item, text)
        if text not in out:
            out.append(text)
    if not out and isinstance(values, str):  # "--lrs ," is a typo, not "sweep the defaults"
        option = {"lr": "--lrs", "backbone": "--backbones", "activation": "--activations"}
        raise SettingsError(
            f"{option.get(axis, axis)} lists no value ({values!r}); give comma-separated "
            "values or leave the option out"
        )
    return out or None


def _learning_rate(item: object, text: object) -> float:
    """``text`` (the stripped ``item``) as a learning rate: a positive number below 10."""
    try:
        if not isinstance(text, str | SupportsFloat | SupportsIndex):
            raise TypeError
        lr = float(text)
    except (TypeError, ValueError):
        raise SettingsError(f"learning rate {item!r} is not a number") from None
    if not (math.isfinite(lr) and 0 < lr < 10):  # the log-scale base needs > 0
        raise SettingsError(f"--lrs: learning rate {item!r} must be a positive number below 10")
    return lr


def base_config(base: TrainSettings, axes: Mapping[str, Sequence[object] | None]) -> Config:
    """The base setting of each axis: the base settings' value when it is listed;
    otherwise the listed learning rate nearest to it (log scale), or the first listed
    backbone or activation."""
    values: dict[str, object] = {}
    for axis in AXES:
        own = getattr(base, axis)
        listed = list(axes.get(axis) or [own])
        if own in listed:
            values[axis] = own
        elif axis == "lr":
            values[axis] = min(listed, key=lambda v: abs(math.log(float(v) / float(own))))
        else:
            values[axis] = listed[0]
    return Config.from_values(values)


def plan_configs(
    base: TrainSettings, axes: Mapping[str, Sequence[object] | None], one_at_a_time: bool
) -> tuple[Config, list[Config]]:
    """The base configuration and every configuration to train, in a stable order.

    Parameters
    ----------
    base
        The settings that stay fixed (and whose axis values are the defaults).
    axes
        Listed values per axis name (:data:`AXES`); a missing or empty axis keeps
        the base value.
    one_at_a_time
        Vary one axis at a time around the base configuration instead of the grid.

    Returns
    -------
    (base configuration, configurations)
        The base comes first in one-at-a-time mode; no configuration repeats.
    """
    unknown = set(axes) - set(AXES)
    if unknown:
        raise SettingsError(f"unknown sweep axis {sorted(unknown)[0]!r}; axes: {', '.join(AXES)}")
    centre = base_config(base, axes)
    lists = {a: list(axes.get(a) or [centre.value(a)]) for a in AXES}
    configs: list[Config] = []
    if one_at_a_time:
        configs.append(centre)
        for axis in AXES:
            for v in lists[axis]:
                configs.append(Config.from_values({**{a: centre.value(a) for a in AXES}, axis: v}))
    else:
        grid = product(*(lists[a] for a in AXES))
        configs = [Config.from_values(dict(zip(AXES, combo, strict=True))) for combo in grid]
    return centre, list(dict.fromkeys(configs))


def varied_axes(axes: Mapping[str, Sequence[object] | None]) -> list[str]:
    """Axes with more than one listed value (each gets a table)."""
    return [a for a in AXES if len(axes.get(a) or []) > 1]
