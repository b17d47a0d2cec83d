"""labelaudit: audit the labels of multi-label microscope image datasets.

The public Python API; the ``labelaudit`` command line is a thin layer over it.

Where the code and docs say "the method", they mean the work behind the ``seed``
preset: the poster "Classifying Human Cell Proteins in Microscope Images"
(``docs/method.md`` says what labelaudit takes from it and what it adds).
"""

from __future__ import annotations

import importlib

from labelaudit.core.errors import DatasetError, LabelAuditError, RunDirError, SettingsError

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
