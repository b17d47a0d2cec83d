"""labelaudit: audit the labels of multi-label microscope image datasets.

The public Python API; the ``labelaudit`` command line is a thin layer over it.
"""

from __future__ import annotations

from labelaudit.data.cache import ImageCache, build_cache
from labelaudit.data.check import CheckReport, check_dataset
from labelaudit.data.dataset import Dataset, ImageSource
from labelaudit.data.layouts import load_dataset
from labelaudit.errors import DatasetError, LabelAuditError, RunDirError, SettingsError

__version__ = "0.1.0"

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
]
