"""labelaudit: audit the labels of multi-label microscope image datasets.

The public Python API; the ``labelaudit`` command line is a thin layer over it.

Where the code and docs say "the method", they mean the work behind the ``seed``
preset: the poster "Classifying Human Cell Proteins in Microscope Images"
(``docs/method.md`` says what labelaudit takes from it and what it adds).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from labelaudit.core.errors import DatasetError, LabelAuditError, RunDirError, SettingsError

if TYPE_CHECKING:  # type checkers and editors see the lazy names' real signatures
    # (``import x as x``: an explicit re-export)
    from labelaudit.core.config import resolve_settings as resolve_settings
    from labelaudit.data.cache import ImageCache as ImageCache
    from labelaudit.data.cache import build_cache as build_cache
    from labelaudit.data.check import CheckReport as CheckReport
    from labelaudit.data.check import check_dataset as check_dataset
    from labelaudit.data.dataset import Dataset as Dataset
    from labelaudit.data.dataset import ImageSource as ImageSource
    from labelaudit.data.layouts import load_dataset as load_dataset
    from labelaudit.pipeline.bench import bench as bench
    from labelaudit.pipeline.clean import clean as clean
    from labelaudit.pipeline.compare import detect_and_compare as detect_and_compare
    from labelaudit.pipeline.find_issues import find_issues as find_issues
    from labelaudit.pipeline.results import AuditResult as AuditResult
    from labelaudit.pipeline.retrain import retrain as retrain
    from labelaudit.pipeline.scan import scan as scan
    from labelaudit.report import write_report as write_report
    from labelaudit.rundir import load_audit_inputs as load_audit_inputs
    from labelaudit.synth.simulate import synthesize as synthesize
    from labelaudit.tools.predict import predict as predict
    from labelaudit.tools.sweep import sweep as sweep
    from labelaudit.train.cv import cross_validate as cross_validate

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
    "synthesize": "labelaudit.synth.simulate",
    "scan": "labelaudit.pipeline.scan",
    "find_issues": "labelaudit.pipeline.find_issues",
    "AuditResult": "labelaudit.pipeline.results",
    "resolve_settings": "labelaudit.core.config",
    "cross_validate": "labelaudit.train.cv",
    "detect_and_compare": "labelaudit.pipeline.compare",
    "load_audit_inputs": "labelaudit.rundir",
    "bench": "labelaudit.pipeline.bench",
    "write_report": "labelaudit.report",
    "clean": "labelaudit.pipeline.clean",
    "retrain": "labelaudit.pipeline.retrain",
    "predict": "labelaudit.tools.predict",
    "sweep": "labelaudit.tools.sweep",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'labelaudit' has no attribute {name!r}")


__all__ = [
    "DatasetError",
    "LabelAuditError",
    "RunDirError",
    "SettingsError",
    "__version__",
    *_LAZY,
]
