"""The one parameter-validation helper: constraints, messages, alternatives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labelaudit.core.errors import SettingsError
from labelaudit.core.params import (
    InstanceOf,
    Integral,
    Interval,
    Options,
    Real,
    param_problems,
    validate_params,
)

CONSTRAINTS = {
    "k": [Interval(Integral, 1, None, closed="left")],
    "rate": [Interval(Real, 0, 1, closed="right")],
    "dims": [Interval(Integral, 0, None, closed="left"), None],
    "method": [Options("sigma", "robust")],
    "flag": [InstanceOf(bool, "true or false")],
}


def test_good_values_pass_and_absent_names_are_not_checked():
    validate_params({"k": 1, "rate": 1.0, "dims": None, "method": "sigma"}, CONSTRAINTS, "x")
    validate_params({"k": np.int64(3), "rate": np.float32(0.5), "dims": 0}, CONSTRAINTS, "x")
    assert param_problems({}, CONSTRAINTS) == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"k": 0}, "x: k must be >= 1, got 0"),
        ({"k": 2.5}, "x: k must be an integer, got 2.5"),
        ({"k": True}, "x: k must be an integer, got True"),
        ({"rate": 0}, "x: rate must be in (0, 1], got 0"),
        ({"rate": 1.5}, "x: rate must be in (0, 1], got 1.5"),
        ({"rate": math.nan}, "x: rate must be in (0, 1], got nan"),
        ({"rate": "half"}, "x: rate must be a number, got 'half'"),
        ({"dims": -1}, "x: dims must be >= 0, got -1"),
        ({"method": "mean"}, "x: method must be one of sigma, robust, got 'mean'"),
        ({"method": ["sigma"]}, "x: method must be one of sigma, robust, got ['sigma']"),
        ({"flag": "yes"}, "x: flag must be true or false, got 'yes'"),
    ],
)
def test_bad_values_give_one_line_settings_errors(values, message):
    with pytest.raises(SettingsError) as err:
        validate_params(values, CONSTRAINTS, "x")
    assert str(err.value) == message


def test_interval_bounds_and_wording():
    assert Interval(Real, 0, None, closed="neither").describe(1.0) == "> 0"
    assert Interval(Real, None, 10, closed="neither").describe(1.0) == "< 10"
    assert Interval(Integral, 16, 4096, closed="both").describe(8) == "in [16, 4096]"
    worded = Interval(Integral, 1, None, closed="left", text="at least 1")
    assert worded.describe(0) == "at least 1" and worded.describe("a") == "an integer"
    assert not Interval(Real, 0, None, closed="neither").accepts(0)
    assert Interval(Real, 0, None, closed="neither").accepts(math.inf)
    assert not Interval(Real, 0, None, closed="neither", finite=True).accepts(math.inf)
    assert Interval(Real, 0, 1, closed="both").accepts(0) and Interval(Real, 0, 1).accepts(1)


def test_every_problem_is_listed_in_constraint_order():
    problems = param_problems({"method": "x", "k": 0, "rate": 2}, CONSTRAINTS)
    assert problems == [
        "k must be >= 1, got 0",
        "rate must be in (0, 1], got 2",
        "method must be one of sigma, robust, got 'x'",
    ]
