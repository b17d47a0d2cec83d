"""The package's public API: lazy names are always the functions and classes."""

from __future__ import annotations

import importlib
import inspect

import pytest

import labelaudit


def test_lazy_names_stay_callable_after_their_modules_are_imported():
    for name, module in labelaudit._LAZY.items():
        mod = importlib.import_module(module)  # sets the package attribute to the submodule
        func = getattr(mod, name)
        assert inspect.isfunction(func) or inspect.isclass(func), name
        for _ in range(2):
            value = getattr(labelaudit, name)
            assert callable(value), name
            if inspect.ismodule(value):  # a stage module: callable, its contents reachable
                assert value is mod and getattr(value, name) is func
            else:
                assert value is func


def test_stage_module_calls_its_function_and_keeps_its_contents():
    import labelaudit.pipeline.scan as scan_module

    assert scan_module.LEVELS == ("field", "cell")  # `import ... as` gets the module
    assert labelaudit.pipeline.scan is scan_module
    with pytest.raises(labelaudit.SettingsError, match="level"):
        labelaudit.scan("nowhere", level="nuclei")  # calls labelaudit.pipeline.scan.scan


def test_unknown_name_is_an_attribute_error():
    try:
        labelaudit.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_version_is_the_installed_metadata_and_the_cli_prints_it(run_cli):
    from importlib.metadata import version

    assert labelaudit.__version__ == version("labelaudit")
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"labelaudit {labelaudit.__version__}"


def test_type_checkers_see_every_lazy_name_from_its_module():
    """``TYPE_CHECKING`` imports give editors and mypy the real signatures of the lazy
    names (``__getattr__`` alone types them all as ``object``)."""
    import ast

    tree = ast.parse(inspect.getsource(labelaudit))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    )
    imported = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == labelaudit._LAZY


def test_public_signatures_show_no_private_parameters():
    for name in labelaudit._LAZY:
        value = getattr(labelaudit, name)
        target = value if inspect.isfunction(value) else getattr(value, name, value)
        if callable(target) and not inspect.isclass(target):
            params = inspect.signature(target).parameters
            assert not [p for p in params if p.startswith("_")], name
