"""labelaudit: audit the labels of multi-label microscope image datasets.

The public Python API; the ``labelaudit`` command line is a thin layer over it.
"""

from __future__ import annotations

import importlib
import sys
import types

from labelaudit.errors import DatasetError, LabelAuditError, RunDirError, SettingsError

__version__ = "0.1.0"

# Everything else loads on first use: `import labelaudit` stays fast (no numpy, pandas,
# torch), and the console script handles Ctrl-C before anything heavy is imported.
_LAZY = {
    "ImageCache": "labelaudit.data.cache",
    "build_cache": "labelaudit.data.cache",
    "CheckReport": "labelaudit.data.check",
    "check_dataset": "labelaudit.data.check",
    "Dataset": "labelaudit.data.dataset",
    "ImageSource": "labelaudit.data.dataset",
    "load_dataset": "labelaudit.data.layouts",
    "synthesize": "labelaudit.data.synth",
    "scan": "labelaudit.scan",
    "find_issues": "labelaudit.find_issues",
    "AuditResult": "labelaudit.results",
    "resolve_settings": "labelaudit.config",
    "cross_validate": "labelaudit.train.cv",
    "detect_and_compare": "labelaudit.compare",
    "load_audit_inputs": "labelaudit.rundir",
    "bench": "labelaudit.bench",
    "write_report": "labelaudit.report",
    "clean": "labelaudit.clean",
    "retrain": "labelaudit.retrain",
    "predict": "labelaudit.predict",
    "sweep": "labelaudit.sweep",
}


class _CallableModule(types.ModuleType):
    """A stage module that is also its entry point: ``labelaudit.scan(...)`` calls
    ``labelaudit.scan.scan(...)`` while ``labelaudit.scan.LEVELS`` stays reachable."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


def _stage(module: types.ModuleType) -> types.ModuleType:
    if not isinstance(module, _CallableModule):
        module.__class__ = _CallableModule
    return module


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        if _LAZY[name] == f"{__name__}.{name}":
            return _stage(module)
        return getattr(module, name)
    raise AttributeError(f"module 'labelaudit' has no attribute {name!r}")


class _API(types.ModuleType):
    """The package module. A stage whose module has its name (``scan``, ``clean``,
    ...) is reached as that module, made callable, however it was first imported
    (importing ``labelaudit.scan`` sets the package attribute to the module)."""

    def __getattribute__(self, name: str):
        value = super().__getattribute__(name)
        if name in _LAZY and isinstance(value, types.ModuleType):
            return _stage(value)
        return value


sys.modules[__name__].__class__ = _API


__all__ = [
    "DatasetError",
    "LabelAuditError",
    "RunDirError",
    "SettingsError",
    "__version__",
    *_LAZY,
]
