"""Event replay: record the redacted topics, replay them into an isolated pipeline, compare versions.

Modules: ``format`` (the recording file format), ``writer`` and ``reader`` (writing,
and reading with full validation), ``record`` (capture from the broker), ``lanes``
(the model versions served), ``pipeline`` (the isolated lanes), ``publisher``,
``collector``, ``runner`` (:func:`run_replay`), ``report``, ``render`` and ``html``
(the report as data, text and HTML), and ``cli`` (``driftloop record`` and
``driftloop replay``). The names below are imported on first use, because the
runner imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RecordingError": "driftloop.replay.errors",
    "ReplayError": "driftloop.replay.errors",
    "RecordedEvent": "driftloop.replay.format",
    "RecordingHeader": "driftloop.replay.format",
    "SourceInfo": "driftloop.replay.format",
    "Bounds": "driftloop.replay.format",
    "RecordingWriter": "driftloop.replay.writer",
    "Recording": "driftloop.replay.reader",
    "read_recording": "driftloop.replay.reader",
    "record": "driftloop.replay.record",
    "ModelChoice": "driftloop.replay.lanes",
    "resolve_models": "driftloop.replay.lanes",
    "ReplayOptions": "driftloop.replay.runner",
    "run_replay": "driftloop.replay.runner",
    "ReplayResult": "driftloop.replay.result",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
