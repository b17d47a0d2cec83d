"""User-facing error types.

Every problem caused by the user's input (a dataset, a settings value, a run
directory) is raised as a :class:`LabelAuditError` subclass. The CLI turns these
into one clear message and exit status 2; anything else is an internal failure
(exit status 1).
"""

from __future__ import annotations

from pathlib import Path

#: What an interrupted command prints (one line on stderr) and its exit status, for
#: an interrupt during a command (:func:`labelaudit.cli.main`) or while the command
#: line is imported (:mod:`labelaudit._entry`).
INTERRUPTED = "interrupted; rerun to resume"
INTERRUPT_STATUS = 130


class LabelAuditError(Exception):
    """Base class of the errors the user can fix; the CLI exits with status 2."""

    exit_code = 2


class DatasetError(LabelAuditError):
    """The dataset is malformed: a label file, a row, or an image.

    Parameters
    ----------
    message
        What is wrong, in words a user understands.
    path
        The file the problem is in (label file or image file).
    row
        1-based line number in the label file, counting the header as line 1.
    image
        The image id the problem concerns.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        image: str | None = None,
    ) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.row = row
        self.image = image
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path) + (f", line {self.row}" if self.row is not None else ""))
        elif self.row is not None:
            where.append(f"line {self.row}")
        if self.image is not None:
            where.append(f"image {self.image!r}")
        prefix = ": ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class SettingsError(LabelAuditError):
    """A setting (CLI flag, preset, argument) is invalid."""


class TrainingDiverged(SettingsError, ValueError):
    """Training produced non-finite outputs (usually a learning rate too high).

    A :class:`SettingsError` for the command line (exit 2, one line) and a
    :class:`ValueError` for code that treats divergence as a numerical result (the
    sweep records such a configuration instead of stopping).
    """


class RunDirError(LabelAuditError):
    """A run directory is missing artifacts a stage needs, or is inconsistent."""
