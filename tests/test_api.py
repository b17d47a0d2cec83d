"""The package's public API: lazy names are always the functions."""

from __future__ import annotations

import importlib
import inspect

import labelaudit


def test_lazy_names_stay_functions_after_their_modules_are_imported():
    for name, module in labelaudit._LAZY.items():
        importlib.import_module(module)  # sets the package attribute to the submodule
        for _ in range(2):
            value = getattr(labelaudit, name)
            assert callable(value) and not inspect.ismodule(value), name
            assert value is getattr(importlib.import_module(module), name)


def test_unknown_name_is_an_attribute_error():
    try:
        labelaudit.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
