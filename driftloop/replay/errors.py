"""Exceptions of the replay package, under :class:`driftloop.errors.DriftloopError`::

DriftloopError
└── ReplayError          a recording could not be made, or a replay could not run
    └── RecordingError   a recording file is missing, truncated or invalid
"""

from __future__ import annotations

from pathlib import Path

from driftloop.errors import DriftloopError


class ReplayError(DriftloopError):
    """A recording could not be made, or a replay could not run."""


class RecordingError(ReplayError):
    """A recording file is missing, truncated or invalid.

    ``line`` is the 1-based line of the file where the problem is, or None when it
    concerns the whole file (a missing file, say).
    """

    def __init__(self, path: str | Path, message: str, *, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")
