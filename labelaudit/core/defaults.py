"""Defaults the command line and the library share.

Kept apart from :mod:`labelaudit.rundir` (the run directory's contract, which
re-exports them) because the CLI reads them when it starts, and importing the
contract would load NumPy and pandas before ``labelaudit --help`` (about 0.5 s).
"""

from __future__ import annotations

from pathlib import Path

#: The run directory a command writes (``scan``) or reads when none is given.
DEFAULT_RUN = Path("labelaudit-out")
