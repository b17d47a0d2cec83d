"""The ``labelaudit`` console script's first code.

Importing the command line (typer, rich, numpy, pandas) takes a few tenths of a
second; a Ctrl-C in that time would print Python's traceback. This module imports
nothing heavy, so the interrupt is caught here and reported in one line, exit 130,
like an interrupt of a running command (:func:`labelaudit.cli.main`).
"""

from __future__ import annotations

import sys

from labelaudit.core.errors import INTERRUPT_STATUS, INTERRUPTED


def run() -> None:
    """Import the command line and run it; Ctrl-C during the import exits 130."""
    try:
        from labelaudit.cli import main
    except KeyboardInterrupt:
        sys.stderr.write(INTERRUPTED + "\n")
        raise SystemExit(INTERRUPT_STATUS) from None
    main()
