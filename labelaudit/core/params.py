"""Parameter constraints, declared by their owner and checked in one place.

In the spirit of scikit-learn's ``_parameter_constraints``: an owner (a detector,
the training settings, the simulator, the scan stage) declares, per parameter, the
values it accepts as a list of alternatives, and :func:`validate_params` checks them
and raises one :class:`~labelaudit.core.errors.SettingsError` with a one-line
message (``knn: k must be >= 1, got 0``)::

    CONSTRAINTS = {
        "k": [Interval(Integral, 1, None, closed="left")],
        "n_components": [Interval(Integral, 0, None, closed="left"), None],
        "method": [Options("sigma", "robust")],
    }
    validate_params({"k": 0, "method": "sigma"}, CONSTRAINTS, owner="knn")

An alternative is an :class:`Interval`, :class:`Options`, :class:`InstanceOf`,
:class:`Satisfies` or ``None`` (the value ``None`` is accepted). A value passes when it meets any
alternative; otherwise the message describes the first one that is not ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal, TypeAlias

from labelaudit.core.errors import SettingsError

__all__ = [
    "Constraint",
    "InstanceOf",
    "Integral",
    "Interval",
    "Options",
    "Real",
    "Satisfies",
    "param_problems",
    "validate_params",
]


def _show(value: Any) -> str:
    """A value in a message: numbers as written (``0.5``), anything else as repr."""
    if isinstance(value, Real) and not isinstance(value, bool):
        return str(value)
    return repr(value)


@dataclass(frozen=True)
class Interval:
    """Numbers of one kind (``numbers.Integral`` or ``numbers.Real``) in an interval.

    Parameters
    ----------
    kind
        ``Integral`` (integers, numpy's included) or ``Real`` (any real number);
        booleans are never numbers here.
    left, right
        The bounds; ``None``: unbounded on that side.
    closed
        Which bounds belong to the interval: ``"left"``, ``"right"``, ``"both"`` or
        ``"neither"``.
    finite
        Also refuse infinite values (NaN is always refused: it lies in no interval).
    text
        How the message says the interval (``"at least 1"``); generated otherwise
        (``">= 1"``, ``"in (0, 1]"``).
    """

    kind: type
    left: float | None
    right: float | None
    closed: Literal["left", "right", "both", "neither"] = "both"
    finite: bool = False
    text: str | None = None

    def type_ok(self, value: Any) -> bool:
        """Whether ``value`` is a number of this interval's kind."""
        return isinstance(value, self.kind) and not isinstance(value, bool)

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` lies in the interval."""
        if not self.type_ok(value):
            return False
        x = float(value)
        if math.isnan(x) or (self.finite and not math.isfinite(x)):
            return False
        if self.left is not None:
            if x < self.left or (x == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if x > self.right or (x == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def describe(self, value: Any) -> str:
        """What a value must be, said for ``value``: its kind when it is not a number
        of that kind, else the interval."""
        if not self.type_ok(value):
            return "an integer" if self.kind is Integral else "a number"
        if self.text is not None:
            return self.text
        low = self.closed in ("left", "both")
        high = self.closed in ("right", "both")
        if self.right is None:
            return f"{'>=' if low else '>'} {_show(self.left)}"
        if self.left is None:
            return f"{'<=' if high else '<'} {_show(self.right)}"
        bounds = f"{_show(self.left)}, {_show(self.right)}"
        return f"in {'[' if low else '('}{bounds}{']' if high else ')'}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (``Options("sigma", "robust")``)."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        object.__setattr__(self, "values", tuple(values))

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is one of the options."""
        try:
            return value in self.values
        except TypeError:  # an unhashable or odd value is none of them
            return False

    def describe(self, value: Any) -> str:
        """``one of a, b, c``."""
        return f"one of {', '.join(map(str, self.values))}"


@dataclass(frozen=True)
class InstanceOf:
    """An instance of the given type(s), said in ``text`` (``"true or false"``)."""

    types: type | tuple[type, ...]
    text: str

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is an instance of :attr:`types`."""
        return isinstance(value, self.types)

    def describe(self, value: Any) -> str:
        """:attr:`text`."""
        return self.text


@dataclass(frozen=True)
class Satisfies:
    """A value for which ``predicate`` holds, said in ``text`` (scikit-learn's
    callable constraints): for rules no interval or option list says."""

    predicate: Callable[[Any], bool]
    text: str

    def accepts(self, value: Any) -> bool:
        """Whether ``predicate(value)`` holds."""
        return bool(self.predicate(value))

    def describe(self, value: Any) -> str:
        """:attr:`text`."""
        return self.text


#: One alternative of a parameter's constraint list (``None``: the value ``None``).
Constraint: TypeAlias = Interval | Options | InstanceOf | Satisfies | None


def _problem(name: str, value: Any, alternatives: Sequence[Constraint]) -> str | None:
    """The message for ``value`` when it meets none of ``alternatives`` (else ``None``)."""
    for alternative in alternatives:
        if alternative is None:
            if value is None:
                return None
        elif alternative.accepts(value):
            return None
    first = next((a for a in alternatives if a is not None), None)
    if first is None:
        return f"{name} must be None, got {_show(value)}"
    return f"{name} must be {first.describe(value)}, got {_show(value)}"


def param_problems(
    values: Mapping[str, Any], constraints: Mapping[str, Sequence[Constraint]]
) -> list[str]:
    """What is wrong with ``values``, one phrase per bad parameter, in constraint order.

    Parameters
    ----------
    values
        Parameter values by name; a constrained name that is absent is not checked.
    constraints
        Per parameter name, the accepted alternatives.

    Returns
    -------
    list of str
        ``"<name> must be <what>, got <value>"`` per bad parameter; empty when all pass.
    """
    problems = []
    for name, alternatives in constraints.items():
        if name in values:
            problem = _problem(name, values[name], alternatives)
            if problem is not None:
                problems.append(problem)
    return problems


def validate_params(
    values: Mapping[str, Any],
    constraints: Mapping[str, Sequence[Constraint]],
    owner: str | None = None,
) -> None:
    """Check ``values`` against ``constraints``; raise on the first bad parameter.

    Parameters
    ----------
    values
        Parameter values by name.
    constraints
        Per parameter name, the accepted alternatives (see the module docstring).
    owner
        Who the parameters belong to, the message's prefix (``"knn"``); ``None``:
        no prefix.

    Raises
    ------
    SettingsError
        ``"<owner>: <name> must be <what>, got <value>"``.
    """
    problems = param_problems(values, constraints)
    if problems:
        raise SettingsError(problems[0] if owner is None else f"{owner}: {problems[0]}")
