"""labelaudit: audit the labels of multi-label microscope image datasets.

The public Python API; the ``labelaudit`` command line is a thin layer over it.
"""

from __future__ import annotations

import importlib
import sys
import types

from labelaudit.data.cache import ImageCache, build_cache
from labelaudit.data.check import CheckReport, check_dataset
from labelaudit.data.dataset import Dataset, ImageSource
from labelaudit.data.layouts import load_dataset
from labelaudit.errors import DatasetError, LabelAuditError, RunDirError, SettingsError

__version__ = "0.1.0"

# Heavier stages (torch, plotly) load on first use, so `import labelaudit` stays fast.
_LAZY = {
    "synthesize": "labelaudit.data.synth",
    "scan": "labelaudit.scan",
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


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'labelaudit' has no attribute {name!r}")


class _API(types.ModuleType):
    """The package module, answering API names with functions, never submodules.

    Importing ``labelaudit.scan`` (the module) sets the package attribute ``scan``
    to that module, which would shadow the lazily loaded function of the same
    name; this class looks such names up in their module instead.
    """

    def __getattribute__(self, name: str):
        value = super().__getattribute__(name)
        if name in _LAZY and isinstance(value, types.ModuleType):
            return getattr(value, name)
        return value


sys.modules[__name__].__class__ = _API


__all__ = [
    "CheckReport",
    "Dataset",
    "DatasetError",
    "ImageCache",
    "ImageSource",
    "LabelAuditError",
    "RunDirError",
    "SettingsError",
    "__version__",
    "build_cache",
    "check_dataset",
    "load_dataset",
    *_LAZY,
]
